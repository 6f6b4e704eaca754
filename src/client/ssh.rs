//! Another host's daemon, over OpenSSH: the system `ssh` (the user's keys,
//! agent, `~/.ssh/config`, known hosts, ProxyJump) runs
//! `marvel daemon dial-stdio` there, which relays the same protocol as the
//! local socket. ssh runs in batch mode (it never prompts) with a connect
//! timeout, and shares one connection between commands (ControlMaster)
//! unless the user's config already does. marvel itself listens on no
//! network port.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::client::dial::Greeting;
use crate::context::Host;
use crate::error::{Error, Result};
use crate::proto::{Envelope, PROTOCOL_VERSION, Request, Response};

/// Replaces `ssh` (and may add options), as `GIT_SSH_COMMAND` does for git:
/// split into words like a shell would.
pub const SSH_COMMAND_ENV: &str = "MARVEL_SSH_COMMAND";
/// How long a connection marvel shares stays open after its last command.
pub const CONTROL_PERSIST: &str = "60s";
/// Keep-alive probes on a connection, when the user's config sets none: a
/// dead link is noticed within interval × count.
const ALIVE_INTERVAL: u32 = 10;
const ALIVE_COUNT: u32 = 3;
/// Beyond the connect timeout, how long the greeting may take: logging in,
/// and starting the daemon there (which may take up to 10 s).
const GREETING_GRACE: Duration = Duration::from_secs(20);
/// How long an answer may take once the daemon there has the request.
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
/// After ssh's output ends, how long it may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(3);
/// How much of ssh's stderr is kept for the diagnosis.
const STDERR_KEEP: usize = 16 * 1024;
/// Longest answer line read from the host.
const MAX_LINE: usize = 256 << 20;

/// A host context: its name and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub context: String,
    pub host: Host,
}

impl Remote {
    /// `build (ssh://me@build.example)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.context, self.host.url)
    }

    /// The host as the user would name it to ssh.
    fn shown_host(&self) -> &str {
        &self.host.url.host
    }
}

/// How long opening a session may take before ssh's own timeouts end it:
/// the connect timeout, then the greeting.
pub fn greeting_deadline(r: &Remote) -> Duration {
    r.host.connect_timeout() + GREETING_GRACE
}

/// Sends one request and returns the answer. With `start` false, a host
/// where no daemon runs answers `None` and starts none. `deadline` bounds
/// the whole exchange (a fan-out's per-host timeout).
pub fn call(
    r: &Remote,
    req: &Request,
    start: bool,
    deadline: Option<Instant>,
) -> Result<Option<Response>> {
    let Some(mut s) = Session::open(r, req, start, deadline)? else {
        return Ok(None);
    };
    let answer_by = Instant::now() + ANSWER_DEADLINE;
    let by = deadline.map_or(answer_by, |d| d.min(answer_by));
    let line = match s.out.line(Some(by)) {
        Ok(Some(line)) => line,
        Ok(None) => return Err(s.lost("the connection ended before the answer")),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            return Err(s.timed_out(by.saturating_duration_since(s.started)));
        }
        Err(e) => return Err(s.lost(&format!("cannot read the answer: {e}"))),
    };
    let resp = decode(&line, r)?;
    s.finish();
    match resp {
        Response::Error(e) => Err(e),
        resp => Ok(Some(resp)),
    }
}

/// Sends a streaming request and hands each answer to `on` until it
/// returns `false` or the daemon there ends the stream. A connection that
/// breaks is an error that says so.
pub fn follow(
    r: &Remote,
    req: &Request,
    on: &mut dyn FnMut(Response) -> Result<bool>,
) -> Result<()> {
    let Some(mut s) = Session::open(r, req, true, None)? else {
        return Err(Error::daemon(format!("{} started no daemon", r.describe())));
    };
    loop {
        let line = match s.out.line(None) {
            Ok(Some(line)) => line,
            Ok(None) => {
                return match s.wait_exit() {
                    Some(st) if st.success() => Ok(()),
                    _ => Err(s.lost("the connection ended")),
                };
            }
            Err(e) => return Err(s.lost(&format!("cannot read from ssh: {e}"))),
        };
        match decode(&line, r)? {
            Response::Error(e) => return Err(e),
            resp => {
                if !on(resp)? {
                    s.finish();
                    return Ok(());
                }
            }
        }
    }
}

