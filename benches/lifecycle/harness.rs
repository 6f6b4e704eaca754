//! Driving the real `marvel` binary against a private tmux server and state
//! directory, and cleaning both up whatever happens.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The binary under test, built by cargo for this bench.
pub const MARVEL: &str = env!("CARGO_BIN_EXE_marvel");

/// How long any condition may take before the bench gives up on it.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The program every session runs: it idles until it is killed.
pub const IDLE_COMMAND: &str = r#"["sh", "-c", "exec sleep 100000"]"#;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C or SIGTERM makes the next wait panic, which unwinds through the
/// guards so every tmux server and daemon is stopped.
pub fn install_interrupt_handler() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Panics (and so cleans up) if the bench was interrupted.
pub fn check_interrupt() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        panic!("interrupted");
    }
}

/// Sleeps in small steps so an interrupt is noticed.
pub fn nap(d: Duration) {
    let end = Instant::now() + d;
    loop {
        check_interrupt();
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// The real tmux binary, found on `PATH` once, before any wrapper is added.
pub fn real_tmux() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("tmux"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `cmd` to completion with its output captured, killing it after
/// `timeout`. `None` when it could not be run or timed out.
pub fn output_within(mut cmd: Command, timeout: Duration) -> Option<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().ok()?;
    let out = child.stdout.take();
    let err = child.stderr.take();
    let reader = |p: Option<std::process::ChildStdout>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = std::io::Read::read_to_end(&mut p, &mut buf);
            }
            buf
        })
    };
    let out_t = reader(out);
    let err_t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = err {
            let _ = std::io::Read::read_to_end(&mut p, &mut buf);
        }
        buf
    });
    let status = wait_within(&mut child, timeout)?;
    Some(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Waits for `child` up to `timeout`, killing and reaping it after that.
pub fn wait_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs a command, returning its wall time and output; panics on failure.
pub fn timed(mut cmd: Command) -> (Duration, Output) {
    cmd.stdin(Stdio::null());
    let t0 = Instant::now();
    let out = cmd.output().expect("run command");
    (t0.elapsed(), out)
}

/// Options for one marvel instance.
#[derive(Default, Clone)]
pub struct Options {
    /// Put a `tmux` wrapper that logs every invocation first on the
    /// daemon's `PATH`.
    pub count_tmux: bool,
    /// Extra environment for every command, and so for the daemon.
    pub env: Vec<(String, String)>,
}

/// One marvel daemon with its own state directory and tmux server. On drop
/// the daemon is stopped, the tmux server killed, every helper process of
/// this instance ended and the directory removed.
pub struct Instance {
    pub label: String,
    pub socket: String,
    /// How long a condition may take (`wait`).
    pub deadline: Duration,
    dir: Option<tempfile::TempDir>,
    tmux: PathBuf,
    opts: Options,
    wrapper_dir: Option<PathBuf>,
    count_file: Option<PathBuf>,
}

/// The variables marvel reads; the bench sets what it needs and removes the
/// rest so a developer's own settings cannot change the figures.
const MARVEL_VARS: [&str; 14] = [
    "MARVEL_HOME",
    "MARVEL_TMUX_SOCKET",
    "MARVEL_SWEEP_MS",
    "MARVEL_TMUX_TIMEOUT_MS",
    "MARVEL_TMUX_RETRY_MS",
    "MARVEL_TMUX_RETRY_MAX_MS",
    "MARVEL_TMUX_RETRY_JITTER",
    "MARVEL_SESSION",
    "MARVEL_SESSION_UID",
    "MARVEL_ROLE",
    "MARVEL_TEAM",
    "MARVEL_WORKSPACE",
    "TMUX",
    "TMUX_PANE",
];

impl Instance {
    pub fn new(label: &str, tmux: &Path, opts: Options) -> Instance {
        let dir = tempfile::Builder::new()
            .prefix("marvel-bench-")
            .tempdir()
            .expect("temp dir");
        let socket = format!("marvel-bench-{}-{label}", std::process::id());
        let mut inst = Instance {
            label: label.to_string(),
            socket,
            deadline: DEADLINE,
            dir: Some(dir),
            tmux: tmux.to_path_buf(),
            opts,
            wrapper_dir: None,
            count_file: None,
        };
        if inst.opts.count_tmux {
            inst.install_wrapper();
        }
        inst
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("instance dir").path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// A `tmux` script that appends `<epoch seconds> <args>` to a file and
    /// execs the real tmux. bash, for `$EPOCHREALTIME` without a `date`
    /// process.
    fn install_wrapper(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let bin = self.dir().join("bin");
        std::fs::create_dir_all(&bin).expect("wrapper dir");
        let count = self.dir().join("tmux-invocations.log");
        std::fs::write(&count, "").expect("count file");
        let bash = ["/bin/bash", "/usr/bin/bash"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("bash is needed for the tmux counting wrapper");
        let script = format!(
            "#!{bash}\nprintf '%s %s\\n' \"$EPOCHREALTIME\" \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            count.display(),
            self.tmux.display()
        );
        let path = bin.join("tmux");
        std::fs::write(&path, script).expect("wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        self.wrapper_dir = Some(bin);
        self.count_file = Some(count);
    }

    /// Lines the counting wrapper has logged so far.
    pub fn tmux_log(&self) -> Vec<String> {
        self.count_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Replaces the extra environment (it reaches a daemon started after).
    pub fn set_env(&mut self, env: Vec<(String, String)>, count_tmux: bool) {
        self.opts.env = env;
        self.opts.count_tmux = count_tmux;
    }

    /// A marvel command bound to this instance.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(MARVEL);
        c.args(args);
        for v in MARVEL_VARS {
            c.env_remove(v);
        }
        c.env("MARVEL_HOME", self.state_dir())
            .env("MARVEL_TMUX_SOCKET", &self.socket)
            .env("NO_COLOR", "1")
            // No personal ~/.tmux.conf reaches the private server.
            .env("HOME", self.dir())
            .env("XDG_CONFIG_HOME", self.dir().join(".config"))
            .current_dir(self.dir());
        if self.opts.count_tmux
            && let Some(bin) = &self.wrapper_dir
        {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![bin.clone()];
            dirs.extend(std::env::split_paths(&path));
            c.env("PATH", std::env::join_paths(dirs).expect("PATH"));
        }
        for (k, v) in &self.opts.env {
            c.env(k, v);
        }
        c
    }

    /// Runs marvel and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        check_interrupt();
        let out = output_within(self.cmd(args), DEADLINE)
            .unwrap_or_else(|| panic!("marvel {} did not finish", args.join(" ")));
        if !out.status.success() {
            panic!(
                "marvel {} failed ({}):\n{}{}\ndaemon log:\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.daemon_log_tail(20)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        let text = self.ok(&full);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("marvel {} printed bad JSON ({e})", full.join(" ")))
    }

    pub fn sessions(&self) -> Vec<Value> {
        as_vec(self.json(&["get", "sessions"]))
    }

    /// Waits until no running session is busy: each has turned idle (the
    /// bench's roles say so after 2 s of silence), so what follows measures
    /// a settled daemon, not the burst of activity events after a start.
    pub fn wait_quiet(&self) {
        self.wait("every session idle", Duration::from_millis(250), |i| {
            i.sessions()
                .iter()
                .all(|s| s["state"] != "running" || s["activity"] != "busy")
                .then_some(())
        });
    }

    pub fn roles(&self) -> Vec<Value> {
        as_vec(self.json(&["get", "roles"]))
    }

    pub fn daemon_log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.state_dir().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The daemon's pid, starting it if it does not run (`status` reports
    /// a missing daemon rather than starting one; `get` starts it).
    /// `status` exits non-zero when it reports problems (a crash loop is
    /// one): its JSON is read whatever the exit code.
    pub fn daemon_pid(&self) -> u32 {
        self.ok(&["get", "teams"]);
        let out = output_within(self.cmd(&["status", "-o", "json"]), DEADLINE)
            .expect("marvel status did not finish");
        let st: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "marvel status printed bad JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        st["daemon"]["pid"].as_u64().expect("daemon pid") as u32
    }

    /// Writes a manifest into the instance directory; returns its path.
    pub fn manifest(&self, name: &str, text: &str) -> String {
        let path = self.dir().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path.display().to_string()
    }

    /// Applies `team` and waits until each role has all replicas running.
    pub fn apply_and_wait(&self, file: &str, text: &str) -> Duration {
        let path = self.manifest(file, text);
        let t0 = Instant::now();
        self.ok(&["run", &path]);
        self.wait_all_running();
        t0.elapsed()
    }

    /// Waits until every role is `ready` (desired == running).
    pub fn wait_all_running(&self) {
        self.wait("all roles ready", Duration::from_millis(50), |i| {
            let roles = i.roles();
            (!roles.is_empty()
                && roles
                    .iter()
                    .all(|r| r["state"] == "ready" && r["running"] == r["desired"]))
            .then_some(())
        });
    }

    /// Polls `check` every `every` until it returns Some; panics at the
    /// deadline with the daemon log.
    pub fn wait<T>(
        &self,
        what: &str,
        every: Duration,
        mut check: impl FnMut(&Instance) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            check_interrupt();
            if let Some(v) = check(self) {
                return v;
            }
            if start.elapsed() > self.deadline {
                panic!(
                    "[{}] timed out after {:?} waiting for {what}\ndaemon log:\n{}",
                    self.label,
                    self.deadline,
                    self.daemon_log_tail(30)
                );
            }
            std::thread::sleep(every);
        }
    }

    /// A tmux command on this instance's server, with the real binary.
    pub fn tmux_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.tmux);
        c.arg("-L").arg(&self.socket).args(args);
        c
    }

    /// The tmux server's pid.
    pub fn tmux_server_pid(&self) -> Option<u32> {
        let out = output_within(
            self.tmux_cmd(&["display-message", "-p", "#{pid}"]),
            Duration::from_secs(5),
        )?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// `marvel daemon stop`, then waits for the daemon process to be gone.
    pub fn stop_daemon(&self) {
        let pid = self.lock_pid();
        if self.state_dir().join("marvel.sock").exists() {
            let _ = output_within(self.cmd(&["daemon", "stop"]), Duration::from_secs(10));
        }
        if let Some(pid) = pid {
            let end = Instant::now() + Duration::from_secs(5);
            while process_alive(pid) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            if process_alive(pid) && cmdline(pid).iter().any(|a| a == "daemon") {
                // SAFETY: a pid we checked is this instance's daemon.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }

    /// The pid the daemon wrote into its lock file.
    fn lock_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.state_dir().join("daemon.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Processes whose command line names this instance's directory: the
    /// shims and log pipes (and a daemon, whose state dir is in its env,
    /// not its argv, is handled by `stop_daemon`).
    fn own_processes(&self) -> Vec<u32> {
        let dir = self.dir().display().to_string();
        all_pids()
            .into_iter()
            .filter(|&p| p != std::process::id())
            .filter(|&p| cmdline(p).iter().any(|a| a.contains(&dir)))
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop_daemon();
        kill_tmux_server(&self.tmux, &self.socket);
        // The shims see their terminals hang up and exit; give them a moment,
        // then end whatever is left.
        let end = Instant::now() + Duration::from_secs(8);
        loop {
            let left = self.own_processes();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= end {
                for p in left {
                    // SAFETY: a process whose argv names our temp dir.
                    unsafe { libc::kill(p as i32, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(50));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if dir.close().is_err() {
                std::thread::sleep(Duration::from_millis(200));
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// The pid of the bench run that named a socket `marvel-bench-<pid>-...`,
/// when that run is gone.
fn dead_owner(socket: &str) -> Option<u32> {
    let pid = socket
        .strip_prefix("marvel-bench-")?
        .split('-')
        .next()?
        .parse::<u32>()
        .ok()?;
    (pid != std::process::id() && !process_alive(pid)).then_some(pid)
}

/// Cleans up after an earlier bench run that was killed before its guards
/// ran: its daemons (found by the `MARVEL_TMUX_SOCKET` in their
/// environment), their state directories and its tmux servers. Only
/// `marvel-bench-*` names whose run is gone are touched.
pub fn reap_stale_servers(tmux: &Path) {
    let mut dirs = Vec::new();
    for pid in all_pids() {
        let argv = cmdline(pid);
        if argv.get(1..3) != Some(&["daemon".to_string(), "run".to_string()][..]) {
            continue;
        }
        let env = environ(pid);
        let socket = env
            .iter()
            .find_map(|v| v.strip_prefix("MARVEL_TMUX_SOCKET="));
        if socket.and_then(dead_owner).is_none() {
            continue;
        }
        // SAFETY: a marvel daemon of a bench run that no longer exists.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let home = env.iter().find_map(|v| v.strip_prefix("MARVEL_HOME="));
        if let Some(dir) = home.map(Path::new).and_then(Path::parent)
            && dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("marvel-bench-"))
        {
            dirs.push(dir.to_path_buf());
        }
    }
    if let Ok(entries) = std::fs::read_dir(tmux_socket_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead_owner(&name).is_some() {
                kill_tmux_server(tmux, &name);
            }
        }
    }
    // The shims of those servers exit on hang-up; then their directories go.
    for dir in dirs {
        let d = dir.display().to_string();
        let end = Instant::now() + Duration::from_secs(8);
        loop {
            let left: Vec<u32> = all_pids()
                .into_iter()
                .filter(|&p| cmdline(p).iter().any(|a| a.contains(&d)))
                .collect();
            if left.is_empty() || Instant::now() >= end {
                for p in left {
                    // SAFETY: a helper whose argv names the dead run's dir.
                    unsafe { libc::kill(p as i32, libc::SIGKILL) };
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|&c| c == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Where tmux keeps its `-L` sockets.
fn tmux_socket_dir() -> PathBuf {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::var_os("TMUX_TMPDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(format!("tmux-{uid}"))
}

/// Kills the tmux server on socket `name` and removes the socket file that
/// tmux leaves behind.
pub fn kill_tmux_server(tmux: &Path, name: &str) {
    let mut c = Command::new(tmux);
    c.args(["-L", name, "kill-server"]).env_remove("TMUX");
    let _ = output_within(c, Duration::from_secs(10));
    let _ = std::fs::remove_file(tmux_socket_dir().join(name));
}

/// A running `marvel events --follow -o json`: each line arrives with the
/// instant it was read.
pub struct Follower {
    child: Child,
    rx: Receiver<(Instant, Value)>,
}

impl Follower {
    pub fn start(inst: &Instance, kinds: &[&str]) -> Follower {
        let mut args = vec!["events", "--follow", "-o", "json", "--limit", "0"];
        for k in kinds {
            args.extend(["--kind", k]);
        }
        let mut cmd = inst.cmd(&args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("marvel events --follow");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send((at, v)).is_err()
                {
                    break;
                }
            }
        });
        Follower { child, rx }
    }

    /// Every event that arrived since the last call.
    pub fn drain(&self) -> Vec<(Instant, Value)> {
        self.rx.try_iter().collect()
    }

    /// Waits up to `timeout` for the next event.
    pub fn next(&self, timeout: Duration) -> Option<(Instant, Value)> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn as_vec(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

pub fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Milliseconds from `a` to `b` (negative when `b` is earlier).
pub fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

// ---- /proc ----

pub fn process_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; treat it as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => stat_fields(&s).first().is_none_or(|st| *st != "Z"),
        Err(_) => false,
    }
}

pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The fields of /proc/PID/stat after the command name, starting with the
/// state (field 3 of proc(5)).
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

pub fn parent_pid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&s).get(1)?.parse().ok()
}

/// CPU time of a process in clock ticks: (own utime+stime, reaped
/// children's cutime+cstime).
pub fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f = stat_fields(&s);
    // proc(5): utime is field 14, i.e. index 11 after the state (field 3).
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((n(11)? + n(12)?, n(13)? + n(14)?))
}

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Nanoseconds on CPU of all threads of a process (schedstat), finer than
/// the tick-based counters.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for t in tasks.flatten() {
        let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// A `Key: N kB` line of a /proc file, in kB.
fn kb_field(path: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn rss_kb(pid: u32) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Resident anonymous memory (heap, stacks) and file-backed memory (the
/// binary and libraries, shared with other processes), in kB.
pub fn rss_split_kb(pid: u32) -> Option<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    Some((kb_field(&path, "RssAnon:")?, kb_field(&path, "RssFile:")?))
}

pub fn pss_kb(pid: u32) -> Option<u64> {
    kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// Private (clean + dirty) memory of a process, in kB.
pub fn private_kb(pid: u32) -> Option<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    Some(kb_field(&path, "Private_Clean:")? + kb_field(&path, "Private_Dirty:")?)
}

/// The short name of a process (`/proc/PID/comm`).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// The direct children of a process, from `/proc/PID/task/*/children`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// Every process under `roots`, the roots included, each once.
pub fn tree(roots: &[u32]) -> Vec<u32> {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<u32> = roots.to_vec();
    while let Some(p) = todo.pop() {
        if seen.insert(p) {
            todo.extend(children(p));
        }
    }
    seen.into_iter().collect()
}

/// A whole supervisor's processes: its roots and everything under them
/// except the supervised programs themselves, told apart by their command
/// name (`workload`).
#[derive(Debug, Clone)]
pub struct Supervisor {
    pub roots: Vec<u32>,
    pub workload: Vec<&'static str>,
}

impl Supervisor {
    pub fn new(roots: Vec<u32>, workload: &[&'static str]) -> Supervisor {
        Supervisor {
            roots,
            workload: workload.to_vec(),
        }
    }

    fn is_workload(&self, pid: u32) -> bool {
        !self.roots.contains(&pid) && self.workload.contains(&comm(pid).as_str())
    }

    /// CPU time used so far by the whole tree, in milliseconds: each live
    /// process's own time (schedstat nanoseconds, all threads), plus what
    /// every live process has reaped from its children (clock ticks; the
    /// tmux clients a daemon started, the shims tmux reaped, the programs
    /// a shim reaped). A process that ends moves from the first sum to its
    /// parent's reaped time, so a difference of two readings counts every
    /// CPU second once. The supervised programs still running are left
    /// out; those reaped are in their parent's share (see the callers).
    pub fn cpu_ms(&self) -> f64 {
        let tick_ms = 1000.0 / clock_ticks_per_second();
        let mut ms = 0.0;
        for p in tree(&self.roots) {
            if self.is_workload(p) {
                continue;
            }
            if let Some(ns) = cpu_ns(p) {
                ms += ns as f64 / 1e6;
            }
            if let Some((_, reaped)) = cpu_ticks(p) {
                ms += reaped as f64 * tick_ms;
            }
        }
        ms
    }

    /// Proportional memory of the whole tree but the programs, in kB,
    /// by command name.
    pub fn pss_by_comm(&self) -> BTreeMapKb {
        let mut by = BTreeMapKb::new();
        for p in tree(&self.roots) {
            if self.is_workload(p) {
                continue;
            }
            if let Some(kb) = pss_kb(p) {
                let name = match cmdline(p).get(1).map(String::as_str) {
                    Some(sub @ ("shim" | "logpipe" | "daemon")) if comm(p) == "marvel" => {
                        format!("marvel {sub}")
                    }
                    _ => comm(p),
                };
                let e = by.entry(name).or_insert((0, 0));
                e.0 += kb;
                e.1 += 1;
            }
        }
        by
    }
}

/// kB and process count by process name.
pub type BTreeMapKb = std::collections::BTreeMap<String, (u64, usize)>;

/// Bytes a process has caused to be written to storage (`write_bytes` of
/// `/proc/PID/io`): page-granular, counted when a page is first dirtied.
pub fn write_bytes(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// The commit the benchmark measures, with `-dirty` when tracked files
/// differ from it.
pub fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.arg("-C").arg(dir).args(args);
        output_within(c, Duration::from_secs(10))
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{head}-dirty") } else { head }
        }
        None => "unknown".into(),
    }
}

/// CPU time of this process's reaped children so far, in milliseconds.
pub fn reaped_children_cpu_ms() -> f64 {
    // SAFETY: getrusage fills a zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// Waits until a process named `program` that was not in `before` runs
/// under `root`: a new child of `root`, or of a new child of it (the
/// program a new shim started). Descends only into new processes, so a
/// poll reads a handful of files. Returns when it was seen.
pub fn wait_new_program(
    root: u32,
    near: Option<u32>,
    before: &std::collections::HashSet<u32>,
    program: &str,
    timeout: Duration,
) -> Option<Instant> {
    let end = Instant::now() + timeout;
    let new = |p: &u32| !before.contains(p) && comm(*p) == program;
    for round in 0u64.. {
        // Where the replacement most likely appears (a child of the
        // process the victim was a child of) is looked at every round;
        // the whole tree, processes that were there before included (a
        // supervisor may start it under one of them), which takes
        // milliseconds with hundreds of panes, only now and then.
        if near.is_some_and(|n| children(n).iter().any(new)) {
            return Some(Instant::now());
        }
        if near.is_none() || round % 64 == 63 {
            let mut todo = children(root);
            while let Some(p) = todo.pop() {
                if new(&p) {
                    return Some(Instant::now());
                }
                todo.extend(children(p));
            }
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}
