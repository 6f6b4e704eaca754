//! Answers to requests: one router over every request, one small handler
//! each. A handler answers at once (`Ok(Some)`), refuses (`Err`), or leaves
//! the answer to a tmux job's outcome (`Ok(None)`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::Rng;
use crate::domain::event::{Event, EventKind};
use crate::domain::health::HeartbeatError;
use crate::domain::key::{self, LookupError, RoleKey, SessionKey, TeamKey};
use crate::domain::reconcile::{self, RoleChange};
use crate::domain::spec::TeamSpec;
use crate::domain::state::{Heartbeat, Session, SessionState};
use crate::error::{Error, Result};
use crate::proto::{
    Change, EventFilter, Filter, Kind, LogCursor, PROTOCOL_VERSION, Request, Response,
    RoleChangeView, ShimReport,
};
use crate::view::{DaemonView, ProblemKind, ProblemView, StatusView, TmuxState};

use super::super::views;
use super::super::worker::Job;
use super::tmux::Then;
use super::{EarlyExit, LogRead, Now, Output, RequestId, Supervisor, reported_exit};

/// What a handler comes to.
type Answer = Result<Option<Response>>;

/// Typed text longer than this goes to tmux in pieces: each tmux command
/// travels in one message of at most 16 KiB.
const SEND_CHUNK: usize = 8 * 1024;

impl Supervisor {
    /// The router: every request, one handler each.
    pub(super) fn request(&mut self, id: RequestId, req: Request, now: Now, rng: &mut impl Rng) {
        if self.stopping.is_some() {
            let e = Error::daemon("the daemon is shutting down");
            return self.reply(id, Response::Error(e));
        }
        // What a user asks for is on disk before the next step; what the
        // programs and their shims say is the supervisor's own news.
        let from_user = !matches!(
            req,
            Request::Shim(_) | Request::Output { .. } | Request::Heartbeat { .. }
        );
        let answer: Answer = match req {
            Request::Ping => Ok(Some(Response::Pong {
                version: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION,
                pid: self.setup.pid,
            })),
            Request::Shim(report) => self.shim_report(id, report, now, rng),
            Request::Apply {
                team,
                source,
                force,
            } => self.apply_checked(id, team, source.map(PathBuf::from), force, now),
            Request::Plan { team, source } => self.plan(&team, source.map(PathBuf::from), now),
            Request::Down {
                team,
                source,
                force,
            } => self.down(id, &team, source.map(PathBuf::from), force, now),
            Request::StopRoles { key } => self.stop_roles(&key, now),
            Request::StartRoles { key } => self.start_roles(&key, now),
            Request::Restart { key } => self.restart(&key, now),
            Request::LogRead {
                key,
                lines,
                previous,
                since_ms,
                cursors,
            } => self.log_read(id, &key, lines, previous, since_ms, &cursors, now),
            Request::Get { kind, filter } => self.get(kind, &filter, now),
            Request::SessionRows { filter, wide } => self.session_rows(&filter, wide, now),
            Request::Describe { kind, key } => self.describe(kind, &key, now),
            Request::Inject {
                key,
                text,
                enter,
                keys,
                when_idle_ms,
            } => self.inject(id, &key, text, enter, keys, when_idle_ms, now),
            Request::Capture { key } => self.capture(id, &key, now),
            Request::Reset { key } => self.reset(&key, now),
            Request::Scale { key, replicas } => self.scale(&key, replicas, now),
            Request::Kill { key } => self.kill(&key, now),
            Request::Delete {
                key,
                prune_worktrees,
            } => self.delete(id, &key, prune_worktrees, now),
            Request::Attach { key } => self.attach(&key, now),
            Request::Events { filter, follow } => self.events(id, filter, follow),
            Request::Status => Ok(Some(self.status(now))),
            Request::Stop => {
                self.stopping =
                    Some(now.mono + self.setup.cfg.tmux_timeout * 2 + Duration::from_secs(1));
                Ok(Some(Response::Done(
                    "daemon stopping; panes keep running".into(),
                )))
            }
            Request::Heartbeat {
                session,
                uid,
                context_pct,
                note,
                state,
            } => {
                let content = Heartbeat {
                    context_pct: context_pct.map(u8::from),
                    note: note.map(String::from),
                };
                self.heartbeat(&session, uid, content, state, now)
            }
            Request::Output { uid, at, flowing } => self.output_report(uid, at, flowing).map(Some),
            Request::Shift {
                team,
                role,
                timeout_ms,
            } => self.start_shift(
                &team,
                role.as_deref(),
                Duration::from_millis(timeout_ms),
                false,
                now,
            ),
            Request::AbortShift { team } => self.abort_shift(&team, now),
        };
        self.urgent |= from_user && self.dirty;
        match answer {
            Ok(Some(response)) => self.reply(id, response),
            Ok(None) => {}
            Err(e) => self.reply(id, Response::Error(e)),
        }
    }

    /// A shim's word. Its exit is recorded at once, except a hang-up (a
    /// listing tells a killed pane from a lost server) and an exit that
    /// overtook its spawn (recorded after the creation). The pane stays,
    /// with the program's last screen, for the slot's next run.
    fn shim_report(
        &mut self,
        id: RequestId,
        report: ShimReport,
        now: Now,
        rng: &mut impl Rng,
    ) -> Answer {
        let done = || Ok(Some(Response::Done("recorded".into())));
        let (uid, run_in_answer) = match report {
            ShimReport::Started { uid, pid, at } => {
                if let Some(ev) = self.world.started(uid, pid, at) {
                    self.emit(ev);
                }
                // A start is written lazily: after a crash the shim's exit
                // record tells it again.
                self.persist_lazily(now);
                return done();
            }
            ShimReport::Exited {
                uid, run_in_answer, ..
            } => (uid, run_in_answer),
            ShimReport::LogComplete { uid } => {
                // The end was reported before the log had it all: its last
                // lines are read again.
                self.relog.insert(uid);
                self.out.push(Output::ReadLogTail { uid });
                return done();
            }
        };
        self.may_rerun(&report);
        // A program told to end has: no SIGKILL for it.
        self.escalations.retain(|e| e.uid != uid);
        let Some((exit, hangup)) = reported_exit(&report) else {
            return done();
        };
        let Some(s) = self.world.sessions.get(&uid).filter(|s| s.state.is_live()) else {
            // Ended already (killed for its heartbeats, say): its shim still
            // learns what its pane shows.
            self.ws.rerunnable.remove(&uid);
            self.remove_exit_record(uid);
            return Ok(Some(self.answer_to_exit(uid, "unknown session")));
        };
        if s.pane.is_none() && self.tmux.spawning(uid) {
            // The report overtook the answer to the spawn: the death waits
            // for it, so that it follows the creation.
            let early = EarlyExit {
                exit,
                hangup,
                reply: id,
            };
            self.early_exits.insert(uid, early);
            return Ok(None);
        }
        self.exit_reported(uid, exit, hangup, now, rng);
        let answer = self.answer_to_exit(uid, "recorded");
        let linger = matches!(answer, Response::Linger(_));
        self.reply(id, answer);
        // After the answer it is about.
        if run_in_answer && linger {
            self.await_run(uid, now);
        }
        Ok(None)
    }

