//! The daemon: one loop that owns all state. Requests, shim reports and
//! timer wake-ups arrive over one channel; the loop updates the world,
//! persists it, plans, and carries the plan out through the substrate.

pub mod events;
pub mod exec;
pub mod server;
pub mod store;
pub mod views;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::client::{Target, open_lock};
use crate::domain::event::{Event, EventKind};
use crate::domain::key::{self, LookupError, RoleKey, SessionKey, TeamKey};
use crate::domain::reconcile::{self, Action, RoleChange};
use crate::domain::state::{Exit, ExitDetail, Session, SessionState, Time, World};
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::proto::{Kind, PROTOCOL_VERSION, Request, Response, RoleChangeView, ShimReport};
use crate::substrate::{Observation, Substrate};
use crate::view::{DaemonView, StatusView};

use exec::TmuxHealth;
use server::Incoming;

/// Tunables, read from the environment so tests can shrink them.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often the safety-net sweep lists panes (`MARVEL_SWEEP_MS`).
    pub sweep: Duration,
    /// Deadline of every tmux call (`MARVEL_TMUX_TIMEOUT_MS`).
    pub tmux_timeout: Duration,
    /// Retry pacing while tmux is unavailable
    /// (`MARVEL_TMUX_RETRY_MS`, `MARVEL_TMUX_RETRY_MAX_MS`).
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub retry_jitter: f64,
}

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

impl Config {
    pub fn from_env() -> Config {
        Config {
            sweep: env_ms("MARVEL_SWEEP_MS", 5_000),
            tmux_timeout: env_ms("MARVEL_TMUX_TIMEOUT_MS", 3_000),
            retry_base: env_ms("MARVEL_TMUX_RETRY_MS", 500),
            retry_max: env_ms("MARVEL_TMUX_RETRY_MAX_MS", 30_000),
            retry_jitter: 0.2,
        }
    }
}

/// Lines of a dead pane kept on its marker.
const MARKER_LINES: usize = 20;

/// `marvel daemon run`: serves until asked to stop. One daemon per state
/// directory, enforced by an exclusive lock held for the daemon's life.
pub fn run_foreground(t: &Target) -> Result<()> {
    let paths = &t.paths;
    paths.ensure()?;
    let lock_path = paths.lock();
    let mut lock = open_lock(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&lock_path).unwrap_or_default();
            return Err(Error::refused(
                format!(
                    "a daemon already runs for {} (pid {})",
                    paths.root.display(),
                    pid.trim()
                ),
                Some("use `marvel daemon stop` first".into()),
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, &e)),
    }
    {
        use std::io::{Seek, Write};
        let _ = lock.set_len(0);
        let _ = lock.seek(std::io::SeekFrom::Start(0));
        let _ = write!(lock, "{}", std::process::id());
    }
    // We hold the lock, so a socket file left here belongs to a dead daemon.
    let socket = paths.socket();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| Error::io(&socket, &e))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(&socket, &e))?;
    // Panes without a `cwd` start in the home directory, not wherever the
    // first command that started the daemon happened to run.
    if let Some(home) = std::env::var_os("HOME") {
        let _ = std::env::set_current_dir(home);
    }

    let cfg = Config::from_env();
    let sub = crate::substrate::tmux::Tmux::new(t.tmux_socket.clone(), cfg.tmux_timeout);
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("marvel-accept".into())
        .spawn(move || server::serve(listener, tx))
        .map_err(|e| Error::other(format!("cannot start the socket thread: {e}")))?;
    let mut daemon = Daemon::new(paths.clone(), t.tmux_socket.clone(), sub, cfg);
    daemon.restore();
    daemon.run(rx);
    let _ = std::fs::remove_file(&socket);
    drop(lock);
    Ok(())
}

pub struct Daemon<S: Substrate> {
    pub world: World,
    sub: S,
    paths: Paths,
    store: store::Store,
    events: events::EventLog,
    tmux: TmuxHealth,
    tmux_socket: Option<String>,
    cfg: Config,
    started_at: Time,
    next_sweep: Instant,
    wake_at: Option<Time>,
    dirty: bool,
    stopping: bool,
}

impl<S: Substrate> Daemon<S> {
    pub fn new(paths: Paths, tmux_socket: Option<String>, sub: S, cfg: Config) -> Daemon<S> {
        Daemon {
            world: World::default(),
            store: store::Store::new(paths.state()),
            events: events::EventLog::open(paths.events()),
            tmux: TmuxHealth::default(),
            tmux_socket,
            sub,
            paths,
            started_at: Utc::now(),
            next_sweep: Instant::now(),
            wake_at: None,
            dirty: false,
            stopping: false,
            cfg,
        }
    }

