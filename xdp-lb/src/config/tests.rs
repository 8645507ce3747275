//! Tests of `config`: a full file, the defaults, and each error with its exact
//! line:col and a key phrase of its message.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

/// Joins `lines` with '\n', so a line's number in the file is its index + 1.
fn doc(lines: &[&str]) -> String {
    lines.join("\n") + "\n"
}

/// A `[dataplane]` that is valid, taking lines 1 and 2.
const DP: [&str; 2] = ["[dataplane]", "interfaces = [\"eth0\"]"];

fn with_dp(rest: &[&str]) -> String {
    let mut lines = DP.to_vec();
    lines.extend_from_slice(rest);
    doc(&lines)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[track_caller]
fn parse_ok(text: &str) -> Config {
    parse(text, "lb.toml").unwrap_or_else(|e| panic!("expected a valid config, got: {e}\n{text}"))
}

/// Parses `text`, expects an error at `line:col` whose message contains every phrase.
#[track_caller]
fn assert_error(text: &str, line: usize, col: usize, phrases: &[&str]) {
    let error = match parse(text, "lb.toml") {
        Ok(config) => panic!("expected an error, parsed {config:?}\n{text}"),
        Err(error) => error,
    };
    let shown = error.to_string();
    let prefix = format!("lb.toml:{line}:{col}: ");
    assert!(
        shown.starts_with(&prefix),
        "expected {prefix:?}…, got {shown:?}\n{text}"
    );
    let message = error.message().expect("a located error");
    assert_eq!(
        message.chars().next().map(char::is_uppercase),
        Some(false),
        "{shown}"
    );
    for phrase in phrases {
        assert!(shown.contains(phrase), "expected {phrase:?} in {shown:?}");
    }
}

// ----- valid files -----

#[test]
fn full_config_parses_to_expected_values() {
    let text = doc(&[
        "[global]",
        "router_id = \"lb1\"",
        "",
        "[dataplane]",
        "interfaces = [\"eth0\", \"eth1\"]",
        "xdp_mode = \"driver\"",
        "max_flows = 1048576",
        "neighbour_timeout = \"1m30s\"",
        "",
        "[[virtual_server]]",
        "vip = \"192.0.2.100\"",
        "port = 80",
        "protocol = \"tcp\"",
        "scheduler = \"rr\"",
        "forwarding = \"dr\"",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "  port = 8080",
        "  weight = 3",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.12\"",
        "  weight = 0",
        "",
        "[[virtual_server]]",
        "vip = \"2001:db8::100\"",
        "port = 53",
        "protocol = \"udp\"",
        "  [[virtual_server.real_server]]",
        "  address = \"2001:db8::11\"",
    ]);
    let config = parse_ok(&text);
    assert_eq!(config.global.router_id.as_deref(), Some("lb1"));
    let dp = &config.dataplane;
    assert_eq!(dp.interfaces, ["eth0", "eth1"]);
    assert_eq!(dp.xdp_mode, XdpMode::Driver);
    assert_eq!(dp.max_flows, 1_048_576);
    assert_eq!(dp.neighbour_timeout, Duration::from_secs(90));

    assert_eq!(config.virtual_servers.len(), 2);
    let web = &config.virtual_servers[0];
    assert_eq!(
        (web.members.clone(), web.group.clone(), web.protocol),
        (vec!["192.0.2.100:80".parse().unwrap()], None, Protocol::Tcp)
    );
    assert_eq!(
        (web.scheduler, web.forwarding),
        (Scheduler::Rr, Forwarding::Dr)
    );
    assert_eq!(
        web.location,
        Location {
            source: "lb.toml".into(),
            line: 11,
            col: 7
        }
    );
    let rs: Vec<_> = web
        .real_servers
        .iter()
        .map(|r| (r.address, r.port, r.weight))
        .collect();
    assert_eq!(rs, [(ip("192.0.2.11"), 8080, 3), (ip("192.0.2.12"), 80, 0)]);
    assert_eq!(web.real_servers[1].location.to_string(), "lb.toml:21:13");

    let dns = &config.virtual_servers[1];
    assert_eq!(
        (dns.members.clone(), dns.protocol),
        (vec!["[2001:db8::100]:53".parse().unwrap()], Protocol::Udp)
    );
    assert_eq!(
        (dns.scheduler, dns.forwarding),
        (Scheduler::Wrr, Forwarding::Dr)
    );
    assert_eq!(dns.real_servers[0].address, ip("2001:db8::11"));
    assert_eq!(
        (dns.real_servers[0].port, dns.real_servers[0].weight),
        (53, 1)
    );
}

#[test]
fn defaults_apply_and_zero_virtual_servers_is_valid() {
    let config = parse_ok(&doc(&DP));
    assert_eq!(config.global.router_id, None);
    assert_eq!(config.dataplane.interfaces, ["eth0"]);
    assert_eq!(config.dataplane.xdp_mode, XdpMode::Auto);
    assert_eq!(config.dataplane.max_flows, 262_144);
    assert_eq!(config.dataplane.neighbour_timeout, Duration::from_secs(5));
    assert!(config.virtual_servers.is_empty());

    let config = parse_ok(&with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.100\"",
        "port = 443",
        "[[virtual_server.real_server]]",
        "address = \"192.0.2.11\"",
    ]));
    let vs = &config.virtual_servers[0];
    assert_eq!(
        (vs.protocol, vs.scheduler, vs.forwarding),
        (Protocol::Tcp, Scheduler::Wrr, Forwarding::Dr)
    );
    assert_eq!(
        (vs.real_servers[0].port, vs.real_servers[0].weight),
        (443, 1)
    );
}

#[test]
fn inline_tables_are_accepted() {
    let config = parse_ok(&doc(&[
        "dataplane = { interfaces = [\"eth0\"], xdp_mode = \"generic\" }",
        "virtual_server = [",
        "  { vip = \"192.0.2.1\", port = 80, real_server = [{ address = \"192.0.2.2\" }] },",
        "]",
    ]));
    assert_eq!(config.dataplane.xdp_mode, XdpMode::Generic);
    assert_eq!(
        config.virtual_servers[0].real_servers[0].address,
        ip("192.0.2.2")
    );
}

#[test]
fn example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/lb.example.toml");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.virtual_servers.len(), 3);
    assert_eq!(config.virtual_servers[2].name(), "group shop/tcp");
    assert!(
        config.virtual_servers[0]
            .location
            .source
            .ends_with("lb.example.toml")
    );
}

#[test]
fn all_weights_zero_is_allowed() {
    let config = parse_ok(&with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.100\"",
        "port = 80",
        "[[virtual_server.real_server]]",
        "address = \"192.0.2.11\"",
        "weight = 0",
        "[[virtual_server.real_server]]",
        "address = \"192.0.2.12\"",
        "weight = 0",
    ]));
    assert!(
        config.virtual_servers[0]
            .real_servers
            .iter()
            .all(|r| r.weight == 0)
    );
}

#[test]
fn same_vip_and_port_with_another_protocol_is_another_service() {
    let config = parse_ok(&with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.100\"",
        "port = 53",
        "[[virtual_server.real_server]]",
        "address = \"192.0.2.11\"",
        "[[virtual_server]]",
        "vip = \"192.0.2.100\"",
        "port = 53",
        "protocol = \"udp\"",
        "[[virtual_server.real_server]]",
        "address = \"192.0.2.11\"",
    ]));
    assert_eq!(config.virtual_servers.len(), 2);
}

#[test]
fn weights_with_a_common_divisor_fit_the_schedule() {
    // 65534 + 2 = 65536, gcd 2: a schedule of 32768 slots.
    parse_ok(&with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.100\"",
        "port = 80",
        "[[virtual_server.real_server]]",
        "address = \"192.0.2.11\"",
        "weight = 65534",
        "[[virtual_server.real_server]]",
        "address = \"192.0.2.12\"",
        "weight = 2",
        "[[virtual_server.real_server]]",
        "address = \"192.0.2.13\"",
        "weight = 65534",
    ]));
}

// ----- locations -----

#[test]
fn location_display_and_columns_count_characters_with_crlf_tabs_and_bom() {
    let location = Location {
        source: "lb.toml".into(),
        line: 12,
        col: 5,
    };
    assert_eq!(location.to_string(), "lb.toml:12:5");

    // CRLF line ends, a tab before the key, a multi-byte character before the bad value.
    let text = "[dataplane]\r\ninterfaces = [\"eth0\"]\r\n\tmax_flows = 1\r\n";
    assert_error(text, 3, 14, &["`max_flows` = 1 is out of range"]);
    let text = "[dataplane]\r\ninterfaces = [\"é\", \"a/b\"]\r\n";
    assert_error(text, 2, 20, &["\"a/b\" is not a valid interface name"]);
    let text = "\u{feff}[dataplane]\ninterfaces = [\"eth0\"]\nbogus = 1\n";
    assert_error(text, 3, 1, &["unknown key `bogus`"]);
    let text = "\u{feff}[dataplane]\ninterfaces = [\"eth0\"]\nbogus = 1\n";
    // Everything on one line: the column past the header counts the BOM as nothing.
    assert_error(&text.replace('\n', " "), 1, 13, &["expected newline"]);
}

// ----- file and syntax errors -----

