//! The shape of the command line (clap derive): global flags, the verbs and
//! the value types they share, and [`run`], the one place where a command
//! becomes an exit code and an error becomes text on stderr.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::proto::Kind;

const ABOUT: &str = "Keep teams of long-running terminal programs alive as tmux panes";

const LONG_ABOUT: &str = "\
Keep teams of long-running terminal programs alive as tmux panes.

A team is declared in a RON manifest: its roles, how many replicas of each,
and the command each runs. A background daemon (started on demand) keeps
reality equal to that declaration, restarts what dies with a crash-loop
backoff, and freezes a role that keeps crashing until you reset it.";

const EXAMPLES: &str = "\
Examples:
  marvel run team.ron --wait              apply a team and wait until it is ready
  marvel get sessions                     live and crashed sessions, restarts, exits
  marvel get roles -w                     watch backoff and frozen roles
  marvel inject worker-0 'exit' --enter   type into a pane
  marvel reset role demo/squad/worker     un-freeze a role that kept crashing
  marvel get sessions -A                  every context's sessions (see marvel context)

Keys are paths (demo/squad/worker-0); any unambiguous suffix works (worker-0).

Exit codes:
  0  success                 4  not found
  1  failure                 5  refused (for example a frozen role)
  2  usage error             6  daemon unavailable
  3  invalid manifest        7  tmux unavailable
  8  partial: with --all-contexts, some contexts did not answer";

#[derive(Debug, Parser)]
#[command(
    name = "marvel",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// State directory: daemon socket, state, logs [default: per-user data directory]
    #[arg(
        long,
        global = true,
        env = crate::paths::HOME_ENV,
        hide_env_values = true,
        value_name = "DIR",
        help_heading = "Global Options"
    )]
    pub state_dir: Option<PathBuf>,

    /// Talk to this context's daemon (see marvel context) [default: the current one]
    #[arg(
        long,
        global = true,
        env = crate::context::CONTEXT_ENV,
        hide_env_values = true,
        value_name = "NAME",
        help_heading = "Global Options"
    )]
    pub context: Option<String>,

    /// Never colour the output (NO_COLOR is honoured too)
    #[arg(long, global = true, help_heading = "Global Options")]
    pub no_color: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a team manifest and apply it
    #[command(alias = "up")]
    Run(commands::run::Args),
    /// Show what running a team manifest would change
    Diff(commands::diff::Args),
    /// List sessions, roles or teams
    Get(commands::get::Args),
    /// Show everything known about a session, role or team
    Describe(commands::describe::Args),
    /// Type text or keys into a session's pane
    Inject(commands::inject::Args),
    /// Print what a session's pane shows now
    Capture(commands::capture::Args),
    /// Print what a session printed, also for a crashed one
    Logs(commands::logs::Args),
    /// Clear a role's crash-loop history and frozen state
    Reset(commands::reset::Args),
    /// Change how many replicas a role keeps
    Scale(commands::scale::Args),
    /// Replace every session of a team with a fresh one, one at a time
    Shift(commands::shift::Args),
    /// Stop one session (not counted as a crash)
    Kill(commands::kill::Args),
    /// Delete a team and stop its sessions
    Delete(commands::delete::Args),
    /// Remove the team a manifest file declares
    Down(commands::down::Args),
    /// Stop a team's or role's sessions and keep them stopped
    Stop(commands::stop::Args),
    /// Start a stopped team or role again
    Start(commands::start::Args),
    /// Replace a session now, or a role's or team's sessions one at a time
    Restart(commands::restart::Args),
    /// Open a session's pane in tmux
    Attach(commands::attach::Args),
    /// Show the event log: crashes, backoffs, freezes, resets
    Events(commands::events::Args),
    /// A live dashboard of every team: see, attach, type, reset, restart
    Top(commands::top::Args),
    /// Report from inside a session's pane that its program is alive
    Heartbeat(commands::heartbeat::Args),
    /// Show daemon and tmux health
    Status(commands::status::Args),
    /// Run or stop the daemon
    Daemon(commands::daemon::Args),
    /// Name marvel daemons on other hosts (over ssh) and pick one
    Context(commands::context::Args),
    /// Print a shell completion script
    Completions(commands::completions::Args),
}

/// What `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    #[value(aliases = ["session", "sess"])]
    Sessions,
    #[value(alias = "role")]
    Roles,
    #[value(alias = "team")]
    Teams,
}

/// What `describe` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Subject {
    #[value(aliases = ["sessions", "sess"])]
    Session,
    #[value(alias = "roles")]
    Role,
    #[value(alias = "teams")]
    Team,
}

impl From<Resource> for Kind {
    fn from(r: Resource) -> Kind {
        match r {
            Resource::Sessions => Kind::Sessions,
            Resource::Roles => Kind::Roles,
            Resource::Teams => Kind::Teams,
        }
    }
}

impl From<Subject> for Kind {
    fn from(s: Subject) -> Kind {
        match s {
            Subject::Session => Kind::Sessions,
            Subject::Role => Kind::Roles,
            Subject::Team => Kind::Teams,
        }
    }
}

