//! `marvel completions SHELL`: the completion script for a shell. The
//! scripts for bash, zsh and fish are also kept in `completions/`.
//!
//! The script asks the `marvel` binary itself (clap_complete's dynamic
//! completion), which completes verbs and flags from its own command tree
//! and team, role and session keys from the running daemon. With no
//! daemon answering, keys are simply not offered: completion never starts
//! a daemon. The daemon asked is the one the command being completed would
//! talk to: its `--context` and `--state-dir`, else the environment and the
//! current context; another host's must answer within a few seconds. `--static` prints a script that needs no binary at run time
//! and completes verbs and flags only.

use clap::CommandFactory;
use clap_complete::Shell;
use clap_complete::engine::CompletionCandidate;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cli::Cli;
use crate::client::{self, Endpoint};
use crate::commands::Ctx;
use crate::context::CONTEXT_ENV;
use crate::error::{Result, exit};
use crate::proto::{Filter, Kind, Request, Response};

/// The variable the dynamic script sets when it asks the binary.
pub const COMPLETE_ENV: &str = "COMPLETE";
/// How long keys may take to come, over ssh: a shell waits on them.
const KEYS_DEADLINE: Duration = Duration::from_secs(3);

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel completions bash > ~/.local/share/bash-completion/completions/marvel
  marvel completions zsh > ~/.zfunc/_marvel
  marvel completions fish > ~/.config/fish/completions/marvel.fish")]
pub struct Args {
    /// The shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,

    /// A script that completes verbs and flags only, without asking marvel
    #[arg(long = "static")]
    pub static_only: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let text = if args.static_only {
        static_script(args.shell)
    } else {
        script(args.shell)
    };
    ctx.out.print_raw(&text)?;
    Ok(exit::OK)
}

/// The dynamic completion script for `shell`: it asks `marvel`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    let name = shell.to_string();
    let shells = clap_complete::env::Shells::builtins();
    if let Some(completer) = shells.completer(&name) {
        let _ = completer.write_registration(COMPLETE_ENV, "marvel", "marvel", "marvel", &mut buf);
    }
    buf
}

/// The static script for `shell`: verbs and flags, no keys.
pub fn static_script(shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "marvel", &mut buf);
    buf
}

/// Answers a completion request from a shell (`COMPLETE=bash marvel --
/// ...`) and exits; does nothing otherwise.
pub fn answer_shell() {
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(COMPLETE_ENV)
        .complete();
}

/// Keys of these kinds from the running daemon: each full key, and its
/// shortest suffix when that names it alone. Nothing when no daemon runs.
fn keys(kinds: &[Kind]) -> Vec<CompletionCandidate> {
    let Some(target) = completed_target() else {
        return Vec::new();
    };
    let deadline = Instant::now() + KEYS_DEADLINE;
    let mut keys: Vec<String> = Vec::new();
    for &kind in kinds {
        let req = Request::Get {
            kind,
            filter: Filter::default(),
        };
        match client::call_running_by(&target, req, deadline) {
            Ok(Some(Response::Sessions(v))) => keys.extend(v.into_iter().map(|s| s.key)),
            Ok(Some(Response::Roles(v))) => keys.extend(v.into_iter().map(|r| r.key)),
            Ok(Some(Response::Teams(v))) => keys.extend(v.into_iter().map(|t| t.key)),
            _ => return Vec::new(),
        }
    }
    keys.sort();
    keys.dedup();
    candidates(&keys)
}

/// The daemon the command being completed would talk to. The shell passes
/// its words after `--`.
fn completed_target() -> Option<Endpoint> {
    let words: Vec<String> = std::env::args().skip_while(|a| a != "--").collect();
    let context = flag(&words, "--context").or_else(|| std::env::var(CONTEXT_ENV).ok());
    let state_dir = flag(&words, "--state-dir").map(PathBuf::from);
    Endpoint::select(context.as_deref(), state_dir.as_deref()).ok()
}

/// The value of the last `--name VALUE` or `--name=VALUE` among `words`.
fn flag(words: &[String], name: &str) -> Option<String> {
    let mut found = None;
    let mut words = words.iter();
    while let Some(w) = words.next() {
        if w == name {
            found = words.next().cloned();
        } else if let Some(v) = w.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_string());
        }
    }
    found
}

