//! The tmux workspace as a person sees it: one tmux session per team, a
//! window per session, restarts in the same pane, the dead pane's line,
//! and a real attached client that is never thrown out.

use serde_json::Value;

use crate::support::viewer::Viewer;
use crate::support::{Env, role, team};

/// Says which run this is, then waits for input like an agent would.
const PROGRAM: &str = r#"["sh", "-c", "echo run-$MARVEL_SESSION_UID; exec sh"]"#;

/// Waits for a running session of `role` other than uid `not`; returns it.
fn next_run(env: &Env, role: &str, not: u64) -> Value {
    env.wait("a new run", |e| {
        e.in_state(role, "running")
            .into_iter()
            .find(|s| s["uid"].as_u64() != Some(not))
    })
}

fn uid(s: &Value) -> u64 {
    s["uid"].as_u64().unwrap()
}

/// The terminal shows run `uid`'s program, in the pane the slot always had.
fn shows_run(viewer: &Viewer, env: &Env, uid: u64) {
    let marker = format!("run-{uid}");
    viewer.wait(env, &marker, |s| s.lines().any(|l| l.trim() == marker));
}

#[test]
fn an_attached_client_stays_through_a_crash_a_kill_a_freeze_and_a_reset() {
    let env = Env::new();
    // A backoff long enough to look at the dead pane.
    let r = format!(
        "Role(name: \"worker\", replicas: 1, command: {PROGRAM}, \
         backoff: (initial: \"1500ms\", max: \"1500ms\", factor: 2.0, jitter: 0.0), \
         ready_after: \"100ms\", max_restarts: 1, window: \"10m\"),"
    );
    let file = env.manifest("team.ron", &team("squad", &r));
    env.ok(&["run", &file]);
    let first = env.wait_running("t/squad/worker", 1).remove(0);
    let pane = first["pane"].as_str().unwrap().to_string();
    assert_eq!(first["tmux_session"], "t-squad");
    let viewer = Viewer::attach(&env, "t-squad");
    shows_run(&viewer, &env, uid(&first));
    viewer.assert_attached(&env, "at first");

    // A crash: the pane stays with the last screen and marvel's line
    // during the backoff, then the replacement runs in it.
    env.ok(&["inject", "worker-0", "echo last-words; exit 3", "--enter"]);
    let screen = viewer.wait(&env, "the crash line", |s| {
        s.contains("crashed: exit 3 after") && s.contains("restart at")
    });
    assert!(screen.contains("last-words"), "{screen}");
    viewer.assert_attached(&env, "during the backoff");
    let second = next_run(&env, "t/squad/worker", uid(&first));
    assert_eq!(second["pane"].as_str(), Some(pane.as_str()));
    shows_run(&viewer, &env, uid(&second));
    viewer.assert_attached(&env, "after the crash");

    // A kill: replaced at once, in the same pane.
    env.ok(&["kill", "worker-0"]);
    let third = next_run(&env, "t/squad/worker", uid(&second));
    assert_eq!(third["pane"].as_str(), Some(pane.as_str()));
    shows_run(&viewer, &env, uid(&third));
    viewer.assert_attached(&env, "after the kill");

    // A second crash within the window freezes the role: the pane says so
    // and what to do.
    env.ok(&["inject", "worker-0", "exit 4", "--enter"]);
    viewer.wait(&env, "the frozen line", |s| {
        s.contains("frozen: 2 crashes in 10m, last: exit 4 — marvel reset role t/squad/worker")
    });
    viewer.assert_attached(&env, "while frozen");

    // A reset: the role runs again, in the same pane.
    env.ok(&["reset", "role", "squad/worker"]);
    let fourth = next_run(&env, "t/squad/worker", uid(&third));
    assert_eq!(fourth["pane"].as_str(), Some(pane.as_str()));
    shows_run(&viewer, &env, uid(&fourth));
    viewer.assert_attached(&env, "after the reset");
    assert_eq!(env.panes(), [pane]);
}

