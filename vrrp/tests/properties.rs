//! Property tests: the decoder survives any bytes, encode → decode is the identity on
//! valid adverts, the checksum agrees with RFC 1071 worked out by hand, bodies whose
//! checksum is repaired reach every check after it (each mutation of a valid advert fails
//! on exactly the check it breaks), and a dropped packet is only counted: it never moves
//! the state machine.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::{TestCaseError, TestRunner};
use xdp_lb_vrrp::checksum;
use xdp_lb_vrrp::packet::{self, AUTH_LEN, HEADER_LEN, MULTICAST_V4, MULTICAST_V6};
use xdp_lb_vrrp::{
    Action, Advert, Clash, Config, DropReason, Event, Expect, Instance, Ipv4Header, State, Stats,
    Version, decode, decode_ipv4, encode,
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
        vec(any::<u8>(), 0..64),
        (
            prop_oneof![Just(0x21u8), Just(0x31u8), any::<u8>()],
            0u8..8,
            vec(any::<u8>(), 0..140)
        )
            .prop_map(|(vt, count, mut rest)| {
                let mut v = vec![vt, 51, 100, count];
                v.append(&mut rest);
                v
            }),
    ]
}

/// An address of the chosen family from 16 random bytes.
fn ip_from(raw: [u8; 16], ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::from(raw))
    } else {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    }
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `a` with bit `bit` (modulo its width) flipped.
fn flip_bit(a: IpAddr, bit: usize) -> IpAddr {
    let mut o = octets(a);
    let bit = bit % (o.len() * 8);
    o[bit / 8] ^= 1 << (bit % 8);
    match a {
        IpAddr::V4(_) => IpAddr::from(<[u8; 4]>::try_from(o).unwrap()),
        IpAddr::V6(_) => IpAddr::from(<[u8; 16]>::try_from(o).unwrap()),
    }
}

/// The VRRP group of `a`'s family.
fn group_of(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => IpAddr::V4(MULTICAST_V4),
        IpAddr::V6(_) => IpAddr::V6(MULTICAST_V6),
    }
}

/// A unicast address of `a`'s family.
fn unicast_of(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe)),
    }
}

/// The VRRP group of the other family.
fn other_family(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => IpAddr::V6(MULTICAST_V6),
        IpAddr::V6(_) => IpAddr::V4(MULTICAST_V4),
    }
}

/// The one's-complement sum of RFC 1071 §1 written out by hand, independently of the
/// crate (which sums through etherparse, native-endian): big-endian 16-bit words, an odd
/// last byte padded with zero, carries folded back in.
fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).unwrap()
}

/// `msg` behind the pseudo-header v3 sums (RFC 5798 §5.2.8: RFC 768's for IPv4, RFC 8200
/// §8.1's for IPv6), or alone for v2 (RFC 3768 §5.3.8). `None` for v3 between two
/// families, where there is no pseudo-header.
fn checksummed_bytes(version: Version, src: IpAddr, dst: IpAddr, msg: &[u8]) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    if version == Version::V3 {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                data.extend_from_slice(&s.octets());
                data.extend_from_slice(&d.octets());
                data.extend_from_slice(&[0, packet::IPPROTO_VRRP]);
                data.extend_from_slice(&u16::try_from(msg.len()).ok()?.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                data.extend_from_slice(&s.octets());
                data.extend_from_slice(&d.octets());
                data.extend_from_slice(&u32::try_from(msg.len()).ok()?.to_be_bytes());
                data.extend_from_slice(&[0, 0, 0, packet::IPPROTO_VRRP]);
            }
            _ => return None,
        }
    }
    data.extend_from_slice(msg);
    Some(data)
}

/// What the checksum field of `msg` must hold: the complement of the sum, with the field
/// itself (bytes 6 and 7, as far as present) taken as zero.
fn reference_checksum(version: Version, src: IpAddr, dst: IpAddr, msg: &[u8]) -> Option<[u8; 2]> {
    let mut zeroed = msg.to_vec();
    for b in zeroed.iter_mut().skip(6).take(2) {
        *b = 0;
    }
    let data = checksummed_bytes(version, src, dst, &zeroed)?;
    Some((!ones_complement_sum(&data)).to_be_bytes())
}

/// One VRRP message as received: bytes, addresses, TTL and the receiver's expectations.
#[derive(Debug, Clone)]
struct Packet {
    bytes: Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    expect: Expect,
}

impl Packet {
    /// `advert` as sent from `src` to `dst`, with a receiver that accepts it.
    fn valid(advert: &Advert, src: IpAddr, dst: IpAddr) -> Packet {
        Packet {
            bytes: encode(advert, src, dst).unwrap(),
            src,
            dst,
            ttl: packet::TTL,
            expect: Expect {
                version: advert.version,
                auth: advert.auth,
                check_ttl: true,
                unicast: !dst.is_multicast(),
            },
        }
    }

    fn decode(&self) -> Result<Advert, DropReason> {
        decode(&self.bytes, self.src, self.dst, self.ttl, &self.expect)
    }

