//! The daemon's socket: accepts connections, checks that the peer is the
//! same user, reads one size-limited request line within a deadline, hands
//! it to the daemon loop and writes the answer. Connections are capped,
//! accept errors back off, and a socket path that disappears is bound
//! again. One bad connection never stops the server.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::daemon::events::{self, FollowRx, FollowTx, Followed};
use crate::error::Error;
use crate::proto::{Envelope, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Request, Response};

/// A request on its way to the daemon loop.
pub struct Incoming {
    pub request: Request,
    pub reply: Sender<Response>,
    /// For `events --follow`: the bounded queue each new event goes to.
    pub follow: Option<FollowTx>,
    /// Signalled once the reply has been written to the client, so a
    /// stopping daemon does not exit before its last answer is out.
    pub written: mpsc::Receiver<()>,
}

/// How much the socket serves at once, and how long it waits for whom.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once, followers of `events -f` included.
    pub connections: usize,
    /// Room beyond `connections` kept for the pane shims' start and exit
    /// reports, so a flood of clients cannot delay the news of a death.
    pub shim_reserve: usize,
    /// The whole request line must arrive within this, however it trickles.
    pub request_deadline: Duration,
    /// The whole answer must be taken within this.
    pub reply_deadline: Duration,
    /// How often the socket path is checked, and a quiet follower's peer.
    pub check_every: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 64,
            shim_reserve: 16,
            request_deadline: Duration::from_secs(10),
            reply_deadline: Duration::from_secs(10),
            check_every: Duration::from_secs(1),
        }
    }
}

/// A follower must take each event line within this, or is disconnected.
const EVENT_DEADLINE: Duration = Duration::from_secs(5);
/// Connections refused for being over the cap are kept open this long
/// after their answer, so a client that had not yet sent its request can
/// still send it and read the answer instead of a broken pipe.
const TURNED_AWAY_LINGER: Duration = Duration::from_secs(1);
/// At most this many of those are kept; older ones are closed first.
const TURNED_AWAY_MAX: usize = 64;
/// Pauses between failed accepts grow from the first to the second.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// How long a check of the socket path waits for the daemon loop.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// The uid of the process at the other end of a Unix socket.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(stream)?.uid.as_raw())
}

/// Only the daemon's own user may talk to it: `inject` is remote typing
/// into an agent.
pub fn check_peer(peer: u32, own: u32) -> Result<(), Error> {
    if peer == own {
        Ok(())
    } else {
        Err(Error::refused(
            format!("connection from uid {peer} refused: this daemon serves uid {own} only"),
            None,
        ))
    }
}

/// The answer to a client over the connection cap.
pub fn busy(connections: usize) -> Error {
    Error::daemon(format!(
        "the daemon is busy ({connections} connections); try again"
    ))
}

/// Serves the socket at `path` with the default [`Limits`] until the
/// daemon loop is gone. Requests go to the loop as whatever message type
/// it reads. (The listener may have been bound under another name and
/// moved to `path`: `path` is where clients find it.)
pub fn serve<M: From<Incoming> + Send + 'static>(
    listener: UnixListener,
    path: PathBuf,
    to_loop: Sender<M>,
) {
    let accept = |l: &UnixListener| l.accept().map(|(s, _)| s);
    let active = Arc::new(AtomicUsize::new(0));
    run_server(
        listener,
        Some(path),
        to_loop,
        Limits::default(),
        accept,
        active,
        Arc::default(),
    );
}

/// [`serve`] with explicit limits, accept function (tests inject failures
/// through it), count of connections served and connection threads.
/// Returns once the daemon loop is gone and the socket path no longer
/// leads here.
fn run_server<M, A>(
    listener: UnixListener,
    path: Option<PathBuf>,
    to_loop: Sender<M>,
    limits: Limits,
    accept: A,
    active: Arc<AtomicUsize>,
    workers: Arc<Workers>,
) where
    M: From<Incoming> + Send + 'static,
    A: FnMut(&UnixListener) -> io::Result<UnixStream>,
{
    let bound = path.as_deref().and_then(socket_id);
    Server {
        listener,
        path,
        bound,
        to_loop,
        limits,
        accept,
        active,
        own: rustix::process::geteuid().as_raw(),
        turned_away: VecDeque::new(),
        workers,
        backoff: AcceptBackoff::default(),
        rebind_failing: false,
    }
    .run();
}

/// A socket file, told apart from whatever may later stand at its path.
type SocketId = (u64, u64);

fn socket_id(path: &Path) -> Option<SocketId> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| (m.dev(), m.ino()))
}

struct Server<M, A> {
    listener: UnixListener,
    path: Option<PathBuf>,
    /// The socket file bound at `path`, as last seen.
    bound: Option<SocketId>,
    to_loop: Sender<M>,
    limits: Limits,
    accept: A,
    /// Connections being served; only this thread increments it.
    active: Arc<AtomicUsize>,
    own: u32,
    turned_away: VecDeque<(Instant, UnixStream)>,
    /// Connection threads waiting for their next connection.
    workers: Arc<Workers>,
    backoff: AcceptBackoff,
    rebind_failing: bool,
}

enum Flow {
    Go,
    Stop,
}

