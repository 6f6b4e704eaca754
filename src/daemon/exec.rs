//! The daemon's edge helpers: how a session becomes a spawn request, how
//! shim records are read, and how tmux availability is tracked and paced.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::domain::spec::RoleSpec;
use crate::domain::state::{Exit, ExitDetail, Session, Time, World, after};
use crate::paths::Paths;
use crate::proto::ShimReport;
use crate::substrate::{SpawnRequest, SubstrateError};
use crate::view::TmuxView;

use super::Config;

/// The `@marvel` tag on every tmux session this state directory created.
pub fn owner_tag(paths: &Paths) -> String {
    paths.root.display().to_string()
}

/// The environment every pane gets, on top of the role's own `env`.
pub fn session_env(
    paths: &Paths,
    tmux_socket: Option<&str>,
    s: &Session,
    spec: &RoleSpec,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = spec.env.clone().into();
    env.insert("MARVEL_SESSION".into(), s.key.to_string());
    env.insert("MARVEL_SESSION_UID".into(), s.uid.to_string());
    env.insert("MARVEL_ROLE".into(), s.key.role().to_string());
    env.insert("MARVEL_TEAM".into(), s.key.team().to_string());
    env.insert("MARVEL_WORKSPACE".into(), s.key.workspace.clone());
    env.insert(
        crate::paths::HOME_ENV.into(),
        paths.root.display().to_string(),
    );
    if let Some(sock) = tmux_socket {
        env.insert(crate::client::TMUX_SOCKET_ENV.into(), sock.to_string());
    }
    env
}

/// The pane runs marvel's shim, which runs the role's command.
pub fn spawn_request(
    paths: &Paths,
    tmux_socket: Option<&str>,
    s: &Session,
    spec: &RoleSpec,
) -> SpawnRequest {
    let exe = std::env::current_exe().unwrap_or_else(|_| "marvel".into());
    SpawnRequest {
        name: s.tmux_session.clone(),
        argv: crate::shim::shim_argv(&exe, s.uid, &paths.root, &spec.command),
        env: session_env(paths, tmux_socket, s, spec),
        cwd: spec.cwd.clone().map(Into::into),
        log: Some(paths.session_log(s.uid)),
        owner: owner_tag(paths),
    }
}

/// What the shim of spawn `uid` recorded; an unreadable record counts as none.
pub fn read_exit_record(paths: &Paths, uid: u64) -> Option<ShimReport> {
    crate::shim::read_exit_record(paths, uid).ok().flatten()
}

pub fn remove_exit_record(paths: &Paths, uid: u64) {
    let _ = std::fs::remove_file(paths.exit_record(uid));
}

