//! The supervisor driven as the main loop drives it, without threads, real
//! time or files: inputs go in with an injected clock, outputs are read and
//! carried out by a small harness (tmux jobs run against the fake substrate
//! when the test says so, in the order submitted).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use super::tmux::TmuxState;
use super::*;
use crate::daemon::worker::Runner;
use crate::domain::health::HealthState;
use crate::domain::health::{ContextPct, Note};
use crate::domain::spec::{Failures, Health, NonZeroSpan, TeamSpec};
use crate::domain::state::{ExitDetail, Session, SessionState};
use crate::domain::world::sim::{role, team};
use crate::proto::{Filter, Kind};
use crate::substrate::fake::{Call, FakeSubstrate};
use crate::substrate::{Place, SubstrateError, WindowRef};

fn t0() -> Time {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

pub(super) fn cfg() -> Config {
    Config {
        sweep: Duration::from_secs(3600),
        sweep_unwatched: Duration::from_secs(3600),
        tmux_timeout: Duration::from_secs(1),
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        retry_jitter: 0.0,
    }
}

fn setup() -> Setup {
    Setup {
        pid: 4242,
        started_at: t0(),
        paths: Paths {
            root: PathBuf::from("/state"),
        },
        tmux_socket: Some("sock".into()),
        marvel_bin: PathBuf::from("/bin/marvel"),
        utc_offset: chrono::FixedOffset::east_opt(0).unwrap(),
        cfg: cfg(),
    }
}

/// The supervisor and everything around it, simulated.
pub(super) struct H {
    pub sup: Supervisor,
    pub tmux: FakeSubstrate,
    /// Jobs handed to the worker and not run yet, in order.
    pub jobs: VecDeque<(JobId, Job)>,
    /// Jobs handed to the git worker and not answered yet, in order.
    pub git_jobs: VecDeque<(GitJobId, GitJob)>,
    pub now: Now,
    pub replies: BTreeMap<RequestId, Response>,
    pub events: Vec<EventView>,
    /// The exit records on disk, by uid.
    pub records: BTreeMap<u64, ShimReport>,
    /// Output logs on disk, by uid.
    pub logs: BTreeMap<u64, Vec<String>>,
    /// The world as last written, if it was: the journal's records
    /// applied to the first snapshot, as a daemon would read it back.
    pub saved: Option<World>,
    journal: crate::daemon::journal::Journal,
    /// Make the next writes of the state fail with this error.
    pub disk_full: Option<String>,
    pub followers: BTreeSet<RequestId>,
    /// Every output, in order.
    pub trace: Vec<Output>,
    pub wake: Duration,
    pub exited: bool,
    /// Signals sent: (pid, its expected parent, signal).
    pub signals: Vec<(u32, u32, Signal)>,
    /// What the shims of kept panes were told to show, by uid.
    pub lines: BTreeMap<u64, String>,
    /// Notification commands handed to the runner, in order.
    pub hooks: Vec<Hook>,
    /// Watches started: (server pid, kick interval).
    pub watches: Vec<(u32, Duration)>,
    /// Next runs handed to the shims of kept panes: (the spawn that ended
    /// there, shim pid, its expected parent, the run).
    pub reruns: Vec<(u64, u32, u32, crate::shim::NextRun)>,
    /// Whether the shims of kept panes are gone (cannot be asked), or the
    /// daemon dies before it hears how asking went (`None`).
    pub shims_answer: Option<bool>,
    last_request: RequestId,
    runner: Runner,
    /// Plans a start at once, as the daemon did before it put a start's
    /// plan off for a few milliseconds: tests of anything but that delay
    /// step on from the planned world.
    pub plan_starts_at_once: bool,
}

impl H {
    /// A supervisor just started on an empty state, tmux answered.
    pub fn new() -> H {
        let mut h = H::blank();
        h.restore(Loaded::Fresh, Vec::new());
        h.run_jobs();
        h
    }

    pub fn blank() -> H {
        H {
            sup: Supervisor::new(setup(), Default::default()),
            tmux: FakeSubstrate::new(),
            jobs: VecDeque::new(),
            git_jobs: VecDeque::new(),
            now: Now {
                wall: t0(),
                mono: Duration::from_secs(10),
            },
            replies: BTreeMap::new(),
            events: Vec::new(),
            records: BTreeMap::new(),
            logs: BTreeMap::new(),
            saved: None,
            journal: Default::default(),
            disk_full: None,
            followers: BTreeSet::new(),
            trace: Vec::new(),
            wake: Duration::MAX,
            exited: false,
            reruns: Vec::new(),
            shims_answer: Some(true),
            signals: Vec::new(),
            lines: BTreeMap::new(),
            hooks: Vec::new(),
            watches: Vec::new(),
            last_request: 0,
            runner: Runner::default(),
            plan_starts_at_once: true,
        }
    }

    /// A new supervisor on what this one saved, on the same tmux server,
    /// with the same records on disk: a daemon restart.
    pub fn restart(self) -> H {
        let world = self.saved.clone().expect("the world was saved");
        let mut h = H::blank();
        h.tmux = self.tmux;
        h.records = self.records;
        h.logs = self.logs;
        h.now = self.now;
        h.restart_with(world, false);
        h
    }

    pub fn restart_with(&mut self, world: World, rebooted: bool) {
        let records = self
            .records
            .iter()
            .map(|(uid, r)| (*uid, Replay::Report(r.clone())))
            .collect();
        let cut = None;
        self.restore(
            Loaded::Restored {
                world: Box::new(world),
                rebooted,
                cut,
            },
            records,
        );
    }

    pub fn restore(&mut self, loaded: Loaded, records: Vec<(u64, Replay)>) {
        self.step(Input::Restore { loaded, records });
    }

    /// Steps the supervisor and carries out its outputs, as the main loop
    /// does (inputs the outputs lead to are stepped at once).
    pub fn step(&mut self, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let outputs = self.sup.step(input, self.now, &mut 0.0);
            for out in outputs {
                self.trace.push(out.clone());
                match out {
                    Output::Submit { id, job } => self.jobs.push_back((id, job)),
                    Output::Git { id, job } => self.git_jobs.push_back((id, job)),
                    Output::Reply { id, response } => {
                        self.replies.insert(id, response);
                    }
                    Output::Follow { id, .. } => {
                        self.followers.insert(id);
                    }
                    Output::Event(e) => self.events.push(e),
                    Output::Persist { .. } => {
                        let result = match &self.disk_full {
                            Some(e) => Err(e.clone()),
                            None => {
                                self.persist();
                                Ok(())
                            }
                        };
                        inputs.push_back(Input::Persisted(result));
                    }
                    Output::ReadExitRecords(uids) => {
                        let recs = uids
                            .into_iter()
                            .map(|u| (u, self.records.get(&u).cloned()))
                            .collect();
                        inputs.push_back(Input::ExitRecords(recs));
                    }
                    Output::ReadLogTail { uid } => {
                        let lines = self.logs.get(&uid).cloned().unwrap_or_default();
                        inputs.push_back(Input::LogTail { uid, lines });
                    }
                    Output::ReplyLogs { id, reads } => {
                        let chunks = reads
                            .into_iter()
                            .map(|r| {
                                let lines = self.logs.get(&r.uid).cloned().unwrap_or(r.fallback);
                                crate::proto::LogChunk {
                                    key: r.key,
                                    uid: r.uid,
                                    offset: lines.len() as u64,
                                    lines,
                                    ended: r.ended,
                                }
                            })
                            .collect();
                        self.replies.insert(id, Response::Logs(chunks));
                    }
                    Output::RemoveExitRecord(uid) => {
                        self.records.remove(&uid);
                    }
                    Output::Prune { .. }
                    | Output::Log(_)
                    | Output::AwaitRun { .. }
                    | Output::PanesChanged(_) => {}
                    Output::Signal {
                        pid,
                        parent,
                        signal,
                    } => {
                        self.signals.push((pid, parent, signal));
                    }
                    Output::ShowLine { uid, line, .. } => {
                        self.lines.insert(uid, line);
                    }
                    Output::Rerun {
                        of,
                        pid,
                        parent,
                        next,
                    } => {
                        let uid = next.uid;
                        self.reruns.push((of, pid, parent, next));
                        if let Some(asked) = self.shims_answer {
                            inputs.push_back(Input::Reran { uid, asked });
                        }
                    }
                    Output::Notify(hook) => self.hooks.push(hook),
                    Output::Watch { server_pid, kick } => {
                        self.watches.push((server_pid, kick));
                    }
                    Output::WakeAt(at) => self.wake = at,
                    Output::Exit => self.exited = true,
                }
            }
            if inputs.is_empty() && self.plan_starts_at_once && self.sup.plan_starts_by.is_some() {
                inputs.push_back(Input::Tick);
            }
        }
    }

    /// Writes what changed as the store does: a whole snapshot first, then
    /// journal records, which must replay to the world as it is.
    fn persist(&mut self) {
        use crate::daemon::journal;
        let world = self.sup.world_mut();
        match &mut self.saved {
            Some(disk) => {
                if let Some(record) = self.journal.record(world) {
                    journal::apply(disk, record);
                }
                // Not written: a daemon sets it when it starts.
                disk.watching_since = world.watching_since;
                assert_eq!(disk, world, "the journal's records replay to another world");
            }
            None => {
                self.journal.reset(world);
                self.saved = Some(world.clone());
            }
        }
    }

    /// Runs the next job against the fake tmux and hands its outcome back.
    pub fn run_one(&mut self) -> bool {
        let Some((id, job)) = self.jobs.pop_front() else {
            return false;
        };
        let outcome = self.runner.run(&job, &self.tmux);
        self.step(Input::Done(Done { id, outcome }));
        true
    }

    /// Runs jobs until none is left.
    pub fn run_jobs(&mut self) {
        let mut n = 0;
        while self.run_one() {
            n += 1;
            assert!(n < 10_000, "jobs keep coming");
        }
    }

    /// Lets `ms` pass on both clocks, then the timers fire.
    pub fn advance(&mut self, ms: u64) {
        let d = Duration::from_millis(ms);
        self.now.mono += d;
        self.now.wall = after(self.now.wall, d);
        self.step(Input::Tick);
    }

    /// Lets time pass until the supervisor's next wake-up, and fires it.
    pub fn until_wake(&mut self) {
        let wait = self.wake.saturating_sub(self.now.mono);
        self.advance(wait.as_millis() as u64);
    }

    /// Hands a request in; returns its id (answered or not).
    pub fn send(&mut self, request: Request) -> RequestId {
        self.last_request += 1;
        let id = self.last_request;
        self.step(Input::Request { id, request });
        id
    }

    /// Asks, lets tmux do what it caused, and returns the answer.
    pub fn ask(&mut self, request: Request) -> Response {
        let id = self.send(request);
        self.run_jobs();
        self.replies.remove(&id).expect("an answer")
    }

    pub fn apply(&mut self, team: TeamSpec) {
        let r = self.ask(Request::Apply {
            team,
            source: None,
            force: false,
        });
        assert!(matches!(r, Response::Applied { .. }), "{r:?}");
    }

    pub fn world(&self) -> &World {
        self.sup.world()
    }

    pub fn live(&self) -> Vec<Session> {
        self.world()
            .sessions
            .values()
            .filter(|s| s.state.is_live())
            .cloned()
            .collect()
    }

    /// The shim of `uid` reports its program running; returns the pid.
    pub fn started(&mut self, uid: u64) -> u32 {
        let pid = 100 + uid as u32;
        let report = ShimReport::Started {
            uid,
            pid,
            at: self.now.wall,
        };
        self.records.insert(uid, report.clone());
        self.ask(Request::Shim(report));
        pid
    }

    /// Every live session's program starts.
    pub fn start_all(&mut self) -> Vec<Session> {
        for s in self.live() {
            if s.state == SessionState::Pending {
                self.started(s.uid);
            }
        }
        self.live()
    }

    /// The shim of `uid` reports how its program ended, as it does: the
    /// record first, then the socket. Returns the request id.
    pub fn exited(
        &mut self,
        uid: u64,
        code: Option<i32>,
        signal: Option<i32>,
        hangup: bool,
    ) -> RequestId {
        self.exited_as(uid, code, signal, hangup, false)
    }

    /// As [`H::exited`], from a shim that says whether it can run the
    /// slot's next program in its pane.
    pub fn exited_as(
        &mut self,
        uid: u64,
        code: Option<i32>,
        signal: Option<i32>,
        hangup: bool,
        rerun: bool,
    ) -> RequestId {
        let report = ShimReport::Exited {
            uid,
            code,
            signal,
            at: self.now.wall,
            hangup,
            failure: None,
            rerun,
            run_in_answer: false,
        };
        self.records.insert(uid, report.clone());
        self.send(Request::Shim(report))
    }

    pub fn role_history(&self) -> &crate::domain::state::RoleHistory {
        self.world().roles.values().next().expect("a role")
    }

    pub fn marker_detail(&self) -> ExitDetail {
        self.role_history()
            .marker
            .as_ref()
            .expect("a marker")
            .exit
            .as_ref()
            .unwrap()
            .detail
            .clone()
    }

    pub fn kinds(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.kind.as_str()).collect()
    }

    pub fn status(&mut self) -> crate::view::StatusView {
        match self.ask(Request::Status) {
            Response::Status(s) => *s,
            other => panic!("{other:?}"),
        }
    }
}

fn heartbeat_team() -> TeamSpec {
    let mut w = role("w", 1);
    w.health = Some(Health::Heartbeat {
        timeout: NonZeroSpan::from_secs(1),
        failures: Failures::new(2).unwrap(),
    });
    team(vec![w])
}

fn refused(r: Response) -> String {
    error_with(crate::error::exit::REFUSED, r)
}

/// The text of an error answer, which must carry exit code `code`.
fn error_with(code: i32, r: Response) -> String {
    match r {
        Response::Error(e) => {
            assert_eq!(e.code(), code, "{e}");
            e.to_string()
        }
        other => panic!("not an error with code {code}: {other:?}"),
    }
}

#[test]
fn apply_spawns_shims_with_the_session_environment() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    let spawns = h.tmux.spawns();
    assert_eq!(spawns.len(), 2);
    let req = &spawns[0];
    assert_eq!(req.argv[0], "/bin/marvel");
    assert_eq!(req.argv[1], "shim");
    assert_eq!(req.argv.last().unwrap(), "sh");
    assert_eq!(req.env["MARVEL_SESSION"], "demo/squad/w-0");
    assert_eq!(req.env["MARVEL_ROLE"], "demo/squad/w");
    assert_eq!(req.env["MARVEL_TEAM"], "demo/squad");
    assert_eq!(req.env["MARVEL_WORKSPACE"], "demo");
    assert_eq!(req.env["MARVEL_HOME"], "/state");
    let uid = h.live().iter().find(|s| s.key.slot == 0).unwrap().uid;
    assert_eq!(req.env["MARVEL_SESSION_UID"], uid.to_string());
    assert_eq!(req.env["MARVEL_TMUX_SOCKET"], "sock");
    assert_eq!(
        req.log,
        Some(PathBuf::from(format!("/state/logs/{uid}.log")))
    );
    // One tmux session for the team, a window per session.
    assert!(
        matches!(&req.place, Place::NewSession { session, team, .. } if session == "demo-squad" && team == "demo/squad")
    );
    assert_eq!(req.window_name, "w-0");
    assert!(
        matches!(&spawns[1].place, Place::NewWindow { session, .. } if session == "demo-squad")
    );
    assert_eq!(h.tmux.sessions()["demo-squad"], vec!["w-0", "w-1"]);
    assert!(
        h.live()
            .iter()
            .all(|s| s.state == SessionState::Pending && s.pane.is_some())
    );
}

