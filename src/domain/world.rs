//! Transitions of the whole [`World`]: apply, scale, delete, reset, spawn
//! bookkeeping and deaths. Each returns the events it caused. The crash-loop
//! decisions themselves are delegated to `policy`; what to do next is left
//! to `reconcile`.

use crate::domain::event::{Event, EventKind};
use crate::domain::key::{RoleKey, TeamKey};
use crate::domain::policy::{self, Verdict};
use crate::domain::reconcile::{self, RoleChange};
use crate::domain::spec::{Replicas, RoleSpec, TeamSpec};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::domain::health;
use crate::domain::state::{
    Exit, Restart, RoleHistory, Session, SessionState, TeamRecord, Time, World,
};

impl World {
    /// The declared spec of a role, if its team declares it.
    pub fn role_spec(&self, key: &RoleKey) -> Option<&RoleSpec> {
        self.teams.get(&key.team())?.spec.role(&key.role)
    }

    /// Every declared role's spec by its workspace, team and role names: a
    /// pass over thousands of sessions finds each one's spec without
    /// building a key per session.
    pub fn specs_by_name(&self) -> HashMap<(&str, &str, &str), &RoleSpec> {
        self.teams
            .values()
            .flat_map(|t| {
                t.spec.roles.iter().map(move |r| {
                    let names = (
                        t.spec.workspace.as_str(),
                        t.spec.name.as_str(),
                        r.name.as_str(),
                    );
                    (names, r)
                })
            })
            .collect()
    }

    /// Every declared role key, in team then manifest order.
    pub fn role_keys(&self) -> Vec<RoleKey> {
        self.teams
            .values()
            .flat_map(|t| t.spec.roles.iter().map(|r| t.spec.role_key(r)))
            .collect()
    }

    /// Applies a team declared by the manifest `source` (if it came from
    /// one). Unchanged roles are untouched; a policy change clears the
    /// role's history (un-freezing it) and leaves its sessions running; a
    /// changed template clears it too and starts a new generation, whose
    /// sessions replace the old ones; removed roles lose their history at
    /// once and their sessions are stopped by the next plan.
    pub fn apply(
        &mut self,
        team: TeamSpec,
        source: Option<PathBuf>,
        now: Time,
    ) -> (Vec<(RoleKey, RoleChange)>, Vec<Event>) {
        let key = team.key();
        let old = self.teams.get(&key).map(|t| &t.spec);
        let changes = reconcile::diff(old, &team);
        let mut events = Vec::new();
        for (role, change) in &changes {
            match change {
                RoleChange::Created => {
                    let h = self.roles.entry(role.clone()).or_default();
                    policy::reset(h);
                    h.generation += 1;
                    events.push(Event::new(now, EventKind::Applied, role, "role created"));
                }
                RoleChange::Updated { fields } | RoleChange::Replaced { fields } => {
                    let replaced = matches!(change, RoleChange::Replaced { .. });
                    let h = self.roles.entry(role.clone()).or_default();
                    let was_frozen = h.frozen.is_some();
                    policy::reset(h);
                    let what = if replaced {
                        h.generation += 1;
                        "replicas will be replaced"
                    } else {
                        "applied in place, sessions keep running"
                    };
                    if fields.contains(&"command") {
                        // A new program starts fresh: nothing to resume.
                        h.slot_runs.clear();
                    }
                    let unfrozen = if was_frozen { ", role un-frozen" } else { "" };
                    let msg = format!(
                        "changed {}: {what}; crash-loop history cleared{unfrozen}",
                        fields.join(", ")
                    );
                    events.push(Event::new(now, EventKind::Applied, role, msg));
                }
                RoleChange::Scaled { from, to } => {
                    events.push(Event::new(
                        now,
                        EventKind::Scaled,
                        role,
                        format!("replicas {from} → {to}"),
                    ));
                }
                RoleChange::Removed => {
                    self.roles.remove(role);
                    events.push(Event::new(
                        now,
                        EventKind::Deleted,
                        role,
                        "role removed from the manifest",
                    ));
                }
                RoleChange::Unchanged => {}
            }
        }
        match self.teams.get_mut(&key) {
            Some(t) if t.spec == team => {
                if source.is_some() {
                    t.source = source;
                }
            }
            _ => {
                let source = source.or_else(|| self.teams.get(&key).and_then(|t| t.source.clone()));
                self.teams.insert(
                    key,
                    TeamRecord {
                        spec: team,
                        applied_at: now,
                        source,
                    },
                );
            }
        }
        (changes, events)
    }

    /// The manifest file that owns team `key`, when it is another than
    /// `source`: a team belongs to the file that declared it.
    pub fn owned_elsewhere(&self, key: &TeamKey, source: Option<&Path>) -> Option<&Path> {
        let owner = self.teams.get(key)?.source.as_deref()?;
        source.filter(|s| *s != owner).map(|_| owner)
    }

    /// Stops or starts a role on request: a stopped role keeps its
    /// declaration and history, its sessions are stopped by the next plan
    /// (never a crash) and nothing is spawned for it until it is started.
    /// Returns the event, or `None` when it already was so.
    pub fn set_stopped(&mut self, key: &RoleKey, stopped: bool, now: Time) -> Option<Event> {
        self.role_spec(key)?;
        let h = self.roles.entry(key.clone()).or_default();
        if h.stopped == stopped {
            return None;
        }
        h.stopped = stopped;
        let msg = if stopped {
            "role stopped on request: its sessions stop, none is started until `marvel start`"
        } else {
            "role started on request"
        };
        Some(Event::new(now, EventKind::Stopped, key, msg))
    }

    /// Whether role `key` is stopped on request.
    pub fn is_stopped(&self, key: &RoleKey) -> bool {
        self.roles.get(key).is_some_and(|h| h.stopped)
    }

    /// Removes a team: its roles' histories and markers go at once, its
    /// sessions are stopped by the next plan.
    pub fn delete_team(&mut self, key: &TeamKey, now: Time) -> Option<Event> {
        let record = self.teams.remove(key)?;
        self.shifts.remove(key);
        for role in &record.spec.roles {
            self.roles.remove(&record.spec.role_key(role));
        }
        Some(Event::new(now, EventKind::Deleted, key, "team deleted"))
    }

