//! The recorded state of the world: sessions, each role's crash-loop history
//! and its single Crashed marker, and the applied teams. Plain data, persisted
//! by the daemon's store; the rules that change it live in `policy` and
//! `world`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::health::HealthState;
use crate::domain::key::{RoleKey, SessionKey, TeamKey};
use crate::domain::shift::Shift;
use crate::domain::spec::TeamSpec;
use crate::domain::tracked::Tracked;

/// Wall-clock instants, always passed in by the caller.
pub type Time = DateTime<Utc>;

/// Adds a std duration to an instant (saturating at the far future).
pub fn after(t: Time, d: std::time::Duration) -> Time {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    /// Asked for; the program has not reported that it runs yet.
    Pending,
    /// The program runs.
    Running,
    /// The program ended without being asked to (only as a role's marker).
    Crashed,
    /// The program exited 0 under `OnFailure` or `Never`; not replaced.
    Succeeded,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Pending => "pending",
            SessionState::Running => "running",
            SessionState::Crashed => "crashed",
            SessionState::Succeeded => "succeeded",
        }
    }

    /// Pending and Running sessions hold a pane (or are about to).
    pub fn is_live(self) -> bool {
        matches!(self, SessionState::Pending | SessionState::Running)
    }
}

/// What ended a session, beyond its exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitDetail {
    /// The program exited or was killed by a signal.
    Program,
    /// The pane was destroyed from outside while the program ran.
    PaneKilled,
    /// The pane disappeared and no exit was ever reported.
    PaneVanished,
    /// The tmux server went away: infrastructure loss, not charged.
    TmuxLost,
    /// A health check gave up on the session (for example a stale heartbeat).
    Unhealthy(String),
    /// tmux refused to create the pane (its words): the role's own doing,
    /// such as a directory or command tmux cannot use.
    SpawnRefused(String),
    /// The program could not be started at all (its working directory is
    /// gone, it cannot be run): the shim's words.
    StartFailed(String),
}

/// How and when a session's program ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at: Time,
    pub detail: ExitDetail,
}

impl Exit {
    #[cfg(test)]
    pub fn code(code: i32, at: Time) -> Exit {
        Exit {
            code: Some(code),
            signal: None,
            at,
            detail: ExitDetail::Program,
        }
    }

    #[cfg(test)]
    pub fn signal(signal: i32, at: Time) -> Exit {
        Exit {
            code: None,
            signal: Some(signal),
            at,
            detail: ExitDetail::Program,
        }
    }

    pub fn detail(detail: ExitDetail, at: Time) -> Exit {
        Exit {
            code: None,
            signal: None,
            at,
            detail,
        }
    }

    /// A clean exit: status 0 from the program itself.
    pub fn is_success(&self) -> bool {
        self.detail == ExitDetail::Program && self.code == Some(0) && self.signal.is_none()
    }

    /// The fewest words for a program's environment: `exit 3`, `signal 9`,
    /// `heartbeat stale`, `tmux server lost`.
    pub fn brief(&self) -> String {
        match (&self.detail, self.code, self.signal) {
            (ExitDetail::Program, _, Some(sig)) => format!("signal {sig}"),
            (ExitDetail::Program, Some(code), None) => format!("exit {code}"),
            (ExitDetail::Program, None, None) => "unknown".into(),
            (ExitDetail::PaneKilled, ..) => "pane killed".into(),
            (ExitDetail::PaneVanished, ..) => "pane vanished".into(),
            (ExitDetail::TmuxLost, ..) => "tmux server lost".into(),
            (ExitDetail::Unhealthy(why), ..) => why.clone(),
            (ExitDetail::SpawnRefused(_), ..) => "spawn refused".into(),
            (ExitDetail::StartFailed(_), ..) => "start failed".into(),
        }
    }

