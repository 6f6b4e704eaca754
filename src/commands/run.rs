//! `marvel run FILE`: validate a team manifest and apply it (or, with
//! `--dry-run`, only show what it declares); `--wait` follows the team until
//! it is ready, frozen or out of time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::parse_duration;
use crate::client::{self, Endpoint as Target};
use crate::commands::{Ctx, unexpected};
use crate::domain::spec::{DEFAULT_IDLE_AFTER, Health, RoleSpec, TeamSpec};
use crate::error::{Error, Result, exit};
use crate::manifest;
use crate::output;
use crate::proto::{Change, Filter, Kind, Request, Response, RoleChangeView};
use crate::view::{RoleState, RoleView, TmuxState};

/// How often `--wait` looks at the team.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel run team.ron                 apply; the daemon starts if it is not running
  marvel run team.ron --wait          and wait until every role is ready
  marvel run team.ron --dry-run       validate and show the team, apply nothing

Applying the same file again changes nothing. A changed command, env or cwd
replaces the role's sessions, one at a time; any other change (backoff,
budget, health, ...) applies in place, sessions keep running. Either clears
the role's crash-loop history and un-freezes it. A changed replica count only
scales; a role removed from the file is stopped. A team belongs to the file
that declared it: another file declaring the same team is refused unless
--force.

--dry-run asks a running daemon what would change (as marvel diff does);
with no daemon running it only validates the file.")]
pub struct Args {
    /// Team manifest (RON)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Wait until every role is ready or has succeeded; fail if one freezes
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits before giving up (30s, 2m, ...)
    #[arg(
        long,
        value_name = "DUR",
        default_value = "60s",
        value_parser = parse_duration,
        requires = "wait"
    )]
    pub timeout: Duration,

    /// Show what applying would change, without changing anything
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,

    /// Take over a team that another manifest file declared
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let target = ctx.target()?;
    let team = load(&target, &args.file)?;
    let source = source_of(&args.file);
    if args.dry_run {
        return plan(&target, &team, source, ctx);
    }
    let req = Request::Apply {
        team: team.clone(),
        source,
        force: args.force,
    };
    let answer = client::call(&target, req).map_err(|e| manifest::locate_in(e, &args.file))?;
    let (roles, tmux_down) = match answer {
        Response::Applied {
            roles, tmux_down, ..
        } => (roles, tmux_down),
        other => return Err(unexpected(&other)),
    };
    for change in &roles {
        ctx.out.print(&output::change_line(
            &change.key,
            change.change,
            &change.detail,
        ))?;
        if let Some(reason) = &change.frozen_reason {
            ctx.out.note(&frozen_warning(&change.key, reason));
        }
        if change.stopped && change.change != Change::Removed {
            ctx.out.note(&format!(
                "note: {} is stopped; `marvel start {}` runs it",
                change.key, change.key
            ));
        }
    }
    if let Some(why) = &tmux_down {
        ctx.out.note(&tmux_warning(why));
    }
    if args.wait {
        wait(&target, &team, args.timeout, ctx)
    } else {
        Ok(exit::OK)
    }
}

/// Reads and validates the manifest for the daemon it goes to: for another
/// host the file is read and checked here, but its paths and programs are
/// that host's.
pub fn load(target: &Target, file: &Path) -> Result<TeamSpec> {
    match target {
        Target::Local(_) => manifest::load(file),
        Target::Ssh(r) => manifest::load_for_host(file, &r.host.url.host),
    }
}

/// The manifest's absolute path, which the daemon records as the team's
/// owner.
pub fn source_of(file: &Path) -> Option<String> {
    std::path::absolute(file)
        .ok()
        .map(|p| p.display().to_string())
}

fn tmux_warning(why: &str) -> String {
    format!(
        "warning: applied, but tmux is not available: {}; the sessions start once it is (`marvel status` for details)",
        output::escape_line(why)
    )
}

