//! The pane shim and log pipe against a real tmux: each test has its own
//! tmux server (`-L`), state directory, and a socket listener standing in
//! for the daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use marvel::paths::Paths;
use marvel::proto::{Envelope, Request, ShimReport};
use marvel::shim::{read_exit_record, shim_argv, tail_lines};
use marvel::substrate::tmux::{Tmux, socket_path};
use marvel::substrate::{Observation, Place, SpawnRequest, Spawned, Substrate};

const MARVEL: &str = env!("CARGO_BIN_EXE_marvel");
const WAIT: Duration = Duration::from_secs(10);

/// A private tmux server and state directory, removed on drop.
struct Setup {
    tmux: Tmux,
    socket_name: String,
    paths: Paths,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let socket_name = format!(
            "marvel-test-shim-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let tmux = Tmux::new(Some(socket_name.clone()), Duration::from_secs(10))
            .with_config("/dev/null")
            .with_marvel_bin(MARVEL);
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            root: dir.path().join("state"),
        };
        paths.ensure().unwrap();
        Setup {
            tmux,
            socket_name,
            paths,
            _dir: dir,
        }
    }

    /// Spawns the shim around `command` in a new session.
    fn spawn(&self, uid: u64, command: &[&str]) -> Spawned {
        self.spawn_with(uid, command, &[])
    }

    /// Spawns the shim around `command` with the role's variables `env`.
    fn spawn_with(&self, uid: u64, command: &[&str], env: &[(&str, &str)]) -> Spawned {
        let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        let keys: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
        let req = SpawnRequest {
            place: Place::NewSession {
                session: format!("shim-{uid}"),
                team: "test/shim".into(),
                status_left: String::new(),
            },
            window_name: "r".into(),
            key: format!("test/shim/r-{uid}"),
            uid,
            argv: shim_argv(
                Path::new(MARVEL),
                uid,
                &self.paths.root,
                None,
                &keys,
                &command,
            ),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: None,
            log: Some(self.paths.session_log(uid)),
            reports: None,
            owner: "test".into(),
            status: String::new(),
        };
        self.tmux.spawn(&req).unwrap()
    }

    fn tmux_cmd(&self, args: &[&str]) {
        let st = Command::new("tmux")
            .args(["-L", &self.socket_name])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "tmux {args:?}");
    }

    fn record(&self, uid: u64) -> Option<ShimReport> {
        read_exit_record(&self.paths, uid).unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.tmux.kill_server();
        let _ = std::fs::remove_file(socket_path(&self.socket_name));
    }
}

/// Stands in for the daemon: each report arrives with the connection, so
/// the test decides when (and whether) to reply.
struct FakeDaemon {
    rx: mpsc::Receiver<(ShimReport, UnixStream)>,
}

impl FakeDaemon {
    fn listen(paths: &Paths) -> FakeDaemon {
        let listener = UnixListener::bind(paths.socket()).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let mut line = String::new();
                BufReader::new(&conn).read_line(&mut line).unwrap();
                let env: Envelope = serde_json::from_str(&line).unwrap();
                assert_eq!(env.protocol, marvel::proto::PROTOCOL_VERSION);
                let Request::Shim(report) = env.request else {
                    panic!("not a shim report: {line}");
                };
                // Whether a log is complete only after the report of its
                // run's end depends on how fast tmux reads the pane: taken
                // and answered, never one of the reports a test waits for.
                if let ShimReport::LogComplete { .. } = report {
                    reply(conn);
                    continue;
                }
                if tx.send((report, conn)).is_err() {
                    return;
                }
            }
        });
        FakeDaemon { rx }
    }

    /// The next report, answered at once.
    fn next(&self) -> ShimReport {
        let (report, conn) = self.next_unanswered();
        reply(conn);
        report
    }

    fn next_unanswered(&self) -> (ShimReport, UnixStream) {
        self.rx.recv_timeout(WAIT).expect("a report from the shim")
    }
}

fn reply(mut conn: UnixStream) {
    conn.write_all(b"{\"Done\":\"ok\"}\n").unwrap();
}

fn started_pid(report: ShimReport) -> u32 {
    match report {
        ShimReport::Started { pid, .. } => pid,
        other => panic!("expected Started, got {other:?}"),
    }
}

