//! Findings drawn from an [`AccessGraph`]: overlap groups with both sides
//! named, the ranking of maps mutated by several goroutines, and process →
//! BPF map usage. Pure functions of the graph, deterministic order.

use std::collections::{BTreeMap, BTreeSet};

use auditor_common::go_map::MapOp;
use serde::Serialize;

use super::graph::{AccessGraph, ProcessGraph};
use super::identity::{CallSite, MapIdentity, OpSet};
use crate::event::{DetectionMode, Frame};

/// One side of an [`OverlapFinding`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OverlapSide {
    pub site: CallSite,
    /// Operations this side was doing (`write`, `read`, ...).
    pub ops: OpSet,
    /// Goroutine ids seen on this side (at most 8).
    pub goroutines: Vec<u64>,
    /// Stack of the first overlap of the group.
    pub example_stack: Vec<Frame>,
}

/// Overlapping accesses to one map from the same two call sites: `first`
/// was inside the map when `second` entered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OverlapFinding {
    pub map: MapIdentity,
    pub first: OverlapSide,
    pub second: OverlapSide,
    pub count: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    pub detection: Vec<DetectionMode>,
}

/// A map mutated by two or more distinct goroutines: a candidate race even
/// when no overlap was caught yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SharedMapRanking {
    pub map: MapIdentity,
    /// Goroutines that wrote, deleted or cleared it (ascending; goid 0, the
    /// unknown goroutine, is left out).
    pub writer_goroutines: Vec<u64>,
    /// Goroutines that read or iterated it, writers that also read
    /// included: the goroutines behind `reads`.
    pub reader_goroutines: usize,
    /// Reads and iterations of it.
    pub reads: u64,
    pub overlaps: u64,
    pub mutations: u64,
    pub accesses: u64,
}

/// One process's bpf(2) calls on one BPF map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BpfMapEdge {
    pub pid: u32,
    pub map_id: u32,
    /// Calls per command, e.g. `{"map_update_elem": 3}`.
    pub commands: BTreeMap<String, u64>,
    pub total: u64,
}

/// All findings of a session.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Findings {
    /// Most frequent first.
    pub overlaps: Vec<OverlapFinding>,
    /// Most writer goroutines first, then most overlaps, then most mutations.
    pub shared_maps: Vec<SharedMapRanking>,
    /// By pid, then map id.
    pub bpf_maps: Vec<BpfMapEdge>,
}

impl Findings {
    /// Draw every finding from `graph`.
    pub fn from_graph(graph: &AccessGraph) -> Self {
        let mut overlaps = Vec::new();
        let mut shared_maps = Vec::new();
        for p in graph.processes() {
            overlaps.extend(overlap_findings(p));
            shared_maps.extend(shared_map_ranking(p));
        }
        overlaps.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.first_ts_ns.cmp(&b.first_ts_ns))
                .then(a.map.cmp(&b.map))
                .then(a.first.site.cmp(&b.first.site))
                .then(a.second.site.cmp(&b.second.site))
        });
        shared_maps.sort_by(|a, b| {
            b.writer_goroutines
                .len()
                .cmp(&a.writer_goroutines.len())
                .then(b.overlaps.cmp(&a.overlaps))
                .then(b.mutations.cmp(&a.mutations))
                .then(a.map.cmp(&b.map))
        });
        let mut bpf_maps: Vec<BpfMapEdge> = graph
            .bpf_map_uses()
            .map(|((pid, map_id), u)| BpfMapEdge {
                pid,
                map_id,
                commands: u.commands.iter().cloned().collect(),
                total: u.total(),
            })
            .collect();
        bpf_maps.sort_by_key(|e| (e.pid, e.map_id));
        Self {
            overlaps,
            shared_maps,
            bpf_maps,
        }
    }
}

fn overlap_findings(p: &ProcessGraph) -> impl Iterator<Item = OverlapFinding> + '_ {
    p.overlap_groups().iter().map(move |g| OverlapFinding {
        map: p.map(g.map).identity,
        first: OverlapSide {
            site: p.site(g.first_site).site.clone(),
            ops: g.first_ops,
            goroutines: g.first_goids.clone(),
            example_stack: g.example.first.stack.clone(),
        },
        second: OverlapSide {
            site: p.site(g.second_site).site.clone(),
            ops: g.second_ops,
            goroutines: g.second_goids.clone(),
            example_stack: g.example.second.stack.clone(),
        },
        count: g.count,
        first_ts_ns: g.first_ts_ns,
        last_ts_ns: g.last_ts_ns,
        detection: g.detections.clone(),
    })
}

fn shared_map_ranking(p: &ProcessGraph) -> Vec<SharedMapRanking> {
    let mut writers: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    // (reading goroutines, their reads): both from the same edges, so the
    // two columns of a row always describe the same goroutines.
    let mut readers: BTreeMap<usize, (usize, u64)> = BTreeMap::new();
    for (g, m, counts) in p.goroutine_edges() {
        let goid = p.goroutine(g).goid;
        if counts.mutations() > 0 && goid != 0 {
            writers.entry(m.index()).or_default().insert(goid);
        }
        let reads = counts.get(MapOp::Read) + counts.get(MapOp::Iterate);
        if reads > 0 {
            let r = readers.entry(m.index()).or_default();
            r.0 += 1;
            r.1 += reads;
        }
    }
    writers
        .into_iter()
        .filter(|(_, w)| w.len() >= 2)
        .map(|(m, w)| {
            let info = &p.maps()[m];
            let (reader_goroutines, reads) = readers.get(&m).copied().unwrap_or((0, 0));
            SharedMapRanking {
                map: info.identity,
                writer_goroutines: w.into_iter().collect(),
                reader_goroutines,
                reads,
                overlaps: info.overlaps,
                mutations: info.ops.mutations(),
                accesses: info.ops.total(),
            }
        })
        .collect()
}
