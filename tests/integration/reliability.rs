//! What survives what, on a real tmux: a daemon killed with SIGKILL, an
//! unreadable state file, tmux missing at start, its server killed or
//! stopped under a running team.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const SLEEP: &str = r#"["sh", "-c", "exec sleep 600"]"#;

/// A role with its own backoff; `extra` adds fields.
fn role_backoff(name: &str, replicas: u32, command: &str, initial: &str, extra: &str) -> String {
    format!(
        "Role(name: {name:?}, replicas: {replicas}, command: {command}, \
         backoff: (initial: {initial:?}, max: {initial:?}, factor: 2.0, jitter: 0.0), {extra}),"
    )
}

/// (key, pane, pid) of every running session of `role`.
fn panes_of(env: &Env, role: &str) -> BTreeSet<(String, String, u64)> {
    env.in_state(role, "running")
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap().to_string(),
                s["pane"].as_str().unwrap().to_string(),
                s["pid"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn kill_daemon(env: &Env) -> u32 {
    let pid = env.daemon_pid();
    signal(pid, libc::SIGKILL);
    env.wait("the daemon to die", |_| (!alive(pid)).then_some(()));
    pid
}

/// Continues a stopped tmux server when dropped, so a failing test never
/// leaves one behind.
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

#[test]
fn a_daemon_killed_with_sigkill_loses_no_agent_and_no_death() {
    let env = Env::new();
    // Exits 7 on SIGTERM: a death the test causes while no daemon runs.
    let doomed = r#"["sh", "-c", "trap 'kill $!; exit 7' TERM; sleep 600 & wait"]"#;
    let roles = role("agent", 20, SLEEP, "") + &role_backoff("doomed", 1, doomed, "1m", "");
    let file = env.manifest("team.ron", &team("squad", &roles));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/agent", 20);
    let victim = env.wait_running("t/squad/doomed", 1).remove(0);
    let agents = panes_of(&env, "t/squad/agent");

    let old = kill_daemon(&env);
    signal(victim["pid"].as_u64().unwrap() as u32, libc::SIGTERM);
    let pane = victim["pane"].as_str().unwrap().to_string();
    let pid = victim["pid"].as_u64().unwrap() as u32;
    env.wait("the doomed program to end", |_| (!alive(pid)).then_some(()));

    // The next command starts a daemon, which adopts the survivors.
    let adopted = env.wait("the new daemon to adopt the panes", |e| {
        e.events("adopted").pop()
    });
    assert_eq!(adopted["message"], "re-adopted 20 running panes");
    assert_ne!(env.daemon_pid(), old);
    assert_eq!(
        panes_of(&env, "t/squad/agent"),
        agents,
        "same panes, same pids"
    );
    let sessions = env.sessions();
    assert_eq!(sessions.len(), 21, "no duplicates: {sessions:#?}");
    let mut panes = env.panes();
    panes.sort();
    let mut expected: Vec<String> = agents.iter().map(|(_, p, _)| p.clone()).collect();
    expected.push(pane.clone());
    expected.sort();
    assert_eq!(
        panes, expected,
        "tmux holds exactly the adopted panes and the doomed one's, kept"
    );
    env.wait("the kept pane's line", |e| {
        e.screen(&pane).contains("crashed: exit 7").then_some(())
    });

    let marker = env.in_state("t/squad/doomed", "crashed").remove(0);
    assert_eq!(marker["exit"]["code"], 7, "{marker}");
    assert_eq!(marker["exit"]["signal"], Value::Null);
    let doomed_role = env.role("t/squad/doomed");
    assert_eq!(doomed_role["restarts"], 1);
    assert_eq!(doomed_role["state"], "backoff");
}

#[test]
fn frozen_roles_and_pending_backoffs_survive_a_daemon_restart() {
    let env = Env::new();
    let roles = role_backoff(
        "frozen",
        1,
        r#"["sh", "-c", "exit 3"]"#,
        "100ms",
        "max_restarts: 1, window: \"10m\",",
    ) + &role_backoff("waiting", 1, r#"["sh", "-c", "exit 4"]"#, "1m", "");
    let file = env.manifest("team.ron", &team("squad", &roles));
    env.ok(&["run", &file]);
    let frozen = env.wait("the role to freeze", |e| {
        let r = e.role("t/squad/frozen");
        (r["state"] == "frozen").then_some(r)
    });
    let waiting = env.wait("the backoff", |e| {
        let r = e.role("t/squad/waiting");
        (r["state"] == "backoff").then_some(r)
    });
    assert!(waiting["next_restart_at"].is_string(), "{waiting}");
    // Both slots keep their panes, each saying what comes next.
    let mut kept = env.panes();
    kept.sort();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let lines = |e: &Env| {
        let mut screens: Vec<String> = kept.iter().map(|p| e.screen(p)).collect();
        screens.sort();
        screens
    };
    let screens = env.wait("the lines of both kept panes", |e| {
        let s = lines(e);
        (s.iter().any(|s| s.contains("frozen: 2 crashes in 10m"))
            && s.iter()
                .any(|s| s.contains("crashed: exit 4") && s.contains("restart at")))
        .then_some(s)
    });

    kill_daemon(&env);
    env.ok(&["get", "roles"]); // starts a new daemon
    // Once the new daemon has heard from tmux it has planned with it.
    env.wait("the new daemon to see tmux", |e| {
        (e.status()["tmux"]["state"] == "up").then_some(())
    });
    let again = env.role("t/squad/frozen");
    for field in [
        "state",
        "frozen_reason",
        "frozen_at",
        "restarts",
        "last_exit",
    ] {
        assert_eq!(again[field], frozen[field], "{field}: {again}");
    }
    let again = env.role("t/squad/waiting");
    for field in ["state", "next_restart_at", "restarts", "last_exit"] {
        assert_eq!(again[field], waiting[field], "{field}: {again}");
    }
    let live: Vec<Value> = env
        .sessions()
        .into_iter()
        .filter(|s| s["state"] == "pending" || s["state"] == "running")
        .collect();
    assert!(live.is_empty(), "nothing spawned: {live:#?}");
    let mut now = env.panes();
    now.sort();
    assert_eq!(now, kept, "the kept panes are still there");
    assert_eq!(lines(&env), screens);
}

#[test]
fn a_corrupt_state_file_is_moved_aside_and_its_panes_are_left_running() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("agent", 2, SLEEP, "")));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/agent", 2);
    let panes = env.panes();
    env.ok(&["daemon", "stop"]);
    let state = env.state_dir().join("state.json");
    std::fs::write(&state, b"{ this is not a state file").unwrap();

    assert!(env.sessions().is_empty(), "the new daemon starts empty");
    let warnings = env.wait("both warnings", |e| {
        let w = e.events("warning");
        (w.len() == 2).then_some(w)
    });
    let moved = warnings[0]["message"].as_str().unwrap();
    assert!(
        moved.contains("could not be read") && moved.contains("moved it to"),
        "{moved}"
    );
    let spared = warnings[1]["message"].as_str().unwrap();
    assert!(
        spared.starts_with("left 2 panes of the unreadable state running, unsupervised"),
        "{spared}"
    );
    let aside: Vec<_> = std::fs::read_dir(env.state_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read(aside[0].path()).unwrap(),
        b"{ this is not a state file"
    );
    let log = std::fs::read_to_string(env.state_dir().join("daemon.log")).unwrap();
    assert!(log.contains("could not be read"), "{log}");
    // Sweeps come and go; the panes stay.
    env.wait("a few sweeps", |e| {
        let log = std::fs::read_to_string(e.state_dir().join("daemon.log")).unwrap();
        log.contains("left 2 panes").then_some(())
    });
    assert_eq!(env.panes(), panes);
}