    /// The slot of spawn `uid` runs next in its kept pane soon: its shim
    /// is to wait for that run in its answer (see [`Output::AwaitRun`]).
    fn await_run(&mut self, uid: u64, now: Now) {
        let Some((key, _)) = self
            .world
            .kept
            .iter()
            .find(|(_, k)| k.uid == uid && k.rerun)
        else {
            return;
        };
        let Some(history) = self.world.roles.get(&key.role()) else {
            return;
        };
        if history.frozen.is_some() {
            return;
        }
        let wait = history
            .next_restart_at
            .and_then(|t| (t - now.wall).to_std().ok())
            .unwrap_or(Duration::ZERO);
        if wait + super::RUN_SLACK <= super::HOLD_FOR_RUN {
            self.out.push(Output::AwaitRun {
                of: uid,
                by: now.mono + wait + super::RUN_SLACK,
            });
        }
    }

    /// What a shim is told once its program's end is known: to stay in its
    /// kept pane, showing a line, or that it is done.
    pub fn answer_to_exit(&mut self, uid: u64, done: &str) -> Response {
        match self.kept_line_of(uid) {
            Some(line) => Response::Linger(line),
            None => Response::Done(done.into()),
        }
    }

    /// The line the kept pane of spawn `uid` shows, if its pane is kept.
    pub(super) fn kept_line_of(&mut self, uid: u64) -> Option<String> {
        let key = self
            .world
            .kept
            .iter()
            .find(|(_, k)| k.uid == uid)
            .map(|(key, _)| key.clone())?;
        let line = super::workspace::kept_line(&self.world, &key, self.setup.utc_offset)?;
        self.ws.lines.insert(uid, line.clone());
        Some(line)
    }

    /// What stops `team` from being applied as things stand.
    pub(super) fn refuse_apply(
        &self,
        team: &TeamSpec,
        source: Option<&Path>,
        force: bool,
    ) -> Result<()> {
        let team_key = team.key();
        if !force {
            self.refuse_other_owner(&team_key, source, "run")?;
        }
        let old = self.world.teams.get(&team_key).map(|t| &t.spec);
        if reconcile::diff(old, team)
            .iter()
            .any(|(_, c)| *c != RoleChange::Unchanged)
        {
            self.refuse_while_shifting(&team_key, &format!("apply changes to {team_key}"))?;
        }
        Ok(())
    }

    pub(super) fn apply(
        &mut self,
        team: TeamSpec,
        source: Option<PathBuf>,
        force: bool,
        now: Now,
    ) -> Answer {
        let team_key = team.key();
        self.refuse_apply(&team, source.as_deref(), force)?;
        let (changes, evs) = self.world.apply(team, source, now.wall);
        self.emit_all(evs);
        self.dirty = true;
        let roles = changes
            .into_iter()
            .map(|(key, change)| self.change_view(&key, &change, now, false))
            .collect();
        let tmux_down = (!self.tmux_ready(now))
            .then(|| self.tmux_view(now))
            .filter(|t| matches!(t.state, TmuxState::Down | TmuxState::Degraded))
            .map(|t| match t.last_error {
                Some(e) => e,
                None => format!("tmux is {}", t.state),
            });
        Ok(Some(Response::Applied {
            team: team_key.to_string(),
            roles,
            tmux_down,
        }))
    }

    /// What applying `team` would do, changing nothing.
    fn plan(&mut self, team: &TeamSpec, source: Option<PathBuf>, now: Now) -> Answer {
        let key = team.key();
        let record = self.world.teams.get(&key);
        let changes = reconcile::diff(record.map(|t| &t.spec), team);
        let roles = changes
            .iter()
            .map(|(role, change)| self.change_view(role, change, now, true))
            .collect();
        Ok(Some(Response::Planned {
            team: key.to_string(),
            exists: record.is_some(),
            owner: self
                .world
                .owned_elsewhere(&key, source.as_deref())
                .map(|p| p.display().to_string()),
            roles,
        }))
    }

    /// One role's line of an apply or a plan. In a plan the world is as
    /// before the change.
    fn change_view(
        &self,
        key: &RoleKey,
        change: &RoleChange,
        now: Now,
        planning: bool,
    ) -> RoleChangeView {
        let spec = self.world.role_spec(key);
        let live = || {
            self.world
                .role_sessions(key)
                .filter(|s| s.state.is_live())
                .count() as u32
        };
        let frozen_reason = self.world.frozen_reason(key).map(str::to_string);
        let (kind, detail, fields, sessions) = match change {
            RoleChange::Created => {
                let n = match (planning, spec) {
                    (false, Some(s)) => s.replicas.get(),
                    _ => 0,
                };
                (Change::Created, replicas_text(n), Vec::new(), 0)
            }
            RoleChange::Unchanged => (Change::Unchanged, String::new(), Vec::new(), 0),
            RoleChange::Scaled { from, to } => (
                Change::Scaled,
                format!("{from} → {to}"),
                vec!["replicas".to_string()],
                0,
            ),
            RoleChange::Updated { fields } => (
                Change::Updated,
                format!("{} changed", fields.join(", ")),
                fields.iter().map(|f| f.to_string()).collect(),
                0,
            ),
            RoleChange::Replaced { fields } => (
                Change::Replaced,
                format!("{} changed", fields.join(", ")),
                fields.iter().map(|f| f.to_string()).collect(),
                live(),
            ),
            RoleChange::Removed => (Change::Removed, String::new(), Vec::new(), live()),
        };
        let _ = now;
        RoleChangeView {
            key: key.to_string(),
            change: kind,
            detail,
            unfreezes: planning && change.clears_history() && frozen_reason.is_some(),
            frozen_reason,
            fields,
            sessions,
            stopped: self.world.is_stopped(key),
        }
    }

