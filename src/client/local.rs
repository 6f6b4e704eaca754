//! This host's daemon: one request per connection over its Unix socket,
//! starting the daemon in the background when none runs (as tmux starts its
//! server). Racing clients start one daemon: a start lock serialises them,
//! and the daemon's own lock settles the rest.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use crate::error::{Error, Result};
use crate::lock;
use crate::paths::{DAEMON_LOG, HOME_ENV, Paths, SOCKET, START_LOCK, TMUX_SOCKET_ENV, Target};
use crate::proto::{Envelope, PROTOCOL_VERSION, Request, Response};
use crate::statedir::{self, Dir, Kind};

/// How long a command waits for a daemon it started to answer.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// Sends one request, starting the daemon first if none runs.
pub fn call(t: &Target, req: Request) -> Result<Response> {
    let stream = connect_or_start(t)?;
    match exchange_once(stream, &req) {
        // The daemon went away while it was asked (its socket can still
        // take a connection for a moment after it was killed): a request
        // that changes nothing, or nothing twice, is asked again of a new
        // daemon.
        Err(Exchange::Lost(_)) if repeatable(&req) && !lock::is_held(&t.paths)? => {
            exchange(start(t)?, &req)
        }
        Err(Exchange::Lost(e) | Exchange::Failed(e)) => Err(e),
        Ok(r) => Ok(r),
    }
}

/// Requests that may be asked again when the first asking may have
/// reached a daemon that died: reading, or applying a whole team.
fn repeatable(req: &Request) -> bool {
    matches!(
        req,
        Request::Ping
            | Request::Get { .. }
            | Request::SessionRows { .. }
            | Request::Describe { .. }
            | Request::Status
            | Request::Events { follow: false, .. }
            | Request::LogRead { .. }
            | Request::Plan { .. }
            | Request::Capture { .. }
            | Request::Apply { .. }
    )
}

/// How an exchange failed: the connection was lost before any answer, or
/// anything else.
enum Exchange {
    Lost(Error),
    Failed(Error),
}

/// Sends one request to a running daemon; `Ok(None)` when none runs.
pub fn call_running(t: &Target, req: Request) -> Result<Option<Response>> {
    match connect(&t.paths)? {
        Some(s) => exchange(s, &req).map(Some),
        None => Ok(None),
    }
}

/// Sends a streaming request (such as `events --follow`) and hands each
/// response line to `on` until it returns `false` or the daemon hangs up.
pub fn follow(
    t: &Target,
    req: Request,
    on: &mut dyn FnMut(Response) -> Result<bool>,
) -> Result<()> {
    let stream = connect_or_start(t)?;
    let mut reader = send(stream, &req, &t.paths)?;
    loop {
        let Some(resp) = read_response(&mut reader, &t.paths)? else {
            return Ok(());
        };
        if let Response::Error(e) = resp {
            return Err(e);
        }
        if !on(resp)? {
            return Ok(());
        }
    }
}

/// Connects to the daemon, starting it first if none runs.
pub fn connect_or_start(t: &Target) -> Result<UnixStream> {
    match connect(&t.paths)? {
        Some(s) => Ok(s),
        None => start(t),
    }
}

/// Connects to the daemon's socket; `Ok(None)` when no daemon listens.
/// The state directory is checked first (see [`statedir`]), and the
/// process at the other end must run as this user.
pub fn connect(paths: &Paths) -> Result<Option<UnixStream>> {
    match statedir::check(paths)? {
        Some(dir) => connect_in(&dir, paths),
        None => Ok(None),
    }
}

fn connect_in(dir: &Dir, paths: &Paths) -> Result<Option<UnixStream>> {
    if dir.entry(SOCKET, Kind::Socket)?.is_none() {
        return Ok(None);
    }
    let socket = paths.socket();
    match UnixStream::connect(&socket) {
        Ok(s) => {
            statedir::check_peer(&s, &socket)?;
            Ok(Some(s))
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::daemon(format!(
            "cannot connect to {}: {e}",
            socket.display()
        ))),
    }
}

fn exchange(stream: UnixStream, req: &Request) -> Result<Response> {
    exchange_once(stream, req).map_err(|(Exchange::Lost(e) | Exchange::Failed(e))| e)
}

fn exchange_once(stream: UnixStream, req: &Request) -> std::result::Result<Response, Exchange> {
    let lost = |e: String| Exchange::Lost(Error::daemon(e));
    let mut reader = send_raw(stream, req)
        .map_err(|e| lost(format!("lost the connection to the daemon: {e}")))?;
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(0) => Err(lost(
            "the daemon closed the connection without answering".into(),
        )),
        Ok(_) => match decode(&line).map_err(Exchange::Failed)? {
            Response::Error(e) => Err(Exchange::Failed(e)),
            r => Ok(r),
        },
        Err(e) => Err(lost(format!("lost the connection to the daemon: {e}"))),
    }
}

