//! VRRP advertisement codec: RFC 3768 (VRRPv2) and RFC 5798 (VRRPv3), byte-exact with
//! keepalived.
//!
//! This module owns the wire format only: [`encode`] builds the VRRP message that follows
//! the IP header, [`decode`] checks a received one and says why it was dropped
//! ([`DropReason`]), and [`decode_ipv4`] / [`encode_ipv4`] add the IPv4 header for raw
//! sockets that carry it (`IP_HDRINCL`). What an advert *means* for an instance (priority,
//! preemption, clashes with our configuration) belongs to [`crate::fsm`].
//!
//! keepalived behaviour followed here:
//! - v2 always carries the 8-byte authentication field; with `auth_type PASS` it holds the
//!   password truncated to 8 bytes and padded with zeros ([`simple_password`]), otherwise
//!   zeros. The password is compared over all 8 bytes.
//! - v3 writes the 12-bit interval with the 4 reserved bits zero and ignores them on input.
//! - the v3 IPv4 checksum covers the pseudo-header with the packet's real destination, so
//!   a unicast advert's checksum differs from the multicast one.
//! - v2 is IPv4 only, as RFC 3768 defines it. keepalived defaults IPv6 instances to v3
//!   (and forces v3 in strict mode); its non-standard v2 over IPv6, without the
//!   authentication field, is refused here ([`DropReason::V2Ipv6`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::checksum;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// IPv4 multicast group for VRRP (224.0.0.18).
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group for VRRP (ff02::12).
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The TTL / hop limit VRRP sends and requires.
pub const TTL: u8 = 255;
/// Length of the fixed VRRP header (version/type, VRID, priority, count, two more bytes
/// that depend on the version, checksum).
pub const HEADER_LEN: usize = 8;
/// Length of the VRRPv2 authentication data.
pub const AUTH_LEN: usize = 8;

const TYPE_ADVERTISEMENT: u8 = 1;
const AUTH_TYPE_NONE: u8 = 0;
const AUTH_TYPE_SIMPLE: u8 = 1;
/// IPsec AH (RFC 2338); keepalived can be built with it, xdp-lb does not speak it.
const AUTH_TYPE_AH: u8 = 2;
const V3_INTERVAL_MASK: u16 = 0x0fff;
const CENTISECOND_NANOS: u128 = 10_000_000;
const IPV4_HEADER_LEN: usize = 20;

/// VRRP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, interval in seconds, simple-password authentication.
    V2,
    /// RFC 5798: IPv4 and IPv6, interval in centiseconds, checksum with pseudo-header.
    V3,
}

impl Version {
    /// The number carried in the version field.
    pub const fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }

    /// The version for a version-field value, if we speak it.
    pub const fn from_number(n: u8) -> Option<Version> {
        match n {
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// One VRRP advertisement, independent of its encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Advert {
    /// Protocol version.
    pub version: Version,
    /// Virtual router id.
    pub vrid: u8,
    /// Sender priority: 255 for the address owner, 0 when the master stops.
    pub priority: u8,
    /// Advertisement interval: whole seconds (1..=255) for v2, centiseconds
    /// (10 ms ..= 40.95 s) for v3.
    pub max_advert_interval: Duration,
    /// v2 simple password (`auth_type PASS`), zero padded; `None` means no authentication.
    /// Always `None` for v3.
    pub auth: Option<[u8; AUTH_LEN]>,
    /// The virtual addresses, all of the sender's address family.
    pub addresses: Vec<IpAddr>,
}

impl Advert {
    /// Checks that this advert can be encoded between `src` and `dst`.
    pub fn validate(&self, src: IpAddr, dst: IpAddr) -> Result<(), AdvertError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(AdvertError::FamilyMismatch { src, dst });
        }
        if self.version == Version::V2 && src.is_ipv6() {
            return Err(AdvertError::V2Ipv6);
        }
        if self.version == Version::V3 && self.auth.is_some() {
            return Err(AdvertError::AuthV3);
        }
        if let Some(&address) = self.addresses.iter().find(|a| a.is_ipv4() != src.is_ipv4()) {
            return Err(AdvertError::AddressFamily { address, src });
        }
        if self.addresses.len() > usize::from(u8::MAX) {
            return Err(AdvertError::TooManyAddresses {
                count: self.addresses.len(),
            });
        }
        interval_field(self.version, self.max_advert_interval)?;
        Ok(())
    }

    /// Length of the encoded VRRP message for a sender of the given family.
    pub fn encoded_len(&self, ipv6: bool) -> usize {
        let addr_len = if ipv6 { 16 } else { 4 };
        let auth_len = match self.version {
            Version::V2 => AUTH_LEN,
            Version::V3 => 0,
        };
        HEADER_LEN + self.addresses.len() * addr_len + auth_len
    }
}

