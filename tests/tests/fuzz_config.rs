//! Fuzz target: the config parser (`xdp_lb::config::parse`) on mutated valid configs
//! (the shipped `config/*.toml` and a seed with every table) and on documents generated
//! from its own vocabulary. For every input: no panic (nor stack overflow: it runs on a
//! reload's 2 MiB stack), the same answer twice, and an error that reads
//! `NAME:LINE:COL: message` with LINE:COL inside the text. proptest at scale rather than
//! cargo-fuzz: see `fuzz/mod.rs`; `XDP_LB_FUZZ_SCALE` and `XDP_LB_FUZZ_SEED` there.
//! No root, no network.

mod fuzz;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;

use fuzz::{Format, Mutated, campaign, mutated, position_in_text};

const NAME: &str = "fuzz.toml";

const SEEDS: &[&str] = &[
    include_str!("../../config/lb.example.toml"),
    include_str!("../../config/dr-pair.toml"),
    include_str!("../../config/dual-master.toml"),
    include_str!("../../config/nat-gateway-pair.toml"),
    include_str!("data/fuzz/every-table.toml"),
];

/// Tables and the keys `raw.rs` knows in each (and the check's inline table).
const TABLES: &[(&str, &[&str])] = &[
    ("[global]", &["router_id", "api", "api_token", "dump_dir"]),
    (
        "[dataplane]",
        &[
            "interfaces",
            "xdp_mode",
            "max_flows",
            "neighbour_timeout",
            "nat_tcp_timeout",
            "nat_tcp_fin_timeout",
            "nat_udp_timeout",
        ],
    ),
    (
        "[[virtual_server]]",
        &[
            "vip",
            "port",
            "protocol",
            "scheduler",
            "forwarding",
            "sorry_server",
            "quorum",
            "hysteresis",
            "quorum_up",
            "quorum_down",
            "omega",
        ],
    ),
    (
        "[[virtual_server.real_server]]",
        &["address", "port", "weight", "inhibit_on_failure", "check"],
    ),
    (
        "[vrrp.VI_1]",
        &[
            "interface",
            "virtual_router_id",
            "priority",
            "version",
            "advert_interval",
            "auth_pass",
            "preempt",
            "preempt_delay",
            "virtual_ipaddresses",
            "unicast_src_ip",
            "mcast_src_ip",
            "unicast_peers",
            "old_unicast_checksum",
            "check_unicast_src",
            "check_unicast_ttl",
            "garp_master_repeat",
            "garp_master_delay",
            "garp_master_refresh",
            "garp_master_refresh_repeat",
            "garp_interval",
            "garp_lower_prio_repeat",
            "garp_lower_prio_delay",
            "lower_prio_no_advert",
            "higher_prio_send_advert",
            "notify_master",
            "notify_backup",
            "notify_fault",
            "notify_stop",
            "notify",
            "track_virtual_servers",
            "track_scripts",
            "track_interfaces",
        ],
    ),
    (
        "[script.chk_true]",
        &[
            "command", "interval", "timeout", "weight", "rise", "fall", "user", "shell",
        ],
    ),
    (
        "[vrrp_sync_group.VG_1]",
        &[
            "group",
            "notify_master",
            "notify_backup",
            "notify_fault",
            "notify_stop",
            "notify",
        ],
    ),
    (
        "check",
        &[
            "type",
            "interval",
            "warmup",
            "connect_timeout",
            "retry",
            "delay_before_retry",
            "rise",
            "fall",
            "source",
            "connect_ip",
            "connect_port",
            "alpha",
            "path",
            "status",
            "digest",
            "virtualhost",
            "urls",
            "verify_certificate",
            "ca_file",
            "sni",
            "command",
            "timeout",
            "dynamic",
            "user",
            "payload",
            "expect",
            "name",
            "qtype",
        ],
    ),
];

/// Other headers: more instances, scripts and groups, and wrong shapes.
const MORE_HEADERS: &[&str] = &[
    "[vrrp.VI_2]",
    "[script.chk_b]",
    "[vrrp_sync_group.VG_2]",
    "[vrrp]",
    "[virtual_server]",
    "[[global]]",
    "[[vrrp.VI_1]]",
    "[virtual_server.real_server]",
    "[vrrp.\"VI 1\"]",
    "[vrrp.'']",
    "[script.a.b]",
    "[frobnicate]",
];

