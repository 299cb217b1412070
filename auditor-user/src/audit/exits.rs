//! The duty cycle of escalated exit probes (entry mode).
//!
//! An escalated call site's exit probe goes on the first instruction after
//! the call that the kernel emulates (~0.5 µs a hit); when none can stand
//! in for the return address, the probe stays on an instruction the kernel
//! single-steps (~12 µs a hit here). On a read-mostly cache that is every
//! request. Under `--stepped-exits sampled` such a probe is attached
//! (armed) for a window, then removed (parked) for a while: the share of
//! the time it is armed comes from its measured hit rate and a per-hit
//! cost, so that a target's stepped exits cost at most
//! [`STEPPED_EXIT_BUDGET_PCT`] of one CPU. A window is at least
//! [`MIN_ARMED`] and the gap between windows at most [`MAX_PERIOD`], so a
//! race that keeps happening is still caught within seconds; where the
//! budget cannot be kept with those bounds, the bounds win and the summary
//! shows the cost.
//!
//! Parking and arming never decide an access wrongly: the entries are
//! always probed, so the goroutine's current-access record is always its
//! latest call, and an exit that did not fire only leaves that record open
//! until the goroutine's next entry overwrites it. A `--max-overhead`
//! window that closes also parks every escalated exit (emulated ones too);
//! entries are not recorded while it is closed, so the engine draws a new
//! record salt when it opens, and records from before no longer pass.

use std::time::{Duration, Instant};

use super::budget::{CALIBRATED_PROGRAM_NS, SINGLE_STEP_TRAP_NS};
pub use crate::settings::STEPPED_EXIT_BUDGET_PCT;

/// What one hit of a single-stepped exit costs the target: the step and
/// the program (BPF statistics are not read per site).
pub const STEPPED_HIT_NS: f64 = SINGLE_STEP_TRAP_NS + CALIBRATED_PROGRAM_NS;
/// The first window, armed at escalation before the rate is known: the
/// session wakes every 100 ms, so a busy site is parked after one or two
/// of its ticks.
pub const FIRST_WINDOW: Duration = Duration::from_millis(100);
/// Shortest armed window.
pub const MIN_ARMED: Duration = Duration::from_millis(200);
/// Shortest window when the period is at [`MAX_PERIOD`] and the budget
/// still asks for less (one tick of the session).
pub const MIN_ARMED_AT_MAX_PERIOD: Duration = Duration::from_millis(100);
/// Longest time from one armed window to the next.
pub const MAX_PERIOD: Duration = Duration::from_secs(10);
/// How often a site armed all the time re-measures its rate.
pub const REMEASURE: Duration = Duration::from_secs(1);

/// How an escalated exit is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitTracking {
    /// Attached while the target's probes are on (emulated exits, and
    /// stepped ones under `--stepped-exits always`).
    Always,
    /// Stepped, attached for windows sized to the budget.
    Sampled,
    /// Stepped and not placed (`--stepped-exits off`).
    Off,
}

impl ExitTracking {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Sampled => "sampled",
            Self::Off => "off",
        }
    }
}

/// Armed `armed` of every `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DutyCycle {
    pub armed: Duration,
    pub period: Duration,
}

impl DutyCycle {
    pub const ALWAYS: Self = Self {
        armed: REMEASURE,
        period: REMEASURE,
    };

    pub fn share(&self) -> f64 {
        self.armed.as_secs_f64() / self.period.as_secs_f64()
    }

    pub fn is_always(&self) -> bool {
        self.armed >= self.period
    }

    /// The cycle for a site hit `hits_per_s` while armed, allowed
    /// `budget_share` of one CPU (0.01 for 1%). `parking` is how long the
    /// last removal took (a grace period, ~0.1 s here): the probe fires
    /// until it is done, so it counts as armed time.
    pub fn for_rate(hits_per_s: f64, budget_share: f64, parking: Duration) -> Self {
        let full = hits_per_s * STEPPED_HIT_NS / 1e9;
        if full <= budget_share || full <= 0.0 {
            return Self::ALWAYS;
        }
        let share = budget_share / full;
        let parking = parking.as_secs_f64();
        let period = (MIN_ARMED.as_secs_f64() + parking) / share;
        if period <= MAX_PERIOD.as_secs_f64() {
            return Self {
                armed: MIN_ARMED,
                period: Duration::from_secs_f64(period),
            };
        }
        let armed =
            (MAX_PERIOD.as_secs_f64() * share - parking).max(MIN_ARMED_AT_MAX_PERIOD.as_secs_f64());
        Self {
            armed: Duration::from_secs_f64(armed),
            period: MAX_PERIOD,
        }
    }

