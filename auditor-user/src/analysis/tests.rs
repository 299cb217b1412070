//! Specifications of the analysis core, on synthetic event streams.

use auditor_common::go_map::MapOp::{self, *};

use super::testkit::*;
use super::*;

fn graph_of(events: &[crate::event::AuditEvent], limits: GraphLimits) -> AccessGraph {
    let mut g = AccessGraph::new(limits);
    for e in events {
        g.ingest(e);
    }
    g
}

fn cache() -> MapIdentity {
    MapIdentity {
        pid: PID,
        address: CACHE,
        map_gen: 0,
    }
}

#[test]
fn overlap_names_both_sides() {
    let findings = Findings::from_graph(&small_graph());
    assert_eq!(findings.overlaps.len(), 1);
    let o = &findings.overlaps[0];
    assert_eq!(o.map, cache());
    assert_eq!(o.first.site.function, "main.(*Cache).Set");
    assert_eq!(o.first.site.line, 30);
    assert_eq!(o.first.ops.names(), "write");
    assert_eq!(o.first.goroutines, vec![17]);
    assert_eq!(o.second.site.function, "main.(*Cache).Get");
    assert_eq!(o.second.ops.names(), "read");
    assert_eq!(o.second.goroutines, vec![31]);
    assert_eq!(o.first.example_stack[0].line, 30);
    assert_eq!(o.count, 1);
}

#[test]
fn repeated_overlaps_between_same_sites_group_with_counts_and_times() {
    let mut events = small_session();
    for (i, goid) in [(1u64, 40u64), (2, 41), (3, 40)] {
        events.push(overlap(
            10_000 * i,
            CACHE,
            party(10_000 * i, goid, Write, "main.(*Cache).Set", 30),
            party(10_000 * i, 31, Read, "main.(*Cache).Get", 22),
        ));
    }
    // The same race the other way round (the reader was inside first) is
    // the same finding, oriented as first seen.
    events.push(overlap(
        50_000,
        CACHE,
        party(50_000, 32, Read, "main.(*Cache).Get", 22),
        party(50_000, 42, Write, "main.(*Cache).Set", 30),
    ));
    // Same sites, other operations: another finding.
    events.push(overlap(
        60_000,
        CACHE,
        party(60_000, 33, Delete, "main.(*Cache).Get", 22),
        party(60_000, 17, Write, "main.(*Cache).Set", 30),
    ));
    let f = Findings::from_graph(&graph_of(&events, GraphLimits::default()));
    assert_eq!(f.overlaps.len(), 2, "{:#?}", f.overlaps);
    let top = &f.overlaps[0];
    assert_eq!(top.count, 5);
    assert_eq!((top.first_ts_ns, top.last_ts_ns), (2_400, 50_000));
    assert_eq!(top.first.site.function, "main.(*Cache).Set");
    assert_eq!(top.first.ops.names(), "write");
    assert_eq!(top.first.goroutines, vec![17, 40, 41, 42]);
    assert_eq!(top.second.site.function, "main.(*Cache).Get");
    assert_eq!(top.second.ops.names(), "read");
    assert_eq!(top.second.goroutines, vec![31, 32]);
    let other = &f.overlaps[1];
    assert_eq!(other.count, 1);
    assert_eq!(other.first.site.function, "main.(*Cache).Get");
    assert_eq!(other.first.ops.names(), "delete");
}

#[test]
fn overlaps_the_kernel_held_back_count_in_their_group() {
    let mut events = small_session();
    let mut e = overlap(
        10_000,
        CACHE,
        party(10_000, 40, Write, "main.(*Cache).Set", 30),
        party(10_000, 31, Read, "main.(*Cache).Get", 22),
    );
    if let crate::event::AuditEvent::Overlap(o) = &mut e {
        o.suppressed = 6;
    }
    events.push(e);
    let f = Findings::from_graph(&graph_of(&events, GraphLimits::default()));
    assert_eq!(f.overlaps.len(), 1);
    assert_eq!(f.overlaps[0].count, 8);
}

