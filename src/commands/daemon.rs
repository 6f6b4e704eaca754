//! `marvel daemon run|stop|install|uninstall|dial-stdio`: the daemon in the
//! foreground (for systemd units and debugging), stopping it (never the
//! panes), the systemd user unit that starts it at boot, and the relay ssh
//! contexts reach it through. These act on this host's daemon, whatever the
//! context.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Subcommand;

use crate::client;
use crate::commands::{Ctx, unexpected};
use crate::daemon;
use crate::error::{Error, Result, exit};
use crate::lock;
use crate::paths::Target;
use crate::proto::{Request, Response};
use crate::statedir;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Run the daemon in the foreground until stopped
    #[command(after_help = "\
Other commands start a daemon in the background when none runs; use this in
a systemd unit or to watch its log on the terminal. One daemon runs per state
directory: a second one refuses to start.")]
    Run,
    /// Stop the daemon; the panes it supervises keep running
    #[command(after_help = "\
The next command that needs the daemon starts a new one, which adopts the
panes that are still alive and records the ones that died meanwhile. A
daemon whose socket was removed is found through its lock and sent SIGTERM,
which it takes as the same request.")]
    Stop,
    /// Write a systemd user unit that runs the daemon at boot
    #[command(after_help = "\
Writes ~/.config/systemd/user/marvel.service (under $XDG_CONFIG_HOME when
set), which runs `marvel daemon run` for this state directory and tmux
server, and says how to enable it. With it enabled, and lingering on for
your user, teams come back after a reboot with no command typed. Stopping
the unit stops the daemon only: the panes keep running.")]
    Install {
        /// Print the unit instead of writing it
        #[arg(long)]
        print: bool,
    },
    /// Remove the systemd user unit that `daemon install` wrote
    Uninstall,
    /// Relay the daemon's protocol over standard input and output (what an ssh context runs)
    #[command(after_help = "\
Another host runs this over ssh (ssh HOST marvel daemon dial-stdio) to reach
this host's daemon, started first if none runs, with the same checks as any
command. It writes one greeting line (its version and protocol) and then
relays bytes until either side ends. It is not meant to be typed.")]
    DialStdio {
        /// Do not start a daemon when none runs (say so in the greeting)
        #[arg(long)]
        no_start: bool,
    },
}

/// The unit's file name.
const UNIT: &str = "marvel.service";

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    let target = ctx.local()?;
    match args.action {
        Action::Run => daemon::run_foreground(&target)?,
        Action::Stop => stop(&target, ctx)?,
        Action::Install { print } => {
            let exe = std::env::current_exe()
                .map_err(|e| Error::other(format!("cannot find the marvel binary: {e}")))?;
            let text = unit_text(&exe, &target);
            if print {
                ctx.out.print_raw(text.as_bytes())?;
                return Ok(exit::OK);
            }
            let path = unit_path()?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
            }
            std::fs::write(&path, text).map_err(|e| Error::io(&path, &e))?;
            ctx.out.print(&format!(
                "wrote {}\nenable and start it:   systemctl --user daemon-reload && systemctl --user enable --now marvel\nkeep it after logout: loginctl enable-linger $USER",
                path.display()
            ))?;
        }
        Action::Uninstall => {
            let path = unit_path()?;
            match std::fs::remove_file(&path) {
                Ok(()) => ctx.out.print(&format!(
                    "removed {}\nif it was enabled: systemctl --user disable --now marvel && systemctl --user daemon-reload",
                    path.display()
                ))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    ctx.out.print(&format!("no unit at {}; nothing to remove", path.display()))?
                }
                Err(e) => return Err(Error::io(&path, &e)),
            }
        }
        Action::DialStdio { no_start } => return client::dial::serve(&target, !no_start),
    }
    Ok(exit::OK)
}

/// Where the systemd user unit goes: `$XDG_CONFIG_HOME/systemd/user/`.
fn unit_path() -> Result<PathBuf> {
    let base = directories::BaseDirs::new()
        .ok_or_else(|| Error::other("cannot find a home directory for the systemd unit"))?;
    Ok(base.config_dir().join("systemd/user").join(UNIT))
}

/// A value as systemd reads it in `ExecStart=` and `Environment=`: in
/// double quotes when it has anything but plain characters.
fn systemd_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-=:@+,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('%', "%%")
        )
    }
}

