//! The daemon's socket and event log under abuse: a socket file deleted
//! or replaced under a running daemon, an event log with a bad line.

use std::os::unix::fs::FileTypeExt;

use serde_json::Value;

use crate::support::*;

const SLEEP: &str = r#"["sh", "-c", "exec sleep 600"]"#;

fn is_socket(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[test]
fn a_deleted_or_replaced_socket_comes_back_and_the_same_daemon_answers() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("worker", 1, SLEEP, "")));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/worker", 1);
    let pid = env.daemon_pid();
    let socket = env.state_dir().join("marvel.sock");

    std::fs::remove_file(&socket).unwrap();
    env.wait("the socket to come back", |_| {
        is_socket(&socket).then_some(())
    });
    assert_eq!(env.in_state("t/squad/worker", "running").len(), 1);
    assert_eq!(env.daemon_pid(), pid, "the same daemon answers");

    // Something that is not the daemon's is never removed: the daemon says
    // so in its log, and listens again once the path is free.
    std::fs::remove_file(&socket).unwrap();
    std::fs::write(&socket, "not a socket").unwrap();
    let log = || std::fs::read_to_string(env.state_dir().join("daemon.log")).unwrap();
    env.wait("the daemon to say it cannot bind", |_| {
        log().contains("cannot be bound again").then_some(())
    });
    assert_eq!(std::fs::read(&socket).unwrap(), b"not a socket");
    std::fs::remove_file(&socket).unwrap();
    env.wait("the socket to come back once the path is free", |_| {
        is_socket(&socket).then_some(())
    });
    assert_eq!(env.in_state("t/squad/worker", "running").len(), 1);
    assert_eq!(env.daemon_pid(), pid, "no second daemon took over");
    assert_eq!(
        log()
            .matches("was removed or replaced; listening there again")
            .count(),
        2,
        "{}",
        log()
    );
}

#[test]
fn a_bad_line_in_the_event_log_hides_nothing_and_numbers_are_not_reused() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("worker", 1, SLEEP, "")));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/worker", 1);
    env.ok(&["daemon", "stop"]);
    let path = env.state_dir().join("events.jsonl");
    let text = std::fs::read(&path).unwrap();
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    assert!(lines.len() >= 2, "{}", String::from_utf8_lossy(&text));
    // Not even UTF-8, in the middle of the file.
    let mut bad = lines[..1].concat();
    bad.extend_from_slice(b"\xff\xfe{\"seq\": oops\n");
    bad.extend_from_slice(&lines[1..].concat());
    std::fs::write(&path, bad).unwrap();

    let events: Vec<Value> = env
        .ok(&["events", "-o", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event line"))
        .collect();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(
        seqs.len() > lines.len(),
        "every old event is back, and new ones follow: {seqs:?}"
    );
    assert!(
        events.iter().any(|e| e["kind"] == "warning"
            && e["message"] == "skipped 1 unreadable or out-of-order lines of events.jsonl"),
        "{events:#?}"
    );
}