/// Plausible and implausible strings for the values.
const STRINGS: &[&str] = &[
    "",
    " ",
    "1s",
    "100ms",
    "0s",
    "1m30s",
    "1h",
    "10ms",
    "5ms",
    "-1s",
    "1.5s",
    "s",
    "1",
    "18446744073709551616s",
    "99999999999999999h",
    "192.0.2.100",
    "192.0.2.100/24",
    "192.0.2.100/33",
    "192.0.2.100/24 dev eth0 label eth0:vip",
    "192.0.2.100/24 scope link",
    "192.0.2.100/24 dev",
    "192.0.2.250:80",
    "[2001:db8::1]:80",
    "2001:db8::100",
    "2001:db8::100/64",
    "fe80::1",
    "::",
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.18",
    "127.0.0.1",
    "127.0.0.1:9180",
    "off",
    "eth0",
    "eth1",
    "lo",
    "VI_1",
    "VI_2",
    "chk_true",
    "chk_b",
    "VG_1",
    "/bin/true",
    "/bin/true || /bin/false",
    "/nonexistent",
    "root",
    "nobody",
    "tcp",
    "udp",
    "http",
    "https",
    "misc",
    "dns",
    "icmp",
    "tcp_check",
    "http_get",
    "rr",
    "wrr",
    "sh",
    "maglev",
    "dr",
    "nat",
    "tun",
    "auto",
    "driver",
    "generic",
    "A",
    "AAAA",
    "md5:d41d8cd98f00b204e9800998ecf8427e",
    "d41d8cd98f00b204e9800998ecf8427e",
    "sha256:",
    "s3cret",
    "toolongpassword",
    "/health",
    "example.org",
];

const INTEGERS: &[i64] = &[
    i64::MIN,
    -65536,
    -255,
    -20,
    -1,
    0,
    1,
    2,
    3,
    51,
    100,
    254,
    255,
    256,
    1000,
    1001,
    1023,
    1024,
    4096,
    4097,
    65535,
    65536,
    65508,
    16777216,
    16777217,
    u32::MAX as i64,
    i64::MAX,
];

/// A TOML value, rendered by [`Val::render`].
#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Int(i64),
    /// Floats, dates, and text that is no value at all.
    Raw(String),
    Bool(bool),
    Arr(Vec<Val>),
    Table(Vec<(String, Val)>),
}

impl Val {
    fn render(&self, out: &mut String) {
        match self {
            Val::Str(s) => out.push_str(&quote(s)),
            Val::Int(n) => out.push_str(&n.to_string()),
            Val::Raw(s) => out.push_str(s),
            Val::Bool(b) => out.push_str(&b.to_string()),
            Val::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.render(out);
                }
                out.push(']');
            }
            Val::Table(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    out.push_str(if i > 0 { ", " } else { " " });
                    out.push_str(k);
                    out.push_str(" = ");
                    v.render(out);
                }
                out.push_str(" }");
            }
        }
    }
}

/// A TOML basic string holding `s`.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key: mostly the ones the parser knows, sometimes an unknown or quoted one.
fn key() -> impl Strategy<Value = String> {
    let known: Vec<&'static str> = TABLES
        .iter()
        .flat_map(|(_, keys)| keys.iter().copied())
        .collect();
    prop_oneof![
        8 => select(known).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
        1 => any::<String>().prop_map(|s| quote(&s.chars().take(8).collect::<String>())),
    ]
}

fn scalar() -> impl Strategy<Value = Val> {
    prop_oneof![
        6 => select(STRINGS).prop_map(|s| Val::Str(s.to_owned())),
        1 => any::<String>().prop_map(|s| Val::Str(s.chars().take(16).collect())),
        4 => select(INTEGERS).prop_map(Val::Int),
        1 => any::<i64>().prop_map(Val::Int),
        2 => any::<bool>().prop_map(Val::Bool),
        1 => select(&[
            "0.5", "1e308", "-0.0", "inf", "-inf", "nan", "1979-05-27T07:32:00Z",
            "07:32:00", "0x7fffffff", "0o777", "0b1", "1_000", "'literal'",
            "\"\"\"multi\nline\"\"\"", "99999999999999999999", "+1",
        ][..])
        .prop_map(|s| Val::Raw(s.to_owned())),
    ]
}

fn value() -> impl Strategy<Value = Val> {
    let nested = scalar().prop_recursive(3, 24, 6, |inner| {
        let check_keys = TABLES
            .iter()
            .find(|(t, _)| *t == "check")
            .expect("check keys")
            .1;
        prop_oneof![
            3 => vec(inner.clone(), 0..5).prop_map(Val::Arr),
            2 => vec((select(check_keys).prop_map(str::to_owned), inner.clone()), 0..5)
                .prop_map(Val::Table),
            1 => vec((key(), inner), 0..4).prop_map(Val::Table),
        ]
    });
    prop_oneof![4 => scalar(), 1 => nested]
}

