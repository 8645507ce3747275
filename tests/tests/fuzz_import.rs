//! Fuzz target: the keepalived importer (`xdp_lb::import::import`) on mutated realistic
//! keepalived.conf files (`data/keepalived/*.conf` and a seed with the blocks they leave
//! out) and on files generated from keepalived's vocabulary: random nesting of `{ }`
//! blocks, quotes, `#` / `!` comments, keywords with random values. For every input: no
//! panic (nor stack overflow: it runs on a 2 MiB stack), the same answer twice, every
//! line it names inside the file, and a translation that is TOML and that
//! `xdp_lb::config::parse` reads as the importer's own validation does. proptest at
//! scale rather than cargo-fuzz: see `fuzz/mod.rs`; `XDP_LB_FUZZ_SCALE` and
//! `XDP_LB_FUZZ_SEED` there. No root, no network.

mod fuzz;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use fuzz::{Format, Mutated, campaign, mutated, position_in_text};
use xdp_lb::import::{GENERATED, ImportError, import};

const NAME: &str = "fuzz.conf";

const SEEDS: &[&str] = &[
    include_str!("data/keepalived/lb1.conf"),
    include_str!("data/keepalived/unsupported.conf"),
    include_str!("data/keepalived/unbalanced.conf"),
    include_str!("data/fuzz/every-block.conf"),
];

/// The seeds that translate to a valid configuration as they are.
const VALID_SEEDS: &[usize] = &[0, 3];

/// Words a keepalived.conf is made of: block and setting keywords.
const KEYWORDS: &[&str] = &[
    "global_defs",
    "vrrp_script",
    "vrrp_instance",
    "vrrp_sync_group",
    "virtual_server",
    "virtual_server_group",
    "real_server",
    "include",
    "router_id",
    "vrrp_version",
    "vrrp_garp_interval",
    "vrrp_garp_master_delay",
    "vrrp_garp_master_repeat",
    "vrrp_garp_master_refresh",
    "vrrp_garp_master_refresh_repeat",
    "vrrp_garp_lower_prio_delay",
    "vrrp_garp_lower_prio_repeat",
    "vrrp_higher_prio_send_advert",
    "vrrp_lower_prio_no_advert",
    "enable_script_security",
    "notification_email",
    "script",
    "interval",
    "timeout",
    "weight",
    "rise",
    "fall",
    "user",
    "state",
    "interface",
    "virtual_router_id",
    "priority",
    "advert_int",
    "version",
    "nopreempt",
    "preempt",
    "preempt_delay",
    "authentication",
    "auth_type",
    "auth_pass",
    "unicast_src_ip",
    "mcast_src_ip",
    "unicast_peer",
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "track_script",
    "track_interface",
    "notify",
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify_stop",
    "garp_master_delay",
    "garp_master_repeat",
    "garp_master_refresh",
    "garp_master_refresh_repeat",
    "garp_lower_prio_delay",
    "garp_lower_prio_repeat",
    "lower_prio_no_advert",
    "higher_prio_send_advert",
    "old_unicast_checksum",
    "use_vmac",
    "group",
    "delay_loop",
    "lb_algo",
    "lb_kind",
    "protocol",
    "quorum",
    "hysteresis",
    "quorum_up",
    "quorum_down",
    "omega",
    "sorry_server",
    "persistence_timeout",
    "ha_suspend",
    "alpha",
    "inhibit_on_failure",
    "notify_up",
    "notify_down",
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "MISC_CHECK",
    "DNS_CHECK",
    "PING_CHECK",
    "UDP_CHECK",
    "SMTP_CHECK",
    "url",
    "path",
    "status_code",
    "digest",
    "virtualhost",
    "connect_timeout",
    "connect_port",
    "connect_ip",
    "bindto",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "misc_path",
    "misc_timeout",
    "misc_dynamic",
    "type",
    "name",
    "warmup",
    "fwmark",
];

