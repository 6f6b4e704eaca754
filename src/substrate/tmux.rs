//! The real substrate: tmux commands built with `tmux_interface`, run as
//! child processes with stdin closed, output captured and a hard deadline.
//! It never touches a session it was not asked about by name or pane id.

use std::borrow::Cow;
use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;

use rustix::event::{PollFd, PollFlags};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ti::{TmuxCommand, TmuxCommands};
use tmux_interface as ti;

use super::watch::{self, PANE_HOOKS, SESSION_HOOKS};
use super::{
    Decoration, Notify, Observation, PaneInfo, Place, SpawnRequest, Spawned, SubResult, Substrate,
    SubstrateError, WindowRef,
};

/// Environment variable naming the tmux server (`tmux -L NAME`) marvel uses.
pub const SOCKET_ENV: &str = "MARVEL_TMUX_SOCKET";
/// Set by tmux in its panes: the socket, server pid and session of the
/// client's server (how a command knows it runs inside tmux).
pub const TMUX_ENV: &str = "TMUX";
/// Each session's output log rotates at this size, so it never exceeds twice
/// this on disk.
pub const LOG_MAX_BYTES: u64 = 1 << 20;
/// Size of every new session's window. Detached sessions default to 80x24,
/// which wraps most programs' output long before a person attaches.
const WIDTH: usize = 200;
const HEIGHT: usize = 50;
/// The tmux client sends a whole command sequence to the server in one
/// message of at most 16 KiB (`MAX_IMSGSIZE`), and refuses a longer one
/// with "command too long". Chained spawns stay under this many bytes of
/// arguments (each counted with its NUL), leaving room for the header.
const COMMAND_BYTES: usize = 16_000;
/// At most this many sessions per chained invocation, so one call does not
/// hold the server for long.
const BATCH_SESSIONS: usize = 50;
/// Extra time a chained spawn gets per session on top of the base timeout.
const PER_SPAWN_ALLOWANCE: Duration = Duration::from_millis(20);

/// `list-panes` format. Free-text fields come last and the session name is
/// the very last, so a foreign session name containing a tab cannot shift
/// the fields before it.
const LIST_FORMAT: &str = "#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_dead_signal}\t#{window_id}\t#{pid}\t#{@marvel-uid}\t#{@marvel-key}\t#{@marvel-team}\t#{@marvel}\t#{session_name}";
/// What each spawned pane prints once all its commands have run.
const SPAWNED_FORMAT: &str = "#{pane_id} #{pane_pid} #{window_id} #{pid}";
/// A window's name and marvel's word on it, in the status line.
const WINDOW_STATUS: &str =
    "#I:#W#{?#{@marvel-status}, #{@marvel-status},}#{?window_flags,#{window_flags},}";

/// A tmux server reached through the `tmux` binary.
#[derive(Debug, Clone)]
pub struct Tmux {
    binary: PathBuf,
    socket_name: Option<String>,
    config: Option<PathBuf>,
    /// The marvel binary that `pipe-pane` runs as the log writer.
    marvel_bin: Option<PathBuf>,
    timeout: Duration,
    /// How to tell the running watch that the server has new panes.
    pub(super) poke: watch::Poke,
}

impl Tmux {
    /// `socket_name` is a `tmux -L` name; `None` is the user's default
    /// server. Every call is bounded by `timeout`.
    pub fn new(socket_name: Option<String>, timeout: Duration) -> Tmux {
        Tmux {
            binary: PathBuf::from("tmux"),
            socket_name: socket_name.filter(|s| !s.is_empty()),
            config: None,
            marvel_bin: None,
            timeout,
            poke: watch::Poke::default(),
        }
    }

    /// The server named by `MARVEL_TMUX_SOCKET`, else the default one.
    pub fn from_env(timeout: Duration) -> Tmux {
        Tmux::new(std::env::var(SOCKET_ENV).ok(), timeout)
    }

    /// Runs this tmux binary instead of `tmux` from `PATH`.
    pub fn with_binary(mut self, binary: impl Into<PathBuf>) -> Tmux {
        self.binary = binary.into();
        self
    }

    /// Starts the server with this configuration file (`tmux -f`); tests use
    /// `/dev/null` so a personal `~/.tmux.conf` cannot change behaviour.
    pub fn with_config(mut self, config: impl Into<PathBuf>) -> Tmux {
        self.config = Some(config.into());
        self
    }

    /// The marvel binary whose `logpipe` subcommand writes session logs;
    /// defaults to the running executable.
    pub fn with_marvel_bin(mut self, bin: impl Into<PathBuf>) -> Tmux {
        self.marvel_bin = Some(bin.into());
        self
    }

