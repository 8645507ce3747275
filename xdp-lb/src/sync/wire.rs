//! The NAT sync message on the wire: one UDP datagram, big-endian, authenticated with
//! HMAC-SHA256 under the shared secret (`ring`, already the checks' crypto).
//!
//! ```text
//! offset  size  field
//!      0     4  magic "XLBS"
//!      4     1  version (1)
//!      5     1  reserved (0)
//!      6     2  entry count N, 1..=32
//!      8     8  service-table fingerprint: the first 8 bytes of SHA-256 of
//!               `ServiceTable::id_map()` (the ids the entries use)
//!     16     8  boot: the sender's start time, Unix ms (a restart sends a larger one)
//!     24     8  sequence: 1, 2, 3, ... within one boot (a receiver accepts each once,
//!               within a window of 64 behind the highest: see `Receiver`)
//!     32    16  the client-side interface on the sender, NUL-padded
//!     48  40×N  entries (below)
//! 48+40N    32  HMAC-SHA256(secret, bytes 0 .. 48+40N)
//!
//! entry   size  field
//!      0     4  client address (IPv4)
//!      4     4  virtual address (VIP)
//!      8     4  real server address
//!     12     2  client port
//!     14     2  virtual port
//!     16     2  real server port
//!     18     1  protocol (6 TCP, 17 UDP)
//!     19     1  flags: bit 0 a FIN or RST was seen (closing)
//!     20     4  service id
//!     24     4  real server id
//!     28     4  idle: ms since the sender last saw a packet of the flow
//!     32     6  the client's next-hop MAC (the source MAC of its frames)
//!     38     2  reserved (0)
//! ```
//!
//! The largest message is 1,360 bytes: no fragmentation on a 1,500-byte path.

use std::net::Ipv4Addr;

use ring::hmac;

pub const MAGIC: [u8; 4] = *b"XLBS";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 48;
pub const ENTRY_LEN: usize = 40;
pub const MAC_LEN: usize = 32;
/// Entries per message: keeps a datagram under 1,400 bytes.
pub const MAX_ENTRIES: usize = 32;
pub const IFNAME_LEN: usize = 16;
pub const FLAG_CLOSING: u8 = 1;

/// One NAT connection as the sender knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub client: Ipv4Addr,
    pub vip: Ipv4Addr,
    pub real: Ipv4Addr,
    pub client_port: u16,
    pub vport: u16,
    pub real_port: u16,
    pub proto: u8,
    pub flags: u8,
    pub service: u32,
    pub backend: u32,
    pub idle_ms: u32,
    pub client_mac: [u8; 6],
}

/// A message's header fields besides the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub fingerprint: u64,
    pub boot: u64,
    pub sequence: u64,
    pub interface: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub entries: Vec<Entry>,
}

/// Why a datagram is not a message we accept, before any look at its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0} bytes: too short or not 48 + 40 × N + 32 bytes")]
    Length(usize),
    #[error("not a sync message (bad magic)")]
    Magic,
    #[error("version {0}, this node speaks {VERSION}")]
    Version(u8),
    #[error("entry count {0} out of 1..=32 or not matching the length")]
    Count(usize),
    #[error("the HMAC does not match (another secret, or altered on the way)")]
    Auth,
    #[error("interface name is not NUL-padded UTF-8")]
    Interface,
}

impl WireError {
    /// The counter label.
    pub fn reason(self) -> &'static str {
        match self {
            WireError::Auth => "bad_auth",
            WireError::Version(_) => "version",
            _ => "malformed",
        }
    }
}

/// The shared secret, ready to sign and verify.
pub struct Key(hmac::Key);

