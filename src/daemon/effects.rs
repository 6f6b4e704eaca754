//! What the daemon asks of tmux, and what it does with each answer. Every
//! call goes to the worker thread with a note of what to do when it comes
//! back ([`Then`]); the loop carries on meanwhile. A failed or timed-out
//! call is *unknown*: only a successful listing, a server that is gone, a
//! shim's exit report or a machine restart ever ends a session.

use std::sync::mpsc::Sender;
use std::time::Instant;

use chrono::Utc;

use crate::domain::event::{Event, EventKind};
use crate::domain::key::{RoleKey, SessionKey};
use crate::domain::state::{Exit, ExitDetail, Time};
use crate::error::{Error, Result};
use crate::proto::{Request, Response, ShimReport};
use crate::substrate::{Observation, Substrate, SubstrateError};

use super::server::Incoming;
use super::worker::{Done, Job, JobId, Outcome};
use super::{Daemon, MARKER_LINES, exec};

/// What to do with a job's outcome.
pub(super) enum Then {
    /// A probe: on success tmux is up and the listing is observed. `adopt`
    /// for the first one after a start, which re-adopts the panes.
    Probe { adopt: bool },
    /// A listing: compare it with the live sessions.
    Observe,
    /// A spawn batch, for these session uids in request order.
    Spawn(Vec<u64>),
    /// A pane to remove; a failure is only logged (the sweep retries).
    Kill { pane: String, what: String },
    /// The last screen of a dead session, then the answer to its shim,
    /// which keeps the pane open until it hears back.
    ExitScreen { uid: u64, reply: Sender<Response> },
    /// A client waits: `done` is its answer on success.
    Reply {
        reply: Sender<Response>,
        done: String,
    },
    /// A client waits for the captured text.
    ReplyText { reply: Sender<Response> },
}

/// A shim's exit report that arrived while the session's spawn was still
/// under way, and the shim waiting for its answer.
pub(super) struct EarlyExit {
    pub exit: Exit,
    pub hangup: bool,
    pub reply: Sender<Response>,
}

/// A death whose cause a later listing settles. A shim whose terminal hung
/// up cannot tell a killed pane from a server going away, and a server that
/// is exiting may still answer a listing asked for before. A pane missing
/// from a listing with no exit record yet may have a shim still on its way
/// with the details. Either way, the first listing asked for after this
/// was known settles it: a server gone makes it infrastructure loss,
/// anything else a death as recorded by the shim, or as `exit` says.
pub(super) struct Unsettled {
    pub exit: Exit,
    /// Only a listing with this id or a later one settles it.
    pub from_job: JobId,
}