#[test]
fn an_attached_client_stays_through_a_spec_change_and_a_shift() {
    let env = Env::new();
    let with_mode = |mode: &str| {
        team(
            "squad",
            &role(
                "worker",
                1,
                PROGRAM,
                &format!("env: {{\"MODE\": \"{mode}\"}},"),
            ),
        )
    };
    let file = env.manifest("team.ron", &with_mode("a"));
    env.ok(&["run", &file]);
    let first = env.wait_running("t/squad/worker", 1).remove(0);
    let viewer = Viewer::attach(&env, "t-squad");
    shows_run(&viewer, &env, uid(&first));

    // A changed role: its successor starts beside it, in the same window,
    // and takes the slot once ready.
    env.manifest("team.ron", &with_mode("b"));
    env.ok(&["run", &file, "--wait"]);
    let second = env.wait("the successor alone", |e| {
        let r = e.in_state("t/squad/worker", "running");
        (r.len() == 1 && uid(&r[0]) != uid(&first)).then(|| r[0].clone())
    });
    shows_run(&viewer, &env, uid(&second));
    viewer.assert_attached(&env, "after the spec change");
    env.wait("the predecessor's pane to go", |e| {
        (e.panes() == [second["pane"].as_str().unwrap()]).then_some(())
    });
    let windows = env.tmux(&["list-windows", "-t", "=t-squad", "-F", "#{window_name}"]);
    assert_eq!(String::from_utf8_lossy(&windows.stdout), "worker-0\n");

    // A shift: the same.
    env.ok(&["shift", "squad", "--wait"]);
    let third = next_run(&env, "t/squad/worker", uid(&second));
    shows_run(&viewer, &env, uid(&third));
    viewer.assert_attached(&env, "after the shift");
}

