//! What a running session is doing: `busy` (it printed within its role's
//! `idle_after`), `idle` (silent for longer) or `waiting` (it needs input).
//! Tracked on edges, never per byte: the log pipe says when output starts
//! and when it has stopped, the program may say what it is doing
//! (`marvel heartbeat --state`), and a screen read once a session turns
//! idle tells `waiting` by the role's pattern. The rules are pure: times
//! are arguments, and the daemon's timer asks [`idle_due`] when to look.

use serde::{Deserialize, Serialize};

use crate::domain::event::{Event, EventKind};
use crate::domain::spec::RoleSpec;
use crate::domain::state::{Session, SessionState, Time, World, after};

/// How many of the screen's last non-empty lines a `waiting` pattern is
/// matched against (joined with newlines).
pub const SCREEN_LINES: usize = 10;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ActivityState {
    #[default]
    Busy,
    Idle,
    Waiting,
}

impl ActivityState {
    /// The lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    fn kind(self) -> EventKind {
        match self {
            ActivityState::Busy => EventKind::Busy,
            ActivityState::Idle => EventKind::Idle,
            ActivityState::Waiting => EventKind::Waiting,
        }
    }
}

/// A session's activity and the edges it was worked out from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub state: ActivityState,
    /// Since when; `None` until something changed (then: since the start).
    pub since: Option<Time>,
    /// The log pipe says output is flowing: no word of it stopping since.
    pub printing: bool,
    /// When the last burst of output ended, as the log pipe reported it.
    pub last_output_at: Option<Time>,
    /// When the program last said what it does: output that began before
    /// does not overrule it.
    pub declared_at: Option<Time>,
}

/// Why a session's activity changed: the words of its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Output began at this instant.
    Output,
    /// Nothing printed for the role's `idle_after`.
    Silent,
    /// The screen matches the role's pattern.
    Screen(String),
    /// `marvel heartbeat --state`.
    Declared,
}

impl Activity {
    /// Nothing known beyond the start (not written to state files).
    pub fn is_unset(&self) -> bool {
        *self == Activity::default()
    }

    /// Moves every instant by `by` (a wall-clock jump).
    pub fn shift_clock(&mut self, by: chrono::Duration) {
        for t in [
            &mut self.since,
            &mut self.last_output_at,
            &mut self.declared_at,
        ]
        .into_iter()
        .flatten()
        {
            *t = t.checked_add_signed(by).unwrap_or(*t);
        }
    }
}

/// The activity a view shows, and since when: a running session's only.
pub fn shown(s: &Session) -> Option<(ActivityState, Time)> {
    if s.state != SessionState::Running {
        return None;
    }
    let since = s.activity.since.or(s.started_at).unwrap_or(s.created_at);
    Some((s.activity.state, since))
}

/// When a busy running session turns idle if nothing is printed or said
/// meanwhile: `idle_after` after the last output, the program's last word
/// or its start, whichever came last. `None` while output flows, and for
/// a session that is idle or waiting already.
pub fn idle_due(s: &Session, role: &RoleSpec) -> Option<Time> {
    if s.state != SessionState::Running || s.activity.state != ActivityState::Busy {
        return None;
    }
    if s.activity.printing {
        return None;
    }
    let start = s.started_at.unwrap_or(s.created_at);
    let last = [s.activity.last_output_at, s.activity.declared_at]
        .into_iter()
        .flatten()
        .fold(start, Time::max);
    Some(after(last, role.idle_after.get()))
}

/// The screen's last non-empty lines, as a `waiting` pattern sees them.
pub fn screen_tail(screen: &str) -> String {
    let lines: Vec<&str> = screen
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let skip = lines.len().saturating_sub(SCREEN_LINES);
    lines[skip..].join("\n")
}

impl World {
    /// Sets the activity of live session `uid`, with the event that says
    /// so; `None` when it does not change.
    pub fn set_activity(
        &mut self,
        uid: u64,
        state: ActivityState,
        why: Why,
        at: Time,
    ) -> Option<Event> {
        let s = self.sessions.get_mut(&uid).filter(|s| s.state.is_live())?;
        let a = &mut s.activity;
        if a.state == state {
            return None;
        }
        let was = a.state;
        a.state = state;
        a.since = Some(at);
        let message = match why {
            Why::Output => format!("busy: printing again after being {was}"),
            Why::Silent => {
                let idle = self
                    .teams
                    .get(&s.key.team())
                    .and_then(|t| t.spec.role(&s.key.role))
                    .map(|r| humantime::format_duration(r.idle_after.get()).to_string())
                    .unwrap_or_default();
                format!("idle: nothing printed for {idle}")
            }
            Why::Screen(pattern) => format!("waiting: the screen matches {pattern:?}"),
            Why::Declared => format!("{state}: said the program"),
        };
        let key = s.key.clone();
        Some(Event::new(at, state.kind(), key, message))
    }

    /// The log pipe of `uid` saw output begin at `at`: the session is busy,
    /// unless the program said otherwise after that output began.
    pub fn output_began(&mut self, uid: u64, at: Time) -> Option<Event> {
        let s = self.sessions.get_mut(&uid).filter(|s| s.state.is_live())?;
        s.activity.printing = true;
        if s.activity.declared_at.is_some_and(|d| at <= d) {
            return None;
        }
        s.activity.declared_at = None;
        self.set_activity(uid, ActivityState::Busy, Why::Output, at)
    }

