//! A real server's checker → its `check = { ... }` inline table: keepalived's
//! TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, PING_CHECK, DNS_CHECK and UDP_CHECK with
//! their options, and SMTP_CHECK as a TCP check on the SMTP port (with a note, as xdp-lb
//! has no SMTP dialogue). Options keepalived allows on the virtual server or the real
//! server as defaults for the checks are [`CheckDefaults`].

use super::parse::Node;
use super::toml_out::V;
use super::translate::{Tx, command};

/// Why a checker xdp-lb does not have is left out (the real server then has no check,
/// which the note says).
pub(super) fn why_no_checker(keyword: &str) -> String {
    let what = match keyword {
        "BFD_CHECK" => "xdp-lb has no BFD: use a TCP_CHECK or PING_CHECK on the real server",
        "FILE_CHECK" => {
            "xdp-lb has no file check: use a MISC_CHECK whose command tests the file \
             (e.g. [\"/usr/bin/test\", \"!\", \"-e\", \"/path\"])"
        }
        "CI-LINUX" => {
            "xdp-lb has no CI-LINUX checker (keepalived's Compaq cluster-infrastructure \
             check, built only with --enable-ci-linux)"
        }
        _ => "xdp-lb has no such checker",
    };
    format!("{what}; this real server gets no check from it")
}

/// UDP_CHECK's reply settings, read together once the block is read.
#[derive(Default)]
struct UdpReply<'n> {
    require: Option<&'n Node>,
    min: Option<&'n Node>,
    max: Option<&'n Node>,
}

/// keepalived's hex string (`read_hex_str`): pairs of hex digits, blanks between
/// octets allowed, a lone digit before a blank or the end is one octet; with
/// `wildcards`, `x`/`X` nibbles match anything. The octets and, if any wildcard, the
/// mask of wildcard bits. `None` if not a hex string.
fn hex_octets(text: &str, wildcards: bool) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let nibble = |c: u8| -> Option<(u8, u8)> {
        match c {
            b'0'..=b'9' => Some((c - b'0', 0)),
            b'a'..=b'f' => Some((c - b'a' + 10, 0)),
            b'A'..=b'F' => Some((c - b'A' + 10, 0)),
            b'x' | b'X' if wildcards => Some((0, 0x0f)),
            _ => None,
        }
    };
    let bytes = text.as_bytes();
    let (mut data, mut mask) = (Vec::new(), Vec::new());
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let (mut value, mut bits) = nibble(bytes[i])?;
        i += 1;
        if i < bytes.len() && bytes[i] != b' ' && bytes[i] != b'\t' {
            let (low, low_bits) = nibble(bytes[i])?;
            i += 1;
            value = value << 4 | low;
            bits = bits << 4 | low_bits;
        }
        data.push(value);
        mask.push(bits);
    }
    if data.is_empty() {
        return None;
    }
    let mask = mask.iter().any(|&m| m != 0).then_some(mask);
    Some((data, mask))
}

/// Octets as xdp-lb's `payload`/`expect` string, if they are text (UTF-8) it can hold.
fn octets_text(octets: &[u8]) -> Option<String> {
    String::from_utf8(octets.to_vec()).ok()
}

impl Tx {
    /// The connection options every keepalived checker takes; `true` if `item` is one.
    fn connect_option(&mut self, item: &Node, t: &mut Vec<(String, V)>) -> bool {
        match item.keyword.as_str() {
            "connect_port" => {
                if let Some(v) = self.int_arg(item, 1, 65535) {
                    put(t, "connect_port", v);
                }
            }
            "connect_ip" => {
                if let Some(w) = self.one_arg(item, "an address") {
                    put(t, "connect_ip", V::str(&w.text));
                }
            }
            "bindto" => {
                if let Some(w) = self.one_arg(item, "an address") {
                    put(t, "source", V::str(&w.text));
                }
            }
            "bind_port" => self.report(
                item,
                "xdp-lb's checks use an ephemeral source port: a fixed one is not translated",
            ),
            "bind_if" => self.report(
                item,
                "xdp-lb binds a check to a source address (`bindto`), not to an interface",
            ),
            "fwmark" => self.report(item, "xdp-lb does not mark check packets (no SO_MARK)"),
            "log_all_failures" => self.report(
                item,
                "xdp-lb logs each change of a real server's state with its reason, not every \
                 failed attempt",
            ),
            _ => return false,
        }
        true
    }