fn exited(report: &ShimReport) -> (Option<i32>, Option<i32>, bool) {
    match report {
        ShimReport::Exited {
            code,
            signal,
            hangup,
            ..
        } => (*code, *signal, *hangup),
        other => panic!("expected Exited, got {other:?}"),
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill(pid: u32, sig: i32) {
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// Whether the pane's process (the shim) has ended: the pane stays,
/// dead, as marvel's panes do.
fn shim_ended(tmux: &Tmux, pane: &str) -> bool {
    match tmux.list() {
        Ok(Observation::Panes(p)) => p.iter().any(|p| p.pane == pane && p.dead),
        _ => false,
    }
}

fn answer(mut conn: UnixStream, response: &marvel::proto::Response) {
    let answer = serde_json::to_vec(response).unwrap();
    conn.write_all(&answer).unwrap();
    conn.write_all(b"\n").unwrap();
}

fn reply_linger(conn: UnixStream, line: &str) {
    answer(conn, &marvel::proto::Response::Linger(line.into()));
}

/// Answers an end with the next run: spawn `uid`, running `script`.
fn reply_run(conn: UnixStream, uid: u64, script: &str) {
    let run = marvel::shim::NextRun {
        uid,
        argv: vec!["sh".into(), "-c".into(), script.into()],
        cwd: None,
        env: Default::default(),
        quiet_ms: 100,
    };
    answer(conn, &marvel::proto::Response::Run(run));
}

/// A crash loop of quick runs keeps its first screen in the pane's
/// scrollback, not a copy per crash (they churned tmux's history at the
/// loop's pace and grew the tmux server's memory); a run that lasted
/// keeps its screen there, and the last screen is the pane's.
#[test]
fn of_quick_runs_one_after_another_only_the_first_screen_goes_to_the_scrollback() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    let spawned = s.spawn(40, &["sh", "-c", "echo run 40; exit 3"]);
    let scripts = [
        (41, "echo run 41; exit 3"),
        (42, "echo run 42; exit 3"),
        (43, "echo run 43; sleep 1.2; exit 3"),
        (44, "echo run 44; exit 3"),
        (45, "echo run 45; exit 3"),
        (46, "echo run 46; sleep 60"),
    ];
    for (uid, script) in scripts {
        started_pid(daemon.next());
        let (report, conn) = daemon.next_unanswered();
        assert!(
            matches!(report, ShimReport::Exited { code: Some(3), .. }),
            "{report:?}"
        );
        reply_run(conn, uid, script);
    }
    started_pid(daemon.next());
    let runs = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("run "))
            .map(str::to_string)
            .collect()
    };
    let shown = wait_for("the last run's output", || {
        let text = s.tmux.capture(&spawned.pane, 200).unwrap();
        text.contains("run 46").then_some(text)
    });
    // 40: the pane's first run; 43 lasted; 44: the first quick run after
    // it. 41, 42 and 45 were quick after quick ones.
    assert_eq!(
        runs(&shown),
        ["run 40", "run 43", "run 44", "run 46"],
        "{shown}"
    );
    let screen = s.tmux.capture(&spawned.pane, 0).unwrap();
    assert_eq!(runs(&screen), ["run 46"], "{screen}");
}

/// The start goes to the exit record before the daemon hears of it; the
/// end only if the daemon does not answer (it answers once its own state
/// on disk holds the death).
#[test]
fn exit_code_is_reported_with_the_programs_pid_and_recorded_when_unanswered() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    let spawned = s.spawn(1, &["sh", "-c", "read line; exit 42"]);
    let pid = started_pid(daemon.next());
    assert_ne!(
        pid, spawned.pane_pid,
        "Started must carry the program's pid"
    );
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sh");
    assert!(matches!(s.record(1), Some(ShimReport::Started { .. })));
    s.tmux.send_text(&spawned.pane, "go", true).unwrap();
    let report = daemon.next();
    assert_eq!(exited(&report), (Some(42), None, false));
    wait_for("the shim to end once answered", || {
        shim_ended(&s.tmux, &spawned.pane).then_some(())
    });
    assert!(
        matches!(s.record(1), Some(ShimReport::Started { .. })),
        "an answered end is the daemon's to keep"
    );
    // A daemon that takes the report and goes without an answer.
    let spawned = s.spawn(5, &["sh", "-c", "read line; exit 7"]);
    daemon.next();
    s.tmux.send_text(&spawned.pane, "go", true).unwrap();
    let (report, conn) = daemon.next_unanswered();
    drop(conn);
    let recorded = wait_for("the end recorded", || {
        s.record(5)
            .filter(|r| matches!(r, ShimReport::Exited { .. }))
    });
    assert_eq!(recorded, report);
    assert_eq!(exited(&recorded), (Some(7), None, false));
}

