//! The per-version offset table and probe placement, checked against every
//! Go toolchain installed under `~/.cache/map-auditor/go/go1.*` (the ones
//! `cargo xtask setup` or a developer unpacked) plus Debian's Go 1.19.
//! A plain build's DWARF is the reference for the table; a stripped PIE
//! build of the same program must give the same answers without DWARF.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use map_auditor::goexe::{PlanOptions, ProbePlan};

const PROG: &str = r#"package main

import "fmt"

func main() {
	m := map[int64]string{}
	for i := int64(0); i < 10; i++ {
		m[i] = fmt.Sprint(i)
	}
	n := 0
	for k := range m {
		n += int(k)
	}
	delete(m, 3)
	fmt.Println(n, len(m), m[4])
}
"#;

fn toolchains() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let dir = Path::new(&home).join(".cache/map-auditor/go");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("go"))
                .filter(|g| g.join("bin/go").exists())
                .collect()
        })
        .unwrap_or_default();
    let debian = PathBuf::from("/usr/lib/go-1.19");
    if debian.join("bin/go").exists() {
        out.push(debian);
    }
    out.sort();
    out
}

fn build(goroot: &Path, stripped_pie: bool, out_dir: &Path) -> PathBuf {
    let name = if stripped_pie { "prog-spie" } else { "prog" };
    // The source is fixed and the folder is per toolchain: reuse a build.
    if out_dir.join(name).exists() {
        return out_dir.join(name);
    }
    std::fs::write(out_dir.join("main.go"), PROG).unwrap();
    std::fs::write(
        out_dir.join("go.mod"),
        "module example.com/versions\n\ngo 1.19\n",
    )
    .unwrap();
    let mut cmd = Command::new(goroot.join("bin/go"));
    cmd.current_dir(out_dir)
        .env("GOROOT", goroot)
        .env("GOCACHE", out_dir.join(".gocache"))
        .env("GOPATH", out_dir.join(".gopath"))
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .args(["build", "-o", name]);
    if stripped_pie {
        cmd.args(["-buildmode=pie", "-ldflags=-s -w"]);
    }
    let out = cmd.arg(".").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out_dir.join(name)
}

#[test]
fn every_installed_go_agrees_with_the_offset_table() {
    let chains = toolchains();
    assert!(
        !chains.is_empty(),
        "no Go toolchain installed: run `cargo xtask setup`"
    );
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go-test-bins/versions");
    let mut checked = Vec::new();
    for goroot in chains {
        let tag = goroot.to_string_lossy().replace('/', "_");
        let dir = cache.join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let plain = ProbePlan::for_exe(build(&goroot, false, &dir)).unwrap();
        let spie = ProbePlan::for_exe_with(
            build(&goroot, true, &dir),
            PlanOptions {
                exit_sites: true,
                ..PlanOptions::default()
            },
        )
        .unwrap();
        let v = plain.go_version;
        assert!(plain.offsets.from_dwarf, "{v}: no DWARF offsets");
        assert!(!spie.offsets.from_dwarf, "{v}");
        let key =
            |o: map_auditor::goexe::RuntimeOffsets| (o.goid, o.writing, o.writing_mask, o.iter_map);
        assert_eq!(key(plain.offsets), key(spie.offsets), "{v}: DWARF vs table");
        assert!(plain.warnings.is_empty(), "{v}: {:?}", plain.warnings);
        assert!(spie.warnings.is_empty(), "{v}: {:?}", spie.warnings);
        assert_eq!(plain.swiss_maps, v.minor >= 24, "{v}");
        assert_eq!(plain.found, spie.found, "{v}");
        for p in [&plain, &spie] {
            let s = p
                .entry_site("runtime.mapassign_fast64")
                .expect("mapassign_fast64");
            assert!(
                s.stackcheck && s.emulated && s.instruction.starts_with("jbe"),
                "{v}: {s:?}"
            );
            let iter = if p.swiss_maps {
                "runtime.mapIterStart"
            } else {
                "runtime.mapiterinit"
            };
            assert!(p.found.iter().any(|f| f == iter), "{v}: {iter} missing");
            assert!(p.type_names.is_some(), "{v}: type descriptors not found");
        }
        assert!(
            spie.sites
                .iter()
                .any(|s| s.exit && s.function == "runtime.mapassign_fast64")
        );
        checked.push(format!("{v} goid={}", plain.offsets.goid));
    }
    eprintln!("checked: {checked:?}");
}
