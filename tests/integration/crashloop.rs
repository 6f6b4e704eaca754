//! The crash story on a real tmux server: markers, exit codes and signals,
//! backoff, saturation, reset, forgiveness.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::support::*;

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

const SHELL: &str = r#"["sh"]"#;
const SLEEP: &str = r#"["sh", "-c", "exec sleep 600"]"#;

#[test]
fn inject_exit_into_a_shell_crashes_it_and_the_replacement_waits_for_backoff() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("worker", 1, SHELL, "")));
    env.ok(&["run", &file]);
    let first = env.wait_running("t/squad/worker", 1).remove(0);
    env.ok(&["inject", "worker-0", "exit", "--enter"]);
    let marker = env.wait("the crashed marker", |e| {
        e.in_state("t/squad/worker", "crashed").pop()
    });
    assert_eq!(marker["exit"]["code"], 0, "{marker}");
    assert_eq!(marker["key"], "t/squad/worker-0");
    assert_eq!(env.role("t/squad/worker")["restarts"], 1);
    let replacement = env.wait("the replacement", |e| {
        e.in_state("t/squad/worker", "running")
            .into_iter()
            .find(|s| s["uid"] != first["uid"])
    });
    assert_eq!(
        replacement["pane"], first["pane"],
        "restarted in the same pane"
    );
    let died = at(&marker["exit"]["at"]);
    let created = at(&replacement["created_at"]);
    assert!(
        created - died >= chrono::Duration::milliseconds(150),
        "replacement created {} ms after the death, before the 150 ms backoff",
        (created - died).num_milliseconds()
    );
    assert_eq!(replacement["restarts"], 1);
    env.wait("the marker to go once the replacement runs", |e| {
        e.in_state("t/squad/worker", "crashed")
            .is_empty()
            .then_some(())
    });
}

/// A restart in the kept pane makes and removes no file: the new run's
/// exit record is the one before, renamed and written over, and it is the
/// only one of the slot. A daemon started again finds the run by it.
#[test]
fn a_restart_in_the_same_pane_takes_its_exit_record_over() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let file = env.manifest(
        "team.ron",
        &team("squad", &role("worker", 1, SLEEP, "max_restarts: None,")),
    );
    env.ok(&["run", &file]);
    let exits = env.state_dir().join("exits");
    // A file is told by its inode and its birth time: a file made after
    // one was removed can have its inode, not its birth time.
    type Record = (String, (u64, Option<std::time::SystemTime>));
    let records = || -> Vec<Record> {
        let mut r: Vec<Record> = std::fs::read_dir(&exits)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let m = e.metadata().unwrap();
                (name, (m.ino(), m.created().ok()))
            })
            .collect();
        r.sort();
        r
    };
    let mut run = env.wait_running("t/squad/worker", 1).remove(0);
    let first = env.wait("the first run's record", |_| {
        let r = records();
        (r.len() == 1).then(|| r[0].clone())
    });
    assert_eq!(first.0, format!("{}.json", run["uid"]));
    for _ in 0..3 {
        unsafe { libc::kill(run["pid"].as_u64().unwrap() as i32, libc::SIGKILL) };
        let next = env.wait("the restart", |e| {
            e.in_state("t/squad/worker", "running")
                .into_iter()
                .find(|s| s["uid"] != run["uid"])
        });
        assert_eq!(next["pane"], run["pane"], "restarted in the same pane");
        let name = format!("{}.json", next["uid"]);
        let now = env.wait("the record taken over", |_| {
            let r = records();
            (r.len() == 1 && r[0].0 == name).then(|| r[0].clone())
        });
        assert_eq!(now.1, first.1, "the same file: {}", env.dump());
        run = next;
    }
    // With the daemon away, the program's end goes into that record too,
    // in place, and the next daemon records the death.
    let daemon = env.daemon_pid();
    signal(daemon, libc::SIGKILL);
    env.wait("the daemon to go", |_| (!alive(daemon)).then_some(()));
    let pid = run["pid"].as_u64().unwrap() as u32;
    signal(pid, libc::SIGKILL);
    env.wait("the program to go", |_| (!alive(pid)).then_some(()));
    let record = exits.join(format!("{}.json", run["uid"]));
    env.wait("the end in the record", |_| {
        let text = std::fs::read_to_string(&record).ok()?;
        text.contains("Exited").then_some(())
    });
    let m = std::fs::metadata(&record).unwrap();
    assert_eq!((m.ino(), m.created().ok()), first.1);
    let crashed = env.wait("the death recorded by the next daemon", |e| {
        let mut all = e.events("crashed");
        (all.len() == 4).then(|| all.remove(3))
    });
    assert!(
        crashed["message"].as_str().unwrap().starts_with("signal 9"),
        "{crashed}"
    );
}

