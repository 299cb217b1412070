//! SIGINT and SIGTERM for `attach` and `run`, with where they came from.
//!
//! `run` passes a signal on to its target, but a terminal's Ctrl-C already
//! reached the target (same foreground process group): the kernel marks
//! such signals `SI_KERNEL`, which tokio's signal streams do not tell, so
//! the handler here keeps `si_code` for the session to read.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

static RECEIVED: AtomicUsize = AtomicUsize::new(0);
static LAST: AtomicI32 = AtomicI32::new(0);
static FROM_TERMINAL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    FROM_TERMINAL.store(code == libc::SI_KERNEL, Ordering::SeqCst);
    LAST.store(sig, Ordering::SeqCst);
    RECEIVED.fetch_add(1, Ordering::SeqCst);
}

/// One received signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub signal: i32,
    /// Sent by the terminal to the whole foreground process group.
    pub from_terminal: bool,
    /// How many signals have arrived so far, this one included.
    pub nth: usize,
}

/// Receives SIGINT and SIGTERM for the rest of the process's life.
pub struct SignalWatch {
    seen: usize,
}

impl SignalWatch {
    pub fn install() -> std::io::Result<Self> {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: installing a handler that only stores to atomics
            // (async-signal-safe); the sigaction struct is zeroed first.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_signal as *const () as usize;
                act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                libc::sigemptyset(&mut act.sa_mask);
                if libc::sigaction(sig, &act, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(Self {
            seen: RECEIVED.load(Ordering::SeqCst),
        })
    }

    /// A signal that arrived since the last call, if any. Signals arriving
    /// together are reported as the last of them, counted.
    pub fn next_received(&mut self) -> Option<Received> {
        let n = RECEIVED.load(Ordering::SeqCst);
        if n == self.seen {
            return None;
        }
        self.seen = n;
        Some(Received {
            signal: LAST.load(Ordering::SeqCst),
            from_terminal: FROM_TERMINAL.load(Ordering::SeqCst),
            nth: n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_sent_with_kill_is_seen_once_and_not_from_a_terminal() {
        let mut w = SignalWatch::install().unwrap();
        assert_eq!(w.next_received(), None);
        // SAFETY: signalling ourselves; the handler above catches it.
        unsafe { libc::raise(libc::SIGTERM) };
        let r = w.next_received().expect("the signal");
        assert_eq!(r.signal, libc::SIGTERM);
        assert!(!r.from_terminal);
        assert_eq!(w.next_received(), None);
    }
}
