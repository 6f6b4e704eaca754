//! The lifecycle benchmark: how fast marvel sees a death and respawns, and
//! what it costs, from tens to thousands of sessions and as a whole system
//! next to supervisord and pm2.
//!
//!     cargo bench --bench lifecycle                 # full run (~40 min)
//!     cargo bench --bench lifecycle -- --peers      # and supervisord, pm2
//!     MARVEL_BENCH_QUICK=1 cargo bench --bench lifecycle   # small sizes, < 2 min
//!
//! `-- --only bringup,sessions,...` runs some phases (see `PHASES`). Everything runs
//! against private tmux servers (`tmux -L marvel-bench-<pid>-<phase>`) and
//! temporary state directories, removed at the end even on failure or
//! Ctrl-C. The figures are printed and written to
//! `target/bench/lifecycle.json`; see BENCHMARKS.md.

mod churn;
mod harness;
mod peers;
mod phases;
mod report;
mod restart;
mod scale;
mod stats;
mod storm;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use serde_json::json;

use harness::{MARVEL, check_interrupt};
use phases::{MarvelIdle, Plan};
use report::{Report, fmt_num};
use restart::Restarts;
use storm::Storm;

const PHASES: [&str; 9] = [
    "bringup", "sessions", "printing", "sweep", "scale", "storm", "restart", "churn", "peers",
];

struct Args {
    quick: bool,
    peers: bool,
    only: Option<Vec<String>>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        quick: std::env::var("MARVEL_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0"),
        peers: std::env::var("MARVEL_BENCH_PEERS").is_ok_and(|v| !v.is_empty() && v != "0"),
        only: None,
    };
    let mut bench = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            // cargo bench passes --bench; cargo test --benches does not, and
            // this slow benchmark must not run as a test.
            "--bench" => bench = true,
            "--quick" => args.quick = true,
            "--peers" => args.peers = true,
            "--only" => {
                let v = it.next().ok_or("--only needs a list of phases")?;
                args.only = Some(v.split(',').map(str::to_string).collect());
            }
            s if s.starts_with("--only=") => {
                args.only = Some(s[7..].split(',').map(str::to_string).collect());
            }
            "-h" | "--help" => {
                println!(
                    "usage: cargo bench --bench lifecycle [-- --peers] [--quick] [--only {}]",
                    PHASES.join(",")
                );
                return Ok(None);
            }
            // Filters and flags cargo forwards to every bench target.
            _ => {}
        }
    }
    if let Some(only) = &args.only {
        for p in only {
            if !PHASES.contains(&p.as_str()) {
                return Err(format!("unknown phase {p:?}; phases: {}", PHASES.join(",")));
            }
        }
        if only.iter().any(|p| p == "peers") {
            args.peers = true;
        }
    }
    if !bench {
        println!(
            "lifecycle: skipped (not run under `cargo bench`); run `cargo bench --bench lifecycle`"
        );
        return Ok(None);
    }
    Ok(Some(args))
}

/// `<target>/bench/lifecycle.json`, beside the binary's profile directory.
fn output_path() -> PathBuf {
    let bin = Path::new(MARVEL);
    let target = bin
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench")
}

