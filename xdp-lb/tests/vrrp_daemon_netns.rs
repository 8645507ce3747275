//! The daemon with a VRRP instance: services on the instance's VIP are forwarded by
//! XDP only once this node is MASTER, the VIP is added by VRRP (not by hand), and a
//! stop hands the VIP back (priority 0) and removes it.
mod support;

use std::time::Duration;

use support::{IO_TIMEOUT, assert_split, config, dr_lab, start, vip};
use xdp_lb_lab::{DrLab, DrLabOptions, http_get_new_connections};

#[test]
fn services_follow_the_vrrp_state_of_their_vip() {
    let mut lab = dr_lab(DrLabOptions::one_arm(&["b1", "b2"]));
    lab.start_http_backends(80).unwrap();
    // VRRP owns the VIP now: take away the one the lab put on the LB.
    lab.lb
        .ip(["addr", "del", &format!("{}/32", DrLab::VIP), "dev", "eth0"])
        .unwrap();
    let text = format!(
        "{}\n[vrrp.VI_1]\ninterface = \"eth0\"\nvirtual_router_id = 51\nversion = 3\n\
         advert_interval = \"100ms\"\nvirtual_ipaddresses = [\"{}/32\"]\n",
        config(&lab, &[(80, "tcp", &[1, 1])]),
        DrLab::VIP
    );
    let mut daemon = start(&lab.lb, &text);
    // Alone on the segment, it becomes MASTER after the master-down interval.
    let line = daemon
        .wait_for_line("data plane follows vrrp", Duration::from_secs(10))
        .unwrap();
    assert!(line.contains("forwarding=true"), "{line}");
    let addrs = lab.lb.ip(["addr", "show", "dev", "eth0"]).unwrap();
    assert!(
        addrs.contains(&format!("inet {}/32", DrLab::VIP)),
        "VRRP added the VIP:\n{addrs}"
    );
    let tally = http_get_new_connections(&lab.client, vip(80), 40, IO_TIMEOUT).unwrap();
    assert_split(&tally, &[("b1", 1), ("b2", 1)], 40, 5.0);

    let log = daemon.stop().unwrap();
    assert!(
        log.contains("forwarding=false"),
        "the service stopped with the instance:\n{log}"
    );
    let addrs = lab.lb.ip(["addr", "show", "dev", "eth0"]).unwrap();
    assert!(
        !addrs.contains(&format!("inet {}/32", DrLab::VIP)),
        "VIP left behind:\n{addrs}"
    );
}
