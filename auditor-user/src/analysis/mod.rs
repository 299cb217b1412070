//! Analysis core: turns decoded [`AuditEvent`](crate::event::AuditEvent)s
//! into per-process access graphs, overlap findings, the shared-mutable-map
//! ranking and BPF-map usage. It knows nothing of BPF or ring buffers: the
//! live pipeline and recordings feed it the same events, and tests feed it
//! synthetic streams.

mod findings;
mod graph;
mod identity;
mod recording;

pub use findings::{BpfMapEdge, Findings, OverlapFinding, OverlapSide, SharedMapRanking};
pub use graph::{
    AccessGraph, BpfMapUse, GoroutineId, GoroutineInfo, GraphLimits, LossTally, MapId, MapInfo,
    OverlapGroup, ProcessGraph, SiteId, SiteInfo, Truncation,
};
pub use identity::{ALL_OPS, CallSite, MapIdentity, OpCounts, OpSet};
pub use recording::{
    MAX_LINE_BYTES, RecordingError, RecordingStats, read_recording, report_from_jsonl,
    report_from_jsonl_with_limits,
};

/// A graph with its findings: what every report renderer takes.
#[derive(Clone, Debug)]
pub struct AuditReport {
    pub graph: AccessGraph,
    pub findings: Findings,
    /// Present when the events came from a recording.
    pub recording: Option<RecordingStats>,
}

impl AuditReport {
    /// Draw the findings of a live session's graph.
    pub fn from_graph(graph: AccessGraph) -> Self {
        let findings = Findings::from_graph(&graph);
        Self {
            graph,
            findings,
            recording: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
