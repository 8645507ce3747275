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
            .contains("ok (2 virtual servers, 4 real servers, 1 vrrp instances, interfaces: eth0)"),
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