#[test]
fn load_refuses_what_is_not_a_regular_file_or_is_too_big() {
    let error = load(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(error.contains("not a regular file"), "{error}");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("lb.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // No writer: a blocking open would wait for one forever.
    let error = load(&fifo).unwrap_err().to_string();
    assert!(error.contains("not a regular file"), "{error}");
    let big = dir.path().join("big.toml");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(MAX_CONFIG_BYTES + 1).unwrap();
    let error = load(&big).unwrap_err().to_string();
    assert!(error.contains("larger than 64 MiB"), "{error}");
}

#[test]
fn load_names_the_path_of_an_unreadable_file() {
    let error = load(Path::new("/nonexistent/lb.toml")).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "/nonexistent/lb.toml: cannot read config file: No such file or directory (os error 2)",
        "names the path and the OS error"
    );
    assert_eq!(error.location(), None);
}

#[test]
fn syntax_error_is_located() {
    let text = with_dp(&["[[virtual_server]]", "vip = \"192.0.2.1", "port = 80"]);
    assert_error(&text, 4, 17, &["invalid basic string"]);
    let text = with_dp(&["max_flows = 1024", "max_flows = 2048"]);
    assert_error(&text, 4, 1, &["duplicate key `max_flows`"]);
}

#[test]
fn a_control_character_in_a_comment_gets_a_message_not_an_empty_one() {
    // toml reports these with an empty message; found by tests/tests/fuzz_config.rs.
    let text = with_dp(&["#\0 api = \"127.0.0.1:9180\""]);
    assert_error(&text, 3, 2, &["control character U+0000", "comment"]);
    let text = with_dp(&["# a lone\rcarriage return"]);
    assert_error(&text, 3, 9, &["control character U+000D"]);
}

#[test]
fn an_error_after_a_multibyte_character_and_an_equals_sign_is_reported_not_a_panic() {
    // Looking for the key before the error cut the text inside the `￼` (three bytes);
    // found by tests/tests/fuzz_config.rs.
    let text = with_dp(&["xdp_mode = \"\u{fffc}=\0\""]);
    assert_error(&text, 3, 15, &["invalid basic string"]);
    let text = with_dp(&["# é=\0"]);
    assert_error(&text, 3, 5, &["control character U+0000"]);
}

// ----- unknown keys and values -----

#[test]
fn unknown_key_points_at_the_key_and_lists_valid_keys() {
    let text = with_dp(&["  bogus = 1"]);
    assert_error(
        &text,
        3,
        3,
        &["unknown key `bogus`", "`interfaces`", "`neighbour_timeout`"],
    );
    let text = doc(&[
        "[dataplane]",
        "interfaces = [\"eth0\"]",
        "[vrrp_script.chk]",
        "script = \"/bin/true\"",
    ]);
    assert_error(
        &text,
        3,
        2,
        &[
            "unknown key `vrrp_script`",
            "`dataplane`",
            "`virtual_server`",
            "`vrrp`",
        ],
    );
}

#[test]
fn keepalived_keys_get_a_hint() {
    let service = ["[[virtual_server]]", "vip = \"192.0.2.1\"", "port = 80"];
    let mut lines = service.to_vec();
    lines.push("lb_algo = \"wrr\"");
    assert_error(
        &with_dp(&lines),
        6,
        1,
        &["unknown key `lb_algo`", "did you mean `scheduler`?"],
    );
    let mut lines = service.to_vec();
    lines.push("lb_kind = \"DR\"");
    assert_error(
        &with_dp(&lines),
        6,
        1,
        &["unknown key `lb_kind`", "did you mean `forwarding`?"],
    );
    let mut lines = service.to_vec();
    lines.push("delay_loop = 6");
    assert_error(
        &with_dp(&lines),
        6,
        1,
        &["unknown key `delay_loop`", "`scheduler`"],
    );
}

#[test]
fn unknown_key_in_real_server() {
    let text = with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.1\"",
        "port = 80",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "  notify_down = \"/bin/true\"",
    ]);
    assert_error(
        &text,
        8,
        3,
        &[
            "unknown key `notify_down`",
            "`address`",
            "`weight`",
            "`check`",
        ],
    );
}

// ----- health checks and sorry server -----

fn with_check(check: &str) -> String {
    with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.1\"",
        "port = 80",
        "sorry_server = \"192.0.2.250:8080\"",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "  inhibit_on_failure = true",
        &format!("  check = {check}"),
    ])
}

#[test]
fn an_http_check_takes_keepalived_parameters() {
    let config = parse(
        &with_check(
            "{ type = \"http\", path = \"/health\", status = [200, 204], interval = \"2s\", \
             connect_timeout = \"500ms\", retry = 0, rise = 2, fall = 3, alpha = true, \
             digest = \"md5:d41d8cd98f00b204e9800998ecf8427e\", virtualhost = \"www.example.org\" }",
        ),
        "lb.toml",
    )
    .unwrap();
    let vs = &config.virtual_servers[0];
    assert_eq!(vs.sorry_server, Some("192.0.2.250:8080".parse().unwrap()));
    let rs = &vs.real_servers[0];
    assert!(rs.inhibit_on_failure);
    let check = rs.check.as_ref().unwrap();
    let xdp_lb_checks::CheckSpec::Http(http) = &check.spec else {
        panic!("{:?}", check.spec)
    };
    assert_eq!(http.urls.len(), 1);
    assert_eq!(http.urls[0].path, "/health");
    assert_eq!(http.urls[0].status, vec![200, 204]);
    assert_eq!(
        http.urls[0].digest,
        Some(xdp_lb_checks::Digest::Md5(
            "d41d8cd98f00b204e9800998ecf8427e".into()
        ))
    );
    assert_eq!(http.urls[0].virtualhost, None);
    assert_eq!(http.virtualhost.as_deref(), Some("www.example.org"));
    let p = &check.params;
    assert_eq!(p.server, "192.0.2.11:80".parse().unwrap());
    assert_eq!(
        (p.interval, p.warmup),
        (Duration::from_secs(2), Duration::from_secs(2))
    );
    assert_eq!(p.connect_timeout, Duration::from_millis(500));
    assert_eq!((p.retry, p.rise, p.fall, p.alpha), (0, 2, 3, true));
}

#[test]
fn keepalived_checker_names_are_accepted() {
    let config = parse(
        &with_check(
            "{ type = \"TCP_CHECK\" }"
                .replace("TCP_CHECK", "tcp_check")
                .as_str(),
        ),
        "lb.toml",
    )
    .unwrap();
    let check = config.virtual_servers[0].real_servers[0]
        .check
        .as_ref()
        .unwrap();
    assert_eq!(check.spec, xdp_lb_checks::CheckSpec::Tcp);
}

fn http_of(check: &str) -> xdp_lb_checks::HttpCheck {
    let config = parse_ok(&with_check(check));
    let check = config.virtual_servers[0].real_servers[0]
        .check
        .clone()
        .expect("a check");
    match check.spec {
        xdp_lb_checks::CheckSpec::Http(http) | xdp_lb_checks::CheckSpec::Https { http, .. } => http,
        other => panic!("expected an http check, got {other:?}"),
    }
}

#[test]
fn an_http_check_lists_several_urls_each_with_its_settings() {
    use xdp_lb_checks::{DEFAULT_STATUS, Digest, HttpUrl};
    let http = http_of(
        "{ type = \"https\", virtualhost = \"www.example.org\", urls = [\
         { path = \"/a\", status = [204, \"300-302\"], \
           digest = \"md5:d41d8cd98f00b204e9800998ecf8427e\" }, \
         { path = \"/b\", virtualhost = \"b.example.org\" }, {}] }",
    );
    assert_eq!(
        http.urls,
        vec![
            HttpUrl {
                path: "/a".into(),
                status: vec![204, 300, 301, 302],
                digest: Some(Digest::Md5("d41d8cd98f00b204e9800998ecf8427e".into())),
                virtualhost: None,
            },
            HttpUrl {
                path: "/b".into(),
                status: DEFAULT_STATUS.collect(),
                digest: None,
                virtualhost: Some("b.example.org".into()),
            },
            // keepalived's defaults: path `/`, any 2xx.
            HttpUrl::new("/"),
        ]
    );
    assert_eq!(http.virtualhost.as_deref(), Some("www.example.org"));
}

#[test]
fn the_single_url_form_is_a_one_element_urls_list() {
    let short = http_of(
        "{ type = \"http\", path = \"/h\", status = [\"200-204\"], \
         digest = \"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\" }",
    );
    let long = http_of(
        "{ type = \"http\", urls = [{ path = \"/h\", status = [\"200-204\"], \
         digest = \"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\" }] }",
    );
    assert_eq!(short, long);
    assert_eq!(short.urls[0].status, vec![200, 201, 202, 203, 204]);
    // Nothing given: one url, `/`, any 2xx.
    assert_eq!(
        http_of("{ type = \"http\" }"),
        xdp_lb_checks::HttpCheck::new("/")
    );
}

#[test]
fn url_list_errors_point_at_the_key() {
    assert_error(
        &with_check("{ type = \"http\", path = \"/\", urls = [{ path = \"/a\" }] }"),
        10,
        35,
        &["`path` cannot be given beside `urls`", "in each url"],
    );
    assert_error(
        &with_check("{ type = \"http\", urls = [] }"),
        10,
        35,
        &["`urls` is empty"],
    );
    assert_error(
        &with_check("{ type = \"tcp\", urls = [{ path = \"/a\" }] }"),
        10,
        34,
        &["`urls` does not apply to a tcp check (it is for: http, https)"],
    );
    assert_error(
        &with_check("{ type = \"http\", urls = [{ path = \"/a\", status = [\"299-200\"] }] }"),
        10,
        60,
        &[
            "`status` must be a list of status codes and ranges",
            "\"299-200\"",
        ],
    );
    // The checkers' own validation names the url by position and path.
    assert_error(
        &with_check("{ type = \"http\", urls = [{ path = \"/a\" }, { path = \"b\" }] }"),
        10,
        11,
        &["url 2 (b): http path \"b\" must start with '/'"],
    );
}

#[test]
fn an_unknown_url_key_is_named() {
    let error = parse(
        &with_check("{ type = \"http\", urls = [{ path = \"/a\", code = 200 }] }"),
        "lb.toml",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        error,
        "lb.toml:10:51: unknown key `code`, expected one of `path`, `status`, `digest`, \
         `virtualhost`"
    );
}

#[test]
fn check_errors_point_at_the_check() {
    // Line 10 is the check line; columns point at the offending value.
    assert_error(
        &with_check("{ type = \"smtp\" }"),
        10,
        20,
        &["invalid check `type` \"smtp\"", "\"http\""],
    );
    assert_error(
        &with_check("{ type = \"tcp\", path = \"/\" }"),
        10,
        34,
        &["`path` does not apply to a tcp check (it is for: http, https)"],
    );
    assert_error(
        &with_check("{ type = \"misc\", command = [\"/nonexistent/check\"] }"),
        10,
        38,
        &["`command`: /nonexistent/check does not exist"],
    );
    assert_error(
        &with_check("{ type = \"http\", digest = \"crc32:abcd\" }"),
        10,
        37,
        &["invalid `digest`", "md5:"],
    );
    assert_error(
        &with_check("{ type = \"tcp\", rise = 0 }"),
        10,
        34,
        &["`rise` = 0 is out of range"],
    );
}

#[test]
fn unknown_values_list_the_valid_ones() {
    let text = with_dp(&["xdp_mode = \"fast\""]);
    assert_error(
        &text,
        3,
        12,
        &[
            "invalid `xdp_mode` \"fast\"",
            "\"auto\", \"driver\", \"generic\"",
        ],
    );
    let text = with_dp(&["xdp_mode = \"native\""]);
    assert_error(&text, 3, 12, &["did you mean \"driver\"?"]);
    let service = ["[[virtual_server]]", "vip = \"192.0.2.1\"", "port = 80"];
    let mut lines = service.to_vec();
    lines.push("protocol = \"TCP\"");
    assert_error(
        &with_dp(&lines),
        6,
        12,
        &[
            "invalid `protocol` \"TCP\"",
            "\"tcp\", \"udp\"",
            "did you mean \"tcp\"?",
        ],
    );
    let mut lines = service.to_vec();
    lines.push("scheduler = \"wlcc\"");
    assert_error(
        &with_dp(&lines),
        6,
        13,
        &["invalid `scheduler` \"wlcc\"", "\"rr\", \"wrr\""],
    );
    let mut lines = service.to_vec();
    lines.push("forwarding = 1");
    assert_error(
        &with_dp(&lines),
        6,
        14,
        &["`forwarding` must be one of \"dr\", \"nat\", \"tun\", found integer"],
    );
}

