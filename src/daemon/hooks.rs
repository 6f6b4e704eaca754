//! The runner of notification commands: a few threads of their own, so a
//! slow, hung or failing command never touches the daemon's loop. At most
//! [`RUNNERS`] commands run at once, each in its own process group and
//! killed with it at its timeout; at most [`QUEUED`] wait their turn, and
//! one beyond that is dropped and reported as failed. Each outcome goes
//! back to the loop as a message.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use super::supervisor::{Hook, HookFailure};

/// Commands run at once.
pub const RUNNERS: usize = 4;
/// Commands waiting for a runner.
pub const QUEUED: usize = 64;
/// The most of a command's stderr read (its first line is kept).
const STDERR_BYTES: usize = 4096;

/// A finished run, on its way to the loop.
#[derive(Debug)]
pub struct Hooked {
    pub hook: Hook,
    pub failure: Option<HookFailure>,
}

/// The loop's handle on the runners.
pub struct Runner<M> {
    jobs: SyncSender<Hook>,
    results: Sender<M>,
}

impl<M: From<Hooked> + Send + 'static> Runner<M> {
    /// Starts the runner threads; each outcome is sent to `results`.
    pub fn start(results: Sender<M>) -> std::io::Result<Runner<M>> {
        let (jobs, rx) = mpsc::sync_channel::<Hook>(QUEUED);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..RUNNERS {
            let rx = Arc::clone(&rx);
            let results = results.clone();
            std::thread::Builder::new()
                .name(format!("marvel-notify-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || serve(&rx, &results))?;
        }
        Ok(Runner { jobs, results })
    }

    /// Queues a run; never waits. A full queue drops it, as a failure.
    pub fn submit(&self, hook: Hook) {
        match self.jobs.try_send(hook) {
            Ok(()) => {}
            Err(TrySendError::Full(hook) | TrySendError::Disconnected(hook)) => {
                let failure = HookFailure {
                    status: format!("not run: {QUEUED} notifications were already waiting"),
                    stderr: String::new(),
                };
                let _ = self.results.send(M::from(Hooked {
                    hook,
                    failure: Some(failure),
                }));
            }
        }
    }
}

fn serve<M: From<Hooked>>(jobs: &Mutex<Receiver<Hook>>, results: &Sender<M>) {
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(hook) = next else { return };
        let failure = run(&hook).err();
        if results.send(M::from(Hooked { hook, failure })).is_err() {
            return;
        }
    }
}

