//! `DNS_CHECK`: one query over UDP, with a minimal encoder and reply parser of our own
//! (hickory-proto would bring IDNA/ICU and a large tree for the ~100 lines used here).
//!
//! The query is keepalived's: random id, RD set, one question of class IN. Like
//! keepalived, replies with another id or without QR are ignored (the wait goes on) and a
//! non-zero RCODE is a failure. Unlike keepalived, the reply must also carry an answer
//! of the asked type (or a CNAME, for an alias), as the issue asks for "expect an
//! answer": a server answering NOERROR with nothing is not serving the name.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::reason::{Outcome, Phase, Reason, Up, reply_before};
use crate::spec::{CheckParams, DnsCheck, QType};
use crate::udp;

const HEADER_LEN: usize = 12;
const CLASS_IN: u16 = 1;
const TYPE_CNAME: u16 = 5;
/// RD (recursion desired), as keepalived sets.
const FLAG_RD: u16 = 0x0100;
const FLAG_QR: u16 = 0x8000;
/// Replies larger than this are cut by the server (TC) over UDP anyway.
const MAX_REPLY: usize = 4096;

/// `name` in wire form: length-prefixed labels ending with the root; `.` or `""` is the
/// root itself, and a trailing dot is optional.
pub(crate) fn encode_name(name: &str) -> Result<Vec<u8>, Reason> {
    let invalid = |why: &str| Err(Reason::Invalid(format!("dns name {name:?} {why}")));
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let mut wire = Vec::with_capacity(trimmed.len() + 2);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() {
                return invalid("has an empty label");
            }
            if label.len() > 63 {
                return invalid("has a label longer than 63 bytes");
            }
            if !label.is_ascii() {
                return invalid("is not ascii (give IDNs in their xn-- form)");
            }
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
    }
    wire.push(0);
    if wire.len() > 255 {
        return invalid("is longer than 255 bytes");
    }
    Ok(wire)
}

/// A standard query for `name` (wire form) and `qtype`, class IN.
pub(crate) fn encode_query(id: u16, name: &[u8], qtype: QType) -> Vec<u8> {
    let mut q = Vec::with_capacity(HEADER_LEN + name.len() + 4);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&FLAG_RD.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&[0; 6]); // ANCOUNT, NSCOUNT, ARCOUNT
    q.extend_from_slice(name);
    q.extend_from_slice(&qtype.code().to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

/// What a received datagram means for the check.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not the reply to our query (too short, other id, not a response): keep waiting.
    Ignore,
    /// The reply, judged.
    Done(Outcome),
}

/// Judges `reply` to the query with `id` for `name`/`qtype`.
pub(crate) fn judge_reply(reply: &[u8], id: u16, name: &str, qtype: QType) -> Verdict {
    if reply.len() < HEADER_LEN || be16(reply, 0) != Some(id) {
        return Verdict::Ignore;
    }
    let flags = be16(reply, 2).unwrap_or(0);
    if flags & FLAG_QR == 0 {
        return Verdict::Ignore;
    }
    let rcode = (flags & 0x000f) as u8;
    if rcode != 0 {
        return Verdict::Done(Err(Reason::DnsRcode { rcode }));
    }
    Verdict::Done(match has_answer(reply, qtype.code()) {
        Err(why) => Err(Reason::DnsMalformed(why.into())),
        Ok(false) => Err(Reason::DnsNoAnswer {
            name: name.to_owned(),
            qtype,
        }),
        Ok(true) => Ok(Up::default()),
    })
}

