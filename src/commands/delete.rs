//! `marvel delete team KEY`: forget a team and stop its sessions; its
//! worktrees are kept unless `--prune-worktrees` says otherwise.

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
    /// Delete a team: stop every session of every role and forget it (its worktrees stay)
    #[command(after_help = "\
Examples:
  marvel delete team demo/squad
  marvel delete team squad --prune-worktrees")]
    Team {
        /// The team, or any unambiguous suffix of its key
        #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::teams_keys))]
        key: String,
        /// Also remove its worktrees that hold no uncommitted change (their
        /// branches stay); the others are kept and listed
        #[arg(long)]
        prune_worktrees: bool,
    },
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    match args.what {
        What::Team {
            key,
            prune_worktrees,
        } => ctx.acknowledge(Request::Delete {
            key,
            prune_worktrees,
        }),
    }
}