#[test]
fn reused_address_is_a_new_map() {
    let events = [
        access_gen(1, 1, CACHE, 0, Make, "main.old", 10),
        access_gen(2, 1, CACHE, 0, Write, "main.old", 11),
        access_gen(3, 2, CACHE, 1, Make, "main.fresh", 20),
        access_gen(4, 3, CACHE, 1, Write, "main.fresh", 21),
    ];
    let g = graph_of(&events, GraphLimits::default());
    let p = g.process_graph(PID).unwrap();
    assert_eq!(p.maps().len(), 2);
    let old = g
        .map(&MapIdentity {
            pid: PID,
            address: CACHE,
            map_gen: 0,
        })
        .unwrap();
    let fresh = g
        .map(&MapIdentity {
            pid: PID,
            address: CACHE,
            map_gen: 1,
        })
        .unwrap();
    assert_eq!(old.make_site.as_ref().unwrap().function, "main.old");
    assert_eq!(fresh.make_site.as_ref().unwrap().function, "main.fresh");
    assert_eq!(old.ops.get(Write), 1);
    assert_eq!(fresh.ops.get(Write), 1);
    // Goroutines 1 and 3 each wrote a different map: nothing is shared.
    assert!(Findings::from_graph(&g).shared_maps.is_empty());
}

#[test]
fn map_is_named_by_make_site_type_and_global() {
    let g = small_graph();
    let m = g.map(&cache()).unwrap();
    let make = m.make_site.as_ref().unwrap();
    assert_eq!((make.function.as_str(), make.line), ("main.newCache", 12));
    assert_eq!(m.made_by, Some(1));
    assert_eq!(
        m.describe(),
        "main.cache map[string]*main.Entry [0xc000100000#0]"
    );
    let config = g
        .map(&MapIdentity {
            pid: PID,
            address: CONFIG,
            map_gen: 0,
        })
        .unwrap();
    assert_eq!(config.label(), "made in main.loadConfig (main.go:40)");
}

#[test]
fn map_written_by_two_goroutines_ranks_as_shared() {
    let f = Findings::from_graph(&small_graph());
    assert_eq!(f.shared_maps.len(), 1);
    let s = &f.shared_maps[0];
    assert_eq!(s.map, cache());
    assert_eq!(s.writer_goroutines, vec![17, 23]);
    assert_eq!(s.reader_goroutines, 1);
    assert_eq!(s.reads, 1);
    assert_eq!(s.overlaps, 1);
    assert_eq!(s.mutations, 2);
}

#[test]
fn readers_of_a_shared_map_are_the_goroutines_behind_its_reads() {
    let mut events = small_session();
    // A writer that also reads is a reader too; an iteration is a read.
    events.push(access(5_000, 17, CACHE, Read, "main.(*Cache).Get", 22));
    events.push(access(5_100, 17, CACHE, Read, "main.(*Cache).Get", 22));
    events.push(access(5_200, 50, CACHE, Iterate, "main.dump", 70));
    let f = Findings::from_graph(&graph_of(&events, GraphLimits::default()));
    let s = &f.shared_maps[0];
    assert_eq!(s.map, cache());
    assert_eq!(s.reads, 4);
    assert_eq!(s.reader_goroutines, 3, "goroutines 17, 31 and 50 read it");
}

#[test]
fn single_owner_map_is_not_shared() {
    let f = Findings::from_graph(&small_graph());
    assert!(f.shared_maps.iter().all(|s| s.map.address != CONFIG));
}

#[test]
fn shared_maps_rank_by_writers_then_overlaps_then_writes() {
    let (a, b, c) = (0xa000, 0xb000, 0xc000);
    let mut events = vec![];
    // a: 3 writers. b: 2 writers, one overlap. c: 2 writers, many writes.
    for goid in [1, 2, 3] {
        events.push(access(1, goid, a, Write, "main.a", 1));
    }
    for goid in [1, 2] {
        events.push(access(1, goid, b, Delete, "main.b", 2));
    }
    for _ in 0..10 {
        for goid in [1, 2] {
            events.push(access(1, goid, c, Write, "main.c", 3));
        }
    }
    events.push(overlap(
        5,
        b,
        party(5, 1, Delete, "main.b", 2),
        party(5, 2, Delete, "main.b", 2),
    ));
    let f = Findings::from_graph(&graph_of(&events, GraphLimits::default()));
    let order: Vec<u64> = f.shared_maps.iter().map(|s| s.map.address).collect();
    assert_eq!(order, vec![a, b, c]);
}

