//! The watch on a tmux server: hooks on marvel's panes and team sessions
//! signal a `wait-for` channel, and one `tmux wait-for` client, blocked on
//! that channel, wakes the daemon. Nothing runs while nothing happens. A
//! signal with no client waiting is latched by tmux, so no wake-up is lost
//! between two clients (several may fold into one). The server's children
//! (the panes' processes) are watched through pidfds too: tmux 3.3a can
//! miss a child's end, and the end of one makes the watch nudge tmux into
//! reaping it, so that the hooks run; the server is never woken otherwise.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{Timespec, epoll};
use rustix::process::{Pid, PidfdFlags, Resource, getrlimit, pidfd_open, setrlimit};

use super::tmux::{RawOutput, Tmux, classify_failure};
use super::{Notice, Notify, SubstrateError};

/// The hooks that wake a watch, and the scope each is set in: a pane's
/// program ending (kept pane, or destroyed pane), a window going away from
/// a session, a `kill-pane` run by anyone.
pub const PANE_HOOKS: [&str; 2] = ["pane-died", "pane-exited"];
pub const SESSION_HOOKS: [&str; 2] = ["window-unlinked", "after-kill-pane"];

/// The `wait-for` channel of the state directory tagged `owner`: the same
/// for every daemon of that directory, so the hooks on panes an earlier
/// daemon made still wake the next one. FNV-1a, stable across versions.
pub fn channel(owner: &str) -> String {
    format!("marvel-{:016x}", crate::paths::fnv1a(owner.as_bytes()))
}

/// The command a hook runs: wake the watch.
pub fn hook_command(owner: &str) -> String {
    format!("wait-for -S {}", channel(owner))
}

/// How a [`super::Tmux`] tells its running watch that the server has new
/// panes, and their first processes: an eventfd in the watch's epoll set,
/// once the watch made one.
#[derive(Debug, Clone, Default)]
pub struct Poke(Arc<Mutex<Poked>>);

#[derive(Debug, Default)]
struct Poked {
    fd: Option<Arc<OwnedFd>>,
    /// First processes of new panes, not watched yet.
    pids: Vec<u32>,
}

impl Poke {
    pub fn poke(&self, pids: &[u32]) {
        let mut poked = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Before the watch runs, its first listing finds them.
        let Some(fd) = poked.fd.clone() else { return };
        poked.pids.extend_from_slice(pids);
        drop(poked);
        let _ = rustix::io::write(&*fd, &1u64.to_ne_bytes());
    }

    fn set(&self, fd: Arc<OwnedFd>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).fd = Some(fd);
    }

    fn take(&self) -> Vec<u32> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()).pids)
    }
}

/// Runs the watch until it ends; called on its own thread.
pub(super) fn run(tmux: Tmux, owner: String, server_pid: u32, kick: Duration, mut notify: Notify) {
    let channel = channel(&owner);
    let mut first = true;
    let mut panes = match Panes::new(server_pid) {
        Ok(p) => {
            tmux.poke.set(Arc::clone(&p.poke));
            p
        }
        Err(e) => {
            notify(Notice::Ended(SubstrateError::Unreachable(format!(
                "cannot watch the tmux server's panes: {e}"
            ))));
            return;
        }
    };
    loop {
        let mut cmd = tmux.wait_for_command(&channel);
        // SAFETY: prctl and getppid are async-signal-safe. The client goes
        // with this thread, so with the daemon: it never outlives it.
        unsafe {
            let parent = libc::getpid();
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                notify(Notice::Ended(SubstrateError::Missing(format!(
                    "cannot run tmux: {e}"
                ))));
                return;
            }
        };
        if std::mem::take(&mut first) {
            notify(Notice::Watching);
        }
        let status = match wait_kicking(&mut child, &mut panes, &tmux.poke, kick) {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                notify(Notice::Ended(SubstrateError::Unreachable(format!(
                    "waiting for the tmux client: {e}"
                ))));
                return;
            }
        };
        if status.success() {
            notify(Notice::Changed);
            continue;
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let out = RawOutput {
            status,
            stdout: String::new(),
            stderr,
        };
        notify(Notice::Ended(classify_failure(&out)));
        return;
    }
}

