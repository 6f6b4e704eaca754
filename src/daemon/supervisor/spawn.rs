//! How a session becomes a spawn request: the pane runs marvel's shim,
//! which runs the role's command, with the session's environment.

use std::collections::BTreeMap;

use crate::domain::spec::RoleSpec;
use crate::domain::state::Session;
use crate::substrate::{Place, SpawnRequest};

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
    env
}

/// The spawn request of one pending session, placed at `place`.
pub fn request(setup: &Setup, s: &Session, spec: &RoleSpec, place: Place) -> SpawnRequest {
    SpawnRequest {
        place,
        window_name: super::workspace::window_name(&s.key, spec),
        key: s.key.to_string(),
        uid: s.uid,
        argv: crate::shim::shim_argv(
            &setup.marvel_bin,
            s.uid,
            &setup.paths.root,
            spec.cwd.as_deref(),
            &spec.command,
        ),
        env: env(setup, s, spec),
        cwd: spec.cwd.clone().map(Into::into),
        log: Some(setup.paths.session_log(s.uid)),
        owner: setup.owner_tag(),
        status: "…".into(),
    }
}
