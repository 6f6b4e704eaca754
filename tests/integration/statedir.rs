//! The state directory and the daemon's lock on a real system: a directory
//! or socket another user controls is refused, planted links are never
//! followed, `attach` runs only the tmux command it builds itself, the lock
//! survives the removal of its file and of the socket, SIGTERM is a
//! graceful stop, and the daemon keeps none of its starter's descriptors.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const SLEEP: &str = r#"["sh", "-c", "exec sleep 600"]"#;
/// The uid of `nobody`: another user, as far as marvel can tell.
const NOBODY: u32 = 65534;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Runs a one-role team and waits for its sessions; returns their panes.
fn start_team(env: &Env, replicas: u32) -> Vec<String> {
    let file = env.manifest("team.ron", &team("squad", &role("w", replicas, SLEEP, "")));
    env.ok(&["run", &file]);
    let mut panes: Vec<String> = env
        .wait_running("t/squad/w", replicas as usize)
        .iter()
        .map(|s| s["pane"].as_str().unwrap().to_string())
        .collect();
    panes.sort();
    panes
}

fn sorted_panes(env: &Env) -> Vec<String> {
    let mut p = env.panes();
    p.sort();
    p
}

/// Gives a path back to us when dropped, so a failing test does not leave
/// a state directory its own cleanup cannot use.
struct Reclaim<'a>(&'a Path);

impl Drop for Reclaim<'_> {
    fn drop(&mut self) {
        let me = marvel::statedir::me();
        let _ = std::os::unix::fs::lchown(self.0, Some(me), Some(me));
    }
}

#[test]
fn a_state_directory_of_another_user_is_refused_and_left_alone() {
    let env = Env::new();
    let dir = env.state_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let _reclaim = Reclaim(&dir);
    for args in [&["get", "sessions"][..], &["daemon", "run"]] {
        let err = env.fails(args, 6);
        assert!(
            err.starts_with(&format!(
                "error: refusing the state directory {}: it belongs to another user (owner uid {NOBODY}, mode 0755; you are uid {})\nhelp: ",
                dir.display(),
                marvel::statedir::me()
            )),
            "{err}"
        );
    }
    // Nothing was made, repaired or started there.
    assert_eq!(mode(&dir), 0o755);
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
}

#[test]
fn a_state_directory_others_can_write_to_or_a_link_is_refused() {
    let env = Env::new();
    let dir = env.state_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = env.fails(&["get", "sessions"], 6);
    assert!(
        err.contains(&format!(
            "other users can write to it (owner uid {}, mode 0777",
            marvel::statedir::me()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "help: if the directory is yours alone, run `chmod go-w {}`",
            dir.display()
        )),
        "{err}"
    );
    env.fails(&["daemon", "run"], 6);
    assert_eq!(mode(&dir), 0o777, "refused, never repaired");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());

    // The state directory as a link to a private directory of ours.
    std::fs::remove_dir(&dir).unwrap();
    let real = env.dir().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &dir).unwrap();
    let err = env.fails(&["get", "sessions"], 6);
    assert!(
        err.contains(&format!("it is a symbolic link to {}", real.display())),
        "{err}"
    );
    assert!(std::fs::read_dir(&real).unwrap().next().is_none());
}

#[test]
fn links_planted_in_the_state_directory_are_never_followed() {
    let env = Env::new();
    env.ok(&["get", "sessions"]);
    env.ok(&["daemon", "stop"]);
    let dir = env.state_dir();
    let victim = env.dir().join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();

    // The daemon's log, as another user (or a program) could plant it.
    std::fs::remove_file(dir.join("daemon.log")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("daemon.log")).unwrap();
    let err = env.fails(&["get", "sessions"], 6);
    assert!(
        err.contains("daemon.log in the state directory: it is a symbolic link to"),
        "{err}"
    );
    assert!(err.contains("help: remove "), "{err}");
    std::fs::remove_file(dir.join("daemon.log")).unwrap();

    // The logs directory as a link to somewhere else.
    let elsewhere = env.dir().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::remove_dir_all(dir.join("logs")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("logs")).unwrap();
    env.fails(&["daemon", "run"], 6);
    std::fs::remove_file(dir.join("logs")).unwrap();

    // A file of another user where the state goes.
    std::fs::write(dir.join("state.json"), b"{}").unwrap();
    chown(dir.join("state.json"), Some(NOBODY), None).unwrap();
    let err = env.fails(&["get", "sessions"], 6);
    assert!(
        err.contains("state.json in the state directory: it belongs to another user"),
        "{err}"
    );
    std::fs::remove_file(dir.join("state.json")).unwrap();

    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
    // Cleaned up, the directory works again.
    env.ok(&["get", "sessions"]);
}

