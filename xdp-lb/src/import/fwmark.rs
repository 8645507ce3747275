//! Firewall marks as the VIP:port pairs they select, read from the rules that set
//! them (`--fwmark-rules FILE`: `iptables-save` / `ip6tables-save` output, or `nft list
//! ruleset`), for keepalived's `virtual_server fwmark N` and a group's `fwmark N`.
//!
//! xdp-lb runs before netfilter and matches (VIP, port, protocol), so a mark translates
//! only when every rule setting it matches nothing but a destination host, a protocol
//! and destination ports: those pairs are then exactly what the mark selects. A rule
//! that matches anything else (a source, an interface, a set, a negation, conntrack
//! state) makes its mark unreadable, with the reason.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// What the rules say about each mark they set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkRules {
    marks: BTreeMap<u32, Result<Vec<Selection>, String>>,
}

/// One rule's selection: a destination host, its protocol, and port ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub addr: IpAddr,
    /// "tcp" or "udp".
    pub protocol: &'static str,
    pub ports: Vec<(u16, u16)>,
}

impl Selection {
    /// As xdp-lb group members: `192.0.2.100:80`, `[2001:db8::1]:8000-8010`.
    pub fn members(&self) -> Vec<String> {
        let addr = match self.addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        self.ports
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    format!("{addr}:{a}")
                } else {
                    format!("{addr}:{a}-{b}")
                }
            })
            .collect()
    }
}

impl MarkRules {
    /// Reads one rules file (`name` for messages); later files add to earlier ones.
    pub fn read(&mut self, text: &str, name: &str) {
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            let parsed = if line.starts_with("-A ") || line.starts_with("-I ") {
                iptables_rule(line)
            } else if line.contains("mark set ") {
                nft_rule(line)
            } else {
                continue;
            };
            let Some((mark, selection)) = parsed else {
                continue;
            };
            let entry = self.marks.entry(mark).or_insert_with(|| Ok(Vec::new()));
            match (entry.as_mut(), selection) {
                (Ok(list), Ok(s)) => list.push(s),
                (Ok(_), Err(why)) => {
                    *entry = Err(format!("{name}:{}: {why}", index + 1));
                }
                // The first unreadable rule is the reason.
                (Err(_), _) => {}
            }
        }
    }

    /// The selections of `mark`: `None` when no rule sets it, `Some(Err)` when a rule
    /// that does cannot be read as VIP:port pairs.
    pub fn mark(&self, mark: u32) -> Option<&Result<Vec<Selection>, String>> {
        self.marks.get(&mark)
    }
}

/// A mark value as iptables and nft write it: decimal or `0x` hex.
fn mark_value(text: &str) -> Option<u32> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// A destination host: an address, or one with its full prefix length.
fn host(text: &str) -> Result<IpAddr, String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("destination {text:?} is not an address"))?;
    let full = if addr.is_ipv4() { "32" } else { "128" };
    match len {
        None => Ok(addr),
        Some(l) if l == full => Ok(addr),
        Some(_) => Err(format!(
            "destination {text} is a network, not one VIP: list its VIP:port pairs instead"
        )),
    }
}

/// `80`, `80:90` (iptables) or `80-90` (nft), comma-separated lists of them.
fn port_ranges(text: &str, range_sep: char) -> Result<Vec<(u16, u16)>, String> {
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{p:?} is not a port"))
    };
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once(range_sep) {
            Some((a, b)) => Ok((port(a)?, port(b)?)),
            None => port(p).map(|p| (p, p)),
        })
        .collect()
}

/// An `iptables-save` rule: `None` if it sets no mark.
fn iptables_rule(line: &str) -> Option<(u32, Result<Selection, String>)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .map(|i| words.get(i + 1))
    };
    let jump = at("-j").flatten()?;
    if *jump != "MARK" {
        return None;
    }
    let mark = match (at("--set-mark").flatten(), at("--set-xmark").flatten()) {
        (Some(v), _) => v.to_string(),
        (None, Some(v)) => v.to_string(),
        _ => return None,
    };
    let (value, mask) = match mark.split_once('/') {
        Some((v, m)) => (v, Some(m)),
        None => (mark.as_str(), None),
    };
    let mark = mark_value(value)?;
    let selection = (|| {
        if mask.is_some_and(|m| mark_value(m) != Some(u32::MAX)) {
            return Err("the mark is set under a partial mask".to_owned());
        }
        let mut addr = None;
        let mut protocol = None;
        let mut ports = None;
        let mut i = 2; // after `-A CHAIN`
        while i < words.len() {
            let (key, value) = (words[i], words.get(i + 1).copied().unwrap_or(""));
            match key {
                "-d" | "--destination" => addr = Some(host(value)?),
                "-p" | "--protocol" => {
                    protocol = Some(match value {
                        "tcp" => "tcp",
                        "udp" => "udp",
                        other => return Err(format!("protocol {other} is neither tcp nor udp")),
                    })
                }
                "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                    ports = Some(port_ranges(value, ':')?)
                }
                // Match modules naming the protocol or the port list: no selection.
                "-m" if ["tcp", "udp", "multiport"].contains(&value) => {}
                "-j" | "--set-mark" | "--set-xmark" => {}
                other => {
                    return Err(format!(
                        "the rule matches on `{other}`, more than a destination, protocol and \
                         port"
                    ));
                }
            }
            i += 2;
        }
        let addr = addr.ok_or("the rule names no destination address (`-d`)")?;
        let protocol = protocol.ok_or("the rule names no protocol (`-p tcp` or `-p udp`)")?;
        let ports = ports.ok_or("the rule names no destination port (`--dport`)")?;
        Ok(Selection {
            addr,
            protocol,
            ports,
        })
    })();
    Some((mark, selection))
}

