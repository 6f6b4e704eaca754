//! `--all-contexts`: one listing, or one event stream, over every context
//! (this host and each ssh context). Each context is asked on its own
//! thread within its own deadline; one that does not answer is named on
//! stderr with its reason and does not fail the others (exit 8, partial).

use std::cell::Cell;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, TimeZone, Utc};
use serde::Serialize;

use crate::cli::{Format, ListFormat};
use crate::client::{self, Endpoint};
use crate::commands::{Ctx, unexpected};
use crate::error::{Error, Result, exit};
use crate::output;
use crate::proto::{Request, Response};
use crate::view::EventView;

/// How long each context may take to answer, unless `--timeout` says.
pub const DEFAULT_TIMEOUT: &str = "10s";
/// Live events from several hosts are held this long, so that one that
/// arrives a little late is still printed in time order.
const REORDER_WINDOW: Duration = Duration::from_millis(200);

/// `get sessions|roles|teams --all-contexts`.
pub fn get(ctx: &Ctx, req: Request, format: ListFormat, within: Duration) -> Result<i32> {
    let targets = ctx.all_targets()?;
    let names: Vec<String> = targets.iter().map(|t| t.context().to_string()).collect();
    let answers = ask_all(targets, &req, within);
    let (mut sessions, mut roles, mut teams) = (Vec::new(), Vec::new(), Vec::new());
    let mut failed = Vec::new();
    for (name, answer) in names.into_iter().zip(answers) {
        match answer {
            Ok(Response::Sessions(v)) => sessions.push((name, v)),
            Ok(Response::Roles(v)) => roles.push((name, v)),
            Ok(Response::Teams(v)) => teams.push((name, v)),
            Ok(other) => failed.push((name, unexpected(&other))),
            Err(e) => failed.push((name, e)),
        }
    }
    let (now, colour) = (Utc::now(), ctx.out.colour());
    let wide = format == ListFormat::Wide;
    let json = format == ListFormat::Json;
    let answered = sessions.len() + roles.len() + teams.len();
    if answered > 0 {
        match &req {
            Request::Get { kind, .. } => match kind {
                crate::proto::Kind::Sessions => listing(ctx, sessions, json, "sessions", |v| {
                    output::sessions_table(v, now, wide, colour)
                })?,
                crate::proto::Kind::Roles => listing(ctx, roles, json, "roles", |v| {
                    output::roles_table(v, now, wide, colour)
                })?,
                crate::proto::Kind::Teams => listing(ctx, teams, json, "teams", |v| {
                    output::teams_table(v, now, wide, colour)
                })?,
            },
            _ => unreachable!("fleet::get is given a Get request"),
        }
    }
    conclude(ctx, answered, failed)
}

/// Prints what answered: a JSON array whose objects carry `context`, or
/// one table with a CONTEXT column.
fn listing<T: Serialize>(
    ctx: &Ctx,
    parts: Vec<(String, Vec<T>)>,
    json: bool,
    noun: &str,
    table: impl Fn(&[T]) -> String,
) -> Result<()> {
    if json {
        let mut all = Vec::new();
        for (name, items) in parts {
            for item in items {
                all.push(with_context(&item, &name)?);
            }
        }
        return ctx.out.print(&output::pretty_json(&all)?);
    }
    let names: Vec<String> = parts
        .iter()
        .flat_map(|(name, items)| std::iter::repeat_n(name.clone(), items.len()))
        .collect();
    let items: Vec<T> = parts.into_iter().flat_map(|(_, v)| v).collect();
    if items.is_empty() {
        ctx.out.note(&format!("No {noun} found."));
        return Ok(());
    }
    ctx.out.print(&context_column(&names, &table(&items)))
}

/// `item` as a JSON object with a `context` field.
fn with_context<T: Serialize>(item: &T, context: &str) -> Result<serde_json::Value> {
    let mut v =
        serde_json::to_value(item).map_err(|e| Error::other(format!("cannot encode JSON: {e}")))?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("context".into(), context.into());
    }
    Ok(v)
}

