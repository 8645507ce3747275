//! NAT connections through a VRRP failover, with the real binary on two LBs (a NAT
//! gateway pair: the client segment on eth0, the real servers behind eth1 routing
//! via the inside VRRP address 192.0.2.1; both instances in one sync group, VRRPv3
//! at 200 ms). 49 HTTP keep-alive connections and one paced 8 MB download are open
//! through the MASTER (wrr over two real servers: only the flow table keeps a
//! connection on its server) when the MASTER's host dies: its interfaces go down
//! inside its namespace, then its xdp-lb is killed with -9.
//!
//! Why both: `kill -9` alone is a restart to xdp-lb (the XDP link and the maps are
//! pinned, and the VIPs stay leased for 5 s), so the dead node would keep forwarding
//! and answering ARP; with its links down nothing of it is left on the wire, as when
//! the host fails.
//!
//! With `[sync]` (unicast to the peer, or keepalived's multicast group as the importer
//! writes it), the backup holds the connections when it takes over: 0 resets at
//! the client and at the real servers (the kernel's own TCP counters), every
//! keep-alive connection answers from the same server, the download completes byte
//! for byte. Without `[sync]` (the control), the same failover resets connections.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use xdp_lb_lab::{DrLab, DrLabOptions, KeepAlive, Netns};
use xdp_lb_tests::{IO_TIMEOUT, binary, dr_lab, start, vip};

const KEEPALIVE: usize = 49;
const DOWNLOAD_BYTES: u64 = 8_000_000;
/// The download lasts about 8 s: the failover happens in its middle.
const DOWNLOAD_RATE: u64 = 1_000_000;
const SECRET: &str = "nat-sync-test-secret-0123456789";

/// How the LBs sync, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    Off,
    /// To the peer's address.
    Unicast,
    /// To keepalived's group, 224.0.0.81 (what `import-keepalived` writes).
    Multicast,
}

fn config(lab: &DrLab, me: u8, peer: u8, priority: u8, sync: Sync) -> String {
    let mut text = format!(
        "[global]\nrouter_id = \"lb{me}\"\n\n\
         [dataplane]\ninterfaces = [\"eth0\", \"eth1\"]\nneighbour_timeout = \"10s\"\n\n"
    );
    for (name, iface, vrid, vip) in [
        ("VI_OUT", "eth0", 61, format!("{}/32", DrLab::VIP)),
        ("VI_IN", "eth1", 62, "192.0.2.1/24".to_owned()),
    ] {
        text += &format!(
            "[vrrp.{name}]\ninterface = \"{iface}\"\nvirtual_router_id = {vrid}\n\
             priority = {priority}\nversion = 3\nadvert_interval = \"200ms\"\n\
             virtual_ipaddresses = [\"{vip}\"]\n\n"
        );
    }
    text += "[vrrp_sync_group.GW]\ngroup = [\"VI_OUT\", \"VI_IN\"]\n\n";
    let to = match sync {
        Sync::Off => None,
        Sync::Unicast => Some(format!("peers = [\"192.0.2.{peer}\"]")),
        Sync::Multicast => Some("group = \"224.0.0.81\"".to_owned()),
    };
    if let Some(to) = to {
        text += &format!(
            "[sync]\ninstance = \"VI_OUT\"\ninterface = \"eth1\"\n{to}\n\
             secret = \"{SECRET}\"\ninterval = \"500ms\"\n\n"
        );
    }
    text += &format!(
        "[[virtual_server]]\nvip = \"{}\"\nport = 80\nscheduler = \"wrr\"\nforwarding = \"nat\"\n",
        DrLab::VIP
    );
    for b in &lab.backends {
        text += &format!(
            "  [[virtual_server.real_server]]\n  address = \"{}\"\n  port = 8080\n",
            b.addr
        );
    }
    text
}

