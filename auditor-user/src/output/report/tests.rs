//! Specifications of the report renderers, on the small synthetic session.

use auditor_common::go_map::MapOp;

use super::*;
use crate::analysis::testkit::*;
use crate::analysis::{AccessGraph, AuditReport, GraphLimits};

fn report() -> AuditReport {
    AuditReport::from_graph(small_graph())
}

fn opts() -> RenderOptions {
    RenderOptions::default()
}

#[test]
fn text_report_leads_with_overlaps_naming_both_sides() {
    let text = render_text(&report(), &opts());
    let overlaps = text.find("Overlaps").unwrap();
    let shared = text.find("Shared mutable maps").unwrap();
    let maps = text.find("Maps of pid 4242").unwrap();
    assert!(overlaps < shared && shared < maps, "{text}");
    assert!(
        text.contains("map main.cache map[string]*main.Entry [0xc000100000#0] (pid 4242)"),
        "{text}"
    );
    assert!(
        text.contains("write  main.(*Cache).Set (main.go:30)  by goroutine 17"),
        "{text}"
    );
    assert!(
        text.contains("read   main.(*Cache).Get (main.go:22)  by goroutine 31"),
        "{text}"
    );
}

#[test]
fn text_tables_are_aligned() {
    let text = render_text(&report(), &opts());
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Goroutines of pid"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(table.len(), 5, "header and 4 goroutines:\n{text}");
    // Right-aligned numeric columns end at the same place on every row.
    let write_col_end = table[0].find("write").unwrap() + "write".len();
    for row in &table[1..] {
        assert_ne!(row.as_bytes()[write_col_end - 1], b' ', "{row}");
        assert_eq!(row.as_bytes()[write_col_end], b' ', "{row}");
    }
}

#[test]
fn every_report_shows_the_truncation_line() {
    let r = report();
    let text = render_text(&r, &opts());
    assert!(
        text.contains("truncated: nothing (caps: 100000 edges"),
        "{text}"
    );
    let html = render_html(&r, &opts());
    assert!(html.contains("truncated: nothing"));

    let limits = GraphLimits {
        max_edges: 2,
        ..GraphLimits::default()
    };
    let mut g = AccessGraph::new(limits);
    for e in small_session() {
        g.ingest(&e);
    }
    let text = render_text(&AuditReport::from_graph(g), &opts());
    assert!(
        text.contains("truncated: 12 edge updates not tracked (cap 2 edges)"),
        "{text}"
    );
}

#[test]
fn losses_and_skipped_kinds_are_reported() {
    let mut rec = small_recording();
    rec.push_str(&serde_json::to_string(&lost("access", 7, 7)).unwrap());
    rec.push_str("\n{\"kind\":\"future_thing\"}\n");
    let r = crate::analysis::report_from_jsonl(rec.as_bytes()).unwrap();
    let text = render_text(&r, &opts());
    assert!(
        text.contains("lost: 7 access events before they reached map-auditor (pid 4242"),
        "{text}"
    );
    assert!(
        text.contains("skipped: 1 events of unknown kind `future_thing`"),
        "{text}"
    );
}

#[test]
fn json_report_is_one_document_with_stable_fields() {
    let doc: serde_json::Value = serde_json::from_str(&render_json(&report())).unwrap();
    assert_eq!(doc["schema"], "map-auditor-report");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["totals"]["accesses"], 7);
    let o = &doc["findings"]["overlaps"][0];
    assert_eq!(o["map"]["address"], "0xc000100000");
    assert_eq!(
        o["map_name"],
        "main.cache map[string]*main.Entry [0xc000100000#0]"
    );
    assert_eq!(o["first"]["site"]["function"], "main.(*Cache).Set");
    assert_eq!(o["first"]["ops"], serde_json::json!(["write"]));
    assert_eq!(o["second"]["goroutines"], serde_json::json!([31]));
    assert_eq!(
        doc["findings"]["shared_maps"][0]["writer_goroutines"],
        serde_json::json!([17, 23])
    );
    assert_eq!(
        doc["findings"]["bpf_maps"][0]["commands"]["map_update_elem"],
        2
    );
    let p = &doc["processes"][0];
    assert_eq!(p["pid"], 4242);
    let cache = &p["maps"][0];
    assert_eq!(cache["global"], "main.cache");
    assert_eq!(cache["make_site"]["line"], 12);
    assert_eq!(cache["ops"]["write"], 2);
    assert_eq!(cache["ops"]["iterate"], 0, "every op is always present");
    // Edges point into the maps and sites arrays.
    for e in p["site_edges"].as_array().unwrap() {
        let site = e["site"].as_u64().unwrap() as usize;
        assert!(p["sites"][site]["function"].is_string());
        assert!(p["maps"][e["map"].as_u64().unwrap() as usize].is_object());
    }
    assert_eq!(doc["truncation"]["edges"], 0);
    assert_eq!(doc["limits"]["max_edges"], 100_000);
}

#[test]
fn dot_output_is_parseable_graph() {
    let dot = render_dot(&report(), &opts());
    let mut parser = layout::gv::DotParser::new(&dot);
    let ast = parser.process();
    assert!(ast.is_ok(), "{:?}\n{dot}", ast.err());
    assert!(dot.starts_with("digraph map_auditor {"));
    assert!(dot.contains("subgraph cluster_p4242 {"));
    assert!(dot.contains("subgraph cluster_bpf {"));
    // goroutine 17 wrote the cache (map index 0) once.
    assert!(
        dot.contains("p4242_g17 -> p4242_m0 [label=\"w1\"];"),
        "{dot}"
    );
    // The overlap joins the two sites in red, and the cache is marked.
    assert!(dot.contains("label=\"overlap x1\", color=red"), "{dot}");
    assert!(dot.contains("1 overlaps\", color=red"), "{dot}");
    assert!(dot.contains("bpf_p900 -> bpf_m7"));
    assert_eq!(dot.matches('{').count(), dot.matches('}').count());
}

