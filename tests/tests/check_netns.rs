//! `xdp-lb check` refuses what the daemon's start would refuse on this host (missing
//! interfaces, DR real servers that are not on-link, a real server that is this host),
//! and only reads: it runs in a namespace of its own, as an unprivileged user.
use xdp_lb_lab::{Netns, veth_pair};

/// A namespace with `eth0` at 10.0.0.1/24 and a default route through 10.0.0.254.
fn host() -> (Netns, Netns) {
    let (lb, peer) = veth_pair("xlbck").expect("these tests build network namespaces");
    lb.ip(["addr", "add", "10.0.0.1/24", "dev", "eth0"])
        .unwrap();
    lb.ip(["route", "add", "default", "via", "10.0.0.254"])
        .unwrap();
    (lb, peer)
}

fn config(interface: &str, real_server: &str, vrrp_interface: &str) -> String {
    format!(
        "[dataplane]\ninterfaces = [\"{interface}\"]\n\n\
         [[virtual_server]]\nvip = \"10.0.0.100\"\nport = 80\n\
           [[virtual_server.real_server]]\n  address = \"{real_server}\"\n\n\
         [vrrp.VI_1]\ninterface = \"{vrrp_interface}\"\nvirtual_router_id = 51\n\
         virtual_ipaddresses = [\"10.0.0.100/24\"]\n"
    )
}

/// Runs `xdp-lb check [extra] --config FILE` in `ns` as `nobody`: (exit code, stdout +
/// stderr).
fn check(ns: &Netns, text: &str, extra: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, text).unwrap();
    // Readable by nobody: tempdir is 0700.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = ns
        .command("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(xdp_lb_tests::binary())
        .arg("check")
        .args(extra)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn check_accepts_a_config_this_host_can_run() {
    let (lb, _peer) = host();
    let (code, out) = check(&lb, &config("eth0", "10.0.0.11", "eth0"), &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("ok (1 virtual servers, 1 real servers"),
        "{out}"
    );
}

#[test]
fn check_names_an_interface_that_does_not_exist() {
    let (lb, _peer) = host();
    let (code, out) = check(&lb, &config("eth9", "10.0.0.11", "eth0"), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("this host cannot run it: unknown interface `eth9`"),
        "{out}"
    );
    let (code, out) = check(&lb, &config("eth0", "10.0.0.11", "eth7"), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("this host cannot run it: vrrp instance `VI_1`: unknown interface `eth7`"),
        "{out}"
    );
    assert_eq!(out.matches("eth7").count(), 1, "said once: {out}");
    // The file alone is fine: `--offline` (a build host) does not look at interfaces.
    let (code, out) = check(&lb, &config("eth9", "10.0.0.11", "eth7"), &["--offline"]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn check_refuses_a_dr_real_server_that_is_not_on_link() {
    let (lb, _peer) = host();
    let (code, out) = check(&lb, &config("eth0", "10.9.0.5", "eth0"), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "real server 10.9.0.5 of 10.0.0.100:80/tcp is behind gateway 10.0.0.254 on `eth0`, \
             not on-link; dr forwarding needs it on the same L2 segment"
        ),
        "{out}"
    );
}

#[test]
fn check_refuses_a_real_server_that_is_this_host() {
    let (lb, _peer) = host();
    let (code, out) = check(&lb, &config("eth0", "10.0.0.1", "eth0"), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "real server 10.0.0.1 of 10.0.0.100:80/tcp is an address of this host: XDP \
             forwards to other hosts only"
        ),
        "{out}"
    );
}
