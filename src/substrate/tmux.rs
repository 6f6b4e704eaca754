//! The real substrate: tmux commands built with `tmux_interface`, run as
//! child processes with stdin closed, output captured and a hard deadline.
//! It never touches a session it was not asked about by name or pane id.

use std::borrow::Cow;
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ti::{TmuxCommand, TmuxCommands};
use tmux_interface as ti;

use super::{Observation, PaneInfo, SpawnRequest, Spawned, SubResult, Substrate, SubstrateError};

/// Environment variable naming the tmux server (`tmux -L NAME`) marvel uses.
pub const SOCKET_ENV: &str = "MARVEL_TMUX_SOCKET";
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
const LIST_FORMAT: &str = "#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_dead_signal}\t#{@marvel}\t#{session_name}";
/// What each spawned session prints once all its commands have run.
const SPAWNED_FORMAT: &str = "#{pane_id} #{pane_pid}";

/// A tmux server reached through the `tmux` binary.
#[derive(Debug, Clone)]
pub struct Tmux {
    binary: PathBuf,
    socket_name: Option<String>,
    config: Option<PathBuf>,
    /// The marvel binary that `pipe-pane` runs as the log writer.
    marvel_bin: Option<PathBuf>,
    timeout: Duration,
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

    /// The commands that create one session; the last one prints its pane.
    fn spawn_commands(&self, req: &SpawnRequest) -> SubResult<Vec<TmuxCommand<'static>>> {
        check_text("session name", &req.name)?;
        check_text("owner tag", &req.owner)?;
        if req.name.is_empty() || req.name.contains(['.', ':']) {
            // tmux silently rewrites these characters in session names.
            return Err(SubstrateError::Refused(format!(
                "invalid tmux session name {:?}",
                req.name
            )));
        }
        if req.argv.is_empty() {
            return Err(SubstrateError::Refused(format!(
                "empty command for session {}",
                req.name
            )));
        }
        let target = exact_session(&req.name);
        let mut new = ti::NewSession::new()
            .detached()
            .session_name(req.name.clone())
            .width(WIDTH)
            .height(HEIGHT);
        if let Some(cwd) = &req.cwd {
            // tmux expands formats in -c, so a literal '#' must be doubled.
            new = new.start_directory(escape_format(&cwd.to_string_lossy()));
        }
        for (k, v) in &req.env {
            new = new.environment(k.clone(), v.clone());
        }
        let mut new = new.build();
        new.push_param("--");
        if req.argv.len() == 1 {
            // tmux hands a single word to `sh -c`; several words are exec'd
            // directly. Quote a lone word so it stays one program name.
            new.push_param(format!("exec {}", sh_quote(&req.argv[0])));
        } else {
            for a in &req.argv {
                new.push_param(a.clone());
            }
        }
        let mut cmds = vec![
            new,
            ti::SetOption::new()
                .target_pane(target.clone())
                .option("@marvel")
                .value(req.owner.clone())
                .build(),
            ti::SetOption::new()
                .window()
                .target_pane(target.clone())
                .option("remain-on-exit")
                .value("off")
                .build(),
        ];
        if let Some(log) = &req.log {
            let bin = match &self.marvel_bin {
                Some(b) => b.clone(),
                None => std::env::current_exe().map_err(|e| {
                    SubstrateError::Refused(format!("cannot locate the marvel binary: {e}"))
                })?,
            };
            let shell = format!(
                "exec {} logpipe --max-bytes {} {}",
                sh_quote(&bin.to_string_lossy()),
                LOG_MAX_BYTES,
                sh_quote(&log.to_string_lossy())
            );
            // tmux_interface names pipe-pane's -O flag `stdin`.
            cmds.push(
                ti::PipePane::new()
                    .stdin()
                    .target_pane(target.clone())
                    .shell_command(escape_format(&shell))
                    .build(),
            );
        }
        // Printed last, so a line of output means every command of this
        // session succeeded.
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

