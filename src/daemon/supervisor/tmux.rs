//! The supervisor's side of tmux: which jobs are under way and what to do
//! with each outcome ([`Then`]), the spawn queue, listings and what they
//! settle, strays, and tmux's health. A failed or timed-out call is
//! *unknown*: only a successful listing, a server that is gone, a shim's
//! exit report or a machine restart ever ends a session. Only a failure to
//! reach tmux changes its health; a command tmux refuses is an error of the
//! request that asked for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::domain::Rng;
use crate::domain::event::{Event, EventKind};
use crate::domain::key::{RoleKey, SessionKey};
use crate::domain::policy;
use crate::domain::policy::Curve;
use crate::domain::spec::RoleSpec;
use crate::domain::state::{Exit, ExitDetail, KeptPane, Session, Time, after};
use crate::error::{Error, Result};
use crate::proto::Response;
use crate::substrate::{Decoration, Notice, Observation, PaneInfo, Place, Spawned, SubstrateError};
use crate::view::{self, TmuxView};

use super::super::worker::{Done, Job, JobId, Outcome, SLOW};
use super::{Durability, EarlyExit, Now, Output, RequestId, Supervisor, workspace};

/// What to do with a job's outcome.
#[derive(Debug, Clone)]
pub(super) enum Then {
    /// A probe: on success tmux is up and the listing is observed. `adopt`
    /// for the first one after a start, which re-adopts the panes.
    Probe { adopt: bool },
    /// A listing: compare it with the live sessions.
    Observe,
    /// A spawn batch, for these session uids and places in request order.
    Spawn(Vec<u64>, Vec<Place>),
    /// A pane to remove; a failure is only logged (the sweep retries).
    Kill { pane: String, what: String },
    /// A client waits: `done` is its answer on success.
    Reply { id: RequestId, done: String },
    /// One piece of a long text typed for a client; the last piece answers.
    Typed { id: RequestId },
    /// A client waits for the captured text.
    ReplyText { id: RequestId },
    /// What panes show was set.
    Decorate,
    /// The screen of a session that turned idle at `at`, for its role's
    /// `waiting` pattern.
    Screen { uid: u64, at: Time },
}

/// A job under way.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    then: Then,
    /// When it was handed to the worker (monotonic).
    submitted: Duration,
    /// How long it may reasonably take before it counts as stalled.
    expected: Duration,
}

/// The tmux jobs under way and what the supervisor waits for from tmux.
#[derive(Debug, Default)]
pub(super) struct Tmux {
    pub health: TmuxHealth,
    pub jobs: BTreeMap<JobId, Pending>,
    last_job: JobId,
    /// When the worker last finished a job (monotonic): the job after it
    /// started then, or when it was submitted if that was later.
    last_done: Duration,
    /// The listing under way, if any, and whether another is wanted after it.
    pub listing: Option<JobId>,
    pub relist: bool,
    pub probing: bool,
    /// Pending sessions whose pane is still to be asked for, in order.
    pub queue: Vec<u64>,
    /// Requests already answered with an error while further jobs of
    /// theirs were under way (a long text typed in pieces).
    failed: HashSet<RequestId>,
    /// Whether tmux's hooks wake the daemon.
    pub watch: Watch,
}

/// The watch on the tmux server (`Output::Watch`): while it runs, tmux
/// wakes the daemon when a pane of its dies or goes, and the sweep is only
/// a rare safety net.
#[derive(Debug, Default)]
pub(super) struct Watch {
    state: WatchState,
    /// Watches in a row that ended soon after they started.
    failures: u32,
    /// When to start it again after it ended (monotonic).
    retry_at: Option<Duration>,
    /// The daemon's log said it watches.
    announced: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum WatchState {
    #[default]
    Off,
    /// Asked for, not confirmed yet.
    Starting(Duration),
    /// Running since then (monotonic).
    On(Duration),
}

/// A watch that ran this long before it ended was not failing: the next
/// one starts at once.
const WATCH_STABLE: Duration = Duration::from_secs(10);
/// Pacing of new watches after ones that ended at once.
const WATCH_RETRY: Duration = Duration::from_millis(500);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(60);
/// How long a death found by a listing waits for its shim's word before
/// the next listing settles it, while tmux wakes the daemon.
const SETTLE: Duration = Duration::from_secs(1);
/// At most this long between two looks of the watch for new pane processes
/// to watch (from `/proc`, without waking tmux); tmux is nudged this often
/// only when some cannot be watched.
const KICK_MAX: Duration = Duration::from_secs(5);

impl Tmux {
    /// The id the next submitted job gets.
    pub fn next_job_id(&self) -> JobId {
        self.last_job + 1
    }

    /// Whether a spawn under way will tell where session `uid` runs.
    pub fn spawning(&self, uid: u64) -> bool {
        self.jobs
            .values()
            .any(|p| matches!(&p.then, Then::Spawn(uids, _) if uids.contains(&uid)))
    }

    /// How long the job the worker runs now has been over its expected
    /// time, if it is. Jobs run one after the other in id order, so the
    /// oldest one under way started when the one before it finished.
    pub fn stalled_for(&self, now: Duration) -> Option<Duration> {
        let (_, running) = self.jobs.iter().next()?;
        let started = running.submitted.max(self.last_done);
        now.checked_sub(started + running.expected)
            .filter(|d| !d.is_zero())
    }
}

impl Supervisor {
    pub(super) fn submit(&mut self, job: Job, then: Then, now: Now) -> JobId {
        self.tmux.last_job += 1;
        let id = self.tmux.last_job;
        let pending = Pending {
            then,
            submitted: now.mono,
            expected: job.expected(),
        };
        self.tmux.jobs.insert(id, pending);
        self.out.push(Output::Submit { id, job });
        id
    }

    /// tmux answers and no call is stuck: worth giving it new work.
    pub(super) fn tmux_ready(&self, now: Now) -> bool {
        self.tmux.health.is_up() && self.tmux.stalled_for(now.mono).is_none()
    }