/// An `nft list ruleset` rule: `None` if it sets no mark.
fn nft_rule(line: &str) -> Option<(u32, Result<Selection, String>)> {
    // `{ 80, 443 }` as one word: the braces' content without spaces.
    let mut words: Vec<String> = Vec::new();
    let mut set: Option<String> = None;
    for w in line.split_whitespace() {
        match (&mut set, w) {
            (None, "{") => set = Some(String::new()),
            (Some(s), "}") => {
                words.push(std::mem::take(s));
                set = None;
            }
            (Some(s), w) => s.push_str(w),
            (None, w) => words.push(w.to_owned()),
        }
    }
    let pos = words
        .windows(2)
        .position(|w| w[0] == "mark" && w[1] == "set")?;
    let mark = mark_value(words.get(pos + 2)?)?;
    let selection = (|| {
        let mut addr = None;
        let mut protocol = None;
        let mut ports = None;
        let mut i = 0;
        while i < words.len() {
            let word = words[i].as_str();
            let next = words.get(i + 1).map(String::as_str).unwrap_or("");
            let value = words.get(i + 2).map(String::as_str).unwrap_or("");
            match (word, next) {
                ("ip" | "ip6", "daddr") => {
                    addr = Some(host(value)?);
                    i += 3;
                }
                ("tcp" | "udp", "dport") => {
                    protocol = Some(if word == "tcp" { "tcp" } else { "udp" });
                    ports = Some(port_ranges(value, '-')?);
                    i += 3;
                }
                ("meta", "mark") | ("mark", "set") if i >= pos.saturating_sub(1) => break,
                ("counter", _) => {
                    // `counter packets N bytes M`
                    i += if next == "packets" { 5 } else { 1 };
                }
                _ => {
                    return Err(format!(
                        "the rule matches on `{word}`, more than a destination, protocol and \
                         port"
                    ));
                }
            }
        }
        let addr = addr.ok_or("the rule names no destination address (`ip daddr`)")?;
        let protocol = protocol.ok_or("the rule names no destination port (`tcp dport`)")?;
        Ok(Selection {
            addr,
            protocol,
            ports: ports.expect("set with the protocol"),
        })
    })();
    Some((mark, selection))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_save_rules_give_their_marks_pairs() {
        let mut rules = MarkRules::default();
        rules.read(
            "*mangle\n\
             :PREROUTING ACCEPT [0:0]\n\
             -A PREROUTING -d 192.0.2.100/32 -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x1/0xffffffff\n\
             -A PREROUTING -d 192.0.2.100/32 -p tcp -m multiport --dports 443,8000:8010 -j MARK --set-mark 1\n\
             -A PREROUTING -s 198.51.100.0/24 -d 192.0.2.101/32 -p tcp --dport 80 -j MARK --set-mark 2\n\
             -A PREROUTING -d 192.0.2.0/24 -p tcp --dport 80 -j MARK --set-mark 3\n\
             -A PREROUTING -d 192.0.2.102 -p udp --dport 53 -j ACCEPT\n\
             COMMIT\n",
            "rules.v4",
        );
        let one = rules.mark(1).unwrap().as_ref().unwrap();
        let members: Vec<String> = one.iter().flat_map(Selection::members).collect();
        assert_eq!(
            members,
            ["192.0.2.100:80", "192.0.2.100:443", "192.0.2.100:8000-8010"]
        );
        assert!(one.iter().all(|s| s.protocol == "tcp"));
        assert_eq!(
            rules.mark(2).unwrap().as_ref().unwrap_err(),
            "rules.v4:5: the rule matches on `-s`, more than a destination, protocol and port"
        );
        assert!(
            rules
                .mark(3)
                .unwrap()
                .as_ref()
                .unwrap_err()
                .contains("is a network")
        );
        assert_eq!(rules.mark(4), None);
    }

    #[test]
    fn nft_rules_give_their_marks_pairs() {
        let mut rules = MarkRules::default();
        rules.read(
            "table ip mangle {\n\
             \tchain prerouting {\n\
             \t\ttype filter hook prerouting priority mangle; policy accept;\n\
             \t\tip daddr 192.0.2.100 tcp dport { 80, 443 } counter packets 0 bytes 0 meta mark set 0x00000001\n\
             \t\tip6 daddr 2001:db8::1 udp dport 5000-5001 mark set 2\n\
             \t\tiifname \"eth0\" ip daddr 192.0.2.100 tcp dport 22 meta mark set 0x3\n\
             \t}\n\
             }\n",
            "ruleset.nft",
        );
        let members = |m| -> Vec<String> {
            rules
                .mark(m)
                .unwrap()
                .as_ref()
                .unwrap()
                .iter()
                .flat_map(Selection::members)
                .collect()
        };
        assert_eq!(members(1), ["192.0.2.100:80", "192.0.2.100:443"]);
        assert_eq!(members(2), ["[2001:db8::1]:5000-5001"]);
        assert!(
            rules
                .mark(3)
                .unwrap()
                .as_ref()
                .unwrap_err()
                .contains("`iifname`"),
            "{:?}",
            rules.mark(3)
        );
    }
}
