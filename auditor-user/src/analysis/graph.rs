//! The access graph: per process, which goroutine and which call site did
//! what to which map, plus process → BPF map edges, losses and summaries.
//! Memory is bounded by [`GraphLimits`]; every event part that did not fit is
//! counted in [`Truncation`] so reports can say what they do not show.

use std::collections::BTreeMap;

use auditor_common::go_map::MapOp;
use rustc_hash::FxHashMap;
use serde::Serialize;

use super::identity::{CallSite, MapIdentity, OpCounts, OpSet};
use crate::event::BpfMapEvent;
use crate::event::{Access, AttachReport, AuditEvent, DetectionMode, Lost, Overlap, Summary};

/// Caps on what the graph tracks, session-wide (summed over processes).
///
/// Defaults keep a session under roughly 50 MiB even when every cap is hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GraphLimits {
    pub max_processes: usize,
    pub max_goroutines: usize,
    pub max_maps: usize,
    pub max_sites: usize,
    /// Goroutine → map, site → map and goroutine → site edges.
    pub max_edges: usize,
    /// Distinct (map, first site, second site) overlap groups.
    pub max_overlap_groups: usize,
    /// Distinct (pid, BPF map id) edges.
    pub max_bpf_edges: usize,
}

impl Default for GraphLimits {
    fn default() -> Self {
        Self {
            max_processes: 1_024,
            max_goroutines: 100_000,
            max_maps: 100_000,
            max_sites: 50_000,
            max_edges: 100_000,
            max_overlap_groups: 10_000,
            max_bpf_edges: 10_000,
        }
    }
}

/// What the caps kept out of the graph. Each counter is a number of event
/// updates that could not be attributed (not distinct keys: counting
/// distinct untracked keys would need the memory the cap saves). The events
/// themselves are still counted in the totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Truncation {
    /// Events of processes beyond `max_processes`, dropped whole.
    pub processes: u64,
    /// Accesses by goroutines beyond `max_goroutines`.
    pub goroutines: u64,
    /// Accesses to maps beyond `max_maps`.
    pub maps: u64,
    /// Accesses from call sites beyond `max_sites`.
    pub sites: u64,
    /// Edge updates beyond `max_edges`.
    pub edges: u64,
    /// Overlap events beyond `max_overlap_groups` (still counted per process).
    pub overlap_groups: u64,
    /// bpf(2) events beyond `max_bpf_edges`.
    pub bpf_edges: u64,
}

impl Truncation {
    /// True when nothing was left out.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// One readable line per non-zero counter, naming its cap, e.g.
    /// `truncated: 12 edge updates not tracked (cap 100000 edges)`.
    pub fn lines(&self, limits: &GraphLimits) -> Vec<String> {
        let rows = [
            (
                self.processes,
                "events of untracked processes",
                limits.max_processes,
                "processes",
            ),
            (
                self.goroutines,
                "accesses by untracked goroutines",
                limits.max_goroutines,
                "goroutines",
            ),
            (
                self.maps,
                "accesses to untracked maps",
                limits.max_maps,
                "maps",
            ),
            (
                self.sites,
                "accesses from untracked call sites",
                limits.max_sites,
                "call sites",
            ),
            (
                self.edges,
                "edge updates not tracked",
                limits.max_edges,
                "edges",
            ),
            (
                self.overlap_groups,
                "overlaps not grouped",
                limits.max_overlap_groups,
                "overlap groups",
            ),
            (
                self.bpf_edges,
                "bpf(2) calls not tracked",
                limits.max_bpf_edges,
                "BPF map edges",
            ),
        ];
        rows.iter()
            .filter(|r| r.0 > 0)
            .map(|(n, what, cap, unit)| format!("truncated: {n} {what} (cap {cap} {unit})"))
            .collect()
    }
}

/// Index of a goroutine in its [`ProcessGraph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GoroutineId(u32);
/// Index of a map in its [`ProcessGraph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapId(u32);
/// Index of a call site in its [`ProcessGraph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteId(u32);

