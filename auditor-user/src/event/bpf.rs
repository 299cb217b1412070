//! bpf(2) events: a call on a BPF map, decoded and enriched, and the alerts
//! the BPF map policy raises.

use serde::{Deserialize, Serialize};

/// `cmd` of the lifecycle record for a map whose id vanished.
pub const MAP_DESTROYED: &str = "map_destroyed";

/// A bpf(2) call on a map, decoded and enriched. JSON `kind` is `bpf_map`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfMapEvent {
    /// Unix-epoch nanoseconds at syscall enter.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: String,
    /// Executable path as the kernel saw it at the call (empty when the
    /// task had no mm, e.g. for `map_destroyed`).
    pub exe: String,
    /// Lower-case command without `BPF_` (`map_update_elem`), or
    /// [`MAP_DESTROYED`].
    pub cmd: String,
    /// 0 when the call named no map (bad fd, failed create).
    pub map_id: u32,
    pub map_name: String,
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    /// The command's flags field (see `AttrView::flags` in `crate::bpf::attr`).
    pub flags: u64,
    /// Batches: elements the kernel processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_count: Option<u32>,
    /// The map fd passed in, or the one returned by create/get commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<u32>,
    /// OBJ_PIN / OBJ_GET path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `ok` or the errno name (`EBADF`).
    pub result: String,
    /// Raw syscall return value.
    pub ret: i64,
    /// Enter to exit.
    pub latency_ns: u64,
    /// Another thread's mutating call was inside this map at enter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrent_with: Option<ConcurrentWriter>,
}

/// The writer already inside a map when a mutating call entered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrentWriter {
    pub pid: u32,
    pub tid: u32,
    pub cmd: String,
    /// How long that writer had been inside when this call entered.
    pub inside_ns: u64,
}

impl BpfMapEvent {
    /// Whether this is a call that changes the map or freezes it.
    pub fn is_write(&self) -> bool {
        matches!(
            self.cmd.as_str(),
            "map_update_elem"
                | "map_delete_elem"
                | "map_lookup_and_delete_elem"
                | "map_update_batch"
                | "map_delete_batch"
                | "map_lookup_and_delete_batch"
                | "map_freeze"
        )
    }

    pub fn ok(&self) -> bool {
        self.ret >= 0
    }
}

/// Which rule an alert comes from. JSON: snake_case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRule {
    /// A guarded map was written, deleted from or frozen by a process that
    /// is neither its creator nor an allowed executable.
    GuardedMapWrite,
    /// Two threads were inside mutating calls on one map at once (reported
    /// once per map and pair of processes; every such call carries
    /// `concurrent_with`).
    ConcurrentWriters,
    /// A second process wrote a map (reported once per map).
    MultiProcessWriters,
}

/// A finding. JSON `kind` is `alert`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub ts_ns: u64,
    pub rule: AlertRule,
    pub map_id: u32,
    pub map_name: String,
    /// The process that triggered the alert.
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub exe: String,
    pub cmd: String,
    pub result: String,
    /// The other party (concurrent writer, earlier writer, or creator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_cmd: Option<String>,
    /// One readable sentence.
    pub message: String,
}