/// TCP resets as a namespace's kernel counted them: (EstabResets, OutRsts).
fn resets(ns: &Netns) -> (u64, u64) {
    let snmp = ns.sh("cat /proc/net/snmp").unwrap();
    let tcp: Vec<Vec<&str>> = snmp
        .lines()
        .filter(|l| l.starts_with("Tcp:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let field = |name: &str| {
        let i = tcp[0].iter().position(|f| *f == name).unwrap();
        tcp[1][i].parse::<u64>().unwrap()
    };
    (field("EstabResets"), field("OutRsts"))
}

/// The backup's sync counters from its status API: (entries installed, refused).
fn installed(ns: &Netns) -> (u64, u64) {
    let out = ns
        .command(binary())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let peer = &json["sync"]["peers"]["192.0.2.2"];
    let refused: u64 = ["messages_refused", "entries_refused"]
        .iter()
        .filter_map(|k| peer[k].as_object())
        .flat_map(|m| m.values().filter_map(|v| v.as_u64()))
        .sum();
    (peer["entries_installed"].as_u64().unwrap_or(0), refused)
}

/// `GET /metrics` from the daemon's API in `ns`.
fn metrics(ns: &Netns) -> String {
    ns.run(|| {
        let mut s = TcpStream::connect("127.0.0.1:9180").unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    })
    .unwrap()
}

/// Prometheus's own linter on `body`.
fn promtool_check(body: &str) {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A paced download on its own connection, on a thread in the client's namespace:
/// the bytes received so far are counted in `progress`; it yields the real server
/// and the length, every byte checked against the server's pattern.
fn download(
    client: &Netns,
    progress: Arc<AtomicU64>,
) -> std::thread::JoinHandle<anyhow::Result<anyhow::Result<(String, u64)>>> {
    client
        .spawn(move || -> anyhow::Result<(String, u64)> {
            let mut s = TcpStream::connect_timeout(&vip(80), IO_TIMEOUT)?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            write!(
                s,
                "GET /download/{DOWNLOAD_BYTES}/{DOWNLOAD_RATE} HTTP/1.1\r\nHost: vip\r\n\r\n"
            )?;
            let mut r = BufReader::new(s);
            let mut server = String::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line)?;
                if let Some(v) = line.strip_prefix("X-Backend: ") {
                    server = v.trim().to_owned();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut got = 0u64;
            let mut buf = vec![0u8; 65536];
            while got < DOWNLOAD_BYTES {
                let n = r.read(&mut buf)?;
                anyhow::ensure!(
                    n > 0,
                    "the download ended after {got} of {DOWNLOAD_BYTES} bytes"
                );
                for (i, b) in buf[..n].iter().enumerate() {
                    let at = got + i as u64;
                    anyhow::ensure!(
                        u64::from(*b) == at % 251,
                        "byte {at} is {b}, not {}",
                        at % 251
                    );
                }
                got += n as u64;
                progress.store(got, Ordering::Relaxed);
            }
            Ok((server, got))
        })
        .unwrap()
}

struct Outcome {
    broken: usize,
    client_resets: (u64, u64),
    server_resets: u64,
    download: anyhow::Result<(String, u64)>,
    takeover: Duration,
    /// The new MASTER's `/metrics`.
    metrics: String,
    /// The new MASTER's log, stopped cleanly.
    log: String,
}

/// Builds the pair, opens the connections, fails the MASTER's host and checks every
/// connection afterwards.
fn fail_over(sync: Sync) -> Outcome {
    let mut lab = dr_lab(DrLabOptions::two_arm(&["b1", "b2"]).with_standby());
    lab.start_http_backends(8080).unwrap();
    let mut lb1 = start(&lab.lb, &config(&lab, 1, 3, 150, sync));
    lb1.wait_for_line("entering MASTER state", Duration::from_secs(10))
        .unwrap();
    let standby = lab.standby.as_ref().unwrap();
    let mut lb2 = start(standby, &config(&lab, 2, 2, 100, sync));
    lb2.wait_for_line("entering BACKUP state", Duration::from_secs(10))
        .unwrap();
    // The real servers' gateway is now the pair's inside address.
    for b in &lab.backends {
        b.ns.ip(["route", "replace", "default", "via", "192.0.2.1"])
            .unwrap();
    }

    let mut connections: Vec<(KeepAlive, String)> = (0..KEEPALIVE)
        .map(|_| {
            let mut c = KeepAlive::open(&lab.client, vip(80), IO_TIMEOUT).unwrap();
            let server = c.get().unwrap();
            (c, server)
        })
        .collect();
    let spread: std::collections::BTreeSet<&String> = connections.iter().map(|(_, s)| s).collect();
    assert_eq!(spread.len(), 2, "wrr spreads them over both real servers");
    let progress = Arc::new(AtomicU64::new(0));
    let downloader = download(&lab.client, progress.clone());
    let until = Instant::now() + Duration::from_secs(10);
    while progress.load(Ordering::Relaxed) < 500_000 {
        assert!(Instant::now() < until, "the download does not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    if sync != Sync::Off {
        // Every connection is on the backup before the MASTER fails.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let (n, refused) = installed(standby);
            assert_eq!(refused, 0, "the backup refused entries:\n{}", lb2.log());
            if n >= (KEEPALIVE + 1) as u64 {
                eprintln!("measured: the backup installed {n} entries before the failover");
                break;
            }
            assert!(
                Instant::now() < until,
                "the backup installed {n} entries:\n{}\nMASTER:\n{}",
                lb2.log(),
                lb1.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let client_before = resets(&lab.client);
    let server_before: u64 = lab.backends.iter().map(|b| resets(&b.ns).0).sum();

    // The MASTER's host dies: off the wire first, then its daemon.
    let failed = Instant::now();
    lab.lb.ip(["link", "set", "eth0", "down"]).unwrap();
    lab.lb.ip(["link", "set", "eth1", "down"]).unwrap();
    lb1.signal(Signal::SIGKILL).unwrap();
    let _ = lb1.wait_exit(Duration::from_secs(5));
    lb2.wait_for_line("entering MASTER state", Duration::from_secs(10))
        .unwrap();
    let takeover = failed.elapsed();
    eprintln!("measured: {sync:?}: the backup was MASTER {takeover:?} after the failure");

    let mut broken = 0;
    for (i, (c, server)) in connections.iter_mut().enumerate() {
        match c.get() {
            Ok(name) if name == *server => {}
            other => {
                eprintln!("broken: connection {i}: {other:?} (was on {server})");
                broken += 1;
            }
        }
    }
    let download = downloader.join().unwrap().and_then(|r| r);
    if std::env::var_os("NAT_SYNC_DEBUG").is_some() {
        let out = standby
            .command(binary())
            .args(["status", "--json"])
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        for b in &lab.backends {
            eprintln!(
                "{}: {}",
                b.name,
                b.ns.sh("grep Tcp: /proc/net/snmp").unwrap()
            );
        }
    }
    let client_after = resets(&lab.client);
    let server_after: u64 = lab.backends.iter().map(|b| resets(&b.ns).0).sum();
    Outcome {
        broken,
        client_resets: (
            client_after.0 - client_before.0,
            client_after.1 - client_before.1,
        ),
        server_resets: server_after - server_before,
        download,
        takeover,
        metrics: metrics(standby),
        log: lb2.stop().unwrap(),
    }
}

#[test]
fn with_sync_nat_connections_survive_the_masters_death() {
    survive(Sync::Unicast);
}

#[test]
fn with_multicast_sync_as_keepalived_nat_connections_survive_too() {
    survive(Sync::Multicast);
}

fn survive(sync: Sync) {
    let o = fail_over(sync);
    eprintln!(
        "measured: {sync:?}: {} of {KEEPALIVE} keep-alive connections broken, resets at the \
         client {:?} (established reset, sent), at the real servers {}, download {:?}",
        o.broken, o.client_resets, o.server_resets, o.download
    );
    let log = &o.log;
    assert_eq!(o.broken, 0, "{log}");
    assert_eq!(o.client_resets, (0, 0), "the client saw resets");
    assert_eq!(o.server_resets, 0, "the real servers saw resets");
    let (server, bytes) = o.download.expect("the download completes intact");
    assert_eq!(bytes, DOWNLOAD_BYTES);
    assert!(!server.is_empty());
    assert!(o.takeover < Duration::from_secs(5), "{:?}", o.takeover);
    // The new MASTER sends from now on, and says what it installed before.
    assert!(log.contains("nat sync: MASTER, sending"), "{log}");
    let installed = o
        .metrics
        .lines()
        .find_map(|l| l.strip_prefix("xdp_lb_sync_entries_installed_total{peer=\"192.0.2.2\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(installed >= Some(50), "{}", o.metrics);
    assert!(
        o.metrics
            .contains("xdp_lb_sync_info{instance=\"VI_OUT\",role=\"sending\"} 1"),
        "{}",
        o.metrics
    );
    promtool_check(&o.metrics);
}

#[test]
fn without_sync_the_same_failover_breaks_nat_connections() {
    let o = fail_over(Sync::Off);
    eprintln!(
        "measured: no sync: {} of {KEEPALIVE} keep-alive connections broken, resets at the \
         client {:?}, at the real servers {}, download {:?}",
        o.broken,
        o.client_resets,
        o.server_resets,
        o.download.as_ref().map(|d| d.1)
    );
    assert!(o.broken > 0, "the control should break connections");
    assert!(o.client_resets.0 > 0, "the client should see resets");
}
