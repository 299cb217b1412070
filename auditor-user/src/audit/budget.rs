//! The overhead budget (`--max-overhead PCT`): what the probes cost a
//! target, estimated from probe hits, and the sampling window that keeps
//! the estimate within the budget.
//!
//! A hit costs the uprobe trap plus the BPF program. The program's time is
//! measured (BPF run-time statistics, `BPF_ENABLE_STATS`) when the kernel
//! allows it, else charged at [`CALIBRATED_PROGRAM_NS`]. The trap is not
//! visible to BPF statistics and is charged by probe kind, as measured on
//! the project's machines (docs/benchmarks.md): [`EMULATED_TRAP_NS`] for an
//! entry probe (emulated instruction), [`SINGLE_STEP_TRAP_NS`] for an exit
//! probe (RET or call-site return address, usually single-stepped). The
//! target's CPU time comes from `/proc/PID/stat` and includes the probes'
//! own cost, since the kernel runs them in the target's context.
//!
//! Over budget, what is probed narrows in two steps (the ladder):
//!
//! 1. **Scope.** The call sites outside the main module (dependency
//!    modules, `reflect`, `maps` under the default `user` scope) are
//!    detached, hottest first by their measured share of the hits
//!    ([`choose_narrowing`]), until the estimate fits the budget with a
//!    margin. Main-module sites and the runtime hooks are never detached.
//!    Sites are attached again ([`choose_widening`]) once their predicted
//!    cost fits well under the budget and they have stayed detached for a
//!    hold that doubles each time a site is narrowed again (hysteresis).
//! 2. **Sampling.** When what is left is still over the budget, probes are
//!    on only for a window of each period.
//!
//! Sampling: A closed window removes the probes
//! when they are one `uprobe_multi` link (one grace period to remove, one
//! link to place again); with one link per site it is closed by
//! `GoTargetConfig::paused` alone, and a hit in it still pays the trap and
//! one hash lookup ([`PAUSED_HIT_NS`]), so the trap bounds how far
//! sampling can bring the cost down.

/// Trap of a probe on an instruction the kernel emulates (`jbe`, `call`).
pub const EMULATED_TRAP_NS: f64 = 500.0;
/// Trap of a probe on an instruction the kernel single-steps (RET, `mov`).
pub const SINGLE_STEP_TRAP_NS: f64 = 12_000.0;
/// BPF program time per hit when it cannot be measured: the auditor's
/// program on a Go HTTP service (docs/benchmarks.md, ~0.9-1 µs).
pub const CALIBRATED_PROGRAM_NS: f64 = 1_000.0;
/// A hit while the window is closed: the emulated trap and the program's
/// first lookup.
pub const PAUSED_HIT_NS: f64 = EMULATED_TRAP_NS + 100.0;

/// Shortest open window: the session wakes about every 100 ms.
pub const MIN_WINDOW_MS: u64 = 100;
/// Sampling period for coverages of 10% and more.
pub const PERIOD_MS: u64 = 1_000;
/// Longest period (coverage below 100 ms a minute is not offered).
pub const MAX_PERIOD_MS: u64 = 60_000;

/// What one measurement interval saw of a target.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CostSample {
    /// Wall time of the interval, and how much of it the probes were on.
    pub wall_ns: u64,
    pub on_ns: u64,
    /// Hits that ran the program in full (window open), of which on exit
    /// probes, and hits in a closed window.
    pub active_hits: u64,
    pub exit_hits: u64,
    pub paused_hits: u64,
    /// BPF program time over the interval, when measured.
    pub program_ns: Option<u64>,
    /// The target's CPU time (user + system) over the interval.
    pub target_cpu_ns: u64,
}

/// Narrow until the estimate is within this share of the budget, so a
/// small rise in load does not go over at once.
pub const NARROW_TARGET: f64 = 0.8;
/// A site carrying less than this share of the hits is not worth its
/// coverage: what is left is sampled instead.
pub const MIN_NARROW_SHARE: f64 = 0.01;
/// Widen only while the predicted cost with the site back stays under this
/// share of the budget (narrowing starts above the whole budget).
pub const WIDEN_FRACTION: f64 = 0.5;
/// Least time a narrowed site stays detached; doubled each time the same
/// site is narrowed again, up to [`MAX_HOLD_MS`].
pub const HOLD_MS: u64 = 10_000;
/// A detached site whose predicted cost does not fit is still attached
/// again, to be measured afresh, after this many holds: a site that went
/// cold while detached cannot be seen to have (it is narrowed again, with
/// a doubled hold, if it is still hot).
pub const RETRY_HOLDS: u64 = 3;
pub const MAX_HOLD_MS: u64 = 320_000;