fn main() {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return,
        Err(e) => {
            eprintln!("lifecycle: {e}");
            std::process::exit(2);
        }
    };
    harness::install_interrupt_handler();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // An interrupt unwinds through the guards by panicking; that is
        // not a failure worth a backtrace.
        if !harness::interrupted() {
            default_hook(info);
        }
    }));
    let Some(tmux) = harness::real_tmux() else {
        eprintln!("lifecycle: tmux is not on PATH; install tmux (3.3a or newer)");
        std::process::exit(1);
    };
    harness::reap_stale_servers(&tmux);
    let plan = Plan::new(args.quick, tmux.clone());
    let wants = |p: &str| match &args.only {
        Some(only) => only.iter().any(|o| o == p),
        None => p != "peers" || args.peers,
    };
    let out_dir = output_path();
    let mut rep = Report::default();
    let machine = report::machine(&tmux, MARVEL);
    println!(
        "marvel lifecycle benchmark{}: {} cores, {} GiB, kernel {}, {}",
        if args.quick { " (quick)" } else { "" },
        machine["cores"],
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or(""),
        machine["tmux"].as_str().unwrap_or("")
    );
    rep.set_value("machine", machine);
    let commit = harness::git_commit();
    println!("commit {commit}");
    rep.set_value("git_commit", json!(commit));
    let load = loadavg();
    if load[0] > 0.5 {
        rep.note(format!(
            "load average {:.2} at start: other work on this machine skews the figures",
            load[0]
        ));
    }
    rep.set_value("loadavg_start", json!(load));
    rep.set_value("quick", json!(args.quick));
    rep.set_value("sizes", plan.sizes());
    rep.set_value(
        "taken_at",
        json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );
    let started = std::time::Instant::now();

    let mut failed = Vec::new();
    // How long each phase took, to keep the quick run quick.
    let mut took = serde_json::Map::new();
    let mut idle = None;
    let mut restarts = None;
    let mut storm = None;
    let mut run = |name: &str, rep: &mut Report, f: &mut dyn FnMut(&mut Report)| {
        if !wants(name) {
            return;
        }
        println!("\n== {name}");
        let t = std::time::Instant::now();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(rep)));
        let secs = t.elapsed().as_secs_f64();
        println!("  ({} s)", fmt_num(secs));
        took.insert(name.to_string(), json!((secs * 10.0).round() / 10.0));
        if let Err(e) = r {
            if harness::interrupted() {
                // The guards have run while unwinding.
                eprintln!("lifecycle: interrupted; everything it started is stopped");
                std::process::exit(130);
            }
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let first = msg.lines().next().unwrap_or("").to_string();
            rep.note(format!("phase {name} failed: {first}"));
            failed.push(name.to_string());
        }
    };
    run("bringup", &mut rep, &mut |rep| phases::bringup(&plan, rep));
    run("sessions", &mut rep, &mut |rep| {
        idle = Some(phases::sessions_200(&plan, rep))
    });
    run("printing", &mut rep, &mut |rep| {
        phases::printing(&plan, rep)
    });
    run("sweep", &mut rep, &mut |rep| phases::sweeps(&plan, rep));
    run("scale", &mut rep, &mut |rep| scale::scale(&plan, rep));
    run("storm", &mut rep, &mut |rep| {
        storm = Some(storm::storm(&plan, rep))
    });
    run("restart", &mut rep, &mut |rep| {
        restarts = Some(restart::restart(&plan, plan.restart_sessions, Some(rep)))
    });
    run("churn", &mut rep, &mut |rep| churn::crash_loop(&plan, rep));
    run("peers", &mut rep, &mut |rep| {
        side_by_side(
            &plan,
            Measured {
                idle: idle.clone(),
                restarts: restarts.clone(),
                storm: storm.clone(),
            },
            &out_dir.join("peers"),
            rep,
        )
    });
    skip_unmeasured(&plan, &mut rep);
    rep.set_value("phase_s", serde_json::Value::Object(took));

    rep.set_value("loadavg_end", json!(loadavg()));
    rep.set("duration_s", started.elapsed().as_secs_f64());
    rep.print();
    let path = out_dir.join("lifecycle.json");
    match rep.write(&path) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
    println!("took {} s", fmt_num(started.elapsed().as_secs_f64()));
    let misses = rep.misses();
    if !misses.is_empty() {
        println!("targets missed: {}", misses.join(", "));
    }
    if !failed.is_empty() {
        eprintln!("phases failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}

/// Every headline key is in the JSON: a figure whose phase did not run (or
/// failed) is `null`, shown as not run.
fn skip_unmeasured(plan: &Plan, rep: &mut Report) {
    let (n, l, h) = (phases::SESSIONS, plan.large, plan.huge);
    let big = plan.bringup_large;
    let largest = plan.sweep_sizes.last().copied().unwrap_or(0);
    let keys: Vec<(String, &'static str, f64, &str)> = vec![
        ("bringup_100_s".into(), "s", 2.0, "bringup"),
        (format!("bringup_{big}_s"), "s", 5.0, "bringup"),
        (format!("bringup_{big}_daemon_cpu_s"), "s", 0.3, "bringup"),
        (format!("idle_cpu_pct_{n}"), "%", 0.1, "sessions"),
        (format!("idle_rss_mb_{n}"), "MB", 10.0, "sessions"),
        ("per_session_overhead_kb".into(), "KB", 1024.0, "sessions"),
        ("detect_p50_ms".into(), "ms", 50.0, "sessions"),
        ("detect_p99_ms".into(), "ms", 50.0, "sessions"),
        ("respawn_running_late_p99_ms".into(), "ms", 10.0, "sessions"),
        (
            format!("get_sessions_median_ms_{largest}"),
            "ms",
            10.0,
            "sweep",
        ),
        (format!("detect_events_p99_ms_{l}"), "ms", 10.0, "scale"),
        (format!("idle_cpu_pct_{l}"), "%", 0.05, "scale"),
        (format!("idle_rss_mb_{l}"), "MB", 15.0, "scale"),
        (format!("idle_tmux_cpu_pct_{l}"), "%", 0.1, "scale"),
        (format!("get_sessions_median_ms_{h}"), "ms", 15.0, "scale"),
        (format!("persist_bytes_per_death_{h}"), "B", 8192.0, "scale"),
        ("storm_cpu_ms_per_restart".into(), "ms", 5.0, "storm"),
        ("restart_running_p50_ms".into(), "ms", 6.0, "restart"),
        ("tmux_rss_growth_kb_per_min".into(), "KB/min", 10.0, "churn"),
        (
            "ratio_total_idle_cpu_vs_supervisord".into(),
            "",
            0.5,
            "peers",
        ),
        ("ratio_total_idle_cpu_vs_pm2".into(), "", 0.5, "peers"),
        ("ratio_total_pss_vs_pm2".into(), "", 1.0, "peers"),
        ("ratio_total_pss_vs_supervisord".into(), "", 2.0, "peers"),
    ];
    for s in &plan.sweep_sizes {
        rep.skip(&format!("tmux_procs_per_sweep_{s}"), "", 1.0, "sweep");
    }
    for (key, unit, target, phase) in keys {
        let why = if phase == "peers" {
            "needs --peers"
        } else {
            phase
        };
        rep.skip(&key, unit, target, why);
    }
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// What marvel's own phases measured, for the comparison.
struct Measured {
    idle: Option<MarvelIdle>,
    restarts: Option<Restarts>,
    storm: Option<Storm>,
}

/// supervisord and pm2 on the same workloads, with marvel's figure as a
/// ratio to each (below 1: marvel is faster or smaller). marvel's figures
/// come from its own phases when they ran at the peers' size, else they
/// are taken here.
fn side_by_side(plan: &Plan, m: Measured, peers_dir: &Path, rep: &mut Report) {
    let n = plan.peer_programs;
    let idle = match m.idle.filter(|i| i.sessions == n) {
        Some(i) => i,
        None => {
            println!("  measuring marvel with {n} sessions first");
            let inst = harness::Instance::new("peer-idle", &plan.tmux, Default::default());
            inst.apply_and_wait("team.ron", &phases::team(n as u32, "100ms"));
            let mut scratch = Report::default();
            let mut i = phases::marvel_idle(&inst, plan, n, &mut scratch);
            i.get_table_ms = phases::time_get(&inst, &["get", "sessions"], plan.get_runs).median();
            i.get_json_ms =
                phases::time_get(&inst, &["get", "sessions", "-o", "json"], plan.get_runs).median();
            i
        }
    };
    let restarts = match m.restarts.filter(|r| r.sessions == n) {
        Some(r) => r,
        None => restart::restart(plan, n, None),
    };
    let storm = match m.storm {
        Some(s) => s,
        None => storm::storm(plan, &mut Report::default()),
    };
    rep.set("marvel_restart_visible_p50_ms", restarts.visible.pct(50.0));
    rep.set("marvel_restart_visible_p99_ms", restarts.visible.pct(99.0));
    rep.set("marvel_restart_running_p50_ms", restarts.running.pct(50.0));
    rep.set("marvel_total_idle_cpu_pct", idle.total_cpu_pct);
    rep.set("marvel_total_pss_mb", idle.total_pss_mb);
    let mut peers = serde_json::Map::new();
    for which in ["supervisord", "pm2"] {
        check_interrupt();
        println!("\n-- {which}");
        let r = match which {
            "supervisord" => peers::supervisord(plan, peers_dir),
            _ => peers::pm2(plan, peers_dir),
        };
        let p = match r {
            Ok(p) => p,
            Err(e) => {
                rep.note(format!("{which} skipped: {e}"));
                continue;
            }
        };
        let marvel_status = if p.name == "pm2" {
            idle.get_json_ms
        } else {
            idle.get_table_ms
        };
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let pn = p.name;
        let peer_storm = p.storm.as_ref().map_or(f64::NAN, Storm::per_restart_ms);
        let rows: Vec<(&str, String, f64, f64, &str)> = vec![
            (
                "status",
                "status query (get sessions; -o json vs pm2)".into(),
                marvel_status,
                p.status_ms,
                "ms",
            ),
            (
                "total_idle_cpu",
                "idle CPU, all of it".into(),
                idle.total_cpu_pct,
                p.total_cpu_pct,
                "%",
            ),
            (
                "total_pss",
                "memory (PSS), all of it".into(),
                idle.total_pss_mb,
                p.total_pss_mb,
                "MB",
            ),
            (
                "daemon_idle_cpu",
                "idle CPU, daemon only (schedstat)".into(),
                idle.daemon_cpu_pct,
                p.daemon_cpu_pct,
                "%",
            ),
            (
                "daemon_idle_rss",
                "resident memory, daemon only".into(),
                idle.daemon_rss_mb,
                p.daemon_rss_mb,
                "MB",
            ),
            (
                "restart_running",
                "kill -9 → replacement running, p50 (/proc)".into(),
                restarts.running.pct(50.0),
                p.restarts.running.pct(50.0),
                "ms",
            ),
            (
                "restart_visible",
                "kill -9 → replacement in the status command, p50".into(),
                restarts.visible.pct(50.0),
                p.restarts.visible.pct(50.0),
                "ms",
            ),
            (
                "storm_cpu",
                "CPU per restart in the crash storm".into(),
                storm.per_restart_ms(),
                peer_storm,
                "ms",
            ),
        ];
        for (key, what, mv, pv, unit) in rows {
            let r = ratio(mv, pv);
            let name = format!("ratio_{key}_vs_{pn}");
            match (key, pn) {
                ("total_idle_cpu", _) => rep.figure(&name, r, "", 0.5),
                ("total_pss", "pm2") => rep.figure(&name, r, "", 1.0),
                ("total_pss", _) => rep.figure(&name, r, "", 2.0),
                _ => rep.set(&name, r),
            }
            rep.peer_figure(&what, unit, mv, pn, pv);
        }
        peers.insert(
            pn.to_string(),
            json!({
                "programs": n,
                "status_command": p.status_cmd,
                "status_median_ms": stats::round(p.status_ms, 3),
                "daemon_idle_cpu_pct_schedstat": stats::round(p.daemon_cpu_pct, 4),
                "daemon_idle_rss_mb": stats::round(p.daemon_rss_mb, 2),
                "total_idle_cpu_pct": stats::round(p.total_cpu_pct, 4),
                "total_pss_mb": stats::round(p.total_pss_mb, 2),
                "restart_running_p50_ms": stats::round(p.restarts.running.pct(50.0), 3),
                "restart_running_p99_ms": stats::round(p.restarts.running.pct(99.0), 3),
                "restart_visible_p50_ms": stats::round(p.restarts.visible.pct(50.0), 3),
                "restart_visible_p99_ms": stats::round(p.restarts.visible.pct(99.0), 3),
                "restart_samples": p.restarts.running.len(),
                "storm": p.storm.as_ref().map(Storm::json),
            }),
        );
    }
    peers.insert("marvel_storm".into(), storm.json());
    rep.set_value("peers", serde_json::Value::Object(peers));
}
