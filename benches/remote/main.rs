//! What reaching a daemon over ssh costs: `marvel get sessions` against the
//! same daemon (20 sessions) directly on its socket, through ssh with a
//! shared connection (ControlMaster), and through a new ssh connection per
//! command; and, for scale, the bare ssh round trip (`ssh HOST true`) with
//! and without the shared connection.
//!
//!     cargo bench --bench remote
//!
//! It starts a private sshd on a loopback port (throwaway keys, its own
//! config, in a temporary directory; needs openssh-server), a daemon with
//! its own state directory and tmux server, and removes all of it at the
//! end. The figures are printed and written to `target/bench/remote.json`.

#[path = "../../tests/integration/support/sshd.rs"]
#[allow(dead_code)]
mod sshd;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

const MARVEL: &str = env!("CARGO_BIN_EXE_marvel");
const RUNS: usize = 40;
const SESSIONS: u32 = 20;

struct Bench {
    sshd: sshd::Sshd,
    dir: tempfile::TempDir,
    socket: String,
}

impl Bench {
    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    fn marvel(&self, args: &[&str]) -> Command {
        let mut c = Command::new(MARVEL);
        c.args(args)
            .env("MARVEL_HOME", self.state())
            .env("MARVEL_TMUX_SOCKET", &self.socket)
            .env("MARVEL_CONFIG", self.dir.path().join("config"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("MARVEL_SSH_COMMAND", self.sshd.ssh_command())
            .env("NO_COLOR", "1")
            .env_remove("MARVEL_CONTEXT")
            .env_remove("TMUX");
        c
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.marvel(args).output().expect("run marvel");
        assert!(
            out.status.success(),
            "marvel {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ssh(&self, shared: bool) -> Command {
        let mut c = Command::new("ssh");
        c.args([
            "-F",
            &self.dir_of("ssh_config"),
            "-o",
            "BatchMode=yes",
            "-T",
        ]);
        if shared {
            let control = self.dir.path().join("run/bench-%C");
            c.args([
                "-o",
                "ControlMaster=auto",
                "-o",
                &format!("ControlPath={}", control.display()),
                "-o",
                "ControlPersist=60s",
            ]);
        }
        c.args(["-p", &self.sshd.port.to_string(), "127.0.0.1", "true"]);
        c
    }

    fn dir_of(&self, name: &str) -> String {
        self.sshd.dir.path().join(name).display().to_string()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.marvel(&["daemon", "stop"]).output();
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// A name and how to make its command.
type Variant<'a> = (&'static str, Box<dyn FnMut() -> Command + 'a>);

/// Wall times in ms of each variant, `RUNS` times after a warm-up. The
/// variants take turns, so that load from elsewhere weighs on all alike.
fn measure(variants: &mut [Variant<'_>]) -> Vec<Vec<f64>> {
    let once = |what: &str, make: &mut dyn FnMut() -> Command| {
        let start = Instant::now();
        let out = make().output().expect("run");
        let took = start.elapsed();
        assert!(out.status.success(), "{what}: {out:?}");
        took.as_secs_f64() * 1000.0
    };
    for (what, make) in variants.iter_mut() {
        for _ in 0..3 {
            once(what, make);
        }
    }
    let mut all = vec![Vec::new(); variants.len()];
    for _ in 0..RUNS {
        for (i, (what, make)) in variants.iter_mut().enumerate() {
            all[i].push(once(what, make));
        }
    }
    for ms in &mut all {
        ms.sort_by(f64::total_cmp);
    }
    all
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // cargo bench passes --bench; `cargo test --benches` does not, and this
    // benchmark must not run as a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("remote benchmark skipped: run it with cargo bench --bench remote");
        return;
    }
    let b = Bench {
        sshd: sshd::Sshd::start(),
        dir: tempfile::Builder::new()
            .prefix("marvel-bench-remote-")
            .tempdir()
            .expect("temp dir"),
        socket: format!("marvel-bench-remote-{}", std::process::id()),
    };
    std::fs::create_dir(b.dir.path().join("run")).unwrap();
    let team = b.dir.path().join("team.ron");
    std::fs::write(
        &team,
        format!(
            r#"Team(name: "bench", roles: [Role(name: "w", replicas: {SESSIONS}, command: ["sh", "-c", "exec sleep 100000"])])"#
        ),
    )
    .unwrap();
    b.ok(&["run", &team.display().to_string(), "--wait"]);
    let env = |k: &str, v: &str| format!("{k}={v}");
    let state = b.state().display().to_string();
    for (name, share) in [("shared", true), ("unshared", false)] {
        let mut args = vec![
            "context".to_string(),
            "add".into(),
            name.into(),
            b.sshd.url(),
            "--remote-path".into(),
            MARVEL.into(),
            "--remote-env".into(),
            env("MARVEL_HOME", &state),
            "--remote-env".into(),
            env("MARVEL_TMUX_SOCKET", &b.socket),
        ];
        if !share {
            args.push("--no-share".into());
        }
        b.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let labels = [
        ("local", "get sessions on the daemon's socket"),
        ("ssh_shared", "get sessions over ssh, shared connection"),
        (
            "ssh_unshared",
            "get sessions over ssh, new connection each time",
        ),
        ("ssh_true_shared", "ssh HOST true, shared connection"),
        ("ssh_true_unshared", "ssh HOST true, new connection"),
    ];
    let times = measure(&mut [
        ("local", Box::new(|| b.marvel(&["get", "sessions"]))),
        (
            "shared",
            Box::new(|| b.marvel(&["get", "sessions", "--context", "shared"])),
        ),
        (
            "unshared",
            Box::new(|| b.marvel(&["get", "sessions", "--context", "unshared"])),
        ),
        ("ssh true shared", Box::new(|| b.ssh(true))),
        ("ssh true", Box::new(|| b.ssh(false))),
    ]);
    let rows: Vec<(&str, &str, Vec<f64>)> = labels
        .iter()
        .zip(times)
        .map(|((k, w), t)| (*k, *w, t))
        .collect();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("marvel get sessions, {SESSIONS} sessions, {RUNS} runs each (ms)\n");
    println!("{:<20} {:>8} {:>8}  what", "figure", "median", "p90");
    let mut figures = serde_json::Map::new();
    for (key, what, ms) in &rows {
        let (median, p90) = (pct(ms, 0.5), pct(ms, 0.9));
        println!("{key:<20} {median:>8.1} {p90:>8.1}  {what}");
        figures.insert(
            key.to_string(),
            json!({"what": what, "median_ms": median, "p90_ms": p90, "runs": ms.len()}),
        );
    }
    let report = json!({
        "sessions": SESSIONS,
        "load_average": load.trim(),
        "ssh": String::from_utf8_lossy(&Command::new("ssh").arg("-V").output().map(|o| o.stderr).unwrap_or_default()).trim(),
        "figures": figures,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let file = out.join("remote.json");
    std::fs::write(&file, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("\nwritten to {}", file.display());
    std::thread::sleep(Duration::from_millis(10));
}