/// When the probes are on: `on_ms` of every `period_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplingWindow {
    pub on_ms: u64,
    pub period_ms: u64,
}

impl SamplingWindow {
    pub const ALWAYS: Self = Self {
        on_ms: PERIOD_MS,
        period_ms: PERIOD_MS,
    };

    /// The window for a share `f` (0..=1) of the time.
    pub fn for_share(f: f64) -> Self {
        if f >= 1.0 {
            return Self::ALWAYS;
        }
        let f = f.max(MIN_WINDOW_MS as f64 / MAX_PERIOD_MS as f64);
        if f >= 0.1 {
            // Whole 100 ms steps of a 1 s period, rounded down.
            let on = ((f * 10.0).floor() as u64).max(1) * MIN_WINDOW_MS;
            return Self {
                on_ms: on,
                period_ms: PERIOD_MS,
            };
        }
        let period = ((MIN_WINDOW_MS as f64 / f).ceil() as u64).min(MAX_PERIOD_MS);
        Self {
            on_ms: MIN_WINDOW_MS,
            period_ms: period,
        }
    }

    pub fn share(&self) -> f64 {
        self.on_ms as f64 / self.period_ms as f64
    }

    /// Whether the probes are on `elapsed_ms` into the schedule.
    pub fn is_on(&self, elapsed_ms: u64) -> bool {
        elapsed_ms % self.period_ms < self.on_ms
    }
}

/// The estimate of one interval, and the window it asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Cost with every probe on, in percent of the target's CPU time.
    pub full_pct: f64,
    /// Hits per second of wall time with the probes on.
    pub hits_per_s: f64,
    /// Cost of a hit with the window open.
    pub ns_per_hit: f64,
    pub measured: bool,
    pub window: SamplingWindow,
    /// Even with every window closed, the traps cost more than the budget.
    pub trap_over_budget: bool,
    /// Over the interval, with the probes on all the time: their cost, what
    /// the budget allows, and the hits (ns, ns, hits).
    pub full_cost_ns: f64,
    pub allowed_ns: f64,
    pub hits_full: f64,
    /// The target's own CPU time over the interval (less the probes').
    pub work_ns: f64,
    /// What a hit in a closed window costs.
    pub paused_hit_ns: f64,
}

impl Estimate {
    /// The window that keeps the cost within the budget when only
    /// `kept` (0..=1) of the hits remain (the rest detached), and whether
    /// the traps of closed windows alone are over it.
    pub fn window_keeping(&self, kept: f64) -> (SamplingWindow, bool) {
        let (share, over) = share_for(
            self.full_cost_ns * kept,
            self.hits_full * kept,
            self.allowed_ns,
            self.ns_per_hit,
            self.paused_hit_ns,
        );
        (SamplingWindow::for_share(share), over)
    }

    /// Estimated cost with every probe on and only `kept` of the hits
    /// remaining, in percent of the target's CPU time.
    pub fn pct_keeping(&self, kept: f64) -> f64 {
        let cost = self.full_cost_ns * kept;
        100.0 * cost / (self.work_ns + cost)
    }
}

/// Share of the time the probes can be on: `full_cost` over `hits` with
/// `allowed` to spend, a hit costing `a` with the window open and `p`
/// closed; and whether no window fits.
fn share_for(full_cost: f64, hits: f64, allowed: f64, a: f64, p: f64) -> (f64, bool) {
    if full_cost <= allowed || hits <= 0.0 {
        return (1.0, false);
    }
    let per_hit_allowed = allowed / hits;
    if per_hit_allowed <= p || a <= p {
        (0.0, true)
    } else {
        ((per_hit_allowed - p) / (a - p), false)
    }
}

/// A site that may be detached, and its hits over the last measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SiteHits {
    /// Index in the plan's sites.
    pub site: usize,
    pub hits: u64,
}