    /// Plain words for tables and reasons: `exit 1`, `signal 9 (SIGKILL)`.
    pub fn reason(&self) -> String {
        let status = match (self.code, self.signal) {
            (_, Some(sig)) => Some(format!("signal {sig} ({})", signal_name(sig))),
            (Some(code), None) => Some(format!("exit {code}")),
            (None, None) => None,
        };
        let detail = match &self.detail {
            ExitDetail::Program => None,
            ExitDetail::PaneKilled => Some("pane killed".to_string()),
            ExitDetail::PaneVanished => Some("pane vanished".to_string()),
            ExitDetail::TmuxLost => Some("tmux server lost".to_string()),
            ExitDetail::Unhealthy(why) => Some(why.clone()),
            ExitDetail::SpawnRefused(why) => Some(format!("tmux refused to start it: {why}")),
            ExitDetail::StartFailed(why) => return why.clone(),
        };
        match (detail, status) {
            (Some(d), Some(s)) => format!("{d}, {s}"),
            (Some(d), None) => d,
            (None, Some(s)) => s,
            (None, None) => "unknown".to_string(),
        }
    }
}

/// The conventional name of a signal number on Linux.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "signal",
    }
}

/// One spawn of one replica slot. Written to the state file at every
/// change of it, so what is empty or unset is left out (and reads back as
/// such), but for what earlier versions require: a session's line in the
/// journal says what it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Unique for the life of the state directory; never reused.
    pub uid: u64,
    pub key: SessionKey,
    /// The role template generation this session runs.
    pub generation: u64,
    pub state: SessionState,
    /// tmux pane id (`%12`) once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pane: Option<String>,
    /// pid of the pane's first process (marvel's shim), to recognise the
    /// pane again after a daemon restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pane_pid: Option<u32>,
    /// pid of the role's program itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The tmux session the pane is in (its team's).
    pub tmux_session: String,
    /// tmux window id (`@3`) of the pane, once created. Sessions made by
    /// versions that gave each spawn a tmux session of its own have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    pub created_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Crashes of this replica slot before this session (since the last reset).
    /// Always written: earlier versions of marvel require it, and read the
    /// snapshot a newer one leaves at its stop.
    #[serde(default)]
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
    /// Last lines printed, kept for a crashed marker. Always written, as
    /// `restarts` is.
    #[serde(default)]
    pub last_output: Vec<String>,
    /// When the program last ran `marvel heartbeat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<Time>,
    /// What the last heartbeat reported besides being alive.
    #[serde(default, skip_serializing_if = "Heartbeat::is_empty")]
    pub heartbeat: Heartbeat,
    /// The health last announced by an event. Only used to tell a
    /// transition; health itself is evaluated afresh every time.
    #[serde(default, skip_serializing_if = "HealthState::is_unknown")]
    pub health: HealthState,
    /// How this start follows the slot's previous run; `None` for a fresh
    /// start (the slot's first, or after a reset or a changed command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// The git worktree the program runs in, for a role that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<SlotWorktree>,
    /// Busy, idle or waiting, and the edges that tell.
    #[serde(
        default,
        skip_serializing_if = "crate::domain::activity::Activity::is_unset"
    )]
    pub activity: crate::domain::activity::Activity,
    /// The spawn that ended in this session's pane, whose shim was asked to
    /// run this one there; until the program's start is heard of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<u64>,
}

/// A start that follows an earlier run of the same slot: the program runs
/// the role's `resume` instead of its `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    /// Restarts of the slot since it last started fresh, this one included
    /// (`MARVEL_RESTARTS`).
    pub count: u32,
    /// How the previous run ended (`MARVEL_PREVIOUS_EXIT`): `exit 3`,
    /// `signal 9`, `heartbeat stale`, `killed`, `restarted`...
    pub previous_exit: String,
}

/// A slot's own git worktree: where it is, and on which branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotWorktree {
    pub path: PathBuf,
    /// The branch checked out there when the program started (`None`: a
    /// detached HEAD).
    pub branch: Option<String>,
}

/// What a slot remembers of its runs, so that its next start can resume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRuns {
    /// Restarts since the slot last started fresh.
    pub restarts: u32,
    /// How its last run ended, once it has and until the next start: that
    /// start is a restart.
    pub ended: Option<String>,
}

/// The optional content of a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// How full the agent's context window is, in percent.
    pub context_pct: Option<u8>,
    /// A short free-form status line.
    pub note: Option<String>,
}