/// Arguments: names that refer to each other, addresses, numbers, keywords.
const ARGS: &[&str] = &[
    "VI_1",
    "VI_2",
    "chk_a",
    "chk_b",
    "VG_1",
    "eth0",
    "eth1",
    "lo",
    "MASTER",
    "BACKUP",
    "PASS",
    "AH",
    "TCP",
    "UDP",
    "SCTP",
    "DR",
    "NAT",
    "TUN",
    "rr",
    "wrr",
    "lc",
    "sh",
    "mh",
    "dev",
    "label",
    "scope",
    "global",
    "link",
    "brd",
    "weight",
    "-20",
    "-254",
    "0",
    "1",
    "2",
    "3",
    "51",
    "100",
    "150",
    "255",
    "256",
    "65535",
    "65536",
    "-1",
    "0.5",
    "0.01",
    "1.5",
    "99999999999999999999",
    "1e3",
    "nan",
    "192.0.2.100",
    "192.0.2.100/24",
    "192.0.2.11",
    "198.51.100.10",
    "2001:db8::100",
    "2001:db8::100/64",
    "fe80::1",
    "10.0.0.1/33",
    "256.0.0.1",
    "::",
    "/bin/true",
    "\"/bin/true arg\"",
    "\"\"",
    "\"a b c\"",
    "s3cret",
    "toolongpassword",
    "200",
    "200-299",
    "200,301",
    "d41d8cd98f00b204e9800998ecf8427e",
    "/health",
    "example.org",
    "AAAA",
    "nobody",
    "root",
    "true",
    "false",
    "on",
    "off",
];

/// What may appear inside each block (leaf settings, nested blocks). A block not
/// listed takes any keyword.
fn children(block: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match block {
        "global_defs" => (
            &[
                "router_id",
                "vrrp_version",
                "vrrp_garp_interval",
                "vrrp_garp_master_delay",
                "vrrp_garp_master_repeat",
                "vrrp_garp_master_refresh",
                "vrrp_garp_lower_prio_repeat",
                "vrrp_higher_prio_send_advert",
                "vrrp_lower_prio_no_advert",
                "enable_script_security",
            ],
            &["notification_email"],
        ),
        "vrrp_script" => (
            &[
                "script", "interval", "timeout", "weight", "rise", "fall", "user",
            ],
            &[],
        ),
        "vrrp_instance" => (
            &[
                "state",
                "interface",
                "virtual_router_id",
                "priority",
                "advert_int",
                "version",
                "nopreempt",
                "preempt_delay",
                "unicast_src_ip",
                "mcast_src_ip",
                "notify",
                "notify_master",
                "notify_backup",
                "notify_fault",
                "notify_stop",
                "garp_master_delay",
                "garp_master_repeat",
                "garp_master_refresh",
                "garp_lower_prio_repeat",
                "lower_prio_no_advert",
                "old_unicast_checksum",
                "use_vmac",
            ],
            &[
                "authentication",
                "virtual_ipaddress",
                "virtual_ipaddress_excluded",
                "unicast_peer",
                "track_script",
                "track_interface",
            ],
        ),
        "authentication" => (&["auth_type", "auth_pass"], &[]),
        "vrrp_sync_group" => (
            &["notify", "notify_master", "notify_backup", "notify_fault"],
            &["group"],
        ),
        "virtual_server" => (
            &[
                "delay_loop",
                "lb_algo",
                "lb_kind",
                "protocol",
                "quorum",
                "hysteresis",
                "quorum_up",
                "quorum_down",
                "omega",
                "sorry_server",
                "persistence_timeout",
                "ha_suspend",
            ],
            &["real_server"],
        ),
        "real_server" => (
            &["weight", "inhibit_on_failure", "notify_up", "notify_down"],
            &[
                "TCP_CHECK",
                "HTTP_GET",
                "SSL_GET",
                "MISC_CHECK",
                "DNS_CHECK",
                "PING_CHECK",
                "UDP_CHECK",
                "SMTP_CHECK",
            ],
        ),
        "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "DNS_CHECK" | "PING_CHECK"
        | "UDP_CHECK" | "SMTP_CHECK" => (
            &[
                "connect_timeout",
                "connect_port",
                "connect_ip",
                "bindto",
                "retry",
                "nb_get_retry",
                "delay_before_retry",
                "misc_path",
                "misc_timeout",
                "misc_dynamic",
                "user",
                "type",
                "name",
                "virtualhost",
                "warmup",
                "delay_loop",
            ],
            &["url"],
        ),
        "url" => (&["path", "status_code", "digest", "virtualhost"], &[]),
        _ => (KEYWORDS, &[]),
    }
}