/// Replaces this process with `ssh -t HOST marvel attach KEY`: the remote
/// marvel opens the pane in its own tmux, on this terminal.
pub fn attach(r: &Remote, key: &str) -> Result<i32> {
    let argv = attach_argv(r, key)?;
    let (program, rest) = argv.split_first().expect("ssh argv has a program");
    let err = Command::new(program).args(rest).exec();
    Err(missing_ssh(program, &err))
}

/// `ssh -t HOST marvel attach KEY`, for a caller that runs it as a child
/// (the dashboard, which comes back when the user detaches).
pub fn attach_argv(r: &Remote, key: &str) -> Result<Vec<OsString>> {
    let words = ssh_words()?;
    let settings = probe(&words, r)?;
    let mut argv = options(&words, r, &settings, false)?;
    argv.push("-t".into());
    argv.extend(destination(r));
    argv.push(remote_command(&r.host, &["attach", key])?.into());
    Ok(argv)
}

/// One running `ssh … marvel daemon dial-stdio`, greeted.
struct Session<'a> {
    remote: &'a Remote,
    child: Child,
    out: Lines,
    /// Dropping it closes ssh's stdin: the far end then stops relaying.
    stdin_open: Option<mpsc::Sender<()>>,
    stderr: mpsc::Receiver<Vec<u8>>,
    started: Instant,
    /// ssh's exit status, once known.
    status: Option<ExitStatus>,
}

