//! The measurements of marvel itself, one function per phase. Each phase
//! runs on fresh instances (own daemon, state directory and tmux server)
//! that are cleaned up when the phase ends, whether it succeeds or not.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};

use crate::harness::{
    DEADLINE, Follower, IDLE_COMMAND, Instance, MARVEL, Options, Supervisor, check_interrupt,
    clock_ticks_per_second, cmdline, cpu_ns, cpu_ticks, ms_between, nap, output_within, parent_pid,
    private_kb, pss_kb, rss_kb, rss_split_kb, time_of, timed,
};
use crate::report::{Report, fmt_num};
use crate::stats::Samples;

/// Sizes and durations of one run; `quick` shrinks them for checking a
/// change. Figures taken at a size carry it in their key.
#[derive(Clone)]
pub struct Plan {
    pub quick: bool,
    pub tmux: PathBuf,
    /// Bring-ups of 100 replicas, each on a fresh daemon and tmux server.
    pub bringup_runs: usize,
    /// The size of the large bring-up (1 000 in a full run).
    pub bringup_large: usize,
    /// Deaths timed through `get` and through `events` alone, at 200.
    pub deaths: usize,
    pub quiet_deaths: usize,
    /// Time given to a team that just came up before anything is measured.
    pub settle: Duration,
    /// Every idle window: marvel's and each peer's.
    pub idle_window: Duration,
    pub sweep_sizes: Vec<u32>,
    pub sweep_window: Duration,
    pub get_runs: usize,
    /// The sizes of the scaling curve, one daemon grown step by step.
    pub scale_sizes: Vec<usize>,
    /// Where the curve's figures at 1 000 and 2 000 sessions are taken.
    pub large: usize,
    pub huge: usize,
    /// Deaths per step of the curve.
    pub scale_deaths: usize,
    pub storm_roles: usize,
    pub storm_window: Duration,
    pub restart_sessions: usize,
    pub restart_kills: usize,
    /// Programs each supervisor runs in the side-by-side comparison.
    pub peer_programs: usize,
    pub churn_window: Duration,
}

impl Plan {
    pub fn new(quick: bool, tmux: PathBuf) -> Plan {
        let churn = |default: u64| {
            Duration::from_secs(
                std::env::var("MARVEL_BENCH_CHURN_S")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(default),
            )
        };
        if quick {
            Plan {
                quick,
                tmux,
                bringup_runs: 1,
                bringup_large: 200,
                deaths: 20,
                quiet_deaths: 10,
                settle: Duration::from_secs(1),
                idle_window: Duration::from_secs(3),
                sweep_sizes: vec![10, 100, 250],
                sweep_window: Duration::from_secs(2),
                get_runs: 10,
                scale_sizes: vec![50, 200],
                large: 200,
                huge: 200,
                scale_deaths: 10,
                storm_roles: 50,
                storm_window: Duration::from_secs(4),
                restart_sessions: 50,
                restart_kills: 8,
                peer_programs: 50,
                churn_window: churn(6),
            }
        } else {
            Plan {
                quick,
                tmux,
                bringup_runs: 3,
                bringup_large: 1000,
                deaths: 200,
                quiet_deaths: 100,
                settle: Duration::from_secs(6),
                idle_window: Duration::from_secs(60),
                sweep_sizes: vec![10, 100, 500],
                sweep_window: Duration::from_secs(10),
                get_runs: 30,
                scale_sizes: vec![50, 200, 500, 1000, 2000],
                large: 1000,
                huge: 2000,
                scale_deaths: 60,
                storm_roles: 50,
                storm_window: Duration::from_secs(60),
                restart_sessions: 200,
                restart_kills: 30,
                peer_programs: 200,
                churn_window: churn(600),
            }
        }
    }

    /// The sizes and durations, for the JSON.
    pub fn sizes(&self) -> Value {
        json!({
            "bringup": 100,
            "bringup_runs": self.bringup_runs,
            "bringup_large": self.bringup_large,
            "sessions": SESSIONS,
            "deaths": self.deaths,
            "quiet_deaths": self.quiet_deaths,
            "idle_window_s": self.idle_window.as_secs_f64(),
            "sweep": self.sweep_sizes,
            "sweep_window_s": self.sweep_window.as_secs_f64(),
            "get_runs": self.get_runs,
            "scale": self.scale_sizes,
            "large": self.large,
            "huge": self.huge,
            "scale_deaths": self.scale_deaths,
            "storm_roles": self.storm_roles,
            "storm_window_s": self.storm_window.as_secs_f64(),
            "restart_sessions": self.restart_sessions,
            "restart_kills": self.restart_kills,
            "peer_programs": self.peer_programs,
            "churn_window_s": self.churn_window.as_secs_f64(),
        })
    }
}

/// The size of the sessions phase, where the first targets are set.
pub const SESSIONS: usize = 200;

/// The sweep interval used while counting tmux processes.
const COUNT_SWEEP_MS: u64 = 200;
/// Team and role names used by every phase.
const WORKSPACE: &str = "bench";
const TEAM: &str = "bench";
const ROLE: &str = "w";

/// How long a bench session stays busy after its last output: short, so
/// that the sessions have settled before anything idle is measured.
pub const IDLE_AFTER: &str = "2s";

/// A one-role team of `replicas` idle programs with a constant backoff.
pub fn team(replicas: u32, backoff: &str) -> String {
    team_running(replicas, backoff, IDLE_COMMAND)
}

/// A one-role team of `replicas` programs running `command` (a RON list).
pub fn team_running(replicas: u32, backoff: &str, command: &str) -> String {
    format!(
        "Team(name: \"{TEAM}\", workspace: \"{WORKSPACE}\", roles: [Role(name: \"{ROLE}\", \
         replicas: {replicas}, command: {command}, backoff: (initial: \"{backoff}\", \
         max: \"{backoff}\", factor: 1.0, jitter: 0.0), max_restarts: None, \
         idle_after: \"{IDLE_AFTER}\")])\n"
    )
}