    /// A team belongs to the manifest that declared it: refuses to change
    /// it from another file.
    fn refuse_other_owner(&self, team: &TeamKey, source: Option<&Path>, verb: &str) -> Result<()> {
        let Some(owner) = self.world.owned_elsewhere(team, source) else {
            return Ok(());
        };
        let file = source.map_or_else(String::new, |s| s.display().to_string());
        Err(Error::refused(
            format!(
                "team {team} belongs to {}, not to {file}: it was applied from that file",
                owner.display()
            ),
            Some(format!(
                "rename the team in {file}, or run `marvel {verb} {file} --force` to take it over"
            )),
        ))
    }

    /// `marvel down FILE`: removes exactly the team the file declares.
    fn down(
        &mut self,
        id: RequestId,
        team: &str,
        source: Option<PathBuf>,
        force: bool,
        now: Now,
    ) -> Answer {
        let key: TeamKey = team.parse().map_err(Error::usage)?;
        if !self.world.teams.contains_key(&key) {
            return Ok(Some(Response::Done(format!(
                "team {key} is not applied; nothing to remove"
            ))));
        }
        if !force {
            self.refuse_other_owner(&key, source.as_deref(), "down")?;
        }
        let n = self
            .world
            .sessions
            .values()
            .filter(|s| s.state.is_live() && s.key.team() == key)
            .count();
        let spec = self.world.teams[&key].spec.clone();
        if let Some(ev) = self.world.delete_team(&key, now.wall) {
            self.emit(ev);
        }
        self.dirty = true;
        let done = format!(
            "team {key} removed ({} stopped)",
            count(n as u32, "session")
        );
        self.leave_worktrees(id, &key, &spec, false, done)
    }

    /// The roles a lifecycle verb acts on: a role, or every role of a team.
    fn roles_of(&self, verb: &str, query: &str) -> Result<Vec<RoleKey>> {
        match self.find_any(query)? {
            Found::Role(r) => Ok(vec![r]),
            Found::Team(t) => Ok(self
                .world
                .role_keys()
                .into_iter()
                .filter(|r| r.team() == t)
                .collect()),
            Found::Session(s) => Err(Error::usage(format!(
                "{query} is a session; {verb} its role {}{}",
                short_role(query, &s.key),
                if verb == "stop" {
                    format!(", or replace it with `marvel restart {query}`")
                } else {
                    String::new()
                }
            ))),
        }
    }

    /// `marvel stop TEAM|ROLE`: its sessions stop (not a crash, nothing
    /// charged) and stay stopped, across daemon restarts, until started.
    fn stop_roles(&mut self, query: &str, now: Now) -> Answer {
        let roles = self.roles_of("stop", query)?;
        if let Some(team) = roles.first().map(RoleKey::team) {
            self.refuse_while_shifting(&team, &format!("stop {query}"))?;
        }
        let live = |w: &crate::domain::state::World, r: &RoleKey| {
            w.role_sessions(r).filter(|s| s.state.is_live()).count() as u32
        };
        let mut stopped = Vec::new();
        let mut sessions = 0;
        for role in &roles {
            sessions += live(&self.world, role);
            if let Some(ev) = self.world.set_stopped(role, true, now.wall) {
                self.emit(ev);
                stopped.push(role.to_string());
            }
        }
        self.dirty = true;
        if stopped.is_empty() {
            return Ok(Some(Response::Done(format!("{query}: already stopped"))));
        }
        Ok(Some(Response::Done(format!(
            "stopped {} ({} stopping, not a crash); `marvel start {query}` runs it again",
            stopped.join(", "),
            count(sessions, "session")
        ))))
    }

    /// `marvel start TEAM|ROLE`: a stopped role runs again.
    fn start_roles(&mut self, query: &str, now: Now) -> Answer {
        let roles = self.roles_of("start", query)?;
        let mut started = Vec::new();
        for role in &roles {
            if let Some(ev) = self.world.set_stopped(role, false, now.wall) {
                self.emit(ev);
                started.push(role.to_string());
            }
        }
        self.dirty = true;
        if started.is_empty() {
            return Ok(Some(Response::Done(format!(
                "{query}: not stopped; nothing to start"
            ))));
        }
        let frozen: Vec<String> = roles
            .iter()
            .filter(|r| self.world.frozen_reason(r).is_some())
            .map(|r| r.to_string())
            .collect();
        let mut msg = format!("started {}", started.join(", "));
        for role in frozen {
            msg.push_str(&format!(
                "\n{role} is frozen, so nothing is spawned: run `marvel reset role {role}` to restart it"
            ));
        }
        Ok(Some(Response::Done(msg)))
    }

    /// `marvel restart KEY`: a session is replaced now, as `kill` does
    /// (never a crash); a role or team is replaced one session at a time,
    /// new before old, by a shift.
    fn restart(&mut self, query: &str, now: Now) -> Answer {
        match self.find_any(query)? {
            Found::Session(_) => {
                let done = self.stop_session(
                    query,
                    "restarted",
                    "restarted on request (not a crash)",
                    now,
                )?;
                Ok(Some(Response::Done(format!(
                    "{done} restarting (not a crash)"
                ))))
            }
            found => {
                let (team, role) = match found {
                    Found::Role(r) => (r.team(), Some(r.role.clone())),
                    Found::Team(t) => (t, None),
                    Found::Session(_) => unreachable!("handled above"),
                };
                let roles: Vec<RoleKey> = match &role {
                    Some(r) => {
                        vec![team.role(&crate::domain::spec::Name::new(r).map_err(Error::usage)?)]
                    }
                    None => self
                        .world
                        .role_keys()
                        .into_iter()
                        .filter(|r| r.team() == team)
                        .collect(),
                };
                if let Some(r) = roles.iter().find(|r| self.world.is_stopped(r)) {
                    return Err(Error::refused(
                        format!("cannot restart {query}: role {r} is stopped"),
                        Some(format!("run `marvel start {r}` to run it again")),
                    ));
                }
                self.start_shift(
                    &team.to_string(),
                    role.as_deref(),
                    RESTART_TIMEOUT,
                    true,
                    now,
                )
            }
        }
    }