#[test]
fn unknown_goroutine_does_not_make_a_map_shared() {
    let events = [
        access(1, 0, CACHE, Write, "main.a", 1),
        access(2, 5, CACHE, Write, "main.a", 1),
    ];
    let f = Findings::from_graph(&graph_of(&events, GraphLimits::default()));
    assert!(f.shared_maps.is_empty());
}

#[test]
fn edges_count_each_operation() {
    let g = small_graph();
    let p = g.process_graph(PID).unwrap();
    let cache_id = p.find_map(&cache()).unwrap();
    let writes_by_goroutine: u64 = p
        .goroutine_edges()
        .filter(|(_, m, _)| *m == cache_id)
        .map(|(_, _, c)| c.get(Write))
        .sum();
    assert_eq!(writes_by_goroutine, 2);
    let (site, _, counts) = p
        .site_edges()
        .find(|(s, m, _)| *m == cache_id && p.site(*s).site.line == 30)
        .unwrap();
    assert_eq!(
        p.site(site).site.to_string(),
        "main.(*Cache).Set (main.go:30)"
    );
    assert_eq!(counts.get(Write), 2);
    assert_eq!(counts.total(), 2);
}

#[test]
fn bpf_map_edges_count_per_command() {
    let f = Findings::from_graph(&small_graph());
    assert_eq!(f.bpf_maps.len(), 1);
    let e = &f.bpf_maps[0];
    assert_eq!((e.pid, e.map_id, e.total), (900, 7, 3));
    assert_eq!(e.commands["map_update_elem"], 2);
    assert_eq!(e.commands["map_lookup_elem"], 1);
}

#[test]
fn caps_count_truncated_edges() {
    let limits = GraphLimits {
        max_edges: 3,
        ..GraphLimits::default()
    };
    // 4 goroutines each touch one map from their own site: 12 distinct
    // edges (goroutine → map, site → map, goroutine → site).
    let events: Vec<_> = (1..=4)
        .map(|g| access(g, g, CACHE, Write, "main.w", g as u32))
        .collect();
    let g = graph_of(&events, limits);
    assert_eq!(g.size().3, 3);
    assert_eq!(g.truncation().edges, 9);
    // Totals still see every access.
    assert_eq!(g.process_graph(PID).unwrap().accesses, 4);
    assert_eq!(g.map(&cache()).unwrap().ops.get(Write), 4);
    let lines = g.truncation().lines(g.limits());
    assert_eq!(
        lines,
        vec!["truncated: 9 edge updates not tracked (cap 3 edges)"]
    );
}

#[test]
fn caps_count_untracked_nodes() {
    let limits = GraphLimits {
        max_maps: 1,
        max_goroutines: 1,
        max_sites: 1,
        ..GraphLimits::default()
    };
    let events = [
        access(1, 1, CACHE, Write, "main.a", 1),
        access(2, 2, CONFIG, Write, "main.b", 2),
    ];
    let g = graph_of(&events, limits);
    let t = g.truncation();
    assert_eq!((t.maps, t.goroutines, t.sites), (1, 1, 1));
    assert_eq!(g.truncation().lines(g.limits()).len(), 3);
}

#[test]
fn overlaps_are_kept_when_node_caps_are_full() {
    let limits = GraphLimits {
        max_maps: 1,
        max_sites: 1,
        ..GraphLimits::default()
    };
    let mut events = vec![access(1, 1, CONFIG, Write, "main.other", 1)];
    events.push(overlap(
        2,
        CACHE,
        party(2, 1, Write, "main.a", 5),
        party(2, 2, Write, "main.b", 6),
    ));
    let f = Findings::from_graph(&graph_of(&events, limits));
    assert_eq!(f.overlaps.len(), 1);
    assert_eq!(f.overlaps[0].second.site.function, "main.b");
}

#[test]
fn overlap_group_cap_counts_what_it_drops() {
    let limits = GraphLimits {
        max_overlap_groups: 1,
        ..GraphLimits::default()
    };
    let events = [
        overlap(
            1,
            CACHE,
            party(1, 1, Write, "main.a", 5),
            party(1, 2, Write, "main.b", 6),
        ),
        overlap(
            2,
            CACHE,
            party(2, 1, Write, "main.c", 7),
            party(2, 2, Write, "main.d", 8),
        ),
    ];
    let g = graph_of(&events, limits);
    assert_eq!(g.truncation().overlap_groups, 1);
    assert_eq!(g.process_graph(PID).unwrap().overlap_events, 2);
    assert_eq!(g.map(&cache()).unwrap().overlaps, 2);
}