impl GoroutineId {
    /// Position in the process graph's node list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
    pub(crate) fn from_index(i: usize) -> Self {
        Self(i as u32)
    }
}
impl MapId {
    /// Position in the process graph's node list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
    pub(crate) fn from_index(i: usize) -> Self {
        Self(i as u32)
    }
}
impl SiteId {
    /// Position in the process graph's node list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
    pub(crate) fn from_index(i: usize) -> Self {
        Self(i as u32)
    }
}

/// A goroutine node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoroutineInfo {
    /// Go's goroutine id; 0 when the probe could not read it.
    pub goid: u64,
    pub ops: OpCounts,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    /// The call site of its first access seen: a hint of what it runs.
    pub first_site: Option<SiteId>,
    pub last_tid: u32,
}

/// A map node, named the way a developer recognises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapInfo {
    pub identity: MapIdentity,
    /// Caller of `makemap`, when the make was seen.
    pub make_site: Option<CallSite>,
    /// Goroutine that made it, when the make was seen.
    pub made_by: Option<u64>,
    /// Go type, e.g. `map[string]*main.Session`, set by enrichment.
    pub type_name: Option<String>,
    /// Package-level variable holding it, e.g. `main.sessions`, set by enrichment.
    pub global: Option<String>,
    pub ops: OpCounts,
    /// Overlaps on this map (identical ones the kernel held back included).
    pub overlaps: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
}

impl MapInfo {
    fn new(identity: MapIdentity, ts: u64) -> Self {
        Self {
            identity,
            make_site: None,
            made_by: None,
            type_name: None,
            global: None,
            ops: OpCounts::default(),
            overlaps: 0,
            first_ts_ns: ts,
            last_ts_ns: ts,
        }
    }

    /// Short human name: the global if known, else the make site's function,
    /// else the address; e.g. `main.sessions`, `made in main.newCache`,
    /// `0xc000012000#0`.
    pub fn label(&self) -> String {
        if let Some(g) = &self.global {
            g.clone()
        } else if let Some(s) = &self.make_site {
            format!("made in {} ({}:{})", s.function, s.short_file(), s.line)
        } else {
            self.identity.to_string()
        }
    }

    /// Full description: label, type and identity,
    /// e.g. `main.sessions map[string]int [0xc000012000#0]`.
    pub fn describe(&self) -> String {
        let mut out = self.label();
        if let Some(t) = &self.type_name {
            out.push(' ');
            out.push_str(t);
        }
        if self.global.is_some() || self.make_site.is_some() {
            out.push_str(&format!(" [{}]", self.identity));
        }
        out
    }
}

/// A call-site node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteInfo {
    pub site: CallSite,
    /// The runtime function called from here (first seen).
    pub runtime_fn: String,
    pub ops: OpCounts,
}

/// One race: a map, and the two (call site, operation) sides in sorted
/// order, so "A while B" and "B while A" are one key.
type OverlapKey = (u32, (u32, MapOp), (u32, MapOp));

/// Overlaps on one map between the same two call sites doing the same two
/// operations, whichever side was inside first. `first` is the side that
/// was inside in the group's first overlap (the `example`).
#[derive(Clone, Debug, PartialEq)]
pub struct OverlapGroup {
    pub map: MapId,
    pub first_site: SiteId,
    pub second_site: SiteId,
    pub first_ops: OpSet,
    pub second_ops: OpSet,
    pub count: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    pub detections: Vec<DetectionMode>,
    /// Distinct goroutine ids of each side, at most [`OverlapGroup::MAX_GOIDS`].
    pub first_goids: Vec<u64>,
    pub second_goids: Vec<u64>,
    /// The first overlap event of the group, stacks included.
    pub example: Overlap,
}

impl OverlapGroup {
    /// Goroutine ids kept per side.
    pub const MAX_GOIDS: usize = 8;
}

fn note_goid(list: &mut Vec<u64>, goid: u64) {
    if list.len() < OverlapGroup::MAX_GOIDS && !list.contains(&goid) {
        list.push(goid);
    }
}

/// Session-wide node and edge counts against the limits.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    goroutines: usize,
    maps: usize,
    sites: usize,
    edges: usize,
    overlap_groups: usize,
    bpf_edges: usize,
}