    /// A key that names nothing is an error, with a suggestion.
    fn known_keys(&self, filter: &Filter) -> Result<(), Error> {
        for q in &filter.keys {
            if let Err(e @ Error::NotFound { .. }) = self.find_any(q) {
                return Err(e);
            }
        }
        Ok(())
    }

    fn get(&self, kind: Kind, filter: &Filter, now: Now) -> Answer {
        self.known_keys(filter)?;
        Ok(Some(match kind {
            Kind::Sessions => Response::Sessions(views::sessions(&self.world, filter, now.wall)),
            Kind::Roles => Response::Roles(views::roles(&self.world, filter, now.wall)),
            Kind::Teams => Response::Teams(views::teams(&self.world, filter, now.wall)),
        }))
    }

    /// `get sessions` laid out into cells here: a listing of thousands
    /// leaves as short strings instead of whole records.
    fn session_rows(&self, filter: &Filter, wide: bool, now: Now) -> Answer {
        self.known_keys(filter)?;
        let sessions = views::sessions(&self.world, filter, now.wall);
        Ok(Some(Response::Rows(crate::output::sessions_rows(
            &sessions, now.wall, wide,
        ))))
    }

    fn describe(&self, kind: Kind, key: &str, now: Now) -> Answer {
        let recent = |k: String| {
            self.events.query(&EventFilter {
                key: Some(k),
                kinds: Vec::new(),
                limit: Some(20),
            })
        };
        let now = now.wall;
        let view = match kind {
            Kind::Sessions => {
                let s = self.find_session(key)?;
                let evs = recent(s.key.to_string());
                Some(views::describe_session(&self.world, &s, evs, now))
            }
            Kind::Roles => {
                let role = self.find_role(key)?;
                let evs = recent(role.to_string());
                views::describe_role(&self.world, &role, evs, now)
            }
            Kind::Teams => {
                let team = self.find_team(key)?;
                let evs = recent(team.to_string());
                views::describe_team(&self.world, &team, evs, now)
            }
        };
        let what = match kind {
            Kind::Sessions => "session",
            Kind::Roles => "role",
            Kind::Teams => "team",
        };
        let view = view.ok_or_else(|| Error::not_found(what, key))?;
        Ok(Some(Response::Described(Box::new(view))))
    }

    /// Typing needs tmux: answered once tmux has done it. With
    /// `when_idle_ms`, a busy session's text waits (parked, never holding
    /// up anything else) until it is idle or waiting, or the time is up.
    #[allow(clippy::too_many_arguments)]
    fn inject(
        &mut self,
        id: RequestId,
        key: &str,
        text: String,
        enter: bool,
        keys: bool,
        when_idle_ms: Option<u64>,
        now: Now,
    ) -> Answer {
        let s = self.live_session(key, now)?;
        if keys {
            check_keys(&text)?;
        }
        let busy = s.state != SessionState::Running
            || s.activity.state == crate::domain::activity::ActivityState::Busy;
        if let Some(ms) = when_idle_ms
            && busy
        {
            self.park(super::activity::Parked {
                id,
                key: s.key.clone(),
                uid: s.uid,
                text,
                enter,
                keys,
                until: now.mono + Duration::from_millis(ms),
            });
            return Ok(None);
        }
        let pane = s.pane.clone().unwrap_or_default();
        self.type_into(id, &s.key, &pane, text, enter, keys, now)?;
        Ok(None)
    }