/// The unit: the daemon in the foreground for this state directory and
/// tmux server. `KillMode=process`: stopping the unit signals the daemon
/// alone, never the tmux server and the agents that live in its cgroup.
fn unit_text(exe: &Path, target: &Target) -> String {
    let mut env = vec![format!(
        "{}={}",
        crate::paths::HOME_ENV,
        target.paths.root.display()
    )];
    if let Some(sock) = &target.tmux_socket {
        env.push(format!("{}={sock}", crate::paths::TMUX_SOCKET_ENV));
    }
    let env: String = env
        .iter()
        .map(|e| format!("Environment={}\n", systemd_quote(e)))
        .collect();
    format!(
        "\
# Written by `marvel daemon install`; `marvel daemon uninstall` removes it.
[Unit]
Description=marvel: keeps teams of terminal programs alive as tmux panes

[Service]
Type=simple
ExecStart={} daemon run
{env}Restart=on-failure
RestartSec=2s
KillMode=process

[Install]
WantedBy=default.target
",
        systemd_quote(&exe.display().to_string())
    )
}

/// How long `stop` waits for the daemon to be gone. It finishes the tmux
/// calls under way first, each bounded by the tmux timeout.
const EXIT_DEADLINE: Duration = Duration::from_secs(15);

/// Asks the daemon to stop over its socket; when no socket answers, finds
/// it through its lock and sends it SIGTERM, which it takes as the same
/// request. Then waits until it has released its lock: it is gone, and a
/// new one can start at once.
fn stop(target: &Target, ctx: &Ctx) -> Result<()> {
    let message = match client::local::call_running(target, Request::Stop) {
        Ok(Some(Response::Done(message))) => message,
        Ok(Some(other)) => return Err(unexpected(&other)),
        // A daemon of this version always stops when asked; one that
        // refuses speaks another protocol (it predates an upgrade).
        Err(Error::Refused { message, help }) => {
            match terminate(target, ctx, &format!("is of another version ({message})"))? {
                Some(message) => message,
                None => return Err(Error::Refused { message, help }),
            }
        }
        Err(e) => return Err(e),
        Ok(None) => {
            if statedir::check(&target.paths)?.is_none() {
                return ctx.out.print("no daemon was running");
            }
            let why = format!("does not answer on {}", target.paths.socket().display());
            match terminate(target, ctx, &why)? {
                Some(message) => message,
                None => return ctx.out.print("no daemon was running"),
            }
        }
    };
    if !lock::wait_released(&target.paths, Instant::now() + EXIT_DEADLINE)? {
        ctx.out.note(&format!(
            "the daemon is still finishing its tmux calls after {} s",
            EXIT_DEADLINE.as_secs()
        ));
    }
    ctx.out.print(&message)
}

/// Ends the daemon holding the state directory's lock with SIGTERM,
/// saying `why` it was not asked; `None` when no daemon holds it.
fn terminate(target: &Target, ctx: &Ctx, why: &str) -> Result<Option<String>> {
    match lock::terminate(&target.paths)? {
        Some(pid) => {
            ctx.out
                .note(&format!("the daemon (pid {pid}) {why}: sent it SIGTERM"));
            Ok(Some("daemon stopping; panes keep running".to_string()))
        }
        None if lock::is_held(&target.paths)? => Err(Error::daemon(format!(
            "a process holds the lock of {} but cannot be identified as a daemon; see {}",
            target.paths.root.display(),
            target.paths.lock().display()
        ))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Paths;

    fn target(root: &str, sock: Option<&str>) -> Target {
        Target {
            paths: Paths { root: root.into() },
            tmux_socket: sock.map(str::to_string),
        }
    }

    #[test]
    fn the_unit_runs_the_daemon_for_this_state_dir_and_signals_it_alone() {
        let text = unit_text(
            Path::new("/usr/local/bin/marvel"),
            &target("/home/u/.local/share/marvel", None),
        );
        assert!(
            text.contains("\nExecStart=/usr/local/bin/marvel daemon run\n"),
            "{text}"
        );
        assert!(text.contains("\nEnvironment=MARVEL_HOME=/home/u/.local/share/marvel\n"));
        assert!(
            text.contains("\nKillMode=process\n"),
            "panes outlive a stop"
        );
        assert!(text.contains("\nWantedBy=default.target\n"));
        assert!(!text.contains("MARVEL_TMUX_SOCKET"));
    }

    #[test]
    fn odd_paths_are_quoted_as_systemd_reads_them() {
        let text = unit_text(
            Path::new("/opt/my tools/marvel"),
            &target("/srv/state 100%", Some("team")),
        );
        assert!(
            text.contains("ExecStart=\"/opt/my tools/marvel\" daemon run\n"),
            "{text}"
        );
        assert!(
            text.contains("Environment=\"MARVEL_HOME=/srv/state 100%%\"\n"),
            "{text}"
        );
        assert!(text.contains("Environment=MARVEL_TMUX_SOCKET=team\n"));
    }
}