    /// `payload HEX`: the datagram UDP_CHECK sends.
    fn udp_payload(&mut self, item: &Node, t: &mut Vec<(String, V)>) {
        let hex: Vec<&str> = item.arg_texts();
        match hex_octets(&hex.join(" "), false) {
            None => self.report(
                item,
                "not a hex string (keepalived refuses it too: \"Invalid hex string for \
                 UDP_CHECK payload\") and sends an empty datagram",
            ),
            Some((octets, _)) => match octets_text(&octets) {
                Some(text) => put(t, "payload", V::Str(text)),
                None => self.report(
                    item,
                    "xdp-lb's payload is a text string and these octets are not UTF-8 text: \
                     the check would send another datagram, so it sends an empty one; write \
                     a MISC_CHECK that sends these octets if the server needs them",
                ),
            },
        }
    }

    /// `require_reply [HEX]`, `min_reply_length`, `max_reply_length` → `expect`.
    fn udp_reply(&mut self, reply: &UdpReply, t: &mut Vec<(String, V)>) {
        let Some(require) = reply.require else {
            // keepalived reads the lengths only when it compares reply data.
            return;
        };
        let hex = require.arg_texts().join(" ");
        if hex.is_empty() {
            // Any reply will do, whatever its length (keepalived checks the lengths
            // only against reply data).
            put(t, "expect", V::str(""));
            return;
        }
        let Some((mut octets, mask)) = hex_octets(&hex, true) else {
            self.report(
                require,
                "not a hex string (keepalived refuses it too: \"Invalid hex string for \
                 UDP_CHECK reply\"): no reply is required",
            );
            return;
        };
        let mut why = vec![
            "the reply must start with these octets; keepalived also accepted a shorter \
             reply that matches as far as it goes"
                .to_owned(),
        ];
        if let Some(mask) = mask {
            let first = mask
                .iter()
                .position(|&m| m != 0)
                .expect("a mask has a wildcard");
            octets.truncate(first);
            why.push(format!(
                "xdp-lb matches no wildcard (x) nibbles: only the {first} octet(s) before the \
                 first wildcard are compared"
            ));
        }
        let Some(text) = octets_text(&octets) else {
            self.report(
                require,
                "xdp-lb's expect is a text string and these octets are not UTF-8 text: any \
                 reply is accepted instead",
            );
            put(t, "expect", V::str(""));
            return;
        };
        put(t, "expect", V::Str(text));
        let min = reply
            .min
            .and_then(|n| n.arg_texts().first()?.parse::<u32>().ok());
        let max = reply
            .max
            .and_then(|n| n.arg_texts().first()?.parse::<u32>().ok());
        if min.is_some_and(|m| m > 0) {
            why.push("xdp-lb does not check min_reply_length".into());
        }
        why.push(format!(
            "xdp-lb does not fail a reply longer than max_reply_length ({})",
            max.map_or("255 unless set".to_owned(), |m| m.to_string())
        ));
        for node in [reply.min, reply.max].into_iter().flatten() {
            self.report(
                node,
                "xdp-lb does not bound the reply's length (see require_reply)",
            );
        }
        self.report_translated(require, why.join("; "));
    }