    /// The log pipe of `uid` saw no output since `last`, for a while.
    pub fn output_stopped(&mut self, uid: u64, last: Time) -> bool {
        let Some(s) = self.sessions.get_mut(&uid).filter(|s| s.state.is_live()) else {
            return false;
        };
        let a = &mut s.activity;
        a.printing = false;
        a.last_output_at = Some(a.last_output_at.map_or(last, |t| t.max(last)));
        true
    }

    /// The program of `uid` says what it is doing (a heartbeat).
    pub fn declare_activity(&mut self, uid: u64, state: ActivityState, at: Time) -> Option<Event> {
        let s = self.sessions.get_mut(&uid).filter(|s| s.state.is_live())?;
        s.activity.declared_at = Some(at);
        self.set_activity(uid, state, Why::Declared, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::NonZeroSpan;
    use crate::domain::world::sim::{Sim, role, t, team};

    /// A running session of a role with `idle_after` 1 s, started at 0.
    fn running() -> (Sim, u64, RoleSpec) {
        let mut sim = Sim::new();
        let mut r = role("w", 1);
        r.idle_after = NonZeroSpan::from_secs(1);
        sim.apply(team(vec![r.clone()]));
        sim.settle();
        let uid = *sim.world.sessions.keys().next().unwrap();
        (sim, uid, r)
    }

    fn due(sim: &Sim, uid: u64, r: &RoleSpec) -> Option<Time> {
        idle_due(&sim.world.sessions[&uid], r)
    }

    #[test]
    fn a_session_is_busy_from_its_start_and_idle_after_idle_after_of_silence() {
        let (mut sim, uid, r) = running();
        let s = &sim.world.sessions[&uid];
        assert_eq!(shown(s), Some((ActivityState::Busy, t(0))));
        assert_eq!(due(&sim, uid, &r), Some(t(1000)));
        // Output flows: no timer at all.
        assert!(
            sim.world.output_began(uid, t(200)).is_none(),
            "busy already"
        );
        assert_eq!(due(&sim, uid, &r), None);
        // It stops at 700: idle a second later.
        assert!(sim.world.output_stopped(uid, t(700)));
        assert_eq!(due(&sim, uid, &r), Some(t(1700)));
        let ev = sim
            .world
            .set_activity(uid, ActivityState::Idle, Why::Silent, t(1700))
            .unwrap();
        assert_eq!(ev.kind, EventKind::Idle);
        assert_eq!(ev.message, "idle: nothing printed for 1s");
        assert_eq!(due(&sim, uid, &r), None, "idle already");
        // Printing again is busy again, at once.
        let ev = sim.world.output_began(uid, t(5000)).unwrap();
        assert_eq!(
            (ev.kind, ev.message.as_str()),
            (EventKind::Busy, "busy: printing again after being idle")
        );
        assert_eq!(
            shown(&sim.world.sessions[&uid]),
            Some((ActivityState::Busy, t(5000)))
        );
    }

    #[test]
    fn the_programs_word_holds_until_output_that_began_after_it() {
        let (mut sim, uid, r) = running();
        sim.world.output_began(uid, t(100));
        let ev = sim
            .world
            .declare_activity(uid, ActivityState::Waiting, t(300))
            .unwrap();
        assert_eq!(
            (ev.kind, ev.message.as_str()),
            (EventKind::Waiting, "waiting: said the program")
        );
        // The burst it was part of ends: still waiting, no timer.
        sim.world.output_stopped(uid, t(350));
        assert_eq!(due(&sim, uid, &r), None);
        // A report of output that began before the word changes nothing.
        assert!(sim.world.output_began(uid, t(250)).is_none());
        assert_eq!(
            sim.world.sessions[&uid].activity.state,
            ActivityState::Waiting
        );
        sim.world.output_stopped(uid, t(360));
        // New output after it: busy.
        let ev = sim.world.output_began(uid, t(900)).unwrap();
        assert_eq!(ev.kind, EventKind::Busy);
        // `busy` from the program counts as output for the timer.
        sim.world.output_stopped(uid, t(950));
        sim.world
            .declare_activity(uid, ActivityState::Busy, t(1500));
        assert_eq!(due(&sim, uid, &r), Some(t(2500)));
    }

    #[test]
    fn only_running_sessions_show_an_activity() {
        let (mut sim, uid, _) = running();
        sim.world.sessions.get_mut(&uid).unwrap().state = SessionState::Pending;
        assert_eq!(shown(&sim.world.sessions[&uid]), None);
    }

    #[test]
    fn the_screen_tail_is_its_last_non_empty_lines() {
        let screen = (1..=15)
            .map(|i| format!("line {i}  "))
            .collect::<Vec<_>>()
            .join("\n\n")
            + "\n\n\n";
        let tail = screen_tail(&screen);
        assert_eq!(tail.lines().count(), SCREEN_LINES);
        assert!(tail.starts_with("line 6\nline 7"), "{tail}");
        assert!(tail.ends_with("line 15"), "{tail}");
        assert_eq!(screen_tail(""), "");
    }
}
