//! Property tests: the decoder survives any bytes, encode → decode is the identity on
//! valid adverts, and the state machine survives any event sequence.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use xdp_lb_vrrp::packet::{self, MULTICAST_V4, MULTICAST_V6};
use xdp_lb_vrrp::{
    Advert, Config, DropReason, Event, Expect, Instance, State, Version, decode, decode_ipv4,
    encode,
};

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        Just(IpAddr::V4(MULTICAST_V4)),
        Just(IpAddr::V6(MULTICAST_V6)),
    ]
}

fn any_version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V2), Just(Version::V3)]
}

fn any_expect() -> impl Strategy<Value = Expect> {
    (
        any_version(),
        proptest::option::of(any::<[u8; 8]>()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(version, auth, check_ttl, unicast)| Expect {
            version,
            auth,
            check_ttl,
            unicast,
        })
}

/// Bytes that look like VRRP often enough to reach the deeper checks.
fn vrrpish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (
            prop_oneof![Just(0x21u8), Just(0x31u8), any::<u8>()],
            0u8..8,
            proptest::collection::vec(any::<u8>(), 0..140)
        )
            .prop_map(|(vt, count, mut rest)| {
                let mut v = vec![vt, 51, 100, count];
                v.append(&mut rest);
                v
            }),
    ]
}

/// A valid advert with the sender and destination it can be sent between.
fn valid_advert() -> impl Strategy<Value = (Advert, IpAddr, IpAddr)> {
    (
        any::<bool>(),
        any_version(),
        any::<u8>(),
        any::<u8>(),
        1u64..=255,
        1u64..=4095,
        proptest::option::of(any::<[u8; 8]>()),
        proptest::collection::vec(any::<[u8; 16]>(), 0..20),
        any::<[u8; 16]>(),
        proptest::option::of(any::<[u8; 16]>()),
    )
        .prop_map(
            |(ipv6, version, vrid, priority, secs, cs, auth, addrs, src, unicast_dst)| {
                // v2 is IPv4 only.
                let ipv6 = ipv6 && version == Version::V3;
                let ip = |b: [u8; 16]| -> IpAddr {
                    if ipv6 {
                        IpAddr::V6(Ipv6Addr::from(b))
                    } else {
                        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                    }
                };
                let (interval, auth) = match version {
                    Version::V2 => (Duration::from_secs(secs), auth),
                    Version::V3 => (Duration::from_millis(cs * 10), None),
                };
                let group = if ipv6 {
                    IpAddr::V6(MULTICAST_V6)
                } else {
                    IpAddr::V4(MULTICAST_V4)
                };
                let dst = unicast_dst.map(ip).unwrap_or(group);
                let advert = Advert {
                    version,
                    vrid,
                    priority,
                    max_advert_interval: interval,
                    auth,
                    addresses: addrs.into_iter().map(ip).collect(),
                };
                (advert, ip(src), dst)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics(
        payload in vrrpish_bytes(),
        src in any_ip(),
        dst in any_ip(),
        ttl in any::<u8>(),
        expect in any_expect(),
    ) {
        let _ = decode(&payload, src, dst, ttl, &expect);
        let _ = packet::peek_vrid(&payload);
    }

    #[test]
    fn decode_ipv4_never_panics(
        mut packet in proptest::collection::vec(any::<u8>(), 0..120),
        ihl in 0u8..16,
        expect in any_expect(),
    ) {
        // Often a plausible IPv4 header, so the VRRP decoder behind it is reached too.
        if packet.len() >= 20 && ihl % 2 == 0 {
            packet[0] = 0x40 | ihl;
            let len = u16::try_from(packet.len()).unwrap();
            packet[2..4].copy_from_slice(&len.to_be_bytes());
            packet[9] = packet::IPPROTO_VRRP;
        }
        let _ = decode_ipv4(&packet, &expect);
    }

    #[test]
    fn encode_decode_round_trip((advert, src, dst) in valid_advert()) {
        let bytes = encode(&advert, src, dst).unwrap();
        prop_assert_eq!(bytes.len(), advert.encoded_len(src.is_ipv6()));
        let expect = Expect {
            version: advert.version,
            auth: advert.auth,
            check_ttl: true,
            unicast: !dst.is_multicast(),
        };
        prop_assert_eq!(decode(&bytes, src, dst, 255, &expect), Ok(advert));
    }

    #[test]
    fn instance_survives_any_event_sequence(
        priority in 1u8..=255,
        v3 in any::<bool>(),
        preempt in any::<bool>(),
        delay_ms in 0u64..5000,
        steps in proptest::collection::vec(
            (0u64..3000, 0u8..8, any::<u8>(), any::<i32>(), any::<bool>(), 0usize..16),
            1..60,
        ),
    ) {
        let me: IpAddr = "192.0.2.11".parse().unwrap();
        let cfg = Config {
            priority,
            version: if v3 { Version::V3 } else { Version::V2 },
            preempt,
            preempt_delay: Duration::from_millis(delay_ms),
            addresses: vec!["192.0.2.200".parse().unwrap()],
            ..Config::new(51, me)
        };
        let mut vr = Instance::new(cfg).unwrap();
        let mut now = Instant::now();
        for (dt, kind, prio, adjust, flag, reason) in steps {
            now += Duration::from_millis(dt);
            let peer: IpAddr = if flag { "192.0.2.12" } else { "192.0.2.10" }.parse().unwrap();
            let event = match kind {
                0 => Event::Start,
                1 | 2 => Event::Timer,
                3 => Event::Advert { from: peer, advert: vr.advert(prio) },
                4 => Event::Dropped { from: peer, reason: DropReason::ALL[reason] },
                5 => Event::PriorityAdjust(adjust),
                6 => Event::FaultSet(flag),
                _ => Event::Shutdown,
            };
            vr.handle(now, event);
            // Deadlines exist exactly while running.
            match vr.state() {
                State::Master => prop_assert!(vr.next_deadline().is_some()),
                State::Backup => prop_assert!(vr.next_deadline().is_some()),
                State::Initialize | State::Fault => prop_assert!(vr.next_deadline().is_none()),
            }
            prop_assert!(vr.priority() >= 1);
        }
    }
}