/// While every child of the server is watched, they are listed again this
/// often (from `/proc`, without waking the server).
const RELIST_EVERY: Duration = Duration::from_secs(60);

/// File descriptors the process keeps for everything but pidfds.
const FD_RESERVE: u64 = 512;

/// How long tmux has to reap a child that ended before it is nudged; after
/// a nudge it missed, twice as long each time, up to [`REAP_GRACE_MAX`].
const REAP_GRACE: Duration = Duration::from_millis(50);
const REAP_GRACE_MAX: Duration = Duration::from_secs(5);

/// Waits for the client to end. Meanwhile, a pane's process that ended
/// and is still not reaped after [`REAP_GRACE`] makes the server get
/// SIGCHLD: tmux 3.3a built with libutempter can miss the end of a pane's
/// process, and with it the `pane-died` hook, until another child event;
/// the signal makes it reap what it missed, and it is sent again, less and
/// less often, for as long as tmux leaves the process unreaped. The
/// server's children are listed (from `/proc`, without waking the server)
/// when the daemon says it made panes ([`Poke`]), after an end, and once
/// in [`RELIST_EVERY`]; while some cannot be watched, every `kick`, and
/// tmux is nudged then, since their ends go unseen. A server whose
/// children are all watched is never woken by the watch for nothing.
fn wait_kicking(
    child: &mut Child,
    panes: &mut Panes,
    poke: &Poke,
    kick: Duration,
) -> std::io::Result<ExitStatus> {
    let pidfd =
        Pid::from_raw(child.id() as i32).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok());
    let Some(pidfd) = pidfd else {
        // No pidfd (a kernel before 5.3): wait without kicking.
        return child.wait();
    };
    panes.set_client(pidfd)?;
    loop {
        panes.refresh();
        panes.watch_made(poke.take());
        panes.nudge_if_unreaped();
        let every = if panes.complete { RELIST_EVERY } else { kick };
        let timeout = panes.check.map_or(every, |t| {
            t.saturating_duration_since(Instant::now()).min(every)
        });
        match panes.wait(timeout)? {
            Woke::Client => return child.wait(),
            Woke::Poked | Woke::Ended(_) => {}
            Woke::Timeout if !panes.complete => panes.nudge(),
            Woke::Timeout => {}
        }
    }
}

/// What a wait on the panes saw.
#[derive(Debug, PartialEq, Eq)]
enum Woke {
    /// The watch's tmux client ended.
    Client,
    /// These processes of the server ended.
    Ended(Vec<u32>),
    /// The daemon made panes.
    Poked,
    Timeout,
}

/// The data of the client's pidfd in the epoll set; a pane's is its pid.
const CLIENT: u64 = u64::MAX;
/// The data of the poke's eventfd.
const POKE: u64 = u64::MAX - 1;

/// The tmux server's child processes, each watched through a pidfd in one
/// epoll set with the watch's client.
struct Panes {
    server: u32,
    epoll: OwnedFd,
    watched: HashMap<u32, OwnedFd>,
    /// Seen ended (and the server nudged) while the server still lists
    /// them, not reaped yet: not watched again.
    ended: HashSet<u32>,
    /// Seen ended and not seen reaped since: looked at by
    /// [`Panes::unreaped`].
    fresh: Vec<u32>,
    /// When to see whether tmux reaped those, and how long it was given
    /// last: kept from one client of the watch to the next (a hook that
    /// fired ends a client).
    check: Option<Instant>,
    grace: Duration,
    /// Every child the server had at the last listing is watched.
    complete: bool,
    /// The pidfd of the watch's client, the current one.
    client: Option<OwnedFd>,
    /// Written to when the daemon made panes.
    poke: Arc<OwnedFd>,
    /// Nudges sent so far.
    nudges: u64,
}