    pub(super) fn require_tmux(&self, now: Now) -> Result<()> {
        if self.tmux_ready(now) {
            return Ok(());
        }
        let view = self.tmux_view(now);
        Err(Error::tmux(format!(
            "{} ({})",
            view.state,
            view.last_error
                .unwrap_or_else(|| "tmux has not answered yet".into())
        )))
    }

    pub(super) fn tmux_view(&self, now: Now) -> TmuxView {
        self.tmux.health.view(
            self.setup.tmux_socket.clone(),
            self.tmux.stalled_for(now.mono),
        )
    }

    /// How often the safety-net sweep lists: rarely while tmux's hooks wake
    /// the daemon and no death waits to be settled, else at the shorter
    /// interval.
    pub(super) fn sweep_every(&self) -> Duration {
        let cfg = &self.setup.cfg;
        let watching = matches!(self.tmux.watch.state, WatchState::On(_));
        let every = if watching && self.unsettled.is_empty() {
            cfg.sweep
        } else {
            cfg.sweep.min(cfg.sweep_unwatched)
        };
        if watching && !self.unsettled.is_empty() {
            // A death tmux woke us for is settled by the next listing,
            // soon: a shim still on its way has had time to record.
            every.min(SETTLE)
        } else {
            every
        }
    }

    /// When the next sweep is due: a listing after the last one, at the
    /// interval [`Supervisor::sweep_every`] says now, or the long interval
    /// after the last sweep.
    pub(super) fn sweep_due(&self) -> Duration {
        self.next_sweep.min(self.listed_at + self.sweep_every())
    }

    /// When a watch that ended is to be started again, if it is.
    pub(super) fn watch_retry_at(&self) -> Option<Duration> {
        self.tmux.watch.retry_at
    }

    /// Starts the watch if none runs, tmux answers, a server is known and
    /// no retry delay holds it back.
    pub(super) fn ensure_watch(&mut self, now: Now) {
        let w = &self.tmux.watch;
        if w.state != WatchState::Off || w.retry_at.is_some_and(|t| now.mono < t) {
            return;
        }
        let Some(server_pid) = self.ws.server_pid.filter(|_| self.tmux_ready(now)) else {
            // Started once a listing or a spawn shows a server.
            self.tmux.watch.retry_at = None;
            return;
        };
        self.tmux.watch.retry_at = None;
        self.tmux.watch.state = WatchState::Starting(now.mono);
        let kick = self.setup.cfg.sweep.min(KICK_MAX);
        self.out.push(Output::Watch { server_pid, kick });
    }

    /// What the watch says: a wake-up is a listing; its end, a listing and
    /// a new watch, at once after a long one, paced after short ones.
    pub(super) fn watch_notice(&mut self, notice: Notice, now: Now) {
        match notice {
            Notice::Watching => {
                let since = match self.tmux.watch.state {
                    WatchState::Starting(t) => t,
                    _ => now.mono,
                };
                self.tmux.watch.state = WatchState::On(since);
                if !std::mem::replace(&mut self.tmux.watch.announced, true) {
                    self.log(format!(
                        "tmux wakes the daemon when a pane ends; listing every {} s as a safety net",
                        self.setup.cfg.sweep.as_secs_f64()
                    ));
                }
            }
            Notice::Changed => self.list_soon(now),
            Notice::Ended(err) => {
                let started = match self.tmux.watch.state {
                    WatchState::Starting(t) | WatchState::On(t) => Some(t),
                    WatchState::Off => None,
                };
                let w = &mut self.tmux.watch;
                w.state = WatchState::Off;
                if started.is_some_and(|t| now.mono.saturating_sub(t) >= WATCH_STABLE) {
                    w.failures = 0;
                }
                let delay = if w.failures == 0 {
                    Duration::ZERO
                } else {
                    let doubled = WATCH_RETRY.saturating_mul(1 << w.failures.min(16));
                    doubled.min(WATCH_RETRY_MAX)
                };
                w.failures = w.failures.saturating_add(1);
                w.retry_at = Some(now.mono + delay);
                w.announced = false;
                let every = self.sweep_every();
                self.log(format!(
                    "the tmux watch ended ({err}); listing every {} ms until it runs again, next try in {} ms",
                    every.as_millis(),
                    delay.as_millis()
                ));
                // Whatever ended it may have ended panes too.
                self.list_soon(now);
            }
        }
    }

