//! `marvel attach KEY`: replace this process with a tmux client showing a
//! team's tmux session, with a session's window and pane selected. The
//! daemon only says where things are, as data; the tmux command is built
//! here from this command's own environment, so nothing received over the
//! socket is ever run.

use clap_complete::engine::ArgValueCandidates;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use crate::client::{self, Endpoint};
use crate::commands::{Ctx, unexpected};
use crate::error::{Error, Result};
use crate::proto::{Request, Response};
use crate::substrate::tmux::Tmux;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each team has one tmux session, with a window per session. attach TEAM
opens it; attach SESSION opens it at that session's window and pane. When
marvel restarts a program it runs again in the same pane, so you stay
attached. Detach with the tmux prefix key followed by d (C-b d by default);
the programs keep running. Inside tmux (on the same server) the current
client switches instead. Outside tmux, attach needs a terminal: without one
it exits with code 5.")]
pub struct Args {
    /// A session or a team, or any unambiguous suffix of its key
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::teams_sessions_keys))]
    pub key: String,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let target = match ctx.target()? {
        Endpoint::Local(t) => t,
        // The marvel there attaches, on this terminal through `ssh -t`.
        Endpoint::Ssh(remote) => {
            if !std::io::stdin().is_terminal() {
                return Err(no_terminal(&args.key));
            }
            return client::ssh::attach(&remote, &args.key);
        }
    };
    // Only builds command lines; never runs anything with this timeout.
    let tmux = Tmux::new(target.tmux_socket.clone(), Duration::from_secs(5));
    // A client already inside this tmux server switches to the session
    // instead of nesting a second client in its pane.
    let tmux_env = std::env::var(crate::substrate::tmux::TMUX_ENV).ok();
    let inside = tmux.is_client_of(tmux_env.as_deref());
    if !inside && !std::io::stdin().is_terminal() {
        return Err(no_terminal(&args.key));
    }
    let req = Request::Attach { key: args.key };
    let (session, window, pane) = match client::local::call(&target, req)? {
        Response::AttachTarget {
            tmux_session,
            window,
            pane,
        } => (tmux_session, window, pane),
        other => return Err(unexpected(&other)),
    };
    let argv = attach_argv(&tmux, inside, &session, window.as_deref(), pane.as_deref())?;
    let (program, rest) = argv
        .split_first()
        .expect("tmux argv starts with the binary");
    // `exec` only returns on failure.
    let err = Command::new(program).args(rest).exec();
    Err(Error::io(program, &err))
}

fn no_terminal(key: &str) -> Error {
    Error::refused(
        "attach needs a terminal, and its standard input is not one",
        Some(format!(
            "run it from a terminal (or from inside tmux); `marvel capture {key}` prints what the pane shows"
        )),
    )
}

/// The tmux command that shows `session` with `window` and `pane` selected
/// (attach, or switch when the caller is already a client of this server),
/// after checking that what the daemon sent looks like a tmux session name,
/// window id and pane id.
pub fn attach_argv(
    tmux: &Tmux,
    inside: bool,
    session: &str,
    window: Option<&str>,
    pane: Option<&str>,
) -> Result<Vec<String>> {
    valid_session_name(session)?;
    if let Some(w) = window {
        valid_id(w, '@', "window")?;
    }
    if let Some(p) = pane {
        valid_id(p, '%', "pane")?;
    }
    Ok(if inside {
        tmux.switch_argv(session, window, pane)
    } else {
        tmux.attach_argv(session, window, pane)
    })
}

/// A tmux session name: not empty, bounded, no control characters (which
/// tmux would not accept and a terminal would interpret).
fn valid_session_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) {
        return Err(Error::other(format!(
            "the daemon sent an invalid tmux session name {name:?}; nothing was run"
        )));
    }
    Ok(())
}

/// A tmux window or pane id: `@` or `%` and digits.
fn valid_id(id: &str, sigil: char, what: &str) -> Result<()> {
    match id.strip_prefix(sigil) {
        Some(n) if !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(())
        }
        _ => Err(Error::other(format!(
            "the daemon sent an invalid tmux {what} id {id:?}; nothing was run"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmux() -> Tmux {
        Tmux::new(Some("sock".into()), Duration::from_secs(1))
    }

    #[test]
    fn the_command_is_built_here_for_the_exact_session() {
        assert_eq!(
            attach_argv(&tmux(), false, "squad", Some("@3"), Some("%12")).unwrap(),
            [
                "tmux",
                "-L",
                "sock",
                "attach-session",
                "-t",
                "=squad",
                ";",
                "select-window",
                "-t",
                "@3",
                ";",
                "select-pane",
                "-t",
                "%12"
            ]
        );
        assert_eq!(
            attach_argv(&tmux(), true, "squad", None, None).unwrap(),
            ["tmux", "-L", "sock", "switch-client", "-t", "=squad"]
        );
        // A name that looks like an option or a command stays one argument.
        assert_eq!(
            attach_argv(&tmux(), false, "-x; run-shell rm", None, Some("%1")).unwrap()[5],
            "=-x; run-shell rm"
        );
    }

    #[test]
    fn odd_data_from_the_daemon_runs_nothing() {
        for (session, window, pane) in [
            ("", None, Some("%1")),
            ("a\u{1b}]52;c;eA==\u{7}", None, Some("%1")),
            ("a\nb", None, Some("%1")),
            ("ok", None, Some("")),
            ("ok", None, Some("%")),
            ("ok", None, Some("12")),
            ("ok", None, Some("%1 ; kill-server")),
            ("ok", None, Some("%-1")),
            ("ok", Some("%1"), None),
            ("ok", Some("@1;kill-server"), None),
        ] {
            let e = attach_argv(&tmux(), false, session, window, pane).unwrap_err();
            assert!(e.to_string().ends_with("; nothing was run"), "{e}");
        }
    }

    #[test]
    fn without_a_terminal_attach_says_so_in_its_own_words() {
        let e = no_terminal("w-0");
        assert_eq!(e.code(), crate::error::exit::REFUSED);
        assert_eq!(
            e.to_string(),
            "error: attach needs a terminal, and its standard input is not one\nhelp: run it from a terminal (or from inside tmux); `marvel capture w-0` prints what the pane shows"
        );
    }
}