#[test]
fn dot_labels_escape_quotes() {
    let mut g = small_graph();
    g.set_map_names(
        crate::analysis::MapIdentity {
            pid: PID,
            address: CONFIG,
            map_gen: 0,
        },
        None,
        Some("main.\"odd\"\\name".into()),
    );
    let dot = render_dot(&AuditReport::from_graph(g), &opts());
    assert!(dot.contains(r#"main.\"odd\"\\name"#), "{dot}");
    assert!(layout::gv::DotParser::new(&dot).process().is_ok());
}

#[test]
fn big_graphs_show_top_n_and_say_so() {
    let mut g = AccessGraph::new(GraphLimits::default());
    for m in 0..50u64 {
        for goid in 1..=3 {
            g.ingest(&access(
                m,
                goid + m,
                0xc000000000 + m * 0x100,
                MapOp::Write,
                "main.w",
                m as u32,
            ));
        }
    }
    let r = AuditReport::from_graph(g);
    let small = RenderOptions {
        top_maps: 5,
        top_goroutines: 4,
        top_sites: 3,
        top_findings: 2,
        graph_top: 5,
    };
    let dot = render_dot(&r, &small);
    assert_eq!(dot.matches("shape=box").count(), 5);
    assert!(
        dot.contains("showing the top 5 of 50 maps, 5 of 52 goroutines, 5 of 50 call sites"),
        "{dot}"
    );
    let text = render_text(&r, &small);
    assert!(text.contains("top 5 of 50 maps"), "{text}");
    assert!(text.contains("top 2 of 50 shared maps"), "{text}");
    let html = render_html(&r, &small);
    assert!(html.contains("showing the top 5 of 50 maps"));
}

#[test]
fn html_report_is_self_contained() {
    let html = render_html(&report(), &opts());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"), "the graph is inline SVG");
    assert!(html.contains("<style>") && html.contains("<script>"));
    let lower = html.to_lowercase();
    for fetch in ["src=", "@import", "<link", "<iframe"] {
        assert!(!lower.contains(fetch), "{fetch} would load a resource");
    }
    // Arrow heads, clips and edge labels refer to elements of the page only.
    for reference in ["href=\"", "url("] {
        for (at, _) in lower.match_indices(reference) {
            let target = &lower[at + reference.len()..];
            assert!(
                target.starts_with('#'),
                "{reference} leaves the page: {}",
                &target[..20.min(target.len())]
            );
        }
    }
    // The only URL is the SVG namespace name, which is never fetched.
    let urls = lower.matches("http://").count() + lower.matches("https://").count();
    assert_eq!(
        urls,
        lower
            .matches("xmlns=\"http://www.w3.org/2000/svg\"")
            .count()
    );
    assert!(!html.contains("<?xml"));
}

#[test]
fn html_report_names_findings_and_escapes_text() {
    let html = render_html(&report(), &opts());
    assert!(html.contains("main.(*Cache).Set (main.go:30)"));
    assert!(html.contains("map[string]*main.Entry"));
    assert!(
        !html.contains("<*"),
        "angle brackets from Go names are escaped"
    );
    assert!(html.contains("Shared mutable maps"));
    assert!(html.contains("<details><summary>stack</summary>"));
}

#[test]
fn fallback_layout_draws_every_shown_node() {
    let g = small_graph();
    let p = g.process_graph(PID).unwrap();
    let v = view::ProcessView::new(p, &opts());
    let svg = svg::column_svg_for_test(&v);
    assert_eq!(
        svg.matches("<rect").count(),
        v.goroutines.len() + v.sites.len() + v.maps.len()
    );
    assert!(svg.contains("stroke=\"#c00\""), "overlap drawn in red");
}

#[test]
fn run_report_writes_each_format_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("recording.jsonl");
    std::fs::write(&input, small_recording()).unwrap();
    for format in [
        ReportFormat::Text,
        ReportFormat::Json,
        ReportFormat::Dot,
        ReportFormat::Html,
    ] {
        let output = dir.path().join(format!("report.{format:?}"));
        run_report(&ReportSettings {
            input: Some(input.clone()),
            socket: None,
            format,
            output: Some(output.clone()),
        })
        .unwrap();
        let out = std::fs::read_to_string(&output).unwrap();
        assert!(out.contains("main.(*Cache).Set"), "{format:?}");
    }
    let text = std::fs::read_to_string(dir.path().join("report.Text")).unwrap();
    assert!(
        text.contains("recording.jsonl (11 lines, 11 events)"),
        "{text}"
    );

    std::fs::write(&input, format!("{}{{\"oops\":1}}\n", small_recording())).unwrap();
    let err = run_report(&ReportSettings {
        input: Some(input.clone()),
        socket: None,
        format: ReportFormat::Text,
        output: None,
    })
    .unwrap_err()
    .to_string();
    assert!(err.ends_with("recording.jsonl:12: not a map-auditor event: missing field `kind`; was it written by --record?"), "{err}");
}

#[test]
fn empty_recording_renders_in_every_format() {
    let r = crate::analysis::report_from_jsonl(&b""[..]).unwrap();
    for f in [
        ReportFormat::Text,
        ReportFormat::Json,
        ReportFormat::Dot,
        ReportFormat::Html,
    ] {
        assert!(!render(&r, f, &opts()).is_empty());
    }
}