/// The directory of the real tmux binary's path entry.
fn real_tmux() -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("tmux"))
        .find(|p| p.is_file())
        .expect("tmux on PATH")
}

#[test]
fn without_tmux_the_daemon_serves_and_realizes_the_team_once_tmux_appears() {
    let mut env = Env::new();
    let bin = env.dir().join("bin");
    std::fs::create_dir(&bin).unwrap();
    env.env.extend([
        ("PATH".to_string(), bin.display().to_string()),
        ("MARVEL_TMUX_RETRY_MS".to_string(), "50".to_string()),
        ("MARVEL_TMUX_RETRY_MAX_MS".to_string(), "400".to_string()),
    ]);
    let cmd = r#"["/bin/sh", "-c", "exec /bin/sleep 600"]"#;
    let file = env.manifest("team.ron", &team("squad", &role("agent", 2, cmd, "")));
    let out = env.ok(&["run", &file]);
    assert!(out.contains("t/squad/agent created"), "{out}");

    let status = env.wait("tmux to be down with retries", |e| {
        let s = e.status();
        (s["tmux"]["consecutive_failures"].as_u64() >= Some(2)).then_some(s)
    });
    let tmux = &status["tmux"];
    assert_eq!(tmux["state"], "down", "{status}");
    assert!(tmux["next_retry_at"].is_string(), "{status}");
    let err = tmux["last_error"].as_str().unwrap();
    assert!(err.starts_with("tmux cannot be run"), "{err}");
    assert_eq!(env.run(&["status"]).status.code(), Some(7));
    let role = env.role("t/squad/agent");
    assert_eq!(
        (role["desired"].as_u64(), role["running"].as_u64()),
        (Some(2), Some(0))
    );
    let log = std::fs::read_to_string(env.state_dir().join("daemon.log")).unwrap();
    assert!(
        log.contains("tmux unavailable: state=down")
            && log.contains("retry_in_ms=")
            && log.contains("next_retry_at=")
            && log.contains("consecutive_failures=2"),
        "{log}"
    );

    std::os::unix::fs::symlink(real_tmux(), bin.join("tmux")).unwrap();
    env.wait_running("t/squad/agent", 2);
    let status = env.status();
    assert_eq!(status["tmux"]["state"], "up");
    assert!(
        status["tmux"]["version"]
            .as_str()
            .unwrap()
            .starts_with("tmux ")
    );
    assert_eq!(env.events("tmux-up").len(), 1);
    assert_eq!(env.role("t/squad/agent")["restarts"], 0);
}