    /// Submits the typing of `text` into `pane`; the last job answers `id`.
    /// Key names go in one job; text with a newline as one paste (a prompt
    /// of several lines must not be submitted line by line); other text
    /// in pieces, each within tmux's message limit.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn type_into(
        &mut self,
        id: RequestId,
        key: &SessionKey,
        pane: &str,
        text: String,
        enter: bool,
        keys: bool,
        now: Now,
    ) -> Result<()> {
        let pane = pane.to_string();
        let done = format!("typed {} bytes into {key}", text.len());
        if keys {
            check_keys(&text)?;
            let keys: Vec<String> = text.split_whitespace().map(str::to_string).collect();
            let job = Job::SendKeys { pane, keys };
            self.submit(job, Then::Reply { id, done }, now);
            return Ok(());
        }
        if text.contains('\n') {
            let job = Job::Paste { pane, text, enter };
            self.submit(job, Then::Reply { id, done }, now);
            return Ok(());
        }
        let chunks = chunk(&text, SEND_CHUNK);
        let last = chunks.len() - 1;
        for (i, piece) in chunks.into_iter().enumerate() {
            let job = Job::SendText {
                pane: pane.clone(),
                text: piece.to_string(),
                enter: enter && i == last,
            };
            let then = if i == last {
                Then::Reply {
                    id,
                    done: done.clone(),
                }
            } else {
                Then::Typed { id }
            };
            self.submit(job, then, now);
        }
        Ok(())
    }

    /// A live pane's screen comes from tmux, and so does the screen a
    /// crashed session left in its pane; otherwise a marker's or finished
    /// session's last lines come from state.
    fn capture(&mut self, id: RequestId, key: &str, now: Now) -> Answer {
        let s = self.find_session(key)?;
        let pane = match s.pane.clone() {
            Some(p) if s.state.is_live() => Some(p),
            _ => self
                .world
                .kept
                .get(&s.key)
                .filter(|k| k.uid == s.uid)
                .map(|k| k.pane.clone()),
        };
        match pane {
            Some(pane) => {
                self.require_tmux(now)?;
                let job = Job::Capture { pane, history: 0 };
                self.submit(job, Then::ReplyText { id }, now);
                Ok(None)
            }
            None => Ok(Some(Response::Text(s.last_output.join("\n") + "\n"))),
        }
    }

    fn reset(&mut self, key: &str, now: Now) -> Answer {
        let role = self.find_role(key)?;
        let ev = self.world.reset_role(&role, now.wall);
        let msg = ev.message.clone();
        self.emit(ev);
        self.dirty = true;
        Ok(Some(Response::Done(format!(
            "{role}: {}",
            msg.trim_start_matches("role reset: ")
        ))))
    }

    fn scale(&mut self, key: &str, replicas: u32, now: Now) -> Answer {
        if !(1..=crate::domain::spec::MAX_REPLICAS).contains(&replicas) && replicas != 0 {
            return Err(Error::usage(format!(
                "replicas must be between 0 and {}",
                crate::domain::spec::MAX_REPLICAS
            )));
        }
        let role = self.find_role_for("scale", key)?;
        let from = self.world.role_spec(&role).map_or(0, |s| s.replicas.get());
        let frozen = self.world.frozen_reason(&role).map(str::to_string);
        if from == replicas {
            return match frozen {
                Some(reason) => Err(frozen_error(
                    &role,
                    &reason,
                    &format!("{role} unchanged at {}, and", replicas_text(from)),
                )),
                None => Ok(Some(Response::Done(format!(
                    "{role} unchanged at {}",
                    replicas_text(from)
                )))),
            };
        }
        self.refuse_while_shifting(&role.team(), &format!("scale {role}"))?;
        let to = crate::domain::spec::Replicas::new(replicas).map_err(Error::usage)?;
        let (from, ev) = self
            .world
            .scale(&role, to, now.wall)
            .ok_or_else(|| Error::not_found("role", key))?;
        self.emit(ev);
        self.dirty = true;
        if let Some(reason) = frozen
            && replicas > from
        {
            return Err(frozen_error(
                &role,
                &reason,
                &format!("scaled {role} from {from} to {replicas} replicas, but"),
            ));
        }
        let stopped = if replicas == 0 {
            "; stopped until scaled up again"
        } else if self.world.is_stopped(&role) {
            "; the role is stopped (`marvel start` runs it)"
        } else {
            ""
        };
        Ok(Some(Response::Done(format!(
            "{role} scaled from {from} to {replicas} replicas{stopped}"
        ))))
    }

    /// `logs`: the runs to read for a session, a role or a team, in
    /// order: per slot, its current run (the newest live one, else the
    /// newest that ended), or the one before it with `previous`, or every
    /// kept run alive within `since`. A cursor says how much of a run was
    /// read already.
    #[allow(clippy::too_many_arguments)]
    fn log_read(
        &mut self,
        id: RequestId,
        query: &str,
        lines: usize,
        previous: bool,
        since_ms: Option<u64>,
        cursors: &[LogCursor],
        now: Now,
    ) -> Answer {
        let roles: Vec<RoleKey> = match self.find_any(query)? {
            Found::Team(t) => self
                .world
                .role_keys()
                .into_iter()
                .filter(|r| r.team() == t)
                .collect(),
            Found::Role(r) => vec![r],
            Found::Session(s) => {
                let runs = self.runs_of(&s.key.role(), Some(s.key.slot));
                return self.read_runs(id, query, runs, lines, previous, since_ms, cursors, now);
            }
        };
        let mut runs = Vec::new();
        for role in roles {
            runs.extend(self.runs_of(&role, None));
        }
        self.read_runs(id, query, runs, lines, previous, since_ms, cursors, now)
    }

    /// Every kept run of a role's slots (or of one slot), by slot then uid.
    fn runs_of(&self, role: &RoleKey, slot: Option<u32>) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        for s in self.world.all_session_records() {
            if s.key.is_of(role) && slot.is_none_or(|n| n == s.key.slot) {
                runs.push(Run {
                    key: s.key.to_string(),
                    slot: s.key.slot,
                    uid: s.uid,
                    live: s.state.is_live(),
                    ended_at: s.exit.as_ref().map(|e| e.at),
                    fallback: s.last_output.clone(),
                });
            }
        }
        if let Some(h) = self.world.roles.get(role) {
            for (n, past) in &h.past {
                if slot.is_some_and(|s| s != *n) {
                    continue;
                }
                for r in past {
                    if runs.iter().any(|x| x.uid == r.uid) {
                        continue;
                    }
                    runs.push(Run {
                        key: role.session(*n).to_string(),
                        slot: *n,
                        uid: r.uid,
                        live: false,
                        ended_at: Some(r.ended_at),
                        fallback: Vec::new(),
                    });
                }
            }
        }
        runs.sort_by_key(|r| (r.slot, r.uid));
        runs
    }

    #[allow(clippy::too_many_arguments)]
    fn read_runs(
        &mut self,
        id: RequestId,
        query: &str,
        runs: Vec<Run>,
        lines: usize,
        previous: bool,
        since_ms: Option<u64>,
        cursors: &[LogCursor],
        now: Now,
    ) -> Answer {
        let since = since_ms.map(|ms| now.wall - chrono::Duration::milliseconds(ms as i64));
        let mut chosen: Vec<Run> = Vec::new();
        // Runs come grouped by session key (role, then slot).
        let mut keys: Vec<&str> = runs.iter().map(|r| r.key.as_str()).collect();
        keys.dedup();
        for key in keys {
            let of_slot: Vec<&Run> = runs.iter().filter(|r| r.key == key).collect();
            let current = of_slot
                .iter()
                .filter(|r| r.live)
                .max_by_key(|r| r.uid)
                .or_else(|| of_slot.iter().max_by_key(|r| r.uid))
                .map(|r| r.uid);
            let Some(current) = current else { continue };
            if previous {
                if let Some(r) = of_slot
                    .iter()
                    .filter(|r| r.uid < current)
                    .max_by_key(|r| r.uid)
                {
                    chosen.push((*r).clone());
                }
                continue;
            }
            for r in of_slot {
                let alive_since =
                    since.is_some_and(|t| r.live || r.ended_at.is_some_and(|e| e >= t));
                if r.uid == current && since.is_none_or(|_| alive_since)
                    || r.uid < current && alive_since
                {
                    chosen.push(r.clone());
                }
            }
        }
        if chosen.is_empty() && previous {
            return Err(Error::not_found("earlier run", query).with_help(
                "marvel keeps the output of the two runs before the current one of each slot; this one has none",
            ));
        }
        let reads = chosen
            .into_iter()
            .map(|r| {
                let from = cursors.iter().find(|c| c.uid == r.uid).map(|c| c.offset);
                LogRead {
                    key: r.key,
                    uid: r.uid,
                    from,
                    lines,
                    ended: !r.live,
                    fallback: r.fallback,
                }
            })
            .collect();
        self.out.push(Output::ReplyLogs { id, reads });
        Ok(None)
    }

    /// Stops a session on purpose: replaced at once (in its own pane),
    /// never a crash.
    fn kill(&mut self, key: &str, now: Now) -> Answer {
        let done = self.stop_session(key, "killed", "killed on request (not a crash)", now)?;
        Ok(Some(Response::Done(format!("{done} killed"))))
    }

    /// Stops one session on purpose (`kill`, `restart`): the reconciler
    /// replaces it at once, resuming (its end said as `how`), and its role
    /// is not charged. A session still waiting for its pane needs no tmux
    /// to stop. Returns its key.
    fn stop_session(&mut self, key: &str, how: &str, why: &str, now: Now) -> Result<String> {
        let s = self.find_session(key)?;
        let s = if s.state.is_live() && s.pane.is_none() {
            s
        } else {
            self.live_session(key, now)?
        };
        let Some(stopped) = self.world.stop(s.uid, now.wall) else {
            return Err(Error::not_found("session", key));
        };
        self.world.note_end(&stopped, how.to_string());
        let key = stopped.key.to_string();
        self.emit(Event::new(now.wall, EventKind::Killed, &stopped.key, why));
        self.vacate(stopped, now);
        self.dirty = true;
        Ok(key)
    }

    /// Forgets a team and stops its sessions; its worktrees stay (or,
    /// with `prune`, those without uncommitted changes go).
    fn delete(&mut self, id: RequestId, key: &str, prune: bool, now: Now) -> Answer {
        let team = self.find_team(key)?;
        let spec = self.world.teams[&team].spec.clone();
        if let Some(ev) = self.world.delete_team(&team, now.wall) {
            self.emit(ev);
        }
        self.dirty = true;
        self.leave_worktrees(id, &team, &spec, prune, format!("team {team} deleted"))
    }

    /// What `attach` needs to build its own tmux command, as data: the
    /// team's tmux session and, for a session, its window and pane (the
    /// pane a crashed session left, while its slot keeps it).
    fn attach(&self, key: &str, now: Now) -> Answer {
        let sessions: Vec<SessionKey> = self
            .world
            .all_session_records()
            .iter()
            .map(|s| s.key.clone())
            .collect();
        let teams: Vec<TeamKey> = self.world.teams.keys().cloned().collect();
        // A key that names a session wins; otherwise it may name a team.
        if key::lookup(key, &sessions).is_err()
            && let Ok(team) = key::lookup(key, &teams)
        {
            self.require_tmux(now)?;
            let session = self.ws.teams.get(team).cloned().ok_or_else(|| {
                Error::refused(
                    format!("team {team} has no tmux session (none of its sessions has a pane)"),
                    None,
                )
            })?;
            return Ok(Some(Response::AttachTarget {
                tmux_session: session,
                window: None,
                pane: None,
            }));
        }
        let s = self.find_session(key)?;
        if !s.state.is_live()
            && let Some(k) = self.world.kept.get(&s.key).filter(|k| k.uid == s.uid)
        {
            self.require_tmux(now)?;
            return Ok(Some(Response::AttachTarget {
                tmux_session: k.tmux_session.clone(),
                window: Some(k.window.clone()),
                pane: Some(k.pane.clone()),
            }));
        }
        let s = self.live_session(key, now)?;
        Ok(Some(Response::AttachTarget {
            tmux_session: s.tmux_session,
            window: s.window,
            pane: s.pane,
        }))
    }

    fn events(&mut self, id: RequestId, filter: EventFilter, follow: bool) -> Answer {
        let evs = self.events.query(&filter);
        self.reply(id, Response::Events(evs));
        if follow {
            self.out.push(Output::Follow { id, filter });
        }
        Ok(None)
    }

    fn status(&self, now: Now) -> Response {
        let failing = self.persist_view();
        let tmux = self.tmux_view(now);
        let mut problems = Vec::new();
        if matches!(tmux.state, TmuxState::Down | TmuxState::Degraded) {
            problems.push(ProblemView {
                kind: ProblemKind::TmuxDown,
                key: String::new(),
                message: format!(
                    "tmux is {}{}: no session can be started or reached",
                    tmux.state,
                    tmux.last_error
                        .as_ref()
                        .map_or_else(String::new, |e| format!(" ({e})"))
                ),
                hint: "install tmux, or check that its server answers; marvel retries on its own"
                    .into(),
                at: tmux.next_retry_at,
            });
        }
        if let Some((e, since)) = &failing {
            problems.push(ProblemView {
                kind: ProblemKind::NotPersisted,
                key: String::new(),
                message: format!("the state is not persisted ({e}): supervising from memory"),
                hint: format!(
                    "free space in {}; marvel writes the state again as soon as it can",
                    self.setup.paths.root.display()
                ),
                at: Some(*since),
            });
        }
        if let Some((e, since)) = &self.event_log_failure {
            problems.push(ProblemView {
                kind: ProblemKind::EventLog,
                key: String::new(),
                message: format!("the event log is not written ({e}): events are kept in memory"),
                hint: format!("free space in {}", self.setup.paths.root.display()),
                at: Some(*since),
            });
        }
        problems.extend(views::problems(&self.world, now.wall));
        problems.sort_by_key(|p| p.kind);
        Response::Status(Box::new(StatusView {
            problems,
            daemon: DaemonView {
                pid: self.setup.pid,
                version: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION,
                started_at: self.setup.started_at,
                state_dir: self.setup.paths.root.display().to_string(),
                socket: self.setup.paths.socket().display().to_string(),
                sessions: self.live_uids().len() as u32,
                teams: self.world.teams.len() as u32,
                persist_error: failing.as_ref().map(|(e, _)| e.clone()),
                persist_failing_since: failing.map(|(_, t)| t),
                event_log_error: self.event_log_failure.as_ref().map(|(e, _)| e.clone()),
            },
            tmux,
        }))
    }

    /// `marvel heartbeat`. Not persisted on its own: heartbeat times are
    /// soft state, and a restarted daemon grants every session a fresh
    /// grace before it counts misses again.
    fn heartbeat(
        &mut self,
        session: &str,
        uid: Option<u64>,
        content: Heartbeat,
        state: Option<crate::domain::activity::ActivityState>,
        now: Now,
    ) -> Answer {
        let key: SessionKey = session.parse().map_err(Error::usage)?;
        let uid = self
            .world
            .heartbeat_target(&key, uid)
            .map_err(|e| match e {
                HeartbeatError::NotLive(key) => Error::refused(
                    format!("session {key} is not running here (it may have been replaced)"),
                    None,
                ),
                HeartbeatError::Mismatch { uid, key: other } => {
                    Error::refused(format!("session uid {uid} is {other}, not {key}"), None)
                }
            })?;
        self.world.heartbeat(uid, now.wall, content);
        if let Some(state) = state
            && let Some(ev) = self.world.declare_activity(uid, state, now.wall)
        {
            self.emit(ev);
            self.activity_changed = true;
        }
        Ok(Some(Response::Done(format!("heartbeat of {key} recorded"))))
    }

    /// A shift, or with `resume` the one `restart` starts.
    fn start_shift(
        &mut self,
        team: &str,
        role: Option<&str>,
        timeout: Duration,
        resume: bool,
        now: Now,
    ) -> Answer {
        let team = self.find_team(team)?;
        if let Some(role) = role
            && self.world.teams[&team].spec.role(role).is_none()
        {
            return Err(Error::not_found("role", format!("{team}/{role}")));
        }
        self.require_tmux(now)?;
        let started = if resume {
            self.world.start_restart(&team, role, timeout, now.wall)
        } else {
            self.world.start_shift(&team, role, timeout, now.wall)
        };
        let (_, ev) = started.map_err(|r| Error::refused(r.message, r.help))?;
        self.emit(ev);
        self.dirty = true;
        self.shift_reply(&team)
    }

    fn abort_shift(&mut self, team: &str, now: Now) -> Answer {
        let team = self.find_team(team)?;
        let ev = self
            .world
            .abort_shift(&team, "on request", now.wall)
            .ok_or_else(|| Error::refused(format!("team {team} has no shift in progress"), None))?;
        self.emit(ev);
        self.dirty = true;
        self.shift_reply(&team)
    }

    fn shift_reply(&self, team: &TeamKey) -> Answer {
        let shift = views::shift(&self.world, team)
            .ok_or_else(|| Error::other(format!("team {team} has no shift")))?;
        Ok(Some(Response::Shift {
            team: team.to_string(),
            shift,
        }))
    }

    /// Refuses to scale or change a team while it shifts: the shift counts
    /// on the replicas it started with.
    fn refuse_while_shifting(&self, team: &TeamKey, what: &str) -> Result<()> {
        let Some(sh) = self.world.shifting(team) else {
            return Ok(());
        };
        Err(Error::refused(
            format!(
                "cannot {what}: team {team} is shifting ({}, {} of {} sessions replaced)",
                sh.current_role().unwrap_or("-"),
                sh.replaced(&self.world, team),
                sh.total
            ),
            Some(format!(
                "wait for the shift to end, or stop it with `marvel shift {team} --abort`"
            )),
        ))
    }

    /// Any session record (live, succeeded or a crashed marker); a live one
    /// wins when several share the key. A key of a role or team is
    /// refused with what it names.
    fn find_session(&self, query: &str) -> Result<Session> {
        let records = self.world.all_session_records();
        let keys: Vec<SessionKey> = records.iter().map(|s| s.key.clone()).collect();
        let key = match resolve("session", query, &keys) {
            Ok(k) => k,
            Err(e) => return Err(self.wrong_kind(query, "session", "").unwrap_or(e)),
        };
        let mut matching: Vec<&Session> = records.into_iter().filter(|s| s.key == key).collect();
        matching.sort_by_key(|s| (s.state.is_live(), s.uid));
        Ok((*matching.last().expect("resolved key has a record")).clone())
    }

    /// A session with a pane to act on; a crashed or finished one is refused.
    fn live_session(&self, query: &str, now: Now) -> Result<Session> {
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
        self.require_tmux(now)?;
        Ok(s)
    }

    fn find_role(&self, query: &str) -> Result<RoleKey> {
        self.find_role_for("", query)
    }

    /// A role for `verb`: a session's or a team's key is refused with what
    /// it names.
    fn find_role_for(&self, verb: &str, query: &str) -> Result<RoleKey> {
        let keys = self.world.role_keys();
        resolve("role", query, &keys).map_err(|e| self.wrong_kind(query, "role", verb).unwrap_or(e))
    }

    fn find_team(&self, query: &str) -> Result<TeamKey> {
        let keys: Vec<TeamKey> = self.world.teams.keys().cloned().collect();
        resolve("team", query, &keys).map_err(|e| self.wrong_kind(query, "team", "").unwrap_or(e))
    }

    /// Any key: a team, a role or a session. An exact full key wins, then
    /// a suffix that names one resource of one kind.
    fn find_any(&self, query: &str) -> Result<Found> {
        let teams: Vec<TeamKey> = self.world.teams.keys().cloned().collect();
        let roles = self.world.role_keys();
        let sessions: Vec<SessionKey> = self
            .world
            .all_session_records()
            .iter()
            .map(|s| s.key.clone())
            .collect();
        let team = key::lookup(query, &teams);
        let role = key::lookup(query, &roles);
        let session = key::lookup(query, &sessions);
        let exact = |k: &dyn std::fmt::Display| k.to_string() == query.trim_matches('/');
        match (&team, &role, &session) {
            (Ok(t), _, _) if exact(t) => return Ok(Found::Team((*t).clone())),
            (_, Ok(r), _) if exact(r) => return Ok(Found::Role((*r).clone())),
            (_, _, Ok(s)) if exact(s) => {
                return Ok(Found::Session(Box::new(self.find_session(&s.to_string())?)));
            }
            _ => {}
        }
        let mut candidates: Vec<String> = Vec::new();
        for r in [
            &team.as_ref().map(|k| k.to_string()),
            &role.as_ref().map(|k| k.to_string()),
            &session.as_ref().map(|k| k.to_string()),
        ] {
            match r {
                Ok(k) => candidates.push(k.clone()),
                Err(LookupError::Ambiguous(c)) => candidates.extend(c.iter().cloned()),
                Err(LookupError::NotFound) => {}
            }
        }
        match candidates.len() {
            0 => Err(self.not_found("team, role or session", query)),
            1 => Ok(if let Ok(t) = team {
                Found::Team(t.clone())
            } else if let Ok(r) = role {
                Found::Role(r.clone())
            } else {
                Found::Session(Box::new(self.find_session(&candidates[0])?))
            }),
            _ => {
                candidates.sort();
                Err(Error::Ambiguous {
                    kind: "key".into(),
                    key: query.to_string(),
                    candidates,
                })
            }
        }
    }

    /// Not found, with the closest existing key as a suggestion.
    fn not_found(&self, kind: &str, query: &str) -> Error {
        let mut keys: Vec<String> = self.world.teams.keys().map(|k| k.to_string()).collect();
        keys.extend(self.world.role_keys().iter().map(|k| k.to_string()));
        keys.extend(
            self.world
                .all_session_records()
                .iter()
                .map(|s| s.key.to_string()),
        );
        let e = Error::not_found(kind, query);
        match key::suggest(query, keys.iter().map(String::as_str)) {
            Some(k) => e.with_help(format!("did you mean `{k}`?")),
            None if keys.is_empty() => {
                e.with_help("nothing is applied yet: `marvel run FILE` applies a team")
            }
            None => e.with_help("`marvel get sessions` lists the keys"),
        }
    }

    /// When `query` names something other than a `wanted`, what it names
    /// and what to do instead; a did-you-mean when it names nothing.
    fn wrong_kind(&self, query: &str, wanted: &str, verb: &str) -> Option<Error> {
        let found = match self.find_any(query) {
            Ok(f) => f,
            Err(e @ Error::Ambiguous { .. }) => return Some(e),
            Err(_) => return Some(self.not_found(wanted, query)),
        };
        let roles_of = |t: &TeamKey| -> Vec<String> {
            self.world
                .role_keys()
                .into_iter()
                .filter(|r| r.team() == *t)
                .map(|r| r.role)
                .collect()
        };
        let msg = match (found, wanted) {
            (Found::Role(r), "session") => {
                let mut slots: Vec<u32> = self
                    .world
                    .all_session_records()
                    .iter()
                    .filter(|s| s.key.is_of(&r))
                    .map(|s| s.key.slot)
                    .collect();
                slots.dedup();
                let names: Vec<String> = slots.iter().map(|n| format!("{query}-{n}")).collect();
                if names.is_empty() {
                    format!("{query} is a role, and it has no sessions now")
                } else {
                    format!("{query} is a role; its sessions are {}", names.join(", "))
                }
            }
            (Found::Team(t), "session" | "role") => {
                format!(
                    "{query} is a team; its roles are {}",
                    roles_of(&t).join(", ")
                )
            }
            (Found::Session(s), "role") => {
                let role = short_role(query, &s.key);
                if verb.is_empty() {
                    format!("{query} is a session; its role is {role}")
                } else {
                    format!("{query} is a session; {verb} its role {role}")
                }
            }
            (Found::Session(s), "team") => {
                format!("{query} is a session of team {}", s.key.team())
            }
            (Found::Role(r), "team") => format!("{query} is a role of team {}", r.team()),
            _ => return None,
        };
        Some(Error::usage(msg))
    }
}