    /// Carries out a finished job's consequences.
    pub(super) fn done(&mut self, done: Done, now: Now, rng: &mut impl Rng) {
        let Some(pending) = self.tmux.jobs.remove(&done.id) else {
            return;
        };
        self.tmux.last_done = now.mono;
        match (pending.then, done.outcome) {
            (Then::Probe { adopt }, Outcome::Probed { version, listing }) => {
                self.tmux.probing = false;
                self.probed(done.id, version, listing, adopt, now, rng);
                // Still down: the retry schedule decides when to look again.
                if self.tmux.health.is_up() && std::mem::take(&mut self.tmux.relist) {
                    self.list_soon(now);
                }
            }
            (Then::Observe, Outcome::Listed(listing)) => {
                self.tmux.listing = None;
                match listing {
                    Ok(obs) => {
                        self.tmux_answered(matches!(obs, Observation::Panes(_)), now);
                        self.observe(obs, done.id, now, rng);
                    }
                    Err(e) => self.job_failed(&e, now, rng),
                }
                if std::mem::take(&mut self.tmux.relist) {
                    self.list_soon(now);
                }
            }
            (Then::Spawn(uids, places), Outcome::Spawned(results)) => {
                let made: Vec<u32> = results
                    .iter()
                    .filter_map(|r| r.as_ref().ok().map(|s| s.pane_pid))
                    .collect();
                if !made.is_empty() {
                    self.out.push(Output::PanesChanged(made));
                }
                for ((uid, place), result) in uids.into_iter().zip(places).zip(results) {
                    self.spawned(uid, place, result, now, rng);
                }
            }
            (Then::Kill { pane, what }, Outcome::Killed(result)) => {
                if let Err(e) = result {
                    // The next listing finds the pane if it is still there
                    // and removes it as a stray.
                    self.log(format!("cannot kill pane {pane} of {what}: {e}"));
                    self.job_failed(&e, now, rng);
                    self.list_soon(now);
                }
            }
            (Then::Reply { id, done }, Outcome::Sent(result)) => {
                if self.tmux.failed.remove(&id) {
                    return;
                }
                let resp = match result {
                    Ok(()) => Response::Done(done),
                    Err(e) => {
                        self.job_failed(&e, now, rng);
                        Response::Error(Error::tmux(e.to_string()))
                    }
                };
                self.reply(id, resp);
            }
            (Then::Typed { id }, Outcome::Sent(result)) => {
                if let Err(e) = result
                    && self.tmux.failed.insert(id)
                {
                    self.job_failed(&e, now, rng);
                    self.reply(id, Response::Error(Error::tmux(e.to_string())));
                }
            }
            (Then::Decorate, Outcome::Sent(result)) => {
                self.ws.decorating = false;
                if let Err(e) = result {
                    // Shown again at the next change; nothing else hangs on it.
                    self.ws.shown.clear();
                    self.job_failed(&e, now, rng);
                }
            }
            (Then::ReplyText { id }, Outcome::Captured(result)) => {
                let resp = match result {
                    Ok(text) => Response::Text(text),
                    Err(e) => {
                        self.job_failed(&e, now, rng);
                        Response::Error(Error::tmux(e.to_string()))
                    }
                };
                self.reply(id, resp);
            }
            (Then::Screen { uid, at }, Outcome::Captured(result)) => {
                if let Err(e) = &result {
                    self.job_failed(e, now, rng);
                }
                self.screen_read(uid, at, result);
            }
            (_, outcome) => self.log(format!("unexpected tmux outcome {outcome:?}")),
        }
    }

    fn probed(
        &mut self,
        id: JobId,
        version: std::result::Result<String, SubstrateError>,
        listing: Option<std::result::Result<Observation, SubstrateError>>,
        adopt: bool,
        now: Now,
        rng: &mut impl Rng,
    ) {
        let v = match version {
            Ok(v) => v,
            Err(e) => return self.tmux_failure(&e, now, rng),
        };
        self.tmux.health.version = Some(v);
        let obs = match listing {
            Some(Ok(obs)) => obs,
            Some(Err(e)) => return self.tmux_failure(&e, now, rng),
            None => return,
        };
        self.tmux_answered(matches!(obs, Observation::Panes(_)), now);
        let confirmed = self.observe(obs, id, now, rng);
        if adopt && confirmed > 0 {
            self.emit(Event::new(
                now.wall,
                EventKind::Adopted,
                "",
                format!("re-adopted {confirmed} running panes"),
            ));
        }
    }

    /// tmux answered (`server`: and a server runs); says so if it was not up.
    fn tmux_answered(&mut self, server: bool, now: Now) {
        let was_up = self.tmux.health.is_up();
        self.tmux.health.success(server);
        if !was_up {
            let v = self
                .tmux
                .health
                .version
                .clone()
                .unwrap_or_else(|| "tmux".into());
            self.log(format!("tmux available: {v}"));
            self.emit(Event::new(now.wall, EventKind::TmuxUp, "", v));
        }
    }

    /// Asks whether tmux is back (`adopt` at start).
    pub(super) fn probe(&mut self, adopt: bool, now: Now) {
        if self.tmux.probing {
            return;
        }
        self.tmux.probing = true;
        self.submit(Job::Probe, Then::Probe { adopt }, now);
    }

    /// A listing now, unless one is under way.
    pub(super) fn list_now(&mut self, now: Now) {
        self.listed_at = now.mono;
        let id = self.submit(Job::List, Then::Observe, now);
        self.tmux.listing = Some(id);
    }

    /// A listing taken from now on, as soon as possible.
    pub(super) fn list_soon(&mut self, now: Now) {
        if self.tmux.listing.is_some() || self.tmux.probing {
            self.tmux.relist = true;
        } else if self.tmux.health.is_up() {
            // Even behind a stalled call: if that one times out, this one
            // fails at once and a probe follows.
            self.list_now(now);
        } else {
            // Down: the next probe lists, and it is due now.
            self.tmux.health.next_retry_at = Some(now.wall);
        }
    }

    /// A job failed. Only a failure to reach tmux (it cannot be run, it
    /// does not answer in time, the connection broke) takes it down or
    /// degraded; while it is not up, the probes keep the count. A vanished
    /// server is not a failure: a listing settles what it means. A command
    /// tmux refused says nothing about tmux.
    fn job_failed(&mut self, err: &SubstrateError, now: Now, rng: &mut impl Rng) {
        match err {
            SubstrateError::NoServer(_) => self.list_soon(now),
            SubstrateError::Refused(_) => {}
            _ if self.tmux.health.is_up() || self.tmux.health.state.is_none() => {
                self.tmux_failure(err, now, rng)
            }
            _ => {}
        }
    }