    /// Rewrites the checksum for the version the packet claims (v3 when it claims neither:
    /// decode stops before the checksum then anyway), so that the checks after it run.
    fn fix_checksum(&mut self) {
        let version = self
            .bytes
            .first()
            .and_then(|b| Version::from_number(b >> 4))
            .unwrap_or(Version::V3);
        let sum = reference_checksum(version, self.src, self.dst, &self.bytes);
        if let (Some(sum), Some(field)) = (sum, self.bytes.get_mut(6..8)) {
            field.copy_from_slice(&sum);
        }
    }
}

/// What decode must return, written from RFC 3768 / RFC 5798 §7.1 in the order packet.rs
/// documents (structure, checksum, TTL, destination, then our configuration).
fn expected_decode(p: &Packet) -> Result<Advert, DropReason> {
    let b = &p.bytes;
    let ipv6 = match (p.src, p.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => false,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        _ => return Err(DropReason::FamilyMismatch),
    };
    if b.len() < HEADER_LEN {
        return Err(DropReason::TooShort);
    }
    let version = Version::from_number(b[0] >> 4).ok_or(DropReason::BadVersion)?;
    if b[0] & 0x0f != 1 {
        return Err(DropReason::BadType);
    }
    if version == Version::V2 && ipv6 {
        return Err(DropReason::V2Ipv6);
    }
    let addr_len = if ipv6 { 16 } else { 4 };
    let addr_end = HEADER_LEN + usize::from(b[3]) * addr_len;
    let auth_len = if version == Version::V2 { AUTH_LEN } else { 0 };
    if b.len() != addr_end + auth_len {
        return Err(DropReason::LengthMismatch);
    }
    if reference_checksum(version, p.src, p.dst, b) != Some([b[6], b[7]]) {
        return Err(DropReason::BadChecksum);
    }
    if p.expect.check_ttl && p.ttl != packet::TTL {
        return Err(DropReason::BadTtl);
    }
    if p.dst.is_multicast() == p.expect.unicast {
        return Err(DropReason::WrongDestination);
    }
    if version != p.expect.version {
        return Err(DropReason::VersionMismatch);
    }
    let (auth, interval) = match version {
        Version::V2 => {
            let data: [u8; AUTH_LEN] = b[addr_end..].try_into().unwrap();
            let auth = match (b[4], p.expect.auth) {
                (3.., _) => return Err(DropReason::BadAuthType),
                (0, None) => None,
                (1, Some(password)) if password == data => Some(data),
                (1, Some(_)) => return Err(DropReason::AuthMismatch),
                _ => return Err(DropReason::AuthTypeMismatch),
            };
            (auth, Duration::from_secs(u64::from(b[5])))
        }
        Version::V3 => {
            // The top 4 bits are reserved and ignored.
            let cs = u16::from_be_bytes([b[4] & 0x0f, b[5]]);
            (None, Duration::from_millis(u64::from(cs) * 10))
        }
    };
    if interval.is_zero() {
        return Err(DropReason::ZeroInterval);
    }
    let addresses = b[HEADER_LEN..addr_end]
        .chunks(addr_len)
        .map(|c| match <[u8; 4]>::try_from(c) {
            Ok(a) => IpAddr::from(a),
            Err(_) => IpAddr::from(<[u8; 16]>::try_from(c).unwrap()),
        })
        .collect();
    Ok(Advert {
        version,
        vrid: b[1],
        priority: b[2],
        max_advert_interval: interval,
        auth,
        addresses,
    })
}

/// A valid advert with the sender and destination it can be sent between; `ipv6` picks
/// the family for v3 (v2 is IPv4 only).
fn valid_advert(
    ipv6: impl Strategy<Value = bool>,
) -> impl Strategy<Value = (Advert, IpAddr, IpAddr)> {
    (
        ipv6,
        any_version(),
        any::<u8>(),
        any::<u8>(),
        1u64..=255,
        1u64..=4095,
        proptest::option::of(any::<[u8; 8]>()),
        vec(any::<[u8; 16]>(), 0..20),
        any::<[u8; 16]>(),
        proptest::option::of(any::<[u8; 16]>()),
    )
        .prop_map(
            |(ipv6, version, vrid, priority, secs, cs, auth, addrs, src, unicast_dst)| {
                // v2 is IPv4 only.
                let ipv6 = ipv6 && version == Version::V3;
                let ip = |b| ip_from(b, ipv6);
                let (interval, auth) = match version {
                    Version::V2 => (Duration::from_secs(secs), auth),
                    Version::V3 => (Duration::from_millis(cs * 10), None),
                };
                let src = ip(src);
                let dst = unicast_dst.map(ip).unwrap_or(group_of(src));
                let advert = Advert {
                    version,
                    vrid,
                    priority,
                    max_advert_interval: interval,
                    auth,
                    addresses: addrs.into_iter().map(ip).collect(),
                };
                (advert, src, dst)
            },
        )
}

