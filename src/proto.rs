//! The wire protocol between clients (the CLI, the pane shims) and the
//! daemon: one JSON object per line over the daemon's Unix socket. The same
//! types encode on the client and decode on the daemon.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::health::{ContextPct, Note};
use crate::domain::spec::TeamSpec;
use crate::error::Error;
use crate::view::{EventView, RoleView, SessionView, ShiftView, StatusView, TeamView};

/// Bumped on any incompatible change; client and daemon must agree.
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest request line the daemon reads, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// What every request line carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub protocol: u32,
    pub request: Request,
}

/// Which resources `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Sessions,
    Roles,
    Teams,
}

/// Narrows a listing to a workspace and/or team (names, not keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub workspace: Option<String>,
    pub team: Option<String>,
}

/// Narrows `events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only events whose key is this key or lies under it (suffix allowed).
    pub key: Option<String>,
    /// Only events of these kinds (`crashed`, `frozen`, ...); empty = all.
    pub kinds: Vec<String>,
    /// At most this many of the most recent events before following.
    pub limit: Option<usize>,
}

/// What a pane's shim tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShimReport {
    /// The user's program is running as `pid`.
    Started {
        uid: u64,
        pid: u32,
        at: DateTime<Utc>,
    },
    /// The user's program ended. `hangup` is set when the shim itself got
    /// SIGHUP (its terminal went away: the pane or the server was killed).
    Exited {
        uid: u64,
        code: Option<i32>,
        signal: Option<i32>,
        at: DateTime<Utc>,
        hangup: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Is the daemon there, and which version is it?
    Ping,
    /// Apply a validated team; answered with one line per role.
    Apply {
        team: TeamSpec,
    },
    Get {
        kind: Kind,
        filter: Filter,
    },
    Describe {
        kind: Kind,
        key: String,
    },
    Inject {
        key: String,
        text: String,
        enter: bool,
        /// Send `text` as space-separated tmux key names instead of literally.
        keys: bool,
    },
    Capture {
        key: String,
    },
    Logs {
        key: String,
        lines: usize,
    },
    Reset {
        key: String,
    },
    Scale {
        key: String,
        replicas: u32,
    },
    Kill {
        key: String,
    },
    Delete {
        key: String,
    },
    /// Resolve a session for `attach`: answered with the tmux argv to run.
    /// `tmux_client` is the caller's `$TMUX`, if it runs inside tmux.
    Attach {
        key: String,
        tmux_client: Option<String>,
    },
    /// The event log; with `follow`, the connection stays open and each new
    /// event arrives as its own [`Response::Event`] line.
    Events {
        filter: EventFilter,
        follow: bool,
    },
    Status,
    /// Stop the daemon; panes keep running.
    Stop,
    /// From a pane's shim.
    Shim(ShimReport),
    /// From a program in a pane (`marvel heartbeat`): it is alive.
    /// `uid` tells it apart from a session replacing it under the same key.
    /// Its values are checked as they are decoded, like an applied team.
    Heartbeat {
        session: String,
        uid: Option<u64>,
        context_pct: Option<ContextPct>,
        note: Option<Note>,
    },
    /// Start a rolling shift of a team, or of one of its roles.
    Shift {
        team: String,
        role: Option<String>,
        timeout_ms: u64,
    },
    /// Stop a team's running shift where it is.
    AbortShift {
        team: String,
    },
}

/// One line of what `apply` did to a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleChangeView {
    pub key: String,
    /// `created`, `unchanged`, `scaled`, `replaced`, `removed`.
    pub change: String,
    pub detail: String,
    /// Set when the role is frozen and will not spawn.
    pub frozen_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Pong {
        version: String,
        protocol: u32,
        pid: u32,
    },
    Applied {
        team: String,
        roles: Vec<RoleChangeView>,
    },
    Sessions(Vec<SessionView>),
    Roles(Vec<RoleView>),
    Teams(Vec<TeamView>),
    /// `describe`: a human text block plus the structured record.
    Described {
        text: String,
        json: serde_json::Value,
    },
    Text(String),
    Event(EventView),
    Events(Vec<EventView>),
    Status(StatusView),
    AttachArgv(Vec<String>),
    /// A team's shift, as it stands after the request.
    Shift {
        team: String,
        shift: ShiftView,
    },
    /// A plain acknowledgement with a one-line message.
    Done(String),
    Error(Error),
}
