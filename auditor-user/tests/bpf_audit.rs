//! `map-auditor bpf` against real bpf(2) calls: one-shot bpftool processes,
//! a C helper for batches, failures and two concurrent writers, and guards.
//! Needs root; see `common::bpf_available`.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use serde_json::Value;

/// A running `map-auditor bpf --format json`.
struct Auditor {
    child: Child,
}

impl Auditor {
    /// Start and wait until the programs are attached and calibrated.
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_map-auditor"))
            .args(["bpf", "--format", "json", "--duration", "60s"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn map-auditor");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if err.read_line(&mut line).unwrap() == 0 {
                let out = child.wait_with_output().unwrap();
                panic!("map-auditor bpf exited before attaching: {line} {out:?}");
            }
            if line.starts_with("auditing") {
                break;
            }
        }
        // Keep draining stderr so the auditor never blocks on it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while err.read_line(&mut sink).is_ok_and(|n| n > 0) {
                eprint!("[auditor] {sink}");
                sink.clear();
            }
        });
        Self { child }
    }

    /// SIGINT, then every JSON line it printed.
    fn stop(self) -> Vec<Value> {
        // Let the lifecycle poll (500 ms) see maps removed just before.
        std::thread::sleep(Duration::from_millis(1200));
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let out = self.child.wait_with_output().unwrap();
        assert!(out.status.success(), "auditor failed: {:?}", out.status);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect()
    }
}

fn bpffs() {
    if !Path::new("/sys/fs/bpf").join(".").exists()
        || !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(" /sys/fs/bpf bpf ")
    {
        let _ = std::fs::create_dir_all("/sys/fs/bpf");
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "cannot mount bpffs");
    }
}

fn bpftool(args: &[&str]) -> std::process::Output {
    Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool is installed (apt-get install bpftool)")
}

fn pinned_id(pin: &str) -> u64 {
    let out = bpftool(&["map", "show", "pinned", pin, "-j"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_u64().unwrap()
}

/// The C helper, built once per test run with gcc.
fn maptool() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bpf-helpers/maptool.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bpf-maptool");
        let st = Command::new("gcc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "gcc failed to build {}",
            src.display()
        );
        out
    })
    .clone()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fresh_pin(name: &str) -> String {
    bpffs();
    let p = format!("/sys/fs/bpf/ma_test_{name}");
    let _ = std::fs::remove_file(&p);
    p
}

fn find(evs: &[Value], f: impl Fn(&Value) -> bool) -> Vec<&Value> {
    evs.iter().filter(|e| f(e)).collect()
}