#[test]
fn killing_the_tmux_server_charges_nobody_and_the_team_comes_back() {
    let env = Env::new();
    // One crash more than the budget would freeze either role.
    let budget = "max_restarts: 1, window: \"10m\",";
    let roles = role("a", 3, SLEEP, budget) + &role("b", 2, SLEEP, budget);
    let file = env.manifest("team.ron", &team("squad", &roles));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/a", 3);
    env.wait_running("t/squad/b", 2);
    let before: BTreeSet<u64> = env
        .sessions()
        .iter()
        .map(|s| s["pid"].as_u64().unwrap())
        .collect();
    let daemon = env.daemon_pid();

    assert!(env.tmux(&["kill-server"]).status.success());
    env.wait("every session back with a new program", |e| {
        let running: BTreeSet<u64> = e
            .sessions()
            .iter()
            .filter(|s| s["state"] == "running")
            .map(|s| s["pid"].as_u64().unwrap())
            .collect();
        (running.len() == 5 && running.is_disjoint(&before)).then_some(())
    });
    assert!(
        alive(daemon) && env.daemon_pid() == daemon,
        "the daemon lives on"
    );
    for key in ["t/squad/a", "t/squad/b"] {
        // Ready once each new program ran its ready_after.
        let r = env.wait(&format!("{key} ready"), |e| {
            let r = e.role(key);
            (r["state"] == "ready").then_some(r)
        });
        assert_eq!(r["restarts"], 0, "{r}\n{}", env.dump());
        assert_eq!(r["frozen_reason"], Value::Null, "{r}");
    }
    let crashed = env.events("crashed");
    assert_eq!(crashed.len(), 5, "{crashed:#?}");
    for e in &crashed {
        let m = e["message"].as_str().unwrap();
        assert!(m.starts_with("tmux server lost"), "{m}");
    }
    let lost = env.events("tmux-down");
    assert!(
        lost.iter()
            .any(|e| e["message"] == "tmux server lost with 5 sessions"),
        "{lost:#?}"
    );
    assert!(
        env.events("backoff").is_empty(),
        "no backoff for a lost server"
    );
}

