//! Drawing one process's [`ProcessView`] as inline SVG for the HTML report,
//! in three columns: goroutines → the call sites they ran → the maps those
//! sites touched. Each column is ordered after the next one (sites by the
//! mean row of their maps, goroutines by the mean row of their sites), so
//! most edges run straight across instead of crossing the page.

use std::fmt::Write;

use rustc_hash::FxHashMap;

use super::view::ProcessView;

const ROW_GAP: f64 = 14.0;
const LINE: f64 = 14.0;
const PAD: f64 = 8.0;
const CHAR: f64 = 7.0;
const COLUMN_GAP: f64 = 150.0;
const MARGIN: f64 = 20.0;

/// The three columns, left to right.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Column {
    Goroutine = 0,
    Site = 1,
    Map = 2,
}

impl Column {
    fn class(self) -> &'static str {
        match self {
            Self::Goroutine => "goroutine",
            Self::Site => "site",
            Self::Map => "map",
        }
    }
}

/// A node to draw: label lines and whether it is part of an overlap.
struct Node {
    lines: Vec<String>,
    column: Column,
    alarm: bool,
}

struct Edge {
    from: usize,
    to: usize,
    label: String,
    alarm: bool,
}

/// Nodes (goroutines, sites, maps in that order) and edges of a view.
fn scene(v: &ProcessView) -> (Vec<Node>, Vec<Edge>) {
    let p = v.p;
    let mut nodes = Vec::new();
    for &g in &v.goroutines {
        let goid = p.goroutine(g).goid;
        nodes.push(Node {
            lines: vec![if goid == 0 {
                "goroutine ? (unknown)".into()
            } else {
                format!("goroutine {goid}")
            }],
            column: Column::Goroutine,
            alarm: v
                .overlaps
                .iter()
                .any(|o| o.first_goids.contains(&goid) || o.second_goids.contains(&goid)),
        });
    }
    let site_base = nodes.len();
    for &s in &v.sites {
        let alarm = v
            .overlaps
            .iter()
            .any(|o| o.first_site == s || o.second_site == s);
        let site = &p.site(s).site;
        nodes.push(Node {
            lines: vec![
                site.function.clone(),
                format!("{}:{}", site.short_file(), site.line),
            ],
            column: Column::Site,
            alarm,
        });
    }
    let map_base = nodes.len();
    for &m in &v.maps {
        let info = p.map(m);
        let mut lines = vec![info.label()];
        if let Some(t) = &info.type_name {
            lines.push(t.clone());
        }
        if info.global.is_some() || info.make_site.is_some() {
            lines.push(info.identity.to_string());
        }
        if info.overlaps > 0 {
            lines.push(format!("{} overlaps", info.overlaps));
        }
        nodes.push(Node {
            lines,
            column: Column::Map,
            alarm: info.overlaps > 0,
        });
    }
    let mut edges = Vec::new();
    for (g, s, c) in &v.goroutine_site_edges {
        let (Some(i), Some(j)) = (
            v.goroutines.iter().position(|x| x == g),
            v.sites.iter().position(|x| x == s),
        ) else {
            continue;
        };
        let goid = p.goroutine(*g).goid;
        let alarm = v.overlaps.iter().any(|o| {
            (o.first_site == *s && o.first_goids.contains(&goid))
                || (o.second_site == *s && o.second_goids.contains(&goid))
        });
        edges.push(Edge {
            from: i,
            to: site_base + j,
            label: c.short(),
            alarm,
        });
    }
    for (s, m, c) in &v.site_edges {
        let (Some(i), Some(j)) = (
            v.sites.iter().position(|x| x == s),
            v.maps.iter().position(|x| x == m),
        ) else {
            continue;
        };
        edges.push(Edge {
            from: site_base + i,
            to: map_base + j,
            label: c.short(),
            alarm: v.is_overlap_edge(*s, *m),
        });
    }
    (nodes, edges)
}

/// Inline SVG of the view (no XML prolog, ready to drop into HTML).
pub(crate) fn render_svg(v: &ProcessView) -> String {
    let (nodes, edges) = scene(v);
    if nodes.is_empty() {
        return String::new();
    }
    column_svg(&nodes, &edges)
}

