//! `marvel describe session|role|team KEY`: everything the daemon knows
//! about one resource, with its recent events.

use crate::cli::{Format, Subject};
use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::error::{Result, exit};
use crate::proto::{Request, Response};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel describe session worker-0      state, exit, last output, events
  marvel describe role demo/squad/worker
  marvel describe team squad -o json")]
pub struct Args {
    /// What KEY names
    #[arg(
        value_enum,
        value_name = "session|role|team",
        hide_possible_values = true
    )]
    pub subject: Subject,

    /// The key, or any unambiguous suffix of it
    #[arg(value_name = "KEY")]
    pub key: String,

    /// Output format
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let req = Request::Describe {
        kind: args.subject.into(),
        key: args.key,
    };
    match client::call(&ctx.target()?, req)? {
        Response::Described { text, json } => match args.output {
            Format::Text => ctx.out.print(&text)?,
            Format::Json => ctx.out.json(&json)?,
        },
        other => return Err(unexpected(&other)),
    }
    Ok(exit::OK)
}
