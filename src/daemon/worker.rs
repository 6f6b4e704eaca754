//! The tmux worker: one thread that carries out substrate calls in the
//! order they were asked for and posts each outcome back to the daemon loop
//! as a message. The loop never waits on tmux; a slow or stopped server
//! holds up only this thread, and every call still ends at its deadline.
//!
//! Order matters and is kept: a listing reflects every job submitted before
//! it, and outcomes reach the loop in the order the jobs ran.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use crate::substrate::{
    Decoration, Observation, SpawnRequest, Spawned, SubResult, Substrate, SubstrateError,
};

/// Identifies a submitted job and its outcome.
pub type JobId = u64;

/// A call that should take at most this long (plus the allowance of a
/// spawn batch) is taken as stalled past it, well before its deadline.
pub const SLOW: Duration = Duration::from_secs(1);
/// Extra expected time per session of a spawn batch.
const SLOW_PER_SPAWN: Duration = Duration::from_millis(20);

/// One thing to ask of the substrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// `tmux -V`, then a listing if tmux runs. Probes run even while the
    /// worker skips work after a timeout: they are how it recovers.
    Probe,
    List,
    Spawn(Vec<SpawnRequest>),
    Kill(String),
    Capture {
        pane: String,
        history: u32,
    },
    SendText {
        pane: String,
        text: String,
        enter: bool,
    },
    SendKeys {
        pane: String,
        keys: Vec<String>,
    },
    /// What dead panes show and what windows' statuses say.
    Decorate(Vec<Decoration>),
}

/// What a job came to, one variant per job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Probed {
        version: SubResult<String>,
        /// `None` when the version check already failed.
        listing: Option<SubResult<Observation>>,
    },
    Listed(SubResult<Observation>),
    /// In request order.
    Spawned(Vec<SubResult<Spawned>>),
    Killed(SubResult<()>),
    Captured(SubResult<String>),
    Sent(SubResult<()>),
}

/// A finished job, on its way to the loop.
#[derive(Debug)]
pub struct Done {
    pub id: JobId,
    pub outcome: Outcome,
}

impl Job {
    /// Runs the job against the substrate (on the worker thread, or
    /// directly in tests of the supervisor).
    pub fn run<S: Substrate + ?Sized>(&self, sub: &S) -> Outcome {
        match self {
            Job::Probe => {
                let version = sub.version();
                let listing = version.is_ok().then(|| sub.list());
                Outcome::Probed { version, listing }
            }
            Job::List => Outcome::Listed(sub.list()),
            Job::Spawn(reqs) => Outcome::Spawned(sub.spawn_many(reqs)),
            Job::Kill(pane) => Outcome::Killed(sub.kill(pane)),
            Job::Capture { pane, history } => Outcome::Captured(sub.capture(pane, *history)),
            Job::SendText { pane, text, enter } => Outcome::Sent(sub.send_text(pane, text, *enter)),
            Job::SendKeys { pane, keys } => Outcome::Sent(sub.send_keys(pane, keys)),
            Job::Decorate(d) => Outcome::Sent(sub.decorate(d)),
        }
    }

    /// The outcome of not running the job at all, failing with `err`.
    fn skipped(&self, err: SubstrateError) -> Outcome {
        match self {
            Job::Probe => Outcome::Probed {
                version: Err(err),
                listing: None,
            },
            Job::List => Outcome::Listed(Err(err)),
            Job::Spawn(reqs) => Outcome::Spawned(vec![Err(err); reqs.len()]),
            Job::Kill(_) => Outcome::Killed(Err(err)),
            Job::Capture { .. } => Outcome::Captured(Err(err)),
            Job::SendText { .. } | Job::SendKeys { .. } | Job::Decorate(_) => {
                Outcome::Sent(Err(err))
            }
        }
    }

    /// How long the job may reasonably take before it counts as stalled.
    pub fn expected(&self) -> Duration {
        match self {
            Job::Spawn(reqs) => SLOW + SLOW_PER_SPAWN * reqs.len() as u32,
            _ => SLOW,
        }
    }
}

impl Outcome {
    /// The timeout this outcome reports, if tmux did not answer in time.
    fn timeout(&self) -> Option<SubstrateError> {
        fn timed_out<T>(r: &SubResult<T>) -> Option<SubstrateError> {
            match r {
                Err(e @ SubstrateError::Timeout(_)) => Some(e.clone()),
                _ => None,
            }
        }
        match self {
            Outcome::Probed { version, listing } => {
                timed_out(version).or_else(|| listing.as_ref().and_then(timed_out))
            }
            Outcome::Listed(r) => timed_out(r),
            Outcome::Spawned(rs) => rs.iter().find_map(timed_out),
            Outcome::Killed(r) | Outcome::Sent(r) => timed_out(r),
            Outcome::Captured(r) => timed_out(r),
        }
    }
}