#[test]
fn hash_schedulers_parse_and_ipvs_names_point_at_them() {
    let service = |scheduler: &str| {
        with_dp(&[
            "[[virtual_server]]",
            "vip = \"192.0.2.1\"",
            "port = 80",
            &format!("scheduler = \"{scheduler}\""),
            "  [[virtual_server.real_server]]",
            "  address = \"192.0.2.11\"",
        ])
    };
    assert_eq!(
        parse_ok(&service("sh")).virtual_servers[0].scheduler,
        Scheduler::Sh
    );
    assert_eq!(
        parse_ok(&service("maglev")).virtual_servers[0].scheduler,
        Scheduler::Maglev
    );
    assert_eq!(
        parse_ok(&service("dh")).virtual_servers[0].scheduler,
        Scheduler::Dh
    );
    assert_error(
        &service("mh"),
        6,
        13,
        &["invalid `scheduler` \"mh\"", "did you mean \"sh\"?"],
    );
    // Hash tables have a fixed size: weights wrr could not reduce are fine there.
    let coprime = service("maglev").replace(
        "  address = \"192.0.2.11\"",
        "  address = \"192.0.2.11\"\n  weight = 65535\n  [[virtual_server.real_server]]\n  address = \"192.0.2.12\"\n  weight = 4",
    );
    parse_ok(&coprime);
    assert_error(
        &coprime.replace("\"maglev\"", "\"wrr\""),
        4,
        7,
        &["its weights need a schedule of 65539 slots"],
    );
}

// ----- addresses -----

#[test]
fn vip_and_address_must_be_ip_addresses() {
    let text = with_dp(&[
        "[[virtual_server]]",
        "vip = \"www.example.com\"",
        "port = 80",
    ]);
    assert_error(
        &text,
        4,
        7,
        &[
            "`vip` = \"www.example.com\" is not an IP address",
            "\"192.0.2.100\"",
        ],
    );
    let text = with_dp(&["[[virtual_server]]", "vip = \"192.0.2.1/24\"", "port = 80"]);
    assert_error(
        &text,
        4,
        7,
        &["is not an IP address", "without a prefix length"],
    );
    let text = with_dp(&["[[virtual_server]]", "vip = \"0.0.0.0\"", "port = 80"]);
    assert_error(&text, 4, 7, &["is not a unicast address"]);
    let text = with_dp(&["[[virtual_server]]", "vip = 3232235777", "port = 80"]);
    assert_error(
        &text,
        4,
        7,
        &["`vip` must be an IP address in a string", "found integer"],
    );
    let text = with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.1\"",
        "port = 80",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11:80\"",
    ]);
    assert_error(
        &text,
        7,
        13,
        &[
            "`address` = \"192.0.2.11:80\" is not an IP address",
            "the port goes in `port`",
        ],
    );
}

#[test]
fn real_server_family_must_match_the_vip() {
    let text = with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.1\"",
        "port = 80",
        "  [[virtual_server.real_server]]",
        "  address = \"2001:db8::11\"",
    ]);
    assert_error(
        &text,
        7,
        13,
        &[
            "real server 2001:db8::11 is IPv6",
            "192.0.2.1:80/tcp is IPv4",
            "same address family",
        ],
    );
}

/// NAT (NAT66) and TUN (IPv6 in IPv6) serve IPv6 virtual servers as DR does; NAT keeps
/// the real servers of the vip's family, TUN crosses families as IPVS does (IPv4 in
/// IPv6, IPv6 in IPv4).
#[test]
fn nat_and_tun_serve_ipv6_vips_and_only_tun_crosses_families() {
    for forwarding in ["nat", "tun"] {
        let text = with_dp(&[
            "[[virtual_server]]",
            "vip = \"2001:db8::100\"",
            "port = 80",
            &format!("forwarding = \"{forwarding}\""),
            "  [[virtual_server.real_server]]",
            "  address = \"2001:db8::11\"",
            "  port = 8080",
        ]);
        let config = parse_ok(&text);
        let vs = &config.virtual_servers[0];
        assert_eq!(vs.forwarding.to_string(), forwarding);
        assert_eq!(vs.real_servers[0].address, ip("2001:db8::11"));
        let mixed = text.replace("2001:db8::11", "192.0.2.11");
        if forwarding == "nat" {
            assert_error(
                &mixed,
                8,
                13,
                &[
                    "real server 192.0.2.11 is IPv4",
                    "same address family",
                    "only `forwarding = \"tun\"` tunnels across families",
                ],
            );
        } else {
            let config = parse_ok(&mixed);
            assert_eq!(
                config.virtual_servers[0].real_servers[0].address,
                ip("192.0.2.11")
            );
            // And the other way: an IPv4 vip's IPv6 real server.
            let v4 = mixed
                .replace("2001:db8::100", "192.0.2.100")
                .replace("192.0.2.11", "2001:db8::11");
            let config = parse_ok(&v4);
            assert_eq!(
                config.virtual_servers[0].real_servers[0].address,
                ip("2001:db8::11")
            );
        }
    }
}

#[test]
fn duplicate_real_server_points_at_the_second_and_names_the_first() {
    let text = with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.1\"",
        "port = 80",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.12\"",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "  port = 80", // the default port spelled out is the same server
    ]);
    assert_error(
        &text,
        11,
        13,
        &[
            "real server 192.0.2.11:80 is listed twice",
            "192.0.2.1:80/tcp",
            "first at line 7",
        ],
    );
}

#[test]
fn duplicate_virtual_server_points_at_the_second_and_names_the_first() {
    let text = with_dp(&[
        "[[virtual_server]]",
        "vip = \"2001:db8::1\"",
        "port = 443",
        "  [[virtual_server.real_server]]",
        "  address = \"2001:db8::11\"",
        "[[virtual_server]]",
        "vip = \"2001:db8::1\"",
        "port = 443",
        "protocol = \"tcp\"",
        "  [[virtual_server.real_server]]",
        "  address = \"2001:db8::12\"",
    ]);
    assert_error(
        &text,
        9,
        7,
        &[
            "virtual server [2001:db8::1]:443/tcp is defined twice",
            "first at line 4",
        ],
    );
}

// ----- numbers -----

#[test]
fn ports_must_be_1_to_65535() {
    let text = with_dp(&["[[virtual_server]]", "vip = \"192.0.2.1\"", "port = 0"]);
    assert_error(&text, 5, 8, &["`port` = 0 is out of range", "1 to 65535"]);
    let text = with_dp(&["[[virtual_server]]", "vip = \"192.0.2.1\"", "port = 65536"]);
    assert_error(
        &text,
        5,
        8,
        &["`port` = 65536 is out of range", "1 to 65535"],
    );
    let text = with_dp(&["[[virtual_server]]", "vip = \"192.0.2.1\"", "port = \"80\""]);
    assert_error(
        &text,
        5,
        8,
        &["`port` must be an integer from 1 to 65535, found string"],
    );
    let text = with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.1\"",
        "port = 80",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "  port = 0",
    ]);
    assert_error(&text, 8, 10, &["`port` = 0 is out of range"]);
}

#[test]
fn weight_must_be_0_to_65535() {
    let rs = [
        "[[virtual_server]]",
        "vip = \"192.0.2.1\"",
        "port = 80",
        "[[virtual_server.real_server]]",
        "address = \"192.0.2.11\"",
    ];
    let mut lines = rs.to_vec();
    lines.push("weight = 65536");
    assert_error(
        &with_dp(&lines),
        8,
        10,
        &["`weight` = 65536 is out of range", "0 to 65535"],
    );
    let mut lines = rs.to_vec();
    lines.push("weight = -1");
    assert_error(&with_dp(&lines), 8, 10, &["`weight` = -1 is out of range"]);
}

#[test]
fn schedule_length_is_limited() {
    // 65535 + 2 = 65537 slots with gcd 1: exactly the limit.
    let at_limit = |last: &str| {
        with_dp(&[
            "[[virtual_server]]",
            "vip = \"192.0.2.1\"",
            "port = 80",
            "[[virtual_server.real_server]]",
            "address = \"192.0.2.11\"",
            "weight = 65535",
            "[[virtual_server.real_server]]",
            "address = \"192.0.2.12\"",
            last,
        ])
    };
    parse_ok(&at_limit("weight = 2"));
    // 65535 + 4 = 65539 slots with gcd 1: over the limit.
    assert_error(
        &at_limit("weight = 4"),
        4,
        7,
        &[
            "virtual server 192.0.2.1:80/tcp",
            "schedule of 65539 slots",
            "limit of 65537",
        ],
    );
}

#[test]
fn schedule_length_is_per_service() {
    // Two services of 65535 + 2 slots each: the limit applies to each on its own.
    let service = |vip: &str| {
        [
            "[[virtual_server]]".to_owned(),
            format!("vip = \"{vip}\""),
            "port = 80".to_owned(),
            "[[virtual_server.real_server]]".to_owned(),
            "address = \"192.0.2.11\"".to_owned(),
            "weight = 65535".to_owned(),
            "[[virtual_server.real_server]]".to_owned(),
            "address = \"192.0.2.12\"".to_owned(),
            "weight = 2".to_owned(),
        ]
    };
    let lines: Vec<String> = service("192.0.2.1")
        .into_iter()
        .chain(service("192.0.2.2"))
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(parse_ok(&with_dp(&lines)).virtual_servers.len(), 2);
}

#[test]
fn max_flows_range_and_type() {
    assert_error(
        &with_dp(&["max_flows = 1023"]),
        3,
        13,
        &["`max_flows` = 1023 is out of range", "1024 to 16777216"],
    );
    assert_error(
        &with_dp(&["max_flows = 16777217"]),
        3,
        13,
        &["out of range"],
    );
    assert_error(
        &with_dp(&["max_flows = 1.5"]),
        3,
        13,
        &["`max_flows` must be an integer from 1024 to 16777216, found float"],
    );
    parse_ok(&with_dp(&["max_flows = 16777216"]));
}

#[test]
fn max_flows_v6_defaults_to_max_flows_and_may_be_0_without_ipv6_services() {
    let dp = parse_ok(&with_dp(&["max_flows = 4096"])).dataplane;
    assert_eq!((dp.max_flows, dp.max_flows_v6), (4096, 4096));
    let dp = parse_ok(&with_dp(&["max_flows_v6 = 2048"])).dataplane;
    assert_eq!((dp.max_flows, dp.max_flows_v6), (262_144, 2048));
    let service = |vip: &str, extra: &str| {
        with_dp(&[
            "max_flows_v6 = 0",
            "[[virtual_server]]",
            &format!("vip = \"{vip}\""),
            "port = 80",
            extra,
            "  [[virtual_server.real_server]]",
            &format!(
                "  address = \"{}\"",
                if vip.contains(':') {
                    "2001:db8::11"
                } else {
                    "192.0.2.11"
                }
            ),
        ])
    };
    let ipv4 = parse_ok(&service("192.0.2.1", ""));
    assert_eq!(ipv4.dataplane.max_flows_v6, 0);
    // A consistent-hash IPv6 service without a flow table keeps no state.
    parse_ok(&service(
        "2001:db8::1",
        "scheduler = \"maglev\"\nflow_table = false",
    ));
    assert_error(
        &service("2001:db8::1", ""),
        3,
        16,
        &[
            "`max_flows_v6` = 0 leaves no IPv6 connection tables",
            "virtual server [2001:db8::1]:80/tcp has an IPv6 VIP",
        ],
    );
    assert_error(
        &with_dp(&["max_flows_v6 = 1000"]),
        3,
        16,
        &[
            "`max_flows_v6` = 1000 is out of range",
            "0 (no IPv6",
            "1024 to 16777216",
        ],
    );
    assert_error(
        &with_dp(&["max_flows_v6 = \"none\""]),
        3,
        16,
        &[
            "`max_flows_v6` must be an integer, 0 (no IPv6 connection tables) or 1024 to 16777216; found string",
        ],
    );
}