    /// The share of one CPU this cycle costs at `hits_per_s`, removals
    /// taking `parking`.
    pub fn cost_share(&self, hits_per_s: f64, parking: Duration) -> f64 {
        let on = if self.is_always() {
            1.0
        } else {
            ((self.armed + parking).as_secs_f64() / self.period.as_secs_f64()).min(1.0)
        };
        on * hits_per_s * STEPPED_HIT_NS / 1e9
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Attached since then; hits counted from `hits_at`.
    Armed { since: Instant, hits_at: u64 },
    /// Removal asked for at `asked`; the probe may fire until it is done.
    Parking {
        armed_since: Instant,
        asked: Instant,
    },
    /// Removed since then.
    Parked { since: Instant },
}

/// What the engine should do with a site's probe now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitAction {
    Keep,
    Arm,
    Park,
}

/// The schedule of one escalated exit.
#[derive(Clone, Debug)]
pub struct ExitSchedule {
    pub tracking: ExitTracking,
    pub duty: DutyCycle,
    phase: Phase,
    escalated: Instant,
    armed_total: Duration,
    /// Hits while armed in the last measured spell, per second.
    pub rate: Option<f64>,
    /// Hits counted so far (the kernel's count, across restarts).
    pub hits: u64,
    /// The kernel's count as of the last look.
    raw_hits: u64,
    /// How long the last removal took.
    pub parking: Duration,
    /// The share of the time the budget allows at the measured rate.
    budget_share: f64,
    /// How long the probe fired in its last window, removal included: the
    /// gap after it is sized from this, so a session that looks less often
    /// than the window asks (the daemon's scan ticks) still keeps to the
    /// budget.
    last_on: Duration,
}

impl ExitSchedule {
    /// A site just attached (armed), or for `Off`, never attached.
    pub fn new(tracking: ExitTracking, now: Instant) -> Self {
        let (duty, phase) = match tracking {
            ExitTracking::Always => (
                DutyCycle::ALWAYS,
                Phase::Armed {
                    since: now,
                    hits_at: 0,
                },
            ),
            ExitTracking::Sampled => (
                DutyCycle {
                    armed: FIRST_WINDOW,
                    period: MAX_PERIOD,
                },
                Phase::Armed {
                    since: now,
                    hits_at: 0,
                },
            ),
            ExitTracking::Off => (
                DutyCycle {
                    armed: Duration::ZERO,
                    period: MAX_PERIOD,
                },
                Phase::Parked { since: now },
            ),
        };
        Self {
            tracking,
            duty,
            phase,
            escalated: now,
            armed_total: Duration::ZERO,
            rate: None,
            hits: 0,
            raw_hits: 0,
            parking: Duration::ZERO,
            budget_share: 1.0,
            last_on: Duration::ZERO,
        }
    }

    /// The kernel's count as of the last look (what to pass again when it
    /// cannot be read).
    pub fn kernel_hits(&self) -> u64 {
        self.raw_hits
    }

    pub fn is_armed(&self) -> bool {
        matches!(self.phase, Phase::Armed { .. })
    }

