//! `marvel reset role KEY`: clear a role's crash-loop history and frozen
//! state, like `systemctl reset-failed`.

use clap::Subcommand;
use clap_complete::engine::ArgValueCandidates;

use crate::commands::Ctx;
use crate::error::Result;
use crate::proto::Request;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, Subcommand)]
pub enum What {
    /// Forget a role's crashes and backoff, un-freeze it and spawn at once
    #[command(after_help = "\
Examples:
  marvel reset role demo/squad/worker
  marvel reset role worker

Resetting a role that is not frozen only clears its history; doing it twice
is harmless.")]
    Role {
        /// The role, or any unambiguous suffix of its key
        #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::roles_keys))]
        key: String,
    },
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    match args.what {
        What::Role { key } => ctx.acknowledge(Request::Reset { key }),
    }
}
