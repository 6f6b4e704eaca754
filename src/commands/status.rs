//! `marvel status`: daemon and tmux health, and every problem that needs
//! attention, the worst deciding the exit code. Never starts a daemon.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::cli::Format;
use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::error::{Error, Result, exit};
use crate::output::{self, Tint};
use crate::proto::{Request, Response};
use crate::view::{ProblemKind, StatusView, TmuxState};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Lists what needs attention, worst first, each with a hint: tmux down, frozen
or failed roles, a state file that cannot be written, unhealthy sessions,
roles in backoff. The worst decides the exit code:
  0  all is well
  1  degraded: a role in backoff, an unhealthy session, or the state or
     event log not written (marvel keeps supervising)
  5  a role is frozen or failed: it waits for marvel reset role
  6  no daemon runs
  7  tmux is down or its server does not answer (the daemon keeps retrying)")]
pub struct Args {
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let target = ctx.target()?;
    let status = match client::call_running(&target, Request::Status)? {
        Some(Response::Status(status)) => *status,
        Some(other) => return Err(unexpected(&other)),
        None => {
            return Err(Error::daemon(format!(
                "no daemon is running for {}; any command that needs one starts it, or run marvel daemon run",
                target.daemon_place()
            )));
        }
    };
    match args.output {
        Format::Json => ctx.out.json(&with_context(&status, target.context())?)?,
        Format::Text => ctx.out.print(&format!(
            "context {}\n{}",
            target.describe(),
            text(&status, Utc::now(), ctx.out.colour())
        ))?,
    }
    Ok(exit_code(&status))
}

/// The worst problem's code; 0 when there is none.
fn exit_code(s: &StatusView) -> i32 {
    if matches!(s.tmux.state, TmuxState::Down | TmuxState::Degraded) {
        return exit::TMUX_UNAVAILABLE;
    }
    s.problems
        .iter()
        .map(|p| p.kind)
        .min()
        .map_or(exit::OK, |k| k.exit_code())
}

/// The status as JSON, with the context it came from (`"context": "local"`).
fn with_context(status: &StatusView, context: &str) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(status)
        .map_err(|e| Error::other(format!("cannot encode JSON: {e}")))?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("context".into(), context.into());
    }
    Ok(v)
}

