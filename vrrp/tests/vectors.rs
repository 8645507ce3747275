//! Adverts captured from keepalived 2.2.7 and FRR 8.4.4 (tests/data, see its README.md):
//! every one decodes to the fields the README states, and re-encoding reproduces the
//! captured bytes exactly, checksums included.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use xdp_lb_vrrp::packet::{self, MULTICAST_V4, MULTICAST_V6, simple_password};
use xdp_lb_vrrp::{Advert, DropReason, Expect, Version, decode, decode_ipv4, encode, encode_ipv4};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;

const NODE1: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 11);
const NODE2: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 12);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 200);

/// One captured advert, split at the IP layer.
struct Frame {
    src_mac: [u8; 6],
    /// The whole IP packet (IPv4 only; empty for IPv6).
    ipv4_packet: Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    vrrp: Vec<u8>,
}

fn frames(name: &str) -> Vec<Frame> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut reader = PcapReader::new(file).unwrap();
    assert_eq!(reader.header().datalink, DataLink::ETHERNET, "{name}");
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap();
        assert_eq!(
            pkt.data.len(),
            pkt.orig_len as usize,
            "{name}: truncated capture"
        );
        out.push(split_frame(&pkt.data));
    }
    assert!(!out.is_empty(), "{name}: no packets");
    out
}

fn split_frame(frame: &[u8]) -> Frame {
    let src_mac: [u8; 6] = frame[6..12].try_into().unwrap();
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let mut ip = &frame[14..];
    if ethertype == ETHERTYPE_VLAN {
        ethertype = u16::from_be_bytes([ip[2], ip[3]]);
        ip = &ip[4..];
    }
    match ethertype {
        ETHERTYPE_IPV4 => {
            let (header, vrrp) = packet::split_ipv4(ip).unwrap();
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            Frame {
                src_mac,
                ipv4_packet: ip[..total].to_vec(),
                src: header.src.into(),
                dst: header.dst.into(),
                ttl: header.ttl,
                vrrp: vrrp.to_vec(),
            }
        }
        ETHERTYPE_IPV6 => {
            let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            assert_eq!(ip[6], packet::IPPROTO_VRRP, "next header");
            let src: [u8; 16] = ip[8..24].try_into().unwrap();
            let dst: [u8; 16] = ip[24..40].try_into().unwrap();
            Frame {
                src_mac,
                ipv4_packet: Vec::new(),
                src: src.into(),
                dst: dst.into(),
                ttl: ip[7],
                vrrp: ip[40..40 + payload_len].to_vec(),
            }
        }
        other => panic!("unexpected ethertype {other:#06x}"),
    }
}

/// Decodes every frame of `name` with `expect`, checks it equals `want`, and that encoding
/// `want` again gives the captured bytes.
fn check_file(name: &str, expect: &Expect, want: &Advert, src: IpAddr, dst: IpAddr) -> Vec<Frame> {
    let frames = frames(name);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!((f.src, f.dst), (src, dst), "{name} #{i}: addresses");
        assert_eq!(f.ttl, 255, "{name} #{i}: ttl");
        let got = decode(&f.vrrp, f.src, f.dst, f.ttl, expect)
            .unwrap_or_else(|r| panic!("{name} #{i}: dropped: {r}"));
        assert_eq!(&got, want, "{name} #{i}");
        assert_eq!(
            encode(want, f.src, f.dst).unwrap(),
            f.vrrp,
            "{name} #{i}: re-encoding differs"
        );
        if let (IpAddr::V4(s), IpAddr::V4(d)) = (f.src, f.dst) {
            let (header, via_ip) = decode_ipv4(&f.ipv4_packet, expect).unwrap();
            assert_eq!((header.src, header.dst, header.ttl), (s, d, 255));
            assert_eq!(&via_ip, want);
        }
        every_bit_flip_is_dropped(name, f, expect);
    }
    frames
}

/// The checksum covers every bit: no single flipped bit gets through.
fn every_bit_flip_is_dropped(name: &str, f: &Frame, expect: &Expect) {
    for byte in 0..f.vrrp.len() {
        for bit in 0..8 {
            let mut p = f.vrrp.clone();
            p[byte] ^= 1 << bit;
            assert!(
                decode(&p, f.src, f.dst, f.ttl, expect).is_err(),
                "{name}: flip of byte {byte} bit {bit} accepted"
            );
        }
    }
}

fn keepalived_v2(priority: u8) -> Advert {
    Advert {
        version: Version::V2,
        vrid: 51,
        priority,
        max_advert_interval: Duration::from_secs(1),
        auth: Some(simple_password(b"PASS")),
        addresses: vec![VIP4.into()],
    }
}

fn v3(vrid: u8, priority: u8, interval: Duration, vip: IpAddr) -> Advert {
    Advert {
        version: Version::V3,
        vrid,
        priority,
        max_advert_interval: interval,
        auth: None,
        addresses: vec![vip],
    }
}

fn v2_expect() -> Expect {
    Expect {
        auth: Some(simple_password(b"PASS")),
        ..Expect::new(Version::V2)
    }
}

