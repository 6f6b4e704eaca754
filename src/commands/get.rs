//! `marvel get sessions|roles|teams`: one listing as a table or JSON, once
//! or redrawn every second with `--watch`.

use clap_complete::engine::ArgValueCandidates;
use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use chrono::{DateTime, Local, Utc};

use crate::cli::{ListFormat, Resource, parse_duration};
use crate::client::{self, Endpoint as Target};
use crate::commands::{Ctx, fleet, unexpected};
use crate::domain::spec::Name;
use crate::error::{Error, Result, exit};
use crate::output;
use crate::proto::{Filter, Kind, Request, Response};

/// How often `--watch` redraws.
const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel get sessions                   every session, live and crashed
  marvel get sessions worker-0 lead     only these (any key under them)
  marvel get roles --team demo/squad    one team's roles: backoff, budget, frozen
  marvel get sessions -o json           a JSON array for scripts
  marvel get sessions -w                redraw every second until Ctrl-C
  marvel get roles -w -o json           one JSON object per change, as it happens
  marvel get sessions -A                every context's sessions (this host and ssh hosts)

With -w on a terminal the table is redrawn every second. With -o json, or
when the output is not a terminal, -w prints one JSON object per line for
each session, role or team that appears or changes, and the last one seen,
with \"deleted\": true, for each that goes.")]
pub struct Args {
    /// What to list
    #[arg(
        value_enum,
        value_name = "sessions|roles|teams",
        hide_possible_values = true
    )]
    pub resource: Resource,

    /// Only these (a session, role or team key, or any suffix of one)
    #[arg(value_name = "KEY", add = ArgValueCandidates::new(crate::commands::completions::any_keys))]
    pub keys: Vec<String>,

    /// Output format
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub output: ListFormat,

    /// Watch: redraw every second, or stream changes as JSON lines
    #[arg(short, long)]
    pub watch: bool,

    /// Only this workspace
    #[arg(long, value_name = "NAME")]
    pub workspace: Option<String>,

    /// Only this team (a name, or a workspace/team key)
    #[arg(long, value_name = "TEAM")]
    pub team: Option<String>,

    /// Ask every context at once and add a CONTEXT column; exit 8 if some did not answer
    #[arg(short = 'A', long, conflicts_with = "watch")]
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

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let req = Request::Get {
        kind: args.resource.into(),
        filter: Filter {
            keys: args.keys.clone(),
            ..filter(args.workspace.as_deref(), args.team.as_deref())?
        },
    };
    if args.all_contexts {
        return fleet::get(ctx, req, args.output, args.timeout);
    }
    let target = ctx.target()?;
    if args.watch && (args.output == ListFormat::Json || !ctx.out.stdout_is_terminal()) {
        return stream(&target, &req, ctx);
    }
    let req = as_rows(req, args.output);
    if args.watch {
        return watch(&target, &req, &args, ctx);
    }
    let resp = client::call(&target, req)?;
    let frame = render(resp, args.output, Utc::now(), ctx.out.colour())?;
    match frame {
        Frame::Data(text) => ctx.out.print(&text)?,
        Frame::Empty(note) => ctx.out.note(&note),
    }
    Ok(exit::OK)
}

/// A table of sessions is asked for as its cells ([`Request::SessionRows`]):
/// a listing of thousands is laid out by the daemon that has them, and
/// arrives as short strings.
fn as_rows(req: Request, format: ListFormat) -> Request {
    match req {
        Request::Get {
            kind: Kind::Sessions,
            filter,
        } if format != ListFormat::Json => Request::SessionRows {
            filter,
            wide: format == ListFormat::Wide,
        },
        req => req,
    }
}

/// `--workspace` and `--team` as names; `--team ws/team` sets both.
fn filter(workspace: Option<&str>, team: Option<&str>) -> Result<Filter> {
    let (workspace, team) = match team.and_then(|t| t.split_once('/')) {
        Some((ws, t)) => {
            if workspace.is_some_and(|w| w != ws) {
                return Err(Error::usage(format!(
                    "--team {ws}/{t} names workspace {ws:?}, but --workspace is {:?}",
                    workspace.unwrap_or_default()
                )));
            }
            (Some(ws), Some(t))
        }
        None => (workspace, team),
    };
    let check = |flag: &str, v: Option<&str>| -> Result<Option<String>> {
        v.map(|v| {
            Name::new(v)
                .map(|n| n.to_string())
                .map_err(|e| Error::usage(format!("{flag}: {e}")))
        })
        .transpose()
    };
    Ok(Filter {
        workspace: check("--workspace", workspace)?,
        team: check("--team", team)?,
        keys: Vec::new(),
    })
}

