//! The supervisor: all of the daemon's state and every decision about it,
//! with no I/O and no clock. One entry point, [`Supervisor::step`]: an
//! input (a request, a shim's report, a finished tmux job, a timer) and the
//! current instant go in; the effects to carry out, in order, come out.
//! The main loop (`main_loop.rs`) does the I/O.
//!
//! Split by input kind: `requests.rs` answers clients and shims, `tmux.rs`
//! handles tmux jobs and their outcomes (and tmux's health), this file
//! holds the state, the step, timers, deaths and persistence.

mod activity;
mod notify;
mod requests;
mod spawn;
mod tmux;
mod workspace;
mod worktree;

#[cfg(test)]
mod activity_tests;
#[cfg(test)]
mod tests;

/// Short timers for tests of the daemon around the supervisor.
#[cfg(test)]
pub(crate) fn tests_cfg() -> Config {
    tests::cfg()
}

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::Rng;
use crate::domain::event::{Event, EventKind};
use crate::domain::reconcile::{self, Effect};
use crate::domain::state::{Exit, ExitDetail, KeptPane, Session, Time, World, after};
use crate::proto::{EventFilter, Request, Response, ShimReport};
use crate::substrate::Notice;
use crate::view::EventView;

use super::Config;
use super::events::{EventRing, Loaded as EventsLoaded};
use super::git::{GitDone, GitJob, GitJobId};
use super::store::Loaded;
use super::worker::{Done, Job, JobId};
use crate::paths::Paths;

pub(crate) use notify::{Hook, HookFailure};

/// Identifies a request until it is answered; the main loop holds the
/// connection, the supervisor only the id.
pub type RequestId = u64;

/// Lines of a dead pane kept on its marker.
pub const MARKER_LINES: usize = 20;

/// The current instant, both ways: wall-clock time for what is recorded
/// and shown, and a monotonic reading (time since the daemon started) for
/// timers, so that a wall-clock jump neither fires nor delays them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall: Time,
    pub mono: Duration,
}

/// A wall-clock step larger than this between two inputs, beyond what the
/// monotonic clock measured, is taken as a jump of the clock.
const CLOCK_JUMP: Duration = Duration::from_secs(2);

/// Everything that reaches the supervisor.
#[derive(Debug)]
pub enum Input {
    /// The daemon starts: the state file as loaded, and what the shims of
    /// its live sessions recorded while no daemon ran.
    Restore {
        loaded: Loaded,
        records: Vec<(u64, Replay)>,
    },
    /// A client's or a shim's request, to be answered by id.
    Request { id: RequestId, request: Request },
    /// A tmux job finished.
    Done(Done),
    /// A git job finished.
    Git(GitDone),
    /// What the shims recorded for sessions (answering `ReadExitRecords`).
    ExitRecords(Vec<(u64, Option<ShimReport>)>),
    /// The last lines of a session's output log (answering `ReadLogTail`).
    LogTail { uid: u64, lines: Vec<String> },
    /// How writing the state file went (after `Persist`).
    Persisted(Result<(), String>),
    /// The shim of spawn `of` waited for its next run in the answer to
    /// request `id` (see `Output::AwaitRun`) and it did not come in time:
    /// it is answered what its pane shows now.
    RunNotDue { id: RequestId, of: u64 },
    /// The event log cannot be written (why, since when), or can again.
    EventLog(Option<(String, Time)>),
    /// A notification command ran (answering `Notify`): how, if it failed.
    Hooked {
        hook: Hook,
        failure: Option<HookFailure>,
    },
    /// What the watch on the tmux server says (see `Output::Watch`).
    Watch(Notice),
    /// The shim of a kept pane was asked to run spawn `uid` there (see
    /// `Output::Rerun`); `asked` is false when it could not be.
    Reran { uid: u64, asked: bool },
    /// A timer is due (see `Output::WakeAt`).
    Tick,
}

/// An exit record found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    Report(ShimReport),
    /// Applying this record stopped an earlier daemon; it was moved aside
    /// to the path given and is not applied again.
    Failed(PathBuf),
}