    /// Decide at `now`, given the kernel's hit count for the site (0 for
    /// sites it does not count), whether the target's probes are on
    /// (`--max-overhead` window) and the budget of this site in shares of
    /// one CPU. The engine then arms, or parks and calls [`Self::parked`]
    /// once the removal is done.
    pub fn step(&mut self, now: Instant, hits: u64, probes_on: bool, budget: f64) -> ExitAction {
        // The kernel's count restarts if its table evicted the site's entry
        // (an LRU of 4096 sites): only increases are added.
        self.hits += if hits >= self.raw_hits {
            hits - self.raw_hits
        } else {
            hits
        };
        self.raw_hits = hits;
        match self.phase {
            Phase::Armed { since, hits_at } => {
                if !probes_on {
                    self.phase = Phase::Parking {
                        armed_since: since,
                        asked: now,
                    };
                    return ExitAction::Park;
                }
                if self.tracking != ExitTracking::Sampled {
                    return ExitAction::Keep;
                }
                let spell = now.saturating_duration_since(since);
                if spell < self.duty.armed {
                    return ExitAction::Keep;
                }
                let rate = self.hits.saturating_sub(hits_at) as f64 / spell.as_secs_f64();
                self.rate = Some(rate);
                self.duty = DutyCycle::for_rate(rate, budget, self.parking);
                let full = rate * STEPPED_HIT_NS / 1e9;
                self.budget_share = if full > 0.0 {
                    (budget / full).min(1.0)
                } else {
                    1.0
                };
                if self.duty.is_always() {
                    // Cheap enough: stay armed, measure again later.
                    self.armed_total += spell;
                    self.phase = Phase::Armed {
                        since: now,
                        hits_at: self.hits,
                    };
                    return ExitAction::Keep;
                }
                self.phase = Phase::Parking {
                    armed_since: since,
                    asked: now,
                };
                ExitAction::Park
            }
            Phase::Parking { .. } => ExitAction::Keep,
            Phase::Parked { since } => {
                if !probes_on || self.tracking == ExitTracking::Off {
                    return ExitAction::Keep;
                }
                let period = (self.last_on.as_secs_f64() / self.budget_share.max(1e-6))
                    .min(MAX_PERIOD.as_secs_f64());
                let gap = Duration::from_secs_f64(period).saturating_sub(self.last_on);
                if self.tracking == ExitTracking::Always
                    || now.saturating_duration_since(since) >= gap
                {
                    self.phase = Phase::Armed {
                        since: now,
                        hits_at: self.hits,
                    };
                    return ExitAction::Arm;
                }
                ExitAction::Keep
            }
        }
    }

    /// The removal asked for by [`ExitAction::Park`] finished at `done`:
    /// the probe counted as armed until then.
    pub fn parked(&mut self, done: Instant) {
        if let Phase::Parking { armed_since, asked } = self.phase {
            self.armed_total += done.saturating_duration_since(armed_since);
            self.parking = done.saturating_duration_since(asked);
            self.last_on = done.saturating_duration_since(armed_since);
            self.phase = Phase::Parked { since: done };
        }
    }

    /// Arming failed: parked again, retried after a gap.
    pub fn arm_failed(&mut self, now: Instant) {
        self.phase = Phase::Parked { since: now };
    }

    /// What the probe's hits cost since escalation, in percent of one CPU
    /// (at [`STEPPED_HIT_NS`] a hit).
    pub fn cost_pct(&self, now: Instant) -> f64 {
        let wall = now.saturating_duration_since(self.escalated).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        100.0 * self.hits as f64 * STEPPED_HIT_NS / 1e9 / wall
    }

