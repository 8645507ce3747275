//! Rise/fall hysteresis over probe outcomes: a pure state machine, no clock.
//!
//! It follows keepalived's `vrrp_script` counter: a value in `0..=rise+fall-1`, up when
//! it is at least `rise`. A success steps it up by one, and jumps to the top once it
//! reaches `rise`; a failure steps it down by one while above `rise`, and drops it to 0
//! when it would fall below `rise`. So an up server goes down after `fall` consecutive
//! failures and a down server comes up after `rise` consecutive successes, and any
//! opposite result resets the run.
//!
//! The starting point sits right at the edge, as keepalived's checkers do: without
//! `alpha` the server starts up and its first failure takes it down; with `alpha` it
//! starts down and its first success brings it up. Hysteresis applies from then on.

use crate::reason::{Outcome, Reason};

/// The health of one check of one real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    rise: u32,
    fall: u32,
    counter: u32,
    /// The weight of the last success (`None` = configured weight).
    weight: Option<u32>,
    /// Whether any outcome was observed yet.
    settled: bool,
}

/// A change of a check's verdict, to be applied to the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The new state.
    pub up: bool,
    /// The weight to use while up (`None` = configured weight).
    pub weight: Option<u32>,
    /// Why it went down (the last failure); `None` when it came up or its weight changed.
    pub reason: Option<Reason>,
}

impl Health {
    /// A fresh state; `rise` and `fall` below 1 count as 1.
    pub fn new(rise: u32, fall: u32, alpha: bool) -> Health {
        let rise = rise.max(1);
        let fall = fall.max(1);
        Health {
            rise,
            fall,
            counter: if alpha { rise - 1 } else { rise },
            weight: None,
            settled: false,
        }
    }

    /// Whether the server counts as up now.
    pub fn is_up(&self) -> bool {
        self.counter >= self.rise
    }

    /// The weight to use while up (`None` = configured weight).
    pub fn weight(&self) -> Option<u32> {
        self.weight
    }

    /// Whether at least one outcome was observed.
    pub fn is_settled(&self) -> bool {
        self.settled
    }