/// Everything the supervisor asks of the world outside, in order.
#[derive(Debug, Clone)]
pub enum Output {
    /// Hand this job to the tmux worker; jobs run in the order submitted.
    Submit { id: JobId, job: Job },
    /// Hand this job to the git worker; jobs run in the order submitted.
    Git { id: GitJobId, job: GitJob },
    /// Answer request `id`.
    Reply { id: RequestId, response: Response },
    /// Request `id`, answered already, follows the event log from now on.
    Follow { id: RequestId, filter: EventFilter },
    /// Append this event to the log file and pass it to the followers.
    Event(EventView),
    /// Write what changed in the state now, and get it to the disk as
    /// soon as it says; the result comes back as `Persisted`.
    Persist(Durability),
    /// Read what the shims of these sessions recorded; comes back as
    /// `ExitRecords`.
    ReadExitRecords(Vec<u64>),
    /// Read the last lines of a session's output log; comes back as
    /// `LogTail`.
    ReadLogTail { uid: u64 },
    /// Answer request `id` with output of session runs, read in order.
    ReplyLogs { id: RequestId, reads: Vec<LogRead> },
    /// The exit record of a session that ended is no longer needed.
    RemoveExitRecord(u64),
    /// Remove exit records of sessions that are not live, the lines of
    /// panes that are not kept, and logs of sessions that are not shown
    /// any more.
    Prune {
        live: BTreeSet<u64>,
        kept: BTreeSet<u64>,
        shown: BTreeSet<u64>,
    },
    /// A line for the daemon's log.
    Log(String),
    /// Send `signal` to process `pid` if it is still a child of `parent`
    /// (a program of a shim): a pid that went to another process is left
    /// alone.
    Signal {
        pid: u32,
        parent: u32,
        signal: Signal,
    },
    /// Have the shim `pid` (of spawn `uid`, a child of the tmux server
    /// `parent`) that stays in a kept pane show `line` from now on.
    ShowLine {
        uid: u64,
        pid: u32,
        parent: u32,
        line: String,
    },
    /// The shim of spawn `of`, just answered `Linger`, is to get the
    /// slot's next run in that answer instead: its restart is due before
    /// `by` (monotonic). Past `by` it is answered what its pane shows then
    /// ([`Supervisor::answer_to_exit`]).
    AwaitRun { of: u64, by: Duration },
    /// Have the shim `pid` (a child of the tmux server `parent`) that stays
    /// in the kept pane of spawn `of` run `next` there; answered by
    /// `Input::Reran`.
    Rerun {
        of: u64,
        pid: u32,
        parent: u32,
        next: crate::shim::NextRun,
    },
    /// Run a team's notification command, off the loop; how it went comes
    /// back as `Hooked`.
    Notify(Hook),
    /// Start watching the tmux server `server_pid`: its hooks wake the
    /// daemon, each wake-up comes back as `Input::Watch`, and so does the
    /// watch's end. `kick` paces the watch's look for new pane processes
    /// (whose ends it watches, to nudge tmux into reaping one it missed).
    Watch { server_pid: u32, kick: Duration },
    /// The tmux server has new pane processes, these first ones among them:
    /// the watch is to watch them.
    PanesChanged(Vec<u32>),
    /// Step again (with `Tick`) at this monotonic instant at the latest.
    WakeAt(Duration),
    /// The daemon has stopped: nothing is under way any more.
    Exit,
}

/// The signals the supervisor sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

/// A program to kill if it has not ended by `at` (monotonic): one whose
/// heartbeats went stale, sent SIGTERM first.
#[derive(Debug, Clone, Copy)]
pub(super) struct Escalation {
    at: Duration,
    uid: u64,
    pid: u32,
    shim: u32,
}

/// How long a program sent SIGTERM has before SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(5);

/// One session run's output to read for `logs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// The session key.
    pub key: String,
    pub uid: u64,
    /// `None`: its last `lines` lines; `Some(offset)`: what came after.
    pub from: Option<u64>,
    pub lines: usize,
    /// The run has ended: its last partial line is complete.
    pub ended: bool,
    /// What to show when its log holds nothing (a marker's last lines).
    pub fallback: Vec<String>,
}

/// What the supervisor knows of its surroundings, fixed for its life.
#[derive(Debug, Clone)]
pub struct Setup {
    pub pid: u32,
    pub started_at: Time,
    pub paths: Paths,
    /// The tmux server (`-L` name); `None` is the default server.
    pub tmux_socket: Option<String>,
    /// The marvel binary the panes run as their shim.
    pub marvel_bin: PathBuf,
    /// The daemon's time zone, for the times tmux shows.
    pub utc_offset: chrono::FixedOffset,
    pub cfg: Config,
}

impl Setup {
    /// The `@marvel` tag on every tmux session this state directory made.
    pub fn owner_tag(&self) -> String {
        self.paths.root.display().to_string()
    }
}

/// A death whose cause a later listing settles. A shim whose terminal hung
/// up cannot tell a killed pane from a server going away, and a server that
/// is exiting may still answer a listing asked for before. A pane missing
/// from a listing with no exit record yet may have a shim still on its way
/// with the details. Either way, the first listing asked for after this
/// was known settles it: a server gone makes it infrastructure loss,
/// anything else a death as recorded by the shim, or as `exit` says.
#[derive(Debug, Clone)]
struct Unsettled {
    exit: Exit,
    /// Only a listing with this id or a later one settles it.
    from_job: JobId,
    /// Such a listing came: the exit records' answer settles it.
    settling: bool,
}

/// A shim's exit report that arrived while the session's spawn was still
/// under way, and the shim waiting for its answer.
#[derive(Debug, Clone)]
struct EarlyExit {
    exit: Exit,
    hangup: bool,
    reply: RequestId,
}

/// How soon a write of the state must reach the disk. Once written, a
/// change survives a crash of the daemon (the system holds it); the disk
/// only matters when the machine goes down, and with it every program the
/// change was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Durability {
    /// Left to the system: what it holds is learnt again (a start, a
    /// session's activity, a marker's last lines).
    #[default]
    Later,
    /// On disk within five seconds ([`crate::daemon::main_loop`]'s sync):
    /// what supervising decided (a death, a restart, a pane placed). A
    /// machine that goes down loses at most those seconds, along with the
    /// programs they were about.
    Soon,
    /// On disk before anything else happens: what a user asked for, and
    /// uids handed out (a uid must never be handed out twice, even after
    /// the machine went down: the files of its run may have reached the
    /// disk).
    Now,
}

/// Whether the state file could be written last time.
#[derive(Debug, Clone, Default)]
struct PersistHealth {
    /// The error of the last attempt, and since when writes fail.
    failing: Option<(String, Time)>,
    /// While writes fail: when to try again (monotonic) even if nothing
    /// changes.
    retry_at: Option<Duration>,
}

/// A shim whose slot's restart is due within this gets the next run in
/// the answer to its program's end: no file, no signal, one connection.
/// (A shim waits 3 s for that answer.)
pub const HOLD_FOR_RUN: Duration = Duration::from_millis(500);

