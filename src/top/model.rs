//! What `marvel top` shows, as a pure function of what the daemon said: its
//! views (sessions, roles, teams, status) and its events. No terminal,
//! socket or clock here; the time is always an argument.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::key::SessionKey;
use crate::output;
use crate::proto::Filter;
use crate::view::{
    EventKind, EventView, HealthState, RestartPolicy, RoleState, RoleView, SessionState,
    SessionView, ShiftState, StatusView, TeamState, TeamView,
};

/// How many events the strip keeps.
pub const EVENTS_KEPT: usize = 200;
/// How many of the latest deaths the first refresh reads for the sparklines.
pub const CRASHES_READ: usize = 2_000;
/// Deaths kept per role for its sparkline.
const CRASHES_KEPT: usize = 512;
/// Cells of a crash sparkline.
pub const SPARK_CELLS: usize = 8;
/// Past this many teams to refresh at once, one listing of everything is
/// cheaper than one per team.
const TEAMS_AT_ONCE: usize = 4;

/// The connection to the daemon, as the event stream sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not connected yet.
    Connecting,
    Up,
    /// The daemon went away (why); the dashboard tries again.
    Down(String),
}

/// Everything the daemon told, merged: the last full refresh, patched by
/// the partial refreshes that events asked for.
#[derive(Debug, Clone)]
pub struct Model {
    /// Sorted by team key, role, slot and uid.
    pub sessions: Vec<SessionView>,
    /// Grouped by team (sorted), each team's roles in manifest order.
    pub roles: Vec<RoleView>,
    /// Sorted by key.
    pub teams: Vec<TeamView>,
    pub status: Option<StatusView>,
    /// The newest events, oldest first.
    pub events: VecDeque<EventView>,
    /// Deaths (time, event number) per role key, oldest first.
    crashes: HashMap<String, VecDeque<(DateTime<Utc>, u64)>>,
    pub link: Link,
    /// The newest event number seen, so that none is counted twice.
    last_seq: Option<u64>,
}

impl Default for Model {
    fn default() -> Model {
        Model {
            sessions: Vec::new(),
            roles: Vec::new(),
            teams: Vec::new(),
            status: None,
            events: VecDeque::new(),
            crashes: HashMap::new(),
            link: Link::Connecting,
            last_seq: None,
        }
    }
}

/// What a listing covers: everything, or one team (`workspace/team`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    All,
    Team(String),
}

impl Scope {
    /// The daemon's filter for this scope.
    pub fn filter(&self) -> Filter {
        match self {
            Scope::All => Filter::default(),
            Scope::Team(key) => {
                let (ws, team) = key.split_once('/').unwrap_or(("", key));
                Filter {
                    workspace: Some(ws.to_string()),
                    team: Some(team.to_string()),
                    ..Filter::default()
                }
            }
        }
    }

    fn covers(&self, workspace: &str, team: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Team(key) => key.split_once('/') == Some((workspace, team)),
        }
    }
}

/// Which listings of a scope are wanted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parts {
    pub sessions: bool,
    pub roles: bool,
    pub teams: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        sessions: true,
        roles: true,
        teams: true,
    };
    pub const SESSIONS: Parts = Parts {
        sessions: true,
        roles: false,
        teams: false,
    };

    fn or(self, o: Parts) -> Parts {
        Parts {
            sessions: self.sessions || o.sessions,
            roles: self.roles || o.roles,
            teams: self.teams || o.teams,
        }
    }

    /// Whether `self` asks for nothing that `o` does not.
    fn within(self, o: Parts) -> bool {
        self.or(o) == o
    }

    fn is_empty(self) -> bool {
        self == Parts::default()
    }
}

/// One question to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    Views(Scope, Parts),
    Status,
    /// The latest deaths, for the sparklines.
    Crashes,
}

/// One answer, to merge with [`Model::apply`].
#[derive(Debug, Clone)]
pub enum Fetched {
    Sessions(Scope, Vec<SessionView>),
    Roles(Scope, Vec<RoleView>),
    Teams(Scope, Vec<TeamView>),
    Status(Box<StatusView>),
    Crashes(Vec<EventView>),
}

/// What has to be asked again, gathered from events until it is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    all: Parts,
    teams: BTreeMap<String, Parts>,
    status: bool,
    crashes: bool,
}

impl Needs {
    /// A full refresh: on start and after every reconnection.
    pub fn everything() -> Needs {
        Needs {
            all: Parts::ALL,
            teams: BTreeMap::new(),
            status: true,
            crashes: true,
        }
    }

