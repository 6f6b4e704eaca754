//! A person at a terminal, attached to marvel's tmux server: a second,
//! private tmux server whose one pane runs a tmux client of marvel's
//! server (or `marvel attach`). What the person sees is read with
//! `capture-pane` on the viewer's server; whether they are still attached
//! is asked of marvel's server with `list-clients`.

use std::process::{Command, Output};
use std::time::Instant;

use super::{DEADLINE, Env};

/// Columns and rows of the viewer's terminal.
const WIDTH: &str = "160";
const HEIGHT: &str = "40";

pub struct Viewer {
    socket: String,
}

impl Viewer {
    /// A terminal running `tmux attach -t =SESSION` against `env`'s server.
    pub fn attach(env: &Env, tmux_session: &str) -> Viewer {
        let client = format!("exec tmux -L '{}' attach -t '={tmux_session}'", env.socket);
        Viewer::running(env, &client)
    }

    /// A terminal running `marvel attach KEY` for `env`.
    pub fn marvel_attach(env: &Env, key: &str) -> Viewer {
        let client = format!(
            "MARVEL_HOME='{}' MARVEL_TMUX_SOCKET='{}' exec '{}' attach '{key}'",
            env.state_dir().display(),
            env.socket,
            super::BIN
        );
        Viewer::running(env, &client)
    }

    /// A terminal whose shell runs `command` (outside any tmux: `TMUX` is
    /// unset, as in a terminal emulator).
    fn running(env: &Env, command: &str) -> Viewer {
        let viewer = Viewer {
            socket: format!("{}-viewer", env.socket),
        };
        // An ended client leaves its last words on the screen.
        let out = viewer.tmux(&[
            "-f",
            "/dev/null",
            "set-option",
            "-g",
            "remain-on-exit",
            "on",
            ";",
            "new-session",
            "-d",
            "-s",
            "view",
            "-x",
            WIDTH,
            "-y",
            HEIGHT,
            "env",
            "-u",
            "TMUX",
            "sh",
            "-c",
            command,
        ]);
        assert!(out.status.success(), "viewer: {out:?}");
        viewer
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// What the terminal shows now.
    pub fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-J", "-t", "view"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The clients of marvel's server: `session pane` of each.
    pub fn clients(env: &Env) -> Vec<String> {
        let out = env.tmux(&["list-clients", "-F", "#{session_name} #{pane_id}"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Fails the test unless this terminal is still attached: one client
    /// on marvel's server, and no word of an ended client on the screen.
    pub fn assert_attached(&self, env: &Env, when: &str) {
        let clients = Viewer::clients(env);
        let screen = self.screen();
        assert!(
            clients.len() == 1
                && !screen.contains("[exited]")
                && !screen.contains("[detached")
                && !screen.contains("[lost tty]")
                && !screen.contains("[server exited]"),
            "not attached {when}: clients {clients:?}\n{screen}\n{}",
            env.dump()
        );
    }

    /// Waits until the terminal shows what `check` looks for; returns the
    /// screen.
    pub fn wait(&self, env: &Env, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {DEADLINE:?} waiting for the viewer to show {what}\n---- viewer\n{screen}\n{}",
                    env.dump()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        let _ = std::fs::remove_file(marvel::substrate::tmux::socket_path(&self.socket));
    }
}
