//! Several instances on a simulated segment with an explicit clock: adverts go through the
//! real codec (encode at the sender, decode with the receiver's expectations), time jumps
//! from deadline to deadline, nothing sleeps.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use xdp_lb_vrrp::packet::{MULTICAST_V4, simple_password};
use xdp_lb_vrrp::{Action, Clash, Config, Event, Instance, State, Version, decode, encode};

const VIP: &str = "192.0.2.200";

struct Node {
    addr: IpAddr,
    vr: Instance,
    up: bool,
    log: Vec<(Duration, Action)>,
}

struct Lan {
    t0: Instant,
    now: Instant,
    nodes: Vec<Node>,
    /// (from, to) pairs whose packets are lost.
    blocked: HashSet<(usize, usize)>,
}

impl Lan {
    fn new(configs: Vec<Config>) -> Lan {
        let t0 = Instant::now();
        let nodes = configs
            .into_iter()
            .map(|cfg| Node {
                addr: cfg.primary_address,
                vr: Instance::new(cfg).unwrap(),
                up: true,
                log: Vec::new(),
            })
            .collect();
        Lan {
            t0,
            now: t0,
            nodes,
            blocked: HashSet::new(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn state(&self, i: usize) -> State {
        self.nodes[i].vr.state()
    }

    fn states(&self) -> Vec<State> {
        self.nodes.iter().map(|n| n.vr.state()).collect()
    }

    /// Feeds `event` to node `i` now and delivers whatever follows.
    fn event(&mut self, i: usize, event: Event) {
        let actions = self.nodes[i].vr.handle(self.now, event);
        self.carry_out(i, actions);
    }

    fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.event(i, Event::Start);
        }
    }

    /// A crash: the node stops without a word.
    fn kill(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    /// Advances the clock to `t0 + at`, firing every deadline on the way in order.
    fn run_until(&mut self, at: Duration) {
        let end = self.t0 + at;
        loop {
            let next = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.up)
                .filter_map(|(i, n)| n.vr.next_deadline().map(|d| (d, i)))
                .min();
            match next {
                Some((deadline, i)) if deadline <= end => {
                    self.now = self.now.max(deadline);
                    self.event(i, Event::Timer);
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn carry_out(&mut self, from: usize, actions: Vec<Action>) {
        let mut queue: VecDeque<(usize, Action)> = actions.into_iter().map(|a| (from, a)).collect();
        let mut budget = 1000;
        while let Some((i, action)) = queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "advert storm");
            let elapsed = self.elapsed();
            self.nodes[i].log.push((elapsed, action.clone()));
            let Action::SendAdvert { priority } = action else {
                continue;
            };
            let src = self.nodes[i].addr;
            let dst = IpAddr::V4(MULTICAST_V4);
            let bytes = encode(&self.nodes[i].vr.advert(priority), src, dst).unwrap();
            for j in 0..self.nodes.len() {
                if j == i || !self.nodes[j].up || self.blocked.contains(&(i, j)) {
                    continue;
                }
                let expect = self.nodes[j].vr.expect();
                let event = match decode(&bytes, src, dst, 255, &expect) {
                    Ok(advert) => Event::Advert { from: src, advert },
                    Err(reason) => Event::Dropped { from: src, reason },
                };
                let out = self.nodes[j].vr.handle(self.now, event);
                queue.extend(out.into_iter().map(|a| (j, a)));
            }
        }
    }

    /// When node `i` last did `action`, as time since start.
    fn last(&self, i: usize, action: &Action) -> Option<Duration> {
        self.nodes[i]
            .log
            .iter()
            .rev()
            .find(|(_, a)| a == action)
            .map(|(t, _)| *t)
    }

    fn count(&self, i: usize, action: &Action) -> usize {
        self.nodes[i]
            .log
            .iter()
            .filter(|(_, a)| a == action)
            .count()
    }

    /// Exactly one node is master.
    fn one_master(&self) -> usize {
        let masters: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up && self.state(i) == State::Master)
            .collect();
        assert_eq!(
            masters.len(),
            1,
            "masters: {masters:?}, states {:?}",
            self.states()
        );
        masters[0]
    }
}

fn node(last_octet: u8, priority: u8) -> Config {
    Config {
        priority,
        addresses: vec![VIP.parse().unwrap()],
        ..Config::new(51, format!("192.0.2.{last_octet}").parse().unwrap())
    }
}

fn v3(cfg: Config, interval: Duration) -> Config {
    Config {
        version: Version::V3,
        advert_interval: interval,
        ..cfg
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn micros(us: u64) -> Duration {
    Duration::from_micros(us)
}

#[test]
fn higher_priority_wins_and_stays() {
    let mut lan = Lan::new(vec![node(11, 150), node(12, 100)]);
    lan.start_all();
    lan.run_until(secs(60.0));
    assert_eq!(lan.one_master(), 0);
    // 150 times out first: 3 s + 106/256 s.
    assert_eq!(lan.last(0, &Action::BecomeMaster), Some(micros(3_414_062)));
    assert_eq!(lan.count(1, &Action::BecomeMaster), 0);
    assert_eq!(
        lan.nodes[1].vr.master(),
        Some(("192.0.2.11".parse().unwrap(), 150))
    );
}

#[test]
fn equal_priorities_elect_the_higher_address() {
    // Cut apart, both become master; joined again, the tie between two masters goes to
    // the higher primary address (a backup simply follows whichever equal master it hears).
    let mut lan = Lan::new(vec![node(11, 100), node(12, 100)]);
    lan.blocked.extend([(0, 1), (1, 0)]);
    lan.start_all();
    lan.run_until(secs(5.0));
    assert_eq!(lan.states(), vec![State::Master, State::Master]);
    lan.blocked.clear();
    lan.run_until(secs(30.0));
    assert_eq!(lan.one_master(), 1);
    assert_eq!(lan.count(0, &Action::BecomeBackup), 2);
}

#[test]
fn kill_of_the_master_hands_over_after_master_down_interval() {
    let mut lan = Lan::new(vec![node(11, 150), node(12, 100)]);
    lan.start_all();
    lan.run_until(secs(10.0));
    let last_advert = lan.last(0, &Action::SendAdvert { priority: 150 }).unwrap();
    lan.kill(0);
    lan.run_until(secs(20.0));
    let took_over = lan.last(1, &Action::BecomeMaster).unwrap();
    // 3 × 1 s + (256 - 100) / 256 s after the last advert heard.
    assert_eq!(took_over - last_advert, micros(3_609_375));
}

#[test]
fn graceful_stop_hands_over_after_skew_time() {
    let mut lan = Lan::new(vec![node(11, 150), node(12, 100)]);
    lan.start_all();
    lan.run_until(secs(10.25));
    lan.event(0, Event::Shutdown);
    assert_eq!(
        lan.last(0, &Action::SendAdvert { priority: 0 }),
        Some(secs(10.25))
    );
    lan.run_until(secs(20.0));
    assert_eq!(
        lan.last(1, &Action::BecomeMaster),
        Some(secs(10.25) + micros(609_375))
    );
    assert_eq!(lan.one_master(), 1);
}

#[test]
fn preemption_back_after_restart() {
    let mut lan = Lan::new(vec![node(11, 150), node(12, 100)]);
    lan.start_all();
    lan.run_until(secs(10.25));
    lan.event(0, Event::Shutdown);
    lan.run_until(secs(20.0));
    assert_eq!(lan.one_master(), 1);
    lan.event(0, Event::Start);
    lan.run_until(secs(40.0));
    assert_eq!(lan.one_master(), 0);
    // It ignored the lower master's adverts and timed out: 20 s + master-down.
    assert_eq!(
        lan.last(0, &Action::BecomeMaster),
        Some(secs(20.0) + micros(3_414_062))
    );
    assert_eq!(
        lan.last(1, &Action::BecomeBackup),
        Some(secs(20.0) + micros(3_414_062))
    );
}

#[test]
fn nopreempt_is_respected_after_restart() {
    let mut lan = Lan::new(vec![
        Config {
            preempt: false,
            ..node(11, 150)
        },
        node(12, 100),
    ]);
    lan.start_all();
    lan.run_until(secs(10.25));
    lan.event(0, Event::Shutdown);
    lan.run_until(secs(20.0));
    lan.event(0, Event::Start);
    lan.run_until(secs(60.0));
    assert_eq!(lan.one_master(), 1);
}

#[test]
fn tracking_weight_below_the_peer_hands_over_when_the_peer_preempts() {
    let mut lan = Lan::new(vec![node(11, 150), node(12, 120)]);
    lan.start_all();
    lan.run_until(secs(10.5));
    assert_eq!(lan.one_master(), 0);
    // A tracked script fails with weight -50: 150 - 50 = 100 < 120.
    lan.event(0, Event::PriorityAdjust(-50));
    lan.run_until(secs(30.0));
    assert_eq!(lan.one_master(), 1);
    // The backup stopped listening at the first advert with 100 (at 11.41 s) and timed
    // out 3 s + 136/256 s after the last 150 one (at 10.41 s).
    let last_150 = lan.last(0, &Action::SendAdvert { priority: 150 }).unwrap();
    assert_eq!(
        lan.last(1, &Action::BecomeMaster),
        Some(last_150 + micros(3_531_250))
    );
    // The script recovers: 150 again, and it preempts back.
    lan.event(0, Event::PriorityAdjust(0));
    lan.run_until(secs(50.0));
    assert_eq!(lan.one_master(), 0);
}

#[test]
fn tracking_weight_does_not_hand_over_to_a_nopreempt_peer() {
    let mut lan = Lan::new(vec![
        node(11, 150),
        Config {
            preempt: false,
            ..node(12, 120)
        },
    ]);
    lan.start_all();
    lan.run_until(secs(10.5));
    lan.event(0, Event::PriorityAdjust(-50));
    lan.run_until(secs(30.0));
    assert_eq!(lan.one_master(), 0);
}

#[test]
fn interface_fault_hands_over_at_once_and_recovers() {
    let mut lan = Lan::new(vec![node(11, 150), node(12, 100)]);
    lan.start_all();
    lan.run_until(secs(10.5));
    lan.event(0, Event::FaultSet(true));
    assert_eq!(lan.state(0), State::Fault);
    lan.run_until(secs(20.0));
    assert_eq!(lan.one_master(), 1);
    assert_eq!(
        lan.last(1, &Action::BecomeMaster),
        Some(secs(10.5) + micros(609_375))
    );
    lan.event(0, Event::FaultSet(false));
    lan.run_until(secs(40.0));
    assert_eq!(lan.one_master(), 0);
}

#[test]
fn v3_at_100ms_hands_over_within_a_few_hundred_ms() {
    let ms = Duration::from_millis(100);
    let mut lan = Lan::new(vec![v3(node(11, 150), ms), v3(node(12, 100), ms)]);
    lan.start_all();
    lan.run_until(secs(5.0));
    assert_eq!(lan.one_master(), 0);
    let last = lan.last(0, &Action::SendAdvert { priority: 150 }).unwrap();
    lan.kill(0);
    lan.run_until(secs(10.0));
    // 3 × 100 ms + 156 × 100 ms / 256 = 360.9375 ms, truncated to µs.
    assert_eq!(
        lan.last(1, &Action::BecomeMaster).unwrap() - last,
        micros(360_937)
    );
}

#[test]
fn split_brain_when_one_direction_is_filtered() {
    let mut lan = Lan::new(vec![node(11, 150), node(12, 100)]);
    // Protocol 112 from node 0 to node 1 is dropped (as by an nftables rule on node 1).
    lan.blocked.insert((0, 1));
    lan.start_all();
    lan.run_until(secs(120.0));
    assert_eq!(lan.states(), vec![State::Master, State::Master]);
    let reports: Vec<_> = lan.nodes[0]
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::SplitBrain { .. }))
        .collect();
    // Once every 30 s at most, first a few seconds after both became master.
    assert_eq!(reports.len(), 4);
    assert_eq!(
        reports[0].1,
        Action::SplitBrain {
            peer: "192.0.2.12".parse().unwrap(),
            peer_priority: 100
        }
    );
    assert!(reports[0].0 < secs(10.0));
    assert!(lan.nodes[0].vr.stats().split_brain_adverts > 100);
    // The side that hears nothing cannot tell.
    assert_eq!(lan.nodes[1].vr.stats().split_brain_reports, 0);
}

#[test]
fn different_password_is_a_clash_not_a_flap() {
    let mut lan = Lan::new(vec![
        Config {
            auth: Some(simple_password(b"alpha")),
            ..node(11, 150)
        },
        Config {
            auth: Some(simple_password(b"beta")),
            ..node(12, 100)
        },
    ]);
    lan.start_all();
    lan.run_until(secs(100.0));
    // Neither accepts the other: both master, each reports the clash every 30 s.
    assert_eq!(lan.states(), vec![State::Master, State::Master]);
    let clash = |i: usize| Action::VridClash {
        peer: lan.nodes[1 - i].addr,
        what: Clash::Auth,
    };
    assert_eq!(lan.count(0, &clash(0)), 4);
    assert_eq!(lan.count(1, &clash(1)), 4);
    assert_eq!(lan.count(0, &Action::BecomeMaster), 1);
    assert!(lan.nodes[1].vr.stats().clashes(Clash::Auth) > 90);
}

#[test]
fn different_address_list_is_a_clash() {
    let mut other = node(12, 200);
    other.addresses.push("192.0.2.201".parse().unwrap());
    let mut lan = Lan::new(vec![node(11, 150), other]);
    lan.start_all();
    lan.run_until(secs(10.0));
    assert!(
        lan.count(
            0,
            &Action::VridClash {
                peer: "192.0.2.12".parse().unwrap(),
                what: Clash::Addresses,
            }
        ) >= 1
    );
    assert_eq!(
        lan.count(0, &Action::BecomeBackup),
        1,
        "only the one at start"
    );
}

#[test]
fn three_nodes_fail_over_in_priority_order() {
    let mut lan = Lan::new(vec![node(11, 200), node(12, 150), node(13, 100)]);
    lan.start_all();
    lan.run_until(secs(10.0));
    assert_eq!(lan.one_master(), 0);
    lan.kill(0);
    lan.run_until(secs(20.0));
    assert_eq!(lan.one_master(), 1);
    lan.kill(1);
    lan.run_until(secs(30.0));
    assert_eq!(lan.one_master(), 2);
    assert_eq!(lan.count(2, &Action::BecomeMaster), 1);
}
