//! The command line without privileges: `check` validates and names file:line:col.

use xdp_lb_tests::xdp_lb;

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

#[test]
fn check_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/lb.example.toml");
    let (code, stdout, stderr) = xdp_lb(&["check", "--offline", "--config", example]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout
            .contains("ok (3 virtual servers, 5 real servers, 1 vrrp instances, interfaces: eth0)"),
        "{stdout}"
    );
}

#[test]
fn check_accepts_every_shipped_config() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let (code, stdout, stderr) =
            xdp_lb(&["check", "--offline", "--config", path.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{}: {stderr}", path.display());
        assert!(stdout.contains(": ok ("), "{stdout}");
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "dr-pair.toml",
            "dual-master.toml",
            "lb.example.toml",
            "nat-gateway-pair.toml"
        ]
    );
}

#[test]
fn check_names_file_line_and_column_of_a_bad_value() {
    let f = write(
        "[dataplane]\ninterfaces = [\"eth0\"]\n\n[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\nforwarding = \"masq\"\n  [[virtual_server.real_server]]\n  address = \"192.0.2.11\"\n",
    );
    let path = f.path().to_str().unwrap().to_string();
    let (code, _, stderr) = xdp_lb(&["check", "--config", &path]);
    assert_eq!(code, Some(1));
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("xdp-lb: error: {path}:7:14:")),
        "{stderr}"
    );
    assert!(first.contains("did you mean \"nat\"?"), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line, not a backtrace:\n{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let (code, _, stderr) = xdp_lb(&["check", "--config", "/nonexistent/lb.toml"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent/lb.toml"), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");
}

#[test]
fn no_config_at_all_says_how_to_give_one() {
    let (code, _, stderr) = xdp_lb(&[]);
    assert_eq!(code, Some(1));
    // The package installs /etc/xdp-lb/lb.toml; this machine has none.
    assert!(
        stderr
            .contains("no configuration: /etc/xdp-lb/lb.toml does not exist; give `--config FILE`"),
        "{stderr}"
    );
}

#[test]
fn an_unprivileged_run_says_which_privileges_are_missing() {
    assert_eq!(
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() },
        0,
        "this test drops root with setpriv: run it as root"
    );
    let f = write("[dataplane]\ninterfaces = [\"lo\"]\n");
    // Readable by the unprivileged user the daemon runs as below.
    std::fs::set_permissions(
        f.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(xdp_lb_tests::binary())
        .arg("--config")
        .arg(f.path())
        .output()
        .expect("setpriv (util-linux) runs the daemon as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("xdp-lb: error: missing privileges: xdp-lb needs root or the capabilities CAP_NET_ADMIN (attaches XDP, manages neighbours and VIPs), CAP_NET_RAW (VRRP, ICMP checks and gratuitous ARP use raw sockets), CAP_BPF (loads the XDP program and its maps), CAP_PERFMON (loads the XDP program and its maps)"),
        "{stderr}"
    );
}

#[test]
fn root_without_cap_net_raw_is_stopped_before_ready_naming_it() {
    let f = write("[dataplane]\ninterfaces = [\"lo\"]\n");
    // Root, but CAP_NET_RAW out of the bounding set (as a unit that forgot it).
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set=-net_raw", "--inh-caps=-all"])
        .arg(xdp_lb_tests::binary())
        .arg("--config")
        .arg(f.path())
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "missing privileges: xdp-lb needs root or the capabilities CAP_NET_RAW (VRRP, ICMP \
             checks and gratuitous ARP use raw sockets)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("xdp-lb ready"), "{stderr}");
}

#[test]
fn status_with_the_api_turned_off_says_how_to_turn_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(
        &path,
        "[global]\napi = \"off\"\n[dataplane]\ninterfaces = [\"eth0\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = xdp_lb(&["status", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("sets `[global] api = \"off\"`, so the daemon serves no status"),
        "{stderr}"
    );
}

/// The API is on by default: with no arguments `status` asks 127.0.0.1:9180 (nothing
/// listens there in this namespace, so the error names the address).
#[test]
fn status_without_arguments_asks_the_default_api() {
    xdp_lb_lab::require_root().expect("this test builds a network namespace");
    let ns = xdp_lb_lab::Netns::new("xlb-cli-api").unwrap();
    let out = ns
        .command(xdp_lb_tests::binary())
        .arg("status")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the status API at 127.0.0.1:9180"),
        "{stderr}"
    );
}

