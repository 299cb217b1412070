//! Decoded, enriched audit events: what every sink (live log, JSON lines,
//! report, daemon log) consumes. The JSON form of these types is the
//! documented contract in docs/events.md; `SCHEMA_VERSION` versions it.

use auditor_common::go_map::MapOp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Version of the JSON event schema (docs/events.md).
pub const SCHEMA_VERSION: u32 = 1;

/// One resolved stack frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub pc: u64,
    pub function: String,
    pub file: String,
    pub line: u32,
}

/// A Go map access seen by a probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub goid: u64,
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub map: u64,
    /// Bumped each time a map is made at an address already seen, so a freed
    /// and reused address does not merge two maps.
    pub map_gen: u32,
    #[serde(serialize_with = "op_name", deserialize_with = "op_from_name")]
    pub op: MapOp,
    /// The map's Go type (`map[string]*main.Session`), on the first access
    /// of each map that names its type descriptor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_type: Option<String>,
    /// The package-level variable holding the map (`main.sessions`), on
    /// the same first access, when the binary has a symbol table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_global: Option<String>,
    /// The runtime function probed (e.g. `runtime.mapassign_faststr`).
    pub runtime_fn: String,
    /// The caller of the runtime function: the user's call site.
    pub function: String,
    pub file: String,
    pub line: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<Frame>,
}

/// One side of an overlap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlapParty {
    pub ts_ns: u64,
    pub goid: u64,
    pub tid: u32,
    #[serde(serialize_with = "op_name", deserialize_with = "op_from_name")]
    pub op: MapOp,
    pub runtime_fn: String,
    pub function: String,
    pub file: String,
    pub line: u32,
    #[serde(default)]
    pub stack: Vec<Frame>,
}

/// How an overlap was detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionMode {
    /// Entry probe saw the runtime's writing marker set by another goroutine.
    WritingMarker,
    /// Interval tracking saw two accessors inside the map at once.
    Interval,
    /// The Go runtime itself detected the overlap and is about to exit with
    /// `fatal error: concurrent map ...`; the other side comes from the
    /// per-map writer record.
    RuntimeFatal,
}

/// Two goroutines in one map at once, at least one of them mutating.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlap {
    pub ts_ns: u64,
    pub pid: u32,
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub map: u64,
    pub map_gen: u32,
    pub detection: DetectionMode,
    pub first: OverlapParty,
    pub second: OverlapParty,
}

/// Events lost between the kernel and us.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    pub ts_ns: u64,
    pub pid: u32,
    /// What was lost (`access`, `overlap`, `bpf_map`, `state`, ...).
    pub what: String,
    /// How many since the previous `lost` event of the same `what`.
    pub count: u64,
    /// Running total.
    pub total: u64,
}

/// End-of-session totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub ts_ns: u64,
    pub pid: u32,
    pub events: u64,
    pub accesses: u64,
    pub overlaps: u64,
    pub dropped: u64,
    pub probe_hits: u64,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_fatal: Option<String>,
}

/// One probe site as attached (the attach report).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedProbe {
    pub function: String,
    #[serde(serialize_with = "op_name", deserialize_with = "op_from_name")]
    pub op: MapOp,
    /// Offset of the probed instruction from the function's start.
    pub offset: u64,
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub file_offset: u64,
    pub instruction: String,
    /// Whether the kernel emulates the instruction (cheap) or single-steps it.
    pub emulated: bool,
    /// A RET site (exit probe).
    pub exit: bool,
}

/// What was attached to a target, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachReport {
    pub ts_ns: u64,
    pub pid: u32,
    pub exe: String,
    pub go_version: String,
    pub module: Option<String>,
    pub pie: bool,
    pub stripped: bool,
    pub swiss_maps: bool,
    /// `entry` or `interval`.
    pub detect: String,
    pub offsets_from_dwarf: bool,
    pub probes: Vec<AttachedProbe>,
    /// Map functions of this Go version that the binary does not contain.
    pub missing: Vec<String>,
    /// Sites the kernel refused, with the reason.
    pub failed: Vec<String>,
}

/// Anything a sink can receive. Serialises with a `kind` tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditEvent {
    Attach(AttachReport),
    Access(Access),
    Overlap(Overlap),
    BpfMap(crate::bpf::BpfMapEvent),
    /// A finding on BPF maps (guarded map written, concurrent writers, ...).
    Alert(crate::bpf::Alert),
    Lost(Lost),
    Summary(Summary),
}

impl AuditEvent {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Attach(a) => a.ts_ns,
            Self::Access(a) => a.ts_ns,
            Self::Overlap(o) => o.ts_ns,
            Self::BpfMap(b) => b.ts_ns,
            Self::Alert(a) => a.ts_ns,
            Self::Lost(l) => l.ts_ns,
            Self::Summary(s) => s.ts_ns,
        }
    }
}

/// Serialise an address as `"0xc000012345"`.
pub fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

fn op_name<S: Serializer>(op: &MapOp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(op.as_str())
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

/// Read an operation name written by `op_name` (`read`, `write`, ...).
fn op_from_name<'de, D: Deserializer<'de>>(d: D) -> Result<MapOp, D::Error> {
    let name = std::borrow::Cow::<str>::deserialize(d)?;
    MapOp::ALL
        .into_iter()
        .find(|op| op.as_str() == name)
        .ok_or_else(|| {
            serde::de::Error::unknown_variant(
                &name,
                &["read", "write", "delete", "iterate", "clear", "make"],
            )
        })
}

#[cfg(test)]
mod tests {
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
