//! Sync groups: instances that change state together, as keepalived's `vrrp_sync_group`.
//!
//! A [`SyncGroup`] owns its member [`Instance`]s; events go to one member through
//! [`SyncGroup::handle`], and the group then drives the others:
//! - FAULT spreads: while any member's own tracked interfaces are down, every other member
//!   is in FAULT too (a master among them sends its priority-0 advert); they leave FAULT
//!   together.
//! - BACKUP spreads: a member that leaves MASTER for BACKUP takes every other master
//!   member with it.
//! - MASTER is taken together: a member whose master-down timer runs out waits in BACKUP
//!   ([`Instance::wants_master`]) until every member wants MASTER, then all go. keepalived
//!   does the same ("prefer backup state to avoid thrashing"): one VRID losing its master's
//!   adverts while the others still hear theirs must not split the group across nodes.
//!   A member that is MASTER on its own (the address owner at start) pulls the others
//!   along.

use std::time::Instant;

use crate::fsm::{Action, Event, Instance, State, Tunables};

/// Instances that move between states together.
#[derive(Debug, Clone)]
pub struct SyncGroup {
    members: Vec<Instance>,
}

impl SyncGroup {
    /// Groups `members`; their order gives the member indices used by [`SyncGroup::handle`].
    pub fn new(mut members: Vec<Instance>) -> SyncGroup {
        for m in &mut members {
            m.set_synced(true);
        }
        SyncGroup { members }
    }

    /// The members, by index.
    pub fn members(&self) -> &[Instance] {
        &self.members
    }

    /// One member.
    pub fn member(&self, index: usize) -> Option<&Instance> {
        self.members.get(index)
    }

