//! The watch on a tmux server: hooks on marvel's panes and team sessions
//! signal a `wait-for` channel, and one `tmux wait-for` client, blocked on
//! that channel, wakes the daemon. Nothing runs while nothing happens. A
//! signal with no client waiting is latched by tmux, so no wake-up is lost
//! between two clients (several may fold into one).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

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

/// Runs the watch until it ends; called on its own thread.
pub(super) fn run(tmux: Tmux, owner: String, server_pid: u32, kick: Duration, mut notify: Notify) {
    let channel = channel(&owner);
    let mut first = true;
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
        let status = match wait_kicking(&mut child, server_pid, kick) {
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

/// Waits for the client to end. Every `kick` meanwhile the server gets
/// SIGCHLD: tmux 3.3a built with libutempter can miss the end of a pane's
/// process, and with it the `pane-died` hook, until another child event;
/// the signal makes it reap what it missed (a no-op otherwise).
fn wait_kicking(child: &mut Child, server_pid: u32, kick: Duration) -> std::io::Result<ExitStatus> {
    let pidfd =
        Pid::from_raw(child.id() as i32).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok());
    let Some(pidfd) = pidfd else {
        // No pidfd (a kernel before 5.3): wait without kicking.
        return child.wait();
    };
    let timeout = Timespec {
        tv_sec: kick.as_secs() as i64,
        tv_nsec: i64::from(kick.subsec_nanos()),
    };
    loop {
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => kick_server(server_pid),
            Ok(_) => return child.wait(),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
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
