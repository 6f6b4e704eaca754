//! The state directory as a place only its user controls, as ssh treats
//! `~/.ssh` and tmux its socket directory. Commands check it and the
//! entries marvel uses in it before trusting anything there; files are
//! opened relative to a checked directory handle and never through a
//! symbolic link; the daemon behind the socket must run as the same user.
//! Nothing here repairs what another user made: it is refused.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::paths::{ENTRIES, Paths};

/// What marvel expects an entry of the state directory to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Socket,
}

impl Kind {
    fn file_type(self) -> FileType {
        match self {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
            Kind::Socket => FileType::Socket,
        }
    }
}

/// The facts about one entry that the checks look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub file_type: FileType,
    pub uid: u32,
    /// Permission bits only.
    pub mode: u32,
    pub links: u64,
}

impl Facts {
    // The widths of these fields differ between targets.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &Stat) -> Facts {
        Facts {
            file_type: FileType::from_raw_mode(st.st_mode as _),
            uid: st.st_uid as u32,
            mode: st.st_mode as u32 & 0o7777,
            links: st.st_nlink as u64,
        }
    }
}

/// Why an entry is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Symlink,
    NotA(Kind),
    /// Another user owns it.
    Owner,
    /// Its group or other users may write to it.
    Writable,
    /// A file with more than one name may be someone else's file.
    Links,
}

/// What is wrong with an entry that marvel expects to be `kind` and to
/// belong to uid `me`; `None` when it is safe to use.
pub fn judge(f: &Facts, kind: Kind, me: u32) -> Option<Problem> {
    if f.file_type == FileType::Symlink {
        Some(Problem::Symlink)
    } else if f.file_type != kind.file_type() {
        Some(Problem::NotA(kind))
    } else if f.uid != me {
        Some(Problem::Owner)
    } else if f.mode & 0o022 != 0 {
        Some(Problem::Writable)
    } else if kind == Kind::File && f.links > 1 {
        Some(Problem::Links)
    } else {
        None
    }
}

/// The uid every check compares with: the effective one, which owns what
/// this process creates and which the daemon's peer check sees.
pub fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "named pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        FileType::Unknown => "file of unknown type",
    }
}

/// How a refused entry is named in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The state directory itself.
    Root,
    /// Anything inside it.
    Entry,
}

/// The error for a refused entry: what it is, why, its owner and mode, and
/// how to fix it.
fn refusal(path: &Path, f: &Facts, problem: Problem, role: Role, link: Option<PathBuf>) -> Error {
    let shown = path.display();
    let subject = match role {
        Role::Root => format!("the state directory {shown}"),
        Role::Entry => format!("{shown} in the state directory"),
    };
    let reason = match problem {
        Problem::Symlink => match &link {
            Some(to) => format!("it is a symbolic link to {}", to.display()),
            None => "it is a symbolic link".to_string(),
        },
        Problem::NotA(kind) => format!(
            "it is a {}, not a {}",
            type_name(f.file_type),
            type_name(kind.file_type())
        ),
        Problem::Owner => "it belongs to another user".to_string(),
        Problem::Writable => "other users can write to it".to_string(),
        Problem::Links => format!(
            "it has {} names (hard links): it may be another file under a second name",
            f.links
        ),
    };
    let message = format!(
        "refusing {subject}: {reason} (owner uid {}, mode {:04o}; you are uid {})",
        f.uid,
        f.mode,
        me()
    );
    let help = match (role, problem) {
        (Role::Root, Problem::Writable) => format!(
            "if the directory is yours alone, run `chmod go-w {shown}`; otherwise set MARVEL_HOME or --state-dir to a directory of your own"
        ),
        (Role::Root, Problem::Symlink) => match &link {
            Some(to) => format!(
                "set MARVEL_HOME or --state-dir to the directory itself ({}), not to a link",
                to.display()
            ),
            None => "set MARVEL_HOME or --state-dir to a directory, not to a link".to_string(),
        },
        (Role::Root, _) => format!(
            "set MARVEL_HOME or --state-dir to a directory of your own, or have {shown} removed so that marvel creates it (mode 0700)"
        ),
        (Role::Entry, Problem::Writable) => format!("run `chmod go-w {shown}`"),
        (Role::Entry, _) => {
            format!("remove {shown}: marvel did not make it, and makes it again when it needs it")
        }
    };
    Error::untrusted(message, help)
}

