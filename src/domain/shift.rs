//! Rolling shifts: every session of a team (or of one role) is replaced by
//! a fresh one, one at a time and never below the desired count. A shift
//! only marks which sessions are outdated (those that existed when it
//! started, in the role whose turn it is); the reconciler's rolling
//! replacement does the rest. The state machine is pure: [`plan`] decides
//! the next step from the world and `now`, the transitions here carry it
//! out, and every end (completed, failed, aborted) is final and explained.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::event::{Event, EventKind};
use crate::domain::health;
use crate::domain::key::{RoleKey, TeamKey};
use crate::domain::reconcile::{self, Intent, Intents, Layout};
use crate::domain::spec::{RoleSpec, TeamSpec};
use crate::domain::state::{Session, SessionState, Time, World, after};
use crate::domain::world::human_span;

/// One rolling shift of a team: running, or how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shift {
    /// Unique for the life of the state directory.
    pub id: u64,
    /// The roles to replace, in order.
    pub roles: Vec<String>,
    /// The role being replaced now; `roles.len()` once all are done.
    pub index: usize,
    /// Sessions with a uid up to this one existed when the shift started:
    /// they are the ones it replaces.
    pub cutoff: u64,
    /// How many sessions there were to replace.
    pub total: u32,
    pub started_at: Time,
    pub timeout: Duration,
    pub deadline: Time,
    /// `None` while the shift runs.
    pub outcome: Option<Outcome>,
    pub ended_at: Option<Time>,
    /// Started by `marvel restart`: each successor resumes its slot's
    /// work (the role's `resume`), where a shift starts fresh.
    #[serde(default)]
    pub resume: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Completed,
    /// Gave up (a new session crashed, a role froze, the time ran out);
    /// the sessions not yet replaced keep running.
    Failed(String),
    Aborted(String),
}

/// A shift's state; its lower-case name is `state` in `get teams -o json`.
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
pub enum ShiftState {
    Running,
    Completed,
    Failed,
    Aborted,
}

impl ShiftState {
    /// The lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What moves a running shift on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The current role is replaced: go on with the next, or complete.
    RoleDone,
    /// Give up with this reason.
    Fail(String),
}

/// Why a shift was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub message: String,
    pub help: Option<String>,
}

impl Shift {
    pub fn is_running(&self) -> bool {
        self.outcome.is_none()
    }

    /// Where it is, or how it ended.
    pub fn state(&self) -> ShiftState {
        match &self.outcome {
            None => ShiftState::Running,
            Some(Outcome::Completed) => ShiftState::Completed,
            Some(Outcome::Failed(_)) => ShiftState::Failed,
            Some(Outcome::Aborted(_)) => ShiftState::Aborted,
        }
    }

    /// Why it failed or was aborted.
    pub fn reason(&self) -> Option<&str> {
        match &self.outcome {
            Some(Outcome::Failed(r) | Outcome::Aborted(r)) => Some(r),
            _ => None,
        }
    }

    /// The role being replaced, while the shift runs.
    pub fn current_role(&self) -> Option<&str> {
        self.outcome
            .is_none()
            .then(|| self.roles.get(self.index).map(String::as_str))
            .flatten()
    }

    /// Sessions from before the shift that still run in roles it has not
    /// finished with.
    pub fn remaining(&self, world: &World, team: &TeamKey) -> u32 {
        let pending: Vec<&String> = self.roles.iter().skip(self.index).collect();
        world
            .sessions
            .values()
            .filter(|s| s.state.is_live() && s.uid <= self.cutoff)
            .filter(|s| s.key.team() == *team && pending.contains(&&s.key.role))
            .count() as u32
    }

    /// Sessions replaced so far.
    pub fn replaced(&self, world: &World, team: &TeamKey) -> u32 {
        self.total.saturating_sub(self.remaining(world, team))
    }
}

/// The roles of `team` in the order a shift replaces them: manifest order,
/// with the roles marked `shift_last` after the others.
pub fn order(team: &TeamSpec) -> Vec<String> {
    let (last, first): (Vec<&RoleSpec>, Vec<&RoleSpec>) =
        team.roles.iter().partition(|r| r.shift_last);
    first
        .into_iter()
        .chain(last)
        .map(|r| r.name.to_string())
        .collect()
}

/// The cutoff that applies to `role` now: set while its team's running
/// shift is at this role. Sessions of the role up to it are outdated.
pub fn cutoff(world: &World, role: &RoleKey) -> Option<u64> {
    let sh = world.shifts.get(&role.team())?;
    (sh.current_role() == Some(role.role.as_str())).then_some(sh.cutoff)
}

