//! Who owns a state directory: the one daemon holding an exclusive flock
//! on the directory itself, which no deletion inside it can take away.
//! `daemon.lock` beside it names that daemon's pid (under a flock of its
//! own, which older marvel versions test); the daemon re-checks it by inode
//! and makes it again when it is deleted. `daemon stop` finds the owner
//! through the kernel's lock table even when the socket is gone.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, CWD, FlockOperation};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::paths::{LOCK, Paths};
use crate::statedir::Dir;

/// (device, inode): what a path names at one moment.
type FileId = (u64, u64);

// The widths of these fields differ between targets.
#[allow(clippy::unnecessary_cast)]
fn id_of(st: &rustix::fs::Stat) -> FileId {
    (st.st_dev as u64, st.st_ino as u64)
}

/// The result of trying to become the directory's daemon.
#[derive(Debug)]
pub enum Acquired {
    Owner(DaemonLock),
    /// Another process owns it; its pid when it can be found.
    Held {
        pid: Option<u32>,
    },
}

/// The running daemon's hold on its state directory. Dropping it (or the
/// process ending) releases the directory.
#[derive(Debug)]
pub struct DaemonLock {
    dir: Dir,
    root: PathBuf,
    root_id: FileId,
    file: File,
    file_id: FileId,
}

/// What a re-check of the lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changed.
    Kept,
    /// `daemon.lock` had been removed or replaced and was made again.
    Recreated,
    /// The directory is no longer this daemon's: it must stop at once,
    /// without writing anything there.
    Lost(String),
    /// The check itself failed (the disk, the file system); try again later.
    Failed(String),
}

/// Tries to become the daemon of `dir`: an exclusive flock on the
/// directory, then on `daemon.lock` (checked to be the file the path names
/// once locked), which then holds our pid.
pub fn acquire(dir: Dir) -> Result<Acquired> {
    match lock_briefly_contended(dir.fd()) {
        Ok(true) => {}
        Ok(false) => {
            return Ok(Acquired::Held {
                pid: holder(&dir).or_else(|| recorded_pid(&dir)),
            });
        }
        // A file system that cannot lock a directory (some network ones):
        // `daemon.lock` alone decides, as in older versions.
        Err(_) => {}
    }
    let root_id = id_of(&dir.stat().map_err(|e| Error::io(dir.path(), &e))?);
    let Some((file, file_id)) = take_file(&dir)? else {
        // An older marvel that does not lock the directory runs here.
        return Ok(Acquired::Held {
            pid: recorded_pid(&dir),
        });
    };
    Ok(Acquired::Owner(DaemonLock {
        root: dir.path().to_path_buf(),
        dir,
        root_id,
        file,
        file_id,
    }))
}

/// Opens and locks `daemon.lock`, and writes our pid into it; `None` when
/// another process holds it.
fn take_file(dir: &Dir) -> Result<Option<(File, FileId)>> {
    let path = dir.path().join(LOCK);
    // A file unlinked between our open and our lock is not the lock:
    // retry until the locked file is the one the name points to.
    for _ in 0..16 {
        let mut file = dir.open_lock(LOCK)?;
        if !lock_briefly_contended(file.as_fd()).map_err(|e| Error::io(&path, &e.into()))? {
            return Ok(None);
        }
        let held = id_of(&rustix::fs::fstat(&file).map_err(|e| Error::io(&path, &e.into()))?);
        match rustix::fs::statat(dir.fd(), LOCK, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if id_of(&st) == held => {
                let pid = format!("{}\n", std::process::id());
                file.set_len(0)
                    .and_then(|()| file.seek(SeekFrom::Start(0)))
                    .and_then(|_| file.write_all(pid.as_bytes()))
                    .map_err(|e| Error::io(&path, &e))?;
                return Ok(Some((file, held)));
            }
            Ok(_) | Err(Errno::NOENT) => continue,
            Err(e) => return Err(Error::io(&path, &e.into())),
        }
    }
    Err(Error::other(format!(
        "{} keeps being replaced while marvel locks it",
        path.display()
    )))
}

