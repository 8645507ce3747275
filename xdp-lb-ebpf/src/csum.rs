//! Incremental Internet checksum updates (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
//! Values are the 16-bit words as big-endian numbers, exactly as read from the packet
//! with `from_be_bytes`, so byte order never mixes.

#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// For a 4-byte field such as an IPv4 address (two words).
#[inline(always)]
pub fn replace32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let hi = replace16(
        check,
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    );
    replace16(
        hi,
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
}

/// For a 4-byte field held as one big-endian number (`u32::from_be_bytes`): the same
/// as [`replace32`] without the byte array, which keeps it in one register.
#[inline(always)]
pub fn replace32_be(check: u16, old: u32, new: u32) -> u16 {
    let hi = replace16(check, (old >> 16) as u16, (new >> 16) as u16);
    replace16(hi, old as u16, new as u16)
}
