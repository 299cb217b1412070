//! Ring-buffer records: `decode`, then the pure per-record enrichment the
//! reader applies (bpf(2) records to events, Go records through a
//! `GoEnricher` with an empty symbol table), then JSON as `--record` writes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use map_auditor::{
    event::{AuditEvent, Frame},
    pipeline::{
        clock::WallClock,
        decode::{RawRecord, decode},
        enrich::{FrameResolver, GoEnricher},
    },
};

/// Resolves one PC, so both the known and unknown frame paths run.
struct OneFrame;

impl FrameResolver for OneFrame {
    fn resolve_return(&self, pc: u64) -> Option<Frame> {
        (pc & 0xff == 0x10).then(|| Frame {
            pc,
            function: "runtime.mapassign".into(),
            file: "/go/src/runtime/map.go".into(),
            line: 1,
        })
    }

    fn map_type_name(&self, maptype: u64) -> Option<String> {
        (maptype & 1 == 1).then(|| "map[int]int".into())
    }
}

fn clock() -> WallClock {
    static CLOCK: OnceLock<WallClock> = OnceLock::new();
    *CLOCK.get_or_init(WallClock::new)
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = decode(data) else { return };
    let event = match raw {
        RawRecord::BpfSyscall(b) => {
            Some(AuditEvent::BpfMap(map_auditor::bpf::from_raw(&b, &clock())))
        }
        RawRecord::GoAccess(a) => {
            let names = vec!["runtime.mapassign".into(), "runtime.mapaccess1".into()];
            let mut e = GoEnricher::new(OneFrame, names, clock());
            // Twice: the second sees the map's generation already tracked.
            let _ = e.access(&a);
            e.access(&a).map(AuditEvent::Access)
        }
        RawRecord::GoOverlap(o) => {
            let names = vec!["runtime.mapassign".into()];
            let mut e = GoEnricher::new(OneFrame, names, clock());
            Some(AuditEvent::Overlap(e.overlap(&o)))
        }
        // Turned into a probe by the engine, not into an event.
        RawRecord::GoEscalate(_) => None,
    };
    if let Some(ev) = event {
        let _ = serde_json::to_string(&ev);
    }
});
