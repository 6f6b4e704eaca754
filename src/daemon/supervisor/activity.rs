//! Busy, idle, waiting: the log pipes' reports of output starting and
//! stopping, the timers that turn a silent session idle (one wake-up for
//! the earliest, never a poll), the one screen read when a session with a
//! `waiting` pattern turns idle, and `inject --when-idle` requests parked
//! until their session is idle or waiting.

use std::time::Duration;

use crate::domain::activity::{self, ActivityState, Why};
use crate::domain::key::SessionKey;
use crate::domain::spec::RoleSpec;
use crate::domain::state::{Session, SessionState, Time};
use crate::error::{Error, Result};
use crate::proto::Response;
use crate::substrate::SubstrateError;

use super::super::worker::Job;
use super::tmux::Then;
use super::{Now, RequestId, Supervisor};

/// An `inject --when-idle` waiting for its session.
#[derive(Debug, Clone)]
pub(super) struct Parked {
    pub id: RequestId,
    pub key: SessionKey,
    pub uid: u64,
    pub text: String,
    pub enter: bool,
    pub keys: bool,
    /// Monotonic: answered `StillBusy` then.
    pub until: Duration,
}

impl Supervisor {
    /// A log pipe's report: output began at `at`, or stopped with its
    /// last at `at`.
    pub(super) fn output_report(&mut self, uid: u64, at: Time, flowing: bool) -> Result<Response> {
        let known = if flowing {
            if let Some(ev) = self.world.output_began(uid, at) {
                self.emit(ev);
                self.activity_changed = true;
            }
            self.world.sessions.contains_key(&uid)
        } else {
            self.world.output_stopped(uid, at)
        };
        // A screen read under way is for a silence that just ended.
        if flowing && self.screens.remove(&uid).is_some() {
            self.idle_anew = true;
        }
        if !known {
            return Err(Error::refused(
                format!("no live session has uid {uid}"),
                None,
            ));
        }
        Ok(Response::Done("recorded".into()))
    }

    /// The sessions whose silence has lasted their role's `idle_after`
    /// turn idle; with a `waiting` pattern, their screen is read first
    /// (one capture each, only now).
    pub(super) fn activity_timers(&mut self, now: Now) {
        // Nothing a step changes makes a session idle sooner than it was
        // due before the step (its output only puts it off, a new session
        // starts busy); a spec changed to a shorter `idle_after` is seen
        // when the step ends, which wakes the loop at once.
        if self.idle_at.is_none_or(|t| t > now.wall) {
            return;
        }
        self.idle_anew = true;
        let due: Vec<(u64, Time, Option<String>)> = self
            .idle_dues()
            .filter(|(_, _, at)| *at <= now.wall)
            .map(|(s, role, at)| {
                let pane = s.pane.clone().filter(|_| role.waiting.is_some());
                (s.uid, at, pane)
            })
            .collect();
        for (uid, at, pane) in due {
            match pane {
                Some(pane) if self.tmux_ready(now) => {
                    self.screens.insert(uid, at);
                    let job = Job::Capture { pane, history: 0 };
                    self.submit(job, Then::Screen { uid, at }, now);
                }
                _ => self.turn_idle(uid, at, None),
            }
        }
    }

    /// The screen of a session that turned idle at `at`: waiting if its
    /// last lines match the role's pattern, idle otherwise (or when it
    /// could not be read). Output since then makes it moot.
    pub(super) fn screen_read(
        &mut self,
        uid: u64,
        at: Time,
        screen: std::result::Result<String, SubstrateError>,
    ) {
        if self.screens.get(&uid) != Some(&at) {
            return;
        }
        self.screens.remove(&uid);
        self.idle_anew = true;
        let still = self.world.sessions.get(&uid).and_then(|s| {
            let role = self.world.role_spec(&s.key.role())?;
            (activity::idle_due(s, role) == Some(at)).then(|| role.waiting.clone())
        });
        let Some(pattern) = still else {
            return;
        };
        let matched = match (&pattern, screen) {
            (Some(p), Ok(text)) => p.is_match(&activity::screen_tail(&text)).then_some(p),
            (_, Err(e)) => {
                self.log(format!("cannot read the screen of uid {uid}: {e}"));
                None
            }
            _ => None,
        };
        let why = matched.map(|p| p.as_str().to_string());
        self.turn_idle(uid, at, why);
    }