/// Removes exit records and logs of sessions that are neither live nor
/// shown (as a marker or a succeeded session), so neither directory grows
/// without bound under a crash loop.
pub fn prune_exit_records(paths: &Paths, world: &World) {
    let keep: std::collections::BTreeSet<u64> =
        world.all_session_records().iter().map(|s| s.uid).collect();
    let live: std::collections::BTreeSet<u64> = world
        .sessions
        .values()
        .filter(|s| s.state.is_live())
        .map(|s| s.uid)
        .collect();
    let uid_of = |name: &str| name.split('.').next().and_then(|n| n.parse::<u64>().ok());
    if let Ok(dir) = std::fs::read_dir(paths.exits_dir()) {
        for e in dir.flatten() {
            if let Some(uid) = uid_of(&e.file_name().to_string_lossy())
                && !live.contains(&uid)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(paths.logs_dir()) {
        for e in dir.flatten() {
            if let Some(uid) = uid_of(&e.file_name().to_string_lossy())
                && !keep.contains(&uid)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Turns a shim's exit report into an exit record.
pub fn exit_from_report(code: Option<i32>, signal: Option<i32>, at: Time, hangup: bool) -> Exit {
    Exit {
        code,
        signal,
        at,
        detail: if hangup {
            ExitDetail::PaneKilled
        } else {
            ExitDetail::Program
        },
    }
}

/// The last `n` non-blank lines of a captured screen.
pub fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    lines[end.saturating_sub(n)..end]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The last `n` lines of a session's output log.
pub fn log_tail(paths: &Paths, uid: u64, n: usize) -> Vec<String> {
    crate::shim::tail_lines(&paths.session_log(uid), n)
}

/// A jitter sample in [-1, 1]. The only randomness of the daemon.
pub fn jitter() -> f64 {
    fastrand::f64() * 2.0 - 1.0
}

/// How tmux answered last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmuxState {
    Up,
    /// tmux runs but its server did not answer in time: nothing is known
    /// about the panes, and nothing is concluded from the silence.
    Degraded,
    /// tmux cannot be run, or failed.
    Down,
}

/// Whether tmux answers, and when to try again when it does not.
#[derive(Debug, Default)]
pub struct TmuxHealth {
    /// `None` until tmux first answers or fails.
    pub state: Option<TmuxState>,
    pub version: Option<String>,
    pub last_error: Option<String>,
    pub next_retry_at: Option<Time>,
    pub consecutive_failures: u32,
}

impl TmuxHealth {
    pub fn is_up(&self) -> bool {
        self.state == Some(TmuxState::Up)
    }

    /// tmux answered. Without a running `server` nothing proves one can
    /// start, so the failure count (and with it the retry pacing) stays
    /// until something succeeds on a server.
    pub fn success(&mut self, server: bool) {
        self.state = Some(TmuxState::Up);
        self.next_retry_at = None;
        if server {
            self.consecutive_failures = 0;
        }
    }

    /// Records a failure and schedules the next probe with exponential
    /// backoff and jitter.
    pub fn failure(&mut self, err: &SubstrateError, now: Time, cfg: &Config) {
        self.state = Some(match err {
            SubstrateError::Timeout(_) => TmuxState::Degraded,
            _ => TmuxState::Down,
        });
        self.consecutive_failures += 1;
        self.last_error = Some(err.to_string());
        let b = crate::domain::policy::Curve {
            initial: cfg.retry_base,
            max: cfg.retry_max,
            factor: 2.0,
            jitter: cfg.retry_jitter,
        };
        let delay = crate::domain::policy::backoff_delay(&b, self.consecutive_failures, jitter());
        self.next_retry_at = Some(after(now, delay));
    }

    pub fn retry_due(&self, now: Time) -> bool {
        self.state.is_some() && !self.is_up() && self.next_retry_at.is_some_and(|t| now >= t)
    }

    /// What `status` shows. A call that has run `stalled` past its expected
    /// time makes an up tmux show as degraded before the call times out.
    pub fn view(&self, socket: Option<String>, stalled: Option<Duration>) -> TmuxView {
        let mut state = self.state;
        let mut last_error = self.last_error.clone();
        if let (Some(TmuxState::Up), Some(d)) = (state, stalled) {
            state = Some(TmuxState::Degraded);
            last_error = Some(format!(
                "tmux has not answered for {} ms",
                (super::worker::SLOW + d).as_millis()
            ));
        }
        TmuxView {
            state: match state {
                Some(TmuxState::Up) => "up",
                Some(TmuxState::Degraded) => "degraded",
                Some(TmuxState::Down) => "down",
                None => "unknown",
            }
            .into(),
            version: self.version.clone(),
            socket,
            last_error,
            next_retry_at: self.next_retry_at,
            consecutive_failures: self.consecutive_failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_skips_trailing_blank_screen() {
        assert_eq!(last_lines("a\nb\n\n  \n", 5), vec!["a", "b"]);
        assert_eq!(last_lines("1\n2\n3\n4", 2), vec!["3", "4"]);
        assert!(last_lines("\n\n", 3).is_empty());
    }

    #[test]
    fn tmux_retries_back_off_and_reset_on_success() {
        let cfg = Config {
            sweep: std::time::Duration::from_secs(1),
            tmux_timeout: std::time::Duration::from_secs(1),
            retry_base: std::time::Duration::from_millis(100),
            retry_max: std::time::Duration::from_millis(1000),
            retry_jitter: 0.0,
        };
        let now: Time = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut h = TmuxHealth::default();
        assert_eq!(h.view(None, None).state, "unknown");
        let boom = SubstrateError::Failed("boom".into());
        h.failure(&boom, now, &cfg);
        assert_eq!(
            h.next_retry_at,
            Some(after(now, std::time::Duration::from_millis(100)))
        );
        h.failure(&boom, now, &cfg);
        assert_eq!(
            h.next_retry_at,
            Some(after(now, std::time::Duration::from_millis(200)))
        );
        assert_eq!(h.view(None, None).consecutive_failures, 2);
        assert_eq!(h.view(None, None).state, "down");
        assert!(!h.retry_due(now));
        assert!(h.retry_due(after(now, std::time::Duration::from_millis(200))));
        // tmux runs but no server does yet: up, and the pacing is kept.
        h.success(false);
        assert!(h.is_up() && h.consecutive_failures == 2 && h.next_retry_at.is_none());
        h.success(true);
        assert!(h.is_up() && h.consecutive_failures == 0);
    }

    #[test]
    fn a_timeout_is_degraded_and_a_stalled_call_shows_before_it_times_out() {
        let cfg = Config {
            sweep: Duration::from_secs(1),
            tmux_timeout: Duration::from_secs(1),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            retry_jitter: 0.0,
        };
        let now: Time = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut h = TmuxHealth::default();
        h.success(true);
        let v = h.view(None, Some(Duration::from_millis(500)));
        assert_eq!(v.state, "degraded");
        assert_eq!(v.last_error.unwrap(), "tmux has not answered for 1500 ms");
        assert_eq!(h.view(None, None).state, "up");
        h.failure(&SubstrateError::Timeout(Duration::from_secs(1)), now, &cfg);
        let v = h.view(None, None);
        assert_eq!(v.state, "degraded");
        assert!(
            v.last_error
                .unwrap()
                .contains("did not answer within 1000 ms")
        );
        assert!(v.next_retry_at.is_some());
    }
}
