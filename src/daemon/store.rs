//! What the daemon keeps on disk: its world, as a snapshot (`state.json`,
//! written atomically: write, fsync, rename) followed by a journal of what
//! changed since (`state.journal`, one checksummed line per change,
//! appended, and fsynced at once or later as the change needs: see
//! [`Store::save`]), so that a change costs what it changed, not the
//! whole world. The journal is folded into a new snapshot when it grows
//! past four times the snapshot's size (so a change costs at most a
//! quarter again its own line, amortized), at start and at a graceful
//! stop. A snapshot that cannot be read is moved aside, never silently
//! overwritten; a journal's unreadable tail is cut off with a warning.
//! Also the files the panes write for the daemon: exit records and output
//! logs.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::{self, Journal, Record};
use crate::domain::state::World;
use crate::error::Error;
use crate::paths::{Paths, write_atomic};
use crate::proto::ShimReport;

/// Bumped when the file's layout changes incompatibly.
const FORMAT: u32 = 1;

#[derive(Deserialize)]
struct File {
    format: u32,
    /// The machine's boot id when the file was written: a different one
    /// now means every process the file mentions died with the machine.
    #[serde(default)]
    boot: Option<String>,
    /// The id of the journal that continues this snapshot. A journal with
    /// another id (one that an interrupted fold left, or that continued an
    /// earlier snapshot) is not this snapshot's and is not read.
    #[serde(default)]
    journal: Option<u64>,
    world: World,
}

/// [`File`] as written, without copying the world.
#[derive(Serialize)]
struct FileRef<'a> {
    format: u32,
    boot: &'a Option<String>,
    journal: u64,
    world: &'a World,
}

/// The first line of a journal: whose continuation it is.
#[derive(Serialize, Deserialize)]
struct Header {
    journal: u64,
}

/// A journal smaller than this is never folded: the snapshot of a small
/// world would be rewritten all the time.
const FOLD_MIN: u64 = 1 << 20;

/// The journal is folded once it is this many times the snapshot's size:
/// each byte of it then costs a quarter of a byte of snapshot. The fold
/// waits for a quiet moment (see [`Store::fold_due`]) while the journal
/// grows by one more snapshot at most, so a start reads at most six times
/// the snapshot.
const FOLD_RATIO: u64 = 4;

pub struct Store {
    path: PathBuf,
    journal_path: PathBuf,
    boot: Option<String>,
    journal: Journal,
    /// The journal, open for appending, while it is good to append to.
    file: Option<std::fs::File>,
    /// Bytes of the journal known good: a failed append is cut back to it.
    len: u64,
    /// Bytes of the last snapshot: the journal is folded past
    /// [`FOLD_RATIO`] times that.
    snapshot: u64,
    /// The next save writes a whole snapshot (at start, after a failure).
    whole: bool,
    /// Lines written to the current journal, and how many of them are
    /// known to be on disk.
    written: u64,
    synced: u64,
    /// Which journal it is: a fold starts another.
    epoch: u64,
}

/// What a sync off the daemon's loop needs: the journal, and how far it
/// was written when the sync was asked for.
pub struct SyncJob {
    pub file: std::fs::File,
    epoch: u64,
    written: u64,
}

/// What such a sync got to the disk (with [`Store::synced`]).
pub struct SyncDone {
    epoch: u64,
    written: u64,
}

impl SyncJob {
    /// Gets the journal to the disk (on any thread).
    pub fn run(self) -> std::io::Result<SyncDone> {
        self.file.sync_data()?;
        Ok(SyncDone {
            epoch: self.epoch,
            written: self.written,
        })
    }
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    Fresh,
    Restored {
        world: Box<World>,
        /// The machine has restarted since the file was written.
        rebooted: bool,
        /// The journal had an unreadable tail, cut off: what was lost.
        cut: Option<String>,
    },
    /// The file was unreadable and was moved to `moved_to`.
    MovedAside {
        moved_to: PathBuf,
        error: String,
    },
}

/// What a save wrote, for figures and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Nothing,
    /// A journal line of so many bytes.
    Line(usize),
    /// A whole snapshot of so many bytes.
    Whole(usize),
}

