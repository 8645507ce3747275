//! Broken VRRP packets on the wire, sent by a peer namespace to a running MASTER: each
//! kind (too short to name a VRID, wrong TTL, wrong checksum, wrong password, another
//! VRID) is dropped and counted under its own reason, and none of them changes state,
//! although each claims a higher priority. A valid advert of that priority then does
//! make the MASTER step down, so the broken ones would have been noticed. And one form
//! that looks broken but is not: the VRRPv3 unicast checksum of keepalived before
//! 1.3.6, accepted and answered in kind. Last, a valid advert of lower priority: the
//! MASTER keeps its state and announces its addresses again, on keepalived's
//! `garp_lower_prio_repeat` / `garp_lower_prio_delay` schedule.
//!
//! Needs root and `ip`; fails (never skips) without them.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::mpsc,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use xdp_lb::{
    config::{VrrpAddress, VrrpInstance},
    failover::{FailoverEvent, InstanceStatus, SocketStatus, StatusBoard, Takeover, run_tracked},
    netlink::Netlink,
};
use xdp_lb_lab::{Capture, Netns, veth_pair};
use xdp_lb_vrrp::{
    State, Version, checksum,
    packet::{Advert, encode, simple_password},
};

const VRID: u8 = 51;
const PASSWORD: &str = "secret";
const OURS: &str = "192.0.2.1";
const PEER: &str = "192.0.2.2";
const VIP: &str = "192.0.2.200";
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A VRRPv3 advert from the peer, its checksum summed over `summed_dst`.
fn advert_v3(priority: u8, summed_dst: IpAddr) -> Vec<u8> {
    let advert = Advert {
        version: Version::V3,
        vrid: VRID,
        priority,
        max_advert_interval: Duration::from_millis(100),
        auth: None,
        addresses: vec![ip(VIP)],
    };
    encode(&advert, ip(PEER), summed_dst).unwrap()
}

/// A VRRPv2 advert from the peer with this VRID, priority and password.
fn advert(vrid: u8, priority: u8, password: &str) -> Vec<u8> {
    let advert = Advert {
        version: Version::V2,
        vrid,
        priority,
        max_advert_interval: Duration::from_secs(1),
        auth: Some(simple_password(password.as_bytes())),
        addresses: vec![ip(VIP)],
    };
    encode(&advert, ip(PEER), IpAddr::V4(GROUP)).unwrap()
}

/// Sends each payload to the VRRP group from `ns` with this TTL.
fn send(ns: &Netns, ttl: u32, payloads: Vec<Vec<u8>>) {
    send_to(ns, IpAddr::V4(GROUP), ttl, payloads);
}

/// Sends each payload to `dst` from `ns` with this TTL.
fn send_to(ns: &Netns, dst: IpAddr, ttl: u32, payloads: Vec<Vec<u8>>) {
    ns.run(move || {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).unwrap();
        socket.bind_device(Some(b"eth0")).unwrap();
        socket.set_multicast_ttl_v4(ttl).unwrap();
        socket.set_ttl_v4(ttl).unwrap();
        let to = SockAddr::from(std::net::SocketAddr::new(dst, 0));
        for p in payloads {
            socket.send_to(&p, &to).unwrap();
        }
    })
    .unwrap();
}

/// Our namespace (`OURS` on eth0) and the peer's (`PEER`), joined by a veth pair.
fn pair(prefix: &str) -> (Netns, Netns) {
    let (a, b) = veth_pair(prefix).unwrap();
    a.ip(["addr", "add", &format!("{OURS}/24"), "dev", "eth0"])
        .unwrap();
    b.ip(["addr", "add", &format!("{PEER}/24"), "dev", "eth0"])
        .unwrap();
    (a, b)
}

/// The runtime in `ns`, with its status board and state events.
struct Node {
    status: StatusBoard,
    events: mpsc::Receiver<FailoverEvent>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<anyhow::Result<()>>>>,
}

