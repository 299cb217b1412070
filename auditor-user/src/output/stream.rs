//! The live log's way out: a writer thread between a session and its
//! standard output (or `--output` file).
//!
//! A session must keep its deadline and keep reading the ring however slow
//! the reader of its output is, so it never writes to the terminal or pipe
//! itself. It hands whole lines to [`LiveStream`]; the thread writes them.
//! - Every `write(2)` carries whole lines, at most `PIPE_BUF` bytes of them,
//!   so a target sharing the same pipe or terminal (`run`) can never land
//!   inside one of the auditor's lines.
//! - Access lines are *live* lines: when more than a budget of bytes is
//!   waiting, new ones are shed and counted; findings, losses and the
//!   summary are never shed.
//! - A closed pipe or a failed write is remembered; the session asks
//!   [`LiveStream::is_closed`] and ends.

use std::{
    io::{self, Write},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Largest write the kernel keeps in one piece on a pipe.
const PIPE_BUF: usize = libc::PIPE_BUF;

/// Live bytes gathered before they are handed to the writer.
const BATCH: usize = 16 * 1024;

struct Chunk {
    bytes: Vec<u8>,
    lines: u64,
    live: bool,
}

#[derive(Default)]
struct Claims {
    /// Set at the end of a session: live lines still queued are shed.
    shed_queued: bool,
    /// Live events the writer has taken on to write.
    claimed: u64,
}

struct Shared {
    claims: Mutex<Claims>,
    queued: AtomicUsize,
    closed: AtomicBool,
    error: Mutex<Option<io::Error>>,
}

/// What happened to the lines of a finished stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamTally {
    /// Live events written (or being written when the session ended).
    pub shown: u64,
    /// Live events shed because the output could not keep up.
    pub shed: u64,
}

/// A writer thread that owns the live log's destination.
pub struct LiveStream {
    tx: Option<mpsc::Sender<Chunk>>,
    done: mpsc::Receiver<()>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    pending: Vec<u8>,
    pending_lines: u64,
    budget: usize,
    submitted: u64,
    shed_here: u64,
}

impl LiveStream {
    /// Start the writer thread on `out` (written without buffering of its
    /// own: give it a `File`, not `Stdout`, which splits at newlines).
    /// At most `budget` bytes of live lines wait for a slow reader.
    pub fn new(out: Box<dyn Write + Send>, budget: usize) -> Self {
        let shared = Arc::new(Shared {
            claims: Mutex::new(Claims::default()),
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            error: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel::<Chunk>();
        let (done_tx, done) = mpsc::channel();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("live-output".into())
            .spawn(move || {
                writer_loop(out, rx, &s);
                let _ = done_tx.send(());
            })
            .expect("spawn the live output thread");
        Self {
            tx: Some(tx),
            done,
            shared,
            thread: Some(thread),
            pending: Vec::with_capacity(BATCH),
            pending_lines: 0,
            budget,
            submitted: 0,
            shed_here: 0,
        }
    }

    /// The standard output as a raw file (one `write(2)` per call).
    pub fn stdout_file() -> io::Result<std::fs::File> {
        use std::os::fd::AsFd;
        Ok(std::fs::File::from(
            io::stdout().as_fd().try_clone_to_owned()?,
        ))
    }

    /// Whether a live event offered now would be shed: the caller can then
    /// [`Self::shed`] it without rendering it.
    pub fn is_behind(&self) -> bool {
        self.is_closed()
            || self.shared.queued.load(Ordering::Relaxed) + self.pending.len() > self.budget
    }

    /// Count one live event as shed without rendering it.
    pub fn shed(&mut self) {
        self.submitted += 1;
        self.shed_here += 1;
    }

    /// Queue the whole lines of one live event (an access); they may be
    /// shed when the reader is behind.
    pub fn live(&mut self, lines: &[u8]) {
        let n = 1;
        self.submitted += n;
        if self.is_behind() {
            self.shed_here += n;
            return;
        }
        self.pending.extend_from_slice(lines);
        self.pending_lines += n;
        if self.pending.len() >= BATCH {
            self.flush();
        }
    }

    /// Queue whole lines that are never shed (findings, losses, summary).
    pub fn keep(&mut self, lines: &[u8]) {
        self.flush();
        self.send(Chunk {
            bytes: lines.to_vec(),
            lines: 0,
            live: false,
        });
    }

    /// Hand gathered live lines to the writer.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let bytes = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        let lines = std::mem::take(&mut self.pending_lines);
        self.send(Chunk {
            bytes,
            lines,
            live: true,
        });
    }

    fn send(&mut self, chunk: Chunk) {
        let (len, lines, live) = (chunk.bytes.len(), chunk.lines, chunk.live);
        self.shared.queued.fetch_add(len, Ordering::Relaxed);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_ok());
        if !sent {
            self.shared.queued.fetch_sub(len, Ordering::Relaxed);
            if live {
                self.shed_here += lines;
            }
        }
    }

    /// The output is gone (closed pipe) or failed: the session should end.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Why the output failed, unless it was a reader closing a pipe.
    pub fn take_error(&self) -> Option<io::Error> {
        self.shared.error.lock().unwrap().take()
    }

