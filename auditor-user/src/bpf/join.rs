//! Joining a call's enter record with its exit record.
//!
//! The enter program writes the whole record; the exit program writes a
//! small completion for every bpf(2) call of the thread (it keeps no state
//! for most commands, so it cannot tell audited ones apart). A thread has
//! one system call in flight and the ring buffer keeps the order of
//! reservations, so the next completion from the same thread id belongs to
//! the pending enter. A completion with no pending enter is a call that
//! was not audited (or whose enter was lost, which the kernel counts).

use std::collections::HashMap;

use auditor_common::bpf_syscall::{BpfSyscallEvent, BpfSyscallExit, cmd, resolved};

/// Enter records waiting for their exit, by thread id.
#[derive(Default)]
pub struct ExitJoin {
    pending: HashMap<u32, BpfSyscallEvent>,
    /// Enters whose exit never came (the next enter of the thread arrived
    /// first: the completion was lost).
    pub unfinished: u64,
}

/// What the join produced.
#[derive(Debug)]
pub enum Joined {
    /// A whole call.
    Done(BpfSyscallEvent),
    /// An enter whose exit was lost: the outcome is unknown.
    Unfinished(BpfSyscallEvent),
}

impl ExitJoin {
    /// Take an enter record; a previous enter of the same thread still
    /// waiting comes back as unfinished.
    pub fn enter(&mut self, raw: BpfSyscallEvent) -> Option<Joined> {
        let prev = self.pending.insert(raw.header.tid, raw)?;
        self.unfinished += 1;
        Some(Joined::Unfinished(prev))
    }

    /// Take an exit record; the whole call when its enter was waiting.
    pub fn exit(&mut self, x: &BpfSyscallExit) -> Option<Joined> {
        let mut ev = self.pending.remove(&x.header.tid)?;
        // The pending enter may be another process's that reused the tid
        // after the first one died mid-call: the pid must match too.
        if ev.header.pid != x.header.pid {
            self.unfinished += 1;
            return Some(Joined::Unfinished(ev));
        }
        ev.ret = x.ret;
        ev.latency_ns = x.header.ts_ns.saturating_sub(ev.header.ts_ns);
        ev.resolved |= x.resolved;
        if x.resolved & resolved::EXIT_FD != 0 {
            ev.map = x.map;
        }
        if x.resolved & resolved::PROG != 0 {
            ev.prog = x.prog;
        }
        if cmd::is_batch(ev.cmd) && ev.attr_len as usize >= cmd::BATCH_COUNT_OFFSET + 4 {
            // The kernel writes back how many elements it processed.
            let at = cmd::BATCH_COUNT_OFFSET;
            ev.attr[at..at + 4].copy_from_slice(&x.batch_count.to_ne_bytes());
        }
        Some(Joined::Done(ev))
    }

    /// Every enter still waiting (at the end of an audit).
    pub fn drain(&mut self) -> Vec<BpfSyscallEvent> {
        let mut v: Vec<_> = self.pending.drain().map(|(_, e)| e).collect();
        v.sort_by_key(|e| e.header.ts_ns);
        v
    }

    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditor_common::{
        EventHeader, EventKind,
        bpf_syscall::{ATTR_BYTES, MapIdentity, PATH_BYTES, ProgMaps, WriterSlot},
    };

    fn enter(pid: u32, tid: u32, c: u32, ts: u64) -> BpfSyscallEvent {
        BpfSyscallEvent {
            header: EventHeader {
                kind: EventKind::BpfSyscall as u32,
                cpu: 0,
                ts_ns: ts,
                pid,
                tid,
            },
            cmd: c,
            resolved: 0,
            uid: 0,
            euid: 0,
            cap_effective: 0,
            exe_dev: 0,
            fd: 3,
            exe_ino: 0,
            ret: 0,
            latency_ns: 0,
            map: MapIdentity::default(),
            other: WriterSlot::default(),
            prog: ProgMaps::default(),
            attr: [0; ATTR_BYTES],
            attr_size: 64,
            attr_len: 64,
            uattr: 0,
            comm: [0; 16],
            path: [0; PATH_BYTES],
        }
    }

    fn exit(pid: u32, tid: u32, ret: i64, ts: u64) -> BpfSyscallExit {
        BpfSyscallExit {
            header: EventHeader {
                kind: EventKind::BpfSyscallExit as u32,
                cpu: 0,
                ts_ns: ts,
                pid,
                tid,
            },
            ret,
            resolved: 0,
            batch_count: 0,
            map: MapIdentity::default(),
            prog: ProgMaps::default(),
        }
    }

    #[test]
    fn exit_completes_the_threads_pending_enter() {
        let mut j = ExitJoin::default();
        assert!(j.enter(enter(1, 2, cmd::MAP_UPDATE_ELEM, 100)).is_none());
        // Another thread's completion (an unaudited call) is not joined.
        assert!(j.exit(&exit(1, 3, 0, 150)).is_none());
        let Some(Joined::Done(e)) = j.exit(&exit(1, 2, -22, 400)) else {
            panic!("not joined");
        };
        assert_eq!((e.ret, e.latency_ns), (-22, 300));
        assert_eq!(j.waiting(), 0);
        assert!(j.exit(&exit(1, 2, 0, 500)).is_none());
    }

    #[test]
    fn returned_map_and_batch_count_come_from_the_exit() {
        let mut j = ExitJoin::default();
        j.enter(enter(1, 2, cmd::MAP_UPDATE_BATCH, 100));
        let mut x = exit(1, 2, 0, 200);
        x.batch_count = 5;
        let Some(Joined::Done(e)) = j.exit(&x) else {
            panic!()
        };
        let at = cmd::BATCH_COUNT_OFFSET;
        assert_eq!(
            u32::from_ne_bytes(e.attr[at..at + 4].try_into().unwrap()),
            5
        );

        j.enter(enter(1, 2, cmd::OBJ_GET, 300));
        let mut x = exit(1, 2, 4, 350);
        x.resolved = resolved::EXIT_FD;
        x.map.id = 77;
        let Some(Joined::Done(e)) = j.exit(&x) else {
            panic!()
        };
        assert_eq!(e.map.id, 77);
        assert_ne!(e.resolved & resolved::EXIT_FD, 0);
    }

    #[test]
    fn a_lost_exit_leaves_the_enter_unfinished_not_joined_to_the_next_call() {
        let mut j = ExitJoin::default();
        j.enter(enter(1, 2, cmd::MAP_DELETE_ELEM, 100));
        let prev = j.enter(enter(1, 2, cmd::MAP_UPDATE_ELEM, 200));
        assert!(matches!(prev, Some(Joined::Unfinished(e)) if e.cmd == cmd::MAP_DELETE_ELEM));
        assert_eq!(j.unfinished, 1);
        // A reused tid in another process does not inherit the enter.
        assert!(matches!(
            j.exit(&exit(9, 2, 0, 300)),
            Some(Joined::Unfinished(_))
        ));
    }
}