/// `-o` for listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Wide,
    Json,
}

/// `-o` for everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[value(alias = "table")]
    Text,
    Json,
}

/// Parses a human duration such as `30s`, `2m` or `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (for example 30s, 2m or 1h30m)"))
}

/// Parses `args`, runs the command and returns the process exit code. An
/// error is printed here and only here, once, to stderr.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(text) = crate::commands::advice::misuse(&e, &args) {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
                return e.exit_code();
            }
            // Help and version go to stdout and exit 0; misuse exits 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "{e}");
            e.code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("marvel").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_exit_2_and_help_exits_0() {
        assert_eq!(parse(&["get", "pods"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["frobnicate"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["--help"]).unwrap_err().exit_code(), 0);
        assert_eq!(parse(&["--version"]).unwrap_err().exit_code(), 0);
    }

    #[test]
    fn global_flags_go_before_or_after_the_verb() {
        let a = parse(&["--state-dir", "/tmp/x", "get", "roles"]).unwrap();
        let b = parse(&["get", "roles", "--state-dir", "/tmp/x", "--no-color"]).unwrap();
        assert_eq!(a.state_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(b.state_dir, Some(PathBuf::from("/tmp/x")));
        assert!(b.no_color && !a.no_color);
    }

    /// What `marvel <path> --help` prints on a terminal 100 columns wide.
    fn help(path: &[&str]) -> String {
        let argv = std::iter::once("marvel")
            .chain(path.iter().copied())
            .chain(["--help"]);
        let err = Cli::command()
            .term_width(100)
            .try_get_matches_from(argv)
            .expect_err("--help stops parsing");
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
        err.render().to_string()
    }

    /// Compares `marvel <path> --help` with `tests/help/<name>.txt`.
    /// `MARVEL_UPDATE_HELP=1 cargo test help_` rewrites the files.
    fn check_help(path: &[&str]) {
        let name = std::iter::once("marvel")
            .chain(path.iter().copied())
            .collect::<Vec<_>>();
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/help")
            .join(format!("{}.txt", name.join("-")));
        let actual = help(path);
        if std::env::var_os("MARVEL_UPDATE_HELP").is_some_and(|v| !v.is_empty()) {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            actual == expected,
            "`{} --help` changed; if that is intended, run MARVEL_UPDATE_HELP=1 cargo test help_\n--- {}\n{expected}\n--- now\n{actual}",
            name.join(" "),
            file.display()
        );
    }

    macro_rules! help_snapshots {
        ($($test:ident: [$($word:literal),*];)*) => {$(
            #[test]
            fn $test() {
                check_help(&[$($word),*]);
            }
        )*};
    }

    help_snapshots! {
        help_marvel: [];
        help_run: ["run"];
        help_get: ["get"];
        help_describe: ["describe"];
        help_inject: ["inject"];
        help_capture: ["capture"];
        help_logs: ["logs"];
        help_reset: ["reset"];
        help_reset_role: ["reset", "role"];
        help_scale: ["scale"];
        help_shift: ["shift"];
        help_heartbeat: ["heartbeat"];
        help_kill: ["kill"];
        help_delete: ["delete"];
        help_delete_team: ["delete", "team"];
        help_attach: ["attach"];
        help_events: ["events"];
        help_top: ["top"];
        help_status: ["status"];
        help_daemon: ["daemon"];
        help_daemon_run: ["daemon", "run"];
        help_daemon_stop: ["daemon", "stop"];
        help_daemon_install: ["daemon", "install"];
        help_daemon_uninstall: ["daemon", "uninstall"];
        help_daemon_dial_stdio: ["daemon", "dial-stdio"];
        help_context: ["context"];
        help_context_add: ["context", "add"];
        help_context_ls: ["context", "ls"];
        help_context_use: ["context", "use"];
        help_context_rm: ["context", "rm"];
        help_stop: ["stop"];
        help_start: ["start"];
        help_restart: ["restart"];
        help_down: ["down"];
        help_diff: ["diff"];
        help_completions: ["completions"];
    }

    #[test]
    fn each_verb_has_a_snapshot() {
        let mut cmd = Cli::command();
        cmd.build();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("tests/help/marvel-{}.txt", sub.get_name()));
            assert!(file.exists(), "add {} to help_snapshots!", sub.get_name());
        }
    }

    #[test]
    fn help_names_the_verbs_and_their_key_flags() {
        let root = help(&[]);
        for verb in [
            "run", "get", "describe", "inject", "reset", "events", "status", "daemon",
        ] {
            assert!(
                root.contains(&format!("\n  {verb} ")),
                "{verb} missing from:\n{root}"
            );
        }
        assert!(root.contains("Exit codes:"));
        assert!(!root.contains("shim") && !root.contains("logpipe"));
        assert!(help(&["run"]).contains("--dry-run"));
        assert!(help(&["get"]).contains("-w, --watch"));
        assert!(help(&["inject"]).contains("-k, --keys"));
        assert!(help(&["events"]).contains("-f, --follow"));
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").unwrap_err().contains("for example"));
    }
}
