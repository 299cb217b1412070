//! The checked-in seeds (`seeds/<target>/`) are what `src/lib.rs` builds,
//! and each one is accepted by its parser, so fuzzing starts past the
//! magic-number checks. `WRITE_SEEDS=1 cargo test` rewrites them.

use std::{collections::BTreeMap, path::PathBuf};

use auditor_common::go_map::GoMapOverlap;
use map_auditor::{
    analysis::report_from_jsonl,
    bpf::{attr::parse_attr, btf::KernelBtf},
    event::{AuditEvent, Lost, Summary},
    goexe::{PcLnTab, PclnVersion, ProbePlan, Symbolizer, fuzzing},
    pipeline::{
        clock::WallClock,
        decode::{RawRecord, decode},
        enrich::{FrameResolver, GoEnricher},
    },
};
use map_auditor_fuzz as seeds;

struct NoFrames;
impl FrameResolver for NoFrames {
    fn resolve_return(&self, _pc: u64) -> Option<map_auditor::event::Frame> {
        None
    }
}

/// A recording with every event kind: the hand-written lines plus events
/// made by the same code that writes `--record` files.
fn recording() -> String {
    let mut out = seeds::RECORDING.to_owned();
    let clock = WallClock::new();
    for (_, rec) in seeds::ring_records() {
        let ev = match decode(&rec).unwrap() {
            RawRecord::GoOverlap(o) => {
                let o: GoMapOverlap = o;
                let mut e = GoEnricher::new(NoFrames, vec!["runtime.mapassign".into()], clock);
                let mut o = e.overlap(&o);
                // Wall-clock times differ per run; the seed must not.
                (o.ts_ns, o.first.ts_ns, o.second.ts_ns) = (3, 3, 3);
                AuditEvent::Overlap(o)
            }
            RawRecord::BpfSyscall(b) => {
                let mut b = map_auditor::bpf::from_raw(&b, &clock);
                b.ts_ns = 4;
                AuditEvent::BpfMap(b)
            }
            // Accesses and escalation requests have no recording line of
            // their own.
            RawRecord::GoAccess(_) | RawRecord::GoEscalate(_) => continue,
        };
        out.push_str(&serde_json::to_string(&ev).unwrap());
        out.push('\n');
    }
    let lost = Lost {
        ts_ns: 5,
        pid: 7,
        what: "ring_buffer".into(),
        count: 3,
        total: 3,
    };
    let summary = Summary {
        pid: 7,
        events: 4,
        ..Summary::default()
    };
    for ev in [AuditEvent::Lost(lost), AuditEvent::Summary(summary)] {
        out.push_str(&serde_json::to_string(&ev).unwrap());
        out.push('\n');
    }
    out
}

