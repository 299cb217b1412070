//! Synthetic event streams for tests of the analysis core and the reports.

use auditor_common::go_map::MapOp;

use crate::event::BpfMapEvent;
use crate::event::{Access, AuditEvent, DetectionMode, Frame, Lost, Overlap, OverlapParty};

pub const PID: u32 = 4242;

/// An access by goroutine `goid` to map `map` (generation 0) from
/// `function` at main.go:`line`.
pub fn access(ts: u64, goid: u64, map: u64, op: MapOp, function: &str, line: u32) -> AuditEvent {
    access_gen(ts, goid, map, 0, op, function, line)
}

pub fn access_gen(
    ts: u64,
    goid: u64,
    map: u64,
    map_gen: u32,
    op: MapOp,
    function: &str,
    line: u32,
) -> AuditEvent {
    AuditEvent::Access(Access {
        map_type: None,
        map_global: None,
        ts_ns: ts,
        pid: PID,
        tid: 100 + goid as u32,
        goid,
        map,
        map_gen,
        op,
        runtime_fn: runtime_fn(op).into(),
        function: function.into(),
        file: "/src/app/main.go".into(),
        line,
        stack: vec![],
    })
}

fn runtime_fn(op: MapOp) -> &'static str {
    match op {
        MapOp::Read => "runtime.mapaccess1_faststr",
        MapOp::Write => "runtime.mapassign_faststr",
        MapOp::Delete => "runtime.mapdelete_faststr",
        MapOp::Iterate => "runtime.mapiterinit",
        MapOp::Clear => "runtime.mapclear",
        MapOp::Make => "runtime.makemap",
    }
}

/// One side of an overlap.
pub fn party(ts: u64, goid: u64, op: MapOp, function: &str, line: u32) -> OverlapParty {
    OverlapParty {
        ts_ns: ts,
        goid,
        tid: 100 + goid as u32,
        op,
        runtime_fn: runtime_fn(op).into(),
        function: function.into(),
        file: "/src/app/main.go".into(),
        line,
        stack: vec![Frame {
            pc: 0x4a0000 + line as u64,
            function: function.into(),
            file: "/src/app/main.go".into(),
            line,
        }],
    }
}

pub fn overlap(ts: u64, map: u64, first: OverlapParty, second: OverlapParty) -> AuditEvent {
    AuditEvent::Overlap(Overlap {
        ts_ns: ts,
        pid: PID,
        map,
        map_gen: 0,
        detection: DetectionMode::WritingMarker,
        first,
        second,
        suppressed: 0,
        map_type: None,
        map_global: None,
    })
}

pub fn bpf(ts: u64, pid: u32, cmd: &str, map_id: u32) -> AuditEvent {
    AuditEvent::BpfMap(BpfMapEvent {
        ts_ns: ts,
        pid,
        cmd: cmd.into(),
        map_id,
        ..BpfMapEvent::default()
    })
}

pub fn lost(what: &str, count: u64, total: u64) -> AuditEvent {
    AuditEvent::Lost(Lost {
        ts_ns: 0,
        pid: PID,
        what: what.into(),
        count,
        total,
    })
}

pub const CACHE: u64 = 0xc000100000;
pub const CONFIG: u64 = 0xc000200000;

/// A small session: a cache map made in main.newCache, written by two
/// goroutines (Set at line 30) and read by a third (Get at line 22), with
/// one overlap caught; a config map only its maker writes; a BPF map.
pub fn small_session() -> Vec<AuditEvent> {
    use MapOp::*;
    vec![
        access(1_000, 1, CACHE, Make, "main.newCache", 12),
        access(1_100, 1, CONFIG, Make, "main.loadConfig", 40),
        access(1_200, 1, CONFIG, Write, "main.loadConfig", 41),
        access(2_000, 17, CACHE, Write, "main.(*Cache).Set", 30),
        access(2_100, 23, CACHE, Write, "main.(*Cache).Set", 30),
        access(2_200, 31, CACHE, Read, "main.(*Cache).Get", 22),
        access(2_300, 31, CONFIG, Read, "main.handler", 55),
        overlap(
            2_400,
            CACHE,
            party(2_350, 17, Write, "main.(*Cache).Set", 30),
            party(2_400, 31, Read, "main.(*Cache).Get", 22),
        ),
        bpf(3_000, 900, "map_update_elem", 7),
        bpf(3_100, 900, "map_update_elem", 7),
        bpf(3_200, 900, "map_lookup_elem", 7),
    ]
}

/// A graph of [`small_session`] with the cache named by enrichment.
pub fn small_graph() -> crate::analysis::AccessGraph {
    let mut g = crate::analysis::AccessGraph::new(Default::default());
    for ev in small_session() {
        g.ingest(&ev);
    }
    g.set_map_names(
        crate::analysis::MapIdentity {
            pid: PID,
            address: CACHE,
            map_gen: 0,
        },
        Some("map[string]*main.Entry".into()),
        Some("main.cache".into()),
    );
    g
}

/// The session as a JSON-lines recording.
pub fn small_recording() -> String {
    small_session()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect()
}
