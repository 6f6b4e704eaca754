//! `marvel logs KEY`: the last lines a session printed, also for a crashed
//! one.

use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::error::{Result, exit};
use crate::output;
use crate::proto::{Request, Response};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel logs worker-0                  the last 200 lines
  marvel logs worker-0 -n 20            why did it crash?

Control characters the program printed are shown escaped (ESC as \\e, others
as ^X), so its output cannot act on your terminal; --raw prints them as
they are.")]
pub struct Args {
    /// The session, or any unambiguous suffix of its key
    #[arg(value_name = "KEY")]
    pub key: String,

    /// How many of the last lines to print
    #[arg(short = 'n', long, value_name = "N", default_value_t = 200)]
    pub lines: usize,

    /// Print the text exactly as received, control characters included
    #[arg(long)]
    pub raw: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let req = Request::Logs {
        key: args.key,
        lines: args.lines,
    };
    match client::call(&ctx.target()?, req)? {
        Response::Text(text) if args.raw => ctx.out.print_raw(text.as_bytes())?,
        Response::Text(text) => ctx.out.print(&output::escape_text(&text))?,
        other => return Err(unexpected(&other)),
    }
    Ok(exit::OK)
}