/// Blocks whose statements are values (addresses, names), not keywords.
fn lists(block: &str) -> bool {
    matches!(
        block,
        "virtual_ipaddress"
            | "virtual_ipaddress_excluded"
            | "unicast_peer"
            | "track_script"
            | "track_interface"
            | "group"
            | "notification_email"
    )
}

/// One statement of a generated file, and how it is laid out.
#[derive(Debug, Clone)]
struct Stmt {
    keyword: String,
    args: Vec<String>,
    block: Option<Vec<Stmt>>,
    /// Bits: `{` on the next line, a `#` comment after, a `!` comment after, the whole
    /// block on one line.
    style: u8,
}

impl Stmt {
    fn render(&self, depth: usize, out: &mut String) {
        let indent = "    ".repeat(depth.min(8));
        let one_line = self.style & 8 != 0;
        out.push_str(&indent);
        out.push_str(&self.keyword);
        for a in &self.args {
            out.push(' ');
            out.push_str(a);
        }
        let comment = match self.style & 6 {
            2 => " # a comment { \" }",
            4 => " ! another }",
            _ => "",
        };
        match &self.block {
            None => {
                out.push_str(comment);
                out.push('\n');
            }
            Some(block) if one_line => {
                out.push_str(" {");
                for s in block {
                    out.push(' ');
                    out.push_str(&s.keyword);
                    for a in &s.args {
                        out.push(' ');
                        out.push_str(a);
                    }
                }
                out.push_str(" }");
                out.push_str(comment);
                out.push('\n');
            }
            Some(block) => {
                if self.style & 1 != 0 {
                    out.push_str(comment);
                    out.push('\n');
                    out.push_str(&indent);
                    out.push_str("{\n");
                } else {
                    out.push_str(" {");
                    out.push_str(comment);
                    out.push('\n');
                }
                for s in block {
                    s.render(depth + 1, out);
                }
                out.push_str(&indent);
                out.push_str("}\n");
            }
        }
    }
}

/// An argument: mostly from [`ARGS`], sometimes any word or quoted text.
fn arg() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(ARGS).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9_./:-]{1,12}",
        1 => any::<String>().prop_map(|s| {
            let s: String = s.chars().filter(|c| *c != '"' && *c != '\n').take(10).collect();
            format!("\"{s}\"")
        }),
    ]
}

/// A statement inside `parent`: a setting, a value of a list block, or a nested block.
fn stmt(parent: &'static str, depth: u32) -> BoxedStrategy<Stmt> {
    let (leaves, blocks) = children(parent);
    let leaf_keyword = if lists(parent) {
        arg().boxed()
    } else {
        prop_oneof![
            9 => select(leaves).prop_map(str::to_owned),
            1 => select(KEYWORDS).prop_map(str::to_owned),
        ]
        .boxed()
    };
    let leaf =
        (leaf_keyword, vec(arg(), 0..4), any::<u8>()).prop_map(|(keyword, args, style)| Stmt {
            keyword,
            args,
            block: None,
            style: style & 6,
        });
    if depth == 0 || blocks.is_empty() {
        return leaf.boxed();
    }
    prop_oneof![3 => leaf, 1 => select(blocks).prop_flat_map(move |b| block(b, depth - 1))].boxed()
}

