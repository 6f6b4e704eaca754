//! A supervised program cannot act on the operator's terminal through
//! marvel: what it prints and the notes it sends reach `get`, `describe`,
//! `events`, `logs` and `capture` with every control character made
//! visible, while JSON keeps the exact text.

use crate::support::*;

/// A clipboard write, a window title and a screen clear, as `printf` in
/// `sh` writes them.
const PRINTF_ESCAPES: &str = r"\033]52;c;aGk=\007\033]0;owned\007\033[2J";

/// The heartbeat note the program sends, as marvel receives it.
const NOTE: &str = "note \x1b]0;owned\x07\x1b[2J";

fn assert_no_raw_controls(what: &str, text: &str) {
    assert!(
        !text.contains(['\x1b', '\x07', '\u{9b}']),
        "{what} printed a raw control character:\n{text:?}"
    );
}

#[test]
fn program_text_is_escaped_on_the_terminal_and_exact_in_json() {
    let env = Env::new();
    let go = env.dir().join("go");
    let script = format!(
        "printf 'ready {PRINTF_ESCAPES}hello\\n'; \
         '{BIN}' heartbeat --note \"$(printf 'note \\033]0;owned\\007\\033[2J')\" || exit 9; \
         while [ ! -e '{}' ]; do sleep 0.05; done; \
         printf 'bye {PRINTF_ESCAPES}\\n'; exit 3",
        go.display()
    );
    let command = format!("[\"sh\", \"-c\", {script:?}]");
    let r = role(
        "worker",
        1,
        &command,
        r#"restart: Never, health: Heartbeat(timeout: "30s", failures: 3),"#,
    );
    let file = env.manifest("team.ron", &team("squad", &r));
    env.ok(&["run", &file]);
    let live = env.wait("the note to arrive", |e| {
        e.in_state("t/squad/worker", "running")
            .into_iter()
            .find(|s| s["heartbeat_note"].is_string())
    });
    assert_eq!(live["heartbeat_note"], NOTE, "JSON keeps the exact note");

    let described = env.ok(&["describe", "session", "worker-0"]);
    assert_no_raw_controls("describe session", &described);
    assert!(
        described.contains("Note:        note \\e]0;owned^G\\e[2J"),
        "{described}"
    );
    let json = env.json(&["describe", "session", "worker-0"]);
    assert_eq!(json["heartbeat_note"], NOTE);
    for args in [
        &["get", "sessions"][..],
        &["get", "sessions", "-o", "wide"],
        &["capture", "worker-0"],
    ] {
        assert_no_raw_controls(&args.join(" "), &env.ok(args));
    }

    // It ends: the crashed marker holds its last lines and its output log.
    std::fs::write(&go, b"").unwrap();
    env.wait("the crashed marker", |e| {
        e.in_state("t/squad/worker", "crashed").into_iter().next()
    });
    let logs = env.ok(&["logs", "worker-0"]);
    assert!(logs.contains("hello") && logs.contains("bye"), "{logs}");
    let raw = env.run(&["logs", "worker-0", "--raw"]);
    assert!(raw.status.success());
    assert!(String::from_utf8_lossy(&raw.stdout).contains("bye"));
    for args in [
        &["get", "sessions"][..],
        &["get", "roles"],
        &["describe", "session", "worker-0"],
        &["describe", "role", "worker"],
        &["describe", "team", "squad"],
        &["events"],
        &["logs", "worker-0"],
        &["capture", "worker-0"],
    ] {
        assert_no_raw_controls(&args.join(" "), &env.ok(args));
    }
    let marker = env.sessions().remove(0);
    assert_eq!(marker["heartbeat_note"], NOTE, "{marker}");
}
