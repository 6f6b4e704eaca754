//! The tmux worker: one thread that carries out substrate calls in the
//! order they were asked for and posts each outcome back to the daemon loop
//! as a message. The loop never waits on tmux; a slow or stopped server
//! holds up only this thread, and every call still ends at its deadline.
//!
//! Order matters and is kept: a listing reflects every job submitted before
//! it, and outcomes reach the loop in the order the jobs ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use crate::substrate::{Observation, SpawnRequest, Spawned, SubResult, Substrate, SubstrateError};

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
    fn run<S: Substrate + ?Sized>(&self, sub: &S) -> Outcome {
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
            Job::SendText { .. } | Job::SendKeys { .. } => Outcome::Sent(Err(err)),
        }
    }

    /// How long the job may reasonably take before it counts as stalled.
    fn expected(&self) -> Duration {
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
    next: JobId,
    /// When the call now running becomes stalled, in milliseconds since
    /// `base` plus one; 0 while idle. Written by the thread, read by the loop.
    slow_at: Arc<AtomicU64>,
    base: Instant,
}

impl<S: Substrate + Sync + 'static> Worker<S> {
    /// Starts the thread; each outcome is sent to `results`.
    pub fn start<M>(sub: Arc<S>, results: Sender<M>) -> std::io::Result<Worker<S>>
    where
        M: From<Done> + Send + 'static,
    {
        let (jobs, rx) = mpsc::channel();
        let slow_at = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        let (thread_sub, thread_slow) = (Arc::clone(&sub), Arc::clone(&slow_at));
        std::thread::Builder::new()
            .name("marvel-tmux".into())
            .spawn(move || run(&*thread_sub, rx, results, &thread_slow, base))?;
        Ok(Worker {
            sub,
            jobs,
            next: 0,
            slow_at,
            base,
        })
    }
}

impl<S> Worker<S> {
    /// Queues a job; its outcome arrives later as a [`Done`] with this id.
    /// A worker that is gone (only at shutdown) drops the job.
    pub fn submit(&mut self, job: Job) -> JobId {
        self.next += 1;
        let _ = self.jobs.send((self.next, job));
        self.next
    }

    /// The id the next submitted job gets.
    pub fn next_id(&self) -> JobId {
        self.next + 1
    }

    /// How long the running call has been over its expected time, if it is.
    pub fn stalled_for(&self) -> Option<Duration> {
        let at = self.slow_at.load(Ordering::SeqCst);
        if at == 0 {
            return None;
        }
        let slow = Duration::from_millis(at - 1);
        self.base.elapsed().checked_sub(slow)
    }

    /// The substrate, for what needs no tmux process (building an argv)
    /// and for tests. Calls that run tmux go through [`Worker::submit`].
    pub fn substrate(&self) -> &S {
        &self.sub
    }

    /// A shared handle on the substrate (tests hand it to a new daemon).
    pub fn shared(&self) -> Arc<S> {
        Arc::clone(&self.sub)
    }
}

/// The thread: runs jobs in order until the daemon drops its handle. After
/// a call times out the server is taken as stuck, and jobs queued behind it
/// fail at once with the same timeout instead of each waiting out their own
/// deadline; the daemon's next probe runs for real and, once tmux answers,
/// work resumes.
fn run<S, M>(
    sub: &S,
    jobs: Receiver<(JobId, Job)>,
    results: Sender<M>,
    slow_at: &AtomicU64,
    base: Instant,
) where
    S: Substrate + ?Sized,
    M: From<Done>,
{
    let mut stuck: Option<SubstrateError> = None;
    for (id, job) in jobs {
        let outcome = match &stuck {
            Some(err) if job != Job::Probe => job.skipped(err.clone()),
            _ => {
                let slow = base.elapsed() + job.expected();
                slow_at.store(slow.as_millis() as u64 + 1, Ordering::SeqCst);
                let outcome = job.run(sub);
                slow_at.store(0, Ordering::SeqCst);
                stuck = outcome.timeout();
                outcome
            }
        };
        if results.send(M::from(Done { id, outcome })).is_err() {
            return;
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
        let (mut w, rx) = start();
        let a = w.submit(Job::Probe);
        let b = w.submit(Job::List);
        let (d1, d2) = (next(&rx), next(&rx));
        assert_eq!((d1.id, d2.id), (a, b));
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
        let (mut w, rx) = start();
        let timeout = SubstrateError::Timeout(Duration::from_millis(5));
        w.substrate().fail_next(timeout.clone());
        w.submit(Job::List);
        w.submit(Job::Kill("%1".into()));
        w.submit(Job::Probe);
        w.submit(Job::Kill("%2".into()));
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

    #[test]
    fn a_call_over_its_expected_time_shows_as_stalled() {
        let (mut w, rx) = start();
        assert_eq!(w.stalled_for(), None);
        let gate = w.substrate().hold();
        w.submit(Job::List);
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.stalled_for().is_none() {
            assert!(Instant::now() < deadline, "never stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(gate);
        assert!(matches!(next(&rx).outcome, Outcome::Listed(Ok(_))));
        assert_eq!(w.stalled_for(), None);
    }
}
