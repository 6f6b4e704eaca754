//! `marvel kill KEY`: stop one session on purpose.

use crate::commands::Ctx;
use crate::error::Result;
use crate::proto::Request;
use clap_complete::engine::ArgValueCandidates;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
A killed session is not a crash: it does not count against the role's
restart budget. To run fewer replicas, use marvel scale.")]
pub struct Args {
    /// The session, or any unambiguous suffix of its key
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::sessions_keys))]
    pub key: String,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    ctx.acknowledge(Request::Kill { key: args.key })
}
