//! The daemon: one loop that owns all state. Requests, shim reports and
//! the outcomes of tmux calls arrive over one channel, timers bound each
//! wait; the loop updates the world, persists it, plans, and hands the
//! plan's tmux work to the worker thread without waiting for it.

mod agents;
mod effects;
pub mod events;
pub mod exec;
pub mod server;
pub mod store;
pub mod views;
pub mod worker;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::client::{Target, open_lock};
use crate::domain::event::{Event, EventKind};
use crate::domain::key::{self, LookupError, RoleKey, SessionKey, TeamKey};
use crate::domain::reconcile::{self, Action, RoleChange, StopReason};
use crate::domain::spec::Replicas;
use crate::domain::state::{Exit, Heartbeat, Session, SessionState, Time, World};
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::proto::{Kind, PROTOCOL_VERSION, Request, Response, RoleChangeView, ShimReport};
use crate::substrate::Substrate;
use crate::view::{DaemonView, StatusView};

use effects::{EarlyExit, Then, Unsettled};
use exec::TmuxHealth;
use server::Incoming;
use worker::{JobId, Worker};

/// Tunables, read from the environment so tests can shrink them.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often the safety-net sweep lists panes (`MARVEL_SWEEP_MS`).
    pub sweep: Duration,
    /// Deadline of every tmux call (`MARVEL_TMUX_TIMEOUT_MS`).
    pub tmux_timeout: Duration,
    /// Retry pacing while tmux is unavailable: exponential from
    /// `MARVEL_TMUX_RETRY_MS` to `MARVEL_TMUX_RETRY_MAX_MS`, each delay
    /// spread by ± `MARVEL_TMUX_RETRY_JITTER` (a fraction).
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
            retry_jitter: std::env::var("MARVEL_TMUX_RETRY_JITTER")
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|j| (0.0..=1.0).contains(j))
                .unwrap_or(0.2),
        }
    }
}

/// Lines of a dead pane kept on its marker.
const MARKER_LINES: usize = 20;

/// Everything the loop receives.
pub enum Msg {
    /// A client's or a shim's request.
    Request(Incoming),
    /// A tmux call finished.
    Done(worker::Done),
}

impl From<Incoming> for Msg {
    fn from(inc: Incoming) -> Msg {
        Msg::Request(inc)
    }
}

impl From<worker::Done> for Msg {
    fn from(done: worker::Done) -> Msg {
        Msg::Done(done)
    }
}

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
    let mut daemon = Daemon::new(paths.clone(), t.tmux_socket.clone(), sub, cfg)?;
    let tx = daemon.sender();
    std::thread::Builder::new()
        .name("marvel-accept".into())
        .spawn(move || server::serve(listener, tx))
        .map_err(|e| Error::other(format!("cannot start the socket thread: {e}")))?;
    daemon.restore();
    daemon.run();
    let _ = std::fs::remove_file(&socket);
    drop(lock);
    Ok(())
}

pub struct Daemon<S: Substrate> {
    pub world: World,
    /// Runs every tmux call; see `worker.rs`.
    worker: Worker<S>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    /// Jobs under way and what to do with each outcome.
    pending: BTreeMap<JobId, Then>,
    /// The listing under way, if any, and whether another is wanted after it.
    listing: Option<JobId>,
    relist: bool,
    probing: bool,
    /// Deaths whose cause a listing settles (see `Unsettled`).
    unsettled: BTreeMap<u64, Unsettled>,
    /// Exits reported before the session's spawn came back.
    early_exits: BTreeMap<u64, EarlyExit>,
    /// Restored sessions whose spawn never came back: the first listing
    /// finds their panes by name, or they are forgotten.
    unplaced: Vec<u64>,
    /// The state file was unreadable: the first listing spares our panes.
    spare_strays: bool,
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

impl<S: Substrate + Sync + 'static> Daemon<S> {
    pub fn new(
        paths: Paths,
        tmux_socket: Option<String>,
        sub: impl Into<Arc<S>>,
        cfg: Config,
    ) -> Result<Daemon<S>> {
        let (tx, rx) = mpsc::channel();
        let worker = Worker::start(sub.into(), tx.clone())
            .map_err(|e| Error::other(format!("cannot start the tmux thread: {e}")))?;
        Ok(Daemon {
            world: World::default(),
            worker,
            tx,
            rx,
            pending: BTreeMap::new(),
            listing: None,
            relist: false,
            probing: false,
            unsettled: BTreeMap::new(),
            early_exits: BTreeMap::new(),
            unplaced: Vec::new(),
            spare_strays: false,
            store: store::Store::new(paths.state()),
            events: events::EventLog::open(paths.events()),
            tmux: TmuxHealth::default(),
            tmux_socket,
            paths,
            started_at: Utc::now(),
            next_sweep: Instant::now(),
            wake_at: None,
            dirty: false,
            stopping: false,
            cfg,
        })
    }

