//! `marvel stop TEAM|ROLE`: stop the sessions and keep the declaration.

use crate::commands::Ctx;
use crate::error::Result;
use crate::proto::Request;
use clap_complete::engine::ArgValueCandidates;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel stop demo/squad                every role of the team
  marvel stop worker                    one role

A stopped role runs nothing and starts nothing until marvel start: it is not
a crash, nothing is charged to its restart budget, and it stays stopped when
the daemon restarts or the file is applied again. marvel down FILE removes
the team instead; marvel restart replaces a session.")]
pub struct Args {
    /// The team or role, or any unambiguous suffix of its key
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::teams_roles_keys))]
    pub key: String,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    ctx.acknowledge(Request::StopRoles { key: args.key })
}