#[test]
fn process_cap_counts_dropped_events() {
    let limits = GraphLimits {
        max_processes: 1,
        ..GraphLimits::default()
    };
    let mut events = vec![access(1, 1, CACHE, Write, "main.a", 1)];
    let crate::event::AuditEvent::Access(mut other) = events[0].clone() else {
        unreachable!()
    };
    other.pid = PID + 1;
    events.push(crate::event::AuditEvent::Access(other));
    let g = graph_of(&events, limits);
    assert_eq!(g.processes().count(), 1);
    assert_eq!(g.truncation().processes, 1);
}

#[test]
fn losses_add_up_per_kind() {
    let g = graph_of(
        &[lost("access", 10, 10), lost("access", 5, 15)],
        GraphLimits::default(),
    );
    let t = g.losses()[&(PID, "access".to_string())];
    assert_eq!((t.count, t.reported_total), (15, 15));
}

#[test]
fn names_set_before_any_access_stay_with_the_map() {
    let mut g = AccessGraph::new(GraphLimits::default());
    assert!(g.set_map_names(cache(), None, Some("main.cache".into())));
    g.ingest(&access(1, 1, CACHE, Read, "main.a", 1));
    assert_eq!(g.map(&cache()).unwrap().label(), "main.cache");
}

// --- recordings ---

#[test]
fn recording_round_trips_into_the_same_findings() {
    let report = report_from_jsonl(small_recording().as_bytes()).unwrap();
    let mut direct = AccessGraph::new(GraphLimits::default());
    for e in small_session() {
        direct.ingest(&e);
    }
    assert_eq!(report.findings, Findings::from_graph(&direct));
    let stats = report.recording.unwrap();
    assert_eq!((stats.lines, stats.events), (11, 11));
}

#[test]
fn every_event_kind_reads_back_as_written() {
    let mut events = small_session();
    events.push(lost("access", 3, 9));
    events.push(crate::event::AuditEvent::Summary(crate::event::Summary {
        ts_ns: 9,
        pid: PID,
        events: 12,
        target_exit_code: Some(2),
        target_fatal: Some("concurrent map writes".into()),
        unresolved_fds: None,
        ..Default::default()
    }));
    for e in events {
        let line = serde_json::to_string(&e).unwrap();
        let back: crate::event::AuditEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e, "{line}");
    }
}

#[test]
fn bad_recording_line_names_its_line_number() {
    let mut rec = small_recording();
    rec.push_str("{\"ts_ns\": 5, \"pid\": 1}\n");
    let err = report_from_jsonl(rec.as_bytes())
        .unwrap_err()
        .in_file("recording.jsonl");
    assert_eq!(err.line(), 12);
    assert_eq!(
        err.to_string(),
        "recording.jsonl:12: not a map-auditor event: missing field `kind`; was it written by --record?"
    );
}

#[test]
fn recording_errors_say_what_is_wrong() {
    let cases = [
        (
            "hello there\n",
            "recording:1: not JSON: expected value at column 1; was it written by --record?",
        ),
        (
            "[1,2]\n",
            "recording:1: not a map-auditor event: expected a JSON object; was it written by --record?",
        ),
        (
            "{\"kind\":\"access\",\"pid\":1}\n",
            "recording:1: bad `access` event: missing field `ts_ns`",
        ),
        (
            "{\"kind\":3}\n",
            "recording:1: not a map-auditor event: field `kind` is 3, expected a string; was it written by --record?",
        ),
    ];
    for (input, want) in cases {
        let err = report_from_jsonl(input.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), want, "input {input:?}");
    }
}

#[test]
fn bad_field_values_name_the_field() {
    let line = small_recording()
        .lines()
        .next()
        .unwrap()
        .replace("\"make\"", "\"scribble\"");
    let err = report_from_jsonl(line.as_bytes()).unwrap_err().to_string();
    assert!(
        err.starts_with("recording:1: bad `access` event: unknown variant `scribble`"),
        "{err}"
    );
}