/// Issue: right after `run`, `get` said "No sessions found." while tmux's
/// first answer was still on its way.
#[test]
fn sessions_are_pending_from_the_moment_apply_is_answered_even_before_tmux_answers() {
    let mut h = H::blank();
    h.restore(Loaded::Fresh, Vec::new());
    // tmux's first probe is under way: nothing is known of tmux yet.
    assert_eq!(h.jobs.len(), 1);
    let id = h.send(Request::Apply {
        team: team(vec![role("w", 2)]),
        source: None,
        force: false,
    });
    assert!(matches!(h.replies[&id], Response::Applied { .. }));
    let Response::Sessions(v) = h.ask_now(Request::Get {
        kind: Kind::Sessions,
        filter: Filter::default(),
    }) else {
        panic!()
    };
    assert_eq!(v.len(), 2);
    assert!(
        v.iter()
            .all(|s| s.state.as_str() == "pending" && s.pane.is_none())
    );
    // A pending session can be killed without tmux: it is made again.
    let r = h.ask_now(Request::Kill { key: "w-0".into() });
    assert!(matches!(r, Response::Done(_)), "{r:?}");
    // Once tmux answers, the panes are asked for, in one batch.
    h.run_jobs();
    assert_eq!(h.tmux.spawns().len(), 2);
    assert!(h.live().iter().all(|s| s.pane.is_some()));
}

impl H {
    /// Asks without running any tmux job.
    pub fn ask_now(&mut self, request: Request) -> Response {
        let id = self.send(request);
        self.replies.remove(&id).expect("answered at once")
    }
}

#[test]
fn a_reported_exit_becomes_a_marker_and_the_pane_stays_for_the_next_run() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    let s = h.live().remove(0);
    h.started(s.uid);
    assert_eq!(h.world().sessions[&s.uid].state, SessionState::Running);
    let pane = s.pane.clone().unwrap();
    h.logs.insert(s.uid, vec!["hello".into(), "bye".into()]);
    let calls_before = h.tmux.calls().len();
    let id = h.exited(s.uid, Some(42), None, false);
    // Recorded at once, with the log's last lines; the shim is told to
    // stay in its pane and what line to show there.
    assert_eq!(h.role_history().restarts, 1);
    let Response::Linger(line) = &h.replies[&id] else {
        panic!("{:?}", h.replies[&id]);
    };
    assert!(line.starts_with("crashed: exit 42"), "{line}");
    assert!(line.contains("restart at"), "{line}");
    let hist = h.role_history();
    let m = hist.marker.as_ref().expect("a marker");
    assert_eq!(m.exit.as_ref().unwrap().code, Some(42));
    assert_eq!(m.last_output, vec!["hello", "bye"]);
    assert!(hist.next_restart_at.is_some());
    assert!(h.live().is_empty(), "the replacement waits for the backoff");
    h.run_jobs();
    assert!(
        !h.tmux.calls()[calls_before..].contains(&Call::Kill(pane.clone())),
        "the pane is kept"
    );
    let kept = &h.world().kept[&s.key];
    assert_eq!((kept.pane.as_str(), kept.uid), (pane.as_str(), s.uid));
    assert!(h.tmux.pane(&pane).is_some());
    assert!(!h.records.contains_key(&s.uid), "the record is done with");
    // A duplicate report changes nothing, and is told the same line.
    let again = h.exited(s.uid, Some(1), None, false);
    h.run_jobs();
    assert_eq!(h.role_history().restarts, 1);
    assert_eq!(h.kinds().iter().filter(|k| **k == "crashed").count(), 1);
    assert!(matches!(h.replies[&again], Response::Linger(_)));
    // The backoff ends: the replacement runs in the same pane.
    h.until_wake();
    h.run_jobs();
    let next = h.live().remove(0);
    assert_ne!(next.uid, s.uid);
    assert_eq!(next.pane.as_deref(), Some(pane.as_str()));
    assert_eq!(next.window, s.window);
    assert!(h.world().kept.is_empty(), "the pane is in use again");
}

/// One role of one replica whose program ran and exited 3; its shim said
/// whether it can run the next program in the pane it stays in.
fn crashed_once(rerun: bool) -> (H, Session) {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    let s = h.live().remove(0);
    h.started(s.uid);
    h.exited_as(s.uid, Some(3), None, false, rerun);
    h.run_jobs();
    (h, s)
}

#[test]
fn the_shim_of_a_kept_pane_runs_the_next_spawn_itself_without_tmux() {
    let mut h = H::new();
    let mut w = role("w", 1);
    w.env = [("TOKEN".to_string(), "t".to_string())]
        .into_iter()
        .collect::<BTreeMap<_, _>>()
        .try_into()
        .unwrap();
    h.apply(team(vec![w]));
    let s = h.live().remove(0);
    h.started(s.uid);
    let pane = s.pane.clone().unwrap();
    let shim = s.pane_pid.unwrap();
    h.exited_as(s.uid, Some(3), None, false, true);
    h.run_jobs();
    assert!(h.world().kept[&s.key].rerun);
    assert!(
        h.records.contains_key(&s.uid),
        "the record is left for the next run to take over"
    );
    let calls = h.tmux.calls().len();
    h.until_wake();
    h.run_jobs();
    // The shim was asked, by pid with the tmux server as its parent, to
    // run the next spawn: its uid, command and environment.
    let (of, pid, parent, next) = h.reruns.pop().expect("a rerun");
    let next_s = h.live().remove(0);
    assert_eq!((of, pid), (s.uid, shim));
    assert_eq!(Some(parent), h.sup.ws.server_pid);
    assert_eq!(next.uid, next_s.uid);
    assert_ne!(next.uid, s.uid);
    assert_eq!(next.argv[..], role("w", 1).command[..]);
    assert_eq!(next.env["TOKEN"], "t");
    assert_eq!(next.env["MARVEL_RESTARTS"], "1");
    assert_eq!(next.env["MARVEL_SESSION_UID"], next.uid.to_string());
    // No tmux call made a pane for it: it has the kept pane, and runs
    // once its shim says so.
    assert!(
        !h.tmux.calls()[calls..]
            .iter()
            .any(|c| matches!(c, Call::Spawn(..))),
        "{:?}",
        &h.tmux.calls()[calls..]
    );
    assert_eq!(next_s.pane.as_deref(), Some(pane.as_str()));
    assert_eq!(next_s.pane_pid, Some(shim));
    assert!(h.world().kept.is_empty(), "the pane is in use again");
    h.started(next_s.uid);
    assert_eq!(h.world().sessions[&next_s.uid].state, SessionState::Running);
    assert_eq!(h.kinds().iter().filter(|k| **k == "created").count(), 2);
}

#[test]
fn the_pane_of_a_shim_that_cannot_run_the_next_spawn_is_respawned() {
    // An older shim, which cannot run another program: respawned.
    let (mut h, s) = crashed_once(false);
    let pane = s.pane.clone().unwrap();
    assert!(!h.world().kept[&s.key].rerun);
    assert!(!h.records.contains_key(&s.uid), "the record is done with");
    h.until_wake();
    h.run_jobs();
    assert!(h.reruns.is_empty());
    let second = h.live().remove(0);
    assert_eq!(second.pane.as_deref(), Some(pane.as_str()));
    assert_ne!(
        second.pane_pid, s.pane_pid,
        "a new shim in the respawned pane"
    );
    assert!(h.world().kept.is_empty());
}

#[test]
fn window_statuses_are_set_one_tmux_call_at_a_time_the_latest_last() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    let s = h.live().remove(0);
    h.started(s.uid);
    let decorating = |h: &H| {
        h.jobs
            .iter()
            .filter(|(_, j)| matches!(j, Job::Decorate(_)))
            .count()
    };
    // The program crashes and is restarted while tmux has not yet set the
    // status of the crash: the restart's waits for it.
    h.exited_as(s.uid, Some(3), None, false, true);
    assert_eq!(decorating(&h), 1);
    h.until_wake();
    assert_eq!(decorating(&h), 1, "the restart's status waits");
    let next = h.live().remove(0);
    h.started(next.uid);
    // Up long enough, the restart counts as running.
    h.advance(workspace::SETTLE.as_millis() as u64);
    assert_eq!(decorating(&h), 1);
    h.run_jobs();
    assert_eq!(decorating(&h), 0, "the first ran, and the next one too");
    let statuses: Vec<String> = h
        .tmux
        .calls()
        .iter()
        .filter_map(|c| match c {
            Call::Decorate(d) => Some(d[0].status.clone()),
            _ => None,
        })
        .collect();
    let last = statuses.last().expect("statuses set");
    assert!(last.contains('✓'), "{statuses:?}");
}

/// Runs a crash loop of one slot for a minute, each run lasting `run_ms`
/// and the backoff 50 ms: the number of crashes, and the window statuses
/// tmux was asked to set meanwhile. Then the program stays up: its pane.
fn crash_loop_for_a_minute(h: &mut H, run_ms: u64) -> (u32, Vec<String>, String) {
    let mut w = role("w", 1);
    w.backoff = crate::domain::world::sim::steady(50);
    w.max_restarts = None;
    h.apply(team(vec![w]));
    let mut s = h.live().remove(0);
    let pane = s.pane.clone().unwrap();
    h.started(s.uid);
    let before = h.tmux.calls().len();
    let start = h.now.mono;
    let minute = Duration::from_secs(60);
    let mut crashes = 0;
    while h.now.mono < start + minute {
        // The run, and whatever is due meanwhile.
        let end = h.now.mono + Duration::from_millis(run_ms);
        while h.wake < end {
            h.until_wake();
            h.run_jobs();
        }
        h.advance((end - h.now.mono).as_millis() as u64);
        h.exited_as(s.uid, Some(3), None, false, true);
        h.run_jobs();
        // The backoff, and any status held back meanwhile.
        while h.live().is_empty() {
            assert!(h.wake < start + 2 * minute, "the restart is planned");
            h.until_wake();
            h.run_jobs();
        }
        s = h.live().remove(0);
        assert_eq!(s.pane.as_deref(), Some(pane.as_str()), "the same pane");
        h.started(s.uid);
        crashes += 1;
    }
    let statuses = h.tmux.calls()[before..]
        .iter()
        .filter_map(|c| match c {
            Call::Decorate(d) => Some(d[0].status.clone()),
            _ => None,
        })
        .collect();
    (crashes, statuses, pane)
}

/// A crash loop of quick runs keeps its window at `↻` throughout: a
/// restarted program counts as running once it has stayed up a second.
/// No status is set per crash (each tmux call left the tmux server's
/// memory a little more fragmented); the window says `✓` once the
/// program stays up.
#[test]
fn a_crash_loop_of_quick_runs_keeps_its_window_restarting_without_a_tmux_call_per_crash() {
    let mut h = H::new();
    let (crashes, statuses, pane) = crash_loop_for_a_minute(&mut h, 10);
    assert!(crashes > 500, "{crashes} crashes in a minute");
    assert_eq!(
        statuses.len(),
        1,
        "{} statuses set for {crashes} crashes, the first {:?}",
        statuses.len(),
        &statuses[..statuses.len().min(6)]
    );
    assert_eq!(statuses[0], "↻");
    h.advance(workspace::SETTLE.as_millis() as u64);
    h.run_jobs();
    assert_eq!(
        h.tmux.pane(&pane).and_then(|p| p.status).as_deref(),
        Some("✓")
    );
}

/// A crash loop of runs that last a little longer flips its window
/// between `✓` and `↻` twice per crash: tmux is told at most once a
/// second after a burst, and what it shows in the end is the latest.
#[test]
fn a_crash_loop_sets_window_statuses_at_most_once_a_second_the_latest_last() {
    let mut h = H::new();
    let (crashes, statuses, pane) = crash_loop_for_a_minute(&mut h, 1100);
    assert!(crashes > 40, "{crashes} crashes in a minute");
    assert!(
        statuses.len() <= 60 + workspace::STATUS_BURST as usize,
        "{} tmux calls for the statuses of {crashes} crashes in a minute",
        statuses.len()
    );
    h.advance(workspace::STATUS_EVERY.as_millis() as u64);
    h.run_jobs();
    assert_eq!(
        h.tmux.pane(&pane).and_then(|p| p.status).as_deref(),
        Some("✓")
    );
}

#[test]
fn a_shim_the_daemon_died_before_asking_is_asked_again_by_the_next_daemon() {
    let (mut h, s) = crashed_once(true);
    let pane = s.pane.clone().unwrap();
    // The daemon places the next spawn in the kept pane, writes that, and
    // dies before the shim hears of it.
    h.shims_answer = None;
    h.until_wake();
    let (of, pid, _, next) = h.reruns.pop().expect("a rerun");
    // Until its start is heard of, a sweep spares the run it is to take.
    h.advance(h.sup.setup.cfg.sweep.as_millis() as u64);
    let pruned = h.trace.iter().rev().find_map(|o| match o {
        Output::Prune { kept, .. } => Some(kept.clone()),
        _ => None,
    });
    assert!(pruned.expect("a sweep").contains(&of));
    let mut h = h.restart();
    h.run_jobs();
    // The next daemon asks the same shim for the same run again.
    assert_eq!(h.reruns.len(), 1, "{:?}", h.reruns);
    let (of2, pid2, _, next2) = h.reruns.pop().unwrap();
    assert_eq!((of2, pid2, &next2), (of, pid, &next));
    let live = h.live();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].uid, next.uid, "the same spawn, not another");
    assert_eq!(live[0].pane.as_deref(), Some(pane.as_str()));
    h.started(next.uid);
    assert_eq!(h.world().sessions[&next.uid].state, SessionState::Running);
    assert_eq!(h.world().sessions[&next.uid].rerun_of, None);
    // Once it runs, a later daemon asks nothing.
    let mut h = h.restart();
    h.run_jobs();
    assert!(h.reruns.is_empty());
}

#[test]
fn a_shim_gone_when_asked_to_run_the_next_spawn_is_that_spawn_s_end() {
    let (mut h, s) = crashed_once(true);
    let pane = s.pane.clone().unwrap();
    h.shims_answer = Some(false);
    h.until_wake();
    h.run_jobs();
    assert_eq!(h.reruns.len(), 1);
    assert!(h.live().is_empty(), "{:?}", h.live());
    assert_eq!(
        h.marker_detail(),
        ExitDetail::StartFailed(format!("the shim in pane {pane} is gone"))
    );
    // Its pane is kept, and the slot's next spawn respawns it.
    assert!(!h.world().kept[&s.key].rerun);
    h.shims_answer = Some(true);
    h.until_wake();
    h.run_jobs();
    assert_eq!(h.reruns.len(), 1, "not asked again");
    let next = h.live().remove(0);
    assert_eq!(next.pane.as_deref(), Some(pane.as_str()));
    assert_ne!(
        next.pane_pid, s.pane_pid,
        "a new shim in the respawned pane"
    );
}

/// Long-running heartbeat session: started an hour ago.
fn long_running(h: &mut H) -> Session {
    h.sup.world.watching_since = None;
    h.apply(heartbeat_team());
    let s = h.live().remove(0);
    let report = ShimReport::Started {
        uid: s.uid,
        pid: 7,
        at: h.now.wall - chrono::Duration::hours(1),
    };
    h.ask(Request::Shim(report));
    s
}

#[test]
fn a_stale_heartbeat_ends_the_program_and_counts_as_a_crash() {
    let mut h = H::new();
    let s = long_running(&mut h);
    assert!(h.live().is_empty());
    // The program is asked to end; its pane stays, with its last screen.
    let shim = s.pane_pid.unwrap();
    assert_eq!(h.signals, [(7, shim, Signal::Term)]);
    assert!(h.tmux.kills().is_empty());
    assert_eq!(h.world().kept[&s.key].uid, s.uid);
    let hist = h.role_history();
    assert_eq!(hist.restarts, 1);
    let exit = hist.marker.as_ref().unwrap().exit.clone().unwrap();
    assert_eq!(exit.detail, ExitDetail::Unhealthy("heartbeat stale".into()));
    assert!(hist.next_restart_at.is_some(), "backs off like any crash");
    // The shim's own report of the end is no second death, and the
    // program that ended needs no SIGKILL.
    let id = h.exited(s.uid, None, Some(15), false);
    h.run_jobs();
    assert_eq!(h.role_history().restarts, 1);
    assert!(
        matches!(h.replies[&id], Response::Linger(ref l) if l.starts_with("crashed: heartbeat stale"))
    );
    h.advance(6000);
    assert_eq!(h.signals.len(), 1, "{:?}", h.signals);
}