    /// Records one check's outcome (after retries) and returns the change, if any.
    ///
    /// A success whose weight differs from the current one while up is a change too
    /// (MISC `dynamic`); while down, the latest weight is kept for when it comes up.
    pub fn observe(&mut self, outcome: &Outcome) -> Option<Change> {
        let was_up = self.is_up();
        let old_weight = self.weight;
        self.settled = true;
        let top = self.rise + self.fall - 1;
        match outcome {
            Ok(up) => {
                self.weight = up.weight;
                self.counter = if self.counter + 1 >= self.rise {
                    top
                } else {
                    self.counter + 1
                };
            }
            Err(_) => {
                self.counter = if self.counter > self.rise {
                    self.counter - 1
                } else {
                    0
                };
            }
        }
        let now_up = self.is_up();
        if now_up != was_up || (now_up && self.weight != old_weight) {
            Some(Change {
                up: now_up,
                weight: if now_up { self.weight } else { None },
                reason: if now_up { None } else { outcome.clone().err() },
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Up;

    const OK: Outcome = Ok(Up { weight: None });

    fn fail() -> Outcome {
        Err(Reason::Refused)
    }

    /// Feeds outcomes and returns, for each, the state after it and whether it changed.
    fn run(health: &mut Health, outcomes: &[Outcome]) -> Vec<(bool, bool)> {
        outcomes
            .iter()
            .map(|o| {
                let change = health.observe(o);
                (health.is_up(), change.is_some())
            })
            .collect()
    }

    #[test]
    fn without_alpha_starts_up_and_first_failure_takes_it_down() {
        let mut h = Health::new(3, 3, false);
        assert!(h.is_up() && !h.is_settled());
        let change = h.observe(&fail()).expect("first failure is a change");
        assert_eq!(
            change,
            Change {
                up: false,
                weight: None,
                reason: Some(Reason::Refused)
            }
        );
        // Now down for real: it takes `rise` successes to come back.
        assert_eq!(
            run(&mut h, &[OK, OK, OK]),
            [(false, false), (false, false), (true, true)]
        );
    }

    #[test]
    fn with_alpha_starts_down_and_first_success_brings_it_up() {
        let mut h = Health::new(3, 2, true);
        assert!(!h.is_up());
        assert_eq!(run(&mut h, &[OK]), [(true, true)]);
        // Up for real now: `fall` failures to go down.
        assert_eq!(
            run(&mut h, &[fail(), fail()]),
            [(true, false), (false, true)]
        );
    }

    #[test]
    fn alpha_first_failure_confirms_down_then_rise_applies() {
        let mut h = Health::new(2, 2, true);
        assert_eq!(run(&mut h, &[fail()]), [(false, false)]);
        assert_eq!(run(&mut h, &[OK, OK]), [(false, false), (true, true)]);
    }

    #[test]
    fn fall_consecutive_failures_take_it_down() {
        let mut h = Health::new(2, 3, false);
        run(&mut h, &[OK]);
        assert_eq!(
            run(&mut h, &[fail(), fail(), fail()]),
            [(true, false), (true, false), (false, true)]
        );
    }

    #[test]
    fn an_opposite_result_resets_the_run() {
        let mut h = Health::new(2, 3, false);
        run(&mut h, &[OK]);
        // Two failures, a success, two failures: never three in a row.
        let states = run(&mut h, &[fail(), fail(), OK, fail(), fail()]);
        assert!(
            states.iter().all(|&(up, changed)| up && !changed),
            "{states:?}"
        );
        assert_eq!(run(&mut h, &[fail()]), [(false, true)]);
        // Down: one success, a failure, then rise=2 successes needed again.
        assert_eq!(
            run(&mut h, &[OK, fail(), OK, OK]),
            [(false, false), (false, false), (false, false), (true, true)]
        );
    }

    #[test]
    fn rise_and_fall_of_one_flip_every_time() {
        let mut h = Health::new(1, 1, false);
        assert_eq!(
            run(&mut h, &[OK, fail(), OK, OK, fail(), fail()]),
            [
                (true, false),
                (false, true),
                (true, true),
                (true, false),
                (false, true),
                (false, false)
            ]
        );
    }

    #[test]
    fn zero_rise_or_fall_counts_as_one() {
        let mut h = Health::new(0, 0, false);
        assert_eq!(run(&mut h, &[fail(), OK]), [(false, true), (true, true)]);
    }

    #[test]
    fn a_weight_change_while_up_is_reported() {
        let mut h = Health::new(1, 1, false);
        assert_eq!(h.observe(&OK), None);
        let change = h
            .observe(&Ok(Up { weight: Some(5) }))
            .expect("weight change");
        assert_eq!((change.up, change.weight), (true, Some(5)));
        assert_eq!(h.observe(&Ok(Up { weight: Some(5) })), None);
        // Back to the configured weight (exit 0 under misc_dynamic).
        let change = h.observe(&OK).expect("weight back to configured");
        assert_eq!((change.up, change.weight), (true, None));
    }

    #[test]
    fn the_weight_seen_while_down_is_used_when_coming_up() {
        let mut h = Health::new(2, 1, true);
        assert_eq!(h.observe(&fail()), None);
        assert_eq!(h.observe(&Ok(Up { weight: Some(3) })), None);
        let change = h.observe(&Ok(Up { weight: Some(7) })).expect("up");
        assert_eq!(
            (change.up, change.weight, change.reason),
            (true, Some(7), None)
        );
        assert_eq!(h.weight(), Some(7));
    }

    fn exit(code: i32) -> Reason {
        Reason::Exit {
            code,
            output: crate::ScriptOutput::default(),
        }
    }

    #[test]
    fn going_down_carries_the_last_reason() {
        let mut h = Health::new(1, 2, false);
        h.observe(&OK);
        h.observe(&Err(exit(1)));
        let change = h.observe(&Err(exit(2))).expect("down");
        assert_eq!(change.reason, Some(exit(2)));
        assert_eq!(change.weight, None);
    }
}
