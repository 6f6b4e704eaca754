//! `marvel scale KEY N`: change how many replicas a role keeps.

use crate::commands::Ctx;
use crate::domain::spec::MAX_REPLICAS;
use crate::error::Result;
use crate::proto::Request;
use clap_complete::engine::ArgValueCandidates;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel scale demo/squad/worker 5
  marvel scale worker 1

Scaling down stops the newest sessions first. Scaling does not un-freeze a
frozen role (see marvel reset role), and is refused while the team shifts.
The next marvel run of the team's file sets the count back to the file's.")]
pub struct Args {
    /// The role, or any unambiguous suffix of its key
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::roles_keys))]
    pub key: String,

    /// The number of replicas to keep
    #[arg(value_name = "N", value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_REPLICAS)))]
    pub replicas: u32,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    ctx.acknowledge(Request::Scale {
        key: args.key,
        replicas: args.replicas,
    })
}
