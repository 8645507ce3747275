//! Fuzz target: the VRRP decoder through both entry points ([`decode`] / [`decode_form`]
//! on a VRRP message, [`decode_ipv4`] on an IPv4 packet) at scale, on the adverts
//! captured from keepalived and FRR (`tests/data`, v2 and v3, IPv4 and IPv6, multicast
//! and unicast) mutated field by field and byte by byte (address added or removed, v2
//! turned into v3 and back, checksum repaired or not, IPv4 header fields and options),
//! and on random bytes.
//!
//! `properties.rs` checks the decoder against a model on generated adverts; this checks
//! what holds for any input, on many more and nastier ones: no panic, `decode` is
//! `decode_form` without the form and `decode_ipv4` is `split_ipv4` then `decode`, and
//! whatever decodes is a valid advert that re-encodes to the same bytes (less what the
//! decoder ignores) and decodes again to itself. The campaign must reach an accepted
//! advert and every drop reason the decoder has, so it cannot pass by never getting far.
//!
//! proptest at scale rather than cargo-fuzz: cargo-fuzz needs nightly, an instrumented
//! build and a CI step of its own; proptest runs under `cargo test` in seconds, is
//! reproducible from a printed seed and shrinks what it finds (the reasoning in full:
//! `tests/tests/fuzz/mod.rs` at the workspace root, whose runner this copies).
//! `XDP_LB_FUZZ_SCALE=N` runs N times the cases; `XDP_LB_FUZZ_SEED=N|random` sets the
//! seed (default fixed). No root, no network.

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Instant;

use pcap_file::pcap::PcapReader;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{
    Config as RunnerConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};
use xdp_lb_vrrp::checksum;
use xdp_lb_vrrp::packet::{self, AUTH_LEN, HEADER_LEN, IPPROTO_VRRP, MULTICAST_V4, MULTICAST_V6};
use xdp_lb_vrrp::{
    ChecksumForm, DropReason, Expect, Ipv4Header, Version, decode, decode_form, decode_ipv4,
    encode, encode_ipv4,
};

const CAPTURES: &[&str] = &[
    "keepalived-v2-auth-pass.pcap",
    "keepalived-v2-prio0.pcap",
    "keepalived-v3-ipv4-100ms.pcap",
    "keepalived-v3-ipv4-unicast.pcap",
    "keepalived-v3-ipv6.pcap",
    "frr-v3-ipv4.pcap",
];

/// Cases at scale 1: a few seconds of a debug build.
const DEFAULT_CASES: u32 = 20_000;

// ----- the runner (a copy of tests/tests/fuzz/mod.rs's `campaign`) -----

const SCALE_VAR: &str = "XDP_LB_FUZZ_SCALE";
const SEED_VAR: &str = "XDP_LB_FUZZ_SEED";
const DEFAULT_SEED: u64 = 0x7864_702d_6c62;

fn budget(default_cases: u32) -> (u32, u64) {
    let scale = std::env::var(SCALE_VAR).map_or(1, |v| {
        v.trim()
            .parse::<u32>()
            .unwrap_or_else(|_| panic!("{SCALE_VAR}={v:?}: expected a whole number"))
    });
    let seed = match std::env::var(SEED_VAR) {
        Ok(v) if v.trim() == "random" => std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish(),
        Ok(v) => {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse::<u64>(),
            }
            .unwrap_or_else(|_| panic!("{SEED_VAR}={v:?}: expected a number or `random`"))
        }
        Err(_) => DEFAULT_SEED,
    };
    (default_cases.saturating_mul(scale), seed)
}