impl Heartbeat {
    pub fn is_empty(&self) -> bool {
        self.context_pct.is_none() && self.note.is_none()
    }
}

/// Why a role is frozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frozen {
    pub reason: String,
    pub at: Time,
}

/// A role's crash-loop history: everything the policy needs to decide when
/// (and whether) to restart, plus the one marker the role shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleHistory {
    /// Bumped when the role's template changes; sessions of older
    /// generations are replaced.
    pub generation: u64,
    /// Instants of crashes still inside the budget window (pruned lazily).
    pub crashes: Vec<Time>,
    /// Restarts made on the current backoff curve; the next waits for
    /// step n+1.
    pub step: u32,
    /// Nothing is spawned for the role before this instant.
    pub next_restart_at: Option<Time>,
    /// Crashes since the last reset (what `get` shows as RESTARTS).
    pub restarts: u32,
    pub last_crash_at: Option<Time>,
    pub frozen: Option<Frozen>,
    /// The newest crashed session of the role, at most one.
    pub marker: Option<Session>,
    /// Crashes per replica slot since the last reset.
    pub slot_restarts: BTreeMap<u32, u32>,
    /// Slots that ended for good (`OnFailure` success, `Never`): not refilled.
    pub done_slots: BTreeSet<u32>,
    /// Of the done slots, those whose program failed under `Never`: the
    /// role is `failed`, not `succeeded`.
    #[serde(default)]
    pub failed_slots: BTreeSet<u32>,
    /// Stopped on request (`marvel stop`): its sessions are stopped and
    /// none is spawned until `marvel start`; the declaration is kept.
    #[serde(default)]
    pub stopped: bool,
    /// The runs of each slot that ended, newest last, at most
    /// [`PAST_RUNS`]: their output logs stay for `marvel logs --previous`.
    #[serde(default)]
    pub past: BTreeMap<u32, Vec<PastRun>>,
    /// Per slot, whether its next start resumes: kept across the policy's
    /// resets, cleared by `marvel reset role` and a changed command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slot_runs: BTreeMap<u32, SlotRuns>,
}

/// How many ended runs of a slot keep their output log.
pub const PAST_RUNS: usize = 2;

/// One ended run of a replica slot, for `marvel logs --previous`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastRun {
    pub uid: u64,
    pub started_at: Option<Time>,
    pub ended_at: Time,
}

impl RoleHistory {
    /// Remembers that `s` ended at `at` (once per uid), forgetting the
    /// oldest run of its slot beyond [`PAST_RUNS`].
    pub fn remember_run(&mut self, s: &Session, at: Time) {
        let runs = self.past.entry(s.key.slot).or_default();
        if runs.iter().any(|r| r.uid == s.uid) {
            return;
        }
        runs.push(PastRun {
            uid: s.uid,
            started_at: s.started_at,
            ended_at: at,
        });
        runs.sort_by_key(|r| r.uid);
        let excess = runs.len().saturating_sub(PAST_RUNS);
        runs.drain(..excess);
    }
}

/// The pane of a program that ended, kept for its slot. Its shim stays,
/// showing the program's last screen and a line from marvel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptPane {
    pub pane: String,
    pub window: String,
    /// The tmux session it is in.
    pub tmux_session: String,
    /// The spawn that ran there last, and its shim's pid.
    pub uid: u64,
    pub shim_pid: Option<u32>,
    /// The shim said it can run the slot's next program itself, in this
    /// pane (no `respawn-pane`, no new shim).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rerun: bool,
    /// How it ended, and when its program had started.
    pub exit: Option<Exit>,
    pub started_at: Option<Time>,
}

/// An applied team and when it was applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamRecord {
    pub spec: TeamSpec,
    pub applied_at: Time,
    /// The manifest file that declared the team (absolute), when it came
    /// from one: another file declaring the same team is refused unless
    /// forced. Absent in state files from before it was recorded.
    #[serde(default)]
    pub source: Option<PathBuf>,
}

