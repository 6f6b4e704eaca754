//! The wire protocol between clients (the CLI, the pane shims) and the
//! daemon: one JSON object per line over the daemon's Unix socket. The same
//! types encode on the client and decode on the daemon.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::activity::ActivityState;
use crate::domain::event::EventKind;
use crate::domain::health::{ContextPct, Note};
use crate::domain::spec::TeamSpec;
use crate::error::Error;
use crate::output::Rows;
use crate::view::{
    DescribeView, EventView, RoleView, SessionView, ShiftView, StatusView, TeamView,
};

/// Bumped on any incompatible change; client and daemon must agree.
pub const PROTOCOL_VERSION: u32 = 6;
/// Largest request line the daemon reads, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// What every request line carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub protocol: u32,
    pub request: Request,
}

/// Which resources `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Sessions,
    Roles,
    Teams,
}

/// Narrows a listing to a workspace and/or team (names, not keys), and
/// to the given keys (each a session, role or team key, or a suffix).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub workspace: Option<String>,
    pub team: Option<String>,
    #[serde(default)]
    pub keys: Vec<String>,
}

/// Where a reader of a session's output log got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    pub uid: u64,
    /// Bytes of the log read so far (of the log and its rotated half).
    pub offset: u64,
}

/// Narrows `events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only events whose key is this key or lies under it (suffix allowed).
    pub key: Option<String>,
    /// Only events of these kinds; empty = all.
    pub kinds: Vec<EventKind>,
    /// At most this many of the most recent events before following.
    pub limit: Option<usize>,
}

/// What a pane's shim tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShimReport {
    /// The user's program is running as `pid`.
    Started {
        uid: u64,
        pid: u32,
        at: DateTime<Utc>,
    },
    /// The user's program ended. `hangup` is set when the shim itself got
    /// SIGHUP (its terminal went away: the pane or the server was killed).
    /// `failure` says why the program could not be started at all (its
    /// working directory is gone, it cannot be run).
    Exited {
        uid: u64,
        code: Option<i32>,
        signal: Option<i32>,
        at: DateTime<Utc>,
        hangup: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
        /// The shim can run the slot's next program in the same pane when
        /// it stays there (see `shim::NextRun`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        rerun: bool,
        /// It also takes that next program in the daemon's answer to this
        /// report (`Response::Run`), when its restart is due at once.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        run_in_answer: bool,
    },
    /// The output log of run `uid`, whose end was reported before the log
    /// had taken it all, now holds everything the run printed.
    LogComplete { uid: u64 },
}