    pub(super) fn tmux_failure(&mut self, err: &SubstrateError, now: Now, rng: &mut impl Rng) {
        let was_up = self.tmux.health.is_up();
        let cfg = &self.setup.cfg;
        let backoff = Curve {
            initial: cfg.retry_base,
            max: cfg.retry_max,
            factor: 2.0,
            jitter: cfg.retry_jitter,
        };
        self.tmux
            .health
            .failure(err, now.wall, &backoff, rng.jitter());
        let h = &self.tmux.health;
        let view = h.view(None, None);
        let msg = format!(
            "tmux unavailable: state={} error={:?} retry_in_ms={} next_retry_at={} consecutive_failures={}",
            view.state,
            err.to_string(),
            h.next_retry_at
                .map_or(0, |t| (t - now.wall).num_milliseconds()),
            h.next_retry_at.map_or("-".into(), |t| t
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            h.consecutive_failures
        );
        self.log(msg);
        if was_up {
            self.emit(Event::new(
                now.wall,
                EventKind::TmuxDown,
                "",
                err.to_string(),
            ));
        }
    }

    /// Asks tmux for the panes of every queued session, in one batch. A
    /// session whose team's tmux session (or tiled role's window) is being
    /// made waits in the queue for it.
    pub(super) fn spawn_queued(&mut self, now: Now) {
        let mut placed = Vec::new();
        let mut reqs = Vec::new();
        let mut waiting = Vec::new();
        let mut reruns = Vec::new();
        for uid in std::mem::take(&mut self.tmux.queue) {
            let Some(s) = self.world.sessions.get(&uid).filter(|s| s.state.is_live()) else {
                continue;
            };
            let Some(spec) = self.world.role_spec(&s.key.role()) else {
                continue;
            };
            // Its worktree is still being made.
            if self.git.preparing.contains(&uid) {
                waiting.push(uid);
                continue;
            }
            if let Some((kept, rerun)) = self.rerun_in_kept_pane(s, spec) {
                reruns.push((uid, kept, rerun));
                continue;
            }
            let Some((place, session)) = workspace::place(&mut self.ws, &self.world, s, spec)
            else {
                waiting.push(uid);
                continue;
            };
            reqs.push(super::spawn::request(&self.setup, s, spec, place));
            placed.push((uid, session));
        }
        self.tmux.queue = waiting;
        if !reruns.is_empty() {
            self.rerun_in_kept_panes(reruns, now);
        }
        if placed.is_empty() {
            return;
        }
        for (uid, session) in &placed {
            if let Some(s) = self.world.sessions.get_mut(uid) {
                s.tmux_session = session.clone();
            }
        }
        // The uids handed out must be on disk before any pane carries one,
        // so that a daemon that crashes now never hands them out again.
        if self.world.uid_reserved != self.uids_written {
            self.uids_written = self.world.uid_reserved;
            self.dirty = false;
            self.out.push(Output::Persist(Durability::Now));
        }
        let places = reqs.iter().map(|r| r.place.clone()).collect();
        let uids = placed.into_iter().map(|(uid, _)| uid).collect();
        self.submit(Job::Spawn(reqs), Then::Spawn(uids, places), now);
    }

    /// How `s` runs in its slot's kept pane when the shim there can run
    /// it itself: the kept pane, and what to ask of its shim. A
    /// replacement that takes over a running session's pane cannot.
    fn rerun_in_kept_pane(&self, s: &Session, spec: &RoleSpec) -> Option<(KeptPane, Output)> {
        if self.ws.vacated.contains_key(&s.key) {
            return None;
        }
        let k = self.world.kept.get(&s.key).filter(|k| k.rerun)?;
        let rerun = self.rerun(k.uid, k.shim_pid?, s, spec)?;
        Some((k.clone(), rerun))
    }

    /// Asking the shim `pid` that stays in the pane of spawn `of` to run
    /// `s` there.
    fn rerun(&self, of: u64, pid: u32, s: &Session, spec: &RoleSpec) -> Option<Output> {
        Some(Output::Rerun {
            of,
            pid,
            parent: self.ws.server_pid?,
            next: super::spawn::next_run(&self.setup, s, spec),
        })
    }

    /// Sessions that run in their slots' kept panes, by the shims there:
    /// placed at once, written (so that a daemon that dies now asks again,
    /// see `ask_reruns_again`), then the shims are asked.
    fn rerun_in_kept_panes(&mut self, reruns: Vec<(u64, KeptPane, Output)>, now: Now) {
        let mut asks = Vec::new();
        for (uid, k, ask) in reruns {
            let Some(key) = self.world.sessions.get(&uid).map(|s| s.key.clone()) else {
                continue;
            };
            let sp = Spawned {
                pane: k.pane.clone(),
                pane_pid: k.shim_pid.unwrap_or_default(),
                window: k.window.clone(),
                server_pid: None,
            };
            if let Some(s) = self.world.sessions.get_mut(&uid) {
                s.tmux_session = k.tmux_session.clone();
                s.rerun_of = Some(k.uid);
            }
            self.placed(uid, &key, sp, now);
            asks.push(ask);
        }
        // A uid reserved since the last write is on disk before any shim
        // carries it; a placement alone needs only be written.
        let reserved = self.world.uid_reserved != self.uids_written;
        self.uids_written = self.world.uid_reserved;
        self.dirty = false;
        self.out.push(Output::Persist(if reserved {
            Durability::Now
        } else {
            Durability::Soon
        }));
        self.out.extend(asks);
    }

    /// The shim of a kept pane was asked to run spawn `uid` there, or could
    /// not be: it is gone, and so is the program it was to run.
    pub(super) fn reran(&mut self, uid: u64, asked: bool, now: Now, rng: &mut impl Rng) {
        let pending = self
            .world
            .sessions
            .get(&uid)
            .is_some_and(|s| s.state.is_live() && s.pid.is_none());
        if asked || !pending {
            return;
        }
        let pane = self.world.sessions[&uid].pane.clone().unwrap_or_default();
        let why = format!("the shim in pane {pane} is gone");
        self.log(format!("{why}: spawn {uid} cannot run there"));
        // Its pane stays for the slot, respawned by the next spawn.
        let exit = Exit::detail(ExitDetail::StartFailed(why), now.wall);
        self.record_death_from_log(uid, exit, now, rng);
    }

    /// After a daemon restart, shims that may not have been asked to run
    /// their pane's next spawn (the daemon died in between) are asked
    /// again; one that was already runs it or has run it, and takes no
    /// second ask.
    fn ask_reruns_again(&mut self, listed: &HashMap<&str, &PaneInfo>) {
        let asks: Vec<Output> = self
            .live_uids()
            .into_iter()
            .filter_map(|uid| {
                let s = &self.world.sessions[&uid];
                let of = s.rerun_of.filter(|_| s.pid.is_none())?;
                let p = listed.get(s.pane.as_deref()?)?;
                if p.dead || Some(p.pane_pid) != s.pane_pid {
                    return None;
                }
                let spec = self.world.role_spec(&s.key.role())?;
                self.rerun(of, p.pane_pid, s, spec)
            })
            .collect();
        self.out.extend(asks);
    }

    fn spawned(
        &mut self,
        uid: u64,
        place: Place,
        result: std::result::Result<Spawned, SubstrateError>,
        now: Now,
        rng: &mut impl Rng,
    ) {
        let refused = match &result {
            Err(SubstrateError::Refused(why)) => Some(why.as_str()),
            _ => None,
        };
        self.placement_done(&place, uid, result.is_ok(), refused, now);
        let live = self
            .world
            .sessions
            .get(&uid)
            .filter(|s| s.state.is_live())
            .map(|s| s.key.clone());
        let early = self.early_exits.remove(&uid);
        match (result, live) {
            (Ok(sp), Some(key)) => self.placed(uid, &key, sp, now),
            // Stopped while its pane was being made.
            (Ok(sp), None) => self.kill_pane(sp.pane, format!("spawn {uid}"), now),
            // The workspace was not as believed (a pane or session gone, a
            // name taken, a window full): placed anew, a few times over.
            (Err(SubstrateError::Refused(why)), Some(key))
                if early.is_none() && stale_placement(&why) && self.retry_placement(uid) =>
            {
                self.log(format!("placing {key} again: {why}"));
            }
            // tmux refused to make this pane: the role's own doing (its
            // command, its directory), so it counts as a crash and backs
            // off like one, with tmux's words as the reason.
            (Err(SubstrateError::Refused(why)), Some(key)) if early.is_none() => {
                self.log(format!("spawn of {key} refused by tmux: {why}"));
                let exit = Exit::detail(ExitDetail::SpawnRefused(why), now.wall);
                self.record_death(uid, exit, now, rng);
            }
            (Err(e), live) => {
                // A program that ran and ended had a pane all the same
                // (tmux answered too late): its death is recorded below.
                if live.is_some()
                    && early.is_none()
                    && let Some(s) = self.world.spawn_failed(uid)
                {
                    self.dirty = true;
                    self.log(format!("spawn of {} failed: {e}", s.key));
                }
                self.job_failed(&e, now, rng);
            }
        }
        if !self.tmux.queue.contains(&uid) {
            // Placed, or given up on: its tries are done with.
            self.ws.attempts.remove(&uid);
            self.ws.plain.remove(&uid);
        }
        if let Some(early) = early {
            self.late_exit(uid, early, now, rng);
        }
    }

    /// What a placement's outcome teaches about the workspace.
    /// `refused` holds tmux's words when it refused the placement.
    fn placement_done(
        &mut self,
        place: &Place,
        uid: u64,
        ok: bool,
        refused: Option<&str>,
        now: Now,
    ) {
        self.ws.placing.remove(&uid);
        let Some(key) = self.world.sessions.get(&uid).map(|s| s.key.clone()) else {
            return;
        };
        let team = key.team();
        let why = refused.unwrap_or_default();
        match place {
            Place::NewSession { session, .. } => {
                self.ws.creating.remove(&team);
                if ok {
                    let base = workspace::base_session_name(&team);
                    if *session != base {
                        let msg = format!(
                            "tmux session name {base} is taken: team {team} is in tmux session {session}"
                        );
                        self.log(msg.clone());
                        self.emit(Event::new(now.wall, EventKind::Warning, "", msg));
                    }
                    self.ws.teams.insert(team, session.clone());
                } else {
                    // Someone took the name meanwhile: not ours to use.
                    self.ws.taken.insert(session.clone());
                }
            }
            Place::NewWindow { .. } if !ok && session_gone(why) => {
                self.ws.teams.remove(&team);
            }
            Place::Respawn { pane }
                if !ok && self.world.kept.get(&key).is_some_and(|k| k.pane == *pane) =>
            {
                self.world.kept.remove(&key);
                self.dirty = true;
            }
            _ => {}
        }
        self.ws.tiling.remove(&key.role());
    }

    /// Queues a spawn whose placement failed on a stale picture, unless it
    /// failed so often already that it counts as refused.
    fn retry_placement(&mut self, uid: u64) -> bool {
        let tries = self.ws.attempts.entry(uid).or_default();
        *tries += 1;
        if *tries >= workspace::PLACEMENT_TRIES {
            return false;
        }
        // Placed the plainest way from now on: whatever it was to go beside
        // or after may be gone again by the next try.
        self.ws.plain.insert(uid);
        self.tmux.queue.push(uid);
        true
    }

    /// A pending session's pane is known.
    fn placed(&mut self, uid: u64, key: &SessionKey, sp: Spawned, now: Now) {
        if sp.server_pid.is_some() {
            self.ws.server_pid = sp.server_pid;
        }
        // The slot's kept pane now runs this session.
        if self.world.kept.get(key).is_some_and(|k| k.pane == sp.pane) {
            self.world.kept.remove(key);
        }
        self.ensure_watch(now);
        let started = self
            .world
            .spawned(uid, sp.pane.clone(), sp.pane_pid, Some(sp.window));
        self.ws.dirty.insert(key.role());
        // Written at once: a daemon that crashed before would replay the
        // program's exit record onto a session without a pane, and the
        // pane, which the shim keeps showing the death, would go as a stray.
        // (The spawns of a batch are placed in one step: one write.)
        self.dirty = true;
        self.emit(Event::new(
            now.wall,
            EventKind::Created,
            key,
            format!("pane {}", sp.pane),
        ));
        if let Some(ev) = started {
            self.emit(ev);
        }
    }

    /// What the panes of changed roles show: window statuses, sent to
    /// tmux in one call, and the lines of kept panes, told to their shims.
    pub(super) fn redecorate(&mut self, now: Now) {
        let settled: Vec<RoleKey> = self
            .ws
            .settling
            .iter()
            .filter(|(_, at)| **at <= now.wall)
            .map(|(role, _)| role.clone())
            .collect();
        for role in settled {
            self.ws.settling.remove(&role);
            self.ws.dirty.insert(role);
        }
        if self.ws.dirty.is_empty() {
            return;
        }
        let roles = std::mem::take(&mut self.ws.dirty);
        let kept: HashSet<u64> = self.world.kept.values().map(|k| k.uid).collect();
        self.ws.lines.retain(|uid, _| kept.contains(uid));
        let lines = workspace::kept_lines(&self.world, &roles, self.setup.utc_offset);
        for (uid, line) in lines {
            if self.ws.lines.get(&uid) == Some(&line) {
                continue;
            }
            let shim = self
                .world
                .kept
                .values()
                .find(|k| k.uid == uid)
                .and_then(|k| k.shim_pid);
            if let (Some(pid), Some(parent)) = (shim, self.ws.server_pid) {
                self.ws.lines.insert(uid, line.clone());
                self.out.push(Output::ShowLine {
                    uid,
                    pid,
                    parent,
                    line,
                });
            }
        }
        if !self.tmux_ready(now) || self.ws.decorating || now.mono < self.ws.status_due() {
            // Told once tmux answers again, with what changes while the
            // statuses sent last are still being set (one tmux call at a
            // time), or when the rate of calls allows (`statuses_due`).
            // Nothing that looks at every session of a role is done
            // before then: in a bring-up, most steps land here.
            self.ws.dirty.extend(roles);
            return;
        }
        for role in &roles {
            match workspace::settles_at(&self.world, role, now.wall) {
                Some(at) => self.ws.settling.insert(role.clone(), at),
                None => self.ws.settling.remove(role),
            };
        }
        let windows =
            workspace::window_statuses(&self.world, &roles, self.setup.utc_offset, now.wall);
        let changed: Vec<Decoration> = windows
            .into_values()
            .filter(|d| self.ws.shown.get(&d.window) != Some(&d.status))
            .collect();
        if changed.is_empty() {
            return;
        }
        for d in &changed {
            self.ws.shown.insert(d.window.clone(), d.status.clone());
        }
        self.ws.decorating = true;
        self.ws.status_sending(now.mono);
        self.submit(Job::Decorate(changed), Then::Decorate, now);
    }

    /// When window statuses held back by their rate (`STATUS_BURST`) are
    /// to be sent.
    pub(super) fn statuses_due(&self, now: Now) -> Option<Duration> {
        let due = self.ws.status_due();
        let held = !self.ws.dirty.is_empty() && !self.ws.decorating && self.tmux_ready(now);
        (held && due > now.mono).then_some(due)
    }

    /// An exit reported before the session's spawn came back, now that it
    /// has: recorded after the creation.
    fn late_exit(&mut self, uid: u64, early: EarlyExit, now: Now, rng: &mut impl Rng) {
        self.exit_reported(uid, early.exit, early.hangup, now, rng);
        let answer = self.answer_to_exit(uid, "recorded");
        self.reply(early.reply, answer);
    }

    /// Removes a pane without waiting for tmux.
    pub(super) fn kill_pane(&mut self, pane: String, what: String, now: Now) {
        self.submit(Job::Kill(pane.clone()), Then::Kill { pane, what }, now);
    }

    /// Compares a listing with the live sessions: records the deaths of
    /// panes that are gone and removes our own panes nobody owns any more.
    /// Returns how many live sessions were confirmed. Sessions whose spawn
    /// had not come back when the listing was asked for are not judged:
    /// their pane is not known yet.
    fn observe(&mut self, obs: Observation, id: JobId, now: Now, rng: &mut impl Rng) -> usize {
        let panes = match obs {
            Observation::NoServer => {
                for uid in std::mem::take(&mut self.unplaced) {
                    self.world.spawn_failed(uid);
                }
                self.ws.server_pid = None;
                self.tmux_lost(now, rng);
                return 0;
            }
            Observation::Panes(p) => p,
        };
        self.place_by_name(&panes, now);
        self.learn_workspace(&panes);
        // Deaths known before this listing was asked for are settled: the
        // server still runs, so it is not to blame. What the shim recorded
        // meanwhile tells the end best.
        let mut settled: Vec<u64> = self
            .unsettled
            .iter()
            .filter(|(_, u)| u.from_job <= id)
            .map(|(uid, _)| *uid)
            .collect();
        let listed: HashMap<&str, &PaneInfo> = panes.iter().map(|p| (p.pane.as_str(), p)).collect();
        let mut confirmed = 0;
        let mut missing = Vec::new();
        for uid in self.live_uids() {
            let s = &self.world.sessions[&uid];
            let Some(pane) = s.pane.as_deref() else {
                continue;
            };
            let same = listed.get(pane).filter(|p| Some(p.pane_pid) == s.pane_pid);
            if same.is_some_and(|p| !p.dead) {
                confirmed += 1;
            } else if same.is_some_and(|p| p.dead) {
                // The pane's first process, the shim, is gone: what it
                // recorded is all there will be, so no later listing is
                // waited for.
                self.unsettled
                    .entry(uid)
                    .or_insert_with(|| super::Unsettled {
                        exit: Exit::detail(ExitDetail::PaneVanished, now.wall),
                        from_job: id,
                        settling: false,
                    });
                if !settled.contains(&uid) {
                    settled.push(uid);
                }
            } else if !self.unsettled.contains_key(&uid) || settled.contains(&uid) {
                // Gone: as the shim recorded it, or, when it has not (yet),
                // as a vanished pane unless the shim reports before the next
                // listing (see `exit_records`).
                missing.push(uid);
            }
        }
        if self.restored_reruns {
            self.restored_reruns = false;
            self.ask_reruns_again(&listed);
        }
        for uid in &settled {
            if let Some(u) = self.unsettled.get_mut(uid) {
                // Settled by the records' answer.
                u.settling = true;
            }
        }
        let rest: Vec<u64> = settled
            .into_iter()
            .filter(|u| !missing.contains(u))
            .collect();
        missing.extend(rest);
        if !missing.is_empty() {
            self.out.push(Output::ReadExitRecords(missing));
        }
        self.remove_strays(&panes, now);
        self.ensure_watch(now);
        confirmed
    }

    /// Sessions a previous daemon began to spawn but never heard back
    /// about: the pane carries the session's uid (or, made by an older
    /// version, its tmux session name) and this state directory's tag if
    /// it was made. Found ones are adopted, the others forgotten (their
    /// slot is filled again).
    fn place_by_name(&mut self, panes: &[PaneInfo], now: Now) {
        let owner = self.setup.owner_tag();
        for uid in std::mem::take(&mut self.unplaced) {
            let Some(s) = self.world.sessions.get(&uid).filter(|s| s.pane.is_none()) else {
                continue;
            };
            let key = s.key.clone();
            let found = panes.iter().find(|p| {
                p.owner == owner
                    && !p.dead
                    && (p.uid == Some(uid) || (p.uid.is_none() && p.session_name == s.tmux_session))
            });
            match found {
                Some(p) => {
                    self.log(format!(
                        "adopting pane {} of {key}, spawned before a restart",
                        p.pane
                    ));
                    let sp = Spawned {
                        pane: p.pane.clone(),
                        pane_pid: p.pane_pid,
                        window: p.window.clone(),
                        server_pid: p.server_pid,
                    };
                    self.placed(uid, &key, sp, now);
                    if p.uid.is_none()
                        && let Some(s) = self.world.sessions.get_mut(&uid)
                    {
                        // A pane of the older layout: its own tmux session.
                        s.window = None;
                    }
                }
                None => {
                    self.world.spawn_failed(uid);
                    self.dirty = true;
                }
            }
        }
    }

    /// What a listing tells of the workspace: the server's pid, which tmux
    /// session is which team's, which names are taken, and which kept
    /// panes are gone.
    fn learn_workspace(&mut self, panes: &[PaneInfo]) {
        let owner = self.setup.owner_tag();
        self.ws.server_pid = panes.iter().find_map(|p| p.server_pid);
        self.ws.taken = panes.iter().map(|p| p.session_name.clone()).collect();
        self.ws.teams = panes
            .iter()
            .filter(|p| p.owner == owner)
            .filter_map(|p| {
                let team = p
                    .team
                    .as_deref()?
                    .parse::<crate::domain::key::TeamKey>()
                    .ok()?;
                Some((team, p.session_name.clone()))
            })
            .collect();
        let listed: HashSet<&str> = panes.iter().map(|p| p.pane.as_str()).collect();
        let before = self.world.kept.len();
        self.world
            .kept
            .retain(|_, k| listed.contains(k.pane.as_str()));
        if self.world.kept.len() != before {
            self.dirty = true;
        }
    }

    /// Removes our own panes that neither a session owns nor a slot keeps
    /// (left by a spawn that timed out, or a kill that failed), so none can
    /// pile up. After an unreadable state file, the panes found are spared
    /// instead: they may be agents, and nothing says what they were.
    fn remove_strays(&mut self, panes: &[PaneInfo], now: Now) {
        let owner = self.setup.owner_tag();
        let owned: HashSet<&str> = self
            .world
            .sessions
            .values()
            .filter(|s| {
                s.state.is_live() || s.state == crate::domain::state::SessionState::Succeeded
            })
            .filter_map(|s| s.pane.as_deref())
            .chain(self.world.kept.values().map(|k| k.pane.as_str()))
            .collect();
        let strays: Vec<(String, u32)> = panes
            .iter()
            .filter(|p| p.owner == owner && !owned.contains(p.pane.as_str()))
            .map(|p| (p.pane.clone(), p.pane_pid))
            .collect();
        if std::mem::take(&mut self.spare_strays) && !strays.is_empty() {
            let ids: Vec<&str> = strays.iter().map(|(p, _)| p.as_str()).collect();
            let msg = format!(
                "left {} panes of the unreadable state running, unsupervised: {}; attach with `tmux{} attach -t PANE` to keep their work, then kill them",
                strays.len(),
                ids.join(" "),
                self.setup
                    .tmux_socket
                    .as_deref()
                    .map_or(String::new(), |s| format!(" -L {s}"))
            );
            self.log(msg.clone());
            self.emit(Event::new(now.wall, EventKind::Warning, "", msg));
            self.world.strays.extend(strays.iter().cloned());
            self.dirty = true;
        }
        let before = self.world.strays.len();
        self.world
            .strays
            .retain(|pane, pid| panes.iter().any(|p| p.pane == *pane && p.pane_pid == *pid));
        self.dirty |= self.world.strays.len() != before;
        for (pane, pid) in strays {
            if self.world.strays.get(&pane) != Some(&pid) {
                self.log(format!("removing pane {pane}: no session owns it"));
                self.kill_pane(pane, "no session".into(), now);
            }
        }
    }

    /// The tmux server is gone: every session with a pane (or an unsettled
    /// death) is marked crashed with that reason, and no role is charged.
    /// A spawn still under way is judged by its own outcome.
    fn tmux_lost(&mut self, now: Now, rng: &mut impl Rng) {
        let uids: Vec<u64> = self
            .live_uids()
            .into_iter()
            .filter(|uid| {
                self.world.sessions[uid].pane.is_some() || self.unsettled.contains_key(uid)
            })
            .collect();
        self.unsettled.clear();
        self.ws.lost();
        self.world.kept.clear();
        if uids.is_empty() {
            return;
        }
        self.log(format!(
            "tmux server lost; {} sessions marked crashed, no role charged",
            uids.len()
        ));
        self.emit(Event::new(
            now.wall,
            EventKind::TmuxDown,
            "",
            format!("tmux server lost with {} sessions", uids.len()),
        ));
        for uid in uids {
            let lost = Exit::detail(ExitDetail::TmuxLost, now.wall);
            self.record_death_from_log(uid, lost, now, rng);
        }
    }
}

/// Whether tmux refused a spawn because the workspace is not as believed:
/// the session or pane to place it in is gone, its name is taken, or the
/// window has no room.
fn stale_placement(why: &str) -> bool {
    why.contains("duplicate session")
        || session_gone(why)
        || why.contains("can't find")
        || why.contains("no space for new pane")
        || why.contains("pane too small")
}

/// Whether tmux refused a new window because its session is gone: named
/// so, or, on a server left with no session at all, any target unknown.
fn session_gone(why: &str) -> bool {
    why.contains("can't find session") || why.trim() == "no current target"
}

/// How tmux answered last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmuxState {
    Up,
    /// tmux runs but its server did not answer in time: nothing is known
    /// about the panes, and nothing is concluded from the silence.
    Degraded,
    /// tmux cannot be run, or failed.
    Down,
}

/// Whether tmux answers, and when to try again when it does not.
#[derive(Debug, Default, Clone)]
pub struct TmuxHealth {
    /// `None` until tmux first answers or fails.
    pub state: Option<TmuxState>,
    pub version: Option<String>,
    pub last_error: Option<String>,
    pub next_retry_at: Option<Time>,
    pub consecutive_failures: u32,
}

impl TmuxHealth {
    pub fn is_up(&self) -> bool {
        self.state == Some(TmuxState::Up)
    }

