//! Daemons on other hosts, reached over real OpenSSH: a private sshd on a
//! loopback port logs in as this user, and the "remote" daemon is one with
//! its own state directory and tmux server on this machine, named in the
//! context's `remote_env`. The client side uses its own ssh config
//! (`MARVEL_SSH_COMMAND="ssh -F …"`), contexts file (`MARVEL_CONFIG`) and
//! control socket directory (`XDG_RUNTIME_DIR`).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::sshd::{Sshd, free_port};
use crate::support::*;
use marvel::proto::PROTOCOL_VERSION;
use serde_json::Value;

/// A program that reads what is typed into it.
const SH: &str = r#"["sh", "-c", "echo ready; exec sh"]"#;

/// This host (`here`), a "remote" daemon (`there`) and the sshd between.
struct Fleet {
    sshd: Sshd,
    here: Env,
    there: Env,
}

impl Fleet {
    fn new() -> Fleet {
        let sshd = Sshd::start();
        let there = Env::new();
        let mut here = Env::new();
        let run = here.dir().join("run");
        std::fs::create_dir(&run).unwrap();
        here.env.extend([
            ("MARVEL_SSH_COMMAND".to_string(), sshd.ssh_command()),
            ("XDG_RUNTIME_DIR".to_string(), run.display().to_string()),
        ]);
        let f = Fleet { sshd, here, there };
        f.add("rem", &f.remote_args());
        f
    }

    /// What makes the context reach `there`.
    fn remote_args(&self) -> Vec<String> {
        vec![
            "--remote-path".into(),
            BIN.into(),
            "--remote-env".into(),
            format!("MARVEL_HOME={}", self.there.state_dir().display()),
            "--remote-env".into(),
            format!("MARVEL_TMUX_SOCKET={}", self.there.socket),
            "--remote-env".into(),
            "MARVEL_SWEEP_MS=300".into(),
        ]
    }

    fn add(&self, name: &str, extra: &[String]) {
        let url = self.sshd.url();
        let mut args = vec!["context", "add", name, &url];
        args.extend(extra.iter().map(String::as_str));
        self.here.ok(&args);
    }

    /// `marvel ARGS --context rem`, which must succeed.
    fn rem(&self, args: &[&str]) -> String {
        let mut full = args.to_vec();
        full.extend(["--context", "rem"]);
        self.here.ok(&full)
    }

    fn rem_json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        serde_json::from_str(&self.rem(&full)).expect("JSON")
    }
}

/// Lines a child prints, as they come.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `cmd` with its output and errors read line by line, as they come.
fn following(
    mut cmd: std::process::Command,
) -> (
    std::process::Child,
    mpsc::Receiver<String>,
    mpsc::Receiver<String>,
) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let err = lines_of(child.stderr.take().unwrap());
    (child, out, err)
}

