//! Decoded, enriched audit events: what every sink (live log, JSON lines,
//! report, daemon log) consumes. The JSON form of these types is the
//! documented contract in docs/events.md; `SCHEMA_VERSION` versions it.

pub mod bpf;
pub mod go;
pub mod kinds;
pub mod target;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use bpf::{Alert, AlertRule, BpfMapEvent, ConcurrentWriter, MAP_DESTROYED};
pub use go::{Access, AccessCounts, DetectionMode, Escalation, Frame, Overlap, OverlapParty};
pub use kinds::EventKind;
pub use target::{
    AttachReport, AttachedProbe, Coverage, ExitSiteCoverage, FindingGroup, Lost,
    NarrowedSiteCoverage, ScopeSite, Summary, TargetEvent, WatchedMapGlobals,
};

/// Version of the JSON event schema (docs/events.md).
pub const SCHEMA_VERSION: u32 = 1;

/// Anything a sink can receive. Serialises with a `kind` tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditEvent {
    Attach(AttachReport),
    Access(Access),
    AccessCounts(AccessCounts),
    Overlap(Overlap),
    BpfMap(BpfMapEvent),
    /// A finding on BPF maps (guarded map written, concurrent writers, ...).
    Alert(Alert),
    Lost(Lost),
    Summary(Summary),
    Escalation(Escalation),
    Coverage(Coverage),
}

impl AuditEvent {
    /// The JSON `kind` of this event.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Attach(_) => EventKind::Attach,
            Self::Access(_) => EventKind::Access,
            Self::AccessCounts(_) => EventKind::AccessCounts,
            Self::Overlap(_) => EventKind::Overlap,
            Self::BpfMap(_) => EventKind::BpfMap,
            Self::Alert(_) => EventKind::Alert,
            Self::Lost(_) => EventKind::Lost,
            Self::Summary(_) => EventKind::Summary,
            Self::Escalation(_) => EventKind::Escalation,
            Self::Coverage(_) => EventKind::Coverage,
        }
    }

    pub fn pid(&self) -> u32 {
        match self {
            Self::Attach(x) => x.pid,
            Self::Access(x) => x.pid,
            Self::AccessCounts(x) => x.pid,
            Self::Overlap(x) => x.pid,
            Self::BpfMap(x) => x.pid,
            Self::Alert(x) => x.pid,
            Self::Lost(x) => x.pid,
            Self::Summary(x) => x.pid,
            Self::Escalation(x) => x.pid,
            Self::Coverage(x) => x.pid,
        }
    }

    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Attach(a) => a.ts_ns,
            Self::Access(a) => a.ts_ns,
            Self::AccessCounts(a) => a.ts_ns,
            Self::Overlap(o) => o.ts_ns,
            Self::BpfMap(b) => b.ts_ns,
            Self::Alert(a) => a.ts_ns,
            Self::Lost(l) => l.ts_ns,
            Self::Summary(s) => s.ts_ns,
            Self::Escalation(e) => e.ts_ns,
            Self::Coverage(c) => c.ts_ns,
        }
    }
}

/// Serialise an address as `"0xc000012345"`.
pub fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// Read an address written by [`hex`]; a bare JSON integer is accepted too.
pub fn from_hex<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Addr<'a> {
        Num(u64),
        Text(&'a str),
        Owned(String),
    }
    let parse = |t: &str| {
        let digits = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .ok_or_else(|| {
                serde::de::Error::custom(format!("address {t:?} is not 0x-prefixed hex"))
            })?;
        u64::from_str_radix(digits, 16)
            .map_err(|_| serde::de::Error::custom(format!("address {t:?} is not valid hex")))
    };
    match Addr::deserialize(d)? {
        Addr::Num(n) => Ok(n),
        Addr::Text(t) => parse(t),
        Addr::Owned(t) => parse(&t),
    }
}

#[cfg(test)]
mod tests {
    use auditor_common::go_map::MapOp;

    use super::*;

    #[test]
    fn access_json_has_documented_fields() {
        let ev = AuditEvent::Access(Access {
            ts_ns: 5,
            pid: 10,
            tid: 11,
            goid: 7,
            map: 0xc000010000,
            map_gen: 0,
            op: MapOp::Write,
            map_type: None,
            map_global: None,
            runtime_fn: "runtime.mapassign_fast64".into(),
            function: "main.worker".into(),
            file: "/src/main.go".into(),
            line: 42,
            stack: vec![],
        });
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["kind"], "access");
        assert_eq!(v["map"], "0xc000010000");
        assert_eq!(v["op"], "write");
        assert_eq!(v["line"], 42);
        assert!(v.get("stack").is_none());
    }
}