#[test]
fn a_killed_program_is_reported_with_its_signal() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    s.spawn(2, &["sleep", "60"]);
    let pid = started_pid(daemon.next());
    kill(pid, libc::SIGKILL);
    assert_eq!(exited(&daemon.next()), (None, Some(9), false));
}

#[test]
fn the_exit_record_holds_the_report_without_a_daemon() {
    let s = Setup::new();
    s.spawn(3, &["sh", "-c", "exit 3"]);
    let report = wait_for("exit record", || {
        s.record(3)
            .filter(|r| matches!(r, ShimReport::Exited { .. }))
    });
    assert_eq!(exited(&report), (Some(3), None, false));
}

#[test]
fn the_shim_waits_for_the_daemons_answer_to_the_exit() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    let spawned = s.spawn(4, &["sh", "-c", "echo last words; exit 1"]);
    daemon.next();
    let (report, conn) = daemon.next_unanswered();
    assert_eq!(exited(&report), (Some(1), None, false));
    assert!(!shim_ended(&s.tmux, &spawned.pane), "the shim waits");
    let screen = s.tmux.capture(&spawned.pane, 100).unwrap();
    assert!(screen.contains("last words"), "{screen:?}");
    reply(conn);
    wait_for("the shim to end", || {
        shim_ended(&s.tmux, &spawned.pane).then_some(())
    });
}

/// The bottom row of the pane's visible screen.
fn bottom_row(s: &Setup, pane: &str) -> String {
    let out = Command::new("tmux")
        .args(["-L", &s.socket_name, "capture-pane", "-p", "-t", pane])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().last().unwrap_or_default().trim().to_string()
}

