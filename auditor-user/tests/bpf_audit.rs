//! `map-auditor bpf` against real bpf(2) calls: one-shot bpftool processes,
//! a C helper for batches, failures and two concurrent writers, and guards.
//! Needs root; see `common::bpf_available`.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Condvar, Mutex, OnceLock},
    time::Duration,
};

use serde_json::Value;

/// A running `map-auditor bpf --format json`.
struct Auditor {
    child: Child,
    /// What it printed on stderr before it was live (notes on guards).
    notes: String,
    /// Every JSON line so far, read as it comes.
    seen: Arc<(Mutex<Vec<Value>>, Condvar)>,
    reader: std::thread::JoinHandle<()>,
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
        let mut notes = String::new();
        loop {
            line.clear();
            if err.read_line(&mut line).unwrap() == 0 {
                let out = child.wait_with_output().unwrap();
                panic!("map-auditor bpf exited before attaching: {line} {out:?}");
            }
            notes.push_str(&line);
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
        let seen = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let out = BufReader::new(child.stdout.take().unwrap());
        let sink = seen.clone();
        let reader = std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                let v = serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}"));
                sink.0.lock().unwrap().push(v);
                sink.1.notify_all();
            }
        });
        Self {
            child,
            notes,
            seen,
            reader,
        }
    }

    /// Wait until the auditor printed an event `f` accepts.
    fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut evs = self.seen.0.lock().unwrap();
        while !evs.iter().any(&f) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "no {what} within 20 s: {evs:#?}");
            evs = self.seen.1.wait_timeout(evs, left).unwrap().0;
        }
    }

    /// SIGINT, then every JSON line it printed.
    fn stop(mut self) -> Vec<Value> {
        // Let the lifecycle poll (500 ms) see maps removed just before
        // (bpffs drops a pin's reference after an RCU grace period).
        std::thread::sleep(Duration::from_millis(1200));
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "auditor failed: {status:?}");
        self.reader.join().unwrap();
        std::mem::take(&mut *self.seen.0.lock().unwrap())
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
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(tool_comm());
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

/// Names unique to this test run: other runs of these tests may share the
/// machine, and the audit is system-wide.
fn uniq(base: &str) -> String {
    format!("{base}{}", std::process::id() % 100_000)
}

/// The helper's command name (its file name), unique to this run.
fn tool_comm() -> String {
    uniq("maptool")
}

/// A copy of the helper under a command name of its own, for a test that
/// filters by `--comm` while other tests run the helper at the same time.
fn tool_named(tag: &str) -> (PathBuf, String) {
    let comm = uniq(tag);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&comm);
    if !path.exists() {
        let tmp = path.with_extension("tmp");
        std::fs::copy(maptool(), &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    (path, comm)
}

fn fresh_pin(name: &str) -> String {
    bpffs();
    let p = format!("/sys/fs/bpf/{}", uniq(&format!("ma_test_{name}_")));
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
        &uniq("ma_oneshot"),
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
            &Value::from(uniq("ma_oneshot")),
            &Value::from("hash"),
            &Value::from(4),
            &Value::from(4),
            &Value::from(8)
        )
    );
    assert_eq!(c["comm"], "bpftool");
    // The executable by identity (a one-shot process is gone before its
    // /proc/PID/exe can be read, and then says so).
    let st = std::fs::metadata("/usr/sbin/bpftool").unwrap();
    assert_eq!(c["exe_ino"], st.ino());
    assert_eq!(
        c["exe_dev"],
        format!("{}:{}", libc::major(st.dev()), libc::minor(st.dev())).as_str()
    );
    assert!(
        c["exe"] == "/usr/sbin/bpftool" || c["exe_unread"] == true,
        "{c}"
    );
    assert_eq!(c["euid"], 0);
    assert!(
        c["caps"]
            .as_array()
            .unwrap()
            .contains(&Value::from("CAP_SYS_ADMIN"))
    );
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
        assert_eq!(e[0]["map_name"], uniq("ma_oneshot"));
        // Writes and freezes are timed from enter to exit; plain reads are
        // recorded at exit alone and carry no latency.
        if matches!(cmd, "map_update_elem" | "map_freeze") {
            assert!(e[0]["latency_ns"].as_u64().unwrap() > 0, "{cmd}");
        } else {
            assert!(e[0].get("latency_ns").is_none(), "{cmd}: {}", e[0]);
        }
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
    assert_eq!(destroyed[0]["map_name"], uniq("ma_oneshot"));
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
    let (tool, comm) = tool_named("mt_err");
    let aud = Auditor::start(&["--comm", &comm]);
    let id: u64 = run_ok(Command::new(&tool).args(["create", &uniq("ma_errors"), &pin]))
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
    let aud = Auditor::start(&["--map-name", &uniq("ma_race"), "--quiet"]);
    let id: u64 = run_ok(Command::new(&tool).args(["create", &uniq("ma_race"), &pin]))
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
    let aud = Auditor::start(&["--guard", &uniq("ma_guarded"), "--quiet"]);
    let id: u64 = run_ok(Command::new(&tool).args(["create", &uniq("ma_guarded"), &pin]))
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
    assert_eq!(alerts[0]["other_comm"], tool_comm());

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
    assert_eq!(alerts[0]["comm"], tool_comm());
    assert_eq!(alerts[0]["result"], "EINVAL");
}