/// An I/O error that carries a refusal gives the refusal back; any other
/// names `path`.
pub fn io_error(path: &Path, e: io::Error) -> Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(refused) => refused.clone(),
        None => Error::io(path, &e),
    }
}

fn refused_io(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, e)
}

/// Checks the state directory and every entry marvel uses in it, as a
/// command does before it connects. `None` when the directory does not
/// exist yet (so no daemon can run there).
pub fn check(paths: &Paths) -> Result<Option<Dir>> {
    match rustix::fs::statat(CWD, &paths.root, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(Error::io(&paths.root, &e.into())),
        Ok(_) => {}
    }
    let dir = Dir::open_root(&paths.root)?;
    dir.check_entries(&ENTRIES)?;
    Ok(Some(dir))
}

/// The process listening on `socket` must run as this user: it is
/// trusted with what commands send (`inject` types into agents) and with
/// what they print.
pub fn check_peer(stream: &UnixStream, socket: &Path) -> Result<()> {
    let cred =
        rustix::net::sockopt::socket_peercred(stream).map_err(|e| Error::io(socket, &e.into()))?;
    peer_verdict(cred.uid.as_raw(), cred.pid.as_raw_pid(), me(), socket)
}

/// The rule of [`check_peer`], apart from the socket.
pub fn peer_verdict(uid: u32, pid: i32, me: u32, socket: &Path) -> Result<()> {
    if uid == me {
        return Ok(());
    }
    Err(Error::untrusted(
        format!(
            "refusing the daemon on {}: its process (pid {pid}) runs as uid {uid}, not as you (uid {me})",
            socket.display()
        ),
        format!(
            "another user controls this socket; stop that process and remove {}, or set MARVEL_HOME or --state-dir to a directory of your own",
            socket.display()
        ),
    ))
}