    /// Sets a role's replicas; returns the previous number.
    pub fn scale(&mut self, key: &RoleKey, replicas: Replicas, now: Time) -> Option<(u32, Event)> {
        let team = self.teams.get_mut(&key.team())?;
        let role = team
            .spec
            .roles
            .iter_mut()
            .find(|r| r.name.as_str() == key.role)?;
        let from = role.replicas.get();
        role.replicas = replicas;
        Some((
            from,
            Event::new(
                now,
                EventKind::Scaled,
                key,
                format!("replicas {from} → {replicas}"),
            ),
        ))
    }

    /// `marvel reset role`: clears the count, backoff, frozen state, marker
    /// and finished slots. Idempotent; always reports what it did.
    pub fn reset_role(&mut self, key: &RoleKey, now: Time) -> Event {
        let h = self.roles.entry(key.clone()).or_default();
        let was_frozen = h.frozen.is_some();
        let had = policy::reset(h);
        // A reset starts every slot afresh: nothing is resumed.
        h.slot_runs.clear();
        // Succeeded sessions of the role give their slots back too.
        self.sessions
            .retain(|_, s| !(s.key.is_of(key) && s.state == SessionState::Succeeded));
        let msg = match (was_frozen, had) {
            (true, _) => "role reset: un-frozen, crash-loop history cleared",
            (false, true) => "role reset: crash-loop history cleared",
            (false, false) => "role reset: nothing to clear",
        };
        Event::new(now, EventKind::Reset, key, msg)
    }

    /// Records a session about to be spawned in `slot`; returns its uid.
    pub fn begin_spawn(&mut self, role: &RoleKey, slot: u32, now: Time) -> u64 {
        let h = self.roles.entry(role.clone()).or_default();
        let restarts = h.slot_restarts.get(&slot).copied().unwrap_or(0);
        let last_restart_at = h
            .marker
            .as_ref()
            .filter(|m| m.key.slot == slot)
            .and_then(|m| m.exit.as_ref().map(|e| e.at))
            .or(if restarts > 0 { h.last_crash_at } else { None });
        let generation = h.generation;
        let restart = self.begin_restart(role, slot);
        let uid = self.new_uid();
        let key = role.session(slot);
        self.sessions.insert(
            uid,
            Session {
                uid,
                tmux_session: String::new(),
                window: None,
                key,
                generation,
                state: SessionState::Pending,
                pane: None,
                pane_pid: None,
                pid: None,
                created_at: now,
                started_at: None,
                restarts,
                last_restart_at,
                exit: None,
                last_output: Vec::new(),
                last_heartbeat_at: None,
                heartbeat: Default::default(),
                health: Default::default(),
                restart,
                worktree: None,
                activity: Default::default(),
                rerun_of: None,
            },
        );
        uid
    }

    /// Whether a start in `slot` now is a restart, and its count: after the
    /// slot's last run ended (a death, `kill`, `restart` of a session), or
    /// beside a run that `marvel restart` of a role or team replaces. Any
    /// other start (the first, a shift's, a rollout's) is fresh.
    fn begin_restart(&mut self, role: &RoleKey, slot: u32) -> Option<Restart> {
        let replacing = self
            .shifts
            .get(&role.team())
            .filter(|sh| sh.resume && sh.current_role() == Some(role.role.as_str()))
            .is_some_and(|sh| {
                self.sessions.values().any(|s| {
                    s.key.is_of(role)
                        && s.key.slot == slot
                        && s.state.is_live()
                        && s.uid <= sh.cutoff
                })
            });
        let runs = self
            .roles
            .entry(role.clone())
            .or_default()
            .slot_runs
            .entry(slot)
            .or_default();
        let previous = runs
            .ended
            .take()
            .or_else(|| replacing.then(|| "restarted".to_string()));
        match previous {
            Some(previous_exit) => {
                runs.restarts = runs.restarts.saturating_add(1);
                Some(Restart {
                    count: runs.restarts,
                    previous_exit,
                })
            }
            None => {
                runs.restarts = 0;
                None
            }
        }
    }

    /// The run `s` of its slot ended (`how`, as `MARVEL_PREVIOUS_EXIT`
    /// says it): the slot's next start is a restart, unless a newer run
    /// holds the slot already.
    pub fn note_end(&mut self, s: &Session, how: String) {
        let newer = self
            .sessions
            .values()
            .any(|o| o.key == s.key && o.uid > s.uid && o.state.is_live());
        if let Some(h) = self.roles.get_mut(&s.key.role())
            && !newer
        {
            h.slot_runs.entry(s.key.slot).or_default().ended = Some(how);
        }
    }

    /// The pane of a pending session exists. A program whose start was
    /// reported before this (the report can overtake the answer to the
    /// spawn) runs from now on.
    pub fn spawned(
        &mut self,
        uid: u64,
        pane: String,
        pane_pid: u32,
        window: Option<String>,
    ) -> Option<Event> {
        let s = self.sessions.get_mut(&uid)?;
        s.pane = Some(pane);
        s.pane_pid = Some(pane_pid);
        s.window = window;
        match (s.state, s.pid, s.started_at) {
            (SessionState::Pending, Some(pid), Some(at)) => Some(run(s, pid, at)),
            _ => None,
        }
    }

    /// The pane could not be created (tmux failed): forget the attempt,
    /// and what its start took from the slot's memory.
    pub fn spawn_failed(&mut self, uid: u64) -> Option<Session> {
        let s = self.sessions.remove(&uid)?;
        let occupied = self
            .sessions
            .values()
            .any(|o| o.key == s.key && o.state.is_live());
        if let Some(r) = &s.restart
            && let Some(h) = self.roles.get_mut(&s.key.role())
        {
            let runs = h.slot_runs.entry(s.key.slot).or_default();
            runs.restarts = r.count.saturating_sub(1);
            if !occupied {
                runs.ended = Some(r.previous_exit.clone());
            }
        }
        Some(s)
    }

    /// The shim reports the program runs as `pid`. The session is running
    /// once its pane is known as well: until then nobody could reach it.
    pub fn started(&mut self, uid: u64, pid: u32, at: Time) -> Option<Event> {
        let s = self.sessions.get_mut(&uid)?;
        s.pid = Some(pid);
        s.rerun_of = None;
        if s.state != SessionState::Pending {
            return None;
        }
        s.started_at = Some(at);
        s.pane.is_some().then(|| run(s, pid, at))
    }

