//! The everyday verbs and their refusals: logs that follow, stop, start,
//! restart, down, diff, scale to zero or to the same count, safe applies,
//! status problems, errors that point the way, the systemd unit and key
//! completion.

use std::io::Read;
use std::process::Stdio;

use serde_json::Value;

use crate::support::*;

const SH: &str = r#"["sh", "-c", "echo ready; exec sleep 600"]"#;

/// A role whose runs say which run they are, then wait.
fn counting(name: &str, replicas: u32) -> String {
    role(
        name,
        replicas,
        r#"["sh", "-c", "echo run $MARVEL_SESSION_UID; exec sleep 600"]"#,
        "",
    )
}

/// Starts marvel in the background with its stdout piped.
fn spawn(env: &Env, args: &[&str]) -> std::process::Child {
    env.cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run marvel")
}

/// What a background marvel prints, gathered as it comes.
struct Stream {
    child: std::process::Child,
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Stream {
    fn new(env: &Env, args: &[&str]) -> Stream {
        let mut child = spawn(env, args);
        let mut out = child.stdout.take().unwrap();
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Stream { child, text }
    }

    /// Waits until every one of `want` was printed; returns all so far.
    fn until(&self, env: &Env, want: &[&str]) -> String {
        env.wait(&format!("{want:?} printed"), |_| {
            let text = self.text.lock().unwrap().clone();
            want.iter().all(|w| text.contains(w)).then_some(text)
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn uid_of(env: &Env, key: &str) -> u64 {
    env.sessions()
        .into_iter()
        .find(|s| s["key"] == key && s["state"] == "running")
        .and_then(|s| s["uid"].as_u64())
        .unwrap_or_else(|| panic!("no running {key}\n{}", env.dump()))
}

#[test]
fn logs_follow_a_slot_across_a_restart_and_show_the_previous_run() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &counting("w", 1)));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/w", 1);
    let first = uid_of(&env, "t/squad/w-0");
    env.wait("the first run's output", |e| {
        e.ok(&["logs", "w-0"]).contains("run ").then_some(())
    });
    let follow = Stream::new(&env, &["logs", "w-0", "-f"]);
    follow.until(&env, &[&format!("run {first}")]);
    env.ok(&["restart", "w-0"]);
    let second = env.wait("the replacement", |e| {
        let u = e
            .in_state("t/squad/w", "running")
            .first()
            .and_then(|s| s["uid"].as_u64());
        u.filter(|u| *u != first)
    });
    let text = follow.until(&env, &[&format!("run {second}")]);
    assert!(text.starts_with(&format!("run {first}\n")), "{text}");
    assert!(
        text.contains(&format!("run {second}")),
        "followed across the restart:\n{text}"
    );
    env.wait("the new run's output", |e| {
        e.ok(&["logs", "w-0"])
            .contains(&format!("run {second}"))
            .then_some(())
    });
    let previous = env.ok(&["logs", "w-0", "-p"]);
    assert_eq!(previous.trim(), format!("run {first}"));
    assert_eq!(
        env.role("t/squad/w")["restarts"],
        0,
        "a restart is not a crash"
    );
}

#[test]
fn logs_of_a_role_prefix_each_line_with_its_session() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &counting("w", 2)));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/w", 2);
    let out = env.wait("both sessions' output", |e| {
        let out = e.ok(&["logs", "w"]);
        (out.contains("w-0 | run ") && out.contains("w-1 | run ")).then_some(out)
    });
    assert!(out.lines().all(|l| l.starts_with("w-")), "{out}");
    // A session key is printed bare.
    assert!(env.ok(&["logs", "w-1"]).starts_with("run "));
}