    /// Every session again: heartbeat values (context %, note) change
    /// without an event.
    pub fn sessions() -> Needs {
        Needs {
            all: Parts::SESSIONS,
            ..Needs::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.teams.is_empty() && !self.status && !self.crashes
    }

    pub fn merge(&mut self, o: Needs) {
        self.all = self.all.or(o.all);
        for (team, parts) in o.teams {
            self.add_team(team, parts);
        }
        self.status |= o.status;
        self.crashes |= o.crashes;
    }

    fn add_team(&mut self, team: String, parts: Parts) {
        let p = self.teams.entry(team).or_default();
        *p = p.or(parts);
    }

    /// What an event says has changed. A daemon event (no key) is about
    /// tmux or the daemon itself; any other is about one team: a heartbeat
    /// verdict changes its sessions, anything else may change its
    /// sessions, roles and counts.
    pub fn event(&mut self, e: &EventView) {
        let team = team_of(&e.key);
        match (e.kind, team) {
            (EventKind::TmuxDown | EventKind::TmuxUp, _) => {
                self.status = true;
                self.all = Parts::ALL;
            }
            (_, None) if e.key.is_empty() => self.status = true,
            (_, None) => self.all = Parts::ALL,
            (EventKind::Healthy | EventKind::Unhealthy, Some(t)) => {
                self.add_team(t.to_string(), Parts::SESSIONS)
            }
            (_, Some(t)) => self.add_team(t.to_string(), Parts::ALL),
        }
    }

    /// The questions to ask, fewest first: a team's listing is dropped
    /// when everything is listed anyway, and many teams become one
    /// listing of everything.
    pub fn fetches(self) -> Vec<Fetch> {
        let mut all = self.all;
        let teams: Vec<(String, Parts)> = self
            .teams
            .into_iter()
            .filter(|(_, p)| !p.within(all))
            .collect();
        let mut out = Vec::new();
        if teams.len() > TEAMS_AT_ONCE {
            all = teams.iter().fold(all, |a, (_, p)| a.or(*p));
        } else {
            out.extend(
                teams
                    .into_iter()
                    .map(|(t, p)| Fetch::Views(Scope::Team(t), p)),
            );
        }
        if !all.is_empty() {
            out.insert(0, Fetch::Views(Scope::All, all));
        }
        if self.status {
            out.push(Fetch::Status);
        }
        if self.crashes {
            out.push(Fetch::Crashes);
        }
        out
    }
}

/// `workspace/team` of a team, role or session key; `None` for the daemon's
/// own events (no key) and for a key that names no team.
pub fn team_of(key: &str) -> Option<&str> {
    let mut slashes = key.match_indices('/').map(|(i, _)| i);
    let first = slashes.next()?;
    let end = slashes.next().unwrap_or(key.len());
    (first > 0 && end > first + 1).then(|| &key[..end])
}

/// Asked for or running: a session with (or about to have) a pane.
pub fn live(s: &SessionView) -> bool {
    matches!(s.state, SessionState::Pending | SessionState::Running)
}

fn team_key(workspace: &str, team: &str) -> String {
    format!("{workspace}/{team}")
}

fn role_key(s: &SessionView) -> String {
    format!("{}/{}/{}", s.workspace, s.team, s.role)
}

impl Model {
    /// Merges one answer. A team's listing replaces what was known of
    /// that team only; an empty one means the team is gone.
    pub fn apply(&mut self, fetched: Fetched) {
        match fetched {
            Fetched::Sessions(scope, mut v) => {
                self.sessions
                    .retain(|s| !scope.covers(&s.workspace, &s.team));
                self.sessions.append(&mut v);
                self.sessions.sort_by(|a, b| {
                    (&a.workspace, &a.team, &a.role, a.slot, a.uid).cmp(&(
                        &b.workspace,
                        &b.team,
                        &b.role,
                        b.slot,
                        b.uid,
                    ))
                });
            }
            Fetched::Roles(scope, mut v) => {
                self.roles.retain(|r| !scope.covers(&r.workspace, &r.team));
                self.roles.append(&mut v);
                // Stable: each team's roles keep the daemon's (manifest) order.
                self.roles
                    .sort_by(|a, b| (&a.workspace, &a.team).cmp(&(&b.workspace, &b.team)));
            }
            Fetched::Teams(scope, mut v) => {
                self.teams.retain(|t| !scope.covers(&t.workspace, &t.team));
                self.teams.append(&mut v);
                self.teams.sort_by(|a, b| a.key.cmp(&b.key));
            }
            Fetched::Status(s) => self.status = Some(*s),
            Fetched::Crashes(evs) => {
                self.crashes.clear();
                for e in &evs {
                    self.count_death(e);
                }
            }
        }
    }

