//! The kernel's access counts (`GO_ACCESS_COUNTS`), drained epoch by epoch.
//!
//! New counts go to the epoch in `GO_ACCESS_EPOCH`. To drain, the epoch is
//! flipped, programs that read the old value are given time to finish
//! (a probe hit lasts microseconds; the wait is [`QUIESCE`]), and only then
//! are the old epoch's entries read and deleted: an entry is never read
//! while a program can still add to it, so no count falls between a read
//! and a delete.

use std::time::Duration;

use auditor_common::go_map::{ACCESS_COUNTS_MAP, ACCESS_EPOCH_MAP, AccessCount, AccessCountKey};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};

use super::ProbeError;

/// How long a flip waits for hits still counting into the old epoch.
pub const QUIESCE: Duration = Duration::from_millis(2);

/// The count table and its epoch, owned.
pub struct AccessCountTable {
    counts: HashMap<MapData, AccessCountKey, AccessCount>,
    epoch_slot: Array<MapData, u32>,
    epoch: u32,
}

impl AccessCountTable {
    /// Take both maps out of `ebpf`.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let epoch_slot: Array<MapData, u32> = super::take_map(ebpf, ACCESS_EPOCH_MAP)?;
        let epoch = epoch_slot.get(&0, 0).unwrap_or(0) & 1;
        Ok(Self {
            counts: super::take_map(ebpf, ACCESS_COUNTS_MAP)?,
            epoch_slot,
            epoch,
        })
    }

    /// Flip the epoch and return what the previous one counted, removed
    /// from the kernel.
    pub fn drain(&mut self) -> Vec<(AccessCountKey, AccessCount)> {
        let old = self.epoch;
        let new = old ^ 1;
        if self.epoch_slot.set(0, new, 0).is_err() {
            // Cannot flip: nothing is quiescent, read nothing rather than
            // race the kernel.
            return Vec::new();
        }
        self.epoch = new;
        std::thread::sleep(QUIESCE);
        self.take_where(|k| u32::from(k.epoch) == old)
    }

    /// Everything counted for `pid`, in either epoch, removed: for a target
    /// whose probes are gone (nothing adds to its entries any more).
    pub fn drain_pid(&mut self, pid: u32) -> Vec<(AccessCountKey, AccessCount)> {
        self.take_where(|k| k.pid == pid)
    }

    fn take_where(
        &mut self,
        pick: impl Fn(&AccessCountKey) -> bool,
    ) -> Vec<(AccessCountKey, AccessCount)> {
        let out: Vec<_> = self
            .counts
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| pick(k))
            .collect();
        for (k, _) in &out {
            let _ = self.counts.remove(k);
        }
        out
    }
}