fn runner(name: &str, cases: u32, seed: u64) -> TestRunner {
    let config = RunnerConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 10_000,
        ..RunnerConfig::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    for (i, b) in name.bytes().enumerate() {
        bytes[8 + i % 24] ^= b;
    }
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

// ----- the captured adverts -----

/// One captured advert: the VRRP message and its IP fields (an IPv4 packet is rebuilt
/// around it as keepalived builds one, then mutated).
#[derive(Debug, Clone)]
struct Capture {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    vrrp: Vec<u8>,
}

fn captures() -> Vec<Capture> {
    let mut out = Vec::new();
    for name in CAPTURES {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let mut reader = PcapReader::new(file).unwrap();
        // One advert per file is enough: a file's adverts differ in no field.
        let frame = reader.next_packet().expect("a packet").unwrap().data;
        let (mut ethertype, mut ip) = (u16::from_be_bytes([frame[12], frame[13]]), &frame[14..]);
        if ethertype == 0x8100 {
            ethertype = u16::from_be_bytes([ip[2], ip[3]]);
            ip = &ip[4..];
        }
        out.push(match ethertype {
            0x0800 => {
                let (header, vrrp) = packet::split_ipv4(ip).unwrap();
                Capture {
                    src: header.src.into(),
                    dst: header.dst.into(),
                    ttl: header.ttl,
                    vrrp: vrrp.to_vec(),
                }
            }
            0x86dd => {
                let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                let src: [u8; 16] = ip[8..24].try_into().unwrap();
                let dst: [u8; 16] = ip[24..40].try_into().unwrap();
                Capture {
                    src: src.into(),
                    dst: dst.into(),
                    ttl: ip[7],
                    vrrp: ip[40..40 + len].to_vec(),
                }
            }
            other => panic!("{name}: ethertype {other:#06x}"),
        });
    }
    out
}

/// What a receiver configured like the sender expects of `vrrp` from `dst`.
fn matching_expect(vrrp: &[u8], dst: IpAddr) -> Expect {
    let version = Version::from_number(vrrp.first().map_or(3, |b| b >> 4)).unwrap_or(Version::V3);
    let auth = match version {
        Version::V2 if vrrp.get(4) == Some(&1) && vrrp.len() >= AUTH_LEN => {
            Some(vrrp[vrrp.len() - AUTH_LEN..].try_into().expect("8 bytes"))
        }
        _ => None,
    };
    Expect {
        version,
        auth,
        check_ttl: true,
        unicast: !dst.is_multicast(),
    }
}

// ----- mutations -----

/// One edit of a VRRP message.
#[derive(Debug, Clone)]
enum Edit {
    /// Byte 0..6 of the header (version/type, VRID, priority, count, auth type or
    /// interval).
    Field(usize, u8),
    /// The version nibble or the type nibble alone.
    Version(u8),
    Type(u8),
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    Append(Vec<u8>),
    /// One more address (of the message's family), the count kept right.
    AddAddress([u8; 16]),
    /// One address fewer, the count kept right.
    RemoveAddress,
    /// v2 ⇄ v3: the version and the 8 bytes of authentication data.
    SwitchVersion,
    /// Rewrite the authentication data (v2).
    Password([u8; AUTH_LEN]),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (0usize..6, any::<u8>()).prop_map(|(f, v)| Edit::Field(f, v)),
        2 => prop_oneof![Just(2u8), Just(3), any::<u8>()].prop_map(Edit::Version),
        1 => prop_oneof![Just(1u8), any::<u8>()].prop_map(Edit::Type),
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => (any::<Index>(), vec(any::<u8>(), 1..20)).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<Index>(), 1usize..20).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => vec(any::<u8>(), 1..20).prop_map(Edit::Append),
        3 => any::<[u8; 16]>().prop_map(Edit::AddAddress),
        2 => Just(Edit::RemoveAddress),
        2 => Just(Edit::SwitchVersion),
        1 => any::<[u8; AUTH_LEN]>().prop_map(Edit::Password),
    ]
}