impl ShimReport {
    /// The spawn the report is about.
    pub fn uid(&self) -> u64 {
        match self {
            ShimReport::Started { uid, .. }
            | ShimReport::Exited { uid, .. }
            | ShimReport::LogComplete { uid } => *uid,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Is the daemon there, and which version is it?
    Ping,
    /// Apply a validated team; answered with one line per role. `source`
    /// is the manifest's absolute path: a team belongs to the file that
    /// declared it, and another file is refused unless `force`.
    Apply {
        team: TeamSpec,
        #[serde(default)]
        source: Option<String>,
        #[serde(default)]
        force: bool,
    },
    /// What applying `team` would do, changing nothing (`run --dry-run`,
    /// `diff`); answered with [`Response::Planned`].
    Plan {
        team: TeamSpec,
        #[serde(default)]
        source: Option<String>,
    },
    /// Remove the team a manifest declares (`down`): as `Delete`, but
    /// refused when another file owns the team, unless `force`.
    Down {
        team: String,
        #[serde(default)]
        source: Option<String>,
        #[serde(default)]
        force: bool,
    },
    /// Stop a team's or role's sessions and keep the declaration.
    StopRoles {
        key: String,
    },
    /// Start a stopped team or role again.
    StartRoles {
        key: String,
    },
    /// Replace a session now, or a role's or team's sessions one at a
    /// time, new before old. Never a crash.
    Restart {
        key: String,
    },
    /// Output of sessions (one, a role's or a team's): the last `lines`
    /// lines of each, or what was written after each cursor's offset.
    LogRead {
        key: String,
        lines: usize,
        /// The run before the current one, instead of the current.
        #[serde(default)]
        previous: bool,
        /// Only runs that were alive within this many milliseconds.
        #[serde(default)]
        since_ms: Option<u64>,
        /// Runs read before: only what came after is sent.
        #[serde(default)]
        cursors: Vec<LogCursor>,
    },
    Get {
        kind: Kind,
        filter: Filter,
    },
    /// `get sessions` as a table: its cells, worked out by the daemon
    /// (`wide` adds the wide columns).
    SessionRows {
        filter: Filter,
        #[serde(default)]
        wide: bool,
    },
    Describe {
        kind: Kind,
        key: String,
    },
    Inject {
        key: String,
        text: String,
        enter: bool,
        /// Send `text` as space-separated tmux key names instead of literally.
        keys: bool,
        /// Wait (at most this many milliseconds) until the session is idle
        /// or waiting before typing; refused when the time is up.
        #[serde(default)]
        when_idle_ms: Option<u64>,
    },
    Capture {
        key: String,
    },
    Reset {
        key: String,
    },
    Scale {
        key: String,
        replicas: u32,
    },
    Kill {
        key: String,
    },
    Delete {
        key: String,
        /// Remove the team's worktrees that hold no uncommitted change.
        #[serde(default)]
        prune_worktrees: bool,
    },
    /// Resolve a session (or a team) for `attach`: answered with
    /// [`Response::AttachTarget`], data from which the client builds its
    /// own tmux command. The client never runs a command it is sent.
    Attach {
        key: String,
    },
    /// The event log; with `follow`, the connection stays open and each new
    /// event arrives as its own [`Response::Event`] line.
    Events {
        filter: EventFilter,
        follow: bool,
    },
    Status,
    /// Stop the daemon; panes keep running.
    Stop,
    /// From a pane's shim.
    Shim(ShimReport),
    /// From a program in a pane (`marvel heartbeat`): it is alive.
    /// `uid` tells it apart from a session replacing it under the same key.
    /// Its values are checked as they are decoded, like an applied team.
    Heartbeat {
        session: String,
        uid: Option<u64>,
        context_pct: Option<ContextPct>,
        note: Option<Note>,
        /// What the program says it is doing (`--state`).
        #[serde(default)]
        state: Option<ActivityState>,
    },
    /// From a session's log pipe: output began at `at` (`flowing`), or
    /// has stopped, the last of it at `at`.
    Output {
        uid: u64,
        at: DateTime<Utc>,
        flowing: bool,
    },
    /// Start a rolling shift of a team, or of one of its roles.
    Shift {
        team: String,
        role: Option<String>,
        timeout_ms: u64,
    },
    /// Stop a team's running shift where it is.
    AbortShift {
        team: String,
    },
}

/// One line of what `apply` did (or, in a plan, would do) to a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleChangeView {
    pub key: String,
    pub change: Change,
    pub detail: String,
    /// Set when the role is frozen and will not spawn. In a plan: the
    /// role is frozen now, and the change un-freezes it when `unfreezes`.
    pub frozen_reason: Option<String>,
    /// The manifest fields that changed.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Sessions replaced (a template change) or stopped (a removal).
    #[serde(default)]
    pub sessions: u32,
    /// The change clears the role's crash-loop history and frozen state.
    #[serde(default)]
    pub unfreezes: bool,
    /// The role is stopped (`marvel stop`): nothing of it runs.
    #[serde(default)]
    pub stopped: bool,
}

/// Some output of one session run, for `logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// The session key.
    pub key: String,
    pub uid: u64,
    /// Complete lines, cleaned of terminal control sequences that move
    /// the cursor (other control characters are the client's to escape).
    pub lines: Vec<String>,
    /// Where the next read of this run starts.
    pub offset: u64,
    /// The run has ended (its log will not grow).
    pub ended: bool,
}