#[test]
fn a_program_that_ignores_sigterm_for_its_stale_heartbeat_gets_sigkill() {
    let mut h = H::new();
    let s = long_running(&mut h);
    let shim = s.pane_pid.unwrap();
    h.advance(4000);
    assert_eq!(h.signals.len(), 1);
    h.advance(1000);
    assert_eq!(
        h.signals,
        [(7, shim, Signal::Term), (7, shim, Signal::Kill)]
    );
}

#[test]
fn a_stale_heartbeat_during_the_roles_backoff_is_charged_once_and_extends_it() {
    let mut w = role("w", 2);
    w.health = Some(Health::Heartbeat {
        timeout: NonZeroSpan::from_secs(1),
        failures: Failures::new(1).unwrap(),
    });
    let mut h = H::new();
    h.apply(team(vec![w]));
    let both = h.start_all();
    // Slot 0 crashes: the role backs off for 100 ms.
    h.exited(both[0].uid, Some(3), None, false);
    h.run_jobs();
    let backoff_until = h.role_history().next_restart_at.unwrap();
    // Slot 1 never sent a heartbeat: stale after grace + 1 timeout.
    let stale = |h: &H| {
        h.events
            .iter()
            .filter(|e| e.kind.as_str() == "crashed" && e.message.contains("heartbeat stale"))
            .count()
    };
    let mut waited = 0;
    while stale(&h) == 0 {
        h.advance(100);
        h.run_jobs();
        waited += 1;
        assert!(waited < 100, "slot 1 never went stale");
    }
    // Charged once: two deaths, two crash events, two restarts.
    let hist = h.role_history().clone();
    assert_eq!(hist.restarts, 2, "{hist:?}");
    assert_eq!(h.kinds().iter().filter(|k| **k == "crashed").count(), 2);
    assert!(hist.next_restart_at.unwrap() > backoff_until || hist.frozen.is_some());
    // The shim's own word on the end of the program it was told to end is
    // no second death.
    h.exited(both[1].uid, None, Some(15), false);
    h.run_jobs();
    assert_eq!(h.role_history().restarts, 2);
    assert_eq!(stale(&h), 1);
    // Never more panes than replicas, whatever the timing.
    assert!(h.tmux.panes().len() <= 2);
}

#[test]
fn a_heartbeat_keeps_the_session_and_heals_it() {
    let mut h = H::new();
    h.sup.world.watching_since = None;
    h.apply(heartbeat_team());
    let s = h.live().remove(0);
    // The pane's environment has the full key, never a suffix.
    let Response::Error(e) = h.ask(Request::Heartbeat {
        session: "squad/w-0".into(),
        uid: Some(s.uid),
        context_pct: None,
        note: None,
        state: None,
    }) else {
        panic!("a suffix was accepted")
    };
    assert_eq!(e.code(), crate::error::exit::USAGE);
    let r = h.ask(Request::Heartbeat {
        session: s.key.to_string(),
        uid: Some(s.uid),
        context_pct: Some(ContextPct::new(30).unwrap()),
        note: Some(Note::new("reading").unwrap()),
        state: None,
    });
    assert!(matches!(r, Response::Done(_)), "{r:?}");
    let report = ShimReport::Started {
        uid: s.uid,
        pid: 7,
        at: h.now.wall - chrono::Duration::hours(1),
    };
    h.ask(Request::Shim(report));
    let now = &h.world().sessions[&s.uid];
    assert_eq!(now.health, HealthState::Healthy);
    assert_eq!(now.heartbeat.context_pct, Some(30));
    assert!(h.tmux.kills().is_empty());
    let Response::Sessions(v) = h.ask(Request::Get {
        kind: Kind::Sessions,
        filter: Default::default(),
    }) else {
        panic!()
    };
    assert_eq!(v[0].health.map(|h| h.as_str()), Some("healthy"));
    assert_eq!(v[0].heartbeat_note.as_deref(), Some("reading"));
    let Response::Error(e) = h.ask(Request::Heartbeat {
        session: s.key.to_string(),
        uid: Some(s.uid + 100),
        context_pct: None,
        note: None,
        state: None,
    }) else {
        panic!()
    };
    assert_eq!(e.code(), crate::error::exit::REFUSED);
}

#[test]
fn scaling_or_changing_a_shifting_team_is_refused_until_it_ends() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    let Response::Shift { team: key, shift } = h.ask(Request::Shift {
        team: "squad".into(),
        role: None,
        timeout_ms: 60_000,
    }) else {
        panic!("shift refused")
    };
    assert_eq!(
        (key.as_str(), shift.state.as_str()),
        ("demo/squad", "running")
    );
    let msg = refused(h.ask(Request::Scale {
        key: "w".into(),
        replicas: 3,
    }));
    assert!(
        msg.contains("is shifting") && msg.contains("--abort"),
        "{msg}"
    );
    refused(h.ask(Request::Apply {
        team: team(vec![role("w", 3)]),
        source: None,
        force: false,
    }));
    refused(h.ask(Request::Shift {
        team: "squad".into(),
        role: None,
        timeout_ms: 60_000,
    }));
    // Re-applying the unchanged team is fine.
    h.apply(team(vec![role("w", 2)]));
    let Response::Shift { shift, .. } = h.ask(Request::AbortShift {
        team: "squad".into(),
    }) else {
        panic!("abort refused")
    };
    assert_eq!(shift.state.as_str(), "aborted");
    assert!(matches!(
        h.ask(Request::Scale {
            key: "w".into(),
            replicas: 3,
        }),
        Response::Done(_)
    ));
    refused(h.ask(Request::AbortShift {
        team: "squad".into(),
    }));
}

#[test]
fn a_hang_up_with_the_server_gone_charges_nobody() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 3)]));
    let sessions = h.start_all();
    h.tmux.lose_server();
    h.exited(sessions[0].uid, None, Some(1), true);
    h.run_jobs();
    let hist = h.role_history();
    assert_eq!((hist.restarts, hist.frozen.is_some()), (0, false));
    assert_eq!(h.marker_detail(), ExitDetail::TmuxLost);
    // All three were lost with the server, and come back at once.
    assert_eq!(h.live().len(), 3);
    assert!(
        h.live()
            .iter()
            .all(|s| sessions.iter().all(|o| o.uid != s.uid))
    );
}

#[test]
fn a_hang_up_waits_for_a_conclusive_listing_and_an_error_settles_nothing() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 3)]));
    let sessions = h.start_all();
    // As with `tmux kill-server`: the exiting server first answers with a
    // lost connection, then is gone.
    h.tmux.fail_next(SubstrateError::Unreachable(
        "server exited unexpectedly".into(),
    ));
    h.tmux.lose_server();
    for s in &sessions[..2] {
        h.exited(s.uid, None, Some(1), true);
    }
    h.run_one();
    assert_eq!(h.live().len(), 3, "an error settles nothing");
    assert_eq!(h.sup.tmux.health.state, Some(TmuxState::Down));
    // The retry probe finds the server gone: nobody is charged.
    h.until_wake();
    h.run_jobs();
    let hist = h.role_history();
    assert_eq!(
        (hist.restarts, hist.frozen.is_some()),
        (0, false),
        "{hist:?}"
    );
    assert_eq!(h.marker_detail(), ExitDetail::TmuxLost);
    assert_eq!(h.live().len(), 3, "all three come back");
    assert!(
        h.live()
            .iter()
            .all(|s| !sessions.iter().any(|o| o.uid == s.uid))
    );
}

#[test]
fn a_hang_up_with_the_server_still_there_is_a_killed_pane() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    let sessions = h.start_all();
    let victim = &sessions[0];
    h.tmux.remove(victim.pane.as_deref().unwrap());
    h.exited(victim.uid, None, Some(1), true);
    h.run_jobs();
    let hist = h.role_history();
    assert_eq!(hist.restarts, 1);
    let m = hist.marker.as_ref().unwrap();
    assert_eq!(
        (m.uid, &m.exit.as_ref().unwrap().detail),
        (victim.uid, &ExitDetail::PaneKilled)
    );
    assert_eq!(h.live().len(), 1, "the other one is untouched");
}

#[test]
fn a_missing_tmux_is_down_with_a_retry_and_the_team_comes_up_once_it_answers() {
    let mut h = H::blank();
    h.tmux
        .fail_next(SubstrateError::Missing("tmux: not found".into()));
    h.restore(Loaded::Fresh, Vec::new());
    h.run_jobs();
    h.apply(team(vec![role("w", 1)]));
    assert_eq!(h.live().len(), 1, "pending, waiting for tmux");
    assert!(h.tmux.spawns().is_empty());
    let st = h.status();
    assert_eq!(st.tmux.state.as_str(), "down");
    assert_eq!(st.tmux.consecutive_failures, 1);
    assert!(st.tmux.next_retry_at.is_some());
    assert!(st.tmux.last_error.unwrap().contains("not found"));
    // Typing needs tmux: refused with its state.
    let r = h.ask(Request::Inject {
        key: "w-0".into(),
        text: "x".into(),
        enter: false,
        keys: false,
        when_idle_ms: None,
    });
    assert!(matches!(r, Response::Error(_)), "{r:?}");
    h.until_wake();
    h.run_jobs();
    assert_eq!(h.status().tmux.state.as_str(), "up");
    assert_eq!(h.tmux.spawns().len(), 1);
    assert!(h.live()[0].pane.is_some());
}

/// Issue: one refused tmux call (a `kill-session` answering "no current
/// target" on an empty server, a command too long) marked the whole server
/// down and made unrelated requests fail.
#[test]
fn a_command_tmux_refuses_fails_that_request_only_and_tmux_stays_up() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    let s = h.start_all().remove(0);
    h.tmux
        .fail_next(SubstrateError::Refused("command too long".into()));
    let r = h.ask(Request::Inject {
        key: "w-0".into(),
        text: "x".into(),
        enter: false,
        keys: false,
        when_idle_ms: None,
    });
    assert!(
        matches!(r, Response::Error(ref e) if e.to_string().contains("command too long")),
        "{r:?}"
    );
    assert_eq!(h.status().tmux.state.as_str(), "up");
    assert!(!h.kinds().contains(&"tmux-down"));
    // The next request works.
    let r = h.ask(Request::Inject {
        key: "w-0".into(),
        text: "y".into(),
        enter: false,
        keys: false,
        when_idle_ms: None,
    });
    assert!(matches!(r, Response::Done(_)), "{r:?}");
    assert_eq!(
        h.tmux.sent().last(),
        Some(&(s.pane.unwrap(), "y".to_string()))
    );
}

#[test]
fn a_spawn_tmux_refuses_counts_as_a_crash_and_backs_off_instead_of_looping() {
    let mut h = H::new();
    h.tmux.fail_next(SubstrateError::Refused(
        "create window failed: fork failed".into(),
    ));
    h.apply(team(vec![role("w", 1)]));
    let hist = h.role_history();
    assert_eq!(hist.restarts, 1);
    assert!(hist.next_restart_at.is_some(), "backs off");
    assert!(
        matches!(h.marker_detail(), ExitDetail::SpawnRefused(ref m) if m.contains("fork failed"))
    );
    assert_eq!(h.status().tmux.state.as_str(), "up");
    assert_eq!(
        h.tmux.spawns().len(),
        1,
        "no second attempt before the backoff"
    );
    h.until_wake();
    h.run_jobs();
    assert_eq!(h.tmux.spawns().len(), 2);
}

/// Issue: a 100 KB `inject` was one tmux command over its message limit.
#[test]
fn long_text_is_typed_in_pieces_within_tmux_limits_and_answered_once() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    h.start_all();
    let text = "x".repeat(100_000);
    let r = h.ask(Request::Inject {
        key: "w-0".into(),
        text: text.clone(),
        enter: true,
        keys: false,
        when_idle_ms: None,
    });
    assert!(
        matches!(r, Response::Done(ref m) if m.contains("typed 100000 bytes")),
        "{r:?}"
    );
    let sends: Vec<_> = h
        .tmux
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::SendText { text, enter, .. } => Some((text, enter)),
            _ => None,
        })
        .collect();
    assert!(sends.len() > 1 && sends.iter().all(|(t, _)| t.len() <= 8192));
    assert_eq!(
        sends.iter().map(|(t, _)| t.as_str()).collect::<String>(),
        text
    );
    assert_eq!(
        sends.iter().filter(|(_, e)| *e).count(),
        1,
        "Enter once, at the end"
    );
    assert!(sends.last().unwrap().1);
}

#[test]
fn a_new_daemon_adopts_live_panes_and_records_deaths_from_while_it_was_away() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    let sessions = h.start_all();
    // The daemon goes away; one program exits 7 meanwhile.
    let dead = &sessions[0];
    h.records.insert(
        dead.uid,
        ShimReport::Exited {
            uid: dead.uid,
            code: Some(7),
            signal: None,
            at: h.now.wall,
            hangup: false,
            failure: None,
            rerun: false,
            run_in_answer: false,
        },
    );
    h.tmux.remove(dead.pane.as_deref().unwrap());
    let mut h = h.restart();
    h.run_jobs();
    assert_eq!(
        h.role_history()
            .marker
            .as_ref()
            .unwrap()
            .exit
            .as_ref()
            .unwrap()
            .code,
        Some(7)
    );
    let alive = &sessions[1];
    let again = &h.world().sessions[&alive.uid];
    assert_eq!(
        (again.state, again.pane.clone(), again.pid),
        (SessionState::Running, alive.pane.clone(), alive.pid)
    );
    assert_eq!(h.live().len(), 1, "no duplicates before the backoff");
    assert!(h.kinds().contains(&"adopted"));
}

/// Issue 11 (adoption as strong as before): a listed pane with the right
/// id but another program in it is not adopted; the session's program is
/// gone, recorded once, and the slot is filled again.
#[test]
fn a_pane_with_the_same_id_but_another_program_is_not_adopted() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    let sessions = h.start_all();
    let (other, kept) = (&sessions[0], &sessions[1]);
    h.tmux
        .set_pid(other.pane.as_deref().unwrap(), other.pid.unwrap() + 1000);
    let mut h = h.restart();
    h.run_jobs();
    // Not there at the first listing; the next one settles it (the shim may
    // still have been on its way).
    for _ in 0..3 {
        h.until_wake();
        h.run_jobs();
    }
    assert!(
        h.world()
            .sessions
            .get(&other.uid)
            .is_none_or(|s| !s.state.is_live()),
        "the session whose pane holds another program is over"
    );
    let marker = h.role_history().marker.clone().expect("a crashed marker");
    assert_eq!(marker.uid, other.uid);
    assert_eq!(
        marker.exit.map(|e| e.detail),
        Some(ExitDetail::PaneVanished)
    );
    assert_eq!(h.role_history().restarts, 1);
    let again = &h.world().sessions[&kept.uid];
    assert_eq!(
        (again.state, again.pane.clone(), again.pid),
        (SessionState::Running, kept.pane.clone(), kept.pid)
    );
    assert_eq!(
        h.kinds().iter().filter(|k| **k == "adopted").count(),
        1,
        "{:?}",
        h.kinds()
    );
}

/// A record that stopped an earlier daemon is set aside, not replayed.
#[test]
fn an_exit_record_that_failed_to_apply_is_recorded_as_an_end_with_a_warning() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    let s = h.start_all().remove(0);
    let world = h.saved.clone().unwrap();
    let mut h2 = H::blank();
    h2.tmux = h.tmux;
    h2.tmux.remove(s.pane.as_deref().unwrap());
    let moved = PathBuf::from(format!("/state/exits/{}.json.failed", s.uid));
    h2.restore(
        Loaded::Restored {
            world: Box::new(world),
            rebooted: false,
            cut: None,
        },
        vec![(s.uid, Replay::Failed(moved))],
    );
    h2.run_jobs();
    let warning = h2
        .events
        .iter()
        .find(|e| e.kind.as_str() == "warning")
        .expect("a warning");
    assert!(
        warning.message.contains("stopped an earlier daemon"),
        "{warning:?}"
    );
    assert!(warning.message.contains(".json.failed"));
    assert_eq!(h2.role_history().restarts, 1);
    assert_eq!(h2.marker_detail(), ExitDetail::PaneVanished);
}

