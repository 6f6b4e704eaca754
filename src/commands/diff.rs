//! `marvel diff FILE`: what `marvel run FILE` would change, per role.

use std::path::PathBuf;

use crate::commands::Ctx;
use crate::commands::run::{load, plan, source_of};
use crate::error::Result;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel diff team.ron

The same as marvel run FILE --dry-run: per role, create, update in place
(policy fields: sessions keep running), replace N sessions (command, env or
cwd changed), scale, remove or unchanged, the fields that changed, and
whether a frozen role would be un-frozen. Without a running daemon it only
validates the file, and says so. Never starts a daemon.")]
pub struct Args {
    /// Team manifest (RON)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let target = ctx.target()?;
    let team = load(&target, &args.file)?;
    plan(&target, &team, source_of(&args.file), ctx)
}
