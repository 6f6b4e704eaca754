//! Builds the records `get` and `describe` return from the world. Read-only:
//! nothing here changes state, and nothing here renders text: the client
//! does (`crate::output`).

use crate::domain::health::{self, HealthState};
use crate::domain::key::{self, RoleKey, TeamKey};
use crate::domain::policy;
use crate::domain::reconcile;
use crate::domain::state::{Exit, RoleHistory, Session, SessionState, Time, World};
use crate::domain::world::RoleState;
use crate::proto::Filter;
use crate::view::{
    DescribeView, EventView, ExitView, ProblemKind, ProblemView, RoleDescription, RoleView,
    SessionDescription, SessionView, ShiftView, TeamDescription, TeamState, TeamView,
};

fn exit_view(e: &Exit) -> ExitView {
    ExitView {
        code: e.code,
        signal: e.signal,
        at: e.at,
        reason: e.reason(),
    }
}

fn passes(filter: &Filter, workspace: &str, team: &str) -> bool {
    filter.workspace.as_deref().is_none_or(|w| w == workspace)
        && filter.team.as_deref().is_none_or(|t| t == team)
}

/// Does `key` pass the filter's keys: it is one of them or lies under one.
/// (The key is spelled out only when there are keys to match.)
fn passes_keys(filter: &Filter, key: &impl std::fmt::Display) -> bool {
    filter.keys.is_empty() || {
        let key = key.to_string();
        filter.keys.iter().any(|q| key::under(&key, q))
    }
}

/// The problems `status` reports about roles and sessions: frozen,
/// failed, in backoff, unhealthy (the daemon's and tmux's own are the
/// caller's).
pub fn problems(world: &World, now: Time) -> Vec<ProblemView> {
    let mut out = Vec::new();
    for key in world.role_keys() {
        let Some(r) = role(world, &key, now) else {
            continue;
        };
        let last = r
            .last_exit
            .as_ref()
            .map_or_else(String::new, |e| format!(", last: {}", e.reason));
        let (kind, message, hint) = match r.state {
            RoleState::Frozen => (
                ProblemKind::Frozen,
                format!(
                    "role {key} is frozen: {}",
                    r.frozen_reason.clone().unwrap_or_default()
                ),
                format!("run `marvel reset role {key}` to restart it"),
            ),
            RoleState::Failed => (
                ProblemKind::Failed,
                format!("role {key} failed and is not replaced (restart: Never){last}"),
                format!(
                    "`marvel logs {key}` shows what it printed; run `marvel reset role {key}` to restart it"
                ),
            ),
            RoleState::Backoff => (
                ProblemKind::Backoff,
                format!("role {key} is in crash-loop backoff{last}"),
                format!("`marvel logs {key}` shows what it printed"),
            ),
            _ => continue,
        };
        out.push(ProblemView {
            kind,
            key: key.to_string(),
            message,
            hint,
            at: r.next_restart_at,
        });
    }
    for s in world.sessions.values() {
        let spec = world.role_spec(&s.key.role());
        if session_health(world, s, spec, now) == Some(HealthState::Unhealthy) {
            out.push(ProblemView {
                kind: ProblemKind::Unhealthy,
                key: s.key.to_string(),
                message: format!("session {} misses its heartbeats", s.key),
                hint: format!(
                    "`marvel attach {}` to look at it; it is restarted once its heartbeats go stale",
                    s.key
                ),
                at: s.last_heartbeat_at,
            });
        }
    }
    out
}

pub fn session(world: &World, s: &Session, now: Time) -> SessionView {
    session_in_role(world, s, &RoleContext::of(world, s.key.role(), now), now)
}

/// What every session of one role shares in its view, worked out once for
/// the role.
struct RoleContext<'w> {
    key: RoleKey,
    state: RoleState,
    history: Option<&'w RoleHistory>,
    spec: Option<&'w crate::domain::spec::RoleSpec>,
    /// Sessions of an older template, or at or before a running shift's
    /// cutoff, are outdated.
    generation: u64,
    cutoff: Option<u64>,
}

