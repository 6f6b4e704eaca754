//! Builds the records `get` and `describe` return from the world. Read-only:
//! nothing here changes state.

use std::fmt::Write;

use crate::domain::health::{self, HealthState};
use crate::domain::key::{RoleKey, TeamKey};
use crate::domain::policy;
use crate::domain::reconcile;
use crate::domain::state::{Exit, RoleHistory, Session, SessionState, Time, World};
use crate::proto::Filter;
use crate::view::{EventView, ExitView, RoleView, SessionView, ShiftView, TeamView};

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

pub fn session(world: &World, s: &Session, now: Time) -> SessionView {
    session_with_role_state(world, s, world.role_state(&s.key.role(), now), now)
}

fn session_with_role_state(world: &World, s: &Session, role_state: &str, now: Time) -> SessionView {
    let role = s.key.role();
    let h = world.roles.get(&role);
    let next = h
        .and_then(|h| h.next_restart_at)
        .filter(|t| *t > now && h.is_some_and(|h| h.frozen.is_none()));
    SessionView {
        key: s.key.to_string(),
        workspace: s.key.workspace.clone(),
        team: s.key.team.clone(),
        role: s.key.role.clone(),
        slot: s.key.slot,
        state: s.state.as_str().to_string(),
        pane: s.pane.clone().filter(|_| s.state.is_live()),
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
        role_state: role_state.to_string(),
        next_restart_at: next,
        frozen_reason: h.and_then(|h| h.frozen.as_ref().map(|f| f.reason.clone())),
        last_output: s.last_output.clone(),
        tmux_session: Some(s.tmux_session.clone()).filter(|_| s.state.is_live()),
        uid: s.uid,
        health: session_health(world, s, now).map(|h| h.as_str().to_string()),
        last_heartbeat_at: s.last_heartbeat_at,
        context_pct: s.heartbeat.context_pct,
        heartbeat_note: s.heartbeat.note.clone(),
        outdated: s.state.is_live() && world.outdated(s),
    }
}

/// The health of a live session of a role with a heartbeat check, worked
/// out now (a session still starting is unknown).
fn session_health(world: &World, s: &Session, now: Time) -> Option<HealthState> {
    let spec = world.role_spec(&s.key.role())?;
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
        state: sh.state().to_string(),
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
    // The role's state is the same for all its sessions: work it out once.
    let mut role_states: std::collections::HashMap<RoleKey, &'static str> = Default::default();
    world
        .all_session_records()
        .into_iter()
        .filter(|s| passes(filter, &s.key.workspace, &s.key.team))
        .map(|s| {
            let role = s.key.role();
            let state = *role_states
                .entry(role.clone())
                .or_insert_with(|| world.role_state(&role, now));
            session_with_role_state(world, s, state, now)
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
        state: world.role_state(key, now).to_string(),
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
        restart: format!("{:?}", spec.restart),
    })
}

pub fn roles(world: &World, filter: &Filter, now: Time) -> Vec<RoleView> {
    world
        .role_keys()
        .iter()
        .filter(|k| passes(filter, &k.workspace, &k.team))
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
    let state = if roles
        .iter()
        .all(|r| r.state == "ready" || r.state == "succeeded")
    {
        "ready"
    } else if roles
        .iter()
        .any(|r| r.state == "frozen" || r.state == "backoff")
    {
        "degraded"
    } else {
        "progressing"
    };
    Some(TeamView {
        key: key.to_string(),
        workspace: key.workspace.clone(),
        team: key.team.clone(),
        roles: roles.len() as u32,
        desired: roles.iter().map(|r| r.desired).sum(),
        running: roles.iter().map(|r| r.running).sum(),
        state: state.to_string(),
        applied_at: record.applied_at,
        shift: shift(world, key),
    })
}

pub fn teams(world: &World, filter: &Filter, now: Time) -> Vec<TeamView> {
    world
        .teams
        .keys()
        .filter(|k| passes(filter, &k.workspace, &k.team))
        .filter_map(|k| team(world, k, now))
        .collect()
}

fn ts(t: Option<Time>) -> String {
    t.map_or("-".into(), |t| {
        t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
    })
}

fn push_events(out: &mut String, events: &[EventView]) {
    let _ = writeln!(out, "Events:");
    if events.is_empty() {
        let _ = writeln!(out, "  <none>");
    }
    for e in events {
        let _ = writeln!(
            out,
            "  {}  {:<10} {:<28} {}",
            e.at.format("%H:%M:%S%.3f"),
            e.kind,
            e.key,
            e.message
        );
    }
}

pub fn describe_session(world: &World, s: &Session, events: &[EventView], now: Time) -> String {
    let v = session(world, s, now);
    let mut out = String::new();
    let _ = writeln!(out, "Session:     {}", v.key);
    let _ = writeln!(out, "Role:        {}/{}/{}", v.workspace, v.team, v.role);
    let _ = writeln!(out, "State:       {}", v.state);
    let _ = writeln!(out, "Pane:        {}", v.pane.as_deref().unwrap_or("-"));
    let _ = writeln!(
        out,
        "PID:         {}",
        v.pid.map_or("-".into(), |p| p.to_string())
    );
    let _ = writeln!(
        out,
        "tmux:        {}",
        v.tmux_session.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "Created:     {}", ts(Some(v.created_at)));
    let _ = writeln!(out, "Started:     {}", ts(v.started_at));
    let _ = writeln!(out, "Restarts:    {}", v.restarts);
    if let Some(h) = &v.health {
        let last = v
            .last_heartbeat_at
            .map_or("no heartbeat yet".to_string(), |t| {
                format!("last heartbeat {}", ts(Some(t)))
            });
        let _ = writeln!(out, "Health:      {h} ({last})");
    }
    if let Some(p) = v.context_pct {
        let _ = writeln!(out, "Context:     {p}% used");
    }
    if let Some(n) = &v.heartbeat_note {
        let _ = writeln!(out, "Note:        {n}");
    }
    if v.outdated {
        let _ = writeln!(
            out,
            "Outdated:    yes: replaced once its successor is ready"
        );
    }
    if let Some(e) = &v.exit {
        let _ = writeln!(out, "Exit:        {} at {}", e.reason, ts(Some(e.at)));
    }
    let _ = writeln!(out, "Role state:  {}", v.role_state);
    if let Some(t) = v.next_restart_at {
        let _ = writeln!(out, "Next restart: {}", ts(Some(t)));
    }
    if let Some(r) = &v.frozen_reason {
        let _ = writeln!(out, "Frozen:      {r}");
        let _ = writeln!(
            out,
            "             run `marvel reset role {}` to restart it",
            s.key.role()
        );
    }
    if !v.last_output.is_empty() {
        let _ = writeln!(out, "Last output:");
        for l in &v.last_output {
            let _ = writeln!(out, "  | {l}");
        }
    }
    push_events(&mut out, events);
    out
}