/// The daemon's handle on the worker thread.
pub struct Worker<S> {
    sub: Arc<S>,
    jobs: Sender<(JobId, Job)>,
}

impl<S: Substrate + Sync + 'static> Worker<S> {
    /// Starts the thread; each outcome is sent to `results`.
    pub fn start<M>(sub: Arc<S>, results: Sender<M>) -> std::io::Result<Worker<S>>
    where
        M: From<Done> + Send + 'static,
    {
        let (jobs, rx) = mpsc::channel();
        let thread_sub = Arc::clone(&sub);
        std::thread::Builder::new()
            .name("marvel-tmux".into())
            .spawn(move || run(&*thread_sub, rx, results))?;
        Ok(Worker { sub, jobs })
    }
}

impl<S> Worker<S> {
    /// Queues job `id` (ids are the caller's, increasing); its outcome
    /// arrives later as a [`Done`] with this id. A worker that is gone
    /// (only at shutdown) drops the job.
    pub fn submit(&self, id: JobId, job: Job) {
        let _ = self.jobs.send((id, job));
    }

    /// The substrate, for what is not a job (the watch, which runs on a
    /// thread of its own) and for tests. Calls that run tmux go through
    /// [`Worker::submit`].
    pub fn substrate(&self) -> &S {
        &self.sub
    }
}

/// The thread: runs jobs in order until the daemon drops its handle. After
/// a call times out the server is taken as stuck, and jobs queued behind it
/// fail at once with the same timeout instead of each waiting out their own
/// deadline; the daemon's next probe runs for real and, once tmux answers,
/// work resumes.
fn run<S, M>(sub: &S, jobs: Receiver<(JobId, Job)>, results: Sender<M>)
where
    S: Substrate + ?Sized,
    M: From<Done>,
{
    let mut runner = Runner::default();
    for (id, job) in jobs {
        let outcome = runner.run(&job, sub);
        if results.send(M::from(Done { id, outcome })).is_err() {
            return;
        }
    }
}

/// Runs jobs one after the other, as the worker thread does (tests of the
/// supervisor use it directly): after a timeout, every job but a probe
/// fails at once with it until a probe runs.
#[derive(Debug, Default)]
pub struct Runner {
    stuck: Option<SubstrateError>,
}

impl Runner {
    pub fn run<S: Substrate + ?Sized>(&mut self, job: &Job, sub: &S) -> Outcome {
        match &self.stuck {
            Some(err) if *job != Job::Probe => job.skipped(err.clone()),
            _ => {
                let outcome = job.run(sub);
                self.stuck = outcome.timeout();
                outcome
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substrate::fake::{Call, FakeSubstrate};

    fn start() -> (Worker<FakeSubstrate>, Receiver<Done>) {
        let (tx, rx) = mpsc::channel();
        (
            Worker::start(Arc::new(FakeSubstrate::new()), tx).unwrap(),
            rx,
        )
    }

    fn next(rx: &Receiver<Done>) -> Done {
        rx.recv_timeout(Duration::from_secs(5)).expect("an outcome")
    }

    #[test]
    fn jobs_run_in_order_and_outcomes_carry_their_ids() {
        let (w, rx) = start();
        w.submit(7, Job::Probe);
        w.submit(8, Job::List);
        let (d1, d2) = (next(&rx), next(&rx));
        assert_eq!((d1.id, d2.id), (7, 8));
        assert!(matches!(
            d1.outcome,
            Outcome::Probed {
                version: Ok(_),
                listing: Some(Ok(Observation::Panes(_)))
            }
        ));
        assert_eq!(d2.outcome, Outcome::Listed(Ok(Observation::Panes(vec![]))));
        assert_eq!(
            w.substrate().calls(),
            vec![Call::Version, Call::List, Call::List]
        );
    }

    #[test]
    fn after_a_timeout_queued_jobs_fail_at_once_until_a_probe_gets_an_answer() {
        let (w, rx) = start();
        let timeout = SubstrateError::Timeout(Duration::from_millis(5));
        w.substrate().fail_next(timeout.clone());
        w.submit(1, Job::List);
        w.submit(2, Job::Kill("%1".into()));
        w.submit(3, Job::Probe);
        w.submit(4, Job::Kill("%2".into()));
        assert_eq!(next(&rx).outcome, Outcome::Listed(Err(timeout.clone())));
        assert_eq!(next(&rx).outcome, Outcome::Killed(Err(timeout)));
        assert!(matches!(
            next(&rx).outcome,
            Outcome::Probed { version: Ok(_), .. }
        ));
        assert_eq!(next(&rx).outcome, Outcome::Killed(Ok(())));
        // The skipped kill never reached the substrate.
        assert_eq!(w.substrate().kills(), vec!["%2".to_string()]);
    }
}
