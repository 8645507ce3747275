use super::*;
use crate::config;

const CONFIG: &str = r#"
[dataplane]
interfaces = ["eth0", "eth1"]

[vrrp.VI_1]
interface = "eth0"
virtual_router_id = 51
priority = 150
virtual_ipaddresses = ["198.51.100.100/24"]

[sync]
instance = "VI_1"
peers = ["192.0.2.3"]
secret = "0123456789abcdef-shared"

[[virtual_server]]
vip = "198.51.100.100"
port = 80
forwarding = "nat"
  [[virtual_server.real_server]]
  address = "192.0.2.11"
  port = 8080
  [[virtual_server.real_server]]
  address = "192.0.2.12"
  port = 8080

[[virtual_server]]
vip = "198.51.100.100"
port = 443
forwarding = "dr"
  [[virtual_server.real_server]]
  address = "192.0.2.11"
"#;

const SECRET: &[u8] = b"0123456789abcdef-shared";
const S: u64 = 1_000_000_000;
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];

fn table() -> ServiceTable {
    ServiceTable::from_config(&config::parse(CONFIG, "test.toml").unwrap()).unwrap()
}

fn timeouts() -> NatTimeouts {
    config::parse(CONFIG, "test.toml")
        .unwrap()
        .dataplane
        .nat_timeouts
}

/// The reply-table entry the program writes for client port `cport` on real server
/// 192.0.2.1`n`:8080, last seen at `last_seen`.
fn reply(t: &ServiceTable, cport: u16, n: u8, last_seen: u64, flags: u16) -> (FlowKey, NatValue) {
    let svc = &t.services[0];
    let key = FlowKey {
        src: addr16(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + n))),
        dst: addr16(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))),
        sport_be: 8080u16.to_be(),
        dport_be: cport.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    let value = NatValue {
        vip: addr16(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 100))),
        vport_be: 80u16.to_be(),
        _pad: [0; 2],
        client: ClientHop {
            mac: CLIENT_MAC,
            lb_mac: [0x02, 0, 0, 0, 0, 0x01],
            ifindex: 7,
        },
        _pad2: 0,
        last_seen_ns: last_seen,
        flags,
        _pad3: 0,
        service: svc.id,
    };
    (key, value)
}

struct Master {
    table: ServiceTable,
    sender: Sender,
    interfaces: HashMap<u32, String>,
    backends: HashMap<(u32, Ipv4Addr, u16), u32>,
}

impl Master {
    fn new(rate: u64) -> Master {
        let table = table();
        let backends = backend_index(&table);
        Master {
            sender: Sender::new(
                Key::new(SECRET),
                1_700_000_000_000,
                Duration::from_secs(10),
                rate,
                Duration::from_secs(1),
            ),
            table,
            interfaces: HashMap::from([(7, "eth0".to_owned())]),
            backends,
        }
    }

    fn round(&mut self, replies: &[(FlowKey, NatValue)], now_ns: u64) -> Round {
        let cx = SendContext {
            fingerprint: wire::fingerprint(&self.table.id_map()),
            interfaces: &self.interfaces,
            backends: &self.backends,
            now_ns,
        };
        self.sender.round(replies, &cx)
    }
}

fn backup_interfaces() -> HashMap<String, (u32, [u8; 6])> {
    HashMap::from([("eth0".to_owned(), (3, [0x02, 0, 0, 0, 0, 0x02]))])
}

fn install(
    table: &ServiceTable,
    msg: &Message,
    now_ns: u64,
) -> Result<(Vec<Install>, Vec<Refusal>), Refusal> {
    let interfaces = backup_interfaces();
    let cx = InstallContext {
        table,
        fingerprint: wire::fingerprint(&table.id_map()),
        interfaces: &interfaces,
        timeouts: timeouts(),
        now_ns,
    };
    plan_install(msg, &cx)
}

fn peer() -> IpAddr {
    "192.0.2.2".parse().unwrap()
}