#[test]
fn a_stopped_tmux_server_hangs_no_command_and_kills_no_session() {
    let mut env = Env::new();
    // A call that hung the daemon would hang for a minute: obvious.
    env.env
        .push(("MARVEL_TMUX_TIMEOUT_MS".to_string(), "60000".to_string()));
    let file = env.manifest("team.ron", &team("squad", &role("agent", 3, SLEEP, "")));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/agent", 3);
    let before = panes_of(&env, "t/squad/agent");
    let server = env.tmux_server_pid() as u32;
    let thaw = Thaw(server);
    signal(server, libc::SIGSTOP);

    let within = Duration::from_secs(10);
    let status = |e: &Env| -> Value {
        serde_json::from_slice(&e.run_within(&["status", "-o", "json"], within).stdout).unwrap()
    };
    let degraded = env.wait("status to show tmux degraded", |e| {
        let s = status(e);
        (s["tmux"]["state"] == "degraded").then_some(s)
    });
    let err = degraded["tmux"]["last_error"].as_str().unwrap();
    assert!(err.starts_with("tmux has not answered for"), "{err}");
    let out = env.run_within(&["get", "sessions", "-o", "json"], within);
    let sessions: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sessions.len(), 3);
    assert!(sessions.iter().all(|s| s["state"] == "running"));
    assert!(env.run_within(&["events"], within).status.success());
    assert!(env.run_within(&["get", "roles"], within).status.success());
    for args in [&["inject", "agent-0", "hello"][..], &["capture", "agent-0"]] {
        let out = env.run_within(args, within);
        assert_eq!(out.status.code(), Some(7), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: tmux not ready: degraded"), "{err}");
    }

    // The listing that was stuck comes back: everything is still there.
    drop(thaw);
    env.wait("tmux up again", |e| {
        (e.status()["tmux"]["state"] == "up").then_some(())
    });
    env.ok(&["capture", "agent-0"]);
    assert_eq!(panes_of(&env, "t/squad/agent"), before);
    assert!(env.events("crashed").is_empty());
    assert_eq!(env.role("t/squad/agent")["restarts"], 0);
}

#[test]
fn a_stopped_server_times_out_as_degraded_and_recovers_without_false_deaths() {
    let mut env = Env::new();
    env.env.extend([
        ("MARVEL_TMUX_TIMEOUT_MS".to_string(), "300".to_string()),
        ("MARVEL_TMUX_RETRY_MS".to_string(), "100".to_string()),
        ("MARVEL_TMUX_RETRY_MAX_MS".to_string(), "400".to_string()),
    ]);
    let file = env.manifest("team.ron", &team("squad", &role("agent", 3, SLEEP, "")));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/agent", 3);
    let before = panes_of(&env, "t/squad/agent");
    let server = env.tmux_server_pid() as u32;
    let thaw = Thaw(server);
    signal(server, libc::SIGSTOP);

    let status = env.wait("several timed-out retries", |e| {
        let s = e.status();
        (s["tmux"]["consecutive_failures"].as_u64() >= Some(3)).then_some(s)
    });
    assert_eq!(status["tmux"]["state"], "degraded", "{status}");
    let err = status["tmux"]["last_error"].as_str().unwrap();
    assert_eq!(err, "tmux did not answer within 300 ms");
    assert_eq!(
        panes_of(&env, "t/squad/agent"),
        before,
        "unknown is not dead"
    );

    drop(thaw);
    env.wait("tmux up again", |e| {
        (e.status()["tmux"]["state"] == "up").then_some(())
    });
    assert_eq!(panes_of(&env, "t/squad/agent"), before);
    assert!(env.events("crashed").is_empty());
    assert_eq!(env.role("t/squad/agent")["restarts"], 0);
    assert_eq!(
        env.events("tmux-up").len(),
        2,
        "at start and after the thaw"
    );
}

