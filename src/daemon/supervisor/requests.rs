//! Answers to requests: one router over every request, one small handler
//! each. A handler answers at once (`Ok(Some)`), refuses (`Err`), or leaves
//! the answer to a tmux job's outcome (`Ok(None)`).

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
    Change, EventFilter, Filter, Kind, PROTOCOL_VERSION, Request, Response, RoleChangeView,
    ShimReport,
};
use crate::view::{DaemonView, StatusView};

use super::super::views;
use super::super::worker::Job;
use super::tmux::Then;
use super::{EarlyExit, Now, Output, RequestId, Supervisor, reported_exit};

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
        let answer: Answer = match req {
            Request::Ping => Ok(Some(Response::Pong {
                version: env!("CARGO_PKG_VERSION").into(),
                protocol: PROTOCOL_VERSION,
                pid: self.setup.pid,
            })),
            Request::Shim(report) => self.shim_report(id, report, now, rng),
            Request::Apply { team } => self.apply(team, now),
            Request::Get { kind, filter } => Ok(Some(self.get(kind, &filter, now))),
            Request::Describe { kind, key } => self.describe(kind, &key, now),
            Request::Inject {
                key,
                text,
                enter,
                keys,
            } => self.inject(id, &key, text, enter, keys, now),
            Request::Capture { key } => self.capture(id, &key, now),
            Request::Logs { key, lines } => self.logs(id, &key, lines),
            Request::Reset { key } => self.reset(&key, now),
            Request::Scale { key, replicas } => self.scale(&key, replicas, now),
            Request::Kill { key } => self.kill(&key, now),
            Request::Delete { key } => self.delete(&key, now),
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
        };
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
        let uid = match report {
            ShimReport::Started { uid, pid, at } => {
                if let Some(ev) = self.world.started(uid, pid, at) {
                    self.emit(ev);
                    self.dirty = true;
                }
                return done();
            }
            ShimReport::Exited { uid, .. } => uid,
        };
        // A program told to end has: no SIGKILL for it.
        self.escalations.retain(|e| e.uid != uid);
        let Some((exit, hangup)) = reported_exit(&report) else {
            return done();
        };
        let Some(s) = self.world.sessions.get(&uid).filter(|s| s.state.is_live()) else {
            // Ended already (killed for its heartbeats, say): its shim still
            // learns what its pane shows.
            self.out.push(Output::RemoveExitRecord(uid));
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
        Ok(Some(self.answer_to_exit(uid, "recorded")))
    }

    /// What a shim is told once its program's end is known: to stay in its
    /// kept pane, showing a line, or that it is done.
    pub(super) fn answer_to_exit(&mut self, uid: u64, done: &str) -> Response {
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

    fn apply(&mut self, team: TeamSpec, now: Now) -> Answer {
        let team_key = team.key();
        let old = self.world.teams.get(&team_key).map(|t| &t.spec);
        if reconcile::diff(old, &team)
            .iter()
            .any(|(_, c)| *c != RoleChange::Unchanged)
        {
            self.refuse_while_shifting(&team_key, &format!("apply changes to {team_key}"))?;
        }
        let (changes, evs) = self.world.apply(team, now.wall);
        self.emit_all(evs);
        self.dirty = true;
        let roles = changes
            .into_iter()
            .map(|(key, change)| {
                let spec = self.world.role_spec(&key);
                let (change, detail) = match change {
                    RoleChange::Created => (
                        Change::Created,
                        replicas_text(spec.map_or(0, |s| s.replicas.get())),
                    ),
                    RoleChange::Unchanged => (Change::Unchanged, String::new()),
                    RoleChange::Scaled { from, to } => (Change::Scaled, format!("{from} → {to}")),
                    RoleChange::Replaced => (Change::Replaced, "spec changed".into()),
                    RoleChange::Removed => (Change::Removed, String::new()),
                };
                RoleChangeView {
                    frozen_reason: self.world.frozen_reason(&key).map(str::to_string),
                    key: key.to_string(),
                    change,
                    detail,
                }
            })
            .collect();
        Ok(Some(Response::Applied {
            team: team_key.to_string(),
            roles,
        }))
    }

    fn get(&self, kind: Kind, filter: &Filter, now: Now) -> Response {
        match kind {
            Kind::Sessions => Response::Sessions(views::sessions(&self.world, filter, now.wall)),
            Kind::Roles => Response::Roles(views::roles(&self.world, filter, now.wall)),
            Kind::Teams => Response::Teams(views::teams(&self.world, filter, now.wall)),
        }
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

    /// Typing needs tmux: answered once tmux has done it. Long text goes in
    /// pieces, each within tmux's message limit.
    fn inject(
        &mut self,
        id: RequestId,
        key: &str,
        text: String,
        enter: bool,
        keys: bool,
        now: Now,
    ) -> Answer {
        let s = self.live_session(key, now)?;
        let pane = s.pane.clone().unwrap_or_default();
        let done = format!("typed {} bytes into {}", text.len(), s.key);
        if keys {
            let keys: Vec<String> = text.split_whitespace().map(str::to_string).collect();
            if keys.iter().map(|k| k.len() + 1).sum::<usize>() > SEND_CHUNK {
                return Err(Error::usage(format!(
                    "{} bytes of key names are more than tmux takes at once ({SEND_CHUNK})",
                    text.len()
                )));
            }
            let job = Job::SendKeys { pane, keys };
            self.submit(job, Then::Reply { id, done }, now);
            return Ok(None);
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
        Ok(None)
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

    /// The log is read by the main loop; a session that printed nothing
    /// there falls back to its recorded last lines.
    fn logs(&mut self, id: RequestId, key: &str, lines: usize) -> Answer {
        let s = self.find_session(key)?;
        self.out.push(Output::ReplyLogTail {
            id,
            uid: s.uid,
            lines,
            fallback: s.last_output.clone(),
        });
        Ok(None)
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
        let role = self.find_role(key)?;
        self.refuse_while_shifting(&role.team(), &format!("scale {role}"))?;
        let to = crate::domain::spec::Replicas::new(replicas).map_err(Error::usage)?;
        let (from, ev) = self
            .world
            .scale(&role, to, now.wall)
            .ok_or_else(|| Error::not_found("role", key))?;
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
        Ok(Some(Response::Done(format!(
            "{role} scaled from {from} to {replicas} replicas"
        ))))
    }

    /// Stops a session on purpose: replaced at once (in its own pane),
    /// never a crash. A session still waiting for its pane needs no tmux to
    /// stop.
    fn kill(&mut self, key: &str, now: Now) -> Answer {
        let s = self.find_session(key)?;
        let s = if s.state.is_live() && s.pane.is_none() {
            s
        } else {
            self.live_session(key, now)?
        };
        let Some(stopped) = self.world.stop(s.uid) else {
            return Err(Error::not_found("session", key));
        };
        let key = stopped.key.clone();
        self.vacate(stopped, now);
        self.emit(Event::new(
            now.wall,
            EventKind::Killed,
            &key,
            "killed on request (not a crash)",
        ));
        self.dirty = true;
        Ok(Some(Response::Done(format!("{key} killed"))))
    }

    fn delete(&mut self, key: &str, now: Now) -> Answer {
        let team = self.find_team(key)?;
        if let Some(ev) = self.world.delete_team(&team, now.wall) {
            self.emit(ev);
        }
        self.dirty = true;
        Ok(Some(Response::Done(format!("team {team} deleted"))))
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
        Response::Status(StatusView {
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
            tmux: self.tmux_view(now),
        })
    }

    /// `marvel heartbeat`. Not persisted on its own: heartbeat times are
    /// soft state, and a restarted daemon grants every session a fresh
    /// grace before it counts misses again.
    fn heartbeat(
        &mut self,
        session: &str,
        uid: Option<u64>,
        content: Heartbeat,
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
        Ok(Some(Response::Done(format!("heartbeat of {key} recorded"))))
    }

    fn start_shift(
        &mut self,
        team: &str,
        role: Option<&str>,
        timeout: Duration,
        now: Now,
    ) -> Answer {
        let team = self.find_team(team)?;
        if let Some(role) = role
            && self.world.teams[&team].spec.role(role).is_none()
        {
            return Err(Error::not_found("role", format!("{team}/{role}")));
        }
        self.require_tmux(now)?;
        let (_, ev) = self
            .world
            .start_shift(&team, role, timeout, now.wall)
            .map_err(|r| Error::refused(r.message, r.help))?;
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
