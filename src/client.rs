//! How commands reach the daemon: one request per connection over its Unix
//! socket, starting the daemon in the background when none runs (as tmux
//! starts its server). Racing clients start one daemon: a start lock
//! serialises them, and the daemon's own lock settles the rest.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::proto::{Envelope, PROTOCOL_VERSION, Request, Response};

/// Environment variable naming the tmux server (`-L` socket name) to use.
pub const TMUX_SOCKET_ENV: &str = "MARVEL_TMUX_SOCKET";

/// How long a command waits for a daemon it started to answer.
const START_DEADLINE: Duration = Duration::from_secs(10);

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

/// Sends one request, starting the daemon first if none runs.
pub fn call(t: &Target, req: Request) -> Result<Response> {
    let stream = match connect(&t.paths)? {
        Some(s) => s,
        None => start(t)?,
    };
    exchange(stream, &req)
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
    let stream = match connect(&t.paths)? {
        Some(s) => s,
        None => start(t)?,
    };
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

/// Connects to the daemon's socket; `Ok(None)` when no daemon listens.
pub fn connect(paths: &Paths) -> Result<Option<UnixStream>> {
    let socket = paths.socket();
    match UnixStream::connect(&socket) {
        Ok(s) => Ok(Some(s)),
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
    let paths_hint = stream
        .peer_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        .unwrap_or_else(|| "the daemon".into());
    let mut reader =
        send_raw(stream, req).map_err(|e| Error::daemon(format!("{paths_hint}: {e}")))?;
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(Error::daemon(format!(
            "{paths_hint}: the daemon closed the connection without answering"
        ))),
        Ok(_) => match decode(&line)? {
            Response::Error(e) => Err(e),
            r => Ok(r),
        },
        Err(e) => Err(Error::daemon(format!("{paths_hint}: {e}"))),
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
    Ok(BufReader::new(stream))
}

fn read_response(reader: &mut BufReader<UnixStream>, paths: &Paths) -> Result<Option<Response>> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => decode(&line).map(Some),
        Err(e) => Err(Error::daemon(format!("{}: {e}", paths.socket().display()))),
    }
}

fn decode(line: &str) -> Result<Response> {
    serde_json::from_str(line).map_err(|e| {
        Error::daemon(format!(
            "cannot understand the daemon's answer ({e}); is it another marvel version? run `marvel daemon stop` and retry"
        ))
    })
}

/// Starts a daemon in the background and waits until it answers.
fn start(t: &Target) -> Result<UnixStream> {
    t.paths.ensure()?;
    // Serialise starters; whoever gets the lock second finds a daemon.
    let lock_path = t.paths.start_lock();
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, &e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, &e))?;
    if let Some(s) = connect(&t.paths)? {
        return Ok(s);
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::daemon(format!("cannot find the marvel binary: {e}")))?;
    let log_path = t.paths.daemon_log();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, &e))?;
    let log2 = log.try_clone().map_err(|e| Error::io(&log_path, &e))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("daemon")
        .arg("run")
        .env(crate::paths::HOME_ENV, &t.paths.root)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    match &t.tmux_socket {
        Some(s) => cmd.env(TMUX_SOCKET_ENV, s),
        None => cmd.env_remove(TMUX_SOCKET_ENV),
    };
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from the
    // caller's terminal and process group so Ctrl-C there does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::daemon(format!("cannot start {} daemon run: {e}", exe.display())))?;
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(s) = connect(&t.paths)? {
            drop(lock);
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

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Opens (creating) a lock file; shared by the daemon and starters.
pub fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, &e))
}
