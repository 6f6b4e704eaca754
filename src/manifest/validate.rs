//! From the written team to a [`TeamSpec`]: fills in defaults and applies
//! the rules that span fields (through the spec's own constructors, the
//! same ones that decode a spec from the wire) and the rules that look at
//! this machine: the program on `PATH`, the working directory.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::domain::spec::{
    Backoff, Command, Cwd, DEFAULT_BACKOFF_FACTOR, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_JITTER,
    DEFAULT_BACKOFF_MAX, DEFAULT_HEARTBEAT_FAILURES, DEFAULT_IDLE_AFTER, DEFAULT_MAX_RESTARTS,
    DEFAULT_NOTIFY_COALESCE, DEFAULT_NOTIFY_TIMEOUT, DEFAULT_READY_AFTER, DEFAULT_RESET_AFTER,
    DEFAULT_WINDOW, DEFAULT_WORKSPACE, Health, Name, Notify, Replicas, Repo, RoleParts, RoleSpec,
    TeamParts, TeamSpec, Worktree,
};

use super::schema::{RawBackoff, RawBudget, RawHealth, RawNotify, RawRole, RawTeam, RawWorktree};

/// A refusal of a value the text holds: the dotted path of the field, what
/// is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub path: String,
    pub message: String,
    pub help: Option<String>,
}

impl Refusal {
    fn new(path: String, message: impl Into<String>) -> Refusal {
        Refusal {
            path,
            message: message.into(),
            help: None,
        }
    }

    fn help(mut self, help: impl Into<String>) -> Refusal {
        self.help = Some(help.into());
        self
    }
}

/// Checks each role's program (`command[0]`) and says why it cannot run.
pub(super) type Resolver<'a> = &'a dyn Fn(&str) -> Result<(), String>;

/// The team the text declares. With `base` (the manifest's directory) each
/// `cwd` is made absolute from it and must be a directory; without, it is
/// kept as written.
pub(super) fn team(
    raw: RawTeam,
    resolver: Resolver,
    base: Option<&Path>,
) -> Result<TeamSpec, Refusal> {
    let workspace = match raw.workspace {
        Some(w) => w,
        None => Name::new(DEFAULT_WORKSPACE).expect("the default workspace name is valid"),
    };
    let roles = raw
        .roles
        .into_iter()
        .enumerate()
        .map(|(i, r)| role(&format!("roles[{i}]"), r, resolver, base))
        .collect::<Result<Vec<RoleSpec>, Refusal>>()?;
    let notify = raw
        .notify
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, n)| notify(&format!("notify[{i}]"), n, resolver, base))
        .collect::<Result<Vec<Notify>, Refusal>>()?;
    TeamSpec::try_from(TeamParts {
        workspace,
        name: raw.name,
        roles,
        notify,
    })
    .map_err(|e| {
        let refusal = Refusal::new(e.field(), e.message());
        match e {
            crate::domain::spec::TeamError::NoRoles => {
                refusal.help(r#"add one, e.g. roles: [Role(name: "worker", command: ["sh"])]"#)
            }
            crate::domain::spec::TeamError::SharedBranch { .. } => {
                refusal.help("put {role} in the branch names, or give each role its own")
            }
            _ => refusal,
        }
    })
}

/// A notification command, checked as a role's command is: what is checked
/// is what runs.
fn notify(
    p: &str,
    raw: RawNotify,
    resolver: Resolver,
    base: Option<&Path>,
) -> Result<Notify, Refusal> {
    let command = program(&format!("{p}.command"), raw.command, resolver, base)?;
    Ok(Notify {
        on: raw.on,
        command,
        timeout: raw.timeout.map_or(DEFAULT_NOTIFY_TIMEOUT, |w| w.value),
        coalesce: raw.coalesce.map_or(DEFAULT_NOTIFY_COALESCE, |w| w.value),
    })
}