pub fn describe_role(
    world: &World,
    key: &RoleKey,
    events: &[EventView],
    now: Time,
) -> Option<String> {
    let v = role(world, key, now)?;
    let spec = world.role_spec(key)?;
    let mut out = String::new();
    let _ = writeln!(out, "Role:        {}", v.key);
    let _ = writeln!(out, "State:       {}", v.state);
    let _ = writeln!(
        out,
        "Replicas:    {} running / {} desired",
        v.running, v.desired
    );
    let _ = writeln!(out, "Command:     {}", spec.command.join(" "));
    if let Some(cwd) = &spec.cwd {
        let _ = writeln!(out, "Directory:   {}", cwd.display());
    }
    let _ = writeln!(out, "Restart:     {:?}", spec.restart);
    let _ = writeln!(
        out,
        "Backoff:     {} doubling (x{}) to {}, jitter {}%",
        humantime::format_duration(spec.backoff.initial()),
        spec.backoff.factor(),
        humantime::format_duration(spec.backoff.max()),
        (spec.backoff.jitter() * 100.0).round()
    );
    let budget = spec
        .max_restarts
        .map_or("unlimited".into(), |m| m.to_string());
    let _ = writeln!(
        out,
        "Budget:      {} of {} crashes in {}",
        v.crashes_in_window,
        budget,
        humantime::format_duration(spec.window.get())
    );
    let _ = writeln!(
        out,
        "Forgive:     after {} of stable running",
        humantime::format_duration(spec.reset_after.get())
    );
    let _ = writeln!(out, "Restarts:    {}", v.restarts);
    if let Some(t) = v.next_restart_at {
        let _ = writeln!(out, "Next restart: {}", ts(Some(t)));
    }
    if let Some(r) = &v.frozen_reason {
        let _ = writeln!(out, "Frozen:      {r} (since {})", ts(v.frozen_at));
        let _ = writeln!(
            out,
            "             run `marvel reset role {}` to restart it",
            v.key
        );
    }
    if let Some(e) = &v.last_exit {
        let _ = writeln!(out, "Last exit:   {} at {}", e.reason, ts(Some(e.at)));
    }
    let _ = writeln!(out, "Sessions:");
    for s in world
        .all_session_records()
        .into_iter()
        .filter(|s| s.key.is_of(key))
    {
        // A session and its successor share a key: the uid tells them apart.
        let outdated = if s.state.is_live() && world.outdated(s) {
            "  outdated"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:<32} {:<10} {:<6} uid {}{outdated}",
            s.key.to_string(),
            s.state.as_str(),
            s.pane.as_deref().unwrap_or("-"),
            s.uid
        );
    }
    push_events(&mut out, events);
    Some(out)
}

pub fn describe_team(
    world: &World,
    key: &TeamKey,
    events: &[EventView],
    now: Time,
) -> Option<String> {
    let v = team(world, key, now)?;
    let mut out = String::new();
    let _ = writeln!(out, "Team:        {}", v.key);
    let _ = writeln!(out, "State:       {}", v.state);
    let _ = writeln!(out, "Applied:     {}", ts(Some(v.applied_at)));
    let _ = writeln!(
        out,
        "Replicas:    {} running / {} desired",
        v.running, v.desired
    );
    if let Some(sh) = &v.shift {
        let _ = writeln!(out, "Shift:       {}", shift_line(sh));
        let _ = writeln!(
            out,
            "             started {}, deadline {}{}",
            ts(Some(sh.started_at)),
            ts(Some(sh.deadline)),
            sh.ended_at
                .map_or(String::new(), |t| format!(", ended {}", ts(Some(t))))
        );
    }
    let _ = writeln!(out, "Roles:");
    for r in roles(
        world,
        &Filter {
            workspace: Some(v.workspace.clone()),
            team: Some(v.team.clone()),
        },
        now,
    ) {
        let _ = writeln!(
            out,
            "  {:<32} {:<12} {}/{}  restarts {}",
            r.key, r.state, r.running, r.desired, r.restarts
        );
    }
    push_events(&mut out, events);
    Some(out)
}

/// One line on a shift: where it is, or how it ended.
fn shift_line(sh: &ShiftView) -> String {
    let progress = format!("{} of {} sessions replaced", sh.replaced, sh.total);
    match (sh.state.as_str(), &sh.role, &sh.reason) {
        ("running", Some(role), _) => format!(
            "running: {role} ({progress}); order {}",
            sh.roles.join(", ")
        ),
        (state, _, Some(reason)) => format!("{state}: {reason} ({progress})"),
        (state, _, None) => format!("{state} ({progress})"),
    }
}
