//! `run`'s hold on its target: started stopped, seized with ptrace so it is
//! probed before its first instruction, and kept traced so that its exit
//! stops it once more while its memory is still there — the package-level
//! variables naming its maps are read then, however soon it dies.
//!
//! One thread, the tracer, forks the target and makes every ptrace call
//! (the kernel only takes them from the tracing thread). Every thread of
//! the target is traced (`PTRACE_O_TRACECLONE`): the thread calling
//! `exit_group` is the one that stops at `PTRACE_EVENT_EXIT`, and it can be
//! any of them. The price is that each signal the target receives (Go
//! preempts goroutines with SIGURG) is a stop the tracer resumes at once;
//! docs/limitations.md gives the measured cost. Group stops (SIGSTOP,
//! SIGTSTP) are left in place with `PTRACE_LISTEN`, so job control works
//! as without the tracer. If the auditor dies, the kernel detaches and the
//! target runs on.

use std::{
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Command, ExitStatus},
    sync::{Arc, mpsc},
};

use anyhow::{Context, Result, bail};

use crate::goexe::GlobalIndex;

/// What to do with the target stopped at exec.
pub enum Release {
    /// Let it run; read these globals (load bias) at its exit.
    Run(Option<(Arc<GlobalIndex>, u64)>),
    /// Probing failed: kill it.
    Kill,
}

/// A target started under the tracer, stopped at its first instruction.
pub struct TracedTarget {
    pub pid: u32,
    release: mpsc::Sender<Release>,
    exited: mpsc::Receiver<ExitReport>,
}

/// How the target ended, from the tracer.
#[derive(Clone, Copy, Debug)]
pub struct ExitReport {
    pub status: ExitStatus,
    /// Variables read at the exit stop (0: no exit stop, or none to read).
    pub globals_read: usize,
    /// Signal-delivery stops the tracer resumed.
    pub signal_stops: u64,
}

const STOP_SIGNALS: [i32; 4] = [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

impl TracedTarget {
    /// Start `cmd` stopped after its exec, traced. Its stdio is the caller's.
    pub fn spawn(mut cmd: Command) -> Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<u32, String>>();
        let (release_tx, release_rx) = mpsc::channel::<Release>();
        let (exit_tx, exit_rx) = mpsc::channel::<ExitReport>();
        std::thread::Builder::new()
            .name("run-tracer".into())
            .spawn(move || match start_stopped(&mut cmd) {
                Ok(pid) => {
                    let _ = ready_tx.send(Ok(pid));
                    trace(pid, &release_rx, &exit_tx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .context("cannot start the tracer thread")?;
        match ready_rx.recv() {
            Ok(Ok(pid)) => Ok(Self {
                pid,
                release: release_tx,
                exited: exit_rx,
            }),
            Ok(Err(e)) => bail!("{e}"),
            Err(_) => bail!("the tracer thread ended before the program started"),
        }
    }

    /// Let the probed target run (or kill it).
    pub fn release(&self, what: Release) {
        let _ = self.release.send(what);
    }

    /// The target's end, if it came (non-blocking).
    pub fn try_exit(&self) -> Option<ExitReport> {
        self.exited.try_recv().ok()
    }

    /// Wait for the target's end.
    pub fn wait(&self) -> Option<ExitReport> {
        self.exited.recv().ok()
    }
}

/// Fork and exec `cmd`; returns its pid, seized and stopped right after
/// its exec, before its first instruction.
///
/// The child asks to be traced (`PTRACE_TRACEME`) and so stops at its exec
/// (a child stopping itself before the exec would hold `Command::spawn`,
/// which waits for the exec). That legacy tracing is then traded for a
/// seize without letting it run: detached with SIGSTOP it waits in a group
/// stop, single-threaded, to be seized.
fn start_stopped(cmd: &mut Command) -> Result<u32, String> {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Rust ignores SIGPIPE; an ignored signal survives exec, and the
            // target must get the default it would have had without us.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd.spawn().map_err(|e| {
        format!("cannot start {program}: {e}: check the path and that it is executable")
    })?;
    let pid = child.id() as i32;
    // Reaped by the tracer's waitpid, not by `Child`.
    std::mem::forget(child);
    let gone = || format!("{program} did not start (it exited before it could be probed)");
    let mut status = 0;
    // SAFETY: waiting on our own child, stopped at its exec.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if r != pid || !libc::WIFSTOPPED(status) {
        return Err(gone());
    }
    // SAFETY: detaching our own traced child, leaving it stopped.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, libc::SIGSTOP as libc::c_long) };
    // SAFETY: waiting on our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
    if r != pid || !libc::WIFSTOPPED(status) {
        return Err(gone());
    }
    let options = libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEEXIT;
    // SAFETY: seizing our own stopped child.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, options as libc::c_long) } != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut status, 0);
        }
        return Err(format!(
            "cannot trace {program} (PTRACE_SEIZE: {e}): run map-auditor as root, outside another tracer"
        ));
    }
    Ok(pid as u32)
}

/// The tracer's loop: release at exec, resume every stop, read the globals
/// at the exit stop, report the end.
fn trace(pid: u32, release: &mpsc::Receiver<Release>, exited: &mpsc::Sender<ExitReport>) {
    let leader = pid as i32;
    let globals = match release.recv() {
        Ok(Release::Run(g)) => g,
        Ok(Release::Kill) | Err(_) => {
            // SAFETY: our own tracee.
            unsafe { libc::kill(leader, libc::SIGKILL) };
            None
        }
    };
    // It waits in a group stop: end it (the tracer sees the stop and the
    // SIGCONT go by below).
    // SAFETY: our own tracee.
    unsafe { libc::kill(leader, libc::SIGCONT) };
    let mut globals_read = 0;
    let mut signal_stops = 0;
    loop {
        let mut status = 0;
        // Every traced thread of the target reports here.
        // SAFETY: waiting on our own tracees.
        let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if tid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            if tid == leader {
                let _ = exited.send(ExitReport {
                    status: ExitStatus::from_raw(status),
                    globals_read,
                    signal_stops,
                });
                return;
            }
            continue;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let event = (status >> 16) & 0xff;
        let sig = libc::WSTOPSIG(status);
        match event {
            libc::PTRACE_EVENT_EXIT => {
                if let Some((index, bias)) = &globals
                    && globals_read == 0
                {
                    globals_read = index.read_at_exit(tid as u32, *bias);
                }
                resume(tid, 0);
            }
            libc::PTRACE_EVENT_STOP => {
                if STOP_SIGNALS.contains(&sig) {
                    // A group stop: stay stopped until SIGCONT, as untraced.
                    // SAFETY: our own tracee in a group stop.
                    unsafe { libc::ptrace(libc::PTRACE_LISTEN, tid, 0, 0) };
                } else {
                    resume(tid, 0);
                }
            }
            0 => {
                // A signal on its way to the target: deliver it.
                signal_stops += 1;
                resume(tid, sig);
            }
            _ => resume(tid, 0),
        }
    }
    // waitpid failed: nothing left to wait for.
    let _ = exited.send(ExitReport {
        status: ExitStatus::from_raw(0),
        globals_read,
        signal_stops,
    });
}

fn resume(tid: i32, sig: i32) {
    // SAFETY: restarting our own stopped tracee.
    unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0, sig as libc::c_long) };
}