fn apply(msg: &mut Vec<u8>, edit: &Edit, ipv6: bool) {
    let addr_len = if ipv6 { 16 } else { 4 };
    let is_v2 = msg.first().is_some_and(|b| b >> 4 == 2);
    let auth_len = if is_v2 { AUTH_LEN } else { 0 };
    let at = |i: &Index, len: usize| i.index(len + 1).min(len);
    match edit {
        Edit::Field(f, v) => {
            if let Some(b) = msg.get_mut(*f) {
                *b = *v;
            }
        }
        Edit::Version(v) => {
            if let Some(b) = msg.first_mut() {
                *b = (v << 4) | (*b & 0x0f);
            }
        }
        Edit::Type(t) => {
            if let Some(b) = msg.first_mut() {
                *b = (*b & 0xf0) | (t & 0x0f);
            }
        }
        Edit::Flip(i, bit) if !msg.is_empty() => {
            let i = i.index(msg.len());
            msg[i] ^= 1 << bit;
        }
        Edit::Set(i, v) if !msg.is_empty() => {
            let i = i.index(msg.len());
            msg[i] = *v;
        }
        Edit::Flip(..) | Edit::Set(..) => {}
        Edit::Insert(i, bytes) => {
            let i = at(i, msg.len());
            msg.splice(i..i, bytes.iter().copied());
        }
        Edit::Delete(i, n) => {
            let i = at(i, msg.len());
            let end = (i + n).min(msg.len());
            msg.drain(i..end);
        }
        Edit::Truncate(i) => msg.truncate(at(i, msg.len())),
        Edit::Append(bytes) => msg.extend_from_slice(bytes),
        Edit::AddAddress(a) if msg.len() >= HEADER_LEN + auth_len => {
            let end = msg.len() - auth_len;
            msg.splice(end..end, a[..addr_len].iter().copied());
            msg[3] = msg[3].wrapping_add(1);
        }
        Edit::RemoveAddress if msg.len() >= HEADER_LEN + auth_len + addr_len => {
            let end = msg.len() - auth_len;
            msg.drain(end - addr_len..end);
            msg[3] = msg[3].wrapping_sub(1);
        }
        Edit::AddAddress(_) | Edit::RemoveAddress => {}
        Edit::SwitchVersion if msg.len() >= HEADER_LEN => {
            if is_v2 {
                msg[0] = 0x30 | (msg[0] & 0x0f);
                let n = msg.len().saturating_sub(AUTH_LEN).max(HEADER_LEN);
                msg.truncate(n);
                // v3's interval is centiseconds; v2's whole seconds.
                let cs = u16::from(msg[5]) * 100;
                msg[4..6].copy_from_slice(&cs.to_be_bytes());
            } else {
                msg[0] = 0x20 | (msg[0] & 0x0f);
                let cs = u16::from_be_bytes([msg[4], msg[5]]) & 0x0fff;
                msg[4] = 0;
                msg[5] = u8::try_from(cs / 100).unwrap_or(u8::MAX);
                msg.extend_from_slice(&[0; AUTH_LEN]);
            }
        }
        Edit::SwitchVersion => {}
        Edit::Password(p) => {
            if is_v2 && msg.len() >= HEADER_LEN + AUTH_LEN {
                let n = msg.len();
                msg[n - AUTH_LEN..].copy_from_slice(p);
                msg[4] = 1;
            }
        }
    }
}

/// Which checksum the mutated message carries.
#[derive(Debug, Clone, Copy)]
enum Sum {
    /// The captured (now likely wrong) one, or whatever the edits left.
    AsIs,
    /// Repaired over the real addresses, so the checks after the checksum are reached.
    Repaired,
    /// Repaired over 224.0.0.18, as keepalived before 1.3.6 sent v3 unicast.
    OldUnicast,
}

/// The IP side of a case.
#[derive(Debug, Clone)]
enum Addresses {
    AsCaptured,
    Swapped,
    /// The destination made multicast or unicast, the other of what it was.
    OtherKind,
    /// A source of the other family.
    MixedFamilies,
    Random(IpAddr, IpAddr),
}

/// An edit of the IPv4 header (the packet is rebuilt from the decoded fields).
#[derive(Debug, Clone)]
enum IpEdit {
    Byte(usize, u8),
    /// IP options (the header length follows).
    Options(Vec<u8>),
    /// Total length off by this much.
    TotalLength(i32),
    /// Link-layer padding past the total length.
    Padding(Vec<u8>),
}

fn ip_edit() -> impl Strategy<Value = IpEdit> {
    prop_oneof![
        3 => (0usize..20, any::<u8>()).prop_map(|(i, v)| IpEdit::Byte(i, v)),
        2 => (0usize..=10)
            .prop_flat_map(|words| vec(any::<u8>(), words * 4))
            .prop_map(IpEdit::Options),
        2 => prop_oneof![-30i32..30, any::<i32>()].prop_map(IpEdit::TotalLength),
        1 => vec(any::<u8>(), 1..16).prop_map(IpEdit::Padding),
    ]
}

/// One input: the message with its addresses, TTL and expectation; and the IPv4 packet
/// carrying it (when IPv4).
#[derive(Debug, Clone)]
struct Case {
    vrrp: Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    expect: Expect,
    ipv4: Option<Vec<u8>>,
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        Just(IpAddr::V4(MULTICAST_V4)),
        Just(IpAddr::V6(MULTICAST_V6)),
    ]
}

