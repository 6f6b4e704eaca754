//! `marvel logs KEY`: what a session printed, also for a crashed one; a
//! role's or team's sessions interleaved with a prefix per line; `-f`
//! follows them across restarts until interrupted.

use clap_complete::engine::ArgValueCandidates;
use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use crate::cli::parse_duration;
use crate::client::{self, Endpoint as Target};
use crate::commands::{Ctx, unexpected};
use crate::error::{Result, exit};
use crate::output::{self, Tint};
use crate::proto::{LogChunk, LogCursor, Request, Response};

/// How often `--follow` asks for new output (over ssh, less often).
const POLL: Duration = Duration::from_millis(200);

/// Lines a follower takes of a run that started since it last looked:
/// all of it, within what the daemon reads at once.
const NEW_RUN_LINES: usize = 100_000;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel logs worker-0                  the last 200 lines of the current run
  marvel logs worker-0 -n 20            why did it crash?
  marvel logs worker-0 -p               the run before the current one
  marvel logs worker-0 -f               follow, across restarts, until Ctrl-C
  marvel logs worker                    every session of the role, prefixed
  marvel logs squad --since 10m -f      a team's output of the last 10 minutes

A session key shows that slot's current run (after a restart, the new one;
-p shows the one before). A role or team key shows each of its sessions,
each line prefixed with the session's name, coloured on a terminal. marvel
keeps the output of the two runs before the current one of each slot.
Output carries no timestamps, so --since picks whole runs: those that were
running at some time within the last DUR.

Control characters the program printed are shown escaped (ESC as \\e, others
as ^X), so its output cannot act on your terminal; --raw prints them as
they are.")]
pub struct Args {
    /// A session, role or team, or any unambiguous suffix of its key
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::any_keys))]
    pub key: String,

    /// How many of the last lines of each run to print
    #[arg(short = 'n', long, value_name = "N", default_value_t = 200)]
    pub lines: usize,

    /// Follow the output, across restarts, until interrupted
    #[arg(short, long)]
    pub follow: bool,

    /// The run before the current one (of each session)
    #[arg(short, long, conflicts_with_all = ["follow", "since"])]
    pub previous: bool,

    /// Only runs that were running within this long (10m, 1h, ...)
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub since: Option<Duration>,

    /// Print the text exactly as received, control characters included
    #[arg(long)]
    pub raw: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let target = ctx.target()?;
    let first = read(&target, &args, args.lines, Vec::new(), true)?.unwrap_or_default();
    let mut printer = Printer::new(&first, &args, ctx);
    printer.print(&first)?;
    if !args.follow {
        return Ok(exit::OK);
    }
    let mut cursors: BTreeMap<u64, u64> = first.iter().map(|c| (c.uid, c.offset)).collect();
    let every = target.poll_every(POLL);
    loop {
        thread::sleep(every);
        let known: Vec<LogCursor> = cursors
            .iter()
            .map(|(&uid, &offset)| LogCursor { uid, offset })
            .collect();
        // Later asks never start a daemon: one stopped elsewhere stays so.
        let Some(chunks) = read(&target, &args, NEW_RUN_LINES, known, false)? else {
            continue;
        };
        for c in &chunks {
            if !cursors.contains_key(&c.uid) {
                printer.new_run(c)?;
            }
            cursors.insert(c.uid, c.offset);
        }
        printer.print(&chunks)?;
        // Runs no longer current are forgotten once read to their end.
        cursors.retain(|uid, _| chunks.iter().any(|c| c.uid == *uid));
    }
}

/// One ask of the daemon; `None` when `start` is false and no daemon runs.
fn read(
    target: &Target,
    args: &Args,
    lines: usize,
    cursors: Vec<LogCursor>,
    start: bool,
) -> Result<Option<Vec<LogChunk>>> {
    let req = Request::LogRead {
        key: args.key.clone(),
        lines,
        previous: args.previous,
        since_ms: args.since.map(|d| d.as_millis() as u64),
        cursors,
    };
    let resp = if start {
        Some(client::call(target, req)?)
    } else {
        client::call_running(target, req)?
    };
    match resp {
        None => Ok(None),
        Some(Response::Logs(chunks)) => Ok(Some(chunks)),
        Some(other) => Err(unexpected(&other)),
    }
}

