//! The daemon's main loop: all of its I/O around the supervisor. It
//! receives one message at a time (a request from the socket thread, an
//! outcome from the tmux worker, or a timer), hands it to
//! [`Supervisor::step`] with the current instant, and carries out the
//! outputs in order. Nothing here decides anything.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::error::{Error, Result};
use crate::lock;
use crate::paths::{Paths, Target};
use crate::proto::{LogChunk, Response};
use crate::statedir;
use crate::substrate::{Notice, Substrate};

use super::Config;
use super::events::{EventFile, FollowTx, Followers};
use super::git::{self, GitWorker};
use super::guard;
use super::hooks;
use super::server::{self, Incoming};
use super::store::{self, Store};
use super::supervisor::{
    Durability, Input, LogRead, MARKER_LINES, Now, Output, Replay, RequestId, Setup, Signal,
    Supervisor,
};
use super::worker::{self, Worker};

/// At most this many waiting messages are taken in one go.
const BATCH: usize = 256;

/// How long a write may wait for more changes to take along (more
/// messages already queued, a restart due after a short backoff): one
/// write for them all, and for a crash and its restart.
const GROUP_COMMIT: Duration = Duration::from_millis(2);

/// What supervising decided ([`Durability::Soon`]) is on disk this long
/// after it was written at the latest (the interval at which ext4 commits
/// its own journal by default): one fsync for every death, restart and
/// placement of those seconds, and one page of the journal made dirty
/// again, not one per death.
const SYNC_WITHIN: Duration = Duration::from_secs(5);

/// A fold of the journal that is due waits until nothing has been written
/// for this long (see [`Store::fold_due`]).
const FOLD_QUIET: Duration = Duration::from_secs(1);

/// Everything the loop receives.
pub enum Msg {
    /// A client's or a shim's request.
    Request(Incoming),
    /// A tmux call finished.
    Done(worker::Done),
    /// A git call finished.
    Git(git::GitDone),
    /// A notification command finished.
    Hooked(hooks::Hooked),
    /// The watch on the tmux server said something.
    Watch(Notice),
    /// A sync of the state journal finished (see [`SYNC_WITHIN`]).
    Synced(std::io::Result<store::SyncDone>),
}

