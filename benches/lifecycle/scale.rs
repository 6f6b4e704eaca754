//! The scaling curve: one daemon grown step by step (50 → 2 000 sessions
//! in a full run), and at each size what idling costs, how long `get
//! sessions` takes, how soon a death reaches an `events --follow` reader,
//! and how many bytes the daemon writes to disk per death.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::harness::IDLE_COMMAND;
use crate::harness::{
    Follower, Instance, Options, check_interrupt, ms_between, nap, time_of, write_bytes,
};
use crate::phases::{BACKOFF_MS, BIG_DEADLINE, IDLE_AFTER, Plan, marvel_idle, row, time_get};
use crate::report::{Report, fmt_num};
use crate::stats::Samples;

/// What one step of the curve measured.
struct Step {
    idle: crate::phases::MarvelIdle,
    get_ms: f64,
    get_json_ms: f64,
    detect: Samples,
    detect_daemon: Samples,
    bytes_per_death: f64,
    /// Whether the journal was folded into a new snapshot during the deaths.
    folded: bool,
    /// What the journal grew by per death (NaN when it was folded).
    journal_per_death: f64,
    state_kb: f64,
}

/// A role holds at most this many replicas.
const ROLE_MAX: usize = 1000;

/// `n` idle programs in roles of at most [`ROLE_MAX`] replicas (`w`, then
/// `w1`, `w2`...): a role that is full is never touched again as the team
/// grows.
fn team(n: usize) -> String {
    let roles: Vec<String> = (0..n.div_ceil(ROLE_MAX))
        .map(|r| {
            let replicas = (n - r * ROLE_MAX).min(ROLE_MAX);
            format!(
                "Role(name: \"{}\", replicas: {replicas}, command: {IDLE_COMMAND}, \
                 backoff: (initial: \"{BACKOFF_MS}ms\", max: \"{BACKOFF_MS}ms\", factor: 1.0, \
                 jitter: 0.0), max_restarts: None, idle_after: \"{IDLE_AFTER}\")",
                role_name(r)
            )
        })
        .collect();
    format!(
        "Team(name: \"bench\", workspace: \"bench\", roles: [{}])\n",
        roles.join(", ")
    )
}

fn role_name(r: usize) -> String {
    if r == 0 { "w".into() } else { format!("w{r}") }
}

/// The key of the `slot`-th session of [`team`].
fn key(slot: usize) -> String {
    format!(
        "bench/bench/{}-{}",
        role_name(slot / ROLE_MAX),
        slot % ROLE_MAX
    )
}

pub fn scale(plan: &Plan, rep: &mut Report) {
    let mut inst = Instance::new("scale", &plan.tmux, Options::default());
    inst.deadline = BIG_DEADLINE;
    let mut curve = Map::new();
    for &n in &plan.scale_sizes {
        check_interrupt();
        let t = Instant::now();
        inst.apply_and_wait("team.ron", &team(n));
        println!(
            "  {n} sessions running ({} s to grow to it)",
            fmt_num(t.elapsed().as_secs_f64())
        );
        let step = measure(&inst, plan, n);
        curve.insert(
            n.to_string(),
            json!({
                "idle_cpu_pct": step.idle.daemon_cpu_pct,
                "idle_tmux_cpu_pct": step.idle.tmux_cpu_pct,
                "idle_rss_mb": step.idle.daemon_rss_mb,
                "total_idle_cpu_pct": step.idle.total_cpu_pct,
                "total_pss_mb": step.idle.total_pss_mb,
                "get_sessions_median_ms": step.get_ms,
                "get_sessions_json_median_ms": step.get_json_ms,
                "detect_events_p50_ms": step.detect.pct(50.0),
                "detect_events_p99_ms": step.detect.pct(99.0),
                "detect_daemon_p50_ms": step.detect_daemon.pct(50.0),
                "deaths": step.detect.len(),
                "persist_bytes_per_death": step.bytes_per_death,
                "persist_folded_during_deaths": step.folded,
                "journal_bytes_per_death": step.journal_per_death,
                "state_file_kb": step.state_kb,
            }),
        );
        if n == plan.large {
            rep.figure(
                &format!("detect_events_p99_ms_{n}"),
                step.detect.pct(99.0),
                "ms",
                10.0,
            );
            rep.set(&format!("detect_events_p50_ms_{n}"), step.detect.pct(50.0));
            rep.set(
                &format!("detect_daemon_p99_ms_{n}"),
                step.detect_daemon.pct(99.0),
            );
            rep.figure(
                &format!("idle_cpu_pct_{n}"),
                step.idle.daemon_cpu_pct,
                "%",
                0.05,
            );
            rep.figure(
                &format!("idle_rss_mb_{n}"),
                step.idle.daemon_rss_mb,
                "MB",
                15.0,
            );
            rep.figure(
                &format!("idle_tmux_cpu_pct_{n}"),
                step.idle.tmux_cpu_pct,
                "%",
                0.1,
            );
            rep.set(&format!("total_idle_cpu_pct_{n}"), step.idle.total_cpu_pct);
            rep.set(&format!("total_pss_mb_{n}"), step.idle.total_pss_mb);
        }
        if n == plan.huge {
            rep.figure(
                &format!("get_sessions_median_ms_{n}"),
                step.get_ms,
                "ms",
                15.0,
            );
            rep.set(
                &format!("get_sessions_json_median_ms_{n}"),
                step.get_json_ms,
            );
            rep.figure(
                &format!("persist_bytes_per_death_{n}"),
                step.bytes_per_death,
                "B",
                8192.0,
            );
            rep.set(
                &format!("persist_folded_during_deaths_{n}"),
                if step.folded { 1.0 } else { 0.0 },
            );
            rep.set(
                &format!("journal_bytes_per_death_{n}"),
                step.journal_per_death,
            );
            rep.set(&format!("state_file_kb_{n}"), step.state_kb);
        }
    }
    rep.set_value("scaling", Value::Object(curve));
}