    /// A live session ended without being asked to. Unknown or already
    /// ended sessions are ignored (reports may arrive twice).
    pub fn on_exit(&mut self, uid: u64, exit: Exit, now: Time, sample: f64) -> Vec<Event> {
        match self.sessions.get(&uid) {
            Some(s) if s.state.is_live() => {}
            _ => return Vec::new(),
        }
        let mut s = self.sessions.remove(&uid).expect("checked above");
        let role_key = s.key.role();
        let Some(spec) = self.role_spec(&role_key).cloned() else {
            return vec![Event::new(
                now,
                EventKind::Stopped,
                &s.key,
                format!("ended ({}) after its role was removed", exit.reason()),
            )];
        };
        self.note_end(&s, exit.brief());
        let h = self.roles.entry(role_key.clone()).or_default();
        h.remember_run(&s, exit.at.min(now));
        // The backoff and the budget window count from the instant of death,
        // not from when the daemon heard of it (it may have been away).
        let died = exit.at.min(now);
        let verdict = policy::on_death(
            h,
            &spec,
            s.key.slot,
            &exit,
            policy::cause_of(&exit),
            died,
            sample,
        );
        let runtime = s
            .started_at
            .map(|t| format!(" after {}", human_span(exit.at - t)))
            .unwrap_or_default();
        let reason = exit.reason();
        s.exit = Some(exit);
        let mut events = Vec::new();
        if verdict == Verdict::Succeeded {
            s.state = SessionState::Succeeded;
            events.push(Event::new(
                now,
                EventKind::Succeeded,
                &s.key,
                format!("{reason}{runtime}; not replaced ({:?})", spec.restart),
            ));
            self.sessions.insert(uid, s);
            return events;
        }
        s.state = SessionState::Crashed;
        let charged = !matches!(verdict, Verdict::Uncharged);
        events.push(Event::new(
            now,
            EventKind::Crashed,
            &s.key,
            format!("{reason}{runtime}"),
        ));
        match verdict {
            Verdict::Backoff { n, delay, at } => events.push(Event::new(
                now,
                EventKind::Backoff,
                &role_key,
                format!(
                    "restart {n} in {} (at {})",
                    human_ms(delay),
                    at.format("%H:%M:%S%.3f")
                ),
            )),
            Verdict::Frozen { reason } => events.push(Event::new(
                now,
                EventKind::Frozen,
                &role_key,
                format!("{reason}; run `marvel reset role {role_key}` to restart it"),
            )),
            Verdict::NotReplaced => events.push(Event::new(
                now,
                EventKind::Stopped,
                &s.key,
                "not replaced (restart: Never)",
            )),
            Verdict::Uncharged => {}
            Verdict::AlreadyFrozen | Verdict::Succeeded => {}
        }
        let newer = h.marker.as_ref().is_none_or(|m| {
            (m.exit.as_ref().map(|e| e.at), m.uid) <= (s.exit.as_ref().map(|e| e.at), s.uid)
        });
        if charged {
            events.extend(self.shift_on_crash(&s, &reason, now));
        }
        let h = self.roles.entry(role_key).or_default();
        if newer {
            h.marker = Some(s);
        }
        events
    }

    /// Attaches the last output lines to the session or marker `uid` when it
    /// has none yet (a screen read earlier is better than a log's tail).
    pub fn set_last_output_if_empty(&mut self, uid: u64, lines: Vec<String>) -> bool {
        let empty = self
            .all_session_records()
            .iter()
            .any(|s| s.uid == uid && s.last_output.is_empty());
        if empty {
            self.set_last_output(uid, lines);
        }
        empty
    }

    /// Attaches the last output lines to the session or marker `uid`.
    pub fn set_last_output(&mut self, uid: u64, lines: Vec<String>) {
        if let Some(s) = self.sessions.get_mut(&uid) {
            s.last_output = lines;
            return;
        }
        for h in self.roles.values_mut() {
            if let Some(m) = h.marker.as_mut().filter(|m| m.uid == uid) {
                m.last_output = lines;
                return;
            }
        }
    }

    /// Stops a live session on request (kill, scale-down, removal): it is
    /// forgotten without any charge to its role.
    pub fn stop(&mut self, uid: u64, now: Time) -> Option<Session> {
        let s = self.sessions.remove(&uid)?;
        if let Some(h) = self.roles.get_mut(&s.key.role()) {
            h.remember_run(&s, now);
        }
        Some(s)
    }

    pub fn forgive(&mut self, role: &RoleKey, now: Time) -> Option<Event> {
        let h = self.roles.get_mut(role)?;
        policy::forgive(h);
        Some(Event::new(
            now,
            EventKind::Forgiven,
            role,
            "a replica ran long enough: backoff curve starts again",
        ))
    }

    pub fn clear_marker(&mut self, role: &RoleKey) {
        if let Some(h) = self.roles.get_mut(role) {
            h.marker = None;
        }
    }

    pub fn frozen_reason(&self, role: &RoleKey) -> Option<&str> {
        self.roles
            .get(role)?
            .frozen
            .as_ref()
            .map(|f| f.reason.as_str())
    }

    /// The role's state as `get roles` shows it.
    pub fn role_state(&self, key: &RoleKey, now: Time) -> RoleState {
        let default = RoleHistory::default();
        let h = self.roles.get(key).unwrap_or(&default);
        let Some(spec) = self.role_spec(key) else {
            return RoleState::Progressing;
        };
        if h.stopped || spec.replicas.get() == 0 {
            return RoleState::Stopped;
        }
        if h.frozen.is_some() {
            return RoleState::Frozen;
        }
        if !h.failed_slots.is_empty() {
            return RoleState::Failed;
        }
        let lay = reconcile::layout(self, key, spec, now);
        if lay.wanted == 0 {
            return RoleState::Succeeded;
        }
        if lay.settled()
            && lay
                .occupants
                .values()
                .all(|s| health::came_up(s, spec, now))
        {
            return RoleState::Ready;
        }
        if h.next_restart_at.is_some_and(|t| t > now) {
            return RoleState::Backoff;
        }
        RoleState::Progressing
    }
}

/// Where a role stands, as [`World::role_state`] works it out; its
/// lower-case name is `state` in `get roles -o json`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum RoleState {
    /// Every replica runs (and has settled).
    Ready,
    /// Replicas are being started or replaced.
    Progressing,
    /// Waiting out a crash-loop backoff.
    Backoff,
    /// The restart budget is spent; nothing is spawned until a reset.
    Frozen,
    /// Nothing left to run: every replica succeeded.
    Succeeded,
    /// A replica of a `restart: Never` role failed and is not replaced.
    Failed,
    /// Stopped on request (`marvel stop`), or scaled to 0: nothing runs.
    Stopped,
}