    fn log(&self, msg: &str) {
        eprintln!(
            "{} marvel-daemon[{}]: {msg}",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            std::process::id()
        );
    }

    fn emit(&mut self, ev: Event) {
        self.events.push(ev);
    }

    fn emit_all(&mut self, evs: Vec<Event>) {
        for e in evs {
            self.emit(e);
        }
    }

    /// Loads the persisted world, applies deaths recorded while no daemon
    /// ran, and re-adopts the panes that are still alive.
    pub fn restore(&mut self) {
        self.log(&format!("starting; state in {}", self.paths.root.display()));
        match self.store.load() {
            store::Loaded::Fresh => {}
            store::Loaded::Restored(w) => self.world = w,
            store::Loaded::MovedAside { moved_to, error } => {
                let msg = format!(
                    "state file {} could not be read ({error}); moved it to {} and started empty",
                    self.store.path().display(),
                    moved_to.display()
                );
                self.log(&msg);
                self.emit(Event::new(Utc::now(), EventKind::Warning, "", msg));
            }
        }
        let now = Utc::now();
        self.tmux_probe(now);
        // Spawns that never got a pane were interrupted: forget them.
        let orphans: Vec<u64> = self
            .world
            .sessions
            .values()
            .filter(|s| s.state.is_live() && s.pane.is_none())
            .map(|s| s.uid)
            .collect();
        for uid in orphans {
            self.world.spawn_failed(uid);
        }
        // What the shims wrote while we were away.
        let live: Vec<u64> = self.live_uids();
        for uid in live {
            match exec::read_exit_record(&self.paths, uid) {
                Some(ShimReport::Exited {
                    code,
                    signal,
                    at,
                    hangup,
                    ..
                }) => {
                    let exit = exec::exit_from_report(code, signal, at, hangup);
                    let lines = exec::log_tail(&self.paths, uid, MARKER_LINES);
                    let evs = self.world.on_exit(uid, exit, at, exec::jitter());
                    self.world.set_last_output(uid, lines);
                    self.emit_all(evs);
                    exec::remove_exit_record(&self.paths, uid);
                }
                Some(ShimReport::Started { pid, at, .. }) => {
                    if let Some(ev) = self.world.started(uid, pid, at) {
                        self.emit(ev);
                    }
                }
                None => {}
            }
        }
        match self.sub.list() {
            Ok(obs) => {
                self.tmux.success();
                let adopted = self.observe(obs, now);
                if adopted > 0 {
                    self.emit(Event::new(
                        now,
                        EventKind::Adopted,
                        "",
                        format!("re-adopted {adopted} running panes"),
                    ));
                }
            }
            Err(e) => self.tmux_failure(e.to_string(), now),
        }
        self.dirty = true;
        self.persist();
    }

    fn live_uids(&self) -> Vec<u64> {
        self.world
            .sessions
            .values()
            .filter(|s| s.state.is_live())
            .map(|s| s.uid)
            .collect()
    }