struct Budget<'a> {
    limits: &'a GraphLimits,
    usage: &'a mut Usage,
    truncation: &'a mut Truncation,
}

/// The access graph of one process.
#[derive(Clone, Debug, Default)]
pub struct ProcessGraph {
    pub pid: u32,
    /// Access events seen, tracked or not.
    pub accesses: u64,
    /// Overlap events seen, grouped or not.
    pub overlap_events: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    goroutines: Vec<GoroutineInfo>,
    goroutine_index: FxHashMap<u64, u32>,
    maps: Vec<MapInfo>,
    map_index: FxHashMap<(u64, u32), u32>,
    sites: Vec<SiteInfo>,
    /// function name → sites in it; a function has few map call sites, so a
    /// scan beats allocating an owned key per event.
    site_index: FxHashMap<Box<str>, Vec<u32>>,
    goroutine_edges: FxHashMap<(u32, u32), OpCounts>,
    site_edges: FxHashMap<(u32, u32), OpCounts>,
    /// Goroutine → call site: who ran the code at a site.
    goroutine_site_edges: FxHashMap<(u32, u32), OpCounts>,
    overlap_index: FxHashMap<OverlapKey, usize>,
    overlap_groups: Vec<OverlapGroup>,
}

impl ProcessGraph {
    fn new(pid: u32, ts: u64) -> Self {
        Self {
            pid,
            first_ts_ns: ts,
            last_ts_ns: ts,
            ..Self::default()
        }
    }

    /// Goroutine nodes, in first-seen order.
    pub fn goroutines(&self) -> &[GoroutineInfo] {
        &self.goroutines
    }
    /// Map nodes, in first-seen order.
    pub fn maps(&self) -> &[MapInfo] {
        &self.maps
    }
    /// Call-site nodes, in first-seen order.
    pub fn sites(&self) -> &[SiteInfo] {
        &self.sites
    }
    /// Overlap groups, in first-seen order.
    pub fn overlap_groups(&self) -> &[OverlapGroup] {
        &self.overlap_groups
    }
    /// The goroutine node `id`.
    pub fn goroutine(&self, id: GoroutineId) -> &GoroutineInfo {
        &self.goroutines[id.index()]
    }
    /// The map node `id`.
    pub fn map(&self, id: MapId) -> &MapInfo {
        &self.maps[id.index()]
    }
    /// The call-site node `id`.
    pub fn site(&self, id: SiteId) -> &SiteInfo {
        &self.sites[id.index()]
    }

    /// The tracked map with this identity.
    pub fn find_map(&self, identity: &MapIdentity) -> Option<MapId> {
        self.map_index
            .get(&(identity.address, identity.map_gen))
            .map(|&i| MapId(i))
    }

    /// Goroutine → map edges with their counts, in no particular order.
    pub fn goroutine_edges(&self) -> impl Iterator<Item = (GoroutineId, MapId, &OpCounts)> {
        self.goroutine_edges
            .iter()
            .map(|(&(g, m), c)| (GoroutineId(g), MapId(m), c))
    }

    /// Call site → map edges with their counts, in no particular order.
    pub fn site_edges(&self) -> impl Iterator<Item = (SiteId, MapId, &OpCounts)> {
        self.site_edges
            .iter()
            .map(|(&(s, m), c)| (SiteId(s), MapId(m), c))
    }

    /// Goroutine → call site edges with their counts, in no particular order.
    pub fn goroutine_site_edges(&self) -> impl Iterator<Item = (GoroutineId, SiteId, &OpCounts)> {
        self.goroutine_site_edges
            .iter()
            .map(|(&(g, s), c)| (GoroutineId(g), SiteId(s), c))
    }

    fn touch(&mut self, ts: u64) {
        self.first_ts_ns = self.first_ts_ns.min(ts);
        self.last_ts_ns = self.last_ts_ns.max(ts);
    }

