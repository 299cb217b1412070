//! Who made a call: executables identified by device and inode (read in the
//! kernel from `mm->exe_file` at the call), never by a path string. Paths
//! are for people: they come from `/proc/PID/exe`, read once per process.
//!
//! An allowed executable (`--allow-exe PATH`) is resolved to its device and
//! inode when the guard starts and again at every poll, so a path that is
//! re-created (a new binary installed in its place) follows the new file and
//! the change is reported.
//!
//! With `--verify-hash` the content counts too: each allowed file's SHA-256
//! is taken when the guard starts, and a caller with an allowed identity is
//! allowed only when the SHA-256 of its `/proc/PID/exe`, taken when
//! userspace first sees the process, is the same. The hash taken at start
//! stays the reference: a file changed in place (same inode) or re-created
//! is no longer allowed until the guard is restarted. docs/bpf.md states
//! the race windows.

use std::{
    collections::HashMap,
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

/// SHA-256 of an executable's content.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExeHash(pub [u8; 32]);

impl ExeHash {
    /// Hash a file's whole content (read in 64 KiB blocks).
    pub fn of_file(path: &Path) -> std::io::Result<Self> {
        let mut f = std::fs::File::open(path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(Self(h.finalize().into()))
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for ExeHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Device (`major`, `minor`) and inode of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExeId {
    pub major: u32,
    pub minor: u32,
    pub ino: u64,
}

/// Split a kernel-internal `dev_t` (`MAJOR = dev >> 20`, 20-bit minor).
pub fn kernel_dev(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xfffff)
}

impl ExeId {
    /// From the kernel record's fields.
    pub fn from_kernel(dev: u32, ino: u64) -> Self {
        let (major, minor) = kernel_dev(dev);
        Self { major, minor, ino }
    }

    /// What `stat` says about `path` (following symlinks, as exec does).
    pub fn of_path(path: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        let dev = m.dev();
        Ok(Self {
            major: libc::major(dev),
            minor: libc::minor(dev),
            ino: m.ino(),
        })
    }

    /// From an event's `exe_dev` (`"major:minor"`) and `exe_ino`.
    pub fn of_event(dev: Option<&str>, ino: Option<u64>) -> Option<Self> {
        let (major, minor) = dev?.split_once(':')?;
        Some(Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
            ino: ino?,
        })
    }
}

impl std::fmt::Display for ExeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} inode {}", self.major, self.minor, self.ino)
    }
}

/// One `--allow-exe` path and the file it names now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedExe {
    pub path: PathBuf,
    /// None while nothing exists at the path (nothing is allowed by it).
    pub id: Option<ExeId>,
    /// With `--verify-hash`: the content's SHA-256 when the guard started
    /// (None: not verifying, or the file could not be read then, in which
    /// case nothing is allowed by it).
    pub sha256: Option<ExeHash>,
}

/// The allowed executables.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    pub exes: Vec<AllowedExe>,
    /// `--verify-hash`: the content must match too.
    pub verify_hash: bool,
}

impl AllowList {
    pub fn resolve(paths: &[PathBuf], verify_hash: bool) -> Self {
        Self {
            exes: paths
                .iter()
                .map(|p| AllowedExe {
                    path: p.clone(),
                    id: ExeId::of_path(p).ok(),
                    sha256: verify_hash.then(|| ExeHash::of_file(p).ok()).flatten(),
                })
                .collect(),
            verify_hash,
        }
    }

    /// Whether a caller running `id` (with content `sha256`, when hashed)
    /// is allowed.
    pub fn allows(&self, id: Option<ExeId>, sha256: Option<ExeHash>) -> bool {
        id.is_some_and(|id| {
            self.exes.iter().any(|a| {
                a.id == Some(id)
                    && (!self.verify_hash || (a.sha256.is_some() && a.sha256 == sha256))
            })
        })
    }