#[test]
fn a_held_tmux_holds_no_answer_from_state_and_decides_nothing() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    let before = h.start_all();
    // A listing is handed to tmux, which does not answer (the job is not run).
    h.sup.next_sweep = Duration::ZERO;
    h.advance(1);
    assert_eq!(h.jobs.len(), 1);
    let Response::Sessions(s) = h.ask_now(Request::Get {
        kind: Kind::Sessions,
        filter: Default::default(),
    }) else {
        panic!()
    };
    assert_eq!(s.len(), 2);
    assert!(matches!(h.ask_now(Request::Status), Response::Status(_)));
    // Typing needs tmux: answered once tmux answers.
    let typed = h.send(Request::Inject {
        key: "w-0".into(),
        text: "hi".into(),
        enter: false,
        keys: false,
        when_idle_ms: None,
    });
    assert!(!h.replies.contains_key(&typed));
    // Past the listing's expected time, tmux shows as degraded and new work
    // is refused rather than queued behind it.
    h.advance(1500);
    assert_eq!(h.status_now().tmux.state.as_str(), "degraded");
    h.run_jobs();
    assert!(matches!(&h.replies[&typed], Response::Done(m) if m.contains("typed 2 bytes")));
    assert_eq!(h.live(), before, "the held listing decided nothing");
    assert_eq!(h.status_now().tmux.state.as_str(), "up");
}

impl H {
    fn status_now(&mut self) -> crate::view::StatusView {
        match self.ask_now(Request::Status) {
            Response::Status(s) => *s,
            other => panic!("{other:?}"),
        }
    }
}

/// A timeout is *unknown*: no session is declared dead for it.
#[test]
fn a_tmux_timeout_is_degraded_and_never_a_death() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    let before = h.start_all();
    h.tmux
        .fail_next(SubstrateError::Timeout(Duration::from_secs(1)));
    h.sup.next_sweep = Duration::ZERO;
    h.advance(1);
    h.run_jobs();
    assert_eq!(h.status().tmux.state.as_str(), "degraded");
    assert_eq!(h.live(), before);
    assert!(!h.kinds().contains(&"crashed"));
    // The retry probe finds everything where it was.
    h.until_wake();
    h.run_jobs();
    assert_eq!(h.status().tmux.state.as_str(), "up");
    assert_eq!(h.live(), before);
    assert!(!h.kinds().contains(&"crashed"));
}

#[test]
fn a_pane_made_for_a_session_stopped_meanwhile_is_removed() {
    let mut h = H::new();
    h.apply_now(team(vec![role("w", 2)]));
    assert_eq!(h.jobs.len(), 1, "the spawn is under way");
    assert!(h.live().iter().all(|s| s.pane.is_none()));
    let r = h.ask_now(Request::Delete {
        key: "squad".into(),
        prune_worktrees: false,
    });
    assert!(matches!(r, Response::Done(_)));
    assert!(h.live().is_empty());
    h.run_jobs();
    // One pane was under way (the second waits for the team's tmux
    // session); it goes as soon as it exists.
    assert_eq!(h.tmux.kills().len(), 1, "{:?}", h.tmux.calls());
    assert!(h.tmux.panes().is_empty());
    assert!(h.world().sessions.is_empty());
}

impl H {
    fn apply_now(&mut self, team: TeamSpec) {
        let r = self.ask_now(Request::Apply {
            team,
            source: None,
            force: false,
        });
        assert!(matches!(r, Response::Applied { .. }), "{r:?}");
    }
}

/// The death of a session whose spawn is still under way: the exit waits
/// for the spawn's answer, so the death follows the creation, and the
/// shim is answered then: it stays in the pane the creation made.
#[test]
fn an_exit_that_overtakes_its_spawn_is_recorded_after_the_creation() {
    let mut h = H::new();
    h.apply_now(team(vec![role("w", 1)]));
    let uid = h.live()[0].uid;
    let at = h.now.wall;
    h.ask_now(Request::Shim(ShimReport::Started { uid, pid: 77, at }));
    let answer = h.exited(uid, Some(3), None, false);
    assert!(
        !h.replies.contains_key(&answer),
        "the shim waits for the spawn"
    );
    assert_eq!(h.live()[0].state, SessionState::Pending);
    h.logs.insert(uid, vec!["last words".into()]);
    h.run_jobs();
    assert!(
        matches!(h.replies[&answer], Response::Linger(_)),
        "{:?}",
        h.replies[&answer]
    );
    let kinds: Vec<&str> = h
        .events
        .iter()
        .filter(|e| e.key.starts_with("demo/squad/w"))
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["applied", "created", "started", "crashed", "backoff"]
    );
    let m = h.role_history().marker.clone().unwrap();
    assert_eq!((m.uid, m.exit.unwrap().code), (uid, Some(3)));
    assert_eq!(m.last_output, ["last words"]);
    assert_eq!(h.world().kept[&m.key].pane, m.pane.unwrap());
}

#[test]
fn spawns_cut_short_by_a_restart_are_found_by_their_uid_or_made_again() {
    let mut h = H::new();
    h.apply_now(team(vec![role("w", 2)]));
    let cut = h.live();
    assert!(cut.iter().all(|s| s.pane.is_none()));
    // The daemon dies while tmux makes the first pane; the second was
    // never asked for.
    assert_eq!(h.jobs.len(), 1);
    let (_, job) = h.jobs.pop_front().unwrap();
    job.run(&h.tmux);
    let made = h.tmux.panes();
    assert_eq!(made.len(), 1);
    let mut h = h.restart();
    h.run_jobs();
    let found = &h.world().sessions[&cut[0].uid];
    assert!(found.state.is_live(), "{found:?}");
    assert_eq!(found.pane.as_deref(), Some(made[0].pane.as_str()));
    assert!(!h.world().sessions.contains_key(&cut[1].uid), "forgotten");
    assert_eq!(h.live().len(), 2, "slot 1 is filled again");
    assert!(h.tmux.kills().is_empty(), "nothing adopted was removed");
    assert_eq!(h.tmux.sessions().len(), 1, "{:?}", h.tmux.sessions());
}

/// A placement is written in the step that learns it. A daemon killed
/// right after, while the program ends, replays the shim's exit record
/// onto a session that has its pane: the death is recorded there and the
/// pane kept for the slot, not removed as nobody's.
#[test]
fn a_death_just_after_a_placement_while_the_daemon_is_away_keeps_its_pane() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    let s = h.start_all().remove(0);
    let pane = s.pane.clone().expect("placed");
    let saved = &h.saved.as_ref().unwrap().sessions[&s.uid];
    assert_eq!(
        saved.pane.as_ref(),
        Some(&pane),
        "written with no time passing"
    );
    // The daemon is killed; the program ends; its shim records it.
    h.records.insert(
        s.uid,
        ShimReport::Exited {
            uid: s.uid,
            code: Some(3),
            signal: None,
            at: h.now.wall,
            hangup: false,
            failure: None,
            rerun: false,
            run_in_answer: false,
        },
    );
    let mut h = h.restart();
    h.run_jobs();
    let m = h.role_history().marker.clone().expect("the death");
    assert_eq!((m.uid, m.exit.unwrap().code), (s.uid, Some(3)));
    assert_eq!(h.world().kept[&s.key].pane, pane, "kept for its slot");
    assert!(h.tmux.kills().is_empty(), "{:?}", h.tmux.kills());
}

#[test]
fn a_window_gone_unnoticed_makes_tmux_refuse_and_the_spawn_goes_at_the_end_charging_nobody() {
    let mut h = H::new();
    h.apply(team(vec![role("a", 1), role("w", 1)]));
    let started = h.start_all();
    let w = started.iter().find(|s| s.key.role == "w").unwrap().clone();
    // w-0's window goes behind marvel's back; before any listing, w-1 is
    // asked for, to go after it.
    h.tmux.remove(w.pane.as_deref().unwrap());
    let r = h.ask(Request::Scale {
        key: "w".into(),
        replicas: 2,
    });
    assert!(matches!(r, Response::Done(_)), "{r:?}");
    let second = h
        .live()
        .into_iter()
        .find(|s| s.key.role == "w" && s.key.slot == 1)
        .expect("slot 1");
    assert!(second.pane.is_some(), "placed on the second try");
    let places: Vec<Place> = h.tmux.spawns().into_iter().map(|r| r.place).collect();
    let tail = &places[places.len() - 2..];
    assert_eq!(
        tail,
        [
            Place::NewWindow {
                session: "demo-squad".into(),
                after: w.window.clone().map(WindowRef::Id)
            },
            // Again, at the end of the team's session.
            Place::NewWindow {
                session: "demo-squad".into(),
                after: None
            }
        ],
        "{places:?}"
    );
    assert_eq!(h.world().roles[&w.key.role()].restarts, 0, "nobody's crash");
    assert_eq!(h.tmux.sessions().len(), 1, "still the team's one session");
}

#[test]
fn a_spawn_cut_short_whose_pane_vanished_is_made_again() {
    let mut h = H::new();
    h.apply_now(team(vec![role("w", 1)]));
    let cut = h.live().remove(0);
    let (_, job) = h.jobs.pop_front().unwrap();
    job.run(&h.tmux);
    let pane = h.tmux.panes().remove(0).pane;
    h.tmux.remove(&pane);
    let mut h = h.restart();
    h.run_jobs();
    assert!(!h.world().sessions.contains_key(&cut.uid), "forgotten");
    let again = h.live().remove(0);
    assert_eq!(again.key, cut.key);
    assert!(again.pane.is_some());
    assert_eq!(h.role_history().restarts, 0, "nobody's crash");
}

#[test]
fn a_pane_gone_without_a_word_from_its_shim_waits_one_listing_for_it() {
    let mut h = H::new();
    h.apply(team(vec![role("a", 1), role("b", 1)]));
    let sessions = h.start_all();
    for s in &sessions {
        h.tmux.remove(s.pane.as_deref().unwrap());
    }
    h.sup.next_sweep = Duration::ZERO;
    h.advance(1);
    h.run_jobs();
    assert_eq!(h.live().len(), 2, "no cause known yet: nothing recorded");
    // One shim tells how its pane went; the other never does.
    let (told, silent) = (&sessions[0], &sessions[1]);
    h.exited(told.uid, None, Some(1), true);
    h.run_jobs();
    let detail = |h: &H, s: &Session| {
        h.world().roles[&s.key.role()]
            .marker
            .as_ref()
            .unwrap()
            .exit
            .as_ref()
            .unwrap()
            .detail
            .clone()
    };
    assert_eq!(detail(&h, told), ExitDetail::PaneKilled);
    assert_eq!(detail(&h, silent), ExitDetail::PaneVanished);
    assert!(h.world().roles.values().all(|r| r.restarts == 1));
}

#[test]
fn after_a_reboot_every_session_is_lost_with_tmux_and_nobody_is_charged() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    let sessions = h.start_all();
    let world = h.saved.clone().unwrap();
    // The machine went down: the shutdown's SIGTERM ended one program, and
    // the new boot has a new, empty tmux server.
    let mut h2 = H::blank();
    h2.records.insert(
        sessions[0].uid,
        ShimReport::Exited {
            uid: sessions[0].uid,
            code: None,
            signal: Some(15),
            at: h.now.wall,
            hangup: false,
            failure: None,
            rerun: false,
            run_in_answer: false,
        },
    );
    h2.restart_with(world, true);
    h2.run_jobs();
    let hist = h2.role_history();
    assert_eq!(
        (hist.restarts, hist.frozen.is_none()),
        (0, true),
        "{hist:?}"
    );
    assert_eq!(h2.marker_detail(), ExitDetail::TmuxLost);
    let now = h2.live();
    assert_eq!(now.len(), 2, "the team comes back");
    assert!(now.iter().all(|s| sessions.iter().all(|o| o.uid != s.uid)));
}

#[test]
fn after_an_unreadable_state_file_our_panes_are_spared_not_killed() {
    let mut h = H::blank();
    let owner = "/state".to_string();
    let agent = h.tmux.add_foreign("marvel/demo/squad/w-0/7", &owner);
    h.restore(
        Loaded::MovedAside {
            moved_to: PathBuf::from("/state/state.json.corrupt-x"),
            error: "bad".into(),
        },
        Vec::new(),
    );
    h.run_jobs();
    assert!(h.tmux.kills().is_empty());
    assert_eq!(
        h.world().strays.keys().collect::<Vec<_>>(),
        vec![&agent.pane]
    );
    let warnings: Vec<&EventView> = h
        .events
        .iter()
        .filter(|e| e.kind.as_str() == "warning")
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].message.contains("moved it to"));
    assert!(warnings[1].message.contains(&format!(
        "left 1 panes of the unreadable state running, unsupervised: {}",
        agent.pane
    )));
    // Later sweeps still spare it; a pane left by a spawn is removed.
    let leftover = h.tmux.add_foreign("marvel/demo/squad/w-1/9", &owner);
    h.sup.next_sweep = Duration::ZERO;
    h.advance(1);
    h.run_jobs();
    assert_eq!(h.tmux.kills(), vec![leftover.pane]);
    assert!(h.tmux.pane(&agent.pane).is_some());
}

/// Issue: uids were handed to tmux before they were saved, so a daemon
/// killed then gave the same uids to two different runs.
#[test]
fn uids_are_saved_before_any_pane_carries_them_and_never_handed_out_twice() {
    let mut h = H::new();
    h.apply_now(team(vec![role("w", 3)]));
    let persist = h
        .trace
        .iter()
        .position(|o| matches!(o, Output::Persist { .. }));
    let submit = h.trace.iter().position(|o| {
        matches!(
            o,
            Output::Submit {
                job: Job::Spawn(_),
                ..
            }
        )
    });
    assert!(persist.unwrap() < submit.unwrap(), "{:?}", h.trace);
    let saved = h.saved.clone().unwrap();
    assert!(saved.uid_reserved >= saved.next_uid);
    let given: Vec<u64> = h.live().iter().map(|s| s.uid).collect();
    // The daemon is killed before it saves again: a new one resumes past
    // every uid the first may have handed out.
    let mut h2 = H::blank();
    h2.tmux = h.tmux;
    h2.restart_with(saved.clone(), false);
    h2.run_jobs();
    let fresh: Vec<u64> = h2
        .live()
        .iter()
        .map(|s| s.uid)
        .filter(|u| !given.contains(u))
        .collect();
    assert!(fresh.iter().all(|u| *u > saved.uid_reserved), "{fresh:?}");
}

/// Issue: a wall-clock jump must neither fire every backoff at once nor
/// delay them: timers keep the time they had left.
#[test]
fn a_wall_clock_jump_neither_fires_nor_delays_a_backoff() {
    for jump_hours in [5i64, -5] {
        let mut h = H::new();
        h.apply(team(vec![role("w", 1)]));
        let s = h.start_all().remove(0);
        h.exited(s.uid, Some(1), None, false);
        h.run_jobs();
        let left = h.wake - h.now.mono;
        assert_eq!(left, Duration::from_millis(100));
        // The clock jumps; 10 ms pass on the monotonic clock.
        h.now.wall += chrono::Duration::hours(jump_hours);
        h.advance(10);
        h.run_jobs();
        assert!(h.live().is_empty(), "jump {jump_hours}h: fired early");
        assert_eq!(
            h.wake - h.now.mono,
            Duration::from_millis(90),
            "jump {jump_hours}h"
        );
        assert!(h.kinds().contains(&"warning"));
        h.advance(90);
        h.run_jobs();
        assert_eq!(h.live().len(), 1, "jump {jump_hours}h: delayed");
    }
}

