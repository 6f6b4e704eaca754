//! `marvel heartbeat`: run by a program inside a session's pane to say it
//! is alive, and optionally how full its context is. It finds its session
//! and daemon in the environment marvel gives every pane.

use std::path::Path;

use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::domain::activity::ActivityState;
use crate::domain::health::{ContextPct, Note};
use crate::error::{Error, Result, exit};
use crate::paths::{HOME_ENV, SESSION_ENV, SESSION_UID_ENV};
use crate::proto::{Request, Response};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Run it from inside a session's pane, at least once per the role's
heartbeat timeout (health: Heartbeat(timeout: \"30s\", failures: 3)):

  while sleep 10; do marvel heartbeat --context-pct \"$USED\"; done &

An agent can also say what it is doing, for `get sessions` (ACTIVITY)
and notifications, e.g. from its own hooks:

  marvel heartbeat --state waiting    it needs a person (a permission prompt)
  marvel heartbeat --state busy       it works, even while it prints nothing

It reads MARVEL_SESSION, MARVEL_SESSION_UID and MARVEL_HOME, which marvel
sets in every pane, prints nothing on success, and never starts a daemon.")]
pub struct Args {
    /// How full the agent's context window is, in percent
    #[arg(long, value_name = "N", value_parser = context_pct)]
    pub context_pct: Option<ContextPct>,

    /// A short status line shown by describe session (at most 200 characters)
    #[arg(long, value_name = "TEXT", value_parser = note)]
    pub note: Option<Note>,

    /// What the program is doing: busy, idle, or waiting (for input); it
    /// holds until the program prints again or says otherwise
    #[arg(long, value_name = "STATE", value_parser = state)]
    pub state: Option<ActivityState>,
}

fn state(s: &str) -> std::result::Result<ActivityState, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a state; use busy, idle or waiting"))
}

// The same rules the daemon applies when it decodes the request.
fn context_pct(s: &str) -> std::result::Result<ContextPct, String> {
    let pct: u8 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number from 0 to 100"))?;
    ContextPct::new(pct)
}

fn note(s: &str) -> std::result::Result<Note, String> {
    Note::new(s)
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let req = request(
        std::env::var(SESSION_ENV).ok(),
        std::env::var(SESSION_UID_ENV).ok(),
        ctx.state_dir.as_deref(),
        args,
    )?;
    // Always this host's daemon: the pane's program runs here.
    let target = ctx.local()?;
    match client::local::call_running(&target, req)? {
        Some(Response::Done(_)) => Ok(exit::OK),
        Some(other) => Err(unexpected(&other)),
        None => Err(Error::daemon(format!(
            "no marvel daemon is running for {}",
            target.paths.root.display()
        ))),
    }
}

/// The request from what the environment says; refuses to guess when the
/// command does not run inside a marvel pane.
fn request(
    session: Option<String>,
    uid: Option<String>,
    state_dir: Option<&Path>,
    args: Args,
) -> Result<Request> {
    let outside = |var: &str| {
        Error::usage(format!(
            "{var} is not set: marvel heartbeat runs inside a marvel session's pane, where marvel sets it"
        ))
    };
    let session = session
        .filter(|s| !s.is_empty())
        .ok_or_else(|| outside(SESSION_ENV))?;
    if state_dir.is_none() {
        return Err(outside(HOME_ENV));
    }
    let uid =
        match uid.filter(|u| !u.is_empty()) {
            Some(u) => Some(u.parse::<u64>().map_err(|_| {
                Error::usage(format!("{SESSION_UID_ENV} is {u:?}, not a session uid"))
            })?),
            None => None,
        };
    Ok(Request::Heartbeat {
        session,
        uid,
        context_pct: args.context_pct,
        note: args.note,
        state: args.state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::health::MAX_NOTE_CHARS;

    fn args() -> Args {
        Args {
            context_pct: Some(ContextPct::new(40).unwrap()),
            note: Some(Note::new("refactoring").unwrap()),
            state: Some(ActivityState::Waiting),
        }
    }

    #[test]
    fn the_session_and_state_dir_come_from_the_pane() {
        let req = request(
            Some("demo/squad/worker-0".into()),
            Some("17".into()),
            Some(Path::new("/state")),
            args(),
        )
        .unwrap();
        let Request::Heartbeat {
            session,
            uid,
            context_pct,
            note,
            state,
        } = req
        else {
            panic!("{req:?}")
        };
        assert_eq!(state, Some(ActivityState::Waiting));
        assert_eq!(session, "demo/squad/worker-0");
        assert_eq!(uid, Some(17));
        assert_eq!(context_pct.map(ContextPct::get), Some(40));
        assert_eq!(note.as_ref().map(Note::as_str), Some("refactoring"));
    }

    #[test]
    fn outside_a_pane_it_says_what_is_missing() {
        let err = request(None, None, Some(Path::new("/s")), args()).unwrap_err();
        assert_eq!(err.code(), exit::USAGE);
        assert!(
            err.to_string().contains("MARVEL_SESSION is not set"),
            "{err}"
        );
        let err = request(Some("a/b/c-0".into()), None, None, args()).unwrap_err();
        assert!(err.to_string().contains("MARVEL_HOME is not set"), "{err}");
        let err = request(
            Some("a/b/c-0".into()),
            Some("x".into()),
            Some(Path::new("/s")),
            args(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("MARVEL_SESSION_UID"), "{err}");
    }

    #[test]
    fn notes_are_bounded() {
        assert!(note(&"x".repeat(MAX_NOTE_CHARS)).is_ok());
        assert!(
            note(&"x".repeat(MAX_NOTE_CHARS + 1))
                .unwrap_err()
                .contains("at most 200")
        );
        // Kept as sent: escaped where it is shown, not refused.
        assert!(note("\u{1b}]0;pwned\u{7}").is_ok());
        assert_eq!(super::state("idle"), Ok(ActivityState::Idle));
        assert!(
            super::state("asleep")
                .unwrap_err()
                .contains("busy, idle or waiting")
        );
        assert!(context_pct("100").is_ok());
        assert!(
            context_pct("101")
                .unwrap_err()
                .contains("between 0 and 100")
        );
        assert!(
            context_pct("-1")
                .unwrap_err()
                .contains("not a whole number")
        );
    }
}