    /// Where the socket thread sends requests.
    pub fn sender(&self) -> Sender<Msg> {
        self.tx.clone()
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
            store::Loaded::Restored { world, rebooted } => {
                self.world = world;
                if rebooted {
                    self.machine_restarted();
                }
            }
            store::Loaded::MovedAside { moved_to, error } => {
                let msg = format!(
                    "state file {} could not be read ({error}); moved it to {} and started empty",
                    self.store.path().display(),
                    moved_to.display()
                );
                self.log(&msg);
                self.emit(Event::new(Utc::now(), EventKind::Warning, "", msg));
                self.spare_strays = true;
            }
        }
        let now = Utc::now();
        self.world.watching_since = Some(now);
        // What the shims wrote while we were away. A hang-up waits for the
        // first listing: the whole server may have gone, which is nobody's
        // fault.
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
                    self.exit_reported(uid, exit, hangup, now);
                }
                Some(ShimReport::Started { pid, at, .. }) => {
                    if let Some(ev) = self.world.started(uid, pid, at) {
                        self.emit(ev);
                    }
                }
                None => {}
            }
        }
        // Spawns that were under way: the first listing tells whether their
        // panes were made.
        self.unplaced = self
            .world
            .sessions
            .values()
            .filter(|s| s.state.is_live() && s.pane.is_none())
            .map(|s| s.uid)
            .collect();
        // Re-adoption waits for tmux's answer; until then the sessions keep
        // their recorded state and nothing is spawned in their slots.
        self.probe(true);
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

    /// Serves until `Stop`.
    pub fn run(&mut self) {
        self.reconcile();
        while !self.stopping {
            let timeout = self.next_timeout();
            match self.rx.recv_timeout(timeout) {
                Ok(msg) => self.dispatch(msg),
                Err(RecvTimeoutError::Timeout) => {}
                // Cannot happen while the daemon holds a sender itself.
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.tick();
            self.reconcile();
            self.persist();
        }
        // Calls under way finish first, so that no pane is made after the
        // daemon is gone; each ends by its deadline, and after a timeout
        // the rest fail at once.
        self.settle(self.cfg.tmux_timeout * 2 + Duration::from_secs(1));
        self.log("stopped; panes keep running");
    }

    fn dispatch(&mut self, msg: Msg) {
        match msg {
            Msg::Request(inc) if self.stopping => {
                let _ = inc.reply.send(Response::Error(Error::daemon(
                    "the daemon is shutting down",
                )));
            }
            Msg::Request(inc) => self.handle(inc),
            Msg::Done(done) => self.done(done),
        }
    }

    /// The timers: the sweep and, while tmux is unavailable, its retry.
    fn tick(&mut self) {
        if Instant::now() >= self.next_sweep {
            self.sweep();
        }
        if !self.probing && self.tmux.retry_due(Utc::now()) {
            self.probe(false);
        }
    }

    /// Handles messages until no tmux call is under way (at most `grace`),
    /// reconciling after each: what a stopping daemon does with the calls
    /// it started, and how tests wait for tmux's answers.
    fn settle(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            self.reconcile();
            self.persist();
            let left = deadline.saturating_duration_since(Instant::now());
            if self.pending.is_empty() || left.is_zero() {
                return;
            }
            match self.rx.recv_timeout(left) {
                Ok(msg) => self.dispatch(msg),
                Err(_) => return,
            }
        }
    }

    fn next_timeout(&self) -> Duration {
        let now = Utc::now();
        let mut t = self.next_sweep.saturating_duration_since(Instant::now());
        let retry = self.tmux.next_retry_at.filter(|_| !self.probing);
        for at in [self.wake_at, retry].into_iter().flatten() {
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
                        // Its successor has the same key: say which one stops.
                        let why = match reason {
                            StopReason::Replaced | StopReason::Superfluous => {
                                format!("{} (uid {uid})", reason.as_str())
                            }
                            _ => reason.as_str().to_string(),
                        };
                        self.stop_session(uid, &why, EventKind::Stopped, now);
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
                    Action::Health { uid, state } => {
                        if let Some(ev) = self.world.set_health(uid, state, now) {
                            self.emit(ev);
                        }
                        progressed = true;
                    }
                    Action::KillUnhealthy { uid } => {
                        self.kill_unhealthy(uid, now);
                        progressed = true;
                    }
                    Action::Shift { team, step } => {
                        let evs = self.world.shift_step(&team, step, now);
                        self.emit_all(evs);
                        progressed = true;
                    }
                }
            }
            // Without tmux the spawns wait: its answer or its retry timer
            // wakes the loop.
            if !spawns.is_empty() && self.tmux_ready() {
                self.spawn(spawns, now);
                progressed = true;
            }
            if progressed {
                self.dirty = true;
            } else {
                return;
            }
        }
    }

    /// Stops a live session on request: its pane is destroyed and it is
    /// forgotten without any charge to its role.
    fn stop_session(&mut self, uid: u64, why: &str, kind: EventKind, now: Time) {
        let Some(s) = self.world.stop(uid) else {
            return;
        };
        self.unsettled.remove(&uid);
        // A pane still being made is removed when its spawn comes back.
        if let Some(pane) = s.pane.clone() {
            self.kill_pane(pane, s.key.to_string());
        }
        exec::remove_exit_record(&self.paths, uid);
        self.emit(Event::new(now, kind, &s.key, why.to_string()));
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

    fn handle(&mut self, inc: Incoming) {
        let now = Utc::now();
        let Some(inc) = self.answer_with_tmux(inc, now) else {
            return;
        };
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
            // Typing needs tmux: `answer_with_tmux` always answers it first.
            Request::Inject { key, .. } => {
                Err(Error::tmux(format!("cannot type into {key} without tmux")))
            }
            // A live pane's screen comes from `answer_with_tmux`; this is a
            // marker's or a finished session's last screen.
            Request::Capture { key } => {
                let s = self.find_session(&key)?;
                Ok(Response::Text(s.last_output.join("\n") + "\n"))
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
                self.refuse_while_shifting(&role.team(), &format!("scale {role}"))?;
                let (from, ev) = self
                    .world
                    .scale(&role, Replicas::new(replicas).map_err(Error::usage)?, now)
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
                let sub = self.worker.substrate();
                let inside = tmux_client.is_some() && sub.is_client_of(tmux_client.as_deref());
                Ok(Response::AttachArgv(if inside {
                    sub.switch_argv(&s.tmux_session)
                } else {
                    sub.attach_argv(&s.tmux_session)
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
                    sessions: self.live_uids().len() as u32,
                    teams: self.world.teams.len() as u32,
                },
                tmux: self
                    .tmux
                    .view(self.tmux_socket.clone(), self.worker.stalled_for()),
            })),
            Request::Stop => {
                self.stopping = true;
                Ok(Response::Done("daemon stopping; panes keep running".into()))
            }
            Request::Heartbeat {
                session,
                uid,
                context_pct,
                note,
            } => {
                let content = Heartbeat {
                    context_pct: context_pct.map(u8::from),
                    note: note.map(String::from),
                };
                self.heartbeat(&session, uid, content, now)
            }
            Request::Shift {
                team,
                role,
                timeout_ms,
            } => self.start_shift(
                &team,
                role.as_deref(),
                Duration::from_millis(timeout_ms),
                now,
            ),
            Request::AbortShift { team } => self.abort_shift(&team, now),
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
                if !self
                    .world
                    .sessions
                    .get(&uid)
                    .is_some_and(|s| s.state.is_live())
                {
                    exec::remove_exit_record(&self.paths, uid);
                    return Ok(Response::Done("unknown session".into()));
                }
                // A hang-up means the pane was killed or the whole server
                // went away (then nobody is charged): a listing tells which.
                // Any other end is recorded at once; `answer_with_tmux`
                // reads the last screen first when tmux is there to ask.
                let exit = exec::exit_from_report(code, signal, at, hangup);
                self.exit_reported(uid, exit, hangup, now);
            }
        }
        Ok(Response::Done("recorded".into()))
    }

    fn apply(&mut self, team: crate::domain::spec::TeamSpec, now: Time) -> Result<Response> {
        let team_key = team.key();
        let old = self.world.teams.get(&team_key).map(|t| &t.spec);
        if reconcile::diff(old, &team)
            .iter()
            .any(|(_, c)| *c != RoleChange::Unchanged)
        {
            self.refuse_while_shifting(&team_key, &format!("apply changes to {team_key}"))?;
        }
        let (changes, evs) = self.world.apply(team, now);
        self.emit_all(evs);
        self.dirty = true;
        let roles = changes
            .into_iter()
            .map(|(key, change)| {
                let spec = self.world.role_spec(&key);
                let (name, detail) = match change {
                    RoleChange::Created => (
                        "created",
                        replicas_text(spec.map_or(0, |s| s.replicas.get())),
                    ),
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
        // Each kind: the resolved key, then its text and record.
        let (text, json) = match kind {
            Kind::Sessions => {
                let s = self.find_session(key)?;
                let evs = recent(&s.key.to_string(), &self.events);
                (
                    Some(views::describe_session(&self.world, &s, &evs, now)),
                    serde_json::to_value(views::session(&self.world, &s, now)),
                )
            }
            Kind::Roles => {
                let role = self.find_role(key)?;
                let evs = recent(&role.to_string(), &self.events);
                (
                    views::describe_role(&self.world, &role, &evs, now),
                    serde_json::to_value(views::role(&self.world, &role, now)),
                )
            }
            Kind::Teams => {
                let team = self.find_team(key)?;
                let evs = recent(&team.to_string(), &self.events);
                (
                    views::describe_team(&self.world, &team, &evs, now),
                    serde_json::to_value(views::team(&self.world, &team, now)),
                )
            }
        };
        let what = match kind {
            Kind::Sessions => "session",
            Kind::Roles => "role",
            Kind::Teams => "team",
        };
        Ok(Response::Described {
            text: text.ok_or_else(|| Error::not_found(what, key))?,
            json: json.unwrap_or_default(),
        })
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
    use crate::domain::state::ExitDetail;
    use crate::domain::world::sim::{role, team};
    use crate::substrate::SubstrateError;
    use crate::substrate::fake::FakeSubstrate;

    /// Bound on any wait for the worker in these tests.
    const WAIT: Duration = Duration::from_secs(5);

    fn cfg() -> Config {
        Config {
            sweep: Duration::from_secs(3600),
            tmux_timeout: Duration::from_secs(1),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(400),
            retry_jitter: 0.0,
        }
    }

    fn daemon(dir: &std::path::Path) -> Daemon<FakeSubstrate> {
        let paths = Paths {
            root: dir.to_path_buf(),
        };
        paths.ensure().unwrap();
        let mut d = Daemon::new(paths, Some("sock".into()), FakeSubstrate::new(), cfg()).unwrap();
        d.restore();
        d.settle(WAIT);
        d
    }

    /// Sends a request as the socket thread does, lets the worker finish
    /// what it caused, and returns the answer.
    fn ask(d: &mut Daemon<FakeSubstrate>, req: Request) -> Response {
        let (reply, answer) = mpsc::channel();
        let (_written, written) = mpsc::channel();
        d.handle(Incoming {
            request: req,
            reply,
            follow: None,
            written,
        });
        d.settle(WAIT);
        answer.recv_timeout(WAIT).expect("an answer")
    }

    fn fake(d: &Daemon<FakeSubstrate>) -> &FakeSubstrate {
        d.worker.substrate()
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
        let spawns = fake(&d).spawns();
        assert_eq!(spawns.len(), 2);
        let req = &spawns[0];
        assert_eq!(req.argv[1], "shim");
        assert_eq!(req.argv.last().unwrap(), "sh");
        assert_eq!(req.env["MARVEL_SESSION"], "demo/squad/w-0");
        assert_eq!(req.env["MARVEL_ROLE"], "demo/squad/w");
        assert_eq!(req.env["MARVEL_TEAM"], "demo/squad");
        assert_eq!(req.env["MARVEL_WORKSPACE"], "demo");
        assert_eq!(req.env["MARVEL_HOME"], dir.path().display().to_string());
        let uid = live(&d).iter().find(|s| s.key.slot == 0).unwrap().uid;
        assert_eq!(req.env["MARVEL_SESSION_UID"], uid.to_string());
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
        fake(&d).set_screen(s.pane.as_deref().unwrap(), "hello\nbye\n\n");
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

    fn heartbeat_team() -> crate::domain::spec::TeamSpec {
        let mut w = role("w", 1);
        w.health = Some(crate::domain::spec::Health::Heartbeat {
            timeout: crate::domain::spec::NonZeroSpan::from_secs(1),
            failures: crate::domain::spec::Failures::new(2).unwrap(),
        });
        team(vec![w])
    }

    /// Applies a heartbeat team whose one session has run for an hour.
    fn long_running(d: &mut Daemon<FakeSubstrate>) -> Session {
        // Misses count from the session's start, not from this daemon's.
        d.world.watching_since = None;
        ask(
            d,
            Request::Apply {
                team: heartbeat_team(),
            },
        );
        let s = live(d).remove(0);
        ask(
            d,
            Request::Shim(ShimReport::Started {
                uid: s.uid,
                pid: 7,
                at: Utc::now() - chrono::Duration::hours(1),
            }),
        );
        s
    }

    #[test]
    fn a_stale_heartbeat_kills_the_pane_and_counts_as_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        let s = long_running(&mut d);
        assert!(live(&d).is_empty());
        assert_eq!(fake(&d).kills(), vec![s.pane.clone().unwrap()]);
        let h = &d.world.roles[&s.key.role()];
        assert_eq!(h.restarts, 1);
        let exit = h.marker.as_ref().unwrap().exit.clone().unwrap();
        assert_eq!(exit.detail, ExitDetail::Unhealthy("heartbeat stale".into()));
        assert_eq!(exit.reason(), "heartbeat stale");
        assert!(h.next_restart_at.is_some(), "backs off like any crash");
    }

    #[test]
    fn a_heartbeat_keeps_the_session_and_heals_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        d.world.watching_since = None;
        ask(
            &mut d,
            Request::Apply {
                team: heartbeat_team(),
            },
        );
        let s = live(&d).remove(0);
        // The pane's environment has the full key, never a suffix.
        let Response::Error(e) = ask(
            &mut d,
            Request::Heartbeat {
                session: "squad/w-0".into(),
                uid: Some(s.uid),
                context_pct: None,
                note: None,
            },
        ) else {
            panic!("a suffix was accepted")
        };
        assert_eq!(e.code(), crate::error::exit::USAGE);
        // A heartbeat before the shim reports the program running is kept.
        let Response::Done(_) = ask(
            &mut d,
            Request::Heartbeat {
                session: s.key.to_string(),
                uid: Some(s.uid),
                context_pct: crate::domain::health::ContextPct::new(30).ok(),
                note: crate::domain::health::Note::new("reading").ok(),
            },
        ) else {
            panic!("heartbeat refused")
        };
        ask(
            &mut d,
            Request::Shim(ShimReport::Started {
                uid: s.uid,
                pid: 7,
                at: Utc::now() - chrono::Duration::hours(1),
            }),
        );
        let now = &d.world.sessions[&s.uid];
        assert_eq!(now.health, crate::domain::health::HealthState::Healthy);
        assert_eq!(now.heartbeat.context_pct, Some(30));
        assert!(fake(&d).kills().is_empty());
        let Response::Sessions(v) = ask(
            &mut d,
            Request::Get {
                kind: Kind::Sessions,
                filter: Default::default(),
            },
        ) else {
            panic!()
        };
        assert_eq!(v[0].health.as_deref(), Some("healthy"));
        assert_eq!(v[0].heartbeat_note.as_deref(), Some("reading"));
        // A uid that is not the session's is refused.
        let Response::Error(e) = ask(
            &mut d,
            Request::Heartbeat {
                session: s.key.to_string(),
                uid: Some(s.uid + 100),
                context_pct: None,
                note: None,
            },
        ) else {
            panic!()
        };
        assert_eq!(e.code(), crate::error::exit::REFUSED);
    }

    #[test]
    fn scaling_or_changing_a_shifting_team_is_refused_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        ask(
            &mut d,
            Request::Apply {
                team: team(vec![role("w", 2)]),
            },
        );
        let Response::Shift { team: key, shift } = ask(
            &mut d,
            Request::Shift {
                team: "squad".into(),
                role: None,
                timeout_ms: 60_000,
            },
        ) else {
            panic!("shift refused")
        };
        assert_eq!(
            (key.as_str(), shift.state.as_str()),
            ("demo/squad", "running")
        );
        let refused = |r: Response| match r {
            Response::Error(e) => {
                assert_eq!(e.code(), crate::error::exit::REFUSED, "{e}");
                e.to_string()
            }
            other => panic!("not refused: {other:?}"),
        };
        let msg = refused(ask(
            &mut d,
            Request::Scale {
                key: "w".into(),
                replicas: 3,
            },
        ));
        assert!(
            msg.contains("is shifting") && msg.contains("--abort"),
            "{msg}"
        );
        refused(ask(
            &mut d,
            Request::Apply {
                team: team(vec![role("w", 3)]),
            },
        ));
        refused(ask(
            &mut d,
            Request::Shift {
                team: "squad".into(),
                role: None,
                timeout_ms: 60_000,
            },
        ));
        // Re-applying the unchanged team is fine.
        assert!(matches!(
            ask(
                &mut d,
                Request::Apply {
                    team: team(vec![role("w", 2)]),
                }
            ),
            Response::Applied { .. }
        ));
        let Response::Shift { shift, .. } = ask(
            &mut d,
            Request::AbortShift {
                team: "squad".into(),
            },
        ) else {
            panic!("abort refused")
        };
        assert_eq!(shift.state, "aborted");
        assert!(matches!(
            ask(
                &mut d,
                Request::Scale {
                    key: "w".into(),
                    replicas: 3,
                }
            ),
            Response::Done(_)
        ));
        refused(ask(
            &mut d,
            Request::AbortShift {
                team: "squad".into(),
            },
        ));
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
        fake(&d).lose_server();
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
        fake(&d).fail_next(SubstrateError::Missing("tmux: not found".into()));
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
        d.probe(false);
        d.settle(WAIT);
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
        let fake = d.worker.shared();
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
        let mut d2: Daemon<FakeSubstrate> = Daemon::new(paths, None, fake, cfg).unwrap();
        d2.restore();
        d2.settle(WAIT);
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

    /// Hands a request to the loop without waiting for tmux; the answer,
    /// if it was given at once.
    fn ask_now(d: &mut Daemon<FakeSubstrate>, req: Request) -> mpsc::Receiver<Response> {
        let (reply, answer) = mpsc::channel();
        let (_written, written) = mpsc::channel();
        d.handle(Incoming {
            request: req,
            reply,
            follow: None,
            written,
        });
        d.reconcile();
        d.persist();
        answer
    }

    fn started(d: &mut Daemon<FakeSubstrate>) -> Vec<Session> {
        for s in live(d) {
            ask(
                d,
                Request::Shim(ShimReport::Started {
                    uid: s.uid,
                    pid: 100 + s.uid as u32,
                    at: Utc::now(),
                }),
            );
        }
        live(d)
    }

    #[test]
    fn a_held_tmux_holds_no_answer_from_state_and_decides_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        let team = team(vec![role("w", 2)]);
        ask(&mut d, Request::Apply { team });
        let before = started(&mut d);
        let gate = fake(&d).hold();
        d.sweep();
        let get = ask_now(
            &mut d,
            Request::Get {
                kind: Kind::Sessions,
                filter: Default::default(),
            },
        );
        assert!(matches!(get.try_recv(), Ok(Response::Sessions(s)) if s.len() == 2));
        assert!(matches!(
            ask_now(&mut d, Request::Status).try_recv(),
            Ok(Response::Status(_))
        ));
        // Typing needs tmux: it is answered once tmux answers.
        let typed = ask_now(
            &mut d,
            Request::Inject {
                key: "w-0".into(),
                text: "hi".into(),
                enter: false,
                keys: false,
            },
        );
        assert!(typed.try_recv().is_err());
        drop(gate);
        d.settle(WAIT);
        assert!(matches!(typed.try_recv(), Ok(Response::Done(m)) if m.contains("typed 2 bytes")));
        assert_eq!(live(&d), before, "the held listing decided nothing");
    }

    #[test]
    fn a_hang_up_waits_for_a_conclusive_listing_and_a_lost_server_charges_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        let team = team(vec![role("w", 3)]);
        ask(&mut d, Request::Apply { team });
        let sessions = started(&mut d);
        // As with `tmux kill-server`: the exiting server first answers
        // with an error, then is gone.
        fake(&d).fail_next(SubstrateError::Failed("server exited unexpectedly".into()));
        fake(&d).lose_server();
        for s in &sessions[..2] {
            ask(
                &mut d,
                Request::Shim(ShimReport::Exited {
                    uid: s.uid,
                    code: None,
                    signal: Some(1),
                    at: Utc::now(),
                    hangup: true,
                }),
            );
        }
        assert_eq!(live(&d).len(), 3, "an error settles nothing");
        assert_eq!(d.tmux.state, Some(exec::TmuxState::Down));
        d.tick();
        d.settle(WAIT);
        let h = d.world.roles.values().next().unwrap();
        assert_eq!((h.restarts, h.frozen.is_some()), (0, false), "{h:?}");
        assert_eq!(
            h.marker.as_ref().unwrap().exit.as_ref().unwrap().detail,
            ExitDetail::TmuxLost
        );
        assert_eq!(live(&d).len(), 3, "all three come back");
        assert!(
            live(&d)
                .iter()
                .all(|s| !sessions.iter().any(|o| o.uid == s.uid))
        );
    }

    #[test]
    fn a_hang_up_with_the_server_still_there_is_a_killed_pane() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        let team = team(vec![role("w", 2)]);
        ask(&mut d, Request::Apply { team });
        let sessions = started(&mut d);
        let victim = &sessions[0];
        fake(&d).remove(victim.pane.as_deref().unwrap());
        ask(
            &mut d,
            Request::Shim(ShimReport::Exited {
                uid: victim.uid,
                code: None,
                signal: Some(1),
                at: Utc::now(),
                hangup: true,
            }),
        );
        let h = d.world.roles.values().next().unwrap();
        assert_eq!(h.restarts, 1);
        let m = h.marker.as_ref().unwrap();
        assert_eq!(
            (m.uid, &m.exit.as_ref().unwrap().detail),
            (victim.uid, &ExitDetail::PaneKilled)
        );
        assert_eq!(live(&d).len(), 1, "the other one is untouched");
    }

    #[test]
    fn a_pane_made_for_a_session_stopped_meanwhile_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        let gate = fake(&d).hold();
        let team = team(vec![role("w", 2)]);
        assert!(ask_now(&mut d, Request::Apply { team }).try_recv().is_ok());
        assert_eq!(live(&d).len(), 2);
        assert!(live(&d).iter().all(|s| s.pane.is_none()), "spawn under way");
        let deleted = ask_now(
            &mut d,
            Request::Delete {
                key: "squad".into(),
            },
        );
        assert!(deleted.try_recv().is_ok());
        assert!(live(&d).is_empty());
        drop(gate);
        d.settle(WAIT);
        assert_eq!(fake(&d).kills().len(), 2, "{:?}", fake(&d).calls());
        assert!(fake(&d).panes().is_empty());
        assert!(d.world.sessions.is_empty());
    }

    #[test]
    fn after_an_unreadable_state_file_our_panes_are_spared_not_killed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            root: dir.path().to_path_buf(),
        };
        paths.ensure().unwrap();
        std::fs::write(paths.state(), b"{oops").unwrap();
        let owner = exec::owner_tag(&paths);
        let f = FakeSubstrate::new();
        let agent = f.add_foreign("marvel/demo/squad/w-0/7", &owner);
        let mut d: Daemon<FakeSubstrate> = Daemon::new(paths, None, f, cfg()).unwrap();
        d.restore();
        d.settle(WAIT);
        assert!(fake(&d).kills().is_empty());
        assert_eq!(d.world.strays.keys().collect::<Vec<_>>(), vec![&agent.pane]);
        let warnings = d.events.query(&crate::proto::EventFilter {
            kinds: vec!["warning".into()],
            ..Default::default()
        });
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].message.contains("moved it to"));
        assert!(warnings[1].message.contains(&format!(
            "left 1 panes of the unreadable state running, unsupervised: {}",
            agent.pane
        )));
        // Later sweeps still spare it; a pane left by a spawn is removed.
        let leftover = fake(&d).add_foreign("marvel/demo/squad/w-1/9", &owner);
        d.sweep();
        d.settle(WAIT);
        assert_eq!(fake(&d).kills(), vec![leftover.pane]);
        assert!(fake(&d).pane(&agent.pane).is_some());
    }

    #[test]
    fn an_exit_that_overtakes_its_spawn_is_recorded_after_the_creation() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        let gate = fake(&d).hold();
        let team = team(vec![role("w", 1)]);
        assert!(ask_now(&mut d, Request::Apply { team }).try_recv().is_ok());
        let uid = live(&d)[0].uid;
        let at = Utc::now();
        let started = ShimReport::Started { uid, pid: 77, at };
        assert!(ask_now(&mut d, Request::Shim(started)).try_recv().is_ok());
        let exited = ShimReport::Exited {
            uid,
            code: Some(3),
            signal: None,
            at,
            hangup: false,
        };
        let answer = ask_now(&mut d, Request::Shim(exited));
        assert!(answer.try_recv().is_err(), "the shim waits for the spawn");
        assert_eq!(live(&d)[0].state, SessionState::Pending);
        drop(gate);
        d.settle(WAIT);
        assert!(matches!(answer.try_recv(), Ok(Response::Done(_))));
        let kinds: Vec<String> = d
            .events
            .query(&Default::default())
            .into_iter()
            .filter(|e| e.key.starts_with("demo/squad/w"))
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            ["applied", "created", "started", "crashed", "backoff"]
        );
        let m = d
            .world
            .roles
            .values()
            .next()
            .unwrap()
            .marker
            .clone()
            .unwrap();
        assert_eq!((m.uid, m.exit.unwrap().code), (uid, Some(3)));
        assert!(
            fake(&d)
                .calls()
                .contains(&crate::substrate::fake::Call::Capture {
                    pane: m.pane.clone().unwrap(),
                    history: 200
                }),
            "the last screen was read before the shim was answered"
        );
    }

    #[test]
    fn spawns_cut_short_by_a_restart_are_found_by_name_or_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        let gate = fake(&d).hold();
        let team = team(vec![role("w", 2)]);
        assert!(ask_now(&mut d, Request::Apply { team }).try_recv().is_ok());
        let cut: Vec<Session> = live(&d);
        assert!(cut.iter().all(|s| s.pane.is_none()));
        // The daemon dies while tmux makes the panes.
        let shared = d.worker.shared();
        drop(d);
        drop(gate);
        let deadline = Instant::now() + WAIT;
        while shared.panes().len() < 2 {
            assert!(Instant::now() < deadline, "the held spawn never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
        let lost = shared
            .panes()
            .into_iter()
            .find(|p| p.session_name == cut[1].tmux_session)
            .unwrap();
        shared.remove(&lost.pane);
        let paths = Paths {
            root: dir.path().to_path_buf(),
        };
        let mut d: Daemon<FakeSubstrate> = Daemon::new(paths, None, shared, cfg()).unwrap();
        d.restore();
        d.settle(WAIT);
        let found = &d.world.sessions[&cut[0].uid];
        assert!(found.state.is_live() && found.pane.is_some(), "{found:?}");
        assert!(!d.world.sessions.contains_key(&cut[1].uid), "forgotten");
        let now = live(&d);
        assert_eq!(now.len(), 2, "slot 1 is filled again: {now:?}");
        assert!(fake(&d).kills().is_empty(), "nothing adopted was removed");
    }

    #[test]
    fn a_pane_gone_without_a_word_from_its_shim_waits_one_listing_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        let team = team(vec![role("a", 1), role("b", 1)]);
        ask(&mut d, Request::Apply { team });
        let sessions = started(&mut d);
        for s in &sessions {
            fake(&d).remove(s.pane.as_deref().unwrap());
        }
        d.sweep();
        d.settle(WAIT);
        assert_eq!(live(&d).len(), 2, "no cause known yet: nothing recorded");
        // One shim tells how its pane went; the other never does.
        let (told, silent) = (&sessions[0], &sessions[1]);
        ask(
            &mut d,
            Request::Shim(ShimReport::Exited {
                uid: told.uid,
                code: None,
                signal: Some(1),
                at: Utc::now(),
                hangup: true,
            }),
        );
        let detail = |d: &Daemon<FakeSubstrate>, s: &Session| {
            let h = &d.world.roles[&s.key.role()];
            h.marker
                .as_ref()
                .unwrap()
                .exit
                .as_ref()
                .unwrap()
                .detail
                .clone()
        };
        assert_eq!(detail(&d, told), ExitDetail::PaneKilled);
        assert_eq!(detail(&d, silent), ExitDetail::PaneVanished);
        assert!(d.world.roles.values().all(|h| h.restarts == 1));
    }

    #[test]
    fn after_a_reboot_every_session_is_lost_with_tmux_and_nobody_is_charged() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path());
        let team = team(vec![role("w", 2)]);
        ask(&mut d, Request::Apply { team });
        let sessions = started(&mut d);
        drop(d);
        // The machine went down: the shutdown's SIGTERM ended one program,
        // and the state file is from the previous boot.
        let paths = Paths {
            root: dir.path().to_path_buf(),
        };
        let report = ShimReport::Exited {
            uid: sessions[0].uid,
            code: None,
            signal: Some(15),
            at: Utc::now(),
            hangup: false,
        };
        let record = serde_json::to_vec(&report).unwrap();
        crate::paths::write_atomic(&paths.exit_record(sessions[0].uid), &record).unwrap();
        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(paths.state()).unwrap()).unwrap();
        assert!(
            file["boot"].is_string(),
            "the file says which boot wrote it"
        );
        file["boot"] = "a boot long gone".into();
        std::fs::write(paths.state(), file.to_string()).unwrap();

        let mut d: Daemon<FakeSubstrate> =
            Daemon::new(paths, None, FakeSubstrate::new(), cfg()).unwrap();
        d.restore();
        d.settle(WAIT);
        let h = d.world.roles.values().next().unwrap();
        assert_eq!((h.restarts, h.frozen.is_none()), (0, true), "{h:?}");
        assert_eq!(
            h.marker.as_ref().unwrap().exit.as_ref().unwrap().detail,
            ExitDetail::TmuxLost
        );
        let now = live(&d);
        assert_eq!(now.len(), 2, "the team comes back");
        assert!(now.iter().all(|s| sessions.iter().all(|o| o.uid != s.uid)));
    }
}