/// Takes an exclusive flock on `fd`, allowing for a client's probe
/// (a shared lock held for an instant); `false` when another process
/// keeps holding it.
fn lock_briefly_contended(fd: BorrowedFd<'_>) -> rustix::io::Result<bool> {
    for _ in 0..10 {
        match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(true),
            Err(Errno::WOULDBLOCK) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

impl DaemonLock {
    /// The locked state directory.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Re-checks that this daemon still owns its directory: the path still
    /// names the directory it locked, and `daemon.lock` is the file it
    /// locked (made again when it was deleted: the directory lock keeps
    /// every other daemon out meanwhile).
    pub fn verify(&mut self) -> Verdict {
        match rustix::fs::statat(CWD, &self.root, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if id_of(&st) == self.root_id => {}
            Ok(_) => {
                return Verdict::Lost(format!(
                    "{} is no longer the directory this daemon locked: it was replaced",
                    self.root.display()
                ));
            }
            Err(Errno::NOENT) => {
                return Verdict::Lost(format!("{} was removed", self.root.display()));
            }
            Err(e) => return Verdict::Failed(format!("{}: {e}", self.root.display())),
        }
        match rustix::fs::statat(self.dir.fd(), LOCK, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if id_of(&st) == self.file_id => return Verdict::Kept,
            Ok(_) | Err(Errno::NOENT) => {}
            Err(e) => return Verdict::Failed(format!("{}: {e}", self.root.join(LOCK).display())),
        }
        match take_file(&self.dir) {
            Ok(Some((file, id))) => {
                self.file = file;
                self.file_id = id;
                Verdict::Recreated
            }
            Ok(None) => Verdict::Lost(format!(
                "another process holds {}",
                self.root.join(LOCK).display()
            )),
            Err(e) => Verdict::Failed(e.to_string()),
        }
    }
}

/// The pid written in `daemon.lock`, if any.
fn recorded_pid(dir: &Dir) -> Option<u32> {
    let bytes = dir.read(LOCK).ok()?;
    String::from_utf8_lossy(&bytes).trim().parse().ok()
}

/// Whether a daemon holds the directory's lock now (or, as older marvel
/// versions do, only `daemon.lock`'s). Probes with shared locks of its own,
/// released at once.
pub fn is_held(paths: &Paths) -> Result<bool> {
    let dir = Dir::open_root(&paths.root)?;
    // An error means the directory cannot be locked here; the file decides.
    if probe(dir.fd(), &paths.root).unwrap_or(false) {
        return Ok(true);
    }
    match dir.open_existing(LOCK) {
        Ok(file) => probe(file.as_fd(), &paths.lock()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(crate::statedir::io_error(&paths.lock(), e)),
    }
}

fn probe(fd: BorrowedFd<'_>, path: &Path) -> Result<bool> {
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockShared) {
        Ok(()) => Ok(false),
        Err(Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(Error::io(path, &e.into())),
    }
}

/// Waits until no daemon holds the directory (it has exited), at most
/// until `deadline`; `false` when one still does then.
pub fn wait_released(paths: &Paths, deadline: Instant) -> Result<bool> {
    loop {
        if !is_held(paths)? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The pid of the process holding the exclusive flock on `dir` (or, where
/// only that is locked, on its `daemon.lock`), from the kernel's lock
/// table, confirmed by that process's own open files.
pub fn holder(dir: &Dir) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    let root = std::fs::canonicalize(dir.path()).ok()?;
    let dir_ino = id_of(&dir.stat().ok()?).1;
    let lock_ino = rustix::fs::statat(dir.fd(), LOCK, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| id_of(&st).1);
    let lock_path = root.join(LOCK);
    let on = |ino: u64, path: &Path| {
        flock_writers(&table, ino)
            .into_iter()
            .find(|&pid| holds_locked(pid, path))
    };
    on(dir_ino, &root).or_else(|| lock_ino.and_then(|ino| on(ino, &lock_path)))
}

/// Sends SIGTERM to the daemon holding `paths`' lock, after confirming it
/// holds it; its pid, or `None` when no daemon holds the lock.
pub fn terminate(paths: &Paths) -> Result<Option<u32>> {
    let dir = Dir::open_root(&paths.root)?;
    let Some(pid) = holder(&dir) else {
        return Ok(None);
    };
    let Some(raw) = rustix::process::Pid::from_raw(pid as i32) else {
        return Ok(None);
    };
    // A pidfd names this very process: if it ended and its pid was reused
    // after the check above, the check below fails and nobody is signalled.
    let pidfd = match rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(Errno::SRCH) => return Ok(None),
        Err(e) => return Err(Error::io(format!("/proc/{pid}"), &e.into())),
    };
    if holder(&dir) != Some(pid) {
        return Ok(None);
    }
    match rustix::process::pidfd_send_signal(pidfd.as_fd(), rustix::process::Signal::TERM) {
        Ok(()) => Ok(Some(pid)),
        Err(Errno::SRCH) => Ok(None),
        Err(e) => Err(Error::io(format!("/proc/{pid}"), &e.into())),
    }
}

/// The pids holding a whole-file exclusive flock on inode `ino`, from the
/// text of `/proc/locks` (waiters, marked `->`, are not holders). Devices
/// are not compared: some file systems show a different one in the table
/// than `stat` does; the caller confirms each candidate.
pub fn flock_writers(table: &str, ino: u64) -> Vec<u32> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // "1: FLOCK  ADVISORY  WRITE 3312 fe:00:1053977 0 EOF"
            match fields.as_slice() {
                [_, "FLOCK", _, "WRITE", pid, dev_ino, ..] => {
                    let file_ino = dev_ino.rsplit(':').next()?.parse::<u64>().ok()?;
                    (file_ino == ino).then(|| pid.parse().ok()).flatten()
                }
                _ => None,
            }
        })
        .collect()
}

/// Whether process `pid` has `path` open with an exclusive flock on it.
fn holds_locked(pid: u32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| target == path)
            && std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .is_ok_and(|info| fdinfo_has_flock(&info))
    })
}

