//! Owns the watchdog's decision (pure): given the uncharged memory above the baseline, the
//! headroom granted to running GPU containers and whether memory pressure fired, when to kill
//! and whom.
//!
//! - **Budget.** `excess = uncharged − granted`. Over budget means `excess > tolerance`; it must
//!   last `sustain` before a kill (a short spike is not an incident).
//! - **Pressure.** While the PSI trigger has fired (the node is already stalling on memory),
//!   any `excess > 0` kills at once: no tolerance, no sustain.
//! - **Settle.** After a kill the driver needs time to free the victim's memory (it does so when
//!   the victim's processes exit); nothing is decided for `settle`, then the node is re-measured
//!   and, if it is still over budget, the next victim goes at once (the sustain was already met).
//! - **Victims.** Only GPU containers. With a per-container attribution (see `attribution`), the
//!   one furthest over its own headroom; without one, the youngest (latest init start; ties by
//!   id): the newest workload is the likeliest to have started the growth and the cheapest to
//!   lose, and the order is deterministic. An episode ends when the node is back under budget.
//!
//! All sums and differences saturate: headrooms come from ledger records (before the create
//! side bounded them, any pod could ask for `1Ei`), and a wrapped `u64 → i64` would turn a huge
//! grant into a negative one — an excess that kills every GPU container on the node.

use std::collections::{BTreeMap, BTreeSet};

/// A GPU container as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// Init start time (clock ticks since boot): larger is younger.
    pub start_time: u64,
    pub headroom: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub tolerance: u64,
    pub sustain_ms: u64,
    pub settle_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub now_ms: u64,
    /// Uncharged memory above the baseline (may be negative).
    pub uncharged: i64,
    /// Headroom granted to the running GPU containers.
    pub granted: u64,
    /// The PSI trigger fired within its window.
    pub pressure: bool,
}

impl Observation {
    /// `uncharged − granted`, exact where it fits in an i64 and saturated where it does not.
    pub fn excess(&self) -> i64 {
        saturate(self.uncharged as i128 - self.granted as i128)
    }
}