/// Puts a CONTEXT column in front of a table whose lines are its header
/// and then one line per row (cells never span lines: they are escaped).
fn context_column(names: &[String], table: &str) -> String {
    const TITLE: &str = "CONTEXT";
    let width = names
        .iter()
        .map(String::len)
        .chain([TITLE.len()])
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (i, line) in table.lines().enumerate() {
        let name = if i == 0 {
            TITLE
        } else {
            names.get(i - 1).map_or("", String::as_str)
        };
        out.push_str(&format!("{name:<width$}   {line}\n"));
    }
    out
}

/// Says which contexts did not answer, and picks the exit code: 0 when all
/// did, 8 (partial) when some did, and the failure itself when none did.
fn conclude(ctx: &Ctx, answered: usize, mut failed: Vec<(String, Error)>) -> Result<i32> {
    if answered == 0 && failed.len() == 1 {
        return Err(failed.remove(0).1);
    }
    for (name, e) in &failed {
        ctx.out.note(&warning(name, e));
    }
    Ok(match (answered, failed.len()) {
        (_, 0) => exit::OK,
        (0, _) => exit::DAEMON_UNAVAILABLE,
        _ => exit::PARTIAL,
    })
}

/// `warning: context far: cannot connect to …` and the error's help.
fn warning(name: &str, e: &Error) -> String {
    let text = e.to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    format!("warning: context {name} did not answer: {text}")
}

/// Asks every context `req` at once; the answers come back in the order of
/// `targets`. A context that has not answered within `within` counts as
/// unreachable (its ssh is ended at that deadline).
fn ask_all(targets: Vec<Endpoint>, req: &Request, within: Duration) -> Vec<Result<Response>> {
    let deadline = Instant::now() + within;
    let (tx, rx) = mpsc::channel();
    let described: Vec<String> = targets.iter().map(Endpoint::describe).collect();
    for (i, target) in targets.into_iter().enumerate() {
        let (tx, req) = (tx.clone(), req.clone());
        thread::spawn(move || {
            let _ = tx.send((i, client::call_by(&target, req, deadline)));
        });
    }
    drop(tx);
    let mut answers: Vec<Option<Result<Response>>> = described.iter().map(|_| None).collect();
    // A little beyond the deadline: an ssh that ran out of time reports so
    // itself, with what it knows.
    let wait_until = deadline + Duration::from_millis(500);
    while answers.iter().any(Option::is_none) {
        let left = wait_until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, answer)) => answers[i] = Some(answer),
            Err(_) => break,
        }
    }
    answers
        .into_iter()
        .zip(described)
        .map(|(a, d)| a.unwrap_or_else(|| Err(late(&d, within))))
        .collect()
}

fn late(described: &str, within: Duration) -> Error {
    Error::unreachable(
        format!(
            "{described} did not answer within {}",
            humantime::format_duration(within)
        ),
        "raise --timeout, or check that the host is up",
    )
}

/// `events --all-contexts`, once or followed: every context's events in
/// one stream, in time order, each with its context.
pub fn events(ctx: &Ctx, req: Request, format: Format, within: Duration) -> Result<i32> {
    let (follow, limit) = match &req {
        Request::Events { follow, filter } => (*follow, filter.limit),
        _ => unreachable!("fleet::events is given an Events request"),
    };
    let targets = ctx.all_targets()?;
    let width = targets.iter().map(|t| t.context().len()).max().unwrap_or(0);
    // Decided on the first batch (the merged history), kept after.
    let dated = Cell::new(None::<bool>);
    let show = |batch: &Batch| -> Result<()> {
        match format {
            Format::Json => {
                for (name, e) in batch {
                    ctx.out.json_line(&with_context(e, name)?)?;
                }
            }
            Format::Text => {
                let colour = ctx.out.colour();
                for line in text_lines(batch, width, Utc::now(), &Local, colour, &dated) {
                    ctx.out.print(&line)?;
                }
            }
        }
        Ok(())
    };
    if !follow {
        let names: Vec<String> = targets.iter().map(|t| t.context().to_string()).collect();
        let mut all = Vec::new();
        let mut failed = Vec::new();
        let mut answered = 0;
        for (i, answer) in ask_all(targets, &req, within).into_iter().enumerate() {
            match answer {
                Ok(Response::Events(v)) => {
                    answered += 1;
                    all.extend(v.into_iter().map(|e| (i, e)));
                }
                Ok(other) => failed.push((names[i].clone(), unexpected(&other))),
                Err(e) => failed.push((names[i].clone(), e)),
            }
        }
        all.sort_by_key(|(_, e)| e.at);
        let skip = limit.map_or(0, |n| all.len().saturating_sub(n));
        if all.is_empty() && answered > 0 && format == Format::Text {
            ctx.out.note("No events found.");
        }
        show(&named(&names, all.into_iter().skip(skip)))?;
        return conclude(ctx, answered, failed);
    }
    follow_all(ctx, targets, req, within, &show)
}

