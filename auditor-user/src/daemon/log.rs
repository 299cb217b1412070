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
        Ok(m) if m.file_type().is_dir() => Ok(()),
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

/// The writer of the audit log.
pub struct AuditLog {
    dir: PathBuf,
    out: BufWriter<File>,
    size: u64,
    opened: Instant,
    policy: RotationPolicy,
    /// Files rotated away since start.
    pub rotations: u64,
    /// Bytes written since start.
    pub bytes: u64,
}

impl AuditLog {
    /// Open (append to) `dir/audit.jsonl`, creating the directory.
    pub fn open(dir: &Path, policy: RotationPolicy) -> io::Result<Self> {
        prepare_dir(dir)?;
        let f = open_current(dir)?;
        let size = f.metadata()?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            out: BufWriter::with_capacity(256 << 10, f),
            size,
            opened: Instant::now(),
            policy,
            rotations: 0,
            bytes: 0,
        })
    }

    /// Append one line (newline added). With `durable`, the line and
    /// everything before it are on the disk when this returns.
    pub fn write_line(&mut self, line: &str, durable: bool) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.policy.max_file_bytes {
            self.rotate()?;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += len;
        self.bytes += len;
        if durable {
            self.sync()?;
        }
        Ok(())
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
        if self.size > 0 && self.opened.elapsed() >= self.policy.max_file_age {
            self.rotate()?;
        }
        Ok(())
    }

    /// Length of the current file after a flush, and a reader opened on it:
    /// a subscriber replays up to there, then takes live events.
    pub fn snapshot(&mut self) -> io::Result<Vec<(File, u64)>> {
        self.flush()?;
        let mut files = Vec::new();
        for p in log_files(&self.dir)? {
            if let Ok(f) = File::open(&p) {
                let len = if p.ends_with(CURRENT) {
                    self.size
                } else {
                    f.metadata().map_or(0, |m| m.len())
                };
                files.push((f, len));
            }
        }
        Ok(files)
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
        let f = open_current(&self.dir)?;
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
            log.write_line(&format!("{{\"kind\":\"access\",\"n\":{i}}}"), i % 100 == 0)
                .unwrap();
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
            log.write_line(&"x".repeat(100), false).unwrap();
        }
        assert_eq!(log_files(dir.path()).unwrap().len(), 3);
    }

    #[test]
    fn a_symlink_in_place_of_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join(CURRENT)).unwrap();
        assert!(AuditLog::open(dir.path(), RotationPolicy::default()).is_err());
    }
}