    /// [`Instance::reconfigure`] for one member (it changes no state, so the group's
    /// rules still hold).
    pub fn reconfigure(&mut self, index: usize, t: &Tunables) -> Result<(), &'static str> {
        match self.members.get_mut(index) {
            Some(member) => member.reconfigure(t),
            None => Err("sync group member"),
        }
    }

    /// Dissolves the group; the instances act alone from now on.
    pub fn into_members(mut self) -> Vec<Instance> {
        for m in &mut self.members {
            m.set_synced(false);
        }
        self.members
    }

    /// The earliest member deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.members
            .iter()
            .filter_map(Instance::next_deadline)
            .min()
    }

    /// Feeds `event` to member `index` and lets the group follow. Returns every member's
    /// actions tagged with its index, in order. An unknown index does nothing.
    pub fn handle(&mut self, now: Instant, index: usize, event: Event) -> Vec<(usize, Action)> {
        let before: Vec<State> = self.members.iter().map(Instance::state).collect();
        let Some(member) = self.members.get_mut(index) else {
            return Vec::new();
        };
        let mut out: Vec<(usize, Action)> = member
            .handle(now, event)
            .into_iter()
            .map(|a| (index, a))
            .collect();
        self.reconcile(now, &before, &mut out);
        out
    }

    /// Feeds `event` to every member in turn (e.g. [`Event::Start`], [`Event::Timer`],
    /// [`Event::Shutdown`]).
    pub fn handle_all(&mut self, now: Instant, event: Event) -> Vec<(usize, Action)> {
        let mut out = Vec::new();
        for index in 0..self.members.len() {
            out.extend(self.handle(now, index, event.clone()));
        }
        out
    }

    fn reconcile(&mut self, now: Instant, before: &[State], out: &mut Vec<(usize, Action)>) {
        // FAULT: every member follows the others' own faults.
        for j in 0..self.members.len() {
            let others_faulted = self
                .members
                .iter()
                .enumerate()
                .any(|(k, m)| k != j && m.is_faulted());
            if self.members[j].group_fault() != others_faulted {
                let actions = self.members[j].set_group_fault(now, others_faulted);
                out.extend(actions.into_iter().map(|a| (j, a)));
            }
        }

        // BACKUP: one master stepping down takes the group with it.
        let stepped_down = self
            .members
            .iter()
            .zip(before)
            .any(|(m, &was)| was == State::Master && m.state() == State::Backup);
        if stepped_down {
            self.force(out, |m| m.force_backup(now));
            return;
        }

        // MASTER: together, once all want it or one is there already (the address owner
        // at start, or a member started late into a master group).
        let any_master = self.members.iter().any(|m| m.state() == State::Master);
        let all_want = self.members.iter().any(Instance::wants_master)
            && self
                .members
                .iter()
                .all(|m| m.wants_master() || m.state() == State::Master);
        if any_master || all_want {
            self.force(out, |m| m.force_master(now));
        }
    }

    fn force(
        &mut self,
        out: &mut Vec<(usize, Action)>,
        mut f: impl FnMut(&mut Instance) -> Vec<Action>,
    ) {
        for (j, m) in self.members.iter_mut().enumerate() {
            out.extend(f(m).into_iter().map(|a| (j, a)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::*;
    use crate::fsm::Config;

    const PEER: &str = "192.0.2.12";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn member(vrid: u8, priority: u8) -> Instance {
        Instance::new(Config {
            priority,
            addresses: vec![ip(&format!("192.0.2.{}", 100 + vrid))],
            ..Config::new(vrid, ip("192.0.2.11"))
        })
        .unwrap()
    }

    fn group(priorities: &[u8]) -> SyncGroup {
        let members = priorities
            .iter()
            .enumerate()
            .map(|(i, &p)| member(u8::try_from(i).unwrap() + 1, p))
            .collect();
        SyncGroup::new(members)
    }

    fn advert(g: &SyncGroup, index: usize, priority: u8) -> Event {
        Event::Advert {
            from: ip(PEER),
            advert: g.members()[index].advert(priority),
        }
    }

    fn states(g: &SyncGroup) -> Vec<State> {
        g.members().iter().map(Instance::state).collect()
    }

    /// Delivers timers up to `until`; returns the last time one fired.
    fn run_timers(g: &mut SyncGroup, until: Instant) -> Vec<(usize, Action)> {
        let mut out = Vec::new();
        while let Some(at) = g.next_deadline().filter(|&at| at <= until) {
            out.extend(g.handle_all(at, Event::Timer));
        }
        out
    }

    #[test]
    fn members_become_master_together() {
        let t0 = Instant::now();
        let mut g = group(&[100, 150]);
        let start = g.handle_all(t0, Event::Start);
        assert_eq!(
            start,
            vec![(0, Action::BecomeBackup), (1, Action::BecomeBackup)]
        );
        // Member 1 (priority 150) times out first but waits for member 0.
        let early = t0 + g.members()[1].master_down_interval();
        assert!(g.handle_all(early, Event::Timer).is_empty());
        assert!(g.members()[1].wants_master());
        assert_eq!(states(&g), vec![State::Backup, State::Backup]);
        let out = run_timers(&mut g, t0 + Duration::from_secs(4));
        assert_eq!(states(&g), vec![State::Master, State::Master]);
        assert!(out.contains(&(0, Action::BecomeMaster)));
        assert!(out.contains(&(1, Action::BecomeMaster)));
        assert!(!g.members()[1].wants_master());
    }

    #[test]
    fn one_member_still_hearing_its_master_holds_the_group() {
        let t0 = Instant::now();
        let mut g = group(&[100, 100]);
        g.handle_all(t0, Event::Start);
        for i in 1..=10 {
            let t = t0 + Duration::from_secs(i);
            g.handle(t, 0, advert(&g, 0, 200));
            run_timers(&mut g, t);
        }
        assert_eq!(states(&g), vec![State::Backup, State::Backup]);
        assert!(g.members()[1].wants_master());
        // Member 0's master stops: now both want it.
        let t = t0 + Duration::from_secs(10) + Duration::from_millis(500);
        g.handle(t, 0, advert(&g, 0, 0));
        run_timers(&mut g, t + Duration::from_secs(1));
        assert_eq!(states(&g), vec![State::Master, State::Master]);
    }

    #[test]
    fn one_member_stepping_down_takes_the_group_to_backup() {
        let t0 = Instant::now();
        let mut g = group(&[100, 100, 100]);
        g.handle_all(t0, Event::Start);
        run_timers(&mut g, t0 + Duration::from_secs(4));
        assert_eq!(states(&g), vec![State::Master; 3]);
        let t = t0 + Duration::from_secs(5);
        let out = g.handle(t, 2, advert(&g, 2, 200));
        assert_eq!(
            out,
            vec![
                (2, Action::BecomeBackup),
                (0, Action::BecomeBackup),
                (1, Action::BecomeBackup)
            ]
        );
        assert_eq!(states(&g), vec![State::Backup; 3]);
    }

    #[test]
    fn fault_spreads_and_clears_together() {
        let t0 = Instant::now();
        let mut g = group(&[100, 100]);
        g.handle_all(t0, Event::Start);
        run_timers(&mut g, t0 + Duration::from_secs(4));
        let t = t0 + Duration::from_secs(5);
        let out = g.handle(t, 0, Event::FaultSet(true));
        assert_eq!(
            out,
            vec![
                (0, Action::SendAdvert { priority: 0 }),
                (0, Action::BecomeFault),
                (1, Action::SendAdvert { priority: 0 }),
                (1, Action::BecomeFault)
            ]
        );
        assert_eq!(states(&g), vec![State::Fault, State::Fault]);
        assert_eq!(g.next_deadline(), None);
        // Adverts for member 1 do not pull it out of the group fault.
        g.handle(t, 1, advert(&g, 1, 1));
        assert_eq!(states(&g), vec![State::Fault, State::Fault]);

        let out = g.handle(t + Duration::from_secs(1), 0, Event::FaultSet(false));
        assert_eq!(
            out,
            vec![(0, Action::BecomeBackup), (1, Action::BecomeBackup)]
        );
        run_timers(&mut g, t + Duration::from_secs(6));
        assert_eq!(states(&g), vec![State::Master, State::Master]);
    }

    #[test]
    fn faults_of_two_members_clear_only_when_both_clear() {
        let t0 = Instant::now();
        let mut g = group(&[100, 100]);
        g.handle_all(t0, Event::Start);
        g.handle(t0, 0, Event::FaultSet(true));
        g.handle(t0, 1, Event::FaultSet(true));
        g.handle(t0, 0, Event::FaultSet(false));
        assert_eq!(states(&g), vec![State::Fault, State::Fault]);
        g.handle(t0, 1, Event::FaultSet(false));
        assert_eq!(states(&g), vec![State::Backup, State::Backup]);
    }

    #[test]
    fn owner_member_pulls_the_others_to_master() {
        let t0 = Instant::now();
        let mut g = group(&[255, 100]);
        let out = g.handle_all(t0, Event::Start);
        assert_eq!(
            out,
            vec![
                (0, Action::SendAdvert { priority: 255 }),
                (0, Action::BecomeMaster),
                (1, Action::BecomeBackup),
                (1, Action::SendAdvert { priority: 100 }),
                (1, Action::BecomeMaster)
            ]
        );
    }

    #[test]
    fn shutdown_and_dissolve() {
        let t0 = Instant::now();
        let mut g = group(&[100, 100]);
        g.handle_all(t0, Event::Start);
        run_timers(&mut g, t0 + Duration::from_secs(4));
        let out = g.handle_all(t0 + Duration::from_secs(5), Event::Shutdown);
        assert_eq!(out.iter().filter(|(_, a)| *a == Action::Stop).count(), 2);
        assert!(g.handle(t0, 7, Event::Start).is_empty());
        assert!(g.member(7).is_none());
        let mut alone = g.into_members();
        // Out of the group, an expired timer makes it master on its own.
        alone[0].handle(t0, Event::Start);
        let at = alone[0].next_deadline().unwrap();
        assert!(
            alone[0]
                .handle(at, Event::Timer)
                .contains(&Action::BecomeMaster)
        );
    }
}