/// Issue: a full disk ended the daemon. It keeps supervising from memory,
/// says so once, and writes again as soon as it can.
#[test]
fn a_state_file_that_cannot_be_written_is_said_once_and_written_again_later() {
    let mut h = H::new();
    h.disk_full = Some("No space left on device (os error 28)".into());
    h.apply(team(vec![role("w", 2)]));
    h.start_all();
    let st = h.status();
    assert_eq!(
        st.daemon.persist_error.as_deref(),
        Some("No space left on device (os error 28)")
    );
    assert!(st.daemon.persist_failing_since.is_some());
    let warnings = |h: &H| {
        h.events
            .iter()
            .filter(|e| e.kind.as_str() == "warning")
            .count()
    };
    assert_eq!(warnings(&h), 1);
    // Supervision goes on.
    let uid = h.live()[0].uid;
    h.exited(uid, Some(1), None, false);
    h.run_jobs();
    assert_eq!(h.role_history().restarts, 1);
    assert_eq!(warnings(&h), 1, "said once");
    // Space again: the next attempt (at the latest a second on) writes it all.
    h.disk_full = None;
    h.advance(1000);
    assert_eq!(
        h.saved
            .as_ref()
            .unwrap()
            .roles
            .values()
            .next()
            .unwrap()
            .restarts,
        1
    );
    assert_eq!(h.status().daemon.persist_error, None);
    assert_eq!(warnings(&h), 2, "and says it is written again");
}

#[test]
fn stop_answers_then_exits_once_the_calls_under_way_are_done() {
    let mut h = H::new();
    h.apply_now(team(vec![role("w", 1)]));
    let r = h.ask_now(Request::Stop);
    assert!(matches!(r, Response::Done(ref m) if m.contains("panes keep running")));
    assert!(!h.exited, "a spawn is under way");
    let late = h.ask_now(Request::Status);
    assert!(matches!(late, Response::Error(_)));
    h.run_jobs();
    assert!(h.exited);
    assert!(h.tmux.kills().is_empty(), "stopping kills nothing");
}

#[test]
fn events_follow_from_the_answer_on() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    let id = h.send(Request::Events {
        filter: Default::default(),
        follow: true,
    });
    assert!(matches!(&h.replies[&id], Response::Events(v) if !v.is_empty()));
    assert!(h.followers.contains(&id));
}

mod interleavings {
    //! Random interleavings of everything that can reach the supervisor,
    //! against the fake tmux, with the invariants checked after each step.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Run this many queued tmux jobs.
        RunJobs(usize),
        /// Time passes (ms), timers fire.
        Advance(u64),
        /// The program of the n-th live session ends (code, or a signal).
        Exit {
            nth: usize,
            code: i32,
        },
        /// The n-th live session's pane is killed from outside (its shim
        /// hangs up, or says nothing).
        PaneKilled {
            nth: usize,
            shim_tells: bool,
        },
        /// The n-th pending session's program starts.
        Start {
            nth: usize,
        },
        /// The tmux server goes away.
        LoseServer,
        /// The next tmux call fails.
        Fail(u8),
        Kill {
            nth: usize,
        },
        Scale {
            to: u32,
        },
        Reset,
        /// The daemon restarts from what it saved.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..6).prop_map(Op::RunJobs),
            3 => (1u64..400).prop_map(Op::Advance),
            4 => (0usize..6, 0i32..3).prop_map(|(nth, code)| Op::Exit { nth, code }),
            2 => (0usize..6, any::<bool>()).prop_map(|(nth, shim_tells)| Op::PaneKilled { nth, shim_tells }),
            4 => (0usize..6).prop_map(|nth| Op::Start { nth }),
            1 => Just(Op::LoseServer),
            1 => (0u8..3).prop_map(Op::Fail),
            1 => (0usize..6).prop_map(|nth| Op::Kill { nth }),
            1 => (0u32..5).prop_map(|to| Op::Scale { to }),
            1 => Just(Op::Reset),
            1 => Just(Op::Restart),
        ]
    }

    /// Panes of live sessions, per role.
    fn panes_per_role(h: &H) -> BTreeMap<String, usize> {
        let ours: BTreeSet<String> = h.live().into_iter().filter_map(|s| s.pane).collect();
        let mut per = BTreeMap::new();
        for p in h.tmux.panes() {
            if ours.contains(&p.pane) {
                // <ws>/<team>/<role>-<slot>
                let key = p.key.as_deref().expect("our panes carry their key");
                let slot = key.rsplit('/').next().unwrap();
                let role = slot.rsplit_once('-').unwrap().0.to_string();
                *per.entry(role).or_default() += 1;
            }
        }
        per
    }

    fn nth_live(h: &H, nth: usize) -> Option<Session> {
        let live = h.live();
        (!live.is_empty()).then(|| live[nth % live.len()].clone())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn the_supervisor_keeps_its_invariants_in_any_interleaving(
            ops in prop::collection::vec(op(), 1..60),
        ) {
            let mut h = H::new();
            let mut w = role("w", 3);
            w.max_restarts = Some(4);
            h.apply(team(vec![w]));
            // Programs that died, by uid; crash events since the last reset.
            let mut died: BTreeSet<u64> = BTreeSet::new();
            let mut crashes: u32 = 0;
            let mut frozen_at_uid: Option<u64> = None;
            let charged = |e: &EventView| e.kind.as_str() == "crashed" && !e.message.contains("tmux server lost");
            for op in ops {
                let seen = h.events.len();
                let resetting = matches!(op, Op::Reset);
                let restarting = matches!(op, Op::Restart) && h.saved.is_some();
                match op {
                    Op::RunJobs(n) => for _ in 0..n { h.run_one(); },
                    Op::Advance(ms) => h.advance(ms),
                    Op::Exit { nth, code } => {
                        if let Some(s) = nth_live(&h, nth).filter(|s| s.pane.is_some())
                            && died.insert(s.uid)
                        {
                            h.exited(s.uid, Some(code), None, false);
                        }
                    }
                    Op::PaneKilled { nth, shim_tells } => {
                        if let Some(s) = nth_live(&h, nth).filter(|s| s.pane.is_some()) {
                            h.tmux.remove(s.pane.as_deref().unwrap());
                            if died.insert(s.uid) && shim_tells {
                                h.exited(s.uid, None, Some(1), true);
                            }
                        }
                    }
                    Op::Start { nth } => {
                        let pending: Vec<Session> = h.live().into_iter()
                            .filter(|s| s.state == SessionState::Pending && s.pane.is_some())
                            .collect();
                        if !pending.is_empty() {
                            let s = &pending[nth % pending.len()];
                            if !died.contains(&s.uid) && h.tmux.pane(s.pane.as_deref().unwrap()).is_some() {
                                let report = ShimReport::Started { uid: s.uid, pid: 5, at: h.now.wall };
                                h.records.insert(s.uid, report.clone());
                                h.send(Request::Shim(report));
                            }
                        }
                    }
                    Op::LoseServer => {
                        for s in h.live() {
                            if s.pane.is_some() {
                                died.insert(s.uid);
                            }
                        }
                        h.tmux.lose_server();
                    }
                    Op::Fail(kind) => h.tmux.fail_next(match kind {
                        0 => SubstrateError::Timeout(Duration::from_secs(1)),
                        1 => SubstrateError::Refused("refused".into()),
                        _ => SubstrateError::Unreachable("lost server".into()),
                    }),
                    Op::Kill { nth } => {
                        if let Some(s) = nth_live(&h, nth) {
                            h.send(Request::Kill { key: s.key.to_string() });
                        }
                    }
                    Op::Scale { to } => { h.send(Request::Scale { key: "w".into(), replicas: to }); }
                    Op::Reset => { h.send(Request::Reset { key: "w".into() }); }
                    Op::Restart => {
                        if h.saved.is_some() {
                            // Jobs handed to the worker are lost with the daemon
                            // or carried out without it.
                            for (_, job) in std::mem::take(&mut h.jobs) {
                                if matches!(job, Job::Spawn(_)) { job.run(&h.tmux); }
                            }
                            h = h.restart();
                        }
                    }
                }
                // A frozen role spawns nothing: no uid newer than those
                // handed out when it froze.
                match (&h.role_history().frozen, frozen_at_uid) {
                    (Some(_), None) => frozen_at_uid = Some(h.world().next_uid),
                    (Some(_), Some(last)) => prop_assert!(
                        h.live().iter().all(|s| s.uid <= last),
                        "spawned while frozen"
                    ),
                    (None, _) => frozen_at_uid = None,
                }
                // Crashed sessions exist only as markers: one per role at most.
                prop_assert!(h.world().sessions.values().all(|s| s.state != SessionState::Crashed));
                // Never more live panes than replicas + 1 (a surge).
                let replicas = h.world().role_spec(&"demo/squad/w".parse().unwrap()).unwrap().replicas;
                for (role, n) in panes_per_role(&h) {
                    prop_assert!(n as u32 <= replicas.get() + 1, "{role}: {n} panes");
                }
                // Every charged death is one crash event, never two: the
                // events match the role's own tally.
                let from = if restarting { 0 } else { seen };
                crashes += h.events[from..].iter().filter(|e| charged(e)).count() as u32;
                if resetting {
                    crashes = 0;
                }
                prop_assert_eq!(crashes, h.role_history().restarts, "crash events vs restarts");
                // Planning always settles well within its bound of passes.
                prop_assert!(
                    h.events[seen.min(h.events.len())..]
                        .iter()
                        .all(|e| !e.message.contains("planning did not settle")),
                    "planning hit its bound"
                );
                // A kept pane shows a program that ended: no live session
                // runs in it.
                let live: BTreeSet<String> = h.live().into_iter().filter_map(|s| s.pane).collect();
                for k in h.world().kept.values() {
                    prop_assert!(!live.contains(&k.pane), "kept pane {} is live", k.pane);
                }
            }
            // Let everything settle: the server answers, every job runs, time
            // passes for listings. Every death is then recorded.
            h.sup.next_sweep = Duration::ZERO;
            for _ in 0..12 {
                h.run_jobs();
                h.advance(cfg().sweep.as_millis() as u64);
                h.run_jobs();
            }
            for uid in &died {
                prop_assert!(!h.world().sessions.get(uid).is_some_and(|s| s.state.is_live()),
                    "death of uid {} never recorded", uid);
            }
            // Blast radius: whatever failed on the way, no pane of ours is
            // left that no live session owns, but for the kept panes of
            // ended programs, which are still there.
            let kept: BTreeSet<String> = h.world().kept.values().map(|k| k.pane.clone()).collect();
            for pane in &kept {
                prop_assert!(h.tmux.pane(pane).is_some(), "kept pane {} is gone", pane);
            }
            let ours: BTreeSet<String> = h.live().into_iter().filter_map(|s| s.pane).chain(kept).collect();
            let strays: Vec<String> = h.tmux.panes().into_iter()
                .filter(|p| p.owner == "/state" && !ours.contains(&p.pane))
                .map(|p| p.pane)
                .collect();
            prop_assert!(strays.is_empty(), "strays left: {:?}", strays);
        }
    }
}

#[test]
fn a_role_reset_or_deleted_team_leaves_no_queue_behind() {
    let mut h = H::blank();
    h.tmux
        .fail_next(SubstrateError::Missing("tmux: not found".into()));
    h.restore(Loaded::Fresh, Vec::new());
    h.run_jobs();
    h.apply(team(vec![role("w", 2)]));
    assert_eq!(h.sup.tmux.queue.len(), 2);
    h.ask_now(Request::Delete {
        key: "squad".into(),
        prune_worktrees: false,
    });
    assert!(h.sup.tmux.queue.is_empty());
}

fn done(r: Response) -> String {
    match r {
        Response::Done(m) => m,
        other => panic!("not done: {other:?}"),
    }
}

fn usage(r: Response) -> String {
    error_with(crate::error::exit::USAGE, r)
}

#[test]
fn stop_stops_the_sessions_uncharged_and_start_brings_them_back_after_a_restart() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2), role("other", 1)]));
    h.start_all();
    let msg = done(h.ask(Request::StopRoles { key: "w".into() }));
    assert!(
        msg.starts_with("stopped demo/squad/w (2 sessions stopping"),
        "{msg}"
    );
    assert_eq!(h.live().len(), 1, "only the other role runs");
    assert_eq!(
        h.tmux.panes().len(),
        1,
        "the panes went through the reconciler"
    );
    assert!(h.kinds().contains(&"stopped"));
    assert!(!h.kinds().contains(&"crashed"));
    assert_eq!(h.role_history().restarts, 0);
    // Stopped across a daemon restart.
    let mut h = h.restart();
    h.run_jobs();
    assert_eq!(h.live().len(), 1);
    let Response::Roles(roles) = h.ask(Request::Get {
        kind: Kind::Roles,
        filter: Filter::default(),
    }) else {
        panic!()
    };
    assert_eq!(roles[0].state.as_str(), "stopped", "{roles:?}");
    assert!(done(h.ask(Request::StopRoles { key: "w".into() })).contains("already stopped"));
    let e = refused(h.ask(Request::Restart { key: "w".into() }));
    assert!(e.contains("run `marvel start demo/squad/w`"), "{e}");
    let msg = done(h.ask(Request::StartRoles {
        key: "squad".into(),
    }));
    assert_eq!(msg, "started demo/squad/w");
    assert_eq!(h.live().len(), 3);
    // A session is not what stop takes.
    let e = usage(h.ask(Request::StopRoles { key: "w-0".into() }));
    assert!(e.contains("w-0 is a session; stop its role w"), "{e}");
}

