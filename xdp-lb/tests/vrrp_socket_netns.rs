//! The VRRP transport between two namespaces: multicast and unicast, IPv4 and IPv6,
//! sent with TTL/hop limit 255 and received with addresses and TTL intact; the IP
//! header as keepalived sends it (TOS / traffic class 0xc0, no DF); a configured
//! source for multicast.
use std::net::IpAddr;
use std::time::Duration;

use xdp_lb::vrrp_socket::{VRRP_GROUP_V4, VRRP_GROUP_V6, VrrpSocket};
use xdp_lb_lab::{Capture, Netns, veth_pair};

fn pair() -> (Netns, Netns) {
    let (a, b) = veth_pair("xlbvr-").unwrap();
    a.ip(["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .unwrap();
    b.ip(["addr", "add", "192.0.2.2/24", "dev", "eth0"])
        .unwrap();
    (a, b)
}

/// Opens a socket in `receiver`, then sends `payload` from `sender` to `dst`, and
/// returns what arrived.
fn exchange(
    sender: &Netns,
    receiver: &Netns,
    v6: bool,
    multicast: bool,
    source: Option<IpAddr>,
    dst: IpAddr,
    payload: &'static [u8],
) -> xdp_lb::vrrp_socket::Received {
    exchange_to(sender, receiver, None, v6, multicast, source, dst, payload)
}

/// [`exchange`], with the receiver's socket opened with `receiver_source`.
#[allow(clippy::too_many_arguments)]
fn exchange_to(
    sender: &Netns,
    receiver: &Netns,
    receiver_source: Option<IpAddr>,
    v6: bool,
    multicast: bool,
    source: Option<IpAddr>,
    dst: IpAddr,
    payload: &'static [u8],
) -> xdp_lb::vrrp_socket::Received {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let got = receiver
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let socket =
                    VrrpSocket::open("eth0", index("eth0"), v6, multicast, receiver_source)
                        .unwrap();
                ready_tx.send(()).unwrap();
                tokio::time::timeout(std::time::Duration::from_secs(10), socket.recv())
                    .await
                    .expect("an advert within 10 s")
                    .unwrap()
            })
        })
        .unwrap();
    ready_rx.recv().unwrap();
    sender
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let socket =
                    VrrpSocket::open("eth0", index("eth0"), v6, multicast, source).unwrap();
                socket.send(payload, dst).await.unwrap();
            })
        })
        .unwrap();
    got.join().unwrap().unwrap()
}

fn index(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid C string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

#[test]
fn ipv4_multicast_arrives_with_ttl_255() {
    let (a, b) = pair();
    let got = exchange(
        &a,
        &b,
        false,
        true,
        None,
        VRRP_GROUP_V4.into(),
        b"v4 multicast",
    );
    assert_eq!(got.src, "192.0.2.1".parse::<IpAddr>().unwrap());
    assert_eq!(got.dst, IpAddr::from(VRRP_GROUP_V4));
    assert_eq!(got.ttl, 255);
    assert_eq!(got.payload, b"v4 multicast");
}

#[test]
fn ipv4_unicast_uses_the_configured_source() {
    let (a, b) = pair();
    a.ip(["addr", "add", "192.0.2.11/24", "dev", "eth0"])
        .unwrap();
    let source = Some("192.0.2.11".parse().unwrap());
    let got = exchange(
        &a,
        &b,
        false,
        false,
        source,
        "192.0.2.2".parse().unwrap(),
        b"v4 unicast",
    );
    assert_eq!(got.src, "192.0.2.11".parse::<IpAddr>().unwrap());
    assert_eq!(got.dst, "192.0.2.2".parse::<IpAddr>().unwrap());
    assert_eq!(got.ttl, 255);
    assert_eq!(got.payload, b"v4 unicast");
}

#[test]
fn ipv6_multicast_arrives_from_the_link_local_with_hop_limit_255() {
    let (a, b) = pair();
    let got = exchange(
        &a,
        &b,
        true,
        true,
        None,
        VRRP_GROUP_V6.into(),
        b"v6 multicast",
    );
    assert_eq!(got.src, "fe80::a".parse::<IpAddr>().unwrap());
    assert_eq!(got.dst, IpAddr::from(VRRP_GROUP_V6));
    assert_eq!(got.ttl, 255);
    assert_eq!(got.payload, b"v6 multicast");
}

/// An IPv4 frame carrying protocol 112 from `src`.
fn vrrp_v4_from(frame: &[u8], src: [u8; 4]) -> bool {
    frame.len() >= 34 && frame[12..14] == [0x08, 0x00] && frame[23] == 112 && frame[26..30] == src
}

#[test]
fn ipv4_multicast_from_a_configured_source_looks_like_keepalived() {
    let (a, b) = pair();
    // A secondary address: the kernel's own choice would be 192.0.2.1.
    a.ip(["addr", "add", "192.0.2.11/24", "dev", "eth0"])
        .unwrap();
    let source: IpAddr = "192.0.2.11".parse().unwrap();
    let capture = Capture::start(&b, "eth0").unwrap();
    let got = exchange(
        &a,
        &b,
        false,
        true,
        Some(source),
        VRRP_GROUP_V4.into(),
        b"from mcast_src_ip",
    );
    assert_eq!(got.src, source, "mcast_src_ip is the advert's source");
    assert_eq!(got.dst, IpAddr::from(VRRP_GROUP_V4));
    assert_eq!(got.ttl, 255);
    let frame = capture
        .next_matching(Duration::from_secs(5), |f| vrrp_v4_from(f, [192, 0, 2, 11]))
        .unwrap();
    // keepalived's header: TOS 0xc0 (network control), DF clear.
    assert_eq!(frame[15], 0xc0, "TOS");
    assert_eq!(frame[20] & 0x40, 0, "DF must be clear: {:02x}", frame[20]);

    // A socket with a multicast source still hears the group.
    let got = exchange_to(
        &b,
        &a,
        Some(source),
        false,
        true,
        None,
        VRRP_GROUP_V4.into(),
        b"to the group",
    );
    assert_eq!(got.src, "192.0.2.2".parse::<IpAddr>().unwrap());
    assert_eq!(got.payload, b"to the group");
}

#[test]
fn ipv6_adverts_carry_traffic_class_0xc0() {
    let (a, b) = pair();
    let capture = Capture::start(&b, "eth0").unwrap();
    let got = exchange(&a, &b, true, true, None, VRRP_GROUP_V6.into(), b"v6 class");
    assert_eq!(got.payload, b"v6 class");
    let frame = capture
        .next_matching(Duration::from_secs(5), |f| {
            f.len() >= 54 && f[12..14] == [0x86, 0xdd] && f[20] == 112
        })
        .unwrap();
    let class = ((frame[14] & 0x0f) << 4) | (frame[15] >> 4);
    assert_eq!(class, 0xc0, "traffic class");
}