/// What `apply` did to a role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display, strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Change {
    Created,
    Unchanged,
    /// Only its replica count changed.
    Scaled,
    /// Policy fields changed: applied in place, sessions keep running.
    Updated,
    /// Its program changed (command, env, cwd): its sessions are replaced.
    Replaced,
    Removed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Pong {
        version: String,
        protocol: u32,
        pid: u32,
    },
    Applied {
        team: String,
        roles: Vec<RoleChangeView>,
        /// Why tmux cannot start the sessions now, when it cannot.
        #[serde(default)]
        tmux_down: Option<String>,
    },
    /// What applying a team would do. `owner` names the manifest that owns
    /// the team when it is another file than the one planned.
    Planned {
        team: String,
        exists: bool,
        owner: Option<String>,
        roles: Vec<RoleChangeView>,
    },
    /// Output of session runs, in the order they are to be printed.
    Logs(Vec<LogChunk>),
    Sessions(Vec<SessionView>),
    /// The answer to [`Request::SessionRows`].
    Rows(Rows),
    Roles(Vec<RoleView>),
    Teams(Vec<TeamView>),
    /// `describe`: the record and what its text adds; the client renders.
    Described(Box<DescribeView>),
    Text(String),
    Event(EventView),
    /// For a follower that fell behind: this many events that passed its
    /// filter were dropped before the next [`Response::Event`].
    Lagged {
        dropped: u64,
    },
    Events(Vec<EventView>),
    Status(Box<StatusView>),
    /// Where a session is in tmux: its team's tmux session, and its window
    /// and pane (none for a whole team).
    AttachTarget {
        tmux_session: String,
        #[serde(default)]
        window: Option<String>,
        #[serde(default)]
        pane: Option<String>,
    },
    /// A team's shift, as it stands after the request.
    Shift {
        team: String,
        shift: ShiftView,
    },
    /// A plain acknowledgement with a one-line message.
    Done(String),
    /// To `inject --when-idle`: the session stayed busy (since then) for
    /// the whole wait; nothing was typed.
    StillBusy {
        since: Option<DateTime<Utc>>,
    },
    /// To a shim whose program ended: its pane is kept for the slot; stay
    /// in it and show this line until the pane is respawned or removed.
    Linger(String),
    /// To a shim whose program ended and whose slot restarts at once: run
    /// the slot's next program in the same pane now.
    Run(crate::shim::NextRun),
    Error(Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Answer lines as a daemon writes them, to mutate.
    static SEEDS: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
        let event = EventView {
            seq: 7,
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
            kind: crate::domain::event::EventKind::Crashed,
            key: "demo/squad/worker-0".into(),
            message: "exit 1".into(),
        };
        [
            Response::Pong {
                version: "0.1.0".into(),
                protocol: PROTOCOL_VERSION,
                pid: 42,
            },
            Response::Applied {
                team: "demo/squad".into(),
                roles: vec![RoleChangeView {
                    key: "demo/squad/worker".into(),
                    change: Change::Created,
                    detail: "3 replicas".into(),
                    frozen_reason: None,
                    fields: Vec::new(),
                    sessions: 0,
                    unfreezes: false,
                    stopped: false,
                }],
                tmux_down: None,
            },
            Response::Event(event.clone()),
            Response::Events(vec![event]),
            Response::Lagged { dropped: 99_000 },
            Response::Text("text".into()),
            Response::Done("done".into()),
            Response::Error(Error::daemon(
                "the daemon is busy (64 connections); try again",
            )),
        ]
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap())
        .collect()
    });

    proptest! {
        #![proptest_config(crate::daemon::server::fuzz_config())]

        /// Fuzz: what a client decodes from the socket never panics it.
        #[test]
        fn any_bytes_decode_as_an_answer_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = serde_json::from_slice::<Response>(&bytes);
        }

        #[test]
        fn mutated_answers_decode_or_fail_cleanly(
            seed in 0..8usize,
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..8),
        ) {
            let mut line = SEEDS[seed].clone();
            for (at, byte, op) in edits {
                let at = at % (line.len() + 1);
                match op {
                    0 => line.insert(at, byte),
                    1 if at < line.len() => { line.remove(at); }
                    _ if at < line.len() => line[at] = byte,
                    _ => {}
                }
            }
            if let Ok(resp) = serde_json::from_slice::<Response>(&line) {
                // Whatever decodes encodes again: the client can show it.
                prop_assert!(serde_json::to_vec(&resp).is_ok());
            }
        }
    }
}

