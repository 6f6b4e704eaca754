//! The integration-test harness: every test gets its own tmux server
//! (`tmux -L <unique>`) and its own state directory, drives the real
//! `marvel` binary, waits on conditions with deadlines, and on failure
//! prints the whole story (sessions, roles, events, daemon log).

#![allow(dead_code)]

pub mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod viewer;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const BIN: &str = env!("CARGO_BIN_EXE_marvel");

/// How long any condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Env {
    pub home: tempfile::TempDir,
    pub socket: String,
    /// Extra environment for every marvel command (and so the daemon).
    pub env: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Env {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let socket = format!(
            "marvel-test-{}-{n}-{}",
            std::process::id(),
            fastrand::u32(..)
        );
        Env {
            home: tempfile::Builder::new()
                .prefix("marvel-test-")
                .tempdir()
                .expect("temp dir"),
            socket,
            env: vec![("MARVEL_SWEEP_MS".into(), "300".into())],
        }
    }

    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// A `marvel` command bound to this test's state dir and tmux server.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("MARVEL_HOME", self.state_dir())
            .env("MARVEL_TMUX_SOCKET", &self.socket)
            // Contexts of its own: never the user's.
            .env("MARVEL_CONFIG", self.dir().join("config"))
            .env_remove("MARVEL_CONTEXT")
            .env("NO_COLOR", "1")
            .env_remove("TMUX")
            .current_dir(self.dir());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run marvel")
    }

    /// Runs marvel and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            panic!(
                "marvel {} failed ({}):\nstdout:\n{}\nstderr:\n{}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.dump()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs marvel expecting failure with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "marvel {} should exit {code}:\nstdout:\n{}\nstderr:\n{stderr}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            self.dump()
        );
        stderr
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["-o", "json"]);
        let text = self.ok(&full);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("marvel {} printed bad JSON ({e}):\n{text}", full.join(" ")))
    }

    pub fn sessions(&self) -> Vec<Value> {
        self.json(&["get", "sessions"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn roles(&self) -> Vec<Value> {
        self.json(&["get", "roles"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn role(&self, key: &str) -> Value {
        self.roles()
            .into_iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("no role {key}\n{}", self.dump()))
    }

    /// Sessions of `role_key` in `state`.
    pub fn in_state(&self, role_key: &str, state: &str) -> Vec<Value> {
        self.sessions()
            .into_iter()
            .filter(|s| {
                s["state"] == state
                    && format!(
                        "{}/{}/{}",
                        s["workspace"].as_str().unwrap(),
                        s["team"].as_str().unwrap(),
                        s["role"].as_str().unwrap()
                    ) == role_key
            })
            .collect()
    }

    /// Writes a manifest into the test directory.
    pub fn manifest(&self, name: &str, text: &str) -> String {
        let path = self.dir().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path.display().to_string()
    }

    /// Polls `check` until it returns Some, or fails with the story.
    pub fn wait<T>(&self, what: &str, mut check: impl FnMut(&Env) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out after {:?} waiting for {what}\n{}",
                    DEADLINE,
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `role_key` has `n` running sessions; returns them.
    pub fn wait_running(&self, role_key: &str, n: usize) -> Vec<Value> {
        self.wait(&format!("{n} running sessions of {role_key}"), |e| {
            let r = e.in_state(role_key, "running");
            (r.len() == n).then_some(r)
        })
    }

    pub fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Panes on this test's tmux server.
    pub fn panes(&self) -> Vec<String> {
        let out = self.tmux(&["list-panes", "-a", "-F", "#{pane_id}"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// What a pane shows now (its visible screen, wrapped lines joined).
    pub fn screen(&self, pane: &str) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-J", "-t", pane]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs marvel, failing the test if it has not finished within `limit`
    /// (a hang, not slowness: keep `limit` far above any normal run).
    pub fn run_within(&self, args: &[&str], limit: Duration) -> Output {
        let mut child = self
            .cmd(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run marvel");
        let start = Instant::now();
        while child.try_wait().expect("wait for marvel").is_none() {
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "marvel {} hung for {limit:?}\n{}",
                    args.join(" "),
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait_with_output().expect("marvel output")
    }

    /// `status -o json`, whatever its exit code (7 while tmux is down).
    pub fn status(&self) -> Value {
        let out = self.run(&["status", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status printed bad JSON ({e}):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    pub fn daemon_pid(&self) -> u32 {
        self.status()["daemon"]["pid"].as_u64().expect("daemon pid") as u32
    }

    /// Events of one kind, oldest first.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.ok(&["events", "--kind", kind, "-o", "json"])
            .lines()
            .map(|l| serde_json::from_str(l).expect("an event line"))
            .collect()
    }

    /// The pid of this test's tmux server.
    pub fn tmux_server_pid(&self) -> i32 {
        let out = self.tmux(&["display-message", "-p", "#{pid}"]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no tmux server pid: {out:?}"))
    }

    /// Everything worth seeing when a test fails.
    pub fn dump(&self) -> String {
        let run = |args: &[&str]| {
            let out = self.cmd(args).output();
            match out {
                Ok(o) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => e.to_string(),
            }
        };
        let log = std::fs::read_to_string(self.state_dir().join("daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!(
            "---- get sessions -o wide\n{}---- get roles\n{}---- events\n{}---- panes\n{:?}\n---- daemon log (tail)\n{}\n----",
            run(&["get", "sessions", "-o", "wide"]),
            run(&["get", "roles"]),
            run(&["events", "--limit", "60"]),
            self.panes(),
            tail.join("\n")
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let out = self.tmux(&["list-panes", "-a", "-F", "#{pane_pid}"]);
        let shims: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        let _ = self.cmd(&["daemon", "stop"]).output();
        let _ = self.tmux(&["kill-server"]);
        // The shims record their programs' ends in the state directory as
        // they go: let them finish before it is removed, or they would
        // leave a fresh one behind.
        let deadline = Instant::now() + Duration::from_secs(5);
        while shims.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // A killed server can leave its socket file behind.
        let _ = std::fs::remove_file(marvel::substrate::tmux::socket_path(&self.socket));
    }
}

/// Whether `pid` is a running process (a zombie is not: nobody may reap
/// the daemons these tests kill). The first thread of a killed daemon is a
/// zombie while its other threads still exit, and they hold the process's
/// files, its socket among them, until the last is gone: a client that
/// connects then is answered by a reset, not by a new daemon.
pub fn alive(pid: u32) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        });
    match zombie {
        None => false,
        Some(false) => true,
        Some(true) => std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| d.count() > 1),
    }
}

/// The seed of a randomized test: `MARVEL_TEST_SEED` to replay a failure
/// (every such test prints its seed when it fails), else a fresh one.
pub fn seed() -> u64 {
    std::env::var("MARVEL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test started or was told about.
    unsafe { libc::kill(pid as i32, sig) };
}

/// A one-role team manifest with millisecond time constants.
pub fn team(name: &str, roles: &str) -> String {
    format!("Team(name: {name:?}, workspace: \"t\", roles: [{roles}])")
}

/// A role with short backoff, whose replacements count as ready after
/// 100 ms; `extra` adds fields.
pub fn role(name: &str, replicas: u32, command: &str, extra: &str) -> String {
    format!(
        "Role(name: {name:?}, replicas: {replicas}, command: {command}, \
         backoff: (initial: \"150ms\", max: \"300ms\", factor: 2.0, jitter: 0.0), \
         ready_after: \"100ms\", {extra}),"
    )
}