fn expect_edit() -> impl Strategy<Value = Option<Expect>> {
    let other = (
        prop_oneof![Just(Version::V2), Just(Version::V3)],
        proptest::option::of(prop_oneof![
            Just(packet::simple_password(b"PASS")),
            any::<[u8; AUTH_LEN]>()
        ]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(version, auth, check_ttl, unicast)| Expect {
            version,
            auth,
            check_ttl,
            unicast,
        });
    // Mostly what the (mutated) message would meet at a receiver like its sender.
    prop_oneof![3 => Just(None), 1 => other.prop_map(Some)]
}

fn mutated_capture(seeds: Vec<Capture>) -> impl Strategy<Value = Case> {
    let sum =
        prop_oneof![1 => Just(Sum::AsIs), 4 => Just(Sum::Repaired), 1 => Just(Sum::OldUnicast)];
    let addresses = prop_oneof![
        6 => Just(Addresses::AsCaptured),
        1 => Just(Addresses::Swapped),
        1 => Just(Addresses::OtherKind),
        1 => Just(Addresses::MixedFamilies),
        1 => (any_ip(), any_ip()).prop_map(|(s, d)| Addresses::Random(s, d)),
    ];
    let ttl = prop_oneof![4 => Just(None), 1 => any::<u8>().prop_map(Some)];
    (
        select(seeds),
        vec(edit(), 0..5),
        sum,
        addresses,
        ttl,
        expect_edit(),
        vec(ip_edit(), 0..3),
    )
        .prop_map(|(seed, edits, sum, addresses, ttl, expect, ip_edits)| {
            let (src, dst) = match addresses {
                Addresses::AsCaptured => (seed.src, seed.dst),
                Addresses::Swapped => (seed.dst, seed.src),
                Addresses::OtherKind => (
                    seed.src,
                    match (seed.dst.is_multicast(), seed.dst) {
                        (true, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 12)),
                        (true, IpAddr::V6(_)) => "2001:db8::12".parse().expect("an address"),
                        (false, IpAddr::V4(_)) => IpAddr::V4(MULTICAST_V4),
                        (false, IpAddr::V6(_)) => IpAddr::V6(MULTICAST_V6),
                    },
                ),
                Addresses::MixedFamilies => match seed.src {
                    IpAddr::V4(_) => (IpAddr::V6(Ipv6Addr::LOCALHOST), seed.dst),
                    IpAddr::V6(_) => (IpAddr::V4(Ipv4Addr::LOCALHOST), seed.dst),
                },
                Addresses::Random(s, d) => (s, d),
            };
            let mut vrrp = seed.vrrp.clone();
            for e in &edits {
                apply(&mut vrrp, e, src.is_ipv6());
            }
            let version = Version::from_number(vrrp.first().map_or(0, |b| b >> 4));
            if let (Some(version), true) = (version, vrrp.len() >= HEADER_LEN) {
                let pseudo_dst = match sum {
                    Sum::AsIs => None,
                    Sum::Repaired => Some(dst),
                    Sum::OldUnicast => Some(IpAddr::V4(MULTICAST_V4)),
                };
                if let Some(pseudo_dst) = pseudo_dst {
                    vrrp[6..8].fill(0);
                    let sum = checksum::vrrp_checksum(version, src, pseudo_dst, &vrrp);
                    vrrp[6..8].copy_from_slice(&sum);
                }
            }
            let ttl = ttl.unwrap_or(seed.ttl);
            let expect = expect.unwrap_or_else(|| matching_expect(&vrrp, dst));
            let ipv4 = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => Some(ipv4_packet(s, d, ttl, &vrrp, &ip_edits)),
                _ => None,
            };
            Case {
                vrrp,
                src,
                dst,
                ttl,
                expect,
                ipv4,
            }
        })
}

/// An IPv4 packet around `vrrp` as keepalived sends it, then `edits`.
fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, vrrp: &[u8], edits: &[IpEdit]) -> Vec<u8> {
    let mut options = Vec::new();
    let mut padding = Vec::new();
    let mut length_off = 0i32;
    for e in edits {
        match e {
            IpEdit::Options(o) => options = o.clone(),
            IpEdit::Padding(p) => padding = p.clone(),
            IpEdit::TotalLength(d) => length_off = *d,
            IpEdit::Byte(..) => {}
        }
    }
    let header_len = 20 + options.len();
    let total = (header_len + vrrp.len()) as i64 + i64::from(length_off);
    let total = u16::try_from(total.clamp(0, 65535)).expect("clamped");
    let mut out = vec![
        0x40 | u8::try_from(header_len / 4).expect("at most 60"),
        0xc0,
    ];
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, ttl, IPPROTO_VRRP, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    for e in edits {
        if let IpEdit::Byte(i, v) = e {
            out[*i] = *v;
        }
    }
    out.extend_from_slice(&options);
    out.extend_from_slice(vrrp);
    out.extend_from_slice(&padding);
    out
}