/// A `kind` block with arguments fit for it and generated statements.
fn block(kind: &'static str, depth: u32) -> BoxedStrategy<Stmt> {
    let args = match kind {
        "vrrp_instance" | "vrrp_script" | "vrrp_sync_group" => {
            let name =
                select(&["VI_1", "VI_2", "chk_a", "chk_b", "VG_1"][..]).prop_map(str::to_owned);
            prop_oneof![4 => name.clone().prop_map(|n| vec![n]), 1 => vec(name, 0..3)].boxed()
        }
        "virtual_server" | "real_server" => prop_oneof![
            4 => (select(&["192.0.2.100", "192.0.2.11", "2001:db8::100", "198.51.100.10"][..]),
                  select(&["80", "443", "53", "0", "65536"][..]))
                .prop_map(|(a, p)| vec![a.to_owned(), p.to_owned()]),
            1 => vec(arg(), 0..3),
        ]
        .boxed(),
        _ => vec(arg(), 0..2).boxed(),
    };
    let size = if lists(kind) { 0..4 } else { 0..10 };
    // What the block needs to translate, each mostly there, so that generated files
    // get past "no interface" and "missing key" to the rest of the translation.
    let essentials: &'static [(&'static str, &'static [&'static str])] = match kind {
        "vrrp_instance" => &[
            ("interface", &["eth0", "eth1"]),
            ("virtual_router_id", &["51", "52"]),
            ("priority", &["100", "150"]),
            (
                "virtual_ipaddress",
                &["192.0.2.100/24", "192.0.2.101", "2001:db8::100/64"],
            ),
        ],
        "vrrp_script" => &[("script", &["/bin/true", "\"/bin/true x\""])],
        _ => &[],
    };
    // Each there seven times in eight, with one of its values.
    let essentials = vec(0usize..8, essentials.len()).prop_map(move |draws| {
        essentials
            .iter()
            .zip(draws)
            .filter(|(_, draw)| *draw > 0)
            .map(|((keyword, values), draw)| {
                let value = values[draw % values.len()].to_owned();
                let (args, block) = if lists(keyword) {
                    let address = Stmt {
                        keyword: value,
                        args: Vec::new(),
                        block: None,
                        style: 0,
                    };
                    (Vec::new(), Some(vec![address]))
                } else {
                    (vec![value], None)
                };
                Stmt {
                    keyword: (*keyword).to_owned(),
                    args,
                    block,
                    style: 0,
                }
            })
            .collect::<Vec<_>>()
    });
    (args, essentials, vec(stmt(kind, depth), size), any::<u8>())
        .prop_map(move |(args, mut first, rest, style)| {
            first.extend(rest);
            Stmt {
                keyword: kind.to_owned(),
                args,
                block: Some(first),
                style,
            }
        })
        .boxed()
}

/// A whole generated file: top-level blocks (and the odd stray statement).
fn generated() -> impl Strategy<Value = String> {
    let top = prop_oneof![
        1 => block("global_defs", 1),
        2 => block("vrrp_script", 1),
        4 => block("vrrp_instance", 2),
        1 => block("vrrp_sync_group", 2),
        4 => block("virtual_server", 4),
        1 => stmt("", 0),
        1 => select(KEYWORDS).prop_flat_map(|k| block(k, 2)),
    ];
    vec(top, 0..6).prop_map(|stmts| {
        let mut out = String::new();
        for s in stmts {
            s.render(0, &mut out);
        }
        out
    })
}

/// A keepalived section: a line that opens a block, to the line that closes it.
fn opens_block(line: &str) -> bool {
    line.trim_end().ends_with('{')
}

fn section_end(lines: &[&str], start: usize) -> usize {
    let mut depth = 0i64;
    for (i, line) in lines.iter().enumerate().skip(start) {
        let code = line.split(['#', '!']).next().unwrap_or("");
        depth += code.matches('{').count() as i64 - code.matches('}').count() as i64;
        if depth <= 0 && i > start {
            return i + 1;
        }
    }
    lines.len()
}

fn nested(depth: usize) -> String {
    match depth % 3 {
        0 => format!(
            "{}{}",
            "virtual_server {\n".repeat(depth),
            "}\n".repeat(depth)
        ),
        1 => format!("{}{}\n", "a { ".repeat(depth), "} ".repeat(depth)),
        _ => format!("{}{}", "x\n{\n".repeat(depth), "}\n".repeat(depth)),
    }
}