pub fn session_key(slot: usize) -> String {
    format!("{WORKSPACE}/{TEAM}/{ROLE}-{slot}")
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------- bring-up

/// `marvel run` of 100 replicas until all are running, on a fresh daemon
/// and a fresh tmux server each time; then once at the large size, with
/// the CPU it costs.
pub fn bringup(plan: &Plan, rep: &mut Report) {
    const N: usize = 100;
    let mut total = Samples::default();
    let mut polled = Samples::default();
    let mut run_cmd = Samples::default();
    for i in 0..plan.bringup_runs {
        let inst = Instance::new(&format!("bringup{i}"), &plan.tmux, Options::default());
        // The daemon runs before the clock starts; the tmux server does not.
        inst.daemon_pid();
        let follower = Follower::start(&inst, &["started"]);
        let path = inst.manifest("team.ron", &team(N as u32, "1s"));
        let t0 = Instant::now();
        let (run_t, out) = timed(inst.cmd(&["run", &path]));
        assert!(out.status.success(), "marvel run failed: {out:?}");
        run_cmd.push_duration(run_t);
        let last = all_started(&follower, N, t0, DEADLINE);
        total.push_duration(last - t0);
        // Seen through `get` too (polled, so a few ms later).
        inst.wait("100 running", Duration::from_millis(5), |i| {
            let r = i.roles();
            (r.first().and_then(|r| r["running"].as_u64()) == Some(N as u64)).then_some(())
        });
        polled.push_duration(t0.elapsed());
        println!(
            "  bring-up {}: {} ms to {N} started events, {} ms until get roles shows {N} running (run itself {} ms)",
            i + 1,
            fmt_num(ms(last - t0)),
            fmt_num(polled.0[i]),
            fmt_num(ms(run_t))
        );
    }
    rep.figure("bringup_100_s", total.median() / 1000.0, "s", 2.0);
    rep.set("bringup_100_max_s", total.max() / 1000.0);
    rep.set("bringup_100_runs", total.len() as f64);
    rep.set("bringup_100_get_visible_s", polled.median() / 1000.0);
    rep.set("bringup_run_command_ms", run_cmd.median());
    bringup_large(plan, rep);
    tmux_creation_floor(plan, rep);
}

/// Waits for `n` distinct `started` events; returns when the last came.
fn all_started(follower: &Follower, n: usize, t0: Instant, limit: Duration) -> Instant {
    let mut started = HashSet::new();
    let mut last = t0;
    while started.len() < n {
        check_interrupt();
        let left = limit.saturating_sub(t0.elapsed());
        let (at, ev) = follower
            .next(left)
            .unwrap_or_else(|| panic!("only {} of {n} started", started.len()));
        if ev["kind"] == "started"
            && let Some(k) = ev["key"].as_str()
        {
            started.insert(k.to_string());
            last = at;
        }
    }
    last
}

/// The large bring-up: until every program runs, and the CPU the daemon
/// (and all of marvel) spent on it.
fn bringup_large(plan: &Plan, rep: &mut Report) {
    let n = plan.bringup_large;
    let inst = Instance::new("bringup-large", &plan.tmux, Options::default());
    let daemon = inst.daemon_pid();
    let follower = Follower::start(&inst, &["started"]);
    let path = inst.manifest("team.ron", &team(n as u32, "1s"));
    let cpu0 = cpu_ticks(daemon).expect("daemon stat");
    let t0 = Instant::now();
    let (run_t, out) = timed(inst.cmd(&["run", &path]));
    assert!(out.status.success(), "marvel run failed: {out:?}");
    let last = all_started(&follower, n, t0, BIG_DEADLINE);
    let cpu1 = cpu_ticks(daemon).expect("daemon stat");
    let tick = clock_ticks_per_second();
    let daemon_s = (cpu1.0 - cpu0.0) as f64 / tick;
    let with_clients_s = (cpu1.0 + cpu1.1 - cpu0.0 - cpu0.1) as f64 / tick;
    // The tmux server did not exist before `run`: all it used is this.
    let server = inst.tmux_server_pid().expect("tmux server pid");
    let server_s = cpu_ticks(server).map_or(f64::NAN, |(own, reaped)| (own + reaped) as f64 / tick);
    let secs = (last - t0).as_secs_f64();
    rep.figure(&format!("bringup_{n}_s"), secs, "s", 5.0);
    rep.figure(&format!("bringup_{n}_daemon_cpu_s"), daemon_s, "s", 0.3);
    rep.set(
        &format!("bringup_{n}_daemon_with_tmux_clients_cpu_s"),
        with_clients_s,
    );
    rep.set(&format!("bringup_{n}_tmux_server_cpu_s"), server_s);
    rep.set(&format!("bringup_{n}_run_command_ms"), ms(run_t));
    println!(
        "  bring-up of {n}: {} s to {n} started events; daemon CPU {} s ({} s with its tmux clients), tmux server and its children {} s",
        fmt_num(secs),
        fmt_num(daemon_s),
        fmt_num(with_clients_s),
        fmt_num(server_s)
    );
}

/// How long the large steps (a thousand sessions and more) may take.
pub const BIG_DEADLINE: Duration = Duration::from_secs(300);

/// tmux's own cost to create 100 detached sessions in chained commands of
/// 50, as marvel does, but without the shim or the log pipe.
fn tmux_creation_floor(plan: &Plan, rep: &mut Report) {
    let server = PrivateServer::new(&plan.tmux, "floor");
    let t0 = Instant::now();
    for batch in 0..2 {
        let mut c = server.cmd();
        for i in 0..50 {
            if i > 0 {
                c.arg(";");
            }
            c.args([
                "new-session",
                "-d",
                "-s",
                &format!("f{}", batch * 50 + i),
                "-x",
                "200",
                "-y",
                "50",
                "--",
                "sleep",
                "100000",
            ]);
        }
        let out = output_within(c, DEADLINE).expect("tmux new-session");
        assert!(out.status.success(), "tmux: {out:?}");
    }
    let created = t0.elapsed();
    let t1 = Instant::now();
    let mut c = server.cmd();
    c.args(["list-panes", "-a", "-F", "#{pane_id} #{pane_pid}"]);
    let out = output_within(c, DEADLINE).expect("list-panes");
    let listed = t1.elapsed();
    let panes = String::from_utf8_lossy(&out.stdout).lines().count();
    rep.set("floor_tmux_create_100_sessions_ms", ms(created));
    rep.set("floor_tmux_list_panes_100_ms", ms(listed));
    println!(
        "  floor: tmux alone creates 100 sessions in {} ms; list-panes of {panes} panes takes {} ms",
        fmt_num(ms(created)),
        fmt_num(ms(listed))
    );
}

/// A bare tmux server on a private socket, killed on drop.
struct PrivateServer {
    tmux: PathBuf,
    socket: String,
}

impl PrivateServer {
    fn new(tmux: &Path, label: &str) -> PrivateServer {
        PrivateServer {
            tmux: tmux.to_path_buf(),
            socket: format!("marvel-bench-{}-{label}", std::process::id()),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.tmux);
        c.args(["-L", &self.socket, "-f", "/dev/null"])
            .env_remove("TMUX");
        c
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        crate::harness::kill_tmux_server(&self.tmux, &self.socket);
    }
}

// --------------------------------------------------- 200 sessions: idle etc.

/// What marvel measured at one size that the peers are compared with.
#[derive(Default, Clone)]
pub struct MarvelIdle {
    pub sessions: usize,
    /// The daemon alone: CPU by schedstat and resident memory.
    pub daemon_cpu_pct: f64,
    pub daemon_rss_mb: f64,
    /// The tmux server's own CPU (schedstat).
    pub tmux_cpu_pct: f64,
    /// All of marvel: daemon, tmux server, tmux clients and helpers.
    pub total_cpu_pct: f64,
    pub total_pss_mb: f64,
    pub get_table_ms: f64,
    pub get_json_ms: f64,
}

/// With 200 idle sessions: daemon CPU and memory, all of marvel's, helper
/// memory, `get` wall time, then deaths one at a time for detection and
/// respawn timing.
pub fn sessions_200(plan: &Plan, rep: &mut Report) -> MarvelIdle {
    let inst = Instance::new("s200", &plan.tmux, Options::default());
    let up = inst.apply_and_wait(
        "team.ron",
        &team(SESSIONS as u32, &format!("{BACKOFF_MS}ms")),
    );
    println!("  {SESSIONS} sessions running after {} ms", fmt_num(ms(up)));
    let mut out = marvel_idle(&inst, plan, SESSIONS, rep);
    let n = SESSIONS;
    rep.figure(&format!("idle_cpu_pct_{n}"), out.daemon_cpu_pct, "%", 0.1);
    rep.figure(&format!("idle_rss_mb_{n}"), out.daemon_rss_mb, "MB", 10.0);
    let pid = inst.daemon_pid();
    if let Some((anon, file)) = rss_split_kb(pid) {
        rep.set(&format!("idle_rss_anon_mb_{n}"), anon as f64 / 1024.0);
        rep.set(&format!("idle_rss_file_mb_{n}"), file as f64 / 1024.0);
        println!(
            "  daemon RSS: {} MB anonymous, {} MB file-backed (binary and libraries)",
            fmt_num(anon as f64 / 1024.0),
            fmt_num(file as f64 / 1024.0)
        );
    }

    // Helper processes: the shim and the log pipe of every session.
    let helpers = helper_memory(&inst, n);
    rep.figure(
        "per_session_overhead_kb",
        helpers.pss_per_session_kb,
        "KB",
        1024.0,
    );
    rep.set("shim_pss_kb", helpers.shim_pss_kb);
    rep.set("logpipe_pss_kb", helpers.logpipe_pss_kb);
    rep.set("shim_rss_kb", helpers.shim_rss_kb);
    rep.set("shim_private_kb", helpers.shim_private_kb);
    rep.set("logpipe_private_kb", helpers.logpipe_private_kb);
    rep.set("helper_processes", helpers.count as f64);

    // `get sessions`: the status query compared with the peers.
    let table = time_get(&inst, &["get", "sessions"], plan.get_runs);
    let json = time_get(&inst, &["get", "sessions", "-o", "json"], plan.get_runs);
    out.get_table_ms = table.median();
    out.get_json_ms = json.median();
    rep.set(&format!("get_sessions_median_ms_{n}"), table.median());
    rep.set(&format!("get_sessions_json_median_ms_{n}"), json.median());

    detection_floor(&inst, rep);
    quiet_deaths(&inst, n, plan.quiet_deaths, rep);
    deaths(&inst, n, plan.deaths, rep);
    out
}

/// The idle figures of a settled marvel with `n` sessions: the daemon's
/// CPU and memory, the tmux server's CPU, and all of marvel's CPU and PSS
/// (supporting keys at `n`).
pub fn marvel_idle(inst: &Instance, plan: &Plan, n: usize, rep: &mut Report) -> MarvelIdle {
    // Let the start-up burst settle (shim reports, the first sweep).
    let pid = inst.daemon_pid();
    nap(plan.settle);
    inst.wait_quiet();
    let server = inst.tmux_server_pid();
    let whole = marvel_tree(inst);
    let idle = idle("marvel daemon", pid, server, Some(&whole), plan.idle_window);
    let pss = whole.pss_by_comm();
    let total_pss_kb: u64 = pss.values().map(|(kb, _)| kb).sum();
    let total_pss_mb = total_pss_kb as f64 / 1024.0;
    rep.set(&format!("idle_cpu_pct_{n}_ticks"), idle.cpu_pct);
    rep.set(
        &format!("idle_cpu_pct_{n}_with_children"),
        idle.cpu_pct_children,
    );
    rep.set(
        &format!("idle_tmux_server_cpu_pct_{n}"),
        idle.server_cpu_pct_ns,
    );
    rep.set(
        &format!("idle_rss_mb_{n}_max"),
        idle.rss_max_kb as f64 / 1024.0,
    );
    rep.set(&format!("total_idle_cpu_pct_{n}"), idle.total_cpu_pct);
    rep.set(&format!("total_pss_mb_{n}"), total_pss_mb);
    rep.set_value(
        &format!("total_pss_kb_by_process_{n}"),
        json!(
            pss.iter()
                .map(|(k, (kb, count))| (k.clone(), json!({"kb": kb, "processes": count})))
                .collect::<serde_json::Map<String, Value>>()
        ),
    );
    println!(
        "  all of marvel at {n}: {}% CPU idle, {} MB PSS ({})",
        fmt_num(idle.total_cpu_pct),
        fmt_num(total_pss_mb),
        pss.iter()
            .map(|(k, (kb, c))| format!("{k} ×{c}: {} MB", fmt_num(*kb as f64 / 1024.0)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    MarvelIdle {
        sessions: n,
        daemon_cpu_pct: idle.cpu_pct_ns,
        daemon_rss_mb: idle.rss_kb as f64 / 1024.0,
        tmux_cpu_pct: idle.server_cpu_pct_ns,
        total_cpu_pct: idle.total_cpu_pct,
        total_pss_mb,
        ..MarvelIdle::default()
    }
}

/// All of an instance's marvel: its daemon and its tmux server, with
/// everything under them but the programs (`sleep`).
pub fn marvel_tree(inst: &Instance) -> Supervisor {
    let mut roots = vec![inst.daemon_pid()];
    roots.extend(inst.tmux_server_pid());
    Supervisor::new(roots, &["sleep"])
}

pub struct Idle {
    /// The process's own CPU: clock ticks, schedstat, and with its reaped
    /// children (ticks).
    pub cpu_pct: f64,
    pub cpu_pct_ns: f64,
    pub cpu_pct_children: f64,
    /// The tmux server's own CPU (schedstat), if one was given.
    pub server_cpu_pct_ns: f64,
    /// The whole supervisor's CPU, if its tree was given.
    pub total_cpu_pct: f64,
    pub rss_kb: u64,
    pub rss_max_kb: u64,
}

/// Samples a daemon's CPU time and resident memory over `window` in which
/// the bench does nothing to it; and, if given, its tmux server's CPU and
/// the whole supervisor's.
pub fn idle(
    who: &str,
    pid: u32,
    server: Option<u32>,
    whole: Option<&Supervisor>,
    window: Duration,
) -> Idle {
    let tick = clock_ticks_per_second();
    let (own0, kids0) = cpu_ticks(pid).expect("daemon stat");
    let ns0 = cpu_ns(pid).unwrap_or(0);
    let srv0 = server.and_then(cpu_ns).unwrap_or(0);
    let all0 = whole.map_or(0.0, Supervisor::cpu_ms);
    let t0 = Instant::now();
    let mut rss_max = 0;
    while t0.elapsed() < window {
        nap(Duration::from_secs(1).min(window.saturating_sub(t0.elapsed())));
        rss_max = rss_max.max(rss_kb(pid).unwrap_or(0));
    }
    let secs = t0.elapsed().as_secs_f64();
    let (own1, kids1) = cpu_ticks(pid).expect("daemon stat");
    let ns1 = cpu_ns(pid).unwrap_or(0);
    let srv1 = server.and_then(cpu_ns).unwrap_or(0);
    let all1 = whole.map_or(0.0, Supervisor::cpu_ms);
    let pct = |ticks: u64| ticks as f64 / tick / secs * 100.0;
    let ns_pct = |ns: u64| ns as f64 / 1e9 / secs * 100.0;
    let idle = Idle {
        cpu_pct: pct(own1 - own0),
        cpu_pct_ns: ns_pct(ns1.saturating_sub(ns0)),
        cpu_pct_children: pct(own1 - own0 + kids1 - kids0),
        server_cpu_pct_ns: ns_pct(srv1.saturating_sub(srv0)),
        total_cpu_pct: (all1 - all0) / 1000.0 / secs * 100.0,
        rss_kb: rss_kb(pid).unwrap_or(0),
        rss_max_kb: rss_max,
    };
    println!(
        "  idle over {secs:.0} s: {who} {}% CPU by schedstat ({}% in ticks, {}% with reaped children), RSS {} MB{}{}",
        fmt_num(idle.cpu_pct_ns),
        fmt_num(idle.cpu_pct),
        fmt_num(idle.cpu_pct_children),
        fmt_num(idle.rss_kb as f64 / 1024.0),
        if server.is_some() {
            format!("; tmux server {}%", fmt_num(idle.server_cpu_pct_ns))
        } else {
            String::new()
        },
        if whole.is_some() {
            format!("; whole supervisor {}%", fmt_num(idle.total_cpu_pct))
        } else {
            String::new()
        }
    );
    idle
}

struct Helpers {
    count: usize,
    pss_per_session_kb: f64,
    shim_pss_kb: f64,
    logpipe_pss_kb: f64,
    shim_rss_kb: f64,
    shim_private_kb: f64,
    logpipe_private_kb: f64,
}

/// PSS of the per-session helpers: the tmux server's children that run
/// `marvel shim` or `marvel logpipe`.
fn helper_memory(inst: &Instance, sessions: usize) -> Helpers {
    let server = inst.tmux_server_pid().expect("tmux server pid");
    let mut kinds: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for pid in crate::harness::all_pids() {
        if parent_pid(pid) != Some(server) {
            continue;
        }
        let argv = cmdline(pid);
        if argv.first().map(String::as_str) != Some(MARVEL) {
            continue;
        }
        match argv.get(1).map(String::as_str) {
            Some("shim") => kinds.entry("shim").or_default().push(pid),
            Some("logpipe") => kinds.entry("logpipe").or_default().push(pid),
            _ => {}
        }
    }
    let sum = |kind: &str, f: fn(u32) -> Option<u64>| -> (u64, usize) {
        let pids = kinds.get(kind).cloned().unwrap_or_default();
        (pids.iter().filter_map(|&p| f(p)).sum(), pids.len())
    };
    let avg = |(total, n): (u64, usize)| if n == 0 { 0.0 } else { total as f64 / n as f64 };
    let (shim_pss, shims) = sum("shim", pss_kb);
    let (pipe_pss, pipes) = sum("logpipe", pss_kb);
    let h = Helpers {
        count: shims + pipes,
        pss_per_session_kb: (shim_pss + pipe_pss) as f64 / sessions as f64,
        shim_pss_kb: avg((shim_pss, shims)),
        logpipe_pss_kb: avg((pipe_pss, pipes)),
        shim_rss_kb: avg(sum("shim", rss_kb)),
        shim_private_kb: avg(sum("shim", private_kb)),
        logpipe_private_kb: avg(sum("logpipe", private_kb)),
    };
    println!(
        "  helpers: {shims} shims ({} KB PSS each, {} KB private), {pipes} log pipes ({} KB PSS each); {} KB per session",
        fmt_num(h.shim_pss_kb),
        fmt_num(h.shim_private_kb),
        fmt_num(h.logpipe_pss_kb),
        fmt_num(h.pss_per_session_kb)
    );
    h
}

/// Wall time of whole `marvel` processes, after two warm-up runs.
pub fn time_get(inst: &Instance, args: &[&str], runs: usize) -> Samples {
    let mut s = Samples::default();
    for i in 0..runs + 2 {
        check_interrupt();
        let (d, out) = timed(inst.cmd(args));
        assert!(out.status.success(), "marvel {args:?}: {out:?}");
        if i >= 2 {
            s.push_duration(d);
        }
    }
    println!(
        "  marvel {}: median {} ms, p90 {} ms over {} runs",
        args.join(" "),
        fmt_num(s.median()),
        fmt_num(s.pct(90.0)),
        s.len()
    );
    s
}

/// One `get sessions -o json`, with the instants it started and ended.
pub fn poll(inst: &Instance) -> (Instant, Instant, Vec<Value>) {
    let t0 = Instant::now();
    let rows = inst.sessions();
    (t0, Instant::now(), rows)
}

pub fn row<'a>(rows: &'a [Value], key: &str, state: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["key"] == key && r["state"] == state)
}

/// What a death costs before `get` can show it, apart from marvel's own
/// code: one tmux client (`capture-pane` of the dead pane's last screen)
/// and a durable write of the state file (write, fsync, rename, fsync of
/// the directory).
fn detection_floor(inst: &Instance, rep: &mut Report) {
    let pane = inst
        .sessions()
        .first()
        .and_then(|r| r["pane"].as_str().map(str::to_string))
        .expect("a pane");
    let mut capture = Samples::default();
    let mut write = Samples::default();
    let state = std::fs::read(inst.state_dir().join("state.json")).unwrap_or_default();
    let tmp = inst.dir().join(".floor.tmp");
    let dst = inst.dir().join("floor.json");
    for _ in 0..20 {
        check_interrupt();
        let (d, out) =
            timed(inst.tmux_cmd(&["capture-pane", "-p", "-J", "-S", "-200", "-t", &pane]));
        assert!(out.status.success(), "capture-pane: {out:?}");
        capture.push_duration(d);
        let t = Instant::now();
        durable_write(&tmp, &dst, &state);
        write.push_duration(t.elapsed());
    }
    rep.set("floor_tmux_capture_pane_ms", capture.median());
    rep.set("floor_state_write_ms", write.median());
    rep.set("state_file_kb_200", state.len() as f64 / 1024.0);
    println!(
        "  floor: one capture-pane {} ms; a durable write of the {} KB state file {} ms",
        fmt_num(capture.median()),
        fmt_num(state.len() as f64 / 1024.0),
        fmt_num(write.median())
    );
}

fn durable_write(tmp: &Path, dst: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(tmp).expect("floor file");
    f.write_all(bytes).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    std::fs::rename(tmp, dst).expect("rename");
    if let Some(dir) = dst.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// The backoff of the 200-session role.
pub const BACKOFF_MS: i64 = 100;

/// Deaths observed only through `events --follow`, with nothing else
/// asking the daemon anything: what detection and respawn cost the daemon
/// itself, without the load of a client polling `get`.
fn quiet_deaths(inst: &Instance, sessions: usize, count: usize, rep: &mut Report) {
    if count == 0 {
        return;
    }
    let follower = Follower::start(inst, &["crashed", "created", "started"]);
    let mut detect_ev = Samples::default();
    let mut detect_daemon = Samples::default();
    let mut late = Samples::default();
    let mut late_placed = Samples::default();
    let mut late_started = Samples::default();
    let rows = inst.sessions();
    for i in 0..count {
        check_interrupt();
        // Slots from the far end, so the polled round finds them running.
        let key = session_key(sessions - 1 - i % sessions);
        let victim = row(&rows, &key, "running")
            .and_then(|r| r["pid"].as_u64())
            .unwrap_or_else(|| panic!("{key} is not running")) as i32;
        nap(Duration::from_millis(50));
        follower.drain();
        let t_kill_w = Utc::now();
        let t_kill = Instant::now();
        // SAFETY: the pid of a program this bench's daemon started.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        let (mut due, mut created) = (None, None);
        loop {
            let (at, ev) = follower
                .next(DEADLINE.saturating_sub(t_kill.elapsed()))
                .unwrap_or_else(|| panic!("{key}: no crash and replacement seen"));
            if ev["key"] != key.as_str() {
                continue;
            }
            let t = time_of(&ev["at"]);
            match ev["kind"].as_str() {
                Some("crashed") if due.is_none() => {
                    detect_ev.push_duration(at - t_kill);
                    if let Some(t) = t {
                        detect_daemon.push(ms_between(t_kill_w, t));
                    }
                    // When the backoff ends: one `get roles` during it.
                    due = Some(
                        inst.roles()
                            .first()
                            .and_then(|r| time_of(&r["next_restart_at"])),
                    );
                }
                // The `created` event is stamped when the pane exists.
                Some("created") if due.is_some() => created = t,
                Some("started") if created.is_some() => {
                    // The spawn decision is the session's `created_at`.
                    let rows = inst.sessions();
                    let decided =
                        row(&rows, &key, "running").and_then(|r| time_of(&r["created_at"]));
                    if let (Some(Some(due)), Some(dec), Some(placed), Some(st)) =
                        (due, decided, created, t)
                    {
                        late.push(ms_between(due, dec));
                        late_placed.push(ms_between(due, placed));
                        late_started.push(ms_between(due, st));
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    rep.set("detect_quiet_events_p50_ms", detect_ev.pct(50.0));
    rep.set("detect_quiet_events_p99_ms", detect_ev.pct(99.0));
    rep.set("detect_quiet_daemon_p50_ms", detect_daemon.pct(50.0));
    rep.set("detect_quiet_daemon_p99_ms", detect_daemon.pct(99.0));
    rep.set("detect_quiet_samples", detect_ev.len() as f64);
    rep.set("respawn_decided_late_quiet_p50_ms", late.pct(50.0));
    rep.set("respawn_decided_late_quiet_p99_ms", late.pct(99.0));
    rep.set("respawn_placed_late_quiet_p50_ms", late_placed.pct(50.0));
    rep.set("respawn_placed_late_quiet_p99_ms", late_placed.pct(99.0));
    rep.set("respawn_running_late_quiet_p50_ms", late_started.pct(50.0));
    rep.set("respawn_running_late_quiet_p99_ms", late_started.pct(99.0));
    println!(
        "  {} deaths with no client polling: crashed event read p50 {} / p99 {} ms after the kill (stamped p50 {} / p99 {}); replacement created p50 {} / p99 {} ms after its backoff, its pane there p50 {} / p99 {}, program started p50 {} / p99 {}",
        detect_ev.len(),
        fmt_num(detect_ev.pct(50.0)),
        fmt_num(detect_ev.pct(99.0)),
        fmt_num(detect_daemon.pct(50.0)),
        fmt_num(detect_daemon.pct(99.0)),
        fmt_num(late.pct(50.0)),
        fmt_num(late.pct(99.0)),
        fmt_num(late_placed.pct(50.0)),
        fmt_num(late_placed.pct(99.0)),
        fmt_num(late_started.pct(50.0)),
        fmt_num(late_started.pct(99.0)),
    );
}

/// Kills the program of one session at a time (kill -9 of its `pid`) and
/// measures how long until `get sessions` shows it crashed, when the
/// `crashed` event arrives, and how late the replacement is spawned
/// relative to the end of its backoff.
fn deaths(inst: &Instance, sessions: usize, count: usize, rep: &mut Report) {
    let follower = Follower::start(inst, &["crashed"]);
    let mut detect = Samples::default(); // kill → poll that showed it ended
    let mut detect_lo = Samples::default(); // kill → that poll started
    let mut detect_ev = Samples::default(); // kill → crashed event read
    let mut detect_daemon = Samples::default(); // kill → crashed event's own time
    let mut late = Samples::default(); // next_restart_at → created_at
    let mut late_started = Samples::default(); // next_restart_at → started_at
    let mut visible = Samples::default(); // kill → replacement seen running
    let mut poll_ms = Samples::default();
    let mut missed = 0usize;
    let (_, _, mut snap) = poll(inst);
    for i in 0..count {
        check_interrupt();
        let key = session_key(i % sessions);
        let t_wait = Instant::now();
        let victim = loop {
            if let Some(p) = row(&snap, &key, "running").and_then(|r| r["pid"].as_u64()) {
                break p as i32;
            }
            assert!(t_wait.elapsed() < DEADLINE, "{key} never ran again");
            nap(Duration::from_millis(10));
            snap = poll(inst).2;
        };
        follower.drain();
        let t_kill_w = Utc::now();
        let t_kill = Instant::now();
        // SAFETY: the pid of a program this bench's daemon started.
        unsafe { libc::kill(victim, libc::SIGKILL) };

        // Detection, through `get sessions` polled back to back.
        let crashed = loop {
            let (t0, t1, rows) = poll(inst);
            poll_ms.push_duration(t1 - t0);
            // A crashed row carries no pid; its exit time tells it is ours.
            let hit = rows.iter().find(|r| {
                r["key"] == key
                    && r["state"] == "crashed"
                    && time_of(&r["exit"]["at"])
                        .is_some_and(|t| t >= t_kill_w - chrono::Duration::milliseconds(100))
            });
            if let Some(r) = hit {
                detect.push_duration(t1 - t_kill);
                detect_lo.push_duration(t0.saturating_duration_since(t_kill));
                break Some(r.clone());
            }
            if t_kill.elapsed() > Duration::from_secs(10) {
                break None;
            }
        };
        let Some(crashed) = crashed else {
            missed += 1;
            println!("  death {i}: {key} was never shown crashed (replaced before a poll saw it?)");
            snap = poll(inst).2;
            continue;
        };
        // The same death through `events --follow`.
        let t_ev = Instant::now();
        while t_ev.elapsed() < Duration::from_secs(2) {
            match follower.next(Duration::from_millis(50)) {
                Some((at, ev)) if ev["key"] == key => {
                    detect_ev.push_duration(at.saturating_duration_since(t_kill));
                    if let Some(t) = time_of(&ev["at"]) {
                        detect_daemon.push(ms_between(t_kill_w, t));
                    }
                    break;
                }
                _ => {}
            }
        }

        // Respawn lateness: the backoff's end against the replacement's
        // creation, both the daemon's own timestamps.
        let due = time_of(&crashed["next_restart_at"]);
        if let Some(due) = due {
            let wait = (due - Utc::now()).to_std().unwrap_or_default();
            nap(wait);
        }
        let t_wait = Instant::now();
        loop {
            let (_, t1, rows) = poll(inst);
            snap = rows;
            if let Some(r) = row(&snap, &key, "running")
                && r["pid"].as_u64() != Some(victim as u64)
            {
                visible.push_duration(t1 - t_kill);
                if let (Some(due), Some(created)) = (due, time_of(&r["created_at"])) {
                    late.push(ms_between(due, created));
                    if let Some(started) = time_of(&r["started_at"]) {
                        late_started.push(ms_between(due, started));
                    }
                }
                break;
            }
            assert!(
                t_wait.elapsed() < DEADLINE,
                "{key} was not replaced\n{}",
                inst.daemon_log_tail(20)
            );
        }
        if (i + 1) % 50 == 0 {
            println!(
                "  {} deaths: detect p50 {} ms p99 {} ms; respawn late p50 {} ms p99 {} ms",
                i + 1,
                fmt_num(detect.pct(50.0)),
                fmt_num(detect.pct(99.0)),
                fmt_num(late.pct(50.0)),
                fmt_num(late.pct(99.0))
            );
        }
    }
    rep.figure("detect_p50_ms", detect.pct(50.0), "ms", 50.0);
    rep.figure("detect_p99_ms", detect.pct(99.0), "ms", 50.0);
    rep.set("detect_samples", detect.len() as f64);
    rep.set("detect_missed", missed as f64);
    rep.set("detect_max_ms", detect.max());
    rep.set("detect_poll_start_p50_ms", detect_lo.pct(50.0));
    rep.set("detect_poll_start_p99_ms", detect_lo.pct(99.0));
    rep.set("detect_events_p50_ms", detect_ev.pct(50.0));
    rep.set("detect_events_p99_ms", detect_ev.pct(99.0));
    rep.set("detect_events_samples", detect_ev.len() as f64);
    rep.set("detect_daemon_p50_ms", detect_daemon.pct(50.0));
    rep.set("detect_daemon_p99_ms", detect_daemon.pct(99.0));
    rep.set("get_sessions_json_poll_p50_ms_200", poll_ms.pct(50.0));
    // The program running (the shim's own stamp, taken once the program
    // is exec'd) against the end of its backoff; and when the daemon
    // decided to spawn it (the session's `created_at`).
    rep.set("respawn_running_late_p50_ms", late_started.pct(50.0));
    rep.figure(
        "respawn_running_late_p99_ms",
        late_started.pct(99.0),
        "ms",
        10.0,
    );
    rep.set("respawn_running_late_max_ms", late_started.max());
    rep.set("respawn_decided_late_p50_ms", late.pct(50.0));
    rep.set("respawn_decided_late_p99_ms", late.pct(99.0));
    rep.set("respawn_decided_late_samples", late.len() as f64);
    rep.set("respawn_decided_late_max_ms", late.max());
    rep.set("respawn_decided_late_min_ms", late.min());
    rep.set("kill_to_replacement_visible_p50_ms", visible.pct(50.0));
    rep.set("kill_to_replacement_visible_p99_ms", visible.pct(99.0));
    println!(
        "  {} deaths: crashed visible in get p50 {} / p99 {} ms (poll start {} / {}), event p50 {} / p99 {} ms, daemon-side p50 {} / p99 {} ms",
        detect.len(),
        fmt_num(detect.pct(50.0)),
        fmt_num(detect.pct(99.0)),
        fmt_num(detect_lo.pct(50.0)),
        fmt_num(detect_lo.pct(99.0)),
        fmt_num(detect_ev.pct(50.0)),
        fmt_num(detect_ev.pct(99.0)),
        fmt_num(detect_daemon.pct(50.0)),
        fmt_num(detect_daemon.pct(99.0)),
    );
    println!(
        "  respawn: decided p50 {} / p99 {} ms after the backoff ended (min {}), program running p50 {} / p99 {} ms after",
        fmt_num(late.pct(50.0)),
        fmt_num(late.pct(99.0)),
        fmt_num(late.min()),
        fmt_num(late_started.pct(50.0)),
        fmt_num(late_started.pct(99.0)),
    );
}

// ---------------------------------------------------------------- printing

/// A program that prints a line every 200 ms, forever, without starting a
/// process per line (`read -t` on a pipe it holds both ends of is bash's
/// sleep).
const PRINTING_COMMAND: &str = r#"["bash", "-c", "exec 3<> <(:); while :; do echo \"step $((i++)) of the work\"; read -t 0.2 -u 3; done"]"#;

/// 200 sessions printing continuously: what activity tracking costs. The
/// log pipes report on edges only (output began, output stopped), so the
/// daemon's CPU should stay near its idle figure and tmux should see no
/// call per output: only the sweep's listing, counted by the `tmux`
/// wrapper over the window.
pub fn printing(plan: &Plan, rep: &mut Report) {
    const N: u32 = 200;
    let sweep_ms = 1000;
    let inst = Instance::new(
        "printing",
        &plan.tmux,
        Options {
            count_tmux: true,
            env: vec![("MARVEL_SWEEP_MS".into(), sweep_ms.to_string())],
        },
    );
    let team = format!(
        "Team(name: \"{TEAM}\", workspace: \"{WORKSPACE}\", roles: [Role(name: \"{ROLE}\", \
         replicas: {N}, command: {PRINTING_COMMAND}, idle_after: \"30s\")])\n"
    );
    let up = inst.apply_and_wait("team.ron", &team);
    println!(
        "  {N} printing sessions running after {} ms",
        fmt_num(ms(up))
    );
    // Settle: the start-up reports are in, every log pipe has said its
    // output began.
    nap(Duration::from_secs(if plan.quick { 3 } else { 8 }));
    let pid = inst.daemon_pid();
    let before = inst.tmux_log().len();
    let events_before = inst.ok(&["events", "-o", "json"]).lines().count();
    let printed_before = logged_lines(&inst);
    let t0 = epoch_now();
    let used = idle(
        "marvel daemon (200 printing)",
        pid,
        inst.tmux_server_pid(),
        None,
        plan.idle_window,
    );
    let t1 = epoch_now();
    let printed = logged_lines(&inst).saturating_sub(printed_before);
    let lines: Vec<String> = inst.tmux_log()[before..]
        .iter()
        .filter_map(|l| {
            let (t, rest) = l.split_once(' ')?;
            let t: f64 = t.parse().ok()?;
            (t >= t0 && t < t1).then(|| rest.to_string())
        })
        .collect();
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for args in &lines {
        *by.entry(subcommand(args)).or_default() += 1;
    }
    let sweeps = ((t1 - t0) * 1000.0 / sweep_ms as f64).floor().max(1.0);
    // The lines the log pipes wrote over the window; the programs' own
    // rate (five a second each) if the logs cannot be read.
    let outputs = if printed > 0 {
        printed as f64
    } else {
        N as f64 * (t1 - t0) * 5.0
    };
    let per_sweep = lines.len() as f64 / sweeps;
    let sessions = inst.sessions();
    let busy = sessions.iter().filter(|s| s["activity"] == "busy").count();
    let events_after = inst.ok(&["events", "-o", "json"]).lines().count();
    // Every tmux call over the window, the sweep's listing included, per
    // thousand lines printed: a call per output would make this 1000.
    let per_1000 = lines.len() as f64 / outputs * 1000.0;
    rep.figure("printing_cpu_pct_200", used.cpu_pct_ns, "%", 1.0);
    rep.figure("printing_tmux_per_1000_lines_200", per_1000, "", 10.0);
    rep.figure("printing_tmux_procs_per_sweep_200", per_sweep, "", 1.0);
    rep.set("printing_cpu_pct_200_ticks", used.cpu_pct);
    rep.set("printing_tmux_server_cpu_pct_200", used.server_cpu_pct_ns);
    rep.set("printing_tmux_processes_200", lines.len() as f64);
    rep.set("printing_window_s", t1 - t0);
    rep.set("printing_lines_printed_200", outputs);
    rep.set("printing_busy_sessions_200", busy as f64);
    rep.set(
        "printing_events_200",
        events_after.saturating_sub(events_before) as f64,
    );
    rep.set_value("printing_tmux_by_command", json!(by));
    println!(
        "  over {:.0} s: ~{} lines printed; daemon {}% CPU (schedstat); {} tmux processes ({} per sweep, {} per 1000 lines) {:?}; {busy}/{N} busy",
        t1 - t0,
        fmt_num(outputs),
        fmt_num(used.cpu_pct_ns),
        lines.len(),
        fmt_num(per_sweep),
        fmt_num(per_1000),
        by
    );
}

/// Lines in every session's output log (and its rotated half).
fn logged_lines(inst: &Instance) -> u64 {
    let Ok(dir) = std::fs::read_dir(inst.state_dir().join("logs")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .sum()
}

// ------------------------------------------------------- tmux per sweep

/// tmux processes the daemon starts per idle sweep at 10, 100 and 500
/// sessions, counted by a `tmux` wrapper first on the daemon's PATH; then
/// `get sessions` wall time at 500 on a daemon with default settings.
pub fn sweeps(plan: &Plan, rep: &mut Report) {
    let mut inst = Instance::new(
        "sweep",
        &plan.tmux,
        Options {
            count_tmux: true,
            env: vec![("MARVEL_SWEEP_MS".into(), COUNT_SWEEP_MS.to_string())],
        },
    );
    let mut per_size = serde_json::Map::new();
    let largest = *plan.sweep_sizes.last().expect("sweep sizes");
    for &size in &plan.sweep_sizes {
        let up = inst.apply_and_wait("team.ron", &team(size, "100ms"));
        // Settle: the start-up reports are in, several sweeps have run, and
        // the sessions have turned idle (their windows redrawn once).
        nap(Duration::from_millis(COUNT_SWEEP_MS * 5));
        inst.wait_quiet();
        let before = inst.tmux_log().len();
        let t0 = epoch_now();
        nap(plan.sweep_window);
        let t1 = epoch_now();
        let lines: Vec<(f64, String)> = inst.tmux_log()[before..]
            .iter()
            .filter_map(|l| {
                let (t, rest) = l.split_once(' ')?;
                Some((t.parse().ok()?, rest.to_string()))
            })
            .filter(|(t, _)| *t >= t0 && *t < t1)
            .collect();
        let mut by: BTreeMap<String, u64> = BTreeMap::new();
        for (_, args) in &lines {
            *by.entry(subcommand(args)).or_default() += 1;
        }
        let lists = by.get("list-panes").copied().unwrap_or(0);
        let nominal = ((t1 - t0) * 1000.0 / COUNT_SWEEP_MS as f64)
            .floor()
            .max(1.0);
        // A sweep is one list-panes; if there were more list-panes than the
        // interval allows, the extra ones are extra calls, not sweeps.
        let sweeps = if lists == 0 {
            nominal
        } else {
            (lists as f64).min(nominal)
        };
        let per_sweep = lines.len() as f64 / sweeps;
        rep.figure(&format!("tmux_procs_per_sweep_{size}"), per_sweep, "", 1.0);
        per_size.insert(
            size.to_string(),
            json!({
                "window_s": (t1 - t0),
                "sweep_ms": COUNT_SWEEP_MS,
                "tmux_processes": lines.len(),
                "sweeps": sweeps,
                "by_command": by,
                "bringup_ms": ms(up),
            }),
        );
        println!(
            "  {size} sessions: {} tmux processes over {sweeps} sweeps ({:.1} s) = {} per sweep {:?}",
            lines.len(),
            t1 - t0,
            fmt_num(per_sweep),
            by
        );
        // How `get sessions` grows with the number of sessions (this
        // daemon sweeps every 200 ms; the figure at 500 is taken below on
        // one with default settings).
        if size < largest {
            let g = time_get(&inst, &["get", "sessions"], 10);
            rep.set(&format!("get_sessions_median_ms_{size}"), g.median());
        }
    }
    rep.set_value("tmux_counting", serde_json::Value::Object(per_size));
    // The cost one sweep pays in tmux: list-panes of 500 panes.
    let t = Instant::now();
    let out = output_within(
        inst.tmux_cmd(&[
            "list-panes",
            "-a",
            "-F",
            "#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_dead_signal}\t#{@marvel}\t#{session_name}",
        ]),
        DEADLINE,
    )
    .expect("list-panes");
    rep.set(
        &format!("floor_tmux_list_panes_{largest}_ms"),
        ms(t.elapsed()),
    );
    println!(
        "  floor: one list-panes of {} panes takes {} ms",
        String::from_utf8_lossy(&out.stdout).lines().count(),
        fmt_num(ms(t.elapsed()))
    );

    // `get sessions` at 500 with default settings: restart the daemon
    // without the wrapper or the short sweep; it re-adopts the panes.
    inst.stop_daemon();
    inst.set_env(Vec::new(), false);
    inst.wait_all_running();
    nap(Duration::from_secs(1));
    let table = time_get(&inst, &["get", "sessions"], plan.get_runs.max(20));
    let json = time_get(
        &inst,
        &["get", "sessions", "-o", "json"],
        plan.get_runs.max(20),
    );
    let n = largest;
    rep.figure(
        &format!("get_sessions_median_ms_{n}"),
        table.median(),
        "ms",
        10.0,
    );
    rep.set(&format!("get_sessions_p90_ms_{n}"), table.pct(90.0));
    rep.set(&format!("get_sessions_json_median_ms_{n}"), json.median());
    rep.set(&format!("get_sessions_runs_{n}"), table.len() as f64);
    process_floor(rep);
}

/// What any `get` pays before talking to the daemon: starting a process.
fn process_floor(rep: &mut Report) {
    let mut version = Samples::default();
    let mut truth = Samples::default();
    for _ in 0..20 {
        let mut c = Command::new(MARVEL);
        c.arg("--version");
        version.push_duration(timed(c).0);
        truth.push_duration(timed(Command::new("true")).0);
    }
    rep.set("floor_marvel_version_ms", version.median());
    rep.set("floor_true_ms", truth.median());
    println!(
        "  floor: `marvel --version` {} ms, `true` {} ms (process start)",
        fmt_num(version.median()),
        fmt_num(truth.median())
    );
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The tmux command word of a logged invocation: the first argument that
/// is not a global flag or its value.
fn subcommand(args: &str) -> String {
    let mut it = args.split_whitespace();
    while let Some(a) = it.next() {
        match a {
            "-L" | "-S" | "-f" => {
                it.next();
            }
            a if a.starts_with('-') && a.len() == 2 && a != "-V" => {}
            a => return a.to_string(),
        }
    }
    String::new()
}