impl<M, A> Server<M, A>
where
    M: From<Incoming> + Send + 'static,
    A: FnMut(&UnixListener) -> io::Result<UnixStream>,
{
    fn run(mut self) {
        let mut next_check = Instant::now() + self.limits.check_every;
        loop {
            let now = Instant::now();
            if now >= next_check {
                next_check = now + self.limits.check_every;
                if let Flow::Stop = self.check_path() {
                    return;
                }
            }
            while self
                .turned_away
                .front()
                .is_some_and(|(until, _)| *until <= now)
            {
                self.turned_away.pop_front();
            }
            let wake = self
                .turned_away
                .front()
                .map_or(next_check, |(until, _)| (*until).min(next_check));
            match readable(&self.listener, wake.saturating_duration_since(now)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    self.failed(&e);
                    continue;
                }
            }
            match (self.accept)(&self.listener) {
                Ok(stream) => {
                    if let Some(msg) = self.backoff.succeeded() {
                        log(&msg);
                    }
                    self.admit(stream);
                }
                Err(e) => self.failed(&e),
            }
        }
    }

    /// Accept failed: retry at once when it was one connection's trouble,
    /// else pause, longer each time, so that running out of descriptors
    /// does not turn into a busy loop.
    fn failed(&mut self, e: &io::Error) {
        if let Some((pause, msg)) = self.backoff.failed(e) {
            if let Some(msg) = msg {
                log(&msg);
            }
            std::thread::sleep(pause);
        }
    }

    /// Serves the connection on its own thread, or answers that the daemon
    /// is busy. Past `connections`, only shim reports are served.
    fn admit(&mut self, stream: UnixStream) {
        let n = self.active.load(Ordering::SeqCst);
        if n >= self.limits.connections + self.limits.shim_reserve {
            self.turn_away(stream, n);
            return;
        }
        let conn = Conn {
            stream,
            slot: Slot::take(&self.active),
            shims_only: (n >= self.limits.connections).then_some(n),
        };
        let conn = match self.workers.take() {
            Some(worker) => match worker.send(conn) {
                Ok(()) => return,
                Err(mpsc::SendError(conn)) => conn,
            },
            None => conn,
        };
        let workers = Arc::clone(&self.workers);
        let id = workers.ids.fetch_add(1, Ordering::Relaxed);
        let to_loop = self.to_loop.clone();
        let limits = self.limits.clone();
        let own = self.own;
        // Decoding a request compiles the `waiting` patterns of a team it
        // carries, which takes more stack than the rest (untouched stack
        // costs no memory).
        let _ = std::thread::Builder::new()
            .name("marvel-conn".into())
            .stack_size(1024 * 1024)
            .spawn(move || {
                work(id, conn, &workers, |c| {
                    let Conn {
                        stream,
                        slot,
                        shims_only,
                    } = c;
                    handle(stream, own, to_loop.clone(), &limits, shims_only);
                    drop(slot);
                })
            });
    }

    /// Answers "busy" without a thread: the answer fits in the fresh
    /// socket's buffer, so the write does not wait.
    fn turn_away(&mut self, mut stream: UnixStream, n: usize) {
        let _ = stream.set_nonblocking(true);
        let _ = write_line(&mut stream, &Response::Error(busy(n)), Duration::ZERO);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        if self.turned_away.len() >= TURNED_AWAY_MAX {
            self.turned_away.pop_front();
        }
        self.turned_away
            .push_back((Instant::now() + TURNED_AWAY_LINGER, stream));
    }

    /// A socket path that is gone, or holds something else, makes the
    /// daemon unreachable: bind a new socket there, as long as the daemon
    /// loop still answers (a stopping daemon removes its socket on purpose).
    fn check_path(&mut self) -> Flow {
        let Some(path) = self.path.clone() else {
            return Flow::Go;
        };
        if self.bound.is_some() && socket_id(&path) == self.bound {
            return Flow::Go;
        }
        match probe(&self.to_loop) {
            Probe::Gone => return Flow::Stop,
            Probe::Busy => return Flow::Go,
            Probe::Alive => {}
        }
        match bind_at(&path) {
            Ok(listener) => {
                log(&format!(
                    "the socket {} was removed or replaced; listening there again",
                    path.display()
                ));
                self.rebind_failing = false;
                self.bound = socket_id(&path);
                let old = std::mem::replace(&mut self.listener, listener);
                // Whoever connected before the path went away still gets served.
                if old.set_nonblocking(true).is_ok() {
                    while let Ok((s, _)) = old.accept() {
                        let _ = s.set_nonblocking(false);
                        self.admit(s);
                    }
                }
            }
            Err(e) if !self.rebind_failing => {
                self.rebind_failing = true;
                log(&format!(
                    "the socket {} was removed or replaced, and cannot be bound again: {e}; retrying",
                    path.display()
                ));
            }
            Err(_) => {}
        }
        Flow::Go
    }
}

/// A connection to serve.
struct Conn {
    stream: UnixStream,
    slot: Slot,
    /// Past the cap: only shim reports are served.
    shims_only: Option<usize>,
}

