//! Heartbeat health: whether a running session's program still reports in.
//! The verdict is a pure function of the last heartbeat, the start, and
//! `now`, worked out afresh on every evaluation, so no state is sticky: a
//! heartbeat always makes an unhealthy session healthy again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::event::{Event, EventKind};
use crate::domain::key::SessionKey;
use crate::domain::spec::{Health, RoleSpec};
use crate::domain::state::{Heartbeat, Session, SessionState, Time, World, after};

/// The reason recorded when a session is restarted for missing heartbeats.
pub const HEARTBEAT_STALE: &str = "heartbeat stale";

/// Longest heartbeat note kept, in characters.
pub const MAX_NOTE_CHARS: usize = 200;

/// How full an agent's context window is, in percent: 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct ContextPct(u8);

impl ContextPct {
    pub fn new(pct: u8) -> Result<ContextPct, String> {
        if pct > 100 {
            return Err(format!("context_pct must be between 0 and 100, got {pct}"));
        }
        Ok(ContextPct(pct))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for ContextPct {
    type Error = String;
    fn try_from(pct: u8) -> Result<Self, String> {
        ContextPct::new(pct)
    }
}

impl From<ContextPct> for u8 {
    fn from(p: ContextPct) -> u8 {
        p.0
    }
}

/// A heartbeat's status line: at most [`MAX_NOTE_CHARS`] characters. It is
/// the program's own text, kept exactly (JSON shows it as sent) and shown
/// on a terminal only with its control characters escaped. Refusing them
/// instead would fail the heartbeat of a program whose status happens to
/// hold a colour code, and so restart it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Note(String);

impl Note {
    pub fn new(text: impl Into<String>) -> Result<Note, String> {
        let text = text.into();
        let n = text.chars().count();
        if n > MAX_NOTE_CHARS {
            return Err(format!(
                "note is {n} characters long; at most {MAX_NOTE_CHARS} are allowed"
            ));
        }
        Ok(Note(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Note {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Note::new(text)
    }
}

impl From<Note> for String {
    fn from(n: Note) -> String {
        n.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum HealthState {
    /// No verdict yet: no heartbeat, and the start-up grace has not ended.
    #[default]
    Unknown,
    /// A heartbeat came within the last `timeout`.
    Healthy,
    /// At least one `timeout` passed without a heartbeat.
    Unhealthy,
}

impl HealthState {
    pub fn is_unknown(&self) -> bool {
        *self == HealthState::Unknown
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// The verdict of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub state: HealthState,
    /// Whole timeouts missed since the last heartbeat (or since the grace).
    pub misses: u32,
    /// `failures` timeouts were missed: the session is to be restarted.
    pub stale: bool,
    /// When the verdict changes next if no heartbeat comes (None once stale).
    pub next_at: Option<Time>,
}

/// Evaluates a heartbeat check at `now`.
///
/// Misses are counted in whole `timeout`s from an anchor: the last
/// heartbeat, but never earlier than one `timeout` after the session
/// started (the start-up grace) or after the daemon began listening
/// (`watching_since`). So a session that never reports is stale
/// `(1 + failures) × timeout` after its start, and one that stops
/// reporting is stale `failures × timeout` after its last heartbeat.
pub fn evaluate(
    last: Option<Time>,
    started: Time,
    watching_since: Option<Time>,
    timeout: Duration,
    failures: u32,
    now: Time,
) -> Check {
    let from = watching_since.map_or(started, |w| w.max(started));
    let grace_end = after(from, timeout);
    let anchor = last.map_or(grace_end, |t| t.max(grace_end));
    let timeout_ns = timeout.as_nanos().max(1);
    let misses = if now < anchor {
        0
    } else {
        let elapsed = (now - anchor).to_std().map_or(u128::MAX, |d| d.as_nanos());
        u32::try_from(elapsed / timeout_ns).unwrap_or(u32::MAX)
    };
    let failures = failures.max(1);
    let stale = misses >= failures;
    let state = match (misses, last) {
        (0, Some(_)) => HealthState::Healthy,
        (0, None) => HealthState::Unknown,
        _ => HealthState::Unhealthy,
    };
    let next_at = if stale {
        None
    } else if misses == 0 {
        Some(after(anchor, timeout))
    } else {
        Some(after(anchor, timeout.saturating_mul(failures)))
    };
    Check {
        state,
        misses,
        stale,
        next_at,
    }
}

/// The heartbeat verdict for one session, or `None` when it is not
/// evaluated: its role has no heartbeat check, or it is not running.
pub fn check(
    s: &Session,
    role: &RoleSpec,
    watching_since: Option<Time>,
    now: Time,
) -> Option<Check> {
    let Some(Health::Heartbeat { timeout, failures }) = role.health else {
        return None;
    };
    if s.state != SessionState::Running {
        return None;
    }
    let started = s.started_at.unwrap_or(s.created_at);
    Some(evaluate(
        s.last_heartbeat_at,
        started,
        watching_since,
        timeout.get(),
        failures.get(),
        now,
    ))
}

/// When a running session counts as ready: `ready_after` after its start.
pub fn ready_at(s: &Session, role: &RoleSpec) -> Option<Time> {
    (s.state == SessionState::Running)
        .then(|| after(s.started_at.unwrap_or(s.created_at), role.ready_after.get()))
}

/// Ready to take over from a session it replaces: running for the role's
/// `ready_after`, and healthy (it has sent a heartbeat) when the role has a
/// heartbeat check.
pub fn ready(s: &Session, role: &RoleSpec, watching_since: Option<Time>, now: Time) -> bool {
    ready_at(s, role).is_some_and(|at| now >= at)
        && check(s, role, watching_since, now).is_none_or(|c| c.state == HealthState::Healthy)
}

/// Has a running session come up, as `run --wait` and a `ready` role
/// mean it: running for the role's `ready_after`, and, for a role with a
/// heartbeat check, it has sent its first heartbeat. Unlike [`ready`], a
/// later missed heartbeat does not undo it: that is the session's health.
pub fn came_up(s: &Session, role: &RoleSpec, now: Time) -> bool {
    ready_at(s, role).is_some_and(|at| now >= at)
        && (role.health.is_none() || s.last_heartbeat_at.is_some())
}

/// Why a heartbeat was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatError {
    /// No live session has this key (or this uid).
    NotLive(SessionKey),
    /// The uid names a live session with another key.
    Mismatch { uid: u64, key: SessionKey },
}

impl World {
    /// The live session a heartbeat is from: `uid` when the program knows
    /// it (two sessions share a key while one replaces the other), else the
    /// newest live session with the key.
    pub fn heartbeat_target(
        &self,
        key: &SessionKey,
        uid: Option<u64>,
    ) -> Result<u64, HeartbeatError> {
        match uid {
            Some(uid) => match self.sessions.get(&uid) {
                Some(s) if s.state.is_live() && s.key == *key => Ok(uid),
                Some(s) if s.state.is_live() => Err(HeartbeatError::Mismatch {
                    uid,
                    key: s.key.clone(),
                }),
                _ => Err(HeartbeatError::NotLive(key.clone())),
            },
            None => self
                .sessions
                .values()
                .filter(|s| s.state.is_live() && s.key == *key)
                .max_by_key(|s| s.uid)
                .map(|s| s.uid)
                .ok_or_else(|| HeartbeatError::NotLive(key.clone())),
        }
    }

    /// Records a heartbeat of the live session `uid` at `at`.
    pub fn heartbeat(&mut self, uid: u64, at: Time, content: Heartbeat) -> bool {
        let Some(s) = self.sessions.get_mut(&uid).filter(|s| s.state.is_live()) else {
            return false;
        };
        s.last_heartbeat_at = Some(s.last_heartbeat_at.map_or(at, |t| t.max(at)));
        let note = content
            .note
            .map(|n| n.chars().take(MAX_NOTE_CHARS).collect::<String>());
        s.heartbeat = Heartbeat {
            context_pct: content.context_pct.map(|p| p.min(100)),
            note,
        };
        true
    }

    /// Records that session `uid` is now `state`, with the event that says
    /// so; `None` when nothing changed.
    pub fn set_health(&mut self, uid: u64, state: HealthState, now: Time) -> Option<Event> {
        let spec = {
            let s = self.sessions.get(&uid)?;
            self.role_spec(&s.key.role())?.clone()
        };
        let since = self.watching_since;
        let s = self.sessions.get_mut(&uid)?;
        if s.health == state {
            return None;
        }
        let was = s.health;
        s.health = state;
        let (kind, message) = match state {
            HealthState::Healthy if was == HealthState::Unhealthy => (
                EventKind::Healthy,
                "healthy again: heartbeat received".into(),
            ),
            HealthState::Healthy => (EventKind::Healthy, "healthy: heartbeat received".into()),
            HealthState::Unhealthy => {
                let c = check(s, &spec, since, now)?;
                let Some(Health::Heartbeat { timeout, failures }) = spec.health else {
                    return None;
                };
                let last = match s.last_heartbeat_at {
                    Some(t) => format!("last heartbeat {} ago", human_ms(now - t)),
                    None => "no heartbeat since the start".to_string(),
                };
                (
                    EventKind::Unhealthy,
                    format!(
                        "unhealthy: {last}; missed {} of {failures} (timeout {})",
                        c.misses.min(failures.get()),
                        humantime::format_duration(timeout.get())
                    ),
                )
            }
            // Only a session that never reported is unknown: nothing to say.
            HealthState::Unknown => return None,
        };
        Some(Event::new(now, kind, &s.key, message))
    }
}

fn human_ms(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0) as u64;
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::world::sim::t;

    const TIMEOUT: Duration = Duration::from_millis(100);

    /// Evaluates a check with a 100 ms timeout and 3 failures, started at 0.
    fn at(last: Option<i64>, now: i64) -> Check {
        evaluate(last.map(t), t(0), None, TIMEOUT, 3, t(now))
    }

    #[test]
    fn without_a_heartbeat_the_grace_is_one_timeout_then_misses_count() {
        let c = at(None, 0);
        assert_eq!(
            (c.state, c.misses, c.stale),
            (HealthState::Unknown, 0, false)
        );
        assert_eq!(
            c.next_at,
            Some(t(200)),
            "grace ends at 100, first miss at 200"
        );
        assert_eq!(at(None, 199).state, HealthState::Unknown);
        let c = at(None, 200);
        assert_eq!((c.state, c.misses), (HealthState::Unhealthy, 1));
        assert_eq!(c.next_at, Some(t(400)), "stale at grace + 3 timeouts");
        assert!(!at(None, 399).stale);
        let c = at(None, 400);
        assert!(c.stale);
        assert_eq!(
            (c.state, c.misses, c.next_at),
            (HealthState::Unhealthy, 3, None)
        );
    }

    #[test]
    fn a_heartbeat_is_healthy_for_one_timeout() {
        let c = at(Some(150), 150);
        assert_eq!((c.state, c.next_at), (HealthState::Healthy, Some(t(250))));
        assert_eq!(at(Some(150), 249).state, HealthState::Healthy);
        assert_eq!(at(Some(150), 250).state, HealthState::Unhealthy);
    }

    #[test]
    fn the_session_goes_stale_exactly_failures_timeouts_after_its_last_heartbeat() {
        assert!(!at(Some(500), 799).stale);
        let c = at(Some(500), 800);
        assert!(c.stale);
        assert_eq!(c.misses, 3);
    }

    #[test]
    fn an_early_heartbeat_does_not_cut_the_grace_short() {
        // A heartbeat at 10 ms: misses still count from the end of the grace.
        let c = at(Some(10), 150);
        assert_eq!((c.state, c.misses), (HealthState::Healthy, 0));
        assert_eq!(at(Some(10), 199).state, HealthState::Healthy);
        assert_eq!(at(Some(10), 200).state, HealthState::Unhealthy);
        assert!(at(Some(10), 400).stale);
    }

    #[test]
    fn nothing_is_sticky_a_heartbeat_heals_at_once() {
        assert_eq!(at(Some(100), 350).state, HealthState::Unhealthy);
        assert_eq!(at(Some(340), 350).state, HealthState::Healthy);
        assert_eq!(at(Some(340), 350).misses, 0);
    }

    #[test]
    fn a_daemon_that_was_away_counts_misses_only_after_its_own_grace() {
        // Last heartbeat at 100; the daemon came back at 5 000.
        let c = evaluate(Some(t(100)), t(0), Some(t(5_000)), TIMEOUT, 3, t(5_050));
        assert_eq!((c.misses, c.stale), (0, false));
        assert_eq!(c.state, HealthState::Healthy);
        let c = evaluate(Some(t(100)), t(0), Some(t(5_000)), TIMEOUT, 3, t(5_400));
        assert!(c.stale);
        assert!(!evaluate(Some(t(100)), t(0), Some(t(5_000)), TIMEOUT, 3, t(5_399)).stale);
    }

    #[test]
    fn one_failure_means_stale_at_the_first_miss() {
        let c = evaluate(Some(t(0)), t(0), None, TIMEOUT, 1, t(199));
        assert_eq!(c.state, HealthState::Healthy);
        assert_eq!(c.next_at, Some(t(200)));
        let c = evaluate(Some(t(0)), t(0), None, TIMEOUT, 1, t(200));
        assert!(c.stale && c.state == HealthState::Unhealthy);
    }

    #[test]
    fn huge_gaps_do_not_overflow() {
        let c = evaluate(
            Some(t(0)),
            t(0),
            None,
            Duration::from_nanos(1),
            u32::MAX,
            t(0) + chrono::Duration::days(365 * 100),
        );
        assert!(c.stale);
    }
}
