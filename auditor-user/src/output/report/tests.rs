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
        text.contains("truncated: 19 edge updates not tracked (cap 2 edges)"),
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
    assert!(html.contains("<details open><summary>stack</summary>"));
}

/// `(x, y)` of every `<rect>` of the nodes of one column in an SVG.
fn node_positions(svg: &str, column: &str) -> Vec<(f64, f64)> {
    let marker = format!("<g class=\"node {column}\"><rect x=\"");
    svg.match_indices(&marker)
        .map(|(at, _)| {
            let rest = &svg[at + marker.len()..];
            let x: f64 = rest[..rest.find('"').unwrap()].parse().unwrap();
            let rest = &rest[rest.find("y=\"").unwrap() + 3..];
            let y: f64 = rest[..rest.find('"').unwrap()].parse().unwrap();
            (x, y)
        })
        .collect()
}

#[test]
fn graph_draws_goroutines_then_call_sites_then_maps_in_three_columns() {
    let g = small_graph();
    let p = g.process_graph(PID).unwrap();
    let v = view::ProcessView::new(p, &opts());
    let svg = svg::render_svg(&v);
    let goroutines = node_positions(&svg, "goroutine");
    let sites = node_positions(&svg, "site");
    let maps = node_positions(&svg, "map");
    assert_eq!(goroutines.len(), v.goroutines.len(), "{svg}");
    assert_eq!(sites.len(), v.sites.len(), "{svg}");
    assert_eq!(maps.len(), v.maps.len(), "{svg}");
    let column_x = |nodes: &[(f64, f64)]| {
        let x = nodes[0].0;
        assert!(nodes.iter().all(|n| n.0 == x), "one column: {nodes:?}");
        x
    };
    let (gx, sx, mx) = (column_x(&goroutines), column_x(&sites), column_x(&maps));
    assert!(gx < sx && sx < mx, "{gx} < {sx} < {mx}");
    // Goroutines reach maps through the sites they ran: goroutine 17 ran
    // Set (line 30), which wrote the cache.
    assert!(!v.goroutine_site_edges.is_empty());
    assert_eq!(
        svg.matches("<g class=\"edge\">").count(),
        v.goroutine_site_edges.len() + v.site_edges.len()
    );
    assert!(svg.contains("stroke=\"#c00\""), "overlap drawn in red");
}

const MAIN_GO: &str = "/src/app/main.go";

/// A recording of a target that raced and died of it: attach report, the
/// program's own cache raced by two goroutines, a header map only net/http
/// touched, a registry map only package initialisation filled, and a
/// summary carrying the runtime's fatal message.
fn racing_recording() -> String {
    use crate::event::{Access, AttachReport, AuditEvent, Summary};
    use MapOp::*;
    const T0: u64 = 1_796_635_134_000_000_000;
    let at = |ms: u64| T0 + ms * 1_000_000;
    let acc = |ms: u64, goid: u64, map: u64, op: MapOp, function: &str, file: &str, line: u32| {
        let AuditEvent::Access(a) = access(at(ms), goid, map, op, function, line) else {
            unreachable!()
        };
        AuditEvent::Access(Access {
            file: file.into(),
            ..a
        })
    };
    const HEADER: u64 = 0xc000300000;
    const REGISTRY: u64 = 0xc000400000;
    let mut events = vec![
        AuditEvent::Attach(AttachReport {
            ts_ns: at(0),
            pid: PID,
            exe: "/srv/bin/racer".into(),
            go_version: "1.27.3".into(),
            module: Some("example.com/racer".into()),
            pie: false,
            stripped: false,
            swiss_maps: true,
            detect: "entry".into(),
            scope: "user".into(),
            offsets_from_dwarf: true,
            probes: vec![],
            missing: vec![],
            failed: vec![],
            map_globals: Default::default(),
        }),
        acc(1, 1, REGISTRY, Make, "main.init", MAIN_GO, 8),
        acc(2, 1, REGISTRY, Write, "main.init", MAIN_GO, 9),
        acc(3, 1, CACHE, Make, "main.newCache", MAIN_GO, 12),
        acc(
            4,
            9,
            HEADER,
            Make,
            "net/http.Header.Clone",
            "/go/src/net/http/header.go",
            100,
        ),
        acc(
            5,
            9,
            HEADER,
            Write,
            "net/http.Header.Set",
            "/go/src/net/http/header.go",
            40,
        ),
        acc(6, 17, CACHE, Write, "main.(*Cache).Set", MAIN_GO, 30),
        acc(7, 23, CACHE, Write, "main.(*Cache).Set", MAIN_GO, 30),
        acc(8, 31, CACHE, Read, "main.(*Cache).Get", MAIN_GO, 22),
    ];
    let mut o = overlap(
        at(9),
        CACHE,
        party(at(9), 17, Write, "main.(*Cache).Set", 30),
        party(at(9), 31, Read, "main.(*Cache).Get", 22),
    );
    if let AuditEvent::Overlap(o) = &mut o {
        o.first.stack.push(crate::event::Frame {
            pc: 0x4b0000,
            function: "main.worker".into(),
            file: MAIN_GO.into(),
            line: 50,
        });
    }
    events.push(o);
    events.push(AuditEvent::Summary(Summary {
        ts_ns: at(1_500),
        pid: PID,
        target_exit_code: Some(2),
        target_fatal: Some("concurrent map read and map write".into()),
        ..Summary::default()
    }));
    events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect()
}