    /// Whether `id` is an allowed identity (whatever its content).
    pub fn has_identity(&self, id: ExeId) -> bool {
        self.exes.iter().any(|a| a.id == Some(id))
    }

    /// The allowed path that names `id` now, if any.
    pub fn path_of(&self, id: ExeId) -> Option<&Path> {
        self.exes
            .iter()
            .find(|a| a.id == Some(id))
            .map(|a| a.path.as_path())
    }

    /// Stat every path again; returns one line per path whose file changed.
    pub fn refresh(&mut self, stat: impl Fn(&Path) -> Option<ExeId>) -> Vec<String> {
        let mut changes = Vec::new();
        for a in &mut self.exes {
            let now = stat(&a.path);
            if now != a.id {
                changes.push(format!(
                    "--allow-exe {}: now {} (was {}){}",
                    a.path.display(),
                    now.map_or_else(|| "missing".to_string(), |i| i.to_string()),
                    a.id.map_or_else(|| "missing".to_string(), |i| i.to_string()),
                    if self.verify_hash {
                        "; its content must still match the SHA-256 taken at start"
                    } else {
                        ""
                    }
                ));
                a.id = now;
            }
        }
        changes
    }
}

/// `/proc/PID/exe` per process, and paths learnt per executable identity
/// for processes that exited before they could be looked at.
#[derive(Debug, Default)]
pub struct ExeCache {
    by_pid: HashMap<u32, (Option<ExeId>, String)>,
    by_id: HashMap<ExeId, String>,
    /// `--verify-hash`: content hashes per process and identity.
    hashes: HashMap<(u32, ExeId), Option<ExeHash>>,
}

/// Bound on remembered processes (cleared when reached; pids are reused).
const MAX_PIDS: usize = 8192;

impl ExeCache {
    /// The path for a call by `pid` whose executable is `id` (when read);
    /// the flag is true when `/proc/PID/exe` could not be read.
    pub fn path(&mut self, pid: u32, id: Option<ExeId>) -> (String, bool) {
        if let Some((known, path)) = self.by_pid.get(&pid)
            && (id.is_none() || *known == id)
        {
            return (path.clone(), false);
        }
        if self.by_pid.len() >= MAX_PIDS {
            self.by_pid.clear();
        }
        match std::fs::read_link(format!("/proc/{pid}/exe")) {
            Ok(p) => {
                let path = p.to_string_lossy().into_owned();
                // A path read now is only trusted for this call when the
                // process still runs the executable the kernel saw.
                let now = ExeId::of_path(Path::new(&format!("/proc/{pid}/exe"))).ok();
                let fresh = id.is_none() || now == id;
                if fresh {
                    if let Some(now) = now {
                        self.by_id.insert(now, path.clone());
                    }
                    self.by_pid.insert(pid, (id, path.clone()));
                    return (path, false);
                }
                (self.learnt(id), true)
            }
            Err(_) => (self.learnt(id), true),
        }
    }

    fn learnt(&self, id: Option<ExeId>) -> String {
        id.and_then(|i| self.by_id.get(&i).cloned())
            .unwrap_or_default()
    }

    /// SHA-256 of what process `pid` runs, taken the first time the pair
    /// (pid, identity) is seen: from `/proc/PID/exe` while the process
    /// still runs that identity, else from `fallback` (the allowed path
    /// naming the same identity now). None when neither can be read.
    pub fn hash(&mut self, pid: u32, id: ExeId, fallback: Option<&Path>) -> Option<ExeHash> {
        if let Some(h) = self.hashes.get(&(pid, id)) {
            return *h;
        }
        if self.hashes.len() >= MAX_PIDS {
            self.hashes.clear();
        }
        let proc_exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let from = |p: &Path| {
            // Hash only a file that still is the identity the kernel saw.
            (ExeId::of_path(p).ok() == Some(id))
                .then(|| ExeHash::of_file(p).ok())
                .flatten()
        };
        let h = from(&proc_exe).or_else(|| fallback.and_then(from));
        self.hashes.insert((pid, id), h);
        h
    }

