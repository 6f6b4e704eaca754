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

/// Everything needed to start one session in its own tmux session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    /// tmux session name, `marvel/<workspace>/<team>/<role>-<slot>`.
    pub name: String,
    /// The argv run in the pane (the shim followed by the user's command).
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// Where the pane's output is appended (bounded by the log pipe).
    pub log: Option<PathBuf>,
    /// Ownership tag stored on the tmux session (`@marvel` option), so that
    /// marvel only ever touches sessions it created from this state dir.
    pub owner: String,
}

/// A freshly created pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    /// tmux pane id, such as `%12`.
    pub pane: String,
    /// pid of the pane's first process (the shim).
    pub pane_pid: u32,
}

/// One pane as listed by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaneInfo {
    pub session_name: String,
    pub pane: String,
    pub pane_pid: u32,
    /// The `@marvel` owner tag of its session, empty if none.
    pub owner: String,
    pub dead: bool,
    pub dead_status: Option<i32>,
    pub dead_signal: Option<i32>,
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

/// The operations the daemon needs from a terminal multiplexer.
pub trait Substrate: Send {
    /// The server's version string (`tmux -V`), checking the binary runs.
    fn version(&self) -> SubResult<String>;
    /// Starts the server if needed and creates one session with one pane
    /// running `req.argv`.
    fn spawn(&self, req: &SpawnRequest) -> SubResult<Spawned>;
    /// Creates several sessions, in as few tmux processes as possible.
    /// Results are in request order.
    fn spawn_many(&self, reqs: &[SpawnRequest]) -> Vec<SubResult<Spawned>> {
        reqs.iter().map(|r| self.spawn(r)).collect()
    }
    /// Destroys the tmux session that holds `pane`. Absent is success.
    fn kill(&self, pane: &str) -> SubResult<()>;
    /// Lists every pane of the server with one tmux process.
    fn list(&self) -> SubResult<Observation>;
    /// The pane's visible text plus up to `history` lines of scrollback.
    fn capture(&self, pane: &str, history: u32) -> SubResult<String>;
    /// Types `text` literally into the pane, then Enter if asked.
    fn send_text(&self, pane: &str, text: &str, enter: bool) -> SubResult<()>;
    /// Sends tmux key names (`C-c`, `Enter`, `Up`) to the pane.
    fn send_keys(&self, pane: &str, keys: &[String]) -> SubResult<()>;
    /// The argv that attaches the caller's terminal to session
    /// `session_name` (`tmux attach-session`).
    fn attach_argv(&self, session_name: &str) -> Vec<String>;
    /// The argv for a caller that is already a client of this server (its
    /// `$TMUX` names the same socket): switches that client to the session
    /// instead of nesting a second client. Only the caller can tell which
    /// one applies, since the daemon does not see the caller's environment.
    fn switch_argv(&self, session_name: &str) -> Vec<String>;
    /// Whether a client whose `$TMUX` is `tmux_env` runs on this server.
    fn is_client_of(&self, _tmux_env: Option<&str>) -> bool {
        false
    }
}
