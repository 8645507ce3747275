//! The VRRP transport between two namespaces: multicast and unicast, IPv4 and IPv6,
//! sent with TTL/hop limit 255 and received with addresses and TTL intact.
use std::net::IpAddr;

use xdp_lb::vrrp_socket::{VRRP_GROUP_V4, VRRP_GROUP_V6, VrrpSocket};
use xdp_lb_lab::{Netns, veth_pair};

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
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let got = receiver
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let socket = VrrpSocket::open("eth0", index("eth0"), v6, multicast, None).unwrap();
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