    /// A checker block → `check = { ... }`; `None` (noted) if it cannot be one.
    pub(super) fn check(&mut self, node: &Node, defaults: &CheckDefaults) -> Option<V> {
        let kind = match node.keyword.as_str() {
            "TCP_CHECK" | "SMTP_CHECK" => "tcp",
            "HTTP_GET" => "http",
            "SSL_GET" => "https",
            "MISC_CHECK" => "misc",
            "PING_CHECK" => "icmp",
            "UDP_CHECK" => "udp",
            _ => "dns",
        };
        let smtp = node.keyword == "SMTP_CHECK";
        let mut hosts = 0;
        let mut udp = UdpReply::default();
        let http = matches!(kind, "http" | "https");
        let mut t: Vec<(String, V)> = vec![("type".into(), V::str(kind))];
        let mut defaults = defaults.clone();
        let mut urls: Vec<Vec<(String, V)>> = Vec::new();
        for item in node.block.iter().flatten() {
            if !http && item.keyword == "virtualhost" {
                self.report(item, "only HTTP_GET and SSL_GET send a virtual host");
                continue;
            }
            if defaults.take(self, item) || self.connect_option(item, &mut t) {
                continue;
            }
            match (kind, item.keyword.as_str()) {
                (_, "helo_name") if smtp => self.report(
                    item,
                    "xdp-lb has no SMTP dialogue, so no HELO is sent (see SMTP_CHECK)",
                ),
                (_, "host") if smtp => {
                    hosts += 1;
                    if hosts > 1 {
                        self.report(
                            item,
                            "xdp-lb runs one check per real server: only the first host is \
                             checked; keepalived also required this one to answer (write a \
                             MISC_CHECK that tests every host if the real server depends on them)",
                        );
                        continue;
                    }
                    // The host's options override the checker's, as in keepalived.
                    for option in item.block.iter().flatten() {
                        if !defaults.take(self, option) && !self.connect_option(option, &mut t) {
                            self.unhandled(option);
                        }
                    }
                }
                ("udp", "payload") => self.udp_payload(item, &mut t),
                ("udp", "require_reply") => udp.require = Some(item),
                ("udp", "min_reply_length") => udp.min = Some(item),
                ("udp", "max_reply_length") => udp.max = Some(item),
                (_, "url") if http => urls.extend(self.url(item)),
                ("misc", "misc_path") => {
                    if let Some(w) = self.one_arg(item, "a command") {
                        match command(&w.text) {
                            Ok(argv) => put(&mut t, "command", argv),
                            Err(why) => self.report(item, &why),
                        }
                    }
                }
                ("misc", "misc_timeout") => {
                    if let Some(v) = self.secs_arg(item) {
                        put(&mut t, "timeout", v);
                    }
                }
                ("misc", "misc_dynamic") => {
                    if self.flag(item) {
                        put(&mut t, "dynamic", V::Bool(true));
                    }
                }
                ("misc", "user") => match item.arg_texts().as_slice() {
                    [user] => put(&mut t, "user", V::str(*user)),
                    [user, _] => {
                        put(&mut t, "user", V::str(*user));
                        self.report(
                            item,
                            "the group is not translated: xdp-lb uses the user's primary group",
                        );
                    }
                    _ => self.report(item, "expected `user NAME [GROUP]`"),
                },
                ("dns", "type") => {
                    if let Some(w) = self.one_arg(item, "a record type") {
                        put(&mut t, "qtype", V::str(&w.text));
                    }
                }
                ("dns", "name") => {
                    if let Some(w) = self.one_arg(item, "a name") {
                        put(&mut t, "name", V::str(&w.text));
                    }
                }
                _ => self.unhandled(item),
            }
        }
        if kind == "udp" {
            self.udp_reply(&udp, &mut t);
        }
        if smtp {
            self.report_translated(
                node,
                "as a TCP connect check: xdp-lb has no SMTP dialogue, so the server's 220 \
                 greeting, the HELO/250 exchange and QUIT that keepalived checks are not \
                 performed; a server that accepts connections but answers SMTP wrongly stays up",
            );
        }
        if kind == "misc" && !t.iter().any(|(k, _)| k == "command") {
            self.report(node, "a MISC_CHECK without misc_path cannot run; left out");
            return None;
        }
        if http {
            if urls.is_empty() {
                self.report(
                    node,
                    "it has no url with a path, and keepalived ignores such a checker (\"has \
                     no urls specified - ignoring\"): the real server gets no check from it",
                );
                return None;
            }
            // The virtual server's, the real server's or the checker's; a url's own one
            // stays with the url, as keepalived prefers it for that url.
            if let Some(host) = defaults.virtualhost.take() {
                put(&mut t, "virtualhost", V::Str(host));
            }
            match <[_; 1]>::try_from(urls) {
                // One url: the short form, `path`, `status`, `digest` on the check.
                Ok([url]) if !url.iter().any(|(k, _)| k == "virtualhost") => {
                    for (k, v) in url {
                        put(&mut t, &k, v);
                    }
                }
                Ok([url]) => put(&mut t, "urls", V::Arr(vec![V::Table(url)])),
                Err(urls) => put(
                    &mut t,
                    "urls",
                    V::Arr(urls.into_iter().map(V::Table).collect()),
                ),
            }
        }
        for (k, v) in defaults.entries {
            if !t.iter().any(|(have, _)| *have == k) {
                t.push((k, v));
            }
        }
        Some(V::Table(t))
    }