#[test]
fn one_shot_bpftool_calls_carry_the_pinned_maps_id() {
    if !common::bpf_available("one_shot_bpftool_calls_carry_the_pinned_maps_id") {
        return;
    }
    let pin = fresh_pin("oneshot");
    let aud = Auditor::start(&["--comm", "bpftool"]);
    let auditor_pid = aud.child.id() as u64;
    let k = ["key", "1", "0", "0", "0"];
    let ok = |args: &[&str]| {
        let o = bpftool(args);
        assert!(
            o.status.success(),
            "bpftool {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(&[
        "map",
        "create",
        &pin,
        "type",
        "hash",
        "key",
        "4",
        "value",
        "4",
        "entries",
        "8",
        "name",
        "ma_oneshot",
    ]);
    let id = pinned_id(&pin);
    ok(&[
        &["map", "update", "pinned", &pin][..],
        &k,
        &["value", "2", "0", "0", "0"],
    ]
    .concat());
    ok(&[&["map", "lookup", "pinned", &pin][..], &k].concat());
    ok(&["map", "getnext", "pinned", &pin]);
    ok(&[&["map", "delete", "pinned", &pin][..], &k].concat());
    // Deleting again: the key is gone.
    assert!(
        !bpftool(&[&["map", "delete", "pinned", &pin][..], &k].concat())
            .status
            .success()
    );
    ok(&["map", "freeze", "pinned", &pin]);
    std::fs::remove_file(&pin).unwrap();
    let evs = aud.stop();

    let on_map = |cmd: &str| {
        find(&evs, |e| {
            e["kind"] == "bpf_map" && e["cmd"] == cmd && e["map_id"] == id
        })
    };
    let created = on_map("map_create");
    assert_eq!(created.len(), 1, "one map_create for id {id}: {evs:#?}");
    let c = created[0];
    assert_eq!(
        (
            &c["map_name"],
            &c["map_type"],
            &c["key_size"],
            &c["value_size"],
            &c["max_entries"]
        ),
        (
            &Value::from("ma_oneshot"),
            &Value::from("hash"),
            &Value::from(4),
            &Value::from(4),
            &Value::from(8)
        )
    );
    assert_eq!(c["comm"], "bpftool");
    assert_eq!(c["exe"], "/usr/sbin/bpftool");
    assert_eq!(c["result"], "ok");
    assert_eq!(on_map("obj_pin")[0]["path"], pin.as_str());
    for cmd in [
        "map_update_elem",
        "map_lookup_elem",
        "map_get_next_key",
        "map_freeze",
    ] {
        let e = on_map(cmd);
        assert_eq!(e.len(), 1, "{cmd} on map {id}");
        assert_eq!(e[0]["result"], "ok", "{cmd}");
        assert_eq!(e[0]["comm"], "bpftool");
        assert_eq!(e[0]["map_name"], "ma_oneshot");
        assert!(e[0]["latency_ns"].as_u64().unwrap() > 0);
    }
    // Every call came from a different, already exited process: the id was
    // resolved in the kernel at syscall time.
    let pids: std::collections::BTreeSet<_> =
        find(&evs, |e| e["map_id"] == id && e["cmd"] != "map_destroyed")
            .iter()
            .map(|e| e["pid"].as_u64().unwrap())
            .collect();
    assert!(pids.len() >= 6, "one-shot processes: {pids:?}");
    let deletes: Vec<_> = on_map("map_delete_elem")
        .iter()
        .map(|e| e["result"].clone())
        .collect();
    assert_eq!(deletes, vec![Value::from("ok"), Value::from("ENOENT")]);
    let destroyed = on_map("map_destroyed");
    assert_eq!(destroyed.len(), 1, "map_destroyed after unpin");
    assert_eq!(destroyed[0]["map_name"], "ma_oneshot");
    assert!(
        find(&evs, |e| e["kind"] == "bpf_map" && e["pid"] == auditor_pid).is_empty(),
        "own calls are left out"
    );
    let summary = find(&evs, |e| e["kind"] == "summary");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["dropped"], 0);
}

#[test]
fn failed_calls_carry_errno_names_and_batches_their_count() {
    if !common::bpf_available("failed_calls_carry_errno_names_and_batches_their_count") {
        return;
    }
    let pin = fresh_pin("errors");
    let tool = maptool();
    let aud = Auditor::start(&["--comm", "bpf-maptool"]);
    let id: u64 = run_ok(Command::new(&tool).args(["create", "ma_errors", &pin]))
        .trim()
        .parse()
        .unwrap();
    run_ok(Command::new(&tool).arg("badfd"));
    run_ok(Command::new(&tool).args(["badflags", &pin]));
    run_ok(Command::new(&tool).args(["batch", &pin]));
    std::fs::remove_file(&pin).unwrap();
    let evs = aud.stop();

    let upd = find(&evs, |e| {
        e["kind"] == "bpf_map" && e["cmd"] == "map_update_elem"
    });
    let badfd: Vec<_> = upd.iter().filter(|e| e["result"] == "EBADF").collect();
    assert_eq!(badfd.len(), 1, "{upd:#?}");
    assert_eq!(badfd[0]["map_id"], 0);
    assert_eq!(badfd[0]["fd"], 1000);
    let inval: Vec<_> = upd.iter().filter(|e| e["result"] == "EINVAL").collect();
    assert_eq!(inval.len(), 1);
    assert_eq!(inval[0]["map_id"], id);
    assert_eq!(inval[0]["flags"], 99);
    let batch = find(&evs, |e| {
        e["kind"] == "bpf_map" && e["cmd"] == "map_update_batch"
    });
    assert_eq!(batch.len(), 1, "{batch:#?}");
    assert_eq!(
        (
            &batch[0]["map_id"],
            &batch[0]["batch_count"],
            &batch[0]["result"]
        ),
        (&Value::from(id), &Value::from(5), &Value::from("ok"))
    );
    let creates = find(&evs, |e| {
        e["kind"] == "bpf_map" && e["cmd"] == "map_create" && e["map_id"] == id
    });
    assert_eq!(creates.len(), 1, "{creates:#?}");
}

