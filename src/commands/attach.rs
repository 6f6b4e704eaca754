//! `marvel attach KEY`: replace this process with a tmux client showing the
//! session's pane. The daemon only says where the session is, as data; the
//! tmux command is built here from this command's own environment, so
//! nothing received over the socket is ever run.

use clap_complete::engine::ArgValueCandidates;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use crate::client::{self, Endpoint};
use crate::commands::{Ctx, unexpected};
use crate::error::{Error, Result};
use crate::proto::{Request, Response};
use crate::substrate::Substrate;
use crate::substrate::tmux::Tmux;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Detach again with the tmux prefix key followed by d (C-b d by default);
the program keeps running. Inside tmux (on the same server) the current
client switches to the session instead. Outside tmux, attach needs a
terminal: without one it exits with code 5.")]
pub struct Args {
    /// The session, or any unambiguous suffix of its key
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::sessions_keys))]
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
    let tmux_env = std::env::var("TMUX").ok();
    let inside = tmux.is_client_of(tmux_env.as_deref());
    if !inside && !std::io::stdin().is_terminal() {
        return Err(no_terminal(&args.key));
    }
    let req = Request::Attach { key: args.key };
    let (session, pane) = match client::local::call(&target, req)? {
        Response::AttachTarget { tmux_session, pane } => (tmux_session, pane),
        other => return Err(unexpected(&other)),
    };
    let argv = attach_argv(&tmux, inside, &session, &pane)?;
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

/// The tmux command that shows `session` (attach, or switch when the
/// caller is already a client of this server), after checking that what
/// the daemon sent looks like a tmux session name and pane id.
pub fn attach_argv(tmux: &Tmux, inside: bool, session: &str, pane: &str) -> Result<Vec<String>> {
    valid_session_name(session)?;
    valid_pane_id(pane)?;
    Ok(if inside {
        tmux.switch_argv(session)
    } else {
        tmux.attach_argv(session)
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

/// A tmux pane id: `%` and digits.
fn valid_pane_id(pane: &str) -> Result<()> {
    match pane.strip_prefix('%') {
        Some(n) if !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(())
        }
        _ => Err(Error::other(format!(
            "the daemon sent an invalid tmux pane id {pane:?}; nothing was run"
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
            attach_argv(&tmux(), false, "marvel/w/t/r-0", "%12").unwrap(),
            [
                "tmux",
                "-L",
                "sock",
                "attach-session",
                "-t",
                "=marvel/w/t/r-0"
            ]
        );
        assert_eq!(
            attach_argv(&tmux(), true, "marvel/w/t/r-0", "%12").unwrap(),
            [
                "tmux",
                "-L",
                "sock",
                "switch-client",
                "-t",
                "=marvel/w/t/r-0"
            ]
        );
        // A name that looks like an option or a command stays one argument.
        assert_eq!(
            attach_argv(&tmux(), false, "-x; run-shell rm", "%1").unwrap()[5],
            "=-x; run-shell rm"
        );
    }

    #[test]
    fn odd_data_from_the_daemon_runs_nothing() {
        for (session, pane) in [
            ("", "%1"),
            ("a\u{1b}]52;c;eA==\u{7}", "%1"),
            ("a\nb", "%1"),
            ("ok", ""),
            ("ok", "%"),
            ("ok", "12"),
            ("ok", "%1 ; kill-server"),
            ("ok", "%-1"),
        ] {
            let e = attach_argv(&tmux(), false, session, pane).unwrap_err();
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
