//! The Graphviz report: one cluster per process with goroutines, call sites
//! and maps (top N of each, said in the cluster label), edges labelled with
//! per-operation counts, overlaps in red; and process → BPF map edges.

use std::fmt::Write;

use crate::analysis::AuditReport;

use super::view::{ProcessView, RenderOptions};

/// Quote and escape a string for a dot attribute value.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Node ids, unique across processes.
pub(crate) fn map_node(pid: u32, index: usize) -> String {
    format!("p{pid}_m{index}")
}
pub(crate) fn goroutine_node(pid: u32, goid: u64) -> String {
    format!("p{pid}_g{goid}")
}
pub(crate) fn site_node(pid: u32, index: usize) -> String {
    format!("p{pid}_s{index}")
}

/// Render the graph as a Graphviz `digraph`.
pub fn render_dot(report: &AuditReport, opts: &RenderOptions) -> String {
    let mut out = String::from(
        "digraph map_auditor {\n  rankdir=LR;\n  node [fontname=\"monospace\", fontsize=10];\n  edge [fontname=\"monospace\", fontsize=9];\n",
    );
    for p in report.graph.processes() {
        let v = ProcessView::new(p, opts);
        let pid = p.pid;
        let mut label = format!(
            "pid {pid}: {} accesses, {} overlaps",
            p.accesses, p.overlap_events
        );
        if let Some(note) = v.hidden_note() {
            label.push('\n');
            label.push_str(&note);
        }
        let _ = writeln!(
            out,
            "  subgraph cluster_p{pid} {{\n    label={};",
            quote(&label)
        );
        for &g in &v.goroutines {
            let info = p.goroutine(g);
            let _ = writeln!(
                out,
                "    {} [shape=ellipse, label={}];",
                goroutine_node(pid, info.goid),
                quote(&format!("goroutine {}", info.goid))
            );
        }
        for &s in &v.sites {
            let _ = writeln!(
                out,
                "    {} [shape=note, label={}];",
                site_node(pid, s.index()),
                quote(&p.site(s).site.to_string())
            );
        }
        for &m in &v.maps {
            let info = p.map(m);
            let mut label = info.label();
            if let Some(t) = &info.type_name {
                label.push('\n');
                label.push_str(t);
            }
            label.push('\n');
            label.push_str(&info.identity.to_string());
            let style = if info.overlaps > 0 {
                label.push_str(&format!("\n{} overlaps", info.overlaps));
                ", color=red, penwidth=2"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} [shape=box, label={}{style}];",
                map_node(pid, m.index()),
                quote(&label)
            );
        }
        for (g, m, c) in &v.goroutine_edges {
            let _ = writeln!(
                out,
                "    {} -> {} [label={}];",
                goroutine_node(pid, p.goroutine(*g).goid),
                map_node(pid, m.index()),
                quote(&c.short())
            );
        }
        for (s, m, c) in &v.site_edges {
            let style = if v.is_overlap_edge(*s, *m) {
                ", color=red, penwidth=2"
            } else {
                ", style=dashed"
            };
            let _ = writeln!(
                out,
                "    {} -> {} [label={}{style}];",
                site_node(pid, s.index()),
                map_node(pid, m.index()),
                quote(&c.short())
            );
        }
        for o in &v.overlaps {
            let _ = writeln!(
                out,
                "    {} -> {} [label={}, color=red, style=bold, dir=both];",
                site_node(pid, o.first_site.index()),
                site_node(pid, o.second_site.index()),
                quote(&format!("overlap x{}", o.count))
            );
        }
        out.push_str("  }\n");
    }
    let bpf = &report.findings.bpf_maps;
    if !bpf.is_empty() {
        out.push_str("  subgraph cluster_bpf {\n    label=\"bpf(2) on BPF maps\";\n");
        let mut ranked: Vec<_> = bpf.iter().collect();
        ranked.sort_by_key(|e| (std::cmp::Reverse(e.total), e.pid, e.map_id));
        ranked.truncate(opts.graph_top.max(1) * 2);
        let mut pids: Vec<u32> = ranked.iter().map(|e| e.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        let mut ids: Vec<u32> = ranked.iter().map(|e| e.map_id).collect();
        ids.sort_unstable();
        ids.dedup();
        for pid in pids {
            let _ = writeln!(out, "    bpf_p{pid} [shape=ellipse, label=\"pid {pid}\"];");
        }
        for id in ids {
            let _ = writeln!(
                out,
                "    bpf_m{id} [shape=cylinder, label=\"BPF map {id}\"];"
            );
        }
        for e in ranked {
            let cmds: Vec<String> = e.commands.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let _ = writeln!(
                out,
                "    bpf_p{} -> bpf_m{} [label={}];",
                e.pid,
                e.map_id,
                quote(&cmds.join("\n"))
            );
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}