impl<S: Substrate + Sync + 'static> Daemon<S> {
    pub(super) fn submit(&mut self, job: Job, then: Then) -> JobId {
        let id = self.worker.submit(job);
        self.pending.insert(id, then);
        id
    }

    /// tmux answers and no call is stuck: worth giving it new work.
    pub(super) fn tmux_ready(&self) -> bool {
        self.tmux.is_up() && self.worker.stalled_for().is_none()
    }

    pub(super) fn require_tmux(&self) -> Result<()> {
        if self.tmux_ready() {
            return Ok(());
        }
        let view = self
            .tmux
            .view(self.tmux_socket.clone(), self.worker.stalled_for());
        Err(Error::tmux(format!(
            "{} ({})",
            view.state,
            view.last_error
                .unwrap_or_else(|| "tmux has not answered yet".into())
        )))
    }

    /// Carries out a finished job's consequences.
    pub(super) fn done(&mut self, done: Done) {
        let now = Utc::now();
        let Some(then) = self.pending.remove(&done.id) else {
            return;
        };
        match (then, done.outcome) {
            (Then::Probe { adopt }, Outcome::Probed { version, listing }) => {
                self.probing = false;
                self.probed(done.id, version, listing, adopt, now);
                // Still down: the retry schedule decides when to look again.
                if self.tmux.is_up() && std::mem::take(&mut self.relist) {
                    self.list_soon();
                }
            }
            (Then::Observe, Outcome::Listed(listing)) => {
                self.listing = None;
                match listing {
                    Ok(obs) => {
                        self.tmux_answered(matches!(obs, Observation::Panes(_)), now);
                        self.observe(obs, done.id, now);
                    }
                    Err(e) => self.job_failed(&e, now),
                }
                if std::mem::take(&mut self.relist) {
                    self.list_soon();
                }
            }
            (Then::Spawn(uids), Outcome::Spawned(results)) => {
                for (uid, result) in uids.into_iter().zip(results) {
                    self.spawned(uid, result, now);
                }
            }
            (Then::Kill { pane, what }, Outcome::Killed(result)) => {
                if let Err(e) = result {
                    // The sweep removes the pane later if it is still there.
                    self.log(&format!("cannot kill pane {pane} of {what}: {e}"));
                    self.job_failed(&e, now);
                }
            }
            (Then::ExitScreen { uid, reply }, Outcome::Captured(screen)) => {
                match screen {
                    Ok(text) => {
                        let lines = exec::last_lines(&text, MARKER_LINES);
                        if !lines.is_empty() {
                            self.world.set_last_output(uid, lines);
                            self.dirty = true;
                        }
                    }
                    Err(e) => self.job_failed(&e, now),
                }
                let _ = reply.send(Response::Done("recorded".into()));
            }
            (Then::Reply { reply, done }, Outcome::Sent(result)) => {
                let resp = match result {
                    Ok(()) => Response::Done(done),
                    Err(e) => {
                        self.job_failed(&e, now);
                        Response::Error(Error::tmux(e.to_string()))
                    }
                };
                let _ = reply.send(resp);
            }
            (Then::ReplyText { reply }, Outcome::Captured(result)) => {
                let resp = match result {
                    Ok(text) => Response::Text(text),
                    Err(e) => {
                        self.job_failed(&e, now);
                        Response::Error(Error::tmux(e.to_string()))
                    }
                };
                let _ = reply.send(resp);
            }
            (_, outcome) => self.log(&format!("unexpected tmux outcome {outcome:?}")),
        }
    }

    fn probed(
        &mut self,
        id: JobId,
        version: std::result::Result<String, SubstrateError>,
        listing: Option<std::result::Result<Observation, SubstrateError>>,
        adopt: bool,
        now: Time,
    ) {
        let v = match version {
            Ok(v) => v,
            Err(e) => return self.tmux_failure(&e, now),
        };
        self.tmux.version = Some(v);
        let obs = match listing {
            Some(Ok(obs)) => obs,
            Some(Err(e)) => return self.tmux_failure(&e, now),
            None => return,
        };
        self.tmux_answered(matches!(obs, Observation::Panes(_)), now);
        let confirmed = self.observe(obs, id, now);
        if adopt && confirmed > 0 {
            self.emit(Event::new(
                now,
                EventKind::Adopted,
                "",
                format!("re-adopted {confirmed} running panes"),
            ));
        }
    }

    /// tmux answered (`server`: and a server runs); says so if it was not up.
    fn tmux_answered(&mut self, server: bool, now: Time) {
        let was_up = self.tmux.is_up();
        self.tmux.success(server);
        if !was_up {
            let v = self.tmux.version.clone().unwrap_or_else(|| "tmux".into());
            self.log(&format!("tmux available: {v}"));
            self.emit(Event::new(now, EventKind::TmuxUp, "", v));
        }
    }

    /// Asks whether tmux is back (`adopt` at start).
    pub(super) fn probe(&mut self, adopt: bool) {
        if self.probing {
            return;
        }
        self.probing = true;
        self.submit(Job::Probe, Then::Probe { adopt });
    }

    /// The safety-net sweep: one listing, unless one is already under way.
    pub(super) fn sweep(&mut self) {
        self.next_sweep = Instant::now() + self.cfg.sweep;
        if self.tmux_ready() && self.listing.is_none() {
            self.listing = Some(self.submit(Job::List, Then::Observe));
        }
        exec::prune_exit_records(&self.paths, &self.world);
    }

    /// A listing taken from now on, as soon as possible.
    pub(super) fn list_soon(&mut self) {
        if self.listing.is_some() || self.probing {
            self.relist = true;
        } else if self.tmux.is_up() {
            // Even behind a stalled call: if that one times out, this one
            // fails at once and a probe follows.
            self.listing = Some(self.submit(Job::List, Then::Observe));
        } else {
            // Down: the next probe lists, and it is due now.
            self.tmux.next_retry_at = Some(Utc::now());
        }
    }

    /// A failure of any job other than a probe: it takes tmux down (or
    /// degraded) if it was up; while it is not, the probes keep the count.
    /// A vanished server is not a failure: a listing settles what it means.
    fn job_failed(&mut self, err: &SubstrateError, now: Time) {
        if let SubstrateError::NoServer(_) = err {
            self.list_soon();
        } else if self.tmux.is_up() || self.tmux.state.is_none() {
            self.tmux_failure(err, now);
        }
    }

    pub(super) fn tmux_failure(&mut self, err: &SubstrateError, now: Time) {
        let was_up = self.tmux.is_up();
        self.tmux.failure(err, now, &self.cfg);
        let view = self.tmux.view(None, None);
        self.log(&format!(
            "tmux unavailable: state={} error={:?} retry_in_ms={} next_retry_at={} consecutive_failures={}",
            view.state,
            err.to_string(),
            self.tmux
                .next_retry_at
                .map_or(0, |t| (t - now).num_milliseconds()),
            self.tmux
                .next_retry_at
                .map_or("-".into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            self.tmux.consecutive_failures
        ));
        if was_up {
            self.emit(Event::new(now, EventKind::TmuxDown, "", err.to_string()));
        }
    }

    /// Creates sessions for these slots in one batch; the sessions stay
    /// pending, without a pane, until tmux answers.
    pub(super) fn spawn(&mut self, batch: Vec<(RoleKey, u32)>, now: Time) {
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
        if !uids.is_empty() {
            self.submit(Job::Spawn(reqs), Then::Spawn(uids));
        }
    }

    fn spawned(
        &mut self,
        uid: u64,
        result: std::result::Result<crate::substrate::Spawned, SubstrateError>,
        now: Time,
    ) {
        let live = self
            .world
            .sessions
            .get(&uid)
            .filter(|s| s.state.is_live())
            .map(|s| s.key.clone());
        let early = self.early_exits.remove(&uid);
        match (result, live) {
            (Ok(sp), Some(key)) => {
                self.placed(uid, &key, sp.pane, sp.pane_pid, now);
            }
            // Stopped while its pane was being made.
            (Ok(sp), None) => self.kill_pane(sp.pane, format!("spawn {uid}")),
            (Err(e), live) => {
                // A program that ran and ended had a pane all the same
                // (tmux answered too late): its death is recorded below.
                if live.is_some()
                    && early.is_none()
                    && let Some(s) = self.world.spawn_failed(uid)
                {
                    self.dirty = true;
                    self.log(&format!("spawn of {} failed: {e}", s.key));
                }
                self.job_failed(&e, now);
            }
        }
        if let Some(early) = early {
            self.late_exit(uid, early, now);
        }
    }

    /// A pending session's pane is known.
    fn placed(&mut self, uid: u64, key: &SessionKey, pane: String, pane_pid: u32, now: Time) {
        let started = self.world.spawned(uid, pane.clone(), pane_pid);
        self.dirty = true;
        self.emit(Event::new(
            now,
            EventKind::Created,
            key,
            format!("pane {pane}"),
        ));
        if let Some(ev) = started {
            self.emit(ev);
        }
    }

    /// An exit reported before the session's spawn came back, now that it
    /// has: recorded after the creation, with the last screen if it can be
    /// read.
    fn late_exit(&mut self, uid: u64, early: EarlyExit, now: Time) {
        let pane = self
            .world
            .sessions
            .get(&uid)
            .filter(|s| s.state.is_live())
            .and_then(|s| s.pane.clone());
        self.exit_reported(uid, early.exit, early.hangup, now);
        match pane {
            Some(pane) if !early.hangup && self.tmux_ready() => {
                let then = Then::ExitScreen {
                    uid,
                    reply: early.reply,
                };
                self.submit(Job::Capture { pane, history: 200 }, then);
            }
            _ => {
                let _ = early.reply.send(Response::Done("recorded".into()));
            }
        }
    }

    /// Whether a spawn under way will tell where session `uid` runs.
    fn spawning(&self, uid: u64) -> bool {
        self.pending
            .values()
            .any(|t| matches!(t, Then::Spawn(uids) if uids.contains(&uid)))
    }

    /// Removes a pane without waiting for tmux.
    pub(super) fn kill_pane(&mut self, pane: String, what: String) {
        self.submit(Job::Kill(pane.clone()), Then::Kill { pane, what });
    }

    /// Compares a listing with the live sessions: records the deaths of
    /// panes that are gone and removes our own panes nobody owns any more.
    /// Returns how many live sessions were confirmed. Sessions whose spawn
    /// had not come back when the listing was asked for are not judged:
    /// their pane is not known yet.
    fn observe(&mut self, obs: Observation, id: JobId, now: Time) -> usize {
        let panes = match obs {
            Observation::NoServer => {
                for uid in std::mem::take(&mut self.unplaced) {
                    self.world.spawn_failed(uid);
                }
                self.tmux_lost(now);
                return 0;
            }
            Observation::Panes(p) => p,
        };
        self.place_by_name(&panes, now);
        // Deaths known before this listing was asked for are settled: the
        // server still runs, so it is not to blame.
        let settled: Vec<u64> = self
            .unsettled
            .iter()
            .filter(|(_, u)| u.from_job <= id)
            .map(|(uid, _)| *uid)
            .collect();
        for uid in settled {
            if let Some(u) = self.unsettled.remove(&uid) {
                let exit = self.recorded_exit(uid).unwrap_or(u.exit);
                self.record_death(uid, exit, now, Vec::new());
            }
        }
        let listed: std::collections::HashMap<&str, &crate::substrate::PaneInfo> =
            panes.iter().map(|p| (p.pane.as_str(), p)).collect();
        let mut confirmed = 0;
        for uid in self.live_uids() {
            let s = &self.world.sessions[&uid];
            let Some(pane) = s.pane.as_deref() else {
                continue;
            };
            let found = listed
                .get(pane)
                .is_some_and(|p| Some(p.pane_pid) == s.pane_pid && !p.dead);
            if found {
                confirmed += 1;
                continue;
            }
            if self.unsettled.contains_key(&uid) {
                // Known after this listing was asked for: the next settles it.
                continue;
            }
            // Gone: as the shim recorded it, or, when it has not (yet), as a
            // vanished pane unless the shim reports before the next listing.
            match self.recorded_exit(uid) {
                Some(exit) => self.record_death(uid, exit, now, Vec::new()),
                None => {
                    let exit = Exit::detail(ExitDetail::PaneVanished, now);
                    let from_job = self.worker.next_id();
                    self.unsettled.insert(uid, Unsettled { exit, from_job });
                }
            }
        }
        self.remove_strays(&panes, now);
        confirmed
    }

    /// The end the shim of session `uid` wrote down, if it has.
    fn recorded_exit(&self, uid: u64) -> Option<Exit> {
        match exec::read_exit_record(&self.paths, uid)? {
            ShimReport::Exited {
                code,
                signal,
                at,
                hangup,
                ..
            } => Some(exec::exit_from_report(code, signal, at, hangup)),
            ShimReport::Started { .. } => None,
        }
    }

    /// Sessions a previous daemon began to spawn but never heard back
    /// about: the pane carries the session's tmux name and this state
    /// directory's tag if it was made. Found ones are adopted, the others
    /// forgotten (their slot is filled again).
    fn place_by_name(&mut self, panes: &[crate::substrate::PaneInfo], now: Time) {
        let owner = exec::owner_tag(&self.paths);
        for uid in std::mem::take(&mut self.unplaced) {
            let Some(s) = self.world.sessions.get(&uid).filter(|s| s.pane.is_none()) else {
                continue;
            };
            let key = s.key.clone();
            let found = panes
                .iter()
                .find(|p| p.session_name == s.tmux_session && p.owner == owner && !p.dead);
            match found {
                Some(p) => {
                    self.log(&format!(
                        "adopting pane {} of {key}, spawned before a restart",
                        p.pane
                    ));
                    self.placed(uid, &key, p.pane.clone(), p.pane_pid, now);
                }
                None => {
                    self.world.spawn_failed(uid);
                    self.dirty = true;
                }
            }
        }
    }

    /// Removes our own panes that no session owns (left by a spawn that
    /// timed out, or a kill that failed), so none can pile up. After an
    /// unreadable state file, the panes found are spared instead: they
    /// may be agents, and nothing says what they were.
    fn remove_strays(&mut self, panes: &[crate::substrate::PaneInfo], now: Time) {
        let owner = exec::owner_tag(&self.paths);
        let owned: std::collections::HashSet<&str> = self
            .world
            .sessions
            .values()
            .filter(|s| s.state.is_live())
            .filter_map(|s| s.pane.as_deref())
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
                self.tmux_socket
                    .as_deref()
                    .map_or(String::new(), |s| format!(" -L {s}"))
            );
            self.log(&msg);
            self.emit(Event::new(now, EventKind::Warning, "", msg));
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
                self.log(&format!("removing pane {pane}: no session owns it"));
                self.kill_pane(pane, "no session".into());
            }
        }
    }

    /// The tmux server is gone: every session with a pane (or an unsettled
    /// death) is marked crashed with that reason, and no role is charged.
    /// A spawn still under way is judged by its own outcome.
    fn tmux_lost(&mut self, now: Time) {
        let uids: Vec<u64> = self
            .live_uids()
            .into_iter()
            .filter(|uid| {
                self.world.sessions[uid].pane.is_some() || self.unsettled.contains_key(uid)
            })
            .collect();
        self.unsettled.clear();
        if uids.is_empty() {
            return;
        }
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

    /// The state was written before the machine last started: its tmux
    /// server and every program died with it, whatever the shims managed
    /// to record on the way down (a shutdown's SIGTERM is nobody's crash).
    pub(super) fn machine_restarted(&mut self) {
        let now = Utc::now();
        let uids = self.live_uids();
        let msg = format!(
            "the machine restarted since the state was saved: {} sessions lost with the tmux server, no role charged",
            uids.len()
        );
        self.log(&msg);
        self.emit(Event::new(now, EventKind::Warning, "", msg));
        for uid in uids {
            let lost = Exit::detail(ExitDetail::TmuxLost, now);
            self.record_death(uid, lost, now, Vec::new());
        }
    }

    /// A shim reports its program's end. A hang-up waits for a listing;
    /// any other end is recorded at once.
    pub(super) fn exit_reported(&mut self, uid: u64, exit: Exit, hangup: bool, now: Time) {
        if hangup {
            let from_job = self.worker.next_id();
            self.unsettled.insert(uid, Unsettled { exit, from_job });
            self.list_soon();
        } else {
            self.unsettled.remove(&uid);
            self.record_death(uid, exit, now, Vec::new());
        }
    }

    /// Requests that need tmux: answered when the worker reports back, so a
    /// slow or stopped server never holds up the loop. Returns the request
    /// when it is answered from state instead.
    pub(super) fn answer_with_tmux(&mut self, inc: Incoming, now: Time) -> Option<Incoming> {
        let (job, then) = match &inc.request {
            Request::Inject {
                key,
                text,
                enter,
                keys,
            } => {
                let s = match self.live_session(key) {
                    Ok(s) => s,
                    Err(e) => return reply(inc, Response::Error(e)),
                };
                let pane = s.pane.clone().unwrap_or_default();
                let job = if *keys {
                    Job::SendKeys {
                        pane,
                        keys: text.split_whitespace().map(str::to_string).collect(),
                    }
                } else {
                    Job::SendText {
                        pane,
                        text: text.clone(),
                        enter: *enter,
                    }
                };
                let done = format!("typed {} bytes into {}", text.len(), s.key);
                (
                    job,
                    Then::Reply {
                        reply: inc.reply.clone(),
                        done,
                    },
                )
            }
            Request::Capture { key } => {
                // A marker's or finished session's last lines come from state.
                let s = match self.find_session(key) {
                    Ok(s) if s.state.is_live() && s.pane.is_some() => s,
                    _ => return Some(inc),
                };
                if let Err(e) = self.require_tmux() {
                    return reply(inc, Response::Error(e));
                }
                let pane = s.pane.clone().unwrap_or_default();
                (
                    Job::Capture { pane, history: 0 },
                    Then::ReplyText {
                        reply: inc.reply.clone(),
                    },
                )
            }
            Request::Shim(ShimReport::Exited {
                uid,
                code,
                signal,
                at,
                hangup,
            }) => {
                let uid = *uid;
                let exit = exec::exit_from_report(*code, *signal, *at, *hangup);
                let Some(s) = self.world.sessions.get(&uid).filter(|s| s.state.is_live()) else {
                    return Some(inc);
                };
                match s.pane.clone() {
                    // The report overtook the answer to the spawn: the death
                    // waits for it, so that it follows the creation.
                    None if self.spawning(uid) => {
                        let early = EarlyExit {
                            exit,
                            hangup: *hangup,
                            reply: inc.reply.clone(),
                        };
                        self.early_exits.insert(uid, early);
                        return None;
                    }
                    // The shim keeps the pane open until answered, so its
                    // last screen can be read; the death is recorded meanwhile.
                    Some(pane) if !*hangup && self.tmux_ready() => {
                        let what = s.key.to_string();
                        self.exit_reported(uid, exit, false, now);
                        self.submit(
                            Job::Capture {
                                pane: pane.clone(),
                                history: 200,
                            },
                            Then::ExitScreen {
                                uid,
                                reply: inc.reply.clone(),
                            },
                        );
                        // Then the dead pane goes, on the same queue: before
                        // the replacement's spawn, whatever the backoff, so a
                        // role never shows more panes than its replicas.
                        self.kill_pane(pane, what);
                        return None;
                    }
                    _ => return Some(inc),
                }
            }
            _ => return Some(inc),
        };
        self.submit(job, then);
        None
    }
}

fn reply(inc: Incoming, resp: Response) -> Option<Incoming> {
    let _ = inc.reply.send(resp);
    None
}