/// Decides how each running shift moves on: fail it at its deadline or
/// when the role it replaces is frozen, and go to the next role once the
/// current one runs only fresh, ready sessions.
pub fn plan(world: &World, now: Time, plan: &mut Intents) {
    for (team, sh) in &world.shifts {
        if !sh.is_running() {
            continue;
        }
        let Some(record) = world.teams.get(team) else {
            continue;
        };
        let step = |step| Intent::Shift {
            team: team.clone(),
            step,
        };
        let current = sh
            .current_role()
            .and_then(|name| record.spec.role(name).map(|r| (record.spec.role_key(r), r)));
        let Some((key, spec)) = current else {
            // The role is gone (or there is none left): nothing to replace.
            plan.intents.push(step(Step::RoleDone));
            continue;
        };
        let lay = reconcile::layout(world, &key, spec, now);
        if now >= sh.deadline {
            let why = format!(
                "timed out after {} with {} of {} sessions replaced; {}",
                humantime::format_duration(sh.timeout),
                sh.replaced(world, team),
                sh.total,
                waiting_for(world, &key, spec, &lay, now)
            );
            plan.intents.push(step(Step::Fail(why)));
            continue;
        }
        if let Some(reason) = world.frozen_reason(&key) {
            plan.intents
                .push(step(Step::Fail(format!("{key} is frozen ({reason})"))));
            continue;
        }
        let before = world
            .role_sessions(&key)
            .any(|s| s.state.is_live() && s.uid <= sh.cutoff);
        let ready = lay
            .occupants
            .values()
            .all(|s| health::ready(s, spec, world.watching_since, now));
        if !before && ready && lay.settled() {
            plan.intents.push(step(Step::RoleDone));
        } else {
            plan.wake(sh.deadline);
        }
    }
}

/// What a shift that ran out of time was waiting for, in words.
fn waiting_for(world: &World, key: &RoleKey, spec: &RoleSpec, lay: &Layout, now: Time) -> String {
    if let Some(s) = lay.surges.values().next() {
        return match s.state {
            SessionState::Pending => format!("{} (uid {}) was still starting", s.key, s.uid),
            _ if health::check(s, spec, world.watching_since, now).is_some() => {
                format!("{} (uid {}) had sent no heartbeat", s.key, s.uid)
            }
            _ => format!("{} (uid {}) was not ready", s.key, s.uid),
        };
    }
    if let Some(at) = world.roles.get(key).and_then(|h| h.next_restart_at)
        && at > now
    {
        return format!("{key} was in crash-loop backoff");
    }
    format!("{key} was not ready")
}

