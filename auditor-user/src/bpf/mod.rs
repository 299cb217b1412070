//! bpf(2) syscall auditing: who touched which BPF map.
//!
//! - [`btf`]: kernel struct offsets from the running kernel's BTF.
//! - [`session`]: loading and calibrating the tracepoint programs.
//! - [`attr`], [`names`]: pure decoding of raw records.
//! - [`policy`]: process→map edges, concurrent and multiple writers, guards.
//! - [`lifecycle`]: map ids that vanish (no tracepoint fires on map free).
//! - [`run`]: the `map-auditor bpf` command.
//!
//! The map behind an fd is resolved inside the kernel at syscall time (see
//! auditor-ebpf's `bpf_syscall.rs`), so one-shot tools that close their fd
//! and exit at once are still attributed to the right map id.

pub mod attr;
pub mod btf;
pub mod engine;
pub mod exe;
pub mod lifecycle;
pub mod names;
pub mod policy;
pub mod render;
mod run;
pub mod session;
pub mod sys;

use auditor_common::bpf_syscall::{BpfSyscallEvent, cmd, resolved};

use crate::pipeline::clock::WallClock;

pub use crate::event::bpf::{
    Alert, AlertRule, BpfMapEvent, ConcurrentWriter, MAP_DESTROYED, ProgMap,
};
pub use engine::{BpfEngine, BpfSettings, POLL_EVERY};
pub use policy::{BpfMapGraph, MapEdge};
pub use run::run;

/// Capability bits that matter for BPF, by name.
const CAPS: [(u32, &str); 4] = [
    (21, "CAP_SYS_ADMIN"),
    (39, "CAP_BPF"),
    (38, "CAP_PERFMON"),
    (12, "CAP_NET_ADMIN"),
];

/// The names of the BPF-relevant capabilities set in `cap_effective`.
pub fn cap_names(cap_effective: u64) -> Vec<String> {
    CAPS.iter()
        .filter(|(bit, _)| cap_effective & (1u64 << bit) != 0)
        .map(|(_, n)| (*n).to_string())
        .collect()
}

/// Whether a kernel record should become an event: `obj_pin`, `obj_get` and
/// `obj_get_info_by_fd` also serve programs, links and BTF objects, which
/// are not audited; a non-map fd passed to a map-only command is.
pub fn is_audited_record(raw: &BpfSyscallEvent) -> bool {
    raw.resolved & resolved::NOT_A_MAP == 0
        || cmd::map_only(raw.cmd)
        || cmd::takes_prog(raw.cmd)
        || raw.cmd == cmd::PROG_LOAD
}