/// A process in a test namespace, killed on drop.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something listens on `port` of the namespace's loopback.
fn wait_listening(ns: &xdp_lb_lab::Netns, port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = ns.command("ss").args(["-Hltn"]).output().unwrap();
        let listening = String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains(&format!("127.0.0.1:{port} ")));
        if listening {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `md5sum` of `data`: an implementation nobody here wrote.
fn md5sum(data: &[u8]) -> String {
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_owned()
}

/// Runs `program args` in `ns`: exit code, stdout, stderr.
fn run_in(ns: &xdp_lb_lab::Netns, program: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = ns.command(program).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// keepalived's own genhash (the Debian package's, keepalived 2.x) and `xdp-lb genhash`
/// against python's http.server in a fresh namespace: the same line on stdout, and it
/// is the md5sum of the page.
#[test]
fn genhash_prints_what_keepalived_s_genhash_prints() {
    xdp_lb_lab::require_root().expect("this test builds a network namespace");
    assert!(
        std::path::Path::new("/usr/bin/genhash").exists(),
        "keepalived's genhash (/usr/bin/genhash, Debian package keepalived) is needed"
    );
    let ns = xdp_lb_lab::Netns::new("xlb-genhash").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let page = b"<html><body>a page for genhash</body></html>\n";
    std::fs::write(dir.path().join("index.html"), page).unwrap();
    let port = 8081;
    let _python = Served(
        ns.command("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&ns, port, "python3 -m http.server");
    let args = ["-s", "127.0.0.1", "-p", "8081", "-u", "/index.html"];
    let (code, theirs, stderr) = run_in(&ns, "/usr/bin/genhash", &args);
    assert_eq!(code, Some(0), "genhash: {stderr}");
    let binary = xdp_lb_tests::binary();
    let binary = binary.to_str().unwrap();
    let ours_args: Vec<&str> = ["genhash"].into_iter().chain(args).collect();
    let (code, ours, stderr) = run_in(&ns, binary, &ours_args);
    assert_eq!(code, Some(0), "xdp-lb genhash: {stderr}");
    assert_eq!(
        ours, theirs,
        "xdp-lb genhash and keepalived's genhash differ"
    );
    assert_eq!(ours, format!("{}\n", md5sum(page)));
    assert_eq!(stderr, "");
    // A virtualhost and the long options; sha256 on request.
    let (code, sha, _) = run_in(
        &ns,
        binary,
        &[
            "genhash",
            "--server",
            "127.0.0.1",
            "--port",
            "8081",
            "--url",
            "/index.html",
            "--use-virtualhost",
            "www.example.test",
            "--hash",
            "sha256",
        ],
    );
    assert_eq!(code, Some(0));
    let sha256 = std::process::Command::new("sha256sum")
        .arg(dir.path().join("index.html"))
        .output()
        .unwrap();
    assert_eq!(sha.trim(), &String::from_utf8_lossy(&sha256.stdout)[..64]);
    // A missing page: the body is hashed as keepalived's genhash does, with a warning.
    let missing = ["-s", "127.0.0.1", "-p", "8081", "-u", "/missing.html"];
    let (_, theirs, _) = run_in(&ns, "/usr/bin/genhash", &missing);
    let ours_args: Vec<&str> = ["genhash"].into_iter().chain(missing).collect();
    let (code, ours, stderr) = run_in(&ns, binary, &ours_args);
    assert_eq!((code, &ours), (Some(0), &theirs));
    assert!(
        stderr.contains("answered status 404: a check of it fails unless its `status` accepts 404"),
        "{stderr}"
    );
    // Nothing listening: an error and a failure exit (keepalived's genhash exits 0).
    let (code, ours, stderr) = run_in(
        &ns,
        binary,
        &["genhash", "-s", "127.0.0.1", "-p", "8082", "-u", "/"],
    );
    assert_eq!((code, ours.as_str()), (Some(1), ""));
    assert!(
        stderr.contains("GET 127.0.0.1:8082/: connection refused"),
        "{stderr}"
    );
}

/// `-S`: over TLS, against `openssl s_server -WWW` with a self-signed certificate, as
/// keepalived's genhash -S sees it.
#[test]
fn genhash_over_tls_matches_keepalived_s() {
    xdp_lb_lab::require_root().expect("this test builds a network namespace");
    let ns = xdp_lb_lab::Netns::new("xlb-genhash-s").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let page = b"served over tls\n";
    std::fs::write(dir.path().join("page.txt"), page).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = 8443;
    let _server = Served(
        ns.command("openssl")
            .args([
                "s_server",
                "-quiet",
                "-accept",
                "127.0.0.1:8443",
                "-cert",
                "cert.pem",
            ])
            .args(["-key", "key.pem", "-WWW"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&ns, port, "openssl s_server");
    let args = ["-S", "-s", "127.0.0.1", "-p", "8443", "-u", "/page.txt"];
    let (code, theirs, stderr) = run_in(&ns, "/usr/bin/genhash", &args);
    assert_eq!(code, Some(0), "genhash: {stderr}");
    let binary = xdp_lb_tests::binary();
    let ours_args: Vec<&str> = ["genhash"].into_iter().chain(args).collect();
    let (code, ours, stderr) = run_in(&ns, binary.to_str().unwrap(), &ours_args);
    assert_eq!(code, Some(0), "xdp-lb genhash -S: {stderr}");
    assert_eq!(ours, theirs);
    assert_eq!(ours, format!("{}\n", md5sum(page)));
}

#[test]
fn check_reports_source_filter_rules_that_never_decide() {
    let f = write(
        "[dataplane]\ninterfaces = [\"eth0\"]\n\n[filter]\ndeny = [\"203.0.113.0/24\"]\n\n\
         [[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\n\
         allow = [\"198.51.100.0/24\", \"203.0.113.128/25\"]\ndeny = [\"198.51.100.0/24\"]\n\
           [[virtual_server.real_server]]\n  address = \"192.0.2.11\"\n",
    );
    let path = f.path().to_str().unwrap().to_string();
    // A prefix both allowed and denied is an error: which would win is not clear.
    let (code, _, stderr) = xdp_lb(&["check", "--offline", "--config", &path]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("xdp-lb: error: {path}:11:9: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("both allowed (line 10) and denied"),
        "{stderr}"
    );
    // One that never decides is a warning: it installs and counts, but is most likely
    // a mistake.
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "deny = [\"198.51.100.0/24\"]",
        "deny = [\"198.51.100.0/25\"]",
    );
    std::fs::write(&path, text).unwrap();
    let (code, stdout, stderr) = xdp_lb(&["check", "--offline", "--config", &path]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "xdp-lb: warning: {path}:10:29: virtual server 192.0.2.100:80/tcp: allow \
             203.0.113.128/25 never decides: [filter] deny 203.0.113.0/24 (line 5) drops these \
             sources first"
        )
    );
    assert!(
        stdout.contains("4 source-filter rules (1 never decide)"),
        "{stdout}"
    );
}

#[test]
fn check_counts_bfd_sessions_and_warns_when_bfdd_is_not_there() {
    let f = write(
        "[global]\nbfdd_socket = \"/nonexistent/bfdd.sock\"\n\n\
         [dataplane]\ninterfaces = [\"lo\"]\n\n\
         [bfd.to_b]\npeer = \"192.0.2.2\"\nmin_rx = \"20ms\"\nmin_tx = \"20ms\"\n\n\
         [vrrp.VI_1]\ninterface = \"lo\"\nvirtual_router_id = 51\n\
         virtual_ipaddresses = [\"192.0.2.100/24\"]\npeer_bfd = [\"to_b\"]\n",
    );
    let path = f.path().to_str().unwrap().to_string();
    let (code, stdout, stderr) = xdp_lb(&["check", "--config", &path]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("1 vrrp instances, 1 bfd sessions"),
        "{stdout}"
    );
    assert!(
        stderr
            .contains("xdp-lb: warning: bfdd's control socket /nonexistent/bfdd.sock is not there"),
        "{stderr}"
    );
    // Offline, the host is not looked at.
    let (code, _, stderr) = xdp_lb(&["check", "--offline", "--config", &path]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
}
