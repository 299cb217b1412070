//! Repeated overlaps in the daemon's log: a race that keeps happening is
//! logged once in full, then its repeats are counted and written as one
//! `overlap` line (the latest instance, `suppressed` = the instances it
//! stands for besides itself) at most once per [`REPEAT_INTERVAL`] per race.
//! A race is a map and its two (call site, operation) sides, whichever was
//! inside first — the grouping `report` and the live log use — so a
//! reader of the log, `tail` or `report` counts every instance
//! (`1 + suppressed` per line) and reads a bounded number of lines.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::event::{Overlap, OverlapParty};

/// Least time between two lines of one race.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Races remembered at once; past this a race's instances are logged in
/// full (nothing is lost, the log is just less compact).
const MAX_RACES: usize = 4096;

/// (pid, map, generation, the two sides as (function, file, line, op), sorted).
type RaceKey = (u32, u64, u32, [(String, String, u32, u8); 2]);

fn side(p: &OverlapParty) -> (String, String, u32, u8) {
    (p.function.clone(), p.file.clone(), p.line, p.op as u8)
}

fn race_key(o: &Overlap) -> RaceKey {
    let mut sides = [side(&o.first), side(&o.second)];
    sides.sort();
    (o.pid, o.map, o.map_gen, sides)
}

struct Race {
    /// When its last line was logged.
    logged_at: Instant,
    /// The latest instance not logged yet, and how many it stands for.
    held: Option<(Overlap, u64)>,
}

/// The races the log has seen, with the repeats not logged yet.
#[derive(Default)]
pub struct RepeatedOverlaps {
    races: HashMap<RaceKey, Race>,
    /// Instances held back so far (counted in lines logged later).
    pub held_total: u64,
}

impl RepeatedOverlaps {
    /// `o` if it is to be logged now: the first of its race, or the first
    /// after a quiet [`REPEAT_INTERVAL`]. Otherwise it is held and counted.
    pub fn note(&mut self, o: Overlap, now: Instant) -> Option<Overlap> {
        let key = race_key(&o);
        let Some(race) = self.races.get_mut(&key) else {
            if self.races.len() < MAX_RACES {
                self.races.insert(
                    key,
                    Race {
                        logged_at: now,
                        held: None,
                    },
                );
            }
            return Some(o);
        };
        if race.held.is_none() && now.duration_since(race.logged_at) >= REPEAT_INTERVAL {
            race.logged_at = now;
            return Some(o);
        }
        let n = 1 + o.suppressed;
        self.held_total += n;
        race.held = Some(match race.held.take() {
            Some((_, before)) => (o, before + n),
            None => (o, n),
        });
        None
    }

    /// Lines for the races whose repeats have waited [`REPEAT_INTERVAL`].
    pub fn due(&mut self, now: Instant) -> Vec<Overlap> {
        let mut out = Vec::new();
        for race in self.races.values_mut() {
            if race.held.is_some() && now.duration_since(race.logged_at) >= REPEAT_INTERVAL {
                race.logged_at = now;
                out.extend(race.held.take().map(summed));
            }
        }
        out.sort_by_key(|o| o.ts_ns);
        out
    }

    /// Every held line of `pid`, whose races are then forgotten (the target
    /// is gone or detached).
    pub fn flush_pid(&mut self, pid: u32) -> Vec<Overlap> {
        let mut out = Vec::new();
        self.races.retain(|k, race| {
            if k.0 != pid {
                return true;
            }
            out.extend(race.held.take().map(summed));
            false
        });
        out.sort_by_key(|o| o.ts_ns);
        out
    }
}

/// The held instance standing for `n` instances.
fn summed((mut o, n): (Overlap, u64)) -> Overlap {
    o.suppressed = n - 1;
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DetectionMode;
    use auditor_common::go_map::MapOp;

    fn party(function: &str, line: u32, op: MapOp) -> OverlapParty {
        OverlapParty {
            ts_ns: 0,
            goid: 1,
            tid: 1,
            op,
            runtime_fn: "runtime.mapassign".into(),
            function: function.into(),
            file: "/src/main.go".into(),
            line,
            stack: vec![],
        }
    }

    fn overlap(ts: u64, swap: bool, suppressed: u64) -> Overlap {
        let (a, b) = (
            party("main.writerA", 10, MapOp::Write),
            party("main.writerB", 20, MapOp::Write),
        );
        let (first, second) = if swap { (b, a) } else { (a, b) };
        Overlap {
            ts_ns: ts,
            pid: 7,
            map: 0xc000,
            map_gen: 0,
            detection: DetectionMode::Interval,
            first,
            second,
            suppressed,
            map_type: None,
            map_global: None,
        }
    }

    #[test]
    fn a_race_is_logged_once_then_its_repeats_as_one_counted_line() {
        let t0 = Instant::now();
        let mut r = RepeatedOverlaps::default();
        assert!(r.note(overlap(1, false, 0), t0).is_some());
        // Repeats, either way round, some carrying the kernel's own count.
        for i in 0..200u64 {
            assert!(r.note(overlap(2 + i, i % 2 == 1, 0), t0).is_none());
        }
        assert!(r.note(overlap(300, false, 4), t0).is_none());
        assert!(
            r.due(t0 + Duration::from_secs(1)).is_empty(),
            "rate-limited"
        );
        let lines = r.due(t0 + REPEAT_INTERVAL);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].ts_ns, 300, "the latest instance");
        assert_eq!(1 + lines[0].suppressed, 205);
        assert_eq!(r.held_total, 205);
        assert!(r.due(t0 + REPEAT_INTERVAL * 3).is_empty(), "nothing left");
    }

    #[test]
    fn a_target_that_ends_flushes_its_held_repeats() {
        let t0 = Instant::now();
        let mut r = RepeatedOverlaps::default();
        assert!(r.note(overlap(1, false, 0), t0).is_some());
        assert!(r.note(overlap(2, true, 0), t0).is_none());
        assert!(r.flush_pid(8).is_empty());
        let lines = r.flush_pid(7);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].suppressed, 0, "one instance");
        // Forgotten: the next instance is logged in full.
        assert!(r.note(overlap(3, false, 0), t0).is_some());
    }

    #[test]
    fn after_a_quiet_interval_the_next_instance_is_logged_at_once() {
        let t0 = Instant::now();
        let mut r = RepeatedOverlaps::default();
        assert!(r.note(overlap(1, false, 0), t0).is_some());
        assert!(
            r.note(overlap(2, false, 0), t0 + Duration::from_secs(1))
                .is_none()
        );
        let t1 = t0 + REPEAT_INTERVAL;
        assert_eq!(r.due(t1).len(), 1);
        assert!(r.note(overlap(3, false, 0), t1 + REPEAT_INTERVAL).is_some());
    }
}
