//! Go map events: one access, and an overlap of two goroutines in a map.

use auditor_common::go_map::MapOp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{from_hex, hex};

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

/// Accesses one goroutine made to one map at one call site with one
/// operation during an aggregation interval: what the kernel counts
/// instead of sending a record per access (the default unless
/// `--all-accesses`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessCounts {
    /// When the counts were read from the kernel.
    pub ts_ns: u64,
    pub pid: u32,
    /// Thread of the first access counted.
    pub tid: u32,
    pub goid: u64,
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub map: u64,
    pub map_gen: u32,
    #[serde(serialize_with = "op_name", deserialize_with = "op_from_name")]
    pub op: MapOp,
    /// The map's Go type, the first time a map is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_type: Option<String>,
    /// The package-level variable holding the map, the first time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_global: Option<String>,
    pub runtime_fn: String,
    /// The call site.
    pub function: String,
    pub file: String,
    pub line: u32,
    /// Accesses counted.
    pub count: u64,
    /// Times of the first and last access counted.
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
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
    /// At the exit of an escalated call site: a writer on another goroutine
    /// entered the map after this access entered and before it returned.
    Exit,
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
    /// Identical overlaps (same call sites and operations) the kernel held
    /// back since this pair was last reported (at most one report per pair
    /// and second).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
    /// Go type of the map, when an access of it carried its descriptor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_type: Option<String>,
    /// Package-level variable holding the map, e.g. `main.counts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_global: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Exit tracking was escalated at a call site: the kernel saw it read a map
/// that another goroutine writes, and a probe now sits on the call's return
/// address, so a writer entering while that read is inside is reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    pub ts_ns: u64,
    pub pid: u32,
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub map: u64,
    #[serde(serialize_with = "op_name", deserialize_with = "op_from_name")]
    pub op: MapOp,
    /// The map function called at the site.
    pub runtime_fn: String,
    /// The calling function and line (the escalated call site).
    pub function: String,
    pub file: String,
    pub line: u32,
    /// Return address the exit probe sits on.
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub pc: u64,
    /// The probed instruction and whether the kernel emulates it (cheap) or
    /// single-steps it (~12 µs a hit on our machines).
    pub instruction: String,
    pub emulated: bool,
    /// How the exit probe is held: `always`, `sampled` (single-stepped,
    /// attached for windows within a CPU budget) or `off` (single-stepped
    /// and not placed, `--stepped-exits off`).
    #[serde(default)]
    pub tracking: String,
    /// Why the probe could not be placed, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub(crate) fn op_name<S: Serializer>(op: &MapOp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(op.as_str())
}

/// Read an operation name written by `op_name` (`read`, `write`, ...).
pub(crate) fn op_from_name<'de, D: Deserializer<'de>>(d: D) -> Result<MapOp, D::Error> {
    let name = std::borrow::Cow::<str>::deserialize(d)?;
    MapOp::ALL
        .into_iter()
        .find(|op| op.as_str() == name)
        .ok_or_else(|| serde::de::Error::unknown_variant(&name, &super::kinds::OP_NAMES))
}
