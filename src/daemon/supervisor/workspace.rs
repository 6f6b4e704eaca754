//! The tmux workspace: one tmux session per team, one window per marvel
//! session (or, in a tiled role, one pane of the role's window), and a
//! restart in the same pane. This module decides where each new pane goes
//! and what panes show: a window's status next to its name, and in the
//! pane of a program that ended (kept for its slot, `World::kept`), a line
//! from marvel on what happened and what comes next, drawn by the shim that
//! stays there. Pure bookkeeping: the tmux calls are jobs in `tmux.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::domain::key::{RoleKey, SessionKey, TeamKey};
use crate::domain::spec::{Layout, RoleSpec};
use crate::domain::state::{Exit, ExitDetail, Session, SessionState, Time, World};
use crate::substrate::{Decoration, Place, WindowRef};

/// Window statuses go to tmux in at most one call per [`STATUS_EVERY`],
/// after a burst of up to [`STATUS_BURST`]: what a person does shows at
/// once, and a stream of changes (a crash loop, several per crash) costs
/// one tmux call a second, however fast its programs die. Every tmux
/// client leaves the server's heap a little more fragmented between the
/// history lines that a crash loop adds: at a few calls per crash, its
/// memory grew for good by hundreds of KB a minute.
pub(super) const STATUS_EVERY: Duration = Duration::from_secs(1);
pub(super) const STATUS_BURST: u32 = 10;

/// A restarted program's window says `↻` until the program has stayed up
/// this long: a crash loop of quick runs keeps one status throughout
/// instead of three per crash (`↻`, `…`, `✓`).
pub(super) const SETTLE: Duration = Duration::from_secs(1);

/// A pane whose session was stopped in this step: a replacement of the
/// same slot in the same step takes it over, else it is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Vacated {
    pub pane: String,
    pub window: String,
    pub session: String,
}

/// Where things are in tmux, as far as the supervisor knows.
#[derive(Debug, Default)]
pub(super) struct Workspace {
    /// Each team's tmux session.
    pub teams: BTreeMap<TeamKey, String>,
    /// Every session name the server had at the last listing, anyone's.
    pub taken: BTreeSet<String>,
    /// Teams whose session is being made: their other spawns wait for it.
    pub creating: BTreeSet<TeamKey>,
    /// Tiled roles whose window is being made: their other spawns wait.
    pub tiling: BTreeSet<RoleKey>,
    pub vacated: BTreeMap<SessionKey, Vacated>,
    /// Spawns tmux refused because the workspace was not as believed
    /// (a session or pane gone, a name taken): how often, by uid.
    pub attempts: BTreeMap<u64, u32>,
    /// Spawns to place the plainest way, in a window of their own at the
    /// end of the team's session: tmux refused a placement beside or after
    /// another window (gone meanwhile, or with no room left).
    pub plain: BTreeSet<u64>,
    /// What each window's status was last set to, by window id.
    pub shown: BTreeMap<String, String>,
    /// What each kept pane's shim was last told to show, by uid.
    pub lines: BTreeMap<u64, String>,
    /// Roles whose panes may show something else now.
    pub dirty: BTreeSet<RoleKey>,
    /// Window statuses are being set: changes meanwhile wait for it.
    pub decorating: bool,
    /// Until when the window status calls sent so far are paid for at
    /// one per [`STATUS_EVERY`] (monotonic).
    pub status_paced: Duration,
    /// Roles whose statuses change by themselves, and when: a restarted
    /// program has stayed up for [`SETTLE`].
    pub settling: BTreeMap<RoleKey, Time>,
    /// The tmux server's pid, from the last listing.
    pub server_pid: Option<u32>,
    /// New windows asked for and not made yet, by uid: their slot and
    /// name, so that windows asked for after them go after them.
    pub placing: BTreeMap<u64, (SessionKey, String)>,
    /// Spawns whose shim reported its program's end and can run the
    /// slot's next program itself, should its pane be kept.
    pub rerunnable: BTreeSet<u64>,
}

/// Tries of a spawn that failed on a stale picture of the workspace,
/// before it counts as refused.
pub(super) const PLACEMENT_TRIES: u32 = 4;