#[test]
fn durations_need_units() {
    assert_error(
        &with_dp(&["neighbour_timeout = \"5\""]),
        3,
        21,
        &[
            "`neighbour_timeout` = \"5\" is not a valid duration",
            "\"500ms\", \"5s\" or \"1m\"",
        ],
    );
    assert_error(
        &with_dp(&["neighbour_timeout = 5"]),
        3,
        21,
        &[
            "`neighbour_timeout` must be a string with a unit",
            "found integer",
        ],
    );
    let config = parse_ok(&with_dp(&["neighbour_timeout = \"250ms\""]));
    assert_eq!(
        config.dataplane.neighbour_timeout,
        Duration::from_millis(250)
    );
}

// ----- required entries and shapes -----

#[test]
fn dataplane_and_interfaces_are_required_and_checked() {
    assert_error(
        "[global]\nrouter_id = \"lb1\"\n",
        1,
        1,
        &["missing table `[dataplane]`"],
    );
    assert_error(
        "[global]\n\n[dataplane]\nxdp_mode = \"auto\"\n",
        3,
        1,
        &["`[dataplane]` is missing `interfaces`"],
    );
    assert_error(
        "[dataplane]\ninterfaces = []\n",
        2,
        14,
        &["`interfaces` is empty"],
    );
    assert_error(
        "[dataplane]\ninterfaces = [\"eth0\", 1]\n",
        2,
        23,
        &[
            "`interfaces` must be an array of interface names",
            "found integer",
        ],
    );
    assert_error(
        "[dataplane]\ninterfaces = \"eth0\"\n",
        2,
        14,
        &["`interfaces`: invalid type: string \"eth0\", expected an array"],
    );
    assert_error(
        "[dataplane]\ninterfaces = [\"eth0\", \"eth0\"]\n",
        2,
        23,
        &["`interfaces` lists \"eth0\" twice"],
    );
    for bad in ["a-very-long-name", "eth 0", ".", "..", "", "eth0:1"] {
        let text = format!("[dataplane]\ninterfaces = [{bad:?}]\n");
        assert_error(
            &text,
            2,
            15,
            &["is not a valid interface name", "1 to 15 bytes"],
        );
    }
    parse_ok("[dataplane]\ninterfaces = [\"fifteen-chars-x\"]\n");
}

#[test]
fn virtual_server_needs_vip_port_and_a_real_server() {
    let text = with_dp(&["", "[[virtual_server]]", "port = 80"]);
    assert_error(&text, 4, 1, &["`[[virtual_server]]` is missing `vip`"]);
    let text = with_dp(&["[[virtual_server]]", "vip = \"192.0.2.1\""]);
    assert_error(&text, 3, 1, &["vip 192.0.2.1 is missing `port`"]);
    let text = with_dp(&["[[virtual_server]]", "vip = \"192.0.2.1\"", "port = 80"]);
    assert_error(
        &text,
        4,
        7,
        &[
            "virtual server 192.0.2.1:80/tcp has no real servers",
            "[[virtual_server.real_server]]",
        ],
    );
    let text = with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.1\"",
        "port = 80",
        "  [[virtual_server.real_server]]",
        "  weight = 1",
    ]);
    assert_error(&text, 6, 3, &["is missing `address`"]);
}

#[test]
fn wrong_table_shapes_name_the_table() {
    let text = with_dp(&["[virtual_server]", "vip = \"192.0.2.1\""]);
    assert_error(
        &text,
        3,
        1,
        &[
            "`[virtual_server]`",
            "expected an array",
            "write `[[virtual_server]]`",
        ],
    );
    assert_error(
        "dataplane = 5\n",
        1,
        13,
        &["`dataplane`: invalid type: integer `5`, expected a table"],
    );
    let text = with_dp(&["[global]", "router_id = \"\""]);
    assert_error(&text, 4, 13, &["`router_id` is empty"]);
}

// ----- vrrp -----

fn with_vrrp(lines: &[&str]) -> String {
    let mut all = vec!["[vrrp.VI_1]"];
    all.extend_from_slice(lines);
    with_dp(&all)
}

#[test]
fn a_vrrp_instance_takes_keepalived_defaults() {
    let text = with_vrrp(&[
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.200/24 label eth0:vi1\", \"192.0.2.201\"]",
    ]);
    let config = parse(&text, "lb.toml").unwrap();
    let vi = &config.vrrp[0];
    assert_eq!(
        (
            vi.name.as_str(),
            vi.identity.interface.as_str(),
            vi.identity.vrid
        ),
        ("VI_1", "eth0", 51)
    );
    assert_eq!(
        (vi.tunables.priority, vi.identity.version),
        (100, 2),
        "keepalived: v2 for IPv4"
    );
    assert_eq!(vi.identity.advert_interval, Duration::from_secs(1));
    assert!(vi.tunables.preempt);
    assert_eq!(vi.identity.virtual_ipaddresses[0].prefix, 24);
    assert_eq!(
        vi.identity.virtual_ipaddresses[0].label.as_deref(),
        Some("eth0:vi1")
    );
    assert_eq!(vi.identity.virtual_ipaddresses[1].prefix, 32);
    assert_eq!(
        (
            vi.tunables.garp_master_repeat,
            vi.identity.unicast_peers.len()
        ),
        (5, 0)
    );
    // keepalived's announcement schedule: a second burst 5 s later, no refresh.
    assert_eq!(vi.tunables.garp_master_delay, Duration::from_secs(5));
    assert_eq!(
        (
            vi.tunables.garp_master_refresh,
            vi.tunables.garp_master_refresh_repeat
        ),
        (None, 1)
    );
    assert_eq!(vi.tunables.garp_interval, Duration::ZERO);
    assert_eq!(vi.identity.unicast_src_ip, None);
    // On a lower-priority advert while MASTER: answer, and announce as on a takeover.
    assert_eq!(
        (
            vi.tunables.garp_lower_prio_repeat,
            vi.tunables.garp_lower_prio_delay
        ),
        (5, Duration::from_secs(5))
    );
    assert!(!vi.tunables.lower_prio_no_advert && !vi.tunables.higher_prio_send_advert);
}

#[test]
fn lower_and_higher_priority_answers_are_configurable() {
    let mut lines = vec![
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.200/24\"]",
        "garp_lower_prio_repeat = 0",
        "garp_lower_prio_delay = \"0s\"",
        "lower_prio_no_advert = true",
        "higher_prio_send_advert = true",
    ];
    let vi = &parse_ok(&with_vrrp(&lines)).vrrp[0];
    assert_eq!(
        (
            vi.tunables.garp_lower_prio_repeat,
            vi.tunables.garp_lower_prio_delay
        ),
        (0, Duration::ZERO)
    );
    assert!(vi.tunables.lower_prio_no_advert && vi.tunables.higher_prio_send_advert);

    lines.push("garp_lower_prio_repeat = 1001");
    lines.retain(|l| *l != "garp_lower_prio_repeat = 0");
    let text = with_vrrp(&lines);
    let line = text
        .lines()
        .position(|l| l.starts_with("garp_lower_prio_repeat"))
        .unwrap()
        + 1;
    assert_error(&text, line, 26, &["garp_lower_prio_repeat"]);
}

#[test]
fn old_unicast_checksum_is_for_v3_unicast_over_ipv4() {
    let unicast = [
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "version = 3",
        "virtual_ipaddresses = [\"192.0.2.200/24\"]",
        "unicast_peers = [\"192.0.2.3\"]",
        "old_unicast_checksum = true",
    ];
    assert!(
        parse_ok(&with_vrrp(&unicast)).vrrp[0]
            .identity
            .old_unicast_checksum
    );
    // Without peers (multicast) the flag means nothing: an error at the flag.
    let multicast: Vec<&str> = unicast
        .iter()
        .copied()
        .filter(|l| !l.starts_with("unicast_peers"))
        .collect();
    let text = with_vrrp(&multicast);
    let line = text
        .lines()
        .position(|l| l.starts_with("old_unicast_checksum"))
        .unwrap()
        + 1;
    assert_error(&text, line, 24, &["only applies to VRRPv3 over IPv4"]);
}

#[test]
fn mcast_src_ip_is_the_source_of_multicast_adverts() {
    let base = [
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.200/24\"]",
        "garp_master_refresh = \"60s\"",
        "garp_master_refresh_repeat = 2",
        "garp_interval = \"10ms\"",
    ];
    let mut lines = base.to_vec();
    lines.push("mcast_src_ip = \"192.0.2.2\"");
    let vi = &parse_ok(&with_vrrp(&lines)).vrrp[0];
    assert_eq!(
        vi.identity.unicast_src_ip,
        Some("192.0.2.2".parse().unwrap())
    );
    assert!(vi.identity.unicast_peers.is_empty());
    assert_eq!(
        (
            vi.tunables.garp_master_refresh,
            vi.tunables.garp_master_refresh_repeat
        ),
        (Some(Duration::from_secs(60)), 2)
    );
    assert_eq!(vi.tunables.garp_interval, Duration::from_millis(10));

    lines.push("unicast_src_ip = \"192.0.2.2\"");
    let text = with_vrrp(&lines);
    let line = text
        .lines()
        .position(|l| l.starts_with("mcast_src_ip"))
        .unwrap()
        + 1;
    assert_error(&text, line, 16, &["both set the source of the adverts"]);

    let mut v6 = base.to_vec();
    v6.push("mcast_src_ip = \"2001:db8::2\"");
    let text = with_vrrp(&v6);
    let line = text
        .lines()
        .position(|l| l.starts_with("mcast_src_ip"))
        .unwrap()
        + 1;
    assert_error(&text, line, 16, &["mcast_src_ip"]);
}

#[test]
fn ipv6_instances_default_to_v3_and_sub_second_intervals_need_v3() {
    let v6 = with_vrrp(&[
        "interface = \"eth0\"",
        "virtual_router_id = 52",
        "advert_interval = \"100ms\"",
        "virtual_ipaddresses = [\"2001:db8::200/64\"]",
    ]);
    let config = parse(&v6, "lb.toml").unwrap();
    assert_eq!(config.vrrp[0].identity.version, 3);
    assert_eq!(
        config.vrrp[0].identity.advert_interval,
        Duration::from_millis(100)
    );
    let v2_fast = with_vrrp(&[
        "interface = \"eth0\"",
        "virtual_router_id = 52",
        "advert_interval = \"100ms\"",
        "virtual_ipaddresses = [\"192.0.2.200\"]",
    ]);
    assert_error(&v2_fast, 6, 19, &["does not fit VRRPv2", "use version 3"]);
}

