//! The default scope: in entry mode the auditor probes the calls that the
//! program's own code (and its dependencies, `reflect` and `maps`) makes
//! to the runtime's map functions, not the map functions themselves, so
//! maps only the rest of the standard library touches cost nothing; races
//! on the program's maps are still found, also through reflection.
//! `--scope all` probes every map access at the runtime's functions.

mod common;

use std::process::{Command, Stdio};

use common::{GoToolchain, Link, bpf_available, build_go};
use serde_json::Value;

const SCOPE: &str = include_str!("go/scope.go");

/// `map-auditor run --format json ARGS -- scope MODE`: every JSON event,
/// and the target's own lines.
fn run(
    tc: GoToolchain,
    link: Link,
    args: &[&str],
    mode: &str,
) -> (Vec<Value>, Vec<String>, String) {
    let exe = build_go("scope", SCOPE, tc, link);
    let out = Command::new(env!("CARGO_BIN_EXE_map-auditor"))
        .args(["run", "--format", "json"])
        .args(args)
        .arg("--")
        .arg(&exe)
        .arg(mode)
        .stdin(Stdio::null())
        .output()
        .expect("start map-auditor");
    let mut events = Vec::new();
    let mut target = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.get("kind").is_some() => events.push(v),
            _ => target.push(line.to_owned()),
        }
    }
    (
        events,
        target,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn attach_report(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["kind"] == "attach")
        .expect("an attach report")
}

fn package_of(function: &str) -> &str {
    map_auditor::goexe::package_of(function)
}

#[test]
fn default_mode_probes_the_programs_calls_and_not_the_standard_librarys() {
    if !bpf_available("default_mode_probes_the_programs_calls_and_not_the_standard_librarys") {
        return;
    }
    for (tc, link) in [
        (GoToolchain::Classic, Link::Plain),
        (GoToolchain::Swiss, Link::StrippedPie),
    ] {
        let (events, target, stderr) = run(tc, link, &[], "stdlib");
        let ctx = format!("{tc:?} {link:?}: {stderr}");
        assert!(target.iter().any(|l| l == "done 1000"), "{target:?} {ctx}");
        let report = attach_report(&events);
        assert_eq!(report["scope"], "user", "{ctx}");
        let probes = report["probes"].as_array().unwrap();
        let calls: Vec<&str> = probes
            .iter()
            .filter_map(|p| p["call_site"].as_str())
            .collect();
        // Every probe but the runtime's own (the fatal-error function, the
        // goroutine exit and stack copy) sits on a call in scope.
        let hooks = |role: &str| probes.iter().filter(|p| p["hook"] == role).count();
        assert_eq!(hooks("fatal-error"), 1, "{report} {ctx}");
        assert_eq!(hooks("goroutine-change"), 2, "{report} {ctx}");
        assert_eq!(calls.len() + 3, probes.len(), "{report} {ctx}");
        assert!(
            calls.iter().any(|c| c.starts_with("main.countWords+")),
            "{calls:?} {ctx}"
        );
        for c in &calls {
            let pkg = package_of(c);
            assert!(
                ["main", "reflect", "maps"].contains(&pkg) || pkg.contains('.'),
                "a call in {pkg} is probed: {calls:?} {ctx}"
            );
        }
        assert!(!calls.iter().any(|c| c.starts_with("net/url.")), "{ctx}");
        let seen =
            |events: &[Value], what: &str| events.iter().any(|e| e.to_string().contains(what));
        assert!(seen(&events, "\"function\":\"main.countWords\""), "{ctx}");
        assert!(!seen(&events, "\"function\":\"net/url."), "{ctx}");

        // `--scope all` probes the runtime's functions: net/url's own map
        // is seen too.
        let (events, target, stderr) = run(tc, link, &["--scope", "all"], "stdlib");
        let ctx = format!("{tc:?} {link:?} --scope all: {stderr}");
        assert!(target.iter().any(|l| l == "done 1000"), "{target:?} {ctx}");
        let report = attach_report(&events);
        assert_eq!(report["scope"], "all", "{ctx}");
        assert!(
            report["probes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["call_site"].is_null()),
            "{report}"
        );
        assert!(
            seen(&events, "\"function\":\"net/url."),
            "no access by net/url was seen with --scope all: {ctx}"
        );
    }
}

#[test]
fn default_mode_names_both_sides_of_a_race_through_reflection() {
    if !bpf_available("default_mode_names_both_sides_of_a_race_through_reflection") {
        return;
    }
    for tc in [GoToolchain::Classic, GoToolchain::Swiss] {
        let (events, target, stderr) =
            run(tc, Link::Plain, &["--quiet", "--stack-depth", "16"], "json");
        let ctx = format!("{tc:?}: {target:?} {stderr}");
        let overlaps: Vec<&Value> = events.iter().filter(|e| e["kind"] == "overlap").collect();
        let named = overlaps.iter().any(|o| {
            let sides = [&o["first"], &o["second"]];
            let writer = sides
                .iter()
                .any(|s| s["function"] == "main.writer" && s["op"] == "write");
            // The encoder's side: its call into the runtime is reflect's,
            // and its stack leads back through encoding/json.
            let encoder = sides.iter().any(|s| {
                s["function"]
                    .as_str()
                    .is_some_and(|f| package_of(f) == "reflect")
                    && s["stack"].to_string().contains("encoding/json.")
            });
            writer && encoder
        });
        assert!(
            named,
            "no overlap names main.writer and the encoder: {overlaps:?} {ctx}"
        );
    }
}

#[test]
fn a_fatal_race_outside_the_scope_is_counted_and_the_summary_says_what_to_do() {
    if !bpf_available("a_fatal_race_outside_the_scope_is_counted_and_the_summary_says_what_to_do") {
        return;
    }
    let exe = build_go(
        "paths",
        include_str!("go/paths.go"),
        GoToolchain::Swiss,
        Link::Plain,
    );
    // The racing writers are in `main`, outside a scope of net/url: no
    // probe records them, and the fatal-error probe must not guess.
    let out = Command::new(env!("CARGO_BIN_EXE_map-auditor"))
        .args([
            "run",
            "--quiet",
            "--scope",
            "net/url",
            "--",
            exe.to_str().unwrap(),
            "fatal",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("start map-auditor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("concurrent map writes"),
        "the runtime did not catch the race: {stdout} {stderr}"
    );
    assert!(!stdout.contains("OVERLAP"), "{stdout}");
    assert!(
        stdout.contains(
            "the runtime died of a concurrent map error in a call no probe recorded (scope net/url): run again with --scope all"
        ),
        "{stdout} {stderr}"
    );
}