/// One change to a valid advert or to how it is received. Each breaks at most one check.
#[derive(Debug, Clone)]
enum Mutation {
    /// Version nibble neither 2 nor 3.
    Version(u8),
    /// Type nibble not 1.
    Type(u8),
    /// The other version's nibble on the same body: the lengths no longer add up (v2
    /// carries 8 bytes of authentication data), or v2 over IPv6.
    OtherVersion,
    /// Any count field.
    Count(u8),
    /// This many bytes cut off the end.
    Truncate(usize),
    /// Bytes inserted after the addresses, count unchanged.
    Extend(Vec<u8>),
    /// One more address, count raised to match.
    AddAddress([u8; 16]),
    /// One address (index modulo the count) removed, count lowered to match.
    RemoveAddress(usize),
    /// One bit of the address list flipped.
    AddressBit(usize),
    /// Checksum XORed with a non-zero value (not repaired).
    Checksum(u16),
    /// One bit of the source flipped after the checksum was computed (not repaired).
    SourceBit(usize),
    /// Destination of the other family.
    Family,
    /// TTL below 255 while the TTL is checked.
    Ttl(u8),
    /// Any TTL with the check off (unicast peers).
    TtlUnchecked(u8),
    /// Multicast destination made unicast, or the other way round.
    Destination,
    /// The receiver speaks the other version.
    ExpectVersion,
    /// The receiver's password: none for an authenticated advert, this one for a plain one
    /// (v3 ignores it).
    ExpectAuth([u8; 8]),
    /// v2 only: any authentication type byte.
    AuthType(u8),
    /// v2 only: one bit of the authentication data flipped.
    AuthData(usize),
    /// Interval zero (v3 with these reserved bits).
    ZeroInterval(u8),
    /// Any non-zero interval (v3: reserved bits included).
    Interval(u16),
    Vrid(u8),
    Priority(u8),
}

impl Mutation {
    /// Applies the mutation to `p`, a valid encoding of `base` ([`Packet::valid`]), repairs
    /// the checksum unless the mutation is about it, and returns what decode must say.
    fn apply(&self, base: &Advert, p: &mut Packet) -> Result<Advert, DropReason> {
        use DropReason::*;
        let v2 = base.version == Version::V2;
        let addr_len = if p.src.is_ipv6() { 16 } else { 4 };
        let n = base.addresses.len();
        let addr_end = HEADER_LEN + n * addr_len;
        let mut want = base.clone();
        let b = &mut p.bytes;
        let result = match self {
            Mutation::Version(v) => {
                b[0] = (v << 4) | 1;
                Err(BadVersion)
            }
            Mutation::Type(t) => {
                b[0] = (b[0] & 0xf0) | t;
                Err(BadType)
            }
            Mutation::OtherVersion => {
                b[0] = if v2 { 0x31 } else { 0x21 };
                Err(if p.src.is_ipv6() {
                    V2Ipv6
                } else {
                    LengthMismatch
                })
            }
            Mutation::Count(c) => {
                b[3] = *c;
                if usize::from(*c) == n {
                    Ok(want)
                } else {
                    Err(LengthMismatch)
                }
            }
            Mutation::Truncate(k) => {
                b.truncate(b.len().saturating_sub(*k));
                Err(if b.len() < HEADER_LEN {
                    TooShort
                } else {
                    LengthMismatch
                })
            }
            Mutation::Extend(extra) => {
                b.splice(addr_end..addr_end, extra.iter().copied());
                Err(LengthMismatch)
            }
            Mutation::AddAddress(raw) => {
                let a = ip_from(*raw, p.src.is_ipv6());
                b.splice(addr_end..addr_end, octets(a));
                b[3] += 1;
                want.addresses.push(a);
                Ok(want)
            }
            Mutation::RemoveAddress(i) => {
                if n > 0 {
                    let i = i % n;
                    let at = HEADER_LEN + i * addr_len;
                    b.drain(at..at + addr_len);
                    b[3] -= 1;
                    want.addresses.remove(i);
                }
                Ok(want)
            }
            Mutation::AddressBit(bit) => {
                if n > 0 {
                    let bit = bit % (n * addr_len * 8);
                    b[HEADER_LEN + bit / 8] ^= 1 << (bit % 8);
                    let i = bit / (addr_len * 8);
                    want.addresses[i] = flip_bit(want.addresses[i], bit % (addr_len * 8));
                }
                Ok(want)
            }
            Mutation::Checksum(x) => {
                let sum = u16::from_be_bytes([b[6], b[7]]) ^ x;
                b[6..8].copy_from_slice(&sum.to_be_bytes());
                Err(BadChecksum)
            }
            Mutation::SourceBit(bit) => {
                p.src = flip_bit(p.src, *bit);
                // v2 does not sum the addresses.
                if v2 { Ok(want) } else { Err(BadChecksum) }
            }
            Mutation::Family => {
                p.dst = other_family(p.src);
                Err(FamilyMismatch)
            }
            Mutation::Ttl(t) => {
                p.ttl = *t;
                Err(BadTtl)
            }
            Mutation::TtlUnchecked(t) => {
                p.ttl = *t;
                p.expect.check_ttl = false;
                Ok(want)
            }
            Mutation::Destination => {
                p.dst = if p.dst.is_multicast() {
                    unicast_of(p.src)
                } else {
                    group_of(p.src)
                };
                Err(WrongDestination)
            }
            Mutation::ExpectVersion => {
                p.expect.version = if v2 { Version::V3 } else { Version::V2 };
                Err(VersionMismatch)
            }
            Mutation::ExpectAuth(password) => {
                if v2 {
                    p.expect.auth = match base.auth {
                        Some(_) => None,
                        None => Some(*password),
                    };
                    Err(AuthTypeMismatch)
                } else {
                    p.expect.auth = Some(*password);
                    Ok(want)
                }
            }
            // mutation() picks these two for v2 only; for v3 they change nothing.
            Mutation::AuthType(t) if v2 => {
                let old = std::mem::replace(&mut b[4], *t);
                match *t {
                    t if t == old => Ok(want),
                    // IPsec AH is known but never ours.
                    0..=2 => Err(AuthTypeMismatch),
                    _ => Err(BadAuthType),
                }
            }
            Mutation::AuthData(bit) if v2 => {
                let bit = bit % (AUTH_LEN * 8);
                b[addr_end + bit / 8] ^= 1 << (bit % 8);
                // Without a password the data is not looked at.
                if base.auth.is_some() {
                    Err(AuthMismatch)
                } else {
                    Ok(want)
                }
            }
            Mutation::AuthType(_) | Mutation::AuthData(_) => Ok(want),
            Mutation::ZeroInterval(reserved) => {
                if v2 {
                    b[5] = 0;
                } else {
                    b[4] = reserved << 4;
                    b[5] = 0;
                }
                Err(ZeroInterval)
            }
            Mutation::Interval(v) => {
                if v2 {
                    let secs = u8::try_from(v % 255 + 1).unwrap();
                    b[5] = secs;
                    want.max_advert_interval = Duration::from_secs(u64::from(secs));
                } else {
                    let v = if v & 0x0fff == 0 { v | 1 } else { *v };
                    b[4..6].copy_from_slice(&v.to_be_bytes());
                    want.max_advert_interval = Duration::from_millis(u64::from(v & 0x0fff) * 10);
                }
                Ok(want)
            }
            Mutation::Vrid(x) => {
                b[1] = *x;
                want.vrid = *x;
                Ok(want)
            }
            Mutation::Priority(x) => {
                b[2] = *x;
                want.priority = *x;
                Ok(want)
            }
        };
        if !matches!(self, Mutation::Checksum(_) | Mutation::SourceBit(_)) {
            p.fix_checksum();
        }
        result
    }
}