#[test]
fn stop_keeps_a_team_stopped_across_a_daemon_restart_and_start_brings_it_back() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("w", 2, SH, "")));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/w", 2);
    let out = env.ok(&["stop", "squad"]);
    assert!(out.contains("stopped t/squad/w"), "{out}");
    env.wait("no panes", |e| e.panes().is_empty().then_some(()));
    assert_eq!(env.role("t/squad/w")["state"], "stopped");
    assert_eq!(env.role("t/squad/w")["restarts"], 0);
    assert!(env.events("crashed").is_empty(), "a stop is not a crash");
    env.ok(&["daemon", "stop"]);
    env.ok(&["run", &file]);
    // A spawn would be planned by the time `run` is answered: it would
    // show as a pending session.
    assert!(
        env.sessions().is_empty() && env.panes().is_empty(),
        "still stopped after a restart and a re-run"
    );
    assert_eq!(env.role("t/squad/w")["state"], "stopped");
    env.ok(&["start", "squad"]);
    env.wait_running("t/squad/w", 2);
    let err = env.fails(&["stop", "w-0"], 2);
    assert!(err.contains("w-0 is a session; stop its role w"), "{err}");
}

#[test]
fn down_removes_the_files_team_and_another_file_is_refused_unless_forced() {
    let env = Env::new();
    let a = env.manifest("a.ron", &team("squad", &role("w", 1, SH, "")));
    let b = env.manifest("b.ron", &team("squad", &role("other", 1, SH, "")));
    env.ok(&["run", &a]);
    env.wait_running("t/squad/w", 1);
    let err = env.fails(&["run", &b], 5);
    assert!(err.contains("belongs to"), "{err}");
    assert!(err.contains("a.ron"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        env.in_state("t/squad/w", "running").len(),
        1,
        "nothing killed"
    );
    env.fails(&["down", &b], 5);
    env.ok(&["run", &b, "--force"]);
    env.wait_running("t/squad/other", 1);
    let out = env.ok(&["down", &b]);
    assert!(out.contains("team t/squad removed"), "{out}");
    env.wait("no panes", |e| e.panes().is_empty().then_some(()));
    assert!(env.ok(&["down", &b]).contains("not applied"));
}

#[test]
fn scale_to_zero_is_stopped_and_to_the_same_count_unchanged() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("w", 2, SH, "")));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/w", 2);
    let out = env.ok(&["scale", "w", "2"]);
    assert_eq!(out.trim(), "t/squad/w unchanged at 2 replicas");
    assert!(env.events("scaled").is_empty());
    let err = env.fails(&["scale", "w-0", "2"], 2);
    assert!(err.contains("w-0 is a session; scale its role w"), "{err}");
    env.ok(&["scale", "w", "0"]);
    env.wait("no panes", |e| e.panes().is_empty().then_some(()));
    assert_eq!(env.role("t/squad/w")["state"], "stopped");
}