fn role(
    p: &str,
    raw: RawRole,
    resolver: Resolver,
    base: Option<&Path>,
) -> Result<RoleSpec, Refusal> {
    // What is checked is what runs: a relative program path is the
    // manifest directory's, as is the working directory (the manifest's
    // own directory when none is given), and both are kept absolute.
    let command = program(&format!("{p}.command"), raw.command, resolver, base)?;
    let resume = match raw.resume {
        Some(r) => Some(program(&format!("{p}.resume"), r, resolver, base)?),
        None => None,
    };
    if raw.cwd.is_some() && raw.worktree.is_some() {
        return Err(Refusal::new(
            format!("{p}.cwd"),
            "a role with a worktree runs in it: cwd would say otherwise",
        )
        .help("leave out cwd"));
    }
    let worktree = match raw.worktree {
        Some(w) => Some(worktree(&format!("{p}.worktree"), w, base)?),
        None => None,
    };
    let cwd = match (raw.cwd, base) {
        (Some(cwd), Some(base)) => Some(directory(&format!("{p}.cwd"), &base.join(&*cwd))?),
        (None, Some(base)) => Some(directory(&format!("{p}.cwd"), base)?),
        (cwd, None) => cwd,
    };
    let health = raw.health.map(
        |RawHealth::Heartbeat { timeout, failures }| Health::Heartbeat {
            timeout: timeout.value,
            failures: failures.unwrap_or(DEFAULT_HEARTBEAT_FAILURES),
        },
    );
    let parts = RoleParts {
        name: raw.name,
        replicas: raw.replicas.map_or(Replicas::ONE, |r| r.0),
        command,
        env: raw.env.unwrap_or_default(),
        cwd,
        restart: raw.restart.unwrap_or_default(),
        backoff: backoff(&format!("{p}.backoff"), raw.backoff.unwrap_or_default())?,
        max_restarts: match raw.max_restarts {
            RawBudget::Absent => Some(DEFAULT_MAX_RESTARTS),
            RawBudget::Unlimited => None,
            RawBudget::Limit(n) => Some(n),
        },
        window: raw.window.map_or(DEFAULT_WINDOW, |w| w.value),
        reset_after: raw.reset_after.map_or(DEFAULT_RESET_AFTER, |w| w.value),
        health,
        ready_after: raw.ready_after.map_or(DEFAULT_READY_AFTER, |w| w.value),
        shift_last: raw.shift_last.unwrap_or(false),
        layout: raw.layout.unwrap_or_default(),
        worktree,
        resume,
        idle_after: raw.idle_after.map_or(DEFAULT_IDLE_AFTER, |w| w.value),
        waiting: raw.waiting,
    };
    RoleSpec::try_from(parts).map_err(|e| {
        Refusal::new(format!("{p}.{}", e.field), e.message())
            .help("pass long text through a file, and name the file in the command or env")
    })
}

/// A command (`command` or `resume`, at `path`) whose program runs: made
/// absolute from `base` when given as a relative path, then checked.
fn program(
    path: &str,
    command: Command,
    resolver: Resolver,
    base: Option<&Path>,
) -> Result<Command, Refusal> {
    let command = match base {
        Some(base) => absolute_program(command, base),
        None => command,
    };
    resolver(&command[0]).map_err(|reason| {
        let help = if command[0].contains('/') {
            "check the path, and that the file is executable (chmod +x)"
        } else {
            "give the full path to the program, or add its directory to PATH"
        };
        Refusal::new(format!("{path}[0]"), reason).help(help)
    })?;
    Ok(command)
}

/// A role's worktree: with `base`, its repository is resolved against it
/// (as `cwd` is) and must be a directory; whether it is a git repository
/// is for the daemon to find out, with the git it runs.
fn worktree(path: &str, raw: RawWorktree, base: Option<&Path>) -> Result<Worktree, Refusal> {
    let repo = match base {
        Some(base) => {
            let at = format!("{path}.repo");
            let dir = base.join(&*raw.repo);
            directory(&at, &dir)?;
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            Repo::new(dir).map_err(|m| Refusal::new(at, m))?
        }
        None => raw.repo,
    };
    Ok(Worktree {
        repo,
        branch: raw.branch.map(|b| b.0).unwrap_or_default(),
    })
}

