//! Whatever reaches the daemon passes the manifest's rules first: a team or
//! a heartbeat that breaks one, written straight to the socket, gets an
//! error reply and changes nothing; a command line that tmux would refuse
//! is refused at validation, and one just within the limit runs.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use marvel::domain::spec::MAX_COMMAND_LINE_BYTES;
use marvel::error::exit;
use marvel::proto::{PROTOCOL_VERSION, Response};
use serde_json::{Value, json};

use crate::support::*;

/// Sends one request line and returns the daemon's error, failing the test
/// on any other reply.
fn refused(env: &Env, request: Value) -> marvel::error::Error {
    let mut s = UnixStream::connect(env.state_dir().join("marvel.sock")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut line =
        serde_json::to_vec(&json!({"protocol": PROTOCOL_VERSION, "request": request})).unwrap();
    line.push(b'\n');
    s.write_all(&line).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    match serde_json::from_str::<Response>(reply.trim_end()) {
        Ok(Response::Error(e)) => e,
        other => panic!("expected an error reply to {request}, got {other:?}"),
    }
}

/// Everything `get` shows, and the panes, as one comparable value.
fn snapshot(env: &Env) -> String {
    format!(
        "{}\n{}\n{}\n{:?}",
        env.json(&["get", "sessions"]),
        env.json(&["get", "roles"]),
        env.json(&["get", "teams"]),
        env.panes()
    )
}

#[test]
fn a_team_or_heartbeat_that_breaks_a_rule_is_refused_over_the_socket() {
    let env = Env::new();
    let sleep = r#"["sh", "-c", "exec sleep 600"]"#;
    let file = env.manifest("team.ron", &team("squad", &role("worker", 1, sleep, "")));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/worker", 1);
    // Ready (it ran its ready_after), so that nothing changes by itself.
    env.wait("the role ready", |e| {
        (e.role("t/squad/worker")["state"] == "ready").then_some(())
    });
    let before = snapshot(&env);
    let daemon = env.daemon_pid();
    let valid = serde_json::to_value(marvel::manifest::load(file.as_ref()).unwrap()).unwrap();

    let year = 31_557_600u64;
    for (pointer, value, expected) in [
        (
            "/roles/0/replicas",
            json!(4_294_967_295u64),
            "must be between 0 and 1000, got 4294967295",
        ),
        ("/roles/0/command", json!([]), "must not be empty"),
        (
            "/roles/0/env",
            json!({"": "x"}),
            "cannot be an environment variable name: it is empty",
        ),
        (
            "/roles/0/env",
            json!({"A=B": "x"}),
            "cannot be an environment variable name: it contains '='",
        ),
        (
            "/roles/0/health",
            json!({"Heartbeat": {"timeout": {"secs": 0, "nanos": 0}, "failures": 3}}),
            "must be longer than zero",
        ),
        (
            "/roles/0/window",
            json!({"secs": 1_000_000 * year, "nanos": 0}),
            "durations are at most 10 years",
        ),
        (
            "/roles/0/command/2",
            json!("x".repeat(MAX_COMMAND_LINE_BYTES)),
            "tmux accepts at most",
        ),
    ] {
        let mut team = valid.clone();
        *team.pointer_mut(pointer).unwrap() = value;
        let e = refused(&env, json!({"Apply": {"team": team}}));
        let shown = e.to_string();
        assert_eq!(e.code(), exit::USAGE, "{pointer}: {shown}");
        assert!(
            shown.starts_with("error: malformed request") && shown.contains(expected),
            "{pointer}: {shown}"
        );
    }
    for (pct, note, expected) in [
        (
            json!(101),
            Value::Null,
            "context_pct must be between 0 and 100",
        ),
        (json!(5), json!("n".repeat(201)), "at most 200"),
    ] {
        let e = refused(
            &env,
            json!({"Heartbeat": {
                "session": "t/squad/worker-0", "uid": null,
                "context_pct": pct, "note": note,
            }}),
        );
        assert_eq!(e.code(), exit::USAGE);
        assert!(e.to_string().contains(expected), "{e}");
    }

    assert_eq!(env.daemon_pid(), daemon, "the same daemon serves on");
    assert_eq!(snapshot(&env), before, "nothing changed");
    let described = env.ok(&["describe", "session", "worker-0"]);
    assert!(!described.contains("52;c"), "{described}");
}

/// `["sh", "-c", "exec sleep 600", PAD]` taking exactly `bytes` as the
/// spec counts them: each word and its NUL, plus one for tmux's escaping.
/// A command that, with the manifest's directory as its cwd (`-c DIR`),
/// takes `bytes` bytes.
fn command_of(env: &Env, bytes: usize) -> String {
    let words = ["sh", "-c", "exec sleep 600"];
    let cwd = 4 + env.dir().as_os_str().len();
    let used: usize = words.iter().map(|w| w.len() + 2).sum::<usize>() + cwd;
    let pad = "p".repeat(bytes - used - 2);
    format!(r#"["sh", "-c", "exec sleep 600", "{pad}"]"#)
}

#[test]
fn a_command_line_within_the_limit_runs_and_a_longer_one_is_refused() {
    let env = Env::new();
    let at_limit = env.manifest(
        "long.ron",
        &team(
            "squad",
            &role("worker", 1, &command_of(&env, MAX_COMMAND_LINE_BYTES), ""),
        ),
    );
    env.ok(&["run", &at_limit]);
    env.wait_running("t/squad/worker", 1);
    assert!(env.events("crashed").is_empty());

    let over = env.manifest(
        "longer.ron",
        &team(
            "squad",
            &role(
                "worker",
                1,
                &command_of(&env, MAX_COMMAND_LINE_BYTES + 1),
                "",
            ),
        ),
    );
    let err = env.fails(&["run", &over], exit::INVALID_MANIFEST);
    assert_eq!(
        err.trim_end(),
        format!(
            "error: {over}:1:88: roles[0].command: command, env and cwd take {} bytes; tmux \
             accepts at most {MAX_COMMAND_LINE_BYTES} of them in the command that starts a pane\n\
             help: pass long text through a file, and name the file in the command or env",
            MAX_COMMAND_LINE_BYTES + 1
        )
    );
}

#[test]
fn a_state_file_holding_a_spec_that_breaks_a_rule_is_moved_aside_not_obeyed() {
    // A state file as an older marvel wrote it, whose crash-looping role
    // has a window of a million years: that marvel accepted it, and then
    // panicked counting the role's crashes.
    let env = Env::new();
    let text = include_str!("../fixtures/state-format-1.json");
    let mut state: Value = serde_json::from_str(text).unwrap();
    let crasher = &mut state["world"]["teams"]["demo/squad"]["spec"]["roles"][1];
    assert_eq!(crasher["name"], "crasher");
    crasher["window"] = json!({"secs": 1_000_000u64 * 31_557_600, "nanos": 0});
    let dir = env.state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();

    assert_eq!(env.roles(), Vec::<Value>::new(), "it started empty");
    let moved: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    let warnings = env.events("warning");
    assert!(
        warnings
            .iter()
            .any(|w| w["message"].as_str().unwrap_or("").contains("too long")),
        "{warnings:?}"
    );
    let daemon = env.daemon_pid();
    assert!(alive(daemon));
}