#[test]
fn a_new_connection_is_sent_once_and_installed_in_the_backups_terms() {
    let mut m = Master::new(10_000);
    let replies = vec![reply(&m.table, 40000, 1, 100 * S, 0)];
    let round = m.round(&replies, 102 * S);
    assert_eq!((round.entries, round.datagrams.len()), (1, 1));
    // Nothing changed: nothing to send.
    assert_eq!(m.round(&replies, 103 * S).entries, 0);

    let mut rx = Receiver::new(Key::new(SECRET), vec![peer()]);
    let msg = rx.open(peer(), &round.datagrams[0]).unwrap();
    assert_eq!(msg.header.interface, "eth0");
    let e = msg.entries[0];
    assert_eq!(e.idle_ms, 2000);
    // The backup's clock is elsewhere: the idle time carries over, not the stamp.
    let backup_now = 5_000 * S;
    let (installs, refused) = install(&table(), &msg, backup_now).unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let i = installs[0];
    let (fk, fv) = i.flow;
    assert_eq!(fk.src, addr16("203.0.113.7".parse().unwrap()));
    assert_eq!(fk.dst, addr16("198.51.100.100".parse().unwrap()));
    assert_eq!(
        (u16::from_be(fk.sport_be), u16::from_be(fk.dport_be)),
        (40000, 80)
    );
    let t = table();
    let b1 = t
        .backends
        .iter()
        .find(|b| b.addr == IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)))
        .unwrap();
    assert_eq!((fv.backend, fv.service), (b1.id.0, t.services[0].id as u16));
    assert_eq!(fv.last_seen_ns, backup_now - 2 * S);
    let (rk, rv) = i.reply;
    assert_eq!(
        (rk, rv.service, rv.vport_be),
        (replies[0].0, replies[0].1.service, 80u16.to_be())
    );
    // Node-local fields are the backup's own; the client's next hop is the entry's.
    assert_eq!(
        (rv.client.ifindex, rv.client.lb_mac),
        (3, [0x02, 0, 0, 0, 0, 0x02])
    );
    assert_eq!(rv.client.mac, CLIENT_MAC);
    assert_eq!(rv.last_seen_ns, fv.last_seen_ns);
}

#[test]
fn a_state_change_goes_at_once_a_refresh_only_after_the_refresh_period() {
    let mut m = Master::new(10_000);
    let t = table();
    assert_eq!(m.round(&[reply(&t, 1, 1, 100 * S, 0)], 100 * S).entries, 1);
    // Traffic (a new last-seen) within the refresh period: not sent.
    assert_eq!(m.round(&[reply(&t, 1, 1, 101 * S, 0)], 101 * S).entries, 0);
    // A FIN: sent at once.
    let fin = m.round(
        &[reply(&t, 1, 1, 102 * S, xdp_lb_common::FLOW_F_CLOSING)],
        102 * S,
    );
    assert_eq!(fin.entries, 1);
    let mut rx = Receiver::new(Key::new(SECRET), vec![]);
    let msg = rx.open(peer(), &fin.datagrams[0]).unwrap();
    assert_eq!(msg.entries[0].flags, wire::FLAG_CLOSING);
    let (installs, _) = install(&t, &msg, 10 * S).unwrap();
    assert_eq!(installs[0].flow.1.flags, xdp_lb_common::FLOW_F_CLOSING);
    // Traffic 10 s after the last send: refreshed, so the backup's copy stays alive.
    let c = xdp_lb_common::FLOW_F_CLOSING;
    assert_eq!(m.round(&[reply(&t, 1, 1, 111 * S, c)], 111 * S).entries, 0);
    assert_eq!(m.round(&[reply(&t, 1, 1, 112 * S, c)], 112 * S).entries, 1);
    // Idle (no new last-seen): not resent with the refreshes...
    assert_eq!(m.round(&[reply(&t, 1, 1, 112 * S, c)], 150 * S).entries, 0);
    // ...but with everything, every ten refresh periods (100 s here) from the first round.
    assert_eq!(m.round(&[reply(&t, 1, 1, 112 * S, c)], 199 * S).entries, 0);
    assert_eq!(m.round(&[reply(&t, 1, 1, 112 * S, c)], 200 * S).entries, 1);
    assert_eq!(m.round(&[reply(&t, 1, 1, 112 * S, c)], 201 * S).entries, 0);
}