#[test]
fn a_socket_of_another_user_is_refused() {
    let env = Env::new();
    env.ok(&["get", "sessions"]);
    let socket = env.state_dir().join("marvel.sock");
    std::os::unix::fs::lchown(&socket, Some(NOBODY), None).unwrap();
    let _reclaim = Reclaim(&socket);
    let err = env.fails(&["get", "sessions"], 6);
    assert!(
        err.contains("marvel.sock in the state directory: it belongs to another user"),
        "{err}"
    );
}

/// Starts a process that listens on `socket` as `nobody`: the socket file
/// is made by root (so it looks like ours), then the process gives up root
/// before it listens, which is the identity a client sees.
fn listen_as_nobody(socket: &Path) -> std::process::Child {
    let path = CString::new(socket.as_os_str().as_encoded_bytes()).unwrap();
    let mut cmd = Command::new("sleep");
    cmd.arg("60");
    // SAFETY: only async-signal-safe system calls between fork and exec,
    // on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, s) in addr.sun_path.iter_mut().zip(path.as_bytes()) {
                *d = *s as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if fd < 0
                || libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len) != 0
                || libc::chmod(path.as_ptr(), 0o600) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
                || libc::listen(fd, 8) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start the impostor");
    let deadline = Instant::now() + DEADLINE;
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the impostor never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

#[test]
fn a_daemon_running_as_another_user_is_refused_before_anything_is_sent() {
    let env = Env::new();
    let dir = env.state_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = dir.join("marvel.sock");
    let mut impostor = listen_as_nobody(&socket);
    let out = env.run_within(&["inject", "w-0", "rm -rf ~", "--enter"], DEADLINE);
    let _ = impostor.kill();
    let _ = impostor.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains(&format!(
            "error: refusing the daemon on {}: its process (pid {}) runs as uid {NOBODY}, not as you (uid {})",
            socket.display(),
            impostor.id(),
            marvel::statedir::me()
        )),
        "{err}"
    );
}

/// A stand-in daemon that answers every request with `reply`.
fn fake_daemon(socket: &Path, reply: &'static str) {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut line = String::new();
            let _ = BufReader::new(&conn).read_line(&mut line);
            let _ = conn.write_all(reply.as_bytes());
        }
    });
}

#[test]
fn attach_runs_no_command_sent_over_the_socket() {
    let env = Env::new();
    let dir = env.state_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pwned = env.dir().join("pwned");
    let reply: &'static str = Box::leak(
        format!(
            "{{\"AttachArgv\":[\"sh\",\"-c\",\"touch {}\"]}}\n",
            pwned.display()
        )
        .into_boxed_str(),
    );
    fake_daemon(&dir.join("marvel.sock"), reply);
    // Inside tmux on the same server, attach needs no terminal of its own.
    let inside = format!(
        "{},1,0",
        marvel::substrate::tmux::socket_path(&env.socket).display()
    );
    let out = env
        .cmd(&["attach", "w-0"])
        .env("TMUX", &inside)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(!pwned.exists(), "attach ran a command line the daemon sent");

    // Data that does not look like a tmux session or pane is refused too.
    let env = Env::new();
    let dir = env.state_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let inside = format!(
        "{},1,0",
        marvel::substrate::tmux::socket_path(&env.socket).display()
    );
    fake_daemon(
        &dir.join("marvel.sock"),
        "{\"AttachTarget\":{\"tmux_session\":\"x\\u001b]52;c;eA==\\u0007\",\"pane\":\"%1\"}}\n",
    );
    let out = env
        .cmd(&["attach", "w-0"])
        .env("TMUX", &inside)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the daemon sent an invalid tmux session name")
            && err.contains("nothing was run"),
        "{err}"
    );
}

