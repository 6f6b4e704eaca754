//! supervisord and pm2 on the same workload (200 `sleep` programs), each on
//! a private socket and home in a temporary directory, killed at the end.
//! Both are installed under `target/bench/peers` when missing; a peer that
//! cannot be installed is skipped with a message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    DEADLINE, all_pids, check_interrupt, nap, output_within, parent_pid, process_alive, timed,
};
use crate::phases::{Plan, idle};
use crate::report::fmt_num;
use crate::stats::Samples;

/// Programs each peer supervises, as marvel does in its 200-session phase.
pub const PROGRAMS: usize = 200;

/// What one peer measured.
pub struct PeerFigures {
    pub name: &'static str,
    /// The status command of the peer and its median wall time.
    pub status_cmd: &'static str,
    pub status_ms: f64,
    pub idle_cpu_pct: f64,
    pub idle_cpu_pct_ns: f64,
    pub idle_rss_mb: f64,
    pub restart_visible: Samples,
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
        return Ok((d, c));
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

/// A supervisord with its own config and unix socket in a temp dir.
struct Supervisord {
    child: Child,
    ctl: PathBuf,
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Supervisord {
    fn start(bins: &(PathBuf, PathBuf)) -> Supervisord {
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
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n\
             [program:w]\ncommand={} 100000\nprocess_name=%(program_name)s_%(process_num)03d\n\
             numprocs={PROGRAMS}\nautorestart=true\nstartsecs=0\n",
            sleep_bin()
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
    let sv = Supervisord::start(&bins);
    let t0 = Instant::now();
    loop {
        check_interrupt();
        let out = sv.ctl_out(&["status"]);
        if out.matches(" RUNNING ").count() == PROGRAMS {
            break;
        }
        if t0.elapsed() > DEADLINE {
            return Err(format!(
                "supervisord did not start {PROGRAMS} programs:\n{out}"
            ));
        }
        nap(Duration::from_millis(200));
    }
    println!(
        "  supervisord: {PROGRAMS} programs running after {} ms",
        fmt_num(t0.elapsed().as_secs_f64() * 1000.0)
    );
    let status = time_runs(|| sv.ctl(&["status"]), plan.get_runs.min(20));
    println!(
        "  supervisorctl status: median {} ms",
        fmt_num(status.median())
    );
    nap(Duration::from_secs(if plan.quick { 2 } else { 5 }));
    let idle = idle("supervisord", sv.child.id(), None, plan.idle_window);
    let mut visible = Samples::default();
    for i in 0..plan.peer_kills {
        check_interrupt();
        let name = format!("w:w_{:03}", (i * 7) % PROGRAMS);
        let (_, victim) = sv
            .status_of(&name)
            .ok_or_else(|| format!("no status for {name}"))?;
        let t_kill = Instant::now();
        // SAFETY: a program this bench's supervisord started.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        loop {
            let st = sv.status_of(&name);
            let t1 = Instant::now();
            if let Some((state, pid)) = st
                && state == "RUNNING"
                && pid != victim
            {
                visible.push_duration(t1 - t_kill);
                break;
            }
            if t_kill.elapsed() > DEADLINE {
                return Err(format!("supervisord did not restart {name}"));
            }
        }
        nap(Duration::from_millis(100));
    }
    println!(
        "  supervisord: kill -9 → restart visible p50 {} ms p99 {} ms",
        fmt_num(visible.pct(50.0)),
        fmt_num(visible.pct(99.0))
    );
    Ok(PeerFigures {
        name: "supervisord",
        status_cmd: "supervisorctl status",
        status_ms: status.median(),
        idle_cpu_pct: idle.cpu_pct,
        idle_cpu_pct_ns: idle.cpu_pct_ns,
        idle_rss_mb: idle.rss_kb as f64 / 1024.0,
        restart_visible: visible,
    })
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

pub fn pm2(plan: &Plan, peers_dir: &Path) -> Result<PeerFigures, String> {
    let bin = pm2_bin(peers_dir)?;
    let pm2 = Pm2 {
        bin,
        home: tempfile::Builder::new()
            .prefix("marvel-bench-pm2-")
            .tempdir()
            .map_err(|e| e.to_string())?,
    };
    let apps: Vec<serde_json::Value> = (0..PROGRAMS)
        .map(|i| {
            serde_json::json!({
                "name": format!("w-{i}"),
                "script": sleep_bin(),
                "args": "100000",
                "interpreter": "none",
                "autorestart": true,
            })
        })
        .collect();
    let eco = pm2.home.path().join("ecosystem.json");
    std::fs::write(&eco, serde_json::json!({ "apps": apps }).to_string())
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let started = output_within(
        pm2.cmd(&["start", &eco.display().to_string()]),
        Duration::from_secs(120),
    );
    if !started.is_some_and(|o| o.status.success()) {
        return Err("pm2 start failed".into());
    }
    loop {
        check_interrupt();
        let list: serde_json::Value =
            serde_json::from_str(&pm2.out(&["jlist"])).unwrap_or_default();
        let online = list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["pm2_env"]["status"] == "online")
                    .count()
            })
            .unwrap_or(0);
        if online == PROGRAMS {
            break;
        }
        if t0.elapsed() > DEADLINE {
            return Err(format!("pm2 has {online} of {PROGRAMS} online"));
        }
        nap(Duration::from_millis(200));
    }
    println!(
        "  pm2: {PROGRAMS} programs online after {} ms",
        fmt_num(t0.elapsed().as_secs_f64() * 1000.0)
    );
    let status = time_runs(|| pm2.cmd(&["jlist"]), plan.get_runs.min(20));
    println!("  pm2 jlist: median {} ms", fmt_num(status.median()));
    nap(Duration::from_secs(if plan.quick { 2 } else { 5 }));
    let daemon = pm2.daemon_pid().ok_or("no pm2 daemon pid")?;
    let idle = idle("pm2 daemon", daemon, None, plan.idle_window);
    let mut visible = Samples::default();
    for i in 0..plan.peer_kills {
        check_interrupt();
        let name = format!("w-{}", (i * 7) % PROGRAMS);
        let victim = pm2
            .pid_of(&name)
            .ok_or_else(|| format!("no pid for {name}"))?;
        let t_kill = Instant::now();
        // SAFETY: a program this bench's pm2 started.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        loop {
            let pid = pm2.pid_of(&name);
            let t1 = Instant::now();
            if let Some(pid) = pid
                && pid != 0
                && pid != victim
            {
                visible.push_duration(t1 - t_kill);
                break;
            }
            if t_kill.elapsed() > DEADLINE {
                return Err(format!("pm2 did not restart {name}"));
            }
        }
        nap(Duration::from_millis(100));
    }
    println!(
        "  pm2: kill -9 → restart visible p50 {} ms p99 {} ms",
        fmt_num(visible.pct(50.0)),
        fmt_num(visible.pct(99.0))
    );
    Ok(PeerFigures {
        name: "pm2",
        status_cmd: "pm2 jlist",
        status_ms: status.median(),
        idle_cpu_pct: idle.cpu_pct,
        idle_cpu_pct_ns: idle.cpu_pct_ns,
        idle_rss_mb: idle.rss_kb as f64 / 1024.0,
        restart_visible: visible,
    })
}