#[test]
fn the_rate_defers_what_does_not_fit_new_connections_first() {
    let mut m = Master::new(100);
    let t = table();
    let old: Vec<_> = (1..=50).map(|p| reply(&t, p, 1, 100 * S, 0)).collect();
    assert_eq!(m.round(&old, 100 * S).entries, 50);
    // 20 s later: the 50 are due for a refresh, and 200 new ones arrived.
    let mut all: Vec<_> = (1..=50).map(|p| reply(&t, p, 1, 119 * S, 0)).collect();
    all.extend((1000..1200).map(|p| reply(&t, p, 2, 119 * S, 0)));
    let r = m.round(&all, 120 * S);
    assert_eq!((r.entries, r.deferred), (100, 150), "one second's worth");
    let mut rx = Receiver::new(Key::new(SECRET), vec![]);
    let ports: Vec<u16> = r
        .datagrams
        .iter()
        .flat_map(|d| rx.open(peer(), d).unwrap().entries)
        .map(|e| e.client_port)
        .collect();
    assert!(
        ports.iter().all(|p| *p >= 1000),
        "new ones first: {ports:?}"
    );
    assert_eq!(r.datagrams.len(), 4, "32 entries a message");
    assert!(r.datagrams.iter().all(|d| d.len() <= 1400));
    // The rest over the next rounds, at the rate.
    assert_eq!(m.round(&all, 121 * S).entries, 100);
    assert_eq!(m.round(&all, 122 * S).entries, 50);
    assert_eq!(m.round(&all, 123 * S).entries, 0);
}

#[test]
fn after_a_reset_everything_is_sent_again_and_gone_connections_are_forgotten() {
    let mut m = Master::new(10_000);
    let t = table();
    let two = vec![reply(&t, 1, 1, S, 0), reply(&t, 2, 2, S, 0)];
    assert_eq!(m.round(&two, S).entries, 2);
    assert_eq!(m.round(&two[..1], 2 * S).entries, 0);
    assert_eq!(m.sender.sent.len(), 1);
    m.sender.reset();
    assert_eq!(m.round(&two, 3 * S).entries, 2);
}

#[test]
fn unknown_interfaces_and_real_servers_are_skipped_not_sent() {
    let mut m = Master::new(10_000);
    let t = table();
    let mut other_if = reply(&t, 1, 1, S, 0);
    other_if.1.client.ifindex = 99;
    let unknown_server = reply(&t, 2, 9, S, 0);
    let r = m.round(&[other_if, unknown_server], S);
    assert_eq!((r.entries, r.skipped), (0, 2));
    assert!(r.datagrams.is_empty());
    // Not tried again every round (they would take the budget of new ones).
    let r = m.round(&[other_if, unknown_server], 2 * S);
    assert_eq!((r.entries, r.skipped), (0, 0));
}

fn one_message(m: &mut Master) -> Vec<u8> {
    let t = table();
    let r = m.round(&[reply(&t, 40000, 1, S, 0)], 2 * S);
    r.datagrams.into_iter().next().unwrap()
}

#[test]
fn a_wrong_secret_an_altered_byte_or_a_stranger_is_refused() {
    let mut m = Master::new(10_000);
    let d = one_message(&mut m);
    let mut rx = Receiver::new(Key::new(b"another secret, 16+"), vec![peer()]);
    assert_eq!(rx.open(peer(), &d).unwrap_err().reason, "bad_auth");
    let mut rx = Receiver::new(Key::new(SECRET), vec![peer()]);
    for at in [8, 20, 40, 60, d.len() - 1] {
        let mut bad = d.clone();
        bad[at] ^= 0x40;
        assert_eq!(
            rx.open(peer(), &bad).unwrap_err().reason,
            "bad_auth",
            "byte {at}"
        );
    }
    let stranger: IpAddr = "192.0.2.66".parse().unwrap();
    assert_eq!(rx.open(stranger, &d).unwrap_err().reason, "unknown_peer");
    // The refusals did not advance the replay window: the real one still goes in.
    assert!(rx.open(peer(), &d).is_ok());
}