    fn map_id(
        &mut self,
        address: u64,
        map_gen: u32,
        ts: u64,
        b: &mut Budget,
        force: bool,
    ) -> Option<u32> {
        if let Some(&id) = self.map_index.get(&(address, map_gen)) {
            let m = &mut self.maps[id as usize];
            m.first_ts_ns = m.first_ts_ns.min(ts);
            m.last_ts_ns = m.last_ts_ns.max(ts);
            return Some(id);
        }
        if !force && b.usage.maps >= b.limits.max_maps {
            return None;
        }
        b.usage.maps += 1;
        let id = self.maps.len() as u32;
        let identity = MapIdentity {
            pid: self.pid,
            address,
            map_gen,
        };
        self.maps.push(MapInfo::new(identity, ts));
        self.map_index.insert((address, map_gen), id);
        Some(id)
    }

    fn site_id(
        &mut self,
        function: &str,
        file: &str,
        line: u32,
        runtime_fn: &str,
        b: &mut Budget,
        force: bool,
    ) -> Option<u32> {
        let sites = &self.sites;
        if let Some(ids) = self.site_index.get(function)
            && let Some(&id) = ids.iter().find(|&&i| {
                let s = &sites[i as usize].site;
                s.line == line && s.file == file
            })
        {
            return Some(id);
        }
        if !force && b.usage.sites >= b.limits.max_sites {
            return None;
        }
        b.usage.sites += 1;
        let id = self.sites.len() as u32;
        self.sites.push(SiteInfo {
            site: CallSite {
                function: function.to_owned(),
                file: file.to_owned(),
                line,
            },
            runtime_fn: runtime_fn.to_owned(),
            ops: OpCounts::default(),
        });
        self.site_index.entry(function.into()).or_default().push(id);
        Some(id)
    }

    fn goroutine_id(&mut self, goid: u64, ts: u64, b: &mut Budget) -> Option<u32> {
        if let Some(&id) = self.goroutine_index.get(&goid) {
            return Some(id);
        }
        if b.usage.goroutines >= b.limits.max_goroutines {
            return None;
        }
        b.usage.goroutines += 1;
        let id = self.goroutines.len() as u32;
        self.goroutines.push(GoroutineInfo {
            goid,
            ops: OpCounts::default(),
            first_ts_ns: ts,
            last_ts_ns: ts,
            first_site: None,
            last_tid: 0,
        });
        self.goroutine_index.insert(goid, id);
        Some(id)
    }

    /// An access, or `n` of them counted together (`access_counts`).
    fn ingest_access(&mut self, a: &Access, n: u64, b: &mut Budget) {
        self.accesses += n;
        self.touch(a.ts_ns);
        let map = self.map_id(a.map, a.map_gen, a.ts_ns, b, false);
        match map {
            Some(m) => {
                let info = &mut self.maps[m as usize];
                info.ops.add(a.op);
                if a.op == MapOp::Make && info.make_site.is_none() {
                    info.make_site = Some(CallSite {
                        function: a.function.clone(),
                        file: a.file.clone(),
                        line: a.line,
                    });
                    info.made_by = Some(a.goid);
                }
                if info.type_name.is_none() {
                    info.type_name.clone_from(&a.map_type);
                }
                if info.global.is_none() {
                    info.global.clone_from(&a.map_global);
                }
            }
            None => b.truncation.maps += 1,
        }
        let site = self.site_id(&a.function, &a.file, a.line, &a.runtime_fn, b, false);
        match site {
            Some(s) => self.sites[s as usize].ops.add(a.op),
            None => b.truncation.sites += 1,
        }
        let goroutine = self.goroutine_id(a.goid, a.ts_ns, b);
        match goroutine {
            Some(g) => {
                let info = &mut self.goroutines[g as usize];
                info.ops.add(a.op);
                info.first_ts_ns = info.first_ts_ns.min(a.ts_ns);
                info.last_ts_ns = info.last_ts_ns.max(a.ts_ns);
                info.last_tid = a.tid;
                if info.first_site.is_none() {
                    info.first_site = site.map(SiteId);
                }
            }
            None => b.truncation.goroutines += 1,
        }
        if let Some(m) = map {
            if let Some(g) = goroutine {
                count_edge(&mut self.goroutine_edges, (g, m), a.op, n, b);
            }
            if let Some(s) = site {
                count_edge(&mut self.site_edges, (s, m), a.op, n, b);
            }
        }
        if let (Some(g), Some(s)) = (goroutine, site) {
            count_edge(&mut self.goroutine_site_edges, (g, s), a.op, n, b);
        }
    }

