//! keepalived's statements → xdp-lb's tables. Every statement is either translated or
//! reported as a [`Note`] with its line; none is dropped silently (except `state`,
//! which xdp-lb does not need: priorities decide).

use std::net::IpAddr;

use super::checks::{self, CheckDefaults};
use super::fwmark::MarkRules;
use super::parse::{Loc, Node, Word};
use super::toml_out::{Section, V, key};
use super::{NoteKind, RawNote};

/// Shell words that are no program: keepalived looks them up on PATH, does not find
/// them, and refuses the script ("Cannot find script [[ in path").
const SHELL_WORDS: &[&str] = &[
    "[[", "]]", "!", "{", "}", "(", ")", "if", "then", "else", "fi", "for", "while", "do", "done",
    "case", "esac", "function", "time",
];

#[derive(Default)]
pub(super) struct Tx {
    pub(super) notes: Vec<RawNote>,
    pub(super) router_id: Option<(String, Loc)>,
    vrrp_version: Option<(i64, Loc)>,
    /// global_defs' `vrrp_garp_*` and advert-answer switches: (key, value, line)
    /// defaults for every instance that does not set the key.
    instance_defaults: Vec<(String, V, Loc)>,
    pub(super) scripts: Vec<Section>,
    script_names: Vec<String>,
    /// `[bfd.NAME]` tables from `bfd_instance` blocks.
    pub(super) bfd: Vec<Section>,
    /// Their names and weights.
    bfd_weights: Vec<(String, i64)>,
    /// (name, interface, table).
    pub(super) instances: Vec<(String, String, Section)>,
    pub(super) groups: Vec<Section>,
    /// `virtual_server_group` blocks, by name, read before the virtual servers. One no
    /// virtual server uses is left out without a note: keepalived ignores it too.
    vs_groups: Vec<(String, Node)>,
    /// `[virtual_server_group.NAME]` tables written.
    pub(super) server_groups: Vec<Section>,
    /// What `--fwmark-rules` files say marks select.
    pub(super) marks: MarkRules,
    /// `[[virtual_server]]` tables, each followed by its real servers.
    pub(super) services: Vec<Section>,
    /// `[sync]`, from `lvs_sync_daemon` or an instance's `lvs_sync_daemon_interface`.
    pub(super) sync: Option<Section>,
}

/// What a virtual server serves, from its header.
enum Head {
    /// `virtual_server IP PORT`.
    Single(IpAddr, u16),
    /// `virtual_server group NAME`: the group's entries.
    Group(String, Vec<Node>, Loc),
    /// `virtual_server fwmark N`.
    Fwmark(u32),
}

/// keepalived's seconds (`3`, `0.1`, `1.5`) as an xdp-lb duration (`"3s"`, `"100ms"`);
/// `None` if not a non-negative number or finer than a millisecond.
pub(super) fn seconds(text: &str) -> Option<String> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac = frac.trim_end_matches('0');
    if frac.len() > 3 {
        return None;
    }
    let millis: u64 = format!("{frac:0<3}").parse().ok()?;
    let total = whole.checked_mul(1000)?.checked_add(millis)?;
    Some(if total % 1000 == 0 {
        format!("{}s", total / 1000)
    } else {
        format!("{total}ms")
    })
}

/// A command string split into argv as keepalived splits it (it runs scripts without
/// a shell): words are separated by blanks, and single or double quotes group a word
/// (the quotes themselves removed). `&&`, `||`, `;` and `|` are plain words, as they
/// are to keepalived: a `/bin/sh -c 'test' && exit 1` script runs `test` alone, with
/// the rest as `$0`, `$1`, ... of the shell, and that is what keepalived reports.
fn split_argv(text: &str) -> Vec<String> {
    let mut argv = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    argv.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        argv.push(word);
    }
    argv
}

/// A command string as xdp-lb's argv, with keepalived's meaning (see [`split_argv`]);
/// `Err` with keepalived's reason when keepalived would refuse to run it.
pub(super) fn command(text: &str) -> Result<V, String> {
    let argv = split_argv(text);
    match argv.first() {
        None => Err("the command is empty".into()),
        Some(first) if SHELL_WORDS.contains(&first.as_str()) => Err(format!(
            "keepalived refuses this script too (\"Cannot find script {first} in path\": \
             `{first}` is shell syntax, not a program; keepalived runs scripts without a shell): \
             write it as a command, e.g. [\"/bin/sh\", \"-c\", \"...\"], knowing keepalived never ran it"
        )),
        Some(program) => match crate::config::program_problem(program) {
            // keepalived will not run it either: it disables a script it cannot find
            // or (with script security) one others may change.
            Some(problem) => Err(format!(
                "{problem} on this host; keepalived disables such a script too, so it is left \
                 out: install it and add it by hand"
            )),
            None => Ok(V::strs(argv)),
        },
    }
}

/// Why a keyword with no translation is left out, for the ones users are likely to
/// have; a generic reason otherwise.
pub(super) fn why_not(keyword: &str) -> String {
    let why = match keyword {
        "include" => {
            "keepalived reads `include PATTERN` only with exactly one pattern; it takes this line \
             for an unknown keyword, and so does the import"
        }
        "static_ipaddress" | "static_routes" | "static_rules" | "virtual_routes"
        | "virtual_rules" => {
            "xdp-lb does not manage static or per-instance addresses, routes or rules: \
             configure them with the OS or from notify commands"
        }
        "vrrp_track_process" | "track_process" | "vrrp_track_file" | "track_file" => {
            "xdp-lb tracks scripts, interfaces and virtual servers only: use a vrrp_script"
        }
        "notification_email"
        | "notification_email_from"
        | "smtp_server"
        | "smtp_connect_timeout"
        | "smtp_alert"
        | "smtp_helo" => "xdp-lb sends no mail: use notify commands",
        "enable_script_security" | "script_user" => {
            "xdp-lb runs commands as its own user; set `user` per script where needed"
        }
        "persistence_engine" => {
            "xdp-lb has no persistence engines (SIP Call-ID affinity): persistence is by \
             client address, as IPVS's default"
        }
        "persistence_timeout" | "persistence_granularity" | "lvs_persistence_timeout" => {
            "expected a whole number of seconds (timeout) or an IPv4 netmask / prefix length \
             (granularity)"
        }
        "notify_up" | "notify_down" => {
            "xdp-lb runs no command per real server: it logs every transition with its reason \
             and serves state on the status API"
        }
        "use_vmac" | "vmac_xmit_base" => "xdp-lb has no VRRP virtual MAC (vmac) interfaces",
        "virtual_ipaddress_excluded" => {
            "xdp-lb has no excluded addresses: move them into virtual_ipaddress (another \
             instance if there are many) or add them from notify commands"
        }
        "sorry_server_inhibit" | "sorry_server_lvs_method" => {
            "the sorry server takes new connections with the service's forwarding method"
        }
        "uthreshold" | "lthreshold" => "xdp-lb has no per-server connection limits",
        "ha_suspend" => "xdp-lb checks every real server all the time",
        "static_route" => {
            "keepalived does not know `static_route` either (it is `static_routes`: it logs \
             \"Unknown keyword\" and ignores the block); xdp-lb manages no routes"
        }
        "lvs_sync_daemon_interface" | "lvs_sync_daemon" => {
            "expected `lvs_sync_daemon INTERFACE VRRP_INSTANCE [id N] [maxlen N] [port N] \
             [ttl N] [group ADDRESS]` (global_defs) or `lvs_sync_daemon_interface INTERFACE` \
             (in a vrrp_instance)"
        }
        "failover_threshold" | "failover_up" | "failover_down" | "backup_real_server" => {
            "xdp-lb has no failover (backup) pool: list the backup servers as real servers \
             with weight 0, or use sorry_server"
        }
        "net_namespace" => {
            "xdp-lb runs in the network namespace it is started in: start it with \
             `ip netns exec NAME`"
        }
        "nat_mask" => {
            "xdp-lb's NAT rewrites the destination of the virtual server's packets only; \
             it takes no netmask"
        }
        "vrrp_mcast_group4" | "vrrp_mcast_group6" => {
            "xdp-lb sends VRRP to the standard groups (224.0.0.18, ff02::12): use unicast_peer \
             for another path"
        }
        _ => "xdp-lb has no equivalent",
    };
    why.to_owned()
}

