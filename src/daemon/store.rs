//! What the daemon keeps on disk: its world, one JSON file written
//! atomically (write, fsync, rename) after every change that matters (a
//! file that cannot be read is moved aside, never silently overwritten);
//! and the files the panes write for it: exit records and output logs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::state::World;
use crate::paths::{Paths, write_atomic};
use crate::proto::ShimReport;

/// Bumped when the file's layout changes incompatibly.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    /// The machine's boot id when the file was written: a different one
    /// now means every process the file mentions died with the machine.
    #[serde(default)]
    boot: Option<String>,
    world: World,
}

pub struct Store {
    path: PathBuf,
    boot: Option<String>,
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    Fresh,
    Restored {
        world: World,
        /// The machine has restarted since the file was written.
        rebooted: bool,
    },
    /// The file was unreadable and was moved to `moved_to`.
    MovedAside {
        moved_to: PathBuf,
        error: String,
    },
}

impl Store {
    pub fn new(path: PathBuf) -> Store {
        Store {
            path,
            boot: boot_id(),
        }
    }

    pub fn load(&self) -> Loaded {
        // Never through a link, and only a file of ours (see `statedir`).
        let bytes = match crate::statedir::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Fresh,
            Err(e) => return self.move_aside(e.to_string()),
        };
        match serde_json::from_slice::<File>(&bytes) {
            Ok(f) if f.format == FORMAT => Loaded::Restored {
                rebooted: f.boot.is_some() && self.boot.is_some() && f.boot != self.boot,
                world: f.world,
            },
            Ok(f) => self.move_aside(format!(
                "unknown state format {} (this marvel reads {FORMAT})",
                f.format
            )),
            Err(e) => self.move_aside(e.to_string()),
        }
    }

    fn move_aside(&self, error: String) -> Loaded {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
        let moved_to = self.path.with_extension(format!("json.corrupt-{stamp}"));
        match std::fs::rename(&self.path, &moved_to) {
            Ok(()) => Loaded::MovedAside { moved_to, error },
            Err(e) => Loaded::MovedAside {
                moved_to: self.path.clone(),
                error: format!("{error}; moving it aside failed too: {e}"),
            },
        }
    }

    pub fn save(&self, world: &World) -> crate::error::Result<()> {
        let file = File {
            format: FORMAT,
            boot: self.boot.clone(),
            world: world.clone(),
        };
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| crate::error::Error::other(format!("cannot encode state: {e}")))?;
        write_atomic(&self.path, &bytes)
    }
}

/// What the shim of spawn `uid` recorded; an unreadable record counts as none.
pub fn read_exit_record(paths: &Paths, uid: u64) -> Option<ShimReport> {
    crate::shim::read_exit_record(paths, uid).ok().flatten()
}

/// Removes what the shim of spawn `uid` recorded, whatever step of its
/// replay it was at.
pub fn remove_exit_record(paths: &Paths, uid: u64) {
    let _ = std::fs::remove_file(paths.exit_record(uid));
    let _ = std::fs::remove_file(replaying(paths, uid));
}

/// An exit record being applied at start: one left under this name
/// stopped the daemon that applied it.
pub fn replaying(paths: &Paths, uid: u64) -> PathBuf {
    paths.exits_dir().join(format!("{uid}.json.replaying"))
}