#[test]
fn exit_codes_signals_and_killed_panes_are_recorded() {
    let env = Env::new();
    let roles = role(
        "code",
        1,
        r#"["sh", "-c", "sleep 0.3; exit 42"]"#,
        "max_restarts: None,",
    ) + &role("sig", 1, SLEEP, "")
        + &role("pane", 1, SLEEP, "");
    let file = env.manifest("team.ron", &team("squad", &roles));
    env.ok(&["run", &file]);
    let code = env.wait("exit 42", |e| e.in_state("t/squad/code", "crashed").pop());
    assert_eq!(code["exit"]["code"], 42);
    assert_eq!(code["exit"]["signal"], Value::Null);

    let sig = env.wait_running("t/squad/sig", 1).remove(0);
    unsafe { libc::kill(sig["pid"].as_u64().unwrap() as i32, libc::SIGKILL) };
    let dead = env.wait("signal 9", |e| e.in_state("t/squad/sig", "crashed").pop());
    assert_eq!(dead["exit"]["signal"], 9, "{dead}");
    assert_eq!(dead["exit"]["code"], Value::Null);

    let pane = env.wait_running("t/squad/pane", 1).remove(0);
    let out = env.tmux(&["kill-pane", "-t", pane["pane"].as_str().unwrap()]);
    assert!(out.status.success());
    let killed = env.wait("the killed pane", |e| {
        e.in_state("t/squad/pane", "crashed").pop()
    });
    assert!(
        killed["exit"]["reason"]
            .as_str()
            .unwrap()
            .contains("pane killed"),
        "{killed}"
    );
    assert_eq!(env.role("t/squad/pane")["restarts"], 1);
}

#[test]
fn simultaneous_deaths_leave_exactly_one_marker() {
    let env = Env::new();
    let file = env.manifest(
        "team.ron",
        &team("squad", &role("worker", 4, SLEEP, "max_restarts: None,")),
    );
    env.ok(&["run", &file]);
    let running = env.wait_running("t/squad/worker", 4);
    for s in &running {
        unsafe { libc::kill(s["pid"].as_u64().unwrap() as i32, libc::SIGKILL) };
    }
    env.wait("all four deaths counted", |e| {
        (e.role("t/squad/worker")["restarts"] == 4).then_some(())
    });
    let markers = env.in_state("t/squad/worker", "crashed");
    assert_eq!(markers.len(), 1, "{markers:?}");
}

