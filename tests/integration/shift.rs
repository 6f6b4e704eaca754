//! Rolling shifts on a real tmux server: new before old, never below the
//! desired count, a crashing successor fails the shift and leaves the old
//! sessions running, `--abort` leaves a consistent team. And scale/kill.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use crate::support::*;

const SLEEP: &str = r#"["sh", "-c", "exec sleep 600"]"#;

fn uids(sessions: &[Value]) -> BTreeSet<u64> {
    sessions
        .iter()
        .map(|s| s["uid"].as_u64().unwrap())
        .collect()
}

/// Live (running or pending) sessions of `role`, from one listing.
fn live(env: &Env, role: &str) -> Vec<Value> {
    env.sessions()
        .into_iter()
        .filter(|s| {
            (s["state"] == "running" || s["state"] == "pending")
                && format!(
                    "{}/{}/{}",
                    s["workspace"].as_str().unwrap(),
                    s["team"].as_str().unwrap(),
                    s["role"].as_str().unwrap()
                ) == role
        })
        .collect()
}

fn shift_of(env: &Env) -> Value {
    env.json(&["get", "teams"])[0]["shift"].clone()
}

fn event_kinds(env: &Env) -> Vec<String> {
    env.ok(&["events", "-o", "json"])
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A program that heartbeats every 50 ms while `hold` does not exist.
fn heartbeating_unless(hold: &Path) -> String {
    format!(
        r#"["sh", "-c", "while :; do [ -e '{}' ] || '{BIN}' heartbeat; sleep 0.05; done"]"#,
        hold.display()
    )
}

/// A long timeout: holding heartbeats back for a while harms no one.
const PATIENT: &str = r#"health: Heartbeat(timeout: "10s", failures: 3),"#;

#[test]
fn a_shift_never_drops_below_three_running_and_replaces_them_all() {
    let env = Env::new();
    let hold = env.dir().join("hold");
    let file = env.manifest(
        "team.ron",
        &team(
            "squad",
            &role("worker", 3, &heartbeating_unless(&hold), PATIENT),
        ),
    );
    env.ok(&["run", &file]);
    env.wait("three healthy workers", |e| {
        let r = e.in_state("t/squad/worker", "running");
        (r.len() == 3 && r.iter().all(|s| s["health"] == "healthy")).then_some(())
    });
    let old = uids(&env.in_state("t/squad/worker", "running"));

    // Successors send no heartbeat yet: the first one waits beside its
    // predecessor, and nothing old is stopped.
    std::fs::write(&hold, "").unwrap();
    let mut shift = env
        .cmd(&["shift", "squad", "--wait", "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let surge = env.wait("a successor beside the old sessions", |e| {
        let l = live(e, "t/squad/worker");
        (l.len() == 4).then_some(l)
    });
    let outdated: Vec<&Value> = surge.iter().filter(|s| s["outdated"] == true).collect();
    assert_eq!(outdated.len(), 3, "{surge:?}");
    let described = env.ok(&["describe", "role", "squad/worker"]);
    assert_eq!(described.matches("  outdated").count(), 3, "{described}");
    assert!(env.in_state("t/squad/worker", "running").len() >= 3);
    assert_eq!(shift_of(&env)["state"], "running");
    assert_eq!(shift_of(&env)["replaced"], 0);
    let err = env.fails(&["scale", "squad/worker", "4"], 5);
    assert!(err.contains("shifting") && err.contains("--abort"), "{err}");

    // Let them report; watch until the shift ends: never fewer than three.
    std::fs::remove_file(&hold).unwrap();
    let mut observations = 0;
    let status = loop {
        let running = env.in_state("t/squad/worker", "running");
        assert!(
            running.len() >= 3,
            "only {} running during the shift\n{}",
            running.len(),
            env.dump()
        );
        assert!(live(&env, "t/squad/worker").len() <= 4, "{}", env.dump());
        observations += 1;
        if let Some(status) = shift.try_wait().unwrap() {
            break status;
        }
    };
    let out = shift.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("t/squad shift completed: 3 sessions replaced"),
        "{stdout}"
    );
    assert!(observations > 1);

    let now = env.wait_running("t/squad/worker", 3);
    assert!(uids(&now).is_disjoint(&old), "{now:?} vs {old:?}");
    assert_eq!(live(&env, "t/squad/worker").len(), 3);
    let mut slots: Vec<u64> = now.iter().map(|s| s["slot"].as_u64().unwrap()).collect();
    slots.sort();
    assert_eq!(slots, vec![0, 1, 2]);
    env.wait("only the new panes", |e| {
        (e.panes().len() == 3).then_some(())
    });
    let kinds = event_kinds(&env);
    assert!(kinds.contains(&"shift-started".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"shift-completed".to_string()), "{kinds:?}");
    assert_eq!(shift_of(&env)["state"], "completed");
    let teams = env.ok(&["get", "teams"]);
    assert!(
        teams.contains("SHIFT") && teams.contains("completed ("),
        "{teams}"
    );
    let described = env.ok(&["describe", "team", "squad"]);
    assert!(
        described.contains("Shift:       completed (3 of 3 sessions replaced)"),
        "{described}"
    );
}

