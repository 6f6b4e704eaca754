//! supervisord and pm2 on the same workloads as marvel: `sleep` programs
//! idling (status query, idle cost, restarts) and the crash storm, each on
//! a private socket and home in a temporary directory, killed at the end.
//! Both are installed under `target/bench/peers` when missing; a peer that
//! cannot be installed is skipped with a message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    DEADLINE, Supervisor, all_pids, check_interrupt, nap, output_within, parent_pid, process_alive,
    timed,
};
use crate::phases::{Plan, idle};
use crate::report::fmt_num;
use crate::restart::{Restarts, SLEEP_ARGS, time_restart};
use crate::stats::Samples;
use crate::storm::{self, PROGRAM, PROGRAM_NAMES, Storm};

/// What one peer measured.
pub struct PeerFigures {
    pub name: &'static str,
    /// The status command of the peer and its median wall time.
    pub status_cmd: &'static str,
    pub status_ms: f64,
    /// The peer's daemon alone: CPU (schedstat) and resident memory.
    pub daemon_cpu_pct: f64,
    pub daemon_rss_mb: f64,
    /// Its whole process tree but the programs.
    pub total_cpu_pct: f64,
    pub total_pss_mb: f64,
    pub restarts: Restarts,
    pub storm: Option<Storm>,
}

