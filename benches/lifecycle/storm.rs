//! The crash storm: 50 roles whose program runs 100 ms and fails, each
//! restarted as soon as its supervisor allows, for a minute. What a
//! restart costs in CPU, counted over the whole supervisor: for marvel the
//! daemon, the tmux server, the tmux clients and the helpers of every
//! pane; for a peer its whole process tree. The programs' own CPU is
//! measured apart and taken out.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{
    Instance, Options, Supervisor, check_interrupt, nap, reaped_children_cpu_ms, rss_kb,
};
use crate::phases::{Plan, marvel_tree};
use crate::report::{Report, fmt_num};

/// The program of every storm: one `sh` and one `sleep`, then exit 1.
pub const PROGRAM: [&str; 3] = ["sh", "-c", "sleep 0.1; exit 1"];
/// Process names of the program, left out of the supervisor's tree.
pub const PROGRAM_NAMES: [&str; 2] = ["sh", "sleep"];

/// What a storm measured.
#[derive(Debug, Clone, Default)]
pub struct Storm {
    pub restarts: u64,
    pub secs: f64,
    /// CPU of the whole supervisor over the window, programs included.
    pub cpu_ms: f64,
    /// CPU of one run of the program by itself.
    pub program_ms: f64,
}

impl Storm {
    /// The supervisor's own CPU per restart: the programs' runs taken out.
    pub fn per_restart_ms(&self) -> f64 {
        if self.restarts == 0 {
            return f64::NAN;
        }
        (self.cpu_ms - self.program_ms * self.restarts as f64) / self.restarts as f64
    }

    pub fn gross_per_restart_ms(&self) -> f64 {
        if self.restarts == 0 {
            return f64::NAN;
        }
        self.cpu_ms / self.restarts as f64
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "restarts": self.restarts,
            "window_s": self.secs,
            "restarts_per_s": self.restarts as f64 / self.secs,
            "cpu_ms": self.cpu_ms,
            "program_cpu_ms": self.program_ms,
            "cpu_ms_per_restart": self.per_restart_ms(),
            "cpu_ms_per_restart_with_program": self.gross_per_restart_ms(),
        })
    }
}

/// CPU one run of [`PROGRAM`] costs by itself, run here `runs` times.
pub fn program_cost_ms(runs: usize) -> f64 {
    let c0 = reaped_children_cpu_ms();
    for _ in 0..runs {
        check_interrupt();
        let _ = Command::new(PROGRAM[0])
            .args(&PROGRAM[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    (reaped_children_cpu_ms() - c0) / runs.max(1) as f64
}

/// Measures a storm under way over `window`: the whole supervisor's CPU
/// and the restarts `count` reports (cumulative).
pub fn measure(
    whole: &Supervisor,
    window: Duration,
    program_ms: f64,
    mut count: impl FnMut() -> u64,
) -> Storm {
    let r0 = count();
    let c0 = whole.cpu_ms();
    let t0 = Instant::now();
    nap(window);
    let c1 = whole.cpu_ms();
    let secs = t0.elapsed().as_secs_f64();
    let r1 = count();
    Storm {
        restarts: r1.saturating_sub(r0),
        secs,
        cpu_ms: c1 - c0,
        program_ms,
    }
}

fn team(roles: usize) -> String {
    let command = format!("{PROGRAM:?}");
    let roles: Vec<String> = (0..roles)
        .map(|i| {
            format!(
                "Role(name: \"s{i}\", replicas: 1, command: {command}, backoff: (initial: \"1ms\", \
                 max: \"1ms\", factor: 1.0, jitter: 0.0), max_restarts: None)"
            )
        })
        .collect();
    format!(
        "Team(name: \"storm\", workspace: \"bench\", roles: [{}])\n",
        roles.join(", ")
    )
}

/// marvel's storm; its figures are also what the peers are compared with.
pub fn storm(plan: &Plan, rep: &mut Report) -> Storm {
    let program_ms = program_cost_ms(if plan.quick { 10 } else { 20 });
    let inst = Instance::new("storm", &plan.tmux, Options::default());
    let path = inst.manifest("team.ron", &team(plan.storm_roles));
    inst.ok(&["run", &path]);
    let restarts = |i: &Instance| -> u64 {
        i.roles()
            .iter()
            .filter_map(|r| r["restarts"].as_u64())
            .sum()
    };
    let roles = plan.storm_roles as u64;
    inst.wait("the storm", Duration::from_millis(100), |i| {
        (restarts(i) >= 2 * roles).then_some(())
    });
    let daemon = inst.daemon_pid();
    let server = inst.tmux_server_pid().expect("tmux server pid");
    let whole = marvel_tree(&inst);
    let daemon_tree = Supervisor::new(vec![daemon], &PROGRAM_NAMES);
    let d0 = daemon_tree.cpu_ms();
    let whole = Supervisor::new(whole.roots, &PROGRAM_NAMES);
    println!(
        "  {} roles crashing every ~100 ms for {} s (one run of the program costs {} ms of CPU)",
        plan.storm_roles,
        plan.storm_window.as_secs(),
        fmt_num(program_ms)
    );
    let s = measure(&whole, plan.storm_window, program_ms, || restarts(&inst));
    let daemon_ms = daemon_tree.cpu_ms() - d0;
    let per = s.per_restart_ms();
    rep.figure("storm_cpu_ms_per_restart", per, "ms", 5.0);
    rep.set(
        "storm_cpu_ms_per_restart_with_program",
        s.gross_per_restart_ms(),
    );
    rep.set(
        "storm_daemon_cpu_ms_per_restart",
        daemon_ms / s.restarts.max(1) as f64,
    );
    rep.set("storm_restarts", s.restarts as f64);
    rep.set("storm_restarts_per_s", s.restarts as f64 / s.secs);
    rep.set("storm_program_cpu_ms", program_ms);
    rep.set(
        "storm_daemon_rss_kb_end",
        rss_kb(daemon).unwrap_or(0) as f64,
    );
    rep.set("storm_tmux_rss_kb_end", rss_kb(server).unwrap_or(0) as f64);
    println!(
        "  {} restarts in {} s ({}/s): {} ms of CPU each for all of marvel ({} ms with the program's own run; the daemon and its tmux clients {} ms)",
        s.restarts,
        fmt_num(s.secs),
        fmt_num(s.restarts as f64 / s.secs),
        fmt_num(per),
        fmt_num(s.gross_per_restart_ms()),
        fmt_num(daemon_ms / s.restarts.max(1) as f64)
    );
    s
}
