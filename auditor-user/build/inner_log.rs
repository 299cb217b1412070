//! What the inner eBPF build prints, sorted into progress and diagnostics.
//!
//! The kernel crate is built by a second cargo (nightly, `-Z build-std`).
//! Its stderr is mostly progress (`Compiling core ...`), which a build
//! script can only pass on as `cargo:warning` lines: a plain `cargo build`
//! would show ~80 of them. The whole output goes to a log file; only what
//! explains a failure is shown, and only when the build fails.
//!
//! Pure std, so the library's unit tests include this file too.

/// Words cargo starts a progress line with (after its right-aligned padding).
const PROGRESS_VERBS: &[&str] = &[
    "Compiling",
    "Checking",
    "Fresh",
    "Finished",
    "Running",
    "Blocking",
    "Updating",
    "Locking",
    "Adding",
    "Downloading",
    "Downloaded",
    "Unpacking",
    "Packaging",
];

/// True for a line of cargo's progress (`   Compiling core v0.0.0 (...)`).
pub fn is_progress_line(line: &str) -> bool {
    let trimmed = line.trim_start();
    let Some((verb, rest)) = trimmed.split_once(' ') else {
        return false;
    };
    PROGRESS_VERBS.contains(&verb) && !rest.is_empty()
}

/// The lines of a failed inner build worth showing: everything but
/// progress and blank lines, at most `limit` of them (the last ones, where
/// cargo and the linker say what went wrong).
pub fn failure_lines(log: &str, limit: usize) -> Vec<&str> {
    let kept: Vec<&str> = log
        .lines()
        .filter(|l| !l.trim().is_empty() && !is_progress_line(l))
        .collect();
    let skip = kept.len().saturating_sub(limit);
    kept.into_iter().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_recognised_whatever_their_padding() {
        assert!(is_progress_line(
            "   Compiling core v0.0.0 (/root/.rustup/toolchains/nightly/lib/rustlib/src/rust/library/core)"
        ));
        assert!(is_progress_line(
            "    Finished `release` profile [optimized] target(s) in 5.82s"
        ));
        assert!(is_progress_line(
            "    Blocking waiting for file lock on package cache"
        ));
        assert!(!is_progress_line("error: linking with `bpf-linker` failed"));
        assert!(!is_progress_line("Compiling"));
        assert!(!is_progress_line(""));
    }

    #[test]
    fn a_failure_shows_the_errors_without_the_progress() {
        let log = "   Compiling core v0.0.0 (/x)\n   Compiling auditor-ebpf v0.1.0 (/y)\n\
                   error[E0425]: cannot find value `x` in this scope\n\n --> src/main.rs:3:5\n\
                   error: could not compile `auditor-ebpf` (bin \"auditor\") due to 1 previous error\n";
        assert_eq!(
            failure_lines(log, 10),
            vec![
                "error[E0425]: cannot find value `x` in this scope",
                " --> src/main.rs:3:5",
                "error: could not compile `auditor-ebpf` (bin \"auditor\") due to 1 previous error",
            ]
        );
        assert_eq!(
            failure_lines(log, 1),
            vec![
                "error: could not compile `auditor-ebpf` (bin \"auditor\") due to 1 previous error"
            ]
        );
    }
}