impl RoleState {
    /// The lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A pending session whose program runs and whose pane is known.
fn run(s: &mut Session, pid: u32, at: Time) -> Event {
    s.state = SessionState::Running;
    Event::new(
        at,
        EventKind::Started,
        &s.key,
        format!("running as pid {pid}"),
    )
}

/// A span that may be negative: "-1h" or "2m 3s".
pub fn human_span_signed(d: chrono::Duration) -> String {
    if d < chrono::Duration::zero() {
        format!("-{}", human_span(-d))
    } else {
        human_span(d)
    }
}

/// "2m 3s" style for event text.
pub fn human_span(d: chrono::Duration) -> String {
    human_ms(d.to_std().unwrap_or_default())
}

fn human_ms(d: std::time::Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
    }
}

#[cfg(test)]
pub(crate) mod sim {
    //! A tiny simulator of the daemon for tests: executes plans instantly.
    use super::*;
    use crate::domain::reconcile::{Effect, Intent, Plan, pass};
    use crate::domain::spec::{Backoff, Factor, Jitter, Name, NonZeroSpan, Span, TeamParts};

    pub fn t(ms: i64) -> Time {
        "2026-01-01T00:00:00Z".parse::<Time>().unwrap() + chrono::Duration::milliseconds(ms)
    }

    /// A backoff of `ms` every time: no growth, no jitter.
    pub fn steady(ms: u64) -> Backoff {
        Backoff::new(
            NonZeroSpan::from_millis(ms),
            Span::from_millis(ms),
            Factor::new(1.0).unwrap(),
            Jitter::new(0.0).unwrap(),
        )
        .unwrap()
    }

    pub fn role(name: &str, replicas: u32) -> RoleSpec {
        let mut r = RoleSpec::with_defaults(name, replicas, &["sh"]);
        r.backoff = Backoff::new(
            NonZeroSpan::from_millis(100),
            Span::from_millis(800),
            Factor::new(2.0).unwrap(),
            Jitter::new(0.0).unwrap(),
        )
        .unwrap();
        r.max_restarts = Some(3);
        r.window = NonZeroSpan::from_secs(60);
        r.reset_after = NonZeroSpan::from_secs(10);
        // Successors are ready as soon as they run, unless a test says
        // otherwise.
        r.ready_after = Span::ZERO;
        r
    }

    pub fn team(roles: Vec<RoleSpec>) -> TeamSpec {
        TeamSpec::try_from(TeamParts {
            workspace: Name::new("demo").unwrap(),
            name: Name::new("squad").unwrap(),
            roles,
            notify: Vec::new(),
        })
        .unwrap()
    }

    pub struct Sim {
        pub world: World,
        pub now: Time,
        pub next_pid: u32,
        pub events: Vec<Event>,
        /// Spawned sessions report Started at once unless this is false.
        pub auto_start: bool,
    }

    impl Sim {
        pub fn new() -> Sim {
            Sim {
                world: World::default(),
                now: t(0),
                next_pid: 1000,
                events: Vec::new(),
                auto_start: true,
            }
        }

        pub fn at(&mut self, ms: i64) -> &mut Self {
            self.now = t(ms);
            self
        }

        pub fn apply(&mut self, team: TeamSpec) -> Vec<(RoleKey, RoleChange)> {
            let (changes, ev) = self.world.apply(team, None, self.now);
            self.events.extend(ev);
            changes
        }

        /// Reconciles pass by pass until nothing is left, placing and
        /// (with `auto_start`) starting every spawned session as it goes;
        /// returns the intents applied.
        pub fn settle(&mut self) -> Vec<Intent> {
            let mut all = Vec::new();
            let mut plan = Plan::default();
            for _ in 0..100 {
                let done = pass(&mut self.world, self.now, &mut 0.0, &mut plan);
                for effect in std::mem::take(&mut plan.effects) {
                    if let Effect::Spawn { uid } = effect {
                        let window = Some(format!("@{uid}"));
                        self.world
                            .spawned(uid, format!("%{uid}"), self.next_pid, window);
                        self.next_pid += 2;
                        if self.auto_start {
                            let ev = self.world.started(uid, self.next_pid - 1, self.now);
                            self.events.extend(ev);
                        }
                    }
                }
                self.events.append(&mut plan.events);
                if done.is_empty() {
                    return all;
                }
                all.extend(done);
            }
            panic!("plan did not reach a fixpoint:\n{:#?}", self.world);
        }

        pub fn live(&self, role: &str) -> Vec<&Session> {
            self.world
                .sessions
                .values()
                .filter(|s| s.key.role == role && s.state.is_live())
                .collect()
        }

        pub fn uid_in_slot(&self, role: &str, slot: u32) -> u64 {
            self.live(role)
                .iter()
                .find(|s| s.key.slot == slot)
                .expect("a live session in the slot")
                .uid
        }

        pub fn die(&mut self, role: &str, slot: u32, code: i32) -> Vec<Event> {
            let uid = self.uid_in_slot(role, slot);
            let ev = self
                .world
                .on_exit(uid, Exit::code(code, self.now), self.now, 0.0);
            self.events.extend(ev.clone());
            ev
        }

        pub fn history(&self, role: &str) -> &RoleHistory {
            self.world
                .roles
                .iter()
                .find(|(k, _)| k.role == role)
                .map(|(_, h)| h)
                .unwrap()
        }

        pub fn rk(&self, role: &str) -> RoleKey {
            "demo/squad/x"
                .parse::<RoleKey>()
                .map(|mut k| {
                    k.role = role.into();
                    k
                })
                .unwrap()
        }

        /// Every pending session's shim reports its program running.
        pub fn start_pending(&mut self) {
            let pending: Vec<u64> = self
                .world
                .sessions
                .values()
                .filter(|s| s.state == SessionState::Pending)
                .map(|s| s.uid)
                .collect();
            for uid in pending {
                self.world.started(uid, 1, self.now);
            }
        }

        pub fn markers(&self) -> usize {
            self.world
                .roles
                .values()
                .filter(|h| h.marker.is_some())
                .count()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sim::*;
    use super::*;
    use crate::domain::reconcile::{Intent, StopReason, intents};
    use crate::domain::spec::{Backoff, Command, Factor, Jitter, NonZeroSpan, RestartPolicy, Span};
    use crate::domain::state::ExitDetail;

    fn spawns(actions: &[Intent]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Intent::Spawn { .. }))
            .count()
    }