    /// Remember a path for an identity (the allowed executables).
    pub fn learn(&mut self, id: ExeId, path: &Path) {
        self.by_id.insert(id, path.to_string_lossy().into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_splits_major_and_minor() {
        assert_eq!(kernel_dev((259 << 20) | 3), (259, 3));
        let id = ExeId::from_kernel((8 << 20) | 1, 42);
        assert_eq!(ExeId::of_event(Some("8:1"), Some(42)), Some(id));
    }

    #[test]
    fn allow_list_matches_identity_not_path() {
        let me = ExeId::of_path(Path::new("/proc/self/exe")).unwrap();
        let list = AllowList::resolve(&[PathBuf::from("/proc/self/exe")], false);
        assert!(list.allows(Some(me), None));
        let other = ExeId {
            ino: me.ino + 1,
            ..me
        };
        assert!(!list.allows(Some(other), None));
        assert!(!list.allows(None, None));
    }

    #[test]
    fn refresh_reports_a_re_created_path() {
        let mut list = AllowList {
            exes: vec![AllowedExe {
                path: "/x".into(),
                id: Some(ExeId {
                    major: 1,
                    minor: 2,
                    ino: 3,
                }),
                sha256: None,
            }],
            verify_hash: false,
        };
        let new = ExeId {
            major: 1,
            minor: 2,
            ino: 4,
        };
        let changes = list.refresh(|_| Some(new));
        assert_eq!(changes.len(), 1);
        assert!(changes[0].contains("inode 4"), "{changes:?}");
        assert!(list.allows(Some(new), None));
        assert!(list.refresh(|_| Some(new)).is_empty());
    }

    #[test]
    fn verified_allow_list_wants_the_content_hashed_at_start() {
        let me = ExeId::of_path(Path::new("/proc/self/exe")).unwrap();
        let list = AllowList::resolve(&[PathBuf::from("/proc/self/exe")], true);
        let start = list.exes[0].sha256.expect("own executable hashed");
        let mut c = ExeCache::default();
        let mine = c.hash(std::process::id(), me, None);
        assert_eq!(mine, Some(start));
        assert!(list.allows(Some(me), mine));
        // Same identity, other content (a file changed in place): refused,
        // and so is a process whose content could not be hashed.
        let mut other = start;
        other.0[0] ^= 1;
        assert!(!list.allows(Some(me), Some(other)));
        assert!(!list.allows(Some(me), None));
    }

    #[test]
    fn a_gone_process_is_hashed_through_the_allowed_path_only_while_it_is_the_same_file() {
        let me = ExeId::of_path(Path::new("/proc/self/exe")).unwrap();
        let mut c = ExeCache::default();
        let gone = u32::MAX - 1;
        let via_path = c.hash(gone, me, Some(Path::new("/proc/self/exe")));
        assert_eq!(via_path, ExeHash::of_file(Path::new("/proc/self/exe")).ok());
        let not_me = ExeId {
            ino: me.ino + 1,
            ..me
        };
        assert_eq!(
            c.hash(gone, not_me, Some(Path::new("/proc/self/exe"))),
            None
        );
    }

    #[test]
    fn sha256_of_a_known_content() {
        let dir = std::env::temp_dir().join(format!("ma-sha-{}", std::process::id()));
        std::fs::write(&dir, b"abc").unwrap();
        let h = ExeHash::of_file(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(
            h.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn own_exe_is_read_from_proc() {
        let me = ExeId::of_path(Path::new("/proc/self/exe")).unwrap();
        let mut c = ExeCache::default();
        let (path, unread) = c.path(std::process::id(), Some(me));
        assert!(!unread);
        assert_eq!(path, std::env::current_exe().unwrap().to_string_lossy());
    }
}