#[test]
fn keepalived_v2_with_password() {
    let frames = check_file(
        "keepalived-v2-auth-pass.pcap",
        &v2_expect(),
        &keepalived_v2(150),
        NODE1.into(),
        MULTICAST_V4.into(),
    );
    assert_eq!(frames.len(), 2);
    // The whole IP packet as keepalived builds it (TOS 0xc0, no DF, TTL 255), with its id.
    for f in &frames {
        let id = u16::from_be_bytes([f.ipv4_packet[4], f.ipv4_packet[5]]);
        let ours = encode_ipv4(&keepalived_v2(150), NODE1, MULTICAST_V4, id).unwrap();
        assert_eq!(ours, f.ipv4_packet);
    }

    // Wrong password, no password, other version: dropped with the reason.
    let f = &frames[0];
    let other = Expect {
        auth: Some(simple_password(b"1111")),
        ..Expect::new(Version::V2)
    };
    let d = |e: &Expect| decode(&f.vrrp, f.src, f.dst, 255, e);
    assert_eq!(d(&other), Err(DropReason::AuthMismatch));
    assert_eq!(
        d(&Expect::new(Version::V2)),
        Err(DropReason::AuthTypeMismatch)
    );
    assert_eq!(
        d(&Expect::new(Version::V3)),
        Err(DropReason::VersionMismatch)
    );
    assert_eq!(
        decode(&f.vrrp, f.src, f.dst, 254, &v2_expect()),
        Err(DropReason::BadTtl)
    );
}

#[test]
fn keepalived_v2_priority_zero_on_stop() {
    let frames = check_file(
        "keepalived-v2-prio0.pcap",
        &v2_expect(),
        &keepalived_v2(0),
        NODE1.into(),
        MULTICAST_V4.into(),
    );
    assert_eq!(frames.len(), 1);
    let f = &frames[0];
    let id = u16::from_be_bytes([f.ipv4_packet[4], f.ipv4_packet[5]]);
    assert_eq!(
        encode_ipv4(&keepalived_v2(0), NODE1, MULTICAST_V4, id).unwrap(),
        f.ipv4_packet
    );
}

#[test]
fn keepalived_v3_ipv4_100ms() {
    let want = v3(51, 150, Duration::from_millis(100), VIP4.into());
    let frames = check_file(
        "keepalived-v3-ipv4-100ms.pcap",
        &Expect::new(Version::V3),
        &want,
        NODE1.into(),
        MULTICAST_V4.into(),
    );
    assert_eq!(frames.len(), 10);
    for f in &frames {
        let id = u16::from_be_bytes([f.ipv4_packet[4], f.ipv4_packet[5]]);
        assert_eq!(
            encode_ipv4(&want, NODE1, MULTICAST_V4, id).unwrap(),
            f.ipv4_packet
        );
    }
    // The interval field is 10 centiseconds.
    assert_eq!(frames[0].vrrp[4..6], [0x00, 0x0a]);
}

#[test]
fn keepalived_v3_ipv4_unicast() {
    let want = v3(51, 150, Duration::from_secs(1), VIP4.into());
    let unicast = Expect {
        unicast: true,
        ..Expect::new(Version::V3)
    };
    let frames = check_file(
        "keepalived-v3-ipv4-unicast.pcap",
        &unicast,
        &want,
        NODE1.into(),
        NODE2.into(),
    );
    assert_eq!(frames.len(), 2);
    let f = &frames[0];
    let id = u16::from_be_bytes([f.ipv4_packet[4], f.ipv4_packet[5]]);
    assert_eq!(encode_ipv4(&want, NODE1, NODE2, id).unwrap(), f.ipv4_packet);
    // The checksum covers the unicast destination: summed over the multicast group
    // (keepalived before 2.0's "unicast_chksum_compat") it would not verify.
    assert_eq!(
        decode(
            &f.vrrp,
            f.src,
            MULTICAST_V4.into(),
            255,
            &Expect::new(Version::V3)
        ),
        Err(DropReason::BadChecksum)
    );
    // A multicast instance refuses unicast adverts.
    assert_eq!(
        decode(&f.vrrp, f.src, f.dst, 255, &Expect::new(Version::V3)),
        Err(DropReason::WrongDestination)
    );
}

#[test]
fn keepalived_v3_ipv6() {
    let node6: IpAddr = "fe80::99:ff:fe00:60a".parse().unwrap();
    let vip6: IpAddr = "2001:db8::200".parse().unwrap();
    let want = v3(52, 150, Duration::from_secs(1), vip6);
    let frames = check_file(
        "keepalived-v3-ipv6.pcap",
        &Expect::new(Version::V3),
        &want,
        node6,
        MULTICAST_V6.into(),
    );
    assert_eq!(frames.len(), 2);
    // Hop limit other than 255: dropped.
    let f = &frames[0];
    assert_eq!(
        decode(&f.vrrp, f.src, f.dst, 64, &Expect::new(Version::V3)),
        Err(DropReason::BadTtl)
    );
}

#[test]
fn frr_v3_ipv4() {
    let want = v3(51, 120, Duration::from_secs(1), VIP4.into());
    let frames = check_file(
        "frr-v3-ipv4.pcap",
        &Expect::new(Version::V3),
        &want,
        NODE2.into(),
        MULTICAST_V4.into(),
    );
    assert_eq!(frames.len(), 2);
    // FRR sends from the virtual MAC 00:00:5e:00:01:<vrid>.
    assert_eq!(frames[0].src_mac, [0x00, 0x00, 0x5e, 0x00, 0x01, 51]);
    // FRR sets DF, keepalived does not: only the VRRP part is byte-identical.
    assert_eq!(frames[0].ipv4_packet[6], 0x40);
}
