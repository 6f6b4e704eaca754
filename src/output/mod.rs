//! The one output sink of the command line (stdout for data, stderr for
//! diagnostics, colour only on a terminal), and every text format the verbs
//! share: tables, times, events, backoffs, `describe`; all escape program text.

mod describe;
mod escape;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use unicode_width::UnicodeWidthStr;

pub use self::describe::describe;
pub use self::escape::{escape_line, escape_text};
use crate::domain::spec::Backoff;
use crate::error::{Error, Result};
use crate::proto::Change;
use crate::view::{
    ActivityState, EventKind, EventView, ExitView, RoleState, RoleView, SessionState, SessionView,
    ShiftState, ShiftView, TeamState, TeamView, TmuxState,
};

/// Where command output goes. Built once per invocation.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    colour: bool,
    stdout_tty: bool,
}

impl Output {
    /// Looks at the terminal and the environment once.
    pub fn new(no_colour_flag: bool) -> Output {
        let stdout_tty = io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR");
        Output {
            colour: colour_enabled(stdout_tty, no_color.as_deref(), no_colour_flag),
            stdout_tty,
        }
    }

    /// Whether stdout output may carry colour.
    pub fn colour(&self) -> bool {
        self.colour
    }

    /// Whether stdout is a terminal (watch mode clears the screen only then).
    pub fn stdout_is_terminal(&self) -> bool {
        self.stdout_tty
    }

    /// Writes `text` to stdout, adding a final newline when it lacks one.
    pub fn print(&self, text: &str) -> Result<()> {
        let mut out = io::stdout().lock();
        let mut res = out.write_all(text.as_bytes());
        if res.is_ok() && !text.is_empty() && !text.ends_with('\n') {
            res = out.write_all(b"\n");
        }
        finish(res.and_then(|()| out.flush()))
    }

    /// Writes `bytes` to stdout exactly as they are.
    pub fn print_raw(&self, bytes: &[u8]) -> Result<()> {
        let mut out = io::stdout().lock();
        finish(out.write_all(bytes).and_then(|()| out.flush()))
    }

    /// Pretty JSON (arrays and objects), for `-o json`.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.print(&pretty_json(value)?)
    }

    /// One JSON object on one line, for streams (`events -o json`).
    pub fn json_line<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let text = serde_json::to_string(value)
            .map_err(|e| Error::other(format!("cannot encode JSON: {e}")))?;
        self.print(&text)
    }

    /// A diagnostic line on stderr (progress, warnings, "No sessions found.").
    pub fn note(&self, text: &str) {
        // If stderr is gone there is nowhere left to complain to.
        let _ = writeln!(io::stderr().lock(), "{text}");
    }
}

/// `value` as indented JSON.
pub fn pretty_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Error::other(format!("cannot encode JSON: {e}")))
}

/// A closed stdout (`marvel get sessions | head -1`) is a normal way for a
/// reader to say it has seen enough: exit quietly with success.
fn finish(res: io::Result<()>) -> Result<()> {
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(Error::io("stdout", &e)),
    }
}

/// Colour is used only on a terminal, when `NO_COLOR` is unset or empty
/// (<https://no-color.org>) and `--no-color` was not given.
pub fn colour_enabled(stdout_tty: bool, no_color: Option<&OsStr>, flag: bool) -> bool {
    stdout_tty && no_color.is_none_or(OsStr::is_empty) && !flag
}

/// The colours a state can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tint {
    Green,
    Red,
    Yellow,
    Magenta,
}

impl Tint {
    fn ansi(self) -> &'static str {
        match self {
            Tint::Green => "\x1b[32m",
            Tint::Red => "\x1b[31m",
            Tint::Yellow => "\x1b[33m",
            Tint::Magenta => "\x1b[35m",
        }
    }
}

/// A state or an event kind: its lower-case name, and the colour it
/// carries on a terminal.
pub trait Tinted: Copy {
    fn name(self) -> &'static str;
    fn tint(self) -> Option<Tint>;
}

impl Tinted for SessionState {
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn tint(self) -> Option<Tint> {
        match self {
            SessionState::Running => Some(Tint::Green),
            SessionState::Crashed => Some(Tint::Red),
            SessionState::Pending => Some(Tint::Yellow),
            SessionState::Succeeded => None,
        }
    }
}

impl Tinted for RoleState {
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn tint(self) -> Option<Tint> {
        match self {
            RoleState::Ready => Some(Tint::Green),
            RoleState::Progressing | RoleState::Backoff => Some(Tint::Yellow),
            RoleState::Frozen => Some(Tint::Magenta),
            RoleState::Failed => Some(Tint::Red),
            RoleState::Succeeded | RoleState::Stopped => None,
        }
    }
}

impl Tinted for TeamState {
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn tint(self) -> Option<Tint> {
        match self {
            TeamState::Ready => Some(Tint::Green),
            TeamState::Progressing => Some(Tint::Yellow),
            TeamState::Degraded => Some(Tint::Red),
            TeamState::Stopped => None,
        }
    }
}

impl Tinted for TmuxState {
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn tint(self) -> Option<Tint> {
        match self {
            TmuxState::Up => Some(Tint::Green),
            TmuxState::Down => Some(Tint::Red),
            TmuxState::Degraded | TmuxState::Unknown => Some(Tint::Yellow),
        }
    }
}

impl Tinted for EventKind {
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn tint(self) -> Option<Tint> {
        use EventKind::*;
        match self {
            Created | Started | Healthy | ShiftCompleted => Some(Tint::Green),
            Crashed | TmuxDown | Unhealthy | ShiftFailed | NotifyFailed => Some(Tint::Red),
            Backoff | ShiftStarted | Waiting => Some(Tint::Yellow),
            Frozen => Some(Tint::Magenta),
            Applied | Reset | Forgiven | Succeeded | Stopped | Killed | Scaled | Deleted
            | Adopted | TmuxUp | Warning | ShiftAborted | Busy | Idle => None,
        }
    }
}

/// A state or kind by its name, in its colour when `colour` is on.
pub fn painted(state: impl Tinted, colour: bool) -> String {
    paint(state.name(), state.tint(), colour)
}

/// `text` wrapped in the colour's escape codes, or unchanged.
pub fn paint(text: &str, tint: Option<Tint>, colour: bool) -> String {
    match tint {
        Some(t) if colour => format!("{}{text}\x1b[0m", t.ansi()),
        _ => text.to_string(),
    }
}

