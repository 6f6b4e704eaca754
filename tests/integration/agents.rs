//! Agents on a real tmux server, with the fake agent of `tests/agents/`:
//! activity (busy, idle, waiting by pattern and by the program's word),
//! notification commands (run once per event with the event in their
//! environment, coalesced in a crash storm, never in the way of a restart,
//! failures reported), and typing into agents (`--when-idle`, pastes).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

fn fake_agent() -> String {
    format!("{}/tests/agents/fake-agent.sh", env!("CARGO_MANIFEST_DIR"))
}

fn hook_env() -> String {
    format!("{}/tests/agents/hook-env.sh", env!("CARGO_MANIFEST_DIR"))
}

/// A team of one fake agent (`start`: its first command) that goes idle
/// after 500 ms of silence; `extra` adds role fields, `notify` the team's.
fn agent_team(env: &Env, start: &str, extra: &str, notify: &str) -> String {
    let text = format!(
        "Team(name: \"squad\", workspace: \"t\", roles: [Role(name: \"agent\", \
         command: [{agent:?}], env: {{\"MARVEL_BIN\": {BIN:?}, \"FAKE_AGENT_START\": {start:?}}}, \
         idle_after: \"500ms\", backoff: (initial: \"100ms\", max: \"100ms\", jitter: 0.0), \
         max_restarts: None, ready_after: \"100ms\", {extra})], notify: [{notify}])",
        agent = fake_agent(),
    );
    let file = env.manifest("team.ron", &text);
    env.ok(&["run", &file]);
    env.wait_running("t/squad/agent", 1);
    file
}

fn session(env: &Env) -> Value {
    env.in_state("t/squad/agent", "running")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no running agent\n{}", env.dump()))
}

/// Waits until the agent's activity is `want`; returns its session.
fn wait_activity(env: &Env, want: &str) -> Value {
    env.wait(&format!("the agent to be {want}"), |e| {
        let s = e.in_state("t/squad/agent", "running").into_iter().next()?;
        (s["activity"] == want).then_some(s)
    })
}

/// What the pane shows, waited for until it contains `text`.
fn wait_screen(env: &Env, text: &str) -> String {
    let pane = session(env)["pane"].as_str().unwrap().to_string();
    env.wait(&format!("{text:?} on the screen"), |e| {
        let s = e.screen(&pane);
        s.contains(text).then_some(s)
    })
}