    /// A `url { path; status_code; digest; virtualhost }` block → one entry of `urls`;
    /// `None` (noted) without a path, which keepalived ignores.
    fn url(&mut self, node: &Node) -> Option<Vec<(String, V)>> {
        let block = self.block(node)?;
        let mut t: Vec<(String, V)> = Vec::new();
        let mut status: Vec<(i64, i64)> = Vec::new();
        for item in block {
            match item.keyword.as_str() {
                "path" => {
                    if let Some(w) = self.one_arg(item, "a path") {
                        put(&mut t, "path", V::str(&w.text));
                    }
                }
                "status_code" => {
                    let mut ok = !item.args.is_empty();
                    for part in item.args.iter().flat_map(|w| w.text.split(',')) {
                        let range = match part.split_once('-') {
                            Some((a, b)) => a.parse::<i64>().ok().zip(b.parse::<i64>().ok()),
                            None => part.parse::<i64>().ok().map(|n| (n, n)),
                        };
                        match range {
                            Some((a, b)) if 100 <= a && a <= b && b <= 999 => {
                                if !status.contains(&(a, b)) {
                                    status.push((a, b));
                                }
                            }
                            _ => ok = false,
                        }
                    }
                    if !ok {
                        self.report(
                            item,
                            "expected status codes such as 200, 200-299 or 200,301",
                        );
                    }
                }
                "digest" => {
                    let Some(w) = self.one_arg(item, "an md5 digest") else {
                        continue;
                    };
                    if w.text.len() == 32 && w.text.chars().all(|c| c.is_ascii_hexdigit()) {
                        put(
                            &mut t,
                            "digest",
                            V::Str(format!("md5:{}", w.text.to_ascii_lowercase())),
                        );
                    } else {
                        self.report(
                            item,
                            "not an md5 digest of 32 hex digits as genhash prints it",
                        );
                    }
                }
                "virtualhost" => {
                    if let Some(w) = self.one_arg(item, "a host name") {
                        put(&mut t, "virtualhost", V::str(&w.text));
                    }
                }
                "username" | "password" => self.report(
                    item,
                    "xdp-lb's http check sends no credentials (no Authorization header): a \
                     server that demands them answers 401, which fails the check unless 401 is \
                     an accepted status_code",
                ),
                "tls_compliant" => self.report(
                    item,
                    "xdp-lb's https check has no such url option; it ends each TLS session its \
                     own way",
                ),
                _ => self.unhandled(item),
            }
        }
        if !t.iter().any(|(k, _)| k == "path") {
            self.report(
                node,
                "this url has no path, and keepalived ignores such a url (\"url has no path - \
                 ignoring\"); so does the import",
            );
            return None;
        }
        // No status_code: xdp-lb's default is keepalived's, any 2xx.
        if !status.is_empty() {
            let codes = status
                .into_iter()
                .map(|(a, b)| match a == b {
                    true => V::Int(a),
                    false => V::Str(format!("{a}-{b}")),
                })
                .collect();
            put(&mut t, "status", V::Arr(codes));
        }
        // The order xdp-lb's documentation uses.
        let order = ["path", "status", "digest", "virtualhost"];
        t.sort_by_key(|(k, _)| order.iter().position(|o| o == k));
        Some(t)
    }
}

/// Sets `key` in an inline table, replacing an earlier value.
pub(super) fn put(t: &mut Vec<(String, V)>, key: &str, v: V) {
    if let Some(slot) = t.iter_mut().find(|(k, _)| k == key) {
        slot.1 = v;
    } else {
        t.push((key.to_owned(), v));
    }
}

/// Check settings keepalived allows on the virtual server, the real server or the
/// checker itself, the innermost winning.
#[derive(Clone, Default)]
pub(super) struct CheckDefaults {
    entries: Vec<(String, V)>,
    virtualhost: Option<String>,
}

impl CheckDefaults {
    /// Takes `item` if it is one of these settings (reporting a bad value).
    pub(super) fn take(&mut self, tx: &mut Tx, item: &Node) -> bool {
        let (ours, value) = match item.keyword.as_str() {
            "delay_loop" => ("interval", tx.secs_arg(item)),
            "connect_timeout" => ("connect_timeout", tx.secs_arg(item)),
            "delay_before_retry" => ("delay_before_retry", tx.secs_arg(item)),
            "warmup" => ("warmup", tx.secs_arg(item)),
            "retry" | "nb_get_retry" => ("retry", tx.int_arg(item, 0, 1000)),
            "alpha" => ("alpha", tx.flag(item).then_some(V::Bool(true))),
            "virtualhost" if item.block.is_none() && item.args.len() == 1 => {
                // Only http checks take it; kept aside until the check type is known.
                self.virtualhost = Some(item.args[0].text.clone());
                return true;
            }
            _ => return false,
        };
        if let Some(v) = value {
            put(&mut self.entries, ours, v);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_strings_read_as_keepalived_reads_them() {
        assert_eq!(
            hex_octets("0a0B ff", false),
            Some((vec![0x0a, 0x0b, 0xff], None))
        );
        // A lone digit before a blank is one octet.
        assert_eq!(hex_octets("1 23", false), Some((vec![0x01, 0x23], None)));
        assert_eq!(hex_octets("zz", false), None);
        assert_eq!(hex_octets("", false), None);
        assert_eq!(hex_octets("4x", false), None);
        assert_eq!(
            hex_octets("4x41", true),
            Some((vec![0x40, 0x41], Some(vec![0x0f, 0x00])))
        );
    }
}