#[test]
fn attach_without_a_terminal_says_so_and_from_a_terminal_attaches() {
    let env = Env::new();
    start_team(&env, 1);
    let session = env.sessions()[0]["tmux_session"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env
        .cmd(&["attach", "squad/w-0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert_eq!(
        err,
        "error: attach needs a terminal, and its standard input is not one\nhelp: run it from a terminal (or from inside tmux); `marvel capture squad/w-0` prints what the pane shows\n"
    );

    // From a terminal (a pane of another tmux server) it attaches there.
    let outer = format!("{}-outer", env.socket);
    struct KillServer(String);
    impl Drop for KillServer {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-L", &self.0, "kill-server"])
                .output();
            let _ = std::fs::remove_file(marvel::substrate::tmux::socket_path(&self.0));
        }
    }
    let _outer = KillServer(outer.clone());
    let script = format!(
        "env -u TMUX MARVEL_HOME='{}' MARVEL_TMUX_SOCKET='{}' '{BIN}' attach squad/w-0; sleep 60",
        env.state_dir().display(),
        env.socket
    );
    let started = Command::new("tmux")
        .args([
            "-L",
            &outer,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            &script,
        ])
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    env.wait("a client attached to the session", |e| {
        let out = e.tmux(&["list-clients", "-F", "#{client_session}"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == session)
            .then_some(())
    });
}

#[test]
fn sigterm_stops_the_daemon_like_daemon_stop_and_the_panes_keep_running() {
    let env = Env::new();
    let panes = start_team(&env, 2);
    let pid = env.daemon_pid();
    signal(pid, libc::SIGTERM);
    env.wait("the daemon to exit", |_| (!alive(pid)).then_some(()));
    let log = std::fs::read_to_string(env.state_dir().join("daemon.log")).unwrap();
    assert!(
        log.contains("SIGTERM: stopping; panes keep running"),
        "{log}"
    );
    assert!(log.contains("stopped; panes keep running"), "{log}");
    assert!(!env.state_dir().join("marvel.sock").exists());
    assert_eq!(sorted_panes(&env), panes);
    // The next command starts a daemon that adopts them.
    assert_eq!(env.wait_running("t/squad/w", 2).len(), 2);
    assert_eq!(sorted_panes(&env), panes);
}

#[test]
fn daemon_stop_finds_a_daemon_whose_socket_was_removed() {
    let env = Env::new();
    let panes = start_team(&env, 2);
    let pid = env.daemon_pid();
    std::fs::remove_file(env.state_dir().join("marvel.sock")).unwrap();
    let out = env.ok(&["daemon", "stop"]);
    assert_eq!(out, "daemon stopping; panes keep running\n");
    assert!(!alive(pid), "the daemon must be gone when stop returns");
    assert_eq!(sorted_panes(&env), panes);
    assert_eq!(env.wait_running("t/squad/w", 2).len(), 2);
    assert_eq!(sorted_panes(&env), panes);
}

#[test]
fn with_its_lock_file_and_socket_removed_no_second_daemon_starts() {
    let env = Env::new();
    let panes = start_team(&env, 2);
    let pid = env.daemon_pid();
    let lock = env.state_dir().join("daemon.lock");
    std::fs::remove_file(&lock).unwrap();
    std::fs::remove_file(env.state_dir().join("marvel.sock")).unwrap();
    let out = env.run_within(&["daemon", "run"], DEADLINE);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.starts_with(&format!(
            "error: a daemon already runs for {} (pid {pid})",
            env.state_dir().display()
        )),
        "{err}"
    );
    // The daemon notices and writes its lock file again.
    env.wait("daemon.lock to be written again", |_| {
        let text = std::fs::read_to_string(&lock).ok()?;
        (text.trim() == pid.to_string()).then_some(())
    });
    assert!(alive(pid));
    assert_eq!(sorted_panes(&env), panes);
    env.ok(&["daemon", "stop"]);
    assert!(!alive(pid));
    assert_eq!(sorted_panes(&env), panes);
}

#[test]
fn a_started_daemon_keeps_none_of_its_starters_descriptors() {
    let env = Env::new();
    // The shell's pipe to `cat` is descriptor 3 of `marvel`: a daemon that
    // kept it would hold the pipeline open for as long as it runs.
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("( '{BIN}' get sessions 3>&1 >/dev/null ) | cat"))
        .env("MARVEL_HOME", env.state_dir())
        .env("MARVEL_TMUX_SOCKET", &env.socket)
        .env("NO_COLOR", "1")
        .env_remove("TMUX")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &env.env {
        sh.env(k, v);
    }
    let mut child = sh.spawn().unwrap();
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the pipeline is held open by the daemon\n{}", env.dump());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    // The daemon it started is still there.
    assert!(alive(env.daemon_pid()));
}