    /// tmux answered. Without a running `server` nothing proves one can
    /// start, so the failure count (and with it the retry pacing) stays
    /// until something succeeds on a server.
    pub fn success(&mut self, server: bool) {
        self.state = Some(TmuxState::Up);
        self.next_retry_at = None;
        if server {
            self.consecutive_failures = 0;
        }
    }

    /// Records a failure and schedules the next probe on the `retry`
    /// curve, spread by the jitter `sample`.
    pub fn failure(&mut self, err: &SubstrateError, now: Time, retry: &Curve, sample: f64) {
        self.state = Some(match err {
            SubstrateError::Timeout(_) => TmuxState::Degraded,
            _ => TmuxState::Down,
        });
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(err.to_string());
        let delay = policy::backoff_delay(retry, self.consecutive_failures, sample);
        self.next_retry_at = Some(after(now, delay));
    }

    pub fn retry_due(&self, now: Time) -> bool {
        self.state.is_some() && !self.is_up() && self.next_retry_at.is_some_and(|t| now >= t)
    }

    /// The wall clock jumped: the retry keeps the time it had left.
    pub fn shift_clock(&mut self, by: chrono::Duration) {
        self.next_retry_at = self
            .next_retry_at
            .map(|t| t.checked_add_signed(by).unwrap_or(t));
    }