#[test]
fn an_agent_is_busy_while_it_prints_idle_once_quiet_and_busy_again() {
    let env = Env::new();
    agent_team(&env, "work 20", "", "");
    let s = wait_activity(&env, "busy");
    assert!(s["activity_since"].is_string(), "{s}");
    let s = wait_activity(&env, "idle");
    // Idle only once the work is done and 500 ms have passed.
    let idle_since: chrono::DateTime<chrono::Utc> =
        s["activity_since"].as_str().unwrap().parse().unwrap();
    let table = env.ok(&["get", "sessions"]);
    assert!(
        table.lines().next().unwrap().contains("ACTIVITY"),
        "{table}"
    );
    assert!(table.contains("idle"), "{table}");
    env.ok(&["inject", "agent-0", "work 10", "--enter"]);
    let s = wait_activity(&env, "busy");
    let busy_since: chrono::DateTime<chrono::Utc> =
        s["activity_since"].as_str().unwrap().parse().unwrap();
    assert!(busy_since > idle_since);
    wait_activity(&env, "idle");
    let kinds: Vec<String> = env
        .ok(&["events", "--key", "agent-0", "-o", "json"])
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .filter(|k| ["busy", "idle", "waiting"].contains(&k.as_str()))
        .collect();
    assert_eq!(kinds, ["idle", "busy", "idle"], "{}", env.dump());
    let idle = env.events("idle");
    assert!(
        idle[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("idle: nothing printed for 500ms"),
        "{idle:?}"
    );
}

#[test]
fn a_prompt_that_matches_the_roles_pattern_makes_the_agent_waiting() {
    let env = Env::new();
    agent_team(&env, "work 3", r#"waiting: "Allow .* \\(y/n\\)$""#, "");
    // Quiet without a prompt: idle, not waiting.
    wait_activity(&env, "idle");
    env.ok(&["inject", "agent-0", "ask", "--enter"]);
    wait_activity(&env, "busy");
    wait_activity(&env, "waiting");
    let ev = env.events("waiting");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(
        ev[0]["message"]
            .as_str()
            .unwrap()
            .contains("the screen matches"),
        "{ev:?}"
    );
    let table = env.ok(&["get", "sessions"]);
    assert!(table.contains("waiting"), "{table}");
    // Answering it is output: busy again.
    env.ok(&["inject", "agent-0", "y", "--enter"]);
    wait_activity(&env, "busy");
}

#[test]
fn an_agent_that_says_it_is_waiting_is_waiting_until_it_prints_again() {
    let env = Env::new();
    agent_team(&env, "work 2", "", "");
    wait_activity(&env, "idle");
    env.ok(&["inject", "agent-0", "say waiting", "--enter"]);
    wait_activity(&env, "waiting");
    let ev = env.events("waiting");
    assert_eq!(ev[0]["message"], "waiting: said the program", "{ev:?}");
    // Its own output after it ("said waiting") belongs to the same burst:
    // still waiting once the burst is over.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(session(&env)["activity"], "waiting");
    env.ok(&["inject", "agent-0", "work 3", "--enter"]);
    wait_activity(&env, "busy");
    wait_activity(&env, "idle");
}

/// The `.env` files the hook wrote into `dir`, by name.
fn hook_runs(dir: &Path) -> Vec<(String, Vec<(String, String)>)> {
    let mut runs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".env") {
                return None;
            }
            let text = std::fs::read_to_string(e.path()).ok()?;
            let vars = text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Some((name, vars))
        })
        .collect();
    runs.sort();
    runs
}

fn var<'a>(vars: &'a [(String, String)], name: &str) -> &'a str {
    vars.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {vars:?}"))
}