#[test]
fn vrrp_rules_are_checked_at_the_key() {
    let base = ["interface = \"eth0\"", "virtual_router_id = 51"];
    let case = |extra: &[&str]| {
        let mut lines = base.to_vec();
        lines.extend_from_slice(extra);
        with_vrrp(&lines)
    };
    assert_error(
        &case(&["version = 2", "virtual_ipaddresses = [\"2001:db8::1\"]"]),
        6,
        11,
        &["`version = 2` cannot carry IPv6"],
    );
    assert_error(
        &case(&[
            "version = 3",
            "auth_pass = \"secret\"",
            "virtual_ipaddresses = [\"192.0.2.1\"]",
        ]),
        7,
        13,
        &["`auth_pass` is VRRPv2 only"],
    );
    assert_error(
        &case(&[
            "auth_pass = \"123456789\"",
            "virtual_ipaddresses = [\"192.0.2.1\"]",
        ]),
        6,
        13,
        &["1 to 8 bytes"],
    );
    assert_error(
        &case(&["virtual_ipaddresses = [\"192.0.2.1\", \"2001:db8::1\"]"]),
        6,
        23,
        &["mixes address families"],
    );
    assert_error(
        &with_vrrp(&[
            "virtual_router_id = 51",
            "virtual_ipaddresses = [\"192.0.2.1\"]",
        ]),
        3,
        1,
        &["[vrrp.VI_1] is missing `interface`"],
    );
}

#[test]
fn two_instances_on_one_vrid_and_interface_clash() {
    let text = with_dp(&[
        "[vrrp.A]",
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.1\"]",
        "[vrrp.B]",
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.2\"]",
    ]);
    assert_error(
        &text,
        9,
        21,
        &["[vrrp.B] uses virtual_router_id 51 on eth0 like [vrrp.A]"],
    );
}

#[test]
fn a_tracked_virtual_server_must_exist() {
    let text = with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.100\"",
        "port = 80",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "[vrrp.VI_1]",
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.100\"]",
        "track_virtual_servers = [{ vip = \"192.0.2.100\", port = 80, weight = -50 }]",
    ]);
    let config = parse(&text, "lb.toml").unwrap();
    let tracked = &config.vrrp[0].identity.track_virtual_servers[0];
    assert_eq!(
        (tracked.port, tracked.protocol, tracked.weight),
        (80, Protocol::Tcp, -50)
    );
    let wrong = text.replace("port = 80, weight", "port = 81, weight");
    assert_error(
        &wrong,
        12,
        25,
        &["there is no virtual server 192.0.2.100 port 81 tcp to track"],
    );
}

#[test]
fn track_scripts_take_keepalived_defaults_and_must_exist() {
    let text = with_dp(&[
        "[script.chk_true]",
        "command = [\"/bin/true\"]",
        "weight = -20",
        "fall = 2",
        "[vrrp.VI_1]",
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.100\"]",
        "track_scripts = [\"chk_true\"]",
    ]);
    let config = parse(&text, "lb.toml").unwrap();
    let s = &config.scripts[0];
    assert_eq!(
        (s.name.as_str(), s.weight, s.rise, s.fall),
        ("chk_true", -20, 1, 2)
    );
    assert_eq!(
        (s.interval, s.timeout),
        (Duration::from_secs(1), Duration::from_secs(1))
    );
    assert_eq!(
        config.vrrp[0].identity.track_scripts,
        vec!["chk_true".to_string()]
    );
    let wrong = text.replace(
        "track_scripts = [\"chk_true\"]",
        "track_scripts = [\"chk_nginx\"]",
    );
    assert_error(
        &wrong,
        11,
        17,
        &["there is no [script.chk_nginx] (defined: chk_true)"],
    );
    let missing = text.replace(
        "command = [\"/bin/true\"]",
        "command = [\"/nonexistent/chk\"]",
    );
    assert_error(
        &missing,
        4,
        11,
        &["`command`: /nonexistent/chk does not exist"],
    );
}

#[test]
fn bfd_sessions_take_bfdds_defaults_and_peer_bfd_names_them() {
    let text = with_dp(&[
        "[bfd.to_b]",
        "peer = \"192.0.2.2\"",
        "min_rx = \"20ms\"",
        "min_tx = \"20ms\"",
        "[bfd.slow]",
        "peer = \"192.0.2.3\"",
        "[vrrp.VI_1]",
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.100\"]",
        "peer_bfd = [\"to_b\"]",
    ]);
    let config = parse_ok(&text);
    assert_eq!(config.global.bfdd_socket, Path::new(DEFAULT_BFDD_SOCKET));
    let slow = &config.bfd[0];
    assert_eq!(
        (
            slow.name.as_str(),
            slow.peer,
            slow.min_rx,
            slow.min_tx,
            slow.multiplier
        ),
        (
            "slow",
            ip("192.0.2.3"),
            Duration::from_millis(300),
            Duration::from_millis(300),
            3
        )
    );
    let fast = &config.bfd[1];
    assert_eq!(
        (fast.min_rx, fast.min_tx),
        (Duration::from_millis(20), Duration::from_millis(20))
    );
    assert_eq!(config.vrrp[0].identity.peer_bfd, vec!["to_b".to_string()]);

    let unknown = text.replace("peer_bfd = [\"to_b\"]", "peer_bfd = [\"to_c\"]");
    assert_error(
        &unknown,
        13,
        12,
        &["there is no [bfd.to_c] (defined: slow, to_b)"],
    );
    let too_fast = text.replace("min_rx = \"20ms\"", "min_rx = \"5ms\"");
    assert_error(
        &too_fast,
        5,
        10,
        &["`min_rx` must be whole milliseconds from 10ms to 60s"],
    );
    let no_peer = text.replace("peer = \"192.0.2.3\"", "multiplier = 5");
    assert_error(&no_peer, 7, 1, &["[bfd.slow] is missing `peer`"]);
    let twice = text.replace("192.0.2.3", "192.0.2.2");
    assert_error(
        &twice,
        4,
        8,
        &["[bfd.to_b] is the same session as [bfd.slow]"],
    );
    let v6 = text.replace("peer = \"192.0.2.2\"", "peer = \"2001:db8::2\"");
    assert_error(&v6, 13, 12, &["not of this instance's family"]);
    let unicast = text.replace(
        "peer_bfd = [\"to_b\"]",
        "peer_bfd = [\"to_b\"]\nunicast_peers = [\"192.0.2.9\"]",
    );
    assert_error(&unicast, 13, 12, &["is none of `unicast_peers`"]);
    let tracked = text.replace("peer_bfd = [\"to_b\"]", "track_bfd = [\"slow\", \"to_b\"]");
    let tracked = parse_ok(&tracked);
    assert_eq!(tracked.vrrp[0].identity.track_bfd, ["slow", "to_b"]);
    assert_eq!(tracked.bfd[0].weight, 0);
    let untracked = text.replace("peer_bfd = [\"to_b\"]", "track_bfd = [\"gw\"]");
    assert_error(&untracked, 13, 13, &["`track_bfd`: there is no [bfd.gw]"]);
    let heavy = text.replace("peer = \"192.0.2.3\"", "peer = \"192.0.2.3\"\nweight = 254");
    assert_error(&heavy, 9, 10, &["`weight`", "253"]);
    let relative = format!("[global]\nbfdd_socket = \"bfdd.sock\"\n{text}");
    assert_error(&relative, 2, 15, &["must be an absolute path"]);
}

#[test]
fn script_commands_must_be_executable_and_a_shell_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    let script = |command: &str, extra: &[&str]| {
        let mut lines = vec!["[script.chk]".to_string(), format!("command = {command}")];
        lines.extend(extra.iter().map(|l| l.to_string()));
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        with_dp(&lines)
    };
    assert_error(
        &script(&format!("[\"{}\"]", plain.display()), &[]),
        4,
        11,
        &["is not executable (chmod +x it)"],
    );
    assert_error(
        &script(&format!("[\"{}\"]", dir.path().display()), &[]),
        4,
        11,
        &["is not a file"],
    );
    assert_error(
        &script("[\"no-such-program-xdp-lb\"]", &[]),
        4,
        11,
        &["is not an executable on PATH"],
    );
    // A bare name found on PATH is fine, as execvp finds it.
    parse_ok(&script("[\"true\"]", &[]));

    assert_error(
        &script("\"pgrep -x nginx\"", &[]),
        4,
        11,
        &["runs without a shell", "set `shell = true`"],
    );
    assert_error(
        &script("[\"/bin/true\"]", &["shell = true"]),
        4,
        11,
        &["with `shell = true`, `command` is one string"],
    );
    let config = parse_ok(&script(
        "\"test -d / || exit 1\"",
        &["shell = true", "user = \"nobody\""],
    ));
    assert_eq!(
        config.scripts[0].command,
        vec!["/bin/sh", "-c", "test -d / || exit 1"]
    );
    assert_eq!(config.scripts[0].user.as_deref(), Some("nobody"));
    assert_error(
        &script("[\"/bin/true\"]", &["user = \"no-such-user-xdp-lb\""]),
        5,
        8,
        &["there is no user \"no-such-user-xdp-lb\""],
    );
}

#[test]
fn virtual_addresses_take_dev_scope_and_label() {
    let text = with_vrrp(&[
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.200/24 dev eth1 scope link label eth1:vip\", \"192.0.2.201 scope 200\"]",
    ]);
    let vi = &parse_ok(&text).vrrp[0];
    let a = &vi.identity.virtual_ipaddresses[0];
    assert_eq!(
        (a.device.as_deref(), a.scope, a.label.as_deref()),
        (Some("eth1"), Some(253), Some("eth1:vip"))
    );
    let b = &vi.identity.virtual_ipaddresses[1];
    assert_eq!(
        (b.device.as_deref(), b.scope, b.prefix),
        (None, Some(200), 32)
    );
    let bad = |vip: &str, phrase: &str| {
        let text = with_vrrp(&[
            "interface = \"eth0\"",
            "virtual_router_id = 51",
            &format!("virtual_ipaddresses = [\"{vip}\"]"),
        ]);
        assert_error(&text, 6, 23, &[phrase]);
    };
    bad("192.0.2.200 scope galaxy", "unknown scope");
    bad("192.0.2.200 dev", "has `dev` without a value");
    bad("192.0.2.200 dev eth1 dev eth2", "gives `dev` twice");
    bad("192.0.2.200 brd 192.0.2.255", "drop `brd`");
    bad(
        "192.0.2.200 via eth1",
        "can be `dev NAME`, `scope SCOPE` and `label NAME`",
    );
    bad("2001:db8::1 label eth0:x", "only IPv4 addresses can carry");
}

#[test]
fn track_interfaces_take_names_or_weights() {
    let text = with_vrrp(&[
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.200\"]",
        "track_interfaces = [\"eth1\", { name = \"eth2\", weight = -20 }]",
    ]);
    let vi = &parse_ok(&text).vrrp[0];
    assert_eq!(
        vi.identity.track_interfaces,
        vec![
            TrackedInterface {
                name: "eth1".into(),
                weight: 0
            },
            TrackedInterface {
                name: "eth2".into(),
                weight: -20
            },
        ]
    );
    let bad = |value: &str, phrase: &str| {
        let text = with_vrrp(&[
            "interface = \"eth0\"",
            "virtual_router_id = 51",
            "virtual_ipaddresses = [\"192.0.2.200\"]",
            &format!("track_interfaces = {value}"),
        ]);
        assert_error(&text, 7, 20, &[phrase]);
    };
    bad("[\"eth1\", \"eth1\"]", "eth1 is listed twice");
    bad("[{ name = \"eth1\", weight = 300 }]", "from -254 to 254");
    bad("[{ nam = \"eth1\" }]", "unknown key `nam`");
    bad("\"eth1\"", "must be a list");
    bad("[\"an-interface-name-too-long\"]", "1 to 15 characters");
}