/// Issue: a daemon whose log could not be written (a full disk) exited with
/// status 101 at its first log line, and every auto-start died the same
/// way. A daemon whose stderr is `/dev/full` keeps supervising.
#[test]
fn a_daemon_whose_log_cannot_be_written_keeps_supervising() {
    let env = Env::new();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let mut daemon = env
        .cmd(&["daemon", "run"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(full)
        .spawn()
        .expect("marvel daemon run");
    let guard = KillOnDrop(daemon.id());
    // Ours answers before anything is asked of it (a command would start
    // a daemon of its own otherwise).
    let pid = daemon.id();
    env.wait("the daemon to answer", |e| {
        let out = e.run(&["status", "-o", "json"]);
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (st["daemon"]["pid"].as_u64() == Some(u64::from(pid))).then_some(())
    });
    let crashing = r#"["sh", "-c", "echo dying; exit 3"]"#;
    let file = env.manifest(
        "team.ron",
        &team("squad", &role("worker", 1, crashing, "max_restarts: None,")),
    );
    env.ok(&["run", &file]);
    // Deaths and restarts, each logged by the daemon to its full stderr.
    env.wait("a few restarts", |e| {
        (e.role("t/squad/worker")["restarts"].as_u64() >= Some(3)).then_some(())
    });
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    assert_eq!(env.daemon_pid(), daemon.id());
    env.ok(&["daemon", "stop"]);
    let status = daemon.wait().unwrap();
    assert!(status.success(), "a clean stop: {status:?}");
    drop(guard);
}

/// Kills a process when the test ends, however it ends.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        signal(self.0, libc::SIGKILL);
    }
}

/// Issue: a 100 KB `inject` was one tmux command over tmux's message limit,
/// refused, and then taken for tmux being down. It arrives whole, and tmux
/// stays up.
#[test]
fn a_100_kb_inject_arrives_whole_and_tmux_stays_up() {
    let env = Env::new();
    let out = env.dir().join("received");
    let reader = format!(
        r#"["sh", "-c", "stty -echo -icanon; head -c 100000 > '{}'; exec sleep 600"]"#,
        out.display()
    );
    let file = env.manifest("team.ron", &team("squad", &role("reader", 1, &reader, "")));
    env.ok(&["run", &file, "--wait"]);
    let text: String = (0..100_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    env.ok(&["inject", "reader-0", &text]);
    let got = env.wait("all 100 000 bytes", |_| {
        std::fs::read(&out).ok().filter(|b| b.len() == 100_000)
    });
    assert_eq!(got, text.as_bytes());
    assert_eq!(env.status()["tmux"]["state"], "up");
}

/// Issue: an exit record that crashed the daemon applying it crashed every
/// daemon started after it. A record left under its `.replaying` name (the
/// daemon died while applying it) is set aside at the next start, said in
/// a warning, and the daemon supervises on.
#[test]
fn an_exit_record_that_stopped_a_daemon_is_set_aside_and_supervision_goes_on() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("agent", 2, SLEEP, "")));
    env.ok(&["run", &file, "--wait"]);
    let running = env.wait_running("t/squad/agent", 2);
    let victim = running[0]["uid"].as_u64().unwrap();
    env.ok(&["daemon", "stop"]);
    let exits = env.state_dir().join("exits");
    std::fs::rename(
        exits.join(format!("{victim}.json")),
        exits.join(format!("{victim}.json.replaying")),
    )
    .unwrap();

    let warning = env.wait("the warning", |e| {
        e.events("warning").into_iter().find(|w| {
            w["message"]
                .as_str()
                .unwrap_or("")
                .contains("stopped an earlier daemon")
        })
    });
    let failed = exits.join(format!("{victim}.json.failed"));
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains(&failed.display().to_string()),
        "{warning}"
    );
    assert!(failed.exists() && !exits.join(format!("{victim}.json.replaying")).exists());
    // The other agent was adopted untouched; the slot is filled again.
    let other = &running[1];
    env.wait("both slots running", |e| {
        let now = e.in_state("t/squad/agent", "running");
        (now.len() == 2 && now.iter().any(|s| s["pid"] == other["pid"])).then_some(())
    });
    // A second start does not stumble on it again.
    env.ok(&["daemon", "stop"]);
    env.ok(&["get", "sessions"]);
    assert_eq!(
        env.events("warning").len(),
        1,
        "{:?}",
        env.events("warning")
    );
}