fn measure(inst: &Instance, plan: &Plan, n: usize) -> Step {
    // The curve's own figures go into `scaling`; the keys marvel_idle sets
    // are those of the sessions phase.
    let mut scratch = Report::default();
    let idle = marvel_idle(inst, plan, n, &mut scratch);
    let get = time_get(inst, &["get", "sessions"], plan.get_runs);
    let get_json = time_get(inst, &["get", "sessions", "-o", "json"], plan.get_runs);
    let deaths = deaths(inst, n, plan.scale_deaths.min(n));
    let state_kb = std::fs::metadata(inst.state_dir().join("state.json"))
        .map_or(f64::NAN, |m| m.len() as f64 / 1024.0);
    println!(
        "  at {n}: get {} ms, death → crashed event p50 {} / p99 {} ms, {} bytes written per death{} (state file {} KB)",
        fmt_num(get.median()),
        fmt_num(deaths.detect.pct(50.0)),
        fmt_num(deaths.detect.pct(99.0)),
        fmt_num(deaths.bytes_per_death),
        if deaths.folded {
            ", the journal folded meanwhile".to_string()
        } else {
            format!(", {} of journal", fmt_num(deaths.journal_per_death))
        },
        fmt_num(state_kb)
    );
    Step {
        idle,
        get_ms: get.median(),
        get_json_ms: get_json.median(),
        detect: deaths.detect,
        detect_daemon: deaths.detect_daemon,
        bytes_per_death: deaths.bytes_per_death,
        folded: deaths.folded,
        journal_per_death: deaths.journal_per_death,
        state_kb,
    }
}

/// What [`deaths`] measured.
struct Deaths {
    detect: Samples,
    detect_daemon: Samples,
    bytes_per_death: f64,
    folded: bool,
    journal_per_death: f64,
}

/// The state snapshot's inode (a fold writes a new file in its place) and
/// the journal's length.
fn store_files(inst: &Instance) -> (Option<u64>, Option<u64>) {
    use std::os::unix::fs::MetadataExt;
    let dir = inst.state_dir();
    (
        std::fs::metadata(dir.join("state.json"))
            .ok()
            .map(|m| m.ino()),
        std::fs::metadata(dir.join("state.journal"))
            .ok()
            .map(|m| m.len()),
    )
}

/// Kills `count` programs one at a time, each in its own slot, with only
/// an `events --follow` reader attached: the time from the kill to the
/// `crashed` event, and the bytes the daemon wrote to storage over the
/// whole of each death (the crash, the restart, the new program running),
/// and whether that included a fold of the journal into a new snapshot.
fn deaths(inst: &Instance, n: usize, count: usize) -> Deaths {
    let daemon = inst.daemon_pid();
    let rows = inst.sessions();
    let follower = Follower::start(inst, &["crashed", "started"]);
    let mut detect = Samples::default();
    let mut detect_daemon = Samples::default();
    // Let the follower connect before anything happens.
    nap(Duration::from_millis(200));
    follower.drain();
    let bytes0 = write_bytes(daemon).unwrap_or(0);
    let (snapshot0, journal0) = store_files(inst);
    for i in 0..count {
        check_interrupt();
        // 7 is prime to every size used, so the slots are all different.
        let key = key((i * 7) % n);
        let victim = row(&rows, &key, "running")
            .and_then(|r| r["pid"].as_u64())
            .unwrap_or_else(|| panic!("{key} is not running")) as i32;
        let t_kill_w = Utc::now();
        let t_kill = Instant::now();
        // SAFETY: the pid of a program this bench's daemon started.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        let mut crashed = false;
        loop {
            let (at, ev) = follower
                .next(BIG_DEADLINE.saturating_sub(t_kill.elapsed()))
                .unwrap_or_else(|| panic!("{key}: no crash and replacement seen"));
            if ev["key"] != key.as_str() {
                continue;
            }
            match ev["kind"].as_str() {
                Some("crashed") if !crashed => {
                    crashed = true;
                    detect.push_duration(at - t_kill);
                    if let Some(t) = time_of(&ev["at"]) {
                        detect_daemon.push(ms_between(t_kill_w, t));
                    }
                }
                Some("started") if crashed => break,
                _ => {}
            }
        }
    }
    // What the last replacement's start made the daemon write.
    nap(Duration::from_millis(300));
    let bytes = write_bytes(daemon).unwrap_or(0).saturating_sub(bytes0);
    let (snapshot1, journal1) = store_files(inst);
    let folded = snapshot0 != snapshot1;
    let per = |total: f64| {
        if count == 0 {
            f64::NAN
        } else {
            total / count as f64
        }
    };
    let journal_per_death = match (journal0, journal1) {
        (Some(a), Some(b)) if !folded && b >= a => per((b - a) as f64),
        _ => f64::NAN,
    };
    Deaths {
        detect,
        detect_daemon,
        bytes_per_death: per(bytes as f64),
        folded,
        journal_per_death,
    }
}