#[test]
fn restart_of_a_session_replaces_it_now_without_a_crash_and_of_a_role_shifts() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    let before = h.start_all();
    let msg = done(h.ask(Request::Restart { key: "w-0".into() }));
    assert_eq!(msg, "demo/squad/w-0 restarting (not a crash)");
    let after = h.live();
    assert_eq!(after.len(), 2);
    assert!(!after.iter().any(|s| s.uid == before[0].uid));
    assert_eq!(h.role_history().restarts, 0);
    assert!(h.role_history().marker.is_none());
    h.start_all();
    match h.ask(Request::Restart { key: "w".into() }) {
        Response::Shift { shift, .. } => assert_eq!(shift.total, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_policy_edit_keeps_each_session_its_uid_and_pid_and_unfreezes() {
    let mut h = H::new();
    let w = role("w", 1);
    h.apply(team(vec![w.clone()]));
    let s = h.start_all().remove(0);
    let mut edited = w.clone();
    edited.max_restarts = Some(9);
    let r = h.ask(Request::Apply {
        team: team(vec![edited.clone()]),
        source: None,
        force: false,
    });
    let Response::Applied { roles, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(roles[0].change, crate::proto::Change::Updated);
    assert_eq!(roles[0].fields, ["max_restarts"]);
    let now = h.live();
    assert_eq!(now.len(), 1);
    assert_eq!((now[0].uid, now[0].pid), (s.uid, s.pid), "same session");
    // A plan of a command change says how many sessions it replaces.
    let mut changed = edited;
    changed.command = crate::domain::spec::Command::new(["bash"]).unwrap();
    let Response::Planned { roles, exists, .. } = h.ask(Request::Plan {
        team: team(vec![changed]),
        source: None,
    }) else {
        panic!()
    };
    assert!(exists);
    assert_eq!(roles[0].change, crate::proto::Change::Replaced);
    assert_eq!(
        (roles[0].sessions, roles[0].fields.clone()),
        (1, vec!["command".to_string()])
    );
    assert_eq!(h.live()[0].uid, s.uid, "a plan changes nothing");
}

#[test]
fn another_file_declaring_the_same_team_is_refused_unless_forced() {
    let mut h = H::new();
    let apply = |h: &mut H, file: &str, force: bool| {
        h.ask(Request::Apply {
            team: team(vec![role("w", 1)]),
            source: Some(file.into()),
            force,
        })
    };
    assert!(matches!(
        apply(&mut h, "/t/a.ron", false),
        Response::Applied { .. }
    ));
    let e = refused(apply(&mut h, "/t/b.ron", false));
    assert!(e.contains("team demo/squad belongs to /t/a.ron"), "{e}");
    assert!(e.contains("`marvel run /t/b.ron --force`"), "{e}");
    assert!(matches!(
        apply(&mut h, "/t/b.ron", true),
        Response::Applied { .. }
    ));
    let e = refused(h.ask(Request::Down {
        team: "demo/squad".into(),
        source: Some("/t/a.ron".into()),
        force: false,
    }));
    assert!(e.contains("belongs to /t/b.ron"), "{e}");
    let msg = done(h.ask(Request::Down {
        team: "demo/squad".into(),
        source: Some("/t/b.ron".into()),
        force: false,
    }));
    assert_eq!(msg, "team demo/squad removed (1 session stopped)");
    assert!(h.live().is_empty());
}

#[test]
fn scale_to_the_same_count_is_unchanged_and_says_a_frozen_role_is_frozen() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    h.start_all();
    let events = h.events.len();
    assert_eq!(
        done(h.ask(Request::Scale {
            key: "w".into(),
            replicas: 2
        })),
        "demo/squad/w unchanged at 2 replicas"
    );
    assert_eq!(h.events.len(), events, "no event for nothing");
    let e = usage(h.ask(Request::Scale {
        key: "w-0".into(),
        replicas: 3,
    }));
    assert!(e.contains("w-0 is a session; scale its role w"), "{e}");
    let msg = done(h.ask(Request::Scale {
        key: "w".into(),
        replicas: 0,
    }));
    assert!(msg.contains("stopped until scaled up again"), "{msg}");
    // Freeze a one-replica role, then scale it to what it has.
    let mut h = H::new();
    let mut w = role("w", 1);
    w.max_restarts = Some(0);
    h.apply(team(vec![w]));
    let s = h.start_all().remove(0);
    h.exited(s.uid, Some(1), None, false);
    h.run_jobs();
    let e = refused(h.ask(Request::Scale {
        key: "w".into(),
        replicas: 1,
    }));
    assert!(
        e.contains("unchanged at 1 replica, and role demo/squad/w is frozen"),
        "{e}"
    );
    assert!(
        e.contains("run `marvel reset role demo/squad/w` to restart it"),
        "{e}"
    );
}

#[test]
fn logs_show_the_current_run_the_previous_one_and_every_session_of_a_role() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    let first = h.start_all();
    let uid0 = first.iter().find(|s| s.key.slot == 0).unwrap().uid;
    h.logs.insert(uid0, vec!["old run".into()]);
    h.ask(Request::Kill { key: "w-0".into() });
    h.run_jobs();
    let now = h.start_all();
    let new0 = now.iter().find(|s| s.key.slot == 0).unwrap().uid;
    h.logs.insert(new0, vec!["new run".into()]);
    let read = |h: &mut H, key: &str, previous: bool| -> Vec<(String, Vec<String>)> {
        match h.ask(Request::LogRead {
            key: key.into(),
            lines: 10,
            previous,
            since_ms: None,
            cursors: Vec::new(),
        }) {
            Response::Logs(chunks) => chunks.into_iter().map(|c| (c.key, c.lines)).collect(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        read(&mut h, "w-0", false),
        [("demo/squad/w-0".to_string(), vec!["new run".to_string()])]
    );
    assert_eq!(
        read(&mut h, "w-0", true),
        [("demo/squad/w-0".to_string(), vec!["old run".to_string()])]
    );
    let role = read(&mut h, "w", false);
    assert_eq!(role.len(), 2);
    assert_eq!(role[1].0, "demo/squad/w-1");
    let e = h.ask(Request::LogRead {
        key: "w-1".into(),
        lines: 10,
        previous: true,
        since_ms: None,
        cursors: Vec::new(),
    });
    assert!(
        matches!(e, Response::Error(ref e) if e.code() == crate::error::exit::NOT_FOUND),
        "{e:?}"
    );
}

#[test]
fn keys_of_the_wrong_kind_say_what_they_are_and_unknown_keys_get_a_suggestion() {
    let mut h = H::new();
    h.apply(team(vec![role("shell", 2)]));
    h.start_all();
    let e = usage(h.ask(Request::Capture {
        key: "shell".into(),
    }));
    assert!(
        e.contains("shell is a role; its sessions are shell-0, shell-1"),
        "{e}"
    );
    let e = h.ask(Request::Kill {
        key: "shel-0".into(),
    });
    let Response::Error(e) = e else { panic!() };
    assert_eq!(e.code(), crate::error::exit::NOT_FOUND);
    assert!(e.to_string().contains("did you mean `shell-0`?"), "{e}");
    let e = usage(h.ask(Request::Reset {
        key: "squad".into(),
    }));
    assert!(e.contains("squad is a team; its roles are shell"), "{e}");
    let e = h.ask(Request::Get {
        kind: Kind::Sessions,
        filter: Filter {
            keys: vec!["nope-0".into()],
            ..Filter::default()
        },
    });
    assert!(matches!(e, Response::Error(_)), "{e:?}");
    let Response::Sessions(v) = h.ask(Request::Get {
        kind: Kind::Sessions,
        filter: Filter {
            keys: vec!["shell-1".into()],
            ..Filter::default()
        },
    }) else {
        panic!()
    };
    assert_eq!(v.len(), 1);
    // A table of sessions is answered as cells, filtered alike.
    let e = h.ask(Request::SessionRows {
        filter: Filter {
            keys: vec!["nope-0".into()],
            ..Filter::default()
        },
        wide: false,
    });
    assert!(matches!(e, Response::Error(_)), "{e:?}");
    let Response::Rows(rows) = h.ask(Request::SessionRows {
        filter: Filter {
            keys: vec!["shell-1".into()],
            ..Filter::default()
        },
        wide: true,
    }) else {
        panic!()
    };
    assert_eq!(rows.rows.len(), 1);
    let text = rows.render(false);
    assert!(text.starts_with("SESSION "), "{text}");
    assert!(text.contains(" TMUX SESSION "), "wide columns: {text}");
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("demo/squad/shell-1 "),
        "{text}"
    );
}

#[test]
fn status_lists_frozen_roles_and_a_missing_tmux_worst_first() {
    let mut h = H::new();
    let mut w = role("w", 1);
    w.max_restarts = Some(0);
    h.apply(team(vec![w]));
    let s = h.start_all().remove(0);
    h.exited(s.uid, Some(1), None, false);
    h.run_jobs();
    let st = h.status();
    assert_eq!(st.problems.len(), 1, "{:?}", st.problems);
    assert_eq!(st.problems[0].kind, crate::view::ProblemKind::Frozen);
    assert!(
        st.problems[0]
            .hint
            .contains("marvel reset role demo/squad/w")
    );
    let mut h = H::blank();
    h.tmux
        .fail_next(SubstrateError::Missing("tmux: not found".into()));
    h.restore(Loaded::Fresh, Vec::new());
    h.run_jobs();
    let r = h.ask(Request::Apply {
        team: team(vec![role("w", 1)]),
        source: None,
        force: false,
    });
    let Response::Applied { tmux_down, .. } = r else {
        panic!()
    };
    assert!(tmux_down.is_some_and(|e| e.contains("not found")));
    let st = h.status();
    assert_eq!(st.problems[0].kind, crate::view::ProblemKind::TmuxDown);
}

/// Regression: the runs of a team were grouped by slot number across its
/// roles, so `logs TEAM` showed one of `a-0` and `b-0`.
#[test]
fn logs_of_a_team_show_every_session_of_every_role() {
    let mut h = H::new();
    h.apply(team(vec![role("a", 1), role("b", 2)]));
    h.start_all();
    let Response::Logs(chunks) = h.ask(Request::LogRead {
        key: "squad".into(),
        lines: 5,
        previous: false,
        since_ms: None,
        cursors: Vec::new(),
    }) else {
        panic!()
    };
    let keys: Vec<String> = chunks.into_iter().map(|c| c.key).collect();
    assert_eq!(keys, ["demo/squad/a-0", "demo/squad/b-0", "demo/squad/b-1"]);
}

#[test]
fn logs_since_picks_the_runs_alive_within_the_span() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    let first = h.start_all().remove(0).uid;
    h.logs.insert(first, vec!["one".into()]);
    h.ask(Request::Kill { key: "w-0".into() });
    h.run_jobs();
    let second = h.start_all().remove(0).uid;
    h.logs.insert(second, vec!["two".into()]);
    h.advance(60_000);
    let read = |h: &mut H, since_ms: Option<u64>| -> Vec<u64> {
        match h.ask(Request::LogRead {
            key: "w-0".into(),
            lines: 10,
            previous: false,
            since_ms,
            cursors: Vec::new(),
        }) {
            Response::Logs(chunks) => chunks.into_iter().map(|c| c.uid).collect(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(read(&mut h, None), [second], "the current run only");
    assert_eq!(
        read(&mut h, Some(120_000)),
        [first, second],
        "both ran then"
    );
    assert_eq!(
        read(&mut h, Some(30_000)),
        [second],
        "the first ended before"
    );
}

/// What a person attached to the team sees: each window's status, and the
/// line a kept pane's shim draws, through a crash, a freeze and a reset.
#[test]
fn windows_and_kept_panes_say_what_happened_and_what_comes_next() {
    let mut h = H::new();
    let mut w = role("w", 1);
    w.max_restarts = Some(1);
    h.apply(team(vec![w]));
    let first = h.start_all().remove(0);
    let pane = first.pane.clone().unwrap();
    let status = |h: &H| h.tmux.pane(&pane).and_then(|p| p.status);
    assert_eq!(status(&h).as_deref(), Some("✓"));

    h.advance(1500);
    let id = h.exited(first.uid, Some(3), None, false);
    h.run_jobs();
    assert!(
        matches!(&h.replies[&id], Response::Linger(l) if l == "crashed: exit 3 after 1.5s — restart at 12:00:01"),
        "{:?}",
        h.replies[&id]
    );
    assert_eq!(status(&h).as_deref(), Some("↻"));

    // The backoff ends: the same pane runs again, restarting until it
    // has stayed up a second.
    h.until_wake();
    h.run_jobs();
    let second = h.start_all().remove(0);
    assert_eq!(second.pane.as_deref(), Some(pane.as_str()));
    assert_eq!(status(&h).as_deref(), Some("↻"));
    h.advance(1000);
    h.run_jobs();
    assert_eq!(status(&h).as_deref(), Some("✓"));

    // A second crash within the window freezes the role: the kept pane
    // says so and what to do.
    let id = h.exited(second.uid, Some(4), None, false);
    h.run_jobs();
    assert!(
        matches!(&h.replies[&id], Response::Linger(l) if l == "frozen: 2 crashes in 1m, last: exit 4 — marvel reset role demo/squad/w"),
        "{:?}",
        h.replies[&id]
    );
    assert_eq!(status(&h).as_deref(), Some("❄"));

    // Reset: running again in the same pane.
    h.ask(Request::Reset { key: "w".into() });
    let third = h.start_all().remove(0);
    assert_eq!(third.pane.as_deref(), Some(pane.as_str()));
    assert_eq!(status(&h).as_deref(), Some("✓"));
}

/// A kept pane's line follows its role: when the role freezes because of
/// another slot, the shim is sent the new line.
#[test]
fn a_kept_panes_line_is_redrawn_when_its_role_changes() {
    let mut h = H::new();
    let mut w = role("w", 2);
    w.max_restarts = Some(1);
    h.apply(team(vec![w]));
    let both = h.start_all();
    h.exited(both[0].uid, Some(3), None, false);
    h.run_jobs();
    h.exited(both[1].uid, Some(5), None, false);
    h.run_jobs();
    let line = h
        .lines
        .get(&both[0].uid)
        .expect("a line sent to slot 0's shim");
    assert!(
        line.starts_with("frozen: 2 crashes in 1m, last: exit 5"),
        "{line}"
    );
}

/// Issue 9 (a full disk): an event log that cannot be written is shown in
/// `status` until it is written again; supervision is not touched.
#[test]
fn an_event_log_that_cannot_be_written_shows_in_status_until_it_is_again() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    h.step(Input::EventLog(Some((
        "No space left on device (os error 28)".into(),
        h.now.wall,
    ))));
    let st = h.status();
    assert_eq!(
        st.daemon.event_log_error.as_deref(),
        Some("No space left on device (os error 28)")
    );
    assert!(
        st.problems
            .iter()
            .any(|p| p.message.contains("the event log is not written")),
        "{:?}",
        st.problems
    );
    // Deaths are still recorded and replaced.
    let s = h.start_all().remove(0);
    h.exited(s.uid, Some(1), None, false);
    h.run_jobs();
    assert_eq!(h.role_history().restarts, 1);
    h.step(Input::EventLog(None));
    let st = h.status();
    assert_eq!(st.daemon.event_log_error, None);
    assert!(st.problems.iter().all(|p| !p.message.contains("event log")));
}

/// Issue 11: a changed role's successor starts beside its predecessor, in
/// the same window, and the predecessor's pane goes once the successor
/// runs: the window, and whoever looks at it, stays.
#[test]
fn a_successor_starts_in_its_predecessors_window_which_it_then_has_alone() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    let first = h.start_all().remove(0);
    let mut changed = role("w", 1);
    changed.env = [("MODE".to_string(), "b".to_string())]
        .into_iter()
        .collect::<BTreeMap<_, _>>()
        .try_into()
        .unwrap();
    h.apply(team(vec![changed]));
    let last = h.tmux.spawns().pop().unwrap();
    assert_eq!(
        last.place,
        Place::Split {
            window: first.window.clone().unwrap(),
            tiled: false
        }
    );
    assert_eq!(last.window_name, "w-0");
    // The successor runs: the predecessor is stopped and its pane goes.
    let successor = h
        .live()
        .into_iter()
        .find(|s| s.uid != first.uid)
        .expect("a successor");
    h.started(successor.uid);
    h.run_jobs();
    assert!(h.tmux.kills().contains(first.pane.as_ref().unwrap()));
    let live = h.live();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].uid, successor.uid);
    assert_eq!(live[0].window, first.window);
    assert!(
        h.world().kept.is_empty(),
        "a stopped predecessor keeps no pane"
    );
}

// --- Resuming after a restart, a worktree per slot -------------------------

/// A role whose restarts resume: `sh` runs, `resume` is `sh -c resume`.
fn resuming(replicas: u32) -> crate::domain::spec::RoleSpec {
    let mut w = role("w", replicas);
    w.resume = Some(crate::domain::spec::Command::new(["sh", "-c", "resume"]).unwrap());
    w
}

/// What the newest spawn of slot `slot` runs, and the two variables that
/// tell it how it follows the slot's previous run.
fn last_run(h: &H, slot: u32) -> (Vec<String>, String, String) {
    let key = format!("demo/squad/w-{slot}");
    let req = h
        .tmux
        .spawns()
        .into_iter()
        .rfind(|r| r.env["MARVEL_SESSION"] == key)
        .expect("a spawn of the slot");
    let at = req.argv.iter().position(|a| a == "--").unwrap();
    (
        req.argv[at + 1..].to_vec(),
        req.env["MARVEL_RESTARTS"].clone(),
        req.env["MARVEL_PREVIOUS_EXIT"].clone(),
    )
}

fn fresh() -> Vec<String> {
    vec!["sh".to_string()]
}

fn resumed() -> Vec<String> {
    ["sh", "-c", "resume"].map(String::from).to_vec()
}

/// Lets the role's backoff end and the replacement start.
fn restarted(h: &mut H) -> Session {
    h.until_wake();
    h.run_jobs();
    h.start_all().remove(0)
}

#[test]
fn a_crash_restarts_with_resume_and_says_how_the_last_run_ended() {
    let mut h = H::new();
    h.apply(team(vec![resuming(1)]));
    assert_eq!(last_run(&h, 0), (fresh(), "0".into(), "".into()));
    let s = h.start_all().remove(0);
    h.exited(s.uid, Some(3), None, false);
    h.run_jobs();
    let s = restarted(&mut h);
    assert_eq!(last_run(&h, 0), (resumed(), "1".into(), "exit 3".into()));
    assert_eq!(s.restart.as_ref().map(|r| r.count), Some(1));
    h.exited(s.uid, None, Some(9), false);
    h.run_jobs();
    restarted(&mut h);
    assert_eq!(last_run(&h, 0), (resumed(), "2".into(), "signal 9".into()));
}