fn plural(n: u32, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn text(s: &StatusView, now: DateTime<Utc>, colour: bool) -> String {
    let (d, t) = (&s.daemon, &s.tmux);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "daemon  {} (pid {}, up {}, marvel {}, protocol {})",
        output::paint("running", Some(Tint::Green), colour),
        d.pid,
        output::age(d.started_at, now),
        d.version,
        d.protocol
    );
    let _ = writeln!(
        out,
        "        state dir  {}",
        output::escape_line(&d.state_dir)
    );
    let _ = writeln!(out, "        socket     {}", output::escape_line(&d.socket));
    if let Some(err) = &d.persist_error {
        let since = d
            .persist_failing_since
            .map(|t| format!(" since {}", output::clock(t, now, &chrono::Local)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "        state      {} ({}){since}: supervising from memory",
            output::paint("not persisted", Some(Tint::Red), colour),
            output::escape_line(err),
        );
    }
    if let Some(err) = &d.event_log_error {
        let _ = writeln!(
            out,
            "        events     {} ({}): kept in memory",
            output::paint("not written", Some(Tint::Red), colour),
            output::escape_line(err),
        );
    }
    let _ = writeln!(
        out,
        "        {}, {}",
        plural(d.teams, "team"),
        plural(d.sessions, "session")
    );
    let mut facts = Vec::new();
    if let Some(v) = &t.version {
        facts.push(output::escape_line(v).into_owned());
    }
    facts.push(match &t.socket {
        Some(sock) => format!("socket {}", output::escape_line(sock)),
        None => "default server".to_string(),
    });
    if t.consecutive_failures > 0 {
        facts.push(plural(t.consecutive_failures, "consecutive failure"));
    }
    if let Some(at) = t.next_retry_at {
        facts.push(match output::until(at, now) {
            Some(left) => format!("next retry in {left}"),
            None => "retrying now".to_string(),
        });
    }
    let _ = writeln!(
        out,
        "tmux    {} ({})",
        output::painted(t.state, colour),
        facts.join(", ")
    );
    if let Some(err) = &t.last_error {
        let _ = writeln!(out, "        last error: {}", output::escape_line(err));
    }
    let n = s.problems.len() as u32;
    if n == 0 {
        if !matches!(t.state, TmuxState::Down | TmuxState::Degraded) {
            let _ = writeln!(
                out,
                "state   {}",
                output::paint("ok", Some(Tint::Green), colour)
            );
        }
        return out;
    }
    let _ = writeln!(
        out,
        "state   {} ({})",
        output::paint("degraded", Some(Tint::Red), colour),
        plural(n, "problem")
    );
    for p in &s.problems {
        let when = match (p.kind, p.at) {
            (ProblemKind::Backoff, Some(at)) => output::until(at, now)
                .map_or_else(String::new, |left| format!(" (restart in {left})")),
            (ProblemKind::Unhealthy, Some(at)) => {
                format!(" (last heartbeat {} ago)", output::age(at, now))
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<13} {}{when}\n  {:<13} help: {}",
            output::paint(p.kind.into(), Some(Tint::Red), colour),
            output::escape_line(&p.message),
            "",
            output::escape_line(&p.hint)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{DaemonView, TmuxView};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn status(tmux_state: TmuxState) -> StatusView {
        StatusView {
            daemon: DaemonView {
                pid: 4242,
                version: "0.1.0".into(),
                protocol: 1,
                started_at: t("2025-01-02T11:57:00Z"),
                state_dir: "/home/u/.local/share/marvel".into(),
                socket: "/home/u/.local/share/marvel/marvel.sock".into(),
                sessions: 3,
                teams: 1,
                persist_error: None,
                persist_failing_since: None,
                event_log_error: None,
            },
            tmux: TmuxView {
                state: tmux_state,
                version: Some("tmux 3.3a".into()),
                socket: Some("marvel-test".into()),
                last_error: None,
                next_retry_at: None,
                consecutive_failures: 0,
            },
            problems: Vec::new(),
        }
    }

    #[test]
    fn a_healthy_status_is_short() {
        assert_eq!(
            text(&status(TmuxState::Up), t("2025-01-02T12:00:00Z"), false),
            "\
daemon  running (pid 4242, up 3m, marvel 0.1.0, protocol 1)
        state dir  /home/u/.local/share/marvel
        socket     /home/u/.local/share/marvel/marvel.sock
        1 team, 3 sessions
tmux    up (tmux 3.3a, socket marvel-test)
state   ok
"
        );
        assert_eq!(exit_code(&status(TmuxState::Up)), 0);
    }

    #[test]
    fn problems_are_listed_with_a_hint_and_the_worst_decides_the_code() {
        let problem = |kind, key: &str| crate::view::ProblemView {
            kind,
            key: key.into(),
            message: format!("role {key} is {kind}"),
            hint: format!("run `marvel reset role {key}` to restart it"),
            at: None,
        };
        let mut s = status(TmuxState::Up);
        s.problems = vec![problem(ProblemKind::Backoff, "t/s/b")];
        assert_eq!(exit_code(&s), 1);
        s.problems.insert(0, problem(ProblemKind::Frozen, "t/s/a"));
        assert_eq!(exit_code(&s), 5);
        let text = text(&s, t("2025-01-02T12:00:00Z"), false);
        assert!(
            text.ends_with(
                "\
state   degraded (2 problems)
  frozen        role t/s/a is frozen
                help: run `marvel reset role t/s/a` to restart it
  backoff       role t/s/b is backoff
                help: run `marvel reset role t/s/b` to restart it
"
            ),
            "{text}"
        );
        s.tmux.state = TmuxState::Down;
        assert_eq!(exit_code(&s), 7);
    }

    #[test]
    fn a_state_file_that_cannot_be_written_is_said() {
        let mut s = status(TmuxState::Up);
        s.daemon.persist_error = Some("No space left on device (os error 28)".into());
        s.daemon.persist_failing_since = Some(t("2025-01-02T11:59:00Z"));
        let text = text(&s, t("2025-01-02T12:00:00Z"), false);
        assert!(
            text.contains(
                "state      not persisted (No space left on device (os error 28)) since "
            ),
            "{text}"
        );
        assert!(text.contains(": supervising from memory\n"), "{text}");
    }

    #[test]
    fn an_event_log_that_cannot_be_written_is_said() {
        let mut s = status(TmuxState::Up);
        s.daemon.event_log_error = Some("No space left on device (os error 28)".into());
        let text = text(&s, t("2025-01-02T12:00:00Z"), false);
        assert!(
            text.contains(
                "events     not written (No space left on device (os error 28)): kept in memory\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn tmux_down_says_when_the_daemon_retries_and_why() {
        let mut s = status(TmuxState::Down);
        s.tmux.version = None;
        s.tmux.socket = None;
        s.tmux.consecutive_failures = 3;
        s.tmux.next_retry_at = Some(t("2025-01-02T12:00:04Z"));
        s.tmux.last_error = Some("no server running on /tmp/tmux-1000/default".into());
        let text = text(&s, t("2025-01-02T12:00:00Z"), false);
        assert!(
            text.ends_with(
                "\
tmux    down (default server, 3 consecutive failures, next retry in 4s)
        last error: no server running on /tmp/tmux-1000/default
"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_tmux_error_cannot_act_on_the_terminal() {
        let mut s = status(TmuxState::Down);
        s.tmux.last_error = Some("no server \x1b]0;owned\x07".into());
        let text = text(&s, t("2025-01-02T12:00:00Z"), false);
        assert!(
            text.ends_with("last error: no server \\e]0;owned^G\n"),
            "{text}"
        );
    }
}