/// Full keys and their unique last parts, for the shell to filter.
fn candidates(keys: &[String]) -> Vec<CompletionCandidate> {
    let mut out: Vec<String> = keys.to_vec();
    for k in keys {
        let last = k.rsplit('/').next().unwrap_or(k);
        if keys
            .iter()
            .filter(|o| crate::domain::key::matches_suffix(o, last))
            .count()
            == 1
        {
            out.push(last.to_string());
        }
    }
    out.sort();
    out.dedup();
    out.into_iter().map(CompletionCandidate::new).collect()
}

pub fn sessions_keys() -> Vec<CompletionCandidate> {
    keys(&[Kind::Sessions])
}

pub fn roles_keys() -> Vec<CompletionCandidate> {
    keys(&[Kind::Roles])
}

pub fn teams_keys() -> Vec<CompletionCandidate> {
    keys(&[Kind::Teams])
}

pub fn teams_sessions_keys() -> Vec<CompletionCandidate> {
    keys(&[Kind::Teams, Kind::Sessions])
}

pub fn teams_roles_keys() -> Vec<CompletionCandidate> {
    keys(&[Kind::Teams, Kind::Roles])
}

pub fn any_keys() -> Vec<CompletionCandidate> {
    keys(&[Kind::Teams, Kind::Roles, Kind::Sessions])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The checked-in scripts must match what the binary generates.
    /// `MARVEL_UPDATE_COMPLETIONS=1 cargo test` rewrites them.
    #[test]
    fn the_completed_lines_context_and_state_dir_are_found() {
        let words: Vec<String> = ["--", "marvel", "--context", "a", "logs", "--context=b", ""]
            .map(String::from)
            .to_vec();
        assert_eq!(flag(&words, "--context").as_deref(), Some("b"));
        assert_eq!(flag(&words, "--state-dir"), None);
        let words: Vec<String> = ["--", "marvel", "--state-dir", "/s", "get", "--context"]
            .map(String::from)
            .to_vec();
        assert_eq!(flag(&words, "--state-dir").as_deref(), Some("/s"));
        // Still being typed: no value yet.
        assert_eq!(flag(&words, "--context"), None);
    }

    #[test]
    fn checked_in_completions_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("completions");
        let update = std::env::var_os("MARVEL_UPDATE_COMPLETIONS").is_some_and(|v| !v.is_empty());
        let mut stale = Vec::new();
        for (shell, file) in [
            (Shell::Bash, "marvel.bash"),
            (Shell::Zsh, "_marvel"),
            (Shell::Fish, "marvel.fish"),
        ] {
            let path = dir.join(file);
            let fresh = script(shell);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &fresh).unwrap();
            } else if std::fs::read(&path).ok().as_deref() != Some(&fresh[..]) {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "completion scripts are out of date: {}\nrefresh them with: MARVEL_UPDATE_COMPLETIONS=1 cargo test checked_in_completions",
            stale.join(", ")
        );
    }

    #[test]
    fn the_script_asks_marvel_and_the_engine_completes_verbs_from_the_tree() {
        let bash = String::from_utf8(script(Shell::Bash)).unwrap();
        assert!(bash.contains("COMPLETE=\"bash\""), "{bash}");
        let mut cmd = Cli::command();
        let words = ["marvel", "res"].map(std::ffi::OsString::from).to_vec();
        let found: Vec<String> = clap_complete::engine::complete(&mut cmd, words, 1, None)
            .unwrap()
            .iter()
            .map(|c| c.get_value().to_string_lossy().into_owned())
            .collect();
        assert!(found.contains(&"reset".to_string()), "{found:?}");
        assert!(found.contains(&"restart".to_string()), "{found:?}");
    }

    #[test]
    fn keys_are_offered_whole_and_by_their_unique_last_part() {
        let keys = [
            "demo/a/worker-0".to_string(),
            "demo/b/worker-0".to_string(),
            "demo/b/lead-0".to_string(),
        ];
        let got: Vec<String> = candidates(&keys)
            .iter()
            .map(|c| c.get_value().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            got,
            [
                "demo/a/worker-0",
                "demo/b/lead-0",
                "demo/b/worker-0",
                "lead-0"
            ]
        );
    }

    #[test]
    fn scripts_complete_the_verbs_but_not_the_pane_helpers() {
        let bash = String::from_utf8(static_script(Shell::Bash)).unwrap();
        for verb in [
            "run", "get", "describe", "inject", "reset", "events", "status",
        ] {
            assert!(bash.contains(verb), "{verb} missing");
        }
        assert!(!bash.contains("logpipe"));
    }
}