impl Tx {
    /// `node` is left out (with its block), for `why`.
    pub(super) fn report(&mut self, node: &Node, why: impl Into<String>) {
        self.report_at(node.at, node.display(), why);
    }

    pub(super) fn report_at(
        &mut self,
        at: Loc,
        setting: impl Into<String>,
        why: impl Into<String>,
    ) {
        self.notes.push(RawNote {
            at,
            setting: setting.into(),
            why: why.into(),
            kind: NoteKind::NotTranslated,
        });
    }

    /// `node` is in the output, with what differs from (or what keepalived itself does
    /// to) it said in `why`.
    pub(super) fn report_translated(&mut self, node: &Node, why: impl Into<String>) {
        self.notes.push(RawNote {
            at: node.at,
            setting: node.display(),
            why: why.into(),
            kind: NoteKind::Translated,
        });
    }

    pub(super) fn unhandled(&mut self, node: &Node) {
        let why = why_not(&node.keyword);
        self.report(node, why);
    }

    /// The single argument of `node`, reporting any other shape.
    pub(super) fn one_arg<'n>(&mut self, node: &'n Node, form: &str) -> Option<&'n Word> {
        if node.args.len() != 1 || node.block.is_some() {
            self.report(node, format!("expected one value: {form}"));
            return None;
        }
        Some(&node.args[0])
    }

    pub(super) fn int_arg(&mut self, node: &Node, lo: i64, hi: i64) -> Option<V> {
        let word = self.one_arg(node, &format!("an integer from {lo} to {hi}"))?;
        match word.text.parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) => Some(V::Int(n)),
            _ => {
                self.report(node, format!("expected an integer from {lo} to {hi}"));
                None
            }
        }
    }

    pub(super) fn secs_arg(&mut self, node: &Node) -> Option<V> {
        let word = self.one_arg(node, "a number of seconds such as 3 or 0.5")?;
        match seconds(&word.text) {
            Some(d) => Some(V::Str(d)),
            None => {
                self.report(
                    node,
                    "expected a number of seconds such as 3 or 0.5 (millisecond precision)",
                );
                None
            }
        }
    }

    pub(super) fn flag(&mut self, node: &Node) -> bool {
        if !node.args.is_empty() || node.block.is_some() {
            self.report(node, "expected no value after this keyword");
            return false;
        }
        true
    }

    /// keepalived's `<BOOL>` after a keyword: none means true, else on|off|true|false|yes|no.
    fn bool_arg(&mut self, node: &Node) -> Option<bool> {
        if node.args.is_empty() && node.block.is_none() {
            return Some(true);
        }
        let word = self.one_arg(node, "on, off, true, false, yes or no")?;
        match word.text.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" => Some(true),
            "off" | "false" | "no" => Some(false),
            _ => {
                self.report(node, "expected on, off, true, false, yes or no");
                None
            }
        }
    }

    /// A global default for every instance that does not set `key` itself. `derived`
    /// ones (keepalived's lower-priority GARP settings follow the master ones unless
    /// given) never replace an explicit one, whatever the order in global_defs.
    fn instance_default(&mut self, key: &str, v: V, line: Loc, derived: bool) {
        let existing = self.instance_defaults.iter().position(|(k, _, _)| k == key);
        match existing {
            Some(_) if derived => {}
            Some(i) => self.instance_defaults[i] = (key.to_owned(), v, line),
            None => self.instance_defaults.push((key.to_owned(), v, line)),
        }
    }

    /// `KEYWORD NAME { ... }`: the name and the block, or `None` (reported).
    fn named_block<'n>(&mut self, node: &'n Node) -> Option<(String, &'n [Node])> {
        let Some(name) = node.args.first().map(|w| w.text.clone()) else {
            self.report(node, format!("a {} needs a name", node.keyword));
            return None;
        };
        Some((name, self.block(node)?))
    }

    pub(super) fn block<'n>(&mut self, node: &'n Node) -> Option<&'n [Node]> {
        match &node.block {
            Some(block) => Some(block),
            None => {
                self.report(node, "expected a { } block after it");
                None
            }
        }
    }

    /// A notify-style command: `notify_master /path/script` or `"/path/script args"`;
    /// words after the script are keepalived's user and group.
    fn notify_command(&mut self, node: &Node) -> Option<V> {
        if node.block.is_some() || node.args.is_empty() {
            self.report(node, "expected a script path or a quoted command");
            return None;
        }
        if node.args.len() > 1 {
            self.report_translated(
                node,
                "xdp-lb runs notify commands as its own user: the user/group after the \
                 command is dropped",
            );
        }
        match command(&node.args[0].text) {
            Ok(v) => Some(v),
            Err(why) => {
                self.report(node, &why);
                None
            }
        }
    }

    // ----- global_defs -----

    pub(super) fn global_defs(&mut self, node: &Node) {
        let Some(block) = self.block(node) else {
            return;
        };
        for item in block {
            match item.keyword.as_str() {
                // `lvs_id` is what keepalived called router_id before 1.2.
                "router_id" | "lvs_id" => {
                    if let Some(w) = self.one_arg(item, "a name") {
                        self.router_id = Some((w.text.clone(), item.at));
                    }
                }
                "vrrp_version" => {
                    if let Some(V::Int(n)) = self.int_arg(item, 2, 3) {
                        self.vrrp_version = Some((n, item.at));
                    }
                }
                "vrrp_garp_master_delay" => {
                    if let Some(v) = self.secs_arg(item) {
                        self.instance_default("garp_master_delay", v.clone(), item.at, false);
                        self.instance_default("garp_lower_prio_delay", v, item.at, true);
                    }
                }
                "vrrp_garp_master_repeat" => {
                    if let Some(v) = self.int_arg(item, 0, 1000) {
                        self.instance_default("garp_master_repeat", v.clone(), item.at, false);
                        self.instance_default("garp_lower_prio_repeat", v, item.at, true);
                    }
                }
                "vrrp_garp_master_refresh" => {
                    if let Some(v) = self.secs_arg(item) {
                        self.instance_default("garp_master_refresh", v, item.at, false);
                    }
                }
                "vrrp_garp_master_refresh_repeat" => {
                    if let Some(v) = self.int_arg(item, 1, 1000) {
                        self.instance_default("garp_master_refresh_repeat", v, item.at, false);
                    }
                }
                "vrrp_garp_lower_prio_delay" => {
                    if let Some(v) = self.secs_arg(item) {
                        self.instance_default("garp_lower_prio_delay", v, item.at, false);
                    }
                }
                "vrrp_garp_lower_prio_repeat" => {
                    if let Some(v) = self.int_arg(item, 0, 1000) {
                        self.instance_default("garp_lower_prio_repeat", v, item.at, false);
                    }
                }
                "vrrp_lower_prio_no_advert" | "vrrp_higher_prio_send_advert" => {
                    if let Some(on) = self.bool_arg(item) {
                        let key = &item.keyword["vrrp_".len()..];
                        self.instance_default(key, V::Bool(on), item.at, false);
                    }
                }
                // One spacing for both: xdp-lb announces an instance's VIPs together.
                "vrrp_garp_interval" | "vrrp_gna_interval" => {
                    if let Some(v) = self.secs_arg(item) {
                        self.instance_default("garp_interval", v, item.at, false);
                    }
                }
                "lvs_sync_daemon" => self.lvs_sync_daemon(item),
                _ => self.unhandled(item),
            }
        }
    }

    // ----- lvs_sync_daemon -----

    /// `lvs_sync_daemon INTERFACE VRRP_INSTANCE [id N] [maxlen N] [port N] [ttl N]
    /// [group ADDRESS]` in global_defs.
    fn lvs_sync_daemon(&mut self, node: &Node) {
        let words: Vec<&str> = node.args.iter().map(|w| w.text.as_str()).collect();
        if words.len() < 2 || node.block.is_some() {
            self.unhandled(node);
            return;
        }
        let (mut port, mut group) = (None, None);
        let mut dropped = Vec::new();
        let mut rest = words[2..].chunks(2);
        for pair in rest.by_ref() {
            match pair {
                ["port", p] => match p.parse::<u16>() {
                    Ok(n) if n > 0 => port = Some(i64::from(n)),
                    _ => return self.report(node, format!("`port {p}`: expected 1 to 65535")),
                },
                ["group", g] => match g.parse::<std::net::Ipv4Addr>() {
                    Ok(a) if a.is_multicast() => group = Some(a.to_string()),
                    _ => {
                        return self.report(
                            node,
                            format!("`group {g}`: xdp-lb syncs over an IPv4 multicast group"),
                        );
                    }
                },
                [k @ ("id" | "maxlen" | "ttl"), _] => dropped.push(*k),
                _ => return self.unhandled(node),
            }
        }
        let why = dropped
            .iter()
            .map(|k| match *k {
                "id" => {
                    "`id` (xdp-lb refuses a peer whose virtual and real servers differ \
                         instead of matching a sync id)"
                }
                "maxlen" => "`maxlen` (messages are at most 1,360 bytes)",
                _ => "`ttl` (always 1: the peers share the segment)",
            })
            .collect::<Vec<_>>();
        let (iface, instance) = (words[0].to_owned(), words[1].to_owned());
        self.sync_section(node, &iface, &instance, port, group);
        if !why.is_empty() {
            self.report_translated(node, format!("not carried over: {}", why.join("; ")));
        }
    }

    /// The `[sync]` table: keepalived's meaning (the instance's MASTER sends over
    /// `interface`, multicast to 224.0.0.81:8848 unless told otherwise), plus the
    /// shared secret xdp-lb requires, which keepalived has no setting for.
    fn sync_section(
        &mut self,
        node: &Node,
        iface: &str,
        instance: &str,
        port: Option<i64>,
        group: Option<String>,
    ) {
        if self.sync.is_some() {
            self.report(
                node,
                "a second sync daemon: xdp-lb syncs one VRRP instance's MASTER",
            );
            return;
        }
        let mut s = Section::new("[sync]".into(), node.at);
        s.set("instance", V::str(instance), node.at);
        s.set("interface", V::str(iface), node.at);
        s.set(
            "group",
            V::str(group.unwrap_or_else(|| "224.0.0.81".into())),
            node.at,
        );
        if let Some(p) = port {
            s.set("port", V::Int(p), node.at);
        }
        s.set("secret_file", V::str("/etc/xdp-lb/sync.key"), node.at);
        self.sync = Some(s);
        self.report_translated(
            node,
            "xdp-lb signs sync messages (HMAC-SHA256) and keepalived has no key to carry \
             over: put the same secret of 16 or more bytes in /etc/xdp-lb/sync.key on every \
             node (e.g. `openssl rand -hex 32`), or set `peers` for unicast; only NAT \
             connections are synced (DR and TUN connections need no state on the LB)",
        );
    }

    // ----- vrrp_script -----

    pub(super) fn vrrp_script(&mut self, node: &Node) {
        let Some(name) = node.args.first().map(|w| w.text.clone()) else {
            self.report(node, "a vrrp_script needs a name");
            return;
        };
        if node.args.len() > 1 {
            self.report(node, "expected `vrrp_script NAME {`");
            return;
        }
        let Some(block) = self.block(node) else {
            return;
        };
        let mut section = Section::new(format!("[script.{}]", key(&name)), node.at);
        for item in block {
            match item.keyword.as_str() {
                "script" => {
                    if item.args.is_empty() || item.block.is_some() {
                        self.report(item, "expected a command");
                        continue;
                    }
                    let text = item
                        .args
                        .iter()
                        .map(|w| w.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" ");
                    match command(&text) {
                        Ok(argv) => section.set("command", argv, item.at),
                        Err(why) => self.report(item, &why),
                    }
                }
                "interval" | "timeout" => {
                    if let Some(v) = self.secs_arg(item) {
                        section.set(&item.keyword, v, item.at);
                    }
                }
                "weight" => {
                    let args = item.arg_texts();
                    if args.len() == 2 && args[1] == "reverse" {
                        self.report(
                            item,
                            "xdp-lb has no `reverse` (a negative weight applies while the \
                             script fails, a positive one while it succeeds): the script is \
                             left out rather than run with another meaning",
                        );
                        return;
                    }
                    if let Some(v) = self.int_arg(item, -254, 254) {
                        section.set("weight", v, item.at);
                    }
                }
                "rise" | "fall" => {
                    if let Some(v) = self.int_arg(item, 1, 1000) {
                        section.set(&item.keyword, v, item.at);
                    }
                }
                "user" => match item.arg_texts().as_slice() {
                    [user] => section.set("user", V::str(*user), item.at),
                    [user, _group] => {
                        section.set("user", V::str(*user), item.at);
                        self.report_translated(
                            item,
                            "the group is not translated: xdp-lb uses the user's primary group",
                        );
                    }
                    _ => self.report(item, "expected `user NAME [GROUP]`"),
                },
                _ => self.unhandled(item),
            }
        }
        if !section.has("command") {
            self.report(
                node,
                "it has no `script` xdp-lb can run, so instances tracking it will not",
            );
            return;
        }
        self.script_names.push(name);
        self.scripts.push(section);
    }

    // ----- bfd_instance -----

    /// keepalived runs BFD itself; xdp-lb asks FRR's bfdd for the same session, with
    /// keepalived's defaults (10 ms intervals, multiplier 5) written out.
    pub(super) fn bfd_instance(&mut self, node: &Node) {
        let Some((name, block)) = self.named_block(node) else {
            return;
        };
        let mut section = Section::new(format!("[bfd.{}]", key(&name)), node.at);
        section.set("min_rx", V::str("10ms"), node.at);
        section.set("min_tx", V::str("10ms"), node.at);
        section.set("multiplier", V::Int(5), node.at);
        for item in block {
            match item.keyword.as_str() {
                "neighbor_ip" | "neighbour_ip" | "source_ip" => {
                    let Some(word) = self.one_arg(item, "an IP address") else {
                        continue;
                    };
                    match word.text.parse::<std::net::IpAddr>() {
                        Ok(ip) => {
                            let key = if item.keyword == "source_ip" {
                                "local"
                            } else {
                                "peer"
                            };
                            section.set(key, V::str(ip.to_string()), item.at);
                        }
                        Err(_) => self.report(item, "expected an IP address"),
                    }
                }
                "min_rx" | "min_tx" => {
                    let Some(word) = self.one_arg(item, "milliseconds such as 10") else {
                        continue;
                    };
                    match word.text.parse::<u64>() {
                        Ok(ms) if (10..=60_000).contains(&ms) => {
                            section.set(&item.keyword, V::str(format!("{ms}ms")), item.at);
                        }
                        _ => self.report(
                            item,
                            "bfdd takes whole milliseconds from 10 to 60000: keepalived's \
                             default (10 ms) is kept",
                        ),
                    }
                }
                "multiplier" => {
                    if let Some(v) = self.int_arg(item, 2, 255) {
                        section.set("multiplier", v, item.at);
                    }
                }
                "idle_tx" | "passive" | "ttl" | "hoplimit" | "max_hops" => self.report(
                    item,
                    "bfdd's session keeps its own default for this: set it in bfdd's \
                     configuration if it matters",
                ),
                "weight" => {
                    let args = item.arg_texts();
                    if args.len() == 2 && args[1] == "reverse" {
                        self.report(
                            item,
                            "xdp-lb has no `reverse` (a negative weight applies while the \
                             session is down, a positive one while it is up): the weight is \
                             left at 0 (FAULT while down)",
                        );
                    } else if let Some(v) = self.int_arg(item, -253, 253) {
                        section.set("weight", v, item.at);
                    }
                }
                "vrrp" | "checker" => {}
                _ => self.unhandled(item),
            }
        }
        if !section.has("peer") {
            self.report(
                node,
                "it has no `neighbor_ip`, so there is no session to ask bfdd for",
            );
            return;
        }
        let weight = match section.get("weight") {
            Some(V::Int(w)) => *w,
            _ => 0,
        };
        self.bfd_weights.push((name, weight));
        self.bfd.push(section);
    }

    // ----- vrrp_instance -----

    pub(super) fn vrrp_instance(&mut self, node: &Node) {
        let Some((name, block)) = self.named_block(node) else {
            return;
        };
        let mut s = Section::new(format!("[vrrp.{}]", key(&name)), node.at);
        let mut interface: Option<String> = None;
        let mut version = self.vrrp_version;
        let mut auth: Option<(String, Loc)> = None;
        let mut auth_line = Loc::NONE;
        let mut vips: Vec<(String, IpAddr, Loc)> = Vec::new();
        for item in block {
            match item.keyword.as_str() {
                // Priorities decide who is MASTER, as in keepalived.
                "state" => {}
                // keepalived's default.
                "preempt" => {}
                "interface" => {
                    if let Some(w) = self.one_arg(item, "an interface name") {
                        interface = Some(w.text.clone());
                        s.set("interface", V::str(&w.text), item.at);
                    }
                }
                "virtual_router_id" => {
                    if let Some(v) = self.int_arg(item, 1, 255) {
                        s.set("virtual_router_id", v, item.at);
                    }
                }
                // keepalived before 1.2.20: the instance that carries it syncs.
                "lvs_sync_daemon_interface" => {
                    if let Some(w) = self.one_arg(item, "an interface name") {
                        let iface = w.text.clone();
                        self.sync_section(item, &iface, &name, None, None);
                    }
                }
                "priority" => {
                    if let Some(v) = self.int_arg(item, 1, 255) {
                        s.set("priority", v, item.at);
                    }
                }
                "version" => {
                    if let Some(V::Int(n)) = self.int_arg(item, 2, 3) {
                        version = Some((n, item.at));
                    }
                }
                "advert_int" => {
                    if let Some(v) = self.secs_arg(item) {
                        s.set("advert_interval", v, item.at);
                    }
                }
                "nopreempt" => {
                    if self.flag(item) {
                        s.set("preempt", V::Bool(false), item.at);
                    }
                }
                "old_unicast_checksum" if item.arg_texts() == ["never"] => self.report(
                    item,
                    "xdp-lb accepts the old checksum form and answers in kind once a peer \
                     uses it; it cannot be refused",
                ),
                "old_unicast_checksum" => {
                    if self.flag(item) {
                        s.set("old_unicast_checksum", V::Bool(true), item.at);
                    }
                }
                "preempt_delay" => {
                    if let Some(v) = self.secs_arg(item) {
                        s.set("preempt_delay", v, item.at);
                    }
                }
                "authentication" => {
                    auth_line = item.at;
                    auth = self.authentication(item).or(auth);
                }
                "virtual_ipaddress" => self.virtual_ipaddress(item, &mut vips),
                "unicast_src_ip" | "mcast_src_ip" => {
                    if let Some(w) = self.one_arg(item, "an address") {
                        s.set(&item.keyword, V::str(&w.text), item.at);
                    }
                }
                "unicast_peer" => {
                    let Some(block) = self.block(item) else {
                        continue;
                    };
                    let mut peers = Vec::new();
                    for peer in block {
                        if !peer.args.is_empty() || peer.block.is_some() {
                            self.report_translated(
                                peer,
                                "only the address is translated (xdp-lb has no per-peer TTL limits)",
                            );
                        }
                        peers.push(V::str(&peer.keyword));
                    }
                    s.set("unicast_peers", V::Arr(peers), item.at);
                }
                "track_script" => {
                    let names = self.track_scripts(item);
                    s.set("track_scripts", V::strs(names), item.at);
                }
                "track_bfd" => {
                    let names = self.track_bfd(item);
                    s.set("track_bfd", V::strs(names), item.at);
                }
                "track_interface" => {
                    let list = self.track_interfaces(item);
                    s.set("track_interfaces", V::Arr(list), item.at);
                }
                "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                    if let Some(v) = self.notify_command(item) {
                        s.set(&item.keyword, v, item.at);
                    }
                }
                "garp_lower_prio_repeat" => {
                    if let Some(v) = self.int_arg(item, 0, 1000) {
                        s.set("garp_lower_prio_repeat", v, item.at);
                    }
                }
                "lower_prio_no_advert" | "higher_prio_send_advert" => {
                    if let Some(on) = self.bool_arg(item) {
                        s.set(&item.keyword, V::Bool(on), item.at);
                    }
                }
                "garp_master_delay" | "garp_master_refresh" | "garp_lower_prio_delay" => {
                    if let Some(v) = self.secs_arg(item) {
                        s.set(&item.keyword, v, item.at);
                    }
                }
                "garp_master_repeat" => {
                    if let Some(v) = self.int_arg(item, 0, 1000) {
                        s.set("garp_master_repeat", v, item.at);
                    }
                }
                "garp_master_refresh_repeat" => {
                    if let Some(v) = self.int_arg(item, 1, 1000) {
                        s.set("garp_master_refresh_repeat", v, item.at);
                    }
                }
                _ => self.unhandled(item),
            }
        }
        // Fill in what global_defs gave.
        if let Some((n, line)) = version {
            s.set("version", V::Int(n), line);
        }
        let v3 = version.is_some_and(|(n, _)| n == 3) || vips.iter().any(|(_, a, _)| a.is_ipv6());
        if let Some((pass, line)) = auth {
            if v3 {
                self.report_at(
                    auth_line,
                    "authentication { ... }",
                    "VRRPv3 has no authentication (keepalived ignores it too)",
                );
            } else {
                s.set("auth_pass", V::Str(pass), line);
            }
        }
        for (k, v, line) in self.instance_defaults.clone() {
            if !s.has(&k) {
                s.set(&k, v, line);
            }
        }
        if !vips.is_empty() {
            let line = vips[0].2;
            s.set(
                "virtual_ipaddresses",
                V::strs(vips.into_iter().map(|(text, _, _)| text)),
                line,
            );
        }
        // Without these xdp-lb cannot run the instance: say so once, for the instance.
        let missing: Vec<&str> = [
            ("interface", "interface"),
            ("virtual_router_id", "virtual_router_id"),
            ("virtual_ipaddresses", "virtual_ipaddress"),
        ]
        .into_iter()
        .filter(|(ours, _)| !s.has(ours))
        .map(|(_, theirs)| theirs)
        .collect();
        if !missing.is_empty() {
            self.report(
                node,
                format!(
                    "the instance has no usable {}; xdp-lb needs it (sync groups lose this member)",
                    missing.join(", ")
                ),
            );
            return;
        }
        s.order(&[
            "interface",
            "virtual_router_id",
            "priority",
            "version",
            "advert_interval",
            "auth_pass",
            "preempt",
            "preempt_delay",
            "virtual_ipaddresses",
        ]);
        self.instances.push((name, interface.expect("checked"), s));
    }

    fn authentication(&mut self, node: &Node) -> Option<(String, Loc)> {
        let block = self.block(node)?;
        let mut kind: Option<&Node> = None;
        let mut pass: Option<(String, Loc)> = None;
        for item in block {
            match item.keyword.as_str() {
                "auth_type" => kind = Some(item),
                "auth_pass" => {
                    if let Some(w) = self.one_arg(item, "a password") {
                        let mut text = w.text.clone();
                        if text.len() > 8 {
                            let cut = (0..=8).rev().find(|i| text.is_char_boundary(*i));
                            text.truncate(cut.unwrap_or(0));
                            self.report_translated(
                                item,
                                format!(
                                    "truncated to its first 8 bytes, as keepalived truncates \
                                     it: auth_pass = {text:?}"
                                ),
                            );
                        }
                        pass = Some((text, item.at));
                    }
                }
                _ => self.unhandled(item),
            }
        }
        match kind.map(|k| k.arg_texts()) {
            Some(args) if args == ["AH"] => {
                self.report(
                    kind.expect("matched"),
                    "IPsec AH authentication is not supported: xdp-lb does PASS only \
                     (RFC 5798 drops authentication; consider VRRPv3 without it)",
                );
                None
            }
            Some(args) if args != ["PASS"] => {
                self.report(kind.expect("matched"), "expected PASS or AH");
                None
            }
            _ => pass,
        }
    }

    fn virtual_ipaddress(&mut self, node: &Node, vips: &mut Vec<(String, IpAddr, Loc)>) {
        let Some(block) = self.block(node) else {
            return;
        };
        for item in block {
            let addr_text = item.keyword.as_str();
            let addr = addr_text.split_once('/').map_or(addr_text, |(a, _)| a);
            let Ok(addr) = addr.parse::<IpAddr>() else {
                self.report(item, "not an address with an optional /prefix");
                continue;
            };
            if let Some((_, first, _)) = vips.first()
                && first.is_ipv4() != addr.is_ipv4()
            {
                self.report(
                    item,
                    "mixes address families in one instance; use one instance per family",
                );
                continue;
            }
            if vips.iter().any(|(_, a, _)| *a == addr) {
                self.report(item, "listed twice");
                continue;
            }
            let mut text = addr_text.to_owned();
            let args = item.arg_texts();
            let mut i = 0;
            while i < args.len() {
                let word = args[i];
                let value = args.get(i + 1).copied();
                match (word, value) {
                    ("dev" | "scope", Some(v)) => {
                        text.push_str(&format!(" {word} {v}"));
                        i += 2;
                    }
                    ("label", Some(v)) if addr.is_ipv4() => {
                        text.push_str(&format!(" label {v}"));
                        i += 2;
                    }
                    ("label", Some(v)) => {
                        self.report_at(
                            item.at,
                            format!("{addr_text} label {v}"),
                            "IPv6 addresses carry no label",
                        );
                        i += 2;
                    }
                    ("brd" | "broadcast", Some(v)) => {
                        self.report_at(
                            item.at,
                            format!("{addr_text} {word} {v}"),
                            "xdp-lb sets no broadcast address; the kernel's default applies",
                        );
                        i += 2;
                    }
                    _ => {
                        self.report_at(
                            item.at,
                            format!("{addr_text} {}", args[i..].join(" ")),
                            "only `dev`, `scope` and `label` are translated after an address",
                        );
                        break;
                    }
                }
            }
            if item.block.is_some() {
                self.report(item, "unexpected block");
            }
            vips.push((text, addr, item.at));
        }
    }

    /// `track_bfd { NAME [weight W] }`: the sessions' own weights; a per-instance
    /// weight other than the session's is not translated (one session, one weight).
    fn track_bfd(&mut self, node: &Node) -> Vec<String> {
        let words = node.block_words();
        let mut names: Vec<String> = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let (word, line) = &words[i];
            let known = self
                .bfd_weights
                .iter()
                .find(|(n, _)| *n == word.text)
                .cloned();
            let Some((name, own)) = known else {
                self.report_at(
                    *line,
                    word.text.clone(),
                    "there is no (translated) bfd_instance of this name to track",
                );
                i += 1;
                continue;
            };
            let weight =
                (words.get(i + 1).map(|(w, _)| w.text.as_str()) == Some("weight")).then(|| {
                    words
                        .get(i + 2)
                        .map(|(w, _)| w.text.clone())
                        .unwrap_or_default()
                });
            let reverse =
                weight.is_some() && words.get(i + 3).is_some_and(|(w, _)| w.text == "reverse");
            i += 1 + if weight.is_some() { 2 } else { 0 } + usize::from(reverse);
            match weight {
                Some(w) if w.parse::<i64>() != Ok(own) || reverse => self.report_at(
                    *line,
                    format!("{name} weight {w}{}", if reverse { " reverse" } else { "" }),
                    format!(
                        "xdp-lb's weight belongs to the session ([bfd.{name}] weight = {own}) \
                         and has no `reverse`: the instance does not track it"
                    ),
                ),
                _ => {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
        if node.block.is_none() {
            self.report(node, "expected a { } block after it");
        }
        names
    }

    fn track_scripts(&mut self, node: &Node) -> Vec<String> {
        let words = node.block_words();
        let mut names: Vec<String> = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let (word, line) = &words[i];
            if word.text == "weight" {
                // `NAME weight N`: keepalived's per-instance override of the script's
                // weight. xdp-lb's weight belongs to the script, so this instance tracks
                // a copy of it with that weight.
                let n = words.get(i + 1).map(|(w, _)| w.text.as_str()).unwrap_or("");
                let name = i
                    .checked_sub(1)
                    .map(|p| words[p].0.text.clone())
                    .unwrap_or_default();
                let reverse = words.get(i + 2).is_some_and(|(w, _)| w.text == "reverse");
                let copy = match n.parse::<i64>() {
                    Ok(weight) if (-254..=254).contains(&weight) && !reverse => {
                        self.script_with_weight(&name, weight, *line)
                    }
                    _ => None,
                };
                match copy {
                    Some(copy) => {
                        names.retain(|n| *n != name);
                        if !names.contains(&copy) {
                            names.push(copy);
                        }
                    }
                    None => {
                        let why = if self.script_names.contains(&name) {
                            "expected a weight from -254 to 254 (xdp-lb has no `reverse`): \
                             the instance does not track this script"
                        } else {
                            "there is no (translated) vrrp_script of this name to track"
                        };
                        names.retain(|n| *n != name);
                        self.report_at(*line, format!("{name} weight {n}"), why);
                    }
                }
                i += if reverse { 3 } else { 2 };
                continue;
            }
            if !self.script_names.contains(&word.text) {
                self.report_at(
                    *line,
                    word.text.clone(),
                    "there is no (translated) vrrp_script of this name to track",
                );
            } else if !names.contains(&word.text) {
                names.push(word.text.clone());
            }
            i += 1;
        }
        if node.block.is_none() {
            self.report(node, "expected a { } block after it");
        }
        names
    }

    /// The name of a copy of script `name` with `weight` (added once), or `None` if
    /// there is no such script.
    fn script_with_weight(&mut self, name: &str, weight: i64, at: Loc) -> Option<String> {
        let original = self.script_names.iter().position(|n| n == name)?;
        let sign = if weight < 0 { "minus_" } else { "" };
        let copy = format!("{name}_weight_{sign}{}", weight.unsigned_abs());
        if !self.script_names.contains(&copy) {
            let mut section = self.scripts[original].clone();
            section.header = format!("[script.{}]", key(&copy));
            section.set("weight", V::Int(weight), at);
            self.script_names.push(copy.clone());
            self.scripts.push(section);
        }
        Some(copy)
    }

    fn track_interfaces(&mut self, node: &Node) -> Vec<V> {
        let words = node.block_words();
        let mut out: Vec<(String, Option<i64>)> = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let (word, line) = &words[i];
            if word.text == "weight" {
                let n = words.get(i + 1).map(|(w, _)| w.text.as_str()).unwrap_or("");
                match (out.last_mut(), n.parse::<i64>()) {
                    (Some(last), Ok(w)) if (-254..=254).contains(&w) => last.1 = Some(w),
                    _ => self.report_at(
                        *line,
                        format!("weight {n}"),
                        "expected a weight from -254 to 254 after an interface name",
                    ),
                }
                i += 2;
                continue;
            }
            if !out.iter().any(|(n, _)| *n == word.text) {
                out.push((word.text.clone(), None));
            }
            i += 1;
        }
        if node.block.is_none() {
            self.report(node, "expected a { } block after it");
        }
        out.into_iter()
            .map(|(name, weight)| match weight {
                Some(w) if w != 0 => V::Table(vec![
                    ("name".into(), V::Str(name)),
                    ("weight".into(), V::Int(w)),
                ]),
                _ => V::Str(name),
            })
            .collect()
    }

    // ----- vrrp_sync_group -----

    pub(super) fn vrrp_sync_group(&mut self, node: &Node) {
        let Some((name, block)) = self.named_block(node) else {
            return;
        };
        let mut s = Section::new(format!("[vrrp_sync_group.{}]", key(&name)), node.at);
        let mut members: Vec<String> = Vec::new();
        for item in block {
            match item.keyword.as_str() {
                "group" => {
                    for (word, line) in item.block_words() {
                        if self.instances.iter().any(|(n, _, _)| *n == word.text) {
                            if !members.contains(&word.text) {
                                members.push(word.text);
                            }
                        } else {
                            self.report_at(
                                line,
                                word.text,
                                "there is no (translated) vrrp_instance of this name",
                            );
                        }
                    }
                    s.set("group", V::strs(members.clone()), item.at);
                }
                "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                    if let Some(v) = self.notify_command(item) {
                        s.set(&item.keyword, v, item.at);
                    }
                }
                "track_script" | "track_interface" => self.report(
                    item,
                    "xdp-lb tracks per instance: move it into each member vrrp_instance",
                ),
                // keepalived 1.1's form; later ones want `group { }`.
                member
                    if item.args.is_empty()
                        && item.block.is_none()
                        && self.instances.iter().any(|(n, _, _)| n == member) =>
                {
                    self.report(
                        item,
                        "a member outside `group { }`: keepalived (since 1.2) does not know it \
                         there either (\"Unknown keyword\") and ignores it",
                    )
                }
                _ => self.unhandled(item),
            }
        }
        if members.len() < 2 {
            self.report(
                node,
                "the group needs at least two translated instances; it is left out",
            );
            return;
        }
        self.groups.push(s);
    }

    // ----- virtual_server -----

    /// A `virtual_server_group`: kept until a virtual server uses it.
    pub(super) fn virtual_server_group(&mut self, node: &Node) {
        let [name] = node.arg_texts()[..] else {
            self.report(node, "expected `virtual_server_group NAME {`");
            return;
        };
        let name = name.to_owned();
        if self.vs_groups.iter().any(|(n, _)| *n == name) {
            self.report(
                node,
                format!("a second virtual_server_group {name}: keepalived uses the first"),
            );
            return;
        }
        if node.block.is_none() {
            self.report(
                node,
                "expected a `{ ... }` block of `IP PORT` and `fwmark N` entries",
            );
            return;
        }
        self.vs_groups.push((name, node.clone()));
    }

    /// A note, unless the same one was already made (a group's entry, for each
    /// virtual server using the group).
    fn report_once(&mut self, node: &Node, why: String) {
        let setting = node.display();
        if !self
            .notes
            .iter()
            .any(|n| n.at == node.at && n.setting == setting && n.why == why)
        {
            self.report(node, why);
        }
    }

    /// What a mark selects for `protocol`, as members; the reason it cannot be read
    /// otherwise (`what` names the mark's place, `instead` what to write instead).
    fn mark_members(
        &self,
        mark: u32,
        protocol: &str,
        instead: &str,
    ) -> Result<Vec<String>, String> {
        let not_matched = "xdp-lb matches VIP:port pairs before netfilter, not firewall marks";
        match self.marks.mark(mark) {
            None => Err(format!(
                "{not_matched}, and no rule given with `--fwmark-rules` sets mark {mark}: give \
                 the iptables-save or nft ruleset that sets it (`--fwmark-rules FILE`), or \
                 {instead}"
            )),
            Some(Err(why)) => Err(format!(
                "{not_matched}, and a rule setting mark {mark} is not only a VIP and port \
                 ({why}): {instead}"
            )),
            Some(Ok(selections)) => {
                let members: Vec<String> = selections
                    .iter()
                    .filter(|s| s.protocol == protocol)
                    .flat_map(|s| s.members())
                    .collect();
                if members.is_empty() {
                    Err(format!(
                        "{not_matched}, and the rules setting mark {mark} select no {protocol} \
                         traffic: {instead}"
                    ))
                } else {
                    Ok(members)
                }
            }
        }
    }

    /// The members a virtual server serves: its group's entries (`IP PORT`, `IP-LAST
    /// PORT`, `fwmark N`) or its own mark, each entry that cannot be translated noted.
    /// Empty if none could.
    fn members(&mut self, head: &Head, protocol: &str, group: &str) -> Vec<String> {
        let mut members: Vec<String> = Vec::new();
        let mut seen: std::collections::HashSet<std::net::SocketAddr> = Default::default();
        let mut family: Option<bool> = None;
        // Adds `member` unless it overlaps one already in, or is of the other family.
        let mut add = |member: String| -> Result<(), String> {
            let parsed = crate::config::parse_member(&member)?;
            let pairs: Vec<std::net::SocketAddr> = parsed.expand().collect();
            let v4 = pairs[0].is_ipv4();
            if *family.get_or_insert(v4) != v4 {
                return Err(
                    "not in the address family of the group's first entry: xdp-lb serves \
                     a group's members from one pool of one family"
                        .into(),
                );
            }
            if let Some(p) = pairs.iter().find(|p| seen.contains(p)) {
                return Err(format!("{p} is already an entry of the group"));
            }
            seen.extend(pairs);
            members.push(member);
            Ok(())
        };
        match head {
            Head::Single(..) => unreachable!("a single VIP:port has no members to resolve"),
            Head::Fwmark(mark) => {
                let instead = format!(
                    "write the VIP:port pairs it selects as `[virtual_server_group.{group}] \
                     members = [\"VIP:PORT\", ...]` and `group = \"{group}\"` in place of \
                     `fwmark {mark}` (in keepalived terms: a virtual_server_group of `IP PORT` \
                     entries)"
                );
                match self.mark_members(*mark, protocol, &instead) {
                    Ok(list) => {
                        for m in list {
                            // Rules may overlap: the first one wins, as a mark is one set.
                            let _ = add(m);
                        }
                    }
                    // The caller says why.
                    Err(_) => return Vec::new(),
                }
            }
            Head::Group(name, entries, _) => {
                for entry in entries {
                    let args = entry.arg_texts();
                    let member = if entry.keyword == "fwmark" {
                        let mark = args.first().and_then(|m| m.parse::<u32>().ok());
                        let Some(mark) = mark else {
                            self.report_once(entry, "expected `fwmark N`".into());
                            continue;
                        };
                        let instead = format!(
                            "add the VIP:port pairs mark {mark} selects to `members` of \
                             `[virtual_server_group.{group}]` (in keepalived terms: `IP PORT` \
                             entries of virtual_server_group {name})"
                        );
                        match self.mark_members(mark, protocol, &instead) {
                            Ok(list) => list,
                            Err(why) => {
                                self.report_once(entry, why);
                                continue;
                            }
                        }
                    } else {
                        let member = match args.as_slice() {
                            [port] if entry.keyword.contains(':') => {
                                format!("[{}]:{port}", entry.keyword)
                            }
                            [port] => format!("{}:{port}", entry.keyword),
                            _ => String::new(),
                        };
                        if let Err(why) = crate::config::parse_member(&member) {
                            let why = if member.is_empty() {
                                "expected `IP PORT`, `IP-LAST PORT` or `fwmark N`".to_owned()
                            } else {
                                format!("{why}; expected `IP PORT`, `IP-LAST PORT` or `fwmark N`")
                            };
                            self.report_once(entry, why);
                            continue;
                        }
                        vec![member]
                    };
                    for m in member {
                        if let Err(why) = add(m) {
                            self.report_once(entry, format!("{why}; left out"));
                        }
                    }
                }
            }
        }
        members
    }

    pub(super) fn virtual_server(&mut self, node: &Node) {
        let args = node.arg_texts();
        let head = match args.as_slice() {
            ["fwmark", mark] => match mark.parse::<u32>() {
                Ok(mark) => Head::Fwmark(mark),
                Err(_) => {
                    self.report(node, "expected `virtual_server fwmark N {`");
                    return;
                }
            },
            ["group", name] => {
                let Some((_, group)) = self.vs_groups.iter().find(|(n, _)| n == name) else {
                    self.report(
                        node,
                        format!(
                            "there is no virtual_server_group {name} (keepalived leaves the \
                             virtual server out too)"
                        ),
                    );
                    return;
                };
                let entries = group.block.iter().flatten().cloned().collect();
                Head::Group((*name).to_owned(), entries, group.at)
            }
            [ip, port] => match (ip.parse::<IpAddr>(), port.parse::<u16>()) {
                (Ok(vip), Ok(port)) if port > 0 => Head::Single(vip, port),
                _ => {
                    self.report(node, "expected `virtual_server IP PORT {`");
                    return;
                }
            },
            _ => {
                self.report(
                    node,
                    "expected `virtual_server IP PORT {`, `virtual_server group NAME {` or \
                     `virtual_server fwmark N {`",
                );
                return;
            }
        };
        let Some(block) = self.block(node) else {
            return;
        };
        let protocol = block
            .iter()
            .find(|i| i.keyword == "protocol")
            .and_then(|i| i.arg_texts().first().map(|p| p.to_ascii_lowercase()))
            .unwrap_or_else(|| "tcp".to_owned());
        let mut s = Section::new("[[virtual_server]]".into(), node.at);
        // Its `[virtual_server_group.NAME]`, written with it (if it is not left out).
        let mut group_section = None;
        // Its VIPs (the family, and where real servers may not be) and ports.
        let (vips, ports): (Vec<IpAddr>, Vec<u16>) = match &head {
            Head::Single(vip, port) => {
                s.set("vip", V::Str(vip.to_string()), node.at);
                s.set("port", V::Int((*port).into()), node.at);
                (vec![*vip], vec![*port])
            }
            _ => {
                let base = match &head {
                    Head::Group(name, ..) => name.clone(),
                    Head::Fwmark(mark) => format!("fwmark_{mark}"),
                    Head::Single(..) => unreachable!(),
                };
                // One table per virtual server using it (a mark's pairs depend on the
                // protocol); a name already written gets the protocol appended.
                let taken = |n: &str| {
                    let header = format!("[virtual_server_group.{}]", key(n));
                    self.server_groups.iter().any(|g| g.header == header)
                };
                let mut group = base.clone();
                if taken(&group) {
                    group = format!("{base}_{protocol}");
                }
                let mut n = 2;
                while taken(&group) {
                    group = format!("{base}_{protocol}_{n}");
                    n += 1;
                }
                let members = self.members(&head, &protocol, &group);
                if members.is_empty() {
                    let why = match &head {
                        Head::Fwmark(mark) => {
                            let instead = format!(
                                "write the VIP:port pairs it selects as \
                                 `[virtual_server_group.{group}] members = [\"VIP:PORT\", ...]` \
                                 and `group = \"{group}\"` in place of `fwmark {mark}` (in \
                                 keepalived terms: a virtual_server_group of `IP PORT` entries)"
                            );
                            self.mark_members(*mark, &protocol, &instead)
                                .err()
                                .unwrap_or_default()
                        }
                        _ => format!(
                            "no entry of virtual_server_group {base} could be translated (see \
                             the notes on them); the virtual server is left out"
                        ),
                    };
                    self.report(node, why);
                    return;
                }
                let mut vips = Vec::new();
                let mut ports = Vec::new();
                for m in &members {
                    let parsed = crate::config::parse_member(m).expect("checked");
                    for pair in parsed.expand() {
                        if !vips.contains(&pair.ip()) {
                            vips.push(pair.ip());
                        }
                        if !ports.contains(&pair.port()) {
                            ports.push(pair.port());
                        }
                    }
                }
                // Where the group is defined: its notes are written beside it.
                let at = match &head {
                    Head::Group(_, _, at) => *at,
                    _ => node.at,
                };
                let mut g = Section::new(format!("[virtual_server_group.{}]", key(&group)), at);
                g.set("members", V::strs(members), at);
                group_section = Some(g);
                s.set("group", V::Str(group), node.at);
                (vips, ports)
            }
        };
        let vip = vips[0];
        let mut defaults = CheckDefaults::default();
        let mut real_servers: Vec<&Node> = Vec::new();
        for item in block {
            if defaults.take(self, item) {
                continue;
            }
            match item.keyword.as_str() {
                "lb_algo" | "lvs_sched" => {
                    let Some(w) = self.one_arg(item, "a scheduler") else {
                        continue;
                    };
                    let scheduler = match w.text.as_str() {
                        "rr" => "rr",
                        "wrr" => "wrr",
                        "sh" | "mh" => "sh",
                        "dh" => "dh",
                        "lc" => "lc",
                        "wlc" => "wlc",
                        "sed" => "sed",
                        "nq" => "nq",
                        other => {
                            self.report_translated(
                                item,
                                format!(
                                    "xdp-lb has no `{other}` scheduler: wrr is used instead \
                                     (others: rr, lc, wlc, sed, nq, sh, dh, maglev)"
                                ),
                            );
                            "wrr"
                        }
                    };
                    s.set("scheduler", V::str(scheduler), item.at);
                }
                "lb_kind" | "lvs_method" => {
                    let Some(w) = self.one_arg(item, "DR, NAT or TUN") else {
                        continue;
                    };
                    match w.text.to_ascii_uppercase().as_str() {
                        "DR" => s.set("forwarding", V::str("dr"), item.at),
                        "NAT" => s.set("forwarding", V::str("nat"), item.at),
                        "TUN" => s.set("forwarding", V::str("tun"), item.at),
                        _ => self.report(item, "expected DR, NAT or TUN; using dr"),
                    }
                }
                "protocol" => {
                    let Some(w) = self.one_arg(item, "TCP or UDP") else {
                        continue;
                    };
                    match w.text.to_ascii_uppercase().as_str() {
                        "TCP" => s.set("protocol", V::str("tcp"), item.at),
                        "UDP" => s.set("protocol", V::str("udp"), item.at),
                        _ => {
                            self.report(
                                node,
                                format!(
                                    "xdp-lb balances TCP and UDP only, not {}: the virtual \
                                     server is left out",
                                    w.text
                                ),
                            );
                            return;
                        }
                    }
                }
                "quorum" => {
                    if let Some(v) = self.int_arg(item, 1, u32::MAX.into()) {
                        s.set("quorum", v, item.at);
                    }
                }
                "hysteresis" => {
                    if let Some(v) = self.int_arg(item, 0, u32::MAX.into()) {
                        s.set("hysteresis", v, item.at);
                    }
                }
                "quorum_up" | "quorum_down" => {
                    if let Some(v) = self.notify_command(item) {
                        s.set(&item.keyword, v, item.at);
                    }
                }
                "omega" => {
                    if self.flag(item) {
                        s.set("omega", V::Bool(true), item.at);
                    }
                }
                "sorry_server" => match item.arg_texts().as_slice() {
                    [ip, port] if ip.parse::<IpAddr>().is_ok() && port.parse::<u16>().is_ok() => {
                        let addr = std::net::SocketAddr::new(
                            ip.parse().expect("checked"),
                            port.parse().expect("checked"),
                        );
                        match crate::config::not_another_host(addr.ip()) {
                            Some(why) => self.report(
                                item,
                                format!(
                                    "sorry server {addr} is {why}; left out, so new \
                                     connections are dropped while no real server is up"
                                ),
                            ),
                            None => s.set("sorry_server", V::Str(addr.to_string()), item.at),
                        }
                    }
                    _ => self.report(item, "expected `sorry_server IP PORT`"),
                },
                "real_server" => real_servers.push(item),
                // keepalived's "off" (its default): nothing to say.
                "persistence_timeout" if item.arg_texts() == ["0"] => {}
                // It only shapes persistence, which is off without a timeout.
                "persistence_granularity" if !persistent(block) => {}
                "persistence_timeout" | "lvs_persistence_timeout" => {
                    match item.arg_texts().as_slice() {
                        [secs] if secs.parse::<u32>().is_ok_and(|n| n <= 86_400) => {
                            s.set("persistence_timeout", V::Str(format!("{secs}s")), item.at)
                        }
                        _ => self.unhandled(item),
                    }
                }
                "persistence_granularity" => match item.arg_texts().as_slice() {
                    [prefix] if prefix.parse::<u8>().is_ok() => s.set(
                        "persistence_granularity",
                        V::Int(prefix.parse::<i64>().expect("checked")),
                        item.at,
                    ),
                    [mask] if vip.is_ipv4() && mask.parse::<std::net::Ipv4Addr>().is_ok() => {
                        s.set("persistence_granularity", V::str(*mask), item.at)
                    }
                    _ => self.unhandled(item),
                },
                _ => self.unhandled(item),
            }
        }
        let mut servers = Vec::new();
        let any_family = tunnelled(block);
        for rs in real_servers {
            if let Some(section) = self.real_server(rs, (&vips, any_family), &ports, &defaults) {
                servers.push(section);
            }
        }
        if servers.is_empty() {
            self.report(
                node,
                "it has no usable real_server; xdp-lb needs at least one, so the virtual server \
                 is left out",
            );
            return;
        }
        self.server_groups.extend(group_section);
        self.services.push(s);
        self.services.extend(servers);
    }

    /// A real server of a virtual server serving `vips` on `ports`.
    fn real_server(
        &mut self,
        node: &Node,
        (vips, any_family): (&[IpAddr], bool),
        ports: &[u16],
        defaults: &CheckDefaults,
    ) -> Option<Section> {
        let vip = vips[0];
        let args = node.arg_texts();
        let parsed = match args.as_slice() {
            [ip, port] => ip
                .parse::<IpAddr>()
                .ok()
                .zip(port.parse::<u16>().ok().filter(|p| *p > 0).map(Some)),
            [ip] => ip.parse::<IpAddr>().ok().map(|ip| (ip, None)),
            _ => None,
        };
        let Some((address, port)) = parsed else {
            self.report(node, "expected `real_server IP PORT {`; left out");
            return None;
        };
        if address.is_ipv4() != vip.is_ipv4() && !any_family {
            self.report(
                node,
                "not in the virtual server's address family, which only TUN crosses; left out",
            );
            return None;
        }
        if let Some(why) = crate::config::not_another_host(address) {
            self.report(node, format!("real server {address} is {why}; left out"));
            return None;
        }
        if vips.contains(&address) {
            self.report(
                node,
                format!("real server {address} is the virtual server's own VIP; left out"),
            );
            return None;
        }
        if port.is_none() && ports.len() > 1 {
            // IPVS sends to the port the client asked for (port 0); xdp-lb to one port
            // per real server, which its checks also connect to.
            self.report(
                node,
                format!(
                    "a real server without a port keeps each connection's destination port in \
                     IPVS; xdp-lb sends to one port per real server (for DR and TUN it is only \
                     what its check connects to) and the virtual server serves ports {}: give \
                     it one, e.g. `real_server {address} {}`; left out",
                    ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    ports[0]
                ),
            );
            return None;
        }
        let mut s = Section::new("[[virtual_server.real_server]]".into(), node.at);
        s.nested = true;
        s.set("address", V::Str(address.to_string()), node.at);
        if let Some(port) = port {
            s.set("port", V::Int(port.into()), node.at);
        }
        let mut defaults = defaults.clone();
        let mut check: Option<(V, Loc)> = None;
        for item in node.block.iter().flatten() {
            if defaults.take(self, item) {
                continue;
            }
            match item.keyword.as_str() {
                "weight" => {
                    if let Some(v) = self.int_arg(item, 0, 65535) {
                        s.set("weight", v, item.at);
                    }
                }
                "inhibit_on_failure" => {
                    if self.flag(item) {
                        s.set("inhibit_on_failure", V::Bool(true), item.at);
                    }
                }
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "PING_CHECK"
                | "DNS_CHECK" | "UDP_CHECK" | "SMTP_CHECK" => {
                    if check.is_some() {
                        self.report(
                            item,
                            "xdp-lb runs one check per real server: only the first is translated",
                        );
                        continue;
                    }
                    if let Some(v) = self.check(item, &defaults) {
                        check = Some((v, item.at));
                    }
                }
                "BFD_CHECK" | "FILE_CHECK" | "CI-LINUX" => {
                    self.report(item, checks::why_no_checker(&item.keyword))
                }
                _ => self.unhandled(item),
            }
        }
        if let Some((v, line)) = check {
            s.set("check", v, line);
        }
        Some(s)
    }
}

