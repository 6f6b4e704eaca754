//! `marvel capture KEY`: what a session's pane shows right now.

use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::error::{Result, exit};
use crate::output;
use crate::proto::{Request, Response};
use clap_complete::engine::ArgValueCandidates;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
For a crashed session, the last lines it printed are shown instead. Control
characters are shown escaped (ESC as \\e, others as ^X).
See also: marvel logs KEY (everything it printed, across the screen's edge).")]
pub struct Args {
    /// The session, or any unambiguous suffix of its key
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::sessions_keys))]
    pub key: String,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    match client::call(&ctx.target()?, Request::Capture { key: args.key })? {
        Response::Text(text) => ctx.out.print(&output::escape_text(&text))?,
        other => return Err(unexpected(&other)),
    }
    Ok(exit::OK)
}