fn racing_report_html() -> String {
    let r = crate::analysis::report_from_jsonl(racing_recording().as_bytes()).unwrap();
    render_html(&r, &opts())
}

#[test]
fn html_report_opens_with_the_session_and_how_the_target_ended() {
    let html = racing_report_html();
    let header = html
        .find("<header class=\"session\">")
        .expect("a session header");
    let header_end = html.find("</header>").unwrap();
    let head = &html[header..header_end];
    for fact in [
        "/srv/bin/racer",
        "Go 1.27.3, module example.com/racer",
        "entry (default",
        "2026-12-07 09:18:54.000 UTC – 09:18:55.500 UTC (1.500 s)",
        "exited with status 2; the Go runtime&#39;s fatal error: concurrent map read and map write",
    ] {
        let fact = fact.replace("&#39;", "'");
        assert!(head.contains(&fact), "header lacks {fact:?}:\n{head}");
    }
    // The race comes right after the header, before any table or graph.
    let races = html.find("<section id=\"races\">").unwrap();
    assert!(header_end < races);
    for later in [
        "Shared mutable maps",
        "Access graph of pid",
        "<table class=\"sortable\">",
    ] {
        assert!(races < html.find(later).unwrap(), "{later} before the race");
    }
}

#[test]
fn html_race_card_shows_both_stacks_open() {
    let html = racing_report_html();
    let races = html.find("<section id=\"races\">").unwrap();
    let card = &html[races..races + html[races..].find("</section>").unwrap()];
    assert_eq!(
        card.matches("<details open><summary>stack</summary>")
            .count(),
        2,
        "{card}"
    );
    assert!(card.contains("main.worker /src/app/main.go:50"), "{card}");
}

#[test]
fn html_folds_standard_library_and_init_time_maps() {
    let html = racing_report_html();
    let own_at = html
        .find("data-maps=\"own\"")
        .expect("the program's own graph");
    let own = &html[own_at..own_at + html[own_at..].find("</svg>").unwrap()];
    assert!(own.contains("main.(*Cache).Set"), "{own}");
    assert!(
        !own.contains("net/http.Header.Set"),
        "stdlib map drawn: {own}"
    );
    assert!(
        !own.contains("made in main.init"),
        "init-time map drawn: {own}"
    );
    // Both are one click away, folded.
    let folded_graph = html
        .find("<details class=\"folded\"><summary>Show the graph with the 2 standard-library and init-time map(s)")
        .expect("a folded full graph");
    let all = &html[folded_graph..folded_graph + html[folded_graph..].find("</details>").unwrap()];
    assert!(all.contains("net/http.Header.Set") && all.contains("made in main.init"));
    let folded_table = html
        .find("<details class=\"folded\"><summary>Standard-library and init-time maps of pid 4242 (2)")
        .expect("a folded table");
    let maps_table = html.find("<h2>Maps of pid 4242</h2>").unwrap();
    let maps_rows = &html[maps_table..folded_table];
    assert!(!maps_rows.contains("net/http.Header.Clone"), "{maps_rows}");
}

#[test]
fn html_shared_maps_count_readers_beside_their_reads() {
    let html = racing_report_html();
    let at = html.find("<h2>Shared mutable maps").unwrap();
    let table = &html[at..at + html[at..].find("</table>").unwrap()];
    assert!(table.contains("<th>readers</th><th>reads</th>"), "{table}");
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
