//! Kernel counters whose increase means records were lost, and how each
//! loss is named in a `lost` event (`lost.what`, docs/events.md). One table
//! per audit; one tracker turns a table into "how many since last time".

use auditor_common::Counter;

use crate::{event::Lost, probe::counters::CounterSnapshot};

/// A kernel counter that counts losses, and the `lost.what` it reports as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossCounter {
    pub counter: Counter,
    pub what: &'static str,
}

const fn loss(counter: Counter, what: &'static str) -> LossCounter {
    LossCounter { counter, what }
}

/// Losses of the Go audit.
pub const GO_LOSSES: [LossCounter; 7] = [
    loss(Counter::GoAccessDropped, "access"),
    loss(Counter::GoAccessCountsFull, "access_count"),
    loss(Counter::GoOverlapDropped, "overlap"),
    loss(Counter::GoStateFull, "map_state"),
    loss(Counter::GoSlotsFull, "interval_slot"),
    loss(Counter::GoReadFailed, "unreadable"),
    loss(Counter::GoCurrentLost, "exit_decision"),
];

/// Losses of the bpf(2) audit.
pub const BPF_LOSSES: [LossCounter; 3] = [
    loss(Counter::BpfSyscallDropped, "bpf_map"),
    loss(Counter::BpfSlotShared, "bpf_slot_shared"),
    loss(Counter::BpfWriterStateFull, "bpf_writer_state"),
];

/// What a table's counters grew by since the previous reading.
#[derive(Clone, Debug)]
pub struct LossTracker {
    table: &'static [LossCounter],
    seen: Vec<u64>,
}

/// One counter that grew: by `count`, to `total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossDelta {
    pub loss: LossCounter,
    pub count: u64,
    pub total: u64,
}

impl LossTracker {
    pub fn new(table: &'static [LossCounter]) -> Self {
        Self {
            table,
            seen: vec![0; table.len()],
        }
    }

    pub fn table(&self) -> &'static [LossCounter] {
        self.table
    }

    /// Sum of the table's counters in `snap`.
    pub fn total(&self, snap: &CounterSnapshot) -> u64 {
        self.table.iter().map(|l| snap.get(l.counter)).sum()
    }

    /// Counters that grew since the previous call, remembering `snap`.
    pub fn deltas(&mut self, snap: &CounterSnapshot) -> Vec<LossDelta> {
        let mut out = Vec::new();
        for (loss, seen) in self.table.iter().zip(&mut self.seen) {
            let total = snap.get(loss.counter);
            if total > *seen {
                out.push(LossDelta {
                    loss: *loss,
                    count: total - *seen,
                    total,
                });
            }
            *seen = total;
        }
        out
    }

    /// Losses since the previous call as `lost` events of process `pid`
    /// (0: not one process's).
    pub fn lost_events(&mut self, snap: &CounterSnapshot, pid: u32, ts_ns: u64) -> Vec<Lost> {
        self.deltas(snap)
            .into_iter()
            .map(|d| Lost {
                ts_ns,
                pid,
                what: d.loss.what.into(),
                count: d.count,
                total: d.total,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(values: &[(Counter, u64)]) -> CounterSnapshot {
        let mut s = CounterSnapshot::default();
        for &(c, v) in values {
            s.0[c as usize] = v;
        }
        s
    }

    #[test]
    fn each_loss_is_reported_once_with_its_running_total() {
        let mut t = LossTracker::new(&BPF_LOSSES);
        assert!(t.lost_events(&snap(&[]), 0, 1).is_empty());
        let first = t.lost_events(&snap(&[(Counter::BpfSlotShared, 3)]), 0, 2);
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].what.as_str(), first[0].count, first[0].total),
            ("bpf_slot_shared", 3, 3)
        );
        let again = t.lost_events(&snap(&[(Counter::BpfSlotShared, 3)]), 0, 3);
        assert!(again.is_empty());
        let more = t.lost_events(&snap(&[(Counter::BpfSlotShared, 5)]), 0, 4);
        assert_eq!((more[0].count, more[0].total), (2, 5));
    }

    #[test]
    fn counters_outside_the_table_are_not_losses() {
        let mut t = LossTracker::new(&GO_LOSSES);
        let s = snap(&[(Counter::GoProbeHits, 100), (Counter::BpfSyscallDropped, 4)]);
        assert!(t.deltas(&s).is_empty());
        assert_eq!(t.total(&s), 0);
        let s = snap(&[(Counter::GoStateFull, 2), (Counter::GoAccessDropped, 1)]);
        let whats: Vec<_> = t.deltas(&s).iter().map(|d| d.loss.what).collect();
        assert_eq!(whats, ["access", "map_state"]);
        assert_eq!(t.total(&s), 3);
    }
}