#[test]
fn sync_groups_name_existing_instances_once() {
    let instances = [
        "[vrrp.VI_EXT]",
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.200\"]",
        "[vrrp.VI_INT]",
        "interface = \"eth1\"",
        "virtual_router_id = 52",
        "virtual_ipaddresses = [\"198.51.100.200\"]",
    ];
    let with_group = |group: &[&str]| {
        let mut lines = instances.to_vec();
        lines.extend_from_slice(group);
        with_dp(&lines)
    };
    let config = parse_ok(&with_group(&[
        "[vrrp_sync_group.VG_1]",
        "group = [\"VI_EXT\", \"VI_INT\"]",
        "notify = [\"/bin/true\"]",
    ]));
    let g = &config.sync_groups[0];
    assert_eq!(
        (g.name.as_str(), g.members.clone()),
        ("VG_1", vec!["VI_EXT".to_string(), "VI_INT".to_string()])
    );
    assert_eq!(g.notify.generic, Some(vec!["/bin/true".to_string()]));
    assert_error(
        &with_group(&["[vrrp_sync_group.VG_1]", "group = [\"VI_EXT\", \"VI_X\"]"]),
        12,
        9,
        &["there is no [vrrp.VI_X] (defined: VI_EXT, VI_INT)"],
    );
    assert_error(
        &with_group(&["[vrrp_sync_group.VG_1]", "group = [\"VI_EXT\"]"]),
        12,
        9,
        &["at least two instances"],
    );
    assert_error(
        &with_group(&[
            "[vrrp_sync_group.A]",
            "group = [\"VI_EXT\", \"VI_INT\"]",
            "[vrrp_sync_group.B]",
            "group = [\"VI_INT\", \"VI_EXT\"]",
        ]),
        14,
        9,
        &["[vrrp.VI_INT] is already in [vrrp_sync_group.A]"],
    );
    assert_error(
        &with_group(&["[vrrp_sync_group.VG_1]", "notify = [\"/bin/true\"]"]),
        11,
        1,
        &["[vrrp_sync_group.VG_1] is missing `group`"],
    );
}

#[test]
fn the_status_api_takes_an_address_and_port() {
    let config = parse_ok(&doc(&[
        "[global]",
        "api = \"127.0.0.1:9181\"",
        DP[0],
        DP[1],
    ]));
    assert_eq!(config.global.api, Some("127.0.0.1:9181".parse().unwrap()));
    assert_eq!(
        parse_ok(&with_dp(&[])).global.api,
        Some("127.0.0.1:9180".parse().unwrap()),
        "on by default, on loopback"
    );
    let off = parse_ok(&doc(&["[global]", "api = \"off\"", DP[0], DP[1]]));
    assert_eq!(off.global.api, None);
    assert_error(
        &doc(&["[global]", "api = \"127.0.0.1\"", DP[0], DP[1]]),
        2,
        7,
        &["`api` = \"127.0.0.1\" is not an address and port"],
    );
}

#[test]
fn the_api_leaves_loopback_only_with_a_token() {
    let base = "[dataplane]\ninterfaces = [\"eth0\"]\n";
    let open = format!("[global]\napi = \"0.0.0.0:9180\"\n{base}");
    assert_error(
        &open,
        2,
        7,
        &[
            "reachable from other hosts",
            "set `api_token`",
            "\"127.0.0.1:9180\"",
        ],
    );
    let short = format!("[global]\napi = \"0.0.0.0:9180\"\napi_token = \"short\"\n{base}");
    assert_error(&short, 3, 13, &["16 or more printable characters"]);
    let token = "0123456789abcdef";
    let ok = format!("[global]\napi = \"0.0.0.0:9180\"\napi_token = \"{token}\"\n{base}");
    let config = parse(&ok, "lb.toml").unwrap();
    assert_eq!(config.global.api_token.as_deref(), Some(token));
    let local = format!("[global]\napi = \"[::1]:9180\"\n{base}");
    assert!(parse(&local, "lb.toml").unwrap().global.api_token.is_none());
}

#[test]
fn durations_have_upper_bounds() {
    let base = "[dataplane]\ninterfaces = [\"eth0\"]\n";
    let huge = base.replace(
        "[dataplane]\n",
        "[dataplane]\nneighbour_timeout = \"5124095576030431h\"\n",
    );
    assert_error(&huge, 2, 21, &["too long: at most 10m"]);
    let long = base.replace(
        "[dataplane]\n",
        "[dataplane]\nneighbour_timeout = \"11m\"\n",
    );
    assert_error(
        &long,
        2,
        21,
        &["`neighbour_timeout` = \"11m\" is too long: at most 10m"],
    );
    let vrrp = format!(
        "{base}[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
         virtual_ipaddresses = [\"192.0.2.1/24\"]\ngarp_master_refresh = \"25h\"\n"
    );
    assert_error(&vrrp, 7, 23, &["too long: at most 24h"]);
    let delay = vrrp.replace("garp_master_refresh = \"25h\"", "preempt_delay = \"1001s\"");
    assert_error(&delay, 7, 17, &["too long: at most 16m40s"]);
}

#[test]
fn check_refuses_more_real_servers_than_the_data_plane_holds() {
    let mut text = String::from("[dataplane]\ninterfaces = [\"eth0\"]\n");
    for v in 0..5 {
        text += &format!("\n[[virtual_server]]\nvip = \"10.0.{v}.1\"\nport = 80\n");
        for r in 0..1000 {
            text += &format!(
                "  [[virtual_server.real_server]]\n  address = \"10.{}.{}.{}\"\n",
                v + 1,
                r / 250,
                r % 250 + 1
            );
        }
    }
    let line = 1 + text
        .lines()
        .position(|l| l == "vip = \"10.0.4.1\"")
        .unwrap();
    assert_error(
        &text,
        line,
        7,
        &["to 5000; the data plane holds at most 4096"],
    );
}

#[test]
fn a_command_others_can_change_is_refused_at_its_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("down.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).unwrap();
    let text = format!(
        "[dataplane]\ninterfaces = [\"eth0\"]\n\n[[virtual_server]]\nvip = \"192.0.2.1\"\n\
         port = 80\nquorum_down = [\"{}\"]\n  [[virtual_server.real_server]]\n  address = \"192.0.2.11\"\n",
        script.display()
    );
    assert_error(
        &text,
        7,
        15,
        &[
            "`quorum_down`: unsafe permissions found for script",
            "writable by anyone",
        ],
    );
}

#[test]
fn a_vip_in_two_instances_is_refused() {
    let text = "[dataplane]\ninterfaces = [\"eth0\"]\n\n[vrrp.A]\ninterface = \"eth0\"\n\
                virtual_router_id = 51\nvirtual_ipaddresses = [\"192.0.2.100/24\"]\n\n[vrrp.B]\n\
                interface = \"eth0\"\nvirtual_router_id = 52\n\
                virtual_ipaddresses = [\"192.0.2.101/24\", \"192.0.2.100/24\"]\n";
    assert_error(
        text,
        12,
        23,
        &[
            "[vrrp.B] holds 192.0.2.100 like [vrrp.A]",
            "use a sync group",
        ],
    );
}

#[test]
fn a_misc_check_user_must_exist_and_a_udp_payload_fit_a_datagram() {
    let service = |check: &str| {
        format!(
            "[dataplane]\ninterfaces = [\"eth0\"]\n\n[[virtual_server]]\nvip = \"192.0.2.1\"\nport = 53\n\
             protocol = \"udp\"\n  [[virtual_server.real_server]]\n  address = \"192.0.2.11\"\n  check = {check}\n"
        )
    };
    let err = parse(
        &service(r#"{ type = "misc", command = ["/bin/true"], user = "no-such-user-xdp-lb" }"#),
        "lb.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("there is no user \"no-such-user-xdp-lb\""),
        "{err}"
    );
    let big = "x".repeat(65_508);
    let err = parse(
        &service(&format!(r#"{{ type = "udp", payload = "{big}" }}"#)),
        "lb.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at most 65507"), "{err}");
}

// ----- real servers are other hosts -----

fn one_service(sorry: &str, real: &str) -> String {
    with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.1\"",
        "port = 80",
        &format!("sorry_server = \"{sorry}\""),
        "  [[virtual_server.real_server]]",
        &format!("  address = \"{real}\""),
    ])
}

#[test]
fn a_loopback_sorry_server_is_refused_with_the_reason() {
    // The LVS example of keepalived's guide: IPVS serves it as the local node.
    assert_error(
        &one_service("127.0.0.1 80", "192.0.2.11"),
        6,
        16,
        &["`sorry_server` = \"127.0.0.1 80\" is not"],
    );
    assert_error(
        &one_service("127.0.0.1:80", "192.0.2.11"),
        6,
        16,
        &[
            "sorry server 127.0.0.1:80 of virtual server 192.0.2.1:80/tcp is a loopback address",
            "XDP forwards to other hosts only",
            "run it on another host",
        ],
    );
    assert_error(
        &one_service("192.0.2.250:80", "127.0.0.2"),
        8,
        13,
        &["real server 127.0.0.2 of virtual server 192.0.2.1:80/tcp is a loopback address"],
    );
    assert_error(
        &one_service("0.0.0.0:80", "192.0.2.11"),
        6,
        16,
        &[
            "sorry server 0.0.0.0:80 of virtual server 192.0.2.1:80/tcp is not the address of one host",
        ],
    );
}

#[test]
fn a_real_server_at_a_vip_is_refused() {
    let text = with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.1\"",
        "port = 80",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "[[virtual_server]]",
        "vip = \"192.0.2.2\"",
        "port = 443",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.1\"",
    ]);
    assert_error(
        &text,
        12,
        13,
        &[
            "real server 192.0.2.1 of virtual server 192.0.2.2:443/tcp is the VIP of virtual server 192.0.2.1:80/tcp",
        ],
    );
    assert_error(
        &one_service("192.0.2.1:8080", "192.0.2.11"),
        6,
        16,
        &[
            "sorry server 192.0.2.1:8080 of virtual server 192.0.2.1:80/tcp is the VIP of virtual server 192.0.2.1:80/tcp",
        ],
    );
    let vrrp = with_dp(&[
        "[[virtual_server]]",
        "vip = \"192.0.2.1\"",
        "port = 80",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "[vrrp.VI_1]",
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.1/24\", \"192.0.2.11/24\"]",
    ]);
    assert_error(
        &vrrp,
        11,
        23,
        &[
            "[vrrp.VI_1] holds 192.0.2.11, which is real server 192.0.2.11 of virtual server 192.0.2.1:80/tcp",
        ],
    );
}