#[test]
fn two_processes_writing_one_map_at_once_are_flagged() {
    if !common::bpf_available("two_processes_writing_one_map_at_once_are_flagged") {
        return;
    }
    let pin = fresh_pin("race");
    let tool = maptool();
    let aud = Auditor::start(&["--map-name", "ma_race", "--quiet"]);
    let id: u64 = run_ok(Command::new(&tool).args(["create", "ma_race", &pin]))
        .trim()
        .parse()
        .unwrap();
    let pids = run_ok(Command::new(&tool).args(["race", &pin, "20000"]));
    let pids: Vec<u64> = pids
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    std::fs::remove_file(&pin).unwrap();
    let evs = aud.stop();

    let conc = find(&evs, |e| {
        e["kind"] == "alert" && e["rule"] == "concurrent_writers"
    });
    assert!(!conc.is_empty(), "no concurrent writer alert: {evs:#?}");
    let a = conc[0];
    assert_eq!(a["map_id"], id);
    let pair = [a["pid"].as_u64().unwrap(), a["other_pid"].as_u64().unwrap()];
    assert!(
        pair.iter().all(|p| pids.contains(p)) && pair[0] != pair[1],
        "{a} vs {pids:?}"
    );
    assert_eq!(conc.len(), 1, "one alert per map and pair of processes");
    let flagged = find(&evs, |e| {
        e["kind"] == "bpf_map" && e.get("concurrent_with").is_some()
    });
    assert!(flagged.is_empty(), "--quiet prints no bpf_map events");
    let summary = find(&evs, |e| e["kind"] == "summary");
    assert!(summary[0]["overlaps"].as_u64().unwrap() >= 1);
    let multi = find(&evs, |e| {
        e["kind"] == "alert" && e["rule"] == "multi_process_writers"
    });
    assert_eq!(multi.len(), 1, "one multi-writer finding per map");
}

#[test]
fn guarded_map_written_by_another_process_raises_an_alert() {
    if !common::bpf_available("guarded_map_written_by_another_process_raises_an_alert") {
        return;
    }
    let pin = fresh_pin("guard");
    let tool = maptool();
    let aud = Auditor::start(&["--guard", "ma_guarded", "--quiet"]);
    let id: u64 = run_ok(Command::new(&tool).args(["create", "ma_guarded", &pin]))
        .trim()
        .parse()
        .unwrap();
    let upd = [
        "map", "update", "pinned", &pin, "key", "2", "0", "0", "0", "value", "1", "0", "0", "0",
    ];
    assert!(bpftool(&upd).status.success());
    let evs = aud.stop();
    let alerts = find(&evs, |e| {
        e["kind"] == "alert" && e["rule"] == "guarded_map_write"
    });
    // The creator's own update (inside `create`) is allowed; bpftool's is not.
    assert_eq!(alerts.len(), 1, "{evs:#?}");
    assert_eq!(alerts[0]["map_id"], id);
    assert_eq!(alerts[0]["comm"], "bpftool");
    assert_eq!(alerts[0]["cmd"], "map_update_elem");
    assert_eq!(alerts[0]["other_comm"], "bpf-maptool");

    // Guarded by pin path, created before the audit (creator unknown), with
    // bpftool allowed: no alert for bpftool, an alert for the helper.
    let aud = Auditor::start(&[
        "--guard",
        &pin,
        "--allow-exe",
        "/usr/sbin/bpftool",
        "--quiet",
    ]);
    assert!(bpftool(&upd).status.success());
    run_ok(Command::new(&tool).args(["badflags", &pin]));
    std::fs::remove_file(&pin).unwrap();
    let evs = aud.stop();
    let alerts = find(&evs, |e| {
        e["kind"] == "alert" && e["rule"] == "guarded_map_write"
    });
    assert_eq!(alerts.len(), 1, "{evs:#?}");
    assert_eq!(alerts[0]["comm"], "bpf-maptool");
    assert_eq!(alerts[0]["result"], "EINVAL");
}
