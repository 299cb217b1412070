//! What the daemon trusts on the file system: directories it writes its
//! socket and logs into, and its configuration file, must be changeable by
//! root alone. Otherwise another user could delete the logs, replace the
//! socket with one of their own (that root's `ctl` then talks to), or
//! rewrite the configuration the daemon runs with.

use std::{
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Why a path is not trusted, as a sentence naming it.
fn untrusted(path: &Path, m: &std::fs::Metadata, what: &str, fix: &str) -> Option<String> {
    let me = unsafe { libc::geteuid() };
    let mode = m.mode() & 0o7777;
    if m.uid() != 0 && m.uid() != me {
        return Some(format!(
            "{what} {} is owned by uid {} (mode {mode:04o}), who could {fix}: use a path only root can change, or `chown root {}`",
            path.display(),
            m.uid(),
            path.display()
        ));
    }
    // A sticky directory (like /tmp) lets others create entries but not
    // remove or rename ours.
    let sticky = m.is_dir() && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Some(format!(
            "{what} {} is writable by {} (mode {mode:04o}), who could {fix}: `chmod go-w {}`",
            path.display(),
            if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            path.display()
        ));
    }
    None
}

/// Refuse a directory the daemon writes into (socket, logs) unless only
/// root (or the daemon's user) can change it.
pub fn check_dir(dir: &Path, what: &str) -> io::Result<()> {
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() {
        return Err(io::Error::other(format!(
            "{what} {} is not a directory (a symlink is not followed)",
            dir.display()
        )));
    }
    match untrusted(
        dir,
        &m,
        what,
        "delete or replace what the daemon puts there",
    ) {
        Some(why) => Err(io::Error::new(io::ErrorKind::PermissionDenied, why)),
        None => Ok(()),
    }
}

/// Refuse a configuration file that a user other than root can change:
/// the file itself (through any symlinks), every directory on the way to
/// it, and the directories holding the symlinks.
pub fn check_config(path: &Path) -> Result<(), String> {
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("cannot resolve config {}: {e}", path.display()))?;
    let mut checked: Vec<PathBuf> = Vec::new();
    let mut check = |p: &Path, what: &str| -> Result<(), String> {
        if checked.iter().any(|c| c == p) {
            return Ok(());
        }
        checked.push(p.to_path_buf());
        let m = std::fs::metadata(p).map_err(|e| format!("config {}: {e}", p.display()))?;
        match untrusted(p, &m, what, "change the daemon's configuration") {
            Some(why) => Err(format!("refusing config {}: {why}", path.display())),
            None => Ok(()),
        }
    };
    check(&real, "the file")?;
    for dir in real.ancestors().skip(1) {
        check(dir, "directory")?;
    }
    // A symlink's own directory decides who can point it elsewhere.
    let given = std::path::absolute(path).map_err(|e| e.to_string())?;
    for dir in given.ancestors().skip(1) {
        if let Ok(real_dir) = std::fs::canonicalize(dir) {
            check(&real_dir, "directory")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let d = tempfile::tempdir().unwrap();
        chmod(d.path(), 0o700);
        assert!(check_dir(d.path(), "log directory").is_ok());
        chmod(d.path(), 0o777);
        let e = check_dir(d.path(), "log directory").unwrap_err();
        assert!(e.to_string().contains("writable by every user"), "{e}");
        chmod(d.path(), 0o770);
        let e = check_dir(d.path(), "log directory").unwrap_err();
        assert!(e.to_string().contains("its group"), "{e}");
        chmod(d.path(), 0o1777);
        assert!(check_dir(d.path(), "log directory").is_ok(), "sticky");
        chmod(d.path(), 0o700);
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(d.path(), Some(65534), None).unwrap();
            let e = check_dir(d.path(), "socket directory").unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn a_config_reached_through_a_symlink_to_a_writable_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        chmod(d.path(), 0o755);
        let real = d.path().join("real.toml");
        std::fs::write(&real, "").unwrap();
        chmod(&real, 0o644);
        let link = d.path().join("daemon.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(check_config(&link).is_ok());
        chmod(&real, 0o666);
        let e = check_config(&link).unwrap_err();
        assert!(e.contains("real.toml") && e.contains("every user"), "{e}");
        chmod(&real, 0o644);
        // The directory holding the file lets others replace it.
        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let inner = open.join("x.toml");
        std::fs::write(&inner, "").unwrap();
        chmod(&inner, 0o644);
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&inner, &link).unwrap();
        let e = check_config(&link).unwrap_err();
        assert!(e.contains("open"), "{e}");
    }
}