/// Waits for a line that passes `want`, or fails after the deadline.
fn expect_line(rx: &mpsc::Receiver<String>, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if want(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "no line with {what} within {DEADLINE:?}; saw:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[test]
fn every_command_works_through_ssh() {
    let f = Fleet::new();
    let file = f.here.manifest(
        "team.ron",
        &team(
            "squad",
            &(role("worker", 2, SH, "") + &role("lead", 1, SH, "")),
        ),
    );
    let plan = f.rem(&["run", &file, "--dry-run"]);
    assert!(
        plan.starts_with(&format!(
            "for context rem ({}): paths are 127.0.0.1's",
            f.sshd.url()
        )),
        "{plan}"
    );
    let out = f.rem(&["run", &file, "--wait"]);
    assert!(out.contains("t/squad/worker created (2 replicas)"), "{out}");
    assert!(out.contains("t/squad ready"), "{out}");
    // It runs there, not here.
    f.there.wait_running("t/squad/worker", 2);
    assert!(f.here.sessions().is_empty());

    let sessions = f.rem_json(&["get", "sessions"]);
    assert_eq!(
        sessions.as_array().unwrap().len(),
        3,
        "{sessions}\n{}",
        f.there.dump()
    );
    assert_eq!(f.rem_json(&["get", "roles"]).as_array().unwrap().len(), 2);
    let teams = f.rem(&["get", "teams"]);
    assert!(
        teams.contains("t/squad") && teams.contains("Ready"),
        "{teams}"
    );
    let described = f.rem(&["describe", "session", "worker-0"]);
    assert!(described.contains("t/squad/worker-0"), "{described}");

    let typed = f.rem(&["inject", "worker-0", "echo", "marker-42", "--enter"]);
    assert!(
        typed.contains("typed 14 bytes into t/squad/worker-0"),
        "{typed}"
    );
    f.here
        .wait("the typed line in the remote session's log", |e| {
            let out = e.run(&["logs", "worker-0", "--context", "rem"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l == "marker-42")
                .then_some(())
        });

    let scaled = f.rem(&["scale", "worker", "3"]);
    assert!(scaled.contains("t/squad/worker"), "{scaled}");
    f.there.wait_running("t/squad/worker", 3);

    f.rem(&["inject", "lead-0", "exit 3", "--enter"]);
    f.there.wait("the lead's crash", |e| {
        (e.role("t/squad/lead")["restarts"].as_u64() >= Some(1)).then_some(())
    });
    let reset = f.rem(&["reset", "role", "lead"]);
    assert!(reset.contains("t/squad/lead"), "{reset}");
    assert_eq!(f.there.role("t/squad/lead")["crashes_in_window"], 0);

    let shifted = f.rem(&["shift", "squad", "--role", "worker", "--wait"]);
    assert!(
        shifted.contains("shift completed: 3 sessions replaced"),
        "{shifted}"
    );

    let status = f.rem(&["status"]);
    assert!(
        status.starts_with(&format!("context rem ({})\ndaemon  running", f.sshd.url())),
        "{status}"
    );
    assert!(
        status.contains(&f.there.state_dir().display().to_string()),
        "{status}"
    );
    let status = f.rem_json(&["status"]);
    assert_eq!(status["context"], "rem");
    assert_eq!(
        status["daemon"]["state_dir"],
        f.there.state_dir().display().to_string()
    );
    let events = f.rem(&["events", "--kind", "crashed"]);
    assert!(events.contains("t/squad/lead-0"), "{events}");

    let gone = f.rem(&["delete", "team", "squad"]);
    assert!(gone.contains("t/squad"), "{gone}");
    f.there.wait("the team gone there", |e| {
        e.sessions().is_empty().then_some(())
    });
}

#[test]
fn a_killed_ssh_connection_ends_events_follow_with_a_clear_message() {
    let f = Fleet::new();
    let (mut child, out, err) = following(f.here.cmd(&["events", "-f", "--context", "rem"]));
    // Events made there arrive here as they happen.
    let file = f
        .there
        .manifest("team.ron", &team("squad", &role("worker", 1, SH, "")));
    f.there.ok(&["run", &file]);
    expect_line(&out, "the created event", |l| {
        l.contains("created") && l.contains("t/squad/worker-0")
    });
    assert!(!f.sshd.sessions().is_empty());
    f.sshd.kill_sessions();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("events -f kept running after its connection was cut");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(6));
    let first = expect_line(&err, "the error", |l| l.starts_with("error: "));
    assert!(
        first.starts_with(&format!(
            "error: lost the connection to rem ({})",
            f.sshd.url()
        )),
        "{first}"
    );
    let help = expect_line(&err, "the hint", |l| l.starts_with("help: "));
    assert!(help.contains("run the command again"), "{help}");
}

#[test]
fn all_contexts_shows_every_live_host_and_names_the_unreachable_one() {
    let f = Fleet::new();
    f.here.ok(&[
        "context",
        "add",
        "far",
        &format!("ssh://127.0.0.1:{}", free_port()),
    ]);
    let home = f
        .here
        .manifest("home.ron", &team("home", &role("a", 1, SH, "")));
    f.here.ok(&["run", &home]);
    let away = f
        .there
        .manifest("away.ron", &team("away", &role("b", 1, SH, "")));
    f.there.ok(&["run", &away]);
    f.here.wait_running("t/home/a", 1);
    f.there.wait_running("t/away/b", 1);

    let out = f
        .here
        .run_within(&["get", "sessions", "-A"], Duration::from_secs(60));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(8), "partial\n{stdout}{stderr}");
    let rows: Vec<&str> = stdout.lines().collect();
    assert!(rows[0].starts_with("CONTEXT   SESSION"), "{stdout}");
    assert!(
        rows.iter().any(|r| r.starts_with("local     t/home/a-0")),
        "{stdout}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("rem       t/away/b-0")),
        "{stdout}"
    );
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(
        stderr.starts_with(
            "warning: context far did not answer: cannot connect to far (ssh://127.0.0.1:"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("\nhelp: "), "{stderr}");

    let out = f.here.run_within(
        &["get", "roles", "-A", "-o", "json"],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(8));
    let roles: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut seen: Vec<(String, String)> = roles
        .iter()
        .map(|r| {
            (
                r["context"].as_str().unwrap().to_string(),
                r["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("local".to_string(), "t/home/a".to_string()),
            ("rem".to_string(), "t/away/b".to_string())
        ]
    );

    // The event logs of both, merged in time order.
    let out = f.here.run_within(
        &["events", "-A", "--kind", "created", "-o", "json"],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(8));
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let contexts: Vec<&str> = events
        .iter()
        .map(|e| e["context"].as_str().unwrap())
        .collect();
    assert!(
        contexts.contains(&"local") && contexts.contains(&"rem"),
        "{events:?}"
    );
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> =
        times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Followed: the history of both, then what happens on either.
    let (mut child, out, err) = following(f.here.cmd(&["events", "-f", "-A", "--kind", "created"]));
    // Both histories, in whichever order their times put them.
    let deadline = Instant::now() + DEADLINE;
    let (mut local, mut rem) = (false, false);
    while !(local && rem) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = out.recv_timeout(left).unwrap_or_else(|_| {
            panic!("history of both within {DEADLINE:?}: local {local}, rem {rem}")
        });
        local |= line.starts_with("local  ") && line.contains("t/home/a-0");
        rem |= line.starts_with("rem    ") && line.contains("t/away/b-0");
    }
    f.there.ok(&["scale", "away/b", "2"]);
    expect_line(&out, "a new event there", |l| {
        l.starts_with("rem    ") && l.contains("t/away/b-1")
    });
    expect_line(&err, "far named", |l| {
        l.starts_with("warning: context far did not answer")
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn contexts_are_added_used_listed_and_removed() {
    let f = Fleet::new();
    let ls = f.here.ok(&["context", "ls"]);
    assert!(ls.contains("*         local   (this host)"), "{ls}");
    assert!(
        ls.contains(&format!("          rem     {}", f.sshd.url())),
        "{ls}"
    );
    let file = f
        .there
        .manifest("team.ron", &team("away", &role("b", 1, SH, "")));
    f.there.ok(&["run", &file]);
    f.there.wait_running("t/away/b", 1);

    assert_eq!(
        f.here.ok(&["context", "use", "rem"]),
        "current context: rem\n"
    );
    // With no --context, commands now go there.
    let sessions = f.here.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["key"], "t/away/b-0");
    let status = f.here.ok(&["status"]);
    assert!(status.starts_with("context rem (ssh://"), "{status}");
    // The systemd unit is always for this host's daemon.
    let unit = f.here.ok(&["daemon", "install", "--print"]);
    assert!(
        unit.contains(&format!("MARVEL_HOME={}", f.here.state_dir().display())),
        "{unit}"
    );
    assert!(
        !unit.contains(&f.there.state_dir().display().to_string()),
        "{unit}"
    );
    // --context and MARVEL_CONTEXT win over the current context.
    f.here.ok(&["get", "sessions", "--context", "local"]);
    assert!(
        f.here
            .ok(&["status", "--context", "local"])
            .starts_with("context local\n")
    );
    let out = f
        .here
        .cmd(&["status"])
        .env("MARVEL_CONTEXT", "local")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("context local\n"));
    let ls = f.here.json(&["context", "ls"]);
    assert_eq!(ls[1]["name"], "rem");
    assert_eq!(ls[1]["current"], true);

    let e = f.here.fails(&["get", "sessions", "--context", "nope"], 2);
    assert!(
        e.contains("no context is called \"nope\" (known: local, rem)"),
        "{e}"
    );
    let e = f
        .here
        .fails(&["context", "add", "rem", "ssh://elsewhere"], 5);
    assert!(e.contains("help: add --force to replace it"), "{e}");
    let e = f.here.fails(&["context", "add", "x", "elsewhere"], 2);
    assert!(e.contains("not an ssh:// address"), "{e}");
    f.here.fails(&["context", "rm", "local"], 2);

    let rm = f.here.run(&["context", "rm", "rem"]);
    assert!(rm.status.success());
    assert!(String::from_utf8_lossy(&rm.stderr).contains("commands now go to local"));
    assert!(f.here.ok(&["status"]).starts_with("context local\n"));
    // The file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(f.here.dir().join("config/contexts.ron"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_remote_marvel_of_another_protocol_is_named_with_both_versions() {
    let f = Fleet::new();
    let ours = env!("CARGO_PKG_VERSION");
    let script = |name: &str, body: &str| {
        let path = f.here.dir().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    };
    let older = script(
        "older",
        r#"echo '{"marvel":"0.0.1","protocol":2,"connected":true}'; cat >/dev/null"#,
    );
    let newer = script(
        "newer",
        r#"echo '{"marvel":"9.9.9","protocol":99,"connected":true,"something":"new"}'; cat >/dev/null"#,
    );
    let ancient = script(
        "ancient",
        "echo \"error: unrecognized subcommand 'dial-stdio'\" >&2; exit 2",
    );
    for (name, path) in [("older", &older), ("newer", &newer), ("ancient", &ancient)] {
        f.add(name, &["--remote-path".into(), path.clone()]);
    }
    let fail = |ctx: &str| {
        let out = f.here.run_within(
            &["get", "sessions", "--context", ctx],
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(6), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = fail("older");
    assert!(
        e.starts_with(&format!(
            "error: older ({}) runs marvel 0.0.1 (protocol 2), but this is marvel {ours} (protocol {PROTOCOL_VERSION}): they cannot talk\nhelp: upgrade marvel on 127.0.0.1 to {ours}",
            f.sshd.url()
        )),
        "{e}"
    );
    let e = fail("newer");
    assert!(e.contains("runs marvel 9.9.9 (protocol 99)"), "{e}");
    assert!(
        e.contains("help: upgrade marvel here to 9.9.9 or later"),
        "{e}"
    );
    let e = fail("ancient");
    assert!(e.contains("is too old to be reached over ssh"), "{e}");
    assert!(
        e.contains(&format!(
            "help: upgrade marvel on 127.0.0.1 to {ours} or later"
        )),
        "{e}"
    );
}

#[test]
fn each_ssh_failure_is_a_one_line_error_with_a_hint_never_a_hang() {
    let f = Fleet::new();
    f.add(
        "missing",
        &["--remote-path".into(), "marvel-not-installed-here".into()],
    );
    let file_home = f.here.dir().join("not-a-dir");
    std::fs::write(&file_home, "").unwrap();
    f.add(
        "broken",
        &[
            "--remote-path".into(),
            BIN.into(),
            "--remote-env".into(),
            format!("MARVEL_HOME={}", file_home.display()),
        ],
    );
    f.here.ok(&[
        "context",
        "add",
        "closed",
        &format!("ssh://127.0.0.1:{}", free_port()),
    ]);
    let within = Duration::from_secs(60);
    let check = |ctx: &str, env: &[(&str, &str)], message: &str, help: &str| {
        let mut cmd = f.here.cmd(&["get", "sessions", "--context", ctx]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let start = Instant::now();
        let out = cmd.output().unwrap();
        assert!(start.elapsed() < within, "{ctx} took {:?}", start.elapsed());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{ctx}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{ctx}: one error and one hint:\n{stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(message),
            "{ctx}: {stderr}"
        );
        assert!(
            lines[1].starts_with("help: ") && lines[1].contains(help),
            "{ctx}: {stderr}"
        );
    };
    check(
        "rem",
        &[("PATH", "/nonexistent"), ("MARVEL_SSH_COMMAND", "")],
        "cannot run ssh: it is not installed, or not on PATH",
        "install the OpenSSH client",
    );
    let unknown = f.sshd.ssh_command_unknown_host();
    check(
        "rem",
        &[("MARVEL_SSH_COMMAND", &unknown)],
        "its host key is not known",
        "connect once with `ssh 127.0.0.1`",
    );
    let wrong = f.sshd.ssh_command_wrong_key();
    check(
        "rem",
        &[("MARVEL_SSH_COMMAND", &wrong)],
        "ssh could not log in to rem",
        "ssh-agent",
    );
    check(
        "missing",
        &[],
        "`marvel-not-installed-here` is not on the PATH of missing",
        "--remote-path /path/to/marvel --force",
    );
    check(
        "broken",
        &[],
        "on 127.0.0.1: refusing the state directory",
        "on 127.0.0.1: ",
    );
    check(
        "closed",
        &[],
        "cannot connect to closed",
        "sshd listens on that port",
    );
}

#[test]
fn attach_through_ssh_opens_the_remote_pane_on_this_terminal() {
    let f = Fleet::new();
    let file = f
        .there
        .manifest("team.ron", &team("away", &role("b", 1, SH, "")));
    f.there.ok(&["run", &file]);
    f.there.wait_running("t/away/b", 1);
    // A terminal for the client: a pane of this side's own tmux server.
    let mut line = vec![format!(
        "MARVEL_CONFIG={}",
        f.here.dir().join("config").display()
    )];
    for (k, v) in &f.here.env {
        line.push(format!("{k}={}", shlex_quote(v)));
    }
    line.push(format!("{BIN} attach b-0 --context rem"));
    let out = f.here.tmux(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "30",
        &format!("env {}; sleep 60", line.join(" ")),
    ]);
    assert!(out.status.success(), "{out:?}");
    f.there
        .wait("a client attached to the remote session", |e| {
            let out = e.tmux(&["list-clients", "-F", "#{client_session} #{window_name}"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|s| s == "t-away b-0")
                .then_some(())
        });
}

#[test]
fn logs_follow_stop_start_restart_diff_and_down_work_through_ssh() {
    let f = Fleet::new();
    let file = f
        .here
        .manifest("team.ron", &team("squad", &role("worker", 1, SH, "")));
    // No daemon there yet: diff only checks the file, and names the host.
    let plan = f.rem(&["diff", &file]);
    assert!(
        plan.starts_with(&format!(
            "for context rem ({}): paths are 127.0.0.1's",
            f.sshd.url()
        )),
        "{plan}"
    );
    f.rem(&["run", &file, "--wait"]);
    f.there.wait_running("t/squad/worker", 1);
    let plan = f.rem(&["diff", &file]);
    assert!(
        plan.contains("team t/squad: no changes (dry run, nothing applied)"),
        "{plan}"
    );

    // logs -f: a line written there arrives here, and so does the run
    // that replaces it.
    let (mut child, out, err) =
        following(f.here.cmd(&["logs", "worker-0", "-f", "--context", "rem"]));
    f.there
        .ok(&["inject", "worker-0", "echo", "written-there-1", "--enter"]);
    expect_line(&out, "the line written there", |l| l == "written-there-1");
    let restarted = f.rem(&["restart", "worker-0"]);
    assert!(
        restarted.contains("t/squad/worker-0 restarting"),
        "{restarted}"
    );
    expect_line(&err, "the restart", |l| {
        l.starts_with("--- t/squad/worker-0 restarted (uid ")
    });
    f.there.wait_running("t/squad/worker", 1);
    f.there
        .ok(&["inject", "worker-0", "echo", "written-there-2", "--enter"]);
    expect_line(&out, "the new run's line", |l| l == "written-there-2");
    let _ = child.kill();
    let _ = child.wait();
    // -p: the run before the restart.
    let previous = f.rem(&["logs", "worker-0", "-p"]);
    assert!(
        previous.lines().any(|l| l == "written-there-1"),
        "{previous}\n{}",
        f.there.dump()
    );

    // stop and start, through ssh, act there.
    let stopped = f.rem(&["stop", "worker"]);
    assert!(stopped.contains("stopped t/squad/worker"), "{stopped}");
    f.there.wait("the role stopped there", |e| {
        (e.role("t/squad/worker")["state"] == "stopped" && e.panes().is_empty()).then_some(())
    });
    assert_eq!(f.rem_json(&["get", "roles"])[0]["state"], "stopped");
    // get -w streams what changes there: the started session.
    let mut watch = f
        .here
        .cmd(&["get", "sessions", "-w", "-o", "json", "--context", "rem"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let changes = lines_of(watch.stdout.take().unwrap());
    let started = f.rem(&["start", "worker"]);
    assert!(started.contains("started t/squad/worker"), "{started}");
    f.there.wait_running("t/squad/worker", 1);
    expect_line(&changes, "the running session, streamed", |l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|v| v["key"] == "t/squad/worker-0" && v["state"] == "running")
    });
    let _ = watch.kill();
    let _ = watch.wait();

    // down and diff check the file for that host, as run does: a relative
    // cwd would name a directory here.
    let relative = f.here.manifest(
        "relative.ron",
        &team("squad", &role("worker", 1, SH, r#"cwd: "work","#)),
    );
    for verb in ["down", "diff"] {
        let err = f.here.fails(&[verb, &relative, "--context", "rem"], 3);
        assert!(
            err.contains("roles[0].cwd: work is relative"),
            "{verb}: {err}"
        );
    }
    f.there.wait_running("t/squad/worker", 1);
    let down = f.rem(&["down", &file]);
    assert!(down.contains("t/squad"), "{down}");
    f.there.wait("the team gone there", |e| {
        (e.sessions().is_empty() && e.json(&["get", "teams"]) == Value::Array(vec![])).then_some(())
    });
    assert!(f.here.sessions().is_empty());
}

#[test]
fn top_through_ssh_names_the_context_follows_its_events_and_attaches_there() {
    use crate::top::{Term, dashboard, row};
    let f = Fleet::new();
    // A backoff long enough for the dashboard to show it.
    let file = f.there.manifest(
        "team.ron",
        &team(
            "squad",
            &format!(
                r#"Role(name: "worker", command: {SH}, ready_after: "100ms",
                        backoff: (initial: "2s", max: "2s", jitter: 0.0)),"#
            ),
        ),
    );
    f.there.ok(&["run", &file]);
    f.there.wait_running("t/squad/worker", 1);

    let term = Term::new(&f.here);
    term.type_line(&format!("'{BIN}' top --context rem"));
    let header = format!("rem ({})", f.sshd.url());
    let screen = term.wait(&f.there, "the remote dashboard", DEADLINE, |s| {
        dashboard(s) && row(s, "worker-0").is_some_and(|r| r.contains("● running"))
    });
    let first = screen.lines().next().unwrap_or_default();
    assert!(
        first.contains("daemon ● up") && first.ends_with(&header),
        "{screen}"
    );

    // What happens there shows here, through the event stream over ssh.
    f.there.ok(&["inject", "worker-0", "exit 3", "--enter"]);
    // (Its 2 s backoff may pass between two reads of a loaded machine: the
    // restart count says the crash arrived all the same.)
    term.wait(&f.there, "the crash there", DEADLINE, |s| {
        row(s, "worker-0").is_some_and(|r| r.contains("◷ backoff") || r.contains(" 1 ("))
    });
    f.there.wait_running("t/squad/worker", 1);
    term.wait(&f.there, "the replacement", DEADLINE, |s| {
        row(s, "worker-0").is_some_and(|r| r.contains("● running"))
    });

    // enter opens the pane in that host's tmux (ssh -t), and the dashboard
    // comes back when the client detaches.
    term.keys(&["Enter"]);
    f.there.wait("a client on the remote session", |e| {
        let out = e.tmux(&["list-clients", "-F", "#{client_session} #{window_name}"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|s| s == "t-squad worker-0")
            .then_some(())
    });
    let clients = f.there.tmux(&["list-clients", "-F", "#{client_name}"]);
    for client in String::from_utf8_lossy(&clients.stdout).lines() {
        f.there.tmux(&["detach-client", "-t", client]);
    }
    term.wait(&f.there, "the dashboard again", DEADLINE, |s| {
        dashboard(s) && s.contains("back from t/squad/worker-0")
    });
    term.keys(&["q"]);
    term.wait(&f.there, "the shell again", DEADLINE, |s| !dashboard(s));
    // It ran there only.
    assert!(f.here.sessions().is_empty());
}

#[test]
fn completion_offers_the_keys_of_the_context_being_talked_to() {
    let f = Fleet::new();
    let file = f
        .there
        .manifest("team.ron", &team("away", &role("b", 1, SH, "")));
    f.there.ok(&["run", &file]);
    f.there.wait_running("t/away/b", 1);
    let complete = |words: &[&str], context_env: Option<&str>| -> String {
        let mut cmd = f.here.cmd(&["--"]);
        cmd.args(words)
            .env("COMPLETE", "bash")
            .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
            .env("_CLAP_IFS", "\n");
        if let Some(c) = context_env {
            cmd.env("MARVEL_CONTEXT", c);
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    for (words, env) in [
        (&["marvel", "logs", "--context", "rem", ""][..], None),
        (&["marvel", "--context=rem", "stop", ""][..], None),
        (&["marvel", "restart", ""][..], Some("rem")),
    ] {
        let keys = complete(words, env);
        assert!(
            keys.lines().any(|l| l == "t/away/b-0" || l == "t/away/b"),
            "{words:?}: {keys}"
        );
    }
    // This host's daemon has none of them, and none is started for it.
    let here = complete(&["marvel", "logs", ""], None);
    assert!(!here.contains("t/away"), "{here}");
    assert!(!f.here.state_dir().join("marvel.sock").exists());
}

fn shlex_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