/// Why an [`Advert`] cannot be encoded (or a configuration cannot be advertised).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertError {
    /// Source and destination differ in address family.
    #[error("source {src} and destination {dst} are not of the same address family")]
    FamilyMismatch {
        /// The source address.
        src: IpAddr,
        /// The destination address.
        dst: IpAddr,
    },
    /// A virtual address is not of the sender's family.
    #[error("virtual address {address} is not of the same address family as the source {src}")]
    AddressFamily {
        /// The offending virtual address.
        address: IpAddr,
        /// The source address.
        src: IpAddr,
    },
    /// More addresses than the 8-bit count field holds.
    #[error("{count} virtual addresses do not fit in one advertisement (at most 255)")]
    TooManyAddresses {
        /// How many were given.
        count: usize,
    },
    /// v2 interval not a whole number of seconds in 1..=255.
    #[error(
        "advertisement interval {interval:?} is not valid for vrrp version 2: use whole seconds from 1 s to 255 s"
    )]
    IntervalV2 {
        /// The interval given.
        interval: Duration,
    },
    /// v3 interval not a whole number of centiseconds in 1..=4095.
    #[error(
        "advertisement interval {interval:?} is not valid for vrrp version 3: use a multiple of 10 ms from 10 ms to 40.95 s"
    )]
    IntervalV3 {
        /// The interval given.
        interval: Duration,
    },
    /// v2 over IPv6.
    #[error("vrrp version 2 carries only ipv4 addresses; use version 3 for ipv6")]
    V2Ipv6,
    /// Authentication asked for with v3.
    #[error("authentication exists only in vrrp version 2; remove the password or use version 2")]
    AuthV3,
}

/// Why a received packet was dropped. One variant per counter; none of them changes
/// VRRP state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Fewer bytes than the IPv4 or VRRP header, or than the IP total length says.
    TooShort,
    /// IPv4 header not version 4, header length under 20 bytes or total length under it.
    BadIpHeader,
    /// IPv4 protocol is not 112.
    NotVrrp,
    /// Source and destination addresses of different families.
    FamilyMismatch,
    /// Version field neither 2 nor 3.
    BadVersion,
    /// Type field not 1 (advertisement).
    BadType,
    /// VRRPv2 received over IPv6.
    V2Ipv6,
    /// Length does not match the address count (plus the v2 authentication data).
    LengthMismatch,
    /// Checksum wrong (v3: including the pseudo-header).
    BadChecksum,
    /// TTL / hop limit not 255.
    BadTtl,
    /// Multicast received where unicast is configured, or the other way round.
    WrongDestination,
    /// A well-formed advert of the other VRRP version.
    VersionMismatch,
    /// v2 authentication type not 0, 1 or 2.
    BadAuthType,
    /// v2 authentication type differs from ours (including IPsec AH, which we do not speak).
    AuthTypeMismatch,
    /// v2 simple password differs from ours.
    AuthMismatch,
    /// Advertisement interval 0.
    ZeroInterval,
    /// A unicast instance heard a source that is none of its peers (keepalived's
    /// `check_unicast_src`).
    UnknownSource,
}

impl DropReason {
    /// Every reason, in counter order ([`DropReason::index`]).
    pub const ALL: [DropReason; 17] = [
        DropReason::TooShort,
        DropReason::BadIpHeader,
        DropReason::NotVrrp,
        DropReason::FamilyMismatch,
        DropReason::BadVersion,
        DropReason::BadType,
        DropReason::V2Ipv6,
        DropReason::LengthMismatch,
        DropReason::BadChecksum,
        DropReason::BadTtl,
        DropReason::WrongDestination,
        DropReason::VersionMismatch,
        DropReason::BadAuthType,
        DropReason::AuthTypeMismatch,
        DropReason::AuthMismatch,
        DropReason::ZeroInterval,
        DropReason::UnknownSource,
    ];

    /// Stable snake_case name, for counters and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::BadIpHeader => "bad_ip_header",
            DropReason::NotVrrp => "not_vrrp",
            DropReason::FamilyMismatch => "family_mismatch",
            DropReason::BadVersion => "bad_version",
            DropReason::BadType => "bad_type",
            DropReason::V2Ipv6 => "v2_over_ipv6",
            DropReason::LengthMismatch => "length_mismatch",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::BadTtl => "bad_ttl",
            DropReason::WrongDestination => "wrong_destination",
            DropReason::VersionMismatch => "version_mismatch",
            DropReason::BadAuthType => "bad_auth_type",
            DropReason::AuthTypeMismatch => "auth_type_mismatch",
            DropReason::AuthMismatch => "auth_mismatch",
            DropReason::ZeroInterval => "zero_interval",
            DropReason::UnknownSource => "unknown_source",
        }
    }

    /// Position in [`DropReason::ALL`], for counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::TooShort => "packet shorter than its headers",
            DropReason::BadIpHeader => "malformed ipv4 header",
            DropReason::NotVrrp => "ip protocol is not vrrp (112)",
            DropReason::FamilyMismatch => "source and destination of different address families",
            DropReason::BadVersion => "vrrp version is neither 2 nor 3",
            DropReason::BadType => "vrrp type is not advertisement",
            DropReason::V2Ipv6 => "vrrp version 2 over ipv6",
            DropReason::LengthMismatch => "length does not match the address count",
            DropReason::BadChecksum => "wrong checksum",
            DropReason::BadTtl => "ttl or hop limit is not 255",
            DropReason::WrongDestination => {
                "multicast and unicast mixed up: destination not of the configured kind"
            }
            DropReason::VersionMismatch => "vrrp version differs from ours",
            DropReason::BadAuthType => "unknown vrrpv2 authentication type",
            DropReason::AuthTypeMismatch => "vrrpv2 authentication type differs from ours",
            DropReason::AuthMismatch => "vrrpv2 password differs from ours",
            DropReason::ZeroInterval => "advertisement interval is zero",
            DropReason::UnknownSource => "source is none of the configured unicast peers",
        })
    }
}