/// Any mutation that applies to `version`.
fn mutation(version: Version) -> BoxedStrategy<Mutation> {
    let mut options = vec![
        prop_oneof![0u8..2, 4u8..16]
            .prop_map(Mutation::Version)
            .boxed(),
        prop_oneof![Just(0u8), 2u8..16]
            .prop_map(Mutation::Type)
            .boxed(),
        Just(Mutation::OtherVersion).boxed(),
        any::<u8>().prop_map(Mutation::Count).boxed(),
        (1usize..40).prop_map(Mutation::Truncate).boxed(),
        vec(any::<u8>(), 1..20).prop_map(Mutation::Extend).boxed(),
        any::<[u8; 16]>().prop_map(Mutation::AddAddress).boxed(),
        any::<usize>().prop_map(Mutation::RemoveAddress).boxed(),
        any::<usize>().prop_map(Mutation::AddressBit).boxed(),
        (1u16..=u16::MAX).prop_map(Mutation::Checksum).boxed(),
        any::<usize>().prop_map(Mutation::SourceBit).boxed(),
        Just(Mutation::Family).boxed(),
        prop_oneof![Just(254u8), 0u8..255]
            .prop_map(Mutation::Ttl)
            .boxed(),
        any::<u8>().prop_map(Mutation::TtlUnchecked).boxed(),
        Just(Mutation::Destination).boxed(),
        Just(Mutation::ExpectVersion).boxed(),
        any::<[u8; 8]>().prop_map(Mutation::ExpectAuth).boxed(),
        (0u8..16).prop_map(Mutation::ZeroInterval).boxed(),
        any::<u16>().prop_map(Mutation::Interval).boxed(),
        any::<u8>().prop_map(Mutation::Vrid).boxed(),
        any::<u8>().prop_map(Mutation::Priority).boxed(),
    ];
    if version == Version::V2 {
        options.push(
            prop_oneof![0u8..4, any::<u8>()]
                .prop_map(Mutation::AuthType)
                .boxed(),
        );
        options.push(any::<usize>().prop_map(Mutation::AuthData).boxed());
    }
    Union::new(options).boxed()
}

/// A valid advert with one mutation applied, and what decode must say about it.
fn mutated_packet(
    ipv6: impl Strategy<Value = bool>,
) -> impl Strategy<Value = (Packet, Mutation, Result<Advert, DropReason>)> {
    valid_advert(ipv6)
        .prop_flat_map(|a| {
            let version = a.0.version;
            (Just(a), mutation(version))
        })
        .prop_map(|((advert, src, dst), m)| {
            let mut p = Packet::valid(&advert, src, dst);
            let want = m.apply(&advert, &mut p);
            (p, m, want)
        })
}