/// A batch of events as text, each line led by its context, dated as
/// `events` dates them: whether lines carry their date is decided on the
/// first batch (into `dated`) and kept for the batches after.
fn text_lines<Tz: TimeZone>(
    batch: &Batch,
    width: usize,
    now: DateTime<Utc>,
    tz: &Tz,
    colour: bool,
    dated: &Cell<Option<bool>>,
) -> Vec<String>
where
    Tz::Offset: std::fmt::Display,
{
    let dated = match dated.get() {
        Some(d) => d,
        None => {
            let events: Vec<EventView> = batch.iter().map(|(_, e)| e.clone()).collect();
            let d = output::needs_dates(&events, now, tz);
            dated.set(Some(d));
            d
        }
    };
    batch
        .iter()
        .map(|(name, e)| {
            format!(
                "{name:<width$}  {}",
                output::event_line_dated(e, now, tz, colour, dated)
            )
        })
        .collect()
}

/// Events, each with the name of its context.
type Batch<'a> = [(&'a str, EventView)];

/// Events by context index, as the batch `show` prints.
fn named(
    names: &[String],
    events: impl Iterator<Item = (usize, EventView)>,
) -> Vec<(&str, EventView)> {
    events.map(|(i, e)| (names[i].as_str(), e)).collect()
}

enum Msg {
    Answer(usize, Response),
    End(usize, Result<()>),
}