/// An i128 difference clamped into an i64.
pub fn saturate(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// A byte count as an i64, saturated (for comparisons with signed estimates).
pub fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The headroom granted to `headrooms`, saturated.
pub fn granted(headrooms: impl IntoIterator<Item = u64>) -> u64 {
    headrooms.into_iter().fold(0u64, u64::saturating_add)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Over budget by more than the tolerance for the sustain time.
    Budget,
    /// Over budget while memory pressure fired.
    Pressure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    UnderBudget,
    /// Over budget since `since_ms`, waiting for the sustain time.
    Over {
        since_ms: u64,
    },
    /// A kill happened; re-measuring after `until_ms`.
    Settling {
        until_ms: u64,
    },
    Kill {
        victim: String,
        why: Why,
        since_ms: u64,
        by_attribution: bool,
    },
    /// Over budget with no GPU container left to kill (memory some other user holds).
    NoVictim,
}

#[derive(Debug, Clone)]
pub struct Policy {
    t: Thresholds,
    over_since: Option<u64>,
    settle_until: Option<u64>,
    /// Victims of this episode (a dry run "kills" each once; a failed kill is not retried).
    taken: BTreeSet<String>,
    no_victim_reported: bool,
}

impl Policy {
    pub fn new(t: Thresholds) -> Policy {
        Policy {
            t,
            over_since: None,
            settle_until: None,
            taken: BTreeSet::new(),
            no_victim_reported: false,
        }
    }

    /// When the next decision is due even if nothing wakes the daemon (sustain or settle end).
    pub fn deadline(&self) -> Option<u64> {
        match (self.settle_until, self.over_since) {
            (Some(s), _) => Some(s),
            (None, Some(o)) => Some(o.saturating_add(self.t.sustain_ms)),
            _ => None,
        }
    }

    pub fn over_since(&self) -> Option<u64> {
        self.over_since
    }

    /// Forgets the episode (no GPU container left).
    pub fn reset(&mut self) {
        self.over_since = None;
        self.settle_until = None;
        self.taken.clear();
        self.no_victim_reported = false;
    }

    pub fn observe(
        &mut self,
        o: &Observation,
        candidates: &[Candidate],
        attribution: Option<&BTreeMap<String, u64>>,
    ) -> Verdict {
        if let Some(until) = self.settle_until {
            if o.now_ms < until {
                return Verdict::Settling { until_ms: until };
            }
            self.settle_until = None;
        }
        let excess = o.excess();
        let pressure_kill = o.pressure && excess > 0;
        if !pressure_kill && excess <= signed(self.t.tolerance) {
            self.over_since = None;
            self.taken.clear();
            self.no_victim_reported = false;
            return Verdict::UnderBudget;
        }
        let since = *self.over_since.get_or_insert(o.now_ms);
        if !pressure_kill && o.now_ms < since.saturating_add(self.t.sustain_ms) {
            return Verdict::Over { since_ms: since };
        }
        match choose(candidates, &self.taken, attribution) {
            Some((victim, by_attribution)) => Verdict::Kill {
                victim,
                why: if pressure_kill { Why::Pressure } else { Why::Budget },
                since_ms: since,
                by_attribution,
            },
            None if self.no_victim_reported => Verdict::Over { since_ms: since },
            None => {
                self.no_victim_reported = true;
                Verdict::NoVictim
            }
        }
    }

    /// Records that `victim` was killed (or, dry run, would have been) at `now_ms`.
    pub fn killed(&mut self, victim: &str, now_ms: u64) {
        self.taken.insert(victim.to_string());
        self.settle_until = Some(now_ms.saturating_add(self.t.settle_ms));
    }
}

/// The victim among `candidates` not yet taken: by attribution (furthest over its own headroom)
/// when it names anyone, else the youngest. Returns (id, chosen by attribution).
pub fn choose(
    candidates: &[Candidate],
    taken: &BTreeSet<String>,
    attribution: Option<&BTreeMap<String, u64>>,
) -> Option<(String, bool)> {
    let left: Vec<&Candidate> = candidates.iter().filter(|c| !taken.contains(&c.id)).collect();
    if let Some(a) = attribution {
        let over = |c: &Candidate| a.get(&c.id).map(|&b| b as i128 - c.headroom as i128);
        if let Some(c) =
            left.iter().filter(|c| a.get(&c.id).is_some_and(|&b| b > 0)).max_by(|x, y| {
                over(x).cmp(&over(y)).then(x.start_time.cmp(&y.start_time)).then(x.id.cmp(&y.id))
            })
        {
            return Some((c.id.clone(), true));
        }
    }
    left.iter()
        .max_by(|x, y| x.start_time.cmp(&y.start_time).then(x.id.cmp(&y.id)))
        .map(|c| (c.id.clone(), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    fn t() -> Thresholds {
        Thresholds { tolerance: 64 * MI, sustain_ms: 200, settle_ms: 1000 }
    }
    fn c(id: &str, start: u64, headroom: u64) -> Candidate {
        Candidate { id: id.into(), start_time: start, headroom }
    }
    fn obs(now: u64, uncharged_mi: i64, granted_mi: u64, pressure: bool) -> Observation {
        Observation {
            now_ms: now,
            uncharged: uncharged_mi * MI as i64,
            granted: granted_mi * MI,
            pressure,
        }
    }

    #[test]
    fn under_budget_and_within_tolerance_never_kill() {
        let mut p = Policy::new(t());
        let cs = [c("a", 10, 512 * MI)];
        for (i, u) in [0, 300, 512, 576].into_iter().enumerate() {
            assert_eq!(
                p.observe(&obs(i as u64 * 100, u, 512, false), &cs, None),
                Verdict::UnderBudget,
                "{u}"
            );
        }
    }

    #[test]
    fn over_budget_must_be_sustained_then_kills_the_youngest() {
        let mut p = Policy::new(t());
        let cs = [c("old", 10, 256 * MI), c("young", 20, 256 * MI)];
        assert_eq!(
            p.observe(&obs(1000, 600, 512, false), &cs, None),
            Verdict::Over { since_ms: 1000 }
        );
        assert_eq!(p.deadline(), Some(1200));
        assert_eq!(
            p.observe(&obs(1100, 600, 512, false), &cs, None),
            Verdict::Over { since_ms: 1000 }
        );
        // A dip back under budget restarts the clock.
        assert_eq!(p.observe(&obs(1150, 500, 512, false), &cs, None), Verdict::UnderBudget);
        assert_eq!(
            p.observe(&obs(1160, 600, 512, false), &cs, None),
            Verdict::Over { since_ms: 1160 }
        );
        assert_eq!(
            p.observe(&obs(1360, 600, 512, false), &cs, None),
            Verdict::Kill {
                victim: "young".into(),
                why: Why::Budget,
                since_ms: 1160,
                by_attribution: false
            }
        );
    }

    #[test]
    fn pressure_kills_at_once_when_over_budget_at_all_but_not_within_budget() {
        let mut p = Policy::new(t());
        let cs = [c("a", 10, 256 * MI)];
        assert_eq!(
            p.observe(&obs(0, 250, 256, true), &cs, None),
            Verdict::UnderBudget,
            "pressure alone is not ours to fix"
        );
        assert_eq!(
            p.observe(&obs(10, 260, 256, true), &cs, None),
            Verdict::Kill {
                victim: "a".into(),
                why: Why::Pressure,
                since_ms: 10,
                by_attribution: false
            }
        );
    }

    #[test]
    fn after_a_kill_it_settles_then_takes_the_next_only_if_still_over() {
        let mut p = Policy::new(t());
        // Two GPU containers; only the older one ("grower") grows. Youngest first: "idle" goes.
        let both = [c("grower", 10, 256 * MI), c("idle", 20, 256 * MI)];
        assert!(matches!(p.observe(&obs(0, 700, 512, false), &both, None), Verdict::Over { .. }));
        let v = p.observe(&obs(200, 700, 512, false), &both, None);
        assert_eq!(
            v,
            Verdict::Kill {
                victim: "idle".into(),
                why: Why::Budget,
                since_ms: 0,
                by_attribution: false
            }
        );
        p.killed("idle", 210);
        let one = [c("grower", 10, 256 * MI)];
        assert_eq!(
            p.observe(&obs(500, 700, 256, false), &one, None),
            Verdict::Settling { until_ms: 1210 }
        );
        assert_eq!(p.deadline(), Some(1210));
        // Still over after settling: the next one at once, no new sustain.
        let v = p.observe(&obs(1210, 700, 256, false), &one, None);
        assert_eq!(
            v,
            Verdict::Kill {
                victim: "grower".into(),
                why: Why::Budget,
                since_ms: 0,
                by_attribution: false
            }
        );
        p.killed("grower", 1215);
        // The driver freed the grower's memory: back under budget, the episode ends.
        assert_eq!(p.observe(&obs(2300, 10, 0, false), &[], None), Verdict::UnderBudget);
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn it_stops_once_the_node_is_back_under_budget() {
        let mut p = Policy::new(t());
        let both = [c("idle", 10, 256 * MI), c("grower", 20, 256 * MI)];
        p.observe(&obs(0, 700, 512, false), &both, None);
        let v = p.observe(&obs(200, 700, 512, false), &both, None);
        assert!(matches!(v, Verdict::Kill { ref victim, .. } if victim == "grower"));
        p.killed("grower", 200);
        let one = [c("idle", 10, 256 * MI)];
        // The grower's memory is gone: "idle" is within its own headroom and survives.
        assert_eq!(p.observe(&obs(1300, 20, 256, false), &one, None), Verdict::UnderBudget);
        assert_eq!(p.observe(&obs(5000, 20, 256, false), &one, None), Verdict::UnderBudget);
    }

    #[test]
    fn attribution_picks_the_one_furthest_over_its_headroom() {
        let cs = [c("a", 10, 1024 * MI), c("b", 20, 256 * MI), c("quiet", 30, 256 * MI)];
        let a: BTreeMap<String, u64> =
            [("a".to_string(), 1200 * MI), ("b".to_string(), 900 * MI)].into_iter().collect();
        assert_eq!(
            choose(&cs, &BTreeSet::new(), Some(&a)),
            Some(("b".into(), true)),
            "b is 644Mi over, a 176Mi"
        );
        // An attribution that names nobody falls back to the order.
        assert_eq!(
            choose(&cs, &BTreeSet::new(), Some(&BTreeMap::new())),
            Some(("quiet".into(), false))
        );
        let taken: BTreeSet<String> = ["b".to_string()].into_iter().collect();
        assert_eq!(choose(&cs, &taken, Some(&a)), Some(("a".into(), true)));
    }

    #[test]
    fn the_order_is_deterministic_on_ties_and_no_victim_is_reported_once() {
        let cs = [c("x", 10, 0), c("y", 10, 0)];
        assert_eq!(choose(&cs, &BTreeSet::new(), None), Some(("y".into(), false)));
        let mut p = Policy::new(Thresholds { sustain_ms: 0, ..t() });
        assert_eq!(p.observe(&obs(0, 500, 0, false), &[], None), Verdict::NoVictim);
        assert_eq!(p.observe(&obs(100, 500, 0, false), &[], None), Verdict::Over { since_ms: 0 });
    }

    #[test]
    fn huge_grants_never_turn_into_a_kill() {
        // Before the create side bounded gpu-headroom, a record could grant 1Ei, 9Ei (past
        // i64::MAX) or u64::MAX; the sum of several passes u64::MAX. None of it may wrap into
        // a negative grant, an excess, and a kill of the other (younger) GPU containers.
        let t = Thresholds { tolerance: 64 * MI, sustain_ms: 0, settle_ms: 0 };
        for huge in [1u64 << 60, 9u64 << 60, i64::MAX as u64 + 1, u64::MAX] {
            let cs = [c("attacker", 10, huge), c("victim", 20, 256 * MI)];
            let g = granted(cs.iter().map(|c| c.headroom));
            assert!(g >= huge, "saturated, not wrapped: {g}");
            for uncharged in [i64::MIN, -1, 0, 1 << 40, 1 << 59] {
                let mut p = Policy::new(t);
                let o = Observation { now_ms: 0, uncharged, granted: g, pressure: false };
                assert!(
                    o.excess() <= uncharged,
                    "granting more never raises the excess ({huge}, {uncharged})"
                );
                let o2 = Observation { now_ms: 1, ..o };
                let v = (p.observe(&o, &cs, None), p.observe(&o2, &cs, None));
                assert_eq!(
                    v,
                    (Verdict::UnderBudget, Verdict::UnderBudget),
                    "{huge} granted, {uncharged} uncharged"
                );
                let mut p = Policy::new(t);
                assert_eq!(
                    p.observe(&Observation { pressure: true, ..o }, &cs, None),
                    Verdict::UnderBudget,
                    "pressure with {huge}"
                );
            }
        }
        assert_eq!(granted([u64::MAX, u64::MAX, 1]), u64::MAX);
        assert_eq!(
            Observation { now_ms: 0, uncharged: i64::MIN, granted: u64::MAX, pressure: false }
                .excess(),
            i64::MIN
        );
        assert_eq!(
            Observation { now_ms: 0, uncharged: i64::MAX, granted: 0, pressure: false }.excess(),
            i64::MAX
        );
    }

    #[test]
    fn extreme_thresholds_and_clocks_saturate() {
        // A tolerance past i64::MAX means "never over budget", not a negative tolerance.
        let mut p = Policy::new(Thresholds {
            tolerance: u64::MAX,
            sustain_ms: u64::MAX,
            settle_ms: u64::MAX,
        });
        let cs = [c("a", 10, 0)];
        assert_eq!(p.observe(&obs(0, 1 << 30, 0, false), &cs, None), Verdict::UnderBudget);
        let mut p =
            Policy::new(Thresholds { tolerance: 0, sustain_ms: u64::MAX, settle_ms: u64::MAX });
        assert_eq!(
            p.observe(&obs(u64::MAX - 1, 1, 0, false), &cs, None),
            Verdict::Over { since_ms: u64::MAX - 1 }
        );
        assert_eq!(p.deadline(), Some(u64::MAX));
        p.killed("a", u64::MAX - 1);
        assert_eq!(p.deadline(), Some(u64::MAX));
        // Attribution far beyond any headroom ranks without overflow.
        let cs = [c("a", 10, 0), c("b", 20, u64::MAX)];
        let a: BTreeMap<String, u64> =
            [("a".to_string(), u64::MAX), ("b".to_string(), 1)].into_iter().collect();
        assert_eq!(choose(&cs, &BTreeSet::new(), Some(&a)), Some(("a".into(), true)));
    }

    #[test]
    fn a_dry_run_walks_the_order_once_per_episode() {
        let mut p = Policy::new(Thresholds { sustain_ms: 0, settle_ms: 0, ..t() });
        let cs = [c("a", 10, 0), c("b", 20, 0)];
        let mut seen = vec![];
        for now in 0..5 {
            if let Verdict::Kill { victim, .. } = p.observe(&obs(now, 500, 0, false), &cs, None) {
                p.killed(&victim, now);
                seen.push(victim);
            }
        }
        assert_eq!(seen, vec!["b", "a"]);
        // A new episode after the node was back under budget starts over.
        p.observe(&obs(10, 0, 0, false), &cs, None);
        assert!(
            matches!(p.observe(&obs(11, 500, 0, false), &cs, None), Verdict::Kill { ref victim, .. } if victim == "b")
        );
    }
}