/// Everything the daemon knows, in one value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct World {
    pub teams: Tracked<TeamKey, TeamRecord>,
    pub roles: Tracked<RoleKey, RoleHistory>,
    /// Live and succeeded sessions by uid. Crashed ones live only as markers.
    pub sessions: Tracked<u64, Session>,
    /// The last uid handed out.
    pub next_uid: u64,
    /// Uids up to this one may have been handed out: it is saved before
    /// any of them reaches a pane, so a daemon that crashed after handing
    /// them out never hands them out again (see [`World::resume_uids`]).
    #[serde(default)]
    pub uid_reserved: u64,
    /// Panes (id → pid of its first process) that carry this state
    /// directory's tag but were found after its state file could not be
    /// read: possibly agents, so they are left running and never removed.
    #[serde(default)]
    pub strays: Tracked<String, u32>,
    /// The running or last finished rolling shift of each team.
    #[serde(default)]
    pub shifts: Tracked<TeamKey, Shift>,
    /// The panes of programs that ended, kept for their slot: they show
    /// the program's last screen and marvel's word on what comes next,
    /// and the slot's next run starts in the same pane.
    #[serde(default)]
    pub kept: Tracked<SessionKey, KeptPane>,
    #[serde(default)]
    pub next_shift: u64,
    /// Since when heartbeats could reach the daemon (its start): missed
    /// heartbeats are only counted from then on, so a daemon that was away
    /// does not condemn every session at once. Not persisted.
    #[serde(skip)]
    pub watching_since: Option<Time>,
}

/// How many uids are reserved at a time: each reservation costs one write
/// of the state before the spawn that needs it.
pub const UID_BLOCK: u64 = 1024;

impl World {
    /// A new uid, never handed out before in this state directory.
    pub fn new_uid(&mut self) -> u64 {
        self.next_uid += 1;
        if self.next_uid > self.uid_reserved {
            self.uid_reserved = self.next_uid + UID_BLOCK - 1;
        }
        self.next_uid
    }

    /// After a restart: the uids a previous daemon reserved may have
    /// reached panes after its last save, so none of them is used again.
    pub fn resume_uids(&mut self) {
        self.next_uid = self.next_uid.max(self.uid_reserved);
    }

    /// Moves every instant the world keeps by `by`, so that after a jump
    /// of the wall clock each timer keeps the time it had left and each
    /// age stays what it was.
    pub fn shift_clock(&mut self, by: chrono::Duration) {
        let mv = |t: &mut Time| *t = t.checked_add_signed(by).unwrap_or(*t);
        let mv_opt = |t: &mut Option<Time>| {
            if let Some(t) = t {
                *t = t.checked_add_signed(by).unwrap_or(*t);
            }
        };
        let session = |s: &mut Session| {
            mv(&mut s.created_at);
            mv_opt(&mut s.started_at);
            mv_opt(&mut s.last_restart_at);
            mv_opt(&mut s.last_heartbeat_at);
            s.activity.shift_clock(by);
            if let Some(e) = s.exit.as_mut() {
                mv(&mut e.at);
            }
        };
        for t in self.teams.values_mut() {
            mv(&mut t.applied_at);
        }
        for h in self.roles.values_mut() {
            h.crashes.iter_mut().for_each(mv);
            mv_opt(&mut h.next_restart_at);
            mv_opt(&mut h.last_crash_at);
            if let Some(f) = h.frozen.as_mut() {
                mv(&mut f.at);
            }
            if let Some(m) = h.marker.as_mut() {
                session(m);
            }
        }
        self.sessions.values_mut().for_each(session);
        for sh in self.shifts.values_mut() {
            mv(&mut sh.started_at);
            mv(&mut sh.deadline);
            mv_opt(&mut sh.ended_at);
        }
        for k in self.kept.values_mut() {
            mv_opt(&mut k.started_at);
            if let Some(e) = k.exit.as_mut() {
                mv(&mut e.at);
            }
        }
        mv_opt(&mut self.watching_since);
    }

    /// What planning reads, as counts of changes: while it stays the same
    /// (and the plan's wake-up time has not come), planning again would
    /// find nothing new.
    pub fn plan_inputs(&self) -> (u64, Option<Time>) {
        let edits = self.teams.edits()
            + self.roles.edits()
            + self.sessions.edits()
            + self.shifts.edits()
            + self.kept.edits()
            + self.strays.edits();
        (edits, self.watching_since)
    }