#[test]
fn told_to_linger_the_shim_stays_under_the_last_screen_with_marvels_line() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    // The program fills the screen: its last row must not go under the line.
    let spawned = s.spawn(
        12,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 80 ]; do i=$((i+1)); echo row $i; done; exit 3",
        ],
    );
    daemon.next();
    let (report, conn) = daemon.next_unanswered();
    assert_eq!(exited(&report), (Some(3), None, false));
    reply_linger(conn, "crashed: exit 3 — restart at 12:00:01");
    wait_for("marvel's line", || {
        (bottom_row(&s, &spawned.pane) == "crashed: exit 3 — restart at 12:00:01").then_some(())
    });
    let screen = s.tmux.capture(&spawned.pane, 0).unwrap();
    assert!(
        screen.contains("row 80"),
        "the last row is still shown: {screen}"
    );
    assert!(!shim_ended(&s.tmux, &spawned.pane), "the shim stays");
    // The daemon writes a new line and sends SIGWINCH: it is drawn.
    std::fs::write(
        s.paths.exits_dir().join("12.line"),
        "frozen: 3 crashes in 1m",
    )
    .unwrap();
    kill(spawned.pane_pid, libc::SIGWINCH);
    wait_for("the new line", || {
        (bottom_row(&s, &spawned.pane) == "frozen: 3 crashes in 1m").then_some(())
    });
    // A restart in the pane replaces the shim.
    let out = Command::new("tmux")
        .args([
            "-L",
            &s.socket_name,
            "respawn-pane",
            "-k",
            "-t",
            &spawned.pane,
            "echo again; sleep 60",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for("the old shim to go", || {
        (!Path::new(&format!("/proc/{}", spawned.pane_pid)).exists()).then_some(())
    });
}

/// What tmux says of `pane` in `format`.
fn pane_format(s: &Setup, pane: &str, format: &str) -> String {
    let out = Command::new("tmux")
        .args([
            "-L",
            &s.socket_name,
            "display-message",
            "-p",
            "-t",
            pane,
            format,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_lingering_shim_runs_the_next_spawn_in_the_same_pane_with_a_fresh_terminal() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    // The first run leaves the terminal in a state of its own: the
    // alternate screen, no echo.
    let spawned = s.spawn_with(
        20,
        &[
            "sh",
            "-c",
            "echo first $ROLE_VAR; stty -echo; printf '\\033[?1049h'; echo on the alternate screen; exit 3",
        ],
        &[("ROLE_VAR", "given")],
    );
    started_pid(daemon.next());
    let record = std::fs::metadata(s.paths.exit_record(20)).unwrap().ino();
    let (report, conn) = daemon.next_unanswered();
    assert!(
        matches!(
            report,
            ShimReport::Exited {
                code: Some(3),
                rerun: true,
                ..
            }
        ),
        "{report:?}"
    );
    reply_linger(conn, "crashed: exit 3 — restart at 12:00:01");
    wait_for("marvel's line", || {
        (bottom_row(&s, &spawned.pane) == "crashed: exit 3 — restart at 12:00:01").then_some(())
    });
    let next = |uid: u64, script: &str| marvel::shim::NextRun {
        uid,
        argv: vec!["sh".into(), "-c".into(), script.into()],
        cwd: Some(std::env::temp_dir()),
        env: [("OTHER".to_string(), "set".to_string())].into(),
        quiet_ms: 100,
    };
    let ask = |run: &marvel::shim::NextRun| {
        std::fs::write(s.paths.next_run(20), serde_json::to_vec(run).unwrap()).unwrap();
        kill(spawned.pane_pid, libc::SIGWINCH);
    };
    // A run that is not later than the one that ended is not run.
    ask(&next(20, "echo stale; sleep 60"));
    wait_for("the stale run to be taken", || {
        (!s.paths.next_run(20).exists()).then_some(())
    });
    ask(&next(
        21,
        "echo second [$ROLE_VAR] $OTHER $(pwd); stty -a | grep -o -- '-\\?echo ' | head -1; sleep 60",
    ));
    let report = daemon.next();
    assert!(
        matches!(report, ShimReport::Started { uid: 21, .. }),
        "the later run starts, not the stale one: {report:?}"
    );
    // Its record is the first run's file, renamed and written over.
    assert!(!s.paths.exit_record(20).exists());
    assert_eq!(
        std::fs::metadata(s.paths.exit_record(21)).unwrap().ino(),
        record
    );
    assert!(matches!(
        marvel::shim::read_exit_record(&s.paths, 21).unwrap(),
        Some(ShimReport::Started { uid: 21, .. })
    ));
    // The same pane and shim; the program's own environment (the role's
    // variable of the first run is gone); a terminal as a new pane's.
    assert_eq!(
        pane_format(&s, &spawned.pane, "#{pane_pid}"),
        spawned.pane_pid.to_string()
    );
    let tmp = std::env::temp_dir().canonicalize().unwrap();
    let expected = format!("second [] set {}", tmp.display());
    let screen = wait_for("the second run's output", || {
        let screen = s.tmux.capture(&spawned.pane, 0).unwrap();
        (screen.lines().count() >= 2).then_some(screen)
    });
    // Echo is on again, the alternate screen and the last screen gone.
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines, [expected.as_str(), "echo"], "{screen}");
    // The first run's output is in the scrollback; marvel's line is not.
    let scrollback = s.tmux.capture(&spawned.pane, 100).unwrap();
    assert!(scrollback.contains("first given"), "{scrollback}");
    assert!(!scrollback.contains("restart at"), "{scrollback}");
    assert_eq!(pane_format(&s, &spawned.pane, "#{alternate_on}"), "0");
    // Each run's output in its own log.
    let first = tail_lines(&s.paths.session_log(20), 10);
    assert_eq!(first, ["first given", "on the alternate screen"]);
    let second = wait_for("the second log", || {
        let t = tail_lines(&s.paths.session_log(21), 10);
        (t.len() >= 2).then_some(t)
    });
    assert_eq!(second, [expected.as_str(), "echo"]);
    // Its end is reported as the new run's.
    kill(started_pid(report), libc::SIGKILL);
    let (report, conn) = daemon.next_unanswered();
    assert!(
        matches!(
            report,
            ShimReport::Exited {
                uid: 21,
                signal: Some(9),
                ..
            }
        ),
        "{report:?}"
    );
    reply_linger(conn, "crashed: signal 9");
    // A next run it cannot read (another version's): the shim goes, and
    // its pane is left dead for the daemon to find.
    std::fs::write(s.paths.next_run(21), b"{\"uid\": \"not a number\"}").unwrap();
    kill(spawned.pane_pid, libc::SIGWINCH);
    wait_for("the shim to go", || {
        shim_ended(&s.tmux, &spawned.pane).then_some(())
    });
}

#[test]
fn without_a_daemon_the_shim_stays_and_says_marvel_will_say_more() {
    let s = Setup::new();
    let spawned = s.spawn(13, &["sh", "-c", "exit 5"]);
    wait_for("marvel's line", || {
        bottom_row(&s, &spawned.pane)
            .starts_with("ended: exit 5 — marvel will say what comes next")
            .then_some(())
    });
    assert!(!shim_ended(&s.tmux, &spawned.pane));
    // Told to go, it goes.
    kill(spawned.pane_pid, libc::SIGTERM);
    wait_for("the shim to end", || {
        shim_ended(&s.tmux, &spawned.pane).then_some(())
    });
}

#[test]
fn killing_the_pane_is_a_hangup() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    let spawned = s.spawn(5, &["sleep", "60"]);
    let pid = started_pid(daemon.next());
    s.tmux_cmd(&["kill-pane", "-t", &spawned.pane]);
    let (code, signal, hangup) = exited(&daemon.next());
    assert!(hangup);
    assert_eq!((code, signal), (None, Some(libc::SIGHUP)));
    wait_for("program gone", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

#[test]
fn a_program_that_ignores_hangup_is_killed_after_the_grace() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    let spawned = s.spawn(
        6,
        &["sh", "-c", "trap '' HUP; while :; do sleep 0.05; done"],
    );
    daemon.next();
    s.tmux.kill(&spawned.pane).unwrap();
    let (code, signal, hangup) = exited(&daemon.next());
    assert!(hangup);
    assert_eq!((code, signal), (None, Some(libc::SIGKILL)));
}

#[test]
fn terminal_interrupt_reaches_the_program_and_not_the_shim() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    let spawned = s.spawn(7, &["sleep", "60"]);
    daemon.next();
    s.tmux.send_keys(&spawned.pane, &["C-c".into()]).unwrap();
    // sleep inherits no ignored SIGINT from the shim: it dies of it, and
    // the shim lives on to report.
    assert_eq!(exited(&daemon.next()), (None, Some(libc::SIGINT), false));
}

#[test]
fn sigterm_to_the_shim_is_forwarded() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    let spawned = s.spawn(8, &["sleep", "60"]);
    daemon.next();
    kill(spawned.pane_pid, libc::SIGTERM);
    assert_eq!(exited(&daemon.next()), (None, Some(libc::SIGTERM), false));
}

