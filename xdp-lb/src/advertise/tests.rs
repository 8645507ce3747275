//! The announcement decision, driven by the forwarding owner's quorum (health verdicts
//! applied to in-memory maps) and an explicit clock: no root, no sleeping.
use super::*;
use crate::{forwarding::tests::started, services::BackendIndex};

/// 192.0.2.100 has two announced services (quorum 2 on port 80); 192.0.2.101 is not
/// announced.
const CONFIG: &str = r#"
[dataplane]
interfaces = ["eth0"]

[[virtual_server]]
vip = "192.0.2.100"
port = 80
scheduler = "maglev"
quorum = 2
announce = true
  [[virtual_server.real_server]]
  address = "192.0.2.11"
  [[virtual_server.real_server]]
  address = "192.0.2.12"

[[virtual_server]]
vip = "192.0.2.100"
port = 443
scheduler = "maglev"
announce = true
  [[virtual_server.real_server]]
  address = "192.0.2.11"

[[virtual_server]]
vip = "192.0.2.101"
port = 80
  [[virtual_server.real_server]]
  address = "192.0.2.13"
"#;

fn vip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// The owner and a decision that has run once (192.0.2.100 announced).
fn announced() -> (
    crate::forwarding::Forwarding<crate::forwarding::tests::MemoryMaps>,
    Advertiser,
    Instant,
) {
    let owner = started(CONFIG);
    let mut advertiser = Advertiser::default();
    let t0 = Instant::now();
    let changes = advertiser.apply(owner.table(), |i| owner.is_active(i), t0);
    assert_eq!(changes, [Change::Announce(vip("192.0.2.100"))]);
    (owner, advertiser, t0)
}

#[test]
fn a_vip_is_announced_while_every_announced_service_on_it_has_quorum() {
    let (mut owner, mut advertiser, t0) = announced();
    // Nothing changed, nothing to do.
    assert!(
        advertiser
            .apply(owner.table(), |i| owner.is_active(i), at(t0, 10))
            .is_empty()
    );
    // Port 80 drops below its quorum of 2: the VIP is withdrawn, though 443 is fine.
    let applied = owner.apply_health(BackendIndex(1), false, None).unwrap();
    assert!(applied.quorum.is_some_and(|e| !e.gained));
    let changes = advertiser.apply(owner.table(), |i| owner.is_active(i), at(t0, 20));
    assert_eq!(
        changes,
        [Change::Withdraw(
            vip("192.0.2.100"),
            Why::NoQuorum(vec!["192.0.2.100:80/tcp".into()])
        )]
    );
    let (vips, drain) = advertiser.status(at(t0, 1020));
    assert_eq!(drain.state, DrainState::Serving);
    assert_eq!(vips.len(), 1, "only announced VIPs are listed: {vips:?}");
    assert!(!vips[0].announced);
    assert_eq!(
        vips[0].why_not.as_deref(),
        Some("quorum lost: 192.0.2.100:80/tcp")
    );
    assert_eq!(vips[0].changes, 2);
    assert!((vips[0].since_seconds - 1.0).abs() < 1e-9);
    // Back up: announced again.
    owner.apply_health(BackendIndex(1), true, None).unwrap();
    let changes = advertiser.apply(owner.table(), |i| owner.is_active(i), at(t0, 30));
    assert_eq!(changes, [Change::Announce(vip("192.0.2.100"))]);
    assert_eq!(advertiser.announced(), BTreeSet::from([vip("192.0.2.100")]));
}

#[test]
fn a_service_not_forwarded_here_keeps_its_vip_unannounced() {
    let owner = started(CONFIG);
    let mut advertiser = Advertiser::default();
    let changes = advertiser.apply(owner.table(), |i| i != 1, Instant::now());
    assert!(changes.is_empty(), "{changes:?}");
    let (vips, _) = advertiser.status(Instant::now());
    assert_eq!(
        vips[0].why_not.as_deref(),
        Some("not forwarded here: 192.0.2.100:443/tcp")
    );
}

