//! tmux wakes the daemon: hooks on marvel's panes and sessions signal a
//! `wait-for` channel the daemon's one waiting tmux client blocks on. With
//! the safety-net sweep an hour away, deaths are still recorded, the
//! waiting client that dies is started again, and a new tmux server is
//! watched in turn.

use serde_json::Value;

use crate::support::{Env, alive, role, signal, team};

const SLEEP: &str = r#"["sh", "-c", "exec sleep 600"]"#;

/// A test whose daemon would list panes once an hour at most: whatever it
/// learns, it learns from tmux waking it or from a shim.
fn env_without_sweeps() -> Env {
    let mut env = Env::new();
    env.env = vec![
        ("MARVEL_SWEEP_MS".into(), "3600000".into()),
        ("MARVEL_SWEEP_UNWATCHED_MS".into(), "3600000".into()),
    ];
    env
}

/// The daemon's waiting tmux client: a child of the daemon blocked in
/// `tmux wait-for`.
fn waiter(env: &Env) -> Option<u32> {
    let daemon = env.daemon_pid();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv = String::from_utf8_lossy(&argv);
        (ppid == daemon && argv.contains("wait-for") && alive(pid)).then_some(pid)
    })
}

fn wait_for_waiter(env: &Env, not: Option<u32>) -> u32 {
    env.wait("the daemon's waiting tmux client", |e| {
        waiter(e).filter(|p| Some(*p) != not)
    })
}

/// The pid of a pane's first process, the shim.
fn shim_of(env: &Env, session: &Value) -> u32 {
    let pane = session["pane"].as_str().unwrap();
    let out = env.tmux(&["display-message", "-p", "-t", pane, "#{pane_pid}"]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn up(env: &Env) -> Vec<Value> {
    let file = env.manifest(
        "team.ron",
        &team("squad", &role("w", 2, SLEEP, "max_restarts: None,")),
    );
    env.ok(&["run", &file]);
    env.wait_running("t/squad/w", 2)
}

/// Waits until `session`'s run is recorded as crashed.
fn crashed(env: &Env, session: &Value) -> Value {
    env.wait("the death to be recorded", |e| {
        e.in_state("t/squad/w", "crashed")
            .into_iter()
            .find(|s| s["key"] == session["key"])
    })
}

#[test]
fn a_pane_killed_from_outside_wakes_the_daemon_with_the_sweep_an_hour_away() {
    let env = env_without_sweeps();
    let running = up(&env);
    let before = wait_for_waiter(&env, None);
    let victim = &running[0];
    let out = env.tmux(&["kill-pane", "-t", victim["pane"].as_str().unwrap()]);
    assert!(out.status.success());
    let dead = crashed(&env, victim);
    assert!(
        dead["exit"]["reason"]
            .as_str()
            .unwrap()
            .contains("pane killed"),
        "{dead}"
    );
    // tmux woke the waiting client (which is then started anew), not only
    // the shim's word.
    let after = wait_for_waiter(&env, Some(before));
    assert!(!alive(before), "{before} still waits");
    assert_ne!(before, after);
    let log = std::fs::read_to_string(env.state_dir().join("daemon.log")).unwrap();
    assert!(!log.contains("the tmux watch ended"), "{log}");
}

#[test]
fn a_killed_shim_is_recorded_with_the_sweep_an_hour_away() {
    let env = env_without_sweeps();
    let running = up(&env);
    wait_for_waiter(&env, None);
    let victim = &running[1];
    // No shim is left to report: only tmux can tell, through its hook.
    signal(shim_of(&env, victim), libc::SIGKILL);
    let dead = crashed(&env, victim);
    assert_eq!(env.role("t/squad/w")["restarts"], 1, "{dead}");
}

#[test]
fn when_the_waiting_client_dies_supervision_goes_on_and_it_is_started_again() {
    let env = env_without_sweeps();
    let running = up(&env);
    let first = wait_for_waiter(&env, None);
    signal(first, libc::SIGKILL);
    let second = wait_for_waiter(&env, Some(first));
    assert!(!alive(first));
    // The new one is woken as the first was.
    let victim = &running[0];
    signal(shim_of(&env, victim), libc::SIGKILL);
    crashed(&env, victim);
    assert!(alive(second) || waiter(&env).is_some());
    let log = std::fs::read_to_string(env.state_dir().join("daemon.log")).unwrap();
    assert!(log.contains("the tmux watch ended"), "{log}");
}

#[test]
fn a_new_tmux_server_is_watched_in_turn() {
    let env = env_without_sweeps();
    let before: Vec<Value> = up(&env).iter().map(|s| s["pid"].clone()).collect();
    let first = wait_for_waiter(&env, None);
    assert!(env.tmux(&["kill-server"]).status.success());
    // The team comes back on a new server, which is watched in turn.
    let running = env.wait("the team back on a new server", |e| {
        let r = e.in_state("t/squad/w", "running");
        (r.len() == 2 && r.iter().all(|s| !before.contains(&s["pid"]))).then_some(r)
    });
    wait_for_waiter(&env, Some(first));
    let victim = &running[1];
    signal(shim_of(&env, victim), libc::SIGKILL);
    crashed(&env, victim);
}