fn alerts<'a>(evs: &'a [Value], rule: &str) -> Vec<&'a Value> {
    find(evs, |e| e["kind"] == "alert" && e["rule"] == rule)
}

/// A guarded map made before the audit (creator unknown), for evasions.
fn guarded_map(name: &str) -> (String, u64) {
    let pin = fresh_pin(name);
    let id = run_ok(Command::new(maptool()).args(["create", name, &pin]))
        .trim()
        .parse()
        .unwrap();
    (pin, id)
}

#[test]
fn allowed_executable_is_its_file_not_a_path_an_attacker_can_rebuild() {
    if !common::bpf_available("allowed_executable_is_its_file_not_a_path_an_attacker_can_rebuild") {
        return;
    }
    let (pin, id) = guarded_map(&uniq("ma_ident"));
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ident");
    let _ = Command::new("umount").arg(base.join("mnt")).status();
    let _ = std::fs::remove_dir_all(&base);
    // The allowed binary, 8 path components deep, in a directory whose
    // name is longer than the 31 bytes the kernel-side path used to keep.
    let long_dir = "d".repeat(44);
    let allowed = base.join(format!("a/b/c/{long_dir}/gw"));
    std::fs::create_dir_all(allowed.parent().unwrap()).unwrap();
    std::fs::copy(maptool(), &allowed).unwrap();
    // A copy whose path ends with the allowed path.
    let rel = allowed.strip_prefix("/").unwrap();
    let suffix_copy = base.join("evil").join(rel);
    std::fs::create_dir_all(suffix_copy.parent().unwrap()).unwrap();
    std::fs::copy(maptool(), &suffix_copy).unwrap();
    // A copy on a fresh tmpfs, at the allowed path below the mount point.
    let mnt = base.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    assert!(
        Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap()
            .success()
    );
    let mount_copy = mnt.join(rel);
    std::fs::create_dir_all(mount_copy.parent().unwrap()).unwrap();
    std::fs::copy(maptool(), &mount_copy).unwrap();

    let aud = Auditor::start(&[
        "--guard",
        &uniq("ma_ident"),
        "--allow-exe",
        allowed.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        aud.notes
            .contains(&format!("guard name {}: matches map", uniq("ma_ident"))),
        "{}",
        aud.notes
    );
    run_ok(Command::new(&allowed).args(["badflags", &pin]));
    run_ok(Command::new(&suffix_copy).args(["badflags", &pin]));
    run_ok(Command::new(&mount_copy).args(["badflags", &pin]));
    let evs = aud.stop();
    let _ = Command::new("umount").arg(&mnt).status();
    std::fs::remove_file(&pin).unwrap();

    let writes = alerts(&evs, "guarded_map_write");
    let inodes: Vec<u64> = writes
        .iter()
        .map(|a| a["exe_ino"].as_u64().unwrap())
        .collect();
    let ino = |p: &Path| std::fs::metadata(p).map(|m| m.ino()).unwrap_or(0);
    assert_eq!(
        writes.len(),
        2,
        "two copies alerted, the allowed file not: {evs:#?}"
    );
    assert!(inodes.contains(&ino(&suffix_copy)), "{inodes:?}");
    assert!(!inodes.contains(&ino(&allowed)), "{inodes:?}");
    for a in &writes {
        assert_eq!(a["map_id"], id);
        assert_eq!(a["euid"], 0, "the rights are on the alert: {a}");
        assert!(
            a["caps"]
                .as_array()
                .unwrap()
                .contains(&Value::from("CAP_BPF"))
        );
    }
}

#[test]
fn verified_hash_refuses_an_allowed_file_changed_in_place() {
    if !common::bpf_available("verified_hash_refuses_an_allowed_file_changed_in_place") {
        return;
    }
    let name = uniq("ma_hash");
    let (pin, id) = guarded_map(&name);
    let (allowed, comm) = tool_named("hashok");
    let aud = Auditor::start(&[
        "--guard",
        &name,
        "--allow-exe",
        allowed.to_str().unwrap(),
        "--verify-hash",
        "--comm",
        &comm,
    ]);
    assert!(aud.notes.contains("sha256 "), "{}", aud.notes);
    // The file as it was at start: allowed.
    run_ok(Command::new(&allowed).args(["badflags", &pin]));
    aud.wait_for("the allowed write", |e| {
        e["kind"] == "bpf_map" && e["comm"] == comm.as_str() && e["cmd"] == "map_update_elem"
    });
    // The same inode with other content (bytes appended: still a valid
    // ELF): device and inode still match, the content does not.
    let ino = std::fs::metadata(&allowed).unwrap().ino();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&allowed)
            .unwrap();
        f.write_all(b"changed in place").unwrap();
    }
    assert_eq!(std::fs::metadata(&allowed).unwrap().ino(), ino);
    run_ok(Command::new(&allowed).args(["badflags", &pin]));
    let evs = aud.stop();
    std::fs::remove_file(&pin).unwrap();
    std::fs::remove_file(&allowed).unwrap();
    let writes: Vec<&Value> = alerts(&evs, "guarded_map_write")
        .into_iter()
        .filter(|a| a["comm"] == comm.as_str())
        .collect();
    assert_eq!(writes.len(), 1, "only the changed file alerted: {evs:#?}");
    assert_eq!(writes[0]["map_id"], id);
    assert_eq!(writes[0]["exe_ino"], ino);
    let calls = find(&evs, |e| {
        e["kind"] == "bpf_map" && e["comm"] == comm.as_str() && e["cmd"] == "map_update_elem"
    });
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_ne!(calls[0]["exe_sha256"], calls[1]["exe_sha256"], "{calls:#?}");
    assert!(
        writes[0]["message"]
            .as_str()
            .unwrap()
            .contains(calls[1]["exe_sha256"].as_str().unwrap()),
        "{}",
        writes[0]
    );
}