/// How long after its restart was due a held answer still waits for it.
const RUN_SLACK: Duration = Duration::from_millis(100);

/// How often a failing state file is tried again.
const PERSIST_RETRY: Duration = Duration::from_secs(1);

/// How long a change that can be learnt again after a crash (a pane
/// placed, a program started) may wait to be written: what is written
/// sooner takes it along, so a death costs one write.
const LAZY_PERSIST: Duration = Duration::from_secs(1);

/// A program's start is planned at most this long after its report: the
/// starts of a bring-up, which come one report at a time as tmux makes
/// the panes (about one every 15 ms at 1 000), are planned a few at a time
/// instead of each against every session. Nothing waits on that plan: a
/// start's event and answer go out at once, and readiness is timed.
const PLAN_STARTS_WITHIN: Duration = Duration::from_millis(50);

pub struct Supervisor {
    world: World,
    events: EventRing,
    setup: Setup,
    /// tmux jobs under way, tmux's health, and the spawn queue.
    tmux: tmux::Tmux,
    /// Where teams and slots are in tmux, and what their panes show.
    ws: workspace::Workspace,
    /// git jobs under way (worktrees), and what waits for them.
    git: worktree::GitJobs,
    /// Programs to kill if they have not ended by then.
    pub(super) escalations: Vec<Escalation>,
    /// Deaths whose cause a listing settles, by session uid.
    unsettled: BTreeMap<u64, Unsettled>,
    /// Exits reported before the session's spawn came back, by uid.
    early_exits: BTreeMap<u64, EarlyExit>,
    /// Restored sessions whose spawn never came back: the first listing
    /// finds their panes by name, or they are forgotten.
    unplaced: Vec<u64>,
    /// The state file was unreadable: the first listing spares our panes.
    spare_strays: bool,
    /// The daemon started: the first listing asks the shims of kept panes
    /// again what they may not have been asked (see `ask_reruns_again`).
    restored_reruns: bool,
    /// The instant of the last step (to notice wall-clock jumps).
    clock: Option<Now>,
    /// When the next safety-net listing is due at the latest (monotonic),
    /// at the long interval; see [`Supervisor::sweep_due`].
    next_sweep: Duration,
    /// When the last listing was asked for (monotonic).
    listed_at: Duration,
    /// When the plan wants to look again.
    wake_at: Option<Time>,
    /// What the world's planning inputs were when it was last planned
    /// (see `World::plan_inputs`): a step that changed none of them does
    /// not plan again before `wake_at`.
    planned: Option<(u64, Option<Time>)>,
    /// Planning waits for the end of a batch of inputs (see
    /// [`Supervisor::hold_plan`]).
    hold: bool,
    /// When the starts reported since the last plan are to be planned.
    plan_starts_by: Option<Duration>,
    /// How many times the world was planned (for tests and figures).
    pub plans: u64,
    /// What changed must be written before the step ends.
    dirty: bool,
    /// What changed may wait until then (monotonic) to be written, unless
    /// something written sooner takes it along: changes that a crashed
    /// daemon's successor learns again from tmux and the exit records.
    lazy_until: Option<Duration>,
    /// A session's activity changed this step: written lazily, as the next
    /// output, silence or heartbeat tells it again after a crash.
    activity_changed: bool,
    /// When the next busy session turns idle, as the last step ended, or
    /// sooner: the idle timers look at each session only once it has come.
    idle_at: Option<Time>,
    /// `idle_at` is to be found again from every session, not only from
    /// those changed since the last write (see `next_idle`).
    idle_anew: bool,
    /// The edits of the team specs when `idle_at` was last found anew.
    idle_specs: u64,
    persist: PersistHealth,
    /// The uid reservation last handed to `Persist` (see `spawn_queued`).
    uids_written: u64,
    /// A user's request changed the world this step: what it changed is on
    /// disk before the next step.
    urgent: bool,
    /// Runs whose logs are being read again, complete (`LogComplete`).
    relog: HashSet<u64>,
    /// Why the event log cannot be written, and since when.
    event_log_failure: Option<(String, Time)>,
    /// Lines of the event log an earlier daemon left that could not be read.
    skipped_events: u64,
    /// Set once asked to stop: the monotonic instant by which to stop even
    /// if tmux calls are still under way.
    stopping: Option<Duration>,
    /// Sessions whose screen is being read, by uid: the instant they
    /// turned idle (see `activity.rs`).
    screens: BTreeMap<u64, Time>,
    /// `inject --when-idle` requests waiting for their session.
    parked: Vec<activity::Parked>,
    /// The coalescing windows of notifications.
    notifier: notify::Notifier,
    out: Vec<Output>,
}

impl Supervisor {
    /// A supervisor with an empty world and the events an earlier daemon
    /// logged; `Input::Restore` fills the world.
    pub fn new(setup: Setup, earlier_events: EventsLoaded) -> Supervisor {
        let skipped_events = earlier_events.skipped;
        Supervisor {
            world: World::default(),
            events: EventRing::new(earlier_events),
            tmux: tmux::Tmux::default(),
            ws: workspace::Workspace::default(),
            git: worktree::GitJobs::default(),
            escalations: Vec::new(),
            setup,
            unsettled: BTreeMap::new(),
            early_exits: BTreeMap::new(),
            unplaced: Vec::new(),
            spare_strays: false,
            restored_reruns: false,
            clock: None,
            next_sweep: Duration::ZERO,
            listed_at: Duration::ZERO,
            wake_at: None,
            planned: None,
            hold: false,
            plan_starts_by: None,
            plans: 0,
            dirty: false,
            lazy_until: None,
            activity_changed: false,
            idle_at: None,
            idle_anew: true,
            idle_specs: 0,
            persist: PersistHealth::default(),
            urgent: false,
            relog: HashSet::new(),
            uids_written: 0,
            event_log_failure: None,
            skipped_events,
            stopping: None,
            screens: BTreeMap::new(),
            parked: Vec::new(),
            notifier: notify::Notifier::default(),
            out: Vec::new(),
        }
    }