#[test]
fn unknown_kinds_are_counted_and_skipped() {
    let mut rec = String::from("{\"kind\":\"goroutine_start\",\"goid\":5}\n\n");
    rec.push_str(&small_recording());
    rec.push_str("{\"kind\":\"goroutine_start\",\"goid\":6}\n");
    let report = report_from_jsonl(rec.as_bytes()).unwrap();
    let stats = report.recording.unwrap();
    assert_eq!(stats.unknown_kinds["goroutine_start"], 2);
    assert_eq!(stats.blank_lines, 1);
    assert_eq!(stats.events, 11);
    assert_eq!(report.findings.overlaps.len(), 1);
}

#[test]
fn addresses_read_back_as_hex_or_numbers() {
    let line = r#"{"kind":"access","ts_ns":1,"pid":7,"tid":7,"goid":1,"map":49152,"map_gen":0,"op":"read","runtime_fn":"r","function":"f","file":"x.go","line":1}"#;
    let report = report_from_jsonl(line.as_bytes()).unwrap();
    let p = report.graph.process_graph(7).unwrap();
    assert_eq!(p.maps()[0].identity.address, 0xc000);
}

/// Cheap fuzzing: mangled recordings never panic, and an error always names
/// a line that exists.
#[test]
fn mangled_recordings_fail_cleanly() {
    let rec = small_recording();
    let bytes = rec.as_bytes();
    let lines = rec.lines().count() as u64;
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2_000 {
        let mut m = bytes.to_vec();
        for _ in 0..(1 + next() % 4) {
            let at = (next() as usize) % m.len();
            match next() % 3 {
                0 => m[at] = (next() & 0xff) as u8,
                1 => {
                    m.remove(at);
                }
                _ => m.insert(at, b"{}\":,0x\n"[(next() % 8) as usize]),
            }
        }
        if let Err(e) = report_from_jsonl(m.as_slice()) {
            assert!(e.line() >= 1 && e.line() <= lines + 4, "{e}");
            assert!(!e.to_string().contains('\n'), "one-line errors: {e}");
        }
    }
}

/// Ingest rate on a synthetic stream; run with
/// `cargo test --release -p auditor-user --lib ingest_rate -- --ignored --nocapture`.
#[test]
#[ignore]
fn ingest_rate() {
    let ops = [Read, Write, Read, Iterate, Delete];
    let events: Vec<_> = (0..1_000_000u64)
        .map(|i| {
            let op: MapOp = ops[(i % 5) as usize];
            access(
                i,
                i % 1_000,
                0xc000000000 + (i % 500) * 0x1000,
                op,
                "main.work",
                (i % 50) as u32,
            )
        })
        .collect();
    let start = std::time::Instant::now();
    let g = graph_of(&events, GraphLimits::default());
    let took = start.elapsed();
    let (gs, ms, ss, es) = g.size();
    println!(
        "1M accesses in {took:?}: {:.1} M events/s; {gs} goroutines, {ms} maps, {ss} sites, {es} edges, truncated {:?}",
        1.0 / took.as_secs_f64(),
        g.truncation()
    );
    let start = std::time::Instant::now();
    let f = Findings::from_graph(&g);
    println!(
        "findings in {:?}: {} shared maps",
        start.elapsed(),
        f.shared_maps.len()
    );
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Memory per tracked edge when every access makes a new one, up to the
/// cap; run like [`ingest_rate`].
#[test]
#[ignore]
fn memory_per_edge() {
    let limits = GraphLimits {
        max_edges: 1_000_000,
        max_goroutines: 1_000_000,
        ..GraphLimits::default()
    };
    // 500k goroutines x 1 map x 1 site: 500k goroutine edges + 1 site edge;
    // then 1M accesses more that only bump counters or hit the cap.
    let events: Vec<_> = (0..1_500_000u64)
        .map(|i| {
            access(
                i,
                i % 500_000 + 1,
                0xc000000000 + (i % 7) * 0x1000,
                Write,
                "main.work",
                1,
            )
        })
        .collect();
    let before = rss_bytes();
    let start = std::time::Instant::now();
    let g = graph_of(&events, limits);
    let took = start.elapsed();
    let after = rss_bytes();
    let (gs, _, _, es) = g.size();
    println!(
        "{es} edges, {gs} goroutines in {took:?} ({:.1} M events/s); RSS +{} MiB, {:.0} bytes per edge (goroutine node included); truncated {:?}",
        1.5 / took.as_secs_f64(),
        (after - before) >> 20,
        (after - before) as f64 / es as f64,
        g.truncation()
    );
}