#[test]
fn calls_on_non_map_fds_and_unreadable_attrs_are_reported_and_counted() {
    if !common::bpf_available("calls_on_non_map_fds_and_unreadable_attrs_are_reported_and_counted")
    {
        return;
    }
    let (tool, comm) = tool_named("mt_unr");
    let aud = Auditor::start(&["--comm", &comm]);
    run_ok(Command::new(tool).arg("unresolved"));
    let evs = aud.stop();
    let upd = find(&evs, |e| {
        e["kind"] == "bpf_map" && e["cmd"] == "map_update_elem" && e["map_id"] == 0
    });
    let got: Vec<(String, Value)> = upd
        .iter()
        .map(|e| (e["result"].as_str().unwrap().to_string(), e["fd"].clone()))
        .collect();
    assert!(
        got.contains(&("EINVAL".into(), Value::from(3))),
        "pipe: {got:?}"
    );
    assert!(
        got.contains(&("EBADF".into(), Value::from(-1))),
        "fd -1 signed: {got:?}"
    );
    assert!(
        got.contains(&("EFAULT".into(), Value::Null)),
        "NULL attr: {got:?}"
    );
    let summary = find(&evs, |e| e["kind"] == "summary");
    assert!(
        summary[0]["unresolved_fds"].as_u64().unwrap() >= 3,
        "{summary:?}"
    );
}

