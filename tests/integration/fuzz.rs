//! Bad input changes nothing: random bytes, mutated requests and requests
//! above the size limit, written straight to a running daemon's socket.
//! Each gets an error reply, the daemon keeps serving, and the team it
//! supervises is exactly as it was.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use marvel::daemon::server::decode;
use marvel::proto::{
    Envelope, EventFilter, Filter, Kind, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Request, Response,
    ShimReport,
};

use crate::support::*;

/// Writes `bytes` as one connection and returns the reply line.
fn exchange(env: &Env, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(env.state_dir().join("marvel.sock")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The daemon stops reading at the size limit and may close early.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The error the daemon answered with; fails the test on anything else.
fn refusal(reply: &str, what: &str) -> String {
    match serde_json::from_str::<Response>(reply.trim_end()) {
        Ok(Response::Error(e)) => e.to_string(),
        other => panic!("{what}: expected an error reply, got {other:?} from {reply:?}"),
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

fn line(request: Request) -> Vec<u8> {
    serde_json::to_vec(&Envelope {
        protocol: PROTOCOL_VERSION,
        request,
    })
    .unwrap()
}

/// Flips, drops, inserts or repeats a few bytes.
fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.usize(1..6) {
        let at = rng.usize(..=b.len());
        let interesting = b"{}[]\":,0-9aeEnNtfluxX\\ \x00\xff";
        match rng.u8(..4) {
            0 if at < b.len() => b[at] = rng.u8(..),
            1 if at < b.len() => {
                b.remove(at);
            }
            2 => b.insert(at, interesting[rng.usize(..interesting.len())]),
            _ if at < b.len() => {
                let end = (at + rng.usize(1..24)).min(b.len());
                let piece = b[at..end].to_vec();
                b.splice(at..at, piece);
            }
            _ => {}
        }
    }
    b.retain(|&c| c != b'\n');
    b
}

#[test]
fn random_and_mutated_requests_get_errors_and_change_nothing() {
    let env = Env::new();
    let sleep = r#"["sh", "-c", "exec sleep 600"]"#;
    let file = env.manifest("team.ron", &team("squad", &role("worker", 2, sleep, "")));
    env.ok(&["run", &file]);
    let running = env.wait_running("t/squad/worker", 2);
    // Ready (each ran its ready_after), so that nothing changes by itself.
    env.wait("the role ready", |e| {
        (e.role("t/squad/worker")["state"] == "ready").then_some(())
    });
    let before = snapshot(&env);
    let daemon = env.daemon_pid();

    let team = marvel::manifest::load(std::path::Path::new(&file)).unwrap();
    let uid = running[0]["uid"].as_u64().unwrap();
    let seeds: Vec<Vec<u8>> = [
        Request::Ping,
        Request::Status,
        Request::Apply {
            team,
            source: None,
            force: false,
        },
        Request::Get {
            kind: Kind::Sessions,
            filter: Filter::default(),
        },
        Request::Kill {
            key: "worker-0".into(),
        },
        Request::Scale {
            key: "squad/worker".into(),
            replicas: 1,
        },
        Request::Delete {
            key: "squad".into(),
            prune_worktrees: false,
        },
        Request::Inject {
            key: "worker-1".into(),
            text: "exit".into(),
            enter: true,
            keys: false,
            when_idle_ms: None,
        },
        Request::Events {
            filter: EventFilter::default(),
            follow: false,
        },
        Request::Stop,
        Request::Shim(ShimReport::Exited {
            uid,
            code: Some(1),
            signal: None,
            at: chrono::Utc::now(),
            hangup: false,
            failure: None,
            rerun: false,
            run_in_answer: false,
        }),
    ]
    .into_iter()
    .map(line)
    .collect();

    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut sent = 0;
    for i in 0..300 {
        let mut junk: Vec<u8> = (0..rng.usize(..1500)).map(|_| rng.u8(..)).collect();
        junk.push(b'\n');
        let e = refusal(
            &exchange(&env, &junk),
            &format!("random bytes #{i} (seed {seed})"),
        );
        assert!(e.starts_with("error: "), "{e}");
        sent += 1;
    }
    let mut mutants = 0;
    while mutants < 500 {
        let base = &seeds[rng.usize(..seeds.len())];
        let mut m = mutate(&mut rng, base);
        // A mutation that is still a valid request is not bad input.
        if decode(&m).is_ok() {
            continue;
        }
        m.push(b'\n');
        let e = refusal(
            &exchange(&env, &m),
            &format!("mutant {:?} (seed {seed})", String::from_utf8_lossy(&m)),
        );
        assert!(
            e.starts_with("error: malformed request") || e.contains("speaks protocol"),
            "{e}"
        );
        mutants += 1;
        sent += 1;
    }

    // Above the size limit: plain bytes, and a request that would be valid.
    let big = vec![b'x'; MAX_REQUEST_BYTES + 1];
    let e = refusal(&exchange(&env, &big), "oversized bytes");
    assert!(e.contains("larger than the limit"), "{e}");
    let text = "y".repeat(MAX_REQUEST_BYTES);
    let mut huge = line(Request::Inject {
        key: "worker-0".into(),
        text,
        enter: true,
        keys: false,
        when_idle_ms: None,
    });
    huge.push(b'\n');
    let e = refusal(&exchange(&env, &huge), "oversized request");
    assert!(e.contains("larger than the limit"), "{e}");
    assert!(
        env.ok(&["capture", "worker-0"]).trim().is_empty(),
        "nothing was typed"
    );

    assert_eq!(sent, 800);
    assert_eq!(env.daemon_pid(), daemon, "the same daemon serves on");
    assert_eq!(snapshot(&env), before, "seed {seed}");
    assert!(env.events("crashed").is_empty());
}
