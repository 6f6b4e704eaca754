//! `marvel restart KEY`: replace a session now, or a role's or team's
//! sessions one at a time.

use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::error::{Result, exit};
use crate::output;
use crate::proto::{Request, Response};
use clap_complete::engine::ArgValueCandidates;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel restart worker-0               replace one session now
  marvel restart worker                 every session of a role, one at a time
  marvel restart demo/squad             every session of a team, one at a time

Never a crash: the role's restart budget is not charged. A role or team is
replaced as marvel shift does it (new before old, each successor ready before
its predecessor stops); marvel get teams shows the progress.")]
pub struct Args {
    /// A session, role or team, or any unambiguous suffix of its key
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::any_keys))]
    pub key: String,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    match client::call(&ctx.target()?, Request::Restart { key: args.key })? {
        Response::Done(message) => ctx.out.print(&message)?,
        Response::Shift { team, shift } => ctx.out.print(&format!(
            "restarting {team}: {} sessions, one at a time, new before old ({}; marvel get teams shows it)",
            shift.total,
            output::escape_line(&shift.roles.join(", "))
        ))?,
        other => return Err(unexpected(&other)),
    }
    Ok(exit::OK)
}
