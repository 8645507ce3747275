//! VIP management and announcements on real interfaces: addresses added and removed
//! over rtnetlink (idempotently, IPv6 without DAD, IPv4 with a label), and gratuitous
//! ARP / unsolicited NA frames that a real Linux peer takes into its neighbour table.
use std::{net::IpAddr, time::Duration};

use xdp_lb::{
    announce::{FrameSocket, gratuitous_arp, unsolicited_na},
    netlink::{Change, Netlink},
};
use xdp_lb_lab::{Capture, Netns, veth_pair};

/// Two namespaces joined by a veth: `a` (the VRRP node) and `b` (a peer).
fn pair() -> (Netns, Netns) {
    let (a, b) = veth_pair("xlbvip-").unwrap();
    a.ip(["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .unwrap();
    b.ip(["addr", "add", "192.0.2.2/24", "dev", "eth0"])
        .unwrap();
    // An on-link prefix for the IPv6 VIP, as a real segment would have.
    b.ip(["addr", "add", "2001:db8::2/64", "dev", "eth0"])
        .unwrap();
    // Let the peer create entries from unsolicited announcements, so its table shows
    // what it understood. The peer plays the upstream router (the one that matters
    // after a failover): RFC 9131 lets routers create entries from unsolicited NAs.
    b.sysctl(&[
        ("net/ipv4/conf/eth0/arp_accept", "1"),
        ("net/ipv6/conf/all/forwarding", "1"),
        ("net/ipv6/conf/eth0/accept_untracked_na", "1"),
    ])
    .unwrap();
    (a, b)
}

/// Runs async netlink code inside `ns`.
fn in_ns<T: Send + 'static>(
    ns: &Netns,
    f: impl AsyncFnOnce(Netlink, u32) -> T + Send + 'static,
) -> T {
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let nl = Netlink::connect().unwrap();
            let index = nl.link_by_name("eth0").await.unwrap().index;
            f(nl, index).await
        })
    })
    .unwrap()
}

#[test]
fn vips_are_added_and_removed_idempotently() {
    let (a, _b) = pair();
    let v4: IpAddr = "192.0.2.200".parse().unwrap();
    let v6: IpAddr = "2001:db8::200".parse().unwrap();
    let added = in_ns(&a, async move |nl, i| {
        [
            nl.add_address(i, v4, 24, Some("eth0:vi1"), None)
                .await
                .unwrap(),
            nl.add_address(i, v4, 24, Some("eth0:vi1"), None)
                .await
                .unwrap(),
            nl.add_address(i, v6, 64, None, None).await.unwrap(),
        ]
    });
    assert_eq!(added, [Change::Done, Change::AlreadyThere, Change::Done]);
    let shown = a.ip(["addr", "show", "dev", "eth0"]).unwrap();
    assert!(
        shown.contains("inet 192.0.2.200/24") && shown.contains("eth0:vi1"),
        "{shown}"
    );
    assert!(shown.contains("inet6 2001:db8::200/64"), "{shown}");
    assert!(
        !shown.contains("tentative"),
        "a VIP must be usable at once (nodad):\n{shown}"
    );

    let removed = in_ns(&a, async move |nl, i| {
        [
            nl.remove_address(i, v4).await.unwrap(),
            nl.remove_address(i, v4).await.unwrap(),
            nl.remove_address(i, v6).await.unwrap(),
        ]
    });
    assert_eq!(removed, [Change::Done, Change::AlreadyThere, Change::Done]);
    let shown = a.ip(["addr", "show", "dev", "eth0"]).unwrap();
    assert!(
        !shown.contains("192.0.2.200") && !shown.contains("2001:db8::200"),
        "{shown}"
    );
    assert!(
        shown.contains("192.0.2.1/24"),
        "the node's own address stays:\n{shown}"
    );
}

#[test]
fn the_peer_learns_the_vip_from_gratuitous_arp_and_unsolicited_na() {
    let (a, b) = pair();
    let mac_text = a.mac("eth0").unwrap();
    let capture = Capture::start(&b, "eth0").unwrap();
    let (link_local, ifindex) = in_ns(&a, async move |nl, i| {
        (nl.link_local_v6(i).await.unwrap(), i)
    });
    let link_local = link_local.expect("a link-local address on eth0");
    let mac = a.mac_bytes("eth0").unwrap();
    a.run(move || {
        let socket = FrameSocket::open(ifindex).unwrap();
        socket
            .send(&gratuitous_arp(mac, "192.0.2.200".parse().unwrap()))
            .unwrap();
        socket
            .send(&unsolicited_na(
                mac,
                link_local,
                "2001:db8::200".parse().unwrap(),
            ))
            .unwrap();
    })
    .unwrap();
    let arp = capture
        .next_matching(Duration::from_secs(5), |f| {
            f.len() >= 42 && f[12..14] == [0x08, 0x06]
        })
        .unwrap();
    assert_eq!(&arp[28..32], &[192, 0, 2, 200], "sender address is the VIP");
    capture
        .next_matching(Duration::from_secs(5), |f| {
            f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 136
        })
        .unwrap();
    // The real judge: the peer's kernel maps both VIPs to our MAC. The capture tap
    // sees a frame just before the protocol handlers do, so poll the table briefly.
    let wanted = [
        format!("192.0.2.200 lladdr {mac_text}"),
        format!("2001:db8::200 lladdr {mac_text}"),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let neigh = loop {
        let neigh = b.ip(["neigh", "show", "dev", "eth0"]).unwrap();
        if wanted.iter().all(|w| neigh.contains(w)) || std::time::Instant::now() > deadline {
            break neigh;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for w in &wanted {
        assert!(
            neigh.contains(w),
            "peer's neighbour table lacks {w:?}:\n{neigh}"
        );
    }
}