#[test]
fn a_shift_whose_new_session_crashes_fails_and_the_old_sessions_keep_running() {
    let env = Env::new();
    let broken = env.dir().join("broken");
    let cmd = format!(
        r#"["sh", "-c", "[ -e '{}' ] && {{ echo broken; exit 3; }}; exec sleep 600"]"#,
        broken.display()
    );
    let file = env.manifest("team.ron", &team("squad", &role("worker", 3, &cmd, "")));
    env.ok(&["run", &file]);
    let old = uids(&env.wait_running("t/squad/worker", 3));
    std::fs::write(&broken, "").unwrap();
    let err = env.fails(&["shift", "squad", "--wait"], 1);
    assert!(
        err.contains("t/squad shift failed: new session t/squad/worker-0")
            && err.contains("crashed (exit 3)"),
        "{err}"
    );
    let shift = shift_of(&env);
    assert_eq!(shift["state"], "failed");
    assert!(
        shift["reason"].as_str().unwrap().contains("exit 3"),
        "{shift}"
    );
    assert_eq!(
        env.role("t/squad/worker")["restarts"],
        1,
        "counted as a crash"
    );
    assert!(event_kinds(&env).contains(&"shift-failed".to_string()));
    // The old sessions run on, and nothing else replaces them.
    let after = uids(&env.wait_running("t/squad/worker", 3));
    assert_eq!(after, old);
    env.wait("the team ready again", |e| {
        (e.role("t/squad/worker")["state"] == "ready").then_some(())
    });
    assert_eq!(uids(&live(&env, "t/squad/worker")), old);
}

#[test]
fn abort_stops_a_shift_in_flight_and_leaves_a_consistent_team() {
    let env = Env::new();
    let hold = env.dir().join("hold");
    let file = env.manifest(
        "team.ron",
        &team(
            "squad",
            &role("worker", 3, &heartbeating_unless(&hold), PATIENT),
        ),
    );
    env.ok(&["run", &file]);
    env.wait("three healthy workers", |e| {
        let r = e.in_state("t/squad/worker", "running");
        (r.len() == 3 && r.iter().all(|s| s["health"] == "healthy")).then_some(())
    });
    let old = uids(&env.in_state("t/squad/worker", "running"));
    std::fs::write(&hold, "").unwrap();
    let out = env.ok(&["shift", "squad"]);
    assert!(
        out.contains("t/squad shift started: worker (3 sessions"),
        "{out}"
    );
    env.wait("a successor in flight", |e| {
        (live(e, "t/squad/worker").len() == 4).then_some(())
    });
    let out = env.ok(&["shift", "squad", "--abort"]);
    assert!(
        out.contains("t/squad shift aborted with 0 of 3 sessions replaced"),
        "{out}"
    );
    // The successor that was not ready goes; the old sessions stay.
    let now = env.wait("three sessions, one per slot", |e| {
        let l = live(e, "t/squad/worker");
        (l.len() == 3).then_some(l)
    });
    assert_eq!(uids(&now), old, "{}", env.dump());
    assert!(now.iter().all(|s| s["outdated"] == false), "{now:?}");
    env.wait("only their panes", |e| (e.panes().len() == 3).then_some(()));
    assert_eq!(shift_of(&env)["state"], "aborted");
    assert!(event_kinds(&env).contains(&"shift-aborted".to_string()));
    assert_eq!(env.role("t/squad/worker")["restarts"], 0);
    // The team is usable again: scaling is accepted.
    env.ok(&["scale", "squad/worker", "2"]);
    let err = env.fails(&["shift", "squad", "--abort"], 5);
    assert!(err.contains("no shift in progress"), "{err}");
}

#[test]
fn scale_down_stops_the_newest_sessions_and_kill_is_not_a_crash() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("worker", 3, SLEEP, "")));
    env.ok(&["run", &file]);
    let first = env.wait_running("t/squad/worker", 3);
    let in_slot = |v: &[Value], slot: u64| {
        v.iter()
            .find(|s| s["slot"] == slot)
            .map(|s| s["uid"].as_u64().unwrap())
            .unwrap()
    };
    let keep = in_slot(&first, 1);
    // Killing worker-0 replaces it at once: it becomes the newest.
    env.ok(&["kill", "worker-0"]);
    env.wait("worker-0 replaced", |e| {
        let r = e.in_state("t/squad/worker", "running");
        (r.len() == 3 && in_slot(&r, 0) != in_slot(&first, 0)).then_some(())
    });
    assert_eq!(
        env.role("t/squad/worker")["restarts"],
        0,
        "a kill is not a crash"
    );
    assert!(env.in_state("t/squad/worker", "crashed").is_empty());
    env.ok(&["scale", "squad/worker", "1"]);
    let left = env.wait("one session left", |e| {
        let l = live(e, "t/squad/worker");
        (l.len() == 1).then_some(l)
    });
    assert_eq!(left[0]["uid"], keep, "the oldest stays: {left:?}");
    assert_eq!(left[0]["key"], "t/squad/worker-1");
    env.wait("one pane", |e| (e.panes().len() == 1).then_some(()));
    // The daemon hears of the panes' ends after tmux has removed them.
    env.wait("the role ready", |e| {
        (e.role("t/squad/worker")["state"] == "ready").then_some(())
    });
}
