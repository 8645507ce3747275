//! keepalived's signals on the real binary: SIGUSR1 writes a data dump (services, real
//! servers, health, the flow table) and SIGUSR2 a stats dump (every counter), and
//! neither stops the daemon, which keeps forwarding. Needs root; the lab is torn down
//! on drop.

use std::time::Duration;

use nix::sys::signal::Signal;
use xdp_lb_lab::{DrLab, DrLabOptions, KeepAlive, http_get_new_connections};
use xdp_lb_tests::{IO_TIMEOUT, config, dr_lab, start, vip};

#[test]
fn sigusr1_and_sigusr2_write_dumps_and_the_daemon_carries_on() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[global]\ndump_dir = \"{}\"\n\n{}",
        dir.path().display(),
        config(&lab, &[(80, "tcp", &[1, 1])])
    );
    let mut daemon = start(&lab.lb, &text);
    // A connection held open, so the flow table has an entry to show.
    let mut open = KeepAlive::open(&lab.client, vip(80), IO_TIMEOUT).unwrap();
    let server = open.get().unwrap();

    daemon.signal(Signal::SIGUSR1).unwrap();
    daemon
        .wait_for_line("Data dump written", Duration::from_secs(5))
        .unwrap();
    let data = std::fs::read_to_string(dir.path().join("xdp-lb.data")).unwrap();
    let service = format!("{}:80/tcp", DrLab::VIP);
    let server_addr = lab.backend(&server).unwrap().addr;
    for needle in [
        "SERVICES".to_string(),
        format!("  {service} dr wrr  forwarding"),
        format!("    -> {server_addr}:80"),
        "FLOWS".to_string(),
    ] {
        assert!(
            data.contains(&needle),
            "no {needle:?} in the data dump:\n{data}"
        );
    }
    let client = format!(" {}:", lab.client_addr());
    assert!(
        data.lines().any(|l| l.starts_with("TCP ACTIVE")
            && l.contains(&client)
            && l.contains(&service)
            && l.ends_with(&format!("{server_addr}:80"))),
        "no flow line for the open connection:\n{data}"
    );

    daemon.signal(Signal::SIGUSR2).unwrap();
    daemon
        .wait_for_line("Stats dump written", Duration::from_secs(5))
        .unwrap();
    let stats = std::fs::read_to_string(dir.path().join("xdp-lb.stats")).unwrap();
    assert!(
        stats.contains(&format!(
            "xdp_lb_service_packets_total{{service=\"{service}\"}}"
        )),
        "{stats}"
    );

    // Still running and forwarding, the open connection included.
    assert_eq!(open.get().unwrap(), server);
    let tally = http_get_new_connections(&lab.client, vip(80), 10, IO_TIMEOUT).unwrap();
    assert_eq!(tally.values().sum::<usize>(), 10, "{tally:?}");
    daemon.stop().unwrap();
}
