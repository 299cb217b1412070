//! The plain-text report: overlaps first with both sides named, then shared
//! mutable maps, per-process tables, BPF maps, and the loss and truncation
//! lines. Columns are aligned; no colour, so it pastes anywhere.

use std::fmt::Write;

use crate::analysis::AuditReport;

use super::tables::{
    Table, accounting_lines, bpf_table, map_name, process_tables, rel, session_start,
    shared_maps_table,
};
use super::view::RenderOptions;

/// Render the whole report as aligned text.
pub fn render_text(report: &AuditReport, opts: &RenderOptions) -> String {
    let mut out = String::new();
    out.push_str(&headline(report));
    out.push('\n');

    overlaps(&mut out, report, opts);
    let shared = shared_maps_table(report, opts);
    if shared.rows.is_empty() {
        out.push_str(
            "\nShared mutable maps: none (no map was mutated by two or more goroutines)\n",
        );
    } else {
        table(&mut out, &shared);
    }
    for p in report.graph.processes() {
        for t in process_tables(report, p, opts) {
            if !t.rows.is_empty() {
                table(&mut out, &t);
            }
        }
    }
    let bpf = bpf_table(report, opts);
    if !bpf.rows.is_empty() {
        table(&mut out, &bpf);
    }
    out.push_str("\nAccounting\n");
    for l in accounting_lines(report) {
        let _ = writeln!(out, "  {l}");
    }
    out
}

/// One line: what the session contained.
pub(crate) fn headline(report: &AuditReport) -> String {
    let g = &report.graph;
    let accesses: u64 = g.processes().map(|p| p.accesses).sum();
    let overlaps: u64 = g.processes().map(|p| p.overlap_events).sum();
    let (goroutines, maps, sites, _) = g.size();
    let mut s = format!(
        "map-auditor report: {} process(es), {accesses} accesses, {overlaps} overlaps, {maps} maps, {goroutines} goroutines, {sites} call sites",
        g.processes().count()
    );
    if let Some(r) = &report.recording {
        let _ = write!(
            s,
            "; from {} ({} lines, {} events)",
            r.source.as_deref().unwrap_or("a recording"),
            r.lines,
            r.events
        );
    }
    s
}

fn overlaps(out: &mut String, report: &AuditReport, opts: &RenderOptions) {
    let all = &report.findings.overlaps;
    if all.is_empty() {
        out.push_str("\nOverlaps: none caught\n");
        return;
    }
    let _ = writeln!(
        out,
        "\nOverlaps (two goroutines inside one map at once, one of them mutating): {} group(s)",
        all.len()
    );
    if all.len() > opts.top_findings {
        let _ = writeln!(out, "  (top {} of {})", opts.top_findings, all.len());
    }
    let start = session_start(report);
    for (i, o) in all.iter().take(opts.top_findings).enumerate() {
        let goids = |v: &[u64]| {
            v.iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let first_op = o.first.ops.names();
        let second_op = o.second.ops.names();
        let w = first_op.len().max(second_op.len());
        let _ = writeln!(
            out,
            "  {}. map {} (pid {})",
            i + 1,
            map_name(report, &o.map),
            o.map.pid
        );
        let _ = writeln!(
            out,
            "       {first_op:<w$}  {}  by goroutine {}",
            o.first.site,
            goids(&o.first.goroutines)
        );
        let _ = writeln!(out, "     while");
        let _ = writeln!(
            out,
            "       {second_op:<w$}  {}  by goroutine {}",
            o.second.site,
            goids(&o.second.goroutines)
        );
        let modes: Vec<String> = o
            .detection
            .iter()
            .map(|d| {
                serde_json::to_value(d)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            })
            .collect();
        let _ = writeln!(
            out,
            "     {} time(s), first {}, last {}, detected by {}",
            o.count,
            rel(o.first_ts_ns, start),
            rel(o.last_ts_ns, start),
            modes.join(", ")
        );
    }
}

/// Draw `t` with aligned columns.
fn table(out: &mut String, t: &Table) {
    let _ = write!(out, "\n{}", t.title);
    if !t.notes.is_empty() {
        let _ = write!(out, " ({})", t.notes.join("; "));
    }
    out.push('\n');
    let mut widths: Vec<usize> = t.headers.iter().map(|h| h.chars().count()).collect();
    for row in &t.rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from(" ");
        for (i, cell) in cells.enumerate() {
            let pad = widths[i] - cell.chars().count();
            s.push(' ');
            if t.numeric[i] {
                s.extend(std::iter::repeat_n(' ', pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', pad));
            }
            s.push(' ');
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(out, &mut t.headers.iter().copied());
    for row in &t.rows {
        line(out, &mut row.iter().map(String::as_str));
    }
}
