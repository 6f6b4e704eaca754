//! `marvel start TEAM|ROLE`: run a stopped team or role again.

use crate::commands::Ctx;
use crate::error::Result;
use crate::proto::Request;
use clap_complete::engine::ArgValueCandidates;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel start demo/squad
  marvel start worker

Starts what marvel stop stopped. A frozen role stays frozen (see marvel reset
role); marvel run FILE applies a team.")]
pub struct Args {
    /// The team or role, or any unambiguous suffix of its key
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::teams_roles_keys))]
    pub key: String,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    ctx.acknowledge(Request::StartRoles { key: args.key })
}
