//! `marvel inject KEY TEXT...`: type into a session's pane, literally or as
//! tmux key names; with `--when-idle`, only once the session is idle or
//! waiting for input.

use std::time::{Duration, Instant};

use crate::cli::parse_duration;
use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::error::{Error, Result, exit};
use crate::proto::{Request, Response};
use clap_complete::engine::ArgValueCandidates;

/// Longest single wait the daemon is asked for: a longer `--timeout` is
/// asked again, so no answer takes longer than another host's connection
/// allows.
const SLICE: Duration = Duration::from_secs(20);

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel inject worker-0 'git status' --enter   type a line and press Enter
  marvel inject worker-0 --keys C-c             interrupt the program
  marvel inject worker-0 --keys Up Enter        repeat the last shell command
  marvel inject worker-0 -- --help              text that starts with '-'
  marvel inject agent-0 \"$(cat prompt.md)\" --enter --when-idle
                                                a prompt of many lines, pasted
                                                once the agent is idle

The words of TEXT are joined with single spaces. With --keys each word is a
tmux key name (C-c, Enter, Escape, Up, F1, ...). Text with a newline
arrives as one paste (bracketed, if the program asked for it), so a
prompt of several lines is not submitted line by line; --enter presses
Enter once after it.

--when-idle waits until the session is idle or waiting before typing; if it
is still busy when --timeout is up, nothing is typed and marvel exits with
status 5.")]
pub struct Args {
    /// The session, or any unambiguous suffix of its key
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::sessions_keys))]
    pub key: String,

    /// What to type (or, with --keys, which keys to press)
    #[arg(value_name = "TEXT", required_unless_present = "enter")]
    pub text: Vec<String>,

    /// Press Enter after the text
    #[arg(short, long)]
    pub enter: bool,

    /// Treat the words as tmux key names, not literal text
    #[arg(short, long)]
    pub keys: bool,

    /// Type only once the session is idle or waiting for input
    #[arg(long)]
    pub when_idle: bool,

    /// How long --when-idle waits (30s, 5m, ...)
    #[arg(
        long,
        value_name = "DUR",
        default_value = "5m",
        value_parser = parse_duration,
        requires = "when_idle"
    )]
    pub timeout: Duration,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let text = args.text.join(" ");
    if !args.when_idle {
        return ctx.acknowledge(Request::Inject {
            key: args.key,
            text,
            enter: args.enter,
            keys: args.keys,
            when_idle_ms: None,
        });
    }
    let target = ctx.target()?;
    let deadline = Instant::now() + args.timeout;
    loop {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(SLICE);
        let req = Request::Inject {
            key: args.key.clone(),
            text: text.clone(),
            enter: args.enter,
            keys: args.keys,
            when_idle_ms: Some(slice.as_millis() as u64),
        };
        match client::call(&target, req)? {
            Response::Done(message) => {
                ctx.out.print(&message)?;
                return Ok(exit::OK);
            }
            Response::StillBusy { since } if Instant::now() >= deadline => {
                let since = since
                    .map(|t| {
                        format!(
                            " (busy since {})",
                            t.with_timezone(&chrono::Local).format("%H:%M:%S")
                        )
                    })
                    .unwrap_or_default();
                // Refused as things stand (exit 5), like typing into a
                // crashed session: the request was fine, the agent busy.
                return Err(Error::refused(
                    format!(
                        "{} did not become idle within {}{since}; nothing was typed",
                        args.key,
                        humantime::format_duration(args.timeout)
                    ),
                    Some("wait longer with --timeout, or leave out --when-idle to type now".into()),
                ));
            }
            Response::StillBusy { .. } => {}
            other => return Err(unexpected(&other)),
        }
    }
}
