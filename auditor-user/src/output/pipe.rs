//! A closed standard output (`map-auditor ... | head`) ends a command the
//! way it ends `grep`: commands stop, clean up, and return
//! [`StdoutClosed`]; `main` then exits as if killed by SIGPIPE. Rust ignores
//! SIGPIPE, so without this every `println!` after the reader left would
//! panic or fail thousands of times a second.

use std::io;

/// The reader of standard output went away.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed by its reader")]
pub struct StdoutClosed;

/// Whether `err` (or any of its causes) is a closed pipe on the way out.
pub fn is_stdout_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<StdoutClosed>().is_some()
            || c.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Turn a write error into [`StdoutClosed`] when it is a broken pipe, so
/// callers can use `?` on stdout writes.
pub fn stdout_result(r: io::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
        Ok(()) => Ok(()),
    }
}

/// Write `text` to standard output at once; a closed pipe is
/// [`StdoutClosed`].
pub fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = io::stdout().lock();
    stdout_result(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

/// Exit with the status of a process killed by SIGPIPE (a shell shows 141),
/// which is what a pipeline expects of a writer whose reader left.
pub fn exit_as_sigpipe() -> ! {
    // SAFETY: restoring the default disposition and raising a signal at
    // ourselves; nothing else runs on this path.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_anywhere_in_the_chain_is_a_closed_stdout() {
        let e = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_stdout_closed(&e));
        assert!(is_stdout_closed(&anyhow::Error::new(StdoutClosed)));
        let other = anyhow::Error::new(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!is_stdout_closed(&other));
        assert!(is_stdout_closed(
            &stdout_result(Err(io::ErrorKind::BrokenPipe.into())).unwrap_err()
        ));
        assert!(!is_stdout_closed(
            &stdout_result(Err(io::ErrorKind::StorageFull.into())).unwrap_err()
        ));
    }
}