impl Node {
    fn start(ns: &Netns, spec: VrrpInstance) -> Node {
        let status = StatusBoard::default();
        let board = status.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (std_tx, events) = mpsc::channel();
        let thread = ns
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<FailoverEvent>(64);
                    let forward = tokio::spawn(async move {
                        while let Some(ev) = rx.recv().await {
                            // No data plane here: it follows at once.
                            ev.applied.done();
                            let _ = std_tx.send(ev);
                        }
                    });
                    let (_control, controls) = xdp_lb::failover::controls();
                    let result = run_tracked(
                        vec![spec],
                        Vec::new(),
                        Netlink::connect()?,
                        tx,
                        controls,
                        board,
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await;
                    let _ = forward.await;
                    result
                })
            })
            .unwrap();
        Node {
            status,
            events,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn wait_state(&self, state: State, within: Duration) {
        let until = Instant::now() + within;
        let mut seen = Vec::new();
        while let Ok(ev) = self
            .events
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            if ev.state == state {
                return;
            }
            seen.push(ev.state);
        }
        panic!("expected {state} within {within:?}; saw {seen:?}");
    }

    fn instance(&self) -> InstanceStatus {
        self.status.snapshot().pop().expect("one instance")
    }

    fn socket(&self) -> SocketStatus {
        self.status.sockets().pop().expect("one socket")
    }

    /// Waits until `done` holds for the status (counters are written as packets are
    /// handled, which is after they were sent).
    fn wait_status(&self, what: &str, done: impl Fn(&InstanceStatus, &SocketStatus) -> bool) {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if done(&self.instance(), &self.socket()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{what}: not seen within 5 s; instance {:?}, socket {:?}",
            self.instance(),
            self.socket()
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let result = thread.join().expect("runner thread");
            if !std::thread::panicking() {
                result
                    .expect("setns")
                    .expect("failover::run_tracked failed");
            }
        }
    }
}

#[test]
fn broken_adverts_are_counted_by_reason_and_never_change_state() {
    let (a, b) = pair("xlbdrop-");
    let mut spec = VrrpInstance::new("VI_DROP", "eth0", VRID, vec![VrrpAddress::new(ip(VIP), 24)]);
    spec.identity.version = 2;
    spec.identity.auth_pass = Some(PASSWORD.into());
    spec.tunables.priority = 100;
    let node = Node::start(&a, spec);
    // Master-down interval: 3 s + skew.
    node.wait_state(State::Master, Duration::from_secs(10));
    let before = node.instance();

    let mut bad_checksum = advert(VRID, 254, PASSWORD);
    bad_checksum[6] ^= 0xff;
    send(
        &b,
        255,
        vec![
            vec![0x21],
            bad_checksum,
            advert(VRID, 254, "wrong"),
            advert(VRID + 1, 254, PASSWORD),
        ],
    );
    // RFC 3768 §7.1: an advert whose TTL is not 255 is discarded.
    send(&b, 64, vec![advert(VRID, 254, PASSWORD)]);

    node.wait_status("one drop of each kind", |i, s| {
        let d = |r: &str| i.drops.get(r).copied().unwrap_or(0);
        d("bad_checksum") == 1
            && d("auth_mismatch") == 1
            && d("bad_ttl") == 1
            && s.drops.get("too_short") == Some(&1)
            && s.other_vrid == 1
    });
    let after = node.instance();
    assert_eq!(after.state, "MASTER", "broken adverts changed the state");
    assert_eq!(after.master_priority, Some(100));
    assert_eq!(
        after.adverts_received, before.adverts_received,
        "no broken advert counts as received"
    );
    assert_eq!(
        after.drops.values().sum::<u64>(),
        3,
        "each broken advert is one drop: {:?}",
        after.drops
    );
    assert!(
        node.events.try_recv().is_err(),
        "no state change was reported"
    );
    let socket = node.socket();
    assert_eq!(
        (socket.interface.as_str(), socket.family.as_ref()),
        ("eth0", "ipv4")
    );

    // The same advert, intact: the MASTER hears a higher priority and steps down.
    send(&b, 255, vec![advert(VRID, 254, PASSWORD)]);
    node.wait_state(State::Backup, Duration::from_secs(5));
    let last = node.instance();
    assert_eq!(last.master, Some(ip(PEER)));
    assert_eq!(last.master_priority, Some(254));
    // A node this one never heard before took over: named as such (and logged).
    assert_eq!(
        last.last_takeover,
        Some(Takeover {
            peer: ip(PEER),
            priority: 254,
            first_heard: true,
        })
    );
}