    /// Serves until `Stop` or until every sender is gone.
    pub fn run(&mut self, rx: Receiver<Incoming>) {
        self.reconcile();
        while !self.stopping {
            let timeout = self.next_timeout();
            match rx.recv_timeout(timeout) {
                Ok(inc) => self.handle(inc),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Utc::now();
            if Instant::now() >= self.next_sweep {
                self.sweep(now);
            }
            if self.tmux.retry_due(now) {
                self.tmux_probe(now);
            }
            self.reconcile();
            self.persist();
        }
        self.log("stopped; panes keep running");
    }

    fn next_timeout(&self) -> Duration {
        let now = Utc::now();
        let mut t = self.next_sweep.saturating_duration_since(Instant::now());
        for at in [self.wake_at, self.tmux.next_retry_at]
            .into_iter()
            .flatten()
        {
            t = t.min((at - now).to_std().unwrap_or(Duration::ZERO));
        }
        t
    }

    fn persist(&mut self) {
        if !self.dirty {
            return;
        }
        match self.store.save(&self.world) {
            Ok(()) => self.dirty = false,
            Err(e) => self.log(&format!("cannot save state: {e}")),
        }
    }

    /// Plans and executes until the plan is empty (bounded).
    pub fn reconcile(&mut self) {
        for _ in 0..32 {
            let now = Utc::now();
            let plan = reconcile::plan(&self.world, now);
            self.wake_at = plan.wake_at;
            let mut progressed = false;
            let mut spawns = Vec::new();
            for action in plan.actions {
                match action {
                    Action::Spawn { role, slot } => spawns.push((role, slot)),
                    Action::Stop { uid, reason } => {
                        self.stop_session(uid, reason.as_str(), EventKind::Stopped, now);
                        progressed = true;
                    }
                    Action::ClearMarker { role } => {
                        self.world.clear_marker(&role);
                        progressed = true;
                    }
                    Action::Forgive { role } => {
                        if let Some(ev) = self.world.forgive(&role, now) {
                            self.emit(ev);
                        }
                        progressed = true;
                    }
                }
            }
            if !spawns.is_empty() {
                if self.tmux.is_up() {
                    self.spawn(spawns, now);
                    progressed = true;
                } else if let Some(at) = self.tmux.next_retry_at {
                    self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
                }
            }
            if progressed {
                self.dirty = true;
            } else {
                return;
            }
        }
    }

    fn spawn(&mut self, batch: Vec<(RoleKey, u32)>, now: Time) {
        let mut uids = Vec::new();
        let mut reqs = Vec::new();
        for (role, slot) in batch {
            let Some(spec) = self.world.role_spec(&role).cloned() else {
                continue;
            };
            let uid = self.world.begin_spawn(&role, slot, now);
            let session = self.world.sessions[&uid].clone();
            reqs.push(exec::spawn_request(
                &self.paths,
                self.tmux_socket.as_deref(),
                &session,
                &spec,
            ));
            uids.push(uid);
        }
        let results = self.sub.spawn_many(&reqs);
        for (uid, result) in uids.into_iter().zip(results) {
            match result {
                Ok(sp) => {
                    let key = self.world.sessions[&uid].key.clone();
                    self.world.spawned(uid, sp.pane.clone(), sp.pane_pid);
                    self.emit(Event::new(
                        now,
                        EventKind::Created,
                        &key,
                        format!("pane {}", sp.pane),
                    ));
                }
                Err(e) => {
                    if let Some(s) = self.world.spawn_failed(uid) {
                        self.log(&format!("spawn of {} failed: {e}", s.key));
                    }
                    self.tmux_failure(e.to_string(), now);
                }
            }
        }
    }

    /// Stops a live session on request: its pane is destroyed and it is
    /// forgotten without any charge to its role.
    fn stop_session(&mut self, uid: u64, why: &str, kind: EventKind, now: Time) {
        let Some(s) = self.world.stop(uid) else {
            return;
        };
        if let Some(pane) = &s.pane
            && let Err(e) = self.sub.kill(pane)
        {
            // The sweep removes the pane later if it is still there.
            self.log(&format!("cannot kill pane {pane} of {}: {e}", s.key));
        }
        exec::remove_exit_record(&self.paths, uid);
        self.emit(Event::new(now, kind, &s.key, why.to_string()));
    }

    /// Compares a listing with the live sessions: records the deaths of
    /// panes that are gone and removes our own panes nobody owns any more.
    /// Returns how many live sessions were confirmed.
    fn observe(&mut self, obs: Observation, now: Time) -> usize {
        let panes = match obs {
            Observation::NoServer => {
                if !self.live_uids().is_empty() {
                    self.tmux_lost(now);
                }
                return 0;
            }
            Observation::Panes(p) => p,
        };
        let owner = exec::owner_tag(&self.paths);
        let mut confirmed = 0;
        for uid in self.live_uids() {
            let s = &self.world.sessions[&uid];
            let Some(pane) = s.pane.clone() else { continue };
            let found = panes
                .iter()
                .find(|p| p.pane == pane && Some(p.pane_pid) == s.pane_pid && !p.dead);
            if found.is_some() {
                confirmed += 1;
                continue;
            }
            // Gone. Prefer what the shim recorded; else the pane vanished.
            let exit = match exec::read_exit_record(&self.paths, uid) {
                Some(ShimReport::Exited {
                    code,
                    signal,
                    at,
                    hangup,
                    ..
                }) => exec::exit_from_report(code, signal, at, hangup),
                _ => Exit::detail(ExitDetail::PaneVanished, now),
            };
            self.record_death(uid, exit, now, Vec::new());
        }
        let ours: Vec<String> = panes
            .iter()
            .filter(|p| {
                p.owner == owner
                    && self
                        .world
                        .session_by_pane(&p.pane)
                        .is_none_or(|s| !s.state.is_live())
            })
            .map(|p| p.pane.clone())
            .collect();
        for pane in ours {
            self.log(&format!("removing pane {pane}: no session owns it"));
            let _ = self.sub.kill(&pane);
        }
        confirmed
    }

    fn record_death(&mut self, uid: u64, exit: Exit, now: Time, mut lines: Vec<String>) {
        if lines.is_empty() {
            lines = exec::log_tail(&self.paths, uid, MARKER_LINES);
        }
        let evs = self.world.on_exit(uid, exit, now, exec::jitter());
        self.world.set_last_output(uid, lines);
        self.emit_all(evs);
        exec::remove_exit_record(&self.paths, uid);
        self.dirty = true;
    }

    /// The tmux server is gone: every live session is marked crashed with
    /// that reason, and no role is charged.
    fn tmux_lost(&mut self, now: Time) {
        let uids = self.live_uids();
        self.log(&format!(
            "tmux server lost; {} sessions marked crashed, no role charged",
            uids.len()
        ));
        self.emit(Event::new(
            now,
            EventKind::TmuxDown,
            "",
            format!("tmux server lost with {} sessions", uids.len()),
        ));
        for uid in uids {
            self.record_death(
                uid,
                Exit::detail(ExitDetail::TmuxLost, now),
                now,
                Vec::new(),
            );
        }
    }

    fn sweep(&mut self, now: Time) {
        self.next_sweep = Instant::now() + self.cfg.sweep;
        if !self.tmux.is_up() {
            return;
        }
        match self.sub.list() {
            Ok(obs) => {
                self.tmux.success();
                self.observe(obs, now);
            }
            Err(e) => self.tmux_failure(e.to_string(), now),
        }
        exec::prune_exit_records(&self.paths, &self.world);
    }

    fn tmux_failure(&mut self, err: String, now: Time) {
        let was_up = self.tmux.is_up();
        self.tmux.failure(err.clone(), now, &self.cfg);
        self.log(&format!(
            "tmux unavailable: {err}; retry in {} ms at {}; consecutive failures: {}",
            self.tmux
                .next_retry_at
                .map_or(0, |t| (t - now).num_milliseconds()),
            self.tmux
                .next_retry_at
                .map_or("-".into(), |t| t.to_rfc3339()),
            self.tmux.consecutive_failures
        ));
        if was_up {
            self.emit(Event::new(now, EventKind::TmuxDown, "", err));
        }
    }

    fn tmux_probe(&mut self, now: Time) {
        match self.sub.version() {
            Ok(v) => {
                let was_down = !self.tmux.is_up();
                self.tmux.version = Some(v.clone());
                self.tmux.success();
                if was_down {
                    self.log(&format!("tmux available: {v}"));
                    self.emit(Event::new(now, EventKind::TmuxUp, "", v));
                }
            }
            Err(e) => self.tmux_failure(e.to_string(), now),
        }
    }

    fn handle(&mut self, inc: Incoming) {
        let now = Utc::now();
        let resp = match self.answer(inc.request, inc.follow, now) {
            Ok(r) => r,
            Err(e) => Response::Error(e),
        };
        let _ = inc.reply.send(resp);
        if self.stopping {
            let _ = inc.written.recv_timeout(Duration::from_secs(2));
        }
    }

    fn answer(
        &mut self,
        req: Request,
        follow: Option<std::sync::mpsc::Sender<crate::view::EventView>>,
        now: Time,
    ) -> Result<Response> {
        match req {
            Request::Ping => Ok(Response::Pong {
                version: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION,
                pid: std::process::id(),
            }),
            Request::Shim(report) => self.shim_report(report, now),
            Request::Apply { team } => self.apply(team, now),
            Request::Get { kind, filter } => Ok(match kind {
                Kind::Sessions => Response::Sessions(views::sessions(&self.world, &filter, now)),
                Kind::Roles => Response::Roles(views::roles(&self.world, &filter, now)),
                Kind::Teams => Response::Teams(views::teams(&self.world, &filter, now)),
            }),
            Request::Describe { kind, key } => self.describe(kind, &key, now),
            Request::Inject {
                key,
                text,
                enter,
                keys,
            } => {
                let s = self.live_session(&key)?;
                let pane = s.pane.clone().unwrap_or_default();
                let k = s.key.clone();
                let result = if keys {
                    let names: Vec<String> = text.split_whitespace().map(str::to_string).collect();
                    self.sub.send_keys(&pane, &names)
                } else {
                    self.sub.send_text(&pane, &text, enter)
                };
                result.map_err(|e| Error::tmux(e.to_string()))?;
                Ok(Response::Done(format!(
                    "typed {} bytes into {k}",
                    text.len()
                )))
            }
            Request::Capture { key } => {
                let s = self.find_session(&key)?;
                match (&s.pane, s.state.is_live()) {
                    (Some(pane), true) => {
                        let pane = pane.clone();
                        self.require_tmux()?;
                        self.sub
                            .capture(&pane, 0)
                            .map(Response::Text)
                            .map_err(|e| Error::tmux(e.to_string()))
                    }
                    _ => Ok(Response::Text(s.last_output.join("\n") + "\n")),
                }
            }
            Request::Logs { key, lines } => {
                let s = self.find_session(&key)?;
                let mut out = exec::log_tail(&self.paths, s.uid, lines).join("\n");
                if out.is_empty() {
                    out = s.last_output.join("\n");
                }
                if !out.is_empty() {
                    out.push('\n');
                }
                Ok(Response::Text(out))
            }
            Request::Reset { key } => {
                let role = self.find_role(&key)?;
                let ev = self.world.reset_role(&role, now);
                let msg = ev.message.clone();
                self.emit(ev);
                self.dirty = true;
                Ok(Response::Done(format!(
                    "{role}: {}",
                    msg.trim_start_matches("role reset: ")
                )))
            }
            Request::Scale { key, replicas } => {
                if !(1..=crate::domain::spec::MAX_REPLICAS).contains(&replicas) && replicas != 0 {
                    return Err(Error::usage(format!(
                        "replicas must be between 0 and {}",
                        crate::domain::spec::MAX_REPLICAS
                    )));
                }
                let role = self.find_role(&key)?;
                let (from, ev) = self
                    .world
                    .scale(&role, replicas, now)
                    .ok_or_else(|| Error::not_found("role", key.clone()))?;
                self.emit(ev);
                self.dirty = true;
                if let Some(reason) = self.world.frozen_reason(&role).map(str::to_string)
                    && replicas > from
                {
                    return Err(frozen_error(
                        &role,
                        &reason,
                        &format!("scaled {role} from {from} to {replicas} replicas, but"),
                    ));
                }
                Ok(Response::Done(format!(
                    "{role} scaled from {from} to {replicas} replicas"
                )))
            }
            Request::Kill { key } => {
                let s = self.live_session(&key)?;
                let (uid, k) = (s.uid, s.key.clone());
                self.stop_session(
                    uid,
                    "killed on request (not a crash)",
                    EventKind::Killed,
                    now,
                );
                self.dirty = true;
                Ok(Response::Done(format!("{k} killed")))
            }
            Request::Delete { key } => {
                let team = self.find_team(&key)?;
                if let Some(ev) = self.world.delete_team(&team, now) {
                    self.emit(ev);
                }
                self.dirty = true;
                Ok(Response::Done(format!("team {team} deleted")))
            }
            Request::Attach { key, tmux_client } => {
                let s = self.live_session(&key)?;
                // A client already inside this tmux server switches to the
                // session instead of nesting a second client in its pane.
                let inside = tmux_client.is_some() && self.sub.is_client_of(tmux_client.as_deref());
                Ok(Response::AttachArgv(if inside {
                    self.sub.switch_argv(&s.tmux_session)
                } else {
                    self.sub.attach_argv(&s.tmux_session)
                }))
            }
            Request::Events {
                filter,
                follow: following,
            } => {
                let evs = self.events.query(&filter);
                if following && let Some(tx) = follow {
                    self.events.follow(filter, tx);
                }
                Ok(Response::Events(evs))
            }
            Request::Status => Ok(Response::Status(StatusView {
                daemon: DaemonView {
                    pid: std::process::id(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    protocol: PROTOCOL_VERSION,
                    started_at: self.started_at,
                    state_dir: self.paths.root.display().to_string(),
                    socket: self.paths.socket().display().to_string(),
                    sessions: self
                        .world
                        .sessions
                        .values()
                        .filter(|s| s.state.is_live())
                        .count() as u32,
                    teams: self.world.teams.len() as u32,
                },
                tmux: self.tmux.view(self.tmux_socket.clone()),
            })),
            Request::Stop => {
                self.stopping = true;
                Ok(Response::Done("daemon stopping; panes keep running".into()))
            }
        }
    }

    fn require_tmux(&self) -> Result<()> {
        if self.tmux.is_up() {
            Ok(())
        } else {
            Err(Error::tmux(
                self.tmux
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "tmux is not available".into()),
            ))
        }
    }

    fn shim_report(&mut self, report: ShimReport, now: Time) -> Result<Response> {
        match report {
            ShimReport::Started { uid, pid, at } => {
                if let Some(ev) = self.world.started(uid, pid, at) {
                    self.emit(ev);
                    self.dirty = true;
                }
            }
            ShimReport::Exited {
                uid,
                code,
                signal,
                at,
                hangup,
            } => {
                let Some(s) = self
                    .world
                    .sessions
                    .get(&uid)
                    .filter(|s| s.state.is_live())
                    .cloned()
                else {
                    exec::remove_exit_record(&self.paths, uid);
                    return Ok(Response::Done("unknown session".into()));
                };
                if hangup {
                    // The terminal went away: the pane was killed, or the
                    // whole server is gone (then nobody is charged).
                    if let Ok(Observation::NoServer) = self.sub.list() {
                        self.tmux_lost(now);
                        return Ok(Response::Done("recorded".into()));
                    }
                }
                let exit = exec::exit_from_report(code, signal, at, hangup);
                // The shim keeps the pane open until we answer, so its last
                // screen can still be read.
                let lines = match (&s.pane, hangup) {
                    (Some(pane), false) => self
                        .sub
                        .capture(pane, 200)
                        .map(|text| exec::last_lines(&text, MARKER_LINES))
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                self.record_death(uid, exit, now, lines);
            }
        }
        Ok(Response::Done("recorded".into()))
    }

    fn apply(&mut self, team: crate::domain::spec::TeamSpec, now: Time) -> Result<Response> {
        let team_key = team.key();
        let (changes, evs) = self.world.apply(team, now);
        self.emit_all(evs);
        self.dirty = true;
        let roles = changes
            .into_iter()
            .map(|(key, change)| {
                let spec = self.world.role_spec(&key);
                let (name, detail) = match change {
                    RoleChange::Created => {
                        ("created", replicas_text(spec.map_or(0, |s| s.replicas)))
                    }
                    RoleChange::Unchanged => ("unchanged", String::new()),
                    RoleChange::Scaled { from, to } => ("scaled", format!("{from} → {to}")),
                    RoleChange::Replaced => ("replaced", "spec changed".into()),
                    RoleChange::Removed => ("removed", String::new()),
                };
                RoleChangeView {
                    frozen_reason: self.world.frozen_reason(&key).map(str::to_string),
                    key: key.to_string(),
                    change: name.into(),
                    detail,
                }
            })
            .collect();
        Ok(Response::Applied {
            team: team_key.to_string(),
            roles,
        })
    }

    fn describe(&mut self, kind: Kind, key: &str, now: Time) -> Result<Response> {
        let recent = |k: &str, log: &events::EventLog| {
            log.query(&crate::proto::EventFilter {
                key: Some(k.to_string()),
                kinds: Vec::new(),
                limit: Some(20),
            })
        };
        match kind {
            Kind::Sessions => {
                let s = self.find_session(key)?;
                let evs = recent(&s.key.to_string(), &self.events);
                let text = views::describe_session(&self.world, &s, &evs, now);
                let json =
                    serde_json::to_value(views::session(&self.world, &s, now)).unwrap_or_default();
                Ok(Response::Described { text, json })
            }
            Kind::Roles => {
                let role = self.find_role(key)?;
                let evs = recent(&role.to_string(), &self.events);
                let text = views::describe_role(&self.world, &role, &evs, now)
                    .ok_or_else(|| Error::not_found("role", key))?;
                let json =
                    serde_json::to_value(views::role(&self.world, &role, now)).unwrap_or_default();
                Ok(Response::Described { text, json })
            }
            Kind::Teams => {
                let team = self.find_team(key)?;
                let evs = recent(&team.to_string(), &self.events);
                let text = views::describe_team(&self.world, &team, &evs, now)
                    .ok_or_else(|| Error::not_found("team", key))?;
                let json =
                    serde_json::to_value(views::team(&self.world, &team, now)).unwrap_or_default();
                Ok(Response::Described { text, json })
            }
        }
    }

    /// Any session record (live, succeeded or a crashed marker); a live one
    /// wins when several share the key.
    fn find_session(&self, query: &str) -> Result<Session> {
        let records = self.world.all_session_records();
        let keys: Vec<SessionKey> = records.iter().map(|s| s.key.clone()).collect();
        let key = resolve("session", query, &keys)?;
        let mut matching: Vec<&Session> = records.into_iter().filter(|s| s.key == key).collect();
        matching.sort_by_key(|s| (s.state.is_live(), s.uid));
        Ok((*matching.last().expect("resolved key has a record")).clone())
    }

    /// A session with a pane to act on; a crashed or finished one is refused.
    fn live_session(&self, query: &str) -> Result<Session> {
        let s = self.find_session(query)?;
        if !s.state.is_live() || s.pane.is_none() {
            let what = match (&s.state, &s.exit) {
                (SessionState::Crashed, Some(e)) => format!("crashed ({})", e.reason()),
                (SessionState::Succeeded, _) => "succeeded".to_string(),
                _ => "not started yet".to_string(),
            };
            let help = if s.state == SessionState::Crashed {
                Some(format!(
                    "`marvel logs {}` shows what it printed; `marvel get sessions` shows when it is replaced",
                    s.key
                ))
            } else {
                None
            };
            return Err(Error::refused(
                format!("session {} is {what}: it has no pane", s.key),
                help,
            ));
        }
        self.require_tmux()?;
        Ok(s)
    }

    fn find_role(&self, query: &str) -> Result<RoleKey> {
        let keys = self.world.role_keys();
        resolve("role", query, &keys)
    }

    fn find_team(&self, query: &str) -> Result<TeamKey> {
        let keys: Vec<TeamKey> = self.world.teams.keys().cloned().collect();
        resolve("team", query, &keys)
    }
}

fn resolve<K: Clone + std::fmt::Display>(kind: &str, query: &str, keys: &[K]) -> Result<K> {
    match key::lookup(query, keys) {
        Ok(k) => Ok(k.clone()),
        Err(LookupError::NotFound) => Err(Error::not_found(kind, query)),
        Err(LookupError::Ambiguous(candidates)) => Err(Error::Ambiguous {
            kind: kind.to_string(),
            key: query.to_string(),
            candidates,
        }),
    }
}

fn replicas_text(n: u32) -> String {
    if n == 1 {
        "1 replica".into()
    } else {
        format!("{n} replicas")
    }
}

/// The refusal given when a frozen role is asked to spawn.
pub fn frozen_error(role: &RoleKey, reason: &str, prefix: &str) -> Error {
    Error::refused(
        format!("{prefix} role {role} is frozen ({reason}); nothing will be spawned"),
        Some(format!("run `marvel reset role {role}` to restart it")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::world::sim::{role, team};
    use crate::substrate::SubstrateError;
    use crate::substrate::fake::FakeSubstrate;

    fn daemon(dir: &std::path::Path) -> Daemon<FakeSubstrate> {
        let paths = Paths {
            root: dir.to_path_buf(),
        };
        paths.ensure().unwrap();
        let cfg = Config {
            sweep: Duration::from_secs(3600),
            tmux_timeout: Duration::from_secs(1),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(400),
            retry_jitter: 0.0,
        };
        let mut d = Daemon::new(paths, Some("sock".into()), FakeSubstrate::new(), cfg);
        d.restore();
        d
    }

    fn ask(d: &mut Daemon<FakeSubstrate>, req: Request) -> Response {
        let r = d
            .answer(req, None, Utc::now())
            .unwrap_or_else(Response::Error);
        d.reconcile();
        d.persist();
        r
    }

    fn live(d: &Daemon<FakeSubstrate>) -> Vec<Session> {
        d.world
            .sessions
            .values()
            .filter(|s| s.state.is_live())
            .cloned()
            .collect()
    }

    #[test]
    fn apply_spawns_shims_with_the_session_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        ask(
            &mut d,
            Request::Apply {
                team: team(vec![role("w", 2)]),
            },
        );
        let spawns = d.sub.spawns();
        assert_eq!(spawns.len(), 2);
        let req = &spawns[0];
        assert_eq!(req.argv[1], "shim");
        assert_eq!(req.argv.last().unwrap(), "sh");
        assert_eq!(req.env["MARVEL_SESSION"], "demo/squad/w-0");
        assert_eq!(req.env["MARVEL_TMUX_SOCKET"], "sock");
        assert!(req.name.starts_with("marvel/demo/squad/w-0/"));
        assert_eq!(live(&d).len(), 2);
        assert!(
            live(&d)
                .iter()
                .all(|s| s.state == SessionState::Pending && s.pane.is_some())
        );
    }

    #[test]
    fn a_reported_exit_becomes_a_marker_with_the_last_screen() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        ask(
            &mut d,
            Request::Apply {
                team: team(vec![role("w", 1)]),
            },
        );
        let s = live(&d).remove(0);
        ask(
            &mut d,
            Request::Shim(ShimReport::Started {
                uid: s.uid,
                pid: 4242,
                at: Utc::now(),
            }),
        );
        assert_eq!(d.world.sessions[&s.uid].state, SessionState::Running);
        d.sub
            .set_screen(s.pane.as_deref().unwrap(), "hello\nbye\n\n");
        let at = Utc::now();
        ask(
            &mut d,
            Request::Shim(ShimReport::Exited {
                uid: s.uid,
                code: Some(42),
                signal: None,
                at,
                hangup: false,
            }),
        );
        let h = &d.world.roles[&s.key.role()];
        let m = h.marker.as_ref().expect("a marker");
        assert_eq!(m.exit.as_ref().unwrap().code, Some(42));
        assert_eq!(m.last_output, vec!["hello", "bye"]);
        assert!(h.next_restart_at.is_some());
        assert!(live(&d).is_empty(), "the replacement waits for the backoff");
        // A duplicate report changes nothing.
        ask(
            &mut d,
            Request::Shim(ShimReport::Exited {
                uid: s.uid,
                code: Some(1),
                signal: None,
                at,
                hangup: false,
            }),
        );
        assert_eq!(d.world.roles[&s.key.role()].restarts, 1);
    }

    #[test]
    fn a_hangup_with_the_server_gone_charges_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        ask(
            &mut d,
            Request::Apply {
                team: team(vec![role("w", 3)]),
            },
        );
        let uid = live(&d)[0].uid;
        d.sub.lose_server();
        ask(
            &mut d,
            Request::Shim(ShimReport::Exited {
                uid,
                code: None,
                signal: Some(1),
                at: Utc::now(),
                hangup: true,
            }),
        );
        let h = &d.world.roles.values().next().unwrap();
        assert_eq!(h.restarts, 0);
        assert!(h.frozen.is_none());
        assert_eq!(
            h.marker.as_ref().unwrap().exit.as_ref().unwrap().detail,
            ExitDetail::TmuxLost
        );
    }

    #[test]
    fn a_failed_spawn_marks_tmux_down_and_retries_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        d.sub
            .fail_next(SubstrateError::Missing("tmux: not found".into()));
        ask(
            &mut d,
            Request::Apply {
                team: team(vec![role("w", 1)]),
            },
        );
        assert!(live(&d).is_empty());
        let Response::Status(st) = ask(&mut d, Request::Status) else {
            panic!()
        };
        assert_eq!(st.tmux.state, "down");
        assert_eq!(st.tmux.consecutive_failures, 1);
        assert!(st.tmux.next_retry_at.is_some());
        assert!(st.tmux.last_error.unwrap().contains("not found"));
        // Once the retry is due and tmux answers, the team is realised.
        d.tmux_probe(st.tmux.next_retry_at.unwrap());
        d.reconcile();
        assert_eq!(live(&d).len(), 1);
    }