impl Key {
    pub fn new(secret: &[u8]) -> Key {
        Key(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The first 8 bytes of SHA-256 of the id map, as a number.
pub fn fingerprint(id_map: &str) -> u64 {
    let d = ring::digest::digest(&ring::digest::SHA256, id_map.as_bytes());
    u64::from_be_bytes(d.as_ref()[..8].try_into().expect("8 bytes"))
}

/// Encodes and signs one message; `entries` holds 1..=[`MAX_ENTRIES`].
pub fn encode(key: &Key, header: &Header, entries: &[Entry]) -> Vec<u8> {
    assert!(
        (1..=MAX_ENTRIES).contains(&entries.len()),
        "1 to {MAX_ENTRIES} entries per message"
    );
    let mut b = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN + MAC_LEN);
    b.extend_from_slice(&MAGIC);
    b.push(VERSION);
    b.push(0);
    b.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    b.extend_from_slice(&header.fingerprint.to_be_bytes());
    b.extend_from_slice(&header.boot.to_be_bytes());
    b.extend_from_slice(&header.sequence.to_be_bytes());
    let mut name = [0u8; IFNAME_LEN];
    let n = header.interface.len().min(IFNAME_LEN - 1);
    name[..n].copy_from_slice(&header.interface.as_bytes()[..n]);
    b.extend_from_slice(&name);
    for e in entries {
        b.extend_from_slice(&e.client.octets());
        b.extend_from_slice(&e.vip.octets());
        b.extend_from_slice(&e.real.octets());
        b.extend_from_slice(&e.client_port.to_be_bytes());
        b.extend_from_slice(&e.vport.to_be_bytes());
        b.extend_from_slice(&e.real_port.to_be_bytes());
        b.push(e.proto);
        b.push(e.flags);
        b.extend_from_slice(&e.service.to_be_bytes());
        b.extend_from_slice(&e.backend.to_be_bytes());
        b.extend_from_slice(&e.idle_ms.to_be_bytes());
        b.extend_from_slice(&e.client_mac);
        b.extend_from_slice(&[0, 0]);
    }
    let tag = hmac::sign(&key.0, &b);
    b.extend_from_slice(tag.as_ref());
    b
}

/// Checks the length, the header and the HMAC (in constant time), then decodes.
/// Nothing of an unauthenticated datagram is read past its header's length fields.
pub fn decode(key: &Key, b: &[u8]) -> Result<Message, WireError> {
    let min = HEADER_LEN + ENTRY_LEN + MAC_LEN;
    if b.len() < min || !(b.len() - HEADER_LEN - MAC_LEN).is_multiple_of(ENTRY_LEN) {
        if b.len() >= 4 && b[..4] != MAGIC {
            return Err(WireError::Magic);
        }
        return Err(WireError::Length(b.len()));
    }
    if b[..4] != MAGIC {
        return Err(WireError::Magic);
    }
    if b[4] != VERSION {
        return Err(WireError::Version(b[4]));
    }
    let count = usize::from(u16::from_be_bytes([b[6], b[7]]));
    let fits = (b.len() - HEADER_LEN - MAC_LEN) / ENTRY_LEN;
    if count == 0 || count > MAX_ENTRIES || count != fits {
        return Err(WireError::Count(count));
    }
    let (signed, tag) = b.split_at(b.len() - MAC_LEN);
    hmac::verify(&key.0, signed, tag).map_err(|_| WireError::Auth)?;
    let u64_at = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let name = &b[32..48];
    let end = name
        .iter()
        .position(|&c| c == 0)
        .ok_or(WireError::Interface)?;
    if name[end..].iter().any(|&c| c != 0) {
        return Err(WireError::Interface);
    }
    let interface = std::str::from_utf8(&name[..end])
        .map_err(|_| WireError::Interface)?
        .to_owned();
    let header = Header {
        fingerprint: u64_at(8),
        boot: u64_at(16),
        sequence: u64_at(24),
        interface,
    };
    let entries = signed[HEADER_LEN..]
        .chunks_exact(ENTRY_LEN)
        .map(|e| {
            let ip = |o: usize| Ipv4Addr::new(e[o], e[o + 1], e[o + 2], e[o + 3]);
            let u16_at = |o: usize| u16::from_be_bytes([e[o], e[o + 1]]);
            let u32_at = |o: usize| u32::from_be_bytes(e[o..o + 4].try_into().expect("4 bytes"));
            Entry {
                client: ip(0),
                vip: ip(4),
                real: ip(8),
                client_port: u16_at(12),
                vport: u16_at(14),
                real_port: u16_at(16),
                proto: e[18],
                flags: e[19],
                service: u32_at(20),
                backend: u32_at(24),
                idle_ms: u32_at(28),
                client_mac: e[32..38].try_into().expect("6 bytes"),
            }
        })
        .collect();
    Ok(Message { header, entries })
}