/// `--dry-run` and `marvel diff`: the plan against what runs, or, with no
/// daemon running, the validated team alone.
pub fn plan(target: &Target, team: &TeamSpec, source: Option<String>, ctx: &Ctx) -> Result<i32> {
    if let Target::Ssh(r) = target {
        ctx.out.print(&format!(
            "for context {}: paths are {}'s, programs are looked up on its PATH when they start",
            r.describe(),
            r.host.url.host
        ))?;
    }
    let req = Request::Plan {
        team: team.clone(),
        source,
    };
    match client::call_running(target, req)? {
        None => {
            ctx.out.print(&dry_run(team))?;
            ctx.out.note(
                "no daemon is running: the file is valid; there is nothing to compare it with",
            );
        }
        Some(Response::Planned {
            team: key,
            exists,
            owner,
            roles,
        }) => {
            ctx.out
                .print(&plan_text(&key, exists, owner.as_deref(), &roles))?;
        }
        Some(other) => return Err(unexpected(&other)),
    }
    Ok(exit::OK)
}

/// The plan, one line per role: what would happen and why.
fn plan_text(team: &str, exists: bool, owner: Option<&str>, roles: &[RoleChangeView]) -> String {
    let mut s = String::new();
    let n = roles
        .iter()
        .filter(|r| r.change != Change::Unchanged)
        .count();
    let _ = writeln!(
        s,
        "team {team}: {} (dry run, nothing applied)",
        match (exists, n) {
            (false, _) => "not applied yet, would be created".to_string(),
            (true, 0) => "no changes".to_string(),
            (true, 1) => "1 role would change".to_string(),
            (true, n) => format!("{n} roles would change"),
        }
    );
    if let Some(owner) = owner {
        let _ = writeln!(
            s,
            "refused: the team belongs to {}; --force would take it over",
            output::escape_line(owner)
        );
    }
    let width = roles.iter().map(|r| r.key.len()).max().unwrap_or(0);
    for r in roles {
        let action = match r.change {
            Change::Created => "create".to_string(),
            Change::Unchanged => "unchanged".to_string(),
            Change::Scaled => format!("scale {}", r.detail),
            Change::Updated => format!("update in place ({})", r.fields.join(", ")),
            Change::Replaced => format!(
                "replace {} ({})",
                plural(r.sessions, "session"),
                r.fields.join(", ")
            ),
            Change::Removed => format!("remove (stops {})", plural(r.sessions, "session")),
        };
        let mut line = format!("  {:<width$}  {action}", r.key);
        if r.unfreezes {
            line.push_str(&format!(
                "; un-freezes it ({})",
                output::frozen_reason(r.frozen_reason.as_deref())
            ));
        } else if let Some(reason) = r
            .frozen_reason
            .as_ref()
            .filter(|_| r.change != Change::Removed)
        {
            line.push_str(&format!(
                "; stays frozen ({})",
                output::frozen_reason(Some(reason))
            ));
        }
        if r.stopped {
            line.push_str("; stopped");
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}

fn plural(n: u32, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn frozen_warning(key: &str, reason: &str) -> String {
    format!(
        "warning: {key} is frozen ({}); nothing will be spawned for it\nhelp: run `marvel reset role {key}` to restart it",
        output::frozen_reason(Some(reason))
    )
}

/// Polls the team's roles until all are ready (or succeeded), one freezes,
/// or `timeout` passes. Progress goes to stderr when it changes.
fn wait(target: &Target, team: &TeamSpec, timeout: Duration, ctx: &Ctx) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    let get = Request::Get {
        kind: Kind::Roles,
        filter: Filter {
            workspace: Some(team.workspace.to_string()),
            team: Some(team.name.to_string()),
            keys: Vec::new(),
        },
    };
    let mut shown = String::new();
    loop {
        let roles = match client::call(target, get.clone())? {
            Response::Roles(roles) => roles,
            other => return Err(unexpected(&other)),
        };
        match readiness(team, &roles) {
            Readiness::Ready => {
                ctx.out.print(&format!("{} ready", team.key()))?;
                return Ok(exit::OK);
            }
            Readiness::Frozen { key, reason } => {
                return Err(Error::refused(
                    format!("{key} is frozen: {reason}"),
                    Some(format!("run `marvel reset role {key}` to restart it")),
                ));
            }
            Readiness::Failed { key, reason } => {
                return Err(Error::refused(
                    format!("{key} failed: {reason}; it is not replaced (restart: Never)"),
                    Some(format!(
                        "`marvel logs {key}` shows what it printed; run `marvel reset role {key}` to restart it"
                    )),
                ));
            }
            Readiness::Stopped { key } => {
                return Err(Error::refused(
                    format!("{key} is stopped"),
                    Some(format!("run `marvel start {key}` to run it")),
                ));
            }
            Readiness::Waiting(progress) => {
                if let Some(why) = tmux_down(target)? {
                    return Err(Error::tmux(format!(
                        "{} cannot come up: {why} (`marvel status` for details)",
                        team.key()
                    )));
                }
                if Instant::now() >= deadline {
                    return Err(Error::other(format!(
                        "timed out after {} waiting for {}: {progress}",
                        humantime::format_duration(timeout),
                        team.key()
                    )));
                }
                if progress != shown {
                    ctx.out
                        .note(&format!("waiting for {}: {progress}", team.key()));
                    shown = progress;
                }
            }
        }
        thread::sleep(target.poll_every(POLL));
    }
}

/// Why tmux cannot start sessions now, if it cannot.
fn tmux_down(target: &Target) -> Result<Option<String>> {
    Ok(match client::call_running(target, Request::Status)? {
        Some(Response::Status(s)) if matches!(s.tmux.state, TmuxState::Down) => {
            Some(s.tmux.last_error.map_or_else(
                || "tmux is down".to_string(),
                |e| format!("tmux is down ({e})"),
            ))
        }
        _ => None,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Readiness {
    Ready,
    Frozen {
        key: String,
        reason: String,
    },
    Failed {
        key: String,
        reason: String,
    },
    Stopped {
        key: String,
    },
    /// What is not ready yet, as `worker 1/2 running (backoff after exit 1)`.
    Waiting(String),
}

/// Where the team stands, judged only from the daemon's role states. A role
/// the daemon does not list yet is pending.
fn readiness(team: &TeamSpec, roles: &[RoleView]) -> Readiness {
    let mut waiting = Vec::new();
    for spec in &team.roles {
        let key = team.role_key(spec).to_string();
        let Some(role) = roles.iter().find(|r| r.key == key) else {
            waiting.push(format!(
                "{} 0/{} running (pending)",
                spec.name, spec.replicas
            ));
            continue;
        };
        match role.state {
            RoleState::Ready | RoleState::Succeeded => {}
            RoleState::Frozen => {
                return Readiness::Frozen {
                    reason: output::frozen_reason(role.frozen_reason.as_deref()),
                    key,
                };
            }
            RoleState::Failed => {
                return Readiness::Failed {
                    reason: output::exit_text(role.last_exit.as_ref()),
                    key,
                };
            }
            RoleState::Stopped => return Readiness::Stopped { key },
            state @ (RoleState::Progressing | RoleState::Backoff) => {
                let after = match (&role.last_exit, state) {
                    (Some(exit), RoleState::Backoff) => {
                        format!(" after {}", output::exit_text(Some(exit)))
                    }
                    _ => String::new(),
                };
                waiting.push(format!(
                    "{} {}/{} running ({state}{after})",
                    spec.name, role.running, role.desired
                ));
            }
        }
    }
    if waiting.is_empty() {
        Readiness::Ready
    } else {
        Readiness::Waiting(waiting.join(", "))
    }
}

/// What `--dry-run` prints: the team and, per role, everything that
/// decides how it runs and how it is restarted; then the team's
/// notification commands.
fn dry_run(team: &TeamSpec) -> String {
    let mut s = String::new();
    let n = team.roles.len();
    let _ = writeln!(
        s,
        "team {} ({n} role{}; dry run, nothing applied)",
        team.key(),
        if n == 1 { "" } else { "s" }
    );
    for role in &team.roles {
        let _ = writeln!(s, "\nrole {}", team.role_key(role));
        for (label, value) in role_lines(role) {
            let _ = writeln!(s, "  {label:<10}{value}");
        }
    }
    if !team.notify.is_empty() {
        let _ = writeln!(s, "\nnotify");
    }
    for n in &team.notify {
        let on: Vec<String> = n.on.iter().map(|t| t.kind().to_string()).collect();
        let _ = writeln!(
            s,
            "  on {}: {} (timeout {}, coalesced over {})",
            on.join(", "),
            output::escape_line(&output::shell_words(&n.command)),
            humantime::format_duration(n.timeout.get()),
            humantime::format_duration(n.coalesce.get())
        );
    }
    s
}

fn role_lines(r: &RoleSpec) -> Vec<(&'static str, String)> {
    let d = humantime::format_duration;
    let mut lines = vec![
        ("replicas", r.replicas.to_string()),
        ("command", output::shell_words(&r.command)),
    ];
    if let Some(cwd) = &r.cwd {
        let cwd = cwd.display().to_string();
        lines.push(("cwd", output::escape_line(&cwd).into_owned()));
    }
    if !r.env.is_empty() {
        // Names only: values are often secrets.
        let names: Vec<&str> = r.env.keys().map(String::as_str).collect();
        lines.push(("env", output::escape_line(&names.join(", ")).into_owned()));
    }
    lines.push(("restart", format!("{:?}", r.restart)));
    lines.push(("backoff", output::backoff(&r.backoff)));
    let budget = match r.max_restarts {
        Some(max) => format!("{max} restarts in {}", d(r.window.get())),
        None => "unlimited restarts".to_string(),
    };
    lines.push((
        "budget",
        format!(
            "{budget}; forgiven after {} running",
            d(r.reset_after.get())
        ),
    ));
    if r.idle_after != DEFAULT_IDLE_AFTER || r.waiting.is_some() {
        let mut activity = format!("idle after {} silent", d(r.idle_after.get()));
        if let Some(p) = &r.waiting {
            activity.push_str(&format!(
                "; waiting when the screen matches {}",
                output::escape_line(&format!("{:?}", p.as_str()))
            ));
        }
        lines.push(("activity", activity));
    }
    if let Some(Health::Heartbeat { timeout, failures }) = r.health {
        lines.push((
            "health",
            format!(
                "heartbeat every {}, {} misses",
                d(timeout.get()),
                failures.get()
            ),
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::{Name, RestartPolicy, TeamParts};

    fn team() -> TeamSpec {
        let mut worker = RoleSpec::with_defaults("worker", 2, &["sh", "-c", "my-agent --flag"]);
        worker
            .env
            .insert("TOKEN_FILE".into(), "/run/secret".into())
            .unwrap();
        let mut lead = RoleSpec::with_defaults("lead", 1, &["lead"]);
        lead.restart = RestartPolicy::OnFailure;
        lead.max_restarts = None;
        TeamSpec::try_from(TeamParts {
            workspace: Name::new("demo").unwrap(),
            name: Name::new("squad").unwrap(),
            roles: vec![worker, lead],
            notify: Vec::new(),
        })
        .unwrap()
    }

    #[test]
    fn dry_run_shows_activity_settings_and_notify_commands() {
        use crate::domain::spec::{NonZeroSpan, Notify, Pattern, Span, Trigger, Triggers};
        let mut agent = RoleSpec::with_defaults("agent", 1, &["agent"]);
        agent.idle_after = NonZeroSpan::from_secs(20);
        agent.waiting = Some(Pattern::new(r"\(y/n\)").unwrap());
        let agents = TeamSpec::try_from(TeamParts {
            workspace: Name::new("demo").unwrap(),
            name: Name::new("squad").unwrap(),
            roles: vec![agent],
            notify: vec![Notify {
                on: Triggers::try_from(vec![Trigger::Waiting, Trigger::Crashed]).unwrap(),
                command: crate::domain::spec::Command::new(["notify-send", "marvel \u{1b}[2J"])
                    .unwrap(),
                timeout: NonZeroSpan::from_secs(10),
                coalesce: Span::from_secs(60),
            }],
        })
        .unwrap();
        let text = dry_run(&agents);
        assert!(
            text.contains("\n  activity  idle after 20s silent; waiting when the screen matches \"\\\\(y/n\\\\)\"\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\nnotify\n  on crashed, waiting: notify-send 'marvel \\e[2J' (timeout 10s, coalesced over 1m)\n"
            ),
            "{text}"
        );
        // Defaults say nothing.
        assert!(!dry_run(&team()).contains("activity"));
    }

    fn view(role: &str, state: RoleState, running: u32, desired: u32) -> RoleView {
        RoleView {
            key: format!("demo/squad/{role}"),
            workspace: "demo".into(),
            team: "squad".into(),
            role: role.into(),
            desired,
            running,
            state,
            restarts: 0,
            last_restart_at: None,
            crashes_in_window: 0,
            max_restarts: Some(5),
            window_ms: 600_000,
            next_restart_at: None,
            frozen_reason: None,
            frozen_at: None,
            last_exit: None,
            command: vec![],
            restart: RestartPolicy::Always,
        }
    }

    #[test]
    fn dry_run_shows_every_role_and_how_it_restarts() {
        assert_eq!(
            dry_run(&team()),
            "\
team demo/squad (2 roles; dry run, nothing applied)

role demo/squad/worker
  replicas  2
  command   sh -c 'my-agent --flag'
  env       TOKEN_FILE
  restart   Always
  backoff   1s ×2 up to 1m, jitter ±10%
  budget    5 restarts in 10m; forgiven after 10m running

role demo/squad/lead
  replicas  1
  command   lead
  restart   OnFailure
  backoff   1s ×2 up to 1m, jitter ±10%
  budget    unlimited restarts; forgiven after 10m running
"
        );
    }

    #[test]
    fn dry_run_of_every_example_names_all_its_roles() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("roles");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "ron") {
                continue;
            }
            let team = manifest::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let text = dry_run(&team);
            assert!(
                text.starts_with(&format!("team {} (", team.key())),
                "{text}"
            );
            for role in &team.roles {
                assert!(
                    text.contains(&format!("\nrole {}\n", team.role_key(role))),
                    "{} is missing from the dry run of {}:\n{text}",
                    role.name,
                    path.display()
                );
            }
            seen += 1;
        }
        assert!(seen > 0, "no examples in {}", dir.display());
    }

    #[test]
    fn frozen_warnings_name_the_reset() {
        assert_eq!(
            frozen_warning("demo/squad/worker", "6 crashes in 10m, last: exit 1"),
            "warning: demo/squad/worker is frozen (6 crashes in 10m, last: exit 1); nothing will be spawned for it\nhelp: run `marvel reset role demo/squad/worker` to restart it"
        );
    }

    #[test]
    fn the_team_is_ready_when_every_role_is_ready_or_succeeded() {
        let t = team();
        assert_eq!(
            readiness(
                &t,
                &[
                    view("worker", RoleState::Ready, 2, 2),
                    view("lead", RoleState::Succeeded, 0, 1)
                ]
            ),
            Readiness::Ready
        );
    }

    #[test]
    fn waiting_names_what_is_not_ready() {
        let t = team();
        let mut worker = view("worker", RoleState::Backoff, 1, 2);
        worker.last_exit = Some(crate::view::ExitView {
            code: Some(1),
            signal: None,
            at: chrono::Utc::now(),
            reason: "exit 1".into(),
        });
        assert_eq!(
            readiness(&t, &[worker]),
            Readiness::Waiting(
                "worker 1/2 running (backoff after exit 1), lead 0/1 running (pending)".into()
            )
        );
    }

    #[test]
    fn a_frozen_role_ends_the_wait() {
        let t = team();
        let mut lead = view("lead", RoleState::Frozen, 0, 1);
        lead.frozen_reason = Some("6 crashes in 10m, last: exit 1".into());
        assert_eq!(
            readiness(&t, &[view("worker", RoleState::Progressing, 0, 2), lead]),
            Readiness::Frozen {
                key: "demo/squad/lead".into(),
                reason: "6 crashes in 10m, last: exit 1".into()
            }
        );
    }
}