/// What a key names.
enum Found {
    Team(TeamKey),
    Role(RoleKey),
    Session(Box<Session>),
}

/// A run of a session slot, for `logs`.
#[derive(Debug, Clone)]
struct Run {
    key: String,
    slot: u32,
    uid: u64,
    live: bool,
    ended_at: Option<crate::domain::state::Time>,
    fallback: Vec<String>,
}

/// How long `restart ROLE|TEAM` gives its shift.
const RESTART_TIMEOUT: Duration = Duration::from_secs(600);

/// The role of session `key`, written as the user wrote the session
/// (`shell` for `shell-0`, `demo/shell` for `demo/shell-0`).
fn short_role(query: &str, key: &SessionKey) -> String {
    let suffix = format!("-{}", key.slot);
    match query.trim_matches('/').strip_suffix(&suffix) {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => key.role().to_string(),
    }
}

fn count(n: u32, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
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

/// Key names travel in one tmux message: refused when they would not fit.
fn check_keys(text: &str) -> Result<()> {
    let bytes: usize = text.split_whitespace().map(|k| k.len() + 1).sum();
    if bytes > SEND_CHUNK {
        return Err(Error::usage(format!(
            "{} bytes of key names are more than tmux takes at once ({SEND_CHUNK})",
            text.len()
        )));
    }
    Ok(())
}

/// Splits text into pieces of at most `max` bytes, at character
/// boundaries; never returns no piece.
fn chunk(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
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

    #[test]
    fn long_text_is_cut_at_character_boundaries_within_the_limit() {
        let text = "é".repeat(10);
        let pieces = chunk(&text, 5);
        assert!(pieces.iter().all(|p| p.len() <= 5 && !p.is_empty()));
        assert_eq!(pieces.concat(), text);
        assert_eq!(chunk("", 5), vec![""]);
        assert_eq!(chunk("abc", 5), vec!["abc"]);
    }
}
