//! The substrate: where sessions physically run. The daemon talks to it only
//! through [`Substrate`]; `tmux` is the real one, `fake` serves unit tests.
//! Every call is bounded in time, and a failed query is never taken as a
//! death: only [`Observation::NoServer`] or a pane missing from a successful
//! listing is.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub mod fake;
pub mod tmux;
pub mod watch;

/// Where a new pane goes. Every team has one tmux session; each of its
/// marvel sessions has a window (or, in a tiled role, a pane of the role's
/// window), and a restart runs again in the same pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The team's tmux session does not exist yet: make it, with this pane
    /// in its first window. `status_left` is shown in its status line.
    NewSession {
        session: String,
        team: String,
        status_left: String,
    },
    /// A new window of the team's session, after window `after` if given,
    /// else at the end.
    NewWindow {
        session: String,
        after: Option<WindowRef>,
    },
    /// A new pane in window `window` (an id): a successor beside its
    /// predecessor, or another session of a tiled role. It becomes the
    /// window's active pane.
    Split { window: String, tiled: bool },
    /// Again in pane `pane`: after a crash (the pane is dead and shows its
    /// last screen), or in place of a program stopped to be replaced.
    Respawn { pane: String },
}

/// A window to place another after: one that exists (its id), or one made
/// earlier in the same series of placements (its name in the session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowRef {
    Id(String),
    Name(String),
}

/// Everything needed to start one session's program in a pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    pub place: Place,
    /// The window's name: the session's (`worker-0`), or the role's in a
    /// tiled role. Also how a new window is found in the same tmux call.
    pub window_name: String,
    /// The session key and spawn uid, kept on the pane (`@marvel-key`,
    /// `@marvel-uid`) so the pane is recognised after a daemon restart.
    pub key: String,
    pub uid: u64,
    /// The argv run in the pane (the shim followed by the user's command).
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// Where the pane's output is appended (bounded by the log pipe).
    pub log: Option<PathBuf>,
    /// Whom the log pipe tells when output starts and stops.
    pub reports: Option<LogReports>,
    /// Ownership tag stored on the pane (`@marvel` option), so that marvel
    /// only ever touches panes it created from this state directory.
    pub owner: String,
    /// What the window's status shows while the program starts.
    pub status: String,
}

/// The log pipe tells the daemon of `state_dir` when the pane's output
/// starts, and when it has stopped for `quiet` (never per byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReports {
    pub state_dir: PathBuf,
    pub quiet: Duration,
}

/// A freshly created (or respawned) pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    /// tmux pane id, such as `%12`.
    pub pane: String,
    /// pid of the pane's first process (the shim).
    pub pane_pid: u32,
    /// tmux window id, such as `@3`.
    pub window: String,
    /// pid of the tmux server, the shim's parent.
    pub server_pid: Option<u32>,
}

/// One pane as listed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaneInfo {
    pub session_name: String,
    pub pane: String,
    pub pane_pid: u32,
    pub window: String,
    /// The `@marvel` owner tag of the pane (or, for panes made by older
    /// versions, of their session), empty if none.
    pub owner: String,
    /// The session key and spawn uid marvel kept on the pane, if any.
    pub key: Option<String>,
    pub uid: Option<u64>,
    /// The team key of the tmux session, if marvel made it for a team.
    pub team: Option<String>,
    pub dead: bool,
    pub dead_status: Option<i32>,
    pub dead_signal: Option<i32>,
    /// The tmux server's pid.
    pub server_pid: Option<u32>,
}

/// What a window's status says (`@marvel-status`), shown in the status
/// line next to the window's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoration {
    pub window: String,
    pub status: String,
}

/// The result of a successful look at the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The server answered with these panes (all of them, any owner).
    Panes(Vec<PaneInfo>),
    /// No server is running on the socket: every pane is gone.
    NoServer,
}

/// Why a substrate call failed. A failure says nothing about liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubstrateError {
    /// The tmux binary cannot be run (not on PATH, not executable).
    Missing(String),
    /// The call did not finish within its deadline.
    Timeout(Duration),
    /// No server is running (for calls that need one).
    NoServer(String),
    /// tmux could not be talked to: the connection to the server broke,
    /// or the client process failed in a way that says nothing about the
    /// command. Like a timeout, this is tmux's trouble, not the request's.
    Unreachable(String),
    /// tmux answered and refused this command; the text keeps tmux's
    /// stderr. Says nothing about tmux's health.
    Refused(String),
}