    /// The events the stream starts with, on every (re)connection: they
    /// replace the strip.
    pub fn backlog(&mut self, evs: Vec<EventView>) {
        self.last_seq = evs.iter().map(|e| e.seq).max();
        self.events = evs.into();
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    /// A new event from the stream; `false` for one already seen.
    pub fn event(&mut self, e: EventView) -> bool {
        if self.last_seq.is_some_and(|last| e.seq <= last) {
            return false;
        }
        self.last_seq = Some(e.seq);
        self.count_death(&e);
        self.events.push_back(e);
        if self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
        true
    }

    fn count_death(&mut self, e: &EventView) {
        if e.kind != EventKind::Crashed {
            return;
        }
        let Ok(key) = e.key.parse::<SessionKey>() else {
            return;
        };
        let deaths = self.crashes.entry(key.role().to_string()).or_default();
        // A death can come twice: in the history read on a refresh and on
        // the stream. Events come in order; an older one is placed.
        let death = (e.at, e.seq);
        let at = deaths.partition_point(|d| *d < death);
        if deaths.get(at) == Some(&death) {
            return;
        }
        deaths.insert(at, death);
        if deaths.len() > CRASHES_KEPT {
            deaths.pop_front();
        }
    }

    /// How many deaths of `role` fall in each of [`SPARK_CELLS`] equal
    /// slices of its window, the oldest slice first.
    pub fn deaths(&self, role: &RoleView, now: DateTime<Utc>) -> [u32; SPARK_CELLS] {
        let mut cells = [0; SPARK_CELLS];
        let window = TimeDelta::milliseconds(role.window_ms.min(i64::MAX as u64) as i64);
        let Some(deaths) = self.crashes.get(&role.key) else {
            return cells;
        };
        let Some(start) = now.checked_sub_signed(window) else {
            return cells;
        };
        let span = window.num_milliseconds().max(1);
        for (at, _) in deaths.iter().filter(|(t, _)| *t > start && *t <= now) {
            let i = (*at - start).num_milliseconds() * SPARK_CELLS as i64 / span;
            cells[(i.max(0) as usize).min(SPARK_CELLS - 1)] += 1;
        }
        cells
    }

    pub fn role(&self, key: &str) -> Option<&RoleView> {
        self.roles.iter().find(|r| r.key == key)
    }

    /// The rows of the tree (teams → roles → sessions) that pass `filter`:
    /// a case-insensitive part of a key. A row whose key matches brings
    /// everything under it; a matching row brings the rows above it.
    pub fn rows(&self, filter: &str) -> Vec<Row<'_>> {
        let filter = filter.trim().to_lowercase();
        let hit = |key: &str| !filter.is_empty() && key.to_lowercase().contains(&filter);
        // team key → (its view, its roles in order, sessions by role key)
        type Team<'a> = (
            Option<&'a TeamView>,
            Vec<String>,
            HashMap<String, Vec<&'a SessionView>>,
        );
        let mut teams: BTreeMap<String, Team<'_>> = BTreeMap::new();
        for t in &self.teams {
            teams.entry(t.key.clone()).or_default().0 = Some(t);
        }
        let roles: HashMap<&str, &RoleView> =
            self.roles.iter().map(|r| (r.key.as_str(), r)).collect();
        for r in &self.roles {
            let entry = teams.entry(team_key(&r.workspace, &r.team)).or_default();
            entry.1.push(r.key.clone());
        }
        for s in &self.sessions {
            let entry = teams.entry(team_key(&s.workspace, &s.team)).or_default();
            let role = role_key(s);
            if !entry.1.contains(&role) {
                entry.1.push(role.clone());
            }
            entry.2.entry(role).or_default().push(s);
        }
        let mut rows = Vec::new();
        for (team, (view, role_keys, mut sessions)) in teams {
            let team_hit = hit(&team);
            let mut below = Vec::new();
            for key in role_keys {
                let role_hit = hit(&key);
                let role = roles.get(key.as_str()).copied();
                let mut children = Vec::new();
                for s in sessions.remove(&key).unwrap_or_default() {
                    let session_hit = hit(&s.key);
                    if filter.is_empty() || team_hit || role_hit || session_hit {
                        children.push(Row {
                            depth: 2,
                            hit: session_hit,
                            context: false,
                            item: Item::Session { view: s, role },
                        });
                    }
                }
                if filter.is_empty() || team_hit || role_hit || !children.is_empty() {
                    let name = key.rsplit('/').next().unwrap_or(&key).to_string();
                    below.push(Row {
                        depth: 1,
                        hit: role_hit,
                        context: !(filter.is_empty() || team_hit || role_hit),
                        item: Item::Role {
                            key: key.clone(),
                            name,
                            view: role,
                        },
                    });
                    below.append(&mut children);
                }
            }
            if filter.is_empty() || team_hit || !below.is_empty() {
                rows.push(Row {
                    depth: 0,
                    hit: team_hit,
                    context: !(filter.is_empty() || team_hit),
                    item: Item::Team { key: team, view },
                });
                rows.append(&mut below);
            }
        }
        rows
    }

    /// The session a row stands for in the preview and for `enter`, `i`
    /// and `k`: the session itself; for a role, its first live session,
    /// else its crashed marker; for a team, its first live session.
    pub fn target<'a>(&'a self, id: &RowId) -> Option<&'a SessionView> {
        match id {
            RowId::Session { key, uid } => self
                .sessions
                .iter()
                .find(|s| s.uid == *uid && s.key == *key),
            RowId::Role(key) => {
                let mut of_role = self.sessions.iter().filter(|s| role_key(s) == *key);
                of_role
                    .clone()
                    .find(|s| live(s))
                    .or_else(|| of_role.find(|s| s.state == SessionState::Crashed))
                    .or_else(|| self.sessions.iter().find(|s| role_key(s) == *key))
            }
            // In the tree's order: roles as the daemon lists them.
            RowId::Team(key) => self
                .roles
                .iter()
                .filter(|r| team_of(&r.key) == Some(key.as_str()))
                .find_map(|r| {
                    self.sessions
                        .iter()
                        .find(|s| live(s) && role_key(s) == r.key)
                })
                .or_else(|| {
                    self.sessions
                        .iter()
                        .find(|s| live(s) && team_key(&s.workspace, &s.team) == *key)
                }),
        }
    }

    /// Sessions by what they show.
    pub fn counts(&self) -> Counts {
        let roles: HashMap<&str, &RoleView> =
            self.roles.iter().map(|r| (r.key.as_str(), r)).collect();
        let mut c = Counts {
            teams: self.teams.len(),
            ..Counts::default()
        };
        for s in &self.sessions {
            let role = roles.get(role_key(s).as_str()).copied();
            c.sessions += 1;
            match session_look(s, role) {
                Look::Running => c.running += 1,
                Look::Unhealthy => c.unhealthy += 1,
                Look::Starting => c.starting += 1,
                Look::Backoff(_) => c.backoff += 1,
                Look::Crashed => c.crashed += 1,
                Look::Frozen => c.frozen += 1,
                Look::Stopped | Look::Succeeded => c.stopped += 1,
            }
        }
        c
    }

    /// How long until a countdown on `rows` (or tmux's next retry in the
    /// header) shows another number; `None` when none counts down, so the
    /// screen needs no tick.
    pub fn next_tick(&self, rows: &[Row<'_>], now: DateTime<Utc>) -> Option<TimeDelta> {
        let mut deadlines: Vec<DateTime<Utc>> = rows
            .iter()
            .filter_map(|r| match r.item {
                Item::Session { view, role } => match session_look(view, role) {
                    Look::Backoff(at) => at,
                    _ => None,
                },
                Item::Role {
                    view: Some(role), ..
                } if role.state == RoleState::Backoff => role.next_restart_at,
                _ => None,
            })
            .collect();
        if let Some(s) = &self.status {
            deadlines.extend(s.tmux.next_retry_at);
        }
        deadlines
            .into_iter()
            .filter(|at| *at > now)
            .map(|at| {
                let left = (at - now).num_milliseconds();
                // The number shown is the whole seconds left, rounded up:
                // it changes when the rest of a second has passed.
                let rest = left % 1000;
                TimeDelta::milliseconds(if rest == 0 { 1000 } else { rest })
            })
            .min()
    }
}

