//! What a report shows when the graph is too big to show whole: the ranking
//! of maps, goroutines and call sites, and the top-N subgraph per process
//! that the dot and HTML renderers draw. Deterministic: ties break on ids.

use rustc_hash::FxHashMap;

use crate::analysis::{GoroutineId, MapId, OpCounts, OverlapGroup, ProcessGraph, SiteId};

/// How much of a big graph a report shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// Maps per process in tables and graphs.
    pub top_maps: usize,
    /// Goroutines per process in tables and graphs.
    pub top_goroutines: usize,
    /// Call sites per process in tables and graphs.
    pub top_sites: usize,
    /// Overlap findings and shared maps listed.
    pub top_findings: usize,
    /// Maps, goroutines and call sites drawn per process in graphs (each):
    /// a layered picture stops being readable well before tables do.
    pub graph_top: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            top_maps: 20,
            top_goroutines: 20,
            top_sites: 20,
            top_findings: 50,
            graph_top: 12,
        }
    }
}

/// Distinct mutating goroutines per map (goid 0, unknown, left out).
pub(crate) fn writer_counts(p: &ProcessGraph) -> FxHashMap<MapId, usize> {
    let mut out: FxHashMap<MapId, usize> = FxHashMap::default();
    for (g, m, c) in p.goroutine_edges() {
        if c.mutations() > 0 && p.goroutine(g).goid != 0 {
            *out.entry(m).or_default() += 1;
        }
    }
    out
}

/// Maps, most interesting first: overlaps, then writer goroutines, then
/// accesses.
pub(crate) fn ranked_maps(p: &ProcessGraph) -> Vec<MapId> {
    let writers = writer_counts(p);
    let mut ids: Vec<MapId> = (0..p.maps().len()).map(map_id).collect();
    ids.sort_by_key(|&m| {
        let info = p.map(m);
        let w = writers.get(&m).copied().unwrap_or(0);
        (
            std::cmp::Reverse(info.overlaps),
            std::cmp::Reverse(w),
            std::cmp::Reverse(info.ops.total()),
            m,
        )
    });
    ids
}

/// Goroutines by accesses, most first.
pub(crate) fn ranked_goroutines(p: &ProcessGraph) -> Vec<GoroutineId> {
    let mut ids: Vec<GoroutineId> = (0..p.goroutines().len()).map(goroutine_id).collect();
    ids.sort_by_key(|&g| {
        (
            std::cmp::Reverse(p.goroutine(g).ops.total()),
            p.goroutine(g).goid,
        )
    });
    ids
}

/// Call sites by accesses, most first.
pub(crate) fn ranked_sites(p: &ProcessGraph) -> Vec<SiteId> {
    let mut ids: Vec<SiteId> = (0..p.sites().len()).map(site_id).collect();
    ids.sort_by_key(|&s| (std::cmp::Reverse(p.site(s).ops.total()), s));
    ids
}

fn map_id(i: usize) -> MapId {
    MapId::from_index(i)
}
fn goroutine_id(i: usize) -> GoroutineId {
    GoroutineId::from_index(i)
}
fn site_id(i: usize) -> SiteId {
    SiteId::from_index(i)
}

/// The part of one process's graph a picture shows.
pub(crate) struct ProcessView<'a> {
    pub p: &'a ProcessGraph,
    pub maps: Vec<MapId>,
    pub goroutines: Vec<GoroutineId>,
    pub sites: Vec<SiteId>,
    pub goroutine_edges: Vec<(GoroutineId, MapId, OpCounts)>,
    pub site_edges: Vec<(SiteId, MapId, OpCounts)>,
    /// Who ran the shown call sites.
    pub goroutine_site_edges: Vec<(GoroutineId, SiteId, OpCounts)>,
    /// Overlap groups on shown maps.
    pub overlaps: Vec<&'a OverlapGroup>,
    pub hidden_maps: usize,
    pub hidden_goroutines: usize,
    pub hidden_sites: usize,
}