    /// Sessions of one role, oldest spawn first.
    pub fn role_sessions<'a>(
        &'a self,
        role: &'a RoleKey,
    ) -> impl Iterator<Item = &'a Session> + 'a {
        self.sessions.values().filter(move |s| s.key.is_of(role))
    }

    /// Uids whose output logs are still wanted: every record `get` shows
    /// and the ended runs kept for `logs --previous`.
    pub fn uids_with_logs(&self) -> BTreeSet<u64> {
        let mut uids: BTreeSet<u64> = self.all_session_records().iter().map(|s| s.uid).collect();
        for h in self.roles.values() {
            uids.extend(h.past.values().flatten().map(|r| r.uid));
        }
        uids
    }

    /// Every key a `get sessions` would show: live, succeeded and markers.
    pub fn all_session_records(&self) -> Vec<&Session> {
        let mut all: Vec<&Session> = self.sessions.values().collect();
        all.extend(self.roles.values().filter_map(|h| h.marker.as_ref()));
        all.sort_by(|a, b| a.key.cmp(&b.key).then(a.uid.cmp(&b.uid)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Time {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn exit_reasons_read_as_words() {
        assert_eq!(Exit::code(42, t0()).reason(), "exit 42");
        assert_eq!(Exit::signal(9, t0()).reason(), "signal 9 (SIGKILL)");
        assert_eq!(
            Exit::detail(ExitDetail::PaneKilled, t0()).reason(),
            "pane killed"
        );
        let mut e = Exit::signal(1, t0());
        e.detail = ExitDetail::PaneKilled;
        assert_eq!(e.reason(), "pane killed, signal 1 (SIGHUP)");
        assert!(Exit::code(0, t0()).is_success());
        assert!(!Exit::code(1, t0()).is_success());
        assert!(!Exit::signal(15, t0()).is_success());
    }

    /// A session's line in the journal holds what it has: a fresh one
    /// writes no unset field but the two that earlier versions require,
    /// and reads back the same; one with everything set writes and reads
    /// back all of it.
    #[test]
    fn a_session_writes_only_what_is_set_and_reads_back_whole() {
        let key: SessionKey = "w/t/r-0".parse().unwrap();
        let fresh = Session {
            uid: 7,
            key,
            generation: 1,
            state: SessionState::Pending,
            pane: None,
            pane_pid: None,
            pid: None,
            tmux_session: "t".into(),
            window: None,
            created_at: t0(),
            started_at: None,
            restarts: 0,
            last_restart_at: None,
            exit: None,
            last_output: Vec::new(),
            last_heartbeat_at: None,
            heartbeat: Heartbeat::default(),
            health: HealthState::Unknown,
            restart: None,
            worktree: None,
            activity: Default::default(),
            rerun_of: None,
        };
        let text = serde_json::to_string(&fresh).unwrap();
        assert_eq!(
            text,
            r#"{"uid":7,"key":"w/t/r-0","generation":1,"state":"Pending","tmux_session":"t","created_at":"2026-01-01T00:00:00Z","restarts":0,"last_output":[]}"#
        );
        assert_eq!(serde_json::from_str::<Session>(&text).unwrap(), fresh);
        let full = Session {
            state: SessionState::Crashed,
            pane: Some("%1".into()),
            pane_pid: Some(10),
            pid: Some(11),
            window: Some("@1".into()),
            started_at: Some(t0()),
            restarts: 3,
            last_restart_at: Some(t0()),
            exit: Some(Exit::signal(9, t0())),
            last_output: vec!["bye".into()],
            last_heartbeat_at: Some(t0()),
            heartbeat: Heartbeat {
                context_pct: Some(40),
                note: Some("n".into()),
            },
            health: HealthState::Unhealthy,
            ..fresh
        };
        let back: Session = serde_json::from_str(&serde_json::to_string(&full).unwrap()).unwrap();
        assert_eq!(back, full);
    }
}
