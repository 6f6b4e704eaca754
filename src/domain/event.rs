//! Event records: every transition of a session or role, with its time,
//! key and reason. The daemon keeps them in a bounded log for `events`.

use serde::{Deserialize, Serialize};

use crate::domain::state::Time;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Applied,
    Created,
    Started,
    Crashed,
    Backoff,
    Frozen,
    Reset,
    Forgiven,
    Succeeded,
    Stopped,
    Killed,
    Scaled,
    Deleted,
    Adopted,
    TmuxDown,
    TmuxUp,
    Warning,
    Healthy,
    Unhealthy,
    ShiftStarted,
    ShiftCompleted,
    ShiftFailed,
    ShiftAborted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Applied => "applied",
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::Crashed => "crashed",
            EventKind::Backoff => "backoff",
            EventKind::Frozen => "frozen",
            EventKind::Reset => "reset",
            EventKind::Forgiven => "forgiven",
            EventKind::Succeeded => "succeeded",
            EventKind::Stopped => "stopped",
            EventKind::Killed => "killed",
            EventKind::Scaled => "scaled",
            EventKind::Deleted => "deleted",
            EventKind::Adopted => "adopted",
            EventKind::TmuxDown => "tmux-down",
            EventKind::TmuxUp => "tmux-up",
            EventKind::Warning => "warning",
            EventKind::Healthy => "healthy",
            EventKind::Unhealthy => "unhealthy",
            EventKind::ShiftStarted => "shift-started",
            EventKind::ShiftCompleted => "shift-completed",
            EventKind::ShiftFailed => "shift-failed",
            EventKind::ShiftAborted => "shift-aborted",
        }
    }

    pub const ALL: [EventKind; 23] = [
        EventKind::Applied,
        EventKind::Created,
        EventKind::Started,
        EventKind::Crashed,
        EventKind::Backoff,
        EventKind::Frozen,
        EventKind::Reset,
        EventKind::Forgiven,
        EventKind::Succeeded,
        EventKind::Stopped,
        EventKind::Killed,
        EventKind::Scaled,
        EventKind::Deleted,
        EventKind::Adopted,
        EventKind::TmuxDown,
        EventKind::TmuxUp,
        EventKind::Warning,
        EventKind::Healthy,
        EventKind::Unhealthy,
        EventKind::ShiftStarted,
        EventKind::ShiftCompleted,
        EventKind::ShiftFailed,
        EventKind::ShiftAborted,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: Time,
    pub kind: EventKind,
    /// The session, role or team key the event is about (empty for the daemon).
    pub key: String,
    pub message: String,
}

impl Event {
    pub fn new(at: Time, kind: EventKind, key: impl ToString, message: impl Into<String>) -> Event {
        Event {
            at,
            kind,
            key: key.to_string(),
            message: message.into(),
        }
    }
}