fn send(stream: UnixStream, req: &Request, paths: &Paths) -> Result<BufReader<UnixStream>> {
    send_raw(stream, req).map_err(|e| Error::daemon(format!("{}: {e}", paths.socket().display())))
}

fn send_raw(mut stream: UnixStream, req: &Request) -> std::io::Result<BufReader<UnixStream>> {
    let env = Envelope {
        protocol: PROTOCOL_VERSION,
        request: req.clone(),
    };
    let mut line = serde_json::to_vec(&env).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    // A listing of thousands of sessions is a megabyte on one line.
    Ok(BufReader::with_capacity(64 << 10, stream))
}

fn read_response(reader: &mut BufReader<UnixStream>, paths: &Paths) -> Result<Option<Response>> {
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(0) => Ok(None),
        Ok(_) => decode(&line).map(Some),
        Err(e) => Err(Error::daemon(format!("{}: {e}", paths.socket().display()))),
    }
}

fn decode(line: &[u8]) -> Result<Response> {
    serde_json::from_slice(line).map_err(|e| {
        Error::daemon(format!(
            "cannot understand the daemon's answer ({e}); is it another marvel version? run `marvel daemon stop` and retry"
        ))
    })
}

/// Starts a daemon in the background and waits until it answers.
fn start(t: &Target) -> Result<UnixStream> {
    let dir = t.paths.ensure()?;
    // Serialise starters; whoever gets the lock second finds a daemon.
    let start_lock = dir.open_lock(START_LOCK)?;
    rustix::fs::flock(&start_lock, FlockOperation::LockExclusive)
        .map_err(|e| Error::io(t.paths.start_lock(), &e.into()))?;
    if let Some(s) = connect_in(&dir, &t.paths)? {
        return Ok(s);
    }
    if lock::is_held(&t.paths)? {
        // A daemon owns the directory but does not answer: it is starting,
        // or its socket was removed and it is making it again. A second
        // daemon must never start beside it.
        return await_owner(t, &dir);
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::daemon(format!("cannot find the marvel binary: {e}")))?;
    let log_path = t.paths.daemon_log();
    let log = dir
        .open_append(DAEMON_LOG)
        .map_err(|e| statedir::io_error(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| Error::io(&log_path, &e))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("daemon")
        .arg("run")
        .env(HOME_ENV, &t.paths.root)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    match &t.tmux_socket {
        Some(s) => cmd.env(TMUX_SOCKET_ENV, s),
        None => cmd.env_remove(TMUX_SOCKET_ENV),
    };
    // SAFETY: between fork and exec the child makes only async-signal-safe
    // system calls (setsid, close_range or fcntl); nothing allocates.
    unsafe {
        cmd.pre_exec(|| {
            // Out of the caller's terminal session and process group, so
            // Ctrl-C there does not reach the daemon.
            rustix::process::setsid()?;
            close_inherited();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::daemon(format!("cannot start {} daemon run: {e}", exe.display())))?;
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(s) = connect_in(&dir, &t.paths)? {
            drop(start_lock);
            // The daemon lives on in its own session; reap it if it exits
            // while we still run, without waiting for it.
            std::thread::spawn(move || child.wait());
            return Ok(s);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::daemon(format!(
                "the daemon exited at start ({status}); its log {} ends with:\n{}",
                log_path.display(),
                tail(&log_path, 5)
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::daemon(format!(
                "the daemon did not answer within {} s; see {}",
                START_DEADLINE.as_secs(),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for the daemon that holds the directory's lock to answer.
fn await_owner(t: &Target, dir: &Dir) -> Result<UnixStream> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(s) = connect_in(dir, &t.paths)? {
            return Ok(s);
        }
        if !lock::is_held(&t.paths)? {
            return Err(Error::daemon(format!(
                "the daemon that held {} exited before it answered; run the command again",
                t.paths.lock().display()
            )));
        }
        if Instant::now() > deadline {
            let pid = lock::holder(dir).map_or("unknown".to_string(), |p| p.to_string());
            return Err(Error::daemon(format!(
                "a daemon (pid {pid}) holds the lock of {} but does not answer on {} after {} s; `marvel daemon stop` stops it (its panes keep running), and the next command starts a new one",
                t.paths.root.display(),
                t.paths.socket().display(),
                START_DEADLINE.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// In the daemon's child before exec: every descriptor above stderr is
/// marked close-on-exec, so the daemon keeps none of its starter's (a pipe
/// it held open would make a shell wait for the daemon to end).
fn close_inherited() {
    // SAFETY: close_range only changes this (child) process's descriptor
    // flags; no wrapper exists in rustix.
    let rc = unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
    if rc == 0 {
        return;
    }
    // Kernels before 5.11: one descriptor at a time, up to the limit.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 16)
        .min(1 << 20);
    for fd in 3..limit as libc::c_int {
        // SAFETY: fcntl on a number that is not an open descriptor only
        // fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

fn tail(path: &Path, n: usize) -> String {
    let bytes = statedir::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
