//! Drawing one process's [`ProcessView`] as inline SVG for the HTML report.
//! Layout by the pure-Rust `layout-rs` crate (layered, Graphviz-like); if it
//! fails on some input, a plain three-column layout of our own takes over so
//! the report is still written.

use std::fmt::Write;

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::style::{LineStyleKind, StyleAttr};
use layout::std_shapes::render::get_shape_size;
use layout::std_shapes::shapes::{Arrow, Element, LineEndKind, ShapeKind};
use layout::topo::layout::VisualGraph;

use super::view::ProcessView;

const FONT: usize = 12;
const BLACK: u32 = 0x333333ff;
const RED: u32 = 0xcc0000ff;
const GREY: u32 = 0x888888ff;

/// A node to draw: label, shape and whether it is part of an overlap.
struct Node {
    label: String,
    shape: Shape,
    alarm: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Goroutine,
    Site,
    Map,
}

struct Edge {
    from: usize,
    to: usize,
    label: String,
    alarm: bool,
    dashed: bool,
}

/// Nodes (goroutines, sites, maps in that order) and edges of a view.
fn scene(v: &ProcessView) -> (Vec<Node>, Vec<Edge>) {
    let p = v.p;
    let mut nodes = Vec::new();
    for &g in &v.goroutines {
        nodes.push(Node {
            label: format!("goroutine {}", p.goroutine(g).goid),
            shape: Shape::Goroutine,
            alarm: false,
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
            label: format!("{}\n{}:{}", site.function, site.short_file(), site.line),
            shape: Shape::Site,
            alarm,
        });
    }
    let map_base = nodes.len();
    for &m in &v.maps {
        let info = p.map(m);
        let mut label = info.label();
        if let Some(t) = &info.type_name {
            label.push('\n');
            label.push_str(t);
        }
        if info.global.is_some() || info.make_site.is_some() {
            label.push('\n');
            label.push_str(&info.identity.to_string());
        }
        if info.overlaps > 0 {
            label.push_str(&format!("\n{} overlaps", info.overlaps));
        }
        nodes.push(Node {
            label,
            shape: Shape::Map,
            alarm: info.overlaps > 0,
        });
    }
    let map_at = |m| map_base + v.maps.iter().position(|x| *x == m).unwrap_or(0);
    let mut edges = Vec::new();
    for (g, m, c) in &v.goroutine_edges {
        if let Some(i) = v.goroutines.iter().position(|x| x == g) {
            edges.push(Edge {
                from: i,
                to: map_at(*m),
                label: c.short(),
                alarm: false,
                dashed: false,
            });
        }
    }
    for (s, m, c) in &v.site_edges {
        if let Some(i) = v.sites.iter().position(|x| x == s) {
            let alarm = v.is_overlap_edge(*s, *m);
            edges.push(Edge {
                from: site_base + i,
                to: map_at(*m),
                label: c.short(),
                alarm,
                dashed: !alarm,
            });
        }
    }
    (nodes, edges)
}

/// Inline SVG of the view (no XML prolog, ready to drop into HTML).
pub(crate) fn render_svg(v: &ProcessView) -> String {
    let (nodes, edges) = scene(v);
    if nodes.is_empty() {
        return String::new();
    }
    // layout-rs asserts on inputs it does not expect; a report must still be
    // written, so a panic there falls back to the simple layout.
    let laid_out = std::panic::catch_unwind(|| layered_svg(&nodes, &edges));
    match laid_out {
        Ok(svg) => svg,
        Err(_) => column_svg(&nodes, &edges),
    }
}

fn layered_svg(nodes: &[Node], edges: &[Edge]) -> String {
    let dir = Orientation::LeftToRight;
    let mut vg = VisualGraph::new(dir);
    let handles: Vec<_> = nodes
        .iter()
        .map(|n| {
            let fill = match n.shape {
                Shape::Goroutine => 0xe8f0feff,
                Shape::Site => 0xf5f5f5ff,
                Shape::Map if n.alarm => 0xfde8e8ff,
                Shape::Map => 0xfff8e1ff,
            };
            let line = if n.alarm { RED } else { BLACK };
            let look = StyleAttr::new(
                Color::new(line),
                if n.alarm { 3 } else { 1 },
                Some(Color::new(fill)),
                if n.shape == Shape::Map { 0 } else { 8 },
                FONT,
            );
            let shape = ShapeKind::new_box(&n.label);
            let size = get_shape_size(dir, &shape, FONT, false);
            vg.add_node(Element::create(shape, look, dir, size))
        })
        .collect();
    for e in edges {
        let look = StyleAttr::new(
            Color::new(if e.alarm { RED } else { GREY }),
            if e.alarm { 2 } else { 1 },
            None,
            0,
            FONT - 2,
        );
        let style = if e.dashed {
            LineStyleKind::Dashed
        } else {
            LineStyleKind::Normal
        };
        let arrow = Arrow::new(
            LineEndKind::None,
            LineEndKind::Arrow,
            style,
            &e.label,
            &look,
            &None,
            &None,
        );
        vg.add_edge(arrow, handles[e.from], handles[e.to]);
    }
    let mut svg = SVGWriter::new();
    vg.do_it(false, false, false, &mut svg);
    strip_prolog(svg.finalize())
}

fn strip_prolog(svg: String) -> String {
    match svg.find("<svg") {
        Some(i) => svg[i..].to_owned(),
        None => svg,
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Goroutines | call sites | maps, one column each, straight edges.
fn column_svg(nodes: &[Node], edges: &[Edge]) -> String {
    const ROW: f64 = 46.0;
    const COL: f64 = 360.0;
    let mut pos = Vec::with_capacity(nodes.len());
    let mut rows = [0usize; 3];
    for n in nodes {
        let c = match n.shape {
            Shape::Goroutine => 0,
            Shape::Site => 1,
            Shape::Map => 2,
        };
        pos.push((20.0 + c as f64 * COL, 20.0 + rows[c] as f64 * ROW));
        rows[c] += 1;
    }
    let height = 40.0 + *rows.iter().max().unwrap_or(&1) as f64 * ROW;
    let width = 40.0 + 3.0 * COL;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"monospace\" font-size=\"11\">\n"
    );
    for e in edges {
        let (x1, y1) = pos[e.from];
        let (x2, y2) = pos[e.to];
        let colour = if e.alarm { "#c00" } else { "#888" };
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{x2}\" y2=\"{}\" stroke=\"{colour}\"{}><title>{}</title></line>",
            x1 + 300.0,
            y1 + 16.0,
            y2 + 16.0,
            if e.dashed {
                " stroke-dasharray=\"4 3\""
            } else {
                ""
            },
            escape(&e.label)
        );
    }
    for (n, (x, y)) in nodes.iter().zip(&pos) {
        let stroke = if n.alarm { "#c00" } else { "#333" };
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{y}\" width=\"300\" height=\"34\" rx=\"4\" fill=\"#fafafa\" stroke=\"{stroke}\"/>"
        );
        for (i, line) in n.label.lines().take(2).enumerate() {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\">{}</text>",
                x + 6.0,
                y + 14.0 + i as f64 * 13.0,
                escape(line)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
pub(crate) fn column_svg_for_test(v: &ProcessView) -> String {
    let (nodes, edges) = scene(v);
    column_svg(&nodes, &edges)
}