#[test]
fn a_never_role_that_crashed_is_failed_and_run_wait_says_so_with_exit_5() {
    let env = Env::new();
    let cmd = r#"["sh", "-c", "sleep 0.05; exit 4"]"#;
    let file = env.manifest(
        "team.ron",
        &team("squad", &role("once", 1, cmd, "restart: Never,")),
    );
    let out = env.run(&["run", &file, "--wait", "--timeout", "15s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("t/squad/once failed: exit 4"), "{err}");
    assert_eq!(env.role("t/squad/once")["state"], "failed");
    assert_eq!(env.run(&["status"]).status.code(), Some(5));
}

#[test]
fn run_wait_is_not_fooled_by_a_program_that_exits_after_300ms() {
    let env = Env::new();
    let cmd = r#"["sh", "-c", "sleep 0.3"]"#;
    let file = env.manifest(
        "team.ron",
        &team(
            "squad",
            &role("blip", 1, cmd, "ready_after: \"1s\", max_restarts: 1,"),
        ),
    );
    let out = env.run(&["run", &file, "--wait", "--timeout", "15s"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ready"),
        "{out:?}"
    );
}

#[test]
fn a_policy_edit_keeps_the_running_programs_and_a_command_edit_replaces_them() {
    let env = Env::new();
    let v1 = team("squad", &role("w", 2, SH, "max_restarts: 5,"));
    let file = env.manifest("team.ron", &v1);
    env.ok(&["run", &file]);
    let before: Vec<Value> = env
        .wait_running("t/squad/w", 2)
        .iter()
        .map(|s| s["pid"].clone())
        .collect();
    env.manifest(
        "team.ron",
        &team("squad", &role("w", 2, SH, "max_restarts: 9,")),
    );
    let plan = env.ok(&["diff", &file]);
    assert!(
        plan.contains("t/squad/w  update in place (max_restarts)"),
        "{plan}"
    );
    let out = env.ok(&["run", &file]);
    assert!(
        out.contains("t/squad/w updated in place (max_restarts changed)"),
        "{out}"
    );
    // A replacement would be planned by the time `run` is answered.
    assert_eq!(env.sessions().len(), 2, "nothing is being replaced");
    let after: Vec<Value> = env
        .in_state("t/squad/w", "running")
        .iter()
        .map(|s| s["pid"].clone())
        .collect();
    assert_eq!(before, after, "same programs, same pids");
    let sh2 = r#"["sh", "-c", "echo v2; exec sleep 600"]"#;
    env.manifest(
        "team.ron",
        &team("squad", &role("w", 2, sh2, "max_restarts: 9,")),
    );
    let plan = env.ok(&["run", &file, "--dry-run"]);
    assert!(plan.contains("replace 2 sessions (command)"), "{plan}");
    assert!(env.ok(&["run", &file]).contains("t/squad/w replaced"));
    env.wait("both replaced", |e| {
        let now = e.in_state("t/squad/w", "running");
        (now.len() == 2 && now.iter().all(|s| !before.contains(&s["pid"]))).then_some(())
    });
}

#[test]
fn dry_run_without_a_daemon_validates_only_and_says_so() {
    let env = Env::new();
    let file = env.manifest("team.ron", &team("squad", &role("w", 1, SH, "")));
    let out = env.run(&["diff", &file]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no daemon is running: the file is valid"),
        "{err}"
    );
    assert!(
        !env.state_dir().join("marvel.sock").exists(),
        "no daemon started"
    );
}

#[test]
fn status_reports_a_frozen_role_with_a_hint_and_exits_5() {
    let env = Env::new();
    let cmd = r#"["sh", "-c", "exit 3"]"#;
    let file = env.manifest(
        "team.ron",
        &team("squad", &role("bad", 1, cmd, "max_restarts: 0,")),
    );
    env.ok(&["run", &file]);
    env.wait("frozen", |e| {
        (e.role("t/squad/bad")["state"] == "frozen").then_some(())
    });
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(5));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("state   degraded (1 problem)"), "{text}");
    assert!(
        text.contains("help: run `marvel reset role t/squad/bad` to restart it"),
        "{text}"
    );
    assert_eq!(env.status()["problems"][0]["kind"], "frozen");
}

#[test]
fn get_filters_by_key_and_watch_streams_json_lines_on_a_pipe() {
    let env = Env::new();
    let file = env.manifest(
        "team.ron",
        &team("squad", &(role("w", 2, SH, "") + &role("lead", 1, SH, ""))),
    );
    env.ok(&["run", &file]);
    env.wait_running("t/squad/w", 2);
    let one = env.json(&["get", "sessions", "w-1"]);
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    let roles = env.json(&["get", "roles", "lead"]);
    assert_eq!(roles[0]["key"], "t/squad/lead");
    let err = env.fails(&["get", "sessions", "w-9"], 4);
    assert!(err.contains("did you mean"), "{err}");
    let watch = Stream::new(&env, &["get", "roles", "-w"]);
    watch.until(&env, &["t/squad/lead"]);
    env.ok(&["scale", "lead", "3"]);
    let text = watch.until(&env, &["\"desired\":3"]);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 3, "{text}");
    assert!(
        lines
            .iter()
            .any(|v| v["key"] == "t/squad/lead" && v["desired"] == 3)
    );
}

