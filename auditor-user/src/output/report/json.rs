//! The JSON report: one document with the whole graph (every tracked node
//! and edge, not only the top N) and the findings. Field names are stable;
//! [`REPORT_SCHEMA_VERSION`] changes when one changes meaning or goes away.

use serde::Serialize;

use crate::analysis::{
    AuditReport, BpfMapEdge, CallSite, GraphLimits, LossTally, MapIdentity, OpCounts,
    OverlapFinding, RecordingStats, SharedMapRanking, Truncation,
};
use crate::event::Summary;

/// Version of the report document below.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// The report document.
///
/// ```text
/// {
///   "schema": "map-auditor-report", "version": 1,
///   "recording": {source, lines, blank_lines, events, unknown_kinds{kind: n}} | null,
///   "totals": {events, processes, accesses, overlap_events},
///   "findings": {
///     "overlaps":    [{map{pid,address,map_gen}, map_name, count, first_ts_ns, last_ts_ns, detection[],
///                      first{site{function,file,line}, ops[], goroutines[], example_stack[]}, second{...}}],
///     "shared_maps": [{map, map_name, writer_goroutines[], reader_goroutines, reads, overlaps, mutations, accesses}],
///     "bpf_maps":    [{pid, map_id, commands{cmd: n}, total}]
///   },
///   "processes": [{pid, accesses, overlap_events, first_ts_ns, last_ts_ns,
///                  maps[{index, map, make_site|null, made_by|null, type_name|null, global|null, ops{op: n}, overlaps}],
///                  goroutines[{goid, ops, first_ts_ns, last_ts_ns, first_site|null}],
///                  sites[{index, function, file, line, runtime_fn, ops}],
///                  goroutine_edges[{goid, map, ops}],   // map: index into maps
///                  site_edges[{site, map, ops}]}],      // site: index into sites
///   "losses": [{pid, what, count, reported_total}],
///   "summaries": [summary event],
///   "truncation": {processes, goroutines, maps, sites, edges, overlap_groups, bpf_edges},
///   "limits": {max_processes, max_goroutines, max_maps, max_sites, max_edges, max_overlap_groups, max_bpf_edges}
/// }
/// ```
/// `ops` objects always carry all six operations: read, write, delete,
/// iterate, clear, make. Addresses are `"0x…"` strings; times are kernel
/// monotonic nanoseconds.
#[derive(Serialize)]
pub struct ReportDocument<'a> {
    pub schema: &'static str,
    pub version: u32,
    pub recording: Option<&'a RecordingStats>,
    pub totals: Totals,
    pub findings: FindingsDoc<'a>,
    pub processes: Vec<ProcessDoc<'a>>,
    pub losses: Vec<LossDoc<'a>>,
    pub summaries: Vec<&'a Summary>,
    pub truncation: &'a Truncation,
    pub limits: &'a GraphLimits,
}

#[derive(Serialize)]
/// Session totals.
pub struct Totals {
    pub events: u64,
    pub processes: usize,
    pub accesses: u64,
    pub overlap_events: u64,
}

#[derive(Serialize)]
/// The findings, each overlap and shared map with `map_name`.
pub struct FindingsDoc<'a> {
    pub overlaps: Vec<Named<'a, OverlapFinding>>,
    pub shared_maps: Vec<Named<'a, SharedMapRanking>>,
    pub bpf_maps: &'a [BpfMapEdge],
}

/// A finding with the map's human name beside it.
#[derive(Serialize)]
pub struct Named<'a, T> {
    #[serde(flatten)]
    pub finding: &'a T,
    pub map_name: String,
}

#[derive(Serialize)]
/// One process's whole graph.
pub struct ProcessDoc<'a> {
    pub pid: u32,
    pub accesses: u64,
    pub overlap_events: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    pub maps: Vec<MapDoc<'a>>,
    pub goroutines: Vec<GoroutineDoc>,
    pub sites: Vec<SiteDoc<'a>>,
    pub goroutine_edges: Vec<GoroutineEdgeDoc>,
    pub site_edges: Vec<SiteEdgeDoc>,
}

#[derive(Serialize)]
/// A map node; `index` is what edges refer to.
pub struct MapDoc<'a> {
    pub index: usize,
    pub map: MapIdentity,
    pub make_site: Option<&'a CallSite>,
    pub made_by: Option<u64>,
    pub type_name: Option<&'a str>,
    pub global: Option<&'a str>,
    pub ops: OpCounts,
    pub overlaps: u64,
}

#[derive(Serialize)]
/// A goroutine node.
pub struct GoroutineDoc {
    pub goid: u64,
    pub ops: OpCounts,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    /// Index into `sites`.
    pub first_site: Option<usize>,
}

