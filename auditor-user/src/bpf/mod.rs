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
pub mod lifecycle;
pub mod names;
pub mod policy;
mod render;
mod run;
pub mod session;
pub mod sys;

use auditor_common::bpf_syscall::{BpfSyscallEvent, EXE_PARTS, cmd, resolved};

use crate::pipeline::clock::WallClock;

pub use crate::event::bpf::{Alert, AlertRule, BpfMapEvent, ConcurrentWriter, MAP_DESTROYED};
pub use policy::{BpfMapGraph, MapEdge};
pub use run::{LossTracker, POLL_EVERY, run};

/// Join executable path components recorded leaf first.
pub fn exe_path(parts: &[[u8; auditor_common::bpf_syscall::EXE_PART_BYTES]; EXE_PARTS]) -> String {
    let names: Vec<String> = parts
        .iter()
        .map(|p| attr::c_str(p))
        .take_while(|s| !s.is_empty())
        .filter(|s| s != "/")
        .collect();
    if names.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for n in names.iter().rev() {
        out.push('/');
        out.push_str(n);
    }
    out
}

/// Turn a kernel record into an event (pure).
pub fn from_raw(raw: &BpfSyscallEvent, clock: &WallClock) -> BpfMapEvent {
    // attr_len comes from the record; never trust it past the array.
    let attr_len = (raw.attr_len as usize).min(raw.attr.len());
    let view = attr::parse_attr(raw.cmd, &raw.attr[..attr_len], raw.attr_size);
    let mut ev = BpfMapEvent {
        ts_ns: clock.to_unix_ns(raw.header.ts_ns),
        pid: raw.header.pid,
        tid: raw.header.tid,
        uid: raw.uid,
        comm: attr::c_str(&raw.comm),
        exe: exe_path(&raw.exe),
        cmd: names::cmd_name(raw.cmd),
        flags: view.flags,
        batch_count: view.batch_count,
        fd: view.fd,
        result: names::result_name(raw.ret),
        ret: raw.ret,
        latency_ns: raw.latency_ns,
        ..BpfMapEvent::default()
    };
    if cmd::returns_fd(raw.cmd) && raw.ret >= 0 {
        ev.fd = Some(raw.ret as u32);
    }
    if raw.cmd == cmd::OBJ_PIN || raw.cmd == cmd::OBJ_GET {
        ev.path = Some(attr::c_str(&raw.path));
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
        bpf_syscall::{ATTR_BYTES, EXE_PART_BYTES, MapIdentity, PATH_BYTES, WriterSlot},
    };

    fn part(s: &str) -> [u8; EXE_PART_BYTES] {
        let mut p = [0u8; EXE_PART_BYTES];
        p[..s.len()].copy_from_slice(s.as_bytes());
        p
    }

    fn raw(c: u32, ret: i64) -> BpfSyscallEvent {
        let mut exe = [[0u8; EXE_PART_BYTES]; EXE_PARTS];
        exe[0] = part("bpftool");
        exe[1] = part("sbin");
        exe[2] = part("usr");
        exe[3] = part("/");
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
            map_id: 42,
            ret,
            latency_ns: 300,
            uid: 0,
            resolved: resolved::ENTER_FD,
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
            attr: [0; ATTR_BYTES],
            attr_size: 32,
            attr_len: 64,
            uattr: 0,
            comm,
            path: [0; PATH_BYTES],
            exe,
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
        assert_eq!(v["exe"], "/usr/sbin/bpftool");
        assert_eq!(v["result"], "ok");
        assert_eq!(v["pid"], 5);
        assert!(v.get("concurrent_with").is_none());
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