#[test]
fn thirty_two_bit_calls_are_seen_and_guarded() {
    if !common::bpf_available("thirty_two_bit_calls_are_seen_and_guarded") {
        return;
    }
    let (pin, id) = guarded_map(&uniq("ma_compat"));
    let aud = Auditor::start(&["--guard", &pin, "--quiet"]);
    assert!(aud.notes.contains("32-bit calls: seen"), "{}", aud.notes);
    run_ok(Command::new(maptool()).args(["compat", &pin]));
    let evs = aud.stop();
    std::fs::remove_file(&pin).unwrap();
    let a = alerts(&evs, "guarded_map_write");
    assert_eq!(a.len(), 1, "{evs:#?}");
    assert_eq!(a[0]["map_id"], id);
    assert!(
        a[0]["message"].as_str().unwrap().contains("32-bit"),
        "{}",
        a[0]
    );
}

#[test]
fn writable_mmap_of_a_guarded_map_raises_an_alert() {
    if !common::bpf_available("writable_mmap_of_a_guarded_map_raises_an_alert") {
        return;
    }
    let pin = fresh_pin("mmap");
    let id: u64 = run_ok(Command::new(maptool()).args(["mmapcreate", &uniq("ma_mmap"), &pin]))
        .trim()
        .parse()
        .unwrap();
    let aud = Auditor::start(&["--guard", &id.to_string(), "--quiet"]);
    run_ok(Command::new(maptool()).args(["mmapwrite", &pin]));
    let evs = aud.stop();
    std::fs::remove_file(&pin).unwrap();
    let a = alerts(&evs, "guarded_map_write");
    assert_eq!(a.len(), 1, "{evs:#?}");
    assert_eq!(
        (&a[0]["map_id"], &a[0]["cmd"]),
        (&Value::from(id), &Value::from("mmap"))
    );
}

/// A cgroup v2 directory no process is in (links there change nothing).
fn empty_cgroup() -> PathBuf {
    empty_cgroup_named("map_auditor_test")
}

fn empty_cgroup_named(name: &str) -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let root = match mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
    {
        Some(f) => PathBuf::from(f[1]),
        None => {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cgroup2");
            std::fs::create_dir_all(&dir).unwrap();
            assert!(
                Command::new("mount")
                    .args(["-t", "cgroup2", "none"])
                    .arg(&dir)
                    .status()
                    .unwrap()
                    .success()
            );
            dir
        }
    };
    let cg = root.join(name);
    let _ = std::fs::create_dir(&cg);
    cg
}

