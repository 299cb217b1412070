//! The kernel's per-CPU counters ([`auditor_common::Counter`]), summed.

use auditor_common::{COUNTER_COUNT, COUNTERS_MAP, Counter};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};

use super::ProbeError;

/// A handle on the counter array.
pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
}

/// One reading of every counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot(pub [u64; COUNTER_COUNT as usize]);

impl CounterSnapshot {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }
}

impl KernelCounters {
    /// Take the counter map out of `ebpf`.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        Ok(Self {
            map: super::take_map(ebpf, COUNTERS_MAP)?,
        })
    }

    /// Sum every counter over all CPUs.
    pub fn read(&self) -> CounterSnapshot {
        let mut snap = CounterSnapshot::default();
        for (i, slot) in snap.0.iter_mut().enumerate() {
            if let Ok(values) = self.map.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        snap
    }
}
