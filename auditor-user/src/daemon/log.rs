//! The durable audit log: JSON lines (docs/events.md) in `audit.jsonl`
//! under the log directory, rotated by size and age into
//! `audit-YYYYMMDDTHHMMSS.NNNNNNNNNZ.jsonl` (names sort in time order),
//! files created 0600. Findings are written through to the disk (fdatasync)
//! before anyone is told about them; accesses are buffered and flushed
//! every tick.
//!
//! Readers ([`LogFiles`], [`Follower`]) read the same directory: rotation
//! renames, so an open file keeps its content and a follower reads it to the
//! end before moving to the new `audit.jsonl`, like `tail -F`.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::config::RotationPolicy;
pub use crate::event::TargetEvent;
use crate::event::{AuditEvent, EventKind};

/// The file being written.
pub const CURRENT: &str = "audit.jsonl";
const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

/// Anything the daemon logs. Built and serialised once per event, never
/// stored in bulk, so the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LogEvent {
    Audit(AuditEvent),
    Target(TargetEvent),
}

impl LogEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Target(_) => EventKind::Target,
            Self::Audit(a) => a.kind(),
        }
    }

    pub fn pid(&self) -> u32 {
        match self {
            Self::Target(t) => t.pid,
            Self::Audit(a) => a.pid(),
        }
    }

    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Target(t) => t.ts_ns,
            Self::Audit(a) => a.ts_ns(),
        }
    }

    /// Findings and losses: synced to disk before they are announced.
    pub fn is_durable(&self) -> bool {
        self.kind().is_durable()
    }
}

/// `YYYYMMDDTHHMMSS.NNNNNNNNNZ` of a Unix-epoch nanosecond time.
pub fn utc_stamp(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let ns = unix_ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let tod = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{ns:09}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Every log file of `dir`, oldest first, the current one last.
pub fn log_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(PREFIX) && n.ends_with(SUFFIX) && e.file_type().is_ok_and(|t| t.is_file())
        })
        .map(|e| e.path())
        .collect();
    rotated.sort();
    let current = dir.join(CURRENT);
    if current.is_file() {
        rotated.push(current);
    }
    Ok(rotated)
}

