//! kill -9 of a program → its replacement running, seen through `/proc`
//! (no status command polled meanwhile), then seen in the status command.
//! marvel's role uses the shortest backoff it accepts (1 ms), as the peers
//! restart at once. The same measure is taken of each peer.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::harness::{DEADLINE, Instance, Options, check_interrupt, nap, tree, wait_new_program};
use crate::phases::{Plan, ms, poll, row, session_key, team_running};
use crate::report::{Report, fmt_num};
use crate::stats::Samples;

/// The program every supervisor runs here, started directly.
pub const SLEEP_ARGS: [&str; 1] = ["100000"];

#[derive(Debug, Clone, Default)]
pub struct Restarts {
    pub sessions: usize,
    /// kill → the new program running (its process exec'd), from /proc.
    pub running: Samples,
    /// kill → the status command shows the new program.
    pub visible: Samples,
}

/// The parent of `pid`, from `/proc`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which may hold anything, in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// One kill: the victim's pid, the supervisor's process under which the
/// replacement appears, a poll of the status command that says whether
/// the replacement is visible. Returns (running, visible) in ms.
pub fn time_restart(
    victim: u32,
    root: u32,
    mut visible: impl FnMut() -> bool,
) -> Option<(f64, f64)> {
    let before: HashSet<u32> = tree(&[root]).into_iter().collect();
    let parent = parent_of(victim);
    let t_kill = Instant::now();
    // SAFETY: the pid of a program this bench's supervisor started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let running = wait_new_program(root, parent, &before, "sleep", DEADLINE)?;
    loop {
        check_interrupt();
        if visible() {
            return Some((ms(running - t_kill), ms(t_kill.elapsed())));
        }
        if t_kill.elapsed() > DEADLINE {
            return None;
        }
    }
}

pub fn restart(plan: &Plan, sessions: usize, rep: Option<&mut Report>) -> Restarts {
    let inst = Instance::new("restart", &plan.tmux, Options::default());
    let command = format!("[\"sleep\", \"{}\"]", SLEEP_ARGS[0]);
    inst.apply_and_wait("team.ron", &team_running(sessions as u32, "1ms", &command));
    nap(plan.settle);
    let server = inst.tmux_server_pid().expect("tmux server pid");
    let mut out = Restarts {
        sessions,
        ..Restarts::default()
    };
    for i in 0..plan.restart_kills {
        check_interrupt();
        let key = session_key((i * 7) % sessions);
        let rows = inst.sessions();
        let victim = row(&rows, &key, "running")
            .and_then(|r| r["pid"].as_u64())
            .unwrap_or_else(|| panic!("{key} is not running")) as u32;
        let seen = |inst: &Instance| {
            let (_, _, rows) = poll(inst);
            row(&rows, &key, "running").is_some_and(|r| r["pid"].as_u64() != Some(victim as u64))
        };
        let (running, visible) = time_restart(victim, server, || seen(&inst))
            .unwrap_or_else(|| panic!("{key} was not replaced\n{}", inst.daemon_log_tail(20)));
        out.running.push(running);
        out.visible.push(visible);
        nap(Duration::from_millis(100));
    }
    println!(
        "  marvel, {sessions} sessions, backoff 1 ms: kill -9 → replacement running p50 {} / p99 {} ms (from /proc), visible in get p50 {} ms",
        fmt_num(out.running.pct(50.0)),
        fmt_num(out.running.pct(99.0)),
        fmt_num(out.visible.pct(50.0)),
    );
    if let Some(rep) = rep {
        rep.figure("restart_running_p50_ms", out.running.pct(50.0), "ms", 6.0);
        rep.set("restart_running_p99_ms", out.running.pct(99.0));
        rep.set("restart_running_samples", out.running.len() as f64);
        rep.set("restart_visible_p50_ms", out.visible.pct(50.0));
        rep.set("restart_visible_p99_ms", out.visible.pct(99.0));
    }
    out
}