/// VRRP-shaped bodies with random contents: a version/type byte that is usually right, a
/// count that is usually small, a length that usually matches it, a v2 password that is
/// often the expected one, a receiver that usually expects what the packet claims, and
/// (nine times in ten) a repaired checksum, so that the checks after the checksum see
/// random input too.
fn fuzzed_packet(ipv6: impl Strategy<Value = bool>) -> impl Strategy<Value = Packet> {
    let header = (
        prop_oneof![
            6 => Just(0x21u8),
            6 => Just(0x31u8),
            1 => (0u8..16).prop_map(|t| 0x20 | t),
            1 => (0u8..16).prop_map(|t| 0x30 | t),
            1 => any::<u8>(),
        ],
        prop_oneof![4 => 0u8..4, 1 => any::<u8>()],
        // v2: authentication type; v3: reserved bits and the top of the interval.
        prop_oneof![2 => Just(0u8), 2 => Just(1u8), 1 => 2u8..4, 1 => any::<u8>()],
        prop_oneof![1 => Just(0u8), 4 => any::<u8>()],
        prop_oneof![6 => Just(0isize), 1 => -9isize..9],
    );
    // Destination: the group, a unicast peer, the other family's group, anything.
    let addressing = (
        ipv6,
        // v2 over IPv6 only now and then: it stops at V2Ipv6.
        prop_oneof![3 => Just(false), 1 => Just(true)],
        prop_oneof![4 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
    );
    let receiver = (
        any::<[u8; 8]>(),
        any::<bool>(),
        prop_oneof![3 => Just(true), 1 => Just(false)],
        any_expect(),
        prop_oneof![4 => Just(packet::TTL), 1 => any::<u8>()],
        prop_oneof![9 => Just(true), 1 => Just(false)],
    );
    (header, addressing, receiver)
        .prop_flat_map(
            |((vt, count, b4, b5, slack), (ipv6, v2_ipv6, dst_kind, src, dst), receiver)| {
                let ipv6 = ipv6 && (vt >> 4 != 2 || v2_ipv6);
                let src = ip_from(src, ipv6);
                let dst = match dst_kind {
                    0 => group_of(src),
                    1 => unicast_of(src),
                    2 => other_family(src),
                    _ => ip_from(dst, ipv6),
                };
                let addr_len = if ipv6 { 16 } else { 4 };
                let auth_len = if vt >> 4 == 2 { AUTH_LEN } else { 0 };
                let len = (HEADER_LEN + usize::from(count) * addr_len + auth_len)
                    .saturating_add_signed(slack);
                (
                    Just((vt, count, b4, b5, src, dst, receiver)),
                    vec(any::<u8>(), len),
                )
            },
        )
        .prop_map(|((vt, count, b4, b5, src, dst, receiver), mut bytes)| {
            let (password, use_password, consistent, random, ttl, fix) = receiver;
            // VRID and priority stay random.
            for (i, v) in [(0, vt), (3, count), (4, b4), (5, b5)] {
                if let Some(b) = bytes.get_mut(i) {
                    *b = v;
                }
            }
            let version = Version::from_number(vt >> 4);
            if version == Some(Version::V2) && use_password && bytes.len() >= AUTH_LEN {
                let at = bytes.len() - AUTH_LEN;
                bytes[at..].copy_from_slice(&password);
            }
            let expect = if consistent {
                Expect {
                    version: version.unwrap_or(random.version),
                    auth: random.auth.map(|_| password),
                    check_ttl: true,
                    unicast: !dst.is_multicast(),
                }
            } else {
                random
            };
            let mut p = Packet {
                bytes,
                src,
                dst,
                ttl,
                expect,
            };
            if fix {
                p.fix_checksum();
            }
            p
        })
}

/// Every result decode can give (`None` for a decoded advert): all drop reasons but the
/// two that only the IPv4 header can cause and the one the receiving runtime gives
/// (a unicast source that is not a peer).
fn decode_outcomes() -> BTreeSet<Option<DropReason>> {
    let mut all: BTreeSet<_> = DropReason::ALL
        .into_iter()
        .filter(|r| {
            !matches!(
                r,
                DropReason::BadIpHeader | DropReason::NotVrrp | DropReason::UnknownSource
            )
        })
        .map(Some)
        .collect();
    all.insert(None);
    all
}

#[test]
fn fuzzed_bodies_reach_every_check() {
    // Without the checksum repair almost everything would stop at BadChecksum.
    let mut runner = TestRunner::deterministic();
    let strategy = fuzzed_packet(any::<bool>());
    let mut seen = BTreeSet::new();
    for _ in 0..2000 {
        let p = strategy.new_tree(&mut runner).unwrap().current();
        seen.insert(p.decode().err());
    }
    assert_eq!(seen, decode_outcomes());
}

#[test]
fn mutations_reach_every_check() {
    let mut runner = TestRunner::deterministic();
    let strategy = mutated_packet(any::<bool>());
    let mut seen = BTreeSet::new();
    for _ in 0..2000 {
        let (_, _, want) = strategy.new_tree(&mut runner).unwrap().current();
        seen.insert(want.err());
    }
    assert_eq!(seen, decode_outcomes());
}

/// RFC 1071 receivers (keepalived sums the whole message, checksum field included, and
/// requires zero; the kernel does the same for v3 over IPv6) accept both zeros of one's
/// complement in the field: when a message sums to 0xffff, 0x0000 and 0xffff are both
/// right. keepalived itself sends 0x0000, so this only matters for other senders.
#[test]
fn checksum_ffff_is_the_other_zero() {
    let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    let dst = IpAddr::V4(MULTICAST_V4);
    // 21fc + 1c01 + 0001 + c000 + 0201 = ffff.
    let advert = Advert {
        version: Version::V2,
        vrid: 252,
        priority: 28,
        max_advert_interval: Duration::from_secs(1),
        auth: None,
        addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
    };
    let mut bytes = encode(&advert, src, dst).unwrap();
    assert_eq!(bytes[6..8], [0, 0]);
    bytes[6..8].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(
        ones_complement_sum(&bytes),
        0xffff,
        "RFC 1071 receive check"
    );
    let expect = Expect::new(Version::V2);
    assert_eq!(decode(&bytes, src, dst, 255, &expect), Ok(advert));
}

/// Two addresses of one family.
fn address_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    (any::<bool>(), any::<[u8; 16]>(), any::<[u8; 16]>())
        .prop_map(|(ipv6, a, b)| (ip_from(a, ipv6), ip_from(b, ipv6)))
}