/// One rendering of a listing: text for stdout, or the note that says
/// there was nothing to list.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Data(String),
    Empty(String),
}

fn render(resp: Response, format: ListFormat, now: DateTime<Utc>, colour: bool) -> Result<Frame> {
    let json = |text: Result<String>| text.map(Frame::Data);
    let empty = |kind: &str| Ok(Frame::Empty(format!("No {kind} found.")));
    let wide = format == ListFormat::Wide;
    match (resp, format) {
        (Response::Sessions(v), ListFormat::Json) => json(output::pretty_json(&v)),
        (Response::Roles(v), ListFormat::Json) => json(output::pretty_json(&v)),
        (Response::Teams(v), ListFormat::Json) => json(output::pretty_json(&v)),
        (Response::Sessions(v), _) if v.is_empty() => empty("sessions"),
        (Response::Rows(r), ListFormat::Table | ListFormat::Wide) if r.is_empty() => {
            empty("sessions")
        }
        (Response::Rows(r), ListFormat::Table | ListFormat::Wide) => {
            Ok(Frame::Data(r.render(colour)))
        }
        (Response::Roles(v), _) if v.is_empty() => empty("roles"),
        (Response::Teams(v), _) if v.is_empty() => empty("teams"),
        (Response::Sessions(v), _) => {
            Ok(Frame::Data(output::sessions_table(&v, now, wide, colour)))
        }
        (Response::Roles(v), _) => Ok(Frame::Data(output::roles_table(&v, now, wide, colour))),
        (Response::Teams(v), _) => Ok(Frame::Data(output::teams_table(&v, now, wide, colour))),
        (other, _) => Err(unexpected(&other)),
    }
}

/// Redraws until interrupted, or streams changes. The first listing may
/// start the daemon; later ones do not, so that `marvel daemon stop`
/// elsewhere is not undone: the watch waits for a daemon to come back.
fn watch(target: &Target, req: &Request, args: &Args, ctx: &Ctx) -> Result<i32> {
    let mut resp = Some(client::call(target, req.clone())?);
    loop {
        let now = Utc::now();
        let body = match resp {
            Some(resp) => match render(resp, args.output, now, ctx.out.colour())? {
                Frame::Data(text) | Frame::Empty(text) => text,
            },
            None => "No daemon is running; waiting for one to start.".to_string(),
        };
        let header = format!(
            "Every {}s: marvel get {}    {}",
            REFRESH.as_secs(),
            kind_name(args.resource.into()),
            now.with_timezone(&Local).format("%H:%M:%S")
        );
        ctx.out.print(&format!("\x1b[2J\x1b[H{header}\n\n{body}"))?;
        thread::sleep(REFRESH);
        resp = client::call_running(target, req.clone())?;
    }
}

/// How often a stream looks for changes (over ssh, less often).
const STREAM_POLL: Duration = Duration::from_millis(250);

/// `-w` for scripts: one JSON object per line for each record that
/// appears or changes, and the last one seen with `"deleted": true` for
/// each that goes, as `kubectl get -w -o json` does.
fn stream(target: &Target, req: &Request, ctx: &Ctx) -> Result<i32> {
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    let mut resp = Some(client::call(target, req.clone())?);
    loop {
        if let Some(resp) = resp {
            let now: BTreeMap<String, Value> = records(resp)?
                .into_iter()
                .map(|v| (identity(&v), v))
                .collect();
            for line in changes(&seen, &now) {
                ctx.out.json_line(&line)?;
            }
            seen = now;
        }
        thread::sleep(target.poll_every(STREAM_POLL));
        resp = client::call_running(target, req.clone())?;
    }
}