impl<'a> ProcessView<'a> {
    /// Top maps, then the goroutines and sites that touch them most; sites
    /// of overlaps on shown maps are always shown.
    pub fn new(p: &'a ProcessGraph, opts: &RenderOptions) -> Self {
        Self::of_maps(p, opts, |_| true)
    }

    /// As [`ProcessView::new`], drawing only the maps `keep` accepts.
    pub fn of_maps(
        p: &'a ProcessGraph,
        opts: &RenderOptions,
        keep: impl Fn(MapId) -> bool,
    ) -> Self {
        let mut maps = ranked_maps(p);
        maps.retain(|&m| keep(m));
        maps.truncate(opts.graph_top);
        let shown_map = |m: &MapId| maps.contains(m);

        let mut g_weight: FxHashMap<GoroutineId, u64> = FxHashMap::default();
        for (g, m, c) in p.goroutine_edges() {
            if shown_map(&m) {
                *g_weight.entry(g).or_default() += c.total();
            }
        }
        let mut goroutines: Vec<GoroutineId> = g_weight.keys().copied().collect();
        goroutines.sort_by_key(|g| (std::cmp::Reverse(g_weight[g]), p.goroutine(*g).goid));
        goroutines.truncate(opts.graph_top);

        let overlaps: Vec<&OverlapGroup> = p
            .overlap_groups()
            .iter()
            .filter(|o| shown_map(&o.map))
            .collect();
        let mut s_weight: FxHashMap<SiteId, u64> = FxHashMap::default();
        for (s, m, c) in p.site_edges() {
            if shown_map(&m) {
                *s_weight.entry(s).or_default() += c.total();
            }
        }
        let mut sites: Vec<SiteId> = s_weight.keys().copied().collect();
        sites.sort_by_key(|s| (std::cmp::Reverse(s_weight[s]), *s));
        sites.truncate(opts.graph_top);
        for o in &overlaps {
            for s in [o.first_site, o.second_site] {
                if !sites.contains(&s) {
                    sites.push(s);
                }
            }
        }

        let mut goroutine_edges: Vec<_> = p
            .goroutine_edges()
            .filter(|(g, m, _)| shown_map(m) && goroutines.contains(g))
            .map(|(g, m, c)| (g, m, *c))
            .collect();
        goroutine_edges.sort_by_key(|e| (p.goroutine(e.0).goid, e.1));
        let mut site_edges: Vec<_> = p
            .site_edges()
            .filter(|(s, m, _)| shown_map(m) && sites.contains(s))
            .map(|(s, m, c)| (s, m, *c))
            .collect();
        site_edges.sort_by_key(|e| (e.0, e.1));
        let mut goroutine_site_edges: Vec<_> = p
            .goroutine_site_edges()
            .filter(|(g, s, _)| goroutines.contains(g) && sites.contains(s))
            .map(|(g, s, c)| (g, s, *c))
            .collect();
        goroutine_site_edges.sort_by_key(|e| (p.goroutine(e.0).goid, e.1));

        Self {
            hidden_maps: p.maps().len() - maps.len(),
            hidden_goroutines: p.goroutines().len() - goroutines.len(),
            hidden_sites: p.sites().len().saturating_sub(sites.len()),
            p,
            maps,
            goroutines,
            sites,
            goroutine_edges,
            site_edges,
            goroutine_site_edges,
            overlaps,
        }
    }

    /// "showing 20 of 312 maps, ..." when anything is hidden.
    pub fn hidden_note(&self) -> Option<String> {
        if self.hidden_maps + self.hidden_goroutines + self.hidden_sites == 0 {
            return None;
        }
        Some(format!(
            "showing the top {} of {} maps, {} of {} goroutines, {} of {} call sites",
            self.maps.len(),
            self.p.maps().len(),
            self.goroutines.len(),
            self.p.goroutines().len(),
            self.sites.len(),
            self.p.sites().len()
        ))
    }

    /// Is this site → map edge one side of an overlap?
    pub fn is_overlap_edge(&self, s: SiteId, m: MapId) -> bool {
        self.overlaps
            .iter()
            .any(|o| o.map == m && (o.first_site == s || o.second_site == s))
    }
}