#[derive(Serialize)]
/// A call-site node; `index` is what edges refer to.
pub struct SiteDoc<'a> {
    pub index: usize,
    #[serde(flatten)]
    pub site: &'a CallSite,
    pub runtime_fn: &'a str,
    pub ops: OpCounts,
}

#[derive(Serialize)]
/// Goroutine → map edge; `map` indexes the process's `maps`.
pub struct GoroutineEdgeDoc {
    pub goid: u64,
    pub map: usize,
    pub ops: OpCounts,
}

#[derive(Serialize)]
/// Call site → map edge; both fields index the process's lists.
pub struct SiteEdgeDoc {
    pub site: usize,
    pub map: usize,
    pub ops: OpCounts,
}

#[derive(Serialize)]
/// Events lost before they reached map-auditor.
pub struct LossDoc<'a> {
    pub pid: u32,
    pub what: &'a str,
    #[serde(flatten)]
    pub tally: LossTally,
}

/// Build the document; deterministic order throughout.
pub fn report_document(report: &AuditReport) -> ReportDocument<'_> {
    let g = &report.graph;
    let name = |m: &MapIdentity| super::tables::map_name(report, m);
    let processes = g
        .processes()
        .map(|p| {
            let mut goroutine_edges: Vec<GoroutineEdgeDoc> = p
                .goroutine_edges()
                .map(|(gid, m, c)| GoroutineEdgeDoc {
                    goid: p.goroutine(gid).goid,
                    map: m.index(),
                    ops: *c,
                })
                .collect();
            goroutine_edges.sort_by_key(|e| (e.goid, e.map));
            let mut site_edges: Vec<SiteEdgeDoc> = p
                .site_edges()
                .map(|(s, m, c)| SiteEdgeDoc {
                    site: s.index(),
                    map: m.index(),
                    ops: *c,
                })
                .collect();
            site_edges.sort_by_key(|e| (e.site, e.map));
            let mut goroutines: Vec<GoroutineDoc> = p
                .goroutines()
                .iter()
                .map(|i| GoroutineDoc {
                    goid: i.goid,
                    ops: i.ops,
                    first_ts_ns: i.first_ts_ns,
                    last_ts_ns: i.last_ts_ns,
                    first_site: i.first_site.map(|s| s.index()),
                })
                .collect();
            goroutines.sort_by_key(|g| g.goid);
            ProcessDoc {
                pid: p.pid,
                accesses: p.accesses,
                overlap_events: p.overlap_events,
                first_ts_ns: p.first_ts_ns,
                last_ts_ns: p.last_ts_ns,
                maps: p
                    .maps()
                    .iter()
                    .enumerate()
                    .map(|(index, m)| MapDoc {
                        index,
                        map: m.identity,
                        make_site: m.make_site.as_ref(),
                        made_by: m.made_by,
                        type_name: m.type_name.as_deref(),
                        global: m.global.as_deref(),
                        ops: m.ops,
                        overlaps: m.overlaps,
                    })
                    .collect(),
                goroutines,
                sites: p
                    .sites()
                    .iter()
                    .enumerate()
                    .map(|(index, s)| SiteDoc {
                        index,
                        site: &s.site,
                        runtime_fn: &s.runtime_fn,
                        ops: s.ops,
                    })
                    .collect(),
                goroutine_edges,
                site_edges,
            }
        })
        .collect();
    ReportDocument {
        schema: "map-auditor-report",
        version: REPORT_SCHEMA_VERSION,
        recording: report.recording.as_ref(),
        totals: Totals {
            events: g.events(),
            processes: g.processes().count(),
            accesses: g.processes().map(|p| p.accesses).sum(),
            overlap_events: g.processes().map(|p| p.overlap_events).sum(),
        },
        findings: FindingsDoc {
            overlaps: report
                .findings
                .overlaps
                .iter()
                .map(|f| Named {
                    finding: f,
                    map_name: name(&f.map),
                })
                .collect(),
            shared_maps: report
                .findings
                .shared_maps
                .iter()
                .map(|f| Named {
                    finding: f,
                    map_name: name(&f.map),
                })
                .collect(),
            bpf_maps: &report.findings.bpf_maps,
        },
        processes,
        losses: g
            .losses()
            .iter()
            .map(|((pid, what), t)| LossDoc {
                pid: *pid,
                what,
                tally: *t,
            })
            .collect(),
        summaries: g.summaries().values().collect(),
        truncation: g.truncation(),
        limits: g.limits(),
    }
}

/// Render the report as one pretty-printed JSON document.
pub fn render_json(report: &AuditReport) -> String {
    let mut s =
        serde_json::to_string_pretty(&report_document(report)).expect("report document serialises");
    s.push('\n');
    s
}
