//! Watched executables: every current and future process running a given
//! binary, found by scanning /proc and matching `/proc/PID/exe` by device
//! and inode (robust to symlinks, bind mounts and other mount namespaces).
//! The path is only stat'ed, never opened or run.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// One watched executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

impl Watch {
    /// Stat `path`: it must be a regular file.
    pub fn new(path: &Path) -> Result<Self, String> {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a regular file", path.display()));
        }
        // Only programs can have processes; refusing the rest keeps the
        // socket from being used to probe for arbitrary files.
        if meta.mode() & 0o111 == 0 {
            return Err(format!("{} is not executable", path.display()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    pub fn matches(&self, dev: u64, ino: u64) -> bool {
        self.dev == dev && self.ino == ino
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_matches_a_watch_on_our_executable() {
        let me = std::env::current_exe().unwrap();
        let w = Watch::new(&me).unwrap();
        let (dev, ino) = crate::proc::exe_identity(std::process::id()).unwrap();
        assert!(w.matches(dev, ino));
        assert!(Watch::new(Path::new("/proc")).is_err());
        assert!(Watch::new(Path::new("/nonexistent/x")).is_err());
    }
}