/// Create the log directory (0700) if needed; refuse a symlink or a
/// non-directory, so the daemon never writes through a planted link.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_dir() => super::trust::check_dir(dir, "log directory"),
        Ok(_) => Err(io::Error::other(format!(
            "{} exists and is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

fn open_current(dir: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        // Read too: lines written to a file removed under the daemon are
        // copied from it into the new one.
        .read(true)
        .append(true)
        .mode(0o600)
        // A symlink planted at audit.jsonl is refused, not followed.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(CURRENT))?;
    // An existing file keeps its mode on open: make it private anyway.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Bytes of events held in memory while the log cannot be written.
pub const BACKLOG_BYTES: usize = 64 << 20;

/// What became of one line given to [`AuditLog::write_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// In the file (and on the disk, when durable).
    Written,
    /// Held in memory: the log cannot be written now. `Some` the first
    /// time, with the reason.
    Held(Option<String>),
    /// Lost: the memory backlog is full.
    Dropped,
}

/// The log came back after a failure (see [`AuditLog::recover`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The directory or file had been removed or replaced and was created
    /// again.
    pub recreated: bool,
    /// Held lines written now.
    pub written: u64,
    /// Lines dropped while the backlog was full.
    pub dropped: u64,
    /// Lines copied from the removed file (written to it after its removal).
    pub rescued: u64,
}

/// The writer of the audit log.
///
/// It never stops the daemon: when the file cannot be written (disk full,
/// directory removed) lines are held in a bounded memory backlog, and every
/// [`AuditLog::recover`] (each tick) puts the directory and file back and
/// writes the backlog in order.
pub struct AuditLog {
    dir: PathBuf,
    out: BufWriter<File>,
    /// Device and inode of the open file, to notice it was removed.
    id: (u64, u64),
    /// Length of the open file when it was last seen in place.
    in_place_len: u64,
    size: u64,
    opened: Instant,
    policy: RotationPolicy,
    backlog: std::collections::VecDeque<String>,
    backlog_bytes: usize,
    /// Why the log cannot be written, while it cannot.
    failing: Option<String>,
    dropped: u64,
    /// Files rotated away since start.
    pub rotations: u64,
    /// Bytes written since start.
    pub bytes: u64,
    /// Times the directory or file was created again.
    pub recreations: u64,
}

fn file_id(f: &File) -> (u64, u64) {
    f.metadata().map_or((0, 0), |m| (m.dev(), m.ino()))
}

impl AuditLog {
    /// Open (append to) `dir/audit.jsonl`, creating the directory.
    pub fn open(dir: &Path, policy: RotationPolicy) -> io::Result<Self> {
        prepare_dir(dir)?;
        let f = open_current(dir)?;
        let size = f.metadata()?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            id: file_id(&f),
            in_place_len: size,
            out: BufWriter::with_capacity(256 << 10, f),
            size,
            opened: Instant::now(),
            policy,
            backlog: Default::default(),
            backlog_bytes: 0,
            failing: None,
            dropped: 0,
            rotations: 0,
            bytes: 0,
            recreations: 0,
        })
    }

    /// Lines held in memory, waiting for the log to be writable.
    pub fn held(&self) -> usize {
        self.backlog.len()
    }

    /// Lines lost because the backlog was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Why the log cannot be written now, if it cannot.
    pub fn failing(&self) -> Option<&str> {
        self.failing.as_deref()
    }

    fn hold(&mut self, line: &str) -> bool {
        if self.backlog_bytes + line.len() > BACKLOG_BYTES {
            self.dropped += 1;
            return false;
        }
        self.backlog_bytes += line.len();
        self.backlog.push_back(line.to_string());
        true
    }

    /// Append one line (newline added). With `durable`, the line and
    /// everything before it are on the disk when this returns
    /// [`Written::Written`]. While the log cannot be written the line is
    /// held (no disk access is tried until the next [`AuditLog::recover`]).
    pub fn write_line(&mut self, line: &str, durable: bool) -> Written {
        if self.failing.is_some() {
            return if self.hold(line) {
                Written::Held(None)
            } else {
                Written::Dropped
            };
        }
        match self.try_write(line, durable) {
            Ok(()) => Written::Written,
            Err((e, taken)) => {
                let why = e.to_string();
                self.failing = Some(why.clone());
                if taken || self.hold(line) {
                    Written::Held(Some(why))
                } else {
                    Written::Dropped
                }
            }
        }
    }

    /// Write one line; on error, whether the line is in the buffer already.
    fn try_write(&mut self, line: &str, durable: bool) -> Result<(), (io::Error, bool)> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.policy.max_file_bytes {
            self.rotate().map_err(|e| (e, false))?;
        }
        // One call for the line and its newline, so a failing write never
        // leaves half a line in the buffer.
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.out.write_all(&buf).map_err(|e| (e, false))?;
        self.size += len;
        self.bytes += len;
        if durable {
            self.sync().map_err(|e| (e, true))?;
        }
        Ok(())
    }

    /// Put the log back in order, once a tick: re-create the directory and
    /// file when they were removed or replaced (copying what was written to
    /// the removed file since it was last seen), then write the held lines.
    /// `Ok(None)`: nothing was wrong. `Err`: still failing (lines stay held).
    pub fn recover(&mut self) -> io::Result<Option<Recovery>> {
        let mut report = Recovery::default();
        let in_place = std::fs::symlink_metadata(self.dir.join(CURRENT))
            .is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if in_place {
            if self.failing.is_none() {
                self.in_place_len = self.size;
                return Ok(None);
            }
        } else {
            self.recreate(&mut report).inspect_err(|e| {
                self.failing = Some(e.to_string());
            })?;
        }
        let written = self.write_backlog().inspect_err(|e| {
            self.failing = Some(e.to_string());
        })?;
        report.written = written;
        report.dropped = self.dropped;
        self.failing = None;
        self.in_place_len = self.size;
        Ok(Some(report))
    }

    fn recreate(&mut self, report: &mut Recovery) -> io::Result<()> {
        prepare_dir(&self.dir)?;
        let new = open_current(&self.dir)?;
        // Lines written to the removed file after it was last seen in
        // place, and those still in the buffer, go to the new file first.
        let fresh = BufWriter::with_capacity(256 << 10, new);
        let old = std::mem::replace(&mut self.out, fresh);
        let (mut old_file, buffered) = old.into_parts();
        let buffered = buffered.unwrap_or_default();
        let mut rescued = Vec::new();
        if old_file.seek(SeekFrom::Start(self.in_place_len)).is_ok() {
            let _ = old_file.read_to_end(&mut rescued);
        }
        rescued.extend_from_slice(&buffered);
        report.rescued = rescued.iter().filter(|&&b| b == b'\n').count() as u64;
        self.id = file_id(self.out.get_ref());
        self.size = self.out.get_ref().metadata().map_or(0, |m| m.len());
        self.in_place_len = self.size;
        self.opened = Instant::now();
        self.out.write_all(&rescued)?;
        self.size += rescued.len() as u64;
        sync_dir(&self.dir);
        self.recreations += 1;
        report.recreated = true;
        Ok(())
    }

    fn write_backlog(&mut self) -> io::Result<u64> {
        self.sync()?;
        let mut n = 0;
        while let Some(line) = self.backlog.front() {
            let line = line.clone();
            if let Err((e, taken)) = self.try_write(&line, false) {
                if taken {
                    self.pop_held();
                }
                return Err(e);
            }
            self.pop_held();
            n += 1;
        }
        self.sync()?;
        Ok(n)
    }

    fn pop_held(&mut self) {
        if let Some(l) = self.backlog.pop_front() {
            self.backlog_bytes -= l.len();
        }
    }

    /// Flush the buffer to the file (not necessarily to the disk).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flush and fdatasync.
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }

    /// Rotate when the current file is older than the policy allows.
    pub fn rotate_if_old(&mut self) -> io::Result<()> {
        if self.failing.is_none()
            && self.size > 0
            && self.opened.elapsed() >= self.policy.max_file_age
        {
            self.rotate()?;
        }
        Ok(())
    }

    /// Readers of every log file, each with the length to read (what is on
    /// the disk), and the lines held in memory after them: a subscriber
    /// replays these, then takes live events. Works while the log cannot
    /// be written or read (then with what can be).
    pub fn snapshot(&mut self) -> (Vec<(File, u64)>, Vec<String>) {
        let flushed = self.failing.is_none() && self.flush().is_ok();
        let mut files = Vec::new();
        let mut unwritten = Vec::new();
        for p in log_files(&self.dir).unwrap_or_default() {
            let Ok(f) = File::open(&p) else { continue };
            let on_disk = f.metadata().map_or(0, |m| m.len());
            let is_current =
                p.ends_with(CURRENT) && f.metadata().is_ok_and(|m| (m.dev(), m.ino()) == self.id);
            let len = if !is_current {
                on_disk
            } else if flushed {
                self.size.min(on_disk)
            } else {
                // The buffer could not be written: the file may end inside
                // a line whose rest is in the buffer. Replay the file up
                // to its last whole line, the rest from memory.
                let buffered = self.out.buffer();
                let written = self.size.saturating_sub(buffered.len() as u64).min(on_disk);
                let from = written.saturating_sub(64 << 10);
                let mut tail = Vec::new();
                let mut r = &f;
                let _ = r.seek(SeekFrom::Start(from));
                let _ = r.take(written - from).read_to_end(&mut tail);
                let _ = r.seek(SeekFrom::Start(0));
                let cut = tail
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(from, |i| from + i as u64 + 1);
                unwritten.extend_from_slice(&tail[(cut - from) as usize..]);
                unwritten.extend_from_slice(buffered);
                cut
            };
            files.push((f, len));
        }
        let mut held: Vec<String> = String::from_utf8_lossy(&unwritten)
            .lines()
            .map(String::from)
            .collect();
        held.extend(self.backlog.iter().cloned());
        (files, held)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        let mut name = format!("{PREFIX}{}{SUFFIX}", utc_stamp(now_unix_ns()));
        let mut n = 1;
        while self.dir.join(&name).exists() {
            name = format!("{PREFIX}{}-{n}{SUFFIX}", utc_stamp(now_unix_ns()));
            n += 1;
        }
        std::fs::rename(self.dir.join(CURRENT), self.dir.join(&name))?;
        // Everything in the renamed file is complete and synced.
        self.in_place_len = self.size;
        let f = open_current(&self.dir)?;
        self.id = file_id(&f);
        self.in_place_len = 0;
        self.out = BufWriter::with_capacity(256 << 10, f);
        sync_dir(&self.dir);
        self.size = 0;
        self.opened = Instant::now();
        self.rotations += 1;
        self.prune();
        Ok(())
    }

    /// Delete the oldest rotated files beyond `keep_files`.
    fn prune(&self) {
        let Ok(files) = log_files(&self.dir) else {
            return;
        };
        let rotated: Vec<_> = files.iter().filter(|p| !p.ends_with(CURRENT)).collect();
        let excess = rotated.len().saturating_sub(self.policy.keep_files);
        for p in &rotated[..excess] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Reads `audit.jsonl` as it grows and across rotations, like `tail -F`.
pub struct Follower {
    dir: PathBuf,
    file: Option<BufReader<File>>,
    ino: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Start at the end (`from_start` false) or the start of the current file.
    pub fn new(dir: &Path, from_start: bool) -> Self {
        let mut f = Self {
            dir: dir.to_path_buf(),
            file: None,
            ino: 0,
            partial: Vec::new(),
        };
        f.reopen(!from_start);
        f
    }

    fn reopen(&mut self, at_end: bool) -> bool {
        let Ok(mut file) = File::open(self.dir.join(CURRENT)) else {
            return false;
        };
        let ino = file.metadata().map_or(0, |m| m.ino());
        if at_end {
            let _ = file.seek(SeekFrom::End(0));
        }
        self.file = Some(BufReader::new(file));
        self.ino = ino;
        self.partial.clear();
        true
    }

    fn read_available(&mut self, out: &mut Vec<String>) {
        let Some(r) = &mut self.file else { return };
        let mut buf = Vec::new();
        if r.read_to_end(&mut buf).is_err() {
            return;
        }
        self.partial.extend_from_slice(&buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            out.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
    }

    /// Complete lines written since the last call.
    /// Inode of the file being read (0 when none is open).
    pub fn inode(&self) -> u64 {
        self.ino
    }

    pub fn poll(&mut self, out: &mut Vec<String>) {
        self.read_available(out);
        let current = std::fs::metadata(self.dir.join(CURRENT)).map_or(0, |m| m.ino());
        if current == 0 || current == self.ino {
            return;
        }
        // Rotated, perhaps several times since the last poll (and again
        // while we read). The open file is complete (the writer syncs
        // before renaming): finish it, then walk the files named after it,
        // one at a time, until the current one is open.
        self.read_available(out);
        let ino_of = |p: &PathBuf| std::fs::metadata(p).map_or(0, |m| m.ino());
        loop {
            let files = log_files(&self.dir).unwrap_or_default();
            let after = files
                .iter()
                .position(|p| ino_of(p) == self.ino)
                .map_or(0, |i| i + 1);
            let Some(next) = files.get(after) else { break };
            let is_current = next.ends_with(CURRENT);
            let Ok(f) = File::open(next) else { break };
            self.ino = f.metadata().map_or(0, |m| m.ino());
            self.file = Some(BufReader::new(f));
            self.partial.clear();
            self.read_available(out);
            if is_current {
                break;
            }
        }
    }
}

/// Every complete line of the given files, each read up to its length.
pub fn read_lines_bounded(files: Vec<(File, u64)>, mut each: impl FnMut(&str) -> bool) {
    for (f, len) in files {
        let r = BufReader::new(f.take(len));
        for line in r.lines() {
            let Ok(line) = line else { break };
            if !each(&line) {
                return;
            }
        }
    }
}

/// Whether a log line passes a filter (cheap parse of three fields).
pub fn line_matches(line: &str, f: &super::protocol::EventFilter) -> bool {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(default)]
        pid: u32,
        #[serde(default)]
        ts_ns: u64,
    }
    match serde_json::from_str::<Head>(line) {
        Ok(h) => f.matches(&h.kind, h.pid, h.ts_ns),
        Err(_) => false,
    }
}