    #[test]
    fn apply_brings_up_every_replica_and_planning_again_does_nothing() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 3), role("lead", 1)]));
        assert_eq!(spawns(&sim.settle()), 4);
        assert_eq!(intents(&sim.world, sim.now), Default::default());
        assert_eq!(
            sim.world.role_state(&sim.rk("w"), sim.now),
            RoleState::Ready
        );
        // Re-applying the same team changes nothing and spawns nothing.
        let changes = sim.apply(team(vec![role("w", 3), role("lead", 1)]));
        assert!(changes.iter().all(|(_, c)| *c == RoleChange::Unchanged));
        assert!(sim.settle().is_empty());
    }

    #[test]
    fn a_crash_leaves_a_marker_and_the_replacement_waits_for_the_backoff() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 1)]));
        sim.settle();
        sim.at(1000).die("w", 0, 42);
        let h = sim.history("w");
        assert_eq!(
            h.marker.as_ref().unwrap().exit.as_ref().unwrap().code,
            Some(42)
        );
        assert_eq!(h.restarts, 1);
        assert_eq!(h.next_restart_at, Some(t(1100)));
        let p = intents(&sim.world, sim.now);
        assert!(p.intents.is_empty());
        assert_eq!(p.wake_at, Some(t(1100)));
        assert_eq!(
            sim.world.role_state(&sim.rk("w"), sim.now),
            RoleState::Backoff
        );
        // One millisecond before the end: nothing. At the end: the spawn.
        assert!(sim.at(1099).settle().is_empty());
        let acts = sim.at(1100).settle();
        assert_eq!(spawns(&acts), 1);
        // The replacement runs, so the marker went and restarts carried over.
        assert!(acts.contains(&Intent::ClearMarker { role: sim.rk("w") }));
        assert_eq!(sim.markers(), 0);
        assert_eq!(sim.live("w")[0].restarts, 1);
    }

    #[test]
    fn a_start_reported_before_the_pane_is_known_runs_once_it_is() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 1)]));
        let uid = sim.world.begin_spawn(&sim.rk("w"), 0, sim.now);
        let at = sim.at(5).now;
        assert_eq!(sim.world.started(uid, 7, at), None);
        let s = &sim.world.sessions[&uid];
        assert_eq!((s.state, s.pid), (SessionState::Pending, Some(7)));
        let ev = sim
            .world
            .spawned(uid, "%3".into(), 6, None)
            .expect("started now");
        assert_eq!((ev.kind, ev.at), (EventKind::Started, t(5)));
        assert_eq!(sim.world.sessions[&uid].state, SessionState::Running);
        // In the usual order the start is the event, not the pane.
        let other = sim.world.begin_spawn(&sim.rk("w"), 1, sim.now);
        assert_eq!(sim.world.spawned(other, "%4".into(), 8, None), None);
        assert!(sim.world.started(other, 9, sim.now).is_some());
    }

    #[test]
    fn the_marker_stays_until_the_replacement_runs() {
        let mut sim = Sim::new();
        sim.auto_start = false;
        sim.apply(team(vec![role("w", 1)]));
        sim.settle();
        let uid = sim.uid_in_slot("w", 0);
        sim.world.started(uid, 7, sim.now);
        sim.at(10).die("w", 0, 1);
        sim.at(110).settle();
        assert_eq!(sim.markers(), 1, "replacement pending: marker still shown");
        let uid = sim.uid_in_slot("w", 0);
        sim.world.started(uid, 8, sim.now);
        sim.settle();
        assert_eq!(sim.markers(), 0);
    }

    #[test]
    fn simultaneous_deaths_of_all_replicas_leave_one_marker_the_newest() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 3)]));
        sim.settle();
        let newest = sim.uid_in_slot("w", 2);
        for slot in 0..3 {
            sim.at(500).die("w", slot, 1);
        }
        assert_eq!(sim.markers(), 1);
        assert_eq!(sim.history("w").marker.as_ref().unwrap().uid, newest);
        assert_eq!(sim.history("w").restarts, 3);
        // Three crashes: the curve is at step 3 (400 ms).
        assert_eq!(sim.history("w").next_restart_at, Some(t(900)));
        assert_eq!(spawns(&sim.at(900).settle()), 3);
        assert_eq!(sim.live("w").len(), 3);
    }

    #[test]
    fn saturation_freezes_and_only_reset_or_a_spec_change_unfreezes() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 1)]));
        sim.settle();
        // max_restarts 3: crashes 1..=3 back off, the 4th freezes.
        let mut ms = 0;
        for n in 1..=3 {
            let ev = sim.at(ms).die("w", 0, 1);
            assert!(
                ev.iter().any(|e| e.kind == EventKind::Backoff),
                "crash {n} backs off"
            );
            ms = sim.history("w").next_restart_at.unwrap().timestamp_millis()
                - t(0).timestamp_millis();
            assert_eq!(spawns(&sim.at(ms).settle()), 1);
        }
        let ev = sim.at(ms + 5).die("w", 0, 3);
        let frozen = ev
            .iter()
            .find(|e| e.kind == EventKind::Frozen)
            .expect("frozen event");
        assert!(
            frozen.message.starts_with("4 crashes in 1m, last: exit 3"),
            "{}",
            frozen.message
        );
        assert_eq!(
            sim.world.role_state(&sim.rk("w"), sim.now),
            RoleState::Frozen
        );
        // Nothing spawns: not later, not after scaling up, not after re-applying.
        assert!(sim.at(1_000_000).settle().is_empty());
        assert!(intents(&sim.world, sim.now).wake_at.is_none());
        sim.world
            .scale(&sim.rk("w"), Replicas::new(3).unwrap(), sim.now);
        assert!(sim.settle().is_empty());
        sim.apply(team(vec![role("w", 3)]));
        assert!(sim.settle().is_empty());
        assert_eq!(sim.markers(), 1);
        // Reset: spawns at once, marker gone once running.
        sim.world.reset_role(&sim.rk("w"), sim.now);
        assert_eq!(spawns(&sim.settle()), 3);
        assert_eq!(sim.markers(), 0);
        assert_eq!(sim.history("w").restarts, 0);
        // Freeze again, then change the command: un-frozen.
        for _ in 0..4 {
            sim.die("w", 0, 1);
            sim.now = sim.history("w").next_restart_at.unwrap_or(sim.now);
            sim.settle();
        }
        assert!(sim.history("w").frozen.is_some());
        let mut changed = role("w", 3);
        changed.command = Command::new(["bash"]).unwrap();
        let changes = sim.apply(team(vec![changed]));
        assert_eq!(
            changes[0].1,
            RoleChange::Replaced {
                fields: vec!["command"]
            }
        );
        assert!(sim.history("w").frozen.is_none());
        assert!(spawns(&sim.settle()) >= 1);
    }

    #[test]
    fn forgiveness_restarts_the_curve_after_reset_after() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 1)]));
        sim.settle();
        sim.at(0).die("w", 0, 1);
        sim.at(100).settle(); // replacement started at 100 ms
        sim.at(150).die("w", 0, 1); // step 2: 200 ms
        sim.at(350).settle(); // started at 350 ms
        let p = intents(&sim.world, sim.now);
        assert_eq!(p.wake_at, Some(t(10_350)), "forgiveness is scheduled");
        assert!(intents(&sim.world, t(10_349)).intents.is_empty());
        let acts = sim.at(10_350).settle();
        assert_eq!(acts, vec![Intent::Forgive { role: sim.rk("w") }]);
        assert_eq!(sim.history("w").step, 0);
        sim.at(20_000).die("w", 0, 1);
        assert_eq!(
            sim.history("w").next_restart_at,
            Some(t(20_100)),
            "back to initial"
        );
    }

    #[test]
    fn on_failure_exit_zero_succeeds_and_is_not_replaced() {
        let mut sim = Sim::new();
        let mut r = role("job", 2);
        r.restart = RestartPolicy::OnFailure;
        sim.apply(team(vec![r]));
        sim.settle();
        let ev = sim.die("job", 0, 0);
        assert_eq!(ev[0].kind, EventKind::Succeeded);
        assert!(sim.at(100_000).settle().is_empty());
        assert_eq!(
            sim.world
                .sessions
                .values()
                .filter(|s| s.state == SessionState::Succeeded)
                .count(),
            1
        );
        assert_eq!(sim.markers(), 0);
        sim.die("job", 1, 0);
        assert_eq!(
            sim.world.role_state(&sim.rk("job"), sim.now),
            RoleState::Succeeded
        );
    }

    #[test]
    fn never_is_not_replaced_even_on_failure() {
        let mut sim = Sim::new();
        let mut r = role("once", 1);
        r.restart = RestartPolicy::Never;
        sim.apply(team(vec![r]));
        sim.settle();
        sim.die("once", 0, 9);
        assert!(sim.at(100_000).settle().is_empty());
        assert_eq!(sim.markers(), 1);
    }

    #[test]
    fn a_kill_is_replaced_at_once_and_not_counted() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 2)]));
        sim.settle();
        let uid = sim.uid_in_slot("w", 1);
        sim.world.stop(uid, sim.now);
        assert_eq!(spawns(&sim.settle()), 1);
        assert_eq!(sim.history("w").restarts, 0);
        assert_ne!(sim.uid_in_slot("w", 1), uid);
    }

    #[test]
    fn tmux_loss_marks_sessions_without_charging_the_role() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 5)]));
        sim.settle();
        let uids: Vec<u64> = sim.live("w").iter().map(|s| s.uid).collect();
        for uid in uids {
            sim.world.on_exit(
                uid,
                Exit::detail(ExitDetail::TmuxLost, sim.now),
                sim.now,
                0.0,
            );
        }
        assert_eq!(sim.markers(), 1);
        let h = sim.history("w");
        assert!(h.frozen.is_none() && h.restarts == 0 && h.next_restart_at.is_none());
        assert_eq!(spawns(&sim.settle()), 5);
    }

    #[test]
    fn scale_down_stops_the_highest_slots() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 3)]));
        sim.settle();
        let keep = sim.uid_in_slot("w", 0);
        sim.world
            .scale(&sim.rk("w"), Replicas::new(1).unwrap(), sim.now);
        let acts = sim.settle();
        assert_eq!(acts.len(), 2);
        assert!(acts.iter().all(|a| matches!(
            a,
            Intent::Stop {
                reason: StopReason::ScaleDown,
                ..
            }
        )));
        assert_eq!(
            sim.live("w").iter().map(|s| s.uid).collect::<Vec<_>>(),
            vec![keep]
        );
    }

    fn running(sim: &Sim, role: &str) -> usize {
        sim.live(role)
            .iter()
            .filter(|s| s.state == SessionState::Running)
            .count()
    }

    #[test]
    fn a_changed_template_is_rolled_out_one_replica_at_a_time_new_before_old() {
        let mut sim = Sim::new();
        sim.auto_start = false;
        sim.apply(team(vec![role("w", 3), role("other", 1)]));
        sim.settle();
        sim.start_pending();
        let other = sim.uid_in_slot("other", 0);
        let mut changed = role("w", 3);
        changed.env.insert("K".into(), "V".into()).unwrap();
        sim.apply(team(vec![changed, role("other", 1)]));
        let generation = sim.history("w").generation;
        // The successor of slot 0 starts beside the old session.
        let acts = sim.settle();
        assert_eq!(
            acts,
            vec![Intent::Spawn {
                role: sim.rk("w"),
                slot: 0
            }]
        );
        for slot in 0..3 {
            assert_eq!(sim.live("w").len(), 4, "replicas + 1 at most");
            assert_eq!(running(&sim, "w"), 3, "never fewer than replicas");
            assert_eq!(
                sim.world.role_state(&sim.rk("w"), sim.now),
                RoleState::Progressing
            );
            assert!(sim.settle().is_empty(), "waits for the successor to run");
            // The old one stops only once its successor runs; then the
            // next slot's successor starts.
            sim.start_pending();
            let acts = sim.settle();
            assert!(matches!(
                acts[0],
                Intent::Stop {
                    reason: StopReason::Replaced,
                    ..
                }
            ));
            let next: Vec<Intent> = (slot + 1..3)
                .take(1)
                .map(|slot| Intent::Spawn {
                    role: sim.rk("w"),
                    slot,
                })
                .collect();
            assert_eq!(acts[1..], next[..]);
            assert!(running(&sim, "w") >= 3);
        }
        assert!(sim.settle().is_empty());
        assert_eq!(sim.live("w").len(), 3);
        assert!(sim.live("w").iter().all(|s| s.generation == generation));
        assert_eq!(
            sim.world.role_state(&sim.rk("w"), sim.now),
            RoleState::Ready
        );
        assert_eq!(
            sim.uid_in_slot("other", 0),
            other,
            "untouched roles are not disturbed"
        );
    }

    #[test]
    fn a_successor_that_crashes_leaves_the_old_session_serving_and_is_retried_after_backoff() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 1)]));
        sim.settle();
        let old = sim.uid_in_slot("w", 0);
        sim.auto_start = false;
        let mut changed = role("w", 1);
        changed.command = Command::new(["bash"]).unwrap();
        sim.apply(team(vec![changed]));
        sim.settle();
        let new = sim.live("w").iter().map(|s| s.uid).max().unwrap();
        sim.world.started(new, 5, sim.now);
        sim.world.on_exit(new, Exit::code(1, sim.now), sim.now, 0.0);
        assert_eq!(sim.live("w").len(), 1);
        assert_eq!(sim.live("w")[0].uid, old, "the old session keeps serving");
        let p = intents(&sim.world, sim.now);
        assert!(p.intents.is_empty());
        assert_eq!(
            p.wake_at,
            Some(t(100)),
            "the rollout resumes after the backoff"
        );
        assert_eq!(spawns(&sim.at(100).settle()), 1);
        assert_eq!(sim.markers(), 1, "the marker stays until a successor runs");
        sim.start_pending();
        sim.settle();
        assert_eq!(sim.markers(), 0);
        assert_eq!(sim.live("w").len(), 1);
        assert_ne!(sim.live("w")[0].uid, old);
    }

    #[test]
    fn a_successor_that_succeeds_ends_its_slot_without_another_successor() {
        let mut sim = Sim::new();
        let mut r = role("job", 2);
        r.restart = RestartPolicy::OnFailure;
        sim.apply(team(vec![r.clone()]));
        sim.settle();
        let old: Vec<u64> = sim.live("job").iter().map(|s| s.uid).collect();
        sim.auto_start = false;
        r.command = Command::new(["bash"]).unwrap();
        sim.apply(team(vec![r]));
        sim.settle();
        let new = sim.live("job").iter().map(|s| s.uid).max().unwrap();
        sim.world.started(new, 5, sim.now);
        let ev = sim.world.on_exit(new, Exit::code(0, sim.now), sim.now, 0.0);
        assert_eq!(ev[0].kind, EventKind::Succeeded);
        // Slot 0 is done: its old session goes and nothing respawns there;
        // slot 1 is rolled out as usual.
        let acts = sim.settle();
        assert!(acts.contains(&Intent::Stop {
            uid: old[0],
            reason: StopReason::Replaced
        }));
        assert_eq!(
            acts.iter()
                .filter(|a| matches!(a, Intent::Spawn { slot: 0, .. }))
                .count(),
            0,
            "{acts:?}"
        );
        sim.start_pending();
        sim.settle();
        assert!(sim.settle().is_empty());
        let live = sim.live("job");
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].key.slot, 1);
        assert_ne!(live[0].uid, old[1]);
    }

    #[test]
    fn scale_down_stops_the_newest_sessions_whatever_their_slots() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 3)]));
        sim.settle();
        // Slot 0 is replaced after a kill: it is now the newest.
        let middle = sim.uid_in_slot("w", 1);
        sim.world.stop(sim.uid_in_slot("w", 0), sim.now);
        sim.settle();
        sim.world
            .scale(&sim.rk("w"), Replicas::new(1).unwrap(), sim.now);
        let acts = sim.settle();
        assert_eq!(acts.len(), 2);
        assert_eq!(
            sim.live("w").iter().map(|s| s.uid).collect::<Vec<_>>(),
            vec![middle],
            "the oldest session stays, in its slot"
        );
        assert_eq!(
            sim.world.role_state(&sim.rk("w"), sim.now),
            RoleState::Ready
        );
        // Scaling up again fills the lowest free slots.
        sim.world
            .scale(&sim.rk("w"), Replicas::new(3).unwrap(), sim.now);
        sim.settle();
        let mut slots: Vec<u32> = sim.live("w").iter().map(|s| s.key.slot).collect();
        slots.sort();
        assert_eq!(slots, vec![0, 1, 2]);
        assert_eq!(sim.uid_in_slot("w", 1), middle);
    }

    #[test]
    fn a_finished_slot_gives_way_before_a_running_session_on_scale_down() {
        let mut sim = Sim::new();
        let mut r = role("job", 2);
        r.restart = RestartPolicy::OnFailure;
        sim.apply(team(vec![r]));
        sim.settle();
        sim.die("job", 0, 0);
        let running = sim.uid_in_slot("job", 1);
        sim.world
            .scale(&sim.rk("job"), Replicas::new(1).unwrap(), sim.now);
        assert!(sim.settle().is_empty(), "nothing running is stopped");
        assert_eq!(sim.uid_in_slot("job", 1), running);
        assert_eq!(
            sim.world.role_state(&sim.rk("job"), sim.now),
            RoleState::Ready
        );
    }

    #[test]
    fn a_policy_edit_applies_in_place_and_unfreezes_a_template_edit_replaces() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 2)]));
        sim.settle();
        let uids: Vec<u64> = sim.live("w").iter().map(|s| s.uid).collect();
        for _ in 0..4 {
            sim.die("w", 0, 1);
            sim.now = sim.history("w").next_restart_at.unwrap_or(sim.now);
            sim.settle();
        }
        assert!(sim.history("w").frozen.is_some());
        let survivor = sim.uid_in_slot("w", 1);
        assert_eq!(survivor, uids[1]);
        // Policy only: no session is replaced, the history goes.
        let mut edited = role("w", 2);
        edited.max_restarts = Some(9);
        edited.backoff = Backoff::new(
            NonZeroSpan::from_millis(50),
            Span::from_millis(800),
            Factor::new(2.0).unwrap(),
            Jitter::new(0.0).unwrap(),
        )
        .unwrap();
        let changes = sim.apply(team(vec![edited.clone()]));
        assert_eq!(
            changes[0].1,
            RoleChange::Updated {
                fields: vec!["backoff", "max_restarts"]
            }
        );
        let h = sim.history("w");
        assert!(h.frozen.is_none() && h.crashes.is_empty() && h.marker.is_none());
        let acts = sim.settle();
        assert!(
            acts.iter()
                .all(|a| matches!(a, Intent::Spawn { slot: 0, .. })),
            "only the dead slot is filled: {acts:?}"
        );
        assert_eq!(sim.uid_in_slot("w", 1), survivor, "same session, same uid");
        // The program changes: every session is replaced.
        let mut replaced = edited;
        replaced.env.insert("K".into(), "V".into()).unwrap();
        let changes = sim.apply(team(vec![replaced]));
        assert_eq!(
            changes[0].1,
            RoleChange::Replaced {
                fields: vec!["env"]
            }
        );
        sim.settle();
        sim.settle();
        assert!(sim.live("w").iter().all(|s| s.uid > survivor));
    }

    #[test]
    fn a_stopped_role_stops_its_sessions_uncharged_and_stays_stopped_until_started() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 2), role("other", 1)]));
        sim.settle();
        let ev = sim.world.set_stopped(&sim.rk("w"), true, sim.now).unwrap();
        assert_eq!(ev.kind, EventKind::Stopped);
        assert!(sim.world.set_stopped(&sim.rk("w"), true, sim.now).is_none());
        let acts = sim.settle();
        assert_eq!(
            acts.iter()
                .filter(|a| matches!(
                    a,
                    Intent::Stop {
                        reason: StopReason::RoleStopped,
                        ..
                    }
                ))
                .count(),
            2
        );
        assert!(sim.live("w").is_empty());
        assert_eq!(sim.live("other").len(), 1, "other roles are not touched");
        assert_eq!(sim.history("w").restarts, 0, "no budget charged");
        assert_eq!(
            sim.world.role_state(&sim.rk("w"), sim.now),
            RoleState::Stopped
        );
        assert!(sim.at(100_000).settle().is_empty(), "nothing spawns");
        // It survives a restart of the daemon: it is in the saved world.
        let saved: World =
            serde_json::from_str(&serde_json::to_string(&sim.world).unwrap()).unwrap();
        assert!(saved.is_stopped(&sim.rk("w")));
        // A reset or a re-apply does not start it; `start` does.
        sim.world.reset_role(&sim.rk("w"), sim.now);
        sim.apply(team(vec![role("w", 2), role("other", 1)]));
        assert!(sim.settle().is_empty());
        sim.world.set_stopped(&sim.rk("w"), false, sim.now).unwrap();
        assert_eq!(spawns(&sim.settle()), 2);
    }

    #[test]
    fn scaled_to_zero_is_stopped_and_a_failure_under_never_is_failed() {
        let mut sim = Sim::new();
        let mut once = role("once", 1);
        once.restart = RestartPolicy::Never;
        sim.apply(team(vec![role("w", 1), once]));
        sim.settle();
        sim.world
            .scale(&sim.rk("w"), Replicas::new(0).unwrap(), sim.now);
        sim.settle();
        assert_eq!(
            sim.world.role_state(&sim.rk("w"), sim.now),
            RoleState::Stopped,
            "never succeeded"
        );
        sim.die("once", 0, 3);
        assert_eq!(
            sim.world.role_state(&sim.rk("once"), sim.now),
            RoleState::Failed
        );
        sim.world.reset_role(&sim.rk("once"), sim.now);
        sim.settle();
        assert_eq!(
            sim.world.role_state(&sim.rk("once"), sim.now),
            RoleState::Ready
        );
    }

    #[test]
    fn a_role_is_ready_once_each_session_ran_for_ready_after() {
        let mut sim = Sim::new();
        let mut w = role("w", 1);
        w.ready_after = Span::from_millis(500);
        sim.apply(team(vec![w]));
        sim.settle();
        assert_eq!(
            sim.world.role_state(&sim.rk("w"), sim.now),
            RoleState::Progressing
        );
        assert_eq!(
            sim.world.role_state(&sim.rk("w"), t(499)),
            RoleState::Progressing
        );
        assert_eq!(sim.world.role_state(&sim.rk("w"), t(500)), RoleState::Ready);
        // A program that exits after 300 ms never was ready.
        sim.at(300).die("w", 0, 0);
        assert_ne!(sim.world.role_state(&sim.rk("w"), t(600)), RoleState::Ready);
    }

    #[test]
    fn a_team_belongs_to_the_file_that_declared_it() {
        let mut sim = Sim::new();
        let a = PathBuf::from("/teams/a.ron");
        let b = PathBuf::from("/teams/b.ron");
        sim.world
            .apply(team(vec![role("w", 1)]), Some(a.clone()), sim.now);
        let key = team(vec![role("w", 1)]).key();
        assert_eq!(sim.world.owned_elsewhere(&key, Some(&b)), Some(a.as_path()));
        assert_eq!(sim.world.owned_elsewhere(&key, Some(&a)), None);
        assert_eq!(sim.world.owned_elsewhere(&key, None), None);
        // Taken over (forced), it belongs to the new file.
        sim.world
            .apply(team(vec![role("w", 1)]), Some(b.clone()), sim.now);
        assert_eq!(sim.world.owned_elsewhere(&key, Some(&a)), Some(b.as_path()));
    }

    #[test]
    fn the_runs_before_the_current_one_are_kept_for_their_logs() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 1)]));
        sim.settle();
        let first = sim.uid_in_slot("w", 0);
        sim.world.stop(first, sim.now);
        sim.settle();
        let second = sim.uid_in_slot("w", 0);
        sim.at(10).die("w", 0, 1);
        sim.at(1000).settle();
        let third = sim.uid_in_slot("w", 0);
        sim.world.stop(third, sim.now);
        sim.settle();
        let past: Vec<u64> = sim.history("w").past[&0].iter().map(|r| r.uid).collect();
        assert_eq!(past, [second, third], "the newest two, oldest first");
        assert!(sim.world.uids_with_logs().contains(&second));
        assert!(!sim.world.uids_with_logs().contains(&first));
        // A reset keeps them: they are output, not crash-loop history.
        sim.world.reset_role(&sim.rk("w"), sim.now);
        assert_eq!(sim.history("w").past[&0].len(), 2);
    }

    #[test]
    fn removed_roles_and_deleted_teams_leave_nothing() {
        let mut sim = Sim::new();
        sim.apply(team(vec![role("w", 2), role("gone", 2)]));
        sim.settle();
        sim.die("gone", 0, 1);
        let changes = sim.apply(team(vec![role("w", 2)]));
        assert!(changes.contains(&(sim.rk("gone"), RoleChange::Removed)));
        let acts = sim.settle();
        assert_eq!(
            acts.iter()
                .filter(|a| matches!(
                    a,
                    Intent::Stop {
                        reason: StopReason::RoleRemoved,
                        ..
                    }
                ))
                .count(),
            1
        );
        assert!(sim.live("gone").is_empty());
        assert_eq!(sim.markers(), 0);
        sim.die("w", 1, 1);
        let key = sim.rk("w").team();
        sim.world.delete_team(&key, sim.now).unwrap();
        sim.settle();
        assert!(sim.world.sessions.is_empty());
        assert!(sim.world.roles.is_empty());
        assert_eq!(sim.markers(), 0);
    }
}
