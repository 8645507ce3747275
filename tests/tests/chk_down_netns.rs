//! The keepalived guide's `chk_down` track script, run by real keepalived and by
//! xdp-lb from `import-keepalived` of the very same file: the same verdict both ways,
//! without and with the down file. keepalived splits the script into arguments with
//! no shell, so `bash -c` runs only the `[[ ]]` test (`&& exit 1 || exit 0` become its
//! `$0`...): the script fails while the file is missing. The import keeps that meaning.
use std::time::Duration;

use xdp_lb_lab::{Keepalived, veth_pair};
use xdp_lb_tests::{spawn, xdp_lb};

const VERDICT: Duration = Duration::from_secs(10);

fn keepalived_conf(down: &std::path::Path) -> String {
    format!(
        "global_defs {{\n    router_id chk_down_lab\n    script_user root\n    \
         enable_script_security\n}}\n\
         vrrp_script chk_down {{\n    script \"/bin/bash -c '[[ -e {} ]]' && exit 1 || exit 0\"\n    \
         interval 1\n}}\n\
         vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    \
         priority 100\n    advert_int 1\n    virtual_ipaddress {{\n        192.0.2.100/32\n    }}\n    \
         track_script {{\n        chk_down\n    }}\n}}\n",
        down.display()
    )
}

#[test]
fn the_guides_chk_down_gives_the_same_verdict_under_keepalived_and_imported() {
    let (ka_ns, lb_ns) = veth_pair("xlbcd").expect("this test builds network namespaces");
    ka_ns
        .ip(["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .unwrap();
    lb_ns
        .ip(["addr", "add", "192.0.2.2/24", "dev", "eth0"])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let down = dir.path().join("down");
    let conf = dir.path().join("keepalived.conf");
    std::fs::write(&conf, keepalived_conf(&down)).unwrap();

    let (code, toml, stderr) = xdp_lb(&["import-keepalived", conf.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    // keepalived's argv: bash gets the test alone.
    let argv = format!(
        "command = [\"/bin/bash\", \"-c\", \"[[ -e {} ]]\", \"&&\", \"exit\", \"1\", \"||\", \"exit\", \"0\"]",
        down.display()
    );
    assert!(toml.contains(&argv), "{toml}");

    let keepalived = Keepalived::start_config(&ka_ns, dir.path(), 0, &keepalived_conf(&down))
        .expect("keepalived starts");
    let mut daemon = spawn(&lb_ns, &toml);

    // No down file: both fail (exit 1).
    keepalived
        .wait_line(
            "VRRP_Script(chk_down) failed (exited with status 1)",
            VERDICT,
        )
        .unwrap();
    let line = daemon.wait_for_line("track script fails", VERDICT).unwrap();
    assert!(line.contains("exit code 1"), "{line}");

    // The down file: both succeed.
    std::fs::write(&down, b"").unwrap();
    keepalived
        .wait_line("VRRP_Script(chk_down) succeeded", VERDICT)
        .unwrap();
    daemon
        .wait_for_line("track script succeeds again", VERDICT)
        .unwrap();

    // Gone again: both fail again.
    std::fs::remove_file(&down).unwrap();
    keepalived
        .wait_line(
            "VRRP_Script(chk_down) failed (exited with status 1)",
            VERDICT,
        )
        .unwrap();
    let line = daemon.wait_for_line("track script fails", VERDICT).unwrap();
    assert!(line.contains("exit code 1"), "{line}");
    daemon.stop().unwrap();
}