    /// Removes what a failed spawn may have left: its new-session can have
    /// succeeded before a later command of its group failed. A duplicate
    /// name means the session is someone else's, so it is left alone.
    fn clean_failed_spawn(&self, req: &SpawnRequest, err: &SubstrateError) {
        if let SubstrateError::Refused(msg) = err
            && !msg.contains("duplicate session")
        {
            let kill = ti::KillSession::new()
                .target_session(exact_session(&req.name))
                .build();
            let _ = self.run(&[kill], self.timeout);
        }
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
                Some(e @ SubstrateError::Refused(_)) if confirmed < batch.len() => {
                    let i = batch[confirmed].0;
                    self.clean_failed_spawn(&reqs[i], &e);
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
        let cmd = ti::KillSession::new()
            .target_session(pane.to_string())
            .build();
        match self.run(&[cmd], self.timeout) {
            Ok(_) | Err(SubstrateError::NoServer(_)) => Ok(()),
            Err(SubstrateError::Refused(m)) if is_absent(&m) => Ok(()),
            Err(e) => Err(e),
        }
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

    fn send_keys(&self, pane: &str, keys: &[String]) -> SubResult<()> {
        let pane = Self::target_pane(pane)?;
        let mut cmd = ti::SendKeys::new().target_pane(pane.to_string()).key("--");
        for k in keys {
            cmd = cmd.key(k.clone());
        }
        self.run(&[cmd.build()], self.timeout).map(|_| ())
    }

    fn attach_argv(&self, session_name: &str) -> Vec<String> {
        let cmd = ti::AttachSession::new()
            .target_session(format!("={session_name}"))
            .build();
        self.argv(cmd)
    }

    fn is_client_of(&self, tmux_env: Option<&str>) -> bool {
        Tmux::is_client_of(self, tmux_env)
    }

    fn switch_argv(&self, session_name: &str) -> Vec<String> {
        let cmd = ti::SwitchClient::new()
            .target_session(format!("={session_name}"))
            .build();
        self.argv(cmd)
    }
}

impl Tmux {
    /// The full argv (binary first) of a one-command invocation.
    fn argv(&self, cmd: TmuxCommand<'_>) -> Vec<String> {
        let command = self.invocation(&[cmd], false);
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

/// Where tmux puts the socket for `-L name`.
pub fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("TMUX_TMPDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    dir.join(format!("tmux-{uid}")).join(name)
}

/// What a finished tmux process produced.
struct RawOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
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
        let mut fds: Vec<libc::pollfd> = pipes
            .iter()
            .map(|p| libc::pollfd {
                fd: p.as_ref().map_or(-1, |p| p.fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(SubstrateError::Unreachable(format!(
                "poll on tmux output: {e}"
            )));
        }
        for (i, fd) in fds.iter().enumerate() {
            if fd.revents == 0 {
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
trait ReadFd: Read {
    fn fd(&self) -> i32;
}
impl<T: Read + AsRawFd> ReadFd for T {
    fn fd(&self) -> i32 {
        self.as_raw_fd()
    }
}

/// The size of `cmds` as one command message: every argument with its NUL,
/// plus a `;` separator between commands.
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
fn classify_failure(out: &RawOutput) -> SubstrateError {
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

/// Quotes `s` as one POSIX shell word.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
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

fn parse_spawned(line: &str) -> Option<Spawned> {
    let (pane, pid) = line.trim().split_once(' ')?;
    if !pane.starts_with('%') {
        return None;
    }
    Some(Spawned {
        pane: pane.to_string(),
        pane_pid: pid.parse().ok()?,
    })
}

/// Parses `list-panes` output in [`LIST_FORMAT`]. A line that does not
/// parse cannot be one of marvel's panes (their names are validated), so it
/// is skipped rather than failing the whole listing.
fn parse_list(out: &str) -> Vec<PaneInfo> {
    out.lines().filter_map(parse_pane_line).collect()
}

fn parse_pane_line(line: &str) -> Option<PaneInfo> {
    let mut f = line.splitn(7, '\t');
    let pane = f.next()?;
    let pid = f.next()?;
    let dead = f.next()?;
    let status = f.next()?;
    let signal = f.next()?;
    let owner = f.next()?;
    let session = f.next()?;
    if !pane.starts_with('%') {
        return None;
    }
    let num = |s: &str| -> Option<i32> { s.trim().parse().ok() };
    Some(PaneInfo {
        session_name: session.to_string(),
        pane: pane.to_string(),
        pane_pid: pid.trim().parse().ok()?,
        owner: owner.to_string(),
        dead: dead.trim() == "1",
        dead_status: num(status),
        dead_signal: num(signal),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            let _ = self.tmux.kill_server();
            let _ = std::fs::remove_file(socket_path(&self.name));
        }
    }

    pub fn req(name: &str, argv: &[&str]) -> SpawnRequest {
        SpawnRequest {
            name: name.to_string(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            cwd: None,
            log: None,
            owner: "test-owner".to_string(),
        }
    }

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
        wait_for("printed args", Duration::from_secs(5), || {
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
        wait_for("output", Duration::from_secs(5), || {
            let text = srv.tmux.capture(&s.pane, 0).unwrap();
            text.contains("single-word-ran").then_some(())
        });
    }

    #[test]
    fn kill_removes_the_session_and_absent_is_success() {
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
        wait_for("no server", Duration::from_secs(5), || {
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
        let text = wait_for("last line", Duration::from_secs(5), || {
            let t = srv.tmux.capture(&s.pane, 200).unwrap();
            t.contains("last-line").then_some(t)
        });
        assert!(text.starts_with("1\n2\n"), "{text:?}");
        assert!(text.ends_with("120\nlast-line\n"), "{text:?}");
        let visible = srv.tmux.capture(&s.pane, 0).unwrap();
        assert!(!visible.starts_with("1\n"), "{visible:?}");
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
        wait_for("echoed text", Duration::from_secs(5), || {
            let t = srv.tmux.capture(&s.pane, 0).unwrap();
            // Typed, echoed by the terminal, then printed again by cat.
            (t.matches("-n hello; Enter C-c;\n").count() == 2 && t.matches("wo\n").count() == 2)
                .then_some(())
        });
        srv.tmux.send_keys(&s.pane, &["C-c".into()]).unwrap();
        wait_for("cat ended by C-c", Duration::from_secs(5), || {
            let gone = matches!(srv.tmux.list(), Ok(Observation::NoServer))
                || srv.tmux.list() == Ok(Observation::Panes(Vec::new()));
            gone.then_some(())
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
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        let started = Instant::now();
        let got = quick.list();
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
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
            t.attach_argv("marvel/w/t/r-0"),
            [
                "tmux",
                "-L",
                "sock",
                "attach-session",
                "-t",
                "=marvel/w/t/r-0"
            ]
        );
        assert_eq!(
            t.switch_argv("marvel/w/t/r-0"),
            [
                "tmux",
                "-L",
                "sock",
                "switch-client",
                "-t",
                "=marvel/w/t/r-0"
            ]
        );
        let d = Tmux::new(None, Duration::from_secs(1));
        assert_eq!(d.attach_argv("x")[1], "attach-session");
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
            "pipe-pane -O -t =marvel/w/t/r-0: exec '/opt/my marvel/bin' logpipe --max-bytes 1048576 '/state/logs/7##.log'"
        );
    }

    #[test]
    fn list_lines_parse_with_empty_fields_as_none() {
        let out = "%1\t100\t0\t\t\tme\tmarvel/a/b/c-0\n%2\t101\t1\t\t9\t\tfor\teign\nbroken\n%3\t102\t1\t3\t\tme\tx\n";
        let p = parse_list(out);
        assert_eq!(p.len(), 3);
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