/// Runs one command to its end or its timeout. The event is in its
/// environment only: nothing of it is put on its command line.
pub fn run(hook: &Hook) -> Result<(), HookFailure> {
    let program = hook.command.first().cloned().unwrap_or_default();
    let mut cmd = Command::new(&program);
    cmd.args(&hook.command[1..])
        .envs(hook.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own group: a timeout ends the command and all it started.
        .process_group(0);
    if let Some(dir) = hook.cwd.as_ref().filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| HookFailure {
        status: format!("cannot run {program}: {e}"),
        stderr: String::new(),
    })?;
    let deadline = Instant::now() + hook.timeout;
    let stderr = child.stderr.take();
    let pidfd = rustix::process::Pid::from_child(&child);
    let pidfd = rustix::process::pidfd_open(pidfd, rustix::process::PidfdFlags::empty()).ok();
    let mut err_bytes = Vec::new();
    let mut err_open = stderr.is_some();
    let mut stderr = stderr;
    let timed_out = loop {
        if let Ok(Some(_)) = child.try_wait() {
            break false;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break true;
        };
        // Wait for the command's end or its stderr, whichever comes; a
        // kernel without pidfds falls back to short naps.
        let timeout = Timespec::try_from(left.min(Duration::from_secs(1))).unwrap_or_default();
        let mut fds = Vec::with_capacity(2);
        if let Some(fd) = &pidfd {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        if let (true, Some(e)) = (err_open, &stderr) {
            fds.push(PollFd::new(e, PollFlags::IN));
        }
        if pidfd.is_none() && !err_open {
            std::thread::sleep(left.min(Duration::from_millis(20)));
            continue;
        }
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
        let err_ready = err_open && fds.last().is_some_and(|f| !f.revents().is_empty());
        if err_ready && let Some(e) = stderr.as_mut() {
            let mut buf = [0u8; 1024];
            match e.read(&mut buf) {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => {
                    let room = STDERR_BYTES.saturating_sub(err_bytes.len());
                    err_bytes.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
    };
    if timed_out {
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = child.wait();
        return Err(HookFailure {
            status: format!(
                "timed out after {}",
                humantime::format_duration(hook.timeout)
            ),
            stderr: first_line(&err_bytes),
        });
    }
    // What is left of stderr, without waiting for whatever the command
    // left running with it.
    if let Some(mut e) = stderr.filter(|_| err_open) {
        let mut fds = [PollFd::new(&e, PollFlags::IN)];
        let zero = Timespec::default();
        if matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0) {
            let mut buf = [0u8; 1024];
            if let Ok(n) = e.read(&mut buf) {
                let room = STDERR_BYTES.saturating_sub(err_bytes.len());
                err_bytes.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    let status = child.wait().map_err(|e| HookFailure {
        status: format!("cannot wait for {program}: {e}"),
        stderr: String::new(),
    })?;
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "failed".to_string(),
    };
    Err(HookFailure {
        status: how,
        stderr: first_line(&err_bytes),
    })
}

/// The first non-empty line of what a command wrote to stderr.
fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EventKind;

    fn hook(script: &str, timeout: Duration) -> Hook {
        Hook {
            command: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![
                ("MARVEL_EVENT_KIND".into(), "crashed".into()),
                (
                    "MARVEL_EVENT_MESSAGE".into(),
                    "$(touch /tmp/pwned); `x`".into(),
                ),
            ],
            timeout,
            cwd: None,
            team: "demo/squad".into(),
            kind: EventKind::Crashed,
            key: "demo/squad/w-0".into(),
        }
    }

    #[test]
    fn a_command_gets_the_event_in_its_environment_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let script = format!(
            "printf '%s|%s' \"$MARVEL_EVENT_KIND\" \"$MARVEL_EVENT_MESSAGE\" > {}",
            out.display()
        );
        run(&hook(&script, Duration::from_secs(10))).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "crashed|$(touch /tmp/pwned); `x`"
        );
    }

    #[test]
    fn a_failing_command_says_its_status_and_its_first_line_of_stderr() {
        let f = run(&hook(
            "echo; echo '  no route to host  ' >&2; echo second >&2; exit 3",
            Duration::from_secs(10),
        ))
        .unwrap_err();
        assert_eq!(f.status, "exit 3");
        assert_eq!(f.stderr, "no route to host");
        let f = run(&Hook {
            command: vec!["/no/such/notifier".into()],
            ..hook("", Duration::from_secs(1))
        })
        .unwrap_err();
        assert!(
            f.status.starts_with("cannot run /no/such/notifier"),
            "{f:?}"
        );
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let t = Instant::now();
        let f = run(&hook(&script, Duration::from_millis(300))).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(f.status, "timed out after 300ms");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild went with its group (it may linger as a zombie
        // for its parent's reaper, never running).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            if matches!(state, None | Some(Some('Z'))) {
                break;
            }
            assert!(Instant::now() < deadline, "sleep {pid} still runs: {stat}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_full_queue_drops_the_run_and_says_so_without_waiting() {
        let (tx, rx) = mpsc::channel::<Hooked>();
        // Runners that never start: the queue alone is measured.
        let (jobs, _keep) = mpsc::sync_channel::<Hook>(1);
        let r = Runner { jobs, results: tx };
        r.submit(hook("true", Duration::from_secs(1)));
        r.submit(hook("true", Duration::from_secs(1)));
        let dropped = rx.try_recv().unwrap();
        assert!(
            dropped.failure.unwrap().status.contains("already waiting"),
            "the second is dropped"
        );
        assert!(rx.try_recv().is_err());
    }
}