    /// End of the live part of a session: wait up to `grace` for queued
    /// live lines to be taken by the writer, shed the rest, and say what
    /// was shown. Lines queued with [`Self::keep`] afterwards still go out.
    pub fn end_live(&mut self, grace: Duration) -> StreamTally {
        self.flush();
        let until = Instant::now() + grace;
        while self.shared.queued.load(Ordering::Relaxed) > 0
            && !self.is_closed()
            && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let claimed = {
            let mut c = self.shared.claims.lock().unwrap();
            c.shed_queued = true;
            c.claimed
        };
        StreamTally {
            shown: claimed,
            shed: self.submitted - claimed,
        }
    }

    /// Close the stream and wait up to `timeout` for everything queued to
    /// be written. False when the output is closed, failed, or still
    /// blocked after `timeout` (the thread is then left behind).
    pub fn close(mut self, timeout: Duration) -> bool {
        self.flush();
        self.tx = None;
        let finished = self.done.recv_timeout(timeout).is_ok();
        if finished && let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        finished && !self.is_closed()
    }
}

fn writer_loop(mut out: Box<dyn Write + Send>, rx: mpsc::Receiver<Chunk>, s: &Shared) {
    for chunk in rx {
        let len = chunk.bytes.len();
        let take = !chunk.live || {
            let mut c = s.claims.lock().unwrap();
            if c.shed_queued {
                false
            } else {
                c.claimed += chunk.lines;
                true
            }
        };
        let r = if take {
            write_whole_lines(&mut out, &chunk.bytes)
        } else {
            Ok(())
        };
        s.queued.fetch_sub(len, Ordering::Relaxed);
        if let Err(e) = r {
            if e.kind() != io::ErrorKind::BrokenPipe {
                *s.error.lock().unwrap() = Some(e);
            }
            s.closed.store(true, Ordering::Relaxed);
            return;
        }
    }
}

/// Write `bytes` (whole lines) in pieces of at most `PIPE_BUF` bytes that
/// end at a newline; a single longer line goes in one piece of its own.
fn write_whole_lines(out: &mut dyn Write, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let window = &bytes[..bytes.len().min(PIPE_BUF)];
        let end = match window.iter().rposition(|&c| c == b'\n') {
            Some(i) => i + 1,
            None => bytes
                .iter()
                .position(|&c| c == b'\n')
                .map_or(bytes.len(), |i| i + 1),
        };
        out.write_all(&bytes[..end])?;
        bytes = &bytes[end..];
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_lines(b: &[u8]) -> u64 {
        b.iter().filter(|&&c| c == b'\n').count() as u64
    }

    /// Records every write call separately.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);
    impl Write for Writes {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_write_is_whole_lines_within_pipe_buf() {
        let w = Writes::default();
        let mut s = LiveStream::new(Box::new(w.clone()), 1 << 30);
        let mut expected = Vec::new();
        for i in 0..5000 {
            let line = format!(
                "{{\"kind\":\"access\",\"n\":{i},\"pad\":\"{}\"}}\n",
                "x".repeat(i % 300)
            );
            s.live(line.as_bytes());
            expected.extend_from_slice(line.as_bytes());
        }
        let long = format!("{}\n", "y".repeat(3 * PIPE_BUF));
        s.keep(long.as_bytes());
        expected.extend_from_slice(long.as_bytes());
        assert!(s.close(Duration::from_secs(10)));
        let writes = w.0.lock().unwrap();
        for wr in writes.iter() {
            assert_eq!(wr.last(), Some(&b'\n'));
            assert!(wr.len() <= PIPE_BUF || count_lines(wr) == 1, "{}", wr.len());
        }
        assert_eq!(writes.concat(), expected);
    }

    /// Blocks every write until released.
    struct Stuck(Arc<(Mutex<bool>, std::sync::Condvar)>, Writes);
    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let (m, cv) = &*self.0;
            let mut open = m.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.1.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_reader_sheds_live_lines_but_never_kept_ones() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let w = Writes::default();
        let mut s = LiveStream::new(Box::new(Stuck(gate.clone(), w.clone())), 64 * 1024);
        let line = [b'a'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let started = Instant::now();
        for _ in 0..100_000 {
            s.live(&line);
        }
        s.keep(b"FINDING\n");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "producer blocked"
        );
        let tally = s.end_live(Duration::from_millis(50));
        s.keep(b"SUMMARY\n");
        assert!(tally.shed > 90_000, "{tally:?}");
        assert_eq!(tally.shown + tally.shed, 100_000);
        {
            let (m, cv) = &*gate;
            *m.lock().unwrap() = true;
            cv.notify_all();
        }
        assert!(s.close(Duration::from_secs(10)));
        let all = w.0.lock().unwrap().concat();
        assert_eq!(count_lines(&all), tally.shown + 2);
        assert!(all.ends_with(b"FINDING\nSUMMARY\n"));
    }

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_reported_once_and_not_as_an_error() {
        let mut s = LiveStream::new(Box::new(Closed), 1 << 20);
        s.keep(b"attached\n");
        let until = Instant::now() + Duration::from_secs(5);
        while !s.is_closed() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(s.is_closed());
        assert!(s.take_error().is_none());
        s.live(b"more\n");
        assert!(!s.close(Duration::from_secs(1)));
    }
}