impl<'a> Session<'a> {
    /// Starts ssh, sends `req` at once (the far end reads it after the
    /// greeting; no round trip is spent waiting) and reads the greeting.
    fn open(
        r: &'a Remote,
        req: &Request,
        start: bool,
        deadline: Option<Instant>,
    ) -> Result<Option<Session<'a>>> {
        let started = Instant::now();
        let words = ssh_words()?;
        let settings = probe(&words, r)?;
        let mut argv = options(&words, r, &settings, true)?;
        argv.extend(destination(r));
        let mut dial = vec!["daemon", "dial-stdio"];
        if !start {
            dial.push("--no-start");
        }
        argv.push(remote_command(&r.host, &dial)?.into());
        let (program, rest) = argv.split_first().expect("ssh argv has a program");
        let mut cmd = Command::new(program);
        cmd.args(rest)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Ctrl-C on the terminal reaches ssh too; it must not print its own
        // complaints over ours, and it ends with our process anyway.
        let mut child = cmd.spawn().map_err(|e| missing_ssh(program, &e))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let line = envelope(req)?;
        let (open_tx, open_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut stdin = stdin;
            // A write that fails means ssh ended: its exit says why.
            let _ = stdin.write_all(&line).and_then(|()| stdin.flush());
            // Holds stdin open until the session is dropped.
            let _ = open_rx.recv();
        });
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = err_tx.send(read_tail(stderr, STDERR_KEEP));
        });
        let mut s = Session {
            remote: r,
            child,
            out: Lines::new(stdout),
            stdin_open: Some(open_tx),
            stderr: err_rx,
            started,
            status: None,
        };
        let greet_by = started + greeting_deadline(r);
        let by = deadline.map_or(greet_by, |d| d.min(greet_by));
        let line = match s.out.line(Some(by)) {
            Ok(Some(line)) => line,
            Ok(None) => return Err(s.failed_to_start()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(s.timed_out(by.saturating_duration_since(started)));
            }
            Err(e) => return Err(s.lost(&format!("cannot read from ssh: {e}"))),
        };
        let greeting = match greeting(&line, r) {
            Ok(g) => g,
            Err(e) => {
                s.finish();
                return Err(e);
            }
        };
        if let Some(e) = greeting.error {
            s.finish();
            return Err(from_host(e, r));
        }
        if !greeting.connected {
            s.finish();
            return Ok(None);
        }
        Ok(Some(s))
    }

    /// Closes ssh's stdin and lets it end on its own (briefly), else ends it.
    fn finish(&mut self) {
        self.stdin_open = None;
        if self.wait_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// ssh's exit status, waiting up to [`EXIT_WAIT`]; `None` if it is
    /// still running.
    fn wait_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let until = Instant::now() + EXIT_WAIT;
            loop {
                match self.child.try_wait() {
                    Ok(Some(st)) => {
                        self.status = Some(st);
                        break;
                    }
                    Ok(None) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    _ => break,
                }
            }
        }
        self.status
    }

    /// What ssh said on stderr (once it has exited, or briefly).
    fn stderr_text(&mut self) -> String {
        let bytes = self
            .stderr
            .recv_timeout(Duration::from_millis(500))
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// ssh ended before the greeting: say why, from its exit and stderr.
    fn failed_to_start(mut self) -> Error {
        self.stdin_open = None;
        let status = self.wait_exit();
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let stderr = self.stderr_text();
        diagnose(self.remote, status.and_then(|s| s.code()), &stderr)
    }

    fn timed_out(&mut self, after: Duration) -> Error {
        self.stdin_open = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        Error::unreachable(
            format!(
                "{} did not answer within {}",
                self.remote.describe(),
                humantime::format_duration(Duration::from_millis(after.as_millis() as u64))
            ),
            format!(
                "check that `ssh {}` works and the host is up; the connect timeout of a context is set with `marvel context add … --connect-timeout DUR`",
                self.remote.host.url.destination()
            ),
        )
    }

    /// The connection broke after the greeting.
    fn lost(&mut self, what: &str) -> Error {
        self.stdin_open = None;
        let status = self.wait_exit();
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let stderr = self.stderr_text();
        let said = last_line(&stderr);
        let why = match (said, status.and_then(|s| s.code())) {
            (Some(line), _) => format!(" (ssh: {line})"),
            (None, Some(code)) => format!(" (ssh exited with status {code})"),
            (None, None) => String::new(),
        };
        Error::unreachable(
            format!(
                "lost the connection to {}: {what}{why}",
                self.remote.describe()
            ),
            format!(
                "the ssh connection to {} broke; check the network and `ssh {}`, then run the command again",
                self.remote.shown_host(),
                self.remote.host.url.destination()
            ),
        )
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.stdin_open = None;
        if self.status.is_none() && !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn envelope(req: &Request) -> Result<Vec<u8>> {
    let env = Envelope {
        protocol: PROTOCOL_VERSION,
        request: req.clone(),
    };
    let mut line = serde_json::to_vec(&env)
        .map_err(|e| Error::other(format!("cannot encode the request: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

fn decode(line: &str, r: &Remote) -> Result<Response> {
    serde_json::from_str(line).map_err(|e| {
        Error::unreachable(
            format!("cannot understand the answer of {} ({e})", r.describe()),
            "is marvel there another version? `marvel status` there shows it",
        )
    })
}

/// Reads the greeting: first the two fields every version keeps, so that
/// a marvel of another protocol is named as such rather than misread.
fn greeting(line: &str, r: &Remote) -> Result<Greeting> {
    let value: Option<serde_json::Value> = serde_json::from_str(line).ok();
    let version = value
        .as_ref()
        .and_then(|v| Some((v.get("marvel")?.as_str()?, v.get("protocol")?.as_u64()?)));
    let Some((theirs, protocol)) = version else {
        let shown = crate::output::escape_line(line.trim_end());
        let shown: String = shown.chars().take(200).collect();
        return Err(Error::unreachable(
            format!(
                "{} printed {shown:?} instead of marvel's greeting",
                r.describe()
            ),
            format!(
                "something there prints to standard output before marvel starts (the login shell's startup files on {}?); non-interactive shells must print nothing",
                r.shown_host()
            ),
        ));
    };
    if protocol != u64::from(PROTOCOL_VERSION) {
        return Err(version_mismatch(r, theirs, protocol));
    }
    serde_json::from_str(line).map_err(|e| {
        Error::unreachable(
            format!("cannot understand the greeting of {} ({e})", r.describe()),
            format!(
                "{} runs marvel {theirs}, this is marvel {}; install the same version on both",
                r.shown_host(),
                env!("CARGO_PKG_VERSION")
            ),
        )
    })
}

/// Two marvels that speak different protocols: which one to upgrade.
fn version_mismatch(r: &Remote, theirs: &str, protocol: u64) -> Error {
    let ours = env!("CARGO_PKG_VERSION");
    let message = format!(
        "{} runs marvel {theirs} (protocol {protocol}), but this is marvel {ours} (protocol {PROTOCOL_VERSION}): they cannot talk",
        r.describe()
    );
    let help = if protocol < u64::from(PROTOCOL_VERSION) {
        format!(
            "upgrade marvel on {} to {ours}, then run `marvel daemon stop` there (its panes keep running; the next command starts the new daemon)",
            r.shown_host()
        )
    } else {
        format!("upgrade marvel here to {theirs} or later")
    };
    Error::unreachable(message, help)
}

/// An error the far end reported before relaying: it concerns that host.
fn from_host(e: Error, r: &Remote) -> Error {
    let host = r.shown_host();
    match e {
        Error::DaemonUnavailable { message } => Error::unreachable(
            format!(
                "the daemon on {} cannot be started: {message}",
                r.describe()
            ),
            format!(
                "run `ssh {} {} status` to see more; its log is daemon.log in its state directory",
                r.host.url.destination(),
                r.host.program()
            ),
        ),
        Error::Untrusted { message, help } => Error::untrusted(
            format!("on {host}: {message}"),
            format!("on {host}: {help}"),
        ),
        Error::Io { object, message } => Error::Io {
            object: format!("{host}:{object}"),
            message,
        },
        other => other,
    }
}

/// Why ssh ended before marvel greeted, from its exit code and stderr.
fn diagnose(r: &Remote, code: Option<i32>, stderr: &str) -> Error {
    let dest = r.host.url.destination();
    let host = r.shown_host();
    let said = last_line(stderr).unwrap_or("no message");
    let has = |s: &str| stderr.contains(s);
    let ssh_v = format!("`ssh -v {dest}` shows what ssh does");
    // ssh itself fails with 255; anything else is the remote command's status.
    let (message, help) = if !matches!(code, Some(255) | None) {
        if has("unrecognized subcommand") {
            (
                format!(
                    "the marvel on {} is too old to be reached over ssh (it has no `marvel daemon dial-stdio`): {said}",
                    r.describe()
                ),
                format!(
                    "upgrade marvel on {host} to {} or later",
                    env!("CARGO_PKG_VERSION")
                ),
            )
        } else if code == Some(127) {
            (
                format!(
                    "`{}` is not on the PATH of {} (or does not exist there): {said}",
                    r.host.program(),
                    r.describe()
                ),
                format!(
                    "install marvel on {host}, or give its full path: `marvel context add {} {} --remote-path /path/to/marvel --force`",
                    r.context, r.host.url
                ),
            )
        } else if code == Some(126) {
            (
                format!(
                    "cannot run `{}` on {}: {said}",
                    r.host.program(),
                    r.describe()
                ),
                "check that the file is executable there (chmod +x), or fix --remote-path"
                    .to_string(),
            )
        } else {
            (
                format!(
                    "marvel on {} ended{} before answering: {said}",
                    r.describe(),
                    code.map(|c| format!(" with status {c}"))
                        .unwrap_or_default()
                ),
                format!(
                    "run `ssh {dest} {} daemon dial-stdio` to see what it says",
                    r.host.program()
                ),
            )
        }
    } else if has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        (
            format!("ssh refused {}: its host key has changed", r.describe()),
            format!(
                "if {host} was reinstalled, remove the old key with `ssh-keygen -R {host}` and connect once with `ssh {dest}`; otherwise someone may be intercepting the connection"
            ),
        )
    } else if has("Host key verification failed") || has("host key is known") {
        (
            format!(
                "ssh refused {}: its host key is not known, and marvel runs ssh in batch mode, which never asks",
                r.describe()
            ),
            format!(
                "connect once with `ssh {dest}` and check the key it shows (or add it with ssh-keyscan), then try again"
            ),
        )
    } else if has("Permission denied") || has("Too many authentication failures") {
        (
            format!("ssh could not log in to {}: {said}", r.describe()),
            format!(
                "marvel runs ssh in batch mode: `ssh {dest} true` must work without a prompt (load your key into ssh-agent, or name it with IdentityFile in ~/.ssh/config)"
            ),
        )
    } else if has("Could not resolve hostname") {
        (
            format!("cannot resolve the host of {}: {said}", r.describe()),
            format!("check the host name in the context (`marvel context ls`); {ssh_v}"),
        )
    } else if has("Connection refused")
        || has("timed out")
        || has("No route to host")
        || has("Network is unreachable")
        || has("Connection closed by")
        || has("Connection reset")
    {
        (
            format!("cannot connect to {}: {said}", r.describe()),
            format!("check that {host} is up and its sshd listens on that port; {ssh_v}"),
        )
    } else {
        (format!("ssh to {} failed: {said}", r.describe()), ssh_v)
    };
    Error::unreachable(message, help)
}

/// The last line that says something, without control characters.
fn last_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| l.trim_end_matches('\r'))
}

fn missing_ssh(program: &OsString, e: &io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::unreachable(
            format!(
                "cannot run {}: it is not installed, or not on PATH",
                Path::new(program).display()
            ),
            format!(
                "install the OpenSSH client (Debian/Ubuntu: apt install openssh-client), or name it in {SSH_COMMAND_ENV}"
            ),
        )
    } else {
        Error::unreachable(
            format!("cannot run {}: {e}", Path::new(program).display()),
            format!("check {SSH_COMMAND_ENV}, or the ssh on PATH"),
        )
    }
}

/// The ssh program and its extra words: `MARVEL_SSH_COMMAND`, else `ssh`.
fn ssh_words() -> Result<Vec<OsString>> {
    match std::env::var(SSH_COMMAND_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        None => Ok(vec!["ssh".into()]),
        Some(v) => match shlex::split(&v) {
            Some(words) if !words.is_empty() => Ok(words.into_iter().map(Into::into).collect()),
            _ => Err(Error::usage(format!(
                "{SSH_COMMAND_ENV} is not a command line a shell could split: {v:?}"
            ))),
        },
    }
}

/// `-p PORT -l USER -- HOST`.
fn destination(r: &Remote) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    if let Some(p) = r.host.url.port {
        v.extend(["-p".into(), p.to_string().into()]);
    }
    if let Some(u) = &r.host.url.user {
        v.extend(["-l".into(), u.into()]);
    }
    v.push("--".into());
    v.push(r.host.url.host.clone().into());
    v
}

/// What the user's ssh config already settles for this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Settings {
    /// The user shares connections themselves (a ControlPath is set).
    own_control: bool,
    /// The user sets keep-alive probes themselves.
    own_keepalive: bool,
}