#[test]
fn programs_that_reference_a_guarded_map_raise_alerts() {
    if !common::bpf_available("programs_that_reference_a_guarded_map_raise_alerts") {
        return;
    }
    let (pin, id) = guarded_map(&uniq("ma_prog"));
    let cg = empty_cgroup();
    let aud = Auditor::start(&["--guard", &uniq("ma_prog"), "--quiet"]);
    let by_fd: u64 = run_ok(Command::new(maptool()).args(["prog", &pin, "fd"]))
        .trim()
        .parse()
        .unwrap();
    let by_idx: u64 = run_ok(Command::new(maptool()).args(["prog", &pin, "idx"]))
        .trim()
        .parse()
        .unwrap();
    let linked: u64 = run_ok(Command::new(maptool()).args(["link", &pin, cg.to_str().unwrap()]))
        .trim()
        .parse()
        .unwrap();
    let evs = aud.stop();
    std::fs::remove_file(&pin).unwrap();
    let _ = std::fs::remove_dir(&cg);
    let a = alerts(&evs, "guarded_map_program");
    let seen: Vec<(String, u64)> = a
        .iter()
        .map(|a| {
            assert_eq!(a["map_id"], id, "{a}");
            let prog = a["message"].as_str().unwrap();
            let pid = [by_fd, by_idx, linked]
                .into_iter()
                .find(|p| prog.contains(&format!("program {p} ")))
                .unwrap_or(0);
            (a["cmd"].as_str().unwrap().to_string(), pid)
        })
        .collect();
    for want in [
        ("prog_load".to_string(), by_fd),
        ("prog_test_run".to_string(), by_fd),
        ("prog_load".to_string(), by_idx),
        ("prog_test_run".to_string(), by_idx),
        ("prog_load".to_string(), linked),
        ("link_create".to_string(), linked),
    ] {
        assert!(seen.contains(&want), "{want:?} not in {seen:?}");
    }
}