    pub fn socket_name(&self) -> Option<&str> {
        self.socket_name.as_deref()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a process whose `$TMUX` is `tmux_env` is a client of this
    /// server, in which case `switch_argv` applies rather than `attach_argv`.
    pub fn is_client_of(&self, tmux_env: Option<&str>) -> bool {
        let Some(env) = tmux_env.filter(|e| !e.is_empty()) else {
            return false;
        };
        match &self.socket_name {
            // Without -L, tmux itself picks the server named by $TMUX.
            None => true,
            Some(name) => {
                let socket = env.split(',').next().unwrap_or("");
                Path::new(socket) == socket_path(name)
            }
        }
    }

    /// The pid of the server process.
    pub fn server_pid(&self) -> SubResult<u32> {
        let cmd = ti::DisplayMessage::new().print().message("#{pid}").build();
        let out = self.run(&[cmd], self.timeout)?;
        out.trim()
            .parse()
            .map_err(|_| SubstrateError::Refused(format!("unexpected server pid {:?}", out.trim())))
    }

    /// Stops the whole server and every pane in it. Absent is success.
    pub fn kill_server(&self) -> SubResult<()> {
        match self.run(&[ti::KillServer::new().build()], self.timeout) {
            Ok(_) | Err(SubstrateError::NoServer(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A client that blocks until `channel` is signalled (`wait-for`).
    pub(super) fn wait_for_command(&self, channel: &str) -> Command {
        let cmd = ti::WaitFor::new().channel(channel.to_string()).build();
        self.command(&[cmd])
    }

    /// The `tmux` invocation for a command sequence whose output marvel
    /// reads, as a ready `Command`.
    fn command(&self, cmds: &[TmuxCommand<'_>]) -> Command {
        // `-u`: without a UTF-8 locale (a daemon started by cron, a bare
        // systemd unit or over ssh) tmux prints every tab in a `-F` format
        // as `_`, and no listed pane could be parsed: each would look gone.
        self.invocation(cmds, true)
    }

    /// The `tmux` invocation for a command sequence; `utf8` forces UTF-8
    /// output (not for a client on the user's terminal, whose locale rules).
    fn invocation(&self, cmds: &[TmuxCommand<'_>], utf8: bool) -> Command {
        let mut t = ti::Tmux::new();
        if utf8 {
            t = t.force_utf8();
        }
        if let Some(name) = &self.socket_name {
            t = t.socket_name(name.as_str());
        }
        if let Some(config) = &self.config {
            t = t.file(config.to_string_lossy().into_owned());
        }
        if !cmds.is_empty() {
            let mut seq = TmuxCommands::new();
            for c in cmds {
                seq.push(escape_separators(c.clone()));
            }
            t = t.commands(seq);
        }
        self.finish(t)
    }

    fn finish(&self, t: ti::Tmux<'_>) -> Command {
        let mut built = t.build();
        built.name(self.binary.to_string_lossy().into_owned());
        let mut cmd = Command::from(&built);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs one command sequence and returns its stdout.
    fn run(&self, cmds: &[TmuxCommand<'_>], timeout: Duration) -> SubResult<String> {
        let out = self.exec(self.command(cmds), timeout)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(classify_failure(&out))
        }
    }

    /// [`Tmux::run`], with `input` on tmux's standard input (written by a
    /// thread of its own, so a tmux that does not read cannot hold up the
    /// deadline).
    fn run_with_input(
        &self,
        cmds: &[TmuxCommand<'_>],
        input: &[u8],
        timeout: Duration,
    ) -> SubResult<String> {
        let mut cmd = self.command(cmds);
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::PermissionDenied => {
                SubstrateError::Missing(format!("{}: {e}", self.binary.display()))
            }
            _ => SubstrateError::Unreachable(format!("cannot run {}: {e}", self.binary.display())),
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            let input = input.to_vec();
            let _ = std::thread::Builder::new()
                .name("marvel-tmux-input".into())
                .spawn(move || {
                    use std::io::Write;
                    let _ = stdin.write_all(&input);
                });
        }
        let out = collect(child, timeout)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(classify_failure(&out))
        }
    }

    /// Spawns `cmd` and collects its output, killing it at the deadline.
    fn exec(&self, mut cmd: Command, timeout: Duration) -> SubResult<RawOutput> {
        let child = cmd.spawn().map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::PermissionDenied => {
                SubstrateError::Missing(format!("{}: {e}", self.binary.display()))
            }
            _ => SubstrateError::Unreachable(format!("cannot run {}: {e}", self.binary.display())),
        })?;
        collect(child, timeout)
    }

    /// The commands that place one pane and start its program; the last
    /// one prints the pane, so a line of output means every command of the
    /// group succeeded.
    fn spawn_commands(&self, req: &SpawnRequest) -> SubResult<Vec<TmuxCommand<'static>>> {
        check_text("owner tag", &req.owner)?;
        check_text("session key", &req.key)?;
        check_name("window name", &req.window_name)?;
        if req.argv.is_empty() {
            return Err(SubstrateError::Refused(format!(
                "empty command for {}",
                req.key
            )));
        }
        // The placement, and how the commands after it find the new pane.
        let (mut place, target) = match &req.place {
            Place::NewSession { session, .. } => {
                check_name("session name", session)?;
                let mut c = TmuxCommand::new();
                c.name("new-session");
                c.push_flag("-d");
                c.push_option("-s", session.clone());
                c.push_option("-n", req.window_name.clone());
                c.push_option("-x", WIDTH.to_string());
                c.push_option("-y", HEIGHT.to_string());
                (c, format!("={session}:={}", req.window_name))
            }
            Place::NewWindow { session, after } => {
                check_name("session name", session)?;
                let mut c = TmuxCommand::new();
                c.name("new-window");
                c.push_flag("-d");
                match after {
                    Some(WindowRef::Id(window)) => {
                        c.push_flag("-a");
                        c.push_option("-t", target_window(window)?.to_string());
                    }
                    Some(WindowRef::Name(name)) => {
                        check_name("window name", name)?;
                        c.push_flag("-a");
                        c.push_option("-t", format!("={session}:={name}"));
                    }
                    None => {
                        c.push_option("-t", exact_session(session));
                    }
                }
                c.push_option("-n", req.window_name.clone());
                (c, format!("={session}:={}", req.window_name))
            }
            Place::Split { window, .. } => {
                let window = target_window(window)?;
                let mut c = TmuxCommand::new();
                c.name("split-window");
                c.push_option("-t", window.to_string());
                // The new pane is the window's active one from now on.
                (c, window.to_string())
            }
            Place::Respawn { pane } => {
                let pane = Self::target_pane(pane)?;
                let mut c = TmuxCommand::new();
                c.name("respawn-pane");
                c.push_flag("-k");
                c.push_option("-t", pane.to_string());
                (c, pane.to_string())
            }
        };
        if let Some(cwd) = &req.cwd {
            // tmux expands formats in -c, so a literal '#' must be doubled.
            place.push_option("-c", escape_format(&cwd.to_string_lossy()));
        }
        for (k, v) in &req.env {
            place.push_option("-e", format!("{k}={v}"));
        }
        place.push_param("--");
        if req.argv.len() == 1 {
            // tmux hands a single word to `sh -c`; several words are exec'd
            // directly. Quote a lone word so it stays one program name.
            place.push_param(format!("exec {}", sh_quote(&req.argv[0])));
        } else {
            for a in &req.argv {
                place.push_param(a.clone());
            }
        }
        let pane_option = |name: &str, value: String| {
            let mut c = TmuxCommand::new();
            c.name("set-option");
            c.push_flag("-p");
            c.push_option("-t", target.clone());
            c.push_param(name.to_string());
            c.push_param(value);
            c
        };
        let window_option = |name: &str, value: String| {
            let mut c = TmuxCommand::new();
            c.name("set-option");
            c.push_flag("-w");
            c.push_option("-t", target.clone());
            c.push_param(name.to_string());
            c.push_param(value);
            c
        };
        let mut cmds = vec![
            place,
            pane_option("@marvel-uid", req.uid.to_string()),
            window_option("@marvel-status", req.status.clone()),
        ];
        // A respawned pane keeps its options and its window's: a restart
        // sets only what changed (each option set costs the tmux server a
        // little memory for good, and every restart would pay it again).
        if !matches!(req.place, Place::Respawn { .. }) {
            cmds.extend([
                pane_option("@marvel", req.owner.clone()),
                pane_option("@marvel-key", req.key.clone()),
                // The shim stays in the pane of a program that ended; should
                // it be killed, the pane still stays with the program's last
                // screen.
                pane_option("remain-on-exit", "on".into()),
                window_option("window-status-format", WINDOW_STATUS.into()),
                window_option("window-status-current-format", WINDOW_STATUS.into()),
                // A window made with a name (`-n`) has `automatic-rename`
                // off already, and `allow-rename` is off unless a
                // configuration turned it on: each option set costs the
                // tmux server a pass over every window, so neither is set
                // where it already holds.
                only_if(
                    "#{allow-rename}",
                    &format!("set-option -w -t {} allow-rename off", tmux_quote(&target)),
                    &target,
                ),
            ]);
        }
        // What wakes the daemon's watch: the window's panes ending (set on
        // each new window, which its later panes and programs share) and,
        // on a new team session, its windows going or panes being killed.
        let hook = |scope: Option<&str>, name: &str| {
            let mut c = TmuxCommand::new();
            c.name("set-hook");
            if let Some(flag) = scope {
                c.push_flag(flag.to_string());
            }
            c.push_option("-t", target.clone());
            c.push_param(name.to_string());
            c.push_param(watch::hook_command(&req.owner));
            c
        };
        if matches!(
            req.place,
            Place::NewSession { .. } | Place::NewWindow { .. }
        ) {
            cmds.extend(PANE_HOOKS.iter().map(|h| hook(Some("-w"), h)));
        }
        if matches!(req.place, Place::NewSession { .. }) {
            cmds.extend(SESSION_HOOKS.iter().map(|h| hook(None, h)));
        }
        if let Place::NewSession {
            session,
            team,
            status_left,
        } = &req.place
        {
            let session_option = |name: &str, value: String| {
                let mut c = TmuxCommand::new();
                c.name("set-option");
                c.push_option("-t", exact_session(session));
                c.push_param(name.to_string());
                c.push_param(value);
                c
            };
            check_text("team", team)?;
            check_text("status line", status_left)?;
            cmds.extend([
                session_option("@marvel-team", team.clone()),
                session_option("status-left", escape_format(status_left)),
                session_option("status-left-length", "60".into()),
            ]);
        }
        if let Place::Split {
            window,
            tiled: true,
        } = &req.place
        {
            let mut c = TmuxCommand::new();
            c.name("select-layout");
            c.push_option("-t", target_window(window)?.to_string());
            c.push_param("tiled");
            cmds.push(c);
        }
        if let Some(log) = &req.log {
            let bin = match &self.marvel_bin {
                Some(b) => b.clone(),
                None => std::env::current_exe().map_err(|e| {
                    SubstrateError::Refused(format!("cannot locate the marvel binary: {e}"))
                })?,
            };
            let reports = req.reports.as_ref().map_or_else(String::new, |r| {
                format!(
                    " --uid {} --state-dir {} --quiet-ms {}",
                    req.uid,
                    sh_quote(&r.state_dir.to_string_lossy()),
                    r.quiet.as_millis()
                )
            });
            let shell = format!(
                "exec {} logpipe --to-shim --max-bytes {}{reports} {}",
                sh_quote(&bin.to_string_lossy()),
                LOG_MAX_BYTES,
                sh_quote(&log.to_string_lossy())
            );
            // tmux_interface names pipe-pane's -O flag `stdin`. A new pipe
            // replaces the one of the pane's previous program.
            cmds.push(
                ti::PipePane::new()
                    .stdin()
                    .target_pane(target.clone())
                    .shell_command(escape_format(&shell))
                    .build(),
            );
        }
        cmds.push(
            ti::DisplayMessage::new()
                .print()
                .target_pane(target)
                .message(SPAWNED_FORMAT)
                .build(),
        );
        Ok(cmds)
    }

    /// Runs one chained batch. Returns how many sessions were confirmed,
    /// in order, and the error that stopped the chain, if any.
    fn spawn_batch(
        &self,
        batch: &[(usize, Vec<TmuxCommand<'static>>, usize)],
    ) -> (Vec<Spawned>, Option<SubstrateError>) {
        // Keep the server up when its last session ends: a server that
        // exits on its own would look exactly like one that was killed,
        // and its restart would reuse pane ids from `%0`.
        let keep_server = ti::SetOption::new()
            .server()
            .option("exit-empty")
            .value("off")
            .build();
        let cmds: Vec<TmuxCommand<'static>> = std::iter::once(keep_server)
            .chain(batch.iter().flat_map(|(_, c, _)| c.iter().cloned()))
            .collect();
        let timeout = self.timeout + PER_SPAWN_ALLOWANCE * batch.len() as u32;
        let out = match self.exec(self.command(&cmds), timeout) {
            Ok(out) => out,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut spawned = Vec::new();
        for line in out.stdout.lines() {
            match parse_spawned(line) {
                Some(s) => spawned.push(s),
                None => {
                    let err = SubstrateError::Refused(format!("unexpected tmux output {line:?}"));
                    return (spawned, Some(err));
                }
            }
        }
        if !out.status.success() {
            return (spawned, Some(classify_failure(&out)));
        }
        if spawned.len() < batch.len() {
            let err = SubstrateError::Refused("tmux reported no pane for the session".into());
            return (spawned, Some(err));
        }
        (spawned, None)
    }

    fn target_pane(pane: &str) -> SubResult<&str> {
        let digits = pane.strip_prefix('%').unwrap_or("");
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            // Anything else would be resolved by tmux as a session or window
            // name and could hit a session marvel does not own.
            return Err(SubstrateError::Refused(format!(
                "not a tmux pane id: {pane:?}"
            )));
        }
        Ok(pane)
    }
}

impl Substrate for Tmux {
    fn version(&self) -> SubResult<String> {
        let out = self.exec(self.finish(ti::Tmux::new().version()), self.timeout)?;
        if !out.status.success() {
            return Err(classify_failure(&out));
        }
        Ok(out.stdout.trim().to_string())
    }

    fn spawn(&self, req: &SpawnRequest) -> SubResult<Spawned> {
        self.spawn_many(std::slice::from_ref(req))
            .pop()
            .unwrap_or_else(|| Err(SubstrateError::Refused("no result".into())))
    }

    /// Chains the requests into as few tmux invocations as possible. When a
    /// session fails, the ones before it stand, it gets the error, and the
    /// rest are retried in a new invocation. A timeout, a missing binary or
    /// an unreachable server fails every request not yet confirmed; after a
    /// timeout some of them may exist all the same (`list` shows them with
    /// their owner tag).
    fn spawn_many(&self, reqs: &[SpawnRequest]) -> Vec<SubResult<Spawned>> {
        let mut results: Vec<Option<SubResult<Spawned>>> = vec![None; reqs.len()];
        // Each request's commands and their size in the command message.
        let mut pending: Vec<(usize, Vec<TmuxCommand<'static>>, usize)> = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            match self.spawn_commands(req) {
                Ok(cmds) => {
                    let size = command_bytes(&cmds);
                    if size > COMMAND_BYTES {
                        results[i] = Some(Err(SubstrateError::Refused(format!(
                            "command too long for tmux: {size} bytes of arguments, at most {COMMAND_BYTES}"
                        ))));
                    } else {
                        pending.push((i, cmds, size));
                    }
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut next = 0;
        while next < pending.len() {
            let mut end = next;
            let mut bytes = 0;
            while end < pending.len()
                && end - next < BATCH_SESSIONS
                && bytes + pending[end].2 <= COMMAND_BYTES
            {
                // Each further session adds its `;` separator.
                bytes += pending[end].2 + 2;
                end += 1;
            }
            let batch = &pending[next..end];
            let (spawned, err) = self.spawn_batch(batch);
            let confirmed = spawned.len();
            for (s, (i, _, _)) in spawned.into_iter().zip(batch) {
                results[*i] = Some(Ok(s));
            }
            match err {
                None => next = end,
                // What a group that failed after its placement made is one
                // of marvel's panes that no session owns: the next listing
                // removes it.
                Some(e @ SubstrateError::Refused(_)) if confirmed < batch.len() => {
                    let i = batch[confirmed].0;
                    results[i] = Some(Err(e));
                    next += confirmed + 1;
                }
                Some(e) => {
                    for (i, _, _) in &pending[next + confirmed..] {
                        results[*i] = Some(Err(e.clone()));
                    }
                    break;
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(SubstrateError::Refused("not attempted".into()))))
            .collect()
    }

    fn kill(&self, pane: &str) -> SubResult<()> {
        let pane = Self::target_pane(pane)?;
        let cmd = ti::KillPane::new().target_pane(pane.to_string()).build();
        match self.run(&[cmd], self.timeout) {
            Ok(_) | Err(SubstrateError::NoServer(_)) => Ok(()),
            Err(SubstrateError::Refused(m)) if is_absent(&m) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn decorate(&self, decorations: &[Decoration]) -> SubResult<()> {
        let commands = |d: &Decoration| -> SubResult<TmuxCommand<'static>> {
            check_text("window status", &d.status)?;
            let mut status = TmuxCommand::new();
            status.name("set-option");
            status.push_flag("-w");
            status.push_option("-t", target_window(&d.window)?.to_string());
            status.push_param("@marvel-status");
            // A user option's value is shown as it is, never expanded.
            status.push_param(d.status.clone());
            Ok(status)
        };
        let all = decorations
            .iter()
            .map(commands)
            .collect::<SubResult<Vec<_>>>()?;
        // A role of hundreds of windows is more than one command message.
        for batch in batches(&all, COMMAND_BYTES) {
            match self.run(batch, self.timeout) {
                Ok(_) => {}
                // A window that went meanwhile stops the chain: the others
                // are set one by one, skipping those gone.
                Err(SubstrateError::Refused(m)) if is_absent(&m) => {
                    for cmd in batch {
                        match self.run(std::slice::from_ref(cmd), self.timeout) {
                            Ok(_) => {}
                            Err(SubstrateError::Refused(m)) if is_absent(&m) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn list(&self) -> SubResult<Observation> {
        let cmd = ti::ListPanes::new().all().format(LIST_FORMAT).build();
        match self.run(&[cmd], self.timeout) {
            Ok(out) => Ok(Observation::Panes(parse_list(&out))),
            Err(SubstrateError::NoServer(_)) => Ok(Observation::NoServer),
            // What `list-panes -a` says when the server has no session at
            // all (for instance while it exits after its last one closed).
            Err(SubstrateError::Refused(m)) if m == "no current target" => {
                Ok(Observation::Panes(Vec::new()))
            }
            Err(e) => Err(e),
        }
    }

    fn capture(&self, pane: &str, history: u32) -> SubResult<String> {
        let pane = Self::target_pane(pane)?;
        let start = if history == 0 {
            "0".to_string()
        } else {
            format!("-{history}")
        };
        let cmd = ti::CapturePane::new()
            .stdout()
            .join()
            .start_line(start)
            .target_pane(pane.to_string())
            .build();
        let out = self.run(&[cmd], self.timeout)?;
        // The screen's unused rows come back as empty lines; drop them.
        let text = out.trim_start_matches('\n').trim_end();
        Ok(if text.is_empty() {
            String::new()
        } else {
            format!("{text}\n")
        })
    }

    fn send_text(&self, pane: &str, text: &str, enter: bool) -> SubResult<()> {
        let pane = Self::target_pane(pane)?;
        // `--` keeps text that starts with '-' from being read as flags.
        let mut cmds = vec![
            ti::SendKeys::new()
                .disable_lookup()
                .target_pane(pane.to_string())
                .key("--")
                .key(text.to_string())
                .build(),
        ];
        if enter {
            cmds.push(
                ti::SendKeys::new()
                    .target_pane(pane.to_string())
                    .key("Enter")
                    .build(),
            );
        }
        self.run(&cmds, self.timeout).map(|_| ())
    }

    fn paste(&self, pane: &str, text: &str, enter: bool) -> SubResult<()> {
        let pane = Self::target_pane(pane)?;
        let buffer = paste_buffer_name();
        // The text reaches tmux on its standard input (`load-buffer -`),
        // so it is never part of a command and tmux's 16 KiB message limit
        // does not cut it: one paste, however long.
        let mut load = TmuxCommand::new();
        load.name("load-buffer");
        load.push_option("-b", buffer.clone());
        load.push_param("-");
        // -d deletes the buffer once pasted; -p brackets the paste when the
        // program asked for bracketed paste.
        let mut paste = TmuxCommand::new();
        paste.name("paste-buffer");
        paste.push_flag("-d");
        paste.push_flag("-p");
        paste.push_option("-b", buffer.clone());
        paste.push_option("-t", pane.to_string());
        let mut cmds = vec![load, paste];
        if enter {
            cmds.push(
                ti::SendKeys::new()
                    .target_pane(pane.to_string())
                    .key("Enter")
                    .build(),
            );
        }
        let result = self.run_with_input(&cmds, text.as_bytes(), self.timeout);
        if result.is_err() {
            // A paste that failed may have left the buffer behind.
            let mut delete = TmuxCommand::new();
            delete.name("delete-buffer");
            delete.push_option("-b", buffer);
            let _ = self.run(&[delete], self.timeout);
        }
        result.map(|_| ())
    }

    fn send_keys(&self, pane: &str, keys: &[String]) -> SubResult<()> {
        let pane = Self::target_pane(pane)?;
        let mut cmd = ti::SendKeys::new().target_pane(pane.to_string()).key("--");
        for k in keys {
            cmd = cmd.key(k.clone());
        }
        self.run(&[cmd.build()], self.timeout).map(|_| ())
    }

    fn panes_changed(&self, pids: &[u32]) {
        self.poke.poke(pids);
    }

    fn watch(&self, owner: &str, server_pid: u32, kick: Duration, notify: Notify) -> SubResult<()> {
        let (tmux, owner) = (self.clone(), owner.to_string());
        std::thread::Builder::new()
            .name("marvel-tmux-watch".into())
            .spawn(move || watch::run(tmux, owner, server_pid, kick, notify))
            .map(|_| ())
            .map_err(|e| SubstrateError::Unreachable(format!("cannot start the watch thread: {e}")))
    }
}

impl Tmux {
    /// The argv that attaches the caller's terminal to session
    /// `session_name`, with `window` and `pane` selected when given
    /// (`tmux attach-session`).
    pub fn attach_argv(
        &self,
        session_name: &str,
        window: Option<&str>,
        pane: Option<&str>,
    ) -> Vec<String> {
        let attach = ti::AttachSession::new()
            .target_session(format!("={session_name}"))
            .build();
        self.selecting_argv(attach, window, pane)
    }

    /// The argv for a caller that is already a client of this server (its
    /// `$TMUX` names the same socket): switches that client to the session
    /// instead of nesting a second client.
    pub fn switch_argv(
        &self,
        session_name: &str,
        window: Option<&str>,
        pane: Option<&str>,
    ) -> Vec<String> {
        let switch = ti::SwitchClient::new()
            .target_session(format!("={session_name}"))
            .build();
        self.selecting_argv(switch, window, pane)
    }

    /// `first`, then the selection of `window` and `pane` when given.
    fn selecting_argv(
        &self,
        first: TmuxCommand<'static>,
        window: Option<&str>,
        pane: Option<&str>,
    ) -> Vec<String> {
        self.argv(std::iter::once(first).chain(select(window, pane)).collect())
    }

    /// The full argv (binary first) of an invocation for a client on the
    /// user's terminal (its locale rules).
    fn argv(&self, cmds: Vec<TmuxCommand<'_>>) -> Vec<String> {
        let command = self.invocation(&cmds, false);
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

/// The commands that select a window and a pane, as far as given.
fn select(window: Option<&str>, pane: Option<&str>) -> Vec<TmuxCommand<'static>> {
    let mut out = Vec::new();
    if let Some(w) = window {
        let mut c = TmuxCommand::new();
        c.name("select-window");
        c.push_option("-t", w.to_string());
        out.push(c);
    }
    if let Some(p) = pane {
        let mut c = TmuxCommand::new();
        c.name("select-pane");
        c.push_option("-t", p.to_string());
        out.push(c);
    }
    out
}

/// Where tmux puts the socket for `-L name`.
pub fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("TMUX_TMPDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let uid = rustix::process::getuid().as_raw();
    dir.join(format!("tmux-{uid}")).join(name)
}

/// What a finished tmux process produced.
pub(super) struct RawOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A tmux buffer name no other paste uses: this process's id and a count.
fn paste_buffer_name() -> String {
    static PASTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PASTES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("marvel-paste-{}-{n}", std::process::id())
}

/// Reads both pipes until they close and waits for the child, all before
/// `timeout`; on expiry the child is killed and reaped.
fn collect(mut child: Child, timeout: Duration) -> SubResult<RawOutput> {
    let deadline = Instant::now() + timeout;
    let mut pipes: [Option<Box<dyn ReadFd>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn ReadFd>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn ReadFd>),
    ];
    let mut bufs = [Vec::new(), Vec::new()];
    let mut chunk = [0u8; 8192];
    while pipes.iter().any(Option::is_some) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Err(give_up(child, timeout));
        };
        let open: Vec<usize> = (0..pipes.len()).filter(|&i| pipes[i].is_some()).collect();
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .filter_map(|&i| pipes[i].as_ref())
                .map(|p| PollFd::from_borrowed_fd(p.as_fd(), PollFlags::IN))
                .collect();
            let wait = rustix::event::Timespec::try_from(left.max(Duration::from_millis(1)))
                .unwrap_or(rustix::event::Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 0,
                });
            match rustix::event::poll(&mut fds, Some(&wait)) {
                Ok(_) => fds.iter().map(|f| !f.revents().is_empty()).collect(),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(SubstrateError::Unreachable(format!(
                        "poll on tmux output: {e}"
                    )));
                }
            }
        };
        for (&i, ready) in open.iter().zip(ready) {
            if !ready {
                continue;
            }
            if let Some(p) = pipes[i].as_mut() {
                match p.read(&mut chunk) {
                    Ok(0) => pipes[i] = None,
                    Ok(k) => bufs[i].extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => pipes[i] = None,
                }
            }
        }
    }
    // Both pipes closed: the client is exiting, reaping is a matter of
    // microseconds, so a short backoff poll costs nothing.
    let mut nap = Duration::from_micros(50);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                return Err(SubstrateError::Unreachable(format!(
                    "waiting for tmux: {e}"
                )));
            }
        }
        if Instant::now() >= deadline {
            return Err(give_up(child, timeout));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(5));
    };
    let [out, err] = bufs;
    Ok(RawOutput {
        status,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    })
}

fn give_up(mut child: Child, timeout: Duration) -> SubstrateError {
    let _ = child.kill();
    let _ = child.wait();
    SubstrateError::Timeout(timeout)
}

/// A child's pipe: readable, with a descriptor to poll.
trait ReadFd: Read + AsFd {}
impl<T: Read + AsFd> ReadFd for T {}

/// The size of `cmds` as one command message: every argument with its NUL,
/// plus a `;` separator between commands.
/// `cmds` cut into runs of consecutive commands that each fit one tmux
/// command message of `max` bytes (a command longer than that on its own
/// is a run of one, which tmux refuses).
fn batches<'a, 'c>(cmds: &'a [TmuxCommand<'c>], max: usize) -> Vec<&'a [TmuxCommand<'c>]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, cmd) in cmds.iter().enumerate() {
        let size = command_bytes(std::slice::from_ref(cmd)) + 2;
        if i > start && bytes + size > max {
            out.push(&cmds[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < cmds.len() {
        out.push(&cmds[start..]);
    }
    out
}

fn command_bytes(cmds: &[TmuxCommand<'_>]) -> usize {
    let args: usize = cmds
        .iter()
        .map(|c| {
            escape_separators(c.clone())
                .to_vec()
                .iter()
                .map(|a| a.len() + 1)
                .sum::<usize>()
        })
        .sum();
    args + 2 * cmds.len().saturating_sub(1)
}

/// Turns a failed run into an error, keeping tmux's own words.
pub(super) fn classify_failure(out: &RawOutput) -> SubstrateError {
    let stderr = out.stderr.trim();
    if is_no_server(stderr) {
        return SubstrateError::NoServer(stderr.to_string());
    }
    if stderr.is_empty() {
        // No word from tmux: the client was killed or crashed.
        return SubstrateError::Unreachable(format!("tmux exited with {}", out.status));
    }
    if is_lost_connection(stderr) {
        return SubstrateError::Unreachable(stderr.to_string());
    }
    SubstrateError::Refused(stderr.to_string())
}

/// The messages of a client that lost its server mid-call.
fn is_lost_connection(stderr: &str) -> bool {
    stderr.contains("server exited unexpectedly")
        || stderr.contains("lost server")
        || stderr.contains("error connecting to")
        || stderr.contains("protocol version mismatch")
}

/// The messages tmux prints when nothing listens on its socket.
fn is_no_server(stderr: &str) -> bool {
    stderr.contains("no server running on")
        || (stderr.contains("error connecting to")
            && (stderr.contains("(No such file or directory)")
                || stderr.contains("(Connection refused)")))
}

/// The messages of a target that no longer exists.
fn is_absent(stderr: &str) -> bool {
    stderr.contains("can't find pane")
        || stderr.contains("can't find session")
        // What an empty server answers for any target.
        || stderr.trim() == "no current target"
}

/// An exact session target: `=` disables prefix matching, the trailing `:`
/// makes the whole string the session part of a pane target.
fn exact_session(name: &str) -> String {
    format!("={name}:")
}

/// tmux splits a command sequence at any argument that ends in `;`; a
/// backslash before that final `;` makes it literal.
fn escape_separators(mut cmd: TmuxCommand<'_>) -> TmuxCommand<'_> {
    if let Some(args) = cmd.args.take() {
        cmd.args = Some(
            args.into_iter()
                .map(|a| match a.strip_suffix(';') {
                    Some(head) => Cow::Owned(format!("{head}\\;")),
                    None => a,
                })
                .collect(),
        );
    }
    cmd
}

/// Doubles `#` for arguments that tmux expands as formats.
fn escape_format(s: &str) -> String {
    s.replace('#', "##")
}

/// `if-shell -F`: runs `command` (in tmux's command language) only when
/// `condition`, a format expanded for `target`, is true. No shell runs.
fn only_if(condition: &str, command: &str, target: &str) -> TmuxCommand<'static> {
    let mut c = TmuxCommand::new();
    c.name("if-shell");
    c.push_flag("-F");
    c.push_option("-t", target.to_string());
    c.push_param(condition.to_string());
    c.push_param(command.to_string());
    c
}

/// Quotes `s` as one word of tmux's command language: in single quotes,
/// where nothing is special, unless it holds one; then in double quotes,
/// with what is special there (`\`, `"`, `$`) escaped.
fn tmux_quote(s: &str) -> String {
    if !s.contains('\'') {
        return format!("'{s}'");
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Quotes `s` as one POSIX shell word. Text with a NUL byte cannot be one
/// (and never reaches here: manifests and paths refuse it).
pub fn sh_quote(s: &str) -> String {
    shlex::try_quote(s).map_or_else(|_| "''".into(), |q| q.into_owned())
}

/// Refuses text that would break tmux's line-based output or formats.
fn check_text(what: &str, s: &str) -> SubResult<()> {
    if s.chars().any(char::is_control) {
        return Err(SubstrateError::Refused(format!(
            "{what} contains a control character: {s:?}"
        )));
    }
    Ok(())
}

/// A window id (`@3`) as a target; anything else could name a window
/// marvel does not own.
fn target_window(window: &str) -> SubResult<&str> {
    let digits = window.strip_prefix('@').unwrap_or("");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SubstrateError::Refused(format!(
            "not a tmux window id: {window:?}"
        )));
    }
    Ok(window)
}

/// Refuses a session or window name tmux would rewrite or could not target
/// exactly.
fn check_name(what: &str, name: &str) -> SubResult<()> {
    check_text(what, name)?;
    if name.is_empty() || name.contains(['.', ':', '=']) || name.starts_with(['@', '%', '$']) {
        return Err(SubstrateError::Refused(format!(
            "invalid tmux {what} {name:?}"
        )));
    }
    Ok(())
}

fn parse_spawned(line: &str) -> Option<Spawned> {
    let mut f = line.split_whitespace();
    let pane = f.next()?;
    let pid = f.next()?;
    let window = f.next()?;
    let server_pid = f.next().and_then(|p| p.parse().ok());
    if !pane.starts_with('%') || !window.starts_with('@') {
        return None;
    }
    Some(Spawned {
        pane: pane.to_string(),
        pane_pid: pid.parse().ok()?,
        window: window.to_string(),
        server_pid,
    })
}

/// Parses `list-panes` output in [`LIST_FORMAT`]. A line that does not
/// parse cannot be one of marvel's panes (their names are validated), so it
/// is skipped rather than failing the whole listing.
fn parse_list(out: &str) -> Vec<PaneInfo> {
    out.lines().filter_map(parse_pane_line).collect()
}

fn parse_pane_line(line: &str) -> Option<PaneInfo> {
    let mut f = line.splitn(12, '\t');
    let pane = f.next()?;
    let pid = f.next()?;
    let dead = f.next()?;
    let status = f.next()?;
    let signal = f.next()?;
    let window = f.next()?;
    let server = f.next()?;
    let uid = f.next()?;
    let key = f.next()?;
    let team = f.next()?;
    let owner = f.next()?;
    let session = f.next()?;
    if !pane.starts_with('%') {
        return None;
    }
    let num = |s: &str| -> Option<i32> { s.trim().parse().ok() };
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Some(PaneInfo {
        session_name: session.to_string(),
        pane: pane.to_string(),
        pane_pid: pid.trim().parse().ok()?,
        window: window.to_string(),
        owner: owner.to_string(),
        key: text(key),
        uid: uid.trim().parse().ok(),
        team: text(team),
        dead: dead.trim() == "1",
        dead_status: num(status),
        dead_signal: num(signal),
        server_pid: server.trim().parse().ok(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn long_chains_are_cut_into_messages_tmux_takes_in_order() {
        let cmds: Vec<TmuxCommand<'static>> = (0..700)
            .map(|i| {
                let mut c = TmuxCommand::new();
                c.name("set-option");
                c.push_param(format!("@{i}"));
                c.push_param("x".repeat(i % 40));
                c
            })
            .collect();
        let runs = batches(&cmds, COMMAND_BYTES);
        assert!(runs.len() > 1, "{} runs", runs.len());
        assert!(runs.iter().all(|r| command_bytes(r) <= COMMAND_BYTES));
        let names: Vec<String> = runs
            .iter()
            .flat_map(|r| r.iter().map(|c| c.to_string()))
            .collect();
        let all: Vec<String> = cmds.iter().map(|c| c.to_string()).collect();
        assert_eq!(names, all);
        assert_eq!(batches(&cmds[..3], COMMAND_BYTES).len(), 1);
        assert!(batches(&cmds[..0], COMMAND_BYTES).is_empty());
    }

    /// A private tmux server for one test, killed (and its socket removed)
    /// when the guard drops, even if the test panics.
    pub struct TestServer {
        pub tmux: Tmux,
        name: String,
    }

    impl TestServer {
        pub fn new() -> TestServer {
            let timeout = Duration::from_secs(10);
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "marvel-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let tmux = Tmux::new(Some(name.clone()), timeout).with_config("/dev/null");
            TestServer { tmux, name }
        }

        /// What a tmux command on this server printed, trimmed.
        pub fn output(&self, args: &[&str]) -> String {
            let out = Command::new("tmux")
                .args(["-L", &self.name])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            let _ = self.tmux.kill_server();
            let _ = std::fs::remove_file(socket_path(&self.name));
        }
    }

    /// A pane in a tmux session of its own, named `name`.
    pub fn req(name: &str, argv: &[&str]) -> SpawnRequest {
        placed(
            Place::NewSession {
                session: name.to_string(),
                team: "ws/team".into(),
                status_left: "marvel ws/team ".into(),
            },
            argv,
        )
    }

    pub fn placed(place: Place, argv: &[&str]) -> SpawnRequest {
        SpawnRequest {
            place,
            window_name: "w-0".into(),
            key: "ws/team/w-0".into(),
            uid: 7,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            cwd: None,
            log: None,
            reports: None,
            owner: "test-owner".to_string(),
            status: "…".into(),
        }
    }

    /// How long a condition may take before a test fails (a hang, not
    /// slowness: far above any normal wait, even on a loaded machine).
    pub const WAIT: Duration = Duration::from_secs(20);

    /// Polls `f` until it returns `Some`, failing the test at the deadline.
    pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn panes(tmux: &Tmux) -> Vec<PaneInfo> {
        match tmux.list().unwrap() {
            Observation::Panes(p) => p,
            Observation::NoServer => Vec::new(),
        }
    }

    #[test]
    fn spawn_then_list_shows_the_pane_with_its_owner() {
        let srv = TestServer::new();
        let s = srv
            .tmux
            .spawn(&req("marvel/ws/team/role-0", &["sleep", "30"]))
            .unwrap();
        assert!(s.pane.starts_with('%'), "{s:?}");
        let all = panes(&srv.tmux);
        let p = all.iter().find(|p| p.pane == s.pane).expect("pane listed");
        assert_eq!(p.session_name, "marvel/ws/team/role-0");
        assert_eq!(p.owner, "test-owner");
        assert_eq!(p.pane_pid, s.pane_pid);
        assert!(!p.dead);
        assert_eq!((p.dead_status, p.dead_signal), (None, None));
    }

    /// A daemon started without a UTF-8 locale (over ssh with no LANG, from
    /// cron, by a bare systemd unit) still sees its panes: tmux would print
    /// the listing's tabs as `_` and every pane would look gone.
    #[test]
    fn panes_are_listed_whatever_the_locale() {
        let srv = TestServer::new();
        let s = srv
            .tmux
            .spawn(&req("marvel/ws/team/locale-0", &["sleep", "30"]))
            .unwrap();
        let list = ti::ListPanes::new().all().format(LIST_FORMAT).build();
        let out = srv
            .tmux
            .command(&[list])
            .env_remove("LANG")
            .env_remove("LC_CTYPE")
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let listed = parse_list(&String::from_utf8_lossy(&out.stdout));
        assert!(
            listed.iter().any(|p| p.pane == s.pane),
            "{:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn argv_is_executed_without_a_shell_and_env_and_cwd_apply() {
        let srv = TestServer::new();
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().join("a#b");
        std::fs::create_dir(&cwd).unwrap();
        let mut r = req(
            "marvel/ws/team/args-0",
            &[
                "sh",
                "-c",
                r#"printf '[%s]' "$@" "$MARVEL_X" "$(pwd)"; echo; exec sleep 30"#,
                "sh",
                "$HOME",
                "a b;",
                ";",
                "-x",
            ],
        );
        r.env.insert("MARVEL_X".into(), "v 1".into());
        r.cwd = Some(cwd.clone());
        let s = srv.tmux.spawn(&r).unwrap();
        let want = format!("[$HOME][a b;][;][-x][v 1][{}]", cwd.display());
        wait_for("printed args", WAIT, || {
            let text = srv.tmux.capture(&s.pane, 0).unwrap();
            text.contains(&want).then_some(())
        });
    }

    #[test]
    fn a_single_word_command_is_one_program_name() {
        let srv = TestServer::new();
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("my prog");
        std::fs::write(&prog, "#!/bin/sh\necho single-word-ran\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = srv
            .tmux
            .spawn(&req("marvel/ws/team/one-0", &[prog.to_str().unwrap()]))
            .unwrap();
        wait_for("output", WAIT, || {
            let text = srv.tmux.capture(&s.pane, 0).unwrap();
            text.contains("single-word-ran").then_some(())
        });
    }

    #[test]
    fn kill_removes_the_pane_and_absent_is_success() {
        let srv = TestServer::new();
        let a = srv
            .tmux
            .spawn(&req("marvel/w/t/a-0", &["sleep", "30"]))
            .unwrap();
        let b = srv
            .tmux
            .spawn(&req("marvel/w/t/b-0", &["sleep", "30"]))
            .unwrap();
        srv.tmux.kill(&a.pane).unwrap();
        let left: Vec<String> = panes(&srv.tmux).into_iter().map(|p| p.pane).collect();
        assert_eq!(left, vec![b.pane.clone()]);
        srv.tmux.kill(&a.pane).unwrap();
        assert!(matches!(
            srv.tmux.kill("w-0"),
            Err(SubstrateError::Refused(_))
        ));
    }

    #[test]
    fn list_after_kill_server_is_no_server_and_kill_is_success() {
        let srv = TestServer::new();
        let s = srv
            .tmux
            .spawn(&req("marvel/w/t/a-0", &["sleep", "30"]))
            .unwrap();
        srv.tmux.kill_server().unwrap();
        // While the server is still exiting, a query can fail with "server
        // exited unexpectedly": unknown, not absent. Then it is NoServer.
        wait_for("no server", WAIT, || {
            (srv.tmux.list() == Ok(Observation::NoServer)).then_some(())
        });
        srv.tmux.kill(&s.pane).unwrap();
        assert!(matches!(
            srv.tmux.capture(&s.pane, 10),
            Err(SubstrateError::NoServer(_))
        ));
        // A server that was never started is the same confirmed absence.
        let never = TestServer::new();
        assert_eq!(never.tmux.list().unwrap(), Observation::NoServer);
    }

    #[test]
    fn a_server_without_sessions_lists_no_panes() {
        let srv = TestServer::new();
        let st = Command::new("tmux")
            .args(["-L", &srv.name, "-f", "/dev/null", "start-server", ";"])
            .args(["set-option", "-s", "exit-empty", "off"])
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(srv.tmux.list(), Ok(Observation::Panes(Vec::new())));
    }

    #[test]
    fn capture_shows_printed_text_with_history() {
        let srv = TestServer::new();
        let s = srv
            .tmux
            .spawn(&req(
                "marvel/w/t/cap-0",
                &["sh", "-c", "seq 1 120; echo last-line; exec sleep 30"],
            ))
            .unwrap();
        let text = wait_for("last line", WAIT, || {
            let t = srv.tmux.capture(&s.pane, 200).unwrap();
            t.contains("last-line").then_some(t)
        });
        assert!(text.starts_with("1\n2\n"), "{text:?}");
        assert!(text.ends_with("120\nlast-line\n"), "{text:?}");
        let visible = srv.tmux.capture(&s.pane, 0).unwrap();
        assert!(!visible.starts_with("1\n"), "{visible:?}");
    }

    #[test]
    fn a_paste_arrives_whole_past_tmuxs_message_limit_and_leaves_no_buffer() {
        let srv = TestServer::new();
        // What `cat` writes out is what reached the pane, once each.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pasted");
        let script = format!("cat > {}", out.display());
        let s = srv
            .tmux
            .spawn(&req("marvel/w/t/cat-0", &["sh", "-c", &script]))
            .unwrap();
        // 40 KiB over 800 lines, with what a shell or tmux would read as
        // syntax: `;`, quotes, `$`, `#{}`.
        let text: String = (0..800)
            .map(|i| {
                format!(
                    "line {i:03}; echo '$HOME' \"#{{pane_id}}\" {}\n",
                    "x".repeat(20)
                )
            })
            .collect();
        assert!(text.len() > 40_000, "{}", text.len());
        srv.tmux.paste(&s.pane, text.trim_end(), true).unwrap();
        srv.tmux.send_keys(&s.pane, &["C-d".into()]).unwrap();
        let got = wait_for("the pasted text written out", WAIT, || {
            let got = std::fs::read_to_string(&out).ok()?;
            (got.lines().count() >= 800).then_some(got)
        });
        assert_eq!(got, text);
        let buffers = srv
            .tmux
            .run(&[ti::ListBuffers::new().build()], WAIT)
            .unwrap();
        assert!(!buffers.contains("marvel-paste"), "{buffers}");
    }

    #[test]
    fn send_text_reaches_a_cat_literally() {
        let srv = TestServer::new();
        let s = srv
            .tmux
            .spawn(&req("marvel/w/t/cat-0", &["cat", "-"]))
            .unwrap();
        srv.tmux
            .send_text(&s.pane, "-n hello; Enter C-c;", true)
            .unwrap();
        srv.tmux
            .send_keys(&s.pane, &["w".into(), "o".into(), "Enter".into()])
            .unwrap();
        wait_for("echoed text", WAIT, || {
            let t = srv.tmux.capture(&s.pane, 0).unwrap();
            // Typed, echoed by the terminal, then printed again by cat.
            (t.matches("-n hello; Enter C-c;\n").count() == 2 && t.matches("wo\n").count() == 2)
                .then_some(())
        });
        srv.tmux.send_keys(&s.pane, &["C-c".into()]).unwrap();
        wait_for("cat ended by C-c", WAIT, || {
            panes(&srv.tmux)
                .iter()
                .any(|p| p.pane == s.pane && p.dead)
                .then_some(())
        });
    }

    #[test]
    fn a_hung_server_is_a_timeout_not_a_death() {
        let srv = TestServer::new();
        srv.tmux
            .spawn(&req("marvel/w/t/a-0", &["sleep", "30"]))
            .unwrap();
        let quick = Tmux {
            timeout: Duration::from_millis(300),
            ..srv.tmux.clone()
        };
        let pid = srv.tmux.server_pid().unwrap();
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        use rustix::process::{Signal, kill_process};
        kill_process(pid, Signal::STOP).unwrap();
        let started = Instant::now();
        let got = quick.list();
        kill_process(pid, Signal::CONT).unwrap();
        assert_eq!(
            got,
            Err(SubstrateError::Timeout(Duration::from_millis(300)))
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(panes(&srv.tmux).len(), 1);
    }

    #[test]
    fn a_missing_binary_is_missing() {
        let t = Tmux::new(Some("marvel-test-unused".into()), Duration::from_secs(1))
            .with_binary("/nonexistent/tmux");
        assert!(matches!(t.version(), Err(SubstrateError::Missing(_))));
        assert!(matches!(t.list(), Err(SubstrateError::Missing(_))));
        let results = t.spawn_many(&[req("a", &["x", "y"]), req("b", &["x", "y"])]);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(SubstrateError::Missing(_))))
        );
    }

    #[test]
    fn version_reports_the_binary() {
        let srv = TestServer::new();
        let v = srv.tmux.version().unwrap();
        assert!(v.starts_with("tmux "), "{v}");
    }

    #[test]
    fn spawn_many_creates_all_in_order() {
        let srv = TestServer::new();
        let reqs: Vec<SpawnRequest> = (0..20)
            .map(|i| req(&format!("marvel/w/t/many-{i}"), &["sleep", "30"]))
            .collect();
        let results = srv.tmux.spawn_many(&reqs);
        let spawned: Vec<Spawned> = results.into_iter().map(Result::unwrap).collect();
        let listed = panes(&srv.tmux);
        assert_eq!(listed.len(), 20);
        for (i, s) in spawned.iter().enumerate() {
            let p = listed.iter().find(|p| p.pane == s.pane).unwrap();
            assert_eq!(p.session_name, format!("marvel/w/t/many-{i}"));
            assert_eq!(p.pane_pid, s.pane_pid);
        }
    }

    #[test]
    fn spawn_many_reports_the_one_that_failed_and_creates_the_rest() {
        let srv = TestServer::new();
        srv.tmux
            .spawn(&req("marvel/w/t/x-1", &["sleep", "30"]))
            .unwrap();
        let reqs: Vec<SpawnRequest> = (0..4)
            .map(|i| req(&format!("marvel/w/t/x-{i}"), &["sleep", "30"]))
            .chain([req("bad.name", &["sleep", "30"])])
            .collect();
        let results = srv.tmux.spawn_many(&reqs);
        assert!(results[0].is_ok());
        match &results[1] {
            Err(SubstrateError::Refused(m)) => assert!(m.contains("duplicate session"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(results[2].is_ok() && results[3].is_ok());
        assert!(matches!(results[4], Err(SubstrateError::Refused(_))));
        // The existing session was not touched.
        let names: Vec<String> = panes(&srv.tmux)
            .into_iter()
            .map(|p| p.session_name)
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    #[test]
    fn spawn_many_splits_long_chains_below_the_message_limit() {
        let srv = TestServer::new();
        let long = "x".repeat(1000);
        let mut reqs: Vec<SpawnRequest> = (0..40)
            .map(|i| {
                req(
                    &format!("marvel/w/t/long-{i}"),
                    &["sh", "-c", "sleep 30", &long],
                )
            })
            .collect();
        let huge = "y".repeat(COMMAND_BYTES);
        reqs.insert(
            7,
            req("marvel/w/t/huge-0", &["sh", "-c", "sleep 30", &huge]),
        );
        let results = srv.tmux.spawn_many(&reqs);
        for (i, r) in results.iter().enumerate() {
            if i == 7 {
                assert!(
                    matches!(r, Err(SubstrateError::Refused(m)) if m.contains("too long")),
                    "{r:?}"
                );
            } else {
                assert!(r.is_ok(), "request {i}: {r:?}");
            }
        }
        assert_eq!(panes(&srv.tmux).len(), 40);
    }

    #[test]
    fn attach_and_switch_argv_target_the_exact_session() {
        let t = Tmux::new(Some("sock".into()), Duration::from_secs(1));
        assert_eq!(
            t.attach_argv("squad", None, None),
            ["tmux", "-L", "sock", "attach-session", "-t", "=squad"]
        );
        assert_eq!(
            t.switch_argv("squad", Some("@2"), Some("%5")),
            [
                "tmux",
                "-L",
                "sock",
                "switch-client",
                "-t",
                "=squad",
                ";",
                "select-window",
                "-t",
                "@2",
                ";",
                "select-pane",
                "-t",
                "%5"
            ]
        );
        let d = Tmux::new(None, Duration::from_secs(1));
        assert_eq!(d.attach_argv("x", None, None)[1], "attach-session");
    }

    /// The team layout: one tmux session, a window per session in order,
    /// a successor beside its predecessor, a restart in the same pane.
    #[test]
    fn a_team_gets_one_session_with_a_window_each_and_restarts_in_place() {
        let srv = TestServer::new();
        let mut first = req("squad", &["sleep", "30"]);
        first.window_name = "worker-0".into();
        let mut second = placed(
            Place::NewWindow {
                session: "squad".into(),
                after: None,
            },
            &["sh", "-c", "echo second; read x; exit 3"],
        );
        second.window_name = "worker-1".into();
        let results = srv.tmux.spawn_many(&[first, second]);
        let a = results[0].clone().unwrap();
        let b = results[1].clone().unwrap();
        assert_ne!(a.window, b.window);
        // The server is the shims' parent, told with every spawn.
        assert_eq!(a.server_pid, Some(srv.tmux.server_pid().unwrap()));
        // The second program ends once tmux has its output (a program that
        // exits at once may be reaped before tmux reads what it printed):
        // its pane stays, dead, with its screen.
        wait_for("the output", WAIT, || {
            srv.tmux
                .capture(&b.pane, 100)
                .ok()
                .filter(|s| s.contains("second"))
        });
        srv.tmux.send_text(&b.pane, "", true).unwrap();
        let dead = wait_for("the pane to die", WAIT, || {
            panes(&srv.tmux)
                .into_iter()
                .find(|p| p.pane == b.pane && p.dead)
        });
        // tmux 3.3a sometimes does not reap a pane's child, and then has no
        // status to tell (which is why the shim reports exits itself).
        assert!(dead.dead_status.is_none_or(|s| s == 3), "{dead:?}");
        assert_eq!(
            (dead.key.as_deref(), dead.uid),
            (Some("ws/team/w-0"), Some(7))
        );
        assert_eq!(dead.team.as_deref(), Some("ws/team"));
        // tmux scrolls a dead pane's screen up to draw its line: read it
        // with its history.
        assert!(srv.tmux.capture(&b.pane, 100).unwrap().contains("second"));
        srv.tmux
            .decorate(&[Decoration {
                window: b.window.clone(),
                status: "↻ 12:00:01 #1".into(),
            }])
            .unwrap();
        let shown = |args: &[&str]| srv.output(args);
        let status = || shown(&["show-options", "-wv", "-t", &b.window, "@marvel-status"]);
        assert_eq!(status(), "↻ 12:00:01 #1");
        // The windows of a big role are more than tmux takes in one
        // command message: they are set all the same.
        let many: Vec<Decoration> = (0..1000)
            .map(|i| Decoration {
                window: b.window.clone(),
                status: format!("✓ {i}"),
            })
            .collect();
        srv.tmux.decorate(&many).unwrap();
        assert_eq!(status(), "✓ 999");
        // A restart in the same pane keeps its id, with a new process.
        let mut again = placed(
            Place::Respawn {
                pane: b.pane.clone(),
            },
            &["sleep", "30"],
        );
        again.uid = 8;
        let c = srv.tmux.spawn(&again).unwrap();
        assert_eq!(
            (c.pane.as_str(), c.window.as_str()),
            (b.pane.as_str(), b.window.as_str())
        );
        assert_ne!(c.pane_pid, b.pane_pid);
        // A successor beside its predecessor, in the same window.
        let d = srv
            .tmux
            .spawn(&placed(
                Place::Split {
                    window: a.window.clone(),
                    tiled: false,
                },
                &["sleep", "30"],
            ))
            .unwrap();
        assert_eq!(d.window, a.window);
        let all = panes(&srv.tmux);
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|p| p.session_name == "squad" && !p.dead));
        // The respawned pane has its new uid, and keeps what was set on it
        // and its window when they were made.
        let respawned = all.iter().find(|p| p.pane == c.pane).unwrap();
        let before = all.iter().find(|p| p.pane == a.pane).unwrap();
        assert_eq!(respawned.uid, Some(8));
        assert_eq!(
            (&respawned.owner, &respawned.key),
            (&before.owner, &before.key)
        );
        assert!(!respawned.owner.is_empty() && respawned.key.is_some());
        assert_eq!(
            shown(&["show-options", "-pv", "-t", &c.pane, "remain-on-exit"]),
            "on"
        );
        assert_eq!(
            shown(&["display-message", "-p", "-t", &c.pane, "#{allow-rename}"]),
            "0"
        );
        srv.tmux.kill(&d.pane).unwrap();
        srv.tmux.kill(&c.pane).unwrap();
        let left: Vec<String> = panes(&srv.tmux).into_iter().map(|p| p.pane).collect();
        assert_eq!(left, vec![a.pane]);
    }

    #[test]
    fn client_of_compares_the_socket_in_dollar_tmux() {
        let t = Tmux::new(Some("marvel-x".into()), Duration::from_secs(1));
        let mine = format!("{},123,0", socket_path("marvel-x").display());
        let other = format!("{},123,0", socket_path("default").display());
        assert!(t.is_client_of(Some(&mine)));
        assert!(!t.is_client_of(Some(&other)));
        assert!(!t.is_client_of(None));
        assert!(Tmux::new(None, Duration::from_secs(1)).is_client_of(Some(&other)));
    }

    #[test]
    fn a_restart_in_place_sets_only_the_uid_and_the_status() {
        let t = Tmux::new(None, Duration::from_secs(1));
        let options = |place: Place| -> Vec<String> {
            t.spawn_commands(&placed(place, &["a", "b"]))
                .unwrap()
                .iter()
                .map(|c| c.to_vec())
                .filter(|c| c[0] == "set-option" || c[0] == "set-hook")
                .map(|c| c[c.len() - 2].to_string())
                .collect()
        };
        assert_eq!(
            options(Place::Respawn { pane: "%3".into() }),
            ["@marvel-uid", "@marvel-status"]
        );
        let made = options(Place::NewWindow {
            session: "s".into(),
            after: None,
        });
        for name in ["@marvel", "@marvel-key", "remain-on-exit"] {
            assert!(made.iter().any(|o| o == name), "{name}: {made:?}");
        }
        // Only where a configuration turned it on.
        assert!(!made.iter().any(|o| o == "allow-rename"), "{made:?}");
        let conditional: Vec<Vec<String>> = t
            .spawn_commands(&placed(
                Place::NewWindow {
                    session: "s".into(),
                    after: None,
                },
                &["a"],
            ))
            .unwrap()
            .iter()
            .map(|c| c.to_vec().iter().map(|a| a.to_string()).collect())
            .filter(|c: &Vec<String>| c[0] == "if-shell")
            .collect();
        assert_eq!(
            conditional,
            [[
                "if-shell",
                "-F",
                "-t",
                "=s:=w-0",
                "#{allow-rename}",
                "set-option -w -t '=s:=w-0' allow-rename off"
            ]]
        );
    }

    #[test]
    fn tmux_quote_makes_one_word_of_anything() {
        assert_eq!(tmux_quote("=s:=w"), "'=s:=w'");
        assert_eq!(tmux_quote("a $b ~c #d;"), "'a $b ~c #d;'");
        assert_eq!(tmux_quote(r#"it's "$x" \"#), r#""it's \"\$x\" \\""#);
    }

    /// `allow-rename` is set off on a new window only where it is on, and
    /// the command reaches the right window with quotes in the session's
    /// name.
    #[test]
    fn allow_rename_is_turned_off_where_a_configuration_turned_it_on() {
        let srv = TestServer::new();
        let name = "it's \"x\" y";
        let mut first = req(name, &["sleep", "30"]);
        first.window_name = "one".into();
        let a = srv.tmux.spawn(&first).unwrap();
        let local =
            |window: &str| srv.output(&["show-options", "-wqv", "-t", window, "allow-rename"]);
        // Off by default: nothing to set.
        assert_eq!(local(&a.window), "");
        srv.output(&["set-option", "-gw", "allow-rename", "on"]);
        let mut second = placed(
            Place::NewWindow {
                session: name.into(),
                after: None,
            },
            &["sleep", "30"],
        );
        second.window_name = "two x".into();
        let b = srv.tmux.spawn(&second).unwrap();
        assert_ne!(a.window, b.window);
        assert_eq!(local(&b.window), "off");
        assert_eq!(local(&a.window), "");
    }

    #[test]
    fn new_windows_and_team_sessions_carry_the_hooks_that_wake_the_watch() {
        let t = Tmux::new(None, Duration::from_secs(1));
        let hooks = |place: Place| -> Vec<String> {
            t.spawn_commands(&placed(place, &["a", "b"]))
                .unwrap()
                .iter()
                .map(|c| c.to_vec().join(" "))
                .filter(|c| c.starts_with("set-hook"))
                .collect()
        };
        let wake = watch::hook_command("test-owner");
        let session = hooks(Place::NewSession {
            session: "s".into(),
            team: "ws/team".into(),
            status_left: "marvel".into(),
        });
        assert_eq!(
            session,
            [
                format!("set-hook -w -t =s:=w-0 pane-died {wake}"),
                format!("set-hook -w -t =s:=w-0 pane-exited {wake}"),
                format!("set-hook -t =s:=w-0 window-unlinked {wake}"),
                format!("set-hook -t =s:=w-0 after-kill-pane {wake}"),
            ]
        );
        let window = hooks(Place::NewWindow {
            session: "s".into(),
            after: None,
        });
        assert_eq!(window.len(), 2);
        assert!(
            window
                .iter()
                .all(|h| h.starts_with("set-hook -w -t =s:=w-0 pane-"))
        );
        // A split pane and a respawned one share their window's hooks.
        let split = Place::Split {
            window: "@3".into(),
            tiled: false,
        };
        assert!(hooks(split).is_empty());
        assert!(hooks(Place::Respawn { pane: "%4".into() }).is_empty());
    }

    #[test]
    fn log_pipe_command_is_quoted_and_escaped() {
        let t = Tmux::new(None, Duration::from_secs(1)).with_marvel_bin("/opt/my marvel/bin");
        let mut r = req("marvel/w/t/r-0", &["a", "b"]);
        r.log = Some(PathBuf::from("/state/logs/7#.log"));
        let cmds = t.spawn_commands(&r).unwrap();
        let pipe = cmds
            .iter()
            .map(|c| c.to_vec().join(" "))
            .find(|c| c.starts_with("pipe-pane"))
            .unwrap();
        assert_eq!(
            pipe,
            "pipe-pane -O -t =marvel/w/t/r-0:=w-0 exec '/opt/my marvel/bin' logpipe --to-shim --max-bytes 1048576 '/state/logs/7##.log'"
        );
        // With reports, it says where the daemon is and when to speak.
        r.reports = Some(crate::substrate::LogReports {
            state_dir: PathBuf::from("/my state#"),
            quiet: Duration::from_millis(250),
        });
        let cmds = t.spawn_commands(&r).unwrap();
        let pipe = cmds
            .iter()
            .map(|c| c.to_vec().join(" "))
            .find(|c| c.starts_with("pipe-pane"))
            .unwrap();
        assert!(
            pipe.ends_with(
                "logpipe --to-shim --max-bytes 1048576 --uid 7 --state-dir '/my state##' --quiet-ms 250 '/state/logs/7##.log'"
            ),
            "{pipe}"
        );
    }

    #[test]
    fn list_lines_parse_with_empty_fields_as_none() {
        let out = "%1\t100\t0\t\t\t@1\t77\t12\ta/b/c-0\ta/b\tme\tb\n\
            %2\t101\t1\t\t9\t@2\t77\t\t\t\t\tfor\teign\n\
            broken\n\
            %3\t102\t1\t3\t\t@3\t77\t\t\t\tme\tmarvel/a/b/c-0/4\n";
        let p = parse_list(out);
        assert_eq!(p.len(), 3);
        assert_eq!(
            (
                p[0].window.as_str(),
                p[0].uid,
                p[0].key.as_deref(),
                p[0].team.as_deref()
            ),
            ("@1", Some(12), Some("a/b/c-0"), Some("a/b"))
        );
        assert_eq!(
            (p[0].server_pid, p[0].session_name.as_str()),
            (Some(77), "b")
        );
        // A pane of an older version: its own session, no marks.
        assert_eq!((p[2].uid, p[2].key.as_deref()), (None, None));
        assert_eq!(
            (p[0].dead, p[0].dead_status, p[0].dead_signal),
            (false, None, None)
        );
        assert_eq!(p[1].session_name, "for\teign");
        assert_eq!(
            (p[1].dead, p[1].dead_signal, p[1].owner.as_str()),
            (true, Some(9), "")
        );
        assert_eq!(p[2].dead_status, Some(3));
    }

    #[test]
    fn classifies_no_server_messages() {
        assert!(is_no_server("no server running on /tmp/tmux-0/x"));
        assert!(is_no_server(
            "error connecting to /tmp/tmux-0/x (No such file or directory)"
        ));
        assert!(is_no_server(
            "error connecting to /tmp/tmux-0/x (Connection refused)"
        ));
        assert!(!is_no_server(
            "error connecting to /tmp/tmux-0/x (Permission denied)"
        ));
        assert!(!is_no_server("server exited unexpectedly"));
    }

    fn failed(stderr: &str) -> SubstrateError {
        use std::os::unix::process::ExitStatusExt;
        classify_failure(&RawOutput {
            status: ExitStatus::from_raw(1 << 8),
            stdout: String::new(),
            stderr: stderr.into(),
        })
    }

    /// Only a failure to reach the server is tmux's trouble; a command it
    /// refuses is the request's (issue: one refused call marked the whole
    /// server down).
    #[test]
    fn refused_commands_are_told_from_an_unreachable_server() {
        for refused in [
            "command too long",
            "can't find pane: %9",
            "no current target",
            "duplicate session: x",
        ] {
            assert!(
                matches!(failed(refused), SubstrateError::Refused(_)),
                "{refused}"
            );
        }
        for lost in [
            "server exited unexpectedly",
            "lost server",
            "error connecting to /tmp/tmux-0/x (Permission denied)",
            "",
        ] {
            assert!(
                matches!(failed(lost), SubstrateError::Unreachable(_)),
                "{lost:?}"
            );
        }
        assert!(matches!(
            failed("no server running on /tmp/tmux-0/x"),
            SubstrateError::NoServer(_)
        ));
        assert!(is_absent("no current target\n"));
    }
}