impl<'w> RoleContext<'w> {
    fn of(world: &'w World, key: RoleKey, now: Time) -> RoleContext<'w> {
        let history = world.roles.get(&key);
        RoleContext {
            state: world.role_state(&key, now),
            spec: world.role_spec(&key),
            generation: history.map_or(0, |h| h.generation),
            cutoff: crate::domain::shift::cutoff(world, &key),
            history,
            key,
        }
    }

    /// Whether session key `k` is of this role.
    fn holds(&self, k: &key::SessionKey) -> bool {
        self.key.role == k.role && self.key.team == k.team && self.key.workspace == k.workspace
    }

    /// Is this live session due to be replaced: does it run an older
    /// template of its role, or predate the shift now replacing its role?
    fn outdated(&self, s: &Session) -> bool {
        s.generation != self.generation || self.cutoff.is_some_and(|c| s.uid <= c)
    }
}

fn session_in_role(world: &World, s: &Session, role: &RoleContext, now: Time) -> SessionView {
    let h = role.history;
    let next = h
        .and_then(|h| h.next_restart_at)
        .filter(|t| *t > now && h.is_some_and(|h| h.frozen.is_none()));
    // A live session's pane, or the pane that still shows an ended one.
    let shown = s.state.is_live()
        || world
            .kept
            .get(&s.key)
            .is_some_and(|k| k.uid == s.uid && Some(&k.pane) == s.pane.as_ref());
    SessionView {
        key: s.key.to_string(),
        workspace: s.key.workspace.clone(),
        team: s.key.team.clone(),
        role: s.key.role.clone(),
        slot: s.key.slot,
        state: s.state.into(),
        pane: s.pane.clone().filter(|_| shown),
        pid: s.pid.filter(|_| s.state.is_live()),
        restarts: s.restarts + u32::from(s.state == SessionState::Crashed),
        last_restart_at: if s.state == SessionState::Crashed {
            s.exit.as_ref().map(|e| e.at)
        } else {
            s.last_restart_at
        },
        created_at: s.created_at,
        started_at: s.started_at,
        exit: s.exit.as_ref().map(exit_view),
        role_state: role.state,
        next_restart_at: next,
        frozen_reason: h.and_then(|h| h.frozen.as_ref().map(|f| f.reason.clone())),
        last_output: s.last_output.clone(),
        tmux_session: Some(s.tmux_session.clone()).filter(|_| shown),
        uid: s.uid,
        health: session_health(world, s, role.spec, now).map(Into::into),
        last_heartbeat_at: s.last_heartbeat_at,
        context_pct: s.heartbeat.context_pct,
        heartbeat_note: s.heartbeat.note.clone(),
        outdated: s.state.is_live() && role.outdated(s),
        worktree: s.worktree.as_ref().map(|w| w.path.display().to_string()),
        branch: s.worktree.as_ref().and_then(|w| w.branch.clone()),
        activity: crate::domain::activity::shown(s).map(|(a, _)| a),
        activity_since: crate::domain::activity::shown(s).map(|(_, t)| t),
    }
}

/// The health of a live session of a role with a heartbeat check, worked
/// out now (a session still starting is unknown).
fn session_health(
    world: &World,
    s: &Session,
    spec: Option<&crate::domain::spec::RoleSpec>,
    now: Time,
) -> Option<HealthState> {
    let spec = spec?;
    spec.health?;
    if !s.state.is_live() {
        return None;
    }
    Some(
        health::check(s, spec, world.watching_since, now).map_or(HealthState::Unknown, |c| c.state),
    )
}

/// A team's running or last shift.
pub fn shift(world: &World, key: &TeamKey) -> Option<ShiftView> {
    let sh = world.shifts.get(key)?;
    Some(ShiftView {
        id: sh.id,
        state: sh.state(),
        roles: sh.roles.clone(),
        role: sh.current_role().map(str::to_string),
        replaced: sh.replaced(world, key),
        total: sh.total,
        started_at: sh.started_at,
        deadline: sh.deadline,
        ended_at: sh.ended_at,
        reason: sh.reason().map(str::to_string),
    })
}

pub fn sessions(world: &World, filter: &Filter, now: Time) -> Vec<SessionView> {
    // What the sessions of a role share is worked out once per role: the
    // records come sorted by key, so a role's sessions come together.
    let mut role: Option<RoleContext> = None;
    world
        .all_session_records()
        .into_iter()
        .filter(|s| passes(filter, &s.key.workspace, &s.key.team))
        .filter(|s| passes_keys(filter, &s.key))
        .map(|s| {
            let ctx = match role.take() {
                Some(ctx) if ctx.holds(&s.key) => ctx,
                _ => RoleContext::of(world, s.key.role(), now),
            };
            let view = session_in_role(world, s, &ctx, now);
            role = Some(ctx);
            view
        })
        .collect()
}

pub fn role(world: &World, key: &RoleKey, now: Time) -> Option<RoleView> {
    let spec = world.role_spec(key)?;
    let default = RoleHistory::default();
    let h = world.roles.get(key).unwrap_or(&default);
    let running = reconcile::layout(world, key, spec, now).running();
    Some(RoleView {
        key: key.to_string(),
        workspace: key.workspace.clone(),
        team: key.team.clone(),
        role: key.role.clone(),
        desired: spec.replicas.get(),
        running,
        state: world.role_state(key, now),
        restarts: h.restarts,
        last_restart_at: h.last_crash_at.filter(|_| h.restarts > 0),
        crashes_in_window: policy::crashes_in_window(h, spec.window.get(), now),
        max_restarts: spec.max_restarts,
        window_ms: spec.window.get().as_millis() as u64,
        next_restart_at: h.next_restart_at.filter(|t| *t > now && h.frozen.is_none()),
        frozen_reason: h.frozen.as_ref().map(|f| f.reason.clone()),
        frozen_at: h.frozen.as_ref().map(|f| f.at),
        last_exit: h
            .marker
            .as_ref()
            .and_then(|m| m.exit.as_ref())
            .map(exit_view),
        command: spec.command.to_vec(),
        restart: spec.restart,
    })
}

pub fn roles(world: &World, filter: &Filter, now: Time) -> Vec<RoleView> {
    world
        .role_keys()
        .iter()
        .filter(|k| passes(filter, &k.workspace, &k.team))
        .filter(|k| passes_keys(filter, k))
        .filter_map(|k| role(world, k, now))
        .collect()
}

pub fn team(world: &World, key: &TeamKey, now: Time) -> Option<TeamView> {
    let record = world.teams.get(key)?;
    let roles: Vec<RoleView> = record
        .spec
        .roles
        .iter()
        .filter_map(|r| role(world, &record.spec.role_key(r), now))
        .collect();
    let state = if roles.iter().all(|r| r.state == RoleState::Stopped) {
        TeamState::Stopped
    } else if roles.iter().all(|r| {
        matches!(
            r.state,
            RoleState::Ready | RoleState::Succeeded | RoleState::Stopped
        )
    }) {
        TeamState::Ready
    } else if roles.iter().any(|r| {
        matches!(
            r.state,
            RoleState::Frozen | RoleState::Backoff | RoleState::Failed
        )
    }) {
        TeamState::Degraded
    } else {
        TeamState::Progressing
    };
    Some(TeamView {
        key: key.to_string(),
        workspace: key.workspace.clone(),
        team: key.team.clone(),
        roles: roles.len() as u32,
        desired: roles.iter().map(|r| r.desired).sum(),
        running: roles.iter().map(|r| r.running).sum(),
        state,
        applied_at: record.applied_at,
        shift: shift(world, key),
    })
}

pub fn teams(world: &World, filter: &Filter, now: Time) -> Vec<TeamView> {
    world
        .teams
        .keys()
        .filter(|k| passes(filter, &k.workspace, &k.team))
        .filter(|k| passes_keys(filter, k))
        .filter_map(|k| team(world, k, now))
        .collect()
}

/// `describe session`: the session's record and its recent events.
pub fn describe_session(
    world: &World,
    s: &Session,
    events: Vec<EventView>,
    now: Time,
) -> DescribeView {
    DescribeView::Session(SessionDescription {
        session: session(world, s, now),
        events,
    })
}

/// `describe role`: the role's record, the rest of its spec, every session
/// record of it, and its recent events.
pub fn describe_role(
    world: &World,
    key: &RoleKey,
    events: Vec<EventView>,
    now: Time,
) -> Option<DescribeView> {
    let role = role(world, key, now)?;
    let spec = world.role_spec(key)?;
    let sessions = world
        .all_session_records()
        .into_iter()
        .filter(|s| s.key.is_of(key))
        .map(|s| session(world, s, now))
        .collect();
    Some(DescribeView::Role(RoleDescription {
        role,
        cwd: spec.cwd.clone().map(Into::into),
        backoff: spec.backoff,
        reset_after: spec.reset_after.get(),
        sessions,
        events,
    }))
}

/// `describe team`: the team's record, its roles, and its recent events.
pub fn describe_team(
    world: &World,
    key: &TeamKey,
    events: Vec<EventView>,
    now: Time,
) -> Option<DescribeView> {
    let team = team(world, key, now)?;
    let filter = Filter {
        workspace: Some(team.workspace.clone()),
        team: Some(team.team.clone()),
        keys: Vec::new(),
    };
    Some(DescribeView::Team(TeamDescription {
        roles: roles(world, &filter, now),
        team,
        events,
    }))
}
