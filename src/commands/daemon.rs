//! `marvel daemon run|stop`: the daemon in the foreground (for systemd units
//! and debugging), and stopping it. Stopping never stops the panes.

use clap::Subcommand;

use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::daemon;
use crate::error::{Result, exit};
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
            Some(Response::Done(message)) => ctx.out.print(&message)?,
            Some(other) => return Err(unexpected(&other)),
        },
    }
    Ok(exit::OK)
}