impl Workspace {
    /// Everything about tmux is forgotten (its server went away).
    pub fn lost(&mut self) {
        self.teams.clear();
        self.taken.clear();
        self.creating.clear();
        self.tiling.clear();
        self.vacated.clear();
        self.shown.clear();
        self.lines.clear();
        self.placing.clear();
    }

    /// The name a team's tmux session gets: the team's, or workspace and
    /// team outside the default workspace, with a number added when
    /// someone else has that name already.
    pub fn session_name(&self, team: &TeamKey) -> String {
        let base = base_session_name(team);
        let used = |n: &str| self.taken.contains(n) || self.teams.values().any(|s| s == n);
        if !used(&base) {
            return base;
        }
        (2..)
            .map(|i| format!("{base}-{i}"))
            .find(|n| !used(n))
            .expect("some number is free")
    }

    /// When window statuses may be sent next: while the calls sent are
    /// paid for no further ahead than a burst.
    pub fn status_due(&self) -> Duration {
        self.status_paced
            .saturating_sub(STATUS_EVERY * (STATUS_BURST - 1))
    }

    /// Window statuses are sent at `now`.
    pub fn status_sending(&mut self, now: Duration) {
        self.status_paced = self.status_paced.max(now) + STATUS_EVERY;
    }
}

/// The name a team's tmux session gets when nobody else has it: the
/// team's, or workspace and team outside the default workspace.
pub(super) fn base_session_name(team: &TeamKey) -> String {
    if team.workspace == crate::domain::spec::DEFAULT_WORKSPACE {
        team.team.clone()
    } else {
        format!("{}-{}", team.workspace, team.team)
    }
}

/// The name of the window a session's pane is in: the session's own in the
/// usual layout, the role's when its sessions are tiled in one window.
pub(super) fn window_name(key: &SessionKey, spec: &RoleSpec) -> String {
    match spec.layout {
        Layout::Windows => format!("{}-{}", key.role, key.slot),
        Layout::Tiled => key.role.clone(),
    }
}

/// What the status line says of `team`: marvel, the team and workspace.
pub(super) fn status_left(team: &TeamKey) -> String {
    format!("marvel {} ", team)
}

/// Where the pane of `s` goes, and in which tmux session, or `None` when it
/// has to wait for its team's session or its role's window to be made.
pub(super) fn place(
    ws: &mut Workspace,
    world: &World,
    s: &Session,
    spec: &RoleSpec,
) -> Option<(Place, String)> {
    let key = &s.key;
    let role = key.role();
    let team = key.team();
    // Again in the slot's own pane: a replacement takes over the pane of
    // the session it replaces at once, or the pane its slot's last program
    // ended in.
    if let Some(v) = ws.vacated.remove(key) {
        return Some((Place::Respawn { pane: v.pane }, v.session));
    }
    if let Some(k) = world.kept.get(key) {
        return Some((
            Place::Respawn {
                pane: k.pane.clone(),
            },
            k.tmux_session.clone(),
        ));
    }
    let others: Vec<&Session> = world
        .sessions
        .values()
        .filter(|o| o.state.is_live() && o.key.is_of(&role) && o.uid != s.uid)
        .collect();
    let plain = ws.plain.contains(&s.uid);
    let split = !plain;
    // A successor starts beside the session it is to replace.
    if split && let Some(o) = others.iter().find(|o| o.key == *key && o.window.is_some()) {
        let window = o.window.clone().expect("checked above");
        let tiled = spec.layout == Layout::Tiled;
        return Some((Place::Split { window, tiled }, o.tmux_session.clone()));
    }
    if spec.layout == Layout::Tiled && split {
        let window = others
            .iter()
            .filter_map(|o| o.window.clone().map(|w| (w, o.tmux_session.clone())))
            .chain(
                world
                    .kept
                    .iter()
                    .filter(|(k, _)| k.is_of(&role))
                    .map(|(_, k)| (k.window.clone(), k.tmux_session.clone())),
            )
            .next();
        match window {
            Some((window, session)) => {
                return Some((
                    Place::Split {
                        window,
                        tiled: true,
                    },
                    session,
                ));
            }
            None if ws.tiling.contains(&role) => return None,
            None => {
                ws.tiling.insert(role.clone());
            }
        }
    }
    match ws.teams.get(&team) {
        Some(session) => {
            let after = if plain {
                None
            } else {
                window_before(world, ws, s)
            };
            let place = Place::NewWindow {
                session: session.clone(),
                after,
            };
            let session = session.clone();
            ws.placing
                .insert(s.uid, (key.clone(), window_name(key, spec)));
            Some((place, session))
        }
        None if ws.creating.contains(&team) => {
            ws.tiling.remove(&role);
            None
        }
        None => {
            let session = ws.session_name(&team);
            ws.creating.insert(team.clone());
            ws.placing
                .insert(s.uid, (key.clone(), window_name(key, spec)));
            let place = Place::NewSession {
                session: session.clone(),
                team: team.to_string(),
                status_left: status_left(&team),
            };
            Some((place, session))
        }
    }
}