#[test]
fn an_old_keepalived_unicast_checksum_is_accepted_and_answered_in_kind() {
    let (a, b) = pair("xlbold-");
    let mut spec = VrrpInstance::new("VI_OLD", "eth0", VRID, vec![VrrpAddress::new(ip(VIP), 24)]);
    spec.identity.version = 3; // sub-second adverts are VRRPv3
    spec.identity.advert_interval = Duration::from_millis(100);
    spec.tunables.priority = 200;
    spec.identity.unicast_src_ip = Some(ip(OURS));
    spec.identity.unicast_peers = vec![ip(PEER)];
    // The peer's own socket, to read our adverts.
    let (adverts_tx, adverts) = mpsc::channel::<Vec<u8>>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let reader = b
        .spawn(move || {
            let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).unwrap();
            socket.bind_device(Some(b"eth0")).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
            while stop_rx.try_recv().is_err() {
                if let Ok(n) = socket.recv(&mut buf) {
                    // SAFETY: recv initialised the first n bytes.
                    let bytes: Vec<u8> = buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    let ihl = usize::from(bytes[0] & 0x0f) * 4;
                    if adverts_tx.send(bytes[ihl..].to_vec()).is_err() {
                        return;
                    }
                }
            }
        })
        .unwrap();
    let node = Node::start(&a, spec);
    node.wait_state(State::Master, Duration::from_secs(5));
    let form = |payload: &[u8]| {
        if checksum::verify(Version::V3, ip(OURS), ip(PEER), payload) {
            "rfc"
        } else if checksum::verify(Version::V3, ip(OURS), IpAddr::V4(GROUP), payload) {
            "old"
        } else {
            "broken"
        }
    };
    let next_form = || {
        let p = adverts
            .recv_timeout(Duration::from_secs(2))
            .expect("an advert from the MASTER");
        form(&p)
    };
    assert_eq!(
        next_form(),
        "rfc",
        "RFC 5798's checksum until a peer shows otherwise"
    );

    // A lower-priority peer with keepalived 1.3.5's checksum: heard, not dropped.
    send_to(&b, ip(OURS), 255, vec![advert_v3(100, IpAddr::V4(GROUP))]);
    node.wait_status("the old-form advert received", |i, _| {
        i.adverts_received >= 1
    });
    assert!(
        node.instance().drops.is_empty(),
        "{:?}",
        node.instance().drops
    );
    // Ours follow suit (allow the ones already on their way).
    let switched = (0..20).any(|_| next_form() == "old");
    assert!(
        switched,
        "the MASTER's adverts never took the old checksum form"
    );
    assert_eq!(next_form(), "old", "and keep it");
    assert_eq!(node.instance().state, "MASTER");
    drop(node);
    let _ = stop_tx.send(());
    reader.join().unwrap().unwrap();
}

/// The arrival times of our gratuitous ARPs for the VIP (sender `mac`) seen by
/// `capture` until `window` has passed.
fn garps(capture: &Capture, mac: [u8; 6], window: Duration) -> Vec<Instant> {
    let until = Instant::now() + window;
    let vip = ip(VIP);
    let IpAddr::V4(vip) = vip else { unreachable!() };
    let mut seen = Vec::new();
    while let Ok(_frame) =
        capture.next_matching(until.saturating_duration_since(Instant::now()), |f| {
            f.len() >= 42
                && f[12..14] == [0x08, 0x06]
                && f[6..12] == mac
                && f[28..32] == vip.octets()
                && f[38..42] == vip.octets()
        })
    {
        seen.push(Instant::now());
    }
    seen
}

