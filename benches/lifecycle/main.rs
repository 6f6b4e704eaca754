//! The lifecycle benchmark: how fast marvel sees a death and respawns, and
//! what it costs at hundreds of sessions.
//!
//!     cargo bench --bench lifecycle                 # full run (~15 min)
//!     cargo bench --bench lifecycle -- --peers      # and supervisord, pm2
//!     MARVEL_BENCH_QUICK=1 cargo bench --bench lifecycle   # short sizes
//!
//! `-- --only bringup,sessions,printing,sweep` runs some phases. Everything runs
//! against private tmux servers (`tmux -L marvel-bench-<pid>-<phase>`) and
//! temporary state directories, removed at the end even on failure or
//! Ctrl-C. The figures are printed and written to
//! `target/bench/lifecycle.json`; see BENCHMARKS.md.

mod churn;
mod harness;
mod peers;
mod phases;
mod report;
mod stats;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use serde_json::json;

use harness::{MARVEL, check_interrupt};
use phases::{Marvel200, Plan};
use report::{Report, fmt_num};

const PHASES: [&str; 6] = ["bringup", "sessions", "printing", "sweep", "churn", "peers"];

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
    let load = loadavg();
    if load[0] > 0.5 {
        rep.note(format!(
            "load average {:.2} at start: other work on this machine skews the figures",
            load[0]
        ));
    }
    rep.set_value("loadavg_start", json!(load));
    rep.set_value("quick", json!(args.quick));
    rep.set_value(
        "taken_at",
        json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );

    let mut failed = Vec::new();
    let mut m200 = None;
    let mut run = |name: &str, rep: &mut Report, f: &mut dyn FnMut(&mut Report)| {
        if !wants(name) {
            return;
        }
        println!("\n== {name}");
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(rep)));
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
        m200 = Some(phases::sessions_200(&plan, rep))
    });
    run("printing", &mut rep, &mut |rep| {
        phases::printing(&plan, rep)
    });
    run("sweep", &mut rep, &mut |rep| phases::sweeps(&plan, rep));
    run("churn", &mut rep, &mut |rep| churn::crash_loop(&plan, rep));
    run("peers", &mut rep, &mut |rep| {
        side_by_side(&plan, m200.clone(), &out_dir.join("peers"), rep)
    });

    rep.set_value("loadavg_end", json!(loadavg()));
    rep.print();
    let path = out_dir.join("lifecycle.json");
    match rep.write(&path) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
    let misses = rep.misses();
    if !misses.is_empty() {
        println!("targets missed: {}", misses.join(", "));
    }
    if !failed.is_empty() {
        eprintln!("phases failed: {}", failed.join(", "));
        std::process::exit(1);
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

/// supervisord and pm2 on the same workload, with marvel's figure as a
/// ratio to each (below 1: marvel is faster or smaller).
fn side_by_side(plan: &Plan, m200: Option<Marvel200>, peers_dir: &Path, rep: &mut Report) {
    let m = match m200 {
        Some(m) => m,
        None => {
            println!("  measuring marvel with 200 sessions first");
            let mut scratch = Report::default();
            phases::sessions_200(
                &Plan {
                    deaths: 0,
                    ..plan.clone()
                },
                &mut scratch,
            )
        }
    };
    let restart = phases::restart_visible(plan);
    println!(
        "  marvel (backoff 1ms): kill -9 → replacement visible p50 {} ms p99 {} ms",
        fmt_num(restart.pct(50.0)),
        fmt_num(restart.pct(99.0))
    );
    rep.set("marvel_restart_visible_p50_ms", restart.pct(50.0));
    rep.set("marvel_restart_visible_p99_ms", restart.pct(99.0));
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
            m.get_json_ms
        } else {
            m.get_table_ms
        };
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let r_status = ratio(marvel_status, p.status_ms);
        // CPU on schedstat nanoseconds: at these levels a 30 s window holds
        // only a few clock ticks.
        let r_cpu = ratio(m.idle_cpu_pct_ns, p.idle_cpu_pct_ns);
        let r_rss = ratio(m.idle_rss_mb, p.idle_rss_mb);
        let r_restart = ratio(restart.pct(50.0), p.restart_visible.pct(50.0));
        let n = p.name;
        rep.set(&format!("ratio_status_vs_{n}"), r_status);
        rep.set(&format!("ratio_idle_cpu_vs_{n}"), r_cpu);
        rep.set(&format!("ratio_idle_rss_vs_{n}"), r_rss);
        rep.set(&format!("ratio_restart_visible_vs_{n}"), r_restart);
        peers.insert(
            n.to_string(),
            json!({
                "status_command": p.status_cmd,
                "status_median_ms": stats::round(p.status_ms, 3),
                "idle_cpu_pct": stats::round(p.idle_cpu_pct, 4),
                "idle_cpu_pct_schedstat": stats::round(p.idle_cpu_pct_ns, 4),
                "idle_rss_mb": stats::round(p.idle_rss_mb, 2),
                "restart_visible_p50_ms": stats::round(p.restart_visible.pct(50.0), 3),
                "restart_visible_p99_ms": stats::round(p.restart_visible.pct(99.0), 3),
                "restart_samples": p.restart_visible.len(),
            }),
        );
        let pair = |mv: f64, pv: f64, unit: &str| {
            (
                format!("{} {unit}", fmt_num(mv)),
                format!("{} {unit}", fmt_num(pv)),
            )
        };
        let what = if n == "pm2" {
            "get sessions -o json"
        } else {
            "get sessions"
        };
        let (a, b) = pair(marvel_status, p.status_ms, "ms");
        rep.peer_line(
            &format!("{what} vs {} (x{})", p.status_cmd, fmt_num(r_status)),
            a,
            b,
        );
        let (a, b) = pair(m.idle_cpu_pct_ns, p.idle_cpu_pct_ns, "%");
        rep.peer_line(
            &format!("idle CPU (schedstat) vs {n} (x{})", fmt_num(r_cpu)),
            a,
            b,
        );
        let (a, b) = pair(m.idle_rss_mb, p.idle_rss_mb, "MB");
        rep.peer_line(&format!("idle RSS vs {n} (x{})", fmt_num(r_rss)), a, b);
        let (a, b) = pair(restart.pct(50.0), p.restart_visible.pct(50.0), "ms");
        rep.peer_line(
            &format!("kill -9 → restart visible vs {n} (x{})", fmt_num(r_restart)),
            a,
            b,
        );
    }
    rep.set_value("peers", serde_json::Value::Object(peers));
}