/// Distinguishes the temporary files of one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A checked directory of the state tree, opened once; every file in it
/// is reached through this handle, so the path cannot be swapped under us.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens and checks the state directory itself.
    pub fn open_root(path: &Path) -> Result<Dir> {
        Dir::open_at(CWD, path, path.to_path_buf(), Role::Root)
    }

    /// Opens and checks a directory of the state tree (the root, `exits/`
    /// or `logs/`) by its path.
    pub fn open(path: &Path) -> Result<Dir> {
        Dir::open_at(CWD, path, path.to_path_buf(), Role::Entry)
    }

    /// The checked directory holding `file`, and the file's name in it.
    pub fn open_parent(file: &Path) -> Result<(Dir, String)> {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::other(format!("{} names no file", file.display())))?;
        let parent = file.parent().unwrap_or(Path::new("."));
        Ok((Dir::open(parent)?, name.to_string()))
    }

    fn open_at(at: BorrowedFd<'_>, name: &Path, shown: PathBuf, role: Role) -> Result<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(at, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            // A link, or not a directory at all: say which.
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let st = rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::io(&shown, &e.into()))?;
                let facts = Facts::of(&st);
                let problem = judge(&facts, Kind::Dir, me()).unwrap_or(Problem::NotA(Kind::Dir));
                let link = rustix::fs::readlinkat(at, name, Vec::new())
                    .ok()
                    .map(|l| PathBuf::from(l.to_string_lossy().into_owned()));
                return Err(refusal(&shown, &facts, problem, role, link));
            }
            Err(e) => return Err(Error::io(&shown, &e.into())),
        };
        let facts = Facts::of(&rustix::fs::fstat(&fd).map_err(|e| Error::io(&shown, &e.into()))?);
        if let Some(problem) = judge(&facts, Kind::Dir, me()) {
            return Err(refusal(&shown, &facts, problem, role, None));
        }
        Ok(Dir { fd, path: shown })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The directory's own status, through the handle.
    pub fn stat(&self) -> io::Result<Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// Opens and checks a subdirectory.
    pub fn sub(&self, name: &str) -> Result<Dir> {
        Dir::open_at(
            self.fd(),
            Path::new(name),
            self.path.join(name),
            Role::Entry,
        )
    }

    /// Creates a subdirectory (0700) unless it exists, then opens and
    /// checks it.
    pub fn ensure_sub(&self, name: &str) -> Result<Dir> {
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Error::io(self.path.join(name), &e.into())),
        }
        self.sub(name)
    }

    /// Takes away any access of others to this directory (it passed the
    /// checks, so it is ours and only we can write to it).
    pub fn make_private(&self) -> Result<()> {
        let facts =
            Facts::of(&rustix::fs::fstat(&self.fd).map_err(|e| Error::io(&self.path, &e.into()))?);
        if facts.mode & 0o077 != 0 {
            rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(0o700))
                .map_err(|e| Error::io(&self.path, &e.into()))?;
        }
        Ok(())
    }

    /// Checks one entry without opening it; `None` when it does not exist.
    pub fn entry(&self, name: &str, kind: Kind) -> Result<Option<Facts>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let facts = Facts::of(&st);
                match judge(&facts, kind, me()) {
                    None => Ok(Some(facts)),
                    Some(problem) => Err(self.refuse(name, &facts, problem)),
                }
            }
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io(self.path.join(name), &e.into())),
        }
    }

    /// Checks each of `entries` that exists.
    pub fn check_entries(&self, entries: &[(&str, Kind)]) -> Result<()> {
        for (name, kind) in entries {
            self.entry(name, *kind)?;
        }
        Ok(())
    }

    fn refuse(&self, name: &str, facts: &Facts, problem: Problem) -> Error {
        let link = (problem == Problem::Symlink)
            .then(|| rustix::fs::readlinkat(&self.fd, name, Vec::new()).ok())
            .flatten()
            .map(|l| PathBuf::from(l.to_string_lossy().into_owned()));
        refusal(&self.path.join(name), facts, problem, Role::Entry, link)
    }

    /// Opens `name` with `flags` (creating it 0600 when asked), never
    /// through a link, and checks what was opened: a regular file of ours,
    /// with one name, that nobody else can write to.
    fn open_file(&self, name: &str, flags: OFlags) -> io::Result<File> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => {
                let err = match self.entry(name, Kind::File) {
                    Err(refused) => refused,
                    Ok(_) => Error::io(self.path.join(name), &Errno::LOOP.into()),
                };
                return Err(refused_io(err));
            }
            Err(e) => return Err(e.into()),
        };
        let facts = Facts::of(&rustix::fs::fstat(&fd)?);
        if let Some(problem) = judge(&facts, Kind::File, me()) {
            return Err(refused_io(self.refuse(name, &facts, problem)));
        }
        Ok(File::from(fd))
    }

    /// Opens `name` for appending, creating it (0600) if needed.
    pub fn open_append(&self, name: &str) -> io::Result<File> {
        self.open_file(name, OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE)
    }

    /// Opens `name` for reading and writing (appending, when asked),
    /// creating it (0600) if needed.
    pub fn open_read_write(&self, name: &str, append: bool) -> io::Result<File> {
        let mut flags = OFlags::RDWR | OFlags::CREATE;
        if append {
            flags |= OFlags::APPEND;
        }
        self.open_file(name, flags)
    }

    /// Opens (creating) a lock file.
    pub fn open_lock(&self, name: &str) -> Result<File> {
        self.open_file(name, OFlags::RDWR | OFlags::CREATE)
            .map_err(|e| io_error(&self.path.join(name), e))
    }

    /// Opens an existing file for reading.
    pub fn open_existing(&self, name: &str) -> io::Result<File> {
        self.open_file(name, OFlags::RDONLY)
    }

    /// Reads a whole file.
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut f = self.open_file(name, OFlags::RDONLY)?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Writes `bytes` over the start of the existing file `name`, in one
    /// write, padded with spaces to the file's length so that nothing of
    /// what it held before is left after them: the same file, no entry made
    /// or removed. Not atomic for a reader that reads meanwhile, nor
    /// durable. `NotFound` when there is no such file.
    pub fn overwrite(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let file = self.open_file(name, OFlags::WRONLY)?;
        let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
        let mut padded = bytes.to_vec();
        if len > padded.len() {
            padded.resize(len, b' ');
        }
        file.write_all_at(&padded, 0)
    }

    /// Renames `from` to `to` unless `to` exists.
    pub fn rename_new(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat_with(
            &self.fd,
            from,
            &self.fd,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        )?)
    }

    /// Writes `name` atomically: a new temporary file (created exclusively,
    /// so never an existing file or link), fsync, rename over `name`, fsync
    /// of the directory. A failed write leaves no temporary file behind.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.swap_in(name, bytes, true)
    }

    /// Replaces `name` atomically for its readers (they see the old or
    /// the new file, never a torn one), without making it durable: for a
    /// word to a live process, which means nothing once the machine has
    /// restarted.
    pub fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.swap_in(name, bytes, false)
    }

    /// A new temporary file with `bytes` renamed over `name`, each step
    /// made durable if asked to; a failed write leaves no temporary file.
    fn swap_in(&self, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
        let (tmp, mut file) = self.create_temp(name)?;
        let written = file
            .write_all(bytes)
            .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
            .and_then(|()| Ok(rustix::fs::renameat(&self.fd, &tmp, &self.fd, name)?));
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
            return Err(e);
        }
        if durable {
            let _ = rustix::fs::fsync(&self.fd);
        }
        Ok(())
    }

    fn create_temp(&self, name: &str) -> io::Result<(String, File)> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        loop {
            let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
            let tmp = format!(
                ".{name}.{}.{seq}.{:08x}.tmp",
                std::process::id(),
                fastrand::u32(..)
            );
            match self.open_file(&tmp, flags) {
                Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => continue,
                other => return other.map(|f| (tmp, f)),
            }
        }
    }

    /// Renames an entry within this directory (a link is moved, never
    /// followed).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Removes `name` only if it is a `kind` of ours (a link, or anything
    /// marvel cannot have made, stays). `true` when it was removed.
    pub fn remove_own(&self, name: &str, kind: Kind) -> io::Result<bool> {
        let facts = match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Facts::of(&st),
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if facts.file_type != kind.file_type() || facts.uid != me() {
            return Ok(false);
        }
        let flags = if kind == Kind::Dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(&self.fd, name, flags) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Binds a listening socket at `name`, mode 0600 from the moment it
    /// appears: it is bound under a temporary name, restricted, then
    /// renamed over `name` (replacing a stale socket of ours). `name` must
    /// not be anything else.
    pub fn bind_socket(&self, name: &str) -> io::Result<UnixListener> {
        self.entry(name, Kind::Socket).map_err(refused_io)?;
        // Short, so the full path fits a socket address whenever the final
        // one does.
        let tmp = format!(".s{}", std::process::id());
        self.remove_own(&tmp, Kind::Socket)?;
        let listener = UnixListener::bind(self.path.join(&tmp))?;
        let placed =
            rustix::fs::chmodat(&self.fd, &tmp, Mode::from_raw_mode(0o600), AtFlags::empty())
                .map_err(io::Error::from)
                .and_then(|()| self.rename(&tmp, name));
        if let Err(e) = placed {
            let _ = self.remove_own(&tmp, Kind::Socket);
            return Err(e);
        }
        Ok(listener)
    }
}