#[test]
fn a_lower_priority_advert_makes_the_master_announce_again() {
    let (a, b) = pair("xlblow-");
    let mac = a.mac_bytes("eth0").unwrap();
    let mut spec = VrrpInstance::new("VI_LOW", "eth0", VRID, vec![VrrpAddress::new(ip(VIP), 24)]);
    spec.identity.version = 3; // sub-second adverts are VRRPv3
    spec.identity.advert_interval = Duration::from_millis(100);
    spec.tunables.priority = 200;
    // No announcements on the takeover itself, so every one seen comes from the
    // lower-priority adverts.
    spec.tunables.garp_master_repeat = 0;
    spec.tunables.garp_master_delay = Duration::ZERO;
    spec.tunables.garp_lower_prio_repeat = 3;
    spec.tunables.garp_lower_prio_delay = Duration::from_millis(600);
    let capture = Capture::start(&b, "eth0").unwrap();
    let node = Node::start(&a, spec);
    node.wait_state(State::Master, Duration::from_secs(5));
    assert!(
        garps(&capture, mac, Duration::from_millis(300)).is_empty(),
        "no announcement before a lower-priority advert"
    );

    let sent = Instant::now();
    send(&b, 255, vec![advert_v3(100, IpAddr::V4(GROUP))]);
    let seen = garps(&capture, mac, Duration::from_millis(1200));
    let after: Vec<Duration> = seen.iter().map(|t| t.duration_since(sent)).collect();
    assert_eq!(after.len(), 6, "two bursts of three: {after:?}");
    assert!(
        after[2] < Duration::from_millis(400),
        "the first burst follows the advert at once: {after:?}"
    );
    assert!(
        after[3] >= Duration::from_millis(550),
        "the second burst waits garp_lower_prio_delay: {after:?}"
    );
    let status = node.instance();
    assert_eq!(status.state, "MASTER", "a lower priority never takes over");
    assert_eq!(status.adverts_received, 1);
    assert!(status.drops.is_empty(), "{:?}", status.drops);

    // Adverts that keep coming each get a burst, and one second burst follows the
    // last of them, not one per advert.
    let first = Instant::now();
    for _ in 0..3 {
        send(&b, 255, vec![advert_v3(100, IpAddr::V4(GROUP))]);
        std::thread::sleep(Duration::from_millis(150));
    }
    let seen = garps(&capture, mac, Duration::from_millis(1500));
    let after: Vec<Duration> = seen.iter().map(|t| t.duration_since(first)).collect();
    assert_eq!(after.len(), 12, "three bursts, then one more: {after:?}");
    assert!(
        after[9] >= Duration::from_millis(300 + 550),
        "the second burst counts from the last advert: {after:?}"
    );
    assert_eq!(node.instance().adverts_received, 4);
}

/// A unicast instance hears only its configured peers, and only at TTL 255: a spoofed
/// higher priority from another host on the segment, or a real peer's advert that
/// crossed a router, changes nothing and is counted by reason.
#[test]
fn a_unicast_instance_hears_only_its_peers_and_only_at_ttl_255() {
    let (a, b) = pair("xlbuni-");
    let unicast = |peer: &str| {
        let mut spec =
            VrrpInstance::new("VI_UNI", "eth0", VRID, vec![VrrpAddress::new(ip(VIP), 24)]);
        spec.identity.version = 3;
        spec.identity.advert_interval = Duration::from_millis(100);
        spec.tunables.priority = 100;
        spec.identity.unicast_src_ip = Some(ip(OURS));
        spec.identity.unicast_peers = vec![ip(peer)];
        spec
    };

    // b (192.0.2.2) is not the configured peer (192.0.2.9).
    let node = Node::start(&a, unicast("192.0.2.9"));
    node.wait_state(State::Master, Duration::from_secs(5));
    send_to(&b, ip(OURS), 255, vec![advert_v3(250, ip(OURS)); 5]);
    node.wait_status("the spoofed adverts counted", |i, _| {
        i.drops.get("unknown_source").copied().unwrap_or(0) >= 5
    });
    let status = node.instance();
    assert_eq!(
        status.state, "MASTER",
        "a stranger's priority 250 changed nothing"
    );
    assert_eq!(status.adverts_received, 0);
    drop(node);

    // b is the peer now, but its adverts arrive with TTL 1: not from the segment.
    let node = Node::start(&a, unicast(PEER));
    node.wait_state(State::Master, Duration::from_secs(5));
    send_to(&b, ip(OURS), 1, vec![advert_v3(250, ip(OURS)); 5]);
    node.wait_status("the TTL-1 adverts counted", |i, _| {
        i.drops.get("bad_ttl").copied().unwrap_or(0) >= 5
    });
    assert_eq!(node.instance().state, "MASTER");
    // At TTL 255 the peer's higher priority wins, as it should.
    send_to(&b, ip(OURS), 255, vec![advert_v3(250, ip(OURS))]);
    node.wait_state(State::Backup, Duration::from_secs(5));
}