#[test]
fn errors_point_to_the_right_command() {
    let env = Env::new();
    let err = env.fails(&["ps"], 2);
    assert!(err.contains("help: use marvel get sessions"), "{err}");
    let err = env.fails(&["delete", "demo"], 2);
    assert!(
        err.contains("did you mean `marvel delete team demo`?"),
        "{err}"
    );
    let err = env.fails(&["get", "sessions", "-f"], 2);
    assert!(!err.contains("to pass '-f' as a value"), "{err}");
    assert!(err.contains("has no option -f"), "{err}");
    let file = env.manifest("team.ron", &team("squad", &role("shell", 2, SH, "")));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/shell", 2);
    let err = env.fails(&["capture", "shell"], 2);
    assert!(
        err.contains("shell is a role; its sessions are shell-0, shell-1"),
        "{err}"
    );
    let err = env.fails(&["kill", "shel-0"], 4);
    assert!(err.contains("did you mean `shell-0`?"), "{err}");
    let help = env.fails(&["restat"], 2);
    assert!(help.contains("restart"), "{help}");
}

#[test]
fn without_tmux_run_says_so_at_once_and_run_wait_names_tmux() {
    let mut env = Env::new();
    let bin = env.dir().join("bin");
    std::fs::create_dir(&bin).unwrap();
    env.env.extend([
        ("PATH".to_string(), bin.display().to_string()),
        ("MARVEL_TMUX_RETRY_MS".to_string(), "50".to_string()),
    ]);
    env.ok(&["get", "sessions"]);
    env.wait("tmux down", |e| {
        (e.status()["tmux"]["state"] == "down").then_some(())
    });
    let cmd = r#"["/bin/sh", "-c", "exec /bin/sleep 600"]"#;
    let file = env.manifest("team.ron", &team("squad", &role("agent", 1, cmd, "")));
    let out = env.run(&["run", &file]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tmux is not available"), "{err}");
    let err = env.fails(&["run", &file, "--wait", "--timeout", "10s"], 7);
    assert!(err.contains("tmux"), "{err}");
}

#[test]
fn daemon_install_writes_a_unit_that_systemd_accepts_and_uninstall_removes_it() {
    let mut env = Env::new();
    let config = env.dir().join("config");
    env.env
        .push(("XDG_CONFIG_HOME".into(), config.display().to_string()));
    let unit = env.ok(&["daemon", "install", "--print"]);
    assert!(unit.contains(" daemon run\n"), "{unit}");
    assert!(unit.contains("KillMode=process"), "{unit}");
    assert!(!config.exists(), "--print writes nothing");
    let out = env.ok(&["daemon", "install"]);
    assert!(
        out.contains("systemctl --user enable --now marvel"),
        "{out}"
    );
    assert!(out.contains("loginctl enable-linger"), "{out}");
    let path = config.join("systemd/user/marvel.service");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), unit);
    let verify = std::process::Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(&path)
        .output();
    if let Ok(v) = verify
        && !String::from_utf8_lossy(&v.stderr).contains("Failed to connect")
    {
        // Only a complaint about our unit counts, not about the machine.
        let err = String::from_utf8_lossy(&v.stderr);
        assert!(
            !err.lines().any(|l| l.contains("marvel.service")),
            "systemd-analyze verify:\n{err}"
        );
    }
    assert!(env.ok(&["daemon", "uninstall"]).contains("removed"));
    assert!(!path.exists());
}

#[test]
fn completion_offers_keys_from_the_running_daemon_and_verbs_without_one() {
    let env = Env::new();
    let complete = |words: &[&str]| -> String {
        let mut cmd = env.cmd(&["--"]);
        cmd.args(words)
            .env("COMPLETE", "bash")
            .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
            .env("_CLAP_IFS", "\n");
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    let verbs = complete(&["marvel", "rest"]);
    assert!(verbs.lines().any(|l| l == "restart"), "{verbs}");
    let none = complete(&["marvel", "logs", ""]);
    assert!(
        none.lines().all(|l| l.starts_with('-')),
        "no daemon, no keys: {none}"
    );
    assert!(
        !env.state_dir().join("marvel.sock").exists(),
        "no daemon started"
    );
    let file = env.manifest("team.ron", &team("squad", &role("w", 1, SH, "")));
    env.ok(&["run", &file]);
    env.wait_running("t/squad/w", 1);
    let keys = complete(&["marvel", "logs", ""]);
    assert!(keys.lines().any(|l| l == "t/squad/w-0"), "{keys}");
    assert!(keys.lines().any(|l| l == "w-0"), "{keys}");
}