impl Panes {
    fn new(server: u32) -> std::io::Result<Panes> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let poke = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        epoll::add(
            &epoll,
            &poke,
            epoll::EventData::new_u64(POKE),
            epoll::EventFlags::IN,
        )?;
        Ok(Panes {
            server,
            epoll,
            poke: Arc::new(poke),
            watched: HashMap::new(),
            ended: HashSet::new(),
            fresh: Vec::new(),
            check: None,
            grace: REAP_GRACE,
            complete: false,
            client: None,
            nudges: 0,
        })
    }

    /// Watches `pidfd`, the watch's new client, instead of the last one.
    fn set_client(&mut self, pidfd: OwnedFd) -> std::io::Result<()> {
        if let Some(old) = self.client.take() {
            let _ = epoll::delete(&self.epoll, &old);
        }
        epoll::add(
            &self.epoll,
            &pidfd,
            epoll::EventData::new_u64(CLIENT),
            epoll::EventFlags::IN,
        )?;
        self.client = Some(pidfd);
        Ok(())
    }

    /// Watches the server's children that are not watched yet, and forgets
    /// those it no longer has.
    fn refresh(&mut self) {
        let Some(listed) = children(self.server) else {
            self.complete = false;
            return;
        };
        // A watched process leaves through its pidfd, not by missing from a
        // listing, which the kernel does not promise to be whole while
        // children come and go.
        self.ended.retain(|pid| listed.contains(pid));
        self.complete = self.watch(listed.into_iter().collect());
    }

    /// Watches the first processes of panes the daemon made: the server's
    /// children that a listing may have missed.
    fn watch_made(&mut self, pids: Vec<u32>) {
        let server = self.server;
        let children = pids
            .into_iter()
            .filter(|pid| parent_of(*pid) == Some(server))
            .collect();
        if !self.watch(children) {
            self.complete = false;
        }
    }

    /// Watches those of `pids` not watched yet; false when some could not
    /// be.
    fn watch(&mut self, pids: Vec<u32>) -> bool {
        let new: Vec<u32> = pids
            .into_iter()
            .filter(|pid| !self.watched.contains_key(pid) && !self.ended.contains(pid))
            .collect();
        let room = fd_room(self.watched.len() + new.len());
        let mut all = true;
        for pid in new {
            if self.watched.len() >= room {
                return false;
            }
            let Some(fd) =
                Pid::from_raw(pid as i32).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
            else {
                // Gone, and reaped, since the listing.
                continue;
            };
            let data = epoll::EventData::new_u64(u64::from(pid));
            if epoll::add(&self.epoll, &fd, data, epoll::EventFlags::IN).is_err() {
                all = false;
                continue;
            }
            self.watched.insert(pid, fd);
        }
        all
    }

    /// Waits up to `timeout` for the client or a child to end.
    fn wait(&mut self, timeout: Duration) -> std::io::Result<Woke> {
        let timeout = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut events = Vec::with_capacity(64);
        loop {
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&timeout),
            ) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if events.is_empty() {
            return Ok(Woke::Timeout);
        }
        let mut ended = Vec::new();
        let mut poked = false;
        for e in &events {
            match e.data.u64() {
                CLIENT => return Ok(Woke::Client),
                POKE => {
                    let mut count = [0u8; 8];
                    let _ = rustix::io::read(&*self.poke, &mut count);
                    poked = true;
                }
                pid => {
                    let pid = pid as u32;
                    // Closing the pidfd takes it out of the set.
                    self.watched.remove(&pid);
                    self.ended.insert(pid);
                    self.fresh.push(pid);
                    let soon = Instant::now() + REAP_GRACE;
                    self.check = Some(self.check.map_or(soon, |t| t.min(soon)));
                    ended.push(pid);
                }
            }
        }
        Ok(if ended.is_empty() && poked {
            Woke::Poked
        } else {
            Woke::Ended(ended)
        })
    }

    /// Whether a child seen ended is still the server's, unreaped: a
    /// zombie whose parent is the server. Asked of the process itself, not
    /// of the server's list of children, which the kernel does not promise
    /// to be whole while children come and go. Those that are stay for the
    /// next call; those reaped (or whose pid now names a live process) go.
    fn unreaped(&mut self) -> bool {
        let server = self.server;
        self.fresh.retain(|pid| {
            stat_of(*pid).is_some_and(|(state, parent)| state == 'Z' && parent == server)
        });
        !self.fresh.is_empty()
    }

    /// Once the time to check has come, nudges the server if it left a
    /// child unreaped, and checks again twice as late each time (up to
    /// [`REAP_GRACE_MAX`]) while it does.
    fn nudge_if_unreaped(&mut self) {
        if self.check.is_none_or(|t| Instant::now() < t) {
            return;
        }
        self.check = None;
        if self.unreaped() {
            self.nudge();
            self.grace = (self.grace * 2).min(REAP_GRACE_MAX);
            self.check = Some(Instant::now() + self.grace);
        } else {
            self.grace = REAP_GRACE;
        }
    }

    fn nudge(&mut self) {
        self.nudges += 1;
        kick_server(self.server);
    }
}