#[test]
fn a_missing_program_exits_127_with_a_message_in_the_pane() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    let spawned = s.spawn(9, &["/nonexistent/agent", "--flag"]);
    let (report, conn) = daemon.next_unanswered();
    assert_eq!(exited(&report), (Some(127), None, false));
    let screen = s.tmux.capture(&spawned.pane, 10).unwrap();
    assert!(
        screen.contains("cannot run /nonexistent/agent"),
        "{screen:?}"
    );

    // Spawned while the first pane still holds the server up.
    let dir = tempfile::tempdir().unwrap();
    let not_exec = dir.path().join("agent");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    s.spawn(10, &[not_exec.to_str().unwrap()]);
    reply(conn);
    assert_eq!(exited(&daemon.next()), (Some(126), None, false));
}

#[test]
fn pane_output_reaches_the_session_log() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    let spawned = s.spawn(
        11,
        &[
            "sh",
            "-c",
            "printf '\\033[1mbold\\033[0m line\\n50%%\\r100%%\\n'; read x",
        ],
    );
    daemon.next();
    let log: PathBuf = s.paths.session_log(11);
    let lines = wait_for("log lines", || {
        let t = tail_lines(&log, 5);
        t.iter().any(|l| l == "100%").then_some(t)
    });
    assert_eq!(lines, ["bold line", "100%"]);
    s.tmux.send_text(&spawned.pane, "", true).unwrap();
    daemon.next();
}

