//! `marvel top` in a real terminal, as a user runs it: a shell in a pane of
//! a private tmux server (its own socket, not the one the daemon's team
//! lives on) starts it, keys go in with `send-keys`, and the screen comes
//! back with `capture-pane`.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;

/// The terminal `top` runs in.
pub struct Term {
    socket: String,
}

impl Term {
    /// A 100×30 terminal running `sh`, with `env`'s environment: its
    /// daemon, tmux server and contexts.
    pub fn new(env: &Env) -> Term {
        let term = Term {
            socket: format!("{}-ui", env.socket),
        };
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &term.socket, "-f", "/dev/null"])
            .args(["new-session", "-d", "-x", "100", "-y", "30", "sh"])
            .env("MARVEL_HOME", env.state_dir())
            .env("MARVEL_TMUX_SOCKET", &env.socket)
            .env("MARVEL_CONFIG", env.dir().join("config"))
            .env_remove("MARVEL_CONTEXT")
            .env_remove("TMUX")
            .env_remove("NO_COLOR")
            .current_dir(env.dir());
        for (k, v) in &env.env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run tmux");
        assert!(out.status.success(), "tmux new-session: {out:?}");
        term
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p"]).stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend(keys);
        assert!(self.tmux(&args).status.success());
    }

    pub fn type_line(&self, text: &str) {
        assert!(self.tmux(&["send-keys", "-l", text]).status.success());
        self.keys(&["Enter"]);
    }

    fn format(&self, f: &str) -> String {
        let out = self.tmux(&["display-message", "-p", f]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Reads the screen until `check` holds, for at most `within`;
    /// returns the screen that passed.
    pub fn wait(
        &self,
        env: &Env,
        what: &str,
        within: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            if start.elapsed() > within {
                panic!(
                    "timed out after {within:?} waiting for {what}; the screen:\n{screen}\n{}",
                    env.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        let _ = std::fs::remove_file(marvel::substrate::tmux::socket_path(&self.socket));
    }
}

/// The table's row for `name` (a role or a session, as the tree shows it).
pub fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.starts_with("  ") && l.split_whitespace().next() == Some(name))
}

fn has_line(screen: &str, line: &str) -> bool {
    screen.lines().any(|l| l == line)
}

pub fn dashboard(screen: &str) -> bool {
    screen.lines().any(|l| l.starts_with("marvel top  daemon"))
}

fn team_file(env: &Env) -> String {
    let ok = env.dir().join("ok");
    let frozy = format!(
        "test -f '{}' || {{ echo not yet; exit 3; }}; exec sleep 600",
        ok.display()
    );
    env.manifest(
        "team.ron",
        &format!(
            r#"Team(name: "top", workspace: "t", roles: [
                Role(name: "shell", command: ["sh"],
                     backoff: (initial: "30s", max: "30s", jitter: 0.0)),
                Role(name: "frozy", command: ["sh", "-c", {frozy:?}], max_restarts: 0),
            ])"#
        ),
    )
}