#[test]
fn a_reset_and_a_changed_command_start_afresh_but_a_policy_change_does_not() {
    let mut h = H::new();
    let w = resuming(1);
    h.apply(team(vec![w.clone()]));
    let s = h.start_all().remove(0);
    h.exited(s.uid, Some(3), None, false);
    h.run_jobs();
    // Reset during the backoff: the slot starts afresh.
    h.ask(Request::Reset { key: "w".into() });
    let s = h.start_all().remove(0);
    assert_eq!(last_run(&h, 0), (fresh(), "0".into(), "".into()));
    // A policy change (here, resume itself) keeps what the slot knows.
    h.exited(s.uid, Some(4), None, false);
    h.run_jobs();
    let mut policy = w.clone();
    policy.max_restarts = Some(9);
    policy.resume = Some(crate::domain::spec::Command::new(["sh", "-c", "resume"]).unwrap());
    h.apply(team(vec![policy.clone()]));
    h.run_jobs();
    let s = h.start_all().remove(0);
    assert_eq!(last_run(&h, 0), (resumed(), "1".into(), "exit 4".into()));
    // A changed command: a new program, started afresh.
    h.exited(s.uid, Some(5), None, false);
    h.run_jobs();
    let mut changed = policy;
    changed.command = crate::domain::spec::Command::new(["sh", "-c", "new"]).unwrap();
    h.apply(team(vec![changed]));
    h.run_jobs();
    h.start_all();
    let (argv, restarts, previous) = last_run(&h, 0);
    assert_eq!(argv, ["sh", "-c", "new"]);
    assert_eq!((restarts.as_str(), previous.as_str()), ("0", ""));
}

#[test]
fn kill_and_restart_resume_and_a_shift_starts_afresh() {
    let mut h = H::new();
    h.apply(team(vec![resuming(1)]));
    h.start_all();
    done(h.ask(Request::Kill { key: "w-0".into() }));
    h.start_all();
    assert_eq!(last_run(&h, 0), (resumed(), "1".into(), "killed".into()));
    done(h.ask(Request::Restart { key: "w-0".into() }));
    h.start_all();
    assert_eq!(last_run(&h, 0), (resumed(), "2".into(), "restarted".into()));
    // `restart ROLE` replaces new before old: the successor resumes.
    assert!(matches!(
        h.ask(Request::Restart { key: "w".into() }),
        Response::Shift { .. }
    ));
    h.start_all();
    assert_eq!(last_run(&h, 0), (resumed(), "3".into(), "restarted".into()));
    h.advance(10);
    h.run_jobs();
    assert_eq!(h.live().len(), 1, "the predecessor went");
    // A shift is for a fresh start: its successor runs the command.
    assert!(matches!(
        h.ask(Request::Shift {
            team: "squad".into(),
            role: None,
            timeout_ms: 60_000,
        }),
        Response::Shift { .. }
    ));
    h.start_all();
    assert_eq!(last_run(&h, 0), (fresh(), "0".into(), "".into()));
    h.advance(10);
    h.run_jobs();
    // And the next crash resumes, counting from that fresh start.
    let s = h.live().remove(0);
    h.exited(s.uid, Some(1), None, false);
    h.run_jobs();
    restarted(&mut h);
    assert_eq!(last_run(&h, 0), (resumed(), "1".into(), "exit 1".into()));
}

#[test]
fn a_stale_heartbeat_and_a_lost_tmux_server_resume_too() {
    let mut h = H::new();
    h.sup.world.watching_since = None;
    let mut w = resuming(1);
    w.health = Some(Health::Heartbeat {
        timeout: NonZeroSpan::from_secs(1),
        failures: Failures::new(2).unwrap(),
    });
    h.apply(team(vec![w]));
    let s = h.live().remove(0);
    let report = ShimReport::Started {
        uid: s.uid,
        pid: 7,
        at: h.now.wall - chrono::Duration::hours(1),
    };
    h.ask(Request::Shim(report));
    assert!(h.live().is_empty(), "stale at once");
    restarted(&mut h);
    assert_eq!(
        last_run(&h, 0),
        (resumed(), "1".into(), "heartbeat stale".into())
    );
    // The tmux server goes: its sessions come back, resuming.
    let s = h.start_all().remove(0);
    h.tmux.lose_server();
    h.exited(s.uid, None, Some(1), true);
    h.run_jobs();
    h.start_all();
    assert_eq!(
        last_run(&h, 0),
        (resumed(), "2".into(), "tmux server lost".into())
    );
}

#[test]
fn a_pending_restart_survives_a_daemon_restart() {
    let mut h = H::new();
    h.apply(team(vec![resuming(1)]));
    let s = h.start_all().remove(0);
    h.exited(s.uid, Some(3), None, false);
    h.run_jobs();
    let mut h = h.restart();
    h.run_jobs();
    restarted(&mut h);
    assert_eq!(last_run(&h, 0), (resumed(), "1".into(), "exit 3".into()));
}

#[test]
fn a_role_without_resume_runs_its_command_and_still_learns_how_it_restarts() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    let both = h.start_all();
    h.exited(both[1].uid, Some(2), None, false);
    h.run_jobs();
    restarted(&mut h);
    assert_eq!(last_run(&h, 1), (fresh(), "1".into(), "exit 2".into()));
    // The other slot knows nothing of it.
    assert_eq!(last_run(&h, 0), (fresh(), "0".into(), "".into()));
}

#[test]
fn a_spawn_tmux_could_not_make_gives_the_slot_its_restart_back() {
    let mut h = H::new();
    h.apply(team(vec![resuming(1)]));
    let s = h.start_all().remove(0);
    h.exited(s.uid, Some(3), None, false);
    h.run_jobs();
    h.until_wake();
    // The respawn fails in tmux (not refused: unknown), and is made again.
    h.tmux
        .fail_next(SubstrateError::Unreachable("connection reset".into()));
    h.run_jobs();
    h.advance(1000);
    h.run_jobs();
    h.start_all();
    assert_eq!(last_run(&h, 0), (resumed(), "1".into(), "exit 3".into()));
}

use crate::daemon::git::{GitDone, GitJob, GitJobId, GitOutcome, GitRefusal, LeftWorktree};

/// A role whose slots work in worktrees of `/srv/repo`.
fn in_worktrees(replicas: u32) -> crate::domain::spec::RoleSpec {
    let mut w = resuming(replicas);
    w.worktree = Some(crate::domain::spec::Worktree {
        repo: crate::domain::spec::Repo::new("/srv/repo").unwrap(),
        branch: crate::domain::spec::BranchTemplate::new("agents/{role}-{slot}").unwrap(),
    });
    w
}

impl H {
    /// Answers the oldest git job with `outcome`; returns the job.
    pub fn git(&mut self, outcome: GitOutcome) -> GitJob {
        let (id, job) = self.git_jobs.pop_front().expect("a git job");
        self.step(Input::Git(GitDone { id, outcome }));
        job
    }

    /// Answers every git job as a git that has no objection.
    pub fn git_agrees(&mut self) {
        while let Some((_, job)) = self.git_jobs.front().cloned() {
            let outcome = match job {
                GitJob::Prepare { branch, .. } => GitOutcome::Prepared(Ok(Some(branch))),
                GitJob::Check(_) => GitOutcome::Checked(Ok(())),
                GitJob::Leave { .. } => GitOutcome::Left(Vec::new()),
            };
            self.git(outcome);
            self.run_jobs();
        }
    }
}

fn prepare_of(job: &GitJob) -> (String, String, String) {
    match job {
        GitJob::Prepare { repo, path, branch } => (
            repo.display().to_string(),
            path.display().to_string(),
            branch.clone(),
        ),
        other => panic!("not a prepare: {other:?}"),
    }
}

#[test]
fn a_team_with_worktrees_is_applied_once_git_checked_each_slot() {
    let mut h = H::new();
    let id = h.send(Request::Apply {
        team: team(vec![in_worktrees(2), role("plain", 1)]),
        source: None,
        force: false,
    });
    assert!(!h.replies.contains_key(&id), "waits for git");
    assert!(h.world().teams.is_empty(), "nothing applied before");
    let GitJob::Check(slots) = h.git(GitOutcome::Checked(Ok(()))) else {
        panic!("a check first")
    };
    let checked: Vec<(usize, u32, String, String)> = slots
        .iter()
        .map(|s| {
            (
                s.role,
                s.slot,
                s.path.display().to_string(),
                s.branch.clone(),
            )
        })
        .collect();
    assert_eq!(
        checked,
        [
            (
                0,
                0,
                "/state/worktrees/demo/squad/w-0".into(),
                "agents/w-0".into()
            ),
            (
                0,
                1,
                "/state/worktrees/demo/squad/w-1".into(),
                "agents/w-1".into()
            ),
        ]
    );
    assert!(matches!(h.replies[&id], Response::Applied { .. }));
    // Each slot's worktree is asked for; only the role without one spawns.
    h.run_jobs();
    let asked: Vec<_> = h.git_jobs.iter().map(|(_, j)| prepare_of(j)).collect();
    assert_eq!(
        asked,
        [
            (
                "/srv/repo".into(),
                "/state/worktrees/demo/squad/w-0".into(),
                "agents/w-0".into()
            ),
            (
                "/srv/repo".into(),
                "/state/worktrees/demo/squad/w-1".into(),
                "agents/w-1".into()
            ),
        ]
    );
    let spawned = |h: &H| -> Vec<String> {
        h.tmux
            .spawns()
            .iter()
            .map(|r| r.window_name.clone())
            .collect()
    };
    assert_eq!(spawned(&h), ["plain-0"]);
    // The first worktree is there: its slot starts, in it.
    h.git(GitOutcome::Prepared(Ok(Some("agents/w-0".into()))));
    h.run_jobs();
    assert_eq!(spawned(&h), ["plain-0", "w-0"]);
    let req = h.tmux.spawns().pop().unwrap();
    assert_eq!(
        req.cwd,
        Some(PathBuf::from("/state/worktrees/demo/squad/w-0"))
    );
    let at = req.argv.iter().position(|a| a == "--cwd").unwrap();
    assert_eq!(req.argv[at + 1], "/state/worktrees/demo/squad/w-0");
    // The second: the agent had moved it to a branch of its own.
    h.git(GitOutcome::Prepared(Ok(Some("feature".into()))));
    h.run_jobs();
    assert_eq!(spawned(&h), ["plain-0", "w-0", "w-1"]);
    let w1 = h
        .live()
        .into_iter()
        .find(|s| s.key.slot == 1 && s.key.role == "w")
        .unwrap();
    let tree = w1.worktree.unwrap();
    assert_eq!(tree.path, PathBuf::from("/state/worktrees/demo/squad/w-1"));
    assert_eq!(tree.branch.as_deref(), Some("feature"));
    let Response::Sessions(v) = h.ask(Request::Get {
        kind: Kind::Sessions,
        filter: Filter::default(),
    }) else {
        panic!()
    };
    let view = v.iter().find(|s| s.key == "demo/squad/w-1").unwrap();
    assert_eq!(
        view.worktree.as_deref(),
        Some("/state/worktrees/demo/squad/w-1")
    );
    assert_eq!(view.branch.as_deref(), Some("feature"));
    let plain = v.iter().find(|s| s.key == "demo/squad/plain-0").unwrap();
    assert_eq!(
        (plain.worktree.as_deref(), plain.branch.as_deref()),
        (None, None)
    );
}

#[test]
fn a_team_without_worktrees_never_waits_for_git() {
    let mut h = H::new();
    h.apply(team(vec![resuming(2)]));
    h.start_all();
    let s = h.live().remove(0);
    h.exited(s.uid, Some(1), None, false);
    h.run_jobs();
    restarted(&mut h);
    assert!(h.git_jobs.is_empty());
    assert!(!h.trace.iter().any(|o| matches!(o, Output::Git { .. })));
}

#[test]
fn each_restart_finds_the_slots_worktree_again_and_one_that_cannot_be_had_is_a_crash() {
    let mut h = H::new();
    h.send(Request::Apply {
        team: team(vec![in_worktrees(1)]),
        source: None,
        force: false,
    });
    h.git_agrees();
    let s = h.start_all().remove(0);
    h.exited(s.uid, Some(3), None, false);
    h.run_jobs();
    h.until_wake();
    h.run_jobs();
    // The same worktree, and the replacement waits for it.
    let (_, path, branch) = prepare_of(&h.git_jobs[0].1);
    assert_eq!(
        (path.as_str(), branch.as_str()),
        ("/state/worktrees/demo/squad/w-0", "agents/w-0")
    );
    let spawns = h.tmux.spawns().len();
    // The repository was deleted meanwhile: no start anywhere else, a
    // crash that says why, and the role backs off as for any crash.
    h.git(GitOutcome::Prepared(Err(
        "/srv/repo: cannot change to '/srv/repo'".into(),
    )));
    h.run_jobs();
    assert_eq!(h.tmux.spawns().len(), spawns, "never started elsewhere");
    assert!(h.live().is_empty());
    let marker = h.role_history().marker.clone().unwrap();
    assert_eq!(
        marker.exit.unwrap().reason(),
        "worktree unavailable: /srv/repo: cannot change to '/srv/repo'"
    );
    assert_eq!(h.role_history().restarts, 2);
    assert!(h.role_history().next_restart_at.is_some());
    // Tried again after the backoff; this time it is there.
    h.until_wake();
    h.run_jobs();
    h.git_agrees();
    assert_eq!(h.tmux.spawns().len(), spawns + 1);
    // A restart after a start that failed still resumes, and says how the
    // last run ended.
    let (argv, restarts, previous) = last_run(&h, 0);
    assert_eq!(argv, resumed());
    assert_eq!(
        (restarts.as_str(), previous.as_str()),
        ("2", "start failed")
    );
}

#[test]
fn what_git_finds_wrong_is_refused_at_run_and_nothing_is_applied() {
    let refusals = [
        (
            GitRefusal::NotARepo {
                role: 0,
                repo: "/srv/repo".into(),
                why: "not a git repository".into(),
            },
            crate::error::exit::INVALID_MANIFEST,
            "error: /m/team.ron: roles[0].worktree.repo: /srv/repo is not a git repository (not a git repository)",
        ),
        (
            GitRefusal::Taken {
                role: 0,
                slot: 1,
                branch: "agents/w-1".into(),
                at: "/elsewhere".into(),
                gone: false,
            },
            crate::error::exit::REFUSED,
            "error: branch agents/w-1 of demo/squad/w-1 is checked out at /elsewhere: git checks a branch out in one worktree only",
        ),
        (
            GitRefusal::Missing("No such file or directory (os error 2)".into()),
            crate::error::exit::REFUSED,
            "error: team demo/squad has roles with worktrees, and the daemon cannot run git",
        ),
    ];
    for (refusal, code, text) in refusals {
        let mut h = H::new();
        let id = h.send(Request::Apply {
            team: team(vec![in_worktrees(2)]),
            source: Some("/m/team.ron".into()),
            force: false,
        });
        h.git(GitOutcome::Checked(Err(refusal)));
        let Response::Error(e) = &h.replies[&id] else {
            panic!("{:?}", h.replies[&id]);
        };
        assert_eq!(e.code(), code, "{e}");
        assert!(e.to_string().starts_with(text), "{e}");
        assert!(h.world().teams.is_empty());
        h.run_jobs();
        assert!(h.tmux.spawns().is_empty() && h.git_jobs.is_empty());
    }
}

