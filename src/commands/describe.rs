//! `marvel describe session|role|team KEY`: everything the daemon knows
//! about one resource, with its recent events.

use chrono::{Local, Utc};
use clap_complete::engine::ArgValueCandidates;

use crate::cli::{Format, Subject};
use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::error::{Error, Result, exit};
use crate::output;
use crate::proto::{Request, Response};
use crate::view::DescribeView;

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
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::any_keys))]
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
        Response::Described(view) => match args.output {
            Format::Text => ctx.out.print(&output::describe(
                &view,
                Utc::now(),
                &Local,
                ctx.out.colour(),
            ))?,
            Format::Json => ctx.out.json(&record(&view)?)?,
        },
        other => return Err(unexpected(&other)),
    }
    Ok(exit::OK)
}

/// What `-o json` prints: the resource's record alone, as a JSON value
/// (whose object keys are sorted, as they always have been).
fn record(view: &DescribeView) -> Result<serde_json::Value> {
    let value = match view {
        DescribeView::Session(d) => serde_json::to_value(&d.session),
        DescribeView::Role(d) => serde_json::to_value(&d.role),
        DescribeView::Team(d) => serde_json::to_value(&d.team),
    };
    value.map_err(|e| Error::other(format!("cannot encode JSON: {e}")))
}