    fn ingest_overlap(&mut self, o: &Overlap, b: &mut Budget) {
        self.overlap_events += 1;
        self.touch(o.ts_ns);
        // Overlaps are the findings that matter most: their nodes bypass the
        // node caps, bounded instead by the overlap-group cap (at most three
        // forced nodes per group).
        let room = b.usage.overlap_groups < b.limits.max_overlap_groups;
        let Some(m) = self.map_id(o.map, o.map_gen, o.ts_ns, b, room) else {
            b.truncation.overlap_groups += 1;
            return;
        };
        let info = &mut self.maps[m as usize];
        info.overlaps += 1 + o.suppressed;
        if info.type_name.is_none() {
            info.type_name.clone_from(&o.map_type);
        }
        if info.global.is_none() {
            info.global.clone_from(&o.map_global);
        }
        let (f, s) = (&o.first, &o.second);
        let first = self.site_id(&f.function, &f.file, f.line, &f.runtime_fn, b, room);
        let second = self.site_id(&s.function, &s.file, s.line, &s.runtime_fn, b, room);
        let (Some(first), Some(second)) = (first, second) else {
            b.truncation.overlap_groups += 1;
            return;
        };
        let (a, b_side) = ((first, f.op), (second, s.op));
        let key = if a <= b_side {
            (m, a, b_side)
        } else {
            (m, b_side, a)
        };
        let idx = match self.overlap_index.get(&key) {
            Some(&i) => i,
            None if room => {
                b.usage.overlap_groups += 1;
                self.overlap_groups.push(OverlapGroup {
                    map: MapId(m),
                    first_site: SiteId(first),
                    second_site: SiteId(second),
                    first_ops: OpSet::default(),
                    second_ops: OpSet::default(),
                    count: 0,
                    first_ts_ns: o.ts_ns,
                    last_ts_ns: o.ts_ns,
                    detections: Vec::new(),
                    first_goids: Vec::new(),
                    second_goids: Vec::new(),
                    example: o.clone(),
                });
                self.overlap_index
                    .insert(key, self.overlap_groups.len() - 1);
                self.overlap_groups.len() - 1
            }
            None => {
                b.truncation.overlap_groups += 1;
                return;
            }
        };
        let g = &mut self.overlap_groups[idx];
        // Orient this overlap the way its group was first seen.
        let (f, s) = if (g.first_site.0, g.example.first.op) == (first, f.op) {
            (f, s)
        } else {
            (s, f)
        };
        // Identical overlaps the kernel held back are instances of this one.
        g.count += 1 + o.suppressed;
        g.first_ts_ns = g.first_ts_ns.min(o.ts_ns);
        g.last_ts_ns = g.last_ts_ns.max(o.ts_ns);
        g.first_ops.insert(f.op);
        g.second_ops.insert(s.op);
        if !g.detections.contains(&o.detection) {
            g.detections.push(o.detection);
        }
        note_goid(&mut g.first_goids, f.goid);
        note_goid(&mut g.second_goids, s.goid);
    }

    fn set_map_names(
        &mut self,
        address: u64,
        map_gen: u32,
        type_name: Option<String>,
        global: Option<String>,
        b: &mut Budget,
    ) -> bool {
        let ts = self.last_ts_ns;
        let Some(m) = self.map_id(address, map_gen, ts, b, false) else {
            return false;
        };
        let info = &mut self.maps[m as usize];
        if type_name.is_some() {
            info.type_name = type_name;
        }
        if global.is_some() {
            info.global = global;
        }
        true
    }
}

fn count_edge(
    edges: &mut FxHashMap<(u32, u32), OpCounts>,
    key: (u32, u32),
    op: MapOp,
    n: u64,
    b: &mut Budget,
) {
    if let Some(c) = edges.get_mut(&key) {
        c.add_n(op, n);
    } else if b.usage.edges < b.limits.max_edges {
        b.usage.edges += 1;
        edges.entry(key).or_default().add_n(op, n);
    } else {
        b.truncation.edges += 1;
    }
}