/// Follows every context at once: the history of each, merged and sorted,
/// once all have answered (or `within` passed), then new events as they
/// come, held for [`REORDER_WINDOW`] to keep them in time order.
fn follow_all(
    ctx: &Ctx,
    targets: Vec<Endpoint>,
    req: Request,
    within: Duration,
    show: &dyn Fn(&Batch) -> Result<()>,
) -> Result<i32> {
    let names: Vec<String> = targets.iter().map(|t| t.context().to_string()).collect();
    let (tx, rx) = mpsc::channel();
    for (i, target) in targets.into_iter().enumerate() {
        let (tx, req) = (tx.clone(), req.clone());
        thread::spawn(move || {
            let answers = tx.clone();
            let end = client::follow(&target, req, &mut |resp| {
                Ok(answers.send(Msg::Answer(i, resp)).is_ok())
            });
            let _ = tx.send(Msg::End(i, end));
        });
    }
    drop(tx);
    let n = names.len();
    let mut greeted = vec![false; n];
    let mut ended = vec![false; n];
    let mut failures = 0;
    let mut backlog: Vec<(usize, EventView)> = Vec::new();
    let mut pending: Vec<(Instant, usize, EventView)> = Vec::new();
    let history_by = Instant::now() + within;
    let mut live = false;
    loop {
        let now = Instant::now();
        if !live && (now >= history_by || (0..n).all(|i| greeted[i] || ended[i])) {
            live = true;
            backlog.sort_by_key(|(_, e)| e.at);
            show(&named(&names, backlog.drain(..)))?;
        }
        if live {
            // Everything due goes out, and with it whatever happened before.
            pending.sort_by_key(|(_, _, e)| e.at);
            let due = pending
                .iter()
                .rposition(|(got, _, _)| *got + REORDER_WINDOW <= now)
                .map_or(0, |j| j + 1);
            show(&named(&names, pending.drain(..due).map(|(_, i, e)| (i, e))))?;
        }
        if ended.iter().all(|&e| e) && pending.is_empty() && live {
            break;
        }
        let msg = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                // Every follower is done: what is held goes out.
                backlog.sort_by_key(|(_, e)| e.at);
                show(&named(&names, backlog.drain(..)))?;
                pending.sort_by_key(|(_, _, e)| e.at);
                show(&named(&names, pending.drain(..).map(|(_, i, e)| (i, e))))?;
                break;
            }
        };
        match msg {
            Msg::Answer(i, Response::Events(v)) => {
                greeted[i] = true;
                if live {
                    let got = Instant::now();
                    pending.extend(v.into_iter().map(|e| (got, i, e)));
                } else {
                    backlog.extend(v.into_iter().map(|e| (i, e)));
                }
            }
            Msg::Answer(i, Response::Event(e)) => {
                greeted[i] = true;
                if live {
                    pending.push((Instant::now(), i, e));
                } else {
                    backlog.push((i, e));
                }
            }
            Msg::Answer(i, Response::Lagged { dropped }) => {
                ctx.out
                    .note(&format!("{}: lagged: {dropped} events dropped", names[i]));
            }
            Msg::Answer(i, other) => {
                failures += 1;
                ctx.out.note(&warning(&names[i], &unexpected(&other)));
                ended[i] = true;
            }
            Msg::End(i, Ok(())) => {
                ended[i] = true;
                ctx.out.note(&format!(
                    "context {}: the daemon ended the stream (it stopped)",
                    names[i]
                ));
            }
            Msg::End(i, Err(e)) => {
                ended[i] = true;
                failures += 1;
                ctx.out.note(&warning(&names[i], &e));
            }
        }
    }
    Ok(match failures {
        0 => exit::OK,
        f if f >= n => exit::DAEMON_UNAVAILABLE,
        _ => exit::PARTIAL,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contexts_events_are_dated_when_the_first_batch_reaches_past_today() {
        let ev = |at: &str| EventView {
            seq: 1,
            at: at.parse().unwrap(),
            kind: crate::view::EventKind::Crashed,
            key: "t/s/w-0".into(),
            message: "exit 1".into(),
        };
        let now: DateTime<Utc> = "2025-01-02T12:00:00Z".parse().unwrap();
        let dated = Cell::new(None);
        let history = [
            ("local", ev("2025-01-01T23:00:00Z")),
            ("build", ev("2025-01-02T11:00:00Z")),
        ];
        let lines = text_lines(&history, 5, now, &Utc, false, &dated);
        assert!(
            lines[0].starts_with("local  2025-01-01 23:00:00.000  crashed"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("build  2025-01-02 11:00:00.000  crashed"),
            "{lines:?}"
        );
        // A followed stream keeps the first batch's choice.
        let live = text_lines(
            &[("build", ev("2025-01-02T11:59:00Z"))],
            5,
            now,
            &Utc,
            false,
            &dated,
        );
        assert!(
            live[0].starts_with("build  2025-01-02 11:59:00.000"),
            "{live:?}"
        );
        // Today only: times alone, as `events` prints them.
        let today = Cell::new(None);
        let lines = text_lines(
            &[("local", ev("2025-01-02T11:00:00Z"))],
            5,
            now,
            &Utc,
            false,
            &today,
        );
        assert!(
            lines[0].starts_with("local  11:00:00.000  crashed"),
            "{lines:?}"
        );
    }

    #[test]
    fn the_context_column_leads_every_row() {
        let table = "SESSION   STATE\na/b/c-0   Running\na/b/d-0   Crashed\n";
        let names = ["local".to_string(), "build-box".to_string()];
        assert_eq!(
            context_column(&names, table),
            "\
CONTEXT     SESSION   STATE
local       a/b/c-0   Running
build-box   a/b/d-0   Crashed
"
        );
    }

    #[test]
    fn a_context_that_did_not_answer_is_named_with_its_reason_and_hint() {
        let e = Error::unreachable("cannot connect to far (ssh://far): refused", "check far");
        assert_eq!(
            warning("far", &e),
            "warning: context far did not answer: cannot connect to far (ssh://far): refused\nhelp: check far"
        );
    }
}
