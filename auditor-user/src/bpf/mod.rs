//! bpf(2) syscall auditing: who touched which BPF map.

use serde::{Deserialize, Serialize};

/// A bpf(2) call on a map, decoded and enriched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfMapEvent {
    pub ts_ns: u64,
    pub pid: u32,
    pub cmd: String,
    pub map_id: u32,
}
