//! What `get`, `describe`, `events` and `status` return: plain records whose
//! JSON field names are a public contract (README, "JSON output"). More
//! fields may be added; none may be renamed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitView {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at: DateTime<Utc>,
    /// Plain words: `exit 1`, `signal 9 (SIGKILL)`, `pane killed`, ...
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub key: String,
    pub workspace: String,
    pub team: String,
    pub role: String,
    pub slot: u32,
    /// `pending`, `running`, `crashed`, `succeeded`.
    pub state: String,
    pub pane: Option<String>,
    /// pid of the role's program itself (not of marvel's shim).
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_restart_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub exit: Option<ExitView>,
    /// The role's state (`ready`, `backoff`, `frozen`, ...).
    pub role_state: String,
    pub next_restart_at: Option<DateTime<Utc>>,
    pub frozen_reason: Option<String>,
    /// Last lines the program printed (crashed markers only).
    pub last_output: Vec<String>,
    /// tmux session name, for people who use tmux directly.
    pub tmux_session: Option<String>,
    /// Unique id of this spawn (`MARVEL_SESSION_UID` in its pane). While a
    /// session is replaced, its successor has the same key and a new uid.
    #[serde(default)]
    pub uid: u64,
    /// `unknown`, `healthy` or `unhealthy` for a live session of a role
    /// with a heartbeat check; null otherwise.
    #[serde(default)]
    pub health: Option<String>,
    #[serde(default)]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// What the last heartbeat reported.
    #[serde(default)]
    pub context_pct: Option<u8>,
    #[serde(default)]
    pub heartbeat_note: Option<String>,
    /// Due to be replaced (an older template, or from before a running
    /// shift): it keeps running until its successor is ready.
    #[serde(default)]
    pub outdated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleView {
    pub key: String,
    pub workspace: String,
    pub team: String,
    pub role: String,
    pub desired: u32,
    pub running: u32,
    /// `ready`, `progressing`, `backoff`, `frozen`, `succeeded`.
    pub state: String,
    pub restarts: u32,
    pub last_restart_at: Option<DateTime<Utc>>,
    pub crashes_in_window: u32,
    pub max_restarts: Option<u32>,
    pub window_ms: u64,
    pub next_restart_at: Option<DateTime<Utc>>,
    pub frozen_reason: Option<String>,
    pub frozen_at: Option<DateTime<Utc>>,
    pub last_exit: Option<ExitView>,
    pub command: Vec<String>,
    pub restart: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamView {
    pub key: String,
    pub workspace: String,
    pub team: String,
    pub roles: u32,
    pub desired: u32,
    pub running: u32,
    /// `ready`, `progressing`, `degraded` (a role in backoff or frozen).
    pub state: String,
    pub applied_at: DateTime<Utc>,
    /// The running or last finished shift; null if there never was one.
    #[serde(default)]
    pub shift: Option<ShiftView>,
}

/// A rolling shift of a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftView {
    pub id: u64,
    /// `running`, `completed`, `failed` or `aborted`.
    pub state: String,
    /// The roles it replaces, in order.
    pub roles: Vec<String>,
    /// The role being replaced now (while running).
    pub role: Option<String>,
    pub replaced: u32,
    pub total: u32,
    pub started_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it failed or was aborted.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// `created`, `started`, `crashed`, `backoff`, `frozen`, `reset`,
    /// `forgiven`, `succeeded`, `stopped`, `applied`, `tmux-down`, ...
    pub kind: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonView {
    pub pid: u32,
    pub version: String,
    pub protocol: u32,
    pub started_at: DateTime<Utc>,
    pub state_dir: String,
    pub socket: String,
    pub sessions: u32,
    pub teams: u32,
    /// Why the state file cannot be written (a full disk), while it cannot:
    /// the daemon supervises from memory meanwhile.
    #[serde(default)]
    pub persist_error: Option<String>,
    /// Since when the state file cannot be written.
    #[serde(default)]
    pub persist_failing_since: Option<DateTime<Utc>>,
    /// Why the event log cannot be written, while it cannot (events are
    /// kept in memory meanwhile).
    #[serde(default)]
    pub event_log_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmuxView {
    /// `up`, `degraded` (the server does not answer in time), `down` or
    /// `unknown` (not asked yet).
    pub state: String,
    pub version: Option<String>,
    /// `-L` socket name in use, or null for the default server.
    pub socket: Option<String>,
    pub last_error: Option<String>,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub daemon: DaemonView,
    pub tmux: TmuxView,
}