impl From<hooks::Hooked> for Msg {
    fn from(h: hooks::Hooked) -> Msg {
        Msg::Hooked(h)
    }
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

impl From<git::GitDone> for Msg {
    fn from(done: git::GitDone) -> Msg {
        Msg::Git(done)
    }
}

/// The daemon's randomness: jitter for backoffs and retries.
impl crate::domain::Rng for fastrand::Rng {
    fn jitter(&mut self) -> f64 {
        self.f64() * 2.0 - 1.0
    }
}

/// `marvel daemon run`: serves until asked to stop. One daemon per state
/// directory, enforced by an exclusive lock held for the daemon's life.
pub fn run_foreground(t: &Target) -> Result<()> {
    let paths = &t.paths;
    let lock = match lock::acquire(paths.ensure()?)? {
        lock::Acquired::Owner(l) => l,
        lock::Acquired::Held { pid } => {
            return Err(Error::refused(
                format!(
                    "a daemon already runs for {} (pid {})",
                    paths.root.display(),
                    pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
                ),
                Some("use `marvel daemon stop` first".into()),
            ));
        }
    };
    // We hold the lock, so a socket left here belongs to a dead daemon:
    // the new one replaces it.
    let socket = paths.socket();
    let listener = lock
        .dir()
        .bind_socket(crate::paths::SOCKET)
        .map_err(|e| statedir::io_error(&socket, e))?;
    let here = statedir::Dir::open_root(&paths.root)?;
    // Panes without a `cwd` start in the home directory, not wherever the
    // first command that started the daemon happened to run.
    if let Some(home) = std::env::var_os("HOME") {
        let _ = std::env::set_current_dir(home);
    }

    let cfg = Config::from_env();
    let sub = crate::substrate::tmux::Tmux::new(t.tmux_socket.clone(), cfg.tmux_timeout);
    let setup = Setup {
        pid: std::process::id(),
        started_at: Utc::now(),
        paths: paths.clone(),
        tmux_socket: t.tmux_socket.clone(),
        marvel_bin: std::env::current_exe().unwrap_or_else(|_| "marvel".into()),
        utc_offset: *chrono::Local::now().offset(),
        cfg,
    };
    let mut main = MainLoop::new(setup, sub)?;
    let tx = main.sender();
    guard::stop_on_sigterm(tx.clone())
        .map_err(|e| Error::other(format!("cannot handle SIGTERM: {e}")))?;
    guard::hold_lock(lock)
        .map_err(|e| Error::other(format!("cannot start the lock thread: {e}")))?;
    std::thread::Builder::new()
        .name("marvel-accept".into())
        .spawn(move || server::serve(listener, socket, tx))
        .map_err(|e| Error::other(format!("cannot start the socket thread: {e}")))?;
    main.restore();
    main.run();
    let _ = here.remove_own(crate::paths::SOCKET, statedir::Kind::Socket);
    Ok(())
}

/// At most this many shims wait for their next run in the answer to their
/// program's end at once (see `Output::AwaitRun`); any more get theirs
/// the other way (a file and a signal), so they never crowd the socket.
const AWAIT_MAX: usize = 16;

/// A shim's answer that waits for the slot's next run (`Output::AwaitRun`).
struct Parked {
    id: RequestId,
    /// The run that ended.
    of: u64,
    /// When it is answered without the run.
    by: Instant,
}

/// An answer held until the state is written (see `durable_answers`).
struct Held {
    id: RequestId,
    /// The run that ended, when its shim takes its next run in the answer.
    ended: Option<u64>,
    response: Response,
    /// Until when, once written, it waits for that next run
    /// (`Output::AwaitRun`).
    awaits: Option<Instant>,
}

pub struct MainLoop {
    sup: Supervisor,
    worker: Worker,
    /// The substrate, for the watch (which runs on a thread of its own);
    /// calls that run tmux go through the worker.
    watcher: Arc<dyn Substrate + Send + Sync>,
    git: GitWorker,
    hooks: hooks::Runner<Msg>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    paths: Paths,
    store: Store,
    events: EventFile,
    followers: Followers,
    /// Requests not answered yet, by the id the supervisor knows them by.
    waiting: HashMap<RequestId, Incoming>,
    /// Shims' words of a death: answered only once the state that holds
    /// the death is written (the shim keeps no copy of its own then); with
    /// the uid of the run that ended when the shim takes its next run in
    /// the answer.
    durable_answers: HashMap<RequestId, Option<u64>>,
    /// Those answers, until the state is written.
    held: Vec<Held>,
    /// Those that wait for the next run, written, until it or their time
    /// comes.
    parked: Vec<Parked>,
    /// More messages wait to be stepped right after this one.
    more: bool,
    /// The latest a write put off for more changes is carried out.
    save_by: Option<Instant>,
    /// Follow channels of answered `events --follow` requests, until the
    /// supervisor says to follow.
    to_follow: HashMap<RequestId, FollowTx>,
    /// The last answers sent, to let them reach their clients at exit.
    sent: VecDeque<Receiver<()>>,
    last_request: RequestId,
    /// The monotonic clock's zero.
    base: Instant,
    wake: Instant,
    rng: fastrand::Rng,
    /// The supervisor asked for the state to be written, and how soon it
    /// must reach the disk.
    unsaved: bool,
    durability: Durability,
    /// When what was written must be on disk, if some of it is not yet.
    sync_by: Option<Instant>,
    /// When the journal is folded, if a fold is due: once nothing has been
    /// written for [`FOLD_QUIET`].
    fold_by: Option<Instant>,
    /// Where syncs go, to run off the loop: the loop never waits for the
    /// disk but for what must be on it at once.
    syncer: Sender<store::SyncJob>,
    /// A sync is under way.
    syncing: bool,
    /// How the last write went, when that is news to the supervisor.
    persist_news: Option<Input>,
    /// What waits for the state to be written: an exit record goes only
    /// once the state holds the death it tells of.
    after_save: Vec<Output>,
    /// Whether the last write of the state file worked.
    persisted: bool,
    /// Whether the event log was written last time.
    event_log_ok: bool,
    trim: super::memory::Trim,
    exit: bool,
}

impl MainLoop {
    pub fn new<S: Substrate + Send + Sync + 'static>(
        setup: Setup,
        sub: impl Into<Arc<S>>,
    ) -> Result<MainLoop> {
        let (tx, rx) = mpsc::channel();
        let sub: Arc<S> = sub.into();
        let watcher: Arc<dyn Substrate + Send + Sync> = sub.clone();
        let worker = Worker::start(sub, tx.clone())
            .map_err(|e| Error::other(format!("cannot start the tmux thread: {e}")))?;
        let git = git::Git::new(super::env_ms("MARVEL_GIT_TIMEOUT_MS", 120_000));
        let git = GitWorker::start(git, tx.clone())
            .map_err(|e| Error::other(format!("cannot start the git thread: {e}")))?;
        let hooks = hooks::Runner::start(tx.clone())
            .map_err(|e| Error::other(format!("cannot start the notification threads: {e}")))?;
        let paths = setup.paths.clone();
        let (events, earlier) = EventFile::open(paths.events());
        let (syncer, jobs) = mpsc::channel::<store::SyncJob>();
        let synced = tx.clone();
        std::thread::Builder::new()
            .name("marvel-sync".into())
            .spawn(move || {
                for job in jobs {
                    if synced.send(Msg::Synced(job.run())).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::other(format!("cannot start the sync thread: {e}")))?;
        let base = Instant::now();
        Ok(MainLoop {
            sup: Supervisor::new(setup, earlier),
            worker,
            watcher,
            git,
            hooks,
            tx,
            rx,
            store: Store::new(paths.state()),
            paths,
            events,
            followers: Followers::default(),
            waiting: HashMap::new(),
            durable_answers: HashMap::new(),
            held: Vec::new(),
            parked: Vec::new(),
            more: false,
            save_by: None,
            to_follow: HashMap::new(),
            sent: VecDeque::new(),
            last_request: 0,
            base,
            wake: base,
            rng: fastrand::Rng::new(),
            unsaved: false,
            durability: Durability::Later,
            sync_by: None,
            fold_by: None,
            syncer,
            syncing: false,
            persist_news: None,
            after_save: Vec::new(),
            persisted: true,
            event_log_ok: true,
            trim: Default::default(),
            exit: false,
        })
    }

    /// Where the socket thread sends requests.
    pub fn sender(&self) -> Sender<Msg> {
        self.tx.clone()
    }

    fn now(&self) -> Now {
        Now {
            wall: Utc::now(),
            mono: self.base.elapsed(),
        }
    }

    /// Loads the state and what the shims recorded meanwhile, and hands
    /// both to the supervisor. Each exit record is renamed while it is
    /// applied: one found under that name at the next start stopped this
    /// daemon, and is set aside instead of stopping every daemon after it.
    pub fn restore(&mut self) {
        let loaded = self.store.load();
        let live: Vec<u64> = match &loaded {
            store::Loaded::Restored { world, .. } => world
                .sessions
                .values()
                .filter(|s| s.state.is_live())
                .map(|s| s.uid)
                .collect(),
            _ => Vec::new(),
        };
        let mut records = Vec::new();
        let mut replaying = Vec::new();
        for uid in live {
            let marker = store::replaying(&self.paths, uid);
            if marker.exists() {
                let failed = self.paths.exits_dir().join(format!("{uid}.json.failed"));
                let _ = std::fs::rename(&marker, &failed);
                records.push((uid, Replay::Failed(failed)));
                continue;
            }
            if let Some(report) = store::read_exit_record(&self.paths, uid) {
                let _ = std::fs::rename(self.paths.exit_record(uid), &marker);
                replaying.push(uid);
                records.push((uid, Replay::Report(report)));
            }
        }
        self.feed(Input::Restore { loaded, records });
        // Applied: records still needed (a start, a hang-up a listing will
        // settle) go back under their name unless the shim wrote anew.
        for uid in replaying {
            let marker = store::replaying(&self.paths, uid);
            if marker.exists() {
                if self.paths.exit_record(uid).exists() {
                    let _ = std::fs::remove_file(&marker);
                } else {
                    let _ = std::fs::rename(&marker, self.paths.exit_record(uid));
                }
            }
        }
    }

    /// Serves until the supervisor says it is done.
    pub fn run(&mut self) {
        // What arrived while the last input was stepped: taken in one go,
        // the supervisor plans once for a burst of reports (`hold_plan`).
        let mut waiting: VecDeque<Msg> = VecDeque::new();
        while !self.exit {
            let msg = match waiting.pop_front() {
                Some(msg) => Ok(msg),
                None => {
                    // About to wait: what a burst left free goes back.
                    self.trim.idle(Instant::now());
                    let sync_by = self.sync_by.filter(|_| !self.syncing);
                    let until = [
                        sync_by,
                        self.fold_by,
                        self.parked.iter().map(|p| p.by).min(),
                    ]
                    .into_iter()
                    .flatten()
                    .fold(self.wake, Instant::min);
                    let timeout = until.saturating_duration_since(Instant::now());
                    self.rx.recv_timeout(timeout)
                }
            };
            self.sync_if_due();
            self.fold_if_quiet();
            self.unpark(false);
            if matches!(msg, Err(RecvTimeoutError::Timeout)) && Instant::now() < self.wake {
                // Woken for the sync or a parked answer alone.
                continue;
            }
            let input = match msg {
                Ok(Msg::Request(inc)) => self.admit(inc),
                Ok(Msg::Done(done)) => Input::Done(done),
                Ok(Msg::Git(done)) => Input::Git(done),
                Ok(Msg::Hooked(h)) => Input::Hooked {
                    hook: h.hook,
                    failure: h.failure,
                },
                Ok(Msg::Watch(notice)) => Input::Watch(notice),
                Ok(Msg::Synced(done)) => {
                    self.synced(done);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => Input::Tick,
                // Cannot happen while the loop holds a sender itself.
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if waiting.is_empty() {
                waiting.extend(self.rx.try_iter().take(BATCH));
            }
            let ticked = matches!(input, Input::Tick);
            self.sup.hold_plan(!waiting.is_empty());
            self.more = !waiting.is_empty();
            self.feed(input);
            self.more = false;
            self.sup.hold_plan(false);
            // A busy loop still keeps its timers.
            if !ticked && !self.exit && Instant::now() >= self.wake {
                self.feed(Input::Tick);
            }
        }
        self.unpark(true);
        // The next daemon starts from one snapshot; an older marvel, which
        // reads no journal, finds everything in it too.
        if self.persisted
            && let Err(e) = self.store.fold(self.sup.world_mut())
        {
            log(&format!("cannot write the state file at exit: {e}"));
        }
        if let Err(e) = self.store.sync() {
            log(&format!(
                "cannot get the state journal to the disk at exit: {e}"
            ));
        }
        // The last answers (the one to `stop` among them) reach their
        // clients before the process goes.
        let deadline = Instant::now() + Duration::from_secs(2);
        for written in self.sent.drain(..) {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = written.recv_timeout(left);
        }
        log("stopped; panes keep running");
    }

    /// Keeps a request's connection and gives it an id.
    fn admit(&mut self, mut inc: Incoming) -> Input {
        self.last_request += 1;
        let id = self.last_request;
        let request = std::mem::replace(&mut inc.request, crate::proto::Request::Ping);
        if let crate::proto::Request::Shim(crate::proto::ShimReport::Exited {
            uid,
            run_in_answer,
            ..
        }) = request
        {
            self.durable_answers
                .insert(id, run_in_answer.then_some(uid));
        }
        self.waiting.insert(id, inc);
        Input::Request { id, request }
    }

    /// Steps the supervisor with `input` and with every input its outputs
    /// lead to, carrying out the outputs in order.
    fn feed(&mut self, input: Input) {
        let mut inputs = VecDeque::from([input]);
        loop {
            while let Some(input) = inputs.pop_front() {
                let now = self.now();
                for output in self.sup.step(input, now, &mut self.rng) {
                    if let Some(next) = self.carry_out(output) {
                        inputs.push_back(next);
                    }
                    inputs.extend(self.persist_news.take());
                }
            }
            if self.put_off_save() {
                break;
            }
            self.save();
            match self.persist_news.take() {
                Some(news) => inputs.push_back(news),
                None => break,
            }
        }
        if self.unsaved {
            return;
        }
        // A death is answered once it is written; while the state cannot be
        // written, not at all: the shim then records the death itself. A
        // shim whose next run is due soon waits for it in the answer.
        for held in std::mem::take(&mut self.held) {
            if !self.persisted {
                self.waiting.remove(&held.id);
            } else if let (Some(by), Response::Linger(_), Some(of)) =
                (held.awaits, &held.response, held.ended)
            {
                self.parked.push(Parked {
                    id: held.id,
                    of,
                    by,
                });
            } else {
                self.reply(held.id, held.response);
            }
        }
        if self.persisted {
            for output in std::mem::take(&mut self.after_save) {
                match output {
                    Output::RemoveExitRecord(uid) => store::remove_exit_record(&self.paths, uid),
                    Output::Prune { live, kept, shown } => {
                        store::prune(&self.paths, &live, &kept, &shown)
                    }
                    _ => {}
                }
            }
        }
        // A follow channel the supervisor did not take is closed.
        self.to_follow.clear();
    }

    /// Whether the write due at the end of a step waits (see
    /// [`GROUP_COMMIT`]): while more messages are queued, or a timer is
    /// due before the write's deadline, and not past that deadline. The
    /// answers and removals that wait for the write wait with it.
    fn put_off_save(&mut self) -> bool {
        if !self.unsaved || self.exit {
            return false;
        }
        let now = Instant::now();
        let by = *self.save_by.get_or_insert(now + GROUP_COMMIT);
        if now < by && (self.more || self.wake <= by) {
            self.wake = self.wake.min(by);
            return true;
        }
        false
    }

    /// Writes the state if the supervisor asked to; how it went is news to
    /// the supervisor (`persist_news`) only when it changed (or keeps
    /// failing).
    fn save(&mut self) {
        self.save_by = None;
        if !std::mem::take(&mut self.unsaved) {
            return;
        }
        let durability = std::mem::take(&mut self.durability);
        let result = self
            .store
            .save(self.sup.world_mut(), durability == Durability::Now)
            .map(|_| ())
            .map_err(|e| e.to_string());
        if !self.store.unsynced() {
            self.sync_by = None;
        } else if durability == Durability::Soon {
            self.sync_by.get_or_insert(Instant::now() + SYNC_WITHIN);
        }
        // Put off by every write.
        self.fold_by = self.store.fold_due().then(|| Instant::now() + FOLD_QUIET);
        self.news(result);
    }

    /// Folds the journal into a new snapshot once one is due and nothing
    /// has been written for [`FOLD_QUIET`].
    fn fold_if_quiet(&mut self) {
        if self.unsaved || self.fold_by.is_none_or(|t| Instant::now() < t) {
            return;
        }
        self.fold_by = None;
        if !self.store.fold_due() {
            return;
        }
        let result = self
            .store
            .fold(self.sup.world_mut())
            .map(|_| ())
            .map_err(|e| e.to_string());
        if !self.store.unsynced() {
            self.sync_by = None;
        }
        self.news(result);
        if let Some(news) = self.persist_news.take() {
            self.feed(news);
        }
    }

    /// How a write went is news to the supervisor only when it changed (or
    /// keeps failing).
    fn news(&mut self, result: std::result::Result<(), String>) {
        if result.is_ok() != self.persisted || result.is_err() {
            self.persisted = result.is_ok();
            self.persist_news = Some(Input::Persisted(result));
        }
    }

    /// Answers the shims whose next run did not come in time (`all`: every
    /// one, at exit) with what their panes show now.
    fn unpark(&mut self, all: bool) {
        let now = Instant::now();
        let (due, later) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| all || p.by <= now);
        self.parked = later;
        for p in due {
            self.feed(Input::RunNotDue { id: p.id, of: p.of });
        }
    }

    /// Has what was written got to the disk, off the loop, once it is due
    /// there (one sync at a time).
    fn sync_if_due(&mut self) {
        if self.syncing || self.sync_by.is_none_or(|t| Instant::now() < t) {
            return;
        }
        self.sync_by = None;
        if let Some(job) = self.store.sync_job() {
            self.syncing = self.syncer.send(job).is_ok();
        }
    }

    /// A sync finished. A failure is the supervisor's news like a failed
    /// write: the next write is a whole snapshot.
    fn synced(&mut self, done: std::io::Result<store::SyncDone>) {
        self.syncing = false;
        if let Err(e) = self.store.synced(done) {
            self.news(Err(e.to_string()));
            if let Some(news) = self.persist_news.take() {
                self.feed(news);
            }
        }
    }

    /// Sends request `id` its answer.
    fn reply(&mut self, id: RequestId, response: Response) {
        if let Some(inc) = self.waiting.remove(&id) {
            let _ = inc.reply.send(response);
            if let Some(tx) = inc.follow {
                self.to_follow.insert(id, tx);
            }
            self.sent.push_back(inc.written);
            if self.sent.len() > 16 {
                self.sent.pop_front();
            }
        }
    }

    /// Carries out one output; some lead to another input.
    fn carry_out(&mut self, output: Output) -> Option<Input> {
        match output {
            Output::Submit { id, job } => {
                // A pane carries uids and decisions the state file must
                // hold first.
                if let worker::Job::Spawn(_) = job {
                    self.save();
                }
                self.worker.submit(id, job);
            }
            Output::Git { id, job } => self.git.submit(id, job),
            Output::Reply { id, response } => match self.durable_answers.remove(&id) {
                Some(ended) => self.held.push(Held {
                    id,
                    ended,
                    response,
                    awaits: None,
                }),
                None => self.reply(id, response),
            },
            Output::Follow { id, filter } => {
                if let Some(tx) = self.to_follow.remove(&id) {
                    self.followers.add(filter, tx);
                }
            }
            Output::Event(view) => {
                self.events.append(&view);
                self.followers.offer(&view);
                let failure = self.events.write_failure();
                if failure.is_none() != self.event_log_ok {
                    self.event_log_ok = failure.is_none();
                    return Some(Input::EventLog(failure.map(|f| (f.error.clone(), f.since))));
                }
            }
            // Written once the inputs it came with are all stepped (or
            // before a spawn or a rerun): one write for many changes.
            Output::Persist(durability) => {
                self.unsaved = true;
                self.durability = self.durability.max(durability);
            }
            Output::ReadExitRecords(uids) => {
                let records = uids
                    .into_iter()
                    .map(|uid| (uid, store::read_exit_record(&self.paths, uid)))
                    .collect();
                return Some(Input::ExitRecords(records));
            }
            Output::ReadLogTail { uid } => {
                return Some(Input::LogTail {
                    uid,
                    lines: self.log_tail(uid, MARKER_LINES),
                });
            }
            Output::ReplyLogs { id, reads } => {
                let chunks = reads.into_iter().map(|r| self.log_chunk(r)).collect();
                return self.carry_out(Output::Reply {
                    id,
                    response: Response::Logs(chunks),
                });
            }
            // Carried out once the state is written (see `feed`).
            out @ (Output::RemoveExitRecord(_) | Output::Prune { .. }) => self.after_save.push(out),
            Output::Log(line) => log(&line),
            Output::Signal {
                pid,
                parent,
                signal,
            } => {
                let signal = match signal {
                    Signal::Term => rustix::process::Signal::TERM,
                    Signal::Kill => rustix::process::Signal::KILL,
                };
                let _ = signal_child(pid, parent, signal);
            }
            Output::ShowLine {
                uid,
                pid,
                parent,
                line,
            } => {
                // The shim reads its line when told the window changed.
                let path = self.paths.kept_line(uid);
                if crate::paths::replace(&path, line.as_bytes()).is_ok() {
                    let _ = signal_child(pid, parent, rustix::process::Signal::WINCH);
                }
            }
            Output::Rerun {
                of,
                pid,
                parent,
                next,
            } => {
                // The run's placement, and the uid it carries, are on disk
                // before the shim can take it.
                self.save();
                let uid = next.uid;
                // A shim still waiting for the answer to its program's end
                // takes the next run in it.
                if let Some(held) = self.held.iter_mut().find(|h| h.ended == Some(of)) {
                    held.response = Response::Run(next);
                    return Some(Input::Reran { uid, asked: true });
                }
                if let Some(i) = self.parked.iter().position(|p| p.of == of) {
                    let parked = self.parked.swap_remove(i);
                    self.reply(parked.id, Response::Run(next));
                    return Some(Input::Reran { uid, asked: true });
                }
                // One that lingers takes it when told the window changed.
                let path = self.paths.next_run(of);
                let written = serde_json::to_vec(&next)
                    .is_ok_and(|json| crate::paths::replace(&path, &json).is_ok());
                let asked = written && signal_child(pid, parent, rustix::process::Signal::WINCH);
                if !asked {
                    let _ = std::fs::remove_file(&path);
                }
                return Some(Input::Reran { uid, asked });
            }
            // Off the loop: the runner never makes it wait.
            Output::Notify(hook) => self.hooks.submit(hook),
            Output::Watch { server_pid, kick } => {
                let tx = self.tx.clone();
                let notify = Box::new(move |n: Notice| {
                    let _ = tx.send(Msg::Watch(n));
                });
                let owner = self.paths.root.display().to_string();
                let started = self.watcher.watch(&owner, server_pid, kick, notify);
                if let Err(e) = started {
                    return Some(Input::Watch(Notice::Ended(e)));
                }
            }
            Output::AwaitRun { of, by } => {
                let awaiting = self.held.iter().filter(|h| h.awaits.is_some()).count();
                if awaiting + self.parked.len() < AWAIT_MAX
                    && let Some(held) = self.held.iter_mut().find(|h| h.ended == Some(of))
                {
                    held.awaits = Some(self.base + by);
                }
            }
            Output::PanesChanged(pids) => self.watcher.panes_changed(&pids),
            Output::WakeAt(mono) => self.wake = self.base + mono,
            Output::Exit => self.exit = true,
        }
        None
    }

    /// One run's output for `logs`: its last lines with where the log ends
    /// now, or what came after the reader's offset. Like [`Self::log_tail`],
    /// a reader that fails on hostile output costs the lines, not the daemon.
    fn log_chunk(&self, r: LogRead) -> LogChunk {
        let paths = &self.paths;
        let read = std::panic::catch_unwind(|| match r.from {
            None => {
                let end = store::log_end(paths, r.uid);
                (store::log_tail(paths, r.uid, r.lines), end)
            }
            Some(offset) => store::log_since(paths, r.uid, offset, r.ended),
        });
        let (mut lines, offset) = read.unwrap_or_else(|_| {
            log(&format!("cannot read the output log of uid {}", r.uid));
            (Vec::new(), r.from.unwrap_or(0))
        });
        if lines.is_empty() && r.from.is_none() {
            let skip = r.fallback.len().saturating_sub(r.lines);
            lines = r.fallback[skip..].to_vec();
        }
        LogChunk {
            key: r.key,
            uid: r.uid,
            lines,
            offset,
            ended: r.ended,
        }
    }

    /// A session log's last lines. The log is the program's output, which
    /// nothing vouches for: a reader that fails on it costs the marker its
    /// lines, never the daemon its life.
    fn log_tail(&self, uid: u64, lines: usize) -> Vec<String> {
        let paths = &self.paths;
        std::panic::catch_unwind(|| store::log_tail(paths, uid, lines)).unwrap_or_else(|_| {
            log(&format!("cannot read the output log of uid {uid}"));
            Vec::new()
        })
    }
}

/// The parent of process `pid`, from `/proc`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (in parentheses) may hold spaces: count from after it.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// Sends `signal` to `pid` if it is still a child of `parent`: a pid that
/// went to another process since is left alone.
fn signal_child(pid: u32, parent: u32, signal: rustix::process::Signal) -> bool {
    if parent_of(pid) != Some(parent) {
        return false;
    }
    rustix::process::Pid::from_raw(pid as i32)
        .is_some_and(|pid| rustix::process::kill_process(pid, signal).is_ok())
}

/// One line of the daemon's log (its stderr). A log that cannot be written
/// (a full disk) costs the line, never the daemon.
pub fn log(msg: &str) {
    let line = format!(
        "{} marvel-daemon[{}]: {msg}\n",
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        std::process::id()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::world::sim::{role, steady, team};
    use crate::proto::{Request, ShimReport};
    use crate::substrate::fake::FakeSubstrate;

    fn main_loop(root: &std::path::Path) -> MainLoop {
        let paths = Paths {
            root: root.to_path_buf(),
        };
        paths.ensure().unwrap();
        let setup = Setup {
            pid: std::process::id(),
            started_at: Utc::now(),
            paths,
            tmux_socket: None,
            marvel_bin: "/bin/marvel".into(),
            utc_offset: chrono::FixedOffset::east_opt(0).unwrap(),
            cfg: super::super::supervisor::tests_cfg(),
        };
        MainLoop::new(setup, FakeSubstrate::new()).unwrap()
    }

    /// Hands a request in as the socket thread does; its answer comes on
    /// the receiver.
    fn admit(m: &mut MainLoop, request: Request) -> (Input, Receiver<Response>) {
        let (reply, answer) = mpsc::channel();
        let (_done, written) = mpsc::channel();
        let input = m.admit(Incoming {
            request,
            reply,
            follow: None,
            written,
        });
        (input, answer)
    }

    fn send(m: &mut MainLoop, request: Request) {
        let (input, _answer) = admit(m, request);
        m.feed(input);
    }

    /// Hands a request in and returns its answer, if it was answered by
    /// the time the state was written.
    fn ask(m: &mut MainLoop, request: Request) -> Option<Response> {
        let (input, answer) = admit(m, request);
        m.feed(input);
        until(m, "the state written or tried", |m| !m.unsaved);
        answer.try_recv().ok()
    }

    /// A main loop in `root` running a team of role `w`, once every slot
    /// has its pane; the uids of its sessions.
    fn with_panes(
        root: &std::path::Path,
        w: crate::domain::spec::RoleSpec,
    ) -> (MainLoop, Vec<u64>) {
        let mut m = main_loop(root);
        m.restore();
        let n = w.replicas.get() as usize;
        send(
            &mut m,
            Request::Apply {
                team: team(vec![w]),
                source: None,
                force: false,
            },
        );
        until(&mut m, "the panes", |m| {
            m.sup
                .world()
                .sessions
                .values()
                .filter(|s| s.pane.is_some())
                .count()
                == n
        });
        let uids = m.sup.world().sessions.keys().copied().collect();
        (m, uids)
    }

    fn started(uid: u64) -> ShimReport {
        ShimReport::Started {
            uid,
            pid: 7,
            at: Utc::now(),
        }
    }

    /// A shim's word that spawn `uid` exited 3; `rerun`: from a shim that
    /// can run the next program, and take it in the answer.
    fn ended(uid: u64, rerun: bool) -> ShimReport {
        ShimReport::Exited {
            uid,
            code: Some(3),
            signal: None,
            at: Utc::now(),
            hangup: false,
            failure: None,
            rerun,
            run_in_answer: rerun,
        }
    }

    /// The world a daemon started now would read.
    fn on_disk(m: &MainLoop) -> crate::domain::state::World {
        match Store::new(m.paths.state()).load() {
            store::Loaded::Restored { world, .. } => *world,
            other => panic!("{other:?}"),
        }
    }

    /// Lines in the state journal: one per write since the snapshot.
    fn journal_lines(root: &std::path::Path) -> usize {
        std::fs::read(root.join(crate::paths::JOURNAL))
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    }

    /// Carries out what comes in (tmux outcomes, timers) until `done`, or
    /// panics at the deadline.
    fn until(m: &mut MainLoop, what: &str, mut done: impl FnMut(&MainLoop) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(m) {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            let timeout = m.wake.saturating_duration_since(Instant::now());
            let input = match m.rx.recv_timeout(timeout.min(Duration::from_millis(20))) {
                Ok(Msg::Done(d)) => Input::Done(d),
                Ok(Msg::Request(inc)) => m.admit(inc),
                Ok(Msg::Git(done)) => Input::Git(done),
                Ok(Msg::Hooked(h)) => Input::Hooked {
                    hook: h.hook,
                    failure: h.failure,
                },
                Ok(Msg::Watch(notice)) => Input::Watch(notice),
                Ok(Msg::Synced(done)) => {
                    m.synced(done);
                    Input::Tick
                }
                Err(_) => Input::Tick,
            };
            m.sync_if_due();
            m.fold_if_quiet();
            m.unpark(false);
            m.feed(input);
        }
    }

    /// What supervising decided is written at once (a daemon that crashes
    /// loses none of it) and on disk within seconds, in one fsync for
    /// every change of those seconds; what a user asked for is on disk
    /// before the next step.
    #[test]
    fn a_death_is_on_disk_within_seconds_and_a_users_change_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, uids) = with_panes(dir.path(), role("w", 2));
        until(&mut m, "the bring-up on disk", |m| !m.store.unsynced());
        for &uid in &uids {
            assert!(ask(&mut m, Request::Shim(started(uid))).is_some());
        }
        assert!(ask(&mut m, Request::Shim(ended(uids[0], false))).is_some());
        assert!(
            !on_disk(&m).sessions.contains_key(&uids[0]),
            "written before the answer"
        );
        assert!(m.store.unsynced(), "the death waited for the disk");
        let due = m.sync_by.expect("a sync is due");
        assert!(due <= Instant::now() + SYNC_WITHIN);
        // A second death meanwhile goes with the same fsync.
        assert!(ask(&mut m, Request::Shim(ended(uids[1], false))).is_some());
        assert_eq!(m.sync_by, Some(due), "one fsync for both");
        until(&mut m, "the deaths on disk", |m| !m.store.unsynced());
        assert_eq!(m.sync_by, None);
        assert!(Instant::now() >= due, "synced before it was due");
        // A user's change: on disk when the step is over.
        send(
            &mut m,
            Request::StopRoles {
                key: "demo/squad/w".into(),
            },
        );
        until(&mut m, "the stop written", |m| !m.unsaved);
        assert!(!m.store.unsynced(), "a user's change waited for the timer");
        assert_eq!(m.sync_by, None);
    }

    /// A fold of the journal that is due waits until nothing has been
    /// written for a moment: not in the middle of a burst of deaths, each
    /// of which would wait for the whole world to be written.
    #[test]
    fn a_due_fold_waits_for_a_quiet_moment() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (mut m, uids) = with_panes(dir.path(), role("w", 2));
        until(&mut m, "the bring-up on disk", |m| !m.store.unsynced());
        let snapshot = |m: &MainLoop| std::fs::metadata(m.paths.state()).unwrap().ino();
        let before = snapshot(&m);
        m.store.pretend_fold_due();
        assert!(ask(&mut m, Request::Shim(ended(uids[0], false))).is_some());
        let first = m.fold_by.expect("a fold waits");
        assert!(ask(&mut m, Request::Shim(ended(uids[1], false))).is_some());
        let second = m.fold_by.expect("a fold waits");
        assert!(second >= first, "put off by the second death");
        assert!(m.store.fold_due());
        assert_eq!(snapshot(&m), before, "not folded among the deaths");
        until(&mut m, "the fold", |m| !m.store.fold_due());
        assert!(Instant::now() >= second, "folded before a quiet moment");
        assert_ne!(snapshot(&m), before);
        assert_eq!(m.fold_by, None);
        assert_eq!(journal_lines(dir.path()), 1, "a new journal: its header");
        let disk = on_disk(&m);
        for uid in uids {
            assert!(!disk.sessions.contains_key(&uid), "{uid} died");
        }
    }

    /// The death a shim reports is removed from `exits/` only once the
    /// state holding it is written: a daemon that crashed in between would
    /// otherwise find the session live, its pane still there (the shim
    /// stays in it), and the death would be lost.
    #[test]
    fn an_exit_record_stays_until_the_state_that_holds_its_death_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, uids) = with_panes(dir.path(), role("w", 1));
        let uid = uids[0];
        send(&mut m, Request::Shim(started(uid)));
        // The disk fills up; the shim records the death, then tells.
        m.store.fail_next_write();
        let record = m.paths.exit_record(uid);
        let report = ended(uid, false);
        crate::paths::write_atomic(&record, &serde_json::to_vec(&report).unwrap()).unwrap();
        send(&mut m, Request::Shim(report));
        assert!(!m.sup.world().sessions.contains_key(&uid), "recorded");
        until(&mut m, "the write tried", |m| !m.persisted);
        assert!(
            record.exists(),
            "the only durable word of the death is gone"
        );
        // Written again (within a second): the record has done its job.
        until(&mut m, "the record removed", |_| !record.exists());
        assert!(m.persisted);
        assert!(!on_disk(&m).sessions.contains_key(&uid));
    }

    /// The shim of a kept pane is asked to run the slot's next spawn only
    /// once the state that places it there (and the uid it carries) is on
    /// disk: a daemon that died just after asking would otherwise not know
    /// the program running in the pane, and could hand its uid out again.
    #[test]
    fn a_shim_is_asked_for_its_next_run_only_once_the_state_placing_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, uids) = with_panes(dir.path(), role("w", 1));
        let uid = uids[0];
        // A placement the supervisor asked to have written, not written
        // yet when the ask is carried out.
        m.sup.world_mut().sessions.get_mut(&uid).unwrap().rerun_of = Some(uid);
        m.carry_out(Output::Persist(Durability::Soon));
        // The shim to ask: a child of this process, as a shim is the tmux
        // server's.
        let mut shim = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let next = crate::shim::NextRun {
            uid: uid + 1,
            argv: vec!["true".into()],
            cwd: None,
            env: Default::default(),
            quiet_ms: 0,
        };
        let reran = m.carry_out(Output::Rerun {
            of: uid,
            pid: shim.id(),
            parent: std::process::id(),
            next,
        });
        let _ = shim.kill();
        let _ = shim.wait();
        assert!(
            matches!(reran, Some(Input::Reran { asked: true, .. })),
            "the shim was asked"
        );
        assert_eq!(
            on_disk(&m).sessions[&uid].rerun_of,
            Some(uid),
            "placement on disk"
        );
    }

    /// A shim keeps no record of a death the daemon answered: the answer
    /// comes only once the state on disk holds the death, and not at all
    /// while the state cannot be written (the shim then records it).
    #[test]
    fn a_death_is_answered_only_once_the_state_holding_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, uids) = with_panes(dir.path(), role("w", 2));
        for &uid in &uids {
            assert!(ask(&mut m, Request::Shim(started(uid))).is_some());
        }
        // Answered, and by then the death is on disk.
        assert!(ask(&mut m, Request::Shim(ended(uids[0], false))).is_some());
        assert!(
            !on_disk(&m).sessions.contains_key(&uids[0]),
            "answered before the death was written"
        );
        // The disk is full: recorded in memory, not answered.
        m.store.fail_next_write();
        assert!(ask(&mut m, Request::Shim(ended(uids[1], false))).is_none());
        assert!(!m.sup.world().sessions.contains_key(&uids[1]), "recorded");
        assert!(!m.persisted);
    }

    /// A crash whose restart is due a millisecond later costs one durable
    /// write for both, and the shim, still waiting for the answer to its
    /// program's end, gets the next run in it: no file, no signal.
    #[test]
    fn a_crash_and_its_quick_restart_are_one_write_and_the_shim_gets_the_run_in_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, uids) = with_panes(dir.path(), backing_off(1, 1));
        let uid = uids[0];
        assert!(ask(&mut m, Request::Shim(started(uid))).is_some());
        let before = journal_lines(dir.path());
        let answer = ask(&mut m, Request::Shim(ended(uid, true)));
        let next = m
            .sup
            .world()
            .sessions
            .values()
            .find(|s| s.uid != uid)
            .expect("the restart placed")
            .clone();
        match answer {
            Some(Response::Run(run)) => assert_eq!(run.uid, next.uid),
            other => panic!("not the next run: {other:?}"),
        }
        assert_eq!(next.rerun_of, Some(uid));
        assert!(
            !m.paths.next_run(uid).exists(),
            "no next-run file for a shim that had it in the answer"
        );
        assert_eq!(
            journal_lines(dir.path()),
            before + 1,
            "the crash and the restart in one write"
        );
        let world = on_disk(&m);
        assert!(!world.sessions.contains_key(&uid));
        assert_eq!(world.sessions[&next.uid].rerun_of, Some(uid));
    }

    /// A role of `n` slots whose restarts wait `ms` (no growth, no jitter).
    fn backing_off(n: u32, ms: u64) -> crate::domain::spec::RoleSpec {
        let mut w = role("w", n);
        w.backoff = steady(ms);
        w
    }

    /// A main loop in `root` whose one slot restarts after `ms`, and whose
    /// shim's word of its program's end is written and its answer parked
    /// for the restart: the run that ended, and where the answer comes.
    fn parked_death(root: &std::path::Path, ms: u64) -> (MainLoop, u64, Receiver<Response>) {
        let (mut m, uids) = with_panes(root, backing_off(1, ms));
        let uid = uids[0];
        assert!(ask(&mut m, Request::Shim(started(uid))).is_some());
        let (input, answer) = admit(&mut m, Request::Shim(ended(uid, true)));
        m.feed(input);
        until(&mut m, "the death written", |m| !m.unsaved);
        assert!(answer.try_recv().is_err(), "answered before the restart");
        assert_eq!(m.parked.len(), 1);
        (m, uid, answer)
    }

    /// A shim whose slot restarts within half a second waits for the next
    /// run in the answer to its program's end (no file, no signal); one
    /// whose restart is further off is told at once to stay and wait.
    #[test]
    fn a_shim_whose_restart_is_due_soon_gets_the_run_in_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, uid, answer) = parked_death(dir.path(), 100);
        until(&mut m, "the restart", |m| m.parked.is_empty());
        let next = m
            .sup
            .world()
            .sessions
            .values()
            .find(|s| s.uid != uid)
            .expect("the restart placed")
            .clone();
        match answer.try_recv() {
            Ok(Response::Run(run)) => assert_eq!(run.uid, next.uid),
            other => panic!("not the next run: {other:?}"),
        }
        assert_eq!(next.rerun_of, Some(uid));
        assert!(!m.paths.next_run(uid).exists(), "no next-run file");
        assert_eq!(on_disk(&m).sessions[&next.uid].rerun_of, Some(uid));

        let dir = tempfile::tempdir().unwrap();
        let (mut m, uids) = with_panes(dir.path(), backing_off(1, 2_000));
        assert!(ask(&mut m, Request::Shim(started(uids[0]))).is_some());
        match ask(&mut m, Request::Shim(ended(uids[0], true))) {
            Some(Response::Linger(_)) => {}
            other => panic!("not told to stay: {other:?}"),
        }
        assert!(m.parked.is_empty());
    }

    /// A shim waiting for a run that does not come (its role was stopped
    /// meanwhile) is answered by the time the run was due, with what its
    /// pane is to do now.
    #[test]
    fn a_shim_waiting_for_a_run_that_does_not_come_is_answered_all_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, uid, answer) = parked_death(dir.path(), 300);
        send(
            &mut m,
            Request::StopRoles {
                key: "demo/squad/w".into(),
            },
        );
        until(&mut m, "the answer", |m| m.parked.is_empty());
        match answer.try_recv() {
            Ok(Response::Run(run)) => panic!("a stopped role ran {run:?}"),
            Ok(_) => {}
            Err(e) => panic!("not answered: {e}"),
        }
        assert!(
            m.sup
                .world()
                .sessions
                .values()
                .all(|s| s.uid == uid || !s.state.is_live()),
            "nothing restarted"
        );
    }

    /// Deaths reported in a burst (more messages already queued behind
    /// each) are written in one fsync, and each shim is answered only
    /// after it.
    #[test]
    fn a_burst_of_deaths_is_one_write_and_each_is_answered_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, uids) = with_panes(dir.path(), role("w", 3));
        for &uid in &uids {
            assert!(ask(&mut m, Request::Shim(started(uid))).is_some());
        }
        let before = journal_lines(dir.path());
        let mut answers = Vec::new();
        for (i, &uid) in uids.iter().enumerate() {
            let (input, answer) = admit(&mut m, Request::Shim(ended(uid, false)));
            // The main loop's queue: more behind every death but the last.
            m.more = i + 1 < uids.len();
            m.feed(input);
            m.more = false;
            answers.push(answer);
            if i + 1 < uids.len() {
                assert!(
                    answers.iter().all(|a| a.try_recv().is_err()),
                    "answered before the deaths were written"
                );
            }
        }
        assert_eq!(
            journal_lines(dir.path()),
            before + 1,
            "the three deaths in one write"
        );
        assert!(answers.iter().all(|a| a.try_recv().is_ok()), "all answered");
        let world = on_disk(&m);
        assert!(uids.iter().all(|u| !world.sessions.contains_key(u)));
    }
}