#[test]
fn a_saturated_role_freezes_and_only_reset_or_a_spec_change_brings_it_back() {
    let env = Env::new();
    let crashing = r#"["sh", "-c", "echo dying; exit 3"]"#;
    let r = role("worker", 1, crashing, "max_restarts: 2, window: \"1m\",");
    let file = env.manifest("team.ron", &team("squad", &r));
    env.ok(&["run", &file]);
    let frozen = env.wait("the role to freeze", |e| {
        let r = e.role("t/squad/worker");
        (r["state"] == "frozen").then_some(r)
    });
    assert_eq!(
        frozen["frozen_reason"], "3 crashes in 1m, last: exit 3",
        "{frozen}"
    );
    assert_eq!(frozen["next_restart_at"], Value::Null);
    let marker = env.in_state("t/squad/worker", "crashed");
    assert_eq!(marker.len(), 1);
    assert!(
        marker[0]["last_output"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "dying"),
        "{:?}",
        marker[0]
    );

    // The slot's pane stays, showing the last screen and what to do.
    let pane = marker[0]["pane"]
        .as_str()
        .expect("the marker names its pane")
        .to_string();
    let line = "frozen: 3 crashes in 1m, last: exit 3 — marvel reset role t/squad/worker";
    env.wait("the frozen line", |e| {
        e.screen(&pane).contains(line).then_some(())
    });
    assert!(env.screen(&pane).contains("dying"));
    // Nothing is spawned for well over three maximum backoffs (3 × 300 ms).
    let until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < until {
        assert!(env.in_state("t/squad/worker", "running").is_empty());
        assert!(env.in_state("t/squad/worker", "pending").is_empty());
        assert_eq!(
            env.panes(),
            std::slice::from_ref(&pane),
            "a frozen role keeps its pane only"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Neither scaling up nor re-running the unchanged file spawns anything.
    let err = env.fails(&["scale", "squad/worker", "2"], 5);
    assert!(
        err.contains("frozen") && err.contains("marvel reset role t/squad/worker"),
        "{err}"
    );
    let out = env.run(&["run", &file]);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("frozen") && text.contains("marvel reset role t/squad/worker"),
        "{text}"
    );
    env.fails(&["run", &file, "--wait"], 5);
    assert_eq!(env.panes(), std::slice::from_ref(&pane));

    // Reset: spawns again at once (the program still crashes, so it
    // freezes again after its budget).
    let created = |e: &Env| {
        e.ok(&["events", "--kind", "created", "-o", "json"])
            .lines()
            .count()
    };
    let before = created(&env);
    let out = env.ok(&["reset", "role", "squad/worker"]);
    assert!(out.contains("un-frozen"), "{out}");
    env.wait("a spawn after the reset", |e| {
        (created(e) > before).then_some(())
    });
    env.wait("frozen again", |e| {
        (e.role("t/squad/worker")["state"] == "frozen").then_some(())
    });

    // A changed spec un-freezes too.
    let fixed = role("worker", 2, SLEEP, "max_restarts: 2, window: \"1m\",");
    env.manifest("team.ron", &team("squad", &fixed));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/worker", 2);
    assert_eq!(env.role("t/squad/worker")["restarts"], 0);
}

#[test]
fn a_role_that_ran_past_reset_after_restarts_from_initial_again() {
    let env = Env::new();
    let r = role(
        "worker",
        1,
        SLEEP,
        "reset_after: \"600ms\", max_restarts: None,",
    );
    let file = env.manifest("team.ron", &team("squad", &r));
    env.ok(&["run", &file]);
    // Two quick crashes move the curve to its second step (300 ms).
    for n in 1..=2u64 {
        let s = env.wait_running("t/squad/worker", 1).remove(0);
        unsafe { libc::kill(s["pid"].as_u64().unwrap() as i32, libc::SIGKILL) };
        env.wait("the crash", |e| {
            (e.role("t/squad/worker")["restarts"] == n).then_some(())
        });
    }
    env.wait_running("t/squad/worker", 1);
    // Stay up past reset_after: forgiven (an event says so).
    env.wait("forgiveness", |e| {
        let out = e.ok(&["events", "--kind", "forgiven", "-o", "json"]);
        out.contains("t/squad/worker").then_some(())
    });
    let s = env.wait_running("t/squad/worker", 1).remove(0);
    unsafe { libc::kill(s["pid"].as_u64().unwrap() as i32, libc::SIGKILL) };
    let marker = env.wait("the crash", |e| {
        e.in_state("t/squad/worker", "crashed").pop()
    });
    let role = env.role("t/squad/worker");
    let next = at(&role["next_restart_at"]);
    let died = at(&marker["exit"]["at"]);
    assert_eq!(
        (next - died).num_milliseconds(),
        150,
        "back to initial, not 600 ms"
    );
}