#[test]
fn a_replayed_or_older_message_is_refused_and_a_restart_is_accepted() {
    let mut m = Master::new(10_000);
    let t = table();
    let first = m.round(&[reply(&t, 1, 1, S, 0)], S).datagrams.remove(0);
    let second = m.round(&[reply(&t, 2, 1, S, 0)], 2 * S).datagrams.remove(0);
    let mut rx = Receiver::new(Key::new(SECRET), vec![peer()]);
    rx.open(peer(), &second).unwrap();
    assert_eq!(rx.open(peer(), &second).unwrap_err().reason, "replayed");
    // Reordered: accepted once.
    rx.open(peer(), &first).unwrap();
    assert_eq!(rx.open(peer(), &first).unwrap_err().reason, "replayed");
    // The sender restarted: a later boot, its sequence from 1 again.
    let mut restarted = Sender::new(
        Key::new(SECRET),
        1_700_000_000_000 + 60_000,
        Duration::from_secs(10),
        100,
        Duration::from_secs(1),
    );
    let cx = SendContext {
        fingerprint: wire::fingerprint(&t.id_map()),
        interfaces: &m.interfaces,
        backends: &m.backends,
        now_ns: S,
    };
    let again = restarted
        .round(&[reply(&t, 1, 1, S, 0)], &cx)
        .datagrams
        .remove(0);
    let msg = rx.open(peer(), &again).unwrap();
    assert_eq!(msg.header.sequence, 1);
    // The earlier run's messages are older than that boot.
    let third = m.round(&[reply(&t, 3, 1, S, 0)], 3 * S).datagrams.remove(0);
    assert_eq!(rx.open(peer(), &third).unwrap_err().reason, "replayed");
}

#[test]
fn a_reordered_message_is_accepted_once_within_the_window() {
    let mut m = Master::new(10_000);
    let t = table();
    let d: Vec<Vec<u8>> = (1..=70u16)
        .map(|p| {
            m.round(&[reply(&t, p, 1, S, 0)], u64::from(p) * S)
                .datagrams
                .remove(0)
        })
        .collect();
    let mut rx = Receiver::new(Key::new(SECRET), vec![]);
    // 1..=3 arrive as 1, 3, 2: all accepted; 2 again is not.
    rx.open(peer(), &d[0]).unwrap();
    rx.open(peer(), &d[2]).unwrap();
    rx.open(peer(), &d[1]).unwrap();
    assert_eq!(rx.open(peer(), &d[1]).unwrap_err().reason, "replayed");
    // 70 arrives: 7..=69 are within the 64 up to it, still new once; 6 and below are
    // too old to tell.
    rx.open(peer(), &d[69]).unwrap();
    rx.open(peer(), &d[6]).unwrap();
    assert_eq!(rx.open(peer(), &d[6]).unwrap_err().reason, "replayed");
    assert_eq!(rx.open(peer(), &d[5]).unwrap_err().reason, "replayed");
    // Each peer has its own window.
    let other: IpAddr = "192.0.2.9".parse().unwrap();
    rx.open(other, &d[1]).unwrap();
}

#[test]
fn malformed_datagrams_never_panic_and_say_why() {
    let mut m = Master::new(10_000);
    let d = one_message(&mut m);
    let mut rx = Receiver::new(Key::new(SECRET), vec![]);
    let reason = |rx: &mut Receiver, b: &[u8]| rx.open(peer(), b).unwrap_err().reason;
    assert_eq!(reason(&mut rx, b""), "malformed");
    assert_eq!(reason(&mut rx, &d[..d.len() - 1]), "malformed");
    assert_eq!(
        reason(&mut rx, &[d.clone(), vec![0; 40]].concat()),
        "malformed"
    );
    let mut magic = d.clone();
    magic[0] = b'Y';
    assert_eq!(reason(&mut rx, &magic), "malformed");
    let mut version = d.clone();
    version[4] = 2;
    assert_eq!(reason(&mut rx, &version), "version");
    let mut count = d.clone();
    count[7] = 2;
    assert_eq!(reason(&mut rx, &count), "malformed");
    // Every truncation and a sweep of single-byte corruptions: refusals, no panic.
    for n in 0..d.len() {
        assert!(rx.open(peer(), &d[..n]).is_err());
    }
    for at in 0..d.len() {
        for bit in [0x01, 0x80] {
            let mut bad = d.clone();
            bad[at] ^= bit;
            assert!(rx.open(peer(), &bad).is_err(), "byte {at} bit {bit:#x}");
        }
    }
}

/// Signs `entries` as a genuine sender would, with the backup's own fingerprint.
fn signed(entries: &[Entry], interface: &str, fingerprint: u64) -> Message {
    let key = Key::new(SECRET);
    let header = Header {
        fingerprint,
        boot: 1,
        sequence: 1,
        interface: interface.into(),
    };
    let d = wire::encode(&key, &header, entries);
    Receiver::new(key, vec![]).open(peer(), &d).unwrap()
}