fn all_seeds() -> BTreeMap<(&'static str, String), Vec<u8>> {
    let mut m = BTreeMap::new();
    for (name, b) in seeds::ring_records() {
        m.insert(("decode_record", name.to_owned()), b);
    }
    for (name, layout) in [
        ("go116", seeds::Layout::Go116),
        ("go118", seeds::Layout::Go118),
        ("go120", seeds::Layout::Go120),
    ] {
        m.insert(
            ("pclntab", name.to_owned()),
            seeds::pclntab(layout, seeds::CLASSIC_FUNCS),
        );
    }
    m.insert(
        ("buildinfo", "inline".into()),
        seeds::buildinfo("go1.21.13", seeds::MODINFO),
    );
    m.insert(
        ("buildinfo", "pointers".into()),
        seeds::buildinfo_pointers(),
    );
    m.insert(
        ("type_name", "map".into()),
        b"\x03\x0dmap[string]*T".to_vec(),
    );
    m.insert(
        ("probe_plan", "go121_classic".into()),
        seeds::go_exe("go1.21.13", seeds::CLASSIC_FUNCS),
    );
    m.insert(
        ("probe_plan", "go124_swiss".into()),
        seeds::go_exe("go1.24.4", seeds::SWISS_FUNCS),
    );
    m.insert(("recording", "all_kinds".into()), recording().into_bytes());
    for (name, b) in seeds::bpf_attrs() {
        m.insert(("bpf_attr", name.to_owned()), b);
    }
    m.insert(("btf", "walk_structs".into()), seeds::btf());
    for (name, line) in [
        ("attach_pid", r#"{"v":1,"id":1,"op":"attach","pid":4242}"#),
        (
            "attach_exe",
            r#"{"v":1,"id":2,"op":"attach","exe":"/usr/bin/true"}"#,
        ),
        (
            "subscribe",
            r#"{"v":1,"id":3,"op":"subscribe","pid":7,"kinds":["overlap"],"since_ns":0,"follow":true}"#,
        ),
        ("list", r#"{"v":1,"id":4,"op":"list"}"#),
    ] {
        m.insert(
            ("daemon_request", name.to_owned()),
            line.as_bytes().to_vec(),
        );
    }
    m.insert(
        ("daemon_config", "example".into()),
        include_bytes!("../../deploy/daemon.toml").to_vec(),
    );
    m
}

#[test]
fn seeds_are_accepted_by_their_parsers() {
    for (kind, name) in [
        ("go_map_access", "GoAccess"),
        ("go_map_overlap", "GoOverlap"),
        ("bpf_syscall", "BpfSyscall"),
    ] {
        let rec = &all_seeds()[&("decode_record", kind.to_owned())];
        assert!(format!("{:?}", decode(rec).unwrap()).starts_with(name));
    }

    for (layout, version) in [
        ("go116", PclnVersion::Go116),
        ("go118", PclnVersion::Go118),
        ("go120", PclnVersion::Go120),
    ] {
        let bytes = all_seeds()[&("pclntab", layout.to_owned())].clone();
        let tab = PcLnTab::parse(bytes.clone(), 0).unwrap();
        assert_eq!(tab.version(), version);
        assert_eq!(tab.funcs().len(), seeds::CLASSIC_FUNCS.len());
        let sym = Symbolizer::with_gofunc(tab, bytes);
        let frames = sym.lookup_frames(seeds::TEXT + 8, false);
        let names: Vec<_> = frames.iter().map(|f| f.function.as_str()).collect();
        if version == PclnVersion::Go116 {
            assert_eq!(names, ["main.main"], "{layout}");
        } else {
            assert_eq!(names, ["main.inlined", "main.main"], "{layout}");
        }
        assert_eq!(
            (frames[0].file.as_str(), frames[0].line),
            ("/src/main.go", 10)
        );
    }

    let bi = &all_seeds()[&("buildinfo", "inline".to_owned())];
    let bi = fuzzing::parse_buildinfo(bi, &|_| None).unwrap();
    assert_eq!(bi.module_path.as_deref(), Some("example.com/seed"));
    assert_eq!(
        fuzzing::decode_name(&all_seeds()[&("type_name", "map".to_owned())]),
        Some("map[string]*T")
    );

    let dir = std::env::temp_dir().join(format!("map-auditor-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, swiss, probed) in [
        ("go121_classic", false, "runtime.mapassign_fast64"),
        ("go124_swiss", true, "runtime.mapassign_faststr"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &all_seeds()[&("probe_plan", name.to_owned())]).unwrap();
        let plan = ProbePlan::for_exe(&path).unwrap();
        assert_eq!(plan.swiss_maps, swiss, "{name}");
        assert!(plan.entry_site(probed).is_some(), "{name}: {plan:#?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let report = report_from_jsonl(recording().as_bytes()).unwrap();
    let stats = report.recording.as_ref().unwrap();
    assert_eq!(
        (stats.events, stats.skipped(), stats.blank_lines),
        (7, 1, 1)
    );

    let create = &all_seeds()[&("bpf_attr", "map_create".to_owned())];
    let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let view = parse_attr(word(create, 0), &create[8..], word(create, 4));
    assert_eq!(view.create.unwrap().name, "flows");

    let btf = KernelBtf::parse(&all_seeds()[&("btf", "walk_structs".to_owned())]).unwrap();
    let off = btf.kernel_offsets().unwrap();
    assert_eq!(
        (off.task_files, off.task_mm, off.task_cred, off.map_name),
        (8, 8, 16, 40)
    );
}

#[test]
fn checked_in_seeds_match_the_builders() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let write = std::env::var_os("WRITE_SEEDS").is_some();
    let mut total = 0;
    for ((target, name), bytes) in all_seeds() {
        let path = root.join(target).join(name);
        total += bytes.len();
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e}; run WRITE_SEEDS=1 cargo test", path.display())
            });
            assert!(
                on_disk == bytes,
                "{} is stale; run WRITE_SEEDS=1 cargo test",
                path.display()
            );
        }
    }
    assert!(
        total < 1 << 20,
        "seeds total {total} bytes; keep them under 1 MiB"
    );
}