impl Store {
    /// The store of the snapshot at `path`; its journal is beside it.
    pub fn new(path: PathBuf) -> Store {
        Store {
            journal_path: path.with_file_name(crate::paths::JOURNAL),
            path,
            boot: boot_id(),
            journal: Journal::default(),
            file: None,
            len: 0,
            snapshot: 0,
            whole: true,
            written: 0,
            synced: 0,
            epoch: 0,
        }
    }

    pub fn load(&mut self) -> Loaded {
        // Never through a link, and only a file of ours (see `statedir`).
        let bytes = match crate::statedir::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Fresh,
            Err(e) => return self.move_aside(e.to_string()),
        };
        let f = match serde_json::from_slice::<File>(&bytes) {
            Ok(f) if f.format == FORMAT => f,
            Ok(f) => {
                return self.move_aside(format!(
                    "unknown state format {} (this marvel reads {FORMAT})",
                    f.format
                ));
            }
            Err(e) => return self.move_aside(e.to_string()),
        };
        let mut world = f.world;
        let cut = match f.journal {
            Some(id) => self.replay(id, &mut world),
            None => None,
        };
        self.journal.reset(&mut world);
        self.whole = true;
        Loaded::Restored {
            rebooted: f.boot.is_some() && self.boot.is_some() && f.boot != self.boot,
            world: Box::new(world),
            cut,
        }
    }

    /// Applies the journal of snapshot `id` to `world`, up to its first
    /// unreadable line; says what was cut off there, if anything was.
    fn replay(&self, id: u64, world: &mut World) -> Option<String> {
        let bytes = match crate::statedir::read(&self.journal_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                return Some(format!(
                    "cannot read {} ({e}): changes since the last snapshot are lost",
                    self.journal_path.display()
                ));
            }
        };
        let mut lines = bytes.split_inclusive(|b| *b == b'\n');
        match lines.next().and_then(decode::<Header>) {
            Some(h) if h.journal == id => {}
            // Another snapshot's journal: nothing of it is ours.
            _ => return None,
        }
        let mut at = 0;
        let mut applied = 0;
        for line in lines.by_ref() {
            let Some(record) = decode::<Record>(line) else {
                break;
            };
            journal::apply(world, record);
            at += line.len();
            applied += 1;
        }
        let header = bytes.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
        let rest = bytes.len() - header - at;
        (rest > 0).then(|| {
            format!(
                "the state journal {} had {rest} unreadable bytes at its end, after {applied} changes; they were cut off",
                self.journal_path.display()
            )
        })
    }

    fn move_aside(&self, error: String) -> Loaded {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
        let moved_to = self.path.with_extension(format!("json.corrupt-{stamp}"));
        // The journal continues the unreadable snapshot only: it goes too.
        let _ = std::fs::rename(
            &self.journal_path,
            self.journal_path
                .with_extension(format!("journal.corrupt-{stamp}")),
        );
        match std::fs::rename(&self.path, &moved_to) {
            Ok(()) => Loaded::MovedAside { moved_to, error },
            Err(e) => Loaded::MovedAside {
                moved_to: self.path.clone(),
                error: format!("{error}; moving it aside failed too: {e}"),
            },
        }
    }

    /// Writes what changed in `world` since the last save: one journal
    /// line, or a whole snapshot when one is due (always fsynced). With
    /// `durable`, everything written is on disk when it returns; any other
    /// line is left to the system until the next fsync ([`Store::sync`] or
    /// a durable save). A failed write leaves the files as they were (a
    /// line half written is cut back), and the next save writes a whole
    /// snapshot.
    pub fn save(&mut self, world: &mut World, durable: bool) -> crate::error::Result<Saved> {
        if self.whole || self.len > self.fold_at() + self.snapshot.max(FOLD_MIN / FOLD_RATIO) {
            return self.fold(world);
        }
        let Some(record) = self.journal.record(world) else {
            if durable {
                self.sync()?;
            }
            return Ok(Saved::Nothing);
        };
        let line = encode(&record)?;
        self.append(&line, durable).map_err(|e| {
            self.whole = true;
            Error::io(&self.journal_path, &e)
        })?;
        Ok(Saved::Line(line.len()))
    }

    /// The journal length past which a fold is due.
    fn fold_at(&self) -> u64 {
        (FOLD_RATIO * self.snapshot).max(FOLD_MIN)
    }

    /// A fold is due: the journal grew past [`FOLD_RATIO`] times the
    /// snapshot. Writing the whole world takes a while, so the daemon does
    /// it once nothing has been written for a moment, rather than in the
    /// middle of a burst of deaths or starts; [`Store::save`] folds anyway
    /// once the journal has grown by one more snapshot.
    pub fn fold_due(&self) -> bool {
        !self.whole && self.len > self.fold_at()
    }

    /// The journal is just past its fold, as though lines had been written.
    #[cfg(test)]
    pub fn pretend_fold_due(&mut self) {
        self.len = self.fold_at() + 1;
    }

    /// The next journal line fails to be written, as on a full disk.
    #[cfg(test)]
    pub fn fail_next_write(&mut self) {
        self.file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .ok();
    }

    /// Whether lines were written since the journal's last fsync.
    pub fn unsynced(&self) -> bool {
        self.written > self.synced
    }

    /// Gets every line written so far to the disk. One that cannot be
    /// has the next save write a whole snapshot.
    pub fn sync(&mut self) -> crate::error::Result<()> {
        if !self.unsynced() {
            return Ok(());
        }
        let synced = match &self.file {
            Some(file) => file.sync_data(),
            None => Err(std::io::Error::other("the journal is not open")),
        };
        synced.map_err(|e| {
            self.whole = true;
            Error::io(&self.journal_path, &e)
        })?;
        self.synced = self.written;
        Ok(())
    }

    /// A sync of what was written so far, to run off the daemon's loop;
    /// none when everything is on disk.
    pub fn sync_job(&self) -> Option<SyncJob> {
        let file = self.file.as_ref().filter(|_| self.unsynced())?;
        Some(SyncJob {
            file: file.try_clone().ok()?,
            epoch: self.epoch,
            written: self.written,
        })
    }

    /// How such a sync went: what it covered is on disk, unless a fold
    /// replaced the journal meanwhile (its snapshot is on disk anyway). A
    /// failure has the next save write a whole snapshot.
    pub fn synced(&mut self, done: std::io::Result<SyncDone>) -> crate::error::Result<()> {
        match done {
            Ok(d) => {
                if d.epoch == self.epoch {
                    self.synced = self.synced.max(d.written);
                }
                Ok(())
            }
            Err(e) => {
                self.whole = true;
                Err(Error::io(&self.journal_path, &e))
            }
        }
    }

    fn append(&mut self, line: &[u8], durable: bool) -> std::io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the journal is not open"))?;
        let written = file
            .write_all(line)
            .and_then(|()| if durable { file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.len += line.len() as u64;
                self.written += 1;
                if durable {
                    self.synced = self.written;
                }
                Ok(())
            }
            Err(e) => {
                // No half line stays for later lines to follow.
                if file.set_len(self.len).is_err() {
                    self.file = None;
                }
                Err(e)
            }
        }
    }

    /// Writes the whole world as a new snapshot with a new, empty journal.
    /// A crash at any point leaves a snapshot and a journal that together
    /// hold everything written: the journal of the old snapshot is not
    /// read with the new one.
    pub fn fold(&mut self, world: &mut World) -> crate::error::Result<Saved> {
        self.whole = true;
        self.file = None;
        self.journal.reset(world);
        let id = fastrand::u64(..);
        let snapshot = serde_json::to_vec(&FileRef {
            format: FORMAT,
            boot: &self.boot,
            journal: id,
            world,
        })
        .map_err(|e| Error::other(format!("cannot encode state: {e}")))?;
        write_atomic(&self.path, &snapshot)?;
        let header = encode(&Header { journal: id })?;
        write_atomic(&self.journal_path, &header)?;
        let file = crate::statedir::open_append(&self.journal_path)
            .map_err(|e| Error::io(&self.journal_path, &e))?;
        self.file = Some(file);
        self.len = header.len() as u64;
        self.snapshot = snapshot.len() as u64;
        self.whole = false;
        self.epoch += 1;
        self.written = 0;
        self.synced = 0;
        Ok(Saved::Whole(snapshot.len()))
    }
}

