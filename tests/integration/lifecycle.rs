//! Bringing a team up, re-applying it, changing it, killing and deleting.

use crate::support::*;

const SH: &str = r#"["sh", "-c", "echo ready; exec sleep 600"]"#;

#[test]
fn run_brings_every_replica_up_and_rerunning_changes_nothing() {
    let env = Env::new();
    let file = env.manifest(
        "team.ron",
        &team(
            "squad",
            &(role("worker", 3, SH, "") + &role("lead", 1, SH, "")),
        ),
    );
    let out = env.ok(&["run", &file]);
    assert!(out.contains("t/squad/worker created"), "{out}");
    let workers = env.wait_running("t/squad/worker", 3);
    env.wait_running("t/squad/lead", 1);
    for s in &workers {
        assert!(s["pane"].as_str().unwrap().starts_with('%'), "{s}");
        let pid = s["pid"].as_u64().unwrap();
        // The pid is the program's own, running `sleep`, not marvel's shim.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "sleep");
    }
    let before: Vec<String> = env
        .sessions()
        .iter()
        .map(|s| s["pane"].to_string())
        .collect();
    let out = env.ok(&["run", &file]);
    assert!(out.contains("unchanged"), "{out}");
    let after: Vec<String> = env
        .sessions()
        .iter()
        .map(|s| s["pane"].to_string())
        .collect();
    assert_eq!(
        before, after,
        "re-running the same file must not touch any pane"
    );
    assert_eq!(env.panes().len(), 4);
}

#[test]
fn editing_a_role_replaces_only_that_role() {
    let env = Env::new();
    let v1 = team(
        "squad",
        &(role("worker", 2, SH, "") + &role("lead", 1, SH, "")),
    );
    let file = env.manifest("team.ron", &v1);
    env.ok(&["run", &file]);
    env.wait_running("t/squad/worker", 2);
    let lead = env.wait_running("t/squad/lead", 1)[0]["pane"].clone();
    let old: Vec<Value> = env
        .in_state("t/squad/worker", "running")
        .iter()
        .map(|s| s["pane"].clone())
        .collect();

    let sh2 = r#"["sh", "-c", "echo v2; exec sleep 600"]"#;
    let v2 = team(
        "squad",
        &(role("worker", 2, sh2, "") + &role("lead", 1, SH, "")),
    );
    env.manifest("team.ron", &v2);
    let out = env.ok(&["run", &file]);
    assert!(out.contains("t/squad/worker replaced"), "{out}");
    env.wait("both workers replaced by the new spec", |e| {
        let now = e.in_state("t/squad/worker", "running");
        (now.len() == 2 && now.iter().all(|s| !old.contains(&s["pane"]))).then_some(())
    });
    assert_eq!(
        env.in_state("t/squad/lead", "running")[0]["pane"],
        lead,
        "lead untouched"
    );
    assert_eq!(env.role("t/squad/worker")["restarts"], 0);
}

use serde_json::Value;

#[test]
fn kill_is_replaced_at_once_and_not_counted() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("worker", 2, SH, "")));
    env.ok(&["run", &file]);
    let before = env.wait_running("t/squad/worker", 2);
    let victim = before.iter().find(|s| s["slot"] == 1).unwrap().clone();
    let out = env.ok(&["kill", "worker-1"]);
    assert!(out.contains("t/squad/worker-1"), "{out}");
    let after = env.wait("worker-1 replaced", |e| {
        let r = e.in_state("t/squad/worker", "running");
        (r.len() == 2 && r.iter().all(|s| s["uid"] != victim["uid"])).then_some(r)
    });
    // In the same pane, with a new program.
    let again = after.iter().find(|s| s["slot"] == 1).unwrap();
    assert_eq!(again["pane"], victim["pane"]);
    assert_ne!(again["pid"], victim["pid"]);
    let role = env.role("t/squad/worker");
    assert_eq!(role["restarts"], 0);
    assert!(
        env.in_state("t/squad/worker", "crashed").is_empty(),
        "a kill leaves no marker"
    );
}

#[test]
fn delete_team_leaves_no_panes_and_no_markers() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("worker", 2, SH, "")));
    env.ok(&["run", &file]);
    let running = env.wait_running("t/squad/worker", 2);
    // Leave a marker behind first.
    let pid = running[0]["pid"].as_u64().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    env.wait("a crashed marker", |e| {
        (!e.in_state("t/squad/worker", "crashed").is_empty()).then_some(())
    });
    env.ok(&["delete", "team", "squad"]);
    env.wait("no sessions and no panes", |e| {
        (e.sessions().is_empty() && e.panes().is_empty()).then_some(())
    });
    assert!(env.roles().is_empty());
}

#[test]
fn on_failure_exit_zero_succeeds_and_is_not_replaced() {
    let env = Env::new();
    let cmd = r#"["sh", "-c", "sleep 0.2; exit 0"]"#;
    let file = env.manifest(
        "team.ron",
        &team("jobs", &role("once", 1, cmd, "restart: OnFailure,")),
    );
    env.ok(&["run", &file]);
    let done = env.wait("the job to succeed", |e| {
        e.sessions().into_iter().find(|s| s["state"] == "succeeded")
    });
    assert_eq!(done["exit"]["code"], 0);
    // Observe for well over the backoff: nothing replaces it.
    let until = std::time::Instant::now() + std::time::Duration::from_millis(900);
    while std::time::Instant::now() < until {
        let s = env.sessions();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0]["state"], "succeeded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(env.role("t/jobs/once")["state"], "succeeded");
}