/// Per-command counts of one process's bpf(2) calls on one BPF map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpfMapUse {
    /// (command, calls), in first-seen order.
    pub commands: Vec<(String, u64)>,
}

impl BpfMapUse {
    /// Calls of every command.
    pub fn total(&self) -> u64 {
        self.commands.iter().map(|c| c.1).sum()
    }
}

/// Events lost before they reached us, per (pid, what).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LossTally {
    /// Sum of the `count` fields of the `lost` events.
    pub count: u64,
    /// Largest running `total` reported.
    pub reported_total: u64,
}

/// Distinct (pid, what) loss keys kept; more fold into `what = "other"`.
const MAX_LOSS_KEYS: usize = 256;

/// Everything the analysis knows about a session: one [`ProcessGraph`] per
/// PID, BPF-map usage, losses, summaries, and what the caps left out.
///
/// ```
/// use map_auditor::analysis::{AccessGraph, GraphLimits};
/// let mut graph = AccessGraph::new(GraphLimits::default());
/// // graph.ingest(&event) for each decoded event, then:
/// assert!(graph.truncation().is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct AccessGraph {
    limits: GraphLimits,
    usage: Usage,
    truncation: Truncation,
    processes: BTreeMap<u32, ProcessGraph>,
    bpf: FxHashMap<(u32, u32), BpfMapUse>,
    losses: BTreeMap<(u32, String), LossTally>,
    summaries: BTreeMap<u32, Summary>,
    attachments: BTreeMap<u32, AttachReport>,
    alerts: Vec<crate::event::Alert>,
    events: u64,
}