/// How long a follower sleeps between polls.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_in_time_order_and_read_as_utc() {
        assert_eq!(utc_stamp(0), "19700101T000000.000000000Z");
        assert_eq!(
            utc_stamp(1_700_000_000_123_456_789),
            "20231114T221320.123456789Z"
        );
        assert!(utc_stamp(1_700_000_000_000_000_000) < utc_stamp(1_700_000_001_000_000_000));
    }

    #[test]
    fn rotation_keeps_every_line_in_order_and_prunes_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let policy = RotationPolicy {
            max_file_bytes: 4096,
            max_file_age: Duration::from_secs(3600),
            keep_files: 100,
        };
        let mut log = AuditLog::open(dir.path(), policy).unwrap();
        let mut follower = Follower::new(dir.path(), true);
        let mut seen = Vec::new();
        for i in 0..2000 {
            let w = log.write_line(&format!("{{\"kind\":\"access\",\"n\":{i}}}"), i % 100 == 0);
            assert_eq!(w, Written::Written);
            // Rarely enough that several rotations happen between polls.
            if i % 500 == 0 {
                log.flush().unwrap();
                follower.poll(&mut seen);
            }
        }
        log.sync().unwrap();
        follower.poll(&mut seen);
        assert!(log.rotations > 5);
        let want: Vec<String> = (0..2000)
            .map(|i| format!("{{\"kind\":\"access\",\"n\":{i}}}"))
            .collect();
        assert_eq!(seen, want, "the follower saw every line once, in order");
        let mut all = Vec::new();
        for p in log_files(dir.path()).unwrap() {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
            all.extend(
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(String::from),
            );
        }
        assert_eq!(
            all, want,
            "files concatenated in name order hold every line"
        );

        let policy = RotationPolicy {
            keep_files: 2,
            ..policy
        };
        let mut log = AuditLog::open(dir.path(), policy).unwrap();
        for _ in 0..100 {
            assert_eq!(log.write_line(&"x".repeat(100), false), Written::Written);
        }
        assert_eq!(log_files(dir.path()).unwrap().len(), 3);
    }

    #[test]
    fn a_symlink_in_place_of_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join(CURRENT)).unwrap();
        assert!(AuditLog::open(dir.path(), RotationPolicy::default()).is_err());
    }

    fn lines_of(dir: &Path) -> Vec<String> {
        log_files(dir)
            .unwrap()
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn a_removed_log_directory_is_created_again_and_nothing_is_lost() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("log");
        let mut log = AuditLog::open(&dir, RotationPolicy::default()).unwrap();
        let line = |i: usize| format!("{{\"kind\":\"overlap\",\"n\":{i}}}");
        for i in 0..10 {
            assert_eq!(log.write_line(&line(i), true), Written::Written);
        }
        assert_eq!(log.recover().unwrap(), None, "nothing wrong yet");
        std::fs::remove_dir_all(&dir).unwrap();
        // Written to the removed file: the kernel accepts it.
        for i in 10..20 {
            log.write_line(&line(i), i % 2 == 0);
        }
        let r = log.recover().unwrap().expect("the removal is noticed");
        assert!(r.recreated);
        assert_eq!(r.rescued, 10, "lines written after the removal are copied");
        for i in 20..30 {
            assert_eq!(log.write_line(&line(i), true), Written::Written);
        }
        let want: Vec<String> = (0..30).skip(10).map(line).collect();
        assert_eq!(lines_of(&dir), want);
        assert_eq!(log.recover().unwrap(), None, "seen in place");
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        // A symlink planted in place of the directory is not followed.
        std::fs::remove_dir_all(&dir).unwrap();
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        log.write_line(&line(30), true);
        assert!(log.recover().is_err());
        assert!(log.failing().is_some());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert_eq!(log.write_line(&line(31), true), Written::Held(None));
        std::fs::remove_file(&dir).unwrap();
        let r = log.recover().unwrap().unwrap();
        assert_eq!(r.written, 1, "the held line");
        assert_eq!(lines_of(&dir), vec![line(30), line(31)]);
    }

    /// A 1 MiB tmpfs: needs root (the daemon's tests run as root).
    struct SmallFs(tempfile::TempDir);

    impl SmallFs {
        fn mount() -> Option<Self> {
            let d = tempfile::tempdir().unwrap();
            let p = std::ffi::CString::new(d.path().as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: plain mount(2) with valid C strings.
            let r = unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    p.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    c"size=1m".as_ptr().cast(),
                )
            };
            (r == 0).then_some(Self(d))
        }
    }

    impl Drop for SmallFs {
        fn drop(&mut self) {
            let p = std::ffi::CString::new(self.0.path().as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: unmounting what `mount` mounted.
            unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        }
    }

    #[test]
    fn a_full_disk_holds_lines_in_memory_until_space_returns() {
        let Some(fs) = SmallFs::mount() else {
            assert!(
                std::env::var("MAP_AUDITOR_REQUIRE_BPF").is_err(),
                "cannot mount a tmpfs (not root?)"
            );
            return;
        };
        let dir = fs.0.path().join("log");
        let mut log = AuditLog::open(&dir, RotationPolicy::default()).unwrap();
        // Fill the file system but for a few bytes.
        let filler = fs.0.path().join("filler");
        let mut f = File::create(&filler).unwrap();
        let chunk = vec![b'x'; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        let line = |i: usize| format!("{{\"kind\":\"overlap\",\"n\":{i}}}");
        let mut first = None;
        for i in 0..2000 {
            match log.write_line(&line(i), true) {
                Written::Written => {}
                Written::Held(Some(why)) => first = first.or(Some((i, why))),
                Written::Held(None) => {}
                Written::Dropped => panic!("the backlog is far from full"),
            }
        }
        let (_, why) = first.expect("the disk filled up");
        assert!(why.contains("No space"), "{why}");
        assert!(log.held() > 0);
        assert!(log.recover().is_err(), "still full");
        // Subscribers still get everything: files, then the held lines.
        let (files, held) = log.snapshot();
        let mut replayed = Vec::new();
        read_lines_bounded(files, |l| {
            replayed.push(l.to_string());
            true
        });
        replayed.extend(held);
        let want: Vec<String> = (0..2000).map(line).collect();
        assert_eq!(replayed, want);

        drop(f);
        std::fs::remove_file(&filler).unwrap();
        let r = log.recover().unwrap().expect("writable again");
        assert!(!r.recreated);
        assert_eq!(log.held(), 0);
        assert_eq!(r.dropped, 0);
        assert_eq!(lines_of(&dir), want, "every line, once, in order");
    }
}