#[test]
fn persistence_takes_keepalived_timeout_and_granularity() {
    let service = |extra: &str| {
        with_dp(&[
            "[[virtual_server]]",
            "vip = \"192.0.2.1\"",
            "port = 80",
            extra,
            "  [[virtual_server.real_server]]",
            "  address = \"192.0.2.11\"",
        ])
    };
    let p = |extra: &str| parse_ok(&service(extra)).virtual_servers[0].persistence;
    assert_eq!(p(""), None);
    assert_eq!(
        p("persistence_timeout = \"0s\""),
        None,
        "keepalived's 0 is off"
    );
    let on = p("persistence_timeout = \"5m\"").unwrap();
    assert_eq!((on.timeout, on.prefix_len), (Duration::from_secs(300), 32));
    let mask = p("persistence_timeout = \"5m\"\npersistence_granularity = \"255.255.240.0\"");
    assert_eq!(mask.unwrap().prefix_len, 20);
    let bits = p("persistence_timeout = \"5m\"\npersistence_granularity = 24");
    assert_eq!(bits.unwrap().prefix_len, 24);
    assert_error(
        &service("persistence_timeout = \"1500ms\""),
        6,
        23,
        &["`persistence_timeout` counts whole seconds"],
    );
    assert_error(
        &service("persistence_timeout = \"5m\"\npersistence_granularity = \"255.0.255.0\""),
        7,
        27,
        &["`persistence_granularity` must be an IPv4 netmask"],
    );
    assert_error(
        &service("persistence_granularity = 24"),
        6,
        27,
        &["`persistence_granularity` needs `persistence_timeout`"],
    );
}

#[test]
fn a_service_without_flow_entries_needs_consistent_hashing_dr_and_no_persistence() {
    let service = |extra: &str| {
        with_dp(&[
            "[[virtual_server]]",
            "vip = \"192.0.2.1\"",
            "port = 80",
            extra,
            "  [[virtual_server.real_server]]",
            "  address = \"192.0.2.11\"",
        ])
    };
    assert!(parse_ok(&service("")).virtual_servers[0].flow_table);
    let off = parse_ok(&service("scheduler = \"maglev\"\nflow_table = false"));
    assert!(!off.virtual_servers[0].flow_table);
    assert_error(
        &service("flow_table = false"),
        6,
        14,
        &["`flow_table = false` needs a consistent-hash scheduler"],
    );
    assert_error(
        &service("scheduler = \"sh\"\nforwarding = \"nat\"\nflow_table = false"),
        8,
        14,
        &["needs DR or TUN forwarding"],
    );
    assert_error(
        &service("scheduler = \"sh\"\npersistence_timeout = \"1m\"\nflow_table = false"),
        8,
        14,
        &["needs no persistence"],
    );
}

#[test]
fn the_flood_guard_rate_is_off_by_default_and_bounded() {
    assert_eq!(parse_ok(&with_dp(&[])).dataplane.new_flow_rate, 0);
    let on = "[dataplane]\ninterfaces = [\"eth0\"]\nnew_flow_rate = 50000\n";
    assert_eq!(parse_ok(on).dataplane.new_flow_rate, 50_000);
    assert_error(
        "[dataplane]\ninterfaces = [\"eth0\"]\nnew_flow_rate = -1\n",
        3,
        17,
        &["new_flow_rate"],
    );
}

// ----- server groups -----

#[test]
fn a_group_serves_its_members_as_one_service() {
    let config = parse_ok(&with_dp(&[
        "[virtual_server_group.web]",
        "members = [\"192.0.2.100:80\", \"192.0.2.100:443\", \"192.0.2.101-102:8000-8001\"]",
        "[[virtual_server]]",
        "group = \"web\"",
        "persistence_timeout = \"5m\"",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "  port = 80",
        "[[virtual_server]]",
        "group = \"web\"",
        "protocol = \"udp\"",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "  port = 80",
    ]));
    let web = &config.virtual_servers[0];
    assert_eq!(web.group.as_deref(), Some("web"));
    assert_eq!(web.name(), "group web/tcp");
    assert_eq!(config.virtual_servers[1].name(), "group web/udp");
    let members: Vec<String> = web.members.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        members,
        [
            "192.0.2.100:80",
            "192.0.2.100:443",
            "192.0.2.101:8000",
            "192.0.2.101:8001",
            "192.0.2.102:8000",
            "192.0.2.102:8001"
        ]
    );
    assert!(web.serves(ip("192.0.2.102"), 8001, Protocol::Tcp));
    assert!(!web.serves(ip("192.0.2.102"), 8001, Protocol::Udp));
    assert_eq!(
        web.vips(),
        [ip("192.0.2.100"), ip("192.0.2.101"), ip("192.0.2.102")]
    );
    assert_eq!(web.location.to_string(), "lb.toml:6:9");
    assert!(config.vips().contains(&ip("192.0.2.102")));
}

#[test]
fn a_group_of_one_port_lends_it_to_its_real_servers() {
    let config = parse_ok(&with_dp(&[
        "[virtual_server_group.dns]",
        "members = [\"[2001:db8::1-2]:53\"]",
        "[[virtual_server]]",
        "group = \"dns\"",
        "protocol = \"udp\"",
        "sorry_server = \"2001:db8::99\"",
        "  [[virtual_server.real_server]]",
        "  address = \"2001:db8::11\"",
    ]));
    let dns = &config.virtual_servers[0];
    assert_eq!(dns.members.len(), 2);
    assert_eq!(dns.real_servers[0].port, 53);
    assert_eq!(dns.sorry_server.unwrap().port(), 53);
}

#[test]
fn group_errors_point_at_the_member_or_key() {
    let service = |group: &str, rest: &[&str]| {
        let mut lines = vec![
            "[virtual_server_group.web]",
            group,
            "[[virtual_server]]",
            "group = \"web\"",
            "  [[virtual_server.real_server]]",
            "  address = \"192.0.2.11\"",
            "  port = 80",
        ];
        lines.extend_from_slice(rest);
        with_dp(&lines)
    };
    assert_error(
        &service("members = [\"192.0.2.100:80\", \"192.0.2.1-300:80\"]", &[]),
        4,
        30,
        &["member \"192.0.2.1-300:80\"", "last octet", "expected"],
    );
    assert_error(
        &service("members = []", &[]),
        4,
        11,
        &["`members` is empty"],
    );
    assert_error(
        &service("members = [\"192.0.2.100:80\", \"[2001:db8::1]:80\"]", &[]),
        4,
        30,
        &["address family of 192.0.2.100:80"],
    );
    assert_error(
        &service("members = [\"192.0.2.100:80-81\", \"192.0.2.100:81\"]", &[]),
        4,
        33,
        &["192.0.2.100:81 is listed twice (first at line 4)"],
    );
    assert_error(
        &service("members = [\"192.0.2.0-255:1-10\"]", &[]),
        4,
        12,
        &["2560 VIP:port pairs", "at most 1024"],
    );
    // A pair served twice: at the second service's member, naming the first.
    assert_error(
        &service(
            "members = [\"192.0.2.100:80\", \"192.0.2.100:443\"]",
            &[
                "[[virtual_server]]",
                "vip = \"192.0.2.100\"",
                "port = 443",
                "  [[virtual_server.real_server]]",
                "  address = \"192.0.2.12\"",
            ],
        ),
        11,
        7,
        &["192.0.2.100:443/tcp is already served by virtual server group web/tcp (line 4)"],
    );
    // Together the groups exceed the SERVICES map.
    let mut big = vec![
        "[virtual_server_group.a]",
        "members = [\"192.0.2.0-255:1-3\"]",
        "[virtual_server_group.b]",
        "members = [\"198.51.100.0-255:1-2\"]",
    ];
    for g in ["a", "b"] {
        big.push("[[virtual_server]]");
        big.push(if g == "a" {
            "group = \"a\""
        } else {
            "group = \"b\""
        });
        big.push("  [[virtual_server.real_server]]");
        big.push("  address = \"203.0.113.11\"");
        big.push("  port = 80");
    }
    assert_error(
        &with_dp(&big),
        13,
        9,
        &[
            "group b/tcp brings the VIP:port pairs served to 1280",
            "at most 1024",
        ],
    );
}

#[test]
fn a_virtual_server_names_a_group_it_can_use() {
    let lines = |group_line: &str, extra: &str, rs_port: &str| {
        with_dp(&[
            "[virtual_server_group.web]",
            "members = [\"192.0.2.100:80\", \"192.0.2.100:443\"]",
            "[[virtual_server]]",
            group_line,
            extra,
            "  [[virtual_server.real_server]]",
            "  address = \"192.0.2.11\"",
            rs_port,
        ])
    };
    assert_error(
        &lines("group = \"wbe\"", "", "  port = 80"),
        6,
        9,
        &["no `[virtual_server_group.wbe]`; defined: web"],
    );
    assert_error(
        &lines("group = \"web\"", "vip = \"192.0.2.100\"", "  port = 80"),
        7,
        7,
        &["either a `group` or one `vip`"],
    );
    assert_error(
        &lines("group = \"web\"", "", ""),
        9,
        13,
        &["needs a `port`", "several"],
    );
    assert_error(
        &lines(
            "group = \"web\"",
            "sorry_server = \"192.0.2.99\"",
            "  port = 80",
        ),
        7,
        16,
        &["an address with a port"],
    );
    // A real server may not sit at a member VIP.
    assert_error(
        &lines("group = \"web\"", "", "  port = 80").replace("192.0.2.11\"", "192.0.2.100\""),
        9,
        13,
        &["the VIP of virtual server group web/tcp"],
    );
    assert_error(
        &with_dp(&[
            "[virtual_server_group.web]",
            "members = [\"192.0.2.100:80\"]",
        ]),
        3,
        1,
        &["not served by any `[[virtual_server]]`", "group = \"web\""],
    );
}

#[test]
fn a_vrrp_instance_tracks_a_group_by_any_member() {
    let config = parse_ok(&with_dp(&[
        "[virtual_server_group.web]",
        "members = [\"192.0.2.100:80\", \"192.0.2.100:443\"]",
        "[[virtual_server]]",
        "group = \"web\"",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
        "  port = 80",
        "[vrrp.VI_1]",
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.100/24\"]",
        "track_virtual_servers = [{ vip = \"192.0.2.100\", port = 443, weight = -50 }]",
    ]));
    assert_eq!(config.vrrp[0].identity.track_virtual_servers.len(), 1);
}

// ----- the source filter -----

/// A virtual server on 192.0.2.100:80 (lines 3-5) with `extra` lines after its port,
/// then its real server.
fn filtered_vs(extra: &[&str]) -> String {
    let mut lines = vec!["[[virtual_server]]", "vip = \"192.0.2.100\"", "port = 80"];
    lines.extend_from_slice(extra);
    lines.extend_from_slice(&[
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
    ]);
    with_dp(&lines)
}

#[test]
fn filter_prefixes_parse_with_their_locations() {
    let mut text = filtered_vs(&[
        "allow = [\"198.51.100.0/24\", \"198.51.100.7\"]",
        "deny = [\"198.51.100.128/25\"]",
    ]);
    text.push_str("[filter]\ndeny = [\"203.0.113.0/24\", \"2001:db8:bad::/48\"]\n");
    let config = parse_ok(&text);
    let vs = &config.virtual_servers[0];
    assert_eq!(vs.allow.len(), 2);
    assert_eq!(vs.allow[1].prefix.to_string(), "198.51.100.7/32");
    assert_eq!(
        (vs.allow[1].location.line, vs.allow[1].location.col),
        (6, 29)
    );
    assert_eq!(vs.deny[0].prefix.len, 25);
    assert_eq!(config.filter.deny.len(), 2);
    assert!(config.filter.deny[1].prefix.addr.is_ipv6());
    assert_eq!(config.filter.deny[1].location.line, 11);
    // No rules anywhere: an empty filter.
    let plain = parse_ok(&filtered_vs(&[]));
    assert!(plain.filter.deny.is_empty() && plain.virtual_servers[0].allow.is_empty());
}