/// The window that a new window for `s` goes after, so that windows stay
/// in role and slot order: the window of the nearest earlier slot, made or
/// asked for. Run for every spawn of a bring-up over every session of the
/// team, so it allocates nothing per session looked at.
fn window_before(world: &World, ws: &Workspace, s: &Session) -> Option<WindowRef> {
    let record = world.teams.get(&s.key.team())?;
    let order = |k: &SessionKey| {
        let role = record
            .spec
            .roles
            .iter()
            .position(|r| r.name.as_str() == k.role);
        (role.unwrap_or(usize::MAX), k.slot)
    };
    let me = order(&s.key);
    let live = world
        .sessions
        .values()
        .filter(|o| o.state.is_live() && o.key.is_same_team(&s.key) && o.uid != s.uid)
        .filter_map(|o| Some((order(&o.key), false, o.window.as_ref()?)));
    let kept = world
        .kept
        .iter()
        .filter(|(k, _)| k.is_same_team(&s.key))
        .map(|(k, p)| (order(k), false, &p.window));
    let placing = ws
        .placing
        .iter()
        .filter(|(uid, (k, _))| **uid != s.uid && k.is_same_team(&s.key))
        .map(|(_, (k, name))| (order(k), true, name));
    live.chain(kept)
        .chain(placing)
        .filter(|(o, _, _)| *o < me)
        .max_by_key(|(o, _, _)| *o)
        .map(|(_, named, w)| match named {
            true => WindowRef::Name(w.clone()),
            false => WindowRef::Id(w.clone()),
        })
}

/// What the window of a session says next to its name at `now`.
fn live_status(s: &Session, unhealthy: bool, now: Time) -> &'static str {
    let restarting = s.restart.is_some() && settled_at(s).is_none_or(|t| now < t);
    match (s.state, unhealthy) {
        (SessionState::Pending, _) if restarting => "↻",
        (SessionState::Pending, _) => "…",
        (_, true) => "!",
        _ if restarting => "↻",
        _ => "✓",
    }
}

/// When a session's program will have stayed up for [`SETTLE`].
fn settled_at(s: &Session) -> Option<Time> {
    s.started_at.map(|t| crate::domain::state::after(t, SETTLE))
}

/// When the status of a window of `role` changes by itself next, after
/// `now`: a restarted program will have stayed up long enough.
pub(super) fn settles_at(world: &World, role: &RoleKey, now: Time) -> Option<Time> {
    world
        .sessions
        .values()
        .filter(|s| s.key.is_of(role) && s.state.is_live() && s.restart.is_some())
        .filter_map(settled_at)
        .filter(|t| *t > now)
        .min()
}

/// How much a window status says something is wrong, to show the worst
/// of a window's panes.
fn rank(status: &str) -> u8 {
    match status.chars().next() {
        Some('❄') => 6,
        Some('✗') => 5,
        Some('↻') => 4,
        Some('!') => 3,
        Some('…') => 2,
        Some('■') => 1,
        _ => 0,
    }
}

/// `12:01:03`, local to the daemon.
fn clock(t: Time, offset: chrono::FixedOffset) -> String {
    t.with_timezone(&offset).format("%H:%M:%S").to_string()
}