    fn turn_idle(&mut self, uid: u64, at: Time, pattern: Option<String>) {
        let (state, why) = match pattern {
            Some(p) => (ActivityState::Waiting, Why::Screen(p)),
            None => (ActivityState::Idle, Why::Silent),
        };
        if let Some(ev) = self.world.set_activity(uid, state, why, at) {
            self.emit(ev);
            self.activity_changed = true;
        }
    }

    /// When the next busy session turns idle if none prints meanwhile, or
    /// sooner: what the idle timers wait for. Found from every session
    /// only when it must be; otherwise from the sessions changed since the
    /// world was last written (every step's changes are written after the
    /// step, so they hold at least this step's). That is enough because
    /// what a step does to a session it leaves unchanged never brings the
    /// session's idle sooner: only a change to the session, a spec
    /// changed, or a screen read ended (each of which is looked at) can.
    /// A session whose idle a change put off leaves `idle_at` early: the
    /// timers then find nothing due, and the next step looks at every
    /// session again.
    pub(super) fn next_idle(&mut self) -> Option<Time> {
        let specs = self.world.teams.edits();
        let changed = self.world.sessions.changed();
        let anew = std::mem::take(&mut self.idle_anew)
            || specs != self.idle_specs
            || changed.len() > self.world.sessions.len() / 4;
        if anew {
            self.idle_specs = specs;
            return self.idle_dues().map(|(_, _, at)| at).min();
        }
        let soonest = changed
            .iter()
            .filter(|uid| !self.screens.contains_key(uid))
            .filter_map(|uid| {
                let s = self.world.sessions.get(uid)?;
                activity::idle_due(s, self.world.role_spec(&s.key.role())?)
            })
            .min();
        match (self.idle_at, soonest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Each busy session whose screen is not being read, its role, and
    /// when it turns idle if it prints nothing more. A pass over every
    /// session: each one's spec is found by name, with no key built.
    fn idle_dues(&self) -> impl Iterator<Item = (&Session, &RoleSpec, Time)> {
        let specs = self.world.specs_by_name();
        // Sessions come by uid, so mostly a role's together: the last
        // role's spec is compared before the map is asked.
        let mut last: Option<(&SessionKey, Option<&RoleSpec>)> = None;
        self.world
            .sessions
            .values()
            .filter(|s| !self.screens.contains_key(&s.uid))
            .filter_map(move |s| {
                let k = &s.key;
                let spec = match last {
                    Some((l, spec)) if l.is_same_role(k) => spec,
                    _ => {
                        let spec = specs
                            .get(&(k.workspace.as_str(), k.team.as_str(), k.role.as_str()))
                            .copied();
                        last = Some((k, spec));
                        spec
                    }
                }?;
                Some((s, spec, activity::idle_due(s, spec)?))
            })
    }

    /// Parks an `inject --when-idle` for at most `wait`.
    pub(super) fn park(&mut self, p: Parked) {
        self.parked.push(p);
    }

    /// Types what parked requests hold into sessions that are idle or
    /// waiting now; answers the others whose time is up, or whose session
    /// is gone.
    pub(super) fn release_parked(&mut self, now: Now) {
        for p in std::mem::take(&mut self.parked) {
            let s = self.world.sessions.get(&p.uid);
            let live = s.is_some_and(|s| s.state == SessionState::Running && s.pane.is_some());
            if !live {
                let e = Error::refused(
                    format!(
                        "session {} ended while waiting to be idle; nothing was typed",
                        p.key
                    ),
                    Some(format!(
                        "`marvel get sessions {}` shows what became of it",
                        p.key
                    )),
                );
                self.reply(p.id, Response::Error(e));
                continue;
            }
            let s = s.expect("live");
            if s.activity.state != ActivityState::Busy && self.tmux_ready(now) {
                let pane = s.pane.clone().unwrap_or_default();
                let key = s.key.clone();
                if let Err(e) = self.type_into(p.id, &key, &pane, p.text, p.enter, p.keys, now) {
                    self.reply(p.id, Response::Error(e));
                }
            } else if now.mono >= p.until {
                let since = activity::shown(s).map(|(_, t)| t);
                self.reply(p.id, Response::StillBusy { since });
            } else {
                self.parked.push(p);
            }
        }
    }

    /// The earliest instant a parked request must be answered.
    pub(super) fn next_parked(&self) -> Option<Duration> {
        self.parked.iter().map(|p| p.until).min()
    }
}