/// Prints chunks: bare for one session, prefixed with the session's name
/// for several (`worker-1 | ...`), each name in its own colour.
struct Printer<'a> {
    ctx: &'a Ctx,
    raw: bool,
    /// The prefix width, when lines are prefixed.
    prefixed: Option<usize>,
    /// The common part of the keys, left out of the prefixes.
    common: String,
}

impl<'a> Printer<'a> {
    fn new(chunks: &[LogChunk], args: &Args, ctx: &'a Ctx) -> Printer<'a> {
        let mut keys: Vec<&str> = chunks.iter().map(|c| c.key.as_str()).collect();
        keys.dedup();
        let session = keys.len() <= 1
            && chunks
                .first()
                .is_some_and(|c| crate::domain::key::matches_suffix(&c.key, &args.key));
        let common = common_parent(&keys);
        let width = keys
            .iter()
            .map(|k| k.len() - common.len())
            .max()
            .unwrap_or(0);
        Printer {
            ctx,
            raw: args.raw,
            prefixed: (!session).then_some(width),
            common,
        }
    }

    fn print(&mut self, chunks: &[LogChunk]) -> Result<()> {
        for c in chunks {
            for line in &c.lines {
                self.line(&c.key, line)?;
            }
        }
        Ok(())
    }

    /// A run that began while following: said on stderr, so that stdout
    /// stays the program's output.
    fn new_run(&mut self, c: &LogChunk) -> Result<()> {
        self.ctx
            .out
            .note(&format!("--- {} restarted (uid {}) ---", c.key, c.uid));
        Ok(())
    }

    fn line(&self, key: &str, line: &str) -> Result<()> {
        let text = if self.raw {
            line.to_string()
        } else {
            output::escape_text(line).into_owned()
        };
        match self.prefixed {
            None if self.raw => self.ctx.out.print_raw(format!("{text}\n").as_bytes()),
            None => self.ctx.out.print(&text),
            Some(width) => {
                let name = key.strip_prefix(&self.common).unwrap_or(key);
                let padded = format!("{name:<width$} |");
                let prefix = output::paint(&padded, Some(tint_of(name)), self.ctx.out.colour());
                if self.raw {
                    self.ctx
                        .out
                        .print_raw(format!("{prefix} {text}\n").as_bytes())
                } else {
                    self.ctx.out.print(&format!("{prefix} {text}"))
                }
            }
        }
    }
}

/// The parent path every key shares (`demo/squad/`), so prefixes name
/// only what tells sessions apart.
fn common_parent(keys: &[&str]) -> String {
    let Some(first) = keys.first() else {
        return String::new();
    };
    let mut common = match first.rfind('/') {
        Some(i) => first[..=i].to_string(),
        None => return String::new(),
    };
    while !keys.iter().all(|k| k.starts_with(&common)) {
        common.pop();
        match common.rfind('/') {
            Some(i) => common.truncate(i + 1),
            None => return String::new(),
        }
    }
    common
}

/// A stable colour per session name.
fn tint_of(name: &str) -> Tint {
    const TINTS: [Tint; 4] = [Tint::Green, Tint::Yellow, Tint::Magenta, Tint::Red];
    let sum: usize = name.bytes().map(usize::from).sum();
    TINTS[sum % TINTS.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_leave_out_the_common_parent() {
        assert_eq!(
            common_parent(&["demo/squad/worker-0", "demo/squad/lead-0"]),
            "demo/squad/"
        );
        assert_eq!(
            common_parent(&["demo/a/worker-0", "demo/b/worker-0"]),
            "demo/"
        );
        assert_eq!(common_parent(&["x/a/w-0", "y/a/w-0"]), "");
        assert_eq!(common_parent(&[]), "");
    }

    #[test]
    fn each_session_keeps_its_colour() {
        assert_eq!(tint_of("worker-0"), tint_of("worker-0"));
    }
}