/// Whether the answer section holds a record of type `qtype` or a CNAME.
fn has_answer(msg: &[u8], qtype: u16) -> Result<bool, &'static str> {
    let truncated = "truncated message";
    let qdcount = be16(msg, 4).ok_or(truncated)?;
    let ancount = be16(msg, 6).ok_or(truncated)?;
    let mut pos = HEADER_LEN;
    for _ in 0..qdcount {
        pos = skip_name(msg, pos)? + 4; // QTYPE, QCLASS
    }
    for _ in 0..ancount {
        pos = skip_name(msg, pos)?;
        let rtype = be16(msg, pos).ok_or(truncated)?;
        let rdlength = be16(msg, pos + 8).ok_or(truncated)? as usize;
        pos += 10 + rdlength;
        if pos > msg.len() {
            return Err(truncated);
        }
        if rtype == qtype || rtype == TYPE_CNAME {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The position after the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Result<usize, &'static str> {
    // 128 labels of at least one byte fill the 255-byte limit; more means a bad message.
    for _ in 0..128 {
        let len = *msg.get(pos).ok_or("truncated name")? as usize;
        match len & 0xc0 {
            0x00 if len == 0 => return Ok(pos + 1),
            0x00 => pos += 1 + len,
            // A compression pointer ends the name in this place.
            0xc0 if pos + 1 < msg.len() => return Ok(pos + 2),
            0xc0 => return Err("truncated name"),
            _ => return Err("unknown label type"),
        }
    }
    Err("name too long")
}

fn be16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

/// A prepared DNS check.
#[derive(Debug)]
pub(crate) struct DnsProbe {
    target: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
    name: String,
    wire_name: Vec<u8>,
    qtype: QType,
}

impl DnsProbe {
    pub(crate) fn new(dns: &DnsCheck, params: &CheckParams) -> Result<DnsProbe, Reason> {
        Ok(DnsProbe {
            target: params.target(),
            source: params.source,
            timeout: params.connect_timeout,
            name: dns.name.clone(),
            wire_name: encode_name(&dns.name)?,
            qtype: dns.qtype,
        })
    }

    pub(crate) async fn probe(&self) -> Outcome {
        let socket = udp::connected_socket(self.target, self.source).await?;
        let id = crate::random_u64() as u16;
        let query = encode_query(id, &self.wire_name, self.qtype);
        socket
            .send(&query)
            .await
            .map_err(|e| Reason::io(Phase::Send, &e))?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; MAX_REPLY];
        loop {
            let len = reply_before(deadline, self.timeout, socket.recv(&mut buf)).await?;
            if let Verdict::Done(outcome) = judge_reply(&buf[..len], id, &self.name, self.qtype) {
                return outcome;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_to_labels() {
        assert_eq!(encode_name(".").unwrap(), [0]);
        assert_eq!(encode_name("").unwrap(), [0]);
        assert_eq!(
            encode_name("www.example.org.").unwrap(),
            b"\x03www\x07example\x03org\x00"
        );
        assert_eq!(
            encode_name("example.org").unwrap(),
            b"\x07example\x03org\x00"
        );
        assert!(encode_name("a..b").is_err());
        assert!(encode_name(&"x".repeat(64)).is_err());
        assert!(encode_name(&["abcdefgh"; 32].join(".")).is_err());
        assert!(encode_name("bücher.example").is_err());
    }

    #[test]
    fn query_matches_the_rfc_layout() {
        let q = encode_query(0xbeef, &encode_name("example.org").unwrap(), QType::Aaaa);
        let mut expected = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(b"\x07example\x03org\x00");
        expected.extend_from_slice(&[0, 28, 0, 1]);
        assert_eq!(q, expected);
    }

    /// A reply to `query` with `rcode` and the given answer records (type, rdata), each
    /// owner name a pointer to the question, as servers write them.
    fn reply(query: &[u8], rcode: u8, answers: &[(u16, &[u8])]) -> Vec<u8> {
        let mut r = query.to_vec();
        r[2] = 0x81; // QR, RD
        r[3] = 0x80 | rcode; // RA, RCODE
        r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for (rtype, rdata) in answers {
            r.extend_from_slice(&[0xc0, 0x0c]);
            r.extend_from_slice(&rtype.to_be_bytes());
            r.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]);
            r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            r.extend_from_slice(rdata);
        }
        r
    }

    #[test]
    fn replies_are_judged() {
        let q = encode_query(7, &encode_name("example.org").unwrap(), QType::A);
        let judge = |r: &[u8]| judge_reply(r, 7, "example.org", QType::A);
        assert_eq!(
            judge(&reply(&q, 0, &[(1, &[192, 0, 2, 1])])),
            Verdict::Done(Ok(Up::default()))
        );
        assert_eq!(
            judge(&reply(
                &q,
                0,
                &[(5, b"\x03www\xc0\x0c"), (1, &[192, 0, 2, 1])]
            )),
            Verdict::Done(Ok(Up::default()))
        );
        assert_eq!(
            judge(&reply(&q, 3, &[])),
            Verdict::Done(Err(Reason::DnsRcode { rcode: 3 }))
        );
        assert_eq!(
            judge(&reply(&q, 0, &[(16, b"\x02hi")])),
            Verdict::Done(Err(Reason::DnsNoAnswer {
                name: "example.org".into(),
                qtype: QType::A
            }))
        );
        // Our own query echoed back (QR clear), another id, a runt: not the reply.
        assert_eq!(judge(&q), Verdict::Ignore);
        assert_eq!(
            judge_reply(&reply(&q, 0, &[]), 8, "example.org", QType::A),
            Verdict::Ignore
        );
        assert_eq!(judge(&q[..5]), Verdict::Ignore);
        // An answer whose rdata runs past the end.
        let mut cut = reply(&q, 0, &[(1, &[192, 0, 2, 1])]);
        cut.truncate(cut.len() - 2);
        assert_eq!(
            judge(&cut),
            Verdict::Done(Err(Reason::DnsMalformed("truncated message".into())))
        );
        // A label type that does not exist (0x80).
        let mut bad = reply(&q, 0, &[(1, &[192, 0, 2, 1])]);
        let answer_at = q.len();
        bad[answer_at] = 0x80;
        assert_eq!(
            judge(&bad),
            Verdict::Done(Err(Reason::DnsMalformed("unknown label type".into())))
        );
    }
}