    /// Share of the time since escalation the probe was attached, in
    /// percent.
    pub fn armed_pct(&self, now: Instant) -> f64 {
        let mut armed = self.armed_total;
        match self.phase {
            Phase::Armed { since, .. } => armed += now.saturating_duration_since(since),
            Phase::Parking { armed_since, .. } => {
                armed += now.saturating_duration_since(armed_since)
            }
            Phase::Parked { .. } => {}
        }
        let wall = now.saturating_duration_since(self.escalated).as_secs_f64();
        if wall <= 0.0 {
            return if self.is_armed() { 100.0 } else { 0.0 };
        }
        (100.0 * armed.as_secs_f64() / wall).min(100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: f64 = STEPPED_EXIT_BUDGET_PCT / 100.0;
    /// A removal's grace period as measured here.
    const PARK: Duration = Duration::from_millis(100);

    #[test]
    fn a_rarely_hit_site_stays_armed() {
        // 100 hits/s at 13 µs: 0.13% of a CPU.
        assert!(DutyCycle::for_rate(100.0, BUDGET, PARK).is_always());
        assert!(DutyCycle::for_rate(0.0, BUDGET, PARK).is_always());
    }

    #[test]
    fn a_busy_site_is_armed_for_a_share_that_fits_the_budget() {
        // 15k hits/s (a request path): 19.5% of a CPU armed all the time.
        let d = DutyCycle::for_rate(15_000.0, BUDGET, PARK);
        assert_eq!(d.armed, MIN_ARMED);
        assert!(d.period <= MAX_PERIOD, "{d:?}");
        assert!(d.cost_share(15_000.0, PARK) <= BUDGET + 1e-9, "{d:?}");
        assert!(d.cost_share(15_000.0, PARK) > BUDGET * 0.9, "{d:?}");
    }

    #[test]
    fn the_longest_gap_wins_over_the_budget_at_extreme_rates() {
        // 150k hits/s (two CPUs stepping): at most 10 s between windows of
        // at least 100 ms (and the removal's 100 ms); the cost is then over
        // the budget, and bounded.
        let d = DutyCycle::for_rate(150_000.0, BUDGET, PARK);
        assert_eq!(d.period, MAX_PERIOD);
        assert_eq!(d.armed, MIN_ARMED_AT_MAX_PERIOD);
        let c = d.cost_share(150_000.0, PARK);
        assert!(c > BUDGET && c < 4.0 * BUDGET, "{c}");
        // Just under that: the window shrinks and the budget holds.
        let d = DutyCycle::for_rate(30_000.0, BUDGET, PARK);
        assert_eq!(d.period, MAX_PERIOD);
        assert!(
            d.armed > MIN_ARMED_AT_MAX_PERIOD && d.armed < MIN_ARMED,
            "{d:?}"
        );
        assert!(d.cost_share(30_000.0, PARK) <= BUDGET + 1e-9);
    }

    #[test]
    fn a_sampled_site_is_parked_after_its_first_window_then_armed_again() {
        let t0 = Instant::now();
        let mut s = ExitSchedule::new(ExitTracking::Sampled, t0);
        assert!(s.is_armed());
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(s.step(at(50), 700, true, BUDGET), ExitAction::Keep);
        // 1,500 hits in the first 100 ms: 15k/s.
        assert_eq!(s.step(at(100), 1_500, true, BUDGET), ExitAction::Park);
        assert!((s.rate.unwrap() - 15_000.0).abs() < 1.0);
        assert!(!s.duty.is_always());
        // The removal takes a grace period; armed until it is done.
        assert_eq!(s.step(at(150), 2_000, true, BUDGET), ExitAction::Keep);
        s.parked(at(160));
        assert_eq!(s.parking, Duration::from_millis(60));
        // The gap keeps the 160 ms it fired (removal included) within the
        // budget's share.
        let share = BUDGET / (15_000.0 * STEPPED_HIT_NS / 1e9);
        let gap = Duration::from_secs_f64(0.16 / share) - Duration::from_millis(160);
        let back = 160 + gap.as_millis() as u64 + 1;
        assert_eq!(s.step(at(back - 10), 2_000, true, BUDGET), ExitAction::Keep);
        assert_eq!(s.step(at(back), 2_000, true, BUDGET), ExitAction::Arm);
        assert!(s.is_armed());
        let pct = s.armed_pct(at(back));
        assert!(pct > 1.0 && pct < 10.0, "{pct}");
    }

    #[test]
    fn a_closed_overhead_window_parks_every_exit_and_opening_arms_it() {
        let t0 = Instant::now();
        let mut s = ExitSchedule::new(ExitTracking::Always, t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(s.step(at(100), 0, true, BUDGET), ExitAction::Keep);
        assert_eq!(s.step(at(200), 0, false, BUDGET), ExitAction::Park);
        s.parked(at(210));
        assert_eq!(s.step(at(300), 0, false, BUDGET), ExitAction::Keep);
        assert_eq!(s.step(at(400), 0, true, BUDGET), ExitAction::Arm);
        let pct = s.armed_pct(at(400));
        assert!((pct - 52.5).abs() < 0.1, "{pct}");
    }

    #[test]
    fn a_restarted_kernel_count_adds_only_its_new_hits() {
        let t0 = Instant::now();
        let mut s = ExitSchedule::new(ExitTracking::Always, t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        s.step(at(100), 500, true, BUDGET);
        // The entry was evicted and created again: the count starts over.
        s.step(at(200), 30, true, BUDGET);
        s.step(at(300), 80, true, BUDGET);
        assert_eq!(s.hits, 580);
    }

    #[test]
    fn an_off_site_is_never_armed() {
        let t0 = Instant::now();
        let mut s = ExitSchedule::new(ExitTracking::Off, t0);
        assert!(!s.is_armed());
        let late = t0 + Duration::from_secs(60);
        assert_eq!(s.step(late, 0, true, BUDGET), ExitAction::Keep);
        assert_eq!(s.armed_pct(late), 0.0);
    }
}
