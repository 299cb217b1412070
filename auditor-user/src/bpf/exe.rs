//! Who made a call: executables identified by device and inode (read in the
//! kernel from `mm->exe_file` at the call), never by a path string. Paths
//! are for people: they come from `/proc/PID/exe`, read once per process.
//!
//! An allowed executable (`--allow-exe PATH`) is resolved to its device and
//! inode when the guard starts and again at every poll, so a path that is
//! re-created (a new binary installed in its place) follows the new file and
//! the change is reported.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

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
}

/// The allowed executables.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    pub exes: Vec<AllowedExe>,
}

impl AllowList {
    pub fn resolve(paths: &[PathBuf]) -> Self {
        Self {
            exes: paths
                .iter()
                .map(|p| AllowedExe {
                    path: p.clone(),
                    id: ExeId::of_path(p).ok(),
                })
                .collect(),
        }
    }

    pub fn allows(&self, id: Option<ExeId>) -> bool {
        id.is_some_and(|id| self.exes.iter().any(|a| a.id == Some(id)))
    }

    /// Stat every path again; returns one line per path whose file changed.
    pub fn refresh(&mut self, stat: impl Fn(&Path) -> Option<ExeId>) -> Vec<String> {
        let mut changes = Vec::new();
        for a in &mut self.exes {
            let now = stat(&a.path);
            if now != a.id {
                changes.push(format!(
                    "--allow-exe {}: now {} (was {})",
                    a.path.display(),
                    now.map_or_else(|| "missing".to_string(), |i| i.to_string()),
                    a.id.map_or_else(|| "missing".to_string(), |i| i.to_string()),
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
        let list = AllowList::resolve(&[PathBuf::from("/proc/self/exe")]);
        assert!(list.allows(Some(me)));
        let other = ExeId {
            ino: me.ino + 1,
            ..me
        };
        assert!(!list.allows(Some(other)));
        assert!(!list.allows(None));
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
            }],
        };
        let new = ExeId {
            major: 1,
            minor: 2,
            ino: 4,
        };
        let changes = list.refresh(|_| Some(new));
        assert_eq!(changes.len(), 1);
        assert!(changes[0].contains("inode 4"), "{changes:?}");
        assert!(list.allows(Some(new)));
        assert!(list.refresh(|_| Some(new)).is_empty());
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