/// A lower-case state as a table shows it: `crashed` → `Crashed`.
pub fn title(state: &str) -> String {
    let mut chars = state.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// kubectl's short durations: `5s`, `3m`, `2h`, `4d`, `1y` (truncated).
pub fn short_duration(d: TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 60 {
        format!("{secs}s")
    } else if mins < 60 {
        format!("{mins}m")
    } else if hours < 24 {
        format!("{hours}h")
    } else if days < 365 {
        format!("{days}d")
    } else {
        format!("{}y", days / 365)
    }
}

/// How long ago `since` was, as `short_duration`; a time in the future
/// (clock skew) shows as `0s`.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    short_duration(now - since)
}

/// How long until `at`: `250ms` below a second, then `short_duration`;
/// `None` when `at` has come.
pub fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
    let left = at - now;
    if left <= TimeDelta::zero() {
        None
    } else if left < TimeDelta::seconds(1) {
        Some(format!("{}ms", left.num_milliseconds().max(1)))
    } else {
        Some(short_duration(left))
    }
}

/// The RESTARTS column: `0`, `2`, or `2 (2m ago)` when the time is known.
pub fn restarts(count: u32, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match last {
        Some(at) if count > 0 => format!("{count} ({} ago)", age(at, now)),
        _ => count.to_string(),
    }
}

/// The EXIT column: the daemon's words for the exit (`exit 42`,
/// `signal 9 (SIGKILL)`, `pane killed`); `-` when the program has not ended.
pub fn exit_text(exit: Option<&ExitView>) -> String {
    match exit {
        Some(e) if !e.reason.is_empty() => escape_line(&e.reason).into_owned(),
        Some(_) => "ended".to_string(),
        None => "-".to_string(),
    }
}

/// `restart in 3s`, or `restarting` once the backoff has ended.
fn restart_in(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    match until(at, now) {
        Some(left) => format!("restart in {left}"),
        None => "restarting".to_string(),
    }
}

/// Why a role is frozen, escaped.
pub fn frozen_reason(reason: Option<&str>) -> String {
    escape_line(reason.unwrap_or("restart budget exhausted")).into_owned()
}

/// `frozen: <reason>`.
fn frozen(reason: Option<&str>) -> String {
    format!("frozen: {}", frozen_reason(reason))
}

/// The NEXT column of `get sessions`: for a session that is not running and
/// whose role waits out a backoff, when it restarts; for a frozen role, that
/// it is frozen and why. Empty otherwise.
pub fn session_next(s: &SessionView, now: DateTime<Utc>) -> String {
    if matches!(s.state, SessionState::Running | SessionState::Succeeded) {
        return String::new();
    }
    match (s.role_state, s.next_restart_at) {
        (RoleState::Frozen, _) => frozen(s.frozen_reason.as_deref()),
        (RoleState::Backoff, Some(at)) => restart_in(at, now),
        _ => String::new(),
    }
}

/// The HEALTH column of `get sessions`: `healthy (2s ago)` with the age of the
/// last heartbeat, `unknown`, or `-` for a role without a heartbeat check.
pub fn health(s: &SessionView, now: DateTime<Utc>) -> String {
    match (s.health, s.last_heartbeat_at) {
        (None, _) => "-".to_string(),
        (Some(h), Some(at)) => format!("{h} ({} ago)", age(at, now)),
        (Some(h), None) => h.to_string(),
    }
}

/// The ACTIVITY column of `get sessions`: `busy`, or `idle 4m` and
/// `waiting 20s` with how long; `-` for a session that is not running.
pub fn activity(s: &SessionView, now: DateTime<Utc>) -> String {
    match (s.activity, s.activity_since) {
        (None, _) => "-".to_string(),
        (Some(ActivityState::Busy), _) | (Some(_), None) => {
            s.activity.map(|a| a.to_string()).unwrap_or_default()
        }
        (Some(a), Some(since)) => format!("{a} {}", age(since, now)),
    }
}

/// The SHIFT column of `get teams`: where a running shift is, or how the
/// last one ended and when.
pub fn shift(s: Option<&ShiftView>, now: DateTime<Utc>) -> String {
    let Some(s) = s else {
        return "-".to_string();
    };
    match (s.state, &s.role, s.ended_at) {
        (ShiftState::Running, role, _) => format!(
            "{} {}/{}",
            role.as_deref().unwrap_or("-"),
            s.replaced,
            s.total
        ),
        (state, _, Some(at)) => format!("{state} ({} ago)", age(at, now)),
        (state, _, None) => state.to_string(),
    }
}

/// The WINDOW column of `get roles`: crashes counted in the sliding window
/// against the budget, `2/5` or `2/∞`.
pub fn window(crashes: u32, max: Option<u32>) -> String {
    match max {
        Some(max) => format!("{crashes}/{max}"),
        None => format!("{crashes}/∞"),
    }
}

/// The NEXT RESTART column of `get roles`: `in 3s`, `now`, or `-`.
pub fn role_next_restart(r: &RoleView, now: DateTime<Utc>) -> String {
    match (r.state, r.next_restart_at) {
        (RoleState::Backoff, Some(at)) => match until(at, now) {
            Some(left) => format!("in {left}"),
            None => "now".to_string(),
        },
        _ => "-".to_string(),
    }
}

/// The REASON column of `get roles`: why it is frozen, or what the last
/// crash was while it waits out a backoff.
pub fn role_reason(r: &RoleView) -> String {
    match (r.state, &r.frozen_reason, &r.last_exit) {
        (RoleState::Frozen, reason, _) => frozen_reason(reason.as_deref()),
        (RoleState::Backoff, _, Some(exit)) => format!("last: {}", exit_text(Some(exit))),
        _ => String::new(),
    }
}

/// One cell of a [`table`]: one line of text, in a colour or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    text: String,
    tint: Option<Tint>,
}

impl Cell {
    /// A cell showing `text`; a line break shows as `\n`, so that every
    /// row stays one line.
    pub fn new(text: impl ToString) -> Cell {
        let mut text = text.to_string();
        if text.contains('\n') {
            text = text.replace('\n', "\\n");
        }
        Cell { text, tint: None }
    }
}