/// Removes exit records of sessions that are not live, and logs of
/// sessions that are not shown (as a marker or a succeeded session), so
/// neither directory grows without bound under a crash loop. Only files
/// marvel made are removed: regular files of ours, under the exact names
/// it gives them (`<uid>.json`, `<uid>.log`, `<uid>.log.1`).
pub fn prune(paths: &Paths, live: &BTreeSet<u64>, kept: &BTreeSet<u64>, shown: &BTreeSet<u64>) {
    use crate::statedir::{Dir, Kind};
    // The uid in a name marvel made, in its canonical spelling only.
    let uid_in = |name: &str, suffixes: &[&str]| {
        let stem = suffixes.iter().find_map(|s| name.strip_suffix(s))?;
        let uid = stem.parse::<u64>().ok()?;
        (uid.to_string() == stem).then_some(uid)
    };
    let prune = |dir: &Path, suffixes: &[&str], spare: &dyn Fn(u64) -> bool| {
        let (Ok(handle), Ok(entries)) = (Dir::open(dir), std::fs::read_dir(dir)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(uid) = uid_in(name, suffixes)
                && !spare(uid)
            {
                let _ = handle.remove_own(name, Kind::File);
            }
        }
    };
    prune(&paths.exits_dir(), &[".json"], &|uid| live.contains(&uid));
    prune(&paths.exits_dir(), &[".line"], &|uid| kept.contains(&uid));
    prune(&paths.logs_dir(), &[".log", ".log.1"], &|uid| {
        shown.contains(&uid)
    });
}

/// The last `n` lines of a session's output log, cleaned for reading.
pub fn log_tail(paths: &Paths, uid: u64, n: usize) -> Vec<String> {
    crate::shim::tail_lines(&paths.session_log(uid), n)
}

/// How much of one read of a growing log is taken at most: a follower
/// that falls further behind skips ahead.
const LOG_CHUNK: u64 = 1 << 20;

/// Where a session log ends now: the next read starts there.
pub fn log_end(paths: &Paths, uid: u64) -> u64 {
    std::fs::metadata(paths.session_log(uid)).map_or(0, |m| m.len())
}

/// What session `uid` printed after `offset` (a position in its log, as
/// [`log_end`] gives it): its complete lines, cleaned for reading, and
/// where the next read starts. A log that rotated since (it is shorter
/// than `offset`) is read on from its rotated half. A partial last line
/// waits for its end unless the run `ended`.
pub fn log_since(paths: &Paths, uid: u64, offset: u64, ended: bool) -> (Vec<String>, u64) {
    let path = paths.session_log(uid);
    let len = std::fs::metadata(&path).map_or(0, |m| m.len());
    // Rotated since: the rest of the old half comes first, whole (it no
    // longer grows), and the new file is read from its start.
    let (mut bytes, start) = if len < offset {
        (
            read_range(&crate::shim::rotated(&path), offset, LOG_CHUNK),
            0,
        )
    } else {
        (Vec::new(), offset.max(len.saturating_sub(LOG_CHUNK)))
    };
    let old = bytes.len();
    bytes.extend(read_range(&path, start, LOG_CHUNK));
    let taken = if ended {
        bytes.len()
    } else {
        bytes[old..]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(old, |i| old + i + 1)
    };
    bytes.truncate(taken);
    let next = start + (taken - old) as u64;
    let mut lines = crate::shim::clean_lines(&bytes);
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    (lines, next)
}

/// Up to `max` bytes of a file from `from`; nothing if it cannot be read.
fn read_range(path: &Path, from: u64, max: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(from)).is_ok()
    {
        let _ = f.take(max).read_to_end(&mut bytes);
    }
    bytes
}