impl std::fmt::Display for SubstrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubstrateError::Missing(m) => write!(f, "tmux cannot be run: {m}"),
            SubstrateError::Timeout(d) => {
                write!(f, "tmux did not answer within {} ms", d.as_millis())
            }
            SubstrateError::NoServer(m) => write!(f, "no tmux server: {m}"),
            SubstrateError::Unreachable(m) => write!(f, "tmux unreachable: {m}"),
            SubstrateError::Refused(m) => write!(f, "tmux failed: {m}"),
        }
    }
}

pub type SubResult<T> = Result<T, SubstrateError>;

/// What a watch on the server reports (see [`Substrate::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The watch runs: from now on tmux wakes the daemon when a pane of
    /// its dies or goes.
    Watching,
    /// A pane's program died, a pane was killed or a window closed:
    /// something may have ended, and a listing tells what.
    Changed,
    /// The watch ended: the server went away, the waiting client was
    /// killed, tmux cannot be run.
    Ended(SubstrateError),
}

/// Called with each notice of a watch, on the watch's own thread.
pub type Notify = Box<dyn FnMut(Notice) + Send>;

/// The operations the daemon needs from a terminal multiplexer.
pub trait Substrate: Send {
    /// The server's version string (`tmux -V`), checking the binary runs.
    fn version(&self) -> SubResult<String>;
    /// Starts the server if needed and creates (or respawns) one pane
    /// running `req.argv` where `req.place` says.
    fn spawn(&self, req: &SpawnRequest) -> SubResult<Spawned>;
    /// Several spawns, in as few tmux processes as possible. Results are in
    /// request order.
    fn spawn_many(&self, reqs: &[SpawnRequest]) -> Vec<SubResult<Spawned>> {
        reqs.iter().map(|r| self.spawn(r)).collect()
    }
    /// Destroys `pane` (its window goes with its last pane, the session
    /// with its last window). Absent is success.
    fn kill(&self, pane: &str) -> SubResult<()>;
    /// Lists every pane of the server with one tmux process.
    fn list(&self) -> SubResult<Observation>;
    /// The pane's visible text plus up to `history` lines of scrollback.
    fn capture(&self, pane: &str, history: u32) -> SubResult<String>;
    /// Types `text` literally into the pane, then Enter if asked.
    fn send_text(&self, pane: &str, text: &str, enter: bool) -> SubResult<()>;
    /// Sends tmux key names (`C-c`, `Enter`, `Up`) to the pane.
    fn send_keys(&self, pane: &str, keys: &[String]) -> SubResult<()>;
    /// Pastes `text` into the pane in one piece (bracketed, if the program
    /// asked for bracketed paste), through a buffer of its own that is
    /// deleted afterwards; then Enter if asked.
    fn paste(&self, pane: &str, text: &str, enter: bool) -> SubResult<()>;
    /// Sets what windows' statuses say, in one call. Windows that are gone
    /// are skipped.
    fn decorate(&self, decorations: &[Decoration]) -> SubResult<()>;
    /// Starts watching server `server_pid` on a thread of its own: the
    /// hooks on `owner`'s panes and team sessions wake it, and `notify`
    /// hears of each wake-up, until the watch ends (it says so, and does
    /// not start again by itself). `kick` paces the look for new pane
    /// processes, whose ends are watched so that the server is nudged to
    /// reap one whose end it missed. A substrate that cannot be watched
    /// says so here.
    /// The server has new panes (a spawn), whose first processes are
    /// `pids`: a watch that watches the panes' processes watches these, and
    /// looks for others now.
    fn panes_changed(&self, pids: &[u32]) {
        let _ = pids;
    }

    fn watch(&self, owner: &str, server_pid: u32, kick: Duration, notify: Notify) -> SubResult<()> {
        let _ = (owner, server_pid, kick, notify);
        Err(SubstrateError::Refused(
            "this substrate cannot be watched".into(),
        ))
    }
}