#[test]
fn a_team_is_one_tmux_session_with_a_window_per_session_and_a_tiled_role_shares_one() {
    let env = Env::new();
    let sleep = r#"["sh", "-c", "exec sleep 600"]"#;
    let roles = role("worker", 2, sleep, "") + &role("pair", 3, sleep, "layout: Tiled,");
    let file = env.manifest("team.ron", &team("squad", &roles));
    env.ok(&["run", &file, "--wait"]);
    let sessions = env.tmux(&["list-sessions", "-F", "#{session_name}"]);
    assert_eq!(String::from_utf8_lossy(&sessions.stdout), "t-squad\n");
    let windows = env.tmux(&[
        "list-windows",
        "-t",
        "=t-squad",
        "-F",
        "#{window_name} #{window_panes}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&windows.stdout),
        "worker-0 1\nworker-1 1\npair 3\n",
        "{}",
        env.dump()
    );
    // Each window's status says how its sessions are; the status line
    // names marvel, the workspace and the team.
    let statuses = |e: &Env| {
        let out = e.tmux(&[
            "list-windows",
            "-t",
            "=t-squad",
            "-F",
            "#{window_name} #{@marvel-status}",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = std::time::Instant::now() + crate::support::DEADLINE;
    while statuses(&env) != "worker-0 ✓\nworker-1 ✓\npair ✓\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "statuses: {}",
            statuses(&env)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left = env.tmux(&["show-options", "-v", "-t", "t-squad", "status-left"]);
    assert!(
        String::from_utf8_lossy(&left.stdout).contains("marvel t/squad"),
        "{left:?}"
    );
    // What a person sees in the status bar: the window list with states.
    let viewer = Viewer::attach(&env, "t-squad");
    let screen = viewer.wait(&env, "the status bar", |s| s.contains("worker-1 ✓"));
    let bar = screen.lines().last().unwrap_or_default().to_string();
    assert!(
        bar.contains("marvel t/squad") && bar.contains("worker-0 ✓") && bar.contains("pair ✓"),
        "{bar}"
    );
}

/// A window's name is its session's: neither the program it runs nor a
/// title it prints renames it, also on a server configured to let programs
/// rename windows. A plain window beside it, with tmux's own renaming on,
/// running the same program, shows that tmux would.
#[test]
fn a_program_cannot_rename_its_window() {
    let env = Env::new();
    // A configuration that lets programs rename their windows.
    let configured = env.tmux(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "mine",
        "sleep 600",
        ";",
        "set-option",
        "-gw",
        "allow-rename",
        "on",
    ]);
    assert!(configured.status.success(), "{configured:?}");
    // An escape sequence that names the window, then another program.
    let program = r#"printf '\033kpwned\033\\'; exec sleep 600"#;
    let r = role("worker", 1, &format!("[\"sh\", \"-c\", {program:?}]"), "");
    let file = env.manifest("team.ron", &team("squad", &r));
    env.ok(&["run", &file, "--wait"]);
    let made = env.tmux(&[
        "new-window",
        "-d",
        "-t",
        "=t-squad",
        "--",
        "sh",
        "-c",
        program,
    ]);
    assert!(made.status.success(), "{made:?}");
    let names = |e: &Env| {
        let out = e.tmux(&["list-windows", "-t", "=t-squad", "-F", "#{window_name}"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The plain window is renamed, by its program (`sleep`) or by the
    // escape sequence its program printed (`pwned`)...
    env.wait("tmux to rename the plain window", |e| {
        matches!(names(e).lines().last(), Some("sleep" | "pwned")).then_some(())
    });
    // ...marvel's is not.
    assert_eq!(
        names(&env).lines().next(),
        Some("worker-0"),
        "{}",
        env.dump()
    );
    let options = env.tmux(&["show-options", "-w", "-t", "=t-squad:=worker-0"]);
    let options = String::from_utf8_lossy(&options.stdout);
    assert!(options.contains("automatic-rename off"), "{options}");
    assert!(options.contains("allow-rename off"), "{options}");
}

#[test]
fn a_tmux_session_name_someone_else_has_is_left_alone_and_another_is_used() {
    let env = Env::new();
    let out = env.tmux(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "t-squad",
        "sleep 600",
    ]);
    assert!(out.status.success(), "{out:?}");
    let sleep = r#"["sh", "-c", "exec sleep 600"]"#;
    let file = env.manifest("team.ron", &team("squad", &role("worker", 1, sleep, "")));
    env.ok(&["run", &file, "--wait"]);
    let s = env.wait_running("t/squad/worker", 1).remove(0);
    assert_eq!(s["tmux_session"], "t-squad-2");
    let warning = env.wait("the warning", |e| e.events("warning").pop());
    assert_eq!(
        warning["message"],
        "tmux session name t-squad is taken: team t/squad is in tmux session t-squad-2"
    );
    let foreign = env.tmux(&[
        "list-panes",
        "-t",
        "=t-squad",
        "-F",
        "#{pane_current_command}",
    ]);
    assert_eq!(String::from_utf8_lossy(&foreign.stdout), "sleep\n");
}

#[test]
fn marvel_attach_opens_a_team_or_a_sessions_window_and_pane() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("worker", 2, PROGRAM, "")));
    env.ok(&["run", &file, "--wait"]);
    let running = env.wait_running("t/squad/worker", 2);
    let second = running.iter().find(|s| s["slot"] == 1).unwrap();

    let viewer = Viewer::marvel_attach(&env, "worker-1");
    shows_run(&viewer, &env, uid(second));
    assert_eq!(
        Viewer::clients(&env),
        [format!("t-squad {}", second["pane"].as_str().unwrap())]
    );
    drop(viewer);
    env.wait("the client to go", |e| {
        Viewer::clients(e).is_empty().then_some(())
    });

    let viewer = Viewer::marvel_attach(&env, "squad");
    viewer.wait(&env, "the team's session", |s| s.contains("marvel t/squad"));
    let clients = Viewer::clients(&env);
    assert_eq!(clients.len(), 1);
    assert!(clients[0].starts_with("t-squad %"), "{clients:?}");
}

#[test]
fn a_crashed_sessions_pane_can_be_attached_while_its_slot_waits() {
    let env = Env::new();
    let crashing = r#"["sh", "-c", "echo crash-screen; exit 9"]"#;
    let r = role("worker", 1, crashing, "max_restarts: 0,");
    let file = env.manifest("team.ron", &team("squad", &r));
    env.ok(&["run", &file]);
    let marker = env.wait("the frozen marker", |e| {
        e.in_state("t/squad/worker", "crashed").pop()
    });
    let pane = marker["pane"]
        .as_str()
        .expect("the marker's pane")
        .to_string();
    let viewer = Viewer::marvel_attach(&env, "worker-0");
    let screen = viewer.wait(&env, "the dead pane", |s| s.contains("frozen: 1 crashes"));
    assert!(screen.contains("crash-screen"), "{screen}");
    assert_eq!(Viewer::clients(&env), [format!("t-squad {pane}")]);
    // marvel's line is not the program's output: its log ends where the
    // program did.
    assert_eq!(env.ok(&["logs", "worker-0"]), "crash-screen\n");
}

/// A daemon of the version that gave each spawn a tmux session of its own
/// left this layout behind: its agents are adopted where they are, and
/// each moves into its team's session at its next restart.
#[test]
fn panes_of_the_one_session_per_spawn_layout_are_adopted_then_replaced_in_the_team_session() {
    let env = Env::new();
    let sleep = r#"["sh", "-c", "exec sleep 600"]"#;
    let file = env.manifest("team.ron", &team("squad", &role("worker", 1, sleep, "")));
    env.ok(&["run", &file, "--wait"]);
    let agent = env.wait_running("t/squad/worker", 1).remove(0);
    let (first, pane, pid) = (
        uid(&agent),
        agent["pane"].as_str().unwrap().to_string(),
        agent["pid"].as_u64().unwrap(),
    );
    env.ok(&["daemon", "stop"]);

    // The old layout: a tmux session named after the spawn, panes with
    // only the owner tag, sessions in the state file without a window.
    let old = format!("marvel/t/squad/worker-0/{first}");
    let tmux = |args: &[&str]| {
        let out = env.tmux(args);
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
    };
    tmux(&["rename-session", "-t", "=t-squad", &old]);
    tmux(&["set-option", "-u", "-t", &old, "@marvel-team"]);
    tmux(&["set-option", "-p", "-u", "-t", &pane, "@marvel-key"]);
    tmux(&["set-option", "-p", "-u", "-t", &pane, "@marvel-uid"]);
    let path = env.state_dir().join("state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let session = &mut state["world"]["sessions"][first.to_string()];
    session["tmux_session"] = Value::String(old.clone());
    session.as_object_mut().unwrap().remove("window");
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

    // Adopted as it is: same pane, same program.
    let adopted = env.wait("the adoption", |e| e.events("adopted").pop());
    assert_eq!(adopted["message"], "re-adopted 1 running panes");
    let again = env.wait_running("t/squad/worker", 1).remove(0);
    assert_eq!((uid(&again), again["pid"].as_u64()), (first, Some(pid)));
    assert_eq!(again["tmux_session"], old.as_str());

    // Its next run is in the team's session; the old session goes.
    crate::support::signal(pid as u32, libc::SIGKILL);
    let next = next_run(&env, "t/squad/worker", first);
    assert_eq!(next["tmux_session"], "t-squad");
    env.wait("only the team's session", |e| {
        let out = e.tmux(&["list-sessions", "-F", "#{session_name}"]);
        (String::from_utf8_lossy(&out.stdout) == "t-squad\n").then_some(())
    });
    let windows = env.tmux(&["list-windows", "-t", "=t-squad", "-F", "#{window_name}"]);
    assert_eq!(String::from_utf8_lossy(&windows.stdout), "worker-0\n");
}

#[test]
fn a_program_that_keeps_crashing_is_restarted_by_the_same_shim_in_the_same_pane() {
    let env = Env::new();
    let crashing = r#"["sh", "-c", "echo run-$MARVEL_SESSION_UID restart-$MARVEL_RESTARTS; sleep 0.2; exit 3"]"#;
    let file = env.manifest(
        "team.ron",
        &team("squad", &role("worker", 1, crashing, "max_restarts: None,")),
    );
    env.ok(&["run", &file]);
    let panes = |e: &Env| {
        let out = e.tmux(&[
            "list-panes",
            "-a",
            "-F",
            "#{pane_id} #{pane_pid} #{@marvel-uid}",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = env.wait("the first run", |e| {
        e.in_state("t/squad/worker", "running").into_iter().next()
    });
    let before = panes(&env);
    env.wait("four restarts", |e| {
        (e.role("t/squad/worker")["restarts"].as_u64() >= Some(4)).then_some(())
    });
    // One pane, with the same first process (the shim) and the same tmux
    // options as when it was made: no respawn, no new pane.
    assert_eq!(panes(&env), before, "{}", env.dump());
    assert_eq!(before.lines().count(), 1, "{before}");
    // Each run has its own environment and its own log.
    let run = next_run(&env, "t/squad/worker", uid(&first));
    let log = env
        .state_dir()
        .join("logs")
        .join(format!("{}.log", uid(&run)));
    let expected = format!("run-{} restart-{}", uid(&run), run["restarts"]);
    env.wait("the run's log", |_| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.lines().map(str::trim).collect::<Vec<_>>() == [expected.as_str()]).then_some(())
    });
}
