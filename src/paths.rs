//! Where marvel keeps its files: one private state directory per user
//! (from `directories`, or `MARVEL_HOME` / `--state-dir`), created 0700.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Environment variable that overrides the state directory.
pub const HOME_ENV: &str = "MARVEL_HOME";

/// The files inside one state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    /// Picks the state directory: the explicit one, else `MARVEL_HOME`, else
    /// the per-user data directory. The result is absolute.
    pub fn resolve(explicit: Option<&Path>) -> Result<Paths> {
        let root = match explicit {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
                Some(v) => PathBuf::from(v),
                None => directories::ProjectDirs::from("", "", "marvel")
                    .map(|d| d.data_local_dir().to_path_buf())
                    .ok_or_else(|| Error::other("cannot find a home directory; set MARVEL_HOME"))?,
            },
        };
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io(".", &e))?
                .join(root)
        };
        Ok(Paths { root })
    }

    /// Creates the directory tree with private permissions (0700), and
    /// tightens the root if it already existed with looser ones.
    pub fn ensure(&self) -> Result<()> {
        for dir in [self.root.clone(), self.exits_dir(), self.logs_dir()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| Error::io(&dir, &e))?;
        }
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(&self.root, &e))?;
        Ok(())
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("marvel.sock")
    }
    /// Held (flock) by the running daemon for its whole life.
    pub fn lock(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    /// Held briefly by a client that is starting a daemon.
    pub fn start_lock(&self) -> PathBuf {
        self.root.join("start.lock")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }
    pub fn events(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }
    /// Exit records written by the pane shims, one file per spawn.
    pub fn exits_dir(&self) -> PathBuf {
        self.root.join("exits")
    }
    pub fn exit_record(&self, uid: u64) -> PathBuf {
        self.exits_dir().join(format!("{uid}.json"))
    }
    /// Per-session output logs, one (bounded) file per spawn.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn session_log(&self, uid: u64) -> PathBuf {
        self.logs_dir().join(format!("{uid}.log"))
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync,
/// rename, then fsync of the directory. Readers see the old or the new file,
/// never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, &e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, &e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, &e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| Error::io(path, &e))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_makes_a_private_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Paths::resolve(Some(&tmp.path().join("home"))).unwrap();
        p.ensure().unwrap();
        let mode = fs::metadata(&p.root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(p.exits_dir().is_dir());
        write_atomic(&p.state(), b"{}").unwrap();
        assert_eq!(fs::read(p.state()).unwrap(), b"{}");
        let mode = fs::metadata(p.state()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