#[test]
fn delete_keeps_the_worktrees_and_prunes_only_after_the_programs_ended() {
    let left = |removed: bool| {
        vec![LeftWorktree {
            path: "/state/worktrees/demo/squad/w-0".into(),
            branch: Some("agents/w-0".into()),
            removed,
            kept: None,
        }]
    };
    let mut h = H::new();
    h.send(Request::Apply {
        team: team(vec![in_worktrees(1)]),
        source: None,
        force: false,
    });
    h.git_agrees();
    h.start_all();
    let id = h.send(Request::Delete {
        key: "squad".into(),
        prune_worktrees: false,
    });
    assert_eq!(
        h.git_jobs[0].1,
        GitJob::Leave {
            dir: "/state/worktrees/demo/squad".into(),
            prune: false
        }
    );
    h.git(GitOutcome::Left(left(false)));
    let Response::Done(text) = &h.replies[&id] else {
        panic!()
    };
    assert_eq!(
        text,
        "team demo/squad deleted\nits worktrees are kept, with their branches:\n  \
         /state/worktrees/demo/squad/w-0  agents/w-0\n\
         remove one with `git worktree remove PATH` once its work is merged"
    );
    h.run_jobs();

    // With --prune-worktrees, git waits until the panes are gone.
    h.send(Request::Apply {
        team: team(vec![in_worktrees(1)]),
        source: None,
        force: false,
    });
    h.git_agrees();
    h.start_all();
    let id = h.send(Request::Delete {
        key: "squad".into(),
        prune_worktrees: true,
    });
    assert!(h.jobs.iter().any(|(_, j)| matches!(j, Job::Kill(_))));
    assert!(h.git_jobs.is_empty(), "not while its program may run");
    h.run_jobs();
    assert_eq!(
        h.git_jobs[0].1,
        GitJob::Leave {
            dir: "/state/worktrees/demo/squad".into(),
            prune: true
        }
    );
    h.git(GitOutcome::Left(left(true)));
    let Response::Done(text) = &h.replies[&id] else {
        panic!()
    };
    assert_eq!(
        text,
        "team demo/squad deleted\nremoved worktree /state/worktrees/demo/squad/w-0 (its branch agents/w-0 stays)"
    );
    // A team without worktrees is answered at once, as before.
    h.apply(team(vec![role("x", 1)]));
    let r = h.ask_now(Request::Delete {
        key: "squad".into(),
        prune_worktrees: false,
    });
    assert!(matches!(r, Response::Done(t) if t == "team demo/squad deleted"));
}

/// Issue: a team deleted and run again at once crashed (and froze): its
/// tmux session went with its last pane, and tmux, left with no session
/// at all, refused the new windows with "no current target".
#[test]
fn a_team_run_again_right_after_its_deletion_is_placed_anew_not_crashed() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 2)]));
    h.start_all();
    h.ask_now(Request::Delete {
        key: "squad".into(),
        prune_worktrees: false,
    });
    // Applied again before tmux has removed the panes or been listed.
    h.send(Request::Apply {
        team: team(vec![role("w", 2)]),
        source: None,
        force: false,
    });
    h.run_jobs();
    assert!(!h.kinds().contains(&"crashed"), "{:?}", h.kinds());
    assert_eq!(h.start_all().len(), 2);
    assert_eq!(h.tmux.sessions()["demo-squad"], vec!["w-0", "w-1"]);
}

/// The watch on the tmux server: tmux's hooks wake the daemon, which then
/// lists; the sweep is a rare safety net while it runs.
mod watch {
    use super::*;
    use crate::substrate::Notice;
    use crate::substrate::fake::FAKE_SERVER_PID;

    fn lists(h: &H) -> usize {
        h.tmux.calls().iter().filter(|c| **c == Call::List).count()
    }

    /// A daemon whose sweep lists every 60 s while watched, every 5 s
    /// otherwise, with a team of two running.
    fn watched() -> (H, Vec<Session>) {
        let mut h = H::blank();
        h.sup.setup.cfg.sweep = Duration::from_secs(60);
        h.sup.setup.cfg.sweep_unwatched = Duration::from_secs(5);
        h.restore(Loaded::Fresh, Vec::new());
        h.run_jobs();
        assert!(h.watches.is_empty(), "no server yet, nothing to watch");
        h.apply(team(vec![role("w", 2)]));
        let sessions = h.start_all();
        assert_eq!(
            h.watches,
            [(FAKE_SERVER_PID, Duration::from_secs(5))],
            "watched once a server runs, nudged every 5 s at most"
        );
        h.step(Input::Watch(Notice::Watching));
        (h, sessions)
    }

    #[test]
    fn a_wake_up_lists_at_once_and_a_dead_pane_is_recorded_from_that_one_listing() {
        let (mut h, sessions) = watched();
        let victim = &sessions[0];
        // The shim was killed: its pane stays, dead, and no report comes.
        h.tmux
            .set_dead(victim.pane.as_deref().unwrap(), None, Some(9));
        let before = lists(&h);
        h.step(Input::Watch(Notice::Changed));
        h.run_jobs();
        assert_eq!(lists(&h), before + 1, "one listing");
        let hist = h.role_history();
        assert_eq!(hist.restarts, 1, "recorded without waiting for another");
        assert_eq!(hist.marker.as_ref().unwrap().uid, victim.uid);
        assert_eq!(h.marker_detail(), ExitDetail::PaneVanished);
        // Its dead pane goes, and its window with it: the slot's next
        // window takes the name alone.
        let pane = victim.pane.clone().unwrap();
        assert!(
            h.tmux.calls().contains(&Call::Kill(pane)),
            "{:?}",
            h.tmux.calls()
        );
    }

    #[test]
    fn a_vanished_pane_tmux_woke_us_for_is_settled_a_second_later() {
        let (mut h, sessions) = watched();
        // The sweep planned before the watch ran.
        h.until_wake();
        h.run_jobs();
        let victim = &sessions[0];
        // Gone with no word from its shim.
        h.tmux.remove(victim.pane.as_deref().unwrap());
        h.step(Input::Watch(Notice::Changed));
        h.run_jobs();
        assert_eq!(h.role_history().restarts, 0, "the shim may still report");
        let at = h.now.mono;
        h.until_wake();
        h.run_jobs();
        assert!(
            h.now.mono - at <= Duration::from_secs(1),
            "{:?}",
            h.now.mono - at
        );
        assert_eq!(h.role_history().restarts, 1);
        assert_eq!(h.marker_detail(), ExitDetail::PaneVanished);
        // Settled (and restarted): no listing for a while again.
        let n = lists(&h);
        for _ in 0..30 {
            h.advance(1000);
            h.run_jobs();
        }
        assert_eq!(lists(&h), n);
    }

    #[test]
    fn while_watched_the_sweep_is_rare_and_otherwise_it_comes_every_few_seconds() {
        let (mut h, _) = watched();
        // Lets the timers fire (other timers, such as sessions turning
        // idle, come in between) until the next listing.
        let next_listing = |h: &mut H| {
            let (n, from) = (lists(h), h.now.mono);
            while lists(h) == n {
                assert!(h.now.mono - from < Duration::from_secs(600), "no listing");
                h.until_wake();
                h.run_jobs();
            }
        };
        // The sweep planned before the watch ran comes; the next one a
        // minute later.
        next_listing(&mut h);
        let (at, n) = (h.now.mono, lists(&h));
        next_listing(&mut h);
        assert_eq!(h.now.mono - at, Duration::from_secs(60));
        assert_eq!(lists(&h), n + 1);
        // The watch ends: a listing at once, and the sweep every 5 s until
        // a watch runs again.
        h.advance(1000);
        let n = lists(&h);
        h.step(Input::Watch(Notice::Ended(SubstrateError::Unreachable(
            "killed".into(),
        ))));
        h.run_jobs();
        assert_eq!(lists(&h), n + 1);
        assert_eq!(h.watches.len(), 2, "ran long: started again at once");
        h.until_wake();
        assert!(h.wake - h.now.mono <= Duration::from_secs(5));
    }

    #[test]
    fn a_watch_that_ends_at_once_is_started_again_later_and_later() {
        let (mut h, _) = watched();
        let ended = || Input::Watch(Notice::Ended(SubstrateError::Unreachable("gone".into())));
        h.advance(20_000);
        h.step(ended());
        h.run_jobs();
        assert_eq!(h.watches.len(), 2, "after a long run: at once");
        h.step(ended());
        h.run_jobs();
        assert_eq!(h.watches.len(), 2, "ended at once: not yet");
        assert!(h.wake <= h.now.mono + Duration::from_secs(1));
        h.advance(999);
        assert_eq!(h.watches.len(), 2);
        h.advance(1);
        assert_eq!(h.watches.len(), 3, "after 1 s");
        h.step(ended());
        h.run_jobs();
        h.advance(1999);
        assert_eq!(h.watches.len(), 3);
        h.advance(1);
        assert_eq!(h.watches.len(), 4, "then after 2 s");
        // One that runs for long again resets the pacing.
        h.step(Input::Watch(Notice::Watching));
        h.advance(10_000);
        h.step(ended());
        h.run_jobs();
        assert_eq!(h.watches.len(), 5);
    }

    #[test]
    fn supervision_goes_on_without_a_watch() {
        let (mut h, sessions) = watched();
        h.step(Input::Watch(Notice::Ended(SubstrateError::Missing(
            "tmux: not found".into(),
        ))));
        h.run_jobs();
        // A death the shim reports is recorded as ever.
        h.exited(sessions[1].uid, Some(3), None, false);
        h.run_jobs();
        assert_eq!(h.role_history().restarts, 1);
        assert_eq!(h.status().tmux.state.as_str(), "up");
    }
}

/// Planning follows what changed: a step that changed nothing planning
/// reads (a `get`, a finished decoration) does not plan again; a burst of
/// starts held for the end of a batch is planned once, and starts that
/// come one at a time within a few milliseconds are planned together when
/// the first is that old, to the same world either way. A listing asked
/// for meanwhile sees every start and plans none.
#[test]
fn steps_that_change_nothing_do_not_plan_and_a_burst_of_starts_plans_once() {
    let run = |hold: bool| {
        let mut h = H::new();
        h.plan_starts_at_once = false;
        h.apply(team(vec![role("w", 40)]));
        let before = h.sup.plans;
        for _ in 0..20 {
            let r = h.ask(Request::Get {
                kind: Kind::Sessions,
                filter: Filter::default(),
            });
            assert!(matches!(r, Response::Sessions(ref v) if v.len() == 40));
        }
        assert_eq!(h.sup.plans, before, "nothing changed: nothing planned");
        let pending = h.live();
        h.sup.hold_plan(hold);
        for s in &pending[..39] {
            h.started(s.uid);
            // A client polling meanwhile sees each start, and plans none.
            let r = h.ask(Request::Get {
                kind: Kind::Roles,
                filter: Filter::default(),
            });
            let Response::Roles(roles) = r else {
                panic!("{r:?}")
            };
            let running = h
                .world()
                .sessions
                .values()
                .filter(|s| s.state == SessionState::Running)
                .count();
            assert_eq!(roles[0].running as usize, running);
        }
        h.sup.hold_plan(false);
        h.started(pending[39].uid);
        let at_once = h.sup.plans - before;
        // The supervisor wakes for the starts it has not planned yet.
        let first_start = h.now.mono;
        assert!(
            h.wake <= first_start + PLAN_STARTS_WITHIN,
            "wake {:?}",
            h.wake
        );
        h.until_wake();
        let plans = h.sup.plans - before;
        (at_once, plans, h.sup.world().clone(), h.kinds().len())
    };
    let (held_at_once, held, world, events) = run(true);
    let (alone_at_once, alone, world_alone, events_alone) = run(false);
    assert_eq!(held_at_once, 0, "a held burst waits for its end");
    assert_eq!(alone_at_once, 0, "starts one at a time wait a moment");
    assert!(held <= 2, "{held} plans for a held burst");
    assert!(alone <= 2, "{alone} plans for starts one at a time");
    assert_eq!(world, world_alone);
    assert_eq!(events, events_alone);
    assert!(
        world
            .sessions
            .values()
            .all(|s| s.state == SessionState::Running)
    );
}

/// A start's plan is put off only while other starts may come: a death
/// right after it is planned at once, and takes the start with it.
#[test]
fn a_death_after_a_start_is_planned_at_once() {
    let mut h = H::new();
    h.plan_starts_at_once = false;
    h.apply(team(vec![role("w", 2)]));
    let pending = h.live();
    h.started(pending[0].uid);
    let before = h.sup.plans;
    h.started(pending[1].uid);
    assert_eq!(h.sup.plans, before, "a start waits a moment");
    h.exited(pending[1].uid, Some(1), None, false);
    assert!(h.sup.plans > before, "a death is planned at once");
}

/// A shim that reported its program's end before the log had taken all
/// of it says when the log is complete: the marker's last lines are read
/// again, and the complete ones replace what was read at the death.
#[test]
fn a_log_complete_after_the_death_gives_the_marker_the_last_lines() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    let s = h.start_all().remove(0);
    h.logs.insert(s.uid, vec!["first".into()]);
    h.exited(s.uid, Some(3), None, false);
    let last = |h: &H| {
        h.role_history()
            .marker
            .as_ref()
            .unwrap()
            .last_output
            .clone()
    };
    assert_eq!(last(&h), ["first"]);
    h.logs
        .insert(s.uid, vec!["first".into(), "last words".into()]);
    let r = h.ask(Request::Shim(ShimReport::LogComplete { uid: s.uid }));
    assert!(matches!(r, Response::Done(_)), "{r:?}");
    assert_eq!(last(&h), ["first", "last words"]);
    // Written with the next write, lazily.
    h.advance(1000);
    let saved = &h.saved.as_ref().unwrap().roles[&s.key.role()];
    assert_eq!(
        saved.marker.as_ref().unwrap().last_output,
        ["first", "last words"]
    );
}

/// What a user asks for, and a role frozen for exhausting its restarts
/// (which waits for a user too), are on disk before the next step; a
/// death the role comes back from, within seconds.
#[test]
fn a_users_change_and_a_freeze_are_written_now_an_ordinary_death_soon() {
    let mut h = H::new();
    let mut f = role("f", 1);
    f.max_restarts = Some(0);
    let writes = |h: &H, from: usize| -> Vec<Durability> {
        h.trace[from..]
            .iter()
            .filter_map(|o| match o {
                Output::Persist(d) => Some(*d),
                _ => None,
            })
            .collect()
    };
    let from = h.trace.len();
    h.apply(team(vec![role("w", 1), f]));
    assert_eq!(
        writes(&h, from).first(),
        Some(&Durability::Now),
        "the apply"
    );
    let started = h.start_all();
    let of = |r: &str| {
        started
            .iter()
            .find(|s| s.key.role().to_string().ends_with(r))
            .unwrap()
            .uid
    };
    let from = h.trace.len();
    h.exited(of("/w"), Some(1), None, false);
    assert_eq!(writes(&h, from), [Durability::Soon], "a death restarted");
    let from = h.trace.len();
    h.exited(of("/f"), Some(1), None, false);
    assert!(
        h.status()
            .problems
            .iter()
            .any(|p| p.kind == crate::view::ProblemKind::Frozen)
    );
    assert_eq!(writes(&h, from), [Durability::Now], "the freeze");
}

/// A death is written at once, to be on disk within seconds; the
/// marker's last lines, read from the log just after, ride along with the
/// next write (within a second) instead of costing a write of their own,
/// and that write is left to the system (the lines are in the log still).
#[test]
fn a_markers_last_lines_are_written_lazily_after_the_death() {
    let mut h = H::new();
    h.apply(team(vec![role("w", 1)]));
    let s = h.start_all().remove(0);
    h.logs.insert(s.uid, vec!["last words".into()]);
    let writes = |h: &H| -> Vec<Durability> {
        h.trace
            .iter()
            .filter_map(|o| match o {
                Output::Persist(d) => Some(*d),
                _ => None,
            })
            .collect()
    };
    let before = writes(&h).len();
    h.exited(s.uid, Some(3), None, false);
    assert_eq!(
        writes(&h)[before..],
        [Durability::Soon],
        "one write for the death, on disk within seconds"
    );
    let saved = h.saved.as_ref().unwrap().roles[&s.key.role()].clone();
    let marker = saved.marker.expect("the death is written");
    assert!(marker.last_output.is_empty(), "{marker:?}");
    assert_eq!(
        h.role_history().marker.as_ref().unwrap().last_output,
        ["last words"]
    );
    h.advance(1000);
    let saved = &h.saved.as_ref().unwrap().roles[&s.key.role()];
    assert_eq!(saved.marker.as_ref().unwrap().last_output, ["last words"]);
    let lazy = &writes(&h)[before + 1..];
    assert!(
        !lazy.is_empty() && lazy.iter().all(|d| *d == Durability::Later),
        "the later writes are lazy: {lazy:?}"
    );
}
