//! Event records: every transition of a session or role, with its time,
//! key and reason. The daemon keeps them in a bounded log for `events`.

use serde::{Deserialize, Serialize};

use crate::domain::state::Time;

/// What happened. The one list of kinds: its kebab-case names are the
/// `kind` of `events -o json` and the values `events --kind` accepts.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
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
    /// A session prints again after being idle or waiting.
    Busy,
    /// A session has printed nothing for its role's `idle_after`.
    Idle,
    /// A session needs input (its screen matches its role's `waiting`
    /// pattern, or the program said so).
    Waiting,
    /// A team's notification command failed, timed out or could not run.
    NotifyFailed,
}

impl EventKind {
    /// The kind's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    #[test]
    fn names_are_the_same_in_json_and_in_text() {
        for kind in EventKind::VARIANTS {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
            assert_eq!(kind.as_str().parse::<EventKind>().unwrap(), *kind);
            assert_eq!(serde_json::from_value::<EventKind>(json).unwrap(), *kind);
        }
        assert_eq!(EventKind::TmuxDown.as_str(), "tmux-down");
        assert_eq!(EventKind::ShiftCompleted.to_string(), "shift-completed");
        assert_eq!(EventKind::VARIANTS.len(), 27);
        assert_eq!(EventKind::NotifyFailed.as_str(), "notify-failed");
    }
}