/// Turn a kernel record into an event (pure; `exe` and map names of
/// programs are filled in by the engine).
pub fn from_raw(raw: &BpfSyscallEvent, clock: &WallClock) -> BpfMapEvent {
    // attr_len comes from the record; never trust it past the array.
    let attr_len = (raw.attr_len as usize).min(raw.attr.len());
    let view = attr::parse_attr(raw.cmd, &raw.attr[..attr_len], raw.attr_size);
    let creds = raw.resolved & resolved::CREDS != 0;
    let has_exe = creds && raw.resolved & resolved::NO_EXE == 0;
    let mut ev = BpfMapEvent {
        ts_ns: clock.to_unix_ns(raw.header.ts_ns),
        pid: raw.header.pid,
        tid: raw.header.tid,
        uid: raw.uid,
        euid: creds.then_some(raw.euid),
        caps: creds.then(|| cap_names(raw.cap_effective)),
        comm: attr::c_str(&raw.comm),
        exe_dev: has_exe.then(|| {
            let (major, minor) = exe::kernel_dev(raw.exe_dev);
            format!("{major}:{minor}")
        }),
        exe_ino: has_exe.then_some(raw.exe_ino),
        cmd: names::cmd_name(raw.cmd),
        compat: raw.resolved & resolved::COMPAT != 0,
        flags: view.flags,
        batch_count: view.batch_count,
        fd: (cmd::fd_offset(raw.cmd).is_some() && raw.attr_len != 0).then_some(raw.fd),
        result: names::result_name(raw.ret),
        ret: raw.ret,
        latency_ns: (raw.resolved & resolved::AT_EXIT == 0).then_some(raw.latency_ns),
        ..BpfMapEvent::default()
    };
    if raw.cmd == cmd::MMAP {
        ev.fd = Some(raw.fd);
    }
    if (cmd::returns_fd(raw.cmd) || raw.cmd == cmd::PROG_LOAD) && raw.ret >= 0 {
        ev.fd = Some(raw.ret as i32);
    }
    if raw.cmd == cmd::OBJ_PIN || raw.cmd == cmd::OBJ_GET {
        ev.path = Some(attr::c_str(&raw.path));
    }
    if raw.resolved & resolved::PROG != 0 {
        let p = &raw.prog;
        ev.prog_id = Some(p.prog_id);
        let n = (p.map_cnt as usize).min(p.map_ids.len());
        ev.prog_maps = p.map_ids[..n]
            .iter()
            .map(|&id| ProgMap {
                id,
                name: String::new(),
            })
            .collect();
        if p.map_cnt as usize > p.map_ids.len() {
            ev.prog_maps_total = Some(p.map_cnt);
        }
    }
    let m = &raw.map;
    if m.id != 0 {
        ev.map_id = m.id;
        ev.map_name = attr::c_str(&m.name);
        ev.map_type = names::map_type_name(m.map_type);
        ev.key_size = m.key_size;
        ev.value_size = m.value_size;
        ev.max_entries = m.max_entries;
        ev.map_flags = m.map_flags;
    } else if let Some(c) = view.create {
        // A failed MAP_CREATE: show what was asked for.
        ev.map_name = c.name;
        ev.map_type = names::map_type_name(c.map_type);
        ev.key_size = c.key_size;
        ev.value_size = c.value_size;
        ev.max_entries = c.max_entries;
        ev.map_flags = c.map_flags;
    } else if let Some(id) = view.map_id {
        // A failed MAP_GET_FD_BY_ID: the id asked for.
        ev.map_id = id;
    }
    if raw.resolved & resolved::CONCURRENT_WRITER != 0 {
        ev.concurrent_with = Some(ConcurrentWriter {
            pid: raw.other.pid,
            tid: raw.other.tid,
            cmd: names::cmd_name(raw.other.cmd),
            inside_ns: raw.header.ts_ns.saturating_sub(raw.other.ts_ns),
        });
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditor_common::{
        EventHeader, EventKind,
        bpf_syscall::{ATTR_BYTES, MapIdentity, PATH_BYTES, ProgMaps, WriterSlot},
    };

    fn raw(c: u32, ret: i64) -> BpfSyscallEvent {
        let mut name = [0u8; 16];
        name[..4].copy_from_slice(b"demo");
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"bpftool");
        BpfSyscallEvent {
            header: EventHeader {
                kind: EventKind::BpfSyscall as u32,
                cpu: 0,
                ts_ns: 1000,
                pid: 5,
                tid: 6,
            },
            cmd: c,
            uid: 0,
            euid: 0,
            cap_effective: 1 << 21,
            exe_dev: (8 << 20) | 1,
            fd: 3,
            exe_ino: 77,
            ret,
            latency_ns: 300,
            resolved: resolved::ENTER_FD | resolved::CREDS,
            map: MapIdentity {
                id: 42,
                map_type: 1,
                key_size: 4,
                value_size: 4,
                max_entries: 8,
                map_flags: 0,
                name,
            },
            other: WriterSlot::default(),
            prog: ProgMaps::default(),
            attr: [0; ATTR_BYTES],
            attr_size: 32,
            attr_len: ATTR_BYTES as u32,
            comm,
            path: [0; PATH_BYTES],
        }
    }

    #[test]
    fn update_record_becomes_a_bpf_map_event_with_documented_json() {
        let ev = from_raw(&raw(cmd::MAP_UPDATE_ELEM, 0), &WallClock::new());
        let v = serde_json::to_value(crate::event::AuditEvent::BpfMap(ev)).unwrap();
        assert_eq!(v["kind"], "bpf_map");
        assert_eq!(v["cmd"], "map_update_elem");
        assert_eq!(v["map_id"], 42);
        assert_eq!(v["map_name"], "demo");
        assert_eq!(v["map_type"], "hash");
        assert_eq!(v["comm"], "bpftool");
        assert_eq!(v["exe_dev"], "8:1");
        assert_eq!(v["exe_ino"], 77);
        assert_eq!(v["euid"], 0);
        assert_eq!(v["caps"], serde_json::json!(["CAP_SYS_ADMIN"]));
        assert_eq!(v["result"], "ok");
        assert_eq!(v["pid"], 5);
        assert!(v.get("concurrent_with").is_none());
        assert!(v.get("compat").is_none());
        assert_eq!(v["latency_ns"], 300);
    }

    #[test]
    fn read_recorded_at_exit_alone_has_no_latency() {
        let mut r = raw(cmd::MAP_LOOKUP_ELEM, 0);
        r.resolved = resolved::ENTER_FD | resolved::AT_EXIT;
        r.latency_ns = 0;
        let ev = from_raw(&r, &WallClock::new());
        assert_eq!(ev.latency_ns, None);
        assert_eq!(ev.map_id, 42);
        let v = serde_json::to_value(&ev).unwrap();
        assert!(v.get("latency_ns").is_none(), "{v}");
        let line = crate::bpf::render::event_line(&ev);
        assert!(line.split_whitespace().any(|w| w == "-"), "{line}");
    }

    #[test]
    fn negative_fd_stays_negative() {
        let mut r = raw(cmd::MAP_UPDATE_ELEM, -(libc::EBADF as i64));
        r.map = MapIdentity::default();
        r.attr[..4].copy_from_slice(&(-1i32).to_ne_bytes());
        r.fd = -1;
        let ev = from_raw(&r, &WallClock::new());
        assert_eq!(ev.fd, Some(-1));
        assert!(ev.unresolved_fd());
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["fd"], -1);
    }

    #[test]
    fn program_records_list_their_maps_and_say_when_cut() {
        let mut r = raw(cmd::PROG_TEST_RUN, 0);
        r.map = MapIdentity::default();
        r.resolved = resolved::NOT_A_MAP | resolved::PROG | resolved::CREDS;
        r.prog = ProgMaps {
            prog_id: 9,
            map_cnt: 10,
            map_ids: [1, 2, 3, 4, 5, 6, 7, 8],
        };
        assert!(is_audited_record(&r));
        let ev = from_raw(&r, &WallClock::new());
        assert_eq!(ev.prog_id, Some(9));
        assert_eq!(ev.prog_maps.len(), 8);
        assert_eq!(ev.prog_maps_total, Some(10));
        assert_eq!(ev.map_id, 0);
        assert!(!ev.unresolved_fd());
    }

    #[test]
    fn pins_of_programs_are_left_out_but_map_commands_on_them_are_not() {
        let mut r = raw(cmd::OBJ_PIN, 0);
        r.resolved = resolved::NOT_A_MAP;
        assert!(!is_audited_record(&r));
        r.cmd = cmd::MAP_UPDATE_ELEM;
        assert!(is_audited_record(&r));
    }

    #[test]
    fn failed_call_carries_errno_name() {
        let mut r = raw(cmd::MAP_UPDATE_ELEM, -(libc::EBADF as i64));
        r.map = MapIdentity::default();
        let ev = from_raw(&r, &WallClock::new());
        assert_eq!(ev.result, "EBADF");
        assert_eq!(ev.map_id, 0);
    }

    #[test]
    fn attr_len_past_the_copied_bytes_is_clamped_not_a_panic() {
        // Found by fuzzing: a record whose attr_len exceeds ATTR_BYTES.
        let mut r = raw(cmd::MAP_UPDATE_ELEM, 0);
        r.attr[..4].copy_from_slice(&3u32.to_ne_bytes());
        r.attr_len = u32::MAX;
        assert_eq!(from_raw(&r, &WallClock::new()).fd, Some(3));
    }

    #[test]
    fn concurrent_writer_is_named() {
        let mut r = raw(cmd::MAP_DELETE_ELEM, 0);
        r.resolved |= resolved::CONCURRENT_WRITER;
        r.other = WriterSlot {
            ts_ns: 900,
            pid: 9,
            tid: 10,
            cmd: cmd::MAP_UPDATE_ELEM,
            _pad: 0,
        };
        let c = from_raw(&r, &WallClock::new()).concurrent_with.unwrap();
        assert_eq!(
            (c.pid, c.tid, c.cmd.as_str(), c.inside_ns),
            (9, 10, "map_update_elem", 100)
        );
    }
}
