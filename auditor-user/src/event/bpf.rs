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
    /// Real uid.
    pub uid: u32,
    /// Effective uid (calls a guard judges: writes, creates, programs, mmaps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub euid: Option<u32>,
    /// Effective capabilities that matter for BPF (`CAP_BPF`,
    /// `CAP_SYS_ADMIN`, `CAP_PERFMON`, `CAP_NET_ADMIN`), when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    pub comm: String,
    /// Executable path from `/proc/PID/exe` (empty when it could not be
    /// read, e.g. the process already exited, or for `map_destroyed`).
    pub exe: String,
    /// `/proc/PID/exe` could not be read: `exe` is empty or was learnt
    /// from an earlier call of the same executable (same device and inode).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exe_unread: bool,
    /// Device (`major:minor`) and inode of the executable, read in the
    /// kernel at the call (calls a guard judges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_ino: Option<u64>,
    /// With `--verify-hash`, for callers whose executable has an allowed
    /// identity: the SHA-256 (hex) of what the process runs, taken when it
    /// was first seen, or `unreadable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_sha256: Option<String>,
    /// Lower-case command without `BPF_` (`map_update_elem`), `mmap` for a
    /// writable shared mapping of a map, or [`MAP_DESTROYED`].
    pub cmd: String,
    /// Made through the 32-bit (`int $0x80`) entry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compat: bool,
    /// 0 when the call named no map (bad fd, non-map fd, unreadable attr,
    /// failed create, program commands).
    pub map_id: u32,
    pub map_name: String,
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    /// The command's flags field (see [`attr::AttrView::flags`]); for
    /// `mmap`, the mmap flags.
    pub flags: u64,
    /// Batches: elements the kernel processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_count: Option<u32>,
    /// The fd passed in (signed, as the caller passed it), or the one
    /// returned by create/get/load commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// OBJ_PIN / OBJ_GET path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Program commands (`prog_load`, `prog_test_run`, `link_create`, ...):
    /// the program's id and every map it references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prog_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prog_maps: Vec<ProgMap>,
    /// The program references more maps than the record holds (8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prog_maps_total: Option<u32>,
    /// `ok` or the errno name (`EBADF`); `unknown` when the call's exit was
    /// lost.
    pub result: String,
    /// Raw syscall return value.
    pub ret: i64,
    /// Enter to exit; absent for plain reads, which are recorded at exit
    /// alone (`ts_ns` is then the exit time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ns: Option<u64>,
    /// Another thread's mutating call was inside this map at enter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrent_with: Option<ConcurrentWriter>,
}

/// A map a program references.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgMap {
    pub id: u32,
    /// Empty when the map was already gone when the event was decoded.
    pub name: String,
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
    /// Whether this call changes the map, freezes it, or maps it writable.
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
                | "mmap"
        )
    }

    pub fn ok(&self) -> bool {
        self.ret >= 0
    }

    /// A map command whose fd named no map (bad fd, a pipe, a program)
    /// or whose attr could not be read (no fd at all): counted as an
    /// unresolved fd.
    pub fn unresolved_fd(&self) -> bool {
        self.map_id == 0 && map_only_name(&self.cmd)
    }
}

fn map_only_name(c: &str) -> bool {
    c.starts_with("map_") && !matches!(c, "map_create" | "map_get_fd_by_id" | MAP_DESTROYED)
        || c == "mmap"
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
    /// A process that may not write a guarded map loaded, ran, attached or
    /// linked a BPF program that references it (such a program can write
    /// the map from inside the kernel, out of sight of bpf(2)).
    GuardedMapProgram,
    /// The map pinned at a guarded pin path changed (e.g. another map was
    /// moved there): the new map is guarded from now on.
    GuardedPinChanged,
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
    /// The rights the call was made with (see [`BpfMapEvent`]).
    #[serde(default)]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub euid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_ino: Option<u64>,
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