    /// What `status` shows. A call that has run `stalled` past its expected
    /// time makes an up tmux show as degraded before the call times out.
    pub fn view(&self, socket: Option<String>, stalled: Option<Duration>) -> TmuxView {
        let mut state = self.state;
        let mut last_error = self.last_error.clone();
        if let (Some(TmuxState::Up), Some(d)) = (state, stalled) {
            state = Some(TmuxState::Degraded);
            last_error = Some(format!(
                "tmux has not answered for {} ms",
                (SLOW + d).as_millis()
            ));
        }
        TmuxView {
            state: match state {
                Some(TmuxState::Up) => view::TmuxState::Up,
                Some(TmuxState::Degraded) => view::TmuxState::Degraded,
                Some(TmuxState::Down) => view::TmuxState::Down,
                None => view::TmuxState::Unknown,
            },
            version: self.version.clone(),
            socket,
            last_error,
            next_retry_at: self.next_retry_at,
            consecutive_failures: self.consecutive_failures,
        }
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    fn retry() -> Curve {
        Curve {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            factor: 2.0,
            jitter: 0.0,
        }
    }

    #[test]
    fn tmux_retries_back_off_and_reset_on_success() {
        let now: Time = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut h = TmuxHealth::default();
        assert_eq!(h.view(None, None).state.as_str(), "unknown");
        let boom = SubstrateError::Unreachable("boom".into());
        h.failure(&boom, now, &retry(), 0.0);
        assert_eq!(
            h.next_retry_at,
            Some(after(now, Duration::from_millis(100)))
        );
        h.failure(&boom, now, &retry(), 0.0);
        assert_eq!(
            h.next_retry_at,
            Some(after(now, Duration::from_millis(200)))
        );
        assert_eq!(h.view(None, None).consecutive_failures, 2);
        assert_eq!(h.view(None, None).state.as_str(), "down");
        assert!(!h.retry_due(now));
        assert!(h.retry_due(after(now, Duration::from_millis(200))));
        // tmux runs but no server does yet: up, and the pacing is kept.
        h.success(false);
        assert!(h.is_up() && h.consecutive_failures == 2 && h.next_retry_at.is_none());
        h.success(true);
        assert!(h.is_up() && h.consecutive_failures == 0);
    }

    #[test]
    fn a_timeout_is_degraded_and_a_stalled_call_shows_before_it_times_out() {
        let now: Time = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut h = TmuxHealth::default();
        h.success(true);
        let v = h.view(None, Some(Duration::from_millis(500)));
        assert_eq!(v.state.as_str(), "degraded");
        assert_eq!(v.last_error.unwrap(), "tmux has not answered for 1500 ms");
        assert_eq!(h.view(None, None).state.as_str(), "up");
        h.failure(
            &SubstrateError::Timeout(Duration::from_secs(1)),
            now,
            &retry(),
            0.0,
        );
        let v = h.view(None, None);
        assert_eq!(v.state.as_str(), "degraded");
        assert!(
            v.last_error
                .unwrap()
                .contains("did not answer within 1000 ms")
        );
        assert!(v.next_retry_at.is_some());
    }
}