/// marvel processes whose command line holds every one of `words` (not
/// the tmux server, whose own command line may hold the log pipe's).
fn processes_with(words: &[&str]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
            let marvel = argv.starts_with(MARVEL);
            (marvel && words.iter().all(|w| argv.contains(w))).then_some(pid)
        })
        .collect()
}

#[test]
fn the_shim_writes_the_log_and_no_log_pipe_stays_beside_it() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    let spawned = s.spawn(12, &["sh", "-c", "echo first; read x; echo second; read y"]);
    daemon.next();
    let log: PathBuf = s.paths.session_log(12);
    let log_name = log.to_str().unwrap().to_string();
    wait_for("the first line in the log", || {
        tail_lines(&log, 5)
            .iter()
            .any(|l| l == "first")
            .then_some(())
    });
    // The log pipe handed the pane's output to the shim and went.
    wait_for("no log pipe left", || {
        processes_with(&["logpipe", &log_name])
            .is_empty()
            .then_some(())
    });
    // And the log still grows: the shim writes it.
    s.tmux.send_text(&spawned.pane, "", true).unwrap();
    wait_for("the second line in the log", || {
        tail_lines(&log, 5)
            .iter()
            .any(|l| l == "second")
            .then_some(())
    });
    s.tmux.send_text(&spawned.pane, "", true).unwrap();
    daemon.next();
}

#[test]
fn a_log_pipe_no_shim_takes_writes_the_log_itself() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("alone.log");
    let mut child = Command::new(MARVEL)
        .args(["logpipe", "--to-shim", "--max-bytes", "1000"])
        .arg(&log)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"kept anyway\n").unwrap();
    drop(input);
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "kept anyway\n");
}

/// A shim still waiting for the answer to its program's end takes the
/// slot's next run in the answer: run at once in the same pane, without
/// marvel's line drawn or a next-run file, its output in its own log.
#[test]
fn a_shim_runs_the_next_program_it_gets_in_the_answer_to_an_end() {
    let s = Setup::new();
    let daemon = FakeDaemon::listen(&s.paths);
    let spawned = s.spawn(30, &["sh", "-c", "echo first run; exit 3"]);
    started_pid(daemon.next());
    let (report, conn) = daemon.next_unanswered();
    assert!(
        matches!(
            report,
            ShimReport::Exited {
                code: Some(3),
                rerun: true,
                run_in_answer: true,
                ..
            }
        ),
        "{report:?}"
    );
    reply_run(conn, 31, "echo second run; sleep 60");
    let report = daemon.next();
    let pid = match report {
        ShimReport::Started { uid: 31, pid, .. } => pid,
        other => panic!("the next run did not start: {other:?}"),
    };
    assert_eq!(
        pane_format(&s, &spawned.pane, "#{pane_pid}"),
        spawned.pane_pid.to_string(),
        "the same pane and shim"
    );
    let second = wait_for("the second run's log", || {
        let t = tail_lines(&s.paths.session_log(31), 10);
        (!t.is_empty()).then_some(t)
    });
    assert_eq!(second, ["second run"]);
    assert_eq!(tail_lines(&s.paths.session_log(30), 10), ["first run"]);
    assert!(!s.paths.next_run(30).exists());
    kill(pid, libc::SIGKILL);
    let (report, conn) = daemon.next_unanswered();
    assert!(
        matches!(report, ShimReport::Exited { uid: 31, .. }),
        "{report:?}"
    );
    // A run in the answer that is not later than the one that ended is
    // not run: the shim goes.
    reply_run(conn, 31, "sleep 60");
    wait_for("the shim to end", || {
        shim_ended(&s.tmux, &spawned.pane).then_some(())
    });
}
