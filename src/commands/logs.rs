//! `marvel logs KEY`: the last lines a session printed, also for a crashed
//! one.

use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::error::{Result, exit};
use crate::proto::{Request, Response};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel logs worker-0                  the last 200 lines
  marvel logs worker-0 -n 20            why did it crash?")]
pub struct Args {
    /// The session, or any unambiguous suffix of its key
    #[arg(value_name = "KEY")]
    pub key: String,

    /// How many of the last lines to print
    #[arg(short = 'n', long, value_name = "N", default_value_t = 200)]
    pub lines: usize,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let req = Request::Logs {
        key: args.key,
        lines: args.lines,
    };
    match client::call(&ctx.target()?, req)? {
        Response::Text(text) => ctx.out.print(&text)?,
        other => return Err(unexpected(&other)),
    }
    Ok(exit::OK)
}