/// One table: a known header with its own keys, or any header with any keys.
fn table() -> impl Strategy<Value = String> {
    let known = (0..TABLES.len() - 1).prop_flat_map(|t| {
        let (header, keys) = TABLES[t];
        let entry = prop_oneof![
            6 => select(keys).prop_map(str::to_owned),
            1 => key(),
        ];
        (Just(header), vec((entry, value()), 0..10))
    });
    let other = (select(MORE_HEADERS), vec((key(), value()), 0..6));
    (prop_oneof![6 => known, 1 => other], any::<bool>()).prop_map(|((header, entries), dup)| {
        let mut out = format!("{header}\n");
        let mut keys = std::collections::BTreeSet::new();
        for (k, v) in entries {
            // Mostly one value per key: a duplicate key stops the parse before validation.
            if !keys.insert(k.clone()) && !dup {
                continue;
            }
            out.push_str(&k);
            out.push_str(" = ");
            v.render(&mut out);
            out.push('\n');
        }
        out
    })
}

/// A document of generated tables, mostly after the one table every config needs.
fn generated() -> impl Strategy<Value = String> {
    let dataplane = prop_oneof![
        4 => Just("[dataplane]\ninterfaces = [\"eth0\"]\n\n"),
        1 => Just(""),
    ];
    (dataplane, vec(table(), 0..8))
        .prop_map(|(dataplane, tables)| format!("{dataplane}{}", tables.join("\n")))
}

/// A seed with some values replaced by generated ones (the key stays, so the value is
/// checked for that key), and generated `key = value` lines put in between its lines.
fn seed_with_generated_values() -> impl Strategy<Value = String> {
    let edit = prop_oneof![
        3 => (any::<Index>(), value()).prop_map(|(at, v)| (at, None, v)),
        1 => (any::<Index>(), key(), value()).prop_map(|(at, k, v)| (at, Some(k), v)),
    ];
    (0..SEEDS.len(), vec(edit, 1..4)).prop_map(|(seed, edits)| {
        let mut lines: Vec<String> = SEEDS[seed].lines().map(str::to_owned).collect();
        for (at, key, v) in edits {
            let mut rendered = String::new();
            v.render(&mut rendered);
            match key {
                Some(key) => lines.insert(at.index(lines.len() + 1), format!("{key} = {rendered}")),
                None => {
                    let pairs: Vec<usize> = (0..lines.len())
                        .filter(|&i| {
                            let l = lines[i].trim_start();
                            !l.starts_with('#') && !l.starts_with('[') && l.contains(" = ")
                        })
                        .collect();
                    if !pairs.is_empty() {
                        let i = pairs[at.index(pairs.len())];
                        let key_end = lines[i].find(" = ").expect("filtered") + 3;
                        lines[i] = format!("{}{rendered}", &lines[i][..key_end]);
                    }
                }
            }
        }
        lines.join("\n") + "\n"
    })
}

/// TOML's sections are tables: from a header to the next one.
fn is_header(line: &str) -> bool {
    line.trim_start().starts_with('[')
}

fn section_end(lines: &[&str], start: usize) -> usize {
    (start + 1..lines.len())
        .find(|&i| is_header(lines[i]))
        .unwrap_or(lines.len())
}

fn nested(depth: usize) -> String {
    match depth % 4 {
        0 => format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth)),
        1 => format!("x = {}1{}\n", "{ a = ".repeat(depth), " }".repeat(depth)),
        2 => format!("{} = 1\n", vec!["a"; depth].join(".")),
        _ => format!("[{}]\n", vec!["vrrp"; depth].join(".")),
    }
}

