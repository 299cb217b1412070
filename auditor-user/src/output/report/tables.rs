//! The report's tables and accounting lines, built once from an
//! [`AuditReport`] and drawn by the text and HTML renderers alike.

use crate::analysis::{ALL_OPS, AuditReport, MapId, MapIdentity, ProcessGraph};

use super::origin::map_origins;
use super::view::{RenderOptions, ranked_goroutines, ranked_maps, ranked_sites, writer_counts};

/// A titled table; `numeric` columns are right-aligned.
pub(crate) struct Table {
    pub title: String,
    pub notes: Vec<String>,
    pub headers: Vec<&'static str>,
    pub numeric: Vec<bool>,
    pub rows: Vec<Vec<String>>,
    /// Shown folded (collapsed) in HTML: standard-library and init-time maps.
    pub folded: bool,
}

impl Table {
    fn new(title: impl Into<String>, columns: &[(&'static str, bool)]) -> Self {
        Self {
            title: title.into(),
            notes: Vec::new(),
            headers: columns.iter().map(|c| c.0).collect(),
            numeric: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
            folded: false,
        }
    }

    fn shown_of(&mut self, shown: usize, total: usize, what: &str) {
        if shown < total {
            self.notes.push(format!("top {shown} of {total} {what}"));
        }
    }
}

/// Timestamps in reports are relative to the first event of the session.
pub(crate) fn session_start(report: &AuditReport) -> u64 {
    report
        .graph
        .processes()
        .map(|p| p.first_ts_ns)
        .min()
        .unwrap_or(0)
}

/// `+1.234567s` after the session start.
pub(crate) fn rel(ts: u64, start: u64) -> String {
    format!("+{:.6}s", ts.saturating_sub(start) as f64 / 1e9)
}

/// A map's full description, or its identity when it is not tracked.
pub(crate) fn map_name(report: &AuditReport, m: &MapIdentity) -> String {
    report
        .graph
        .map(m)
        .map(|i| i.describe())
        .unwrap_or_else(|| m.to_string())
}

/// Maps mutated by several goroutines, across processes.
pub(crate) fn shared_maps_table(report: &AuditReport, opts: &RenderOptions) -> Table {
    let mut t = Table::new(
        "Shared mutable maps (written by 2+ goroutines: check that one lock covers every access, overlap caught or not)",
        &[
            ("rank", true),
            ("map", false),
            ("pid", true),
            ("writers", true),
            ("writer goroutines", false),
            ("readers", true),
            ("reads", true),
            ("overlaps", true),
            ("mutations", true),
            ("accesses", true),
        ],
    );
    let all = &report.findings.shared_maps;
    t.shown_of(all.len().min(opts.top_findings), all.len(), "shared maps");
    for (i, s) in all.iter().take(opts.top_findings).enumerate() {
        let mut goids: Vec<String> = s
            .writer_goroutines
            .iter()
            .take(6)
            .map(|g| g.to_string())
            .collect();
        if s.writer_goroutines.len() > 6 {
            goids.push(format!("+{}", s.writer_goroutines.len() - 6));
        }
        t.rows.push(vec![
            (i + 1).to_string(),
            map_name(report, &s.map),
            s.map.pid.to_string(),
            s.writer_goroutines.len().to_string(),
            goids.join(","),
            s.reader_goroutines.to_string(),
            s.reads.to_string(),
            s.overlaps.to_string(),
            s.mutations.to_string(),
            s.accesses.to_string(),
        ]);
    }
    t
}

/// Per-process tables: maps, goroutines, call sites.
pub(crate) fn process_tables(
    report: &AuditReport,
    p: &ProcessGraph,
    opts: &RenderOptions,
) -> Vec<Table> {
    let start = session_start(report);
    let mut op_cols: Vec<(&'static str, bool)> =
        ALL_OPS.iter().map(|op| (op.as_str(), true)).collect();

    let mut cols = vec![("map", false), ("made at", false), ("type", false)];
    cols.append(&mut op_cols.clone());
    cols.extend([("writers", true), ("overlaps", true)]);
    let origins = map_origins(p, main_module(report, p.pid));
    let mut maps = Table::new(format!("Maps of pid {}", p.pid), &cols);
    let mut folded = Table::new(
        format!("Standard-library and init-time maps of pid {}", p.pid),
        &cols,
    );
    folded.folded = true;
    folded.notes.push(
        "Maps only the Go standard library or package initialisation touched, with no overlap and at most one writing goroutine.".into(),
    );
    let writers = writer_counts(p);
    let ranked = ranked_maps(p);
    let (own, library): (Vec<MapId>, Vec<MapId>) = ranked
        .into_iter()
        .partition(|m| !origins[m.index()].is_folded());
    maps.shown_of(own.len().min(opts.top_maps), own.len(), "maps");
    folded.shown_of(library.len().min(opts.top_maps), library.len(), "maps");
    let map_row = |m: MapId| {
        let info = p.map(m);
        let mut row = vec![
            info.global
                .clone()
                .unwrap_or_else(|| info.identity.to_string()),
            info.make_site
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            info.type_name.clone().unwrap_or_else(|| "-".into()),
        ];
        row.extend(ALL_OPS.iter().map(|&op| info.ops.get(op).to_string()));
        row.push(writers.get(&m).copied().unwrap_or(0).to_string());
        row.push(info.overlaps.to_string());
        row
    };
    maps.rows = own
        .iter()
        .take(opts.top_maps)
        .map(|&m| map_row(m))
        .collect();
    folded.rows = library
        .iter()
        .take(opts.top_maps)
        .map(|&m| map_row(m))
        .collect();

    let mut cols = vec![("goroutine", true)];
    cols.append(&mut op_cols);
    cols.extend([
        ("maps", true),
        ("first seen", false),
        ("first access at", false),
    ]);
    let mut gs = Table::new(format!("Goroutines of pid {}", p.pid), &cols);
    let mut maps_per_goroutine = vec![0usize; p.goroutines().len()];
    for (g, _, _) in p.goroutine_edges() {
        maps_per_goroutine[g.index()] += 1;
    }
    let ranked = ranked_goroutines(p);
    gs.shown_of(
        ranked.len().min(opts.top_goroutines),
        ranked.len(),
        "goroutines",
    );
    for &g in ranked.iter().take(opts.top_goroutines) {
        let info = p.goroutine(g);
        let mut row = vec![if info.goid == 0 {
            "0 (unknown)".into()
        } else {
            info.goid.to_string()
        }];
        row.extend(ALL_OPS.iter().map(|&op| info.ops.get(op).to_string()));
        row.push(maps_per_goroutine[g.index()].to_string());
        row.push(rel(info.first_ts_ns, start));
        row.push(
            info.first_site
                .map(|s| p.site(s).site.to_string())
                .unwrap_or_else(|| "-".into()),
        );
        gs.rows.push(row);
    }

    let mut sites = Table::new(
        format!("Top call sites of pid {}", p.pid),
        &[
            ("call site", false),
            ("runtime function", false),
            ("ops", false),
            ("accesses", true),
            ("maps", true),
        ],
    );
    let mut maps_per_site = vec![0usize; p.sites().len()];
    for (s, _, _) in p.site_edges() {
        maps_per_site[s.index()] += 1;
    }
    let ranked = ranked_sites(p);
    sites.shown_of(ranked.len().min(opts.top_sites), ranked.len(), "call sites");
    for &s in ranked.iter().take(opts.top_sites) {
        let info = p.site(s);
        sites.rows.push(vec![
            info.site.to_string(),
            info.runtime_fn.clone(),
            info.ops.short(),
            info.ops.total().to_string(),
            maps_per_site[s.index()].to_string(),
        ]);
    }
    vec![maps, folded, gs, sites]
}

/// The program's own module path, from the attach report.
pub(crate) fn main_module(report: &AuditReport, pid: u32) -> Option<&str> {
    report
        .graph
        .attachments()
        .get(&pid)
        .and_then(|a| a.module.as_deref())
}

/// Process → BPF map usage.
pub(crate) fn bpf_table(report: &AuditReport, opts: &RenderOptions) -> Table {
    let mut t = Table::new(
        "BPF maps touched through bpf(2)",
        &[
            ("pid", true),
            ("map id", true),
            ("calls", true),
            ("commands", false),
        ],
    );
    let all = &report.findings.bpf_maps;
    let mut ranked: Vec<_> = all.iter().collect();
    ranked.sort_by_key(|e| (std::cmp::Reverse(e.total), e.pid, e.map_id));
    let n = opts.top_findings.max(opts.top_maps);
    t.shown_of(ranked.len().min(n), ranked.len(), "process → map edges");
    for e in ranked.into_iter().take(n) {
        let cmds: Vec<String> = e.commands.iter().map(|(c, n)| format!("{c} {n}")).collect();
        t.rows.push(vec![
            e.pid.to_string(),
            e.map_id.to_string(),
            e.total.to_string(),
            cmds.join(", "),
        ]);
    }
    t
}

/// Loss, skip and truncation lines; the truncation line is always there.
pub(crate) fn accounting_lines(report: &AuditReport) -> Vec<String> {
    let g = &report.graph;
    let mut out = Vec::new();
    for ((pid, what), t) in g.losses() {
        out.push(format!(
            "lost: {} {what} events before they reached map-auditor (pid {pid}, running total {})",
            t.count, t.reported_total
        ));
    }
    for (pid, s) in g.summaries() {
        if s.dropped > 0 {
            out.push(format!(
                "dropped: {} events (pid {pid}, session summary)",
                s.dropped
            ));
        }
    }
    if let Some(r) = &report.recording {
        for (kind, n) in &r.unknown_kinds {
            out.push(format!(
                "skipped: {n} events of unknown kind `{kind}` (recorded by a newer map-auditor?)"
            ));
        }
    }
    let trunc = g.truncation().lines(g.limits());
    if trunc.is_empty() {
        let l = g.limits();
        out.push(format!(
            "truncated: nothing (caps: {} edges, {} maps, {} goroutines, {} call sites, {} overlap groups, {} processes)",
            l.max_edges, l.max_maps, l.max_goroutines, l.max_sites, l.max_overlap_groups, l.max_processes
        ));
    } else {
        out.extend(trunc);
    }
    out
}