/// Whether an fdinfo text shows an exclusive flock held on that descriptor.
pub fn fdinfo_has_flock(info: &str) -> bool {
    info.lines().any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        matches!(fields.as_slice(), ["lock:", _, "FLOCK", _, "WRITE", ..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, Paths) {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            root: tmp.path().join("state"),
        };
        paths.ensure().unwrap();
        (tmp, paths)
    }

    fn owner(paths: &Paths) -> DaemonLock {
        match acquire(Dir::open_root(&paths.root).unwrap()).unwrap() {
            Acquired::Owner(l) => l,
            Acquired::Held { pid } => panic!("held by {pid:?}"),
        }
    }

    #[test]
    fn the_lock_table_is_read_for_holders_of_the_inode() {
        let table = "\
1: FLOCK  ADVISORY  WRITE 26315 fe:00:5333534 0 EOF
2: FLOCK  ADVISORY  READ 26316 fe:00:42 0 EOF
3: POSIX  ADVISORY  WRITE 26317 fe:00:42 0 EOF
4: FLOCK  ADVISORY  WRITE 26318 00:2d:42 0 EOF
4: -> FLOCK  ADVISORY  WRITE 26319 00:2d:42 0 EOF
5: OFDLCK ADVISORY  WRITE -1 00:2d:42 0 EOF
";
        assert_eq!(flock_writers(table, 42), vec![26318]);
        assert_eq!(flock_writers(table, 5333534), vec![26315]);
        assert!(flock_writers("garbage\n\n1: FLOCK", 42).is_empty());
        assert!(fdinfo_has_flock(
            "pos:\t0\nflags:\t0100000\nlock:\t1: FLOCK  ADVISORY  WRITE 26845 fe:00:10027193 0 EOF\n"
        ));
        assert!(!fdinfo_has_flock("pos:\t0\nflags:\t0100000\n"));
        assert!(!fdinfo_has_flock(
            "lock:\t1: FLOCK  ADVISORY  READ 26845 fe:00:10027193 0 EOF\n"
        ));
    }

    #[test]
    fn one_owner_and_it_is_found_by_pid() {
        let (_tmp, paths) = state();
        assert!(!is_held(&paths).unwrap());
        let lock = owner(&paths);
        assert!(is_held(&paths).unwrap());
        let me = std::process::id();
        assert_eq!(
            std::fs::read_to_string(paths.lock()).unwrap().trim(),
            me.to_string()
        );
        assert_eq!(holder(lock.dir()), Some(me));
        match acquire(Dir::open_root(&paths.root).unwrap()).unwrap() {
            Acquired::Held { pid } => assert_eq!(pid, Some(me)),
            Acquired::Owner(_) => panic!("two owners"),
        }
        drop(lock);
        assert!(!is_held(&paths).unwrap());
        assert!(wait_released(&paths, Instant::now()).unwrap());
    }

    #[test]
    fn a_deleted_lock_file_keeps_out_a_second_daemon_and_is_made_again() {
        let (_tmp, paths) = state();
        let mut lock = owner(&paths);
        std::fs::remove_file(paths.lock()).unwrap();
        // No second owner, though the file is gone.
        assert!(matches!(
            acquire(Dir::open_root(&paths.root).unwrap()).unwrap(),
            Acquired::Held { .. }
        ));
        // The owner notices and writes it again; the next check is quiet.
        assert_eq!(lock.verify(), Verdict::Recreated);
        assert_eq!(
            std::fs::read_to_string(paths.lock()).unwrap().trim(),
            std::process::id().to_string()
        );
        assert_eq!(lock.verify(), Verdict::Kept);
        // Replaced by another file: also taken back.
        std::fs::remove_file(paths.lock()).unwrap();
        std::fs::write(paths.lock(), "1\n").unwrap();
        assert_eq!(lock.verify(), Verdict::Recreated);
        assert_eq!(lock.verify(), Verdict::Kept);
    }

    #[test]
    fn an_older_daemon_that_locks_only_its_file_is_found_and_respected() {
        let (_tmp, paths) = state();
        // As an older marvel does: a flock on daemon.lock, none on the
        // directory.
        let file = std::fs::File::create(paths.lock()).unwrap();
        file.lock().unwrap();
        assert!(is_held(&paths).unwrap());
        let dir = Dir::open_root(&paths.root).unwrap();
        assert_eq!(holder(&dir), Some(std::process::id()));
        assert!(matches!(acquire(dir).unwrap(), Acquired::Held { .. }));
    }

    #[test]
    fn a_lock_file_held_by_another_process_means_the_directory_is_lost() {
        let (_tmp, paths) = state();
        let mut lock = owner(&paths);
        std::fs::remove_file(paths.lock()).unwrap();
        // As an older marvel would: a flock on a new daemon.lock.
        let other = std::fs::File::create(paths.lock()).unwrap();
        other.lock().unwrap();
        assert!(matches!(lock.verify(), Verdict::Lost(_)));
    }

    #[test]
    fn a_replaced_directory_means_the_directory_is_lost() {
        let (tmp, paths) = state();
        let mut lock = owner(&paths);
        std::fs::rename(&paths.root, tmp.path().join("moved")).unwrap();
        match lock.verify() {
            Verdict::Lost(why) => assert!(why.ends_with("was removed"), "{why}"),
            v => panic!("{v:?}"),
        }
        std::fs::create_dir(&paths.root).unwrap();
        match lock.verify() {
            Verdict::Lost(why) => assert!(why.contains("replaced"), "{why}"),
            v => panic!("{v:?}"),
        }
    }
}