/// A table's cells before they are laid out. The daemon sends `get
/// sessions` this way (worked out where the sessions are, as kubectl's
/// server-side printing does): thousands of sessions travel as one short
/// string a row rather than as records the client decodes and formats one
/// by one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rows {
    pub header: Vec<String>,
    pub rows: Vec<Row>,
}

/// One row of [`Rows`]: its cells joined by tabs (a cell never holds one:
/// it is escaped, and [`escape_line`] shows a tab as `\t`), and which
/// cells are tinted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    #[serde(rename = "t")]
    text: String,
    #[serde(rename = "c", default, skip_serializing_if = "Vec::is_empty")]
    tints: Vec<(usize, Tint)>,
}

/// Builds a [`Row`] a cell at a time.
struct RowBuilder {
    row: Row,
    cells: usize,
}

impl RowBuilder {
    fn new() -> RowBuilder {
        RowBuilder {
            row: Row {
                text: String::with_capacity(160),
                tints: Vec::new(),
            },
            cells: 0,
        }
    }

    /// Adds a cell showing `text`, escaped for one line.
    fn cell(&mut self, text: impl std::fmt::Display) -> &mut RowBuilder {
        self.tinted(text, None)
    }

    /// Adds a cell showing `text` in `tint`, if any.
    fn tinted(&mut self, text: impl std::fmt::Display, tint: Option<Tint>) -> &mut RowBuilder {
        let text_of = &mut self.row.text;
        if self.cells > 0 {
            text_of.push('\t');
        }
        let start = text_of.len();
        let _ = write!(text_of, "{text}");
        if let std::borrow::Cow::Owned(escaped) = escape_line(&text_of[start..]) {
            text_of.truncate(start);
            text_of.push_str(&escaped);
        }
        if let Some(t) = tint {
            self.row.tints.push((self.cells, t));
        }
        self.cells += 1;
        self
    }

    fn finish(self) -> Row {
        self.row
    }
}

impl Row {
    /// The cells, as sent: whoever lays them out escapes them again.
    fn cells(&self) -> impl Iterator<Item = (&str, Option<Tint>)> {
        self.text.split('\t').enumerate().map(|(i, text)| {
            let tint = self.tints.iter().find(|(at, _)| *at == i).map(|(_, t)| *t);
            (text, tint)
        })
    }
}