/// The command with a relative program path (`./agent.sh`, `bin/x`) made
/// absolute from `base`; a bare name is looked up in `PATH` as it is.
fn absolute_program(command: Command, base: &Path) -> Command {
    let program = Path::new(&command[0]);
    if !command[0].contains('/') || program.is_absolute() {
        return command;
    }
    let full = std::path::absolute(base.join(program)).unwrap_or_else(|_| base.join(program));
    let mut argv: Vec<String> = command.into();
    argv[0] = full.to_string_lossy().into_owned();
    Command::new(argv).expect("a command with a longer program name is still a command")
}

/// `dir` must exist and be a directory.
fn directory(path: &str, dir: &Path) -> Result<Cwd, Refusal> {
    let refuse = |m: String| Refusal::new(path.to_string(), m);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Cwd::new(dir).map_err(refuse),
        Ok(_) => Err(refuse(format!("{} is not a directory", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(refuse(format!("{} does not exist", dir.display())))
        }
        Err(e) => Err(refuse(format!("{}: {e}", dir.display()))),
    }
}

fn backoff(p: &str, raw: RawBackoff) -> Result<Backoff, Refusal> {
    let initial = raw
        .initial
        .as_ref()
        .map_or(DEFAULT_BACKOFF_INITIAL, |w| w.value);
    let max = raw.max.as_ref().map_or(DEFAULT_BACKOFF_MAX, |w| w.value);
    let factor = raw.factor.unwrap_or(DEFAULT_BACKOFF_FACTOR);
    let jitter = raw.jitter.unwrap_or(DEFAULT_BACKOFF_JITTER);
    Backoff::new(initial, max, factor, jitter).map_err(|e| {
        let shown = |written: Option<&str>, d: std::time::Duration| match written {
            Some(text) => format!("{text:?}"),
            None => format!("{} by default", humantime::format_duration(d)),
        };
        let initial = raw.initial.as_ref().map(|w| w.text.as_str());
        let max = raw.max.as_ref().map(|w| w.text.as_str());
        // Point at whichever of the two the user wrote, initial first.
        if raw.initial.is_some() {
            Refusal::new(
                format!("{p}.initial"),
                format!(
                    "{} is longer than max ({}); initial must not exceed max",
                    shown(initial, e.initial),
                    shown(max, e.max)
                ),
            )
        } else {
            Refusal::new(
                format!("{p}.max"),
                format!(
                    "{} is shorter than initial ({}); max must not be below initial",
                    shown(max, e.max),
                    shown(initial, e.initial)
                ),
            )
        }
    })
}

/// The real resolver: a name with a `/` is checked as a path, any other is
/// searched in `PATH`. It must be a regular file with an execute bit.
pub fn check_on_path(cmd: &str) -> Result<(), String> {
    check_in(cmd, std::env::var_os("PATH").as_deref())
}

pub(super) fn check_in(cmd: &str, path_var: Option<&OsStr>) -> Result<(), String> {
    if cmd.is_empty() {
        return Err("the program name is empty".into());
    }
    if cmd.contains('/') {
        return match std::fs::metadata(cmd) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{cmd} does not exist"))
            }
            Err(e) => Err(format!("{cmd}: {e}")),
            Ok(m) if m.is_dir() => Err(format!("{cmd} is a directory, not a program")),
            Ok(m) if !m.is_file() => Err(format!("{cmd} is not a regular file")),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(format!("{cmd} is not executable")),
            Ok(_) => Ok(()),
        };
    }
    let Some(path_var) = path_var else {
        return Err(format!("{cmd:?} cannot be looked up: PATH is not set"));
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    if which::which_in(cmd, Some(path_var), cwd).is_ok() {
        return Ok(());
    }
    // Not found as a program: say so, or that the file there cannot run.
    let not_executable = std::env::split_paths(path_var)
        .map(|dir| dir.join(cmd))
        .find(|p| p.is_file());
    match not_executable {
        Some(p) => Err(format!(
            "{cmd:?} was found at {} but it is not executable",
            p.display()
        )),
        None => Err(format!("{cmd:?} was not found in any directory on PATH")),
    }
}