/// The sites to detach, hottest first, so the estimate `e` fits
/// [`NARROW_TARGET`] of the budget: `candidates` are the sites that may
/// be detached (not yet detached), `measured_hits` every hit the per-site
/// tallies saw over the same time (the shares' denominator). Empty when
/// within budget or no candidate carries [`MIN_NARROW_SHARE`] of the hits.
pub fn choose_narrowing(e: &Estimate, candidates: &[SiteHits], measured_hits: u64) -> Vec<usize> {
    if e.full_cost_ns <= e.allowed_ns || measured_hits == 0 {
        return Vec::new();
    }
    let mut sorted = candidates.to_vec();
    // Hottest first; ties by site, so the choice is reproducible.
    sorted.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.site.cmp(&b.site)));
    let target = e.allowed_ns * NARROW_TARGET;
    let mut kept = 1.0;
    let mut out = Vec::new();
    for c in sorted {
        if e.full_cost_ns * kept <= target {
            break;
        }
        let share = c.hits as f64 / measured_hits as f64;
        if share < MIN_NARROW_SHARE {
            break;
        }
        kept = (kept - share).max(0.0);
        out.push(c.site);
    }
    out
}

/// A detached site: its hit rate when it was detached, and the rate of the
/// sites left on then (its rate is predicted to follow theirs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NarrowedSite {
    pub site: usize,
    pub hits_per_s: f64,
    pub rest_hits_per_s: f64,
    /// Detached this long ago, and how long it must stay so.
    pub narrowed_ms: u64,
    pub hold_ms: u64,
}

impl NarrowedSite {
    /// Its hit rate now, scaled by how the sites left on changed since.
    pub fn predicted_hits_per_s(&self, rest_now: f64) -> f64 {
        if self.rest_hits_per_s <= 0.0 {
            return self.hits_per_s;
        }
        self.hits_per_s * (rest_now / self.rest_hits_per_s)
    }
}

/// The hold of a site narrowed for the `times`-th time (1, 2, ...).
pub fn hold_ms(times: u32) -> u64 {
    HOLD_MS
        .saturating_mul(1u64 << times.saturating_sub(1).min(16))
        .min(MAX_HOLD_MS)
}

/// The detached sites to attach again, coldest first, while the predicted
/// cost stays within [`WIDEN_FRACTION`] of the budget: `e` is the estimate
/// of the sites on now (`None`: nothing was measured, the target was
/// idle). A site still in its hold stays off.
pub fn choose_widening(e: Option<&Estimate>, narrowed: &[NarrowedSite]) -> Vec<usize> {
    let ready = || narrowed.iter().filter(|n| n.narrowed_ms >= n.hold_ms);
    let Some(e) = e else {
        // No hits at all on what is left: nothing to predict from, and
        // nothing the target pays. Widen what has served its hold.
        return ready().map(|n| n.site).collect();
    };
    if e.full_cost_ns > e.allowed_ns * WIDEN_FRACTION || e.hits_full <= 0.0 {
        return Vec::new();
    }
    let interval_s = e.hits_full / e.hits_per_s.max(f64::MIN_POSITIVE);
    let mut sorted: Vec<_> = ready().copied().collect();
    sorted.sort_by(|a, b| {
        a.predicted_hits_per_s(e.hits_per_s)
            .total_cmp(&b.predicted_hits_per_s(e.hits_per_s))
            .then(a.site.cmp(&b.site))
    });
    let mut cost = e.full_cost_ns;
    let mut out = Vec::new();
    for n in &sorted {
        let add = n.predicted_hits_per_s(e.hits_per_s) * interval_s * e.ns_per_hit;
        if cost + add > e.allowed_ns * WIDEN_FRACTION {
            break;
        }
        cost += add;
        out.push(n.site);
    }
    if out.is_empty() {
        // Nothing fits by prediction: the coldest site long past its hold
        // comes back on trial, one at a time.
        if let Some(n) = sorted
            .iter()
            .find(|n| n.narrowed_ms >= n.hold_ms.saturating_mul(RETRY_HOLDS))
        {
            out.push(n.site);
        }
    }
    out
}

