//! What `get`, `describe`, `events` and `status` return: plain records whose
//! JSON field and state names are a public contract (README, "JSON output").
//! Fields may be added, none renamed; states are enums named alike in JSON and text.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::domain::activity::ActivityState;
pub use crate::domain::event::EventKind;
use crate::domain::health;
pub use crate::domain::shift::ShiftState;
pub use crate::domain::spec::{Backoff, RestartPolicy};
use crate::domain::state;
pub use crate::domain::world::RoleState;

/// A session's `state`.
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
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum SessionState {
    /// Asked for; the program has not reported that it runs yet.
    Pending,
    Running,
    /// Ended without being asked to: the role's marker.
    Crashed,
    /// Exited 0 under `OnFailure` or `Never`; not replaced.
    Succeeded,
}

impl SessionState {
    /// The lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl From<state::SessionState> for SessionState {
    fn from(s: state::SessionState) -> SessionState {
        match s {
            state::SessionState::Pending => SessionState::Pending,
            state::SessionState::Running => SessionState::Running,
            state::SessionState::Crashed => SessionState::Crashed,
            state::SessionState::Succeeded => SessionState::Succeeded,
        }
    }
}

/// The heartbeat verdict on a live session of a role with a check.
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
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum HealthState {
    /// No heartbeat yet, within the start-up grace.
    Unknown,
    Healthy,
    Unhealthy,
}

impl HealthState {
    /// The lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl From<health::HealthState> for HealthState {
    fn from(h: health::HealthState) -> HealthState {
        match h {
            health::HealthState::Unknown => HealthState::Unknown,
            health::HealthState::Healthy => HealthState::Healthy,
            health::HealthState::Unhealthy => HealthState::Unhealthy,
        }
    }
}

/// A team's `state`.
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
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum TeamState {
    /// Every role is ready or has succeeded.
    Ready,
    Progressing,
    /// A role is in backoff, frozen or failed.
    Degraded,
    /// Every role is stopped.
    Stopped,
}

