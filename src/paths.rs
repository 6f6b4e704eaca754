//! Where marvel keeps its files: one private state directory per user
//! (from `directories`, or `MARVEL_HOME` / `--state-dir`), created 0700.
//! Every name marvel uses inside it is defined here, once.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::statedir::{Dir, Kind};

/// Environment variable that overrides the state directory.
pub const HOME_ENV: &str = "MARVEL_HOME";
/// Environment variable naming the tmux server (`tmux -L NAME`) to use.
pub use crate::substrate::tmux::SOCKET_ENV as TMUX_SOCKET_ENV;

/// What every pane's program is told about itself (README, "What a
/// program in a pane sees"), besides the two above.
pub const SESSION_ENV: &str = "MARVEL_SESSION";
pub const SESSION_UID_ENV: &str = "MARVEL_SESSION_UID";
pub const ROLE_ENV: &str = "MARVEL_ROLE";
pub const TEAM_ENV: &str = "MARVEL_TEAM";
pub const WORKSPACE_ENV: &str = "MARVEL_WORKSPACE";

pub const SOCKET: &str = "marvel.sock";
pub const LOCK: &str = "daemon.lock";
pub const START_LOCK: &str = "start.lock";
pub const STATE: &str = "state.json";
/// What changed since `state.json` was written.
pub const JOURNAL: &str = "state.journal";
pub const DAEMON_LOG: &str = "daemon.log";
pub const EVENTS: &str = "events.jsonl";
/// Where the event log goes when it rotates.
pub const EVENTS_ROTATED: &str = "events.jsonl.1";
pub const EXITS: &str = "exits";
pub const LOGS: &str = "logs";
/// Where each slot of a role with a `worktree` gets its git worktree.
pub const WORKTREES: &str = "worktrees";

/// Every entry of the state directory that marvel reads or writes, with
/// what it must be. The entries inside `exits/` and `logs/` are checked as
/// each is opened.
pub const ENTRIES: [(&str, Kind); 11] = [
    (SOCKET, Kind::Socket),
    (LOCK, Kind::File),
    (START_LOCK, Kind::File),
    (STATE, Kind::File),
    (JOURNAL, Kind::File),
    (DAEMON_LOG, Kind::File),
    (EVENTS, Kind::File),
    (EVENTS_ROTATED, Kind::File),
    (EXITS, Kind::Dir),
    (LOGS, Kind::Dir),
    (WORKTREES, Kind::Dir),
];

/// Which daemon (state directory) and tmux server a command works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub paths: Paths,
    pub tmux_socket: Option<String>,
}