/// Whether a virtual server's block makes it persistent (a non-zero
/// persistence_timeout; keepalived's default 0 is "off").
/// Whether the virtual server forwards by tunnel (`lb_kind TUN`), the one method whose
/// real servers may be of the other address family (IPVS's IPv4 in IPv6 and back).
fn tunnelled(block: &[Node]) -> bool {
    block.iter().any(|item| {
        matches!(item.keyword.as_str(), "lb_kind" | "lvs_method")
            && item
                .arg_texts()
                .first()
                .is_some_and(|kind| kind.eq_ignore_ascii_case("tun"))
    })
}

fn persistent(block: &[Node]) -> bool {
    block
        .iter()
        .any(|item| item.keyword == "persistence_timeout" && item.arg_texts().as_slice() != ["0"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_become_durations() {
        assert_eq!(seconds("1").as_deref(), Some("1s"));
        assert_eq!(seconds("0.1").as_deref(), Some("100ms"));
        assert_eq!(seconds("1.5").as_deref(), Some("1500ms"));
        assert_eq!(seconds("2.000").as_deref(), Some("2s"));
        assert_eq!(seconds("0").as_deref(), Some("0s"));
        assert_eq!(seconds("0.0001"), None);
        assert_eq!(seconds("-1"), None);
        assert_eq!(seconds("abc"), None);
        assert_eq!(seconds("."), None);
    }

    #[test]
    fn commands_split_as_keepalived_splits_them_without_a_shell() {
        let argv = |text| split_argv(text);
        assert_eq!(argv("/bin/true master"), ["/bin/true", "master"]);
        // keepalived runs no shell: `||` is an argument of pgrep.
        assert_eq!(
            argv("pgrep nginx || exit 1"),
            ["pgrep", "nginx", "||", "exit", "1"]
        );
        // The keepalived guide's chk_down: bash runs the test alone; the rest are $0...
        assert_eq!(
            argv("/bin/bash -c '[[ -e /etc/keepalived/down ]]' && exit 1 || exit 0"),
            [
                "/bin/bash",
                "-c",
                "[[ -e /etc/keepalived/down ]]",
                "&&",
                "exit",
                "1",
                "||",
                "exit",
                "0"
            ]
        );
        assert_eq!(
            argv("\"/usr/local/bin/check port\" 'a b'\"c\""),
            ["/usr/local/bin/check port", "a bc"]
        );
        assert_eq!(
            command("/bin/true master"),
            Ok(V::strs(["/bin/true", "master"]))
        );
        let refused = command("[[ -e /etc/keepalived/down ]]").unwrap_err();
        assert!(
            refused.contains("Cannot find script [[ in path"),
            "{refused}"
        );
    }

    #[test]
    fn a_program_missing_here_is_left_out_as_keepalived_disables_it() {
        let why = command("/nonexistent/notify master").unwrap_err();
        assert!(
            why.starts_with(
                "`/nonexistent/notify` does not exist on this host; keepalived disables"
            ),
            "{why}"
        );
    }
}