/// Linux's id of the current boot; `None` where there is none.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::world::sim::*;

    #[test]
    fn a_saved_world_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("state.json"));
        assert!(matches!(store.load(), Loaded::Fresh));
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 2)]));
        sim.settle();
        sim.die("w", 1, 3);
        store.save(&sim.world).unwrap();
        match store.load() {
            Loaded::Restored { world, rebooted } => {
                assert_eq!(world, sim.world);
                assert!(!rebooted);
            }
            _ => panic!("expected the saved world"),
        }
    }

    #[test]
    fn a_file_from_another_boot_says_the_machine_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut store = Store::new(path.clone());
        store.boot = Some("before".into());
        store.save(&World::default()).unwrap();
        store.boot = Some("after".into());
        assert!(matches!(
            store.load(),
            Loaded::Restored { rebooted: true, .. }
        ));
        // Without a boot id on either side nothing can be said.
        store.boot = None;
        assert!(matches!(
            store.load(),
            Loaded::Restored {
                rebooted: false,
                ..
            }
        ));
    }

    #[test]
    fn pruning_removes_only_the_files_marvel_made() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            root: tmp.path().join("state"),
        };
        paths.ensure().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let (exits, logs) = (paths.exits_dir(), paths.logs_dir());
        std::fs::write(exits.join("9.json"), b"{}").unwrap();
        std::fs::write(exits.join("9.line"), b"crashed").unwrap();
        std::fs::write(exits.join("4.line"), b"frozen").unwrap();
        for made in ["9.log", "9.log.1"] {
            std::fs::write(logs.join(made), b"out").unwrap();
        }
        let foreign = [
            exits.join("9.json.bak"),
            exits.join("09.json"),
            exits.join("+9.json"),
            logs.join("123.important"),
            logs.join("9.log.2"),
            logs.join("9.logs"),
        ];
        for f in &foreign {
            std::fs::write(f, b"keep").unwrap();
        }
        std::os::unix::fs::symlink(&victim, logs.join("5.log")).unwrap();
        std::os::unix::fs::symlink(&victim, exits.join("5.json")).unwrap();
        std::fs::create_dir(logs.join("6.log")).unwrap();

        prune(
            &paths,
            &BTreeSet::new(),
            &BTreeSet::from([4]),
            &BTreeSet::new(),
        );

        assert!(
            exits.join("4.line").exists(),
            "the line of a kept pane stays"
        );
        for made in [
            exits.join("9.json"),
            exits.join("9.line"),
            logs.join("9.log"),
            logs.join("9.log.1"),
        ] {
            assert!(!made.exists(), "{made:?} should be pruned");
        }
        for f in &foreign {
            assert!(f.exists(), "{f:?} is not marvel's and must stay");
        }
        assert!(logs.join("5.log").is_symlink() && exits.join("5.json").is_symlink());
        assert!(logs.join("6.log").is_dir());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn a_log_is_read_on_from_an_offset_whole_lines_only_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            root: dir.path().to_path_buf(),
        };
        std::fs::create_dir_all(paths.logs_dir()).unwrap();
        let log = paths.session_log(7);
        std::fs::write(&log, "one\ntwo\nthr").unwrap();
        let (lines, at) = log_since(&paths, 7, 0, false);
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(at, 8, "the partial line waits");
        std::fs::write(&log, "one\ntwo\nthree\nfour\n").unwrap();
        let (lines, at) = log_since(&paths, 7, at, false);
        assert_eq!((lines, at), (vec!["three".into(), "four".into()], 19));
        assert_eq!(log_since(&paths, 7, at, false), (Vec::new(), 19));
        // The logger rotates: the old half, then the new file from 0.
        std::fs::write(&log, "one\ntwo\nthree\nfour\nfive\n").unwrap();
        std::fs::rename(&log, crate::shim::rotated(&log)).unwrap();
        std::fs::write(&log, "six\nsev").unwrap();
        let (lines, at) = log_since(&paths, 7, 19, false);
        assert_eq!((lines, at), (vec!["five".into(), "six".into()], 4));
        // A run that ended gives its last partial line too.
        assert_eq!(log_since(&paths, 7, at, true), (vec!["sev".into()], 7));
        assert_eq!(log_end(&paths, 7), 7);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").unwrap();
        match Store::new(path.clone()).load() {
            Loaded::MovedAside { moved_to, error } => {
                assert!(
                    moved_to.to_string_lossy().contains("state.json.corrupt-"),
                    "{moved_to:?}"
                );
                assert!(std::fs::read(&moved_to).unwrap() == b"{not json");
                assert!(!error.is_empty());
                assert!(!path.exists());
            }
            _ => panic!("expected the file to be moved aside"),
        }
    }
}