/// Sessions by what they show, for the header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub teams: usize,
    pub sessions: usize,
    pub running: usize,
    pub unhealthy: usize,
    pub starting: usize,
    pub backoff: usize,
    pub crashed: usize,
    pub frozen: usize,
    pub stopped: usize,
}

/// One line of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    /// 0 team, 1 role, 2 session.
    pub depth: u8,
    /// Its own key matches the filter (not only one above or below it).
    pub hit: bool,
    /// It shows only because a row under it matches the filter.
    pub context: bool,
    pub item: Item<'a>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    Team {
        key: String,
        view: Option<&'a TeamView>,
    },
    Role {
        key: String,
        /// The role's own name, as the tree shows it.
        name: String,
        view: Option<&'a RoleView>,
    },
    Session {
        view: &'a SessionView,
        role: Option<&'a RoleView>,
    },
}

/// What a row is, to keep it selected across refreshes: a session is
/// one spawn (its uid); its successor has the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowId {
    Team(String),
    Role(String),
    Session { key: String, uid: u64 },
}

impl RowId {
    pub fn key(&self) -> &str {
        match self {
            RowId::Team(k) | RowId::Role(k) | RowId::Session { key: k, .. } => k,
        }
    }

    /// The role this row belongs to, if any.
    pub fn role(&self) -> Option<String> {
        match self {
            RowId::Team(_) => None,
            RowId::Role(k) => Some(k.clone()),
            RowId::Session { key, .. } => {
                key.parse::<SessionKey>().ok().map(|k| k.role().to_string())
            }
        }
    }
}

impl Row<'_> {
    pub fn id(&self) -> RowId {
        match &self.item {
            Item::Team { key, .. } => RowId::Team(key.clone()),
            Item::Role { key, .. } => RowId::Role(key.clone()),
            Item::Session { view, .. } => RowId::Session {
                key: view.key.clone(),
                uid: view.uid,
            },
        }
    }
}

/// What a session, role or team looks like: one symbol and colour per
/// state, so that states read apart without colour too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    Running,
    Unhealthy,
    /// Asked for, not running yet.
    Starting,
    /// Waiting out a backoff until then (when known).
    Backoff(Option<DateTime<Utc>>),
    Crashed,
    Frozen,
    /// Ended and not replaced (`restart: Never`).
    Stopped,
    Succeeded,
}

/// The tone a look is painted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Warn,
    Bad,
    Frozen,
    Quiet,
}

impl Look {
    pub fn symbol(self) -> char {
        match self {
            Look::Running => '●',
            Look::Unhealthy => '▲',
            Look::Starting => '◌',
            Look::Backoff(_) => '◷',
            Look::Crashed => '✗',
            Look::Frozen => '❄',
            Look::Stopped | Look::Succeeded => '■',
        }
    }

    pub fn tone(self) -> Tone {
        match self {
            Look::Running => Tone::Good,
            Look::Starting | Look::Backoff(_) => Tone::Warn,
            Look::Unhealthy | Look::Crashed => Tone::Bad,
            Look::Frozen => Tone::Frozen,
            Look::Stopped | Look::Succeeded => Tone::Quiet,
        }
    }

    /// The word for a session in this state, with the countdown of a
    /// backoff.
    pub fn label(self, now: DateTime<Utc>) -> String {
        match self {
            Look::Running => "running".into(),
            Look::Unhealthy => "unhealthy".into(),
            Look::Starting => "starting".into(),
            Look::Backoff(at) => match at.and_then(|at| countdown(at, now)) {
                Some(left) => format!("backoff {left}"),
                None => "restarting".into(),
            },
            Look::Crashed => "crashed".into(),
            Look::Frozen => "frozen".into(),
            Look::Stopped => "stopped".into(),
            Look::Succeeded => "succeeded".into(),
        }
    }
}

/// A session's look: its own state, its health, and its role's state
/// (a crashed marker waits out the role's backoff or shows it frozen).
pub fn session_look(s: &SessionView, role: Option<&RoleView>) -> Look {
    match s.state {
        SessionState::Running if s.health == Some(HealthState::Unhealthy) => Look::Unhealthy,
        SessionState::Running => Look::Running,
        SessionState::Pending => Look::Starting,
        SessionState::Succeeded => Look::Succeeded,
        SessionState::Crashed => match s.role_state {
            RoleState::Frozen => Look::Frozen,
            RoleState::Backoff => Look::Backoff(s.next_restart_at),
            _ if role.is_some_and(|r| r.restart == RestartPolicy::Never) => Look::Stopped,
            _ => Look::Crashed,
        },
    }
}

/// A role's look and its words: `ready 2/2`, `backoff 3s`, `frozen`.
pub fn role_badge(r: &RoleView, now: DateTime<Utc>) -> (Look, String) {
    let ready = format!("{}/{}", r.running, r.desired);
    match r.state {
        RoleState::Ready => (Look::Running, format!("ready {ready}")),
        RoleState::Progressing => (Look::Starting, format!("starting {ready}")),
        RoleState::Backoff => {
            let look = Look::Backoff(r.next_restart_at);
            (look, look.label(now))
        }
        RoleState::Frozen => (Look::Frozen, "frozen".into()),
        RoleState::Succeeded => (Look::Succeeded, "succeeded".into()),
        RoleState::Failed => (Look::Crashed, "failed".into()),
        RoleState::Stopped => (Look::Stopped, "stopped".into()),
    }
}

/// A team's look and its words: `ready 3/3`, `degraded 2/3`.
pub fn team_badge(t: &TeamView) -> (Look, String) {
    let ready = format!("{}/{}", t.running, t.desired);
    match t.state {
        TeamState::Ready => (Look::Running, format!("ready {ready}")),
        TeamState::Progressing => (Look::Starting, format!("starting {ready}")),
        TeamState::Degraded => (Look::Crashed, format!("degraded {ready}")),
        TeamState::Stopped => (Look::Stopped, "stopped".into()),
    }
}

