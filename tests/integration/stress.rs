//! Stress on a real tmux: a crash storm that must stay contained, and
//! hundreds of randomized deaths that must all be recorded as they happened.
//! Both are sized to run in seconds; they take turns so that neither starves
//! the other on a small machine.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveTime, Utc};
use serde_json::Value;

use crate::support::*;

static HEAVY: Mutex<()> = Mutex::new(());

/// How long a whole stress run may take before the test fails.
const STRESS_DEADLINE: Duration = Duration::from_secs(150);

/// Open descriptors (pidfds apart), threads and resident memory (KiB) of
/// a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footprint {
    fds: usize,
    /// The watch holds one for each of the tmux server's processes.
    pidfds: usize,
    threads: usize,
    rss_kib: u64,
}

fn footprint(pid: u32) -> Footprint {
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .unwrap()
            .count()
    };
    let pidfds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("pidfd"))
        })
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    Footprint {
        fds: count("fd") - pidfds,
        pidfds,
        threads: count("task"),
        rss_kib,
    }
}

/// Every event, oldest first.
fn all_events(env: &Env) -> Vec<Value> {
    env.ok(&["events", "-o", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event line"))
        .collect()
}

/// The events about `role` (a role key) and its sessions, of these kinds.
fn events_of<'a>(all: &'a [Value], role: &str, kinds: &[&str]) -> Vec<&'a Value> {
    let sessions = format!("{role}-");
    all.iter()
        .filter(|e| {
            let key = e["key"].as_str().unwrap();
            (key == role || key.starts_with(&sessions))
                && kinds.contains(&e["kind"].as_str().unwrap())
        })
        .collect()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// The instant a backoff event says the restart is due ("… (at 12:00:01.250)").
fn due(backoff: &Value) -> DateTime<Utc> {
    let msg = backoff["message"].as_str().unwrap();
    let clock = msg
        .rsplit_once("(at ")
        .and_then(|(_, t)| t.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no due time in {msg:?}"));
    let clock = NaiveTime::parse_from_str(clock, "%H:%M:%S%.3f").unwrap();
    let at = time(&backoff["at"]);
    let mut due = at.date_naive().and_time(clock).and_utc();
    if due < at - chrono::Duration::hours(1) {
        due += chrono::Duration::days(1);
    }
    due
}

/// Panes running a program, per role: panes whose shim has a child (the
/// shim of an ended program stays in its pane alone, showing marvel's line).
fn live_panes(env: &Env) -> BTreeMap<String, usize> {
    let out = env.tmux(&["list-panes", "-a", "-F", "#{@marvel-key} #{pane_pid}"]);
    let mut per_role = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (key, pid) = line.rsplit_once(' ').unwrap();
        let role = key.rsplit_once('-').unwrap().0;
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if !children.trim().is_empty() {
            *per_role.entry(role.to_string()).or_default() += 1;
        }
    }
    per_role
}

#[test]
fn a_crash_storm_stays_contained_and_spawns_only_what_the_policy_allows() {
    let _turn = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    // Six one-replica roles whose programs die at once, some after a line
    // of output, and two three-replica ones: about 350 deaths in ~12 s.
    const NARROW: u64 = 30;
    const WIDE: u64 = 45;
    let backoff = r#"backoff: (initial: "40ms", max: "160ms", factor: 2.0, jitter: 0.0)"#;
    let mut roles = String::new();
    let mut replicas = BTreeMap::new();
    for i in 0..6 {
        let cmd = if i % 2 == 0 {
            r#"["sh", "-c", "exit 1"]"#
        } else {
            r#"["sh", "-c", "echo dying; exit 2"]"#
        };
        roles += &format!(
            "Role(name: \"n{i}\", replicas: 1, command: {cmd}, {backoff}, \
             max_restarts: {NARROW}, window: \"1h\"),"
        );
        replicas.insert(format!("t/storm/n{i}"), 1);
    }
    for i in 0..2 {
        roles += &format!(
            "Role(name: \"w{i}\", replicas: 3, command: [\"sh\", \"-c\", \"exit 3\"], {backoff}, \
             max_restarts: {WIDE}, window: \"1h\"),"
        );
        replicas.insert(format!("t/storm/w{i}"), 3);
    }
    let file = env.manifest("storm.ron", &team("storm", &roles));
    env.ok(&["get", "sessions"]); // starts the daemon
    let daemon = env.daemon_pid();
    let idle = settled(&env, daemon, None);
    let started = Instant::now();
    env.ok(&["run", &file]);
    env.wait("every role crashing", |e| {
        e.roles()
            .iter()
            .all(|r| r["restarts"].as_u64() >= Some(2))
            .then_some(())
    });
    let warm = footprint(daemon);

    let mut samples = 0;
    let mut peak = warm;
    loop {
        assert!(
            started.elapsed() < STRESS_DEADLINE,
            "storm still going\n{}",
            env.dump()
        );
        for (role, n) in live_panes(&env) {
            assert!(
                n <= replicas[&role],
                "{role} has {n} live panes\n{}",
                env.dump()
            );
        }
        let sessions = env.sessions();
        for (role, n) in &replicas {
            let of_role: Vec<&Value> = sessions
                .iter()
                .filter(|s| s["key"].as_str().unwrap().starts_with(&format!("{role}-")))
                .collect();
            let markers = of_role.iter().filter(|s| s["state"] == "crashed").count();
            let live = of_role
                .iter()
                .filter(|s| s["state"] == "pending" || s["state"] == "running")
                .count();
            assert!(markers <= 1, "{role}: {markers} markers\n{}", env.dump());
            assert!(live <= *n, "{role}: {live} live sessions\n{}", env.dump());
        }
        let f = footprint(daemon);
        peak = Footprint {
            fds: peak.fds.max(f.fds),
            pidfds: peak.pidfds.max(f.pidfds),
            threads: peak.threads.max(f.threads),
            rss_kib: peak.rss_kib.max(f.rss_kib),
        };
        samples += 1;
        let quiet = sessions
            .iter()
            .all(|s| s["state"] != "pending" && s["state"] != "running");
        if quiet && env.roles().iter().all(|r| r["state"] == "frozen") {
            break;
        }
    }
    // Every slot keeps one pane, with no program left in it.
    let slots: usize = replicas.values().sum();
    env.wait("the last programs to go", |e| {
        (live_panes(e).is_empty() && e.panes().len() == slots).then_some(())
    });
    let took = started.elapsed();
    let end = settled(&env, daemon, Some(idle));

    let all = all_events(&env);
    let mut deaths = 0;
    for i in 0..6 {
        let role = format!("t/storm/n{i}");
        let seq = events_of(&all, &role, &["created", "crashed", "backoff", "frozen"]);
        let kinds: Vec<&str> = seq.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        let mut expected = Vec::new();
        for _ in 0..NARROW {
            expected.extend(["created", "crashed", "backoff"]);
        }
        expected.extend(["created", "crashed", "frozen"]);
        assert_eq!(kinds, expected, "{role}");
        let code = if i % 2 == 0 { "exit 1" } else { "exit 2" };
        for (n, step) in seq.chunks(3).enumerate() {
            let crash = step[1]["message"].as_str().unwrap();
            assert!(
                crash.starts_with(&format!("{code} after")),
                "{role}: {crash}"
            );
            if let Some(b) = step.get(2).filter(|e| e["kind"] == "backoff") {
                let n = n as u64 + 1;
                let ms = (40u64 << (n - 1).min(2)).min(160);
                let msg = b["message"].as_str().unwrap();
                assert!(
                    msg.starts_with(&format!("restart {n} in {ms}ms ")),
                    "{role}: {msg}"
                );
                let next = seq[3 * n as usize];
                assert!(
                    time(&next["at"]) >= due(b),
                    "{role}: restart {n} created at {} before its backoff ended at {}",
                    next["at"],
                    due(b)
                );
            }
        }
        deaths += NARROW + 1;
    }
    for i in 0..2 {
        let role = format!("t/storm/w{i}");
        let count = |kind: &str| events_of(&all, &role, &[kind]).len() as u64;
        assert_eq!(
            count("backoff"),
            WIDE,
            "{role}: one backoff per crash until it froze"
        );
        assert_eq!(count("frozen"), 1, "{role}");
        let crashed = count("crashed");
        assert_eq!(
            count("created"),
            crashed,
            "{role}: every spawn died and was recorded"
        );
        let seq = events_of(&all, &role, &["crashed", "frozen"]);
        let frozen_at = seq.iter().position(|e| e["kind"] == "frozen").unwrap();
        assert_eq!(
            frozen_at as u64,
            WIDE + 1,
            "{role}: frozen by crash {}",
            WIDE + 1
        );
        let late = crashed - (WIDE + 1);
        assert!(
            late <= 2,
            "{role}: {late} crashes after freezing (spawns under way)"
        );
        for slot in 0..3 {
            let key = format!("{role}-{slot}");
            let kinds: Vec<&str> = all
                .iter()
                .filter(|e| e["key"] == key.as_str())
                .map(|e| e["kind"].as_str().unwrap())
                .filter(|k| *k == "created" || *k == "crashed")
                .collect();
            assert!(
                kinds.chunks(2).all(|c| c == ["created", "crashed"]),
                "{key}: {kinds:?}"
            );
        }
        deaths += crashed;
    }
    let markers: BTreeSet<String> = env
        .sessions()
        .iter()
        .filter(|s| s["state"] == "crashed")
        .map(|s| format!("{}/{}", s["team"], s["role"]))
        .collect();
    assert_eq!(markers.len(), 8, "one marker per role: {markers:?}");

    eprintln!(
        "crash storm: {deaths} deaths in {took:?}, {samples} samples; daemon idle {idle:?}, \
         storm warm {warm:?}, peak {peak:?}, end {end:?}"
    );
    // Descriptors and threads came back to what an idle daemon has (see
    // `settled`); memory grows by no more than the bounded event ring and
    // records hold.
    assert!(
        end.rss_kib <= warm.rss_kib + 2048,
        "memory grew during the storm: {warm:?} → {end:?}"
    );
    assert!(
        end.rss_kib <= idle.rss_kib + 8192,
        "memory grew: {idle:?} → {end:?}"
    );
}

/// The daemon's footprint once its short-lived threads (one per
/// connection) and descriptors are gone: no more than `idle` when given
/// (a leak makes this wait fail), else once two samples agree.
fn settled(env: &Env, pid: u32, idle: Option<Footprint>) -> Footprint {
    let mut last = footprint(pid);
    env.wait("the daemon's threads and descriptors to settle", |e| {
        std::thread::sleep(Duration::from_millis(50));
        let now = footprint(pid);
        // The watch's pidfds: one for each of the tmux server's processes
        // (at most one per pane) and one for its waiting client.
        let pidfds_bound = e.panes().len() + 1;
        let done = match idle {
            // Plus the watch on the tmux server, started once the team's
            // server runs: its thread, its epoll set, its eventfd and the
            // waiting client's pipes. A leak over hundreds of deaths would
            // go far past that.
            Some(i) => {
                now.fds <= i.fds + 4 && now.threads <= i.threads + 1 && now.pidfds <= pidfds_bound
            }
            None => (now.fds, now.threads) == (last.fds, last.threads),
        };
        last = now;
        done.then_some(now)
    })
}

/// How a role's programs die, and the words `events` must use for it.
struct Death {
    role: String,
    command: String,
    /// The start of every crash message ("exit 3", "signal 9 (SIGKILL)").
    reason: String,
    /// Killed by the test rather than dying on their own.
    victim: bool,
}

#[test]
fn hundreds_of_randomized_deaths_are_all_recorded_as_they_happened() {
    let _turn = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let tally = env.dir().join("tally");
    std::fs::create_dir(&tally).unwrap();
    // Every program that dies on its own first appends a line to its
    // role's tally: the count of deaths that really happened.
    let mark = |role: &str| format!("echo x >> {}", tally.join(role).display());
    let signals = [
        (1, "SIGHUP"),
        (6, "SIGABRT"),
        (10, "SIGUSR1"),
        (12, "SIGUSR2"),
        (15, "SIGTERM"),
    ];
    let mut deaths = Vec::new();
    for i in 0..12 {
        let role = format!("r{i}");
        let code = rng.i32(0..=255);
        let (command, reason) = match i % 4 {
            // Instant exit with a random code.
            0 => (
                format!("{}; exit {code}", mark(&role)),
                format!("exit {code}"),
            ),
            // Exit after a random delay.
            1 => (
                format!(
                    "sleep 0.{:03}; {}; exit {code}",
                    rng.u32(10..150),
                    mark(&role)
                ),
                format!("exit {code}"),
            ),
            // Output, then exit.
            2 => (
                format!("seq 1 {}; {}; exit {code}", rng.u32(1..300), mark(&role)),
                format!("exit {code}"),
            ),
            // Killed by a random signal, sent by the program to itself.
            _ => {
                let (sig, name) = signals[rng.usize(..signals.len())];
                (
                    format!("{}; kill -{sig} $$", mark(&role)),
                    format!("signal {sig} ({name})"),
                )
            }
        };
        deaths.push(Death {
            role,
            command: format!("[\"sh\", \"-c\", {command:?}]"),
            reason,
            victim: false,
        });
    }
    for (role, reason) in [("k9", "signal 9 (SIGKILL)"), ("kp", "pane killed")] {
        deaths.push(Death {
            role: role.into(),
            command: r#"["sh", "-c", "exec sleep 600"]"#.into(),
            reason: reason.into(),
            victim: true,
        });
    }
    // Each self-dying role dies exactly BUDGET + 1 times, then freezes;
    // the test kills VICTIMS programs of each victim role.
    const BUDGET: usize = 34;
    const VICTIMS: usize = 50;
    let backoff = r#"backoff: (initial: "10ms", max: "10ms", factor: 2.0, jitter: 0.0)"#;
    let roles: String = deaths
        .iter()
        .map(|d| {
            let (replicas, budget) = if d.victim {
                (4, "None".to_string())
            } else {
                (1, BUDGET.to_string())
            };
            format!(
                "Role(name: {:?}, replicas: {replicas}, command: {}, {backoff}, \
                 max_restarts: {budget}, window: \"1h\"),",
                d.role, d.command
            )
        })
        .collect();
    let file = env.manifest("deaths.ron", &team("die", &roles));
    let started = Instant::now();
    env.ok(&["run", &file]);

    // Kill running victims, each program once, until enough have died.
    let mut killed: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    while killed.values().map(BTreeSet::len).sum::<usize>() < 2 * VICTIMS {
        assert!(
            started.elapsed() < STRESS_DEADLINE,
            "seed {seed}\n{}",
            env.dump()
        );
        for s in env.sessions() {
            let role = s["role"].as_str().unwrap();
            if s["state"] != "running" || !["k9", "kp"].contains(&role) {
                continue;
            }
            let pid = s["pid"].as_u64().unwrap();
            let done = killed
                .entry(if role == "k9" { "k9" } else { "kp" })
                .or_default();
            if done.len() >= VICTIMS || !done.insert(pid) {
                continue;
            }
            if role == "k9" {
                signal(pid as u32, libc::SIGKILL);
            } else {
                let pane = s["pane"].as_str().unwrap();
                assert!(env.tmux(&["kill-pane", "-t", pane]).status.success());
            }
        }
    }
    let all = loop {
        let all = all_events(&env);
        if started.elapsed() > STRESS_DEADLINE {
            let tally: Vec<String> = deaths
                .iter()
                .map(|d| {
                    let key = format!("t/die/{}", d.role);
                    let crashed = events_of(&all, &key, &["crashed"]);
                    let odd: Vec<&str> = crashed
                        .iter()
                        .filter_map(|e| e["message"].as_str())
                        .filter(|m| {
                            !(m.starts_with(d.reason.as_str()) || m.starts_with("pane killed"))
                        })
                        .collect();
                    format!("{key}: {} crashed {odd:?}", crashed.len())
                })
                .collect();
            panic!(
                "seed {seed}: not settled\n{}\n{}",
                tally.join("\n"),
                env.dump()
            );
        }
        let settled = deaths.iter().all(|d| {
            let crashed = events_of(&all, &format!("t/die/{}", d.role), &["crashed"]).len();
            crashed == if d.victim { VICTIMS } else { BUDGET + 1 }
        });
        if settled {
            break all;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();

    let mut total = 0;
    for d in &deaths {
        let key = format!("t/die/{}", d.role);
        let crashed = events_of(&all, &key, &["crashed"]);
        for e in &crashed {
            let msg = e["message"].as_str().unwrap();
            let reason = msg.split(" after ").next().unwrap();
            let ok = if d.role == "kp" {
                reason.starts_with("pane killed")
            } else {
                reason == d.reason
            };
            assert!(ok, "{key}: {msg:?}, expected {:?} (seed {seed})", d.reason);
        }
        if !d.victim {
            let happened = std::fs::read_to_string(tally.join(&d.role))
                .unwrap_or_default()
                .lines()
                .count();
            assert_eq!(
                crashed.len(),
                happened,
                "{key}: deaths recorded vs happened"
            );
            assert_eq!(env.role(&key)["state"], "frozen", "{key}");
        }
        total += crashed.len();
    }
    assert!(total >= 500, "{total} deaths");
    eprintln!("lost deaths: {total} deaths recorded in {took:?} (seed {seed})");
    // Nothing else was recorded as a death.
    let crashed_all = all.iter().filter(|e| e["kind"] == "crashed").count();
    assert_eq!(crashed_all, total);
}
