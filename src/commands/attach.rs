//! `marvel attach KEY`: replace this process with a tmux client showing the
//! session's pane.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::error::{Error, Result};
use crate::proto::{Request, Response};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Detach again with the tmux prefix key followed by d (C-b d by default);
the program keeps running.")]
pub struct Args {
    /// The session, or any unambiguous suffix of its key
    #[arg(value_name = "KEY")]
    pub key: String,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let argv = match client::call(
        &ctx.target()?,
        Request::Attach {
            key: args.key,
            tmux_client: std::env::var("TMUX").ok().filter(|t| !t.is_empty()),
        },
    )? {
        Response::AttachArgv(argv) => argv,
        other => return Err(unexpected(&other)),
    };
    let Some((program, rest)) = argv.split_first() else {
        return Err(Error::other("the daemon sent an empty tmux command line"));
    };
    // `exec` only returns on failure.
    let err = Command::new(program).args(rest).exec();
    Err(Error::io(program, &err))
}
