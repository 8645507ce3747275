//! The TUN fixtures: the hosts (documentation ranges: a client, the VIP, the LB's own
//! address towards the real server, the outer source, and a real server behind a
//! gateway, in each family) and a dataplane of TUN services over them.

use xdp_lb::dataplane::{Dataplane, ServiceSpec};
use xdp_lb_common::{BACKEND_F_ACTIVE, BackendValue, FWD_TUN, SELECT_CURSOR};

use super::test_run::{TEST_RUN_IFINDEX, key, load};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x33];

pub mod v4 {
    pub const CLIENT: [u8; 4] = [198, 51, 100, 7];
    pub const VIP: [u8; 4] = [192, 0, 2, 100];
    pub const LB_ADDR: [u8; 4] = [192, 0, 2, 2];
    pub const SERVER: [u8; 4] = [203, 0, 113, 11];
}

/// 2001:db8:1::7, 2001:db8::100, 2001:db8::2, 2001:db8:2::11.
pub mod v6 {
    pub const CLIENT: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    pub const VIP: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    pub const LB_ADDR: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    pub const SERVER: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11,
    ];
}

/// A loaded program with TUN services: `backends[i]`, (real server, the LB's outer
/// source, egress MTU), is backend id `i`, reached through the gateway; `services[i]`,
/// (vip, port, protocol, backend id), is service id `i`, scheduling that one backend.
/// Addresses as the maps hold them (IPv4-mapped for IPv4).
pub fn tun_dataplane(
    backends: &[([u8; 16], [u8; 16], u16)],
    services: &[([u8; 16], u16, u8, u32)],
) -> Dataplane {
    let mut dp = load();
    for (id, &(server, source, mtu)) in backends.iter().enumerate() {
        let backend = BackendValue {
            addr: server,
            dst_mac: GATEWAY_MAC,
            src_mac: LB_MAC,
            ifindex: TEST_RUN_IFINDEX,
            flags: BACKEND_F_ACTIVE,
            port_be: 80u16.to_be(),
            mtu,
            tun_src: source,
        };
        dp.set_backend(id as u32, &backend).unwrap();
    }
    for (id, &(vip, port, proto, backend)) in services.iter().enumerate() {
        dp.set_service(&ServiceSpec {
            key: key(vip, port, proto),
            id: id as u32,
            forwarding: FWD_TUN,
            select: SELECT_CURSOR,
            active: true,
            slots: vec![backend],
            ..Default::default()
        })
        .unwrap();
    }
    dp
}