/// What a receiving instance requires of a packet beyond well-formedness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// Our VRRP version; the other one is dropped as [`DropReason::VersionMismatch`].
    pub version: Version,
    /// Our v2 password, `None` for no authentication. Ignored for v3.
    pub auth: Option<[u8; AUTH_LEN]>,
    /// Require TTL / hop limit 255 (RFC 3768 §7.1, RFC 5798 §7.1). keepalived skips this
    /// check for unicast peers, which may sit behind a router.
    pub check_ttl: bool,
    /// We use unicast peers: a multicast destination is dropped, and with `false` a
    /// unicast one is (keepalived does both).
    pub unicast: bool,
}

impl Expect {
    /// Multicast, TTL checked, no authentication.
    pub const fn new(version: Version) -> Expect {
        Expect {
            version,
            auth: None,
            check_ttl: true,
            unicast: false,
        }
    }
}

/// keepalived's `auth_pass`: the first 8 bytes of the password, zero padded.
pub fn simple_password(password: &[u8]) -> [u8; AUTH_LEN] {
    let mut out = [0; AUTH_LEN];
    for (o, p) in out.iter_mut().zip(password) {
        *o = *p;
    }
    out
}

/// The VRID byte of a VRRP message, to find the receiving instance before decoding.
pub fn peek_vrid(payload: &[u8]) -> Option<u8> {
    payload.get(1).copied()
}

/// Encodes `advert` as the VRRP message sent from `src` to `dst` (the bytes after the IP
/// header), checksum included.
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr) -> Result<Vec<u8>, AdvertError> {
    advert.validate(src, dst)?;
    let interval = interval_field(advert.version, advert.max_advert_interval)?;
    let count =
        u8::try_from(advert.addresses.len()).map_err(|_| AdvertError::TooManyAddresses {
            count: advert.addresses.len(),
        })?;

    let mut out = Vec::with_capacity(advert.encoded_len(src.is_ipv6()));
    out.push((advert.version.number() << 4) | TYPE_ADVERTISEMENT);
    out.push(advert.vrid);
    out.push(advert.priority);
    out.push(count);
    match advert.version {
        Version::V2 => {
            out.push(match advert.auth {
                Some(_) => AUTH_TYPE_SIMPLE,
                None => AUTH_TYPE_NONE,
            });
            // interval_field bounds v2 to 1..=255.
            out.push(u8::try_from(interval).unwrap_or(u8::MAX));
        }
        Version::V3 => out.extend_from_slice(&interval.to_be_bytes()),
    }
    out.extend_from_slice(&[0, 0]);
    for address in &advert.addresses {
        match address {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
    }
    if advert.version == Version::V2 {
        out.extend_from_slice(&advert.auth.unwrap_or([0; AUTH_LEN]));
    }
    let sum = checksum::vrrp_checksum(advert.version, src, dst, &out);
    out[checksum::CHECKSUM_OFFSET..checksum::CHECKSUM_OFFSET + 2].copy_from_slice(&sum);
    Ok(out)
}

/// Which pseudo-header a VRRPv3 checksum was computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumForm {
    /// RFC 5798's: the packet's real source and destination.
    Rfc,
    /// keepalived before 1.3.6 put the multicast group 224.0.0.18 in the pseudo-header
    /// of IPv4 unicast adverts too (keepalived issue #642); keepalived since accepts
    /// it, and answers in kind (`old_unicast_checksum`). IPv6 never had it: the
    /// kernel computes that checksum.
    OldUnicast,
}

/// Decodes and checks one VRRP message (`payload`, the bytes after the IP header) that
/// arrived from `src` to `dst` with the given TTL / hop limit.
///
/// The checks run from the structure outwards, so a corrupted packet counts as malformed
/// rather than as a configuration mismatch: length, version, type, length against the
/// address count, checksum, TTL, destination kind, then the comparison with `expected`
/// (version, authentication). Never panics.
pub fn decode(
    payload: &[u8],
    src: IpAddr,
    dst: IpAddr,
    ttl_or_hop_limit: u8,
    expected: &Expect,
) -> Result<Advert, DropReason> {
    decode_form(payload, src, dst, ttl_or_hop_limit, expected).map(|(advert, _)| advert)
}