/// How long a connection thread waits for another connection before it
/// ends: a bring-up's thousand shim reports, or a client polling, are
/// served by a few threads instead of a thread each.
const WORKER_LINGER: Duration = Duration::from_secs(5);

/// The connection threads waiting for a connection, each by the sending
/// end of its own queue (and an id, to take itself off the list).
struct Workers {
    waiting: Mutex<Vec<(u64, mpsc::SyncSender<Conn>)>>,
    /// Threads started so far.
    ids: AtomicU64,
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            waiting: Mutex::new(Vec::new()),
            ids: AtomicU64::new(0),
        }
    }
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, mpsc::SyncSender<Conn>)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A waiting thread, taken off the list: it will take what is sent.
    fn take(&self) -> Option<mpsc::SyncSender<Conn>> {
        self.lock().pop().map(|(_, tx)| tx)
    }
}

/// A connection thread: serves `conn`, then each connection handed to it
/// while it waits, until none comes for [`WORKER_LINGER`].
fn work(id: u64, mut conn: Conn, workers: &Workers, serve: impl Fn(Conn)) {
    let (tx, rx) = mpsc::sync_channel::<Conn>(1);
    loop {
        serve(conn);
        workers.lock().push((id, tx.clone()));
        conn = match rx.recv_timeout(WORKER_LINGER) {
            Ok(next) => next,
            Err(RecvTimeoutError::Timeout) => {
                let mut waiting = workers.lock();
                if let Some(i) = waiting.iter().position(|(w, _)| *w == id) {
                    waiting.swap_remove(i);
                    return;
                }
                drop(waiting);
                // Taken off the list meanwhile: a connection is on its way.
                match rx.recv() {
                    Ok(next) => next,
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
    }
}

/// Holds one of the counted connection places until dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Slot {
        active.fetch_add(1, Ordering::SeqCst);
        Slot(active.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until a connection is pending, at most `wait`.
fn readable(listener: &UnixListener, wait: Duration) -> io::Result<bool> {
    let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    });
    let mut fds = [PollFd::new(listener, PollFlags::IN)];
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Binds a new socket at `path` in place of a stale socket of ours (0600
/// from the moment it appears). Anything else standing there is left alone
/// and the bind fails: the daemon never removes what it did not make.
fn bind_at(path: &Path) -> io::Result<UnixListener> {
    use crate::statedir::{Dir, Kind};
    let (dir, name) = Dir::open_parent(path).map_err(io::Error::other)?;
    dir.remove_own(&name, Kind::Socket)?;
    dir.bind_socket(&name)
}

enum Probe {
    Alive,
    /// No answer in time: ask again at the next check.
    Busy,
    Gone,
}

/// Asks the daemon loop for a `Ping`, as a client would.
fn probe<M: From<Incoming>>(to_loop: &Sender<M>) -> Probe {
    let (reply, answer) = mpsc::channel();
    let (written_tx, written) = mpsc::channel();
    let sent = to_loop.send(M::from(Incoming {
        request: Request::Ping,
        reply,
        follow: None,
        written,
    }));
    if sent.is_err() {
        return Probe::Gone;
    }
    match answer.recv_timeout(PROBE_WAIT) {
        Ok(_) => {
            let _ = written_tx.send(());
            Probe::Alive
        }
        Err(RecvTimeoutError::Timeout) => Probe::Busy,
        Err(RecvTimeoutError::Disconnected) => Probe::Gone,
    }
}

/// Pacing of failed accepts: errors of one connection are retried at
/// once; anything else (out of descriptors, of memory) pauses, doubling
/// from [`ACCEPT_BACKOFF`]'s first value to its second, and is logged
/// once per run of failures.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    /// How long to pause after `e`, and what to log (on the first failure
    /// of a run only).
    pub(crate) fn failed(&mut self, e: &io::Error) -> Option<(Duration, Option<String>)> {
        let transient = matches!(
            e.raw_os_error(),
            Some(e) if [Errno::CONNABORTED, Errno::INTR, Errno::AGAIN, Errno::PROTO]
                .contains(&Errno::from_raw_os_error(e))
        ) || matches!(
            e.kind(),
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
        );
        if transient {
            return None;
        }
        self.failures = self.failures.saturating_add(1);
        let (first, max) = ACCEPT_BACKOFF;
        let pause = first
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(max);
        let msg = (self.failures == 1).then(|| {
            format!(
                "cannot accept connections: {e}; retrying every {} ms at most",
                max.as_millis()
            )
        });
        Some((pause, msg))
    }

    /// What to log when accepting works again after failures.
    pub(crate) fn succeeded(&mut self) -> Option<String> {
        let n = std::mem::take(&mut self.failures);
        (n > 0).then(|| format!("accepting connections again after {n} failed attempts"))
    }
}

/// One line in the daemon's log. A log that cannot be written is no
/// reason to stop serving.
fn log(msg: &str) {
    let _ = writeln!(
        io::stderr().lock(),
        "{} marvel-daemon[{}]: {msg}",
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        std::process::id()
    );
}

fn handle<M: From<Incoming>>(
    mut stream: UnixStream,
    own: u32,
    to_loop: Sender<M>,
    limits: &Limits,
    shims_only: Option<usize>,
) {
    let deadline = Instant::now() + limits.request_deadline;
    let result = peer_uid(&stream)
        .map_err(|e| Error::other(format!("cannot identify the peer: {e}")))
        .and_then(|uid| check_peer(uid, own))
        .and_then(|()| read_request(&stream, deadline, limits.request_deadline));
    let request = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = write_line(&mut stream, &Response::Error(e), limits.reply_deadline);
            return;
        }
    };
    if let Some(n) = shims_only
        && !matches!(request, Request::Shim(_))
    {
        let _ = write_line(
            &mut stream,
            &Response::Error(busy(n)),
            limits.reply_deadline,
        );
        return;
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    let (written_tx, written_rx) = mpsc::channel();
    let (follow_tx, follow_rx) = match &request {
        Request::Events { follow: true, .. } => {
            let (tx, rx) = events::follow_channel();
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    let sent = to_loop.send(M::from(Incoming {
        request,
        reply: reply_tx,
        follow: follow_tx,
        written: written_rx,
    }));
    if sent.is_err() {
        let _ = write_line(
            &mut stream,
            &Response::Error(Error::daemon("the daemon is shutting down")),
            limits.reply_deadline,
        );
        return;
    }
    let Ok(resp) = reply_rx.recv() else { return };
    let wrote = write_line(&mut stream, &resp, limits.reply_deadline);
    let _ = written_tx.send(());
    if wrote.is_err() {
        return;
    }
    if let Some(rx) = follow_rx {
        follow(stream, &rx, limits.check_every);
    }
}

/// Streams a follower's queue to its client until either side is gone.
fn follow(mut stream: UnixStream, rx: &FollowRx, check_every: Duration) {
    loop {
        let resp = match rx.recv_timeout(check_every) {
            Ok(Followed::Event(ev)) => Response::Event(ev),
            Ok(Followed::Lagged(dropped)) => Response::Lagged { dropped },
            // With nothing to send, a client that left is noticed here,
            // so its place is freed without waiting for an event.
            Err(RecvTimeoutError::Timeout) if peer_left(&stream) => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if write_line(&mut stream, &resp, EVENT_DEADLINE).is_err() {
            return;
        }
    }
}

/// Whether the client closed its end. A follower sends nothing after its
/// request, so anything readable is either the end or ignored.
fn peer_left(stream: &UnixStream) -> bool {
    let mut fds = [PollFd::new(stream, PollFlags::IN)];
    let zero = Timespec::default();
    if !matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0) {
        return false;
    }
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 512];
    let mut reader = stream;
    let left = match reader.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    };
    left || stream.set_nonblocking(false).is_err()
}

/// Reads one request line, all of it before `deadline`.
fn read_request(
    mut stream: &UnixStream,
    deadline: Instant,
    within: Duration,
) -> Result<Request, Error> {
    let mut line = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero());
        let Some(left) = left else {
            return Err(late(within));
        };
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let end = buf[..n].iter().position(|&b| b == b'\n');
                line.extend_from_slice(&buf[..end.unwrap_or(n)]);
                if line.len() > MAX_REQUEST_BYTES {
                    return Err(Error::usage(format!(
                        "request refused: larger than the limit of {MAX_REQUEST_BYTES} bytes"
                    )));
                }
                if end.is_some() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(late(within));
            }
            Err(e) => return Err(Error::usage(format!("cannot read the request: {e}"))),
        }
    }
    decode(&line)
}