/// Random bytes, often with a VRRP-looking first byte, and random IP fields.
fn random_case() -> impl Strategy<Value = Case> {
    let first = prop_oneof![Just(0x21u8), Just(0x31), any::<u8>()];
    (
        first,
        vec(any::<u8>(), 0..120),
        any_ip(),
        any_ip(),
        prop_oneof![Just(255u8), any::<u8>()],
        expect_edit(),
        vec(any::<u8>(), 0..80),
    )
        .prop_map(|(first, mut vrrp, src, dst, ttl, expect, raw_ip)| {
            if let Some(b) = vrrp.first_mut() {
                *b = first;
            }
            let expect = expect.unwrap_or_else(|| matching_expect(&vrrp, dst));
            // Random bytes as an IPv4 packet too, now and then with a header that holds.
            let mut ipv4 = raw_ip;
            if ipv4.len() >= 20 && first & 1 == 1 {
                ipv4[0] = 0x45;
                let len = u16::try_from(ipv4.len()).expect("short");
                ipv4[2..4].copy_from_slice(&len.to_be_bytes());
                ipv4[9] = IPPROTO_VRRP;
            }
            Case {
                vrrp,
                src,
                dst,
                ttl,
                expect,
                ipv4: Some(ipv4),
            }
        })
}

// ----- the properties -----

/// How often each entry point accepted or dropped (by reason).
#[derive(Debug, Default)]
struct Seen {
    decode: BTreeMap<&'static str, u32>,
    decode_ipv4: BTreeMap<&'static str, u32>,
}

fn outcome<T>(r: &Result<T, DropReason>) -> &'static str {
    match r {
        Ok(_) => "accepted",
        Err(reason) => reason.name(),
    }
}

/// The message with what the decoder ignores cleared: the v3 reserved bits, the v2
/// authentication data without a password, and the checksum recomputed over `dst`.
fn normalized(case: &Case, v3: bool, auth: bool) -> Vec<u8> {
    let mut out = case.vrrp.clone();
    if v3 {
        out[4] &= 0x0f;
    } else if !auth {
        let n = out.len();
        out[n - AUTH_LEN..].fill(0);
    }
    out[6..8].fill(0);
    let version = if v3 { Version::V3 } else { Version::V2 };
    let sum = checksum::vrrp_checksum(version, case.src, case.dst, &out);
    out[6..8].copy_from_slice(&sum);
    out
}