/// Requests decoded from the wire: every team and heartbeat value is
/// checked as it is decoded.
#[cfg(test)]
mod request_tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::health::MAX_NOTE_CHARS;
    use crate::domain::spec::{
        Cwd, Failures, Health, Name, NonZeroSpan, RoleSpec, TeamParts, assert_valid, fuzz,
    };

    fn line(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"protocol": PROTOCOL_VERSION, "request": request})).unwrap()
    }

    fn decode(line: &[u8]) -> serde_json::Result<Request> {
        serde_json::from_slice::<Envelope>(line).map(|e| e.request)
    }

    fn heartbeat(context_pct: Value, note: Value) -> Vec<u8> {
        line(json!({"Heartbeat": {
            "session": "demo/squad/worker-0",
            "uid": 7,
            "context_pct": context_pct,
            "note": note,
        }}))
    }

    #[test]
    fn heartbeat_values_are_checked_as_they_are_decoded() {
        let Request::Heartbeat {
            context_pct, note, ..
        } = decode(&heartbeat(json!(100), json!("reading"))).unwrap()
        else {
            panic!("not a heartbeat")
        };
        assert_eq!(context_pct.map(u8::from), Some(100));
        assert_eq!(note.map(String::from).as_deref(), Some("reading"));
        assert!(decode(&heartbeat(Value::Null, Value::Null)).is_ok());
        for (pct, note, expected) in [
            (
                json!(101),
                json!("x"),
                "context_pct must be between 0 and 100, got 101",
            ),
            (json!(300), json!("x"), "invalid value: integer `300`"),
            (json!(-1), json!("x"), "invalid value: integer `-1`"),
            (
                json!(1),
                json!("x".repeat(MAX_NOTE_CHARS + 1)),
                "note is 201 characters long; at most 200 are allowed",
            ),
        ] {
            let err = decode(&heartbeat(pct.clone(), note))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{pct}: {err}");
        }
    }

    /// A team that uses every part of the spec, as the client sends it. One
    /// role is enough: the mutations repeat it.
    fn team() -> Value {
        let mut w = RoleSpec::with_defaults("worker", 2, &["sh", "-c", "sleep 9"]);
        w.health = Some(Health::Heartbeat {
            timeout: NonZeroSpan::from_secs(30),
            failures: Failures::new(3).unwrap(),
        });
        w.env.insert("K".into(), "V".into()).unwrap();
        w.cwd = Some(Cwd::new("/tmp").unwrap());
        let team = TeamSpec::try_from(TeamParts {
            workspace: Name::new("demo").unwrap(),
            name: Name::new("squad").unwrap(),
            roles: vec![w],
            notify: Vec::new(),
        })
        .unwrap();
        serde_json::to_value(team).unwrap()
    }

    /// A small JSON value, often one that a field's rule is about.
    fn any_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
        const KEYS: &[&str] = &[
            "name",
            "replicas",
            "command",
            "env",
            "cwd",
            "backoff",
            "initial",
            "max",
            "factor",
            "jitter",
            "window",
            "secs",
            "nanos",
            "Heartbeat",
            "timeout",
            "failures",
            "roles",
            "",
        ];
        let pick = |rng: &mut fastrand::Rng, n: usize| rng.usize(..n);
        match rng.u8(..if depth == 0 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => json!(rng.bool()),
            2 => {
                let ints = [
                    0,
                    1,
                    -1,
                    100,
                    101,
                    1000,
                    1001,
                    i64::from(u32::MAX),
                    i64::MIN,
                    i64::MAX,
                ];
                json!(ints[pick(rng, ints.len())])
            }
            3 => {
                let floats = [0.0, 0.5, 1.0, 2.0, -1.0, 1.5, 1e300, f64::MIN_POSITIVE];
                json!(floats[pick(rng, floats.len())])
            }
            4 => {
                let long = "x".repeat(20_000);
                let strings = [
                    "",
                    "A=B",
                    "a\u{0}b",
                    "sh",
                    "w",
                    "Squad",
                    "\u{1b}[2J",
                    "é",
                    long.as_str(),
                ];
                json!(strings[pick(rng, strings.len())])
            }
            5 => {
                let secs = [0, 1, 600, 315_576_000, 315_576_001, u64::MAX];
                let nanos = [0u64, 1, 999_999_999, 1_000_000_000];
                json!({"secs": secs[pick(rng, secs.len())], "nanos": nanos[pick(rng, nanos.len())]})
            }
            6 => Value::Array(
                (0..rng.usize(..3))
                    .map(|_| any_value(rng, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.usize(..3))
                    .map(|_| {
                        (
                            KEYS[pick(rng, KEYS.len())].to_string(),
                            any_value(rng, depth - 1),
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// `team` with a few random changes: a value replaced, a key removed
    /// or added, an element repeated.
    fn mutate(rng: &mut fastrand::Rng, team: &Value) -> Value {
        let mut team = team.clone();
        for _ in 0..rng.usize(1..4) {
            // Walk down to a random node, then change it.
            let mut pointer = String::new();
            let mut node = &team;
            while rng.u8(..4) != 0 {
                let (step, next) = match node {
                    Value::Object(m) if !m.is_empty() => {
                        let (k, v) = m.iter().nth(rng.usize(..m.len())).unwrap();
                        (k.replace('~', "~0").replace('/', "~1"), v)
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let i = rng.usize(..a.len());
                        (i.to_string(), &a[i])
                    }
                    _ => break,
                };
                pointer = format!("{pointer}/{step}");
                node = next;
            }
            let node = team.pointer_mut(&pointer).unwrap();
            match (rng.u8(..4), node) {
                (0, Value::Object(m)) if !m.is_empty() => {
                    let k = m.keys().nth(rng.usize(..m.len())).unwrap().clone();
                    m.remove(&k);
                }
                (1, Value::Array(a)) if !a.is_empty() => {
                    let i = rng.usize(..a.len());
                    a.push(a[i].clone());
                }
                (_, node) => *node = any_value(rng, 2),
            }
        }
        team
    }

    /// Flips, drops or inserts a few bytes of a request line.
    fn mutate_bytes(rng: &mut fastrand::Rng, mut b: Vec<u8>) -> Vec<u8> {
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..=b.len());
            match rng.u8(..3) {
                0 if at < b.len() => b[at] = rng.u8(..),
                1 if at < b.len() => {
                    b.remove(at);
                }
                _ => {
                    let interesting = b"{}[]\":,0-9e\\ ";
                    b.insert(at, interesting[rng.usize(..interesting.len())])
                }
            }
        }
        b
    }

    #[test]
    fn any_apply_payload_is_refused_or_valid() {
        let team = team();
        fuzz::run(
            fuzz::cases(),
            |rng| {
                // Written out by hand: building a `json!` around the team
                // would cost more than decoding it.
                let mut line =
                    format!(r#"{{"protocol":{PROTOCOL_VERSION},"request":{{"Apply":{{"team":"#)
                        .into_bytes();
                serde_json::to_writer(&mut line, &mutate(rng, &team)).unwrap();
                line.extend_from_slice(b"}}}");
                if rng.u8(..5) == 0 {
                    mutate_bytes(rng, line)
                } else {
                    line
                }
            },
            |line| match decode(line) {
                Ok(Request::Apply { team, .. }) => assert_valid(&team),
                Ok(other) => panic!("an apply decoded as {other:?}"),
                Err(_) => {}
            },
        );
    }

    #[test]
    fn any_heartbeat_payload_is_refused_or_valid() {
        fuzz::run(
            fuzz::cases() / 10,
            |rng| heartbeat(any_value(rng, 1), any_value(rng, 1)),
            |line| {
                if let Ok(Request::Heartbeat {
                    context_pct, note, ..
                }) = decode(line)
                {
                    assert!(context_pct.is_none_or(|p| u8::from(p) <= 100));
                    if let Some(n) = note {
                        let n = String::from(n);
                        assert!(n.chars().count() <= MAX_NOTE_CHARS);
                    }
                }
            },
        );
    }
}