/// Order within each column: maps as ranked; a site after the mean row of
/// the maps it touches; a goroutine after the mean row of its sites.
fn rows(nodes: &[Node], edges: &[Edge]) -> Vec<f64> {
    let mut row = vec![0.0; nodes.len()];
    let mut next = [0usize; 3];
    for (i, n) in nodes.iter().enumerate() {
        if n.column == Column::Map {
            row[i] = next[2] as f64;
            next[2] += 1;
        }
    }
    for (column, towards) in [
        (Column::Site, Column::Map),
        (Column::Goroutine, Column::Site),
    ] {
        let mut sum: FxHashMap<usize, (f64, f64)> = FxHashMap::default();
        for e in edges {
            if nodes[e.from].column == column && nodes[e.to].column == towards {
                let s = sum.entry(e.from).or_default();
                s.0 += row[e.to];
                s.1 += 1.0;
            }
        }
        let mut members: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].column == column)
            .collect();
        // Nodes without an edge keep their place at the end, in view order.
        let key = |i: &usize| sum.get(i).map_or(f64::MAX, |(t, n)| t / n);
        members.sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.cmp(b)));
        for (r, i) in members.into_iter().enumerate() {
            row[i] = r as f64;
        }
    }
    row
}

/// Goroutines | call sites | maps, one column each, curved edges.
fn column_svg(nodes: &[Node], edges: &[Edge]) -> String {
    let order = rows(nodes, edges);
    let height_of = |n: &Node| 2.0 * PAD + LINE * n.lines.len() as f64;
    let mut widths = [0.0f64; 3];
    for n in nodes {
        let chars = n.lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        let w = &mut widths[n.column as usize];
        *w = w.max(2.0 * PAD + CHAR * chars as f64);
    }
    let mut xs = [MARGIN; 3];
    xs[1] = xs[0] + widths[0] + COLUMN_GAP;
    xs[2] = xs[1] + widths[1] + COLUMN_GAP;

    // Stack each column's nodes top to bottom in their row order.
    let mut pos = vec![(0.0, 0.0); nodes.len()];
    let mut bottom = [MARGIN; 3];
    let mut by_row: Vec<usize> = (0..nodes.len()).collect();
    by_row.sort_by(|&a, &b| order[a].total_cmp(&order[b]));
    for i in by_row {
        let c = nodes[i].column as usize;
        pos[i] = (xs[c], bottom[c]);
        bottom[c] += height_of(&nodes[i]) + ROW_GAP;
    }
    let height = bottom.iter().copied().fold(0.0, f64::max) + MARGIN;
    let width = xs[2] + widths[2] + MARGIN;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"access-graph\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"ui-monospace, monospace\" font-size=\"12\">\n"
    );
    for (c, title) in ["goroutines", "call sites", "maps"].iter().enumerate() {
        let _ = writeln!(
            out,
            "<text class=\"column-title\" x=\"{}\" y=\"{}\" fill=\"#666\">{title}</text>",
            xs[c],
            MARGIN - 6.0
        );
    }
    for e in edges {
        let (fx, fy) = pos[e.from];
        let (tx, ty) = pos[e.to];
        let x1 = fx + widths[nodes[e.from].column as usize];
        let y1 = fy + height_of(&nodes[e.from]) / 2.0;
        let (x2, y2) = (tx, ty + height_of(&nodes[e.to]) / 2.0);
        let bend = (x2 - x1) / 2.0;
        let (colour, stroke_width) = if e.alarm { ("#c00", 2) } else { ("#999", 1) };
        let _ = writeln!(
            out,
            "<g class=\"edge\"><path d=\"M{x1},{y1} C{},{y1} {},{y2} {x2},{y2}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{stroke_width}\"/><text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"{colour}\">{}</text><title>{}</title></g>",
            x1 + bend,
            x2 - bend,
            // The curve's midpoint: edges leaving one node or entering one
            // node part there, so their labels do not sit on each other.
            (x1 + x2) / 2.0 - CHAR * 0.4 * e.label.chars().count() as f64,
            (y1 + y2) / 2.0 - 3.0,
            escape(&e.label),
            escape(&e.label)
        );
    }
    for (n, (x, y)) in nodes.iter().zip(&pos) {
        let (stroke, fill, stroke_width) = match (n.column, n.alarm) {
            (_, true) => ("#c00", "#fde8e8", 2),
            (Column::Goroutine, false) => ("#333", "#e8f0fe", 1),
            (Column::Site, false) => ("#333", "#f5f5f5", 1),
            (Column::Map, false) => ("#333", "#fff8e1", 1),
        };
        let w = widths[n.column as usize];
        let _ = writeln!(
            out,
            "<g class=\"node {}\"><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{}\" rx=\"4\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{stroke_width}\"/>",
            n.column.class(),
            height_of(n)
        );
        for (i, line) in n.lines.iter().enumerate() {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\">{}</text>",
                x + PAD,
                y + PAD + LINE * (i as f64 + 1.0) - 3.0,
                escape(line)
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