#[test]
fn attaching_or_swapping_in_a_program_that_uses_a_guarded_map_raises_alerts() {
    if !common::bpf_available(
        "attaching_or_swapping_in_a_program_that_uses_a_guarded_map_raises_alerts",
    ) {
        return;
    }
    let name = uniq("ma_attach");
    let (pin, id) = guarded_map(&name);
    let cg = empty_cgroup_named(&uniq("map_auditor_attach"));
    let aud = Auditor::start(&["--guard", &name, "--quiet"]);
    let prog = |args: &[&str]| -> u64 {
        run_ok(Command::new(maptool()).args(args))
            .trim()
            .parse()
            .unwrap()
    };
    let cgs = cg.to_str().unwrap();
    let attached = prog(&["attach", &pin, cgs]);
    let swapped_in = prog(&["linkupdate", &pin, cgs]);
    let raw_tp = prog(&["rawtp", &pin]);
    let evs = aud.stop();
    std::fs::remove_file(&pin).unwrap();
    let _ = std::fs::remove_dir(&cg);
    let a = alerts(&evs, "guarded_map_program");
    for (cmd, prog) in [
        ("prog_attach", attached),
        ("link_update", swapped_in),
        ("raw_tracepoint_open", raw_tp),
    ] {
        let hit = a.iter().find(|a| {
            a["cmd"] == cmd
                && a["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("program {prog} "))
        });
        let hit = hit.unwrap_or_else(|| panic!("no {cmd} alert for program {prog}: {a:#?}"));
        assert_eq!(hit["map_id"], id, "{hit}");
        assert_eq!(hit["comm"], tool_comm().as_str(), "{hit}");
    }
    // The program that touches no map (linked before the update) raised
    // no alert of its own.
    let link_creates = a.iter().filter(|a| a["cmd"] == "link_create").count();
    assert_eq!(link_creates, 0, "{a:#?}");
}

#[test]
fn guard_names_longer_than_the_kernel_keeps_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_map-auditor"))
        .args([
            "bpf",
            "--guard",
            "a_map_name_of_20_char",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at most 15 bytes") && err.contains("a_map_name_of_2"),
        "{err}"
    );
}

#[test]
fn map_moved_onto_a_guarded_pin_is_reported_and_guarded() {
    if !common::bpf_available("map_moved_onto_a_guarded_pin_is_reported_and_guarded") {
        return;
    }
    let (pin, first) = guarded_map(&uniq("ma_pin_a"));
    let (other, second) = guarded_map(&uniq("ma_pin_b"));
    let aud = Auditor::start(&["--guard", &pin, "--quiet"]);
    assert!(
        aud.notes
            .contains(&format!("matches map {first} ({})", uniq("ma_pin_a"))),
        "{}",
        aud.notes
    );
    std::fs::rename(&other, &pin).unwrap();
    aud.wait_for("guarded_pin_changed alert", |e| {
        e["rule"] == "guarded_pin_changed"
    });
    run_ok(Command::new(maptool()).args(["badflags", &pin]));
    let evs = aud.stop();
    std::fs::remove_file(&pin).unwrap();
    let changed = alerts(&evs, "guarded_pin_changed");
    assert_eq!(changed.len(), 1, "{evs:#?}");
    assert_eq!(changed[0]["map_id"], second);
    let w = alerts(&evs, "guarded_map_write");
    assert!(w.iter().any(|a| a["map_id"] == second), "{evs:#?}");
}

#[test]
fn process_filters_also_choose_destroyed_maps_and_summary_rows() {
    if !common::bpf_available("process_filters_also_choose_destroyed_maps_and_summary_rows") {
        return;
    }
    let mine = fresh_pin("filter_mine");
    let theirs = fresh_pin("filter_theirs");
    let (tool, comm) = tool_named("mt_flt");
    let aud = Auditor::start(&["--comm", &comm]);
    run_ok(Command::new(tool).args(["create", &uniq("ma_mine"), &mine]));
    assert!(
        bpftool(&[
            "map",
            "create",
            &theirs,
            "type",
            "hash",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "8",
            "name",
            &uniq("ma_theirs"),
        ])
        .status
        .success()
    );
    std::fs::remove_file(&mine).unwrap();
    std::fs::remove_file(&theirs).unwrap();
    let evs = aud.stop();
    let destroyed: Vec<&str> = find(&evs, |e| e["cmd"] == "map_destroyed")
        .iter()
        .map(|e| e["map_name"].as_str().unwrap())
        .collect();
    assert!(
        destroyed.contains(&uniq("ma_mine").as_str()),
        "{destroyed:?}"
    );
    assert!(
        !destroyed.contains(&uniq("ma_theirs").as_str()),
        "{destroyed:?}"
    );
}

#[test]
fn daemon_guard_by_id_alerts_in_its_log_through_the_shared_engine() {
    if !common::bpf_available("daemon_guard_by_id_alerts_in_its_log_through_the_shared_engine") {
        return;
    }
    let (pin, id) = guarded_map(&uniq("ma_daemon"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("daemon.toml");
    std::fs::write(
        &cfg,
        format!("[bpf]\nenabled = true\nalerts_only = true\nguard = [\"{id}\"]\n"),
    )
    .unwrap();
    let log = dir.path().join("log");
    /// Kills the daemon if the test fails before stopping it.
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_map-auditor"))
        .arg("daemon")
        .arg("--config")
        .arg(&cfg)
        .arg("--socket")
        .arg(dir.path().join("control.sock"))
        .arg("--log-dir")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut child = Reap(child);
    // Live once the bpf(2) engine printed its start line.
    let mut err = BufReader::new(err);
    let mut line = String::new();
    let mut notes = String::new();
    loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "daemon ended before bpf(2) auditing was live: {notes}"
        );
        notes.push_str(&line);
        if line.contains("bpf: auditing") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    assert!(
        notes.contains(&format!(
            "guard id {id}: matches map {id} ({})",
            uniq("ma_daemon")
        )),
        "{notes}"
    );
    run_ok(Command::new(maptool()).args(["badflags", &pin]));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let text = std::fs::read_to_string(log.join("audit.jsonl")).unwrap_or_default();
        if let Some(a) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["kind"] == "alert" && e["rule"] == "guarded_map_write")
        {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no alert in the daemon's log: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert!(child.0.wait().unwrap().success());
    std::fs::remove_file(&pin).unwrap();
    assert_eq!(alert["map_id"], id);
    assert_eq!(alert["comm"], tool_comm());
    assert_eq!(alert["euid"], 0);
}
