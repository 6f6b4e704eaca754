//! What a program in a pane sees, and heartbeat health on a real tmux
//! server: `marvel heartbeat` from inside the pane keeps a session healthy;
//! silence past the threshold is a crash ("heartbeat stale") that backs off
//! and freezes like any other.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// A program that runs `marvel heartbeat` every 50 ms, and exits 9 the
/// moment one is refused (so a refusal would show as a crash).
fn heartbeating() -> String {
    format!(
        r#"["sh", "-c", "while :; do '{BIN}' heartbeat --context-pct 42 --note 'on task' || exit 9; sleep 0.05; done"]"#
    )
}

fn events(env: &Env, kind: &str) -> Vec<Value> {
    env.ok(&["events", "--kind", kind, "-o", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_pane_sees_its_session_role_team_workspace_and_daemon() {
    let env = Env::new();
    let out = env.dir().join("env.txt");
    let cmd = format!(
        r#"["sh", "-c", "env | grep ^MARVEL_ | sort > '{}.tmp' && mv '{0}.tmp' '{0}'; exec sleep 600"]"#,
        out.display()
    );
    let file = env.manifest("team.ron", &team("squad", &role("worker", 1, &cmd, "")));
    env.ok(&["run", &file]);
    let s = env.wait_running("t/squad/worker", 1).remove(0);
    let text = env.wait("the program to write its environment", |_| {
        std::fs::read_to_string(&out).ok()
    });
    let vars: Vec<&str> = text.lines().collect();
    let state = env.state_dir();
    for expected in [
        "MARVEL_SESSION=t/squad/worker-0".to_string(),
        format!("MARVEL_SESSION_UID={}", s["uid"]),
        "MARVEL_ROLE=t/squad/worker".to_string(),
        "MARVEL_TEAM=t/squad".to_string(),
        "MARVEL_WORKSPACE=t".to_string(),
        format!("MARVEL_HOME={}", state.display()),
        format!("MARVEL_TMUX_SOCKET={}", env.socket),
    ] {
        assert!(
            vars.contains(&expected.as_str()),
            "{expected} not in:\n{text}"
        );
    }
}

#[test]
fn a_program_that_heartbeats_stays_healthy() {
    let env = Env::new();
    let r = role(
        "worker",
        1,
        &heartbeating(),
        r#"health: Heartbeat(timeout: "300ms", failures: 3),"#,
    );
    let file = env.manifest("team.ron", &team("squad", &r));
    env.ok(&["run", &file]);
    let s = env.wait("a healthy session", |e| {
        e.in_state("t/squad/worker", "running")
            .into_iter()
            .find(|s| s["health"] == "healthy")
    });
    assert_eq!(s["context_pct"], 42, "{s}");
    assert_eq!(s["heartbeat_note"], "on task", "{s}");
    assert!(s["last_heartbeat_at"].is_string(), "{s}");
    // Well past the threshold (3 × 300 ms) it is the same session, healthy,
    // never restarted.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let now = env.in_state("t/squad/worker", "running");
        assert_eq!(now.len(), 1, "{}", env.dump());
        assert_eq!(now[0]["uid"], s["uid"], "{}", env.dump());
        assert_eq!(now[0]["health"], "healthy", "{}", env.dump());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(env.role("t/squad/worker")["restarts"], 0);
    assert!(events(&env, "unhealthy").is_empty());
    let table = env.ok(&["get", "sessions"]);
    assert!(
        table.contains("HEALTH") && table.contains("healthy ("),
        "{table}"
    );
    let described = env.ok(&["describe", "session", "worker-0"]);
    assert!(described.contains("Context:     42% used"), "{described}");
}

#[test]
fn a_program_that_stops_heartbeating_is_restarted_as_a_crash_and_freezes_if_it_keeps_at_it() {
    let env = Env::new();
    // Two heartbeats, then silence.
    let cmd = format!(
        r#"["sh", "-c", "'{BIN}' heartbeat && sleep 0.05 && '{BIN}' heartbeat && exec sleep 600"]"#
    );
    let r = role(
        "worker",
        1,
        &cmd,
        r#"health: Heartbeat(timeout: "200ms", failures: 2), max_restarts: 1, window: "1m","#,
    );
    let file = env.manifest("team.ron", &team("squad", &r));
    env.ok(&["run", &file]);
    let marker = env.wait("the first stale heartbeat", |e| {
        e.in_state("t/squad/worker", "crashed").pop()
    });
    assert_eq!(marker["exit"]["reason"], "heartbeat stale", "{marker}");
    let crashed = events(&env, "crashed");
    assert!(
        crashed[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("heartbeat stale"),
        "{crashed:?}"
    );
    // Healthy after its heartbeats, unhealthy once they stopped.
    assert!(!events(&env, "healthy").is_empty());
    assert!(!events(&env, "unhealthy").is_empty());

    // The replacement does the same: the second crash exceeds the budget.
    let frozen = env.wait("the role to freeze", |e| {
        let r = e.role("t/squad/worker");
        (r["state"] == "frozen").then_some(r)
    });
    assert_eq!(
        frozen["frozen_reason"], "2 crashes in 1m, last: heartbeat stale",
        "{frozen}"
    );
    assert_eq!(frozen["restarts"], 2);
    // Its program is gone; its pane stays and says why.
    let pane = env.panes().pop().expect("the slot's pane");
    env.wait("the frozen line", |e| {
        let screen = e.screen(&pane);
        screen
            .contains(
                "frozen: 2 crashes in 1m, last: heartbeat stale — marvel reset role t/squad/worker",
            )
            .then_some(())
    });
    assert_eq!(env.panes(), [pane]);
}

#[test]
fn heartbeat_outside_a_pane_or_without_a_daemon_says_so_and_starts_nothing() {
    let env = Env::new();
    let out = env
        .cmd(&["heartbeat"])
        .env_remove("MARVEL_SESSION")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MARVEL_SESSION is not set"), "{err}");

    let out = env
        .cmd(&["heartbeat"])
        .env("MARVEL_SESSION", "t/squad/worker-0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no marvel daemon is running"), "{err}");
    assert!(
        !env.state_dir().join("marvel.sock").exists(),
        "a heartbeat must not start a daemon"
    );
}
