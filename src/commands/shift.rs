//! `marvel shift TEAM`: replace every session of a team (or one role) with
//! a fresh one, one at a time, never below the desired count; `--wait`
//! follows it to its end, `--abort` stops it where it is.

use clap_complete::engine::ArgValueCandidates;
use std::thread;
use std::time::Duration;

use crate::cli::parse_duration;
use crate::client::{self, Endpoint as Target};
use crate::commands::{Ctx, unexpected};
use crate::error::{Error, Result, exit};
use crate::output;
use crate::proto::{Filter, Kind, Request, Response};
use crate::view::{ShiftState, ShiftView};

/// How often `--wait` looks at the shift.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel shift demo/squad               replace every session of the team
  marvel shift squad --role worker      only the worker role
  marvel shift squad --wait             and follow it until it ends
  marvel shift squad --abort            stop a shift in flight

Each session's successor starts beside it and must be running (and, for a
role with a heartbeat check, have sent a heartbeat) before the old session
stops: one at a time, roles in manifest order, roles with shift_last: true
after the others. A successor that crashes fails the shift (the crash
counts against the role as any other); so does running out of time. The
sessions not yet replaced keep running. While a team shifts, scaling or
changing it is refused.")]
pub struct Args {
    /// The team, or any unambiguous suffix of its key
    #[arg(value_name = "TEAM", add = ArgValueCandidates::new(crate::commands::completions::teams_keys))]
    pub team: String,

    /// Only this role of the team (its name)
    #[arg(long, value_name = "ROLE", conflicts_with = "abort")]
    pub role: Option<String>,

    /// Follow the shift until it ends; exit 1 if it fails or is aborted
    #[arg(long, conflicts_with = "abort")]
    pub wait: bool,

    /// Stop the team's shift in flight; what was replaced stays replaced
    #[arg(long)]
    pub abort: bool,

    /// How long the shift may take before it fails (30s, 10m, ...)
    #[arg(
        long,
        value_name = "DUR",
        default_value = "10m",
        value_parser = parse_duration,
        conflicts_with = "abort"
    )]
    pub timeout: Duration,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let target = ctx.target()?;
    let req = if args.abort {
        Request::AbortShift { team: args.team }
    } else {
        Request::Shift {
            team: args.team,
            role: args.role,
            timeout_ms: args.timeout.as_millis().min(u128::from(u64::MAX)) as u64,
        }
    };
    let (team, shift) = match client::call(&target, req)? {
        Response::Shift { team, shift } => (team, shift),
        other => return Err(unexpected(&other)),
    };
    if args.abort {
        ctx.out.print(&format!(
            "{team} shift aborted with {} of {} sessions replaced",
            shift.replaced, shift.total
        ))?;
        return Ok(exit::OK);
    }
    ctx.out.print(&format!(
        "{team} shift started: {} ({} sessions, one at a time)",
        shift.roles.join(", "),
        shift.total
    ))?;
    if args.wait {
        follow(&target, &team, shift, ctx)
    } else {
        Ok(exit::OK)
    }
}

/// Polls the team until its shift ends; progress goes to stderr when it
/// changes, the outcome to stdout (or as the error).
fn follow(target: &Target, team: &str, started: ShiftView, ctx: &Ctx) -> Result<i32> {
    let (workspace, name) = team.split_once('/').unwrap_or(("", team));
    let get = Request::Get {
        kind: Kind::Teams,
        filter: Filter {
            workspace: Some(workspace.to_string()),
            team: Some(name.to_string()),
            keys: Vec::new(),
        },
    };
    let mut shown = String::new();
    loop {
        let teams = match client::call_running(target, get.clone())? {
            Some(Response::Teams(teams)) => teams,
            Some(other) => return Err(unexpected(&other)),
            None => return Err(Error::daemon("the daemon stopped during the shift")),
        };
        let current = teams
            .into_iter()
            .find(|t| t.key == team)
            .and_then(|t| t.shift)
            .filter(|s| s.id == started.id);
        let Some(shift) = current else {
            return Err(Error::other(format!(
                "{team} shift ended out of sight: the team was deleted or shifted again"
            )));
        };
        match outcome(team, &shift) {
            None => {
                let line = progress(team, &shift);
                if line != shown {
                    ctx.out.note(&line);
                    shown = line;
                }
            }
            Some(Ok(done)) => {
                ctx.out.print(&done)?;
                return Ok(exit::OK);
            }
            Some(Err(e)) => return Err(e),
        }
        thread::sleep(target.poll_every(POLL));
    }
}

/// `shifting demo/squad: worker, 1 of 3 sessions replaced`.
fn progress(team: &str, s: &ShiftView) -> String {
    format!(
        "shifting {team}: {}, {} of {} sessions replaced",
        s.role.as_deref().unwrap_or("-"),
        s.replaced,
        s.total
    )
}

/// How a shift ended, once it has.
fn outcome(team: &str, s: &ShiftView) -> Option<Result<String>> {
    let reason = output::escape_line(s.reason.as_deref().unwrap_or("no reason given"));
    match s.state {
        ShiftState::Running => None,
        ShiftState::Completed => Some(Ok(format!(
            "{team} shift completed: {} sessions replaced",
            s.total
        ))),
        ShiftState::Aborted => Some(Err(Error::other(format!(
            "{team} shift aborted ({reason}) with {} of {} sessions replaced",
            s.replaced, s.total
        )))),
        ShiftState::Failed => Some(Err(Error::other(format!("{team} shift failed: {reason}")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: ShiftState, reason: Option<&str>) -> ShiftView {
        let at = chrono::Utc::now();
        ShiftView {
            id: 1,
            state,
            roles: vec!["worker".into(), "lead".into()],
            role: (state == ShiftState::Running).then(|| "worker".into()),
            replaced: 1,
            total: 4,
            started_at: at,
            deadline: at,
            ended_at: None,
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn progress_names_the_role_and_the_count() {
        assert_eq!(
            progress("demo/squad", &view(ShiftState::Running, None)),
            "shifting demo/squad: worker, 1 of 4 sessions replaced"
        );
        assert!(outcome("demo/squad", &view(ShiftState::Running, None)).is_none());
    }

    #[test]
    fn the_end_of_a_shift_is_success_or_an_error_with_its_reason() {
        assert_eq!(
            outcome("demo/squad", &view(ShiftState::Completed, None))
                .unwrap()
                .unwrap(),
            "demo/squad shift completed: 4 sessions replaced"
        );
        let failed = outcome(
            "demo/squad",
            &view(
                ShiftState::Failed,
                Some("new session demo/squad/worker-0 (uid 9) crashed (exit 3)"),
            ),
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(failed.code(), exit::FAILURE);
        assert!(failed.to_string().contains("crashed (exit 3)"), "{failed}");
        let aborted = outcome("demo/squad", &view(ShiftState::Aborted, Some("on request")))
            .unwrap()
            .unwrap_err();
        assert!(
            aborted
                .to_string()
                .contains("aborted (on request) with 1 of 4"),
            "{aborted}"
        );
    }
}