#[test]
fn a_drain_withdraws_at_once_and_resuming_follows_the_quorum() {
    let (mut owner, mut advertiser, t0) = announced();
    let changes = advertiser.drain(owner.table(), |i| owner.is_active(i), at(t0, 100));
    assert_eq!(
        changes,
        [Change::Withdraw(vip("192.0.2.100"), Why::Draining)]
    );
    assert!(advertiser.draining());
    // A second drain changes nothing; neither does a quorum coming back meanwhile.
    assert!(
        advertiser
            .drain(owner.table(), |i| owner.is_active(i), at(t0, 150))
            .is_empty()
    );
    owner.apply_health(BackendIndex(0), false, None).unwrap();
    owner.apply_health(BackendIndex(0), true, None).unwrap();
    assert!(
        advertiser
            .apply(owner.table(), |i| owner.is_active(i), at(t0, 200))
            .is_empty()
    );
    // Resumed without quorum on 443: still withdrawn, now for that reason.
    owner.apply_health(BackendIndex(2), false, None).unwrap();
    assert!(
        advertiser
            .resume(owner.table(), |i| owner.is_active(i), at(t0, 300))
            .is_empty()
    );
    let (vips, drain) = advertiser.status(at(t0, 300));
    assert_eq!(drain.state, DrainState::Serving);
    assert_eq!(
        vips[0].why_not.as_deref(),
        Some("quorum lost: 192.0.2.100:443/tcp")
    );
    owner.apply_health(BackendIndex(2), true, None).unwrap();
    assert_eq!(
        advertiser.apply(owner.table(), |i| owner.is_active(i), at(t0, 400)),
        [Change::Announce(vip("192.0.2.100"))]
    );
}

#[test]
fn a_drain_is_complete_once_no_packet_arrived_for_the_idle_time() {
    let (owner, mut advertiser, t0) = announced();
    let idle = Duration::from_secs(2);
    // Not draining: traffic means nothing.
    assert_eq!(advertiser.traffic(5, at(t0, 0), idle), None);
    advertiser.drain(owner.table(), |i| owner.is_active(i), at(t0, 1000));
    // Packets still arrive for 1.5 s after the withdrawal (the routers converge).
    assert_eq!(advertiser.traffic(100, at(t0, 1100), idle), None);
    assert_eq!(advertiser.traffic(180, at(t0, 1800), idle), None);
    assert_eq!(advertiser.traffic(230, at(t0, 2500), idle), None);
    assert_eq!(advertiser.traffic(230, at(t0, 3000), idle), None);
    let (_, drain) = advertiser.status(at(t0, 3000));
    assert_eq!(drain.state, DrainState::Draining);
    assert_eq!(drain.last_traffic_after_seconds, Some(1.5));
    assert_eq!(advertiser.traffic(230, at(t0, 4400), idle), None);
    assert_eq!(
        advertiser.traffic(230, at(t0, 4500), idle),
        Some(Drained {
            last_traffic_after: Duration::from_millis(1500),
            took: Duration::from_millis(3500),
        })
    );
    // Reported once; the status says drained.
    assert_eq!(advertiser.traffic(230, at(t0, 5000), idle), None);
    assert_eq!(advertiser.status(at(t0, 5000)).1.state, DrainState::Drained);
}

#[test]
fn a_stop_withdraws_for_good() {
    let (owner, mut advertiser, t0) = announced();
    assert_eq!(
        advertiser.stop(owner.table(), |i| owner.is_active(i), at(t0, 10)),
        [Change::Withdraw(vip("192.0.2.100"), Why::Stopping)]
    );
    assert!(
        advertiser
            .resume(owner.table(), |i| owner.is_active(i), at(t0, 20))
            .is_empty()
    );
    assert!(advertiser.announced().is_empty());
    assert_eq!(advertiser.status(at(t0, 20)).1.state, DrainState::Stopping);
}

#[test]
fn a_reload_that_stops_announcing_a_vip_withdraws_and_forgets_it() {
    let (_, mut advertiser, t0) = announced();
    let owner = started(&CONFIG.replace("announce = true\n", ""));
    assert_eq!(
        advertiser.apply(owner.table(), |i| owner.is_active(i), at(t0, 10)),
        [Change::Withdraw(vip("192.0.2.100"), Why::NotConfigured)]
    );
    assert!(advertiser.status(at(t0, 10)).0.is_empty());
}

#[test]
fn a_group_member_announces_each_of_its_vips() {
    let text = r#"
[dataplane]
interfaces = ["eth0"]

[virtual_server_group.web]
members = ["192.0.2.100:80", "192.0.2.102:80"]

[[virtual_server]]
group = "web"
announce = true
  [[virtual_server.real_server]]
  address = "192.0.2.11"
"#;
    let owner = started(text);
    let mut advertiser = Advertiser::default();
    let changes = advertiser.apply(owner.table(), |i| owner.is_active(i), Instant::now());
    assert_eq!(
        changes,
        [
            Change::Announce(vip("192.0.2.100")),
            Change::Announce(vip("192.0.2.102"))
        ]
    );
}