static FORMAT: Format = Format {
    tokens: &[
        "{",
        "}",
        "{ }",
        "\"",
        "\"\"",
        "#",
        "!",
        "\n",
        " ",
        "\t",
        "{\n",
        "}\n",
        "\\",
        "\"{\"",
        "include /etc/keepalived/other.conf\n",
        "vrrp_instance VI_9 {\n",
        "real_server ",
        "virtual_ipaddress {\n192.0.2.1/24\n}\n",
        "track_script {\nchk_a\n}\n",
        "authentication {\nauth_type PASS\nauth_pass x\n}\n",
        "TCP_CHECK {\n}\n",
        "url { path / }\n",
        "weight ",
        "nopreempt\n",
        "state MASTER\n",
        "$VAR",
        "@lb1 ",
    ],
    words: KEYWORDS,
    numbers: &[
        "0",
        "-1",
        "1",
        "255",
        "256",
        "4096",
        "65535",
        "65536",
        "0.001",
        "0.5",
        "1.99",
        "4294967296",
        "9223372036854775808",
        "99999999999999999999999",
        "1e9",
        "-0",
        "00",
        "0x10",
        "nan",
        "inf",
    ],
    section_end,
    is_section_start: opens_block,
    nested,
};

#[derive(Default, Debug)]
struct Seen {
    syntax_errors: u32,
    no_interface: u32,
    /// Translated, and the translation is a valid configuration.
    valid: u32,
    /// Translated, and the importer's validation reports why it is not.
    invalid: u32,
    /// Of those, translations with a table twice (a name defined twice in the file).
    defined_twice: u32,
}

/// The properties, for any text; `interface` as `--interface` would give it.
fn import_properly(text: &str, interface: bool, seen: &mut Seen) -> Result<(), TestCaseError> {
    let interfaces: Vec<String> = if interface {
        vec!["eth9".into()]
    } else {
        Vec::new()
    };
    let result = import(text, NAME, &interfaces);
    let again = import(text, NAME, &interfaces);
    prop_assert_eq!(
        format!("{:?}", result.as_ref().map(|i| (&i.toml, &i.notes))),
        format!("{:?}", again.as_ref().map(|i| (&i.toml, &i.notes))),
        "importing the same text twice gave two answers"
    );
    // The lines a message may name: 1 to the last (1 for an empty file).
    let last_line = text.lines().count().max(1);
    let imported = match result {
        Err(ImportError::Syntax { source, error }) => {
            seen.syntax_errors += 1;
            prop_assert_eq!(source, NAME);
            prop_assert!(
                (1..=last_line).contains(&error.line),
                "syntax error at line {} of a {}-line file: {}",
                error.line,
                last_line,
                error.message
            );
            prop_assert!(!error.message.trim().is_empty());
            return Ok(());
        }
        Err(e @ ImportError::Read { .. }) => {
            prop_assert!(false, "importing a text cannot fail to read it: {}", e);
            return Ok(());
        }
        Err(ImportError::NoInterface { .. }) => {
            seen.no_interface += 1;
            prop_assert!(interfaces.is_empty(), "no interface although one was given");
            return Ok(());
        }
        Ok(imported) => imported,
    };
    let mut previous = 0;
    for (note, shown) in imported.notes.iter().zip(imported.report()) {
        prop_assert!(
            (1..=last_line).contains(&note.line),
            "note at line {} of a {}-line file: {:?}",
            note.line,
            last_line,
            note
        );
        prop_assert!(note.line >= previous, "notes out of line order");
        previous = note.line;
        let prefix = format!("{NAME}:{}: ", note.line);
        prop_assert!(shown.starts_with(&prefix), "{:?}", shown);
        prop_assert!(!note.why.trim().is_empty(), "{:?}", note);
    }
    if interface {
        prop_assert_eq!(&imported.interfaces, &interfaces);
        prop_assert!(!imported.interfaces_from_vrrp);
    } else {
        prop_assert!(!imported.interfaces.is_empty() && imported.interfaces_from_vrrp);
    }
    // The translation is TOML: strings and keys are escaped. The one way it is not: a
    // name keepalived's file defines twice (two `vrrp_script chk`) becomes a table
    // defined twice, which the validation below reports at both files' lines.
    if let Err(e) = toml::from_str::<toml::Table>(&imported.toml) {
        prop_assert!(
            e.message().contains("duplicate key"),
            "the translation is not TOML: {}\n{}",
            e,
            imported.toml
        );
        seen.defined_twice += 1;
        prop_assert!(
            imported.validate().is_err(),
            "validated a translation that is not TOML"
        );
    }
    match imported.validate() {
        Ok(config) => {
            seen.valid += 1;
            // What the daemon would read from the file the import printed.
            match xdp_lb::config::parse(&imported.toml, GENERATED) {
                Ok(parsed) => prop_assert_eq!(format!("{parsed:?}"), format!("{config:?}")),
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "validated, but config::parse refuses it: {e}\n{}",
                        imported.toml
                    )));
                }
            }
            prop_assert_eq!(&config.dataplane.interfaces, &imported.interfaces);
        }
        Err(message) => {
            seen.invalid += 1;
            // `the translated configuration is not valid: generated:L:C: why`, then the
            // generated line L quoted, then the keepalived line it came from, if any.
            let mut lines = message.lines();
            let first = lines.next().unwrap_or("");
            let located = first
                .strip_prefix("the translated configuration is not valid: ")
                .and_then(|r| r.strip_prefix(&format!("{GENERATED}:")))
                .and_then(|r| {
                    let mut parts = r.splitn(3, ':');
                    let line = parts.next()?.parse::<usize>().ok()?;
                    let col = parts.next()?.parse::<usize>().ok()?;
                    Some((line, col, parts.next()?.trim().to_owned()))
                });
            let Some((line, col, why)) = located else {
                return Err(TestCaseError::fail(format!(
                    "validation error without its place: {message:?}"
                )));
            };
            prop_assert!(!why.is_empty(), "{:?}", message);
            if let Err(e) = position_in_text(&imported.toml, line, col) {
                return Err(TestCaseError::fail(format!(
                    "{message}\n{e}\n{}",
                    imported.toml
                )));
            }
            let quoted = format!("  {GENERATED}:{line} | ");
            prop_assert!(
                lines.next().is_some_and(|l| l.starts_with(&quoted)),
                "the generated line is not quoted: {:?}",
                message
            );
            if let Some(origin) = lines.next() {
                let origin_line = origin
                    .strip_prefix(&format!("  {NAME}:"))
                    .and_then(|r| r.split(" | ").next())
                    .and_then(|n| n.parse::<usize>().ok());
                prop_assert!(
                    origin_line.is_some_and(|n| (1..=last_line).contains(&n)),
                    "the keepalived line is not one of the file's: {:?}",
                    message
                );
            }
        }
    }
    Ok(())
}