impl Rows {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Laid out as a [`table`]. Cells that came from elsewhere (another
    /// host's daemon) are escaped once more: no control character reaches
    /// the terminal from them either.
    pub fn render(&self, colour: bool) -> String {
        let header: Vec<&str> = self.header.iter().map(String::as_str).collect();
        let rows: Vec<Vec<(std::borrow::Cow<'_, str>, Option<Tint>)>> = self
            .rows
            .iter()
            .map(|row| {
                row.cells()
                    .map(|(t, tint)| (escape_line(t), tint))
                    .collect()
            })
            .collect();
        lay_out(&header, &rows, colour)
    }
}

/// A kubectl-like table: no lines, upper-case headers, columns as wide as
/// their widest cell (in terminal columns) and three spaces apart, no
/// trailing blanks; with `colour`, tinted words in their colour (the blanks
/// that pad them are not). Laid out in one pass over the cells: a listing
/// of thousands of sessions costs microseconds per row.
pub fn table(header: &[&str], rows: Vec<Vec<Cell>>, colour: bool) -> String {
    let rows: Vec<Vec<(&str, Option<Tint>)>> = rows
        .iter()
        .map(|row| row.iter().map(|c| (c.text.as_str(), c.tint)).collect())
        .collect();
    lay_out(header, &rows, colour)
}

/// How many terminal columns `text` takes: its length, when it is all
/// printable ASCII (as almost every cell is).
fn cell_width(text: &str) -> usize {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        text.len()
    } else {
        text.width()
    }
}

/// [`table`] of cells given as their text and tint.
fn lay_out<T: AsRef<str>>(
    header: &[&str],
    rows: &[Vec<(T, Option<Tint>)>],
    colour: bool,
) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows {
        for (i, (text, _)) in row.iter().take(columns).enumerate() {
            widths[i] = widths[i].max(cell_width(text.as_ref()));
        }
    }
    let mut text =
        String::with_capacity((widths.iter().sum::<usize>() + 3 * columns + 1) * (rows.len() + 1));
    let mut line = |cells: &mut dyn Iterator<Item = (&str, usize, Option<Tint>)>| {
        let start = text.len();
        for (i, (cell, width, tint)) in cells.enumerate() {
            match tint {
                Some(t) if colour && !cell.is_empty() => {
                    let _ = write!(text, "{}{cell}\x1b[0m", t.ansi());
                }
                _ => text.push_str(cell),
            }
            if i + 1 < columns {
                let pad = widths[i] - width + 3;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let kept = text[start..].trim_end().len();
        text.truncate(start + kept);
        text.push('\n');
    };
    line(&mut header.iter().map(|h| (*h, h.width(), None)));
    for row in rows {
        line(
            &mut row
                .iter()
                .take(columns)
                .map(|(c, t)| (c.as_ref(), cell_width(c.as_ref()), *t)),
        );
    }
    text
}

fn state_cell(state: impl Tinted) -> Cell {
    Cell {
        tint: state.tint(),
        ..Cell::new(title(state.name()))
    }
}

/// Waiting is what a person is wanted for: yellow on a terminal.
fn activity_tint(s: &SessionView) -> Option<Tint> {
    match s.activity {
        Some(ActivityState::Waiting) => Some(Tint::Yellow),
        _ => None,
    }
}

fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `get sessions`; `wide` adds ROLE, TMUX SESSION and STARTED, and
/// WORKTREE and BRANCH when a session has a worktree.
pub fn sessions_table(
    sessions: &[SessionView],
    now: DateTime<Utc>,
    wide: bool,
    colour: bool,
) -> String {
    sessions_rows(sessions, now, wide).render(colour)
}

/// The cells of [`sessions_table`].
pub fn sessions_rows(sessions: &[SessionView], now: DateTime<Utc>, wide: bool) -> Rows {
    let mut header = vec!["SESSION", "STATE", "HEALTH", "ACTIVITY"];
    // Only when some program reports how full its context is.
    let ctx = sessions.iter().any(|s| s.context_pct.is_some());
    if ctx {
        header.push("CTX");
    }
    header.extend(["RESTARTS", "AGE", "PANE", "PID", "EXIT"]);
    let trees = wide && sessions.iter().any(|s| s.worktree.is_some());
    if wide {
        header.extend(["ROLE", "TMUX SESSION", "STARTED"]);
    }
    if trees {
        header.extend(["WORKTREE", "BRANCH"]);
    }
    header.push("NEXT");
    let rows = sessions
        .iter()
        .map(|s| {
            let mut row = RowBuilder::new();
            row.cell(&s.key)
                .tinted(title(s.state.name()), s.state.tint())
                .cell(health(s, now))
                .tinted(activity(s, now), activity_tint(s));
            if ctx {
                match s.context_pct {
                    Some(p) => row.cell(format_args!("{p}%")),
                    None => row.cell("-"),
                };
            }
            row.cell(restarts(s.restarts, s.last_restart_at, now))
                .cell(age(s.created_at, now))
                .cell(or_dash(s.pane.as_ref()))
                .cell(or_dash(s.pid))
                .cell(exit_text(s.exit.as_ref()));
            if wide {
                row.cell(format_args!("{}/{}/{}", s.workspace, s.team, s.role))
                    .cell(or_dash(s.tmux_session.as_ref()))
                    .cell(or_dash(s.started_at.map(|at| age(at, now) + " ago")));
            }
            if trees {
                row.cell(or_dash(s.worktree.as_deref()))
                    .cell(or_dash(s.branch.as_deref()));
            }
            row.cell(session_next(s, now));
            row.finish()
        })
        .collect();
    Rows {
        header: header.into_iter().map(String::from).collect(),
        rows,
    }
}

/// `get roles`; `wide` adds RESTART (the policy), BUDGET WINDOW and
/// COMMAND.
pub fn roles_table(roles: &[RoleView], now: DateTime<Utc>, wide: bool, colour: bool) -> String {
    let mut header = vec![
        "ROLE",
        "STATE",
        "READY",
        "RESTARTS",
        "WINDOW",
        "NEXT RESTART",
    ];
    if wide {
        header.extend(["RESTART", "BUDGET WINDOW", "COMMAND"]);
    }
    header.push("REASON");
    let rows = roles
        .iter()
        .map(|r| {
            let mut row = vec![
                Cell::new(&r.key),
                state_cell(r.state),
                Cell::new(format!("{}/{}", r.running, r.desired)),
                Cell::new(restarts(r.restarts, r.last_restart_at, now)),
                Cell::new(window(r.crashes_in_window, r.max_restarts)),
                Cell::new(role_next_restart(r, now)),
            ];
            if wide {
                row.extend([
                    Cell::new(format!("{:?}", r.restart)),
                    Cell::new(humantime::format_duration(
                        std::time::Duration::from_millis(r.window_ms),
                    )),
                    Cell::new(shell_words(&r.command)),
                ]);
            }
            row.push(Cell::new(role_reason(r)));
            row
        })
        .collect();
    table(&header, rows, colour)
}

/// `get teams`; `wide` adds WORKSPACE and APPLIED (when, in local time).
pub fn teams_table(teams: &[TeamView], now: DateTime<Utc>, wide: bool, colour: bool) -> String {
    let mut header = vec!["TEAM", "STATE", "ROLES", "READY", "AGE"];
    if wide {
        header.extend(["WORKSPACE", "APPLIED"]);
    }
    header.push("SHIFT");
    let rows = teams
        .iter()
        .map(|t| {
            let mut row = vec![
                Cell::new(&t.key),
                state_cell(t.state),
                Cell::new(t.roles),
                Cell::new(format!("{}/{}", t.running, t.desired)),
                Cell::new(age(t.applied_at, now)),
            ];
            if wide {
                row.extend([
                    Cell::new(&t.workspace),
                    Cell::new(clock(t.applied_at, now, &chrono::Local)),
                ]);
            }
            row.push(Cell::new(shift(t.shift.as_ref(), now)));
            row
        })
        .collect();
    table(&header, rows, colour)
}

/// An event time in the reader's zone: `14:03:07.125` today, with the date
/// in front on other days.
pub fn clock<Tz: TimeZone>(at: DateTime<Utc>, now: DateTime<Utc>, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    clock_dated(at, now, tz, false)
}

/// Whether a list of events needs dates on every line: it reaches back
/// before today, or spans more than a day.
pub fn needs_dates<Tz: TimeZone>(events: &[EventView], now: DateTime<Utc>, tz: &Tz) -> bool {
    let today = now.with_timezone(tz).date_naive();
    let (Some(first), Some(last)) = (
        events.iter().map(|e| e.at).min(),
        events.iter().map(|e| e.at).max(),
    ) else {
        return false;
    };
    first.with_timezone(tz).date_naive() != today || last - first > TimeDelta::days(1)
}

/// [`clock`], with the date always shown when `dated`.
pub fn clock_dated<Tz: TimeZone>(
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    tz: &Tz,
    dated: bool,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let local = at.with_timezone(tz);
    if !dated && local.date_naive() == now.with_timezone(tz).date_naive() {
        local.format("%H:%M:%S%.3f").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
    }
}

/// Widest event kind name, so that keys line up in a stream.
const KIND_WIDTH: usize = 9;
/// Room for a typical session key; a longer one pushes its message right.
const KEY_WIDTH: usize = 28;

/// One event as a log line: `TIME  KIND  KEY  MESSAGE`. Columns have fixed
/// widths so that a followed stream lines up without knowing what comes.
pub fn event_line<Tz: TimeZone>(e: &EventView, now: DateTime<Utc>, tz: &Tz, colour: bool) -> String
where
    Tz::Offset: std::fmt::Display,
{
    event_line_dated(e, now, tz, colour, false)
}

/// [`event_line`], with the date on the line when `dated`.
pub fn event_line_dated<Tz: TimeZone>(
    e: &EventView,
    now: DateTime<Utc>,
    tz: &Tz,
    colour: bool,
    dated: bool,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let kind = e.kind.as_str();
    let kind_pad = " ".repeat(KIND_WIDTH.saturating_sub(kind.len()));
    let key = if e.key.is_empty() {
        "-".into()
    } else {
        escape_line(&e.key)
    };
    format!(
        "{}  {}{kind_pad}  {key:<KEY_WIDTH$}  {}",
        clock_dated(e.at, now, tz, dated),
        painted(e.kind, colour),
        escape_line(&e.message)
    )
}

/// A role's backoff, the one wording for it: `1s ×2 up to 1m, jitter ±10%`.
pub fn backoff(b: &Backoff) -> String {
    format!(
        "{} ×{} up to {}, jitter ±{}%",
        humantime::format_duration(b.initial()),
        b.factor(),
        humantime::format_duration(b.max()),
        (b.jitter() * 100.0).round()
    )
}

/// An argv as a shell would need it typed: plain words bare, others in
/// single quotes; control characters escaped.
pub fn shell_words(argv: &[String]) -> String {
    let plain = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c))
    };
    let words: Vec<String> = argv
        .iter()
        .map(|w| {
            if plain(w) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect();
    escape_line(&words.join(" ")).into_owned()
}

/// What `apply` did to a role, as a sentence: `demo/squad/worker created
/// (2 replicas)`, `... scaled 2 → 3`, `... updated in place (backoff
/// changed)`, `... replaced (command changed)`, `... unchanged`.
pub fn change_line(key: &str, change: Change, detail: &str) -> String {
    let detail = escape_line(detail);
    match (change, detail.as_ref()) {
        (change, "") => format!("{key} {change}"),
        (Change::Scaled, detail) => format!("{key} scaled {detail}"),
        (Change::Updated, detail) => format!("{key} updated in place ({detail})"),
        (change, detail) => format!("{key} {change} ({detail})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const NOW: &str = "2025-01-02T12:00:00Z";

    fn session(key: &str, state: SessionState) -> SessionView {
        SessionView {
            key: key.into(),
            workspace: "demo".into(),
            team: "squad".into(),
            role: "worker".into(),
            slot: 0,
            state,
            pane: None,
            pid: None,
            restarts: 0,
            last_restart_at: None,
            created_at: t("2025-01-02T11:57:00Z"),
            started_at: None,
            exit: None,
            role_state: RoleState::Ready,
            next_restart_at: None,
            frozen_reason: None,
            last_output: vec![],
            tmux_session: None,
            uid: 1,
            health: None,
            last_heartbeat_at: None,
            context_pct: None,
            heartbeat_note: None,
            outdated: false,
            worktree: None,
            branch: None,
            activity: None,
            activity_since: None,
        }
    }

    fn exit(code: Option<i32>, signal: Option<i32>, reason: &str) -> ExitView {
        ExitView {
            code,
            signal,
            at: t("2025-01-02T11:59:58Z"),
            reason: reason.into(),
        }
    }

    fn role(state: RoleState) -> RoleView {
        RoleView {
            key: "demo/squad/worker".into(),
            workspace: "demo".into(),
            team: "squad".into(),
            role: "worker".into(),
            desired: 2,
            running: 1,
            state,
            restarts: 0,
            last_restart_at: None,
            crashes_in_window: 0,
            max_restarts: Some(5),
            window_ms: 600_000,
            next_restart_at: None,
            frozen_reason: None,
            frozen_at: None,
            last_exit: None,
            command: vec!["sh".into()],
            restart: crate::domain::spec::RestartPolicy::Always,
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color_or_the_flag() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        assert!(colour_enabled(true, None, false));
        assert!(
            colour_enabled(true, empty, false),
            "empty NO_COLOR is unset"
        );
        assert!(!colour_enabled(true, set, false));
        assert!(!colour_enabled(true, None, true));
        assert!(!colour_enabled(false, None, false));
        assert!(!colour_enabled(false, set, true));
    }

    #[test]
    fn ages_are_short_and_truncated_like_kubectl() {
        let now = t(NOW);
        assert_eq!(age(t("2025-01-02T11:59:55Z"), now), "5s");
        assert_eq!(age(t("2025-01-02T11:59:00Z"), now), "1m");
        assert_eq!(age(t("2025-01-02T11:59:01Z"), now), "59s");
        assert_eq!(age(t("2025-01-02T11:57:00Z"), now), "3m");
        assert_eq!(age(t("2025-01-02T11:00:01Z"), now), "59m");
        assert_eq!(age(t("2025-01-02T10:00:00Z"), now), "2h");
        assert_eq!(age(t("2024-12-29T12:00:00Z"), now), "4d");
        assert_eq!(age(t("2023-01-01T12:00:00Z"), now), "2y");
        assert_eq!(age(t("2025-01-02T12:00:07Z"), now), "0s", "clock skew");
    }

    #[test]
    fn time_left_shows_milliseconds_below_a_second() {
        let now = t(NOW);
        assert_eq!(
            until(t("2025-01-02T12:00:00.250Z"), now).as_deref(),
            Some("250ms")
        );
        assert_eq!(
            until(t("2025-01-02T12:00:03.900Z"), now).as_deref(),
            Some("3s")
        );
        assert_eq!(until(t("2025-01-02T12:02:00Z"), now).as_deref(), Some("2m"));
        assert_eq!(until(now, now), None);
        assert_eq!(until(t("2025-01-02T11:59:59Z"), now), None);
    }

    #[test]
    fn restarts_say_how_long_ago_the_last_one_was() {
        let now = t(NOW);
        assert_eq!(restarts(0, None, now), "0");
        assert_eq!(
            restarts(2, Some(t("2025-01-02T11:58:00Z")), now),
            "2 (2m ago)"
        );
        assert_eq!(restarts(3, None, now), "3");
    }

    #[test]
    fn exit_text_is_the_daemons_words() {
        assert_eq!(exit_text(None), "-");
        assert_eq!(exit_text(Some(&exit(Some(42), None, "exit 42"))), "exit 42");
        assert_eq!(
            exit_text(Some(&exit(None, None, "pane killed"))),
            "pane killed"
        );
        assert_eq!(exit_text(Some(&exit(None, None, ""))), "ended");
    }

    #[test]
    fn next_column_shows_backoff_and_frozen_roles_on_dead_sessions_only() {
        let now = t(NOW);
        let mut s = session("demo/squad/worker-0", SessionState::Crashed);
        assert_eq!(session_next(&s, now), "");
        s.role_state = RoleState::Backoff;
        s.next_restart_at = Some(t("2025-01-02T12:00:03Z"));
        assert_eq!(session_next(&s, now), "restart in 3s");
        s.next_restart_at = Some(t("2025-01-02T11:59:59Z"));
        assert_eq!(session_next(&s, now), "restarting");
        s.role_state = RoleState::Frozen;
        s.frozen_reason = Some("6 crashes in 10m, last: exit 1".into());
        assert_eq!(
            session_next(&s, now),
            "frozen: 6 crashes in 10m, last: exit 1"
        );
        s.state = SessionState::Running;
        assert_eq!(session_next(&s, now), "", "a live replica is not frozen");
    }

    #[test]
    fn role_columns_show_the_budget_and_the_reason() {
        let now = t(NOW);
        assert_eq!(window(2, Some(5)), "2/5");
        assert_eq!(window(7, None), "7/∞");
        let mut r = role(RoleState::Backoff);
        r.next_restart_at = Some(t("2025-01-02T12:00:02Z"));
        r.last_exit = Some(exit(Some(1), None, "exit 1"));
        assert_eq!(role_next_restart(&r, now), "in 2s");
        assert_eq!(role_reason(&r), "last: exit 1");
        r.state = RoleState::Frozen;
        r.frozen_reason = Some("6 crashes in 10m, last: exit 1".into());
        assert_eq!(role_next_restart(&r, now), "-");
        assert_eq!(role_reason(&r), "6 crashes in 10m, last: exit 1");
        assert_eq!(role_reason(&role(RoleState::Ready)), "");
    }

    /// Columns line up in terminal columns (a wide character counts two),
    /// three spaces apart; colour wraps the words only; no line ends in
    /// blanks; a line break in a cell cannot break the row.
    #[test]
    fn a_table_aligns_by_terminal_columns_and_colours_only_words() {
        let rows = || {
            vec![
                vec![
                    Cell::new("漢字"),
                    Cell {
                        tint: Some(Tint::Green),
                        ..Cell::new("ok")
                    },
                    Cell::new(""),
                ],
                vec![Cell::new("ab"), Cell::new("two\nlines"), Cell::new("x")],
            ]
        };
        let plain = table(&["NAME", "STATE", "LAST"], rows(), false);
        assert_eq!(
            plain,
            "NAME   STATE        LAST\n\
             漢字   ok\n\
             ab     two\\nlines   x\n"
        );
        let coloured = table(&["NAME", "STATE", "LAST"], rows(), true);
        assert_eq!(coloured.lines().nth(1), Some("漢字   \x1b[32mok\x1b[0m"));
        assert_eq!(coloured.lines().nth(2), plain.lines().nth(2));
    }

    #[test]
    fn sessions_table_reads_like_kubectl() {
        let now = t(NOW);
        let mut a = session("demo/squad/worker-0", SessionState::Running);
        a.pane = Some("%3".into());
        a.pid = Some(4242);
        a.restarts = 2;
        a.last_restart_at = Some(t("2025-01-02T11:58:00Z"));
        a.health = Some(crate::view::HealthState::Healthy);
        a.last_heartbeat_at = Some(t("2025-01-02T11:59:58Z"));
        a.activity = Some(ActivityState::Waiting);
        a.activity_since = Some(t("2025-01-02T11:59:40Z"));
        let mut b = session("demo/squad/worker-1", SessionState::Crashed);
        b.exit = Some(exit(Some(1), None, "exit 1"));
        b.role_state = RoleState::Backoff;
        b.next_restart_at = Some(t("2025-01-02T12:00:03Z"));
        let text = sessions_table(&[a, b], now, false, false);
        assert_eq!(
            text,
            "\
SESSION               STATE     HEALTH             ACTIVITY      RESTARTS     AGE   PANE   PID    EXIT     NEXT
demo/squad/worker-0   Running   healthy (2s ago)   waiting 20s   2 (2m ago)   3m    %3     4242   -
demo/squad/worker-1   Crashed   -                  -             0            3m    -      -      exit 1   restart in 3s
"
        );
    }

    /// `get sessions` travels from the daemon as cells: decoded and laid
    /// out, they read exactly as the sessions laid out here, in colour or
    /// not, and the wire carries no whole records.
    #[test]
    fn session_rows_sent_as_json_read_as_the_table() {
        let now = t(NOW);
        let mut a = session("demo/squad/worker-0", SessionState::Running);
        a.activity = Some(ActivityState::Waiting);
        a.activity_since = Some(t("2025-01-02T11:59:40Z"));
        a.worktree = Some("/src/wt/worker-0".into());
        a.branch = Some("feature\x1b]0;x".into());
        let mut b = session("demo/squad/worker-1", SessionState::Crashed);
        b.exit = Some(exit(Some(3), None, "exit 3"));
        let sessions = [a, b];
        for wide in [false, true] {
            let wire = serde_json::to_string(&sessions_rows(&sessions, now, wide)).unwrap();
            assert!(!wire.contains("created_at"), "{wire}");
            for colour in [false, true] {
                let rows: Rows = serde_json::from_str(&wire).unwrap();
                assert_eq!(
                    rows.render(colour),
                    sessions_table(&sessions, now, wide, colour),
                    "wide {wide}, colour {colour}"
                );
            }
        }
        let coloured: Rows = serde_json::from_str(
            &serde_json::to_string(&sessions_rows(&sessions, now, false)).unwrap(),
        )
        .unwrap();
        assert!(coloured.render(true).contains("\x1b[33mwaiting 20s\x1b[0m"));
        // A row travels as one string, its cells apart by tabs: a tab of
        // the session's own is escaped and splits nothing.
        let mut c = session("demo/squad/worker-2", SessionState::Running);
        c.worktree = Some("/src/wt".into());
        c.branch = Some("a\tb".into());
        let rows = sessions_rows(&[c], now, true);
        assert_eq!(rows.rows[0].cells().count(), rows.header.len());
        let wire = serde_json::to_value(&rows).unwrap();
        assert!(
            wire["rows"][0]["t"].as_str().unwrap().contains("a\\tb"),
            "{wire}"
        );
        let branch = rows.header.iter().position(|h| h == "BRANCH").unwrap();
        assert_eq!(rows.rows[0].cells().nth(branch).unwrap().0, "a\\tb");
    }

    /// Cells from another host's daemon are text from elsewhere: a control
    /// character in one is shown escaped, never sent to the terminal.
    #[test]
    fn cells_from_a_daemon_cannot_reach_the_terminal_raw() {
        let wire = r#"{"header":["SESSION","STATE"],"rows":[{"t":"a\u001b]0;pwned\u0007\tRunning","c":[[1,"green"]]}]}"#;
        let rows: Rows = serde_json::from_str(wire).unwrap();
        let text = rows.render(false);
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(text.contains("a\\e]0;pwned^G"), "{text:?}");
        assert!(rows.render(true).contains("\x1b[32mRunning\x1b[0m"));
    }

    #[test]
    fn activity_reads_busy_or_with_how_long() {
        let now = t(NOW);
        let mut s = session("demo/squad/worker-0", SessionState::Running);
        assert_eq!(activity(&s, now), "-");
        s.activity = Some(ActivityState::Busy);
        s.activity_since = Some(t("2025-01-02T11:00:00Z"));
        assert_eq!(activity(&s, now), "busy");
        s.activity = Some(ActivityState::Idle);
        s.activity_since = Some(t("2025-01-02T11:56:00Z"));
        assert_eq!(activity(&s, now), "idle 4m");
    }

    #[test]
    fn wide_sessions_add_role_tmux_session_and_start() {
        let now = t(NOW);
        let mut a = session("demo/squad/worker-0", SessionState::Running);
        a.tmux_session = Some("marvel-demo-squad".into());
        a.started_at = Some(t("2025-01-02T11:59:50Z"));
        let text = sessions_table(&[a], now, true, false);
        let header = text.lines().next().unwrap();
        assert_eq!(
            header,
            "SESSION               STATE     HEALTH   ACTIVITY   RESTARTS   AGE   PANE   PID   EXIT   ROLE                TMUX SESSION        STARTED   NEXT"
        );
        assert!(text.contains("demo/squad/worker   marvel-demo-squad   10s ago"));
        assert!(!text.contains("WORKTREE"), "only when a session has one");
    }

    #[test]
    fn wide_sessions_show_the_worktree_and_its_branch() {
        let now = t(NOW);
        let mut a = session("demo/squad/worker-0", SessionState::Running);
        a.worktree = Some("/state/worktrees/demo/squad/worker-0".into());
        a.branch = Some("agents/worker-0".into());
        let b = session("demo/squad/lead-0", SessionState::Running);
        let text = sessions_table(&[a, b], now, true, false);
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        assert!(header.contains("STARTED   WORKTREE"), "{header}");
        assert!(header.ends_with("BRANCH            NEXT"), "{header}");
        assert!(
            text.contains("/state/worktrees/demo/squad/worker-0   agents/worker-0"),
            "{text}"
        );
        let lead = lines.find(|l| l.starts_with("demo/squad/lead-0")).unwrap();
        assert!(lead.trim_end().ends_with("-"), "{lead}");
        assert!(
            !sessions_table(
                &[session("x/y/z-0", SessionState::Running)],
                now,
                false,
                false
            )
            .contains("WORKTREE")
        );
    }

    #[test]
    fn roles_and_teams_tables() {
        let now = t(NOW);
        let mut r = role(RoleState::Frozen);
        r.restarts = 6;
        r.last_restart_at = Some(t("2025-01-02T11:59:00Z"));
        r.crashes_in_window = 6;
        r.frozen_reason = Some("6 crashes in 10m, last: exit 1".into());
        assert_eq!(
            roles_table(&[r], now, false, false),
            "\
ROLE                STATE    READY   RESTARTS     WINDOW   NEXT RESTART   REASON
demo/squad/worker   Frozen   1/2     6 (1m ago)   6/5      -              6 crashes in 10m, last: exit 1
"
        );
        let mut team = TeamView {
            key: "demo/squad".into(),
            workspace: "demo".into(),
            team: "squad".into(),
            roles: 2,
            desired: 3,
            running: 3,
            state: TeamState::Ready,
            applied_at: t("2025-01-02T10:00:00Z"),
            shift: None,
        };
        assert_eq!(
            teams_table(std::slice::from_ref(&team), now, false, false),
            "\
TEAM         STATE   ROLES   READY   AGE   SHIFT
demo/squad   Ready   2       3/3     2h    -
"
        );
        team.shift = Some(ShiftView {
            id: 1,
            state: ShiftState::Running,
            roles: vec!["worker".into(), "lead".into()],
            role: Some("worker".into()),
            replaced: 1,
            total: 3,
            started_at: t("2025-01-02T11:59:00Z"),
            deadline: t("2025-01-02T12:09:00Z"),
            ended_at: None,
            reason: None,
        });
        assert!(
            teams_table(std::slice::from_ref(&team), now, false, false)
                .ends_with("2h    worker 1/3\n")
        );
        let shift_view = team.shift.as_mut().unwrap();
        shift_view.state = ShiftState::Failed;
        shift_view.ended_at = Some(t("2025-01-02T11:59:30Z"));
        assert_eq!(shift(team.shift.as_ref(), now), "failed (30s ago)");
    }

    #[test]
    fn colour_marks_the_state_cell_only_when_asked() {
        let now = t(NOW);
        let s = session("demo/squad/worker-0", SessionState::Crashed);
        assert!(!sessions_table(std::slice::from_ref(&s), now, false, false).contains('\x1b'));
        let coloured = sessions_table(&[s], now, false, true);
        assert!(coloured.contains("\x1b["), "{coloured:?}");
        assert_eq!(painted(RoleState::Frozen, true), "\x1b[35mfrozen\x1b[0m");
        assert_eq!(painted(RoleState::Frozen, false), "frozen");
        assert_eq!(painted(EventKind::Stopped, true), "stopped");
        assert_eq!(painted(TmuxState::Unknown, true), "\x1b[33munknown\x1b[0m");
    }

    #[test]
    fn event_lines_align_kinds_and_date_other_days() {
        let now = t(NOW);
        let e = EventView {
            seq: 1,
            at: t("2025-01-02T11:59:58.125Z"),
            kind: EventKind::Crashed,
            key: "demo/squad/worker-0".into(),
            message: "exit 1".into(),
        };
        assert_eq!(
            event_line(&e, now, &Utc, false),
            "11:59:58.125  crashed    demo/squad/worker-0           exit 1"
        );
        let old = EventView {
            at: t("2025-01-01T08:00:00Z"),
            kind: EventKind::TmuxDown,
            key: String::new(),
            ..e
        };
        assert_eq!(
            event_line(&old, now, &Utc, false),
            "2025-01-01 08:00:00.000  tmux-down  -                             exit 1"
        );
    }

    #[test]
    fn titles_capitalise_the_first_letter() {
        assert_eq!(title("crashed"), "Crashed");
        assert_eq!(title(""), "");
    }

    /// What a hostile program can put in its output, its heartbeat note or
    /// its exit: a clipboard write, a window title and a screen clear.
    const HOSTILE: &str = "\x1b]52;c;aGk=\x07\x1b]0;owned\x07\x1b[2J\u{9b}31m";

    #[test]
    fn program_text_never_reaches_the_terminal_raw() {
        let now = t(NOW);
        let mut s = session("demo/squad/worker-0", SessionState::Crashed);
        s.exit = Some(exit(Some(1), None, HOSTILE));
        s.role_state = RoleState::Frozen;
        s.frozen_reason = Some(HOSTILE.into());
        let mut r = role(RoleState::Frozen);
        r.frozen_reason = Some(HOSTILE.into());
        r.last_exit = Some(exit(Some(1), None, HOSTILE));
        let mut backoff = role(RoleState::Backoff);
        backoff.last_exit = r.last_exit.clone();
        let e = EventView {
            seq: 1,
            at: now,
            kind: EventKind::Warning,
            key: HOSTILE.into(),
            message: format!("{HOSTILE}\nsecond line"),
        };
        let texts = [
            sessions_table(std::slice::from_ref(&s), now, true, false),
            sessions_table(std::slice::from_ref(&s), now, false, true),
            roles_table(&[r, backoff], now, false, false),
            event_line(&e, now, &Utc, false),
            change_line("demo/squad/worker", Change::Replaced, HOSTILE),
            shell_words(&[HOSTILE.to_string()]),
        ];
        for text in texts {
            let plain = strip_colours(&text);
            assert!(!plain.contains(['\x1b', '\x07', '\u{9b}']), "{text:?}");
            assert!(
                plain.contains("\\e]52;c;aGk=^G\\e]0;owned^G\\e[2J\\u{9b}31m"),
                "{text:?}"
            );
        }
        assert!(event_line(&e, now, &Utc, false).ends_with("^G\\e[2J\\u{9b}31m\\nsecond line"));
    }

    /// `text` without the colour codes marvel itself adds.
    fn strip_colours(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("\x1b[") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            match after.find(|c: char| !(c.is_ascii_digit() || c == ';')) {
                Some(j) if after[j..].starts_with('m') => rest = &after[j + 1..],
                _ => {
                    out.push_str(&rest[i..i + 2]);
                    rest = after;
                }
            }
        }
        out + rest
    }

    #[test]
    fn one_backoff_wording_says_the_factor() {
        use crate::domain::spec::{Factor, Jitter, NonZeroSpan, Span};
        let b = Backoff::default();
        assert_eq!(backoff(&b), "1s ×2 up to 1m, jitter ±10%");
        let b = Backoff::new(
            NonZeroSpan::new(std::time::Duration::from_millis(500)).unwrap(),
            Span::new(std::time::Duration::from_secs(4)).unwrap(),
            Factor::new(1.5).unwrap(),
            Jitter::new(0.0).unwrap(),
        )
        .unwrap();
        assert_eq!(backoff(&b), "500ms ×1.5 up to 4s, jitter ±0%");
    }

    #[test]
    fn shell_words_quote_only_what_needs_it() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(shell_words(&argv(&["ls", "-la", "/tmp"])), "ls -la /tmp");
        assert_eq!(
            shell_words(&argv(&["echo", "it's", ""])),
            r"echo 'it'\''s' ''"
        );
    }

    #[test]
    fn change_lines_read_as_sentences() {
        let key = "demo/squad/worker";
        assert_eq!(
            change_line(key, Change::Created, "2 replicas"),
            "demo/squad/worker created (2 replicas)"
        );
        assert_eq!(
            change_line(key, Change::Unchanged, ""),
            "demo/squad/worker unchanged"
        );
        assert_eq!(
            change_line(key, Change::Scaled, "2 → 3"),
            "demo/squad/worker scaled 2 → 3"
        );
        assert_eq!(
            change_line(key, Change::Replaced, "spec changed"),
            "demo/squad/worker replaced (spec changed)"
        );
        assert_eq!(
            change_line(key, Change::Removed, ""),
            "demo/squad/worker removed"
        );
    }

    #[test]
    fn ctx_shows_only_when_a_session_reports_it_and_wide_adds_columns() {
        let now = t(NOW);
        let mut a = session("demo/squad/worker-0", SessionState::Running);
        let b = session("demo/squad/worker-1", SessionState::Running);
        let plain = sessions_table(&[a.clone(), b.clone()], now, false, false);
        assert!(!plain.contains("CTX"), "{plain}");
        a.context_pct = Some(42);
        let with = sessions_table(&[a, b], now, false, false);
        assert!(
            with.starts_with("SESSION   ") && with.contains(" CTX "),
            "{with}"
        );
        assert!(with.contains(" 42% "), "{with}");
        let r = role(RoleState::Ready);
        assert!(!roles_table(std::slice::from_ref(&r), now, false, false).contains("COMMAND"));
        let wide = roles_table(&[r], now, true, false);
        assert!(
            wide.contains("RESTART ") && wide.contains("COMMAND"),
            "{wide}"
        );
    }

    #[test]
    fn events_are_dated_once_they_reach_past_today_or_span_a_day() {
        let ev = |at: &str| EventView {
            seq: 1,
            at: t(at),
            kind: crate::view::EventKind::Crashed,
            key: "k".into(),
            message: "m".into(),
        };
        let now = t(NOW);
        let utc = chrono::Utc;
        assert!(!needs_dates(
            &[ev("2025-01-02T08:00:00Z"), ev(NOW)],
            now,
            &utc
        ));
        assert!(needs_dates(
            &[ev("2025-01-01T23:00:00Z"), ev(NOW)],
            now,
            &utc
        ));
        assert!(!needs_dates(&[], now, &utc));
        let line = event_line_dated(&ev(NOW), now, &utc, false, true);
        assert!(
            line.starts_with("2025-01-02 12:00:00.000  crashed"),
            "{line}"
        );
    }
}