/// Reads `ssh -G`: the configuration ssh would use for this host, after
/// every Host and Match block (no connection is made).
fn probe(words: &[OsString], r: &Remote) -> Result<Settings> {
    let (program, rest) = words.split_first().expect("ssh words have a program");
    let mut cmd = Command::new(program);
    cmd.args(rest).arg("-G").arg("-T").args(destination(r));
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| missing_ssh(program, &e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::unreachable(
            format!(
                "ssh cannot read its configuration for {}: {}",
                r.describe(),
                last_line(&stderr).unwrap_or("no message")
            ),
            "check ~/.ssh/config (`ssh -G HOST` shows what ssh makes of it)",
        ));
    }
    Ok(settings(&String::from_utf8_lossy(&out.stdout)))
}

fn settings(g: &str) -> Settings {
    let mut s = Settings::default();
    for line in g.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key.to_ascii_lowercase().as_str() {
            "controlpath" if !value.is_empty() && value != "none" => s.own_control = true,
            "serveraliveinterval" if value.trim() != "0" => s.own_keepalive = true,
            _ => {}
        }
    }
    s
}

/// The ssh command line up to the destination: the user's program and
/// words, batch mode and a connect timeout, no tty, no forwarding, and the
/// connection sharing and keep-alives the user's config does not set.
fn options(words: &[OsString], r: &Remote, s: &Settings, batch: bool) -> Result<Vec<OsString>> {
    let mut argv: Vec<OsString> = words.to_vec();
    let mut opt = |o: String| {
        argv.push("-o".into());
        argv.push(o.into());
    };
    if batch {
        opt("BatchMode=yes".into());
    }
    opt(format!(
        "ConnectTimeout={}",
        r.host.connect_timeout().as_secs().max(1)
    ));
    if !s.own_keepalive {
        opt(format!("ServerAliveInterval={ALIVE_INTERVAL}"));
        opt(format!("ServerAliveCountMax={ALIVE_COUNT}"));
    }
    if r.host.share && !s.own_control {
        let dir = control_dir()?;
        opt("ControlMaster=auto".into());
        opt(format!("ControlPath={}/%C", dir.display()));
        opt(format!("ControlPersist={CONTROL_PERSIST}"));
    }
    if batch {
        argv.extend(["-T".into(), "-x".into()]);
        argv.push("-o".into());
        argv.push("ClearAllForwardings=yes".into());
    }
    Ok(argv)
}