fn good_entry(t: &ServiceTable) -> Entry {
    let b1 = t
        .backends
        .iter()
        .find(|b| b.addr == IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)) && b.port == 8080)
        .unwrap();
    Entry {
        client: Ipv4Addr::new(203, 0, 113, 7),
        vip: Ipv4Addr::new(198, 51, 100, 100),
        real: Ipv4Addr::new(192, 0, 2, 11),
        client_port: 40000,
        vport: 80,
        real_port: 8080,
        proto: IPPROTO_TCP,
        flags: 0,
        service: t.services[0].id,
        backend: b1.id.0,
        idle_ms: 10,
        client_mac: CLIENT_MAC,
    }
}

#[test]
fn a_foreign_service_table_or_interface_refuses_the_whole_message() {
    let t = table();
    let fp = wire::fingerprint(&t.id_map());
    let e = good_entry(&t);
    let r = install(&t, &signed(&[e], "eth0", fp ^ 1), S).unwrap_err();
    assert_eq!(r.reason, "service_table");
    assert!(r.detail.contains("fingerprint"), "{}", r.detail);
    let r = install(&t, &signed(&[e], "bond0", fp), S).unwrap_err();
    assert_eq!(r.reason, "unknown_interface");
    // A table that differs in one real server has another fingerprint.
    let other = CONFIG.replace("192.0.2.12", "192.0.2.13");
    let t2 = ServiceTable::from_config(&config::parse(&other, "o.toml").unwrap()).unwrap();
    assert_ne!(wire::fingerprint(&t2.id_map()), fp);
}

#[test]
fn entries_that_do_not_match_our_table_are_refused_alone() {
    let t = table();
    let fp = wire::fingerprint(&t.id_map());
    let good = good_entry(&t);
    let mut bad = Vec::new();
    let mut e = good;
    e.service = 999;
    bad.push((e, "inconsistent"));
    let mut e = good;
    e.service = t.services[1].id; // the DR service
    bad.push((e, "inconsistent"));
    let mut e = good;
    e.vport = 81;
    bad.push((e, "inconsistent"));
    let mut e = good;
    e.real = Ipv4Addr::new(192, 0, 2, 12); // the other server's address, this one's id
    bad.push((e, "inconsistent"));
    let mut e = good;
    e.backend = 4000;
    bad.push((e, "inconsistent"));
    let mut e = good;
    e.proto = 1;
    bad.push((e, "malformed"));
    let mut e = good;
    e.client = Ipv4Addr::new(224, 0, 0, 1);
    bad.push((e, "malformed"));
    let mut e = good;
    e.client_mac = [0xff; 6];
    bad.push((e, "malformed"));
    let mut e = good;
    e.flags = 0x80;
    bad.push((e, "malformed"));
    let mut e = good;
    e.idle_ms = 901_000;
    bad.push((e, "expired"));
    let mut entries: Vec<Entry> = bad.iter().map(|(e, _)| *e).collect();
    entries.push(good);
    let (installs, refused) = install(&t, &signed(&entries, "eth0", fp), S).unwrap();
    assert_eq!(installs.len(), 1, "only the good one");
    let reasons: Vec<&str> = refused.iter().map(|r| r.reason).collect();
    let expected: Vec<&str> = bad.iter().map(|(_, r)| *r).collect();
    assert_eq!(reasons, expected, "{refused:#?}");
}

#[test]
fn the_message_format_is_as_documented() {
    let t = table();
    let e = good_entry(&t);
    let header = Header {
        fingerprint: 0x0102_0304_0506_0708,
        boot: 9,
        sequence: 10,
        interface: "eth0".into(),
    };
    let d = wire::encode(&Key::new(SECRET), &header, &[e, e]);
    assert_eq!(d.len(), 48 + 2 * 40 + 32);
    assert_eq!(&d[..8], b"XLBS\x01\x00\x00\x02");
    assert_eq!(&d[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&d[24..32], &10u64.to_be_bytes());
    assert_eq!(&d[32..37], b"eth0\0");
    assert_eq!(&d[48..52], &[203, 0, 113, 7]);
    assert_eq!(&d[60..62], &40000u16.to_be_bytes());
    assert_eq!(d[66], 6);
    assert_eq!(&d[80..86], &CLIENT_MAC);
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET),
        &d[..128],
    );
    assert_eq!(&d[128..], tag.as_ref());
}