static FORMAT: Format = Format {
    tokens: &[
        "[",
        "]",
        "[[",
        "]]",
        "{",
        "}",
        "=",
        ",",
        ".",
        "\"",
        "'",
        "\"\"\"",
        "'''",
        "#",
        "\n",
        "\\",
        "\\u",
        "\\U0010FFFF",
        "\\uD800",
        " = ",
        "[global]\n",
        "[dataplane]\n",
        "[[virtual_server]]\n",
        "[[virtual_server.real_server]]\n",
        "[vrrp.VI_1]\n",
        "[script.chk_true]\n",
        "[vrrp_sync_group.VG_1]\n",
        "check = { type = \"tcp\" }\n",
        "port = 80\n",
        "interfaces = [\"eth0\"]\n",
        "= =",
        "[]",
        "{}",
        "\"\\\"",
    ],
    words: &[
        "router_id",
        "api",
        "interfaces",
        "vip",
        "port",
        "protocol",
        "scheduler",
        "forwarding",
        "real_server",
        "address",
        "weight",
        "check",
        "type",
        "interval",
        "vrrp",
        "interface",
        "virtual_router_id",
        "priority",
        "version",
        "advert_interval",
        "auth_pass",
        "virtual_ipaddresses",
        "unicast_peers",
        "track_scripts",
        "track_interfaces",
        "script",
        "command",
        "shell",
        "vrrp_sync_group",
        "group",
        "notify",
        "true",
        "false",
        "inf",
        "nan",
        "VI_1",
        "VI_EXT",
        "chk_true",
        "eth0",
        "tcp",
        "udp",
        "dr",
        "nat",
        "tun",
        "maglev",
        "http",
        "misc",
        "lb_algo",
        "lb_kind",
    ],
    numbers: &[
        "0",
        "-1",
        "255",
        "256",
        "65535",
        "65536",
        "4097",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999999999",
        "1e309",
        "0.0000001",
        "1_0",
        "00",
        "0x10",
        "1.5",
        "-0",
    ],
    section_end,
    is_section_start: is_header,
    nested,
};

/// What the campaigns saw, so that a campaign that never reaches a valid config (or
/// never an invalid one) fails instead of passing vacuously.
#[derive(Default, Debug)]
struct Seen {
    valid: u32,
    invalid: u32,
}

/// The properties, for any text.
fn parse_properly(text: &str, seen: &mut Seen) -> Result<(), TestCaseError> {
    let first = xdp_lb::config::parse(text, NAME);
    let again = xdp_lb::config::parse(text, NAME);
    prop_assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "parsing the same text twice gave two answers"
    );
    let error = match first {
        Ok(_) => {
            seen.valid += 1;
            return Ok(());
        }
        Err(e) => e,
    };
    seen.invalid += 1;
    let shown = error.to_string();
    let rest = shown.strip_prefix(&format!("{NAME}:"));
    let fields = rest.and_then(|r| {
        let mut parts = r.splitn(3, ':');
        let line = parts.next()?.parse::<usize>().ok()?;
        let col = parts.next()?.parse::<usize>().ok()?;
        let message = parts.next()?.strip_prefix(' ')?;
        Some((line, col, message))
    });
    let Some((line, col, message)) = fields else {
        return Err(TestCaseError::fail(format!(
            "the error does not read `{NAME}:LINE:COL: message`: {shown:?}"
        )));
    };
    prop_assert!(
        !message.trim().is_empty(),
        "the error says nothing: {:?}",
        shown
    );
    let location = error.location();
    prop_assert_eq!(
        location.map(|l| (l.line, l.col)),
        Some((line, col)),
        "location() and the message disagree: {:?}",
        shown
    );
    if let Err(why) = position_in_text(text, line, col) {
        return Err(TestCaseError::fail(format!("{shown:?}: {why}")));
    }
    Ok(())
}

#[test]
fn the_seeds_are_valid_configs() {
    for (i, seed) in SEEDS.iter().enumerate() {
        if let Err(e) = xdp_lb::config::parse(seed, NAME) {
            panic!("seed {i} does not parse, so its mutants start from an error: {e}");
        }
    }
}

#[test]
fn mutated_configs_parse_or_fail_at_a_place_in_the_text() {
    let seen = campaign(
        "fuzz_config/mutated",
        3_000,
        || mutated(&FORMAT, SEEDS, 6),
        |case: Mutated, seen: &mut Seen| parse_properly(&case.text, seen),
    );
    eprintln!("fuzz_config/mutated: {seen:?}");
    assert!(seen.valid > 0 && seen.invalid > 0, "{seen:?}");
}

#[test]
fn generated_configs_parse_or_fail_at_a_place_in_the_text() {
    let seen = campaign(
        "fuzz_config/generated",
        3_000,
        || {
            prop_oneof![
                2 => generated(),
                3 => seed_with_generated_values(),
                // Generated, then mutated like the seeds.
                1 => (generated(), vec(fuzz::mutation(&FORMAT), 1..4)).prop_map(|(text, ms)| {
                    ms.iter().fold(text, |t, m| fuzz::apply(&FORMAT, SEEDS, &t, m))
                }),
            ]
        },
        |text: String, seen: &mut Seen| parse_properly(&text, seen),
    );
    eprintln!("fuzz_config/generated: {seen:?}");
    assert!(seen.valid > 0 && seen.invalid > 0, "{seen:?}");
}
