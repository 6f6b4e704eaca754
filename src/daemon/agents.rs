//! The daemon's side of heartbeats and rolling shifts: answering
//! `marvel heartbeat` and `marvel shift`, and killing a session whose
//! heartbeats went stale. Thin: the rules live in `domain::health` and
//! `domain::shift`; this only resolves keys, records, acts and replies.

use std::time::Duration;

use crate::domain::health::{HEARTBEAT_STALE, HeartbeatError};
use crate::domain::key::{SessionKey, TeamKey};
use crate::domain::state::{Exit, ExitDetail, Heartbeat, Time};
use crate::error::{Error, Result};
use crate::proto::Response;
use crate::substrate::Substrate;

use super::{Daemon, views};

impl<S: Substrate + Sync + 'static> Daemon<S> {
    /// A session missed its heartbeats: its death is recorded as a crash
    /// first (so the shim's report of the kill is ignored), then its pane
    /// is destroyed.
    pub(super) fn kill_unhealthy(&mut self, uid: u64, now: Time) {
        let Some(pane) = self.world.sessions.get(&uid).map(|s| s.pane.clone()) else {
            return;
        };
        let exit = Exit::detail(ExitDetail::Unhealthy(HEARTBEAT_STALE.into()), now);
        self.record_death(uid, exit, now, Vec::new());
        if let Some(pane) = pane {
            self.kill_pane(pane, "an unhealthy session".into());
        }
    }

    /// `marvel heartbeat`. Not persisted on its own: heartbeat times are
    /// soft state, and a restarted daemon grants every session a fresh
    /// grace before it counts misses again.
    pub(super) fn heartbeat(
        &mut self,
        session: &str,
        uid: Option<u64>,
        content: Heartbeat,
        now: Time,
    ) -> Result<Response> {
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
        self.world.heartbeat(uid, now, content);
        Ok(Response::Done(format!("heartbeat of {key} recorded")))
    }

    pub(super) fn start_shift(
        &mut self,
        team: &str,
        role: Option<&str>,
        timeout: Duration,
        now: Time,
    ) -> Result<Response> {
        let team = self.find_team(team)?;
        if let Some(role) = role
            && self.world.teams[&team].spec.role(role).is_none()
        {
            return Err(Error::not_found("role", format!("{team}/{role}")));
        }
        self.require_tmux()?;
        let (_, ev) = self
            .world
            .start_shift(&team, role, timeout, now)
            .map_err(|r| Error::refused(r.message, r.help))?;
        self.emit(ev);
        self.dirty = true;
        self.shift_reply(&team)
    }

    pub(super) fn abort_shift(&mut self, team: &str, now: Time) -> Result<Response> {
        let team = self.find_team(team)?;
        let ev = self
            .world
            .abort_shift(&team, "on request", now)
            .ok_or_else(|| Error::refused(format!("team {team} has no shift in progress"), None))?;
        self.emit(ev);
        self.dirty = true;
        self.shift_reply(&team)
    }

    fn shift_reply(&self, team: &TeamKey) -> Result<Response> {
        let shift = views::shift(&self.world, team)
            .ok_or_else(|| Error::other(format!("team {team} has no shift")))?;
        Ok(Response::Shift {
            team: team.to_string(),
            shift,
        })
    }

    /// Refuses to scale or change a team while it shifts: the shift counts
    /// on the replicas it started with.
    pub(super) fn refuse_while_shifting(&self, team: &TeamKey, what: &str) -> Result<()> {
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
}