#[test]
fn top_shows_a_crash_at_once_unfreezes_filters_and_gives_the_terminal_back() {
    let env = Env::new();
    env.ok(&["run", &team_file(&env)]);
    env.wait_running("t/top/shell", 1);
    env.wait("frozy to freeze", |e| {
        (e.role("t/top/frozy")["state"] == "frozen").then_some(())
    });

    let term = Term::new(&env);
    term.type_line("clear; echo BEFORE-TOP");
    term.wait(&env, "the shell", DEADLINE, |s| has_line(s, "BEFORE-TOP"));
    term.type_line(&format!("'{BIN}' top"));
    let screen = term.wait(&env, "the dashboard", DEADLINE, |s| {
        dashboard(s) && row(s, "shell-0").is_some_and(|r| r.contains("● running"))
    });
    assert!(
        row(&screen, "frozy-0").is_some_and(|r| r.contains("❄ frozen")),
        "{screen}"
    );
    assert_eq!(term.format("#{alternate_on}"), "1");

    // A crash shows within a second of the death.
    env.ok(&["inject", "shell-0", "exit 3", "--enter"]);
    term.wait(&env, "the crash", Duration::from_secs(1), |s| {
        row(s, "shell-0").is_some_and(|r| r.contains("◷ backoff"))
    });

    // `/` filters: only the frozen role is left in the table.
    term.keys(&["/"]);
    term.keys(&["-l", "frozy"]);
    term.keys(&["Enter"]);
    // (The filter applies as it is typed; the header names it once typed.)
    let screen = term.wait(&env, "the filter", DEADLINE, |s| {
        s.contains("filter: frozy (esc clears)")
    });
    assert!(row(&screen, "frozy-0").is_some(), "{screen}");
    assert!(row(&screen, "shell-0").is_none(), "{screen}");
    assert!(row(&screen, "shell").is_none(), "{screen}");

    // `r` on the frozen role (the filter selected it) resets it at once,
    // and its session comes back.
    std::fs::write(env.dir().join("ok"), "").unwrap();
    term.keys(&["r"]);
    term.wait(&env, "the reset", DEADLINE, |s| {
        s.contains("t/top/frozy: un-frozen, crash-loop history cleared")
            && row(s, "frozy-0").is_some_and(|r| r.contains("● running"))
    });
    env.wait("frozy to be ready", |e| {
        (e.role("t/top/frozy")["state"] == "ready").then_some(())
    });

    // `q` gives the terminal back as it was: the main screen with what
    // was on it, the cursor shown, the shell reading lines again.
    term.keys(&["q"]);
    // The shell is back once it shows its prompt after the command line:
    // text typed before would be echoed ahead of it.
    let screen = term.wait(&env, "the shell again", DEADLINE, |s| {
        !dashboard(s)
            && has_line(s, "BEFORE-TOP")
            && s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::trim_end)
                == Some("#")
    });
    assert!(!screen.contains("events"), "{screen}");
    assert_eq!(term.format("#{alternate_on} #{cursor_flag}"), "0 1");
    term.type_line("echo AFTER-$((40 + 2))");
    term.wait(&env, "the shell to answer", DEADLINE, |s| {
        s.contains(" echo AFTER-$((40 + 2))\nAFTER-42\n")
    });
}

#[test]
fn top_attaches_and_comes_back_and_follows_the_daemon_away_and_back() {
    let env = Env::new();
    env.ok(&["run", &team_file(&env)]);
    env.wait_running("t/top/shell", 1);
    let term = Term::new(&env);
    term.type_line(&format!("'{BIN}' top"));
    term.wait(&env, "the dashboard", DEADLINE, |s| {
        dashboard(s) && row(s, "shell-0").is_some_and(|r| r.contains("● running"))
    });

    // enter on the team row attaches to its first live session: the
    // terminal shows that pane, through a tmux client of the daemon's server.
    let pane = env.wait_running("t/top/shell", 1)[0]["pane"]
        .as_str()
        .unwrap()
        .to_string();
    term.keys(&["Enter"]);
    env.wait("a client on the session's pane", |e| {
        let out = e.tmux(&["list-clients", "-F", "#{session_name} #{pane_id}"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .any(|l| l == format!("t-top {pane}"))
            .then_some(())
    });
    term.type_line("echo typed-while-attached");
    env.wait("the line in the session's pane", |e| {
        e.ok(&["capture", "shell-0"])
            .contains("\ntyped-while-attached\n")
            .then_some(())
    });
    let clients = env.tmux(&["list-clients", "-F", "#{client_name}"]);
    for client in String::from_utf8_lossy(&clients.stdout).lines() {
        env.tmux(&["detach-client", "-t", client]);
    }
    let screen = term.wait(&env, "the dashboard again", DEADLINE, |s| {
        dashboard(s) && s.contains("back from t/top/shell-0")
    });
    assert!(!screen.contains("[detached"), "{screen}");

    // The daemon goes away: the header says so; it comes back: the
    // dashboard reconnects by itself.
    env.ok(&["daemon", "stop"]);
    term.wait(&env, "the daemon to be missed", DEADLINE, |s| {
        s.lines()
            .next()
            .is_some_and(|l| l.contains("✗ unreachable"))
    });
    env.ok(&["get", "sessions"]);
    term.wait(&env, "the reconnection", DEADLINE, |s| {
        s.lines().next().is_some_and(|l| l.contains("daemon ● up"))
            && row(s, "shell-0").is_some_and(|r| r.contains("● running"))
    });
    term.keys(&["q"]);
    term.wait(&env, "the shell again", DEADLINE, |s| !dashboard(s));
}

#[test]
fn top_without_a_terminal_says_so() {
    let env = Env::new();
    let err = env.fails(&["top"], 5);
    assert!(err.contains("error: top needs a terminal"), "{err}");
}