fn late(within: Duration) -> Error {
    Error::usage(format!(
        "the request did not arrive within {} ms; the connection is closed",
        within.as_millis()
    ))
}

/// Writes one answer line, all of it within `within` (zero: only what
/// fits at once, for a socket in non-blocking mode). The JSON goes
/// straight to the socket through a buffer: a listing of thousands of
/// sessions is never held whole in memory a second time.
fn write_line(stream: &mut UnixStream, resp: &Response, within: Duration) -> io::Result<()> {
    let socket = Deadlined {
        stream,
        deadline: Instant::now() + within,
        wait: !within.is_zero(),
    };
    let mut w = io::BufWriter::with_capacity(64 << 10, socket);
    serde_json::to_writer(&mut w, resp).map_err(io::Error::from)?;
    w.write_all(b"\n")?;
    w.flush()
}

/// A socket every write to which ends by one deadline.
struct Deadlined<'a> {
    stream: &'a mut UnixStream,
    deadline: Instant,
    /// Whether writes may wait at all.
    wait: bool,
}

impl Write for Deadlined<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.wait {
            let left = self
                .deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(io::ErrorKind::TimedOut)?;
            self.stream.set_write_timeout(Some(left))?;
        }
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Decodes one request line, checking size and protocol version.
pub fn decode(line: &[u8]) -> Result<Request, Error> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(Error::usage(format!(
            "request of {} bytes refused: the limit is {MAX_REQUEST_BYTES}",
            line.len()
        )));
    }
    let env: Envelope = serde_json::from_slice(line).map_err(|e| {
        // A different protocol often fails to decode: say which we speak.
        let version = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("protocol").and_then(|p| p.as_u64()));
        match version {
            Some(v) if v != PROTOCOL_VERSION as u64 => protocol_error(v),
            _ => Error::usage(format!("malformed request: {e}")),
        }
    })?;
    // A shim's report reads the same in every protocol: panes started by
    // an older marvel keep reporting their deaths to a newer daemon. So
    // does `Stop`: an upgraded marvel's `daemon stop` ends this daemon.
    if env.protocol != PROTOCOL_VERSION && !matches!(env.request, Request::Shim(_) | Request::Stop)
    {
        return Err(protocol_error(env.protocol as u64));
    }
    Ok(env.request)
}