#[test]
fn filter_errors_name_the_prefix() {
    assert_error(
        &filtered_vs(&["allow = [\"198.51.100.7/24\"]"]),
        6,
        10,
        &["`allow`", "did you mean \"198.51.100.0/24\""],
    );
    assert_error(
        &filtered_vs(&["deny = [\"2001:db8::/32\"]"]),
        6,
        9,
        &["2001:db8::/32 is IPv6 but the vip is IPv4"],
    );
    assert_error(
        &filtered_vs(&[
            "allow = [\"198.51.100.0/24\"]",
            "deny = [\"198.51.100.0/24\"]",
        ]),
        7,
        9,
        &["both allowed (line 6) and denied"],
    );
    assert_error(
        &filtered_vs(&["allow = [\"nowhere\"]"]),
        6,
        10,
        &["not a source prefix"],
    );
    assert_error(
        &filtered_vs(&["allow = [\"198.51.100.0/40\"]"]),
        6,
        10,
        &["prefix length must be 0 to 32"],
    );
    assert_error(
        &filtered_vs(&["allow = [24]"]),
        6,
        10,
        &["`allow` must be an array of source prefixes"],
    );
    assert_error(
        &with_dp(&["[filter]", "deny = [\"::ffff:203.0.113.0/120\"]"]),
        4,
        9,
        &["IPv4-mapped"],
    );
    assert_error(
        &with_dp(&["[filter]", "allow = [\"203.0.113.0/24\"]"]),
        4,
        1,
        &["unknown key `allow`"],
    );
}

#[test]
fn shadowed_rules_are_reported_where_they_are_written() {
    let mut text = filtered_vs(&[
        // 6: decides: the default would deny it.
        "allow = [\"198.51.100.0/24\", \"198.51.100.0/24\", \"198.51.100.64/26\"]",
        // 7: the /25 decides (inside the allowed /24); the /26 inside it repeats it;
        // 10.0.0.0/8 repeats the default deny; 203.0.113.0/25 is inside the global deny.
        "deny = [\"198.51.100.128/25\", \"198.51.100.192/26\", \"10.0.0.0/8\", \"203.0.113.0/25\"]",
    ]);
    text.push_str("[filter]\ndeny = [\"203.0.113.0/24\", \"203.0.113.7\", \"2001:db8::/32\", \"2001:db8::/32\"]\n");
    let config = parse_ok(&text);
    let shadows: Vec<String> = shadowed_rules(&config)
        .iter()
        .map(ToString::to_string)
        .collect();
    let expected = [
        "lb.toml:6:29: virtual server 192.0.2.100:80/tcp: allow 198.51.100.0/24 is listed twice (first at line 6)",
        "lb.toml:6:48: virtual server 192.0.2.100:80/tcp: allow 198.51.100.64/26 changes nothing: allow 198.51.100.0/24 (line 6) already allows these sources",
        "lb.toml:7:30: virtual server 192.0.2.100:80/tcp: deny 198.51.100.192/26 changes nothing: deny 198.51.100.128/25 (line 7) already denies these sources",
        "lb.toml:7:51: virtual server 192.0.2.100:80/tcp: deny 10.0.0.0/8 changes nothing: a service with `allow` rules denies every source none of them holds",
        "lb.toml:7:65: virtual server 192.0.2.100:80/tcp: deny 203.0.113.0/25 never decides: [filter] deny 203.0.113.0/24 (line 11) drops these sources first",
        "lb.toml:11:27: [filter] deny 203.0.113.7/32 never decides: deny 203.0.113.0/24 (line 11) holds it",
        "lb.toml:11:59: [filter] deny 2001:db8::/32 is listed twice (first at line 11)",
    ];
    assert_eq!(shadows, expected);
    // An allow inside a deny inside an allow decides, and so does a service's first
    // deny when it has no allow.
    let fine = filtered_vs(&[
        "allow = [\"198.51.100.0/24\", \"198.51.100.200\"]",
        "deny = [\"198.51.100.128/25\"]",
    ]);
    assert_eq!(shadowed_rules(&parse_ok(&fine)), []);
    let deny_only = filtered_vs(&["deny = [\"198.51.100.0/24\"]"]);
    assert_eq!(shadowed_rules(&parse_ok(&deny_only)), []);
}

// ----- announce -----

#[test]
fn announce_marks_a_virtual_server_and_announce_table_has_defaults() {
    let text = with_dp(&[
        "[[virtual_server]]",
        "vip = \"203.0.113.10\"",
        "port = 80",
        "scheduler = \"maglev\"",
        "announce = true",
        "  [[virtual_server.real_server]]",
        "  address = \"192.0.2.11\"",
    ]);
    let config = parse_ok(&text);
    assert!(config.virtual_servers[0].announce);
    assert_eq!(config.announce.interface, "lo");
    assert_eq!(config.announce.drain_idle, Duration::from_secs(2));
    assert!(!parse_ok(&text.replace("announce = true\n", "")).virtual_servers[0].announce);
    let set = parse_ok(&format!(
        "{text}[announce]\ninterface = \"vips0\"\ndrain_idle = \"500ms\"\n"
    ));
    assert_eq!(set.announce.interface, "vips0");
    assert_eq!(set.announce.drain_idle, Duration::from_millis(500));
}

#[test]
fn announce_errors_are_located() {
    let service = |extra: &str| {
        with_dp(&[
            "[[virtual_server]]",
            "vip = \"192.0.2.100\"",
            "port = 80",
            extra,
            "  [[virtual_server.real_server]]",
            "  address = \"192.0.2.11\"",
        ])
    };
    assert_error(
        &service("announce = \"yes\""),
        6,
        12,
        &["`announce` must be"],
    );
    let ok = service("announce = true");
    assert_error(
        &format!("{ok}[announce]\ninterface = \"a/b\"\n"),
        10,
        13,
        &["`[announce] interface`", "not a valid interface name"],
    );
    assert_error(
        &format!("{ok}[announce]\ndrain_idle = \"10ms\"\n"),
        10,
        14,
        &["`drain_idle` must be at least \"100ms\""],
    );
    assert_error(
        &format!("{ok}[announce]\nprefix = 32\n"),
        10,
        1,
        &["unknown key `prefix`, expected `interface` or `drain_idle`"],
    );
    // A VRRP VIP moves between nodes; an announced one is on every node.
    let vrrp = format!(
        "{ok}[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
         virtual_ipaddresses = [\"192.0.2.100/24\"]\n"
    );
    assert_error(
        &vrrp,
        4,
        7,
        &[
            "virtual server 192.0.2.100:80/tcp: `announce = true` on 192.0.2.100",
            "`[vrrp.VI_1]` moves between nodes",
        ],
    );
}

/// A valid file with one VRRP instance and the `[sync]` lines given (from line 8).
fn with_sync(lines: &[&str]) -> String {
    let mut all = vec![
        "[vrrp.VI_1]",
        "interface = \"eth0\"",
        "virtual_router_id = 51",
        "virtual_ipaddresses = [\"192.0.2.100/24\"]",
        "[sync]",
    ];
    all.extend_from_slice(lines);
    with_dp(&all)
}

#[test]
fn sync_takes_keepalived_s_defaults_and_its_own() {
    let c = parse_ok(&with_sync(&[
        "peers = [\"192.0.2.3\"]",
        "secret = \"0123456789abcdef\"",
    ]));
    let s = c.sync.unwrap();
    assert_eq!(s.instance, "VI_1", "the only instance");
    assert_eq!(
        (s.port, s.interval, s.rate),
        (8848, Duration::from_secs(1), 50_000)
    );
    assert_eq!(s.peers, [std::net::Ipv4Addr::new(192, 0, 2, 3)]);
    assert_eq!(s.secret.read().unwrap(), b"0123456789abcdef");
    assert!(
        !format!("{s:?}").contains("0123456789abcdef"),
        "the secret is not printed"
    );
    let c = parse_ok(&with_sync(&[
        "instance = \"VI_1\"",
        "interface = \"eth1\"",
        "group = \"224.0.0.81\"",
        "port = 8850",
        "secret_file = \"/etc/xdp-lb/sync.key\"",
        "interval = \"250ms\"",
        "rate = 1000",
    ]));
    let s = c.sync.unwrap();
    assert_eq!(s.group, Some(std::net::Ipv4Addr::new(224, 0, 0, 81)));
    assert_eq!(
        (s.port, s.interval, s.rate),
        (8850, Duration::from_millis(250), 1000)
    );
    assert!(parse_ok(&with_dp(&[])).sync.is_none());
}

#[test]
fn sync_errors_are_located() {
    let secret = "secret = \"0123456789abcdef\"";
    assert_error(
        &with_sync(&["instance = \"VI_9\"", "peers = [\"192.0.2.3\"]", secret]),
        8,
        12,
        &[
            "`[sync] instance` = \"VI_9\" is no `[vrrp.NAME]` instance",
            "VI_1",
        ],
    );
    assert_error(
        &with_sync(&["peers = [\"192.0.2.3\"]", "secret = \"short\""]),
        9,
        10,
        &["`[sync] secret` has 5 bytes: use 16 or more"],
    );
    assert_error(
        &with_sync(&["peers = [\"192.0.2.3\"]", secret, "secret_file = \"/k\""]),
        9,
        10,
        &["both `secret` and `secret_file`"],
    );
    assert_error(
        &with_sync(&["peers = [\"192.0.2.3\"]", "secret_file = \"k\""]),
        9,
        15,
        &["must be an absolute path"],
    );
    assert_error(
        &with_sync(&["peers = [\"2001:db8::3\"]", secret]),
        8,
        9,
        &["`[sync] peers` must be IPv4 addresses"],
    );
    assert_error(
        &with_sync(&["group = \"192.0.2.3\"", "interface = \"eth1\"", secret]),
        8,
        9,
        &["`[sync] group` = \"192.0.2.3\" is not an IPv4 multicast address"],
    );
    assert_error(
        &with_sync(&["peers = [\"192.0.2.3\"]", secret, "interval = \"10ms\""]),
        10,
        12,
        &["`[sync] interval` must be from \"100ms\" to \"60s\""],
    );
    assert_error(
        &with_sync(&["peers = [\"192.0.2.3\"]", secret, "rate = 5"]),
        10,
        8,
        &["`rate` = 5 is out of range"],
    );
    assert_error(
        &with_sync(&["peers = [\"192.0.2.3\"]", secret, "peer = \"x\""]),
        10,
        1,
        &["unknown key `peer`"],
    );
    // Whole-table errors point at the table.
    let missing = parse(&with_sync(&[secret]), "lb.toml")
        .unwrap_err()
        .to_string();
    assert!(missing.contains("`[sync]` needs `peers`"), "{missing}");
    let missing = parse(&with_sync(&["peers = [\"192.0.2.3\"]"]), "lb.toml")
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("needs `secret` or `secret_file`"),
        "{missing}"
    );
    assert!(missing.starts_with("lb.toml:"), "{missing}");
}