/// Feeds one dropped packet and checks that it was only counted (and, when it shows a peer
/// configured differently, reported as a clash).
fn check_drop(
    vr: &mut Instance,
    now: Instant,
    from: IpAddr,
    reason: DropReason,
) -> Result<(), TestCaseError> {
    let before = protocol(vr);
    let mut stats = vr.stats().clone();
    let actions = vr.handle(now, Event::Dropped { from, reason });
    prop_assert_eq!(protocol(vr), before, "{:?} moved the state machine", reason);
    stats.drops[reason.index()] += 1;
    let clash = clash_for(reason);
    if let Some(what) = clash {
        stats.clashes[what.index()] += 1;
    }
    prop_assert_eq!(vr.stats(), &stats, "{:?}", reason);
    // At most the (rate-limited) clash report.
    let report = clash.map(|what| Action::VridClash { peer: from, what });
    prop_assert!(
        actions.is_empty() || (actions.len() == 1 && Some(&actions[0]) == report.as_ref()),
        "{:?} gave {:?}",
        reason,
        actions
    );
    Ok(())
}

/// The drops that show a peer configured differently for our VRID (what keepalived
/// logs as a mismatch with its own settings); malformed packets say nothing about that.
fn clash_for(reason: DropReason) -> Option<Clash> {
    match reason {
        DropReason::VersionMismatch => Some(Clash::Version),
        DropReason::AuthTypeMismatch | DropReason::AuthMismatch => Some(Clash::Auth),
        _ => None,
    }
}

/// What a dropped packet must leave alone: everything observable but the drop and clash
/// counters.
#[derive(Debug, PartialEq)]
struct Protocol {
    state: State,
    priority: u8,
    base_priority: u8,
    master: Option<(IpAddr, u8)>,
    deadline: Option<Instant>,
    master_adver_interval: Duration,
    wants_master: bool,
    faulted: bool,
    other_stats: Stats,
}

fn protocol(vr: &Instance) -> Protocol {
    Protocol {
        state: vr.state(),
        priority: vr.priority(),
        base_priority: vr.base_priority(),
        master: vr.master(),
        deadline: vr.next_deadline(),
        master_adver_interval: vr.master_adver_interval(),
        wants_master: vr.wants_master(),
        faulted: vr.is_faulted(),
        other_stats: Stats {
            drops: Default::default(),
            clashes: Default::default(),
            ..vr.stats().clone()
        },
    }
}

/// A drop-induced clash report may hold back a later one for an advert: compare the rest.
fn without_clash_reports(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| !matches!(a, Action::VridClash { .. }))
        .collect()
}

/// An instance of either version and family, with or without addresses and a password.
fn instance_config() -> impl Strategy<Value = Config> {
    (
        any_version(),
        any::<bool>(),
        1u8..=255,
        any::<bool>(),
        prop_oneof![Just(0u64), 0u64..3000],
        proptest::option::of(any::<[u8; 8]>()),
        1u64..=3,
        1u64..=300,
        0u8..3,
    )
        .prop_map(
            |(version, ipv6, priority, preempt, delay_ms, auth, secs, cs, n)| {
                let ipv6 = ipv6 && version == Version::V3;
                let me = peers(ipv6)[2];
                let addresses = (0..n)
                    .map(|i| match me {
                        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200 + i)),
                        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(
                            0x2001,
                            0xdb8,
                            0,
                            0,
                            0,
                            0,
                            0,
                            0x200 + u16::from(i),
                        )),
                    })
                    .collect();
                let (advert_interval, auth) = match version {
                    Version::V2 => (Duration::from_secs(secs), auth),
                    Version::V3 => (Duration::from_millis(cs * 10), None),
                };
                Config {
                    priority,
                    version,
                    advert_interval,
                    preempt,
                    preempt_delay: Duration::from_millis(delay_ms),
                    addresses,
                    auth,
                    ..Config::new(51, me)
                }
            },
        )
}

/// A peer below us, one above us, and ourselves (looped back).
fn peers(ipv6: bool) -> [IpAddr; 3] {
    let host = |h: u8| {
        if ipv6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(h)))
        } else {
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, h))
        }
    };
    [host(10), host(12), host(11)]
}

#[derive(Debug, Clone)]
enum Step {
    Start,
    Timer,
    /// Wait for the next deadline, then the timer event.
    Due,
    Advert {
        peer: usize,
        priority: u8,
    },
    /// A peer's advert, mutated and decoded with the mutation's receiver expectations.
    Packet {
        peer: usize,
        priority: u8,
        mutation: Mutation,
    },
    Dropped {
        peer: usize,
        reason: usize,
    },
    Adjust(i32),
    Fault(bool),
    Shutdown,
}

