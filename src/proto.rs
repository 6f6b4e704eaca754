//! The wire protocol between clients (the CLI, the pane shims) and the
//! daemon: one JSON object per line over the daemon's Unix socket. The same
//! types encode on the client and decode on the daemon.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::event::EventKind;
use crate::domain::spec::TeamSpec;
use crate::error::Error;
use crate::view::{
    DescribeView, EventView, RoleView, SessionView, ShiftView, StatusView, TeamView,
};

/// Bumped on any incompatible change; client and daemon must agree.
pub const PROTOCOL_VERSION: u32 = 3;
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
    /// Only events of these kinds; empty = all.
    pub kinds: Vec<EventKind>,
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
    /// Resolve a live session for `attach`: answered with
    /// [`Response::AttachTarget`], data from which the client builds its
    /// own tmux command. The client never runs a command it is sent.
    Attach {
        key: String,
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
    Heartbeat {
        session: String,
        uid: Option<u64>,
        context_pct: Option<u8>,
        note: Option<String>,
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
    pub change: Change,
    pub detail: String,
    /// Set when the role is frozen and will not spawn.
    pub frozen_reason: Option<String>,
}

/// What `apply` did to a role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display, strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Change {
    Created,
    Unchanged,
    /// Only its replica count changed.
    Scaled,
    /// Its spec changed: its sessions are replaced.
    Replaced,
    Removed,
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
    /// `describe`: the record and what its text adds; the client renders.
    Described(Box<DescribeView>),
    Text(String),
    Event(EventView),
    /// For a follower that fell behind: this many events that passed its
    /// filter were dropped before the next [`Response::Event`].
    Lagged {
        dropped: u64,
    },
    Events(Vec<EventView>),
    Status(StatusView),
    /// Where a live session is in tmux: its session name and pane id.
    AttachTarget {
        tmux_session: String,
        pane: String,
    },
    /// A team's shift, as it stands after the request.
    Shift {
        team: String,
        shift: ShiftView,
    },
    /// A plain acknowledgement with a one-line message.
    Done(String),
    Error(Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Answer lines as a daemon writes them, to mutate.
    static SEEDS: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
        let event = EventView {
            seq: 7,
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
            kind: crate::domain::event::EventKind::Crashed,
            key: "demo/squad/worker-0".into(),
            message: "exit 1".into(),
        };
        [
            Response::Pong {
                version: "0.1.0".into(),
                protocol: PROTOCOL_VERSION,
                pid: 42,
            },
            Response::Applied {
                team: "demo/squad".into(),
                roles: vec![RoleChangeView {
                    key: "demo/squad/worker".into(),
                    change: Change::Created,
                    detail: "3 replicas".into(),
                    frozen_reason: None,
                }],
            },
            Response::Event(event.clone()),
            Response::Events(vec![event]),
            Response::Lagged { dropped: 99_000 },
            Response::Text("text".into()),
            Response::Done("done".into()),
            Response::Error(Error::daemon(
                "the daemon is busy (64 connections); try again",
            )),
        ]
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap())
        .collect()
    });

    proptest! {
        #![proptest_config(crate::daemon::server::fuzz_config())]

        /// Fuzz: what a client decodes from the socket never panics it.
        #[test]
        fn any_bytes_decode_as_an_answer_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = serde_json::from_slice::<Response>(&bytes);
        }

        #[test]
        fn mutated_answers_decode_or_fail_cleanly(
            seed in 0..8usize,
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
            if let Ok(resp) = serde_json::from_slice::<Response>(&line) {
                // Whatever decodes encodes again: the client can show it.
                prop_assert!(serde_json::to_vec(&resp).is_ok());
            }
        }
    }
}