/// A running shift of a team, in a few words: `shift worker 1/3`.
pub fn shift_text(t: &TeamView) -> Option<String> {
    let s = t
        .shift
        .as_ref()
        .filter(|s| s.state == ShiftState::Running)?;
    Some(format!(
        "shift {} {}/{}",
        s.role.as_deref().unwrap_or("-"),
        s.replaced,
        s.total
    ))
}

/// Whole seconds left until `at`, rounded up: `3s`, `1m05s`; `None` once
/// it has come.
pub fn countdown(at: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
    let ms = (at - now).num_milliseconds();
    if ms <= 0 {
        return None;
    }
    let secs = (ms + 999) / 1000;
    Some(if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        output::short_duration(at - now)
    })
}

/// Deaths per slice as a line of block characters scaled to the busiest
/// slice; `·` for a slice without a death.
pub fn sparkline(cells: &[u32]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = cells.iter().copied().max().unwrap_or(0).max(1);
    cells
        .iter()
        .map(|&n| match n {
            0 => '·',
            n => BARS[((n as usize * BARS.len()).div_ceil(max as usize)).clamp(1, 8) - 1],
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::view::{ExitView, ShiftView, TmuxState, TmuxView};

    pub fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub const NOW: &str = "2025-01-02T12:00:00Z";

    pub fn session(key: &str, uid: u64, state: SessionState) -> SessionView {
        let k: SessionKey = key.parse().unwrap();
        SessionView {
            key: key.into(),
            workspace: k.workspace.clone(),
            team: k.team.clone(),
            role: k.role.clone(),
            slot: k.slot,
            state,
            pane: state.eq(&SessionState::Running).then(|| format!("%{uid}")),
            pid: state
                .eq(&SessionState::Running)
                .then_some(1000 + uid as u32),
            restarts: 0,
            last_restart_at: None,
            created_at: t("2025-01-02T11:57:00Z"),
            started_at: Some(t("2025-01-02T11:57:01Z")),
            exit: None,
            role_state: RoleState::Ready,
            next_restart_at: None,
            frozen_reason: None,
            last_output: vec![],
            tmux_session: None,
            uid,
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

    pub fn crashed(key: &str, uid: u64, role_state: RoleState) -> SessionView {
        let mut s = session(key, uid, SessionState::Crashed);
        s.role_state = role_state;
        s.restarts = 3;
        s.last_restart_at = Some(t("2025-01-02T11:59:58Z"));
        s.exit = Some(ExitView {
            code: Some(3),
            signal: None,
            at: t("2025-01-02T11:59:58Z"),
            reason: "exit 3".into(),
        });
        s.last_output = vec!["starting".into(), "giving up".into()];
        if role_state == RoleState::Backoff {
            s.next_restart_at = Some(t("2025-01-02T12:00:02.500Z"));
        }
        if role_state == RoleState::Frozen {
            s.frozen_reason = Some("5 crashes in 1m, last: exit 3".into());
        }
        s
    }

    pub fn role(key: &str, desired: u32, running: u32, state: RoleState) -> RoleView {
        let parts: Vec<&str> = key.split('/').collect();
        RoleView {
            key: key.into(),
            workspace: parts[0].into(),
            team: parts[1].into(),
            role: parts[2].into(),
            desired,
            running,
            state,
            restarts: 0,
            last_restart_at: None,
            crashes_in_window: 0,
            max_restarts: Some(5),
            window_ms: 600_000,
            next_restart_at: (state == RoleState::Backoff).then(|| t("2025-01-02T12:00:02.500Z")),
            frozen_reason: (state == RoleState::Frozen)
                .then(|| "5 crashes in 1m, last: exit 3".into()),
            frozen_at: None,
            last_exit: None,
            command: vec!["sh".into()],
            restart: RestartPolicy::Always,
        }
    }

    pub fn team(key: &str, desired: u32, running: u32, state: TeamState) -> TeamView {
        let (ws, name) = key.split_once('/').unwrap();
        TeamView {
            key: key.into(),
            workspace: ws.into(),
            team: name.into(),
            roles: 1,
            desired,
            running,
            state,
            applied_at: t("2025-01-02T11:50:00Z"),
            shift: None,
        }
    }

    pub fn event(seq: u64, at: &str, kind: EventKind, key: &str, message: &str) -> EventView {
        EventView {
            seq,
            at: t(at),
            kind,
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn status(state: TmuxState) -> StatusView {
        StatusView {
            daemon: crate::view::DaemonView {
                pid: 4242,
                version: "0.1.0".into(),
                protocol: 3,
                started_at: t("2025-01-02T11:00:00Z"),
                state_dir: "/home/u/.local/share/marvel".into(),
                socket: "/home/u/.local/share/marvel/marvel.sock".into(),
                sessions: 3,
                teams: 1,
                persist_error: None,
                persist_failing_since: None,
                event_log_error: None,
            },
            tmux: TmuxView {
                state,
                version: Some("tmux 3.3a".into()),
                socket: None,
                last_error: None,
                next_retry_at: None,
                consecutive_failures: 0,
            },
            problems: Vec::new(),
        }
    }

    /// A model connected to a daemon that said nothing yet.
    pub fn up() -> Model {
        Model {
            link: Link::Up,
            ..Model::default()
        }
    }

    /// Two teams: `demo/squad` with a ready worker role (2 sessions) and a
    /// role in backoff; `demo/ops` with a frozen role.
    pub fn picture() -> Model {
        let mut m = up();
        m.apply(Fetched::Teams(
            Scope::All,
            vec![
                team("demo/squad", 3, 2, TeamState::Degraded),
                team("demo/ops", 1, 0, TeamState::Degraded),
            ],
        ));
        m.apply(Fetched::Roles(
            Scope::All,
            vec![
                role("demo/squad/worker", 2, 2, RoleState::Ready),
                role("demo/squad/flaky", 1, 0, RoleState::Backoff),
                {
                    let mut cron = role("demo/ops/cron", 1, 0, RoleState::Frozen);
                    cron.restarts = 6;
                    cron.last_restart_at = Some(t("2025-01-02T11:59:58Z"));
                    cron.crashes_in_window = 6;
                    cron.last_exit = crashed("demo/ops/cron-0", 4, RoleState::Frozen).exit;
                    cron
                },
            ],
        ));
        m.apply(Fetched::Sessions(
            Scope::All,
            vec![
                session("demo/squad/worker-1", 2, SessionState::Running),
                session("demo/squad/worker-0", 1, SessionState::Running),
                crashed("demo/squad/flaky-0", 3, RoleState::Backoff),
                crashed("demo/ops/cron-0", 4, RoleState::Frozen),
            ],
        ));
        m.apply(Fetched::Status(Box::new(status(TmuxState::Up))));
        m
    }

    fn ids(rows: &[Row<'_>]) -> Vec<String> {
        rows.iter()
            .map(|r| format!("{}{}", "  ".repeat(r.depth as usize), r.id().key()))
            .collect()
    }

    #[test]
    fn the_tree_is_teams_then_roles_in_manifest_order_then_sessions() {
        let m = picture();
        assert_eq!(
            ids(&m.rows("")),
            [
                "demo/ops",
                "  demo/ops/cron",
                "    demo/ops/cron-0",
                "demo/squad",
                "  demo/squad/worker",
                "    demo/squad/worker-0",
                "    demo/squad/worker-1",
                "  demo/squad/flaky",
                "    demo/squad/flaky-0",
            ]
        );
    }

    #[test]
    fn a_filter_keeps_matches_what_is_under_them_and_what_is_above_them() {
        let m = picture();
        assert_eq!(
            ids(&m.rows("Worker-1")),
            [
                "demo/squad",
                "  demo/squad/worker",
                "    demo/squad/worker-1"
            ]
        );
        let rows = m.rows("flaky");
        assert_eq!(
            ids(&rows),
            ["demo/squad", "  demo/squad/flaky", "    demo/squad/flaky-0"]
        );
        assert_eq!(
            rows.iter().map(|r| (r.hit, r.context)).collect::<Vec<_>>(),
            [(false, true), (true, false), (true, false)]
        );
        assert_eq!(ids(&m.rows("ops")).len(), 3);
        assert!(m.rows("nothing-like-it").is_empty());
    }

    #[test]
    fn sessions_of_a_role_or_team_the_daemon_no_longer_lists_still_show() {
        let mut m = Model::default();
        m.apply(Fetched::Sessions(
            Scope::All,
            vec![session("a/b/gone-0", 9, SessionState::Running)],
        ));
        let rows = m.rows("");
        assert_eq!(ids(&rows), ["a/b", "  a/b/gone", "    a/b/gone-0"]);
        assert!(matches!(rows[1].item, Item::Role { view: None, .. }));
    }

    #[test]
    fn a_session_looks_like_its_state_its_health_and_its_role() {
        let now = t(NOW);
        let mut s = session("a/b/c-0", 1, SessionState::Running);
        assert_eq!(session_look(&s, None), Look::Running);
        s.health = Some(HealthState::Unhealthy);
        assert_eq!(session_look(&s, None), Look::Unhealthy);
        let s = session("a/b/c-0", 1, SessionState::Pending);
        assert_eq!(session_look(&s, None), Look::Starting);
        let s = crashed("a/b/c-0", 1, RoleState::Backoff);
        let look = session_look(&s, None);
        assert_eq!(look.label(now), "backoff 3s");
        assert_eq!(look.label(t("2025-01-02T12:00:02Z")), "backoff 1s");
        assert_eq!(look.label(t("2025-01-02T12:00:03Z")), "restarting");
        let s = crashed("a/b/c-0", 1, RoleState::Frozen);
        assert_eq!(session_look(&s, None), Look::Frozen);
        let s = crashed("a/b/c-0", 1, RoleState::Progressing);
        assert_eq!(session_look(&s, None), Look::Crashed);
        let mut never = role("a/b/c", 1, 0, RoleState::Progressing);
        never.restart = RestartPolicy::Never;
        assert_eq!(session_look(&s, Some(&never)), Look::Stopped);
        let s = session("a/b/c-0", 1, SessionState::Succeeded);
        assert_eq!(session_look(&s, None), Look::Succeeded);
        // Every look has its own symbol, so they read apart without colour.
        let looks = [
            Look::Running,
            Look::Unhealthy,
            Look::Starting,
            Look::Backoff(None),
            Look::Crashed,
            Look::Frozen,
            Look::Stopped,
        ];
        let mut symbols: Vec<char> = looks.iter().map(|l| l.symbol()).collect();
        symbols.dedup();
        assert_eq!(symbols.len(), looks.len());
    }

    #[test]
    fn roles_and_teams_say_how_many_are_ready() {
        let now = t(NOW);
        let r = role("a/b/c", 2, 1, RoleState::Progressing);
        assert_eq!(role_badge(&r, now), (Look::Starting, "starting 1/2".into()));
        let r = role("a/b/c", 2, 0, RoleState::Backoff);
        assert_eq!(role_badge(&r, now).1, "backoff 3s");
        let r = role("a/b/c", 2, 0, RoleState::Frozen);
        assert_eq!(role_badge(&r, now), (Look::Frozen, "frozen".into()));
        let mut tm = team("a/b", 3, 2, TeamState::Degraded);
        assert_eq!(team_badge(&tm), (Look::Crashed, "degraded 2/3".into()));
        assert_eq!(shift_text(&tm), None);
        tm.shift = Some(ShiftView {
            id: 1,
            state: ShiftState::Running,
            roles: vec!["c".into()],
            role: Some("c".into()),
            replaced: 1,
            total: 3,
            started_at: now,
            deadline: now,
            ended_at: None,
            reason: None,
        });
        assert_eq!(shift_text(&tm).as_deref(), Some("shift c 1/3"));
    }

    #[test]
    fn countdowns_round_up_to_the_second() {
        let now = t(NOW);
        let at = |s: &str| t(&format!("2025-01-02T{s}Z"));
        assert_eq!(countdown(at("12:00:00.001"), now).as_deref(), Some("1s"));
        assert_eq!(countdown(at("12:00:01"), now).as_deref(), Some("1s"));
        assert_eq!(countdown(at("12:00:59.5"), now).as_deref(), Some("1m00s"));
        assert_eq!(countdown(at("12:01:05"), now).as_deref(), Some("1m05s"));
        assert_eq!(countdown(at("14:00:00"), now).as_deref(), Some("2h"));
        assert_eq!(countdown(now, now), None);
        assert_eq!(countdown(at("11:59:59"), now), None);
    }

    #[test]
    fn the_screen_ticks_only_while_a_countdown_shows() {
        let m = picture();
        let now = t(NOW);
        // flaky's backoff ends at 12:00:02.500: its number changes in 500 ms.
        assert_eq!(
            m.next_tick(&m.rows(""), now),
            Some(TimeDelta::milliseconds(500))
        );
        assert_eq!(
            m.next_tick(&m.rows(""), t("2025-01-02T12:00:02Z")),
            Some(TimeDelta::milliseconds(500))
        );
        assert_eq!(
            m.next_tick(&m.rows(""), t("2025-01-02T12:00:01.500Z")),
            Some(TimeDelta::milliseconds(1000))
        );
        // Over, or filtered out of sight: no tick.
        assert_eq!(m.next_tick(&m.rows(""), t("2025-01-02T12:00:03Z")), None);
        assert_eq!(m.next_tick(&m.rows("worker"), now), None);
        // tmux's next retry counts down in the header.
        let mut m = m;
        let mut s = status(TmuxState::Down);
        s.tmux.next_retry_at = Some(t("2025-01-02T12:00:00.250Z"));
        m.apply(Fetched::Status(Box::new(s)));
        assert_eq!(
            m.next_tick(&m.rows("worker"), now),
            Some(TimeDelta::milliseconds(250))
        );
    }

    #[test]
    fn counts_are_by_what_sessions_show() {
        let c = picture().counts();
        assert_eq!(
            c,
            Counts {
                teams: 2,
                sessions: 4,
                running: 2,
                backoff: 1,
                frozen: 1,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn a_team_listing_replaces_that_team_only() {
        let mut m = picture();
        m.apply(Fetched::Sessions(
            Scope::Team("demo/squad".into()),
            vec![session("demo/squad/worker-0", 7, SessionState::Pending)],
        ));
        let keys: Vec<(&str, u64)> = m.sessions.iter().map(|s| (s.key.as_str(), s.uid)).collect();
        assert_eq!(keys, [("demo/ops/cron-0", 4), ("demo/squad/worker-0", 7)]);
        // A team that is gone lists nothing: its rows go.
        m.apply(Fetched::Teams(Scope::Team("demo/ops".into()), vec![]));
        m.apply(Fetched::Roles(Scope::Team("demo/ops".into()), vec![]));
        m.apply(Fetched::Sessions(Scope::Team("demo/ops".into()), vec![]));
        assert!(
            m.rows("")
                .iter()
                .all(|r| !r.id().key().starts_with("demo/ops"))
        );
        // Roles keep the daemon's order within their team.
        assert_eq!(
            m.roles.iter().map(|r| r.role.as_str()).collect::<Vec<_>>(),
            ["worker", "flaky"]
        );
    }

    #[test]
    fn team_of_any_key() {
        assert_eq!(team_of("demo/squad/worker-0"), Some("demo/squad"));
        assert_eq!(team_of("demo/squad/worker"), Some("demo/squad"));
        assert_eq!(team_of("demo/squad"), Some("demo/squad"));
        assert_eq!(team_of(""), None);
        assert_eq!(team_of("demo"), None);
        assert_eq!(team_of("/x"), None);
        assert_eq!(team_of("demo//x"), None);
    }

    fn ev(kind: EventKind, key: &str) -> EventView {
        event(1, NOW, kind, key, "")
    }

    fn needs(evs: &[EventView]) -> Vec<Fetch> {
        let mut n = Needs::default();
        for e in evs {
            n.event(e);
        }
        n.fetches()
    }

    #[test]
    fn an_event_asks_again_for_its_team_only() {
        let squad = Scope::Team("demo/squad".into());
        assert_eq!(
            needs(&[ev(EventKind::Crashed, "demo/squad/worker-0")]),
            [Fetch::Views(squad.clone(), Parts::ALL)]
        );
        assert_eq!(
            needs(&[
                ev(EventKind::Backoff, "demo/squad/worker"),
                ev(EventKind::Created, "demo/squad/worker-0"),
                ev(EventKind::Started, "demo/squad/worker-0"),
            ]),
            [Fetch::Views(squad.clone(), Parts::ALL)]
        );
        assert_eq!(
            needs(&[ev(EventKind::Unhealthy, "demo/squad/worker-0")]),
            [Fetch::Views(squad, Parts::SESSIONS)]
        );
        assert_eq!(needs(&[ev(EventKind::Warning, "")]), [Fetch::Status]);
        assert_eq!(
            needs(&[ev(EventKind::TmuxDown, "")]),
            [Fetch::Views(Scope::All, Parts::ALL), Fetch::Status]
        );
        assert_eq!(needs(&[]), []);
    }

    #[test]
    fn many_teams_at_once_become_one_listing() {
        let evs: Vec<EventView> = (0..=TEAMS_AT_ONCE)
            .map(|i| ev(EventKind::Crashed, &format!("w/t{i}/r-0")))
            .collect();
        assert_eq!(needs(&evs), [Fetch::Views(Scope::All, Parts::ALL)]);
        assert_eq!(needs(&evs[..TEAMS_AT_ONCE]).len(), TEAMS_AT_ONCE);
        let mut n = Needs::everything();
        n.event(&ev(EventKind::Crashed, "w/t/r-0"));
        assert_eq!(
            n.fetches(),
            [
                Fetch::Views(Scope::All, Parts::ALL),
                Fetch::Status,
                Fetch::Crashes
            ]
        );
        let mut n = Needs::sessions();
        n.merge(Needs::default());
        assert_eq!(n.fetches(), [Fetch::Views(Scope::All, Parts::SESSIONS)]);
    }

    #[test]
    fn scopes_become_the_daemons_filters() {
        assert_eq!(Scope::All.filter(), Filter::default());
        assert_eq!(
            Scope::Team("demo/squad".into()).filter(),
            Filter {
                workspace: Some("demo".into()),
                team: Some("squad".into()),
                ..Filter::default()
            }
        );
    }

    #[test]
    fn events_are_kept_once_and_bounded() {
        let mut m = Model::default();
        m.backlog(vec![
            event(5, NOW, EventKind::Created, "a/b/c-0", ""),
            event(6, NOW, EventKind::Started, "a/b/c-0", ""),
        ]);
        assert!(!m.event(event(6, NOW, EventKind::Started, "a/b/c-0", "")));
        assert!(m.event(event(7, NOW, EventKind::Crashed, "a/b/c-0", "")));
        assert_eq!(m.events.len(), 3);
        for seq in 8..8 + EVENTS_KEPT as u64 {
            m.event(event(seq, NOW, EventKind::Warning, "", ""));
        }
        assert_eq!(m.events.len(), EVENTS_KEPT);
        assert_eq!(m.events.front().unwrap().seq, 8);
        // A daemon that starts its numbers over is followed after its backlog.
        m.backlog(vec![event(1, NOW, EventKind::Warning, "", "")]);
        assert!(m.event(event(2, NOW, EventKind::Warning, "", "")));
    }

    #[test]
    fn deaths_fill_the_slices_of_the_roles_window() {
        let mut m = Model::default();
        let mut r = role("a/b/c", 1, 0, RoleState::Backoff);
        r.window_ms = 80_000; // 8 slices of 10 s
        let now = t(NOW);
        m.apply(Fetched::Crashes(vec![
            event(1, "2025-01-02T11:58:00Z", EventKind::Crashed, "a/b/c-0", ""),
            event(2, "2025-01-02T11:58:45Z", EventKind::Crashed, "a/b/c-0", ""),
            event(3, "2025-01-02T11:59:55Z", EventKind::Crashed, "a/b/c-1", ""),
            event(4, "2025-01-02T11:59:56Z", EventKind::Frozen, "a/b/c", ""),
            event(
                5,
                "2025-01-02T11:59:57Z",
                EventKind::Crashed,
                "a/b/other-0",
                "",
            ),
        ]));
        // 11:58:00 is before the window; 11:58:45 in its first slice.
        assert_eq!(m.deaths(&r, now), [1, 0, 0, 0, 0, 0, 0, 1]);
        m.event(event(
            6,
            "2025-01-02T12:00:00Z",
            EventKind::Crashed,
            "a/b/c-0",
            "",
        ));
        assert_eq!(m.deaths(&r, now), [1, 0, 0, 0, 0, 0, 0, 2]);
        // A death read in the history and then seen on the stream counts once.
        m.event(event(
            3,
            "2025-01-02T11:59:55Z",
            EventKind::Crashed,
            "a/b/c-1",
            "",
        ));
        assert_eq!(m.deaths(&r, now), [1, 0, 0, 0, 0, 0, 0, 2]);
        // A refresh of the history replaces it.
        m.apply(Fetched::Crashes(vec![]));
        assert_eq!(m.deaths(&r, now), [0; SPARK_CELLS]);
    }

    #[test]
    fn a_sparkline_scales_to_the_busiest_slice() {
        assert_eq!(sparkline(&[0, 0, 0, 0, 0, 0, 0, 0]), "········");
        assert_eq!(sparkline(&[0, 1, 0, 0, 0, 0, 0, 8]), "·▁·····█");
        assert_eq!(sparkline(&[1, 2, 3, 4]), "▂▄▆█");
        assert_eq!(sparkline(&[1]), "█");
    }

    #[test]
    fn a_row_stands_for_a_session() {
        let m = picture();
        let worker = RowId::Role("demo/squad/worker".into());
        assert_eq!(m.target(&worker).unwrap().key, "demo/squad/worker-0");
        let flaky = RowId::Role("demo/squad/flaky".into());
        assert_eq!(m.target(&flaky).unwrap().key, "demo/squad/flaky-0");
        assert_eq!(
            m.target(&RowId::Team("demo/squad".into())).unwrap().key,
            "demo/squad/worker-0"
        );
        // A team whose only session is a marker has nothing live to stand for.
        assert_eq!(m.target(&RowId::Team("demo/ops".into())), None);
        let gone = RowId::Session {
            key: "demo/squad/worker-0".into(),
            uid: 99,
        };
        assert_eq!(m.target(&gone), None);
        assert_eq!(gone.role().as_deref(), Some("demo/squad/worker"));
        assert_eq!(RowId::Team("a/b".into()).role(), None);
    }
}