/// One journal line: the checksum of the JSON, a space, the JSON.
fn encode<T: Serialize>(value: &T) -> crate::error::Result<Vec<u8>> {
    let json =
        serde_json::to_vec(value).map_err(|e| Error::other(format!("cannot encode state: {e}")))?;
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// A journal line back, if it is whole and intact.
fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Option<T> {
    let line = line.strip_suffix(b"\n")?;
    let (sum, json) = (line.get(..8)?, line.get(9..)?);
    let sum = u32::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()?;
    (line.get(8) == Some(&b' ') && crc32fast::hash(json) == sum)
        .then(|| serde_json::from_slice(json).ok())
        .flatten()
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

/// Removes exit records of sessions that are neither live nor in a kept
/// pane (whose shim writes its next run's record over it), and logs of
/// sessions that are not shown (as a marker or a succeeded session), so
/// neither directory grows without bound under a crash loop. Only files
/// marvel made are removed: regular files of ours, under the exact names
/// it gives them (`<uid>.json`, `<uid>.log`, `<uid>.log.1`).
/// How long a next run left for a shim is spared by the pruning whatever
/// the supervisor knew when it decided to prune.
const NEXT_RUN_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

pub fn prune(paths: &Paths, live: &BTreeSet<u64>, kept: &BTreeSet<u64>, shown: &BTreeSet<u64>) {
    use crate::statedir::{Dir, Kind};
    // The uid in a name marvel made, in its canonical spelling only.
    let uid_in = |name: &str, suffixes: &[&str]| {
        let stem = suffixes.iter().find_map(|s| name.strip_suffix(s))?;
        let uid = stem.parse::<u64>().ok()?;
        (uid.to_string() == stem).then_some(uid)
    };
    let prune = |dir: &Path, suffixes: &[&str], spare: &dyn Fn(u64, &std::fs::DirEntry) -> bool| {
        let (Ok(handle), Ok(entries)) = (Dir::open(dir), std::fs::read_dir(dir)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(uid) = uid_in(name, suffixes)
                && !spare(uid, &e)
            {
                let _ = handle.remove_own(name, Kind::File);
            }
        }
    };
    // A kept pane's shim writes its next run's record over its last one.
    prune(&paths.exits_dir(), &[".json"], &|uid, _| {
        live.contains(&uid) || kept.contains(&uid)
    });
    prune(&paths.exits_dir(), &[".line"], &|uid, _| {
        kept.contains(&uid)
    });
    // The sets were taken when the pruning was decided, and a next run may
    // have been written for a shim since: a young one stays until its shim
    // took it (or went, and a later pruning removes it).
    prune(&paths.exits_dir(), &[".next"], &|uid, e| {
        let young = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < NEXT_RUN_KEPT));
        kept.contains(&uid) || young
    });
    prune(&paths.logs_dir(), &[".log", ".log.1"], &|uid, _| {
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

    fn restored(store: &mut Store) -> (World, Option<String>) {
        match store.load() {
            Loaded::Restored { world, cut, .. } => (*world, cut),
            other => panic!("expected the saved world, got {other:?}"),
        }
    }

    /// A store in a temporary directory.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join(crate::paths::STATE));
        (dir, store)
    }

    /// A line that need not wait for the disk is left unsynced until a
    /// sync, or a durable save (with or without a line of its own), gets
    /// everything written so far there.
    #[test]
    fn lines_left_to_the_system_are_synced_by_the_next_sync_or_durable_save() {
        let (_dir, mut store) = store();
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 3)]));
        sim.settle();
        assert!(matches!(
            store.save(&mut sim.world, false),
            Ok(Saved::Whole(_))
        ));
        assert!(!store.unsynced(), "a snapshot is always on disk");
        sim.die("w", 0, 3);
        assert!(matches!(
            store.save(&mut sim.world, false),
            Ok(Saved::Line(_))
        ));
        assert!(store.unsynced());
        store.sync().unwrap();
        assert!(!store.unsynced());
        sim.die("w", 1, 3);
        store.save(&mut sim.world, false).unwrap();
        assert!(store.unsynced());
        assert_eq!(store.save(&mut sim.world, true).unwrap(), Saved::Nothing);
        assert!(!store.unsynced(), "a durable save with nothing new syncs");
        sim.die("w", 2, 3);
        store.save(&mut sim.world, true).unwrap();
        assert!(!store.unsynced());
        // A journal that cannot be synced has the next save write it all.
        sim.at(1000);
        sim.settle();
        store.save(&mut sim.world, false).unwrap();
        store.file = None;
        assert!(store.sync().is_err());
        assert!(matches!(
            store.save(&mut sim.world, false),
            Ok(Saved::Whole(_))
        ));
        let (world, _) = restored(&mut Store::new(store.path.clone()));
        assert_eq!(world, sim.world);
    }

    /// A sync run off the loop covers what was written when it was asked
    /// for, not lines written since, nor the journal a fold started since.
    #[test]
    fn a_sync_off_the_loop_covers_what_was_written_when_asked() {
        let (_dir, mut store) = store();
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 3)]));
        sim.settle();
        store.save(&mut sim.world, false).unwrap();
        assert!(store.sync_job().is_none(), "nothing to sync");
        sim.die("w", 0, 3);
        store.save(&mut sim.world, false).unwrap();
        let job = store.sync_job().expect("a line to sync");
        sim.die("w", 1, 3);
        store.save(&mut sim.world, false).unwrap();
        let done = std::thread::spawn(move || job.run()).join().unwrap();
        store.synced(done).unwrap();
        assert!(store.unsynced(), "the later line counted as synced");
        let job = store.sync_job().unwrap();
        store.synced(job.run()).unwrap();
        assert!(!store.unsynced());
        // A fold in between: the old journal's sync says nothing of the new.
        sim.die("w", 2, 3);
        store.save(&mut sim.world, false).unwrap();
        let job = store.sync_job().unwrap();
        store.fold(&mut sim.world).unwrap();
        sim.at(1000);
        sim.settle();
        store.save(&mut sim.world, false).unwrap();
        store.synced(job.run()).unwrap();
        assert!(
            store.unsynced(),
            "a line of the new journal counted as synced"
        );
    }

    #[test]
    fn a_saved_world_loads_back_equal_from_its_snapshot_and_journal() {
        let (_dir, mut store) = store();
        assert!(matches!(store.load(), Loaded::Fresh));
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 200)]));
        sim.settle();
        let first = store.save(&mut sim.world, true).unwrap();
        assert!(matches!(first, Saved::Whole(_)), "{first:?}");
        assert_eq!(store.save(&mut sim.world, true).unwrap(), Saved::Nothing);
        sim.die("w", 1, 3);
        let Saved::Line(line) = store.save(&mut sim.world, true).unwrap() else {
            panic!("a change is a journal line");
        };
        let Saved::Whole(whole) = first else {
            unreachable!()
        };
        assert!(line * 20 < whole, "a death wrote {line} of {whole} bytes");
        sim.at(1000);
        sim.settle();
        // A line left to the system reads back all the same.
        store.save(&mut sim.world, false).unwrap();
        let (world, cut) = restored(&mut store);
        assert_eq!(world, sim.world);
        assert_eq!(cut, None);
        // Read back, the next save starts a new snapshot.
        let mut world = world;
        assert!(matches!(
            store.save(&mut world, true).unwrap(),
            Saved::Whole(_)
        ));
        assert_eq!(restored(&mut store).0, sim.world);
    }

    #[test]
    fn a_state_file_of_the_current_format_without_a_journal_still_loads() {
        let (dir, mut store) = store();
        let text = include_str!("../../tests/fixtures/state-format-1.json");
        std::fs::write(dir.path().join(crate::paths::STATE), text).unwrap();
        // A journal left by someone else's snapshot is not this one's.
        std::fs::write(dir.path().join(crate::paths::JOURNAL), "garbage\n").unwrap();
        let (world, cut) = restored(&mut store);
        assert!(!world.teams.is_empty());
        assert_eq!(cut, None);
    }

    #[test]
    fn a_file_from_another_boot_says_the_machine_restarted() {
        let (_dir, mut store) = store();
        store.boot = Some("before".into());
        store.save(&mut World::default(), true).unwrap();
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

    /// A world, saved whole, then changed and saved `n` times; returns
    /// the world as it was after each save.
    fn history(store: &mut Store, n: usize) -> Vec<World> {
        let mut sim = Sim::new();
        let mut w = role("w", 4);
        w.max_restarts = None;
        sim.apply(team(vec![w]));
        sim.settle();
        store.save(&mut sim.world, true).unwrap();
        let mut worlds = vec![sim.world.clone()];
        for i in 0..n {
            sim.at(i as i64 * 1000 + 1000);
            sim.settle();
            sim.die("w", (i % 4) as u32, i as i32);
            assert!(matches!(
                store.save(&mut sim.world, true).unwrap(),
                Saved::Line(_)
            ));
            worlds.push(sim.world.clone());
        }
        worlds
    }

    /// Where each journal line ends.
    fn line_ends(bytes: &[u8]) -> Vec<usize> {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1)
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// A crash can stop a journal write at any byte: what is read back
        /// is the world as of the last whole line, and the rest is cut off
        /// with a word about it. So can a flipped bit.
        #[test]
        fn a_crash_anywhere_in_a_journal_write_loses_only_that_write(
            saves in 1usize..12,
            cut_at in 0.0f64..1.0,
            flip in proptest::option::of(0usize..8),
        ) {
            let (dir, mut store) = store();
            let worlds = history(&mut store, saves);
            let path = dir.path().join(crate::paths::JOURNAL);
            let bytes = std::fs::read(&path).unwrap();
            let ends = line_ends(&bytes);
            let header = ends[0];
            let at = header + ((bytes.len() - header) as f64 * cut_at) as usize;
            let mut broken = bytes[..at].to_vec();
            if let (Some(bit), Some(last)) = (flip, broken.len().checked_sub(2))
                && last >= header
            {
                broken[last] ^= 1 << bit;
            }
            std::fs::write(&path, &broken).unwrap();
            let whole = ends.iter().filter(|e| **e <= broken.len()).count() - 1;
            let (world, cut) = restored(&mut store);
            // A flipped bit makes its line unreadable, and the lines after it.
            let kept = if flip.is_some() && broken.len() >= 2 && broken.len() - 2 >= header {
                ends.iter().position(|e| *e > broken.len() - 2).unwrap() - 1
            } else {
                whole
            };
            proptest::prop_assert_eq!(&world, &worlds[kept.min(whole)]);
            proptest::prop_assert_eq!(cut.is_some(), broken.len() > ends[kept.min(whole)]);
        }
    }

    #[test]
    fn a_fold_cut_short_leaves_the_new_snapshot_whole() {
        let (dir, mut store) = store();
        let worlds = history(&mut store, 3);
        let path = dir.path().join(crate::paths::JOURNAL);
        let old = std::fs::read(&path).unwrap();
        let mut world = worlds[3].clone();
        store.fold(&mut world).unwrap();
        // The crash came between the two renames: the old journal is back.
        std::fs::write(&path, &old).unwrap();
        assert_eq!(restored(&mut store), (worlds[3].clone(), None));
    }

    #[test]
    fn a_full_disk_loses_nothing_written_and_the_next_save_writes_it_all() {
        let (_dir, mut store) = store();
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 2)]));
        sim.settle();
        store.save(&mut sim.world, true).unwrap();
        let before = sim.world.clone();
        // Every write fails as on a full disk.
        store.file = Some(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        );
        sim.die("w", 0, 1);
        assert!(store.save(&mut sim.world, true).is_err());
        assert_eq!(restored(&mut store).0, before, "what was written stands");
        // Space again: everything since is written, whole.
        sim.at(1000);
        sim.settle();
        assert!(matches!(
            store.save(&mut sim.world, true).unwrap(),
            Saved::Whole(_)
        ));
        assert_eq!(restored(&mut store).0, sim.world);
    }

    /// What a crash and its restart write at `n` sessions (ten roles, so
    /// that a role's history is as big as a team's would make it): the
    /// death's line, then the replacement's (placed and started).
    fn bytes_per_death(n: u32) -> usize {
        let (_dir, mut store) = store();
        let mut sim = Sim::new();
        let roles = (0..10)
            .map(|i| {
                let mut r = role(&format!("r{i}"), n / 10);
                r.max_restarts = None;
                r
            })
            .collect();
        sim.apply(team(roles));
        sim.settle();
        assert_eq!(sim.world.sessions.len(), n as usize);
        assert!(matches!(
            store.save(&mut sim.world, true).unwrap(),
            Saved::Whole(_)
        ));
        let mut most = 0;
        for i in 0..20u32 {
            let (role, slot) = (format!("r{}", i % 10), i % 7);
            sim.at(i64::from(i + 1) * 60_000);
            let dead = sim.uid_in_slot(&role, slot);
            sim.die(&role, slot, 1);
            let Saved::Line(death) = store.save(&mut sim.world, true).unwrap() else {
                panic!("a death is a journal line");
            };
            sim.at(i64::from(i + 1) * 60_000 + 30_000);
            sim.settle();
            assert_ne!(sim.uid_in_slot(&role, slot), dead, "replaced");
            let Saved::Line(restart) = store.save(&mut sim.world, true).unwrap() else {
                panic!("a restart is a journal line");
            };
            most = most.max(death + restart);
        }
        most
    }

    /// `persist_bytes_per_death_2000`: a death costs what it changed, the
    /// same at 2 000 sessions as at 200, and far below the whole state.
    #[test]
    fn the_bytes_a_death_writes_do_not_grow_with_the_sessions() {
        let small = bytes_per_death(200);
        let big = bytes_per_death(2000);
        assert!(big <= 8 * 1024, "{big} bytes per death at 2 000 sessions");
        assert!(
            big <= small + small / 10,
            "{small} bytes per death at 200 sessions, {big} at 2 000"
        );
    }

    #[test]
    fn a_journal_grown_past_its_fold_ratio_is_folded_into_a_new_one() {
        let (dir, mut store) = store();
        let worlds = history(&mut store, 3);
        let path = dir.path().join(crate::paths::JOURNAL);
        let mut world = worlds[3].clone();
        assert_eq!(store.save(&mut world, true).unwrap(), Saved::Nothing);
        assert!(!store.fold_due());
        // As if the lines had added up to more than the threshold: a fold
        // is due, and waits for the daemon to find a quiet moment...
        store.len = (FOLD_RATIO * store.snapshot).max(FOLD_MIN) + 1;
        assert!(store.fold_due());
        world.next_shift += 1;
        assert!(matches!(
            store.save(&mut world, true).unwrap(),
            Saved::Line(_)
        ));
        assert!(store.fold_due());
        // ...while the journal grows by one more snapshot at most.
        store.len += store.snapshot.max(FOLD_MIN / FOLD_RATIO);
        world.next_shift += 1;
        assert!(matches!(
            store.save(&mut world, true).unwrap(),
            Saved::Whole(_)
        ));
        assert!(!store.fold_due());
        let journal = std::fs::read(&path).unwrap();
        assert_eq!(line_ends(&journal).len(), 1, "only the new header");
        assert_eq!(restored(&mut store), (world.clone(), None));
        // And the next change goes to the new journal.
        let (mut world, _) = restored(&mut store);
        store.save(&mut world, true).unwrap();
        world.next_shift += 1;
        assert!(matches!(
            store.save(&mut world, true).unwrap(),
            Saved::Line(_)
        ));
        assert_eq!(restored(&mut store).0, world);
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
        std::fs::write(exits.join("4.json"), b"{}").unwrap();
        // Next runs: one just left for a shim, one its shim never took.
        std::fs::write(exits.join("7.next"), b"{}").unwrap();
        let old = std::fs::File::create(exits.join("8.next")).unwrap();
        let long_ago = std::time::SystemTime::now() - 2 * NEXT_RUN_KEPT;
        old.set_modified(long_ago).unwrap();
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
            exits.join("4.line").exists() && exits.join("4.json").exists(),
            "the line of a kept pane stays, and the record its next run takes over"
        );
        assert!(
            exits.join("7.next").exists(),
            "a next run its shim may not have taken yet stays"
        );
        for made in [
            exits.join("8.next"),
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