impl AccessGraph {
    /// An empty graph bounded by `limits`.
    pub fn new(limits: GraphLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Take one decoded event into account.
    pub fn ingest(&mut self, event: &AuditEvent) {
        self.events += 1;
        match event {
            AuditEvent::Access(a) => {
                if let Some((p, mut b)) = self.process(a.pid, a.ts_ns) {
                    p.ingest_access(a, 1, &mut b);
                }
            }
            AuditEvent::AccessCounts(c) => {
                let a = Access {
                    ts_ns: c.first_ts_ns,
                    pid: c.pid,
                    tid: c.tid,
                    goid: c.goid,
                    map: c.map,
                    map_gen: c.map_gen,
                    op: c.op,
                    map_type: c.map_type.clone(),
                    map_global: c.map_global.clone(),
                    runtime_fn: c.runtime_fn.clone(),
                    function: c.function.clone(),
                    file: c.file.clone(),
                    line: c.line,
                    stack: Vec::new(),
                };
                if let Some((p, mut b)) = self.process(c.pid, c.first_ts_ns) {
                    p.ingest_access(&a, c.count.max(1), &mut b);
                    p.touch(c.last_ts_ns);
                }
            }
            AuditEvent::Overlap(o) => {
                if let Some((p, mut b)) = self.process(o.pid, o.ts_ns) {
                    p.ingest_overlap(o, &mut b);
                }
            }
            AuditEvent::BpfMap(e) => self.ingest_bpf(e),
            AuditEvent::Attach(r) => {
                if self.attachments.len() < self.limits.max_processes
                    || self.attachments.contains_key(&r.pid)
                {
                    self.attachments.insert(r.pid, r.clone());
                } else {
                    self.truncation.processes += 1;
                }
            }
            AuditEvent::Alert(a) => {
                if self.alerts.len() < self.limits.max_overlap_groups {
                    self.alerts.push(a.clone());
                } else {
                    self.truncation.overlap_groups += 1;
                }
            }
            AuditEvent::Lost(l) => self.ingest_lost(l),
            // Where tracking went: a live-log notice, nothing to analyse.
            AuditEvent::Escalation(_) | AuditEvent::Coverage(_) => {}
            AuditEvent::Summary(s) => {
                if self.summaries.len() < self.limits.max_processes
                    || self.summaries.contains_key(&s.pid)
                {
                    self.summaries.insert(s.pid, s.clone());
                } else {
                    self.truncation.processes += 1;
                }
            }
        }
    }

    fn process(&mut self, pid: u32, ts: u64) -> Option<(&mut ProcessGraph, Budget<'_>)> {
        if !self.processes.contains_key(&pid) && self.processes.len() >= self.limits.max_processes {
            self.truncation.processes += 1;
            return None;
        }
        let p = self
            .processes
            .entry(pid)
            .or_insert_with(|| ProcessGraph::new(pid, ts));
        let b = Budget {
            limits: &self.limits,
            usage: &mut self.usage,
            truncation: &mut self.truncation,
        };
        Some((p, b))
    }

    fn ingest_bpf(&mut self, e: &BpfMapEvent) {
        let key = (e.pid, e.map_id);
        let entry = match self.bpf.get_mut(&key) {
            Some(u) => u,
            None if self.usage.bpf_edges < self.limits.max_bpf_edges => {
                self.usage.bpf_edges += 1;
                self.bpf.entry(key).or_default()
            }
            None => {
                self.truncation.bpf_edges += 1;
                return;
            }
        };
        match entry.commands.iter_mut().find(|c| c.0 == e.cmd) {
            Some(c) => c.1 += 1,
            None => entry.commands.push((e.cmd.clone(), 1)),
        }
    }

    fn ingest_lost(&mut self, l: &Lost) {
        let mut key = (l.pid, l.what.clone());
        if !self.losses.contains_key(&key) && self.losses.len() >= MAX_LOSS_KEYS {
            key = (0, "other".to_owned());
        }
        let t = self.losses.entry(key).or_default();
        t.count += l.count;
        t.reported_total = t.reported_total.max(l.total);
    }

    /// Name a map: its Go type and the global variable holding it, as the
    /// enrichment layer learns them. `None` leaves a known name in place.
    /// Creates the map node if needed (within the caps); returns whether the
    /// map is tracked.
    pub fn set_map_names(
        &mut self,
        map: MapIdentity,
        type_name: Option<String>,
        global: Option<String>,
    ) -> bool {
        match self.process(map.pid, 0) {
            Some((p, mut b)) => {
                p.set_map_names(map.address, map.map_gen, type_name, global, &mut b)
            }
            None => false,
        }
    }

    /// The caps this graph enforces.
    pub fn limits(&self) -> &GraphLimits {
        &self.limits
    }
    /// What the caps kept out so far.
    pub fn truncation(&self) -> &Truncation {
        &self.truncation
    }
    /// Events ingested, of every kind.
    pub fn events(&self) -> u64 {
        self.events
    }
    /// Tracked processes by PID.
    pub fn processes(&self) -> impl Iterator<Item = &ProcessGraph> {
        self.processes.values()
    }
    /// The graph of process `pid`, if tracked.
    pub fn process_graph(&self, pid: u32) -> Option<&ProcessGraph> {
        self.processes.get(&pid)
    }
    /// The tracked map with this identity.
    pub fn map(&self, identity: &MapIdentity) -> Option<&MapInfo> {
        let p = self.processes.get(&identity.pid)?;
        p.find_map(identity).map(|id| p.map(id))
    }
    /// (pid, BPF map id) → per-command counts, in no particular order.
    pub fn bpf_map_uses(&self) -> impl Iterator<Item = ((u32, u32), &BpfMapUse)> {
        self.bpf.iter().map(|(&k, v)| (k, v))
    }
    /// Losses by (pid, what).
    pub fn losses(&self) -> &BTreeMap<(u32, String), LossTally> {
        &self.losses
    }
    /// Last summary per PID.
    /// BPF-map alerts (guarded maps, concurrent and multiple writers), in
    /// arrival order.
    pub fn alerts(&self) -> &[crate::event::Alert] {
        &self.alerts
    }

    /// Attach reports by PID: what was probed in each target, and how.
    pub fn attachments(&self) -> &BTreeMap<u32, AttachReport> {
        &self.attachments
    }

    pub fn summaries(&self) -> &BTreeMap<u32, Summary> {
        &self.summaries
    }
    /// Tracked nodes and edges: (goroutines, maps, sites, edges).
    pub fn size(&self) -> (usize, usize, usize, usize) {
        (
            self.usage.goroutines,
            self.usage.maps,
            self.usage.sites,
            self.usage.edges,
        )
    }
}