fn role_list(team: &TeamSpec, roles: &[String], world: &World) -> String {
    roles
        .iter()
        .map(|name| {
            let n = team
                .role(name)
                .map(|r| {
                    world
                        .role_sessions(&team.role_key(r))
                        .filter(|s| s.state.is_live())
                        .count()
                })
                .unwrap_or(0);
            format!("{name} ({n})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl World {
    /// The running shift of a team, if any.
    pub fn shifting(&self, team: &TeamKey) -> Option<&Shift> {
        self.shifts.get(team).filter(|s| s.is_running())
    }

    /// A shift for `marvel restart`: as [`World::start_shift`], but each
    /// successor resumes its slot's work (runs the role's `resume`).
    pub fn start_restart(
        &mut self,
        team: &TeamKey,
        only: Option<&str>,
        timeout: Duration,
        now: Time,
    ) -> Result<(u64, Event), Refused> {
        let started = self.start_shift(team, only, timeout, now)?;
        if let Some(sh) = self.shifts.get_mut(team) {
            sh.resume = true;
        }
        Ok(started)
    }

    /// Starts a shift of `team` (or of its role `only`), which must end
    /// within `timeout`. Returns its id and the event.
    pub fn start_shift(
        &mut self,
        team: &TeamKey,
        only: Option<&str>,
        timeout: Duration,
        now: Time,
    ) -> Result<(u64, Event), Refused> {
        let Some(record) = self.teams.get(team) else {
            return Err(Refused {
                message: format!("team {team} is not applied"),
                help: None,
            });
        };
        if let Some(sh) = self.shifting(team) {
            return Err(Refused {
                message: format!(
                    "team {team} is already shifting ({}, {} of {} sessions replaced)",
                    sh.current_role().unwrap_or("-"),
                    sh.replaced(self, team),
                    sh.total
                ),
                help: Some(format!(
                    "wait for it to end, or stop it with `marvel shift {team} --abort`"
                )),
            });
        }
        let roles: Vec<String> = order(&record.spec)
            .into_iter()
            .filter(|r| only.is_none_or(|o| o == r))
            .collect();
        if roles.is_empty() {
            return Err(Refused {
                message: format!("team {team} has no role {:?}", only.unwrap_or_default()),
                help: None,
            });
        }
        for name in &roles {
            let key = team.role(&crate::domain::spec::Name::new(name).expect("a declared name"));
            if let Some(reason) = self.frozen_reason(&key) {
                return Err(Refused {
                    message: format!(
                        "role {key} is frozen ({reason}); a shift would start nothing"
                    ),
                    help: Some(format!("run `marvel reset role {key}` to restart it")),
                });
            }
        }
        let cutoff = self.next_uid;
        let total = self
            .sessions
            .values()
            .filter(|s| s.state.is_live() && s.key.team() == *team && roles.contains(&s.key.role))
            .count() as u32;
        let message = format!(
            "shift started: {}; one session at a time, within {}",
            role_list(&record.spec, &roles, self),
            humantime::format_duration(timeout)
        );
        self.next_shift += 1;
        let id = self.next_shift;
        self.shifts.insert(
            team.clone(),
            Shift {
                id,
                roles,
                index: 0,
                cutoff,
                total,
                started_at: now,
                timeout,
                deadline: after(now, timeout),
                outcome: None,
                ended_at: None,
                resume: false,
            },
        );
        Ok((id, Event::new(now, EventKind::ShiftStarted, team, message)))
    }

    /// Stops a running shift where it is. Sessions already replaced stay;
    /// a successor still starting is stopped by the next plan, and the
    /// sessions not yet replaced keep running.
    pub fn abort_shift(&mut self, team: &TeamKey, why: &str, now: Time) -> Option<Event> {
        let replaced = self.shifting(team)?.replaced(self, team);
        let sh = self.shifts.get_mut(team)?;
        let message = format!(
            "shift aborted ({why}) with {replaced} of {} sessions replaced",
            sh.total
        );
        sh.outcome = Some(Outcome::Aborted(why.to_string()));
        sh.ended_at = Some(now);
        Some(Event::new(now, EventKind::ShiftAborted, team, message))
    }

    /// Carries out one step of a running shift.
    pub fn shift_step(&mut self, team: &TeamKey, step: Step, now: Time) -> Vec<Event> {
        let Some(replaced) = self.shifting(team).map(|sh| sh.replaced(self, team)) else {
            return Vec::new();
        };
        let sh = self.shifts.get_mut(team).expect("checked above");
        match step {
            Step::RoleDone => {
                sh.index += 1;
                if sh.index < sh.roles.len() {
                    return Vec::new();
                }
                sh.outcome = Some(Outcome::Completed);
                sh.ended_at = Some(now);
                vec![Event::new(
                    now,
                    EventKind::ShiftCompleted,
                    team,
                    format!(
                        "shift completed: {} sessions replaced in {}",
                        sh.total,
                        human_span(now - sh.started_at)
                    ),
                )]
            }
            Step::Fail(reason) => {
                let message = format!(
                    "shift failed: {reason}; {replaced} of {} sessions replaced, the others keep running",
                    sh.total
                );
                sh.outcome = Some(Outcome::Failed(reason));
                sh.ended_at = Some(now);
                vec![Event::new(now, EventKind::ShiftFailed, team, message)]
            }
        }
    }

    /// A session died and its role was charged a crash: a new session of
    /// the role being shifted fails the shift rather than blocking it.
    pub(crate) fn shift_on_crash(&mut self, s: &Session, why: &str, now: Time) -> Vec<Event> {
        let team = s.key.team();
        let Some(sh) = self.shifting(&team) else {
            return Vec::new();
        };
        if sh.current_role() != Some(s.key.role.as_str()) || s.uid <= sh.cutoff {
            return Vec::new();
        }
        let reason = format!("new session {} (uid {}) crashed ({why})", s.key, s.uid);
        self.shift_step(&team, Step::Fail(reason), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::health::HealthState;
    use crate::domain::spec::{Failures, Health, NonZeroSpan, Span};
    use crate::domain::state::Heartbeat;
    use crate::domain::world::sim::*;

    const MIN: Duration = Duration::from_secs(60);

    fn team_key() -> TeamKey {
        "demo/squad".parse().unwrap()
    }

    fn uids(sim: &Sim, role: &str) -> Vec<u64> {
        let mut v: Vec<u64> = sim.live(role).iter().map(|s| s.uid).collect();
        v.sort();
        v
    }

    fn running(sim: &Sim, role: &str) -> usize {
        sim.live(role)
            .iter()
            .filter(|s| s.state == SessionState::Running)
            .count()
    }

    fn shift(sim: &Sim) -> &Shift {
        &sim.world.shifts[&team_key()]
    }

    fn start(sim: &mut Sim, only: Option<&str>, timeout: Duration) {
        let (_, ev) = sim
            .world
            .start_shift(&team_key(), only, timeout, sim.now)
            .expect("shift starts");
        sim.events.push(ev);
    }

    #[test]
    fn roles_go_in_manifest_order_with_shift_last_ones_after() {
        let mut lead = role("lead", 1);
        lead.shift_last = true;
        let t = team(vec![lead, role("a", 1), role("b", 1)]);
        assert_eq!(order(&t), vec!["a", "b", "lead"]);
    }

    #[test]
    fn a_shift_starts_the_successor_first_and_stops_the_old_one_once_it_runs() {
        let mut sim = Sim::new();
        sim.auto_start = false;
        sim.apply(team(vec![role("w", 3)]));
        sim.settle();
        sim.start_pending();
        sim.settle();
        let old = uids(&sim, "w");
        start(&mut sim, None, MIN);
        // One surge at a time, in slot order; nothing old stops yet.
        let acts = sim.settle();
        assert_eq!(
            acts,
            vec![Intent::Spawn {
                role: sim.rk("w"),
                slot: 0
            }]
        );
        assert_eq!(sim.live("w").len(), 4);
        assert_eq!(running(&sim, "w"), 3);
        assert!(sim.settle().is_empty(), "waits for the successor to run");
        for _ in 0..3 {
            sim.start_pending();
            sim.settle();
            assert!(sim.live("w").len() <= 4);
            assert!(running(&sim, "w") >= 3);
        }
        assert_eq!(shift(&sim).outcome, Some(Outcome::Completed));
        let now = uids(&sim, "w");
        assert_eq!(now.len(), 3);
        assert!(now.iter().all(|u| !old.contains(u)), "{now:?} vs {old:?}");
        let mut slots: Vec<u32> = sim.live("w").iter().map(|s| s.key.slot).collect();
        slots.sort();
        assert_eq!(slots, vec![0, 1, 2]);
        let kinds: Vec<EventKind> = sim.events.iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&EventKind::ShiftStarted));
        assert!(kinds.contains(&EventKind::ShiftCompleted));
        assert!(plan_is_empty(&sim));
    }

    fn plan_is_empty(sim: &Sim) -> bool {
        reconcile::intents(&sim.world, sim.now).intents.is_empty()
    }

    #[test]
    fn roles_are_shifted_one_after_the_other() {
        let mut sim = Sim::new();
        let mut lead = role("lead", 1);
        lead.shift_last = true;
        sim.apply(team(vec![lead, role("w", 2)]));
        sim.settle();
        let lead_before = uids(&sim, "lead");
        start(&mut sim, None, MIN);
        // auto_start: each surge runs at once, so the whole shift settles;
        // check the order from the spawns.
        sim.auto_start = false;
        sim.settle();
        assert_eq!(shift(&sim).current_role(), Some("w"));
        assert_eq!(uids(&sim, "lead"), lead_before, "the last role waits");
        for _ in 0..2 {
            sim.start_pending();
            sim.settle();
        }
        assert_eq!(shift(&sim).current_role(), Some("lead"));
        sim.start_pending();
        sim.settle();
        assert_eq!(shift(&sim).outcome, Some(Outcome::Completed));
        assert_ne!(uids(&sim, "lead"), lead_before);
    }

    #[test]
    fn a_heartbeat_role_waits_for_its_successor_to_report() {
        let mut sim = Sim::new();
        let mut w = role("w", 1);
        w.health = Some(Health::Heartbeat {
            timeout: NonZeroSpan::from_millis(100),
            failures: Failures::new(3).unwrap(),
        });
        sim.apply(team(vec![w]));
        sim.settle();
        let old = uids(&sim, "w")[0];
        sim.world.heartbeat(old, sim.now, Heartbeat::default());
        sim.settle();
        start(&mut sim, None, MIN);
        sim.at(10).settle();
        let new = *uids(&sim, "w").iter().find(|u| **u != old).unwrap();
        assert_eq!(sim.world.sessions[&new].state, SessionState::Running);
        assert!(sim.at(20).settle().is_empty(), "running is not enough");
        assert_eq!(uids(&sim, "w"), vec![old, new]);
        sim.world.heartbeat(new, sim.now, Heartbeat::default());
        sim.settle();
        assert_eq!(uids(&sim, "w"), vec![new]);
        assert_eq!(sim.world.sessions[&new].health, HealthState::Healthy);
        assert_eq!(shift(&sim).outcome, Some(Outcome::Completed));
    }

    #[test]
    fn a_crash_of_a_new_session_fails_the_shift_and_the_old_ones_keep_running() {
        let mut sim = Sim::new();
        sim.auto_start = false;
        sim.apply(team(vec![role("w", 3)]));
        sim.settle();
        sim.start_pending();
        sim.settle();
        let old = uids(&sim, "w");
        start(&mut sim, None, MIN);
        sim.settle();
        let surge = *uids(&sim, "w").iter().find(|u| !old.contains(u)).unwrap();
        sim.world.started(surge, 9, sim.now);
        let ev = sim.world.on_exit(
            surge,
            crate::domain::state::Exit::code(3, sim.now),
            sim.now,
            0.0,
        );
        let failed = ev
            .iter()
            .find(|e| e.kind == EventKind::ShiftFailed)
            .expect("a shift-failed event");
        assert!(
            failed.message.contains("crashed (exit 3)"),
            "{}",
            failed.message
        );
        assert!(matches!(&shift(&sim).outcome, Some(Outcome::Failed(r)) if r.contains("exit 3")));
        assert_eq!(sim.history("w").restarts, 1, "counted as a crash");
        // Nothing more is replaced, even after the backoff: the old
        // sessions keep running and the marker goes once the backoff ends.
        sim.at(10_000).settle();
        assert_eq!(uids(&sim, "w"), old);
        assert_eq!(sim.markers(), 0);
    }

    fn slow_to_be_ready() -> Sim {
        let mut sim = Sim::new();
        let mut w = role("w", 1);
        w.ready_after = Span::from_millis(500);
        sim.apply(team(vec![w]));
        sim.settle();
        start(&mut sim, None, MIN);
        sim.settle();
        sim
    }

    #[test]
    fn a_successor_is_ready_exactly_ready_after_its_start() {
        let mut sim = slow_to_be_ready();
        assert_eq!(sim.live("w").len(), 2, "the successor runs beside");
        assert_eq!(
            reconcile::intents(&sim.world, sim.now).wake_at,
            Some(t(500))
        );
        assert!(sim.at(499).settle().is_empty());
        assert_eq!(sim.live("w").len(), 2);
        let acts = sim.at(500).settle();
        assert!(matches!(
            acts[0],
            Intent::Stop {
                reason: reconcile::StopReason::Replaced,
                ..
            }
        ));
        assert_eq!(shift(&sim).outcome, Some(Outcome::Completed));
    }

    #[test]
    fn a_successor_that_dies_before_it_is_ready_takes_nothing_with_it() {
        let mut sim = slow_to_be_ready();
        let old = uids(&sim, "w")[0];
        let new = uids(&sim, "w")[1];
        sim.at(499);
        sim.world.on_exit(
            new,
            crate::domain::state::Exit::code(3, sim.now),
            sim.now,
            0.0,
        );
        sim.settle();
        assert!(matches!(shift(&sim).outcome, Some(Outcome::Failed(_))));
        assert_eq!(uids(&sim, "w"), vec![old]);
    }

    #[test]
    fn a_crash_of_an_old_session_does_not_fail_the_shift() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 2)]));
        sim.settle();
        sim.auto_start = false;
        start(&mut sim, None, MIN);
        sim.settle();
        // Slot 0 has its successor starting; slot 1's old session crashes.
        sim.die("w", 1, 1);
        assert!(shift(&sim).is_running());
        sim.at(100).settle();
        sim.start_pending();
        sim.settle();
        sim.start_pending();
        sim.settle();
        assert_eq!(shift(&sim).outcome, Some(Outcome::Completed));
        assert_eq!(sim.live("w").len(), 2);
    }

    #[test]
    fn the_shift_fails_at_its_deadline_and_not_before() {
        let mut sim = Sim::new();
        sim.auto_start = false;
        sim.apply(team(vec![role("w", 2)]));
        sim.settle();
        sim.start_pending();
        sim.settle();
        let old = uids(&sim, "w");
        start(&mut sim, None, Duration::from_millis(500));
        let p = reconcile::intents(&sim.world, sim.now);
        assert_eq!(p.wake_at, Some(t(500)));
        sim.settle();
        assert!(sim.at(499).settle().is_empty());
        assert!(shift(&sim).is_running());
        sim.at(500).settle();
        let reason = shift(&sim).reason().unwrap().to_string();
        assert!(
            reason
                .starts_with("timed out after 500ms with 0 of 2 sessions replaced; demo/squad/w-0")
                && reason.ends_with("was still starting"),
            "{reason}"
        );
        // The successor that never started is stopped; the old ones stay.
        assert_eq!(uids(&sim, "w"), old);
        assert!(plan_is_empty(&sim));
    }

    #[test]
    fn abort_stops_the_successor_in_flight_and_keeps_what_was_replaced() {
        let mut sim = Sim::new();
        sim.auto_start = false;
        sim.apply(team(vec![role("w", 3)]));
        sim.settle();
        sim.start_pending();
        sim.settle();
        let old = uids(&sim, "w");
        start(&mut sim, None, MIN);
        sim.settle();
        sim.start_pending();
        sim.settle(); // slot 0 replaced, slot 1's successor spawned
        assert_eq!(sim.live("w").len(), 4);
        let ev = sim
            .world
            .abort_shift(&team_key(), "on request", sim.now)
            .unwrap();
        assert_eq!(ev.kind, EventKind::ShiftAborted);
        assert_eq!(
            ev.message,
            "shift aborted (on request) with 1 of 3 sessions replaced"
        );
        let acts = sim.settle();
        assert_eq!(acts.len(), 1, "{acts:?}");
        assert!(matches!(
            acts[0],
            Intent::Stop {
                reason: reconcile::StopReason::Superfluous,
                ..
            }
        ));
        let now = uids(&sim, "w");
        assert_eq!(now.len(), 3);
        assert_eq!(now.iter().filter(|u| old.contains(u)).count(), 2);
        assert!(
            sim.live("w")
                .iter()
                .all(|s| s.state == SessionState::Running)
        );
        assert_eq!(
            sim.world.role_state(&sim.rk("w"), sim.now),
            crate::domain::world::RoleState::Ready
        );
        assert!(
            sim.world
                .abort_shift(&team_key(), "again", sim.now)
                .is_none()
        );
    }

    #[test]
    fn abort_keeps_the_serving_session_even_before_it_counts_as_ready() {
        let mut sim = Sim::new();
        let mut w = role("w", 1);
        w.ready_after = Span::from_millis(500);
        sim.apply(team(vec![w]));
        sim.settle();
        let old = uids(&sim, "w")[0];
        sim.auto_start = false;
        start(&mut sim, None, MIN);
        sim.at(10).settle();
        sim.start_pending();
        // Neither has run for 500 ms: the one that was serving stays.
        sim.world.abort_shift(&team_key(), "test", sim.now);
        sim.settle();
        assert_eq!(uids(&sim, "w"), vec![old]);
    }

    #[test]
    fn a_second_shift_and_a_frozen_role_are_refused() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 1)]));
        sim.settle();
        sim.auto_start = false;
        start(&mut sim, None, MIN);
        let err = sim
            .world
            .start_shift(&team_key(), None, MIN, sim.now)
            .unwrap_err();
        assert!(err.message.contains("already shifting"), "{err:?}");
        sim.world.abort_shift(&team_key(), "test", sim.now);
        sim.settle();
        sim.auto_start = true;
        for _ in 0..4 {
            sim.die("w", 0, 1);
            sim.now = sim.history("w").next_restart_at.unwrap_or(sim.now);
            sim.settle();
        }
        assert!(sim.history("w").frozen.is_some());
        let err = sim
            .world
            .start_shift(&team_key(), None, MIN, sim.now)
            .unwrap_err();
        assert!(err.message.contains("is frozen"), "{err:?}");
        assert_eq!(
            err.help.as_deref(),
            Some("run `marvel reset role demo/squad/w` to restart it")
        );
    }

    #[test]
    fn shifting_one_role_leaves_the_others_alone() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("a", 2), role("b", 2)]));
        sim.settle();
        let (a, b) = (uids(&sim, "a"), uids(&sim, "b"));
        start(&mut sim, Some("b"), MIN);
        sim.settle();
        assert_eq!(shift(&sim).outcome, Some(Outcome::Completed));
        assert_eq!(uids(&sim, "a"), a);
        assert!(uids(&sim, "b").iter().all(|u| !b.contains(u)));
        // A later full shift replaces both: nothing is left behind.
        let (a, b) = (uids(&sim, "a"), uids(&sim, "b"));
        start(&mut sim, None, MIN);
        sim.settle();
        assert!(uids(&sim, "a").iter().all(|u| !a.contains(u)));
        assert!(uids(&sim, "b").iter().all(|u| !b.contains(u)));
        assert_eq!(sim.live("a").len() + sim.live("b").len(), 4);
    }

    #[test]
    fn deleting_the_team_ends_its_shift() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 1)]));
        sim.settle();
        sim.auto_start = false;
        start(&mut sim, None, MIN);
        sim.settle();
        sim.world.delete_team(&team_key(), sim.now);
        sim.settle();
        assert!(sim.world.shifts.is_empty());
        assert!(sim.world.sessions.is_empty());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::domain::spec::{Failures, Health, NonZeroSpan};
    use crate::domain::state::{Exit, Heartbeat};
    use crate::domain::world::sim::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn team_key() -> TeamKey {
        "demo/squad".parse().unwrap()
    }

    fn live_of(sim: &Sim, role: &str) -> Vec<Session> {
        sim.live(role).into_iter().cloned().collect()
    }

    fn running(sim: &Sim, role: &str) -> usize {
        sim.live(role)
            .iter()
            .filter(|s| s.state == SessionState::Running)
            .count()
    }

    /// Starts the pending sessions picked by `mask` (bit i: the i-th).
    fn start_some(sim: &mut Sim, mask: u8) {
        let pending: Vec<u64> = sim
            .world
            .sessions
            .values()
            .filter(|s| s.state == SessionState::Pending)
            .map(|s| s.uid)
            .collect();
        for (i, uid) in pending.into_iter().enumerate() {
            if mask & (1 << (i % 8)) != 0 {
                sim.world.started(uid, 1, sim.now);
            }
        }
    }

    fn beat_all(sim: &mut Sim) {
        let uids: Vec<u64> = sim
            .world
            .sessions
            .values()
            .filter(|s| s.state == SessionState::Running)
            .map(|s| s.uid)
            .collect();
        for uid in uids {
            sim.world.heartbeat(uid, sim.now, Heartbeat::default());
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Start(u8),
        Advance(i64),
        Beat,
        Crash { role: usize, pick: usize, code: i32 },
        Kill { role: usize, pick: usize },
        Abort,
        Shift,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(Op::Start),
            3 => (1i64..400).prop_map(Op::Advance),
            2 => Just(Op::Beat),
            1 => (0usize..2, 0usize..8, 0i32..2).prop_map(|(role, pick, code)| Op::Crash { role, pick, code }),
            1 => (0usize..2, 0usize..8).prop_map(|(role, pick)| Op::Kill { role, pick }),
            1 => Just(Op::Abort),
            1 => Just(Op::Shift),
        ]
    }

    const ROLES: [&str; 2] = ["a", "b"];

    fn setup(n: (u32, u32), health: bool, last: bool) -> Sim {
        let mut sim = Sim::new();
        let mut a = role("a", n.0);
        a.shift_last = last;
        a.max_restarts = None;
        // `a` is a job: a clean exit ends its slot (when the test exits 0).
        a.restart = crate::domain::spec::RestartPolicy::OnFailure;
        let mut b = role("b", n.1);
        if health {
            b.health = Some(Health::Heartbeat {
                timeout: NonZeroSpan::from_millis(300),
                failures: Failures::new(2).unwrap(),
            });
        }
        sim.apply(team(vec![a, b]));
        sim.settle();
        beat_all(&mut sim);
        sim.settle();
        sim.auto_start = false;
        sim
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Without crashes, a shift never leaves a role with fewer running
        /// sessions than its replicas, nor more than one extra live
        /// session, and it ends with every session replaced.
        #[test]
        fn without_crashes_a_shift_never_drops_below_replicas(
            n in (1u32..4, 1u32..4),
            health in any::<bool>(),
            last in any::<bool>(),
            ops in proptest::collection::vec(prop_oneof![
                any::<u8>().prop_map(Op::Start),
                (1i64..100).prop_map(Op::Advance),
            ], 1..60),
        ) {
            let mut sim = setup(n, health, last);
            let before: Vec<u64> = sim.world.sessions.keys().copied().collect();
            sim.world.start_shift(&team_key(), None, Duration::from_secs(3600), sim.now).unwrap();
            let mut ms = 0;
            let check = |sim: &Sim| -> Result<(), TestCaseError> {
                for (r, want) in ROLES.iter().zip([n.0, n.1]) {
                    prop_assert!(running(sim, r) >= want as usize, "{} running < {} in {r}", running(sim, r), want);
                    prop_assert!(sim.live(r).len() <= want as usize + 1, "more than one surge in {r}");
                }
                Ok(())
            };
            sim.settle();
            check(&sim)?;
            for op in ops {
                match op {
                    Op::Start(mask) => start_some(&mut sim, mask),
                    Op::Advance(d) => { ms += d; sim.at(ms); }
                    _ => unreachable!(),
                }
                // Heartbeats keep coming, as from a healthy program.
                beat_all(&mut sim);
                sim.settle();
                check(&sim)?;
            }
            for _ in 0..20 {
                start_some(&mut sim, u8::MAX);
                beat_all(&mut sim);
                sim.settle();
                check(&sim)?;
            }
            prop_assert_eq!(sim.world.shifts[&team_key()].outcome.clone(), Some(Outcome::Completed));
            for (r, want) in ROLES.iter().zip([n.0, n.1]) {
                let live = live_of(&sim, r);
                prop_assert_eq!(live.len(), want as usize);
                prop_assert!(live.iter().all(|s| !before.contains(&s.uid)), "an old session of {r} is left");
            }
        }

        /// With crashes, kills, aborts and time running out: never more
        /// than one extra live session per role, every shift ends by its
        /// deadline, and once it has ended each slot holds one session.
        #[test]
        fn any_sequence_keeps_the_blast_radius_and_ends_every_shift(
            n in (1u32..4, 1u32..4),
            health in any::<bool>(),
            last in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let mut sim = setup(n, health, last);
            let timeout = Duration::from_millis(2_000);
            sim.world.start_shift(&team_key(), None, timeout, sim.now).unwrap();
            sim.settle();
            let mut ms = 0;
            for op in ops {
                match op {
                    Op::Start(mask) => start_some(&mut sim, mask),
                    Op::Advance(d) => { ms += d; sim.at(ms); }
                    Op::Beat => beat_all(&mut sim),
                    Op::Crash { role, pick, code } => {
                        let live = live_of(&sim, ROLES[role]);
                        if !live.is_empty() {
                            let uid = live[pick % live.len()].uid;
                            sim.world.on_exit(uid, Exit::code(code, sim.now), sim.now, 0.0);
                        }
                    }
                    Op::Kill { role, pick } => {
                        let live = live_of(&sim, ROLES[role]);
                        if !live.is_empty() {
                            sim.world.stop(live[pick % live.len()].uid, sim.now);
                        }
                    }
                    Op::Abort => { sim.world.abort_shift(&team_key(), "test", sim.now); }
                    Op::Shift => { let _ = sim.world.start_shift(&team_key(), None, timeout, sim.now); }
                }
                // A finished slot never gets another session.
                let done: Vec<(String, BTreeSet<u32>)> = ROLES
                    .iter()
                    .map(|r| (r.to_string(), sim.history(r).done_slots.clone()))
                    .collect();
                for a in sim.settle() {
                    if let Intent::Spawn { role, slot } = a {
                        let (_, d) = done.iter().find(|(r, _)| *r == role.role).unwrap();
                        prop_assert!(!d.contains(&slot), "spawned into finished slot {slot} of {}", role.role);
                    }
                }
                prop_assert!(reconcile::intents(&sim.world, sim.now).intents.is_empty());
                for (r, want) in ROLES.iter().zip([n.0, n.1]) {
                    prop_assert!(sim.live(r).len() <= want as usize + 1, "more than one surge in {r}");

                    let ended = sim.world.shifting(&team_key()).is_none();
                    let generation = sim.history(r).generation;
                    let rolling = sim.live(r).iter().any(|s| s.generation != generation);
                    if ended && !rolling {
                        prop_assert!(sim.live(r).len() <= want as usize, "a surge left behind in {r}");
                    }
                }
            }
            // Past any deadline every shift has ended, and with every
            // session started the team settles with one session per slot.
            sim.at(ms + 60_000);
            sim.settle();
            prop_assert!(sim.world.shifting(&team_key()).is_none(), "a shift outlived its deadline");
            for r in ROLES {
                sim.world.reset_role(&sim.rk(r), sim.now);
            }
            for _ in 0..10 {
                start_some(&mut sim, u8::MAX);
                beat_all(&mut sim);
                sim.settle();
            }
            for (r, want) in ROLES.iter().zip([n.0, n.1]) {
                let live = live_of(&sim, r);
                prop_assert_eq!(live.len(), want as usize, "{:?}", live);
                let mut slots: Vec<u32> = live.iter().map(|s| s.key.slot).collect();
                slots.sort();
                slots.dedup();
                prop_assert_eq!(slots.len(), want as usize, "two sessions share a slot");
            }
        }
    }
}