fn protocol_error(v: u64) -> Error {
    Error::refused(
        format!("client speaks protocol {v}, this daemon speaks {PROTOCOL_VERSION}"),
        Some("run `marvel daemon stop` so the next command starts a matching daemon".into()),
    )
}

/// Cases for the fuzz-style property tests: 100 000 by default, more (or
/// fewer) with `MARVEL_FUZZ_CASES`.
#[cfg(test)]
pub(crate) fn fuzz_config() -> proptest::prelude::ProptestConfig {
    let cases = std::env::var("MARVEL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    proptest::prelude::ProptestConfig::with_cases(cases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Event, EventKind};
    use crate::proto::ShimReport;
    use proptest::prelude::*;
    use std::io::{BufRead, BufReader};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    use std::thread::JoinHandle;

    const WAIT: Duration = Duration::from_secs(10);

    /// A server on a temporary socket, with a stand-in for the daemon loop.
    struct Fake {
        _dir: tempfile::TempDir,
        path: PathBuf,
        active: Arc<AtomicUsize>,
        workers: Arc<Workers>,
        stop: Arc<AtomicBool>,
        server: Option<JoinHandle<()>>,
    }

    fn limits() -> Limits {
        Limits {
            check_every: Duration::from_millis(50),
            ..Limits::default()
        }
    }

    fn start(limits: Limits) -> Fake {
        start_with(limits, |l| l.accept().map(|(s, _)| s), answer)
    }

    fn start_with<A>(
        limits: Limits,
        accept: A,
        mut answer: impl FnMut(Incoming) + Send + 'static,
    ) -> Fake
    where
        A: FnMut(&UnixListener) -> io::Result<UnixStream> + Send + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marvel.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel::<Incoming>();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            loop {
                match rx.recv_timeout(Duration::from_millis(10)) {
                    Ok(inc) => answer(inc),
                    Err(RecvTimeoutError::Timeout) if stopped.load(Ordering::SeqCst) => return,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        });
        let active = Arc::new(AtomicUsize::new(0));
        let counted = active.clone();
        let at = Some(path.clone());
        let workers: Arc<Workers> = Arc::default();
        let threads = Arc::clone(&workers);
        let server = std::thread::spawn(move || {
            run_server(listener, at, tx, limits, accept, counted, threads)
        });
        Fake {
            _dir: dir,
            path,
            active,
            workers,
            stop,
            server: Some(server),
        }
    }

    impl Fake {
        /// Stops the stand-in loop and removes the socket, as a stopping
        /// daemon does; true when the server then ends by itself.
        fn shut_down(&mut self) -> bool {
            self.stop.store(true, Ordering::SeqCst);
            let _ = std::fs::remove_file(&self.path);
            let server = self.server.take().unwrap();
            wait_for(|| server.is_finished())
        }

        fn wait_active(&self, n: usize) {
            assert!(
                wait_for(|| self.active.load(Ordering::SeqCst) == n),
                "{} connections served, expected {n}",
                self.active.load(Ordering::SeqCst)
            );
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            if self.server.is_some() {
                self.shut_down();
            }
        }
    }

    fn wait_for(mut ok: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn answer(inc: Incoming) {
        let resp = match inc.request {
            Request::Ping => Response::Pong {
                version: "test".into(),
                protocol: PROTOCOL_VERSION,
                pid: 1,
            },
            Request::Shim(_) => Response::Done("recorded".into()),
            _ => Response::Done("ok".into()),
        };
        let _ = inc.reply.send(resp);
    }

    fn request_line(request: Request) -> Vec<u8> {
        let mut line = serde_json::to_vec(&Envelope {
            protocol: PROTOCOL_VERSION,
            request,
        })
        .unwrap();
        line.push(b'\n');
        line
    }

    fn shim_report() -> Request {
        Request::Shim(ShimReport::Exited {
            uid: 7,
            code: Some(1),
            signal: None,
            at: Utc::now(),
            hangup: false,
            failure: None,
            rerun: false,
            run_in_answer: false,
        })
    }

    fn read_answer(s: &UnixStream) -> Response {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("an answer");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn ask(path: &Path, request: Request) -> Response {
        let mut s = UnixStream::connect(path).expect("connect");
        s.write_all(&request_line(request)).unwrap();
        read_answer(&s)
    }

    /// Whether the daemon answers a ping at `path` within a moment.
    fn ask_answers(path: &Path) -> bool {
        let Ok(mut s) = UnixStream::connect(path) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        if s.write_all(&request_line(Request::Ping)).is_err() {
            return false;
        }
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).is_ok_and(|n| n > 0)
    }

    fn error_text(resp: Response) -> (String, i32) {
        match resp {
            Response::Error(e) => (e.to_string(), e.code()),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn a_trickling_client_is_cut_at_the_request_deadline() {
        let fake = start(Limits {
            request_deadline: Duration::from_millis(500),
            ..limits()
        });
        let s = UnixStream::connect(&fake.path).unwrap();
        let mut w = s.try_clone().unwrap();
        let started = Instant::now();
        // One byte every 50 ms: each read succeeds long before any
        // per-read timeout, and the request never ends.
        std::thread::spawn(move || {
            for b in br#"{"protocol":3,"request":"Ping"           "#.iter().cycle() {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let (text, code) = error_text(read_answer(&s));
        let took = started.elapsed();
        assert_eq!(
            text,
            "error: the request did not arrive within 500 ms; the connection is closed"
        );
        assert_eq!(code, crate::error::exit::USAGE);
        assert!(took >= Duration::from_millis(450), "{took:?}");
        fake.wait_active(0);
    }

    #[test]
    fn over_the_cap_clients_are_told_the_daemon_is_busy_and_shims_still_get_through() {
        let fake = start(Limits {
            connections: 3,
            shim_reserve: 2,
            ..limits()
        });
        let idle: Vec<UnixStream> = (0..3)
            .map(|_| UnixStream::connect(&fake.path).unwrap())
            .collect();
        fake.wait_active(3);
        // In the shims' reserve: a client is refused, a shim is served.
        let (text, code) = error_text(ask(&fake.path, Request::Ping));
        assert_eq!(
            text,
            "error: daemon unavailable: the daemon is busy (3 connections); try again"
        );
        assert_eq!(code, crate::error::exit::DAEMON_UNAVAILABLE);
        assert!(matches!(ask(&fake.path, shim_report()), Response::Done(m) if m == "recorded"));
        // With the reserve taken too, even a shim is turned away at once.
        fake.wait_active(3);
        let reserve: Vec<UnixStream> = (0..2)
            .map(|_| UnixStream::connect(&fake.path).unwrap())
            .collect();
        fake.wait_active(5);
        let (text, _) = error_text(ask(&fake.path, shim_report()));
        assert!(
            text.contains("the daemon is busy (5 connections)"),
            "{text}"
        );
        // Places come back as connections end.
        drop(idle);
        drop(reserve);
        fake.wait_active(0);
        assert!(matches!(
            ask(&fake.path, Request::Ping),
            Response::Pong { .. }
        ));
    }

    /// Connections that come one after another are served by the thread
    /// that served the first, and connections at once by a thread each.
    #[test]
    fn a_thread_that_served_a_connection_serves_the_next() {
        let fake = start(limits());
        for _ in 0..20 {
            assert!(matches!(ask(&fake.path, shim_report()), Response::Done(_)));
            // The thread is back on the list once the answer is out.
            assert!(wait_for(|| !fake.workers.lock().is_empty()));
        }
        assert_eq!(
            fake.workers.ids.load(Ordering::SeqCst),
            1,
            "threads started"
        );
        // Two held open at once: one more thread.
        let held: Vec<UnixStream> = (0..2)
            .map(|_| UnixStream::connect(&fake.path).unwrap())
            .collect();
        fake.wait_active(2);
        assert_eq!(
            fake.workers.ids.load(Ordering::SeqCst),
            2,
            "threads started"
        );
        drop(held);
        // Both back on the list once their connections are over.
        assert!(wait_for(|| fake.workers.lock().len() == 2));
        assert!(matches!(
            ask(&fake.path, Request::Ping),
            Response::Pong { .. }
        ));
        assert_eq!(
            fake.workers.ids.load(Ordering::SeqCst),
            2,
            "threads started"
        );
    }

    #[test]
    fn a_client_turned_away_before_sending_still_reads_the_answer() {
        let fake = start(Limits {
            connections: 1,
            shim_reserve: 0,
            ..limits()
        });
        let _held = UnixStream::connect(&fake.path).unwrap();
        fake.wait_active(1);
        let mut s = UnixStream::connect(&fake.path).unwrap();
        // Give the server every chance to answer and close first.
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(&request_line(Request::Ping))
            .expect("the connection is still open");
        let (text, _) = error_text(read_answer(&s));
        assert!(text.contains("busy (1 connections)"), "{text}");
    }

    #[test]
    fn accept_errors_back_off_instead_of_spinning() {
        let calls = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(true));
        let (c, f) = (calls.clone(), failing.clone());
        let fake = start_with(
            limits(),
            move |l: &UnixListener| {
                c.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    Err(io::Error::from(Errno::MFILE))
                } else {
                    l.accept().map(|(s, _)| s)
                }
            },
            answer,
        );
        // A pending connection keeps the listener readable throughout.
        let mut s = UnixStream::connect(&fake.path).unwrap();
        s.write_all(&request_line(Request::Ping)).unwrap();
        let window = Duration::from_millis(600);
        std::thread::sleep(window);
        let n = calls.load(Ordering::SeqCst);
        // 10, 20, 40, 80, 160, 320 ms pauses: 7 attempts; a busy loop
        // makes millions.
        assert!((2..=12).contains(&n), "{n} accept attempts in {window:?}");
        failing.store(false, Ordering::SeqCst);
        assert!(matches!(read_answer(&s), Response::Pong { .. }));
    }

    #[test]
    fn accept_backoff_doubles_to_its_cap_and_logs_once_per_run() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::from(Errno::MFILE);
        let pauses: Vec<u128> = (0..10)
            .map(|i| {
                let (pause, msg) = b.failed(&emfile).unwrap();
                assert_eq!(msg.is_some(), i == 0);
                pause.as_millis()
            })
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(
            b.succeeded().as_deref(),
            Some("accepting connections again after 10 failed attempts")
        );
        assert_eq!(b.succeeded(), None);
        let (pause, msg) = b.failed(&io::Error::from(Errno::NFILE)).unwrap();
        assert_eq!(pause, Duration::from_millis(10));
        assert!(msg.unwrap().starts_with("cannot accept connections: "));
        // One connection's trouble is retried at once, unlogged.
        assert!(b.failed(&io::Error::from(Errno::CONNABORTED)).is_none());
        assert!(b.failed(&io::ErrorKind::Interrupted.into()).is_none());
    }

    #[test]
    fn a_deleted_or_replaced_socket_is_bound_again() {
        let fake = start(limits());
        assert!(matches!(
            ask(&fake.path, Request::Ping),
            Response::Pong { .. }
        ));
        std::fs::remove_file(&fake.path).unwrap();
        assert!(
            wait_for(|| UnixStream::connect(&fake.path).is_ok()),
            "the socket came back"
        );
        assert!(matches!(
            ask(&fake.path, Request::Ping),
            Response::Pong { .. }
        ));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&fake.path).unwrap().permissions(),
        ) & 0o777;
        assert_eq!(mode, 0o600);
        // Replaced by another socket: the daemon's comes back in its place.
        std::fs::remove_file(&fake.path).unwrap();
        let other = UnixListener::bind(&fake.path).unwrap();
        assert!(
            wait_for(|| ask_answers(&fake.path)),
            "the daemon's socket replaced the other one"
        );
        drop(other);
        assert!(matches!(
            ask(&fake.path, Request::Ping),
            Response::Pong { .. }
        ));
    }

    #[test]
    fn a_stopping_daemon_does_not_get_its_socket_back() {
        let mut fake = start(limits());
        assert!(matches!(
            ask(&fake.path, Request::Ping),
            Response::Pong { .. }
        ));
        assert!(fake.shut_down(), "the server ends with the daemon loop");
        assert!(!fake.path.exists());
    }

    #[test]
    fn a_follower_that_falls_behind_is_told_how_many_events_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Mutex::new(events::tests::EventLog::open(
            dir.path().join("e.jsonl"),
        )));
        let shared = log.clone();
        let fake = start_with(
            limits(),
            |l: &UnixListener| l.accept().map(|(s, _)| s),
            move |inc: Incoming| {
                if let (Request::Events { filter, .. }, Some(tx)) = (&inc.request, inc.follow) {
                    shared.lock().unwrap().follow(filter.clone(), tx);
                }
                let _ = inc.reply.send(Response::Events(Vec::new()));
            },
        );
        let push = |n: usize| {
            let mut log = log.lock().unwrap();
            for _ in 0..n {
                log.push(Event::new(Utc::now(), EventKind::Created, "a/b/c-0", "m"));
            }
        };
        let mut s = UnixStream::connect(&fake.path).unwrap();
        s.write_all(&request_line(Request::Events {
            filter: Default::default(),
            follow: true,
        }))
        .unwrap();
        assert!(matches!(read_answer(&s), Response::Events(e) if e.is_empty()));
        // The client reads nothing while the daemon records 5 000 events:
        // more than its queue and the socket's buffer hold (about 2 500),
        // and few enough to be recorded well within the time a follower
        // has to take a line before it is cut off, on a loaded machine too.
        push(5_000);
        let (tx, lines) = mpsc::channel();
        let reader = s.try_clone().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                let resp: Response = serde_json::from_str(&line).unwrap();
                if tx.send(resp).is_err() {
                    return;
                }
            }
        });
        let mut last = 0;
        let dropped = loop {
            // Events keep coming, so the notice has a next event to precede.
            push(1);
            match lines.recv_timeout(WAIT).expect("a line") {
                Response::Event(e) => {
                    assert_eq!(e.seq, last + 1, "no gap before the notice");
                    last = e.seq;
                }
                Response::Lagged { dropped } => break dropped,
                other => panic!("{other:?}"),
            }
        };
        assert!(dropped > 1_000, "{dropped} dropped after event {last}");
        // More may be lost while the reader catches up: each notice says how
        // many, and together they account for every gap.
        let mut dropped = dropped;
        loop {
            push(1);
            match lines.recv_timeout(WAIT).expect("a line") {
                Response::Lagged { dropped: more } => dropped += more,
                Response::Event(e) => {
                    assert_eq!(e.seq, last + dropped + 1, "exactly those were lost");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_follower_that_hangs_up_frees_its_place_without_an_event() {
        let fake = start_with(
            limits(),
            |l: &UnixListener| l.accept().map(|(s, _)| s),
            |inc: Incoming| {
                // The daemon's end stays open: only the hang-up can end it.
                std::mem::forget(inc.follow);
                let _ = inc.reply.send(Response::Events(Vec::new()));
            },
        );
        let mut s = UnixStream::connect(&fake.path).unwrap();
        s.write_all(&request_line(Request::Events {
            filter: Default::default(),
            follow: true,
        }))
        .unwrap();
        assert!(matches!(read_answer(&s), Response::Events(_)));
        fake.wait_active(1);
        drop(s);
        fake.wait_active(0);
    }

    /// Valid request lines to mutate.
    static SEEDS: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(seeds);

    fn seeds() -> Vec<Vec<u8>> {
        let reqs = [
            Request::Ping,
            Request::Status,
            Request::Kill { key: "w-0".into() },
            Request::Scale {
                key: "squad/w".into(),
                replicas: 3,
            },
            Request::Inject {
                key: "w-0".into(),
                text: "hello".into(),
                enter: true,
                keys: false,
                when_idle_ms: None,
            },
            Request::Events {
                filter: Default::default(),
                follow: false,
            },
        ];
        reqs.into_iter()
            .map(|request| {
                serde_json::to_vec(&Envelope {
                    protocol: PROTOCOL_VERSION,
                    request,
                })
                .unwrap()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(fuzz_config())]

        #[test]
        fn random_bytes_are_refused_with_an_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let e = decode(&bytes).unwrap_err();
            prop_assert!(e.to_string().starts_with("error: "));
        }

        #[test]
        fn mutated_requests_decode_or_are_refused_cleanly(
            seed in 0..6usize,
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..8),
        ) {
            let mut line = SEEDS[seed].clone();
            for (at, byte, op) in edits {
                let at = at % (line.len() + 1);
                match op {
                    0 => line.insert(at, byte),
                    1 if at < line.len() => { line.remove(at); }
                    _ if at < line.len() => line[at] = byte,
                    _ => {}
                }
            }
            if let Err(e) = decode(&line) {
                let shown = e.to_string();
                prop_assert!(
                    shown.starts_with("error: malformed request")
                        || shown.contains("speaks protocol"),
                    "{}", shown
                );
            }
        }
    }

    #[test]
    fn another_uid_is_refused() {
        assert!(check_peer(1000, 1000).is_ok());
        let e = check_peer(1001, 1000).unwrap_err();
        assert_eq!(e.code(), crate::error::exit::REFUSED);
        assert_eq!(
            e.to_string(),
            "error: connection from uid 1001 refused: this daemon serves uid 1000 only"
        );
    }

    /// A big answer arrives whole, as one line, though it is written in
    /// pieces as it is encoded; a reader that takes nothing makes the write
    /// give up at its deadline.
    #[test]
    fn a_big_answer_goes_to_the_socket_whole_or_not_past_its_deadline() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let text: String = (0..200_000).map(|i| format!("{i} ")).collect();
        let resp = Response::Text(text.clone());
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            io::BufReader::new(b).read_line(&mut line).unwrap();
            line
        });
        write_line(&mut a, &resp, Duration::from_secs(10)).unwrap();
        let line = reader.join().unwrap();
        assert!(line.ends_with('\n'));
        match serde_json::from_str(&line).unwrap() {
            Response::Text(t) => assert!(t == text, "the text differs"),
            other => panic!("{other:?}"),
        }
        let (mut a, _b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let e = write_line(&mut a, &resp, Duration::from_millis(200)).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{e}"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_ourselves() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), rustix::process::geteuid().as_raw());
    }

    /// An upgrade replaces the binary under running panes: their shims'
    /// reports must still reach the new daemon.
    #[test]
    fn a_shims_report_is_heard_whatever_protocol_it_speaks() {
        let old = br#"{"protocol":2,"request":{"Shim":{"Exited":{"uid":7,"code":3,"signal":null,"at":"2026-01-01T00:00:00Z","hangup":false}}}}"#;
        assert!(matches!(decode(old), Ok(Request::Shim(_))));
        let ping = br#"{"protocol":2,"request":"Ping"}"#;
        assert!(decode(ping).unwrap_err().to_string().contains("protocol 2"));
    }

    #[test]
    fn bad_requests_get_errors_not_panics() {
        assert!(
            decode(b"garbage")
                .unwrap_err()
                .to_string()
                .starts_with("error: malformed request")
        );
        let wrong = br#"{"protocol":99,"request":"Ping"}"#;
        assert!(
            decode(wrong)
                .unwrap_err()
                .to_string()
                .contains("protocol 99")
        );
        let big = vec![b'x'; MAX_REQUEST_BYTES + 1];
        assert!(decode(&big).unwrap_err().to_string().contains("refused"));
        let ok = format!(r#"{{"protocol":{PROTOCOL_VERSION},"request":"Ping"}}"#);
        assert!(matches!(decode(ok.as_bytes()), Ok(Request::Ping)));
        // The way out of a mismatch works across it.
        let stop = br#"{"protocol":99,"request":"Stop"}"#;
        assert!(matches!(decode(stop), Ok(Request::Stop)));
    }
}
