//! `marvel events`: the daemon's structured event log, filtered, and
//! followed with `--follow`.

use chrono::{Local, Utc};
use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap_complete::engine::ArgValueCandidates;
use strum::VariantArray as _;

use std::time::Duration;

use crate::cli::{Format, parse_duration};
use crate::client;
use crate::commands::{Ctx, fleet, unexpected};
use crate::domain::event::EventKind;
use crate::error::{Result, exit};
use crate::output;
use crate::proto::{EventFilter, Request, Response};
use crate::view::EventView;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel events                         the recent history
  marvel events -f --key worker         follow one role's sessions
  marvel events --kind crashed --kind frozen --limit 20
  marvel events -f -o json              one JSON object per line
  marvel events -f -A                   every context's events, merged by time")]
pub struct Args {
    /// Keep printing new events until interrupted
    #[arg(short, long)]
    pub follow: bool,

    /// Only events about this key or what lies under it (suffix allowed)
    #[arg(long, value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::any_keys))]
    pub key: Option<String>,

    /// Only events of this kind (repeat for several)
    #[arg(long = "kind", value_name = "KIND", value_parser = kinds())]
    pub kinds: Vec<EventKind>,

    /// At most this many of the most recent events
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Output format (json: one object per line)
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// Every context's events in one stream, each with its context; exit 8 if some did not answer
    #[arg(short = 'A', long)]
    pub all_contexts: bool,

    /// With --all-contexts: how long each context may take to answer
    #[arg(
        long,
        value_name = "DUR",
        default_value = fleet::DEFAULT_TIMEOUT,
        value_parser = parse_duration,
        requires = "all_contexts"
    )]
    pub timeout: Duration,
}

/// Every kind by its name; `--help` and completions list them.
fn kinds() -> impl clap::builder::TypedValueParser<Value = EventKind> {
    PossibleValuesParser::new(EventKind::VARIANTS.iter().map(|k| k.as_str()))
        .map(|name| name.parse::<EventKind>().expect("a listed kind"))
}

/// What a follower that fell behind is told.
fn lag_notice(dropped: u64) -> String {
    format!("lagged: {dropped} events dropped")
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let req = Request::Events {
        filter: EventFilter {
            key: args.key,
            kinds: args.kinds,
            limit: args.limit,
        },
        follow: args.follow,
    };
    if args.all_contexts {
        return fleet::events(ctx, req, args.output, args.timeout);
    }
    let target = ctx.target()?;
    // Dates on every line once the listing reaches past today or spans
    // more than a day; a followed stream keeps what its first batch chose.
    let dated = std::cell::Cell::new(None::<bool>);
    let show = |events: &[EventView]| -> Result<()> {
        let now = Utc::now();
        let dated = match dated.get() {
            Some(d) => d,
            None => {
                let d = output::needs_dates(events, now, &Local);
                dated.set(Some(d));
                d
            }
        };
        for e in events {
            match args.output {
                Format::Json => ctx.out.json_line(e)?,
                Format::Text => ctx.out.print(&output::event_line_dated(
                    e,
                    now,
                    &Local,
                    ctx.out.colour(),
                    dated,
                ))?,
            }
        }
        Ok(())
    };
    if args.follow {
        client::follow(&target, req, &mut |resp| {
            match resp {
                Response::Events(events) => show(&events)?,
                Response::Event(event) => show(std::slice::from_ref(&event))?,
                // On stderr, so that `-o json` output stays one event per line.
                Response::Lagged { dropped } => ctx.out.note(&lag_notice(dropped)),
                other => return Err(unexpected(&other)),
            }
            Ok(true)
        })?;
        return Ok(exit::OK);
    }
    match client::call(&target, req)? {
        Response::Events(events) if events.is_empty() && args.output == Format::Text => {
            ctx.out.note("No events found.");
        }
        Response::Events(events) => show(&events)?,
        other => return Err(unexpected(&other)),
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_notice_says_how_many_events_were_lost() {
        assert_eq!(lag_notice(99_000), "lagged: 99000 events dropped");
    }
}