/// The command line ssh hands to the remote login shell: `env NAME=VALUE…`
/// when the context sets variables, then the marvel program and `args`,
/// each word quoted for a POSIX shell.
fn remote_command(h: &Host, args: &[&str]) -> Result<String> {
    let mut words: Vec<String> = Vec::new();
    if !h.remote_env.is_empty() {
        words.push("env".into());
        words.extend(h.remote_env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    words.push(h.program().to_string());
    words.extend(args.iter().map(|a| a.to_string()));
    shlex::try_join(words.iter().map(String::as_str))
        .map_err(|e| Error::usage(format!("cannot quote the remote command: {e}")))
}

/// Where marvel keeps its shared connections' sockets: a private
/// directory under `$XDG_RUNTIME_DIR/marvel`, else `/tmp/marvel-<uid>`
/// (as tmux does), made 0700 and refused if anyone else could use it: a
/// control socket is a logged-in session.
fn control_dir() -> Result<PathBuf> {
    let me = crate::statedir::me();
    let base = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(run) => PathBuf::from(run).join("marvel"),
        None => std::env::temp_dir().join(format!("marvel-{me}")),
    };
    let dir = base.join("ssh");
    for d in [&base, &dir] {
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(d, &e)),
        }
        let m = std::fs::symlink_metadata(d).map_err(|e| Error::io(d, &e))?;
        let problem = if !m.is_dir() {
            Some("it is not a directory")
        } else if m.uid() != me {
            Some("it belongs to another user")
        } else if m.permissions().mode() & 0o077 != 0 {
            Some("other users have access to it")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Error::untrusted(
                format!(
                    "refusing {} for ssh connection sharing: {problem} (owner uid {}, mode {:04o}; you are uid {me})",
                    d.display(),
                    m.uid(),
                    m.permissions().mode() & 0o7777
                ),
                "remove it so that marvel makes it again (mode 0700), set XDG_RUNTIME_DIR to a directory of your own, or add the context with --no-share",
            ));
        }
    }
    Ok(dir)
}