/// Estimate from one interval. `paused_hit_ns` is what a hit in a closed
/// window costs: [`PAUSED_HIT_NS`] when the window is closed by the
/// `paused` flag, 0 when the probes are removed. `None` when it cannot say
/// (no CPU time, no hits, or the probes were off the whole interval).
pub fn estimate(s: &CostSample, budget_pct: f64, paused_hit_ns: f64) -> Option<Estimate> {
    if s.on_ns == 0 || s.wall_ns == 0 || s.target_cpu_ns == 0 || s.active_hits == 0 {
        return None;
    }
    let on = (s.on_ns as f64 / s.wall_ns as f64).min(1.0);
    let entry_hits = s.active_hits.saturating_sub(s.exit_hits) as f64;
    let trap_ns = entry_hits * EMULATED_TRAP_NS + s.exit_hits as f64 * SINGLE_STEP_TRAP_NS;
    let (program_ns, measured) = match s.program_ns {
        // The program time of closed-window hits is in there too: charged
        // to the open ones, which overstates them a little.
        Some(p) => (p as f64, true),
        None => (s.active_hits as f64 * CALIBRATED_PROGRAM_NS, false),
    };
    let active_cost = trap_ns + program_ns;
    let paused_cost = s.paused_hits as f64 * paused_hit_ns;
    let a = active_cost / s.active_hits as f64;
    // The target's own work: its CPU time less what the probes cost it.
    let work = (s.target_cpu_ns as f64 - active_cost - paused_cost).max(1.0);
    // Hits if the probes had been on the whole interval.
    let hits_full = s.active_hits as f64 / on;
    let full_cost = hits_full * a;
    let full_pct = 100.0 * full_cost / (work + full_cost);
    // cost(f) = hits_full * (f a + (1 - f) p) must stay within
    // b / (1 - b) of the target's own work.
    let b = budget_pct / 100.0;
    let allowed = if b >= 1.0 {
        f64::INFINITY
    } else {
        b / (1.0 - b) * work
    };
    let (share, trap_over) = share_for(full_cost, hits_full, allowed, a, paused_hit_ns);
    Some(Estimate {
        full_pct,
        hits_per_s: hits_full / (s.wall_ns as f64 / 1e9),
        ns_per_hit: a,
        measured,
        window: SamplingWindow::for_share(share),
        trap_over_budget: trap_over,
        full_cost_ns: full_cost,
        allowed_ns: allowed,
        hits_full,
        work_ns: work,
        paused_hit_ns,
    })
}

/// `utime + stime` of a process, in nanoseconds (`/proc/PID/stat`).
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ns(&text, clock_ticks())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Fields 14 and 15 (utime, stime, in clock ticks) of a `stat` line; the
/// command name in parentheses may hold spaces and parentheses.
fn parse_stat_cpu_ns(text: &str, ticks_per_s: u64) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // After the name: state (3) ... utime (14), stime (15).
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) * 1_000_000_000 / ticks_per_s.max(1))
}

