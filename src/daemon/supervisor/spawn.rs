//! How a session becomes a spawn request: the pane runs marvel's shim,
//! which runs the role's command, with the session's environment.

use std::collections::BTreeMap;

use crate::domain::spec::RoleSpec;
use crate::domain::state::Session;
use crate::substrate::{LogReports, Place, SpawnRequest};

use super::Setup;

/// The environment every pane gets, on top of the role's own `env`.
pub fn env(setup: &Setup, s: &Session, spec: &RoleSpec) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = spec.env.clone().into();
    env.insert("MARVEL_SESSION".into(), s.key.to_string());
    env.insert("MARVEL_SESSION_UID".into(), s.uid.to_string());
    env.insert("MARVEL_ROLE".into(), s.key.role().to_string());
    env.insert("MARVEL_TEAM".into(), s.key.team().to_string());
    env.insert("MARVEL_WORKSPACE".into(), s.key.workspace.clone());
    env.insert(
        crate::paths::HOME_ENV.into(),
        setup.paths.root.display().to_string(),
    );
    if let Some(sock) = &setup.tmux_socket {
        env.insert(crate::paths::TMUX_SOCKET_ENV.into(), sock.clone());
    }
    env
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
        reports: Some(LogReports {
            state_dir: setup.paths.root.clone(),
            quiet: quiet_after(spec),
        }),
        owner: setup.owner_tag(),
        status: "…".into(),
    }
}