#[test]
fn the_valid_seeds_translate_to_valid_configs() {
    for &i in VALID_SEEDS {
        let imported = import(SEEDS[i], NAME, &[]).unwrap_or_else(|e| panic!("seed {i}: {e}"));
        if let Err(e) = imported.validate() {
            panic!("seed {i} translates to an invalid config, so its mutants do too: {e}");
        }
    }
}

#[test]
fn mutated_keepalived_confs_import_or_say_why() {
    let seen = campaign(
        "fuzz_import/mutated",
        3_000,
        || (mutated(&FORMAT, SEEDS, 6), any::<bool>()),
        |(case, interface): (Mutated, bool), seen: &mut Seen| {
            import_properly(&case.text, interface, seen)
        },
    );
    eprintln!("fuzz_import/mutated: {seen:?}");
    assert!(
        seen.valid > 0 && seen.invalid > 0 && seen.syntax_errors > 0,
        "{seen:?}"
    );
}

#[test]
fn generated_keepalived_confs_import_or_say_why() {
    let seen = campaign(
        "fuzz_import/generated",
        3_000,
        || {
            let text = prop_oneof![
                3 => generated(),
                1 => (generated(), vec(fuzz::mutation(&FORMAT), 1..4)).prop_map(|(text, ms)| {
                    ms.iter().fold(text, |t, m| fuzz::apply(&FORMAT, SEEDS, &t, m))
                }),
            ];
            (text, any::<bool>())
        },
        |(text, interface): (String, bool), seen: &mut Seen| {
            import_properly(&text, interface, seen)
        },
    );
    eprintln!("fuzz_import/generated: {seen:?}");
    assert!(seen.valid > 0 && seen.invalid > 0, "{seen:?}");
}