/// [`decode`], also saying which checksum form the sender used: an IPv4 VRRPv3
/// unicast advert whose checksum only verifies over the multicast pseudo-header is
/// accepted as [`ChecksumForm::OldUnicast`], as keepalived accepts it.
pub fn decode_form(
    payload: &[u8],
    src: IpAddr,
    dst: IpAddr,
    ttl_or_hop_limit: u8,
    expected: &Expect,
) -> Result<(Advert, ChecksumForm), DropReason> {
    let ipv6 = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => false,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        _ => return Err(DropReason::FamilyMismatch),
    };
    let header: [u8; HEADER_LEN] = payload
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DropReason::TooShort)?;
    let version = Version::from_number(header[0] >> 4).ok_or(DropReason::BadVersion)?;
    if header[0] & 0x0f != TYPE_ADVERTISEMENT {
        return Err(DropReason::BadType);
    }
    if version == Version::V2 && ipv6 {
        return Err(DropReason::V2Ipv6);
    }
    let count = usize::from(header[3]);
    let addr_len = if ipv6 { 16 } else { 4 };
    let auth_len = match version {
        Version::V2 => AUTH_LEN,
        Version::V3 => 0,
    };
    let addresses_end = HEADER_LEN + count * addr_len;
    if payload.len() != addresses_end + auth_len {
        return Err(DropReason::LengthMismatch);
    }
    let form = if checksum::verify(version, src, dst, payload) {
        ChecksumForm::Rfc
    } else if version == Version::V3
        && !ipv6
        && !dst.is_multicast()
        && checksum::verify(version, src, IpAddr::V4(MULTICAST_V4), payload)
    {
        ChecksumForm::OldUnicast
    } else {
        return Err(DropReason::BadChecksum);
    };
    if expected.check_ttl && ttl_or_hop_limit != TTL {
        return Err(DropReason::BadTtl);
    }
    if dst.is_multicast() == expected.unicast {
        return Err(DropReason::WrongDestination);
    }
    if version != expected.version {
        return Err(DropReason::VersionMismatch);
    }

    let (auth, interval) = match version {
        Version::V2 => {
            let data = payload
                .get(addresses_end..)
                .and_then(|d| <[u8; AUTH_LEN]>::try_from(d).ok())
                .ok_or(DropReason::LengthMismatch)?;
            let auth = check_v2_auth(header[4], data, expected.auth)?;
            (auth, Duration::from_secs(u64::from(header[5])))
        }
        Version::V3 => {
            let cs = u16::from_be_bytes([header[4], header[5]]) & V3_INTERVAL_MASK;
            (None, Duration::from_millis(u64::from(cs) * 10))
        }
    };
    if interval.is_zero() {
        return Err(DropReason::ZeroInterval);
    }

    let addresses = payload
        .get(HEADER_LEN..addresses_end)
        .unwrap_or_default()
        .chunks_exact(addr_len)
        .filter_map(|chunk| {
            if let Ok(b) = <[u8; 4]>::try_from(chunk) {
                Some(IpAddr::from(b))
            } else {
                <[u8; 16]>::try_from(chunk).ok().map(IpAddr::from)
            }
        })
        .collect();

    Ok((
        Advert {
            version,
            vrid: header[1],
            priority: header[2],
            max_advert_interval: interval,
            auth,
            addresses,
        },
        form,
    ))
}

/// The IPv4 header fields VRRP cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Header {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
}

/// Splits an IPv4 packet (as an IPv4 raw socket delivers it) into its header fields and
/// the VRRP message. Bytes past the IP total length (link padding) are ignored; the header
/// checksum is not checked (the kernel did).
pub fn split_ipv4(packet: &[u8]) -> Result<(Ipv4Header, &[u8]), DropReason> {
    let fixed: [u8; IPV4_HEADER_LEN] = packet
        .get(..IPV4_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DropReason::TooShort)?;
    if fixed[0] >> 4 != 4 {
        return Err(DropReason::BadIpHeader);
    }
    let header_len = usize::from(fixed[0] & 0x0f) * 4;
    if header_len < IPV4_HEADER_LEN {
        return Err(DropReason::BadIpHeader);
    }
    let total_len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if total_len < header_len {
        return Err(DropReason::BadIpHeader);
    }
    let payload = packet
        .get(header_len..total_len)
        .ok_or(DropReason::TooShort)?;
    if fixed[9] != IPPROTO_VRRP {
        return Err(DropReason::NotVrrp);
    }
    let header = Ipv4Header {
        src: Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]),
        dst: Ipv4Addr::new(fixed[16], fixed[17], fixed[18], fixed[19]),
        ttl: fixed[8],
    };
    Ok((header, payload))
}

/// [`split_ipv4`] then [`decode`]. Never panics.
pub fn decode_ipv4(
    packet_with_ip_header: &[u8],
    expected: &Expect,
) -> Result<(Ipv4Header, Advert), DropReason> {
    let (header, payload) = split_ipv4(packet_with_ip_header)?;
    let advert = decode(
        payload,
        IpAddr::V4(header.src),
        IpAddr::V4(header.dst),
        header.ttl,
        expected,
    )?;
    Ok((header, advert))
}