impl TeamState {
    /// The lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// tmux's `state` in `status`.
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
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum TmuxState {
    Up,
    /// The server does not answer in time.
    Degraded,
    /// tmux cannot be run, or failed.
    Down,
    /// Not asked yet.
    Unknown,
}

impl TmuxState {
    /// The lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitView {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(with = "stamp")]
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
    pub state: SessionState,
    pub pane: Option<String>,
    /// pid of the role's program itself (not of marvel's shim).
    pub pid: Option<u32>,
    pub restarts: u32,
    #[serde(with = "stamp::maybe")]
    pub last_restart_at: Option<DateTime<Utc>>,
    #[serde(with = "stamp")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "stamp::maybe")]
    pub started_at: Option<DateTime<Utc>>,
    pub exit: Option<ExitView>,
    /// The role's state.
    pub role_state: RoleState,
    #[serde(with = "stamp::maybe")]
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
    /// For a live session of a role with a heartbeat check; null otherwise.
    #[serde(default)]
    pub health: Option<HealthState>,
    #[serde(default)]
    #[serde(with = "stamp::maybe")]
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
    /// The git worktree the slot works in (a role with `worktree`), and
    /// the branch checked out there when its program started.
    #[serde(default)]
    pub worktree: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    /// `busy`, `idle` or `waiting`, and since when: a running session's.
    #[serde(default)]
    pub activity: Option<ActivityState>,
    #[serde(default)]
    #[serde(with = "stamp::maybe")]
    pub activity_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleView {
    pub key: String,
    pub workspace: String,
    pub team: String,
    pub role: String,
    pub desired: u32,
    pub running: u32,
    pub state: RoleState,
    pub restarts: u32,
    #[serde(with = "stamp::maybe")]
    pub last_restart_at: Option<DateTime<Utc>>,
    pub crashes_in_window: u32,
    pub max_restarts: Option<u32>,
    pub window_ms: u64,
    #[serde(with = "stamp::maybe")]
    pub next_restart_at: Option<DateTime<Utc>>,
    pub frozen_reason: Option<String>,
    #[serde(with = "stamp::maybe")]
    pub frozen_at: Option<DateTime<Utc>>,
    pub last_exit: Option<ExitView>,
    pub command: Vec<String>,
    pub restart: RestartPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamView {
    pub key: String,
    pub workspace: String,
    pub team: String,
    pub roles: u32,
    pub desired: u32,
    pub running: u32,
    pub state: TeamState,
    #[serde(with = "stamp")]
    pub applied_at: DateTime<Utc>,
    /// The running or last finished shift; null if there never was one.
    #[serde(default)]
    pub shift: Option<ShiftView>,
}

/// A rolling shift of a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftView {
    pub id: u64,
    pub state: ShiftState,
    /// The roles it replaces, in order.
    pub roles: Vec<String>,
    /// The role being replaced now (while running).
    pub role: Option<String>,
    pub replaced: u32,
    pub total: u32,
    #[serde(with = "stamp")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "stamp")]
    pub deadline: DateTime<Utc>,
    #[serde(with = "stamp::maybe")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it failed or was aborted.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub seq: u64,
    #[serde(with = "stamp")]
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonView {
    pub pid: u32,
    pub version: String,
    pub protocol: u32,
    #[serde(with = "stamp")]
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
    #[serde(with = "stamp::maybe")]
    pub persist_failing_since: Option<DateTime<Utc>>,
    /// Why the event log cannot be written, while it cannot (events are
    /// kept in memory meanwhile).
    #[serde(default)]
    pub event_log_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmuxView {
    pub state: TmuxState,
    pub version: Option<String>,
    /// `-L` socket name in use, or null for the default server.
    pub socket: Option<String>,
    pub last_error: Option<String>,
    #[serde(with = "stamp::maybe")]
    pub next_retry_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub daemon: DaemonView,
    pub tmux: TmuxView,
    /// What needs attention, worst first; empty when all is well.
    #[serde(default)]
    pub problems: Vec<ProblemView>,
}

/// A kind of problem `status` reports, from the worst down. Its
/// kebab-case name is `kind` in `status -o json`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum ProblemKind {
    /// tmux is missing, down or does not answer: nothing can be started.
    TmuxDown,
    /// A role spent its restart budget: nothing is spawned until a reset.
    Frozen,
    /// A replica of a `restart: Never` role failed.
    Failed,
    /// The state file cannot be written: supervising from memory.
    NotPersisted,
    /// The event log cannot be written.
    EventLog,
    /// A session missed its heartbeats.
    Unhealthy,
    /// A role waits out a crash-loop backoff.
    Backoff,
}

impl ProblemKind {
    /// The exit code of `marvel status` when this is the worst problem:
    /// 7 for tmux, 5 for a role that waits for a person, 1 for the rest.
    pub fn exit_code(self) -> i32 {
        use crate::error::exit;
        match self {
            ProblemKind::TmuxDown => exit::TMUX_UNAVAILABLE,
            ProblemKind::Frozen | ProblemKind::Failed => exit::REFUSED,
            ProblemKind::NotPersisted
            | ProblemKind::EventLog
            | ProblemKind::Unhealthy
            | ProblemKind::Backoff => exit::FAILURE,
        }
    }
}

/// One problem, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemView {
    pub kind: ProblemKind,
    /// The role or session it is about; empty for the daemon and tmux.
    pub key: String,
    pub message: String,
    pub hint: String,
    /// When it ends or began, where that matters: a backoff's restart, an
    /// unhealthy session's last heartbeat.
    #[serde(default)]
    #[serde(with = "stamp::maybe")]
    pub at: Option<DateTime<Utc>>,
}

/// What `describe` returns: one resource's record (exactly what
/// `describe -o json` prints) and what its text adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DescribeView {
    Session(SessionDescription),
    Role(RoleDescription),
    Team(TeamDescription),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDescription {
    pub session: SessionView,
    /// The most recent events about it, oldest first.
    pub events: Vec<EventView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleDescription {
    pub role: RoleView,
    /// The parts of its spec that `RoleView` does not carry.
    pub cwd: Option<PathBuf>,
    pub backoff: Backoff,
    pub reset_after: Duration,
    /// Every session record of the role: live ones, outdated ones being
    /// replaced, and its marker.
    pub sessions: Vec<SessionView>,
    pub events: Vec<EventView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamDescription {
    pub team: TeamView,
    pub roles: Vec<RoleView>,
    pub events: Vec<EventView>,
}

/// Times as chrono writes and reads them (RFC 3339, UTC as `Z`, as many
/// fractional digits as needed), the fast way round: chrono's own
/// `Serialize` hands the text over in fragments, each escaped on its own,
/// and its `Deserialize` goes through its general parser. Both were large
/// costs of a listing of thousands of sessions.
mod stamp {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.to_utc())
            .map_err(D::Error::custom)
    }

    pub mod maybe {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            #[derive(Deserialize)]
            struct Stamp(#[serde(with = "super")] DateTime<Utc>);
            Ok(Option::<Stamp>::deserialize(d)?.map(|s| s.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    #[test]
    fn times_are_written_and_read_as_chrono_does() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Ours {
            #[serde(with = "stamp")]
            at: DateTime<Utc>,
            #[serde(with = "stamp::maybe")]
            maybe: Option<DateTime<Utc>>,
            #[serde(with = "stamp::maybe")]
            none: Option<DateTime<Utc>>,
        }
        #[derive(Serialize)]
        struct Chronos {
            at: DateTime<Utc>,
            maybe: Option<DateTime<Utc>>,
            none: Option<DateTime<Utc>>,
        }
        let base = DateTime::parse_from_rfc3339("2026-11-30T14:34:06Z")
            .unwrap()
            .to_utc();
        for nanos in [
            0,
            1,
            500_000_000,
            950_000_000,
            950_493_000,
            950_493_618,
            999_999_999,
        ] {
            let at = base + chrono::Duration::nanoseconds(nanos);
            let ours = Ours {
                at,
                maybe: Some(at),
                none: None,
            };
            let chronos = serde_json::to_string(&Chronos {
                at,
                maybe: Some(at),
                none: None,
            })
            .unwrap();
            assert_eq!(serde_json::to_string(&ours).unwrap(), chronos);
            assert_eq!(serde_json::from_str::<Ours>(&chronos).unwrap(), ours);
        }
        let offset = r#"{"at":"2026-11-30T15:34:06+01:00","maybe":null,"none":null}"#;
        assert_eq!(serde_json::from_str::<Ours>(offset).unwrap().at, base);
        let bad = r#"{"at":"yesterday","maybe":null,"none":null}"#;
        assert!(serde_json::from_str::<Ours>(bad).is_err());
        let escaped = r#"{"at":"2026-11-30T14:34:06\u005a","maybe":null,"none":null}"#;
        assert_eq!(serde_json::from_str::<Ours>(escaped).unwrap().at, base);
    }

    fn same_names<T>()
    where
        T: VariantArray + Serialize + Copy + std::fmt::Display + Into<&'static str>,
    {
        for v in T::VARIANTS {
            let text: &'static str = (*v).into();
            assert_eq!(serde_json::to_value(v).unwrap(), text);
            assert_eq!(v.to_string(), text);
            assert_eq!(text, text.to_lowercase());
        }
    }

    #[test]
    fn states_have_one_name_in_json_and_in_text() {
        same_names::<SessionState>();
        same_names::<HealthState>();
        same_names::<RoleState>();
        same_names::<TeamState>();
        same_names::<ShiftState>();
        same_names::<TmuxState>();
        same_names::<EventKind>();
        same_names::<ProblemKind>();
        assert_eq!(SessionState::Crashed.as_str(), "crashed");
        assert_eq!(RoleState::Backoff.to_string(), "backoff");
        assert_eq!(
            serde_json::to_value(RestartPolicy::OnFailure).unwrap(),
            "OnFailure"
        );
    }

    #[test]
    fn domain_states_map_to_the_same_names() {
        use crate::domain::{health, state};
        for (d, v) in [
            (state::SessionState::Pending, "pending"),
            (state::SessionState::Running, "running"),
            (state::SessionState::Crashed, "crashed"),
            (state::SessionState::Succeeded, "succeeded"),
        ] {
            assert_eq!(SessionState::from(d).as_str(), d.as_str());
            assert_eq!(SessionState::from(d).as_str(), v);
        }
        for d in [
            health::HealthState::Unknown,
            health::HealthState::Healthy,
            health::HealthState::Unhealthy,
        ] {
            assert_eq!(HealthState::from(d).as_str(), d.as_str());
        }
    }
}