/// Reads a stream to its end, keeping its last `keep` bytes.
fn read_tail(mut r: impl Read, keep: usize) -> Vec<u8> {
    let mut kept: VecDeque<u8> = VecDeque::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend(&buf[..n]);
                while kept.len() > keep {
                    kept.pop_front();
                }
            }
        }
    }
    kept.into()
}

/// Lines from ssh's stdout, each read within a deadline.
struct Lines {
    src: ChildStdout,
    buf: Vec<u8>,
}

impl Lines {
    fn new(src: ChildStdout) -> Lines {
        Lines {
            src,
            buf: Vec::new(),
        }
    }

    /// The next line without its newline; `None` at the end (a last line
    /// without a newline is dropped: a line is whole or it was cut off).
    fn line(&mut self, deadline: Option<Instant>) -> io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                return String::from_utf8(line)
                    .map(Some)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an answer line is too long",
                ));
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                let timeout = Timespec::try_from(left).unwrap_or(Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                });
                let mut fds = [PollFd::new(&self.src, PollFlags::IN)];
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(0) => continue,
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            match rustix::io::read(self.src.as_fd(), &mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::SshUrl;

    fn remote(url: &str) -> Remote {
        Remote {
            context: "build".into(),
            host: Host::new(SshUrl::parse(url).unwrap()),
        }
    }

    fn text(argv: &[OsString]) -> Vec<String> {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_destination_is_never_taken_for_an_option() {
        let r = remote("ssh://me@build.example:2222");
        assert_eq!(
            text(&destination(&r)),
            ["-p", "2222", "-l", "me", "--", "build.example"]
        );
        assert_eq!(text(&destination(&remote("ssh://b"))), ["--", "b"]);
    }

    #[test]
    fn the_remote_command_is_quoted_for_its_shell() {
        let mut h = Host::new(SshUrl::parse("ssh://b").unwrap());
        assert_eq!(
            remote_command(&h, &["daemon", "dial-stdio"]).unwrap(),
            "marvel daemon dial-stdio"
        );
        h.remote_path = Some("/opt/my tools/marvel".into());
        h.remote_env
            .insert("MARVEL_HOME".into(), "/srv/m; rm -rf /".into());
        assert_eq!(
            remote_command(&h, &["attach", "w-0"]).unwrap(),
            "env 'MARVEL_HOME=/srv/m; rm -rf /' '/opt/my tools/marvel' attach w-0"
        );
    }

    #[test]
    fn options_honour_what_the_user_set() {
        let mut r = remote("ssh://b");
        r.host.share = false;
        let argv = text(&options(&["ssh".into()], &r, &Settings::default(), true).unwrap());
        assert_eq!(argv[0], "ssh");
        assert!(argv.contains(&"BatchMode=yes".into()), "{argv:?}");
        assert!(argv.contains(&"ConnectTimeout=10".into()), "{argv:?}");
        assert!(argv.contains(&"ServerAliveInterval=10".into()), "{argv:?}");
        assert!(!argv.iter().any(|a| a.starts_with("Control")), "{argv:?}");
        let own = Settings {
            own_control: true,
            own_keepalive: true,
        };
        r.host.share = true;
        let argv =
            text(&options(&["ssh".into(), "-F".into(), "cfg".into()], &r, &own, true).unwrap());
        assert_eq!(&argv[..3], ["ssh", "-F", "cfg"]);
        assert!(!argv.iter().any(|a| a.starts_with("Control")), "{argv:?}");
        assert!(
            !argv.iter().any(|a| a.starts_with("ServerAlive")),
            "{argv:?}"
        );
    }

    #[test]
    fn ssh_g_tells_whether_the_user_shares_connections() {
        let g = "user me\nhostname b\ncontrolmaster false\nserveraliveinterval 0\n";
        assert_eq!(settings(g), Settings::default());
        let g = "controlmaster auto\ncontrolpath /home/me/.ssh/cm-abc\nserveraliveinterval 30\n";
        assert_eq!(
            settings(g),
            Settings {
                own_control: true,
                own_keepalive: true
            }
        );
        assert!(!settings("controlpath none\n").own_control);
    }

    fn said(code: Option<i32>, stderr: &str) -> String {
        diagnose(&remote("ssh://me@build:2222"), code, stderr).to_string()
    }

    #[test]
    fn each_ssh_failure_is_one_error_with_a_hint() {
        let cases = [
            (
                Some(255),
                "Host key verification failed.\r\n",
                "host key is not known",
                "connect once with `ssh me@build`",
            ),
            (
                Some(255),
                "@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n",
                "host key has changed",
                "ssh-keygen -R build",
            ),
            (
                Some(255),
                "me@127.0.0.1: Permission denied (publickey).\r\n",
                "could not log in",
                "ssh-agent",
            ),
            (
                Some(255),
                "ssh: connect to host build port 2222: Connection refused\r\n",
                "cannot connect",
                "sshd listens",
            ),
            (
                Some(255),
                "ssh: connect to host build port 2222: Connection timed out\r\n",
                "cannot connect",
                "sshd listens",
            ),
            (
                Some(255),
                "ssh: Could not resolve hostname build: Name or service not known\r\n",
                "cannot resolve",
                "marvel context ls",
            ),
            (
                Some(127),
                "bash: line 1: marvel: command not found\n",
                "is not on the PATH",
                "--remote-path /path/to/marvel --force",
            ),
            (
                Some(127),
                "sh: 1: /opt/marvel: not found\n",
                "is not on the PATH",
                "marvel context add build ssh://me@build:2222",
            ),
            (
                Some(2),
                "error: unrecognized subcommand 'dial-stdio'\n\nUsage: marvel daemon <COMMAND>\n",
                "too old",
                "upgrade marvel on build",
            ),
            (
                Some(3),
                "boom\n",
                "ended with status 3 before answering: boom",
                "daemon dial-stdio",
            ),
        ];
        for (code, stderr, message, help) in cases {
            let e = said(code, stderr);
            let (first, second) = e.split_once('\n').unwrap();
            assert!(
                first.starts_with("error: ") && first.contains(message),
                "{stderr:?}: {e}"
            );
            assert!(
                second.starts_with("help: ") && second.contains(help),
                "{stderr:?}: {e}"
            );
            assert!(!second.contains('\n'), "one line of help: {e}");
        }
    }

    #[test]
    fn a_version_mismatch_names_both_versions_and_what_to_upgrade() {
        let r = remote("ssh://build");
        let ours = env!("CARGO_PKG_VERSION");
        let old = version_mismatch(&r, "0.0.1", u64::from(PROTOCOL_VERSION) - 1).to_string();
        assert!(old.contains("runs marvel 0.0.1 (protocol"), "{old}");
        assert!(
            old.contains(&format!(
                "this is marvel {ours} (protocol {PROTOCOL_VERSION})"
            )),
            "{old}"
        );
        assert!(
            old.contains(&format!("help: upgrade marvel on build to {ours}")),
            "{old}"
        );
        let new = version_mismatch(&r, "9.0.0", 99).to_string();
        assert!(
            new.contains("help: upgrade marvel here to 9.0.0 or later"),
            "{new}"
        );
        let e = greeting(r#"{"marvel":"9.0.0","protocol":99,"future":{"x":1}}"#, &r).unwrap_err();
        assert!(e.to_string().contains("protocol 99"), "{e}");
    }

    #[test]
    fn a_chatty_login_shell_is_named() {
        let e = greeting("Welcome to build! \u{1b}[1m", &remote("ssh://build")).unwrap_err();
        let e = e.to_string();
        assert!(e.contains(r#"printed "Welcome to build! \\e[1m""#), "{e}");
        assert!(e.contains("startup files"), "{e}");
    }

    #[test]
    fn lines_keep_their_order_and_a_cut_line_is_dropped() {
        let mut child = Command::new("sh")
            .args(["-c", "printf 'a\\nb\\nc'"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Lines::new(child.stdout.take().unwrap());
        let soon = Some(Instant::now() + Duration::from_secs(5));
        assert_eq!(lines.line(soon).unwrap().as_deref(), Some("a"));
        assert_eq!(lines.line(None).unwrap().as_deref(), Some("b"));
        assert_eq!(lines.line(soon).unwrap(), None);
        child.wait().unwrap();
    }

    #[test]
    fn a_silent_stream_times_out_at_its_deadline() {
        let mut child = Command::new("sleep")
            .arg("5")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Lines::new(child.stdout.take().unwrap());
        let start = Instant::now();
        let e = lines
            .line(Some(start + Duration::from_millis(100)))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(4));
        let _ = child.kill();
        let _ = child.wait();
    }
}