/// The parent of process `pid`, while it exists (a zombie does).
fn parent_of(pid: u32) -> Option<u32> {
    stat_of(pid).map(|(_, parent)| parent)
}

/// The state (`Z` for a zombie) and the parent of process `pid`, while it
/// exists.
fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command, which may hold anything: state, ppid.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// The child processes of `pid`, from `/proc` (every thread's).
fn children(pid: u32) -> Option<HashSet<u32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut all = HashSet::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).ok()?;
        all.extend(
            text.split_ascii_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    Some(all)
}

/// How many pidfds the process can hold with `wanted` of them: the soft
/// limit on open files is raised towards the hard one when that helps.
fn fd_room(wanted: usize) -> usize {
    let need = wanted as u64 + FD_RESERVE;
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft < need {
        let raised = limit
            .maximum
            .map_or(need, |hard| hard.min(need.max(soft * 2)));
        if raised > soft
            && setrlimit(
                Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(raised),
                    maximum: limit.maximum,
                },
            )
            .is_ok()
        {
            return raised.saturating_sub(FD_RESERVE) as usize;
        }
    }
    soft.saturating_sub(FD_RESERVE).min(usize::MAX as u64) as usize
}

/// SIGCHLD to the tmux server, if `pid` still is one.
fn kick_server(pid: u32) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !comm.starts_with("tmux") {
        return;
    }
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::CHILD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits on `panes` until `done` says what woke it is awaited; other
    /// tests' children of this process may end meanwhile.
    fn wait_until(panes: &mut Panes, mut done: impl FnMut(&Woke) -> bool) -> Woke {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let woke = panes.wait(Duration::from_millis(100)).unwrap();
            if done(&woke) {
                return woke;
            }
            assert!(Instant::now() < deadline, "not woken as awaited");
        }
    }

    /// The end of a child of the watched process wakes the wait at once,
    /// once; it is not watched again while it waits to be reaped, and is
    /// forgotten once it is.
    #[test]
    fn the_end_of_a_child_wakes_the_wait_once_until_it_is_reaped() {
        let spawn = || {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap()
        };
        let (mut a, mut b) = (spawn(), spawn());
        let mut panes = Panes::new(std::process::id()).unwrap();
        panes.refresh();
        assert!(panes.watched.contains_key(&a.id()) && panes.watched.contains_key(&b.id()));
        // Killed, not reaped: a zombie, as a pane's process tmux missed.
        a.kill().unwrap();
        wait_until(
            &mut panes,
            |w| matches!(w, Woke::Ended(p) if p.contains(&a.id())),
        );
        panes.refresh();
        assert!(
            !panes.watched.contains_key(&a.id()),
            "a zombie is watched again"
        );
        assert!(panes.unreaped(), "a zombie is not seen as one");
        // Still one at the next check: tmux is nudged again.
        assert!(panes.unreaped(), "a zombie left unreaped is forgotten");
        // Seen as one even when the server's list of children left it out.
        panes.fresh.clear();
        panes.fresh.push(a.id());
        panes.ended.remove(&a.id());
        assert!(panes.unreaped(), "a zombie the listing missed is not seen");
        // Once: the next end seen is b's, not a's again.
        b.kill().unwrap();
        let woke = wait_until(
            &mut panes,
            |w| matches!(w, Woke::Ended(p) if p.contains(&b.id())),
        );
        assert!(!matches!(woke, Woke::Ended(p) if p.contains(&a.id())));
        // Both reaped, as tmux does: nothing to nudge for.
        b.wait().unwrap();
        a.wait().unwrap();
        assert!(!panes.unreaped(), "a reaped child is seen as unreaped");
        assert!(panes.fresh.is_empty(), "a reaped child is remembered");
        // A pid that names a live child now (reused) is not a zombie.
        let mut c = spawn();
        panes.fresh.push(c.id());
        assert!(!panes.unreaped(), "a live child is seen as unreaped");
        c.kill().unwrap();
        c.wait().unwrap();
        panes.refresh();
        assert!(
            !panes.ended.contains(&a.id()),
            "a reaped child is remembered"
        );
        assert!(
            !panes.ended.contains(&b.id()),
            "a reaped child is remembered"
        );
    }

    /// A child that ended unreaped under one client of the watch is looked
    /// at again under the next (a hook that fired ends a client): tmux is
    /// nudged for it without waiting for another end.
    #[test]
    fn an_unreaped_child_seen_under_one_client_is_nudged_for_under_the_next() {
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        let mut panes = Panes::new(std::process::id()).unwrap();
        panes.refresh();
        wait_until(
            &mut panes,
            |w| matches!(w, Woke::Ended(p) if p.contains(&zombie.id())),
        );
        assert!(panes.unreaped());
        // The next client: it ends by itself a moment later.
        let mut client = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let nudged = panes.nudges;
        let status = wait_kicking(
            &mut client,
            &mut panes,
            &Poke::default(),
            Duration::from_secs(3600),
        );
        assert!(status.unwrap().success());
        assert!(panes.nudges > nudged, "not nudged for the unreaped child");
        zombie.wait().unwrap();
    }

    /// A poke (the daemon made panes) wakes the wait, once per poke.
    #[test]
    fn a_poke_wakes_the_wait() {
        let mut panes = Panes::new(std::process::id()).unwrap();
        let poke = Poke::default();
        poke.poke(&[1]);
        poke.set(Arc::clone(&panes.poke));
        poke.poke(&[2, 3]);
        wait_until(&mut panes, |w| *w == Woke::Poked);
        let mut count = [0u8; 8];
        assert!(
            rustix::io::read(&*panes.poke, &mut count).is_err(),
            "the poke was read"
        );
        // What came before the watch ran is for its first listing.
        assert_eq!(poke.take(), [2, 3]);
        assert!(poke.take().is_empty());
    }

    /// The first processes of panes the daemon made are watched as they
    /// are handed over, with no listing of the server's children (which
    /// may miss one); a process that is not the server's is not.
    #[test]
    fn panes_the_daemon_made_are_watched_without_a_listing() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut panes = Panes::new(std::process::id()).unwrap();
        panes.watch_made(vec![child.id(), 1]);
        assert!(panes.watched.contains_key(&child.id()));
        assert!(!panes.watched.contains_key(&1), "init is not the server's");
        child.kill().unwrap();
        wait_until(
            &mut panes,
            |w| matches!(w, Woke::Ended(p) if p.contains(&child.id())),
        );
        assert!(panes.unreaped());
        child.wait().unwrap();
    }

    /// The watch's client ending wakes the wait as the client.
    #[test]
    fn the_clients_end_wakes_the_wait() {
        let mut panes = Panes::new(std::process::id()).unwrap();
        let mut client = std::process::Command::new("true").spawn().unwrap();
        let pidfd = pidfd_open(
            Pid::from_raw(client.id() as i32).unwrap(),
            PidfdFlags::empty(),
        )
        .unwrap();
        panes.set_client(pidfd).unwrap();
        wait_until(&mut panes, |w| *w == Woke::Client);
        client.wait().unwrap();
    }

    #[test]
    fn the_channel_is_stable_and_differs_by_state_directory() {
        assert_eq!(channel("/a/state"), channel("/a/state"));
        assert_ne!(channel("/a/state"), channel("/b/state"));
        let c = channel("/home/me/.local/share/marvel");
        assert!(c.starts_with("marvel-") && c.len() == 23, "{c}");
        assert!(c[7..].bytes().all(|b| b.is_ascii_hexdigit()), "{c}");
        assert_eq!(hook_command("/x"), format!("wait-for -S {}", channel("/x")));
    }
}
