//! How commands reach a daemon: this host's over its Unix socket
//! ([`local`]), or another host's over OpenSSH ([`ssh`]), where
//! `marvel daemon dial-stdio` ([`dial`]) relays the same protocol. Which one
//! is the context's choice ([`crate::context`]); the verbs do not care.

pub mod dial;
pub mod local;
pub mod ssh;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::context::{self, Contexts, LOCAL, Selected};
use crate::error::{Error, Result};
use crate::paths::Target;
use crate::proto::{Request, Response};

/// The shortest pause between the asks of a poll over ssh.
const SSH_POLL: Duration = Duration::from_secs(1);

/// The daemon a command talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// This host's daemon (state directory and tmux server).
    Local(Target),
    /// Another host's, over ssh.
    Ssh(ssh::Remote),
}

impl Endpoint {
    /// The context picked by `--context`/`MARVEL_CONTEXT` or `context use`;
    /// the local one is in `state_dir` (or `MARVEL_HOME`, ...).
    pub fn select(context: Option<&str>, state_dir: Option<&Path>) -> Result<Endpoint> {
        Endpoint::of(context::select(context)?, state_dir)
    }

    /// Every context, `local` first.
    pub fn all(state_dir: Option<&Path>) -> Result<Vec<Endpoint>> {
        Contexts::load()?
            .all()
            .into_iter()
            .map(|s| Endpoint::of(s, state_dir))
            .collect()
    }

    fn of(s: Selected, state_dir: Option<&Path>) -> Result<Endpoint> {
        Ok(match s {
            Selected::Local => Endpoint::Local(Target::resolve(state_dir)?),
            Selected::Host { name, host } => Endpoint::Ssh(ssh::Remote {
                context: name,
                host,
            }),
        })
    }

    /// The context's name.
    pub fn context(&self) -> &str {
        match self {
            Endpoint::Local(_) => LOCAL,
            Endpoint::Ssh(r) => &r.context,
        }
    }

    /// The context as messages name it: `local`, or `build (ssh://build)`.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Local(_) => LOCAL.to_string(),
            Endpoint::Ssh(r) => r.describe(),
        }
    }

    /// How long a command that polls (`logs -f`, `get -w`, `--wait`)
    /// waits between asks: `here` on this host; at least a second on
    /// another, where each ask is an ssh command (a login shell and a
    /// relay) that costs a few hundred milliseconds.
    pub fn poll_every(&self, here: Duration) -> Duration {
        match self {
            Endpoint::Local(_) => here,
            Endpoint::Ssh(_) => here.max(SSH_POLL),
        }
    }

    /// Where its daemon is: the state directory, or the context.
    pub fn daemon_place(&self) -> String {
        match self {
            Endpoint::Local(t) => t.paths.root.display().to_string(),
            Endpoint::Ssh(r) => r.describe(),
        }
    }
}

/// Sends one request, starting the daemon first if none runs.
pub fn call(e: &Endpoint, req: Request) -> Result<Response> {
    match e {
        Endpoint::Local(t) => local::call(t, req),
        Endpoint::Ssh(r) => ssh::call(r, &req, true, None)?.ok_or_else(|| not_started(r)),
    }
}

/// [`call`], with the whole exchange over ssh bounded by `deadline` (a
/// local daemon answers within its own limits).
pub fn call_by(e: &Endpoint, req: Request, deadline: Instant) -> Result<Response> {
    match e {
        Endpoint::Local(t) => local::call(t, req),
        Endpoint::Ssh(r) => ssh::call(r, &req, true, Some(deadline))?.ok_or_else(|| not_started(r)),
    }
}

/// Sends one request to a running daemon; `Ok(None)` when none runs.
pub fn call_running(e: &Endpoint, req: Request) -> Result<Option<Response>> {
    match e {
        Endpoint::Local(t) => local::call_running(t, req),
        Endpoint::Ssh(r) => ssh::call(r, &req, false, None),
    }
}

/// [`call_running`], with the whole exchange over ssh bounded by
/// `deadline`.
pub fn call_running_by(e: &Endpoint, req: Request, deadline: Instant) -> Result<Option<Response>> {
    match e {
        Endpoint::Local(t) => local::call_running(t, req),
        Endpoint::Ssh(r) => ssh::call(r, &req, false, Some(deadline)),
    }
}

/// Sends a streaming request (such as `events --follow`) and hands each
/// response to `on` until it returns `false` or the daemon hangs up.
pub fn follow(
    e: &Endpoint,
    req: Request,
    on: &mut dyn FnMut(Response) -> Result<bool>,
) -> Result<()> {
    match e {
        Endpoint::Local(t) => local::follow(t, req, on),
        Endpoint::Ssh(r) => ssh::follow(r, &req, on),
    }
}

/// The far end said it had no daemon, though it was to start one.
fn not_started(r: &ssh::Remote) -> Error {
    Error::daemon(format!("{} started no daemon", r.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Host, SshUrl};
    use crate::paths::Paths;

    #[test]
    fn polls_over_ssh_wait_at_least_a_second() {
        let here = Endpoint::Local(Target {
            paths: Paths {
                root: "/srv/marvel".into(),
            },
            tmux_socket: None,
        });
        let there = Endpoint::Ssh(ssh::Remote {
            context: "build".into(),
            host: Host::new(SshUrl::parse("ssh://build").unwrap()),
        });
        let fast = Duration::from_millis(100);
        assert_eq!(here.poll_every(fast), fast);
        assert_eq!(there.poll_every(fast), SSH_POLL);
        assert_eq!(
            there.poll_every(Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
