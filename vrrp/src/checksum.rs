//! The Internet checksum (RFC 1071) as VRRP uses it.
//!
//! VRRPv2 (RFC 3768 §5.3.8) sums the VRRP message alone; VRRPv3 (RFC 5798 §5.2.8)
//! prepends the IPv4 or IPv6 pseudo-header with next header 112, as TCP and UDP do.
//! The one's-complement arithmetic comes from `etherparse`, which the daemon already
//! uses; this module only decides what goes into the sum.

use std::net::IpAddr;

use etherparse::checksum::Sum16BitWords;

use crate::packet::{IPPROTO_VRRP, Version};

/// Byte offset of the checksum field inside a VRRP message.
pub(crate) const CHECKSUM_OFFSET: usize = 6;

/// The checksum field value for `message`, computed with the field's own bytes taken as
/// zero, in wire (big-endian) byte order.
///
/// `src` and `dst` are only read for VRRPv3, whose checksum covers the pseudo-header.
/// A message shorter than the fixed header is summed as it is; callers check lengths.
pub fn vrrp_checksum(version: Version, src: IpAddr, dst: IpAddr, message: &[u8]) -> [u8; 2] {
    let mut sum = Sum16BitWords::new();
    if version == Version::V3 {
        sum = add_pseudo_header(sum, src, dst, message.len());
    }
    match message.get(..CHECKSUM_OFFSET) {
        Some(head) => {
            sum = sum.add_slice(head);
            // Skip the checksum field itself: summing it as zero is the same as leaving it out.
            if let Some(rest) = message.get(CHECKSUM_OFFSET + 2..) {
                sum = sum.add_slice(rest);
            }
        }
        None => sum = sum.add_slice(message),
    }
    // etherparse sums native-endian words, so the complement goes back out the same way.
    sum.ones_complement().to_ne_bytes()
}

/// True when the checksum stored in `message` is right. When the message sums to
/// 0xffff, both zeros of one's complement (0x0000 and 0xffff) are right, as for
/// keepalived and the kernel, which sum the whole message and require zero.
pub fn verify(version: Version, src: IpAddr, dst: IpAddr, message: &[u8]) -> bool {
    match message.get(CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2) {
        Some(stored) => {
            let right = vrrp_checksum(version, src, dst, message);
            stored == right || (right == [0, 0] && stored == [0xff, 0xff])
        }
        None => false,
    }
}

/// The IPv4 header checksum over `header` (with its checksum field taken as zero).
pub(crate) fn ipv4_header_checksum(header: &[u8]) -> [u8; 2] {
    let mut sum = Sum16BitWords::new();
    if let (Some(head), Some(rest)) = (header.get(..10), header.get(12..)) {
        sum = sum.add_slice(head).add_slice(rest);
    }
    sum.ones_complement().to_ne_bytes()
}

fn add_pseudo_header(sum: Sum16BitWords, src: IpAddr, dst: IpAddr, len: usize) -> Sum16BitWords {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            // RFC 768 layout: src, dst, zero, protocol, 16-bit length.
            let len = u16::try_from(len).unwrap_or(u16::MAX);
            sum.add_slice(&s.octets())
                .add_slice(&d.octets())
                .add_2bytes([0, IPPROTO_VRRP])
                .add_2bytes(len.to_be_bytes())
        }
        _ => {
            // RFC 8200 §8.1 layout: src, dst, 32-bit length, three zero bytes, next header.
            // A mixed pair never verifies; decode rejects it before getting here.
            let len = u32::try_from(len).unwrap_or(u32::MAX);
            sum.add_slice(&v6_octets(src))
                .add_slice(&v6_octets(dst))
                .add_slice(&len.to_be_bytes())
                .add_slice(&[0, 0, 0, IPPROTO_VRRP])
        }
    }
}

fn v6_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const ANY4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2 (after the carry), so the
        // checksum is its complement 220d. Place them around a zeroed checksum field.
        let msg = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0x00, 0x00, 0xf6, 0xf7];
        assert_eq!(vrrp_checksum(Version::V2, ANY4, ANY4, &msg), [0x22, 0x0d]);
    }

    #[test]
    fn stored_checksum_is_ignored_when_computing() {
        let a = [0x21, 0x01, 0x64, 0x01, 0x00, 0x01, 0x00, 0x00];
        let b = [0x21, 0x01, 0x64, 0x01, 0x00, 0x01, 0xab, 0xcd];
        let v = Version::V2;
        assert_eq!(
            vrrp_checksum(v, ANY4, ANY4, &a),
            vrrp_checksum(v, ANY4, ANY4, &b)
        );
    }

    #[test]
    fn verify_rejects_short_and_wrong() {
        assert!(!verify(Version::V2, ANY4, ANY4, &[0x21, 0x01]));
        let mut msg = [0x21, 0x01, 0x64, 0x01, 0x00, 0x01, 0x00, 0x00];
        let ck = vrrp_checksum(Version::V2, ANY4, ANY4, &msg);
        msg[6..8].copy_from_slice(&ck);
        assert!(verify(Version::V2, ANY4, ANY4, &msg));
        msg[2] ^= 1;
        assert!(!verify(Version::V2, ANY4, ANY4, &msg));
    }

    #[test]
    fn v3_depends_on_pseudo_header() {
        let msg = [0x31, 0x01, 0x64, 0x00, 0x00, 0x64, 0x00, 0x00];
        let a = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let b = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        assert_ne!(
            vrrp_checksum(Version::V3, a, b, &msg),
            vrrp_checksum(Version::V3, b, b, &msg)
        );
        // v2 ignores the addresses.
        assert_eq!(
            vrrp_checksum(Version::V2, a, b, &msg),
            vrrp_checksum(Version::V2, b, b, &msg)
        );
    }

    #[test]
    fn ipv4_header_checksum_matches_capture() {
        // The header from keepalived-v2-auth-pass.pcap: checksum d023.
        let hdr = [
            0x45, 0xc0, 0x00, 0x28, 0x00, 0x02, 0x00, 0x00, 0xff, 0x70, 0x00, 0x00, 0x0a, 0x63,
            0x00, 0x0b, 0xe0, 0x00, 0x00, 0x12,
        ];
        assert_eq!(ipv4_header_checksum(&hdr), [0xd0, 0x23]);
    }
}