fn check(case: Case, seen: &mut Seen) -> Result<(), TestCaseError> {
    let Case {
        vrrp,
        src,
        dst,
        ttl,
        expect,
        ..
    } = &case;
    let got = decode(vrrp, *src, *dst, *ttl, expect);
    let with_form = decode_form(vrrp, *src, *dst, *ttl, expect);
    prop_assert_eq!(
        &got,
        &with_form.clone().map(|(a, _)| a),
        "decode is not decode_form"
    );
    prop_assert_eq!(packet::peek_vrid(vrrp), vrrp.get(1).copied());
    *seen.decode.entry(outcome(&got)).or_default() += 1;

    if let Ok((advert, form)) = with_form {
        prop_assert_eq!(
            advert.validate(*src, *dst),
            Ok(()),
            "decoded, yet not valid"
        );
        prop_assert_eq!(advert.addresses.len(), usize::from(vrrp[3]));
        prop_assert_eq!(advert.encoded_len(src.is_ipv6()), vrrp.len());
        let v3 = advert.version == Version::V3;
        let again = encode(&advert, *src, *dst);
        prop_assert_eq!(
            again.as_ref(),
            Ok(&normalized(&case, v3, advert.auth.is_some())),
            "re-encoding gives other bytes ({:?} checksum)",
            form
        );
        if form == ChecksumForm::Rfc && !v3 && advert.auth.is_some() {
            // Nothing to normalise: the very same bytes, checksum included (up to its
            // two zeros, 0x0000 and 0xffff).
            let zero = |b: &[u8]| {
                if b == [0xff, 0xff] {
                    vec![0, 0]
                } else {
                    b.to_vec()
                }
            };
            let again = again.as_ref().expect("checked");
            prop_assert_eq!(&again[..6], &vrrp[..6]);
            prop_assert_eq!(zero(&again[6..8]), zero(&vrrp[6..8]));
            prop_assert_eq!(&again[8..], &vrrp[8..]);
        }
        let round_trip = decode_form(again.as_ref().expect("checked"), *src, *dst, 255, expect);
        prop_assert_eq!(round_trip, Ok((advert, ChecksumForm::Rfc)));
    }

    if let Some(packet) = &case.ipv4 {
        let got = decode_ipv4(packet, expect);
        let split = packet::split_ipv4(packet).and_then(|(h, payload)| {
            decode(payload, h.src.into(), h.dst.into(), h.ttl, expect).map(|a| (h, a))
        });
        prop_assert_eq!(&got, &split, "decode_ipv4 is not split_ipv4 then decode");
        *seen.decode_ipv4.entry(outcome(&got)).or_default() += 1;
        if let Ok((header, advert)) = got {
            let id = u16::from(header.ttl);
            let again = encode_ipv4(&advert, header.src, header.dst, id);
            prop_assert!(again.is_ok(), "{:?}", again);
            let want = Ipv4Header { ttl: 255, ..header };
            prop_assert_eq!(
                decode_ipv4(&again.expect("checked"), expect),
                Ok((want, advert)),
                "encode_ipv4 then decode_ipv4 is not the identity"
            );
        }
    }
    Ok(())
}

#[test]
fn mutated_and_random_adverts_decode_or_drop_with_a_reason() {
    let (cases, seed) = budget(DEFAULT_CASES);
    let name = "fuzz_decode";
    eprintln!(
        "{name}: {cases} cases, seed {seed:#x} ({SEED_VAR}=N|random, {SCALE_VAR}=N for N \
         times the cases)"
    );
    let seeds = captures();
    assert_eq!(seeds.len(), CAPTURES.len());
    for (i, s) in seeds.iter().enumerate() {
        // The mutations start from adverts a receiver like the sender accepts.
        let accepted = decode(
            &s.vrrp,
            s.src,
            s.dst,
            s.ttl,
            &matching_expect(&s.vrrp, s.dst),
        );
        assert!(accepted.is_ok(), "{}: {accepted:?}", CAPTURES[i]);
    }
    let strategy = prop_oneof![4 => mutated_capture(seeds), 1 => random_case()];
    let mut runner = runner(name, cases, seed);
    let seen = std::cell::RefCell::new(Seen::default());
    let start = Instant::now();
    let result = runner.run(&strategy, |case| check(case, &mut seen.borrow_mut()));
    let secs = start.elapsed().as_secs_f64();
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => panic!(
            "{name}: failed with {SEED_VAR}={seed:#x} ({cases} cases): {why}\nminimal input: \
             {input:#?}"
        ),
        Err(TestError::Abort(why)) => panic!("{name}: aborted with {SEED_VAR}={seed:#x}: {why}"),
    }
    let seen = seen.into_inner();
    eprintln!(
        "{name}: {cases} cases, no failure, in {secs:.1} s ({:.0} cases/s)\n  decode: \
         {:?}\n  decode_ipv4: {:?}",
        f64::from(cases) / secs.max(1e-9),
        seen.decode,
        seen.decode_ipv4
    );
    // Not vacuous: adverts got through both entry points, and every drop reason the
    // decoder has was met (UnknownSource is the receiving instance's, not the decoder's).
    for (entry, counts) in [("decode", &seen.decode), ("decode_ipv4", &seen.decode_ipv4)] {
        assert!(
            counts.contains_key("accepted"),
            "{entry} accepted nothing: {counts:?}"
        );
    }
    let missed: Vec<&str> = DropReason::ALL
        .iter()
        .filter(|r| **r != DropReason::UnknownSource)
        .map(|r| r.name())
        .filter(|r| !seen.decode.contains_key(r) && !seen.decode_ipv4.contains_key(r))
        .collect();
    assert!(missed.is_empty(), "never reached: {missed:?}\n{seen:?}");
}