/// What a dead pane of `key` shows, and its window's status, given how
/// its program ended and where its role stands.
fn dead_decoration(
    world: &World,
    key: &SessionKey,
    exit: Option<&Exit>,
    started_at: Option<Time>,
    offset: chrono::FixedOffset,
) -> (String, String) {
    let role = key.role();
    let history = world.roles.get(&role);
    let spec = world.role_spec(&role);
    let what = match exit {
        Some(e) => {
            let ran = started_at
                .filter(|s| e.at >= *s)
                .map(|s| format!(" after {}", crate::domain::world::human_span(e.at - s)))
                .unwrap_or_default();
            format!("{}{ran}", e.reason())
        }
        None => "the program ended".to_string(),
    };
    if let Some(f) = history.and_then(|h| h.frozen.as_ref()) {
        return (
            format!("frozen: {} — marvel reset role {role}", f.reason),
            "❄".into(),
        );
    }
    let done = history.is_some_and(|h| h.done_slots.contains(&key.slot));
    if done {
        let how = spec.map_or(String::new(), |s| format!(" ({:?})", s.restart));
        let status = if exit.is_some_and(Exit::is_success) {
            "■"
        } else {
            "✗"
        };
        return (format!("ended: {what} — not restarted{how}"), status.into());
    }
    // The window's status stays short (the status bar is shared by every
    // window); the pane's line says when.
    let line = match history.and_then(|h| h.next_restart_at) {
        Some(at) => format!("crashed: {what} — restart at {}", clock(at, offset)),
        None => format!("crashed: {what} — restarting"),
    };
    (line, "↻".into())
}

/// What the windows of `roles` show now, by window id: each window the
/// status of its worst pane (a tiled role's window has several), live or
/// kept.
pub(super) fn window_statuses(
    world: &World,
    roles: &BTreeSet<RoleKey>,
    offset: chrono::FixedOffset,
    now: Time,
) -> BTreeMap<String, Decoration> {
    let mut windows = BTreeMap::new();
    let mut status = |window: &String, text: String| {
        let d = windows.entry(window.clone()).or_insert_with(|| Decoration {
            window: window.clone(),
            status: String::new(),
        });
        if d.status.is_empty() || rank(&text) > rank(&d.status) {
            d.status = text;
        }
    };
    for role in roles {
        let Some(spec) = world.role_spec(role) else {
            continue;
        };
        for s in world.sessions.values().filter(|s| s.key.is_of(role)) {
            let Some(window) = &s.window else {
                continue;
            };
            if s.state.is_live() {
                let unhealthy = crate::domain::health::check(s, spec, world.watching_since, now)
                    .is_some_and(|c| c.state == crate::domain::health::HealthState::Unhealthy);
                status(window, live_status(s, unhealthy, now).into());
            }
        }
        for (key, k) in world.kept.iter().filter(|(k, _)| k.is_of(role)) {
            let (_, text) = dead_decoration(world, key, k.exit.as_ref(), k.started_at, offset);
            status(&k.window, text);
        }
    }
    windows
}

/// The line each kept pane of `roles` shows now, by the uid of its shim.
/// Cheap: it looks at kept panes only, never at every session.
pub(super) fn kept_lines(
    world: &World,
    roles: &BTreeSet<RoleKey>,
    offset: chrono::FixedOffset,
) -> BTreeMap<u64, String> {
    let mut lines = BTreeMap::new();
    for role in roles.iter().filter(|r| world.role_spec(r).is_some()) {
        for (key, k) in world.kept.iter().filter(|(k, _)| k.is_of(role)) {
            let (line, _) = dead_decoration(world, key, k.exit.as_ref(), k.started_at, offset);
            lines.insert(k.uid, line);
        }
    }
    lines
}

/// The line a kept pane of `key` shows now.
pub(super) fn kept_line(
    world: &World,
    key: &SessionKey,
    offset: chrono::FixedOffset,
) -> Option<String> {
    let k = world.kept.get(key)?;
    Some(dead_decoration(world, key, k.exit.as_ref(), k.started_at, offset).0)
}

/// Whether a death leaves its pane for the slot: the program ended and
/// its pane stays (marvel's panes keep a dead program's screen), unlike a
/// pane destroyed from outside or lost with its server.
pub(super) fn keeps_pane(s: &Session, exit: &Exit) -> bool {
    s.window.is_some()
        && s.pane.is_some()
        && matches!(
            exit.detail,
            ExitDetail::Program | ExitDetail::StartFailed(_) | ExitDetail::Unhealthy(_)
        )
}