/// The records of a listing as JSON values.
fn records(resp: Response) -> Result<Vec<Value>> {
    let json = |e: serde_json::Error| Error::other(format!("cannot encode a record: {e}"));
    match resp {
        Response::Sessions(v) => v.iter().map(serde_json::to_value).collect::<Result<_, _>>(),
        Response::Roles(v) => v.iter().map(serde_json::to_value).collect::<Result<_, _>>(),
        Response::Teams(v) => v.iter().map(serde_json::to_value).collect::<Result<_, _>>(),
        other => return Err(unexpected(&other)),
    }
    .map_err(json)
}

/// What tells one record from another: its key, and for a session its
/// uid too (a session and its successor share a key).
fn identity(v: &Value) -> String {
    match v.get("uid") {
        Some(uid) => format!("{} {uid}", v["key"]),
        None => v["key"].to_string(),
    }
}

/// The lines a stream prints between two listings, in key order.
fn changes(before: &BTreeMap<String, Value>, now: &BTreeMap<String, Value>) -> Vec<Value> {
    let mut out: Vec<Value> = now
        .iter()
        .filter(|(id, v)| before.get(*id) != Some(v))
        .map(|(_, v)| v.clone())
        .collect();
    for (id, v) in before {
        if !now.contains_key(id) {
            let mut gone = v.clone();
            if let Some(o) = gone.as_object_mut() {
                o.insert("deleted".into(), Value::Bool(true));
            }
            out.push(gone);
        }
    }
    out
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Sessions => "sessions",
        Kind::Roles => "roles",
        Kind::Teams => "teams",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_keys_fill_in_the_workspace() {
        assert_eq!(
            filter(None, Some("demo/squad")).unwrap(),
            Filter {
                workspace: Some("demo".into()),
                team: Some("squad".into()),
                keys: Vec::new(),
            }
        );
        assert_eq!(
            filter(Some("demo"), Some("squad")).unwrap(),
            Filter {
                workspace: Some("demo".into()),
                team: Some("squad".into()),
                keys: Vec::new(),
            }
        );
        assert_eq!(filter(None, None).unwrap(), Filter::default());
        assert_eq!(
            filter(Some("x"), Some("demo/squad")).unwrap_err().code(),
            exit::USAGE
        );
        assert_eq!(
            filter(Some("Bad Name"), None).unwrap_err().code(),
            exit::USAGE
        );
    }

    #[test]
    fn empty_listings_say_so_except_in_json() {
        let now = Utc::now();
        assert_eq!(
            render(Response::Sessions(vec![]), ListFormat::Table, now, false).unwrap(),
            Frame::Empty("No sessions found.".into())
        );
        assert_eq!(
            render(Response::Teams(vec![]), ListFormat::Json, now, false).unwrap(),
            Frame::Data("[]".into())
        );
        let no_rows = output::Rows {
            header: vec!["SESSION".into()],
            rows: Vec::new(),
        };
        assert_eq!(
            render(Response::Rows(no_rows), ListFormat::Wide, now, false).unwrap(),
            Frame::Empty("No sessions found.".into())
        );
    }

    #[test]
    fn a_stream_prints_what_appears_changes_or_goes_once() {
        let rec = |key: &str, state: &str| serde_json::json!({"key": key, "state": state});
        let map = |v: Vec<Value>| -> BTreeMap<String, Value> {
            v.into_iter().map(|v| (identity(&v), v)).collect()
        };
        let a = map(vec![rec("t/s/a", "ready"), rec("t/s/b", "ready")]);
        assert_eq!(changes(&BTreeMap::new(), &a).len(), 2);
        assert!(
            changes(&a, &a).is_empty(),
            "nothing changed, nothing printed"
        );
        let b = map(vec![rec("t/s/a", "backoff")]);
        let lines = changes(&a, &b);
        assert_eq!(
            lines,
            vec![
                rec("t/s/a", "backoff"),
                serde_json::json!({"key": "t/s/b", "state": "ready", "deleted": true})
            ]
        );
        // Sessions are told apart by uid: a successor is its own record.
        let s1 = serde_json::json!({"key": "t/s/a-0", "uid": 1});
        let s2 = serde_json::json!({"key": "t/s/a-0", "uid": 2});
        assert_ne!(identity(&s1), identity(&s2));
    }

    #[test]
    fn a_reply_of_the_wrong_kind_is_an_error() {
        let err = render(
            Response::Done("ok".into()),
            ListFormat::Table,
            Utc::now(),
            false,
        );
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("unexpected Done reply")
        );
    }
}
