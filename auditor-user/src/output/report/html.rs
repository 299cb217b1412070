//! The HTML report: one self-contained page (inline CSS, a few lines of
//! inline JS for sortable tables, inline SVG graphs) that opens offline and
//! can be mailed or attached to a ticket as a single file.

use std::fmt::Write;

use crate::analysis::AuditReport;

use super::origin::map_origins;
use super::session::{session_facts, span_text};
use super::svg::{escape, render_svg};
use super::tables::{
    Table, accounting_lines, bpf_table, main_module, map_name, process_tables, rel, session_start,
    shared_maps_table,
};
use super::text::headline;
use super::view::{ProcessView, RenderOptions};

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; cursor: pointer; user-select: none; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, td { font-family: ui-monospace, monospace; font-size: 12.5px; }
.overlap { border-left: 4px solid #c00; padding: .3em 1em; margin: 1em 0; background: #fff6f6; }
.note { color: #666; } .ok { color: #070; }
.graph { overflow: auto; border: 1px solid #ddd; max-height: 80vh; }
ul.acct { font-family: ui-monospace, monospace; }
table.session { margin: .3em 0 1em; } table.session th { cursor: default; background: none; font-weight: 600; }
details.folded { margin: 1em 0; } details.folded > summary { cursor: pointer; color: #555; }
";

/// Click a header to sort its table; numbers sort as numbers.
const SCRIPT: &str = "
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var up = th.dataset.dir !== 'up'; th.dataset.dir = up ? 'up' : 'down';
    rows.sort(function (a, b) {
      var x = a.cells[th.cellIndex].textContent, y = b.cells[th.cellIndex].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return up ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
";

/// Render the whole report as one HTML page: the session header, the races
/// (stacks open), shared maps, then per process the access graph of the
/// program's own maps (standard-library and init-time maps folded) and its
/// tables.
pub fn render_html(report: &AuditReport, opts: &RenderOptions) -> String {
    let mut out =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(
        out,
        "<title>map-auditor report</title>\n<style>{STYLE}</style>\n</head>\n<body>"
    );
    out.push_str("<h1>map-auditor report</h1>\n");
    session_header(&mut out, report);
    let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(&headline(report)));

    overlaps(&mut out, report, opts);
    let shared = shared_maps_table(report, opts);
    if shared.rows.is_empty() {
        out.push_str("<h2>Shared mutable maps</h2>\n<p class=\"ok\">None: no map was mutated by two or more goroutines.</p>\n");
    } else {
        table(&mut out, &shared);
    }

    for p in report.graph.processes() {
        let origins = map_origins(p, main_module(report, p.pid));
        let folded = origins.iter().filter(|o| o.is_folded()).count();
        let own = ProcessView::of_maps(p, opts, |m| !origins[m.index()].is_folded());
        let _ = writeln!(out, "<h2>Access graph of pid {}</h2>", p.pid);
        out.push_str("<p class=\"note\">Goroutines, the call sites they ran, the maps those sites touched; edge labels count operations (r read, w write, d delete, i iterate, c clear, m make). Red: overlaps.");
        if let Some(note) = own.hidden_note() {
            let _ = write!(out, " {}.", escape(&note));
        }
        if folded > 0 {
            let _ = write!(
                out,
                " {folded} standard-library and init-time map(s) are folded below."
            );
        }
        out.push_str("</p>\n");
        if own.maps.is_empty() {
            out.push_str("<p class=\"note\">No map of the program's own code was seen.</p>\n");
        } else {
            out.push_str("<div class=\"graph\" data-maps=\"own\">\n");
            out.push_str(&render_svg(&own));
            out.push_str("</div>\n");
        }
        if folded > 0 {
            let all = ProcessView::new(p, opts);
            let _ = writeln!(
                out,
                "<details class=\"folded\"><summary>Show the graph with the {folded} standard-library and init-time map(s)</summary>\n<div class=\"graph\" data-maps=\"all\">"
            );
            out.push_str(&render_svg(&all));
            out.push_str("</div>\n</details>\n");
        }
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
    out.push_str("<h2>Accounting</h2>\n<ul class=\"acct\">\n");
    for l in accounting_lines(report) {
        let _ = writeln!(out, "<li>{}</li>", escape(&l));
    }
    let _ = writeln!(out, "</ul>\n<script>{SCRIPT}</script>\n</body>\n</html>");
    out
}

/// Per process: executable, Go version, detection mode, time span and how
/// the target ended.
fn session_header(out: &mut String, report: &AuditReport) {
    let facts = session_facts(report);
    if facts.is_empty() {
        return;
    }
    out.push_str("<header class=\"session\">\n");
    for f in facts {
        let _ = writeln!(out, "<table class=\"session\" data-pid=\"{}\">", f.pid);
        let unknown = || "unknown (no attach report recorded)".to_string();
        let rows = [
            ("process", f.pid.to_string()),
            ("executable", f.exe.unwrap_or_else(unknown)),
            (
                "Go version",
                match (f.go_version, f.module) {
                    (Some(v), Some(m)) => format!("{v}, module {m}"),
                    (Some(v), None) => v,
                    (None, _) => unknown(),
                },
            ),
            ("detection", f.detection.unwrap_or_else(unknown)),
            (
                "session",
                f.span.map(span_text).unwrap_or_else(|| "no events".into()),
            ),
            ("target ended", f.ending),
        ];
        for (name, value) in rows {
            let _ = writeln!(
                out,
                "<tr><th scope=\"row\">{name}</th><td class=\"{}\">{}</td></tr>",
                name.replace(' ', "-"),
                escape(&value)
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</header>\n");
}

fn overlaps(out: &mut String, report: &AuditReport, opts: &RenderOptions) {
    let all = &report.findings.overlaps;
    out.push_str("<section id=\"races\">\n<h2>Overlaps</h2>\n");
    if all.is_empty() {
        out.push_str("<p class=\"ok\">None caught.</p>\n</section>\n");
        return;
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">Two goroutines inside one map at once, one of them mutating: {} race(s), each once whichever side was inside first{}.</p>",
        all.len(),
        if all.len() > opts.top_findings {
            format!(", top {} shown", opts.top_findings)
        } else {
            String::new()
        }
    );
    let start = session_start(report);
    for o in all.iter().take(opts.top_findings) {
        let side = |s: &crate::analysis::OverlapSide| {
            let goids: Vec<String> = s.goroutines.iter().map(|g| g.to_string()).collect();
            let mut html = format!(
                "<b>{}</b> at <code>{}</code> by goroutine {}",
                escape(&s.ops.names()),
                escape(&s.site.to_string()),
                goids.join(", ")
            );
            if !s.example_stack.is_empty() {
                html.push_str("<details open><summary>stack</summary><pre>");
                for f in &s.example_stack {
                    html.push_str(&escape(&format!(
                        "{} {}:{} ({:#x})\n",
                        f.function, f.file, f.line, f.pc
                    )));
                }
                html.push_str("</pre></details>");
            }
            html
        };
        let _ = writeln!(
            out,
            "<div class=\"overlap\"><div>map <b>{}</b> (pid {})</div><div>{}</div><div>while</div><div>{}</div><div class=\"note\">{} time(s), first {}, last {}</div></div>",
            escape(&map_name(report, &o.map)),
            o.map.pid,
            side(&o.first),
            side(&o.second),
            o.count,
            rel(o.first_ts_ns, start),
            rel(o.last_ts_ns, start)
        );
    }
    out.push_str("</section>\n");
}

fn table(out: &mut String, t: &Table) {
    if t.folded {
        let _ = writeln!(
            out,
            "<details class=\"folded\"><summary>{} ({})</summary>",
            escape(&t.title),
            t.rows.len()
        );
    } else {
        let _ = writeln!(out, "<h2>{}</h2>", escape(&t.title));
    }
    for n in &t.notes {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(n));
    }
    out.push_str("<table class=\"sortable\">\n<thead><tr>");
    for h in &t.headers {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if t.numeric[i] { " class=\"num\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
    if t.folded {
        out.push_str("</details>\n");
    }
}
