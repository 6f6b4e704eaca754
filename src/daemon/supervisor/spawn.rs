//! How a session becomes a spawn request: the pane runs marvel's shim,
//! which runs the role's command (its `resume` for a restart), with the
//! session's environment, in its worktree when it has one.

use std::collections::BTreeMap;

use crate::domain::spec::RoleSpec;
use crate::domain::state::Session;
use crate::substrate::{LogReports, Place, SpawnRequest};

use super::Setup;

/// The environment every pane gets, on top of the role's own `env`.
pub fn env(setup: &Setup, s: &Session, spec: &RoleSpec) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = spec.env.clone().into();
    use crate::paths::{ROLE_ENV, SESSION_ENV, SESSION_UID_ENV, TEAM_ENV, WORKSPACE_ENV};
    env.insert(SESSION_ENV.into(), s.key.to_string());
    env.insert(SESSION_UID_ENV.into(), s.uid.to_string());
    env.insert(ROLE_ENV.into(), s.key.role().to_string());
    env.insert(TEAM_ENV.into(), s.key.team().to_string());
    env.insert(WORKSPACE_ENV.into(), s.key.workspace.clone());
    env.insert(
        crate::paths::HOME_ENV.into(),
        setup.paths.root.display().to_string(),
    );
    if let Some(sock) = &setup.tmux_socket {
        env.insert(crate::paths::TMUX_SOCKET_ENV.into(), sock.clone());
    }
    let (restarts, previous) = s
        .restart
        .as_ref()
        .map_or((0, ""), |r| (r.count, r.previous_exit.as_str()));
    env.insert("MARVEL_RESTARTS".into(), restarts.to_string());
    env.insert("MARVEL_PREVIOUS_EXIT".into(), previous.to_string());
    env
}

/// What the session runs: the role's `resume` when it restarts a slot
/// and the role has one, else its `command`.
pub fn command<'a>(s: &Session, spec: &'a RoleSpec) -> &'a [String] {
    match (&s.restart, &spec.resume) {
        (Some(_), Some(resume)) => resume,
        _ => &spec.command,
    }
}

/// How long the log pipe waits after the last output before it says the
/// output stopped: a quarter of `idle_after` (so the daemon, which times
/// the rest, hears of it well before the session turns idle), at least
/// 50 ms and at most 5 s. Each report is one short connection, and a pipe
/// sends at most two per such quiet spell.
pub fn quiet_after(spec: &RoleSpec) -> std::time::Duration {
    (spec.idle_after.get() / 4).clamp(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(5),
    )
}

/// Where the session's program starts: its worktree, or the role's `cwd`.
fn cwd<'a>(s: &'a Session, spec: &'a RoleSpec) -> Option<&'a std::path::Path> {
    match &s.worktree {
        Some(w) => Some(w.path.as_path()),
        None => spec.cwd.as_deref(),
    }
}

/// The spawn request of one pending session, placed at `place`.
pub fn request(setup: &Setup, s: &Session, spec: &RoleSpec, place: Place) -> SpawnRequest {
    let cwd = cwd(s, spec);
    let role_env: BTreeMap<String, String> = spec.env.clone().into();
    let env_keys: Vec<&str> = role_env.keys().map(String::as_str).collect();
    SpawnRequest {
        place,
        window_name: super::workspace::window_name(&s.key, spec),
        key: s.key.to_string(),
        uid: s.uid,
        argv: crate::shim::shim_argv(
            &setup.marvel_bin,
            s.uid,
            &setup.paths.root,
            cwd,
            &env_keys,
            command(s, spec),
        ),
        env: env(setup, s, spec),
        cwd: cwd.map(Into::into),
        log: Some(setup.paths.session_log(s.uid)),
        reports: Some(LogReports {
            state_dir: setup.paths.root.clone(),
            quiet: quiet_after(spec),
        }),
        owner: setup.owner_tag(),
        status: "…".into(),
    }
}

/// The same session run by the shim that stays in its slot's kept pane.
pub fn next_run(setup: &Setup, s: &Session, spec: &RoleSpec) -> crate::shim::NextRun {
    crate::shim::NextRun {
        uid: s.uid,
        argv: command(s, spec).to_vec(),
        cwd: cwd(s, spec).map(Into::into),
        env: env(setup, s, spec),
        quiet_ms: quiet_after(spec).as_millis() as u64,
    }
}
