//! `marvel daemon run|stop`: the daemon in the foreground (for systemd units
//! and debugging), and stopping it. Stopping never stops the panes.

use std::time::{Duration, Instant};

use clap::Subcommand;

use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::daemon;
use crate::error::{Error, Result, exit};
use crate::paths::Paths;
use crate::proto::{Request, Response};

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
panes that are still alive and records the ones that died meanwhile.")]
    Stop,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let target = ctx.target()?;
    match args.action {
        Action::Run => daemon::run_foreground(&target)?,
        Action::Stop => match client::call_running(&target, Request::Stop)? {
            None => ctx.out.print("no daemon was running")?,
            Some(Response::Done(message)) => {
                if !wait_for_exit(&target.paths)? {
                    ctx.out.note(&format!(
                        "the daemon is still finishing its tmux calls after {} s",
                        EXIT_DEADLINE.as_secs()
                    ));
                }
                ctx.out.print(&message)?
            }
            Some(other) => return Err(unexpected(&other)),
        },
    }
    Ok(exit::OK)
}

/// How long `stop` waits for the daemon to be gone. It finishes the tmux
/// calls under way first, each bounded by the tmux timeout.
const EXIT_DEADLINE: Duration = Duration::from_secs(15);

/// Waits until the daemon has released its lock, which it holds for its
/// whole life: then it is gone, and a new one can start at once. `false`
/// when it is still there at the deadline.
fn wait_for_exit(paths: &Paths) -> Result<bool> {
    let path = paths.lock();
    let lock = client::open_lock(&path)?;
    let deadline = Instant::now() + EXIT_DEADLINE;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, &e)),
        }
    }
}
