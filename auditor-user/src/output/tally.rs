//! Findings of a live session grouped into races: one group per map, pair
//! of call sites and pair of operations, whichever side came first. The
//! live text log prints a group's first overlap in full and counts the
//! rest; the summary lists every group with its count and time span.

use std::collections::HashMap;

use crate::event::{FindingGroup, Overlap, OverlapParty};

/// `function (file:line)` of one side, the way the live log names it.
pub fn site_name(p: &OverlapParty) -> String {
    if p.file.is_empty() {
        p.function.clone()
    } else {
        let short = p.file.rsplit('/').next().unwrap_or(&p.file);
        format!("{} ({short}:{})", p.function, p.line)
    }
}

type Key = (u64, [String; 2], [String; 2]);

/// The races seen so far, in the order they were first seen.
#[derive(Default)]
pub struct FindingTally {
    index: HashMap<Key, usize>,
    groups: Vec<FindingGroup>,
}

impl FindingTally {
    /// Count `o`; true when it starts a new group (a race not seen before).
    pub fn note(&mut self, o: &Overlap) -> bool {
        let mut sides = [
            (site_name(&o.first), o.first.op.as_str().to_string()),
            (site_name(&o.second), o.second.op.as_str().to_string()),
        ];
        sides.sort();
        let [(s0, o0), (s1, o1)] = sides;
        let key = (o.map, [s0, s1], [o0, o1]);
        if let Some(&i) = self.index.get(&key) {
            let g = &mut self.groups[i];
            g.count += 1 + o.suppressed;
            g.first_ts_ns = g.first_ts_ns.min(o.ts_ns);
            g.last_ts_ns = g.last_ts_ns.max(o.ts_ns);
            if g.map_global.is_none() {
                g.map_global.clone_from(&o.map_global);
            }
            return false;
        }
        self.index.insert(key.clone(), self.groups.len());
        self.groups.push(FindingGroup {
            map: key.0,
            map_global: o.map_global.clone(),
            sites: key.1,
            ops: key.2,
            // Identical overlaps the kernel held back are instances too.
            count: 1 + o.suppressed,
            first_ts_ns: o.ts_ns,
            last_ts_ns: o.ts_ns,
        });
        true
    }

    /// Every group, most frequent first (first seen first among equals).
    pub fn groups(&self) -> Vec<FindingGroup> {
        let mut g = self.groups.clone();
        g.sort_by_key(|g| std::cmp::Reverse(g.count));
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DetectionMode;
    use auditor_common::go_map::MapOp;

    fn party(function: &str, line: u32, op: MapOp, goid: u64) -> OverlapParty {
        OverlapParty {
            ts_ns: 0,
            goid,
            tid: 1,
            op,
            runtime_fn: "runtime.mapassign".into(),
            function: function.into(),
            file: "/src/main.go".into(),
            line,
            stack: vec![],
        }
    }

    fn overlap(ts: u64, first: OverlapParty, second: OverlapParty) -> Overlap {
        Overlap {
            ts_ns: ts,
            pid: 7,
            map: 0xc000,
            map_gen: 1,
            detection: DetectionMode::Interval,
            first,
            second,
            suppressed: 0,
            map_type: None,
            map_global: None,
        }
    }

    #[test]
    fn a_while_b_and_b_while_a_are_one_race() {
        let mut t = FindingTally::default();
        let a = || party("main.writerA", 10, MapOp::Write, 5);
        let b = || party("main.reader", 20, MapOp::Read, 6);
        assert!(t.note(&overlap(100, a(), b())));
        assert!(!t.note(&overlap(300, b(), a())));
        assert!(!t.note(&overlap(200, a(), b())));
        // Same sites, other operations: another race.
        assert!(t.note(&overlap(
            400,
            party("main.writerA", 10, MapOp::Write, 5),
            party("main.reader", 20, MapOp::Iterate, 6)
        )));
        let g = t.groups();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].count, 3);
        assert_eq!((g[0].first_ts_ns, g[0].last_ts_ns), (100, 300));
        assert_eq!(
            g[0].sites,
            [
                "main.reader (main.go:20)".to_string(),
                "main.writerA (main.go:10)".into()
            ]
        );
        assert_eq!(g[0].ops, ["read".to_string(), "write".into()]);
    }

    #[test]
    fn overlaps_held_back_by_the_kernel_are_counted() {
        let mut t = FindingTally::default();
        let mut o = overlap(
            100,
            party("main.writerA", 10, MapOp::Write, 5),
            party("main.reader", 20, MapOp::Read, 6),
        );
        o.suppressed = 4;
        assert!(t.note(&o));
        o.suppressed = 0;
        assert!(!t.note(&o));
        assert_eq!(t.groups()[0].count, 6);
    }
}