/// Run time and runs of this process's uprobe programs, summed over every
/// loaded program (`/proc/self/fdinfo`; counted only while BPF statistics
/// are on).
pub fn own_program_runs() -> (u64, u64) {
    let mut seen = std::collections::HashSet::new();
    let (mut ns, mut runs) = (0, 0);
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return (0, 0);
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        // BPF_PROG_TYPE_KPROBE: uprobe programs (the bpf(2) audit's
        // tracepoints are another type).
        if field("prog_type") != Some(2) {
            continue;
        }
        if let (Some(id), Some(t), Some(c)) =
            (field("prog_id"), field("run_time_ns"), field("run_cnt"))
            && seen.insert(id)
        {
            ns += t;
            runs += c;
        }
    }
    (ns, runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(active: u64, cpu_ms: u64) -> CostSample {
        CostSample {
            wall_ns: 1_000_000_000,
            on_ns: 1_000_000_000,
            active_hits: active,
            exit_hits: 0,
            paused_hits: 0,
            program_ns: Some(active * 300),
            target_cpu_ns: cpu_ms * 1_000_000,
        }
    }

    #[test]
    fn a_cheap_target_stays_fully_covered() {
        // 1,000 hits of 800 ns in a second of CPU: 0.08%.
        let e = estimate(&sample(1_000, 1_000), 5.0, PAUSED_HIT_NS).unwrap();
        assert!(e.full_pct < 0.1, "{e:?}");
        assert_eq!(e.window, SamplingWindow::ALWAYS);
        assert!(e.measured);
    }

    #[test]
    fn over_budget_opens_a_window_that_fits_the_budget() {
        // 500k hits of 800 ns: 400 ms of a 1 s CPU second, 40%.
        // Probes removed in closed windows (a hit there costs nothing).
        let s = sample(500_000, 1_000);
        let e = estimate(&s, 5.0, 0.0).unwrap();
        assert!((e.full_pct - 40.0).abs() < 1.0, "{e:?}");
        assert!(e.window.share() < 1.0 && e.window.share() > 0.0, "{e:?}");
        // The window chosen keeps the cost within the budget.
        let f = e.window.share();
        let work = 600e6;
        let hits = 500_000.0;
        let cost = hits * f * e.ns_per_hit;
        assert!(100.0 * cost / (work + cost) <= 5.0 + 1e-9, "{f} {cost}");
        assert!(!e.trap_over_budget);
        // Closed by the flag alone, a hit still pays ~600 of its 800 ns:
        // no window fits 5%, and the estimate says so.
        let e = estimate(&s, 5.0, PAUSED_HIT_NS).unwrap();
        assert!(e.trap_over_budget, "{e:?}");
        // A 36% budget fits with the flag: cost(f) = hits (f a + (1-f) p).
        let e = estimate(&s, 36.0, PAUSED_HIT_NS).unwrap();
        let f = e.window.share();
        assert!(f > 0.0 && f < 1.0 && !e.trap_over_budget, "{e:?}");
        let cost = hits * (f * e.ns_per_hit + (1.0 - f) * PAUSED_HIT_NS);
        assert!(100.0 * cost / (work + cost) <= 36.0 + 1e-9, "{f} {cost}");
    }

    #[test]
    fn traps_alone_over_budget_are_said() {
        let e = estimate(&sample(500_000, 1_000), 1.0, PAUSED_HIT_NS).unwrap();
        assert!(e.trap_over_budget, "{e:?}");
        assert!(e.window.share() < 0.01, "{e:?}");
        // Removing the probes in closed windows costs nothing per hit: the
        // budget is met by a small window instead.
        let e = estimate(&sample(500_000, 1_000), 1.0, 0.0).unwrap();
        assert!(!e.trap_over_budget, "{e:?}");
        assert!(e.window.share() > 0.0 && e.window.share() < 0.1, "{e:?}");
    }

    #[test]
    fn nothing_to_estimate_without_hits_or_cpu() {
        assert!(estimate(&sample(0, 1_000), 5.0, 0.0).is_none());
        assert!(estimate(&sample(10, 0), 5.0, 0.0).is_none());
    }

    #[test]
    fn windows_are_whole_100ms_steps() {
        assert_eq!(
            SamplingWindow::for_share(0.55),
            SamplingWindow {
                on_ms: 500,
                period_ms: 1000
            }
        );
        assert_eq!(SamplingWindow::for_share(0.02).period_ms, 5000);
        assert_eq!(SamplingWindow::for_share(0.0).period_ms, MAX_PERIOD_MS);
        let w = SamplingWindow::for_share(0.3);
        assert!(w.is_on(0) && w.is_on(299) && !w.is_on(300) && w.is_on(1000));
    }

    fn hits(site: usize, hits: u64) -> SiteHits {
        SiteHits { site, hits }
    }

    #[test]
    fn narrowing_detaches_the_hottest_sites_until_the_budget_fits() {
        // 500k hits of 800 ns in a CPU second: 40% against a 5% budget.
        let e = estimate(&sample(500_000, 1_000), 5.0, 0.0).unwrap();
        // Site 7 alone carries 93% of the hits; 3 carries 2%, 4 0.5%.
        let c = [hits(3, 10_000), hits(7, 465_000), hits(4, 2_500)];
        let chosen = choose_narrowing(&e, &c, 500_000);
        assert_eq!(chosen[0], 7, "{chosen:?}");
        // Without 7, 7% of 400 ms is over 80% of the budget; without 3
        // too, 5% of it fits, and site 4 stays on.
        let kept = 1.0 - (465_000.0 + 10_000.0) / 500_000.0;
        assert!(
            e.pct_keeping(kept) <= 5.0 * NARROW_TARGET,
            "{}",
            e.pct_keeping(kept)
        );
        assert_eq!(chosen, vec![7, 3]);
        // What is left fits: no sampling window.
        assert_eq!(e.window_keeping(kept).0, SamplingWindow::ALWAYS);
    }

    #[test]
    fn narrowing_stops_at_sites_too_cold_to_matter_and_sampling_takes_over() {
        let e = estimate(&sample(500_000, 1_000), 5.0, 0.0).unwrap();
        // The hot site is in the main module (not a candidate): every
        // candidate together carries 3%.
        let c = [hits(1, 10_000), hits(2, 5_000), hits(5, 400)];
        let chosen = choose_narrowing(&e, &c, 500_000);
        assert_eq!(chosen, vec![1, 2], "the 0.08% site stays on");
        let kept = 1.0 - 15_000.0 / 500_000.0;
        let (w, _) = e.window_keeping(kept);
        assert!(w.share() < 1.0 && w.share() > 0.0, "{w:?}");
        // The window for the narrowed set is a little wider than for all.
        assert!(w.share() >= e.window.share(), "{w:?} {:?}", e.window);
    }

    #[test]
    fn within_budget_nothing_is_narrowed() {
        let e = estimate(&sample(1_000, 1_000), 5.0, 0.0).unwrap();
        assert!(choose_narrowing(&e, &[hits(1, 1_000)], 1_000).is_empty());
        // No per-site tallies: nothing to choose from.
        let e = estimate(&sample(500_000, 1_000), 5.0, 0.0).unwrap();
        assert!(choose_narrowing(&e, &[hits(1, 0)], 0).is_empty());
    }

    fn narrowed(site: usize, hits_per_s: f64, narrowed_ms: u64) -> NarrowedSite {
        NarrowedSite {
            site,
            hits_per_s,
            rest_hits_per_s: 10_000.0,
            narrowed_ms,
            hold_ms: HOLD_MS,
        }
    }

    #[test]
    fn widening_waits_for_the_hold_and_a_clear_margin() {
        // What is left: 10k hits/s of 800 ns in a CPU second, 0.8%.
        let e = estimate(&sample(10_000, 1_000), 5.0, 0.0).unwrap();
        // At 10k hits/s the site would bring the total to 1.6%: under
        // half the budget, but only after its hold.
        let n = [narrowed(4, 10_000.0, HOLD_MS - 1)];
        assert!(choose_widening(Some(&e), &n).is_empty());
        let n = [narrowed(4, 10_000.0, HOLD_MS)];
        assert_eq!(choose_widening(Some(&e), &n), vec![4]);
        // At 40k hits/s it would cost ~4%: within the budget but not within
        // half of it, so it stays off (no flapping at the edge)...
        let n = [narrowed(4, 40_000.0, HOLD_MS)];
        assert!(choose_widening(Some(&e), &n).is_empty());
        // ...until it has been off for RETRY_HOLDS holds: then it is
        // measured afresh (it may have gone cold while detached).
        let n = [narrowed(4, 40_000.0, RETRY_HOLDS * HOLD_MS - 1)];
        assert!(choose_widening(Some(&e), &n).is_empty());
        let n = [
            narrowed(4, 40_000.0, RETRY_HOLDS * HOLD_MS),
            narrowed(5, 80_000.0, RETRY_HOLDS * HOLD_MS),
        ];
        assert_eq!(
            choose_widening(Some(&e), &n),
            vec![4],
            "one trial at a time"
        );
        // Over half the budget now: no trial either.
        let busy = estimate(&sample(40_000, 1_000), 5.0, 0.0).unwrap();
        assert!(choose_widening(Some(&busy), &n).is_empty());
        // The sites left on got 10x quieter: the site is predicted to have
        // too, and comes back.
        let quiet = estimate(&sample(1_000, 1_000), 5.0, 0.0).unwrap();
        let n = [narrowed(4, 40_000.0, HOLD_MS)];
        assert_eq!(choose_widening(Some(&quiet), &n), vec![4]);
    }

    #[test]
    fn widening_brings_the_coldest_back_first_and_stops_at_the_margin() {
        let e = estimate(&sample(10_000, 1_000), 5.0, 0.0).unwrap();
        let n = [
            narrowed(1, 20_000.0, HOLD_MS),
            narrowed(2, 1_000.0, HOLD_MS),
            narrowed(3, 100_000.0, HOLD_MS),
        ];
        assert_eq!(choose_widening(Some(&e), &n), vec![2, 1]);
        // Idle (nothing measured on what is left): back once held.
        assert_eq!(choose_widening(None, &n), vec![1, 2, 3]);
    }

    #[test]
    fn hold_doubles_with_each_narrowing_up_to_a_limit() {
        assert_eq!(hold_ms(1), HOLD_MS);
        assert_eq!(hold_ms(2), 2 * HOLD_MS);
        assert_eq!(hold_ms(3), 4 * HOLD_MS);
        assert_eq!(hold_ms(40), MAX_HOLD_MS);
    }

    #[test]
    fn stat_cpu_time_reads_utime_and_stime() {
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat_cpu_ns(line, 100), Some(3_000_000_000));
    }
}
