//! `marvel down FILE`: remove exactly the team a manifest declares.

use std::path::PathBuf;

use crate::commands::Ctx;
use crate::commands::run::{load, source_of};
use crate::error::Result;
use crate::proto::Request;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel down team.ron

Stops every session of the team team.ron declares and forgets the team (as
marvel delete team does). A team applied from another file is refused unless
--force. A team that is not applied leaves nothing to do.")]
pub struct Args {
    /// Team manifest (RON)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Remove the team even if another manifest file declared it
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let target = ctx.target()?;
    let team = load(&target, &args.file)?;
    let req = Request::Down {
        team: team.key().to_string(),
        source: source_of(&args.file),
        force: args.force,
    };
    ctx.acknowledge_at(&target, req)
}