fn step(version: Version) -> impl Strategy<Value = (u64, Step)> {
    let step = prop_oneof![
        1 => Just(Step::Start),
        2 => Just(Step::Timer),
        2 => Just(Step::Due),
        3 => (0usize..3, any::<u8>()).prop_map(|(peer, priority)| Step::Advert { peer, priority }),
        6 => (0usize..3, any::<u8>(), mutation(version))
            .prop_map(|(peer, priority, mutation)| Step::Packet { peer, priority, mutation }),
        2 => (0usize..3, 0..DropReason::ALL.len())
            .prop_map(|(peer, reason)| Step::Dropped { peer, reason }),
        1 => prop_oneof![-300i32..300, any::<i32>()].prop_map(Step::Adjust),
        1 => any::<bool>().prop_map(Step::Fault),
        1 => Just(Step::Shutdown),
    ];
    (0u64..2500, step)
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
        mut packet in vec(any::<u8>(), 0..120),
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
    fn encode_decode_round_trip((advert, src, dst) in valid_advert(any::<bool>())) {
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
    fn checksum_is_rfc1071_worked_out_by_hand(
        version in any_version(),
        (src, dst) in address_pair(),
        mut msg in vec(any::<u8>(), 0..80),
    ) {
        let sum = checksum::vrrp_checksum(version, src, dst, &msg);
        prop_assert_eq!(Some(sum), reference_checksum(version, src, dst, &msg));
        if let Some(field) = msg.get_mut(6..8) {
            field.copy_from_slice(&sum);
            prop_assert!(checksum::verify(version, src, dst, &msg));
            // What a receiver summing everything (RFC 1071 §1 (2)) sees.
            let all = checksummed_bytes(version, src, dst, &msg).unwrap();
            prop_assert_eq!(ones_complement_sum(&all), 0xffff);
        } else {
            prop_assert!(!checksum::verify(version, src, dst, &msg));
        }
    }

    #[test]
    fn checksum_accepts_nothing_but_the_right_sum(
        version in any_version(),
        (src, dst) in address_pair(),
        mut msg in vec(any::<u8>(), HEADER_LEN..80),
        stored in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
    ) {
        msg[6..8].copy_from_slice(&stored.to_be_bytes());
        let right = u16::from_be_bytes(reference_checksum(version, src, dst, &msg).unwrap());
        // 0x0000 and 0xffff are the two zeros of one's complement: accepting the other
        // zero is allowed (see checksum_ffff_is_the_other_zero), anything else is not.
        let zero = |x: u16| if x == 0xffff { 0 } else { x };
        if checksum::verify(version, src, dst, &msg) {
            prop_assert_eq!(zero(stored), zero(right));
        }
    }

    #[test]
    fn checksum_catches_any_single_bit_flip(
        version in any_version(),
        (src, dst) in address_pair(),
        mut msg in vec(any::<u8>(), HEADER_LEN..80),
        target in 0u8..3,
        bit in any::<usize>(),
    ) {
        let sum = checksum::vrrp_checksum(version, src, dst, &msg);
        msg[6..8].copy_from_slice(&sum);
        // One flipped bit moves the sum by ±2^k, never a multiple of 0xffff.
        match target {
            0 => {
                let bit = bit % (msg.len() * 8);
                msg[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(!checksum::verify(version, src, dst, &msg));
            }
            _ => {
                let (src, dst) = if target == 1 {
                    (flip_bit(src, bit), dst)
                } else {
                    (src, flip_bit(dst, bit))
                };
                // Only v3 covers the addresses.
                prop_assert_eq!(checksum::verify(version, src, dst, &msg), version == Version::V2);
            }
        }
    }

    #[test]
    fn decode_agrees_with_the_rfc_on_fuzzed_bodies(p in fuzzed_packet(any::<bool>())) {
        let got = p.decode();
        prop_assert_eq!(&got, &expected_decode(&p));
        if let Ok(advert) = got {
            // Nothing is lost but what decode ignores: the v3 reserved bits and the v2
            // authentication data when there is no password.
            let mut normal = p.clone();
            if advert.version == Version::V3 {
                normal.bytes[4] &= 0x0f;
            } else if advert.auth.is_none() {
                let at = normal.bytes.len() - AUTH_LEN;
                normal.bytes[at..].fill(0);
            }
            normal.fix_checksum();
            prop_assert_eq!(encode(&advert, p.src, p.dst), Ok(normal.bytes));
        }
    }

    #[test]
    fn decode_fails_on_exactly_the_broken_field((p, _m, want) in mutated_packet(any::<bool>())) {
        prop_assert_eq!(p.decode(), want.clone());
        // The model above agrees with the hand-derived answer, so its own verdicts on
        // random bodies can be trusted.
        prop_assert_eq!(expected_decode(&p), want);
    }

    #[test]
    fn decode_ipv4_is_split_then_decode(
        p in prop_oneof![
            fuzzed_packet(Just(false)),
            mutated_packet(Just(false)).prop_map(|(p, _, _)| p),
        ].prop_filter("IPv4 on both ends", |p| p.src.is_ipv4() && p.dst.is_ipv4()),
        options in 0usize..=10,
        option_bytes in any::<[u8; 40]>(),
        padding in vec(any::<u8>(), 0..8),
        tos in any::<u8>(),
        id in any::<u16>(),
        broken in 0u8..4,
        ip_protocol in any::<u8>(),
        version in 0u8..16,
        overrun in 1u16..100,
    ) {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (p.src, p.dst) else { unreachable!() };
        let header_len = 20 + 4 * options;
        let mut total = u16::try_from(header_len + p.bytes.len()).unwrap();
        let mut version_ihl = 0x40 | u8::try_from(header_len / 4).unwrap();
        let mut proto = packet::IPPROTO_VRRP;
        // At most one thing wrong with the IP header, checked before the VRRP message.
        let want = match broken {
            1 if ip_protocol != packet::IPPROTO_VRRP => {
                proto = ip_protocol;
                Err(DropReason::NotVrrp)
            }
            2 if version != 4 => {
                version_ihl = (version << 4) | (version_ihl & 0x0f);
                Err(DropReason::BadIpHeader)
            }
            3 => {
                total = u16::try_from(header_len + p.bytes.len() + padding.len()).unwrap() + overrun;
                Err(DropReason::TooShort)
            }
            _ => p.decode().map(|a| (Ipv4Header { src, dst, ttl: p.ttl }, a)),
        };
        let mut pkt = vec![version_ihl, tos];
        pkt.extend_from_slice(&total.to_be_bytes());
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(&[0, 0, p.ttl, proto, 0, 0]);
        pkt.extend_from_slice(&src.octets());
        pkt.extend_from_slice(&dst.octets());
        pkt.extend_from_slice(&option_bytes[..4 * options]);
        pkt.extend_from_slice(&p.bytes);
        // Link-layer padding past the total length.
        pkt.extend_from_slice(&padding);
        prop_assert_eq!(decode_ipv4(&pkt, &p.expect), want);
    }

    #[test]
    fn instance_survives_any_event_sequence(
        priority in 1u8..=255,
        v3 in any::<bool>(),
        preempt in any::<bool>(),
        delay_ms in 0u64..5000,
        steps in vec(
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

proptest! {
    // Up to 30 steps each, every one checked against a twin.
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A dropped packet, in any state and after any history, is counted once under its
    /// reason and changes nothing else: a twin that never saw the drops does the same
    /// from then on.
    #[test]
    fn drops_only_count(
        (cfg, steps) in instance_config().prop_flat_map(|cfg| {
            let version = cfg.version;
            (Just(cfg), vec(step(version), 1..30))
        }),
    ) {
        let peers = peers(cfg.primary_address.is_ipv6());
        let mut vr = Instance::new(cfg).unwrap();
        let mut twin = vr.clone();
        let mut drops = [0u64; DropReason::ALL.len()];
        let mut clashes = [0u64; Clash::ALL.len()];
        let mut now = Instant::now();
        for (dt, step) in steps {
            now += Duration::from_millis(dt);
            let mut dropped = None;
            let event = match step {
                Step::Start => Some(Event::Start),
                Step::Timer => Some(Event::Timer),
                Step::Due => {
                    if let Some(at) = vr.next_deadline() {
                        now = now.max(at);
                    }
                    Some(Event::Timer)
                }
                Step::Advert { peer, priority } => Some(Event::Advert {
                    from: peers[peer],
                    advert: vr.advert(priority),
                }),
                Step::Packet { peer, priority, mutation } => {
                    let base = vr.advert(priority);
                    let from = peers[peer];
                    let mut p = Packet::valid(&base, from, group_of(from));
                    let want = mutation.apply(&base, &mut p);
                    let got = p.decode();
                    prop_assert_eq!(&got, &want);
                    match got {
                        Ok(advert) => Some(Event::Advert { from: p.src, advert }),
                        Err(reason) => {
                            dropped = Some((p.src, reason));
                            None
                        }
                    }
                }
                Step::Dropped { peer, reason } => {
                    dropped = Some((peers[peer], DropReason::ALL[reason]));
                    None
                }
                Step::Adjust(total) => Some(Event::PriorityAdjust(total)),
                Step::Fault(fault) => Some(Event::FaultSet(fault)),
                Step::Shutdown => Some(Event::Shutdown),
            };
            if let Some((from, reason)) = dropped {
                check_drop(&mut vr, now, from, reason)?;
                drops[reason.index()] += 1;
                if let Some(what) = clash_for(reason) {
                    clashes[what.index()] += 1;
                }
            }
            if let Some(event) = event {
                let ours = vr.handle(now, event.clone());
                let theirs = twin.handle(now, event);
                prop_assert_eq!(without_clash_reports(ours), without_clash_reports(theirs));
            }
            prop_assert_eq!(protocol(&vr), protocol(&twin));
            prop_assert_eq!(vr.stats().drops, drops);
            prop_assert_eq!(twin.stats().drops, [0; DropReason::ALL.len()]);
            for what in Clash::ALL {
                prop_assert_eq!(
                    vr.stats().clashes(what),
                    twin.stats().clashes(what) + clashes[what.index()]
                );
            }
        }
    }
}