    #[test]
    fn a_new_daemon_adopts_live_panes_and_records_deaths_from_while_it_was_away() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        ask(
            &mut d,
            Request::Apply {
                team: team(vec![role("w", 2)]),
            },
        );
        let sessions = live(&d);
        for s in &sessions {
            ask(
                &mut d,
                Request::Shim(ShimReport::Started {
                    uid: s.uid,
                    pid: 100 + s.uid as u32,
                    at: Utc::now(),
                }),
            );
        }
        // The daemon goes away; one program exits 7 meanwhile.
        let fake = std::mem::take(&mut d.sub);
        drop(d);
        let dead = &sessions[0];
        let report = ShimReport::Exited {
            uid: dead.uid,
            code: Some(7),
            signal: None,
            at: Utc::now(),
            hangup: false,
        };
        let paths = Paths {
            root: dir.path().to_path_buf(),
        };
        crate::paths::write_atomic(
            &paths.exit_record(dead.uid),
            &serde_json::to_vec(&report).unwrap(),
        )
        .unwrap();
        fake.remove(dead.pane.as_deref().unwrap());
        let cfg = Config::from_env();
        let mut d2 = Daemon::new(paths, None, fake, cfg);
        d2.restore();
        let h = d2.world.roles.values().next().unwrap();
        assert_eq!(
            h.marker.as_ref().unwrap().exit.as_ref().unwrap().code,
            Some(7)
        );
        let alive = &sessions[1];
        let again = &d2.world.sessions[&alive.uid];
        assert_eq!(
            (again.state, again.pane.clone(), again.pid),
            (
                SessionState::Running,
                alive.pane.clone(),
                Some(100 + alive.uid as u32)
            )
        );
        assert_eq!(
            d2.world
                .sessions
                .values()
                .filter(|s| s.state.is_live())
                .count(),
            1,
            "no duplicates before the backoff"
        );
    }
}