/// The whole tree of a peer's daemon, its programs left out.
fn whole(pid: u32, programs: &[&'static str]) -> Supervisor {
    Supervisor::new(vec![pid], programs)
}

/// The idle figures of a peer's daemon `pid`.
fn idle_figures(who: &str, pid: u32, plan: &Plan) -> (f64, f64, f64, f64) {
    let tree = whole(pid, &["sleep"]);
    let idle = idle(who, pid, None, Some(&tree), plan.idle_window);
    let pss: u64 = tree.pss_by_comm().values().map(|(kb, _)| kb).sum();
    (
        idle.cpu_pct_ns,
        idle.rss_kb as f64 / 1024.0,
        idle.total_cpu_pct,
        pss as f64 / 1024.0,
    )
}

fn sleep_bin() -> String {
    ["/bin/sleep", "/usr/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("sleep")
        .to_string()
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn succeeded(mut c: Command, timeout: Duration) -> bool {
    c.stdin(Stdio::null());
    output_within(c, timeout).is_some_and(|o| o.status.success())
}

// ------------------------------------------------------------- supervisord

/// supervisord and supervisorctl from a venv under `dir`, installed from
/// PyPI if needed; else from PATH.
fn supervisor_bins(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let venv = dir.join("venv");
    let bins = |d: &Path| (d.join("supervisord"), d.join("supervisorctl"));
    let (d, c) = bins(&venv.join("bin"));
    if d.is_file() && c.is_file() {
        // A venv moved from elsewhere names an interpreter that is gone.
        let mut version = Command::new(&d);
        version.arg("--version");
        if succeeded(version, Duration::from_secs(30)) {
            return Ok((d, c));
        }
        println!(
            "  the venv at {} does not run; making it again",
            venv.display()
        );
        let _ = std::fs::remove_dir_all(&venv);
    }
    println!("  installing supervisor (PyPI) into {}", venv.display());
    let python = on_path("python3").ok_or("python3 not found")?;
    let mut mk = Command::new(&python);
    mk.args(["-m", "venv"]).arg(&venv);
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", "supervisor"]);
    if succeeded(mk, Duration::from_secs(120)) && succeeded(pip, Duration::from_secs(600)) {
        let (d, c) = bins(&venv.join("bin"));
        if d.is_file() && c.is_file() {
            return Ok((d, c));
        }
    }
    match (on_path("supervisord"), on_path("supervisorctl")) {
        (Some(d), Some(c)) => Ok((d, c)),
        _ => Err("`pip install supervisor` into a venv failed and none is on PATH".into()),
    }
}

/// A supervisord with its own config and unix socket in a temp dir,
/// running the programs of `program` (a `[program:x]` section).
struct Supervisord {
    child: Child,
    ctl: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Supervisord {
    fn start(bins: &(PathBuf, PathBuf), program: &str) -> Supervisord {
        let dir = tempfile::Builder::new()
            .prefix("marvel-bench-supervisord-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path().display().to_string();
        let conf = dir.path().join("supervisord.conf");
        let text = format!(
            "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
             [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}\nnodaemon=true\n\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n{program}"
        );
        std::fs::write(&conf, text).expect("write supervisord.conf");
        let log = std::fs::File::create(dir.path().join("stdout.log")).expect("log");
        let child = Command::new(&bins.0)
            .arg("-c")
            .arg(&conf)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start supervisord");
        Supervisord {
            child,
            ctl: bins.1.clone(),
            conf,
            log: dir.path().join("supervisord.log"),
            _dir: dir,
        }
    }

    fn ctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.ctl);
        c.arg("-c").arg(&self.conf).args(args);
        c
    }

    fn ctl_out(&self, args: &[&str]) -> String {
        output_within(self.ctl(args), Duration::from_secs(20))
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// (state, pid) of one program from `supervisorctl status NAME`.
    fn status_of(&self, name: &str) -> Option<(String, u32)> {
        let out = self.ctl_out(&["status", name]);
        let mut w = out.split_whitespace();
        w.next()?;
        let state = w.next()?.to_string();
        let pid = out
            .split("pid ")
            .nth(1)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        Some((state, pid))
    }

    /// Programs started so far, from supervisord's own log.
    fn spawns(&self) -> u64 {
        std::fs::read_to_string(&self.log)
            .map(|t| t.matches(" spawned: ").count() as u64)
            .unwrap_or(0)
    }

    fn wait_running(&self, programs: usize) -> Result<Duration, String> {
        let t0 = Instant::now();
        loop {
            check_interrupt();
            let out = self.ctl_out(&["status"]);
            if out.matches(" RUNNING ").count() == programs {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > DEADLINE {
                return Err(format!(
                    "supervisord did not start {programs} programs:\n{out}"
                ));
            }
            nap(Duration::from_millis(200));
        }
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        let pid = self.child.id();
        let kids: Vec<u32> = all_pids()
            .into_iter()
            .filter(|&p| parent_pid(p) == Some(pid))
            .collect();
        let _ = output_within(self.ctl(&["shutdown"]), Duration::from_secs(20));
        if crate::harness::wait_within(&mut self.child, Duration::from_secs(20)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for k in kids {
            if process_alive(k) {
                // SAFETY: a program this bench's supervisord started.
                unsafe { libc::kill(k as i32, libc::SIGKILL) };
            }
        }
    }
}

pub fn supervisord(plan: &Plan, peers_dir: &Path) -> Result<PeerFigures, String> {
    let bins = supervisor_bins(peers_dir)?;
    let n = plan.peer_programs;
    let program = format!(
        "[program:w]\ncommand={} {}\nprocess_name=%(program_name)s_%(process_num)03d\n\
         numprocs={n}\nautorestart=true\nstartsecs=0\n",
        sleep_bin(),
        SLEEP_ARGS[0]
    );
    let sv = Supervisord::start(&bins, &program);
    let up = sv.wait_running(n)?;
    println!(
        "  supervisord: {n} programs running after {} ms",
        fmt_num(up.as_secs_f64() * 1000.0)
    );
    let status = time_runs(|| sv.ctl(&["status"]), plan.get_runs.min(20));
    println!(
        "  supervisorctl status: median {} ms",
        fmt_num(status.median())
    );
    nap(plan.settle);
    let pid = sv.child.id();
    let (daemon_cpu_pct, daemon_rss_mb, total_cpu_pct, total_pss_mb) =
        idle_figures("supervisord", pid, plan);
    let mut restarts = Restarts {
        sessions: n,
        ..Restarts::default()
    };
    for i in 0..plan.restart_kills {
        check_interrupt();
        let name = format!("w:w_{:03}", (i * 7) % n);
        let (_, victim) = sv
            .status_of(&name)
            .ok_or_else(|| format!("no status for {name}"))?;
        let seen = || {
            sv.status_of(&name)
                .is_some_and(|(state, p)| state == "RUNNING" && p != victim)
        };
        let (running, visible) = time_restart(victim, pid, seen)
            .ok_or_else(|| format!("supervisord did not restart {name}"))?;
        restarts.running.push(running);
        restarts.visible.push(visible);
        nap(Duration::from_millis(100));
    }
    println!(
        "  supervisord: kill -9 → replacement running p50 {} ms, visible p50 {} ms",
        fmt_num(restarts.running.pct(50.0)),
        fmt_num(restarts.visible.pct(50.0))
    );
    drop(sv);
    let storm = supervisord_storm(plan, &bins);
    Ok(PeerFigures {
        name: "supervisord",
        status_cmd: "supervisorctl status",
        status_ms: status.median(),
        daemon_cpu_pct,
        daemon_rss_mb,
        total_cpu_pct,
        total_pss_mb,
        restarts,
        storm,
    })
}

fn supervisord_storm(plan: &Plan, bins: &(PathBuf, PathBuf)) -> Option<Storm> {
    let roles = plan.storm_roles;
    let command = format!("{} {} \"{}\"", PROGRAM[0], PROGRAM[1], PROGRAM[2]);
    let program = format!(
        "[program:s]\ncommand={command}\nprocess_name=%(program_name)s_%(process_num)03d\n\
         numprocs={roles}\nautorestart=true\nstartsecs=0\n"
    );
    let program_ms = storm::program_cost_ms(if plan.quick { 10 } else { 20 });
    let sv = Supervisord::start(bins, &program);
    let t0 = Instant::now();
    while sv.spawns() < 2 * roles as u64 {
        check_interrupt();
        if t0.elapsed() > DEADLINE {
            println!("  supervisord: the storm did not start");
            return None;
        }
        nap(Duration::from_millis(100));
    }
    let tree = whole(sv.child.id(), &PROGRAM_NAMES);
    let s = storm::measure(&tree, plan.storm_window, program_ms, || sv.spawns());
    say_storm("supervisord", &s);
    Some(s)
}

/// One line on a peer's crash storm.
fn say_storm(who: &str, s: &Storm) {
    println!(
        "  {who} storm: {} restarts in {} s, {} ms of CPU each ({} with the program)",
        s.restarts,
        fmt_num(s.secs),
        fmt_num(s.per_restart_ms()),
        fmt_num(s.gross_per_restart_ms())
    );
}

fn time_runs(mut cmd: impl FnMut() -> Command, runs: usize) -> Samples {
    let mut s = Samples::default();
    for i in 0..runs + 2 {
        check_interrupt();
        let mut c = cmd();
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let (d, _) = timed(c);
        if i >= 2 {
            s.push_duration(d);
        }
    }
    s
}

// -------------------------------------------------------------------- pm2

/// pm2 from npm under `dir`, installed if needed; else from PATH.
fn pm2_bin(dir: &Path) -> Result<PathBuf, String> {
    let prefix = dir.join("npm");
    let bin = prefix.join("node_modules/.bin/pm2");
    if bin.is_file() {
        return Ok(bin);
    }
    if on_path("node").is_none() {
        return Err("node is not installed".into());
    }
    if let Some(npm) = on_path("npm") {
        println!("  installing pm2 (npm) into {}", prefix.display());
        let _ = std::fs::create_dir_all(&prefix);
        let mut c = Command::new(npm);
        c.args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg("pm2");
        if succeeded(c, Duration::from_secs(600)) && bin.is_file() {
            return Ok(bin);
        }
    }
    on_path("pm2").ok_or_else(|| "`npm install pm2` failed and none is on PATH".into())
}

/// A pm2 daemon with `PM2_HOME` in a temp dir.
struct Pm2 {
    bin: PathBuf,
    home: tempfile::TempDir,
}

impl Pm2 {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("PM2_HOME", self.home.path().join("pm2"))
            .current_dir(self.home.path());
        c
    }

    fn out(&self, args: &[&str]) -> String {
        output_within(self.cmd(args), Duration::from_secs(30))
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.home.path().join("pm2/pm2.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn pid_of(&self, name: &str) -> Option<u32> {
        self.out(&["pid", name]).trim().parse().ok()
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        let daemon = self.daemon_pid();
        let kids: Vec<u32> = daemon
            .map(|d| {
                all_pids()
                    .into_iter()
                    .filter(|&p| parent_pid(p) == Some(d))
                    .collect()
            })
            .unwrap_or_default();
        let _ = output_within(self.cmd(&["kill"]), Duration::from_secs(30));
        for p in kids.into_iter().chain(daemon) {
            if process_alive(p) {
                // SAFETY: this bench's pm2 daemon or a program it started.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
        }
    }
}

impl Pm2 {
    fn new(bin: PathBuf) -> Result<Pm2, String> {
        Ok(Pm2 {
            bin,
            home: tempfile::Builder::new()
                .prefix("marvel-bench-pm2-")
                .tempdir()
                .map_err(|e| e.to_string())?,
        })
    }

    /// Starts `apps` and waits until `online` of them are.
    fn start(&self, apps: Vec<serde_json::Value>) -> Result<Duration, String> {
        let count = apps.len();
        let eco = self.home.path().join("ecosystem.json");
        std::fs::write(&eco, serde_json::json!({ "apps": apps }).to_string())
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let started = output_within(
            self.cmd(&["start", &eco.display().to_string()]),
            Duration::from_secs(120),
        );
        if !started.is_some_and(|o| o.status.success()) {
            return Err("pm2 start failed".into());
        }
        loop {
            check_interrupt();
            let online = self
                .list()
                .iter()
                .filter(|p| p["pm2_env"]["status"] == "online")
                .count();
            if online == count {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > DEADLINE {
                return Err(format!("pm2 has {online} of {count} online"));
            }
            nap(Duration::from_millis(200));
        }
    }

    fn list(&self) -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&self.out(&["jlist"]))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Restarts of every app so far.
    fn restarts(&self) -> u64 {
        self.list()
            .iter()
            .filter_map(|p| p["pm2_env"]["restart_time"].as_u64())
            .sum()
    }
}

pub fn pm2(plan: &Plan, peers_dir: &Path) -> Result<PeerFigures, String> {
    let bin = pm2_bin(peers_dir)?;
    let n = plan.peer_programs;
    let pm2 = Pm2::new(bin.clone())?;
    let apps: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "name": format!("w-{i}"),
                "script": sleep_bin(),
                "args": SLEEP_ARGS[0],
                "interpreter": "none",
                "autorestart": true,
            })
        })
        .collect();
    let up = pm2.start(apps)?;
    println!(
        "  pm2: {n} programs online after {} ms",
        fmt_num(up.as_secs_f64() * 1000.0)
    );
    let status = time_runs(|| pm2.cmd(&["jlist"]), plan.get_runs.min(20));
    println!("  pm2 jlist: median {} ms", fmt_num(status.median()));
    nap(plan.settle);
    let daemon = pm2.daemon_pid().ok_or("no pm2 daemon pid")?;
    let (daemon_cpu_pct, daemon_rss_mb, total_cpu_pct, total_pss_mb) =
        idle_figures("pm2 daemon", daemon, plan);
    let mut restarts = Restarts {
        sessions: n,
        ..Restarts::default()
    };
    for i in 0..plan.restart_kills {
        check_interrupt();
        let name = format!("w-{}", (i * 7) % n);
        let victim = pm2
            .pid_of(&name)
            .ok_or_else(|| format!("no pid for {name}"))?;
        let seen = || pm2.pid_of(&name).is_some_and(|p| p != 0 && p != victim);
        let (running, visible) = time_restart(victim, daemon, seen)
            .ok_or_else(|| format!("pm2 did not restart {name}"))?;
        restarts.running.push(running);
        restarts.visible.push(visible);
        nap(Duration::from_millis(100));
    }
    println!(
        "  pm2: kill -9 → replacement running p50 {} ms, visible p50 {} ms",
        fmt_num(restarts.running.pct(50.0)),
        fmt_num(restarts.visible.pct(50.0))
    );
    drop(pm2);
    let storm = pm2_storm(plan, bin);
    Ok(PeerFigures {
        name: "pm2",
        status_cmd: "pm2 jlist",
        status_ms: status.median(),
        daemon_cpu_pct,
        daemon_rss_mb,
        total_cpu_pct,
        total_pss_mb,
        restarts,
        storm,
    })
}

fn pm2_storm(plan: &Plan, bin: PathBuf) -> Option<Storm> {
    let roles = plan.storm_roles;
    let program_ms = storm::program_cost_ms(if plan.quick { 10 } else { 20 });
    let pm2 = Pm2::new(bin).ok()?;
    // pm2 gives up on an app after `max_restarts` short runs in a row.
    let apps: Vec<serde_json::Value> = (0..roles)
        .map(|i| {
            serde_json::json!({
                "name": format!("s-{i}"),
                "script": PROGRAM[0],
                "args": [PROGRAM[1], PROGRAM[2]],
                "interpreter": "none",
                "autorestart": true,
                "max_restarts": 1_000_000_000u64,
            })
        })
        .collect();
    let eco = pm2.home.path().join("ecosystem.json");
    std::fs::write(&eco, serde_json::json!({ "apps": apps }).to_string()).ok()?;
    let started = output_within(
        pm2.cmd(&["start", &eco.display().to_string()]),
        Duration::from_secs(120),
    );
    if !started.is_some_and(|o| o.status.success()) {
        println!("  pm2: `pm2 start` of the storm failed");
        return None;
    }
    let t0 = Instant::now();
    while pm2.restarts() < 2 * roles as u64 {
        check_interrupt();
        if t0.elapsed() > DEADLINE {
            println!("  pm2: fewer than {} restarts in {DEADLINE:?}", 2 * roles);
            return None;
        }
        nap(Duration::from_millis(200));
    }
    let daemon = pm2.daemon_pid()?;
    let tree = whole(daemon, &PROGRAM_NAMES);
    let s = storm::measure(&tree, plan.storm_window, program_ms, || pm2.restarts());
    say_storm("pm2", &s);
    Some(s)
}