fn hooks_dir(env: &Env) -> PathBuf {
    let dir = env.dir().join("hooks");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_notify_command_runs_once_per_event_with_the_event_in_its_environment() {
    let env = Env::new();
    let dir = hooks_dir(&env);
    // Words that a shell or a template would expand reach the command as
    // written: the event is in the environment only.
    let notify = format!(
        "Notify(on: [Crashed], command: [{:?}, {:?}, \"$MARVEL_EVENT_KEY\", \"{{key}}\", \"$(echo x)\"], \
         coalesce: \"0s\")",
        hook_env(),
        dir.display().to_string()
    );
    agent_team(&env, "work 1", "", &notify);
    wait_activity(&env, "idle");
    env.ok(&["inject", "agent-0", "crash 3", "--enter"]);
    env.wait("the crash's notification", |_| {
        (!hook_runs(&dir).is_empty()).then_some(())
    });
    // The replacement starts, is busy, turns idle: none of that is asked for.
    env.wait("the replacement to go idle", |e| {
        (e.events("idle").len() >= 2).then_some(())
    });
    let runs = hook_runs(&dir);
    assert_eq!(runs.len(), 1, "{runs:?}\n{}", env.dump());
    let (name, vars) = &runs[0];
    assert!(name.starts_with("crashed-"), "{name}");
    let crashed = env.events("crashed").remove(0);
    assert_eq!(var(vars, "MARVEL_EVENT_KIND"), "crashed");
    assert_eq!(var(vars, "MARVEL_EVENT_KEY"), "t/squad/agent-0");
    assert_eq!(var(vars, "MARVEL_EVENT_MESSAGE"), crashed["message"]);
    assert!(
        var(vars, "MARVEL_EVENT_MESSAGE").starts_with("exit 3 after"),
        "{vars:?}"
    );
    let at: chrono::DateTime<chrono::Utc> = var(vars, "MARVEL_EVENT_AT").parse().unwrap();
    let logged: chrono::DateTime<chrono::Utc> = crashed["at"].as_str().unwrap().parse().unwrap();
    // RFC 3339 to the millisecond.
    assert_eq!(
        var(vars, "MARVEL_EVENT_AT").len(),
        "2026-01-01T00:00:00.000Z".len()
    );
    assert!(
        at <= logged && (logged - at).num_milliseconds() == 0,
        "{at} {logged}"
    );
    let json: Value = serde_json::from_str(var(vars, "MARVEL_EVENT_JSON")).unwrap();
    assert_eq!(json, crashed);
    assert_eq!(var(vars, "HOOK_ARGS"), "$MARVEL_EVENT_KEY {key} $(echo x)");
    assert!(env.events("notify-failed").is_empty());
}

#[test]
fn a_crash_storm_sends_one_notification_then_one_summary() {
    let env = Env::new();
    let dir = hooks_dir(&env);
    let notify = format!(
        "Notify(on: [Crashed], command: [{:?}, {:?}], coalesce: \"4s\")",
        hook_env(),
        dir.display().to_string()
    );
    // An agent that crashes as soon as it starts, every 100 ms or so.
    let text = format!(
        "Team(name: \"storm\", workspace: \"t\", roles: [Role(name: \"agent\", \
         command: [{agent:?}], env: {{\"FAKE_AGENT_START\": \"crash 3\"}}, \
         backoff: (initial: \"50ms\", max: \"50ms\", jitter: 0.0), max_restarts: None)], \
         notify: [{notify}])",
        agent = fake_agent(),
    );
    let file = env.manifest("storm.ron", &text);
    let t0 = Instant::now();
    env.ok(&["run", &file]);
    env.wait("a storm of crashes", |e| {
        (e.events("crashed").len() >= 12).then_some(())
    });
    env.ok(&["stop", "storm/agent"]);
    let storm = t0.elapsed();
    let crashes = env.events("crashed").len();
    assert!(
        storm < Duration::from_secs(4),
        "the storm outlasted the window: {storm:?}"
    );
    // One run at the first crash, one summary at the end of the window.
    let runs = env.wait("the summary", |_| {
        let runs = hook_runs(&dir);
        (runs.len() >= 2).then_some(runs)
    });
    assert_eq!(runs.len(), 2, "{runs:?}");
    let mut counts: Vec<u64> = runs
        .iter()
        .map(|(_, v)| var(v, "MARVEL_EVENT_COUNT").parse().unwrap())
        .collect();
    counts.sort();
    assert_eq!(counts, [1, crashes as u64 - 1], "{runs:?}");
    let summary = runs
        .iter()
        .find(|(_, v)| var(v, "MARVEL_EVENT_COUNT") != "1")
        .unwrap();
    assert!(
        var(&summary.1, "MARVEL_EVENT_MESSAGE").starts_with(&format!(
            "{} more crashed events of t/storm/agent-0 within 4s",
            crashes - 1
        )),
        "{summary:?}"
    );
}

#[test]
fn a_slow_notify_command_does_not_delay_a_restart() {
    let env = Env::new();
    let notify =
        r#"Notify(on: [Crashed], command: ["sleep", "30"], timeout: "60s", coalesce: "0s")"#;
    agent_team(&env, "work 1", "", notify);
    // Six crashes: more than the commands that run at once, each of them
    // asleep for 30 s.
    for n in 1..=6 {
        let pid = session(&env)["pid"].clone();
        env.ok(&["inject", "agent-0", "crash 3", "--enter"]);
        let t = Instant::now();
        env.wait(&format!("restart {n}"), |e| {
            e.in_state("t/squad/agent", "running")
                .into_iter()
                .find(|s| s["pid"] != pid && s["restarts"] == n)
        });
        // The backoff is 100 ms; a restart held up by its notification
        // would wait for `sleep 30`.
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "restart {n} took {:?}\n{}",
            t.elapsed(),
            env.dump()
        );
    }
    assert!(env.events("notify-failed").is_empty());
}