    /// What is to be persisted.
    #[cfg(test)]
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The world for the store, which takes the marks of what changed
    /// (and writes only that).
    pub fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }

    /// The one entry point: handles `input` at `now` and returns what to
    /// do, in order.
    pub fn step(&mut self, input: Input, now: Now, rng: &mut impl Rng) -> Vec<Output> {
        self.observe_clock(now);
        let tick = matches!(input, Input::Tick);
        // A program's start, or a tmux job done, while more inputs wait:
        // the last of them plans for all. A burst of a thousand starts
        // (a bring-up) is planned a few times, not a thousand.
        let held = self.hold
            && matches!(
                input,
                Input::Done(_)
                    | Input::Request {
                        request: Request::Shim(_),
                        ..
                    }
            );
        // A start waits a moment for the starts that follow it, and so
        // does what only reports meanwhile (a tmux job done, a state
        // written): a death does not.
        let start = matches!(
            input,
            Input::Request {
                request: Request::Shim(ShimReport::Started { .. }),
                ..
            }
        );
        // A listing is answered from the world as it is, planned or not:
        // a bring-up watched by a client polling `get` is planned as
        // often as one nobody watches.
        let reports = start
            || matches!(
                input,
                Input::Done(_)
                    | Input::Persisted(_)
                    | Input::Request {
                        request: Request::Shim(ShimReport::LogComplete { .. })
                            | Request::Ping
                            | Request::Status
                            | Request::Get { .. }
                            | Request::SessionRows { .. }
                            | Request::Describe { .. },
                        ..
                    }
            );
        if start {
            self.plan_starts_by
                .get_or_insert(now.mono + PLAN_STARTS_WITHIN);
        }
        let held = held || (reports && self.plan_starts_by.is_some_and(|by| now.mono < by));
        match input {
            Input::Restore { loaded, records } => self.restore(loaded, records, now, rng),
            Input::Request { id, request } => self.request(id, request, now, rng),
            Input::Done(done) => self.done(done, now, rng),
            Input::Git(done) => self.git_done(done, now, rng),
            Input::ExitRecords(records) => self.exit_records(records, now, rng),
            Input::LogTail { uid, lines } => {
                // Written lazily: the death it tells of is written already,
                // and what a crash could lose is a marker's last lines. A
                // log read again once complete has the last word.
                let complete = self.relog.remove(&uid);
                let set = !lines.is_empty()
                    && if complete {
                        self.world.set_last_output(uid, lines);
                        true
                    } else {
                        self.world.set_last_output_if_empty(uid, lines)
                    };
                if set {
                    self.persist_lazily(now);
                }
            }
            Input::Persisted(result) => self.persisted(result, now),
            Input::RunNotDue { id, of } => {
                let answer = self.answer_to_exit(of, "recorded");
                self.reply(id, answer);
            }
            Input::EventLog(failure) => {
                let msg = match &failure {
                    Some((e, _)) => {
                        format!("cannot write the event log ({e}); events are kept in memory")
                    }
                    None => "the event log is written again".to_string(),
                };
                self.log(msg);
                self.event_log_failure = failure;
            }
            Input::Hooked { hook, failure } => {
                if let Some(f) = failure {
                    self.hook_failed(&hook, f, now);
                }
            }
            Input::Watch(notice) => self.watch_notice(notice, now),
            Input::Reran { uid, asked } => self.reran(uid, asked, now, rng),
            Input::Tick => self.tick(now),
        }
        if self.stopping.is_none() {
            if held {
                // What waits for tmux need not wait for the plan.
                self.spawn_queued_if_ready(now);
            } else {
                self.reconcile(tick, now, rng);
            }
        }
        if self.stopping.is_none() {
            self.activity_timers(now);
            self.release_parked(now);
            self.notify_timers(now);
        }
        self.finish(now);
        std::mem::take(&mut self.out)
    }

    /// While set, inputs that only report (a program's start, a tmux job
    /// done) leave planning to the next input that is stepped without it:
    /// the main loop sets it while more inputs are waiting.
    pub fn hold_plan(&mut self, hold: bool) {
        self.hold = hold;
    }

    fn log(&mut self, msg: impl Into<String>) {
        self.out.push(Output::Log(msg.into()));
    }

    fn emit(&mut self, ev: Event) {
        // What a session's or role's pane shows may change with it.
        let role = ev
            .key
            .parse::<crate::domain::key::SessionKey>()
            .map(|k| k.role())
            .or_else(|_| ev.key.parse::<crate::domain::key::RoleKey>());
        if let Ok(role) = role {
            self.ws.dirty.insert(role);
        }
        let view = self.events.push(ev);
        self.out.push(Output::Event(view.clone()));
        self.notify(&view);
    }

    fn emit_all(&mut self, evs: impl IntoIterator<Item = Event>) {
        for e in evs {
            self.emit(e);
        }
    }

    fn reply(&mut self, id: RequestId, response: Response) {
        self.out.push(Output::Reply { id, response });
    }

    /// A wall-clock jump (the clock set, a suspend) moves every instant the
    /// world keeps with it, so that each timer keeps the time it had left:
    /// nothing fires early, nothing is delayed.
    fn observe_clock(&mut self, now: Now) {
        if let Some(last) = self.clock
            && let Some(elapsed) = now.mono.checked_sub(last.mono)
        {
            let expected = after(last.wall, elapsed);
            let drift = now.wall - expected;
            let limit = chrono::Duration::from_std(CLOCK_JUMP).unwrap_or_default();
            if drift > limit || drift < -limit {
                self.world.shift_clock(drift);
                self.tmux.health.shift_clock(drift);
                self.wake_at = self.wake_at.map(|t| shifted(t, drift));
                self.dirty = true;
                let msg = format!(
                    "the wall clock jumped by {}; timers keep the time they had left",
                    crate::domain::world::human_span_signed(drift)
                );
                self.log(msg.clone());
                self.emit(Event::new(now.wall, EventKind::Warning, "", msg));
            }
        }
        self.clock = Some(now);
    }

    /// Loads the persisted world, applies deaths recorded while no daemon
    /// ran, and asks tmux which panes are still there.
    fn restore(
        &mut self,
        loaded: Loaded,
        records: Vec<(u64, Replay)>,
        now: Now,
        rng: &mut impl Rng,
    ) {
        self.log(format!(
            "starting; state in {}",
            self.setup.paths.root.display()
        ));
        self.restored_reruns = true;
        match loaded {
            Loaded::Fresh => {}
            Loaded::Restored {
                world,
                rebooted,
                cut,
            } => {
                self.world = *world;
                // A world read back: its idle instants are found anew.
                self.idle_anew = true;
                self.world.resume_uids();
                self.uids_written = self.world.uid_reserved;
                if let Some(msg) = cut {
                    self.log(msg.clone());
                    self.emit(Event::new(now.wall, EventKind::Warning, "", msg));
                }
                if rebooted {
                    self.machine_restarted(now, rng);
                }
            }
            Loaded::MovedAside { moved_to, error } => {
                let msg = format!(
                    "state file {} could not be read ({error}); moved it to {} and started empty",
                    self.setup.paths.state().display(),
                    moved_to.display()
                );
                self.log(msg.clone());
                self.emit(Event::new(now.wall, EventKind::Warning, "", msg));
                self.spare_strays = true;
            }
        }
        if self.skipped_events > 0 {
            let msg = format!(
                "skipped {} unreadable or out-of-order lines of {}",
                self.skipped_events,
                self.setup
                    .paths
                    .events()
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            );
            self.log(msg.clone());
            self.emit(Event::new(now.wall, EventKind::Warning, "", msg));
        }
        self.world.watching_since = Some(now.wall);
        // What the shims wrote while we were away. A hang-up waits for the
        // first listing: the whole server may have gone, which is nobody's
        // fault.
        for (uid, replay) in records {
            if !self.is_live(uid) {
                continue;
            }
            match replay {
                Replay::Report(report @ ShimReport::Exited { .. }) => {
                    self.may_rerun(&report);
                    if let Some((exit, hangup)) = reported_exit(&report) {
                        self.exit_reported(uid, exit, hangup, now, rng);
                    }
                }
                Replay::Report(ShimReport::Started { pid, at, .. }) => {
                    let ev = self.world.started(uid, pid, at);
                    self.emit_all(ev);
                }
                // Never recorded: a shim only sends it.
                Replay::Report(ShimReport::LogComplete { .. }) => {}
                Replay::Failed(moved_to) => {
                    let key = self.world.sessions[&uid].key.clone();
                    let msg = format!(
                        "the exit record of {key} (uid {uid}) stopped an earlier daemon; moved it to {} and recorded the session as ended",
                        moved_to.display()
                    );
                    self.log(msg.clone());
                    self.emit(Event::new(now.wall, EventKind::Warning, &key, msg));
                    let exit = Exit::detail(ExitDetail::PaneVanished, now.wall);
                    self.record_death(uid, exit, now, rng);
                }
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
        self.probe(true, now);
        self.next_sweep = now.mono + self.setup.cfg.sweep;
        self.listed_at = now.mono;
        self.dirty = true;
    }

    fn is_live(&self, uid: u64) -> bool {
        self.world
            .sessions
            .get(&uid)
            .is_some_and(|s| s.state.is_live())
    }

    fn live_uids(&self) -> Vec<u64> {
        self.world
            .sessions
            .values()
            .filter(|s| s.state.is_live())
            .map(|s| s.uid)
            .collect()
    }

    /// The timers: the sweep, tmux's retry, the stop deadline. The plan's
    /// own wake-up needs nothing here: every step reconciles.
    fn tick(&mut self, now: Now) {
        let (due, later): (Vec<Escalation>, Vec<Escalation>) =
            std::mem::take(&mut self.escalations)
                .into_iter()
                .partition(|e| now.mono >= e.at);
        self.escalations = later;
        for e in due {
            self.out.push(Output::Signal {
                pid: e.pid,
                parent: e.shim,
                signal: Signal::Kill,
            });
        }
        if self.persist.retry_at.is_some_and(|t| now.mono >= t) {
            self.persist.retry_at = None;
            self.dirty = true;
        }
        if now.mono >= self.sweep_due() {
            self.sweep(now);
        }
        if !self.tmux.probing && self.tmux.health.retry_due(now.wall) {
            self.probe(false, now);
        }
        self.ensure_watch(now);
    }

    /// The safety-net sweep: one listing unless one is under way, and the
    /// pruning of records nobody needs.
    fn sweep(&mut self, now: Now) {
        self.next_sweep = now.mono + self.setup.cfg.sweep;
        if self.tmux_ready(now) && self.tmux.listing.is_none() {
            self.list_now(now);
        }
        let shown = self.world.uids_with_logs();
        let live: BTreeSet<u64> = self.live_uids().into_iter().collect();
        // The files of a kept pane's shim stay while it may still read
        // them: a next run it was asked to take is one.
        let taking = live.iter().filter_map(|u| self.world.sessions[u].rerun_of);
        let kept = self
            .world
            .kept
            .values()
            .map(|k| k.uid)
            .chain(taking)
            .collect();
        self.out.push(Output::Prune { live, kept, shown });
    }

    /// Changes are to be written within [`LAZY_PERSIST`] at the latest.
    fn persist_lazily(&mut self, now: Now) {
        if self.lazy_until.is_none() {
            self.lazy_until = Some(now.mono + LAZY_PERSIST);
        }
    }

    /// Plans and carries out the plan's effects, if anything planning
    /// reads changed, its wake-up time came, or the timer fired (`tick`:
    /// a safety net); then spawns what waits for tmux.
    fn reconcile(&mut self, tick: bool, now: Now, rng: &mut impl Rng) {
        let due = tick
            || self.planned != Some(self.world.plan_inputs())
            || self.wake_at.is_some_and(|t| now.wall >= t)
            || self.plan_starts_by.is_some_and(|by| now.mono >= by);
        if due {
            self.plan_and_act(now, rng);
        }
        self.spawn_queued_if_ready(now);
    }

    /// Without tmux the spawns wait, visible as pending: its answer or its
    /// retry timer wakes the loop.
    fn spawn_queued_if_ready(&mut self, now: Now) {
        if !self.tmux.queue.is_empty() && self.tmux_ready(now) {
            self.spawn_queued(now);
        }
    }

    fn plan_and_act(&mut self, now: Now, rng: &mut impl Rng) {
        self.plans += 1;
        self.plan_starts_by = None;
        let plan = reconcile::reconcile(&mut self.world, now.wall, rng);
        self.wake_at = plan.wake_at;
        // A spawn alone is written lazily: a crashed daemon's successor
        // finds its pane by its uid (saved before any pane carries it), or
        // makes it again.
        let spawns_only = plan
            .effects
            .iter()
            .all(|e| matches!(e, Effect::Spawn { .. }));
        if !plan.events.is_empty() || !spawns_only {
            self.dirty = true;
        } else if !plan.effects.is_empty() {
            self.persist_lazily(now);
        }
        self.emit_all(plan.events);
        for effect in plan.effects {
            match effect {
                Effect::Spawn { uid } => {
                    self.tmux.queue.push(uid);
                    self.prepare_worktree(uid);
                }
                Effect::Stopped { session } => self.vacate(session, now),
                Effect::Killed { session } => {
                    // Recorded dead already. Its program is ended (SIGTERM,
                    // SIGKILL if it does not go), and its pane, kept, shows
                    // its last screen.
                    self.unsettled.remove(&session.uid);
                    self.out.push(Output::ReadLogTail { uid: session.uid });
                    if let Some(exit) = &session.exit {
                        self.keep_pane(&session, exit, now);
                    }
                    self.remove_exit_record(session.uid);
                    let kept =
                        self.world.kept.get(&session.key).map(|k| k.uid) == Some(session.uid);
                    match (&session.pane, session.pid, session.pane_pid) {
                        (Some(_), Some(pid), Some(shim)) if kept => {
                            self.out.push(Output::Signal {
                                pid,
                                parent: shim,
                                signal: Signal::Term,
                            });
                            self.escalations.push(Escalation {
                                at: now.mono + KILL_AFTER,
                                uid: session.uid,
                                pid,
                                shim,
                            });
                        }
                        (Some(pane), _, _) => {
                            self.world.kept.remove(&session.key);
                            self.kill_pane(pane.clone(), "an unhealthy session".into(), now);
                        }
                        (None, _, _) => {}
                    }
                }
            }
        }
        self.forget_panes_of_undeclared_slots(now);
        self.planned = Some(self.world.plan_inputs());
    }

    /// A session stopped on purpose: its pane goes, unless a replacement
    /// of the same slot takes it over in this step (a restart in place).
    fn vacate(&mut self, session: crate::domain::state::Session, now: Now) {
        self.unsettled.remove(&session.uid);
        // A pane still being made is removed when its spawn comes back;
        // one not asked for yet never will be.
        self.tmux.queue.retain(|u| *u != session.uid);
        self.out.push(Output::RemoveExitRecord(session.uid));
        match (session.pane, session.window) {
            (Some(pane), Some(window)) => {
                // Whatever the slot kept before is of no use any more.
                if let Some(old) = self.world.kept.remove(&session.key)
                    && old.pane != pane
                {
                    self.kill_pane(old.pane, session.key.to_string(), now);
                }
                let v = workspace::Vacated {
                    pane,
                    window,
                    session: session.tmux_session,
                };
                if let Some(earlier) = self.ws.vacated.insert(session.key.clone(), v) {
                    self.kill_pane(earlier.pane, session.key.to_string(), now);
                }
            }
            (Some(pane), None) => self.kill_pane(pane, session.key.to_string(), now),
            (None, _) => {}
        }
    }

    /// Panes kept for slots that are no longer declared (a role removed,
    /// scaled down, a team deleted) go.
    fn forget_panes_of_undeclared_slots(&mut self, now: Now) {
        let gone: Vec<crate::domain::key::SessionKey> = self
            .world
            .kept
            .keys()
            .filter(|k| {
                self.world
                    .role_spec(&k.role())
                    .is_none_or(|spec| k.slot >= spec.replicas.get())
            })
            .cloned()
            .collect();
        for key in gone {
            if let Some(k) = self.world.kept.remove(&key) {
                self.dirty = true;
                self.kill_pane(k.pane, key.to_string(), now);
            }
        }
    }

    /// Ends every step: persists what changed, says when to wake up, and
    /// whether the daemon is done.
    fn finish(&mut self, now: Now) {
        // Panes of stopped sessions that no replacement took over.
        for (key, v) in std::mem::take(&mut self.ws.vacated) {
            self.kill_pane(v.pane, key.to_string(), now);
        }
        self.release_leaving();
        self.redecorate(now);
        if std::mem::take(&mut self.activity_changed) {
            self.persist_lazily(now);
        }
        let urgent = std::mem::take(&mut self.urgent);
        if self.dirty || self.lazy_until.is_some_and(|t| now.mono >= t) {
            // What was only waiting to be written lazily can be learnt
            // again after a crash: the disk need not be waited for.
            let durability = match (std::mem::take(&mut self.dirty), urgent) {
                (true, true) => Durability::Now,
                (true, false) => Durability::Soon,
                (false, _) => Durability::Later,
            };
            self.lazy_until = None;
            self.out.push(Output::Persist(durability));
        }
        let mut wake = self.sweep_due();
        if let Some(t) = self.watch_retry_at() {
            wake = wake.min(t);
        }
        if let Some(t) = self.lazy_until {
            wake = wake.min(t);
        }
        if let Some(t) = self.persist.retry_at {
            wake = wake.min(t);
        }
        if let Some(e) = self.escalations.iter().map(|e| e.at).min() {
            wake = wake.min(e);
        }
        if let Some(by) = self.plan_starts_by {
            wake = wake.min(by);
        }
        if let Some(p) = self.next_parked() {
            wake = wake.min(p);
        }
        if let Some(n) = self.notifier.next() {
            wake = wake.min(n);
        }
        if let Some(t) = self.statuses_due(now) {
            wake = wake.min(t);
        }
        let mut at_wall = |t: Time| {
            let ahead = (t - now.wall).to_std().unwrap_or(Duration::ZERO);
            wake = wake.min(now.mono + ahead);
        };
        if let Some(t) = self.wake_at {
            at_wall(t);
        }
        self.idle_at = self.next_idle();
        if let Some(t) = self.idle_at {
            at_wall(t);
        }
        if let Some(t) = self.ws.settling.values().min() {
            at_wall(*t);
        }
        if !self.tmux.probing
            && let Some(t) = self.tmux.health.next_retry_at
        {
            at_wall(t);
        }
        if let Some(deadline) = self.stopping {
            wake = wake.min(deadline);
            if self.tmux.jobs.is_empty() || now.mono >= deadline {
                self.out.push(Output::Exit);
            }
        }
        self.out.push(Output::WakeAt(wake));
    }

    /// The state file was written, or could not be: a daemon that cannot
    /// write keeps supervising from memory, says so once, and writes again
    /// at every change until it succeeds.
    fn persisted(&mut self, result: Result<(), String>, now: Now) {
        self.persist.retry_at = result.is_err().then_some(now.mono + PERSIST_RETRY);
        match (result, self.persist.failing.take()) {
            (Ok(()), None) => {}
            (Ok(()), Some((_, since))) => {
                let msg = format!(
                    "the state file is written again (it could not be since {})",
                    since.format("%H:%M:%S")
                );
                self.log(msg.clone());
                self.emit(Event::new(now.wall, EventKind::Warning, "", msg));
                // Events since then changed the world: write that too.
                self.dirty = true;
            }
            (Err(e), None) => {
                let msg = format!("cannot write the state file ({e}); supervising from memory");
                self.log(msg.clone());
                self.emit(Event::new(now.wall, EventKind::Warning, "", msg));
                self.persist.failing = Some((e, now.wall));
            }
            (Err(e), Some((_, since))) => self.persist.failing = Some((e, since)),
        }
    }

    /// The state was written before the machine last started: its tmux
    /// server and every program died with it, whatever the shims managed
    /// to record on the way down (a shutdown's SIGTERM is nobody's crash).
    fn machine_restarted(&mut self, now: Now, rng: &mut impl Rng) {
        let uids = self.live_uids();
        let msg = format!(
            "the machine restarted since the state was saved: {} sessions lost with the tmux server, no role charged",
            uids.len()
        );
        self.log(msg.clone());
        self.emit(Event::new(now.wall, EventKind::Warning, "", msg));
        for uid in uids {
            let lost = Exit::detail(ExitDetail::TmuxLost, now.wall);
            self.record_death(uid, lost, now, rng);
        }
    }

    /// A live session ended without being asked to: the policy decides,
    /// the marker gets the log's last lines unless its screen is read.
    fn record_death(&mut self, uid: u64, exit: Exit, now: Now, rng: &mut impl Rng) {
        let Some(s) = self.world.sessions.get(&uid).filter(|s| s.state.is_live()) else {
            return;
        };
        let s = s.clone();
        self.keep_pane(&s, &exit, now);
        self.unsettled.remove(&uid);
        let evs = self.world.on_exit(uid, exit, now.wall, rng.jitter());
        // A role frozen stays frozen whatever happens to the machine, as a
        // user's change does: it waits for a user.
        self.urgent |= evs.iter().any(|e| e.kind == EventKind::Frozen);
        self.emit_all(evs);
        self.remove_exit_record(uid);
        self.dirty = true;
    }

    /// The exit record of run `uid`, which ended, is no longer needed,
    /// unless its shim stays in the kept pane to run the slot's next
    /// program: that run's record takes it over (the pruning spares it
    /// meanwhile).
    pub(super) fn remove_exit_record(&mut self, uid: u64) {
        let reused = self.world.kept.values().any(|k| k.uid == uid && k.rerun);
        if !reused {
            self.out.push(Output::RemoveExitRecord(uid));
        }
    }

    /// The pane of an ended program stays for its slot, showing its last
    /// screen until the slot runs there again (a pane the slot kept before
    /// goes).
    fn keep_pane(&mut self, s: &Session, exit: &Exit, now: Now) {
        let rerun = self.ws.rerunnable.remove(&s.uid);
        if !workspace::keeps_pane(s, exit) {
            // A pane that is not kept goes: one whose shim was killed stays
            // in its window, dead (marvel's panes remain on exit), and the
            // slot's next window would have a name that two windows bear.
            if let Some(pane) = s.pane.clone()
                && exit.detail != ExitDetail::TmuxLost
            {
                self.kill_pane(pane, s.key.to_string(), now);
            }
            return;
        }
        let kept = KeptPane {
            pane: s.pane.clone().expect("checked by keeps_pane"),
            window: s.window.clone().expect("checked by keeps_pane"),
            tmux_session: s.tmux_session.clone(),
            uid: s.uid,
            shim_pid: s.pane_pid,
            rerun,
            exit: Some(exit.clone()),
            started_at: s.started_at,
        };
        let pane = kept.pane.clone();
        if let Some(old) = self.world.kept.insert(s.key.clone(), kept)
            && old.pane != pane
        {
            self.kill_pane(old.pane, s.key.to_string(), now);
        }
    }

    /// A death whose screen will not be read: the marker gets the last
    /// lines of the output log instead.
    fn record_death_from_log(&mut self, uid: u64, exit: Exit, now: Now, rng: &mut impl Rng) {
        if self.is_live(uid) {
            self.record_death(uid, exit, now, rng);
            self.out.push(Output::ReadLogTail { uid });
        }
    }

    /// A shim reports its program's end. A hang-up waits for a listing;
    /// any other end is recorded at once.
    fn exit_reported(&mut self, uid: u64, exit: Exit, hangup: bool, now: Now, rng: &mut impl Rng) {
        if hangup {
            let from_job = self.tmux.next_job_id();
            let settling = false;
            self.unsettled.insert(
                uid,
                Unsettled {
                    exit,
                    from_job,
                    settling,
                },
            );
            self.list_soon(now);
        } else {
            self.record_death_from_log(uid, exit, now, rng);
        }
    }

    /// What the shims recorded for sessions whose panes a listing missed,
    /// or whose death that listing settles: a record tells the end at once;
    /// without one, a settled death is as first known, and a fresh one
    /// waits for the next listing (the shim may still be on its way).
    fn exit_records(
        &mut self,
        records: Vec<(u64, Option<ShimReport>)>,
        now: Now,
        rng: &mut impl Rng,
    ) {
        for (uid, record) in records {
            if !self.is_live(uid) {
                continue;
            }
            let recorded = record.and_then(recorded_exit);
            match self.unsettled.get(&uid) {
                Some(u) if u.settling => {
                    let exit = recorded.unwrap_or_else(|| u.exit.clone());
                    self.record_death_from_log(uid, exit, now, rng);
                }
                // Known after the listing was asked for: the next one settles it.
                Some(_) => {}
                None => match recorded {
                    Some(exit) => self.record_death_from_log(uid, exit, now, rng),
                    None => {
                        let unsettled = Unsettled {
                            exit: Exit::detail(ExitDetail::PaneVanished, now.wall),
                            from_job: self.tmux.next_job_id(),
                            settling: false,
                        };
                        self.unsettled.insert(uid, unsettled);
                    }
                },
            }
        }
    }

    /// A status line on whether the state is written, for `status`.
    fn persist_view(&self) -> Option<(String, Time)> {
        self.persist.failing.clone()
    }
}

impl Supervisor {
    /// Notes that the shim of a program that ended can run the slot's
    /// next one in its pane, should the pane be kept.
    fn may_rerun(&mut self, report: &ShimReport) {
        if let ShimReport::Exited {
            uid,
            rerun: true,
            hangup: false,
            ..
        } = report
        {
            self.ws.rerunnable.insert(*uid);
        }
    }
}

/// The end a shim's report tells (with whether its terminal hung up), if
/// it tells one.
pub fn reported_exit(report: &ShimReport) -> Option<(Exit, bool)> {
    let ShimReport::Exited {
        code,
        signal,
        at,
        hangup,
        failure,
        ..
    } = report
    else {
        return None;
    };
    let detail = match (failure, hangup) {
        (Some(why), _) => ExitDetail::StartFailed(why.clone()),
        (None, true) => ExitDetail::PaneKilled,
        (None, false) => ExitDetail::Program,
    };
    let exit = Exit {
        code: *code,
        signal: *signal,
        at: *at,
        detail,
    };
    Some((exit, *hangup))
}

/// The end an exit record tells, if it tells one.
fn recorded_exit(report: ShimReport) -> Option<Exit> {
    reported_exit(&report).map(|(exit, _)| exit)
}

fn shifted(t: Time, by: chrono::Duration) -> Time {
    t.checked_add_signed(by).unwrap_or(t)
}
