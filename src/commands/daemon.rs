//! `marvel daemon run|stop|dial-stdio`: the daemon in the foreground (for
//! systemd units and debugging), stopping it, and the relay ssh contexts
//! reach it through. Stopping never stops the panes. These act on this
//! host's daemon, whatever the context.

use std::time::{Duration, Instant};

use clap::Subcommand;

use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::daemon;
use crate::error::{Error, Result, exit};
use crate::lock;
use crate::paths::Target;
use crate::proto::{Request, Response};
use crate::statedir;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Run the daemon in the foreground until stopped
    #[command(after_help = "\
Other commands start a daemon in the background when none runs; use this in
a systemd unit or to watch its log on the terminal. One daemon runs per state
directory: a second one refuses to start.")]
    Run,
    /// Stop the daemon; the panes it supervises keep running
    #[command(after_help = "\
The next command that needs the daemon starts a new one, which adopts the
panes that are still alive and records the ones that died meanwhile. A
daemon whose socket was removed is found through its lock and sent SIGTERM,
which it takes as the same request.")]
    Stop,
    /// Relay the daemon's protocol over standard input and output (what an ssh context runs)
    #[command(after_help = "\
Another host runs this over ssh (ssh HOST marvel daemon dial-stdio) to reach
this host's daemon, started first if none runs, with the same checks as any
command. It writes one greeting line (its version and protocol) and then
relays bytes until either side ends. It is not meant to be typed.")]
    DialStdio {
        /// Do not start a daemon when none runs (say so in the greeting)
        #[arg(long)]
        no_start: bool,
    },
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let target = ctx.local()?;
    match args.action {
        Action::Run => daemon::run_foreground(&target)?,
        Action::Stop => stop(&target, ctx)?,
        Action::DialStdio { no_start } => return client::dial::serve(&target, !no_start),
    }
    Ok(exit::OK)
}

/// How long `stop` waits for the daemon to be gone. It finishes the tmux
/// calls under way first, each bounded by the tmux timeout.
const EXIT_DEADLINE: Duration = Duration::from_secs(15);

/// Asks the daemon to stop over its socket; when no socket answers, finds
/// it through its lock and sends it SIGTERM, which it takes as the same
/// request. Then waits until it has released its lock: it is gone, and a
/// new one can start at once.
fn stop(target: &Target, ctx: &Ctx) -> Result<()> {
    let message = match client::local::call_running(target, Request::Stop)? {
        Some(Response::Done(message)) => message,
        Some(other) => return Err(unexpected(&other)),
        None => {
            if statedir::check(&target.paths)?.is_none() {
                return ctx.out.print("no daemon was running");
            }
            match lock::terminate(&target.paths)? {
                Some(pid) => {
                    ctx.out.note(&format!(
                        "the daemon (pid {pid}) does not answer on {}: sent it SIGTERM",
                        target.paths.socket().display()
                    ));
                    "daemon stopping; panes keep running".to_string()
                }
                None if lock::is_held(&target.paths)? => {
                    return Err(Error::daemon(format!(
                        "a process holds the lock of {} but cannot be identified as a daemon; see {}",
                        target.paths.root.display(),
                        target.paths.lock().display()
                    )));
                }
                None => return ctx.out.print("no daemon was running"),
            }
        }
    };
    if !lock::wait_released(&target.paths, Instant::now() + EXIT_DEADLINE)? {
        ctx.out.note(&format!(
            "the daemon is still finishing its tmux calls after {} s",
            EXIT_DEADLINE.as_secs()
        ));
    }
    ctx.out.print(&message)
}