#[test]
fn a_failing_notify_command_leaves_a_notify_failed_event() {
    let env = Env::new();
    let dir = hooks_dir(&env);
    let notify = format!(
        "Notify(on: [Waiting], command: [{:?}, {:?}])",
        hook_env(),
        dir.display().to_string()
    );
    let text = format!(
        "Team(name: \"squad\", workspace: \"t\", roles: [Role(name: \"agent\", \
         command: [{agent:?}], env: {{\"MARVEL_BIN\": {BIN:?}}}, idle_after: \"500ms\")], \
         notify: [{notify}])",
        agent = fake_agent(),
    );
    let file = env.manifest("team.ron", &text);
    // The daemon's environment reaches the command: make it fail.
    let mut env = env;
    env.env.push(("HOOK_EXIT".into(), "7".into()));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/agent", 1);
    env.ok(&["inject", "agent-0", "say waiting", "--enter"]);
    let failed = env.wait("notify-failed", |e| {
        let ev = e.events("notify-failed");
        (!ev.is_empty()).then_some(ev)
    });
    assert_eq!(failed[0]["key"], "t/squad");
    assert_eq!(
        failed[0]["message"],
        format!(
            "notify command {} for waiting of t/squad/agent-0 failed: exit 7: no route to host",
            hook_env()
        )
    );
    assert_eq!(hook_runs(&dir).len(), 1);
}

#[test]
fn inject_when_idle_waits_for_quiet_then_types() {
    let env = Env::new();
    agent_team(&env, "work 40", "", "");
    wait_activity(&env, "busy");
    let t = Instant::now();
    let out = env.run_within(
        &[
            "inject",
            "agent-0",
            "hello there",
            "--enter",
            "--when-idle",
            "--timeout",
            "30s",
        ],
        Duration::from_secs(40),
    );
    assert!(out.status.success(), "{out:?}\n{}", env.dump());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("typed 11 bytes into t/squad/agent-0"),
        "{out:?}"
    );
    // 40 lines 50 ms apart, then 500 ms of quiet: not typed before.
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    let screen = wait_screen(&env, "got: hello there");
    let done = screen.find("work done").expect("the work ended first");
    assert!(done < screen.find("got: hello there").unwrap(), "{screen}");
    // It was typed after the session turned idle.
    let idle: chrono::DateTime<chrono::Utc> = env.events("idle")[0]["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let busy: chrono::DateTime<chrono::Utc> = env.events("busy")[0]["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(busy > idle, "typing made it busy after it was idle");
}

#[test]
fn inject_when_idle_times_out_on_a_busy_agent_and_types_nothing() {
    let env = Env::new();
    agent_team(&env, "work 2000", "", "");
    wait_activity(&env, "busy");
    let t = Instant::now();
    let err = env.fails(
        &[
            "inject",
            "agent-0",
            "hello",
            "--enter",
            "--when-idle",
            "--timeout",
            "1s",
        ],
        5,
    );
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert!(
        err.starts_with("error: agent-0 did not become idle within 1s (busy since "),
        "{err}"
    );
    assert!(err.contains("nothing was typed"), "{err}");
    assert!(
        err.contains("\nhelp: wait longer with --timeout, or leave out --when-idle to type now"),
        "{err}"
    );
    let pane = session(&env)["pane"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !env.screen(&pane).contains("hello"),
        "{}",
        env.screen(&pane)
    );
}

#[test]
fn a_prompt_of_several_lines_arrives_as_one_paste() {
    let env = Env::new();
    let text = format!(
        "Team(name: \"squad\", workspace: \"t\", roles: [Role(name: \"agent\", \
         command: [{agent:?}, \"paste\"])])",
        agent = fake_agent(),
    );
    let file = env.manifest("team.ron", &text);
    env.ok(&["run", &file]);
    env.wait_running("t/squad/agent", 1);
    wait_screen(&env, "ready for a paste");
    env.ok(&[
        "inject",
        "agent-0",
        "first line\nsecond; line\nthird $HOME line",
        "--enter",
    ]);
    let screen = wait_screen(&env, "enter");
    assert!(screen.contains("pasted 3 lines in 1 paste"), "{screen}");
    assert!(
        screen.contains("body: first line|second; line|third $HOME line"),
        "{screen}"
    );
}