/// Opens a file of the state tree for appending (0600, created if
/// needed), through a checked handle of its directory.
pub fn open_append(path: &Path) -> io::Result<File> {
    let (dir, name) = Dir::open_parent(path).map_err(refused_io)?;
    dir.open_append(&name)
}

/// Opens a file of the state tree for reading and writing (appending, when
/// asked), 0600 and created if needed, through a checked handle of its
/// directory.
pub fn open_read_write(path: &Path, append: bool) -> io::Result<File> {
    let (dir, name) = Dir::open_parent(path).map_err(refused_io)?;
    dir.open_read_write(&name, append)
}

/// Opens an existing file of the state tree for reading, never through a
/// link.
pub fn open_existing(path: &Path) -> io::Result<File> {
    let (dir, name) = Dir::open_parent(path).map_err(refused_io)?;
    dir.open_existing(&name)
}

/// Reads a file of the state tree, never through a link.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let (dir, name) = Dir::open_parent(path).map_err(refused_io)?;
    dir.read(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    const ME: u32 = 1000;

    /// Issue: a write that failed (a full disk) left its zero-byte temp
    /// file behind, one more each time. Whatever fails, none is left.
    #[test]
    fn a_write_that_fails_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        // The name is taken by a directory that is not empty: the final
        // rename fails after the data was written.
        fs::create_dir(tmp.path().join("state.json")).unwrap();
        fs::write(tmp.path().join("state.json").join("x"), b"").unwrap();
        for _ in 0..3 {
            assert!(dir.write_atomic("state.json", b"{}").is_err());
            assert!(dir.replace("state.json", b"{}").is_err());
        }
        let left: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["state.json"]);
        // And a write that succeeds leaves only its file.
        dir.write_atomic("other.json", b"{}").unwrap();
        dir.replace("other.json", b"[]").unwrap();
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2);
        assert_eq!(fs::read(tmp.path().join("other.json")).unwrap(), b"[]");
    }

    fn facts(file_type: FileType, uid: u32, mode: u32) -> Facts {
        Facts {
            file_type,
            uid,
            mode,
            links: 1,
        }
    }

    #[test]
    fn only_our_own_private_entries_of_the_expected_kind_pass() {
        use FileType::*;
        let ok = |f: Facts, k| judge(&f, k, ME);
        assert_eq!(ok(facts(Directory, ME, 0o700), Kind::Dir), None);
        assert_eq!(ok(facts(Directory, ME, 0o755), Kind::Dir), None);
        assert_eq!(ok(facts(RegularFile, ME, 0o644), Kind::File), None);
        assert_eq!(ok(facts(Socket, ME, 0o600), Kind::Socket), None);
        assert_eq!(
            ok(facts(Directory, 65534, 0o700), Kind::Dir),
            Some(Problem::Owner)
        );
        assert_eq!(
            ok(facts(Directory, ME, 0o770), Kind::Dir),
            Some(Problem::Writable)
        );
        assert_eq!(
            ok(facts(Directory, ME, 0o1777), Kind::Dir),
            Some(Problem::Writable)
        );
        assert_eq!(
            ok(facts(RegularFile, ME, 0o602), Kind::File),
            Some(Problem::Writable)
        );
        assert_eq!(
            ok(facts(Symlink, ME, 0o777), Kind::Dir),
            Some(Problem::Symlink)
        );
        assert_eq!(
            ok(facts(Symlink, ME, 0o777), Kind::File),
            Some(Problem::Symlink)
        );
        assert_eq!(
            ok(facts(RegularFile, ME, 0o600), Kind::Socket),
            Some(Problem::NotA(Kind::Socket))
        );
        assert_eq!(
            ok(facts(Fifo, ME, 0o600), Kind::File),
            Some(Problem::NotA(Kind::File))
        );
        let mut linked = facts(RegularFile, ME, 0o600);
        linked.links = 2;
        assert_eq!(ok(linked, Kind::File), Some(Problem::Links));
    }

    #[test]
    fn a_refusal_names_the_path_owner_mode_and_the_fix() {
        let f = facts(FileType::Directory, 65534, 0o777);
        let e = refusal(Path::new("/srv/m"), &f, Problem::Owner, Role::Root, None);
        assert_eq!(e.code(), crate::error::exit::DAEMON_UNAVAILABLE);
        let text = e.to_string();
        assert!(
            text.starts_with(
                "error: refusing the state directory /srv/m: it belongs to another user (owner uid 65534, mode 0777; you are uid "
            ),
            "{text}"
        );
        assert!(
            text.contains("\nhelp: set MARVEL_HOME or --state-dir"),
            "{text}"
        );
        let f = facts(FileType::RegularFile, ME, 0o666);
        let text = refusal(
            Path::new("/srv/m/daemon.log"),
            &f,
            Problem::Writable,
            Role::Entry,
            None,
        )
        .to_string();
        assert!(
            text.starts_with("error: refusing /srv/m/daemon.log in the state directory: other users can write to it (owner uid 1000, mode 0666;"),
            "{text}"
        );
        assert!(
            text.ends_with("help: run `chmod go-w /srv/m/daemon.log`"),
            "{text}"
        );
    }

    #[test]
    fn a_daemon_of_another_user_is_refused() {
        let sock = Path::new("/s/marvel.sock");
        assert!(peer_verdict(1000, 42, 1000, sock).is_ok());
        let e = peer_verdict(65534, 42, 1000, sock).unwrap_err();
        assert_eq!(e.code(), crate::error::exit::DAEMON_UNAVAILABLE);
        assert!(
            e.to_string().starts_with(
                "error: refusing the daemon on /s/marvel.sock: its process (pid 42) runs as uid 65534, not as you (uid 1000)\nhelp: "
            ),
            "{e}"
        );
        let (a, _b) = UnixStream::pair().unwrap();
        check_peer(&a, sock).unwrap();
    }

    fn tree() -> (tempfile::TempDir, Paths) {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            root: tmp.path().join("state"),
        };
        paths.ensure().unwrap();
        (tmp, paths)
    }

    #[test]
    fn check_refuses_links_and_loose_modes_anywhere_marvel_looks() {
        let (tmp, paths) = tree();
        assert!(check(&paths).unwrap().is_some());
        assert!(
            check(&Paths {
                root: tmp.path().join("absent")
            })
            .unwrap()
            .is_none()
        );
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"x").unwrap();
        std::os::unix::fs::symlink(&victim, paths.daemon_log()).unwrap();
        let e = check(&paths).unwrap_err().to_string();
        assert!(
            e.contains("daemon.log in the state directory: it is a symbolic link to"),
            "{e}"
        );
        fs::remove_file(paths.daemon_log()).unwrap();
        fs::write(paths.events(), b"").unwrap();
        fs::set_permissions(paths.events(), fs::Permissions::from_mode(0o666)).unwrap();
        assert!(check(&paths).is_err());
        fs::set_permissions(paths.events(), fs::Permissions::from_mode(0o600)).unwrap();
        check(&paths).unwrap();
        fs::remove_dir(paths.logs_dir()).unwrap();
        std::os::unix::fs::symlink(tmp.path(), paths.logs_dir()).unwrap();
        assert!(check(&paths).is_err());
        // The state directory itself as a link.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&paths.root, &link).unwrap();
        let e = check(&Paths { root: link }).unwrap_err().to_string();
        assert!(e.contains("refusing the state directory"), "{e}");
        assert!(e.contains("it is a symbolic link to"), "{e}");
    }

    #[test]
    fn files_are_never_opened_through_a_link() {
        let (tmp, paths) = tree();
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let log = paths.session_log(7);
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        let e = open_append(&log).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(io_error(&log, e).to_string().contains("symbolic link"));
        assert!(read(&log).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A file with a second name elsewhere is refused too.
        fs::remove_file(&log).unwrap();
        fs::hard_link(&victim, &log).unwrap();
        assert!(open_append(&log).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn created_files_are_private() {
        let (_tmp, paths) = tree();
        let mut f = open_append(&paths.daemon_log()).unwrap();
        f.write_all(b"x").unwrap();
        let mode = fs::metadata(paths.daemon_log())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn remove_own_leaves_links_and_other_kinds_alone() {
        let (tmp, paths) = tree();
        let dir = Dir::open(&paths.logs_dir()).unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, paths.logs_dir().join("1.log")).unwrap();
        fs::create_dir(paths.logs_dir().join("2.log")).unwrap();
        fs::write(paths.logs_dir().join("3.log"), b"").unwrap();
        assert!(!dir.remove_own("1.log", Kind::File).unwrap());
        assert!(!dir.remove_own("2.log", Kind::File).unwrap());
        assert!(dir.remove_own("3.log", Kind::File).unwrap());
        assert!(!dir.remove_own("4.log", Kind::File).unwrap());
        assert!(victim.exists() && paths.logs_dir().join("2.log").is_dir());
    }

    #[test]
    fn a_bound_socket_is_private_from_the_start() {
        let (_tmp, paths) = tree();
        let dir = Dir::open_root(&paths.root).unwrap();
        let _l = dir.bind_socket(crate::paths::SOCKET).unwrap();
        let mode = fs::symlink_metadata(paths.socket())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        UnixStream::connect(paths.socket()).unwrap();
        // Binding again replaces the stale socket of ours.
        drop(_l);
        let _l = dir.bind_socket(crate::paths::SOCKET).unwrap();
        UnixStream::connect(paths.socket()).unwrap();
        // Anything else at the name is refused, not replaced.
        fs::remove_file(paths.socket()).unwrap();
        fs::write(paths.socket(), b"mine").unwrap();
        assert!(dir.bind_socket(crate::paths::SOCKET).is_err());
        assert_eq!(fs::read(paths.socket()).unwrap(), b"mine");
    }
}