impl Target {
    /// `--state-dir`, else `MARVEL_HOME`, else the per-user directory; the
    /// tmux server from `MARVEL_TMUX_SOCKET` (default server when unset).
    pub fn resolve(state_dir: Option<&Path>) -> Result<Target> {
        Ok(Target {
            paths: Paths::resolve(state_dir)?,
            tmux_socket: std::env::var(TMUX_SOCKET_ENV)
                .ok()
                .filter(|s| !s.is_empty()),
        })
    }
}

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
                    .ok_or_else(|| {
                        Error::other(format!("cannot find a home directory; set {HOME_ENV}"))
                    })?,
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

    /// Creates what is missing of the directory tree (0700), checks that
    /// all of it is the user's own (see [`crate::statedir`]), takes away the
    /// read bits others may have on the root, and returns the root's handle.
    /// A directory someone else controls is refused, never repaired.
    pub fn ensure(&self) -> Result<Dir> {
        match fs::symlink_metadata(&self.root) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(|e| Error::io(&self.root, &e))?,
            Err(e) => return Err(Error::io(&self.root, &e)),
        }
        let dir = Dir::open_root(&self.root)?;
        dir.make_private()?;
        dir.ensure_sub(EXITS)?;
        dir.ensure_sub(LOGS)?;
        dir.check_entries(&ENTRIES)?;
        Ok(dir)
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join(SOCKET)
    }
    /// Held (flock) by the running daemon for its whole life; holds its pid.
    pub fn lock(&self) -> PathBuf {
        self.root.join(LOCK)
    }
    /// Held briefly by a client that is starting a daemon.
    pub fn start_lock(&self) -> PathBuf {
        self.root.join(START_LOCK)
    }
    pub fn state(&self) -> PathBuf {
        self.root.join(STATE)
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join(DAEMON_LOG)
    }
    pub fn events(&self) -> PathBuf {
        self.root.join(EVENTS)
    }
    /// Exit records written by the pane shims, one file per spawn.
    pub fn exits_dir(&self) -> PathBuf {
        self.root.join(EXITS)
    }
    pub fn exit_record(&self, uid: u64) -> PathBuf {
        self.exits_dir().join(exit_record_name(uid))
    }
    /// What the shim of spawn `uid`, staying in its kept pane, shows.
    pub fn kept_line(&self, uid: u64) -> PathBuf {
        self.exits_dir().join(format!("{uid}.line"))
    }
    /// What the shim of spawn `uid`, staying in its kept pane, runs next.
    pub fn next_run(&self, uid: u64) -> PathBuf {
        self.exits_dir().join(format!("{uid}.next"))
    }
    /// Per-session output logs, one (bounded) file per spawn.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join(LOGS)
    }
    pub fn session_log(&self, uid: u64) -> PathBuf {
        self.logs_dir().join(session_log_name(uid))
    }
    /// The git worktrees of a team's slots: `worktrees/WORKSPACE/TEAM`.
    pub fn team_worktrees(&self, team: &crate::domain::key::TeamKey) -> PathBuf {
        self.root
            .join(WORKTREES)
            .join(&team.workspace)
            .join(&team.team)
    }
    /// One slot's git worktree: `worktrees/WORKSPACE/TEAM/ROLE-SLOT`, the
    /// same for the slot's every run, never another slot's.
    pub fn worktree(&self, key: &crate::domain::key::SessionKey) -> PathBuf {
        self.team_worktrees(&key.team())
            .join(format!("{}-{}", key.role, key.slot))
    }
}

/// `exits/<uid>.json`.
pub fn exit_record_name(uid: u64) -> String {
    format!("{uid}.json")
}

/// `logs/<uid>.log`; its rotated half is `<uid>.log.1`.
pub fn session_log_name(uid: u64) -> String {
    format!("{uid}.log")
}

/// Writes `bytes` to `path` atomically: a new temporary file beside it
/// (created exclusively, never through a link), fsync, rename, then fsync
/// of the directory. Readers see the old or the new file, never a torn one.
/// The directory holding `path` must pass the state directory's checks.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let (dir, name) = Dir::open_parent(path)?;
    dir.write_atomic(&name, bytes)
        .map_err(|e| Error::io(path, &e))
}

/// Replaces `path` atomically for its readers, not durably (see
/// [`Dir::replace`]): what the daemon tells a lingering shim.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let (dir, name) = Dir::open_parent(path)?;
    dir.replace(&name, bytes).map_err(|e| Error::io(path, &e))
}

/// A stable 64-bit hash (FNV-1a) of a path or tag, for short names derived
/// from it that every marvel version spells the same.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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

    #[test]
    fn ensure_takes_away_read_access_but_refuses_write_access_of_others() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Paths::resolve(Some(&tmp.path().join("home"))).unwrap();
        fs::create_dir(&p.root).unwrap();
        fs::set_permissions(&p.root, fs::Permissions::from_mode(0o755)).unwrap();
        p.ensure().unwrap();
        let mode = fs::metadata(&p.root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::set_permissions(&p.root, fs::Permissions::from_mode(0o777)).unwrap();
        let e = p.ensure().unwrap_err();
        assert_eq!(e.code(), crate::error::exit::DAEMON_UNAVAILABLE);
        // Refused, not repaired: the directory is left as it was.
        let mode = fs::metadata(&p.root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777);
    }

    #[test]
    fn a_planted_link_at_the_temporary_name_is_never_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Paths::resolve(Some(&tmp.path().join("home"))).unwrap();
        p.ensure().unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        // The name the write used to take for its temporary file.
        let planted = p
            .root
            .join(format!(".state.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomic(&p.state(), b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(p.state()).unwrap(), b"{}");
        // A link at the final name is replaced, not followed.
        fs::remove_file(p.state()).unwrap();
        std::os::unix::fs::symlink(&victim, p.state()).unwrap();
        write_atomic(&p.state(), b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!p.state().is_symlink());
    }
}