/// Encodes `advert` with an IPv4 header as keepalived builds it for its `IP_HDRINCL`
/// socket: TOS 0xc0 (network control), no fragment flags, TTL 255, protocol 112, the
/// given identification, header checksum filled in.
pub fn encode_ipv4(
    advert: &Advert,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
) -> Result<Vec<u8>, AdvertError> {
    let vrrp = encode(advert, IpAddr::V4(src), IpAddr::V4(dst))?;
    let total =
        u16::try_from(IPV4_HEADER_LEN + vrrp.len()).map_err(|_| AdvertError::TooManyAddresses {
            count: advert.addresses.len(),
        })?;
    let mut out = Vec::with_capacity(usize::from(total));
    out.extend_from_slice(&[0x45, 0xc0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0, 0, TTL, IPPROTO_VRRP, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    let sum = checksum::ipv4_header_checksum(&out);
    out[10..12].copy_from_slice(&sum);
    out.extend_from_slice(&vrrp);
    Ok(out)
}

/// The interval as carried on the wire: seconds for v2, centiseconds for v3.
fn interval_field(version: Version, interval: Duration) -> Result<u16, AdvertError> {
    match version {
        Version::V2 => {
            let secs = interval.as_secs();
            if interval.subsec_nanos() == 0 && (1..=255).contains(&secs) {
                // 1..=255 fits.
                Ok(u16::try_from(secs).unwrap_or(u16::MAX))
            } else {
                Err(AdvertError::IntervalV2 { interval })
            }
        }
        Version::V3 => {
            let nanos = interval.as_nanos();
            let cs = nanos / CENTISECOND_NANOS;
            if nanos.is_multiple_of(CENTISECOND_NANOS)
                && (1..=u128::from(V3_INTERVAL_MASK)).contains(&cs)
            {
                Ok(u16::try_from(cs).unwrap_or(V3_INTERVAL_MASK))
            } else {
                Err(AdvertError::IntervalV3 { interval })
            }
        }
    }
}

/// v2 authentication as keepalived checks it: the type must be ours, and with a password
/// all 8 bytes must match.
fn check_v2_auth(
    auth_type: u8,
    data: [u8; AUTH_LEN],
    ours: Option<[u8; AUTH_LEN]>,
) -> Result<Option<[u8; AUTH_LEN]>, DropReason> {
    if !matches!(auth_type, AUTH_TYPE_NONE | AUTH_TYPE_SIMPLE | AUTH_TYPE_AH) {
        return Err(DropReason::BadAuthType);
    }
    match ours {
        None if auth_type == AUTH_TYPE_NONE => Ok(None),
        Some(password) if auth_type == AUTH_TYPE_SIMPLE => {
            if constant_time_eq(&data, &password) {
                Ok(Some(data))
            } else {
                Err(DropReason::AuthMismatch)
            }
        }
        _ => Err(DropReason::AuthTypeMismatch),
    }
}

/// Compares without an early exit, as keepalived's `memcmp_constant_time` does, so the
/// time taken says nothing about how much of a guessed password was right.
fn constant_time_eq(a: &[u8; AUTH_LEN], b: &[u8; AUTH_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn mcast4() -> IpAddr {
        IpAddr::V4(MULTICAST_V4)
    }

    fn mcast6() -> IpAddr {
        IpAddr::V6(MULTICAST_V6)
    }

    // Hand-built vectors. The checksums were worked out on paper as 16-bit one's-complement
    // sums (listed word by word), not with this crate.

    /// v2, VRID 1, priority 100, 1 s, no auth, VIP 192.0.2.1.
    /// Words: 2101 6401 0001 c000 0201 (auth zeros) = 0x14704 -> 0x4705 -> !0x4705 = b8fa.
    const V2_PLAIN: &str = "21 01 64 01 00 01 b8 fa  c0 00 02 01  00 00 00 00 00 00 00 00";

    /// v2, VRID 51, priority 150, 3 s, auth PASS "secret", VIPs 198.51.100.1 and .2.
    /// Words: 2133 9602 0103 c633 6401 c633 6402 7365 6372 6574 = 0x448ec -> 0x48f0 -> b70f.
    const V2_AUTH: &str =
        "21 33 96 02 01 03 b7 0f  c6 33 64 01  c6 33 64 02  73 65 63 72 65 74 00 00";

    /// v3 IPv4 192.0.2.10 -> 224.0.0.18, VRID 7, priority 200, 100 cs, VIP 192.0.2.100.
    /// Pseudo-header c000 020a e000 0012 0070 000c, message 3107 c801 0064 c000 0264
    /// = 0x35e68 -> 0x5e6b -> a194.
    const V3_V4: &str = "31 07 c8 01 00 64 a1 94  c0 00 02 64";

    /// The same advert sent unicast to 192.0.2.11: pseudo-header dst c000 020b instead of
    /// e000 0012 gives 0x34061 -> 0x4064 -> bf9b.
    const V3_V4_UNICAST: &str = "31 07 c8 01 00 64 bf 9b  c0 00 02 64";

    /// v3 IPv6 fe80::1 -> ff02::12, VRID 9, priority 100, 50 cs, VIP 2001:db8::1.
    /// Pseudo-header fe80 0001 ff02 0012 0018 0070, message 3109 6401 0032 2001 0db8 0001
    /// = 0x2c113 -> 0xc115 -> 3eea.
    const V3_V6: &str = "31 09 64 01 00 32 3e ea  20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01";

    fn v2_plain() -> Advert {
        Advert {
            version: Version::V2,
            vrid: 1,
            priority: 100,
            max_advert_interval: Duration::from_secs(1),
            auth: None,
            addresses: vec![ip("192.0.2.1")],
        }
    }

    fn v2_auth() -> Advert {
        Advert {
            version: Version::V2,
            vrid: 51,
            priority: 150,
            max_advert_interval: Duration::from_secs(3),
            auth: Some(simple_password(b"secret")),
            addresses: vec![ip("198.51.100.1"), ip("198.51.100.2")],
        }
    }

    fn v3_v4() -> Advert {
        Advert {
            version: Version::V3,
            vrid: 7,
            priority: 200,
            max_advert_interval: Duration::from_secs(1),
            auth: None,
            addresses: vec![ip("192.0.2.100")],
        }
    }

    fn v3_v6() -> Advert {
        Advert {
            version: Version::V3,
            vrid: 9,
            priority: 100,
            max_advert_interval: Duration::from_millis(500),
            auth: None,
            addresses: vec![ip("2001:db8::1")],
        }
    }

    #[test]
    fn hand_vectors_encode() {
        let src = ip("192.0.2.10");
        assert_eq!(encode(&v2_plain(), src, mcast4()).unwrap(), hex(V2_PLAIN));
        assert_eq!(encode(&v2_auth(), src, mcast4()).unwrap(), hex(V2_AUTH));
        assert_eq!(encode(&v3_v4(), src, mcast4()).unwrap(), hex(V3_V4));
        assert_eq!(
            encode(&v3_v4(), src, ip("192.0.2.11")).unwrap(),
            hex(V3_V4_UNICAST)
        );
        assert_eq!(
            encode(&v3_v6(), ip("fe80::1"), mcast6()).unwrap(),
            hex(V3_V6)
        );
    }

    #[test]
    fn old_keepalived_unicast_checksums_are_recognised() {
        let src = ip("192.0.2.10");
        let uni = Expect {
            unicast: true,
            ..Expect::new(Version::V3)
        };
        // The multicast vector's checksum is what keepalived < 1.3.6 sent unicast.
        assert_eq!(
            decode_form(&hex(V3_V4), src, ip("192.0.2.11"), 255, &uni),
            Ok((v3_v4(), ChecksumForm::OldUnicast))
        );
        assert_eq!(
            decode_form(&hex(V3_V4_UNICAST), src, ip("192.0.2.11"), 255, &uni),
            Ok((v3_v4(), ChecksumForm::Rfc))
        );
        // Neither form: still a bad checksum.
        let mut broken = hex(V3_V4);
        broken[7] ^= 1;
        assert_eq!(
            decode(&broken, src, ip("192.0.2.11"), 255, &uni),
            Err(DropReason::BadChecksum)
        );
        // Only IPv4 unicast had the bug: over IPv6 or to the group it is just wrong.
        let unicast_bytes = hex(V3_V4_UNICAST);
        assert_eq!(
            decode(
                &unicast_bytes,
                src,
                mcast4(),
                255,
                &Expect::new(Version::V3)
            ),
            Err(DropReason::BadChecksum)
        );
        let v6_group_form = encode(&v3_v6(), ip("fe80::1"), mcast6()).unwrap();
        let v6_uni = Expect {
            unicast: true,
            ..Expect::new(Version::V3)
        };
        assert_eq!(
            decode(&v6_group_form, ip("fe80::1"), ip("fe80::2"), 255, &v6_uni),
            Err(DropReason::BadChecksum)
        );
    }

    #[test]
    fn hand_vectors_decode() {
        let src = ip("192.0.2.10");
        let e2 = Expect::new(Version::V2);
        let e3 = Expect::new(Version::V3);
        assert_eq!(
            decode(&hex(V2_PLAIN), src, mcast4(), 255, &e2),
            Ok(v2_plain())
        );
        let e2_auth = Expect {
            auth: Some(simple_password(b"secret")),
            ..e2.clone()
        };
        assert_eq!(
            decode(&hex(V2_AUTH), src, mcast4(), 255, &e2_auth),
            Ok(v2_auth())
        );
        assert_eq!(decode(&hex(V3_V4), src, mcast4(), 255, &e3), Ok(v3_v4()));
        let e3_uni = Expect {
            unicast: true,
            ..e3.clone()
        };
        assert_eq!(
            decode(&hex(V3_V4_UNICAST), src, ip("192.0.2.11"), 255, &e3_uni),
            Ok(v3_v4())
        );
        assert_eq!(
            decode(&hex(V3_V6), ip("fe80::1"), mcast6(), 255, &e3),
            Ok(v3_v6())
        );
    }

    #[test]
    fn v2_checksum_ignores_addresses_but_v3_does_not() {
        let msg = hex(V2_PLAIN);
        let e2 = Expect::new(Version::V2);
        assert!(decode(&msg, ip("198.51.100.7"), mcast4(), 255, &e2).is_ok());
        let msg = hex(V3_V4);
        let e3 = Expect::new(Version::V3);
        assert_eq!(
            decode(&msg, ip("198.51.100.7"), mcast4(), 255, &e3),
            Err(DropReason::BadChecksum)
        );
    }

    #[test]
    fn drop_reasons() {
        let src = ip("192.0.2.10");
        let e2 = Expect::new(Version::V2);
        let e3 = Expect::new(Version::V3);
        let ok2 = hex(V2_PLAIN);
        let ok3 = hex(V3_V4);
        let d = |p: &[u8], e: &Expect| decode(p, src, mcast4(), 255, e);

        assert_eq!(d(&[], &e2), Err(DropReason::TooShort));
        assert_eq!(d(&ok2[..7], &e2), Err(DropReason::TooShort));
        assert_eq!(
            decode(&ok2, src, mcast6(), 255, &e2),
            Err(DropReason::FamilyMismatch)
        );

        let mut p = ok2.clone();
        p[0] = 0x11;
        assert_eq!(d(&p, &e2), Err(DropReason::BadVersion));
        p[0] = 0x22;
        assert_eq!(d(&p, &e2), Err(DropReason::BadType));

        assert_eq!(
            d(&ok2[..ok2.len() - 1], &e2),
            Err(DropReason::LengthMismatch)
        );
        let mut p = ok2.clone();
        p.push(0);
        assert_eq!(d(&p, &e2), Err(DropReason::LengthMismatch));
        let mut p = ok2.clone();
        p[3] = 2;
        assert_eq!(d(&p, &e2), Err(DropReason::LengthMismatch));

        let mut p = ok2.clone();
        p[2] ^= 0x01;
        assert_eq!(d(&p, &e2), Err(DropReason::BadChecksum));

        assert_eq!(
            decode(&ok2, src, mcast4(), 254, &e2),
            Err(DropReason::BadTtl)
        );
        let no_ttl = Expect {
            check_ttl: false,
            ..e2.clone()
        };
        assert!(decode(&ok2, src, mcast4(), 1, &no_ttl).is_ok());

        assert_eq!(
            decode(&ok2, src, ip("192.0.2.11"), 255, &e2),
            Err(DropReason::WrongDestination)
        );
        let uni = Expect {
            unicast: true,
            ..e2.clone()
        };
        assert_eq!(d(&ok2, &uni), Err(DropReason::WrongDestination));

        assert_eq!(d(&ok2, &e3), Err(DropReason::VersionMismatch));
        assert_eq!(d(&ok3, &e2), Err(DropReason::VersionMismatch));

        // v2 over IPv6: 2 in the version nibble with IPv6 addresses.
        let mut p = hex(V3_V6);
        p[0] = 0x21;
        assert_eq!(
            decode(&p, ip("fe80::1"), mcast6(), 255, &e2),
            Err(DropReason::V2Ipv6)
        );
    }

    /// Rewrites the checksum so that a test reaches the checks after it.
    fn fix_checksum(version: Version, src: IpAddr, dst: IpAddr, p: &mut [u8]) {
        let sum = checksum::vrrp_checksum(version, src, dst, p);
        p[6..8].copy_from_slice(&sum);
    }

    #[test]
    fn v2_authentication() {
        let src = ip("192.0.2.10");
        let plain = Expect::new(Version::V2);
        let secret = Expect {
            auth: Some(simple_password(b"secret")),
            ..plain.clone()
        };
        let other = Expect {
            auth: Some(simple_password(b"secreT")),
            ..plain.clone()
        };
        let auth = hex(V2_AUTH);
        let none = hex(V2_PLAIN);
        let d = |p: &[u8], e: &Expect| decode(p, src, mcast4(), 255, e);

        assert_eq!(d(&auth, &plain), Err(DropReason::AuthTypeMismatch));
        assert_eq!(d(&none, &secret), Err(DropReason::AuthTypeMismatch));
        assert_eq!(d(&auth, &other), Err(DropReason::AuthMismatch));

        let mut p = auth.clone();
        p[4] = 2; // IPsec AH: known type, never ours
        fix_checksum(Version::V2, src, mcast4(), &mut p);
        assert_eq!(d(&p, &secret), Err(DropReason::AuthTypeMismatch));
        p[4] = 3;
        fix_checksum(Version::V2, src, mcast4(), &mut p);
        assert_eq!(d(&p, &secret), Err(DropReason::BadAuthType));

        // keepalived compares all 8 bytes: a trailing byte after the padding matters.
        let mut p = auth.clone();
        let last = p.len() - 1;
        p[last] = b'x';
        fix_checksum(Version::V2, src, mcast4(), &mut p);
        assert_eq!(d(&p, &secret), Err(DropReason::AuthMismatch));
    }

    #[test]
    fn zero_interval_and_reserved_bits() {
        let src = ip("192.0.2.10");
        let e3 = Expect::new(Version::V3);
        let mut p = hex(V3_V4);
        p[4] = 0;
        p[5] = 0;
        fix_checksum(Version::V3, src, mcast4(), &mut p);
        assert_eq!(
            decode(&p, src, mcast4(), 255, &e3),
            Err(DropReason::ZeroInterval)
        );
        // Reserved bits are ignored on input (RFC 5798 §5.2.7).
        let mut p = hex(V3_V4);
        p[4] = 0xf0;
        fix_checksum(Version::V3, src, mcast4(), &mut p);
        assert_eq!(decode(&p, src, mcast4(), 255, &e3), Ok(v3_v4()));

        let mut p = hex(V2_PLAIN);
        p[5] = 0;
        fix_checksum(Version::V2, src, mcast4(), &mut p);
        let e2 = Expect::new(Version::V2);
        assert_eq!(
            decode(&p, src, mcast4(), 255, &e2),
            Err(DropReason::ZeroInterval)
        );
    }

    #[test]
    fn no_addresses_is_valid() {
        let a = Advert {
            addresses: vec![],
            ..v3_v4()
        };
        let src = ip("192.0.2.10");
        let bytes = encode(&a, src, mcast4()).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(
            decode(&bytes, src, mcast4(), 255, &Expect::new(Version::V3)),
            Ok(a)
        );
    }

    #[test]
    fn encode_rejects_what_cannot_be_sent() {
        let src = ip("192.0.2.10");
        let at = |secs: f64, version| Advert {
            version,
            max_advert_interval: Duration::from_secs_f64(secs),
            ..v3_v4()
        };
        assert!(matches!(
            encode(&at(0.5, Version::V2), src, mcast4()),
            Err(AdvertError::IntervalV2 { .. })
        ));
        assert!(matches!(
            encode(&at(256.0, Version::V2), src, mcast4()),
            Err(AdvertError::IntervalV2 { .. })
        ));
        assert!(encode(&at(255.0, Version::V2), src, mcast4()).is_ok());
        assert!(matches!(
            encode(&at(0.005, Version::V3), src, mcast4()),
            Err(AdvertError::IntervalV3 { .. })
        ));
        assert!(matches!(
            encode(&at(40.96, Version::V3), src, mcast4()),
            Err(AdvertError::IntervalV3 { .. })
        ));
        assert!(encode(&at(40.95, Version::V3), src, mcast4()).is_ok());
        assert!(encode(&at(0.01, Version::V3), src, mcast4()).is_ok());

        assert!(matches!(
            encode(&v3_v4(), src, mcast6()),
            Err(AdvertError::FamilyMismatch { .. })
        ));
        assert!(matches!(
            encode(&v3_v6(), ip("192.0.2.10"), mcast4()),
            Err(AdvertError::AddressFamily { .. })
        ));
        let v2_6 = Advert {
            version: Version::V2,
            max_advert_interval: Duration::from_secs(1),
            ..v3_v6()
        };
        assert_eq!(
            encode(&v2_6, ip("fe80::1"), mcast6()),
            Err(AdvertError::V2Ipv6)
        );
        let v3_auth = Advert {
            auth: Some([1; 8]),
            ..v3_v4()
        };
        assert_eq!(encode(&v3_auth, src, mcast4()), Err(AdvertError::AuthV3));
        let many = Advert {
            addresses: vec![ip("192.0.2.1"); 256],
            ..v3_v4()
        };
        assert_eq!(
            encode(&many, src, mcast4()),
            Err(AdvertError::TooManyAddresses { count: 256 })
        );
        let most = Advert {
            addresses: vec![ip("192.0.2.1"); 255],
            ..v3_v4()
        };
        assert_eq!(encode(&most, src, mcast4()).unwrap().len(), 8 + 255 * 4);
    }

    #[test]
    fn ipv4_header_roundtrip_and_errors() {
        let e2 = Expect::new(Version::V2);
        let src = Ipv4Addr::new(192, 0, 2, 10);
        let pkt = encode_ipv4(&v2_plain(), src, MULTICAST_V4, 7).unwrap();
        assert_eq!(pkt.len(), 20 + 20);
        let (h, a) = decode_ipv4(&pkt, &e2).unwrap();
        assert_eq!(
            h,
            Ipv4Header {
                src,
                dst: MULTICAST_V4,
                ttl: 255
            }
        );
        assert_eq!(a, v2_plain());

        // Link-layer padding past the total length is not part of the datagram.
        let mut padded = pkt.clone();
        padded.extend_from_slice(&[0; 6]);
        assert!(decode_ipv4(&padded, &e2).is_ok());

        assert_eq!(decode_ipv4(&pkt[..19], &e2), Err(DropReason::TooShort));
        assert_eq!(decode_ipv4(&pkt[..39], &e2), Err(DropReason::TooShort));
        let mut p = pkt.clone();
        p[0] = 0x65;
        assert_eq!(decode_ipv4(&p, &e2), Err(DropReason::BadIpHeader));
        let mut p = pkt.clone();
        p[0] = 0x44;
        assert_eq!(decode_ipv4(&p, &e2), Err(DropReason::BadIpHeader));
        let mut p = pkt.clone();
        p[0] = 0x4f; // 60-byte header, total length 40
        assert_eq!(decode_ipv4(&p, &e2), Err(DropReason::BadIpHeader));
        let mut p = pkt.clone();
        p[3] = 41; // total length past the end
        assert_eq!(decode_ipv4(&p, &e2), Err(DropReason::TooShort));
        let mut p = pkt.clone();
        p[3] = 10;
        assert_eq!(decode_ipv4(&p, &e2), Err(DropReason::BadIpHeader));
        let mut p = pkt.clone();
        p[9] = 51;
        assert_eq!(decode_ipv4(&p, &e2), Err(DropReason::NotVrrp));
        let mut p = pkt.clone();
        p[8] = 64;
        assert_eq!(decode_ipv4(&p, &e2), Err(DropReason::BadTtl));

        // IP options are skipped by IHL.
        let mut opts = pkt[..20].to_vec();
        opts[0] = 0x46;
        opts[3] += 4;
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts.extend_from_slice(&pkt[20..]);
        assert_eq!(decode_ipv4(&opts, &e2).map(|(_, a)| a), Ok(v2_plain()));
    }

    #[test]
    fn names_are_unique_and_indexed() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(!r.to_string().is_empty());
            assert_eq!(r.name(), r.name().to_lowercase());
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn password_truncates_and_pads() {
        assert_eq!(simple_password(b"1111"), *b"1111\0\0\0\0");
        assert_eq!(simple_password(b"0123456789"), *b"01234567");
        assert_eq!(simple_password(b""), [0; 8]);
    }

    #[test]
    fn peek_vrid_reads_second_byte() {
        assert_eq!(peek_vrid(&hex(V3_V4)), Some(7));
        assert_eq!(peek_vrid(&[0x31]), None);
    }
}
