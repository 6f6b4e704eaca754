//! What runs beside each session: the shim (the pane's first process; it
//! supervises the program, reports its start and exit, and writes the
//! pane's output log) and the log pipe that `pipe-pane` starts, which hands
//! the pane's output to the shim and goes (or, when no shim takes it,
//! writes the log itself). One shim per session, so it stays tiny.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use rustix::process::{Pid, Signal};

use crate::paths::{EXITS, Paths, exit_record_name};
use crate::proto::{Envelope, PROTOCOL_VERSION, Request, Response, ShimReport};
use crate::statedir::{self, Dir};

/// How long the shim waits for the daemon to take a `Started` report.
const STARTED_REPLY: Duration = Duration::from_secs(1);
/// How long it waits after an exit: the daemon captures the pane's last
/// output before replying, and the pane lives only as long as the shim.
const EXITED_REPLY: Duration = Duration::from_secs(3);
/// After its terminal hung up, the program gets this long to exit on its
/// own before it is killed, so a program that ignores SIGHUP cannot
/// outlive its pane.
const HANGUP_GRACE_SECS: u32 = 5;
/// Signals the shim passes on to the program.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2];
/// Terminal signals reach the program directly (same process group); the
/// shim itself must survive them. SIGTTOU/SIGTTIN: a program that takes the
/// terminal for its own process group must not stop the shim.
const IGNORED: [libc::c_int; 5] = [
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTSTP,
    libc::SIGTTOU,
    libc::SIGTTIN,
];

/// The program's pid, read by the signal handlers; 0 when there is none.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A forwarded signal that arrived before the program existed.
static PENDING: AtomicI32 = AtomicI32::new(0);
/// Set on SIGHUP: the pane's terminal went away.
static HANGUP: AtomicBool = AtomicBool::new(false);
/// Set on SIGWINCH while the shim stays in a kept pane: draw marvel's line
/// again (the daemon writes a new one and sends SIGWINCH too).
static REDRAW: AtomicBool = AtomicBool::new(false);

/// A run shorter than this is a quick one: of quick runs one after
/// another in a pane, only the first one's screen goes to the scrollback.
const QUICK_RUN: Duration = Duration::from_secs(1);

/// Whether the last screen of a run that lasted `ran` goes to the pane's
/// scrollback when the next run starts, the run before it in the pane
/// having lasted `before` (`None`: there was none). A crash loop of quick
/// runs keeps its first screen, not a copy per crash: those would churn
/// tmux's history at the loop's pace, and the tmux server's memory grew
/// with it for good. Each run's output stays in its log all the same.
fn keeps_screen(ran: Duration, before: Option<Duration>) -> bool {
    ran >= QUICK_RUN || before.is_none_or(|b| b >= QUICK_RUN)
}

/// What the shim writes to the pane before the next run: marvel's line
/// goes, the alternate screen is left, and the terminal is reset (`ESC c`),
/// which in tmux moves the screen to the scrollback as far as it was
/// written; a screen not to keep is cleared first (from the bottom right
/// corner to the start, which tmux never moves to the scrollback, with
/// origin mode off so that the corner is the screen's).
fn fresh_screen(keep: bool) -> &'static [u8] {
    if keep {
        b"\x1b[999;1H\x1b[2K\x1b[?1049l\x1bc"
    } else {
        b"\x1b[999;1H\x1b[2K\x1b[?1049l\x1b[?6l\x1b[999;999H\x1b[1J\x1bc"
    }
}

/// The abstract socket on which the shim of the session logging to `log`
/// takes its pane's output from the log pipe.
pub fn log_socket_name(log: &Path) -> String {
    log::socket_name(log)
}

/// The argv a pane runs: the shim around `command`, started in `cwd`.
/// `env_keys` names the role's own variables the pane is given, which a
/// later run in the same pane must not inherit unless it sets them again.
pub fn shim_argv(
    marvel_bin: &Path,
    uid: u64,
    state_dir: &Path,
    cwd: Option<&Path>,
    env_keys: &[&str],
    command: &[String],
) -> Vec<String> {
    let mut argv = vec![
        marvel_bin.to_string_lossy().into_owned(),
        "shim".to_string(),
        "--uid".to_string(),
        uid.to_string(),
        "--state-dir".to_string(),
        state_dir.to_string_lossy().into_owned(),
    ];
    if let Some(cwd) = cwd {
        argv.push("--cwd".to_string());
        argv.push(cwd.to_string_lossy().into_owned());
    }
    if !env_keys.is_empty() {
        // No variable's name holds '='.
        argv.push("--env-keys".to_string());
        argv.push(env_keys.join("="));
    }
    argv.push("--".to_string());
    argv.extend(command.iter().cloned());
    argv
}

/// Runs `marvel shim …` or `marvel logpipe …` when `args` (the whole argv)
/// asks for one; `None` otherwise. Called before the command-line parser
/// is built, which would cost every pane memory it never uses.
pub fn dispatch(args: &[OsString]) -> Option<i32> {
    let rest: Vec<String> = args
        .iter()
        .skip(2)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args.get(1)?.as_bytes() {
        b"shim" => Some(match parse_shim_args(&rest) {
            Ok(args) => run_shim(&args),
            Err(m) => usage(
                &m,
                "shim --uid N --state-dir DIR [--cwd DIR] [--env-keys K1=K2...] -- PROGRAM [ARGS...]",
            ),
        }),
        b"logpipe" => Some(match parse_logpipe_args(&rest) {
            Ok(args) => run_logpipe(&args),
            Err(m) => usage(
                &m,
                "logpipe [--to-shim] --max-bytes N [--uid N --state-dir DIR --quiet-ms MS] FILE",
            ),
        }),
        _ => None,
    }
}

fn usage(message: &str, synopsis: &str) -> i32 {
    eprintln!("error: {message}\nusage: marvel {synopsis}");
    crate::error::exit::USAGE
}

/// What `marvel shim` is asked to run.
#[derive(Debug, PartialEq, Eq)]
pub struct ShimArgs {
    pub uid: u64,
    pub state_dir: PathBuf,
    /// Where the program starts; it must exist when it does.
    pub cwd: Option<PathBuf>,
    /// The role's variables in the pane's environment (see [`shim_argv`]).
    pub env_keys: Vec<String>,
    pub argv: Vec<String>,
}

/// What a shim that stays in a kept pane runs next when the daemon asks:
/// the slot's next spawn, in the same pane and the same shim, so the pane
/// is neither respawned nor piped again. The daemon writes it to
/// `exits/<uid>.next` (`uid` being the run that ended there) and sends the
/// shim SIGWINCH.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NextRun {
    pub uid: u64,
    pub argv: Vec<String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The run's whole environment on top of the shim's own.
    pub env: std::collections::BTreeMap<String, String>,
    /// How long output must stop before the daemon is told it stopped.
    pub quiet_ms: u64,
}

fn parse_shim_args(args: &[String]) -> Result<ShimArgs, String> {
    let (mut uid, mut dir, mut cwd) = (None, None, None);
    let mut env_keys = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--uid" => {
                let v = it.next().ok_or("--uid needs a value")?;
                uid = Some(v.parse::<u64>().map_err(|_| format!("bad --uid {v:?}"))?);
            }
            "--state-dir" => {
                dir = Some(PathBuf::from(it.next().ok_or("--state-dir needs a value")?))
            }
            "--cwd" => cwd = Some(PathBuf::from(it.next().ok_or("--cwd needs a value")?)),
            "--env-keys" => {
                let v = it.next().ok_or("--env-keys needs a value")?;
                env_keys = v.split('=').map(str::to_string).collect();
            }
            "--" => break,
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let argv: Vec<String> = it.cloned().collect();
    match (uid, dir) {
        (Some(uid), Some(state_dir)) => Ok(ShimArgs {
            uid,
            state_dir,
            cwd,
            env_keys,
            argv,
        }),
        _ => Err("--uid and --state-dir are required".into()),
    }
}

/// What `marvel logpipe` is asked to do.
#[derive(Debug, PartialEq, Eq)]
pub struct LogpipeArgs {
    pub file: PathBuf,
    pub max_bytes: u64,
    /// Whom to tell when output starts and stops, if anyone.
    pub reports: Option<Reports>,
    /// Hand the pane's output to the session's shim if it takes it.
    pub to_shim: bool,
}

/// The session a log pipe reports for, its daemon, and how long a quiet
/// spell must last before the pipe says the output stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reports {
    pub uid: u64,
    pub state_dir: PathBuf,
    pub quiet: Duration,
}

fn parse_logpipe_args(args: &[String]) -> Result<LogpipeArgs, String> {
    let (mut max, mut uid, mut dir, mut quiet) = (None, None, None, None);
    let mut to_shim = false;
    let Some((file, flags)) = args.split_last() else {
        return Err("expected --max-bytes N FILE".into());
    };
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        if flag == "--to-shim" {
            to_shim = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("bad {flag} {value:?}"))
        };
        match flag.as_str() {
            "--max-bytes" => max = Some(number()?),
            "--uid" => uid = Some(number()?),
            "--quiet-ms" => quiet = Some(Duration::from_millis(number()?.max(1))),
            "--state-dir" => dir = Some(PathBuf::from(value)),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let max_bytes = max.ok_or("expected --max-bytes N FILE")?;
    let reports = match (uid, dir, quiet) {
        (Some(uid), Some(state_dir), Some(quiet)) => Some(Reports {
            uid,
            state_dir,
            quiet,
        }),
        (None, None, None) => None,
        _ => return Err("--uid, --state-dir and --quiet-ms go together".into()),
    };
    Ok(LogpipeArgs {
        file: PathBuf::from(file),
        max_bytes,
        reports,
        to_shim,
    })
}

/// Supervises the program in the current terminal and returns the exit
/// code to leave with: the program's, or 128 + signal, like a shell. A
/// shim whose pane marvel keeps after the program ended may be asked to
/// run the slot's next program there: it does, as often as it is asked.
pub fn run_shim(args: &ShimArgs) -> i32 {
    let paths = Paths {
        root: args.state_dir.clone(),
    };
    install_handlers();
    let log = log::own(&paths.session_log(args.uid), args.uid, &paths.root);
    let terminal = Terminal::save();
    let mut run = NextRun {
        uid: args.uid,
        argv: args.argv.clone(),
        cwd: args.cwd.clone(),
        env: Default::default(),
        quiet_ms: 0,
    };
    // The first run has its environment from the pane; a later one gets
    // its own in place of the role variables the pane was given.
    let mut unset: &[String] = &[];
    let mut before = None;
    // The run before, whose exit record this one's takes over.
    let mut previous = None;
    loop {
        let began = Instant::now();
        let (code, signal, failure) = run_program(&paths, &run, unset, previous);
        previous = Some(run.uid);
        let ran = began.elapsed();
        let next = match finish(&paths, run.uid, code, signal, failure, log.as_ref()) {
            After::Exit(status) => return status,
            After::Run(next) => next,
        };
        if let Some(log) = &log {
            // A quick run (a crash loop, most likely) waits for tmux to have
            // taken its output before the next begins, as the report did
            // before it stopped waiting: runs that outpace tmux pile their
            // output up in it.
            if ran < QUICK_RUN {
                log.settle();
            }
            log.next_run(next.uid, next.quiet_ms);
        }
        // What the last program left of the terminal goes: marvel's line
        // on the bottom row, the alternate screen, the modes and settings,
        // and the screen, which goes to the scrollback as far as the
        // program printed (unless it is one more quick run's). Then the
        // mark after which the log belongs to the next run.
        terminal.restore();
        let mut out = io::stdout().lock();
        let _ = out
            .write_all(fresh_screen(keeps_screen(ran, before)))
            .and_then(|_| out.write_all(RUN_BEGINS))
            .and_then(|_| out.flush());
        drop(out);
        before = Some(ran);
        unset = &args.env_keys;
        run = next;
    }
}

/// Runs `run`'s program to its end, reporting its start; returns its exit
/// code, signal, and why it could not start, if it could not.
fn run_program(
    paths: &Paths,
    run: &NextRun,
    unset: &[String],
    previous: Option<u64>,
) -> (Option<i32>, Option<i32>, Option<String>) {
    let uid = run.uid;
    let Some(program) = run.argv.first() else {
        eprintln!("marvel: no command to run");
        return (Some(127), None, Some("no command to run".into()));
    };
    // A directory that vanished since the team was applied is the role's
    // crash, said as such, never a silent start somewhere else.
    if let Some(cwd) = &run.cwd
        && !cwd.is_dir()
    {
        let why = format!("cwd missing: {}", cwd.display());
        eprintln!("marvel: {why}");
        return (Some(127), None, Some(why));
    }
    let parent = rustix::process::getpid();
    let mut cmd = Command::new(program);
    cmd.args(&run.argv[1..]);
    if let Some(cwd) = &run.cwd {
        cmd.current_dir(cwd);
    }
    for key in unset {
        cmd.env_remove(key);
    }
    cmd.envs(&run.env);
    // SAFETY: only async-signal-safe calls (sigaction, sigprocmask, prctl,
    // getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            reset_signals();
            rustix::process::set_parent_process_death_signal(Some(Signal::HUP))?;
            // The shim may have died before prctl took effect.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            // As a shell does: 127 when there is no such program, 126 when
            // it exists but cannot be executed.
            let code = if e.kind() == ErrorKind::NotFound {
                127
            } else {
                126
            };
            let why = format!("cannot run {program}: {e}");
            eprintln!("marvel: {why}");
            return (Some(code), None, Some(why));
        }
    };
    let pid = Pid::from_child(&child);
    // `child` is reaped by hand below; std's handle is not used again.
    drop(child);
    CHILD.store(pid.as_raw_nonzero().get(), Ordering::SeqCst);
    let early = PENDING.swap(0, Ordering::SeqCst);
    if early != 0 {
        signal_child(pid.as_raw_nonzero().get(), early);
    }
    let _ = report(
        paths,
        uid,
        &ShimReport::Started {
            uid,
            pid: pid.as_raw_nonzero().get() as u32,
            at: Utc::now(),
        },
        STARTED_REPLY,
        previous,
    );
    let (code, signal) = wait_child(pid);
    (code, signal, None)
}

/// The pane's terminal as the shim found it: a program that changed its
/// settings or took it for its own process group leaves it so, and the
/// next run in the same pane gets it back as a new pane would be.
struct Terminal {
    saved: Option<rustix::termios::Termios>,
}

impl Terminal {
    fn save() -> Terminal {
        Terminal {
            saved: rustix::termios::tcgetattr(io::stdin()).ok(),
        }
    }

    fn restore(&self) {
        let stdin = io::stdin();
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, t);
        }
        // SIGTTOU is ignored: a background shim may take the terminal back.
        let _ = rustix::termios::tcsetpgrp(&stdin, rustix::process::getpgrp());
    }
}

/// What the shim does once a program ended: leave with this code, or run
/// the slot's next program in the same pane.
enum After {
    Exit(i32),
    Run(NextRun),
}

/// Records and reports the program's end, stays in the pane if marvel keeps
/// it (showing the program's last screen and a line from marvel until the
/// slot runs there again), and returns the shim's exit code.
fn finish(
    paths: &Paths,
    uid: u64,
    code: Option<i32>,
    signal: Option<i32>,
    failure: Option<String>,
    log: Option<&log::Owner>,
) -> After {
    let at = Utc::now();
    // The log holds the whole run before the daemon, which reads its tail
    // for the marker, hears of the end; or, when the log takes longer than
    // a moment (the mark comes back through tmux, slow with many panes),
    // the end is reported at once and the log thread tells the daemon
    // when the log is complete, for the marker to be read again.
    let mut log_pending = false;
    if let Some(log) = log
        && (HANGUP.load(Ordering::SeqCst) || mark_run_ended().is_ok())
    {
        if HANGUP.load(Ordering::SeqCst) || !log.owns() {
            log.drain();
        } else {
            log_pending = !log.drain_or_tell(uid);
        }
    }
    let exited = ShimReport::Exited {
        uid,
        code,
        signal,
        at,
        hangup: HANGUP.load(Ordering::SeqCst),
        failure: failure.clone(),
        // Only a shim that writes the log itself can log a next run; a
        // program that ended at once may end before the log pipe handed
        // the output over, which the wait for the log above covers.
        rerun: log.is_some_and(log::Owner::owns),
        run_in_answer: log.is_some_and(log::Owner::owns),
    };
    let answer = report(paths, uid, &exited, EXITED_REPLY, None);
    let status = match (code, signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    };
    // With its terminal gone there is nothing to show; a daemon that said
    // the pane is not kept has it removed. Either way the log gets what
    // the program printed before the shim goes.
    let settle = || {
        if let Some(log) = log.filter(|_| log_pending) {
            log.settle();
        }
    };
    if HANGUP.load(Ordering::SeqCst) {
        settle();
        return After::Exit(status);
    }
    let next = match answer {
        Some(Response::Linger(line)) => linger(paths, uid, line),
        // Taken at once only if it is a later run than this one.
        Some(Response::Run(next)) if next.uid > uid => Some(next),
        Some(_) => {
            let _ = mark_run_ended();
            None
        }
        None => {
            // No daemon to ask: it will say more when it is back.
            let how = failure.unwrap_or_else(|| match (code, signal) {
                (_, Some(s)) => format!("signal {s}"),
                (Some(c), None) => format!("exit {c}"),
                (None, None) => "ended".into(),
            });
            linger(
                paths,
                uid,
                format!("ended: {how} — marvel will say what comes next"),
            )
        }
    };
    if next.is_none() {
        settle();
    }
    next.map_or(After::Exit(status), After::Run)
}

/// Tells the daemon that the log of run `uid`, whose end it heard of
/// before, now holds all the run printed.
fn log_complete(state_dir: &Path, uid: u64) {
    let paths = Paths {
        root: state_dir.to_path_buf(),
    };
    let _ = ask(
        &paths.socket(),
        Request::Shim(ShimReport::LogComplete { uid }),
        STARTED_REPLY,
    );
}

/// Stays in the pane of a program that ended, drawing marvel's `line` on
/// its bottom row, until the pane is killed or respawned (SIGHUP), the
/// shim is told to go (SIGTERM), or the daemon has the slot's next program
/// run here (returned). SIGWINCH draws the line again, read anew from
/// `exits/<uid>.line` when the daemon wrote one, unless it comes with the
/// next run in `exits/<uid>.next`.
fn linger(paths: &Paths, uid: u64, mut line: String) -> Option<NextRun> {
    let file = paths.kept_line(uid);
    // The end of the run for the log, then a new line: output the program
    // left on the bottom row scrolls up instead of going under marvel's
    // line.
    if mark_run_ended()
        .and_then(|_| {
            let mut out = io::stdout().lock();
            out.write_all(b"\r\n").and_then(|_| out.flush())
        })
        .is_err()
    {
        return None;
    }
    // SAFETY: signal masks are plain sets; sigsuspend waits for any
    // unblocked signal (SIGWINCH's handler only stores an atomic).
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        for sig in [libc::SIGWINCH, libc::SIGHUP, libc::SIGTERM] {
            libc::sigaddset(&mut block, sig);
        }
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &block, &mut before);
        let mut waiting = before;
        for sig in [libc::SIGWINCH, libc::SIGHUP, libc::SIGTERM] {
            libc::sigdelset(&mut waiting, sig);
        }
        let next = loop {
            // Blocked from here: a next run written before this check was
            // signalled before it too, and one written after wakes the
            // wait below.
            REDRAW.store(false, Ordering::SeqCst);
            match take_next_run(paths, uid) {
                Ok(None) => {}
                Ok(Some(next)) => break Some(next),
                // Not a run this shim can read (written by another marvel
                // version): it goes, and the daemon, finding its pane
                // dead, has the slot run in the pane anew.
                Err(()) => return None,
            }
            if draw(&line).is_err() {
                break None;
            }
            // Blocked until here, so none is missed between check and wait.
            loop {
                libc::sigsuspend(&waiting);
                if HANGUP.load(Ordering::SeqCst) || PENDING.swap(0, Ordering::SeqCst) != 0 {
                    return None;
                }
                if REDRAW.load(Ordering::SeqCst) {
                    break;
                }
            }
            if let Ok(text) = crate::statedir::read(&file) {
                line = String::from_utf8_lossy(&text).into_owned();
            }
        };
        // The next run's shim forwards its signals again.
        libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        next
    }
}

/// The next run the daemon left for the shim of spawn `uid`, taken (the
/// file is removed), if there is one; only a later spawn than `uid` is
/// run. `Err` when there is one the shim cannot read.
fn take_next_run(paths: &Paths, uid: u64) -> Result<Option<NextRun>, ()> {
    let path = paths.next_run(uid);
    let Ok(bytes) = crate::statedir::read(&path) else {
        return Ok(None);
    };
    let _ = std::fs::remove_file(&path);
    let next = serde_json::from_slice::<NextRun>(&bytes).map_err(|_| ())?;
    Ok(Some(next).filter(|n| n.uid > uid))
}

/// Writes [`RUN_ENDED`] to the pane: whoever writes the log keeps
/// nothing after it.
fn mark_run_ended() -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(RUN_ENDED).and_then(|_| out.flush())
}

extern "C" fn redraw(_: libc::c_int) {
    REDRAW.store(true, Ordering::SeqCst);
}

/// Draws `line` on the bottom row of the terminal, in reverse video,
/// keeping the cursor where it was. The text is marvel's; anything that is
/// not printable is shown as `?` all the same.
fn draw(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let size = rustix::termios::tcgetwinsize(&out)?;
    let (rows, cols) = (size.ws_row.max(1), usize::from(size.ws_col.max(2)));
    let text: String = line
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(cols - 2)
        .collect();
    write!(
        out,
        "\x1b7\x1b[{rows};1H\x1b[0m\x1b[2K\x1b[7m {text} \x1b[0m\x1b8"
    )?;
    out.flush()
}

/// Offers the report to the daemon and returns its answer if one came,
/// keeping the report in the exit record (for a daemon that is down, or
/// that crashes before its state holds the report) as well: a start
/// before it is offered, an end only if the daemon did not answer, since
/// the daemon answers an end once its own state holds it. Failures are
/// silent: the pane's terminal belongs to the program.
fn report(
    paths: &Paths,
    uid: u64,
    report: &ShimReport,
    reply: Duration,
    reuse: Option<u64>,
) -> Option<Response> {
    let ended = matches!(report, ShimReport::Exited { .. });
    if !ended {
        record(paths, uid, report, reuse);
    }
    let answer = ask(&paths.socket(), Request::Shim(report.clone()), reply)
        .ok()
        .flatten();
    if ended && answer.is_none() {
        record(paths, uid, report, reuse);
    }
    answer
}

/// Writes `report` to the exit record of spawn `uid`. The record of the
/// shim's run before (`reuse`), which the daemon leaves to it, is renamed
/// for this one and written over in place: a restart in the same pane
/// makes and removes no file (each costs the file system's metadata more
/// than the record's bytes). Only a new record is made whole, by rename.
/// Nothing is fsynced: a record means nothing once the machine restarted,
/// since every program died with it.
fn record(paths: &Paths, uid: u64, report: &ShimReport, reuse: Option<u64>) {
    let Ok(json) = serde_json::to_vec(report) else {
        return;
    };
    let name = exit_record_name(uid);
    let write = |dir: &Dir| -> io::Result<()> {
        if let Some(previous) = reuse.filter(|p| *p != uid) {
            let _ = dir.rename_new(&exit_record_name(previous), &name);
        }
        match dir.overwrite(&name, &json) {
            Err(e) if e.kind() == ErrorKind::NotFound => dir.replace(&name, &json),
            written => written,
        }
    };
    let written = Dir::open(&paths.exits_dir())
        .map_err(io::Error::other)
        .and_then(|dir| write(&dir));
    if written.is_err() {
        // `exits/` may have been removed: make it again, inside a state
        // directory that passes the checks, and retry once.
        if let Ok(dir) = Dir::open_root(&paths.root).and_then(|root| root.ensure_sub(EXITS)) {
            let _ = write(&dir);
        }
    }
}

/// Sends one request line to the daemon and waits for one reply line, all
/// within `timeout`.
fn ask(socket: &Path, request: Request, timeout: Duration) -> io::Result<Option<Response>> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(socket, timeout)?;
    let envelope = Envelope {
        protocol: PROTOCOL_VERSION,
        request,
    };
    let mut line = serde_json::to_vec(&envelope)?;
    line.push(b'\n');
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&line)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(ErrorKind::TimedOut)?;
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(serde_json::from_slice(&answer).ok()),
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if let Some(end) = answer.iter().position(|&b| b == b'\n') {
                    return Ok(serde_json::from_slice(&answer[..end]).ok());
                }
                if answer.len() > 64 << 10 {
                    return Ok(None);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `UnixStream::connect` can block without limit when the daemon's listen
/// backlog is full; a send timeout on the socket bounds `connect` too.
fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let addr = SocketAddrUnix::new(path)?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let stream = UnixStream::from(fd);
    stream.set_write_timeout(Some(timeout))?;
    rustix::net::connect(&stream, &addr)?;
    Ok(stream)
}

/// Waits for the program to end; returns (exit code, signal).
fn wait_child(pid: Pid) -> (Option<i32>, Option<i32>) {
    use rustix::process::{WaitId, WaitIdOptions, WaitOptions};
    // First wait without reaping: while the child is a zombie its pid
    // cannot be reused, so the handlers can be disarmed before it is freed
    // and a late signal can never reach a stranger.
    while let Err(rustix::io::Errno::INTR) = rustix::process::waitid(
        WaitId::Pid(pid),
        WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
    ) {}
    CHILD.store(0, Ordering::SeqCst);
    // SAFETY: cancels a pending hang-up alarm; always safe.
    unsafe { libc::alarm(0) };
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return (status.exit_status(), status.terminating_signal()),
            Err(rustix::io::Errno::INTR) => continue,
            _ => return (None, None),
        }
    }
}

/// Sends signal number `sig` to the program (pid `pid`); async-signal-safe.
fn signal_child(pid: i32, sig: i32) {
    if let (Some(pid), Some(sig)) = (Pid::from_raw(pid), Signal::from_named_raw(sig)) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

extern "C" fn forward(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        HANGUP.store(true, Ordering::SeqCst);
        // SAFETY: alarm is async-signal-safe.
        unsafe { libc::alarm(HANGUP_GRACE_SECS) };
    }
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        signal_child(pid, sig);
    } else {
        PENDING.store(sig, Ordering::SeqCst);
    }
}

extern "C" fn hangup_expired(_: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        signal_child(pid, libc::SIGKILL);
    }
}

fn install_handlers() {
    // SAFETY: sigaction with handlers that only touch atomics and call
    // async-signal-safe functions.
    unsafe {
        for sig in IGNORED {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = forward as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in FORWARDED {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        sa.sa_sigaction = hangup_expired as *const () as usize;
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        // From the start, not only once the shim lingers: the daemon may
        // tell it the next run as soon as it heard of the end.
        sa.sa_sigaction = redraw as *const () as usize;
        libc::sigaction(libc::SIGWINCH, &sa, std::ptr::null_mut());
    }
}

/// In the child before exec: ignored dispositions and the signal mask
/// survive exec, so the program would inherit the shim's (and Rust's
/// SIGPIPE) choices. Every signal goes back to its default.
fn reset_signals() {
    // SAFETY: sigaction/sigprocmask are async-signal-safe; failures for
    // SIGKILL, SIGSTOP and libc-reserved numbers are expected and harmless.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in 1..=64 {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Reads what was recorded for spawn `uid`: the newest report the shim
/// wrote, or `None` if there is no record (yet). A record is written over
/// in place, so it is read until two reads agree, and one that still holds
/// the report of the run before (renamed, not yet written) is none.
pub fn read_exit_record(paths: &Paths, uid: u64) -> io::Result<Option<ShimReport>> {
    let path = paths.exit_record(uid);
    let read = || match statedir::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    let mut bytes = read()?;
    for _ in 0..RECORD_READS {
        let again = read()?;
        if again == bytes {
            break;
        }
        bytes = again;
    }
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let report: ShimReport =
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
    Ok((report.uid() == uid).then_some(report))
}

/// Reads of a record, at most, until two in a row agree.
const RECORD_READS: usize = 5;

/// The pane's output log written by the shim itself: the log pipe that
/// `pipe-pane` starts hands its input (the pane's output) over an abstract
/// unix socket named after the log file, and a thread of the shim writes
/// the log from it, exactly as the log pipe would have. No process stays
/// beside the shim for it. When anything in this fails, the log pipe keeps
/// its input and writes the log itself.
mod log {
    use std::cell::Cell;
    use std::io::{self, IoSlice, IoSliceMut, Read, Write};
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc::{self, Receiver, Sender};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use rustix::net::{
        RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
        SendAncillaryMessage, SendFlags, recvmsg, sendmsg, sockopt::socket_peercred,
    };

    /// How long the log pipe tries to reach the shim (which may not listen
    /// yet: both start at once) before it writes the log itself.
    const REACH: Duration = Duration::from_secs(2);
    /// How long a shim that goes waits for the log to take the program's
    /// last output.
    const DRAIN: Duration = Duration::from_secs(1);
    /// How long a shim waits for it before it reports the end all the
    /// same (the log thread then says when the log is complete).
    const DRAIN_FIRST: Duration = Duration::from_millis(2);
    /// The log thread's stack: it reads into a heap buffer.
    const STACK: usize = 64 << 10;

    /// The abstract socket of the shim that writes the log at `log`.
    pub fn socket_name(log: &Path) -> String {
        use std::os::unix::ffi::OsStrExt;
        format!(
            "marvel-log-{:016x}",
            crate::paths::fnv1a(log.as_os_str().as_bytes())
        )
    }

    /// The shim's side: the log thread, which says when the log of a run
    /// is complete, whether it took the pane's output, and which run comes
    /// next.
    pub struct Owner {
        /// How many runs' ends the log took, each time one more is taken.
        done: Receiver<u64>,
        /// The most the shim heard of on `done`.
        taken: Cell<u64>,
        /// How many runs' ends the shim marked (or hung up on).
        marked: Cell<u64>,
        shared: Arc<Shared>,
    }

    /// What the shim and its log thread share.
    #[derive(Default)]
    struct Shared {
        /// The log pipe handed the pane's output over.
        owns: AtomicBool,
        /// The uid and quiet spell of the next run, once the shim knows it.
        next: Mutex<Option<(u64, u64)>>,
        /// The uid of the run whose end the shim reported before the log
        /// took it (0: none): the log thread tells the daemon once it has.
        tell: AtomicU64,
    }

    impl Owner {
        /// Waits a little for the log to be complete: the end-of-run mark
        /// written to the pane, or the pane gone.
        pub fn drain(&self) {
            let n = self.mark();
            self.taken_by(n, DRAIN);
        }

        /// The end of run `uid` was marked on the pane: whether the log
        /// took it within a moment. If not, the log thread tells the
        /// daemon once it has ([`super::log_complete`]).
        pub fn drain_or_tell(&self, uid: u64) -> bool {
            let n = self.mark();
            if self.taken_by(n, DRAIN_FIRST) {
                return true;
            }
            self.shared.tell.store(uid, Ordering::SeqCst);
            // Taken in between: complete, unless the log thread had
            // already seen `tell`, and tells.
            self.taken_by(n, Duration::ZERO) && self.shared.tell.swap(0, Ordering::SeqCst) == uid
        }

        /// Waits a little for the log to take the last end marked, before
        /// the shim goes.
        pub fn settle(&self) {
            self.taken_by(self.marked.get(), DRAIN);
        }

        /// Counts one more end of a run marked; its number.
        fn mark(&self) -> u64 {
            self.marked.set(self.marked.get() + 1);
            self.marked.get()
        }

        /// Whether the log takes the end of the `n`th run within `within`.
        fn taken_by(&self, n: u64, within: Duration) -> bool {
            let deadline = Instant::now() + within;
            while self.taken.get() < n {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.done.recv_timeout(left) {
                    Ok(count) => self.taken.set(count.max(self.taken.get())),
                    Err(_) => return false,
                }
            }
            true
        }

        /// Whether this shim writes the pane's log (and so could log a
        /// next run in the same pane).
        pub fn owns(&self) -> bool {
            self.shared.owns.load(Ordering::SeqCst)
        }

        /// The output after the next [`super::RUN_BEGINS`] is run `uid`'s,
        /// reported after quiet spells of `quiet_ms`.
        pub fn next_run(&self, uid: u64, quiet_ms: u64) {
            *self.shared.next.lock().unwrap_or_else(|e| e.into_inner()) = Some((uid, quiet_ms));
        }
    }

    /// Listens for the log pipe and writes the log at `log` from what it
    /// hands over, on a thread; `None` when the shim cannot (the log pipe
    /// then writes it).
    pub fn own(log: &Path, uid: u64, state_dir: &Path) -> Option<Owner> {
        let addr = SocketAddr::from_abstract_name(socket_name(log)).ok()?;
        let listener = UnixListener::bind_addr(&addr).ok()?;
        // One malloc arena for the process: a thread would get its own.
        // SAFETY: mallopt only tunes the allocator.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        let (tx, done) = mpsc::channel();
        let log = log.to_path_buf();
        let state_dir = state_dir.to_path_buf();
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        let told = Arc::clone(&shared);
        let tell_dir = state_dir.clone();
        // Every signal stays with the main thread, which waits for them.
        // SAFETY: plain signal-mask calls on sets they fill.
        let old = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            old
        };
        let spawned = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                let mut taken = 0;
                write_from_handover(listener, &log, uid, state_dir, &theirs, move || {
                    taken += 1;
                    took(&tx, taken, &told.tell, |uid| {
                        super::log_complete(&tell_dir, uid)
                    });
                })
            });
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        spawned.ok().map(|_| Owner {
            done,
            taken: Cell::new(0),
            marked: Cell::new(0),
            shared,
        })
    }

    /// The log took the end of its `taken`th run: the daemon hears of it if
    /// the shim reported that end before (`tell`), then the shim, which
    /// so never goes before the daemon was told. (An end taken just before
    /// the shim set `tell` is in the log when the shim reports it.)
    fn took(tx: &Sender<u64>, taken: u64, tell: &AtomicU64, told: impl FnOnce(u64)) {
        let uid = tell.swap(0, Ordering::SeqCst);
        if uid != 0 {
            told(uid);
        }
        let _ = tx.send(taken);
    }

    /// Takes the first hand-over from a process of our own user and writes
    /// the log from it until its end: each run's to its own file.
    /// What it reads is the pane's output, so the shim also tells the
    /// daemon when output starts and stops, if the log pipe asked for that.
    fn write_from_handover(
        listener: UnixListener,
        log: &Path,
        uid: u64,
        state_dir: std::path::PathBuf,
        shared: &Shared,
        mut ended: impl FnMut(),
    ) {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let Some((input, max, quiet_ms)) = take(&conn) else {
                continue;
            };
            drop(listener);
            shared.owns.store(true, Ordering::SeqCst);
            let paths = crate::paths::Paths {
                root: state_dir.clone(),
            };
            let watch = (quiet_ms > 0).then(|| {
                super::OutputWatch::start(super::Reports {
                    uid,
                    state_dir,
                    quiet: Duration::from_millis(quiet_ms),
                })
            });
            let mut seen = || {
                if let Some(w) = &watch {
                    w.output();
                }
            };
            let mut next = || {
                let (uid, quiet_ms) = shared
                    .next
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()?;
                if let Some(w) = &watch {
                    w.retarget(uid, quiet_ms);
                }
                Some(paths.session_log(uid))
            };
            let _ = super::copy_rotating(
                &mut std::fs::File::from(input),
                log,
                max.max(1),
                &mut seen,
                &mut ended,
                &mut next,
            );
            return;
        }
    }

    /// The descriptor, the log's size bound and the quiet spell for the
    /// output reports (0: none) a log pipe sends, acknowledged.
    fn take(conn: &UnixStream) -> Option<(OwnedFd, u64, u64)> {
        let peer = socket_peercred(conn).ok()?;
        if peer.uid != rustix::process::getuid() {
            return None;
        }
        conn.set_read_timeout(Some(REACH)).ok()?;
        let mut bytes = [0u8; 16];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(
            conn,
            &mut [IoSliceMut::new(&mut bytes)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .ok()?;
        let mut fd = None;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
                fd = fds.next();
            }
        }
        if got.bytes != bytes.len() {
            return None;
        }
        let fd = fd?;
        (&*conn).write_all(b"k").ok()?;
        let [max, quiet] =
            [&bytes[..8], &bytes[8..]].map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        Some((fd, max, quiet))
    }

    /// The log pipe's side: hands stdin, the log's size bound and the quiet
    /// spell after which output counts as stopped (`None`: no reports) to
    /// the shim that writes `log`, and waits for its word that it took them.
    pub fn hand_over(log: &Path, max_bytes: u64, quiet: Option<Duration>) -> io::Result<()> {
        let addr = SocketAddr::from_abstract_name(socket_name(log))?;
        let deadline = Instant::now() + REACH;
        let conn = loop {
            match UnixStream::connect_addr(&addr) {
                Ok(c) => break c,
                Err(e)
                    if e.kind() == io::ErrorKind::ConnectionRefused
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        };
        // Only to a shim of our own user.
        let peer = socket_peercred(&conn)?;
        if peer.uid != rustix::process::getuid() {
            return Err(io::Error::other("the log socket belongs to another user"));
        }
        let stdin = io::stdin();
        let fds = [stdin.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        let quiet_ms = quiet.map_or(0, |q| (q.as_millis() as u64).max(1));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&max_bytes.to_le_bytes());
        bytes[8..].copy_from_slice(&quiet_ms.to_le_bytes());
        sendmsg(
            &conn,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::empty(),
        )?;
        let left = deadline.saturating_duration_since(Instant::now());
        conn.set_read_timeout(Some(left.max(Duration::from_millis(100))))?;
        let mut ack = [0u8; 1];
        (&conn).read_exact(&mut ack)?;
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A shim's side of the log, fed by hand instead of a log thread.
        fn owner() -> (Owner, Sender<u64>) {
            let (tx, done) = mpsc::channel();
            let owner = Owner {
                done,
                taken: Cell::new(0),
                marked: Cell::new(0),
                shared: Arc::new(Shared::default()),
            };
            (owner, tx)
        }

        /// An end the log took in time is reported as complete, and the
        /// daemon hears nothing more; one it had not is reported at once,
        /// and the daemon hears when the log took it, once.
        #[test]
        fn an_end_the_log_takes_late_is_told_to_the_daemon_once_taken() {
            let (log, tx) = owner();
            let mut told = Vec::new();
            took(&tx, 1, &log.shared.tell, |u| told.push(u));
            assert!(log.drain_or_tell(7), "taken in time");
            assert_eq!(log.shared.tell.load(Ordering::SeqCst), 0);
            // The next run's end is not taken in time.
            assert!(!log.drain_or_tell(8));
            assert_eq!(log.shared.tell.load(Ordering::SeqCst), 8);
            took(&tx, 2, &log.shared.tell, |u| told.push(u));
            assert_eq!(told, [8], "told when taken");
            took(&tx, 3, &log.shared.tell, |u| told.push(u));
            assert_eq!(told, [8], "told once");
            // The shim about to go waits for the last end, now taken.
            log.settle();
            assert!(log.taken.get() >= log.marked.get());
        }
    }
}

/// The rotated half of a session log.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// What the shim writes to its pane's terminal once the program has
/// ended, before drawing marvel's line: an OSC of a number terminals do not
/// use, so nothing shows, and the log pipe, which sees the pane's output in
/// order, keeps nothing after it. What a lingering shim draws is marvel's,
/// not the program's output.
pub const RUN_ENDED: &[u8] = b"\x1b]7777;marvel-run-ended\x07";

/// What the shim writes before the next program it runs in the same pane:
/// the log of that run begins after it.
pub const RUN_BEGINS: &[u8] = b"\x1b]7777;marvel-run-begins\x07";

/// Hands stdin (the pane's output, from `pipe-pane`) to the session's shim
/// when `to_shim` asks for it and the shim takes it: the shim writes the
/// log (and tells the daemon when output starts and stops), and this
/// process is gone. Otherwise appends stdin to `path` (mode 0600) up to
/// [`RUN_ENDED`]. A write that would take the file past `max_bytes` first
/// moves it to `path.1` (replacing the older one), so the log never takes
/// more than twice `max_bytes`. Whatever happens to the file, stdin is read
/// to its end, so the pane's output never waits for the log.
pub fn run_logpipe(args: &LogpipeArgs) -> i32 {
    let path = &args.file;
    let quiet = args.reports.as_ref().map(|r| r.quiet);
    if args.to_shim && log::hand_over(path, args.max_bytes, quiet).is_ok() {
        return 0;
    }
    let watch = args.reports.clone().map(OutputWatch::start);
    let mut seen = || {
        if let Some(w) = &watch {
            w.output();
        }
    };
    match copy_rotating(
        &mut io::stdin().lock(),
        path,
        args.max_bytes.max(1),
        &mut seen,
        &mut || {},
        &mut || None,
    ) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("marvel logpipe: {}: {e}", path.display());
            1
        }
    }
}

/// Tells the daemon when a pane's output starts and when it stops, on
/// edges only. The reading side pays an atomic store per read, and takes a
/// lock only when output resumes after a quiet spell; a thread of its own
/// times the quiet and talks to the daemon, so a slow or absent daemon
/// never holds up the pane's output.
struct OutputWatch {
    shared: std::sync::Arc<WatchState>,
}

struct WatchState {
    start: Instant,
    start_wall: chrono::DateTime<Utc>,
    /// Milliseconds from `start` to the last output, plus one (0: none).
    last: std::sync::atomic::AtomicU64,
    /// The run whose output it is, and its quiet spell: a shim runs the
    /// next program in the same pane.
    uid: std::sync::atomic::AtomicU64,
    quiet_ms: std::sync::atomic::AtomicU64,
    lock: std::sync::Mutex<()>,
    resumed: std::sync::Condvar,
}

/// A report the daemon could not take is tried again after this, doubling
/// up to a minute, for as long as it is the newest news.
const REPORT_RETRY: Duration = Duration::from_secs(1);
/// How long one report may take.
const REPORT_REPLY: Duration = Duration::from_secs(1);

impl OutputWatch {
    fn start(reports: Reports) -> OutputWatch {
        let shared = std::sync::Arc::new(WatchState {
            start: Instant::now(),
            start_wall: Utc::now(),
            last: std::sync::atomic::AtomicU64::new(0),
            uid: std::sync::atomic::AtomicU64::new(reports.uid),
            quiet_ms: std::sync::atomic::AtomicU64::new(reports.quiet.as_millis().max(1) as u64),
            lock: std::sync::Mutex::new(()),
            resumed: std::sync::Condvar::new(),
        });
        let state = std::sync::Arc::clone(&shared);
        // A reporter that cannot start costs the reports, never the log.
        let _ = std::thread::Builder::new()
            .name("marvel-logpipe-reports".into())
            .stack_size(64 * 1024)
            .spawn(move || state.report(&reports));
        OutputWatch { shared }
    }

    /// The output from now on is run `uid`'s, quiet after `quiet_ms`.
    fn retarget(&self, uid: u64, quiet_ms: u64) {
        let w = &self.shared;
        w.uid.store(uid, Ordering::SeqCst);
        if quiet_ms > 0 {
            w.quiet_ms.store(quiet_ms, Ordering::SeqCst);
        }
    }

    /// The pane printed something now.
    fn output(&self) {
        let w = &self.shared;
        let now = w.now_ms();
        let prev = w.last.swap(now, Ordering::SeqCst);
        if prev == 0 || now.saturating_sub(prev) >= w.quiet_ms.load(Ordering::SeqCst) {
            // The reporter may be waiting for this: the lock makes sure it
            // is either still before its check or already waiting.
            let _held = w.lock.lock();
            w.resumed.notify_one();
        }
    }
}

impl WatchState {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    fn wall(&self, ms: u64) -> chrono::DateTime<Utc> {
        self.start_wall + chrono::Duration::milliseconds(ms.saturating_sub(1) as i64)
    }

    /// The reporter: waits for output, says it began, waits for a quiet
    /// spell of `quiet`, says when the output stopped, and so on.
    fn report(&self, r: &Reports) {
        let socket = Paths {
            root: r.state_dir.clone(),
        }
        .socket();
        // News: whether output flows, since when, and whose run it is.
        let mut unsent: Option<(bool, u64, u64)> = None;
        let mut retry = REPORT_RETRY;
        let send = |news: Option<(bool, u64, u64)>| -> bool {
            let Some((flowing, ms, uid)) = news else {
                return true;
            };
            let request = Request::Output {
                uid,
                at: self.wall(ms),
                flowing,
            };
            // Any answer, even a refusal (the session ended), is taken.
            ask(&socket, request, REPORT_REPLY).is_ok_and(|a| a.is_some())
        };
        let mut reported_quiet = 0;
        loop {
            // Quiet: wait for output after the last quiet report.
            {
                let mut held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                while self.last.load(Ordering::SeqCst) <= reported_quiet {
                    if unsent.is_some() {
                        drop(held);
                        if send(unsent) {
                            unsent = None;
                            retry = REPORT_RETRY;
                        } else {
                            std::thread::sleep(retry);
                            retry = (retry * 2).min(Duration::from_secs(60));
                        }
                        held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                        continue;
                    }
                    held = self.resumed.wait(held).unwrap_or_else(|e| e.into_inner());
                }
            }
            let began = self.last.load(Ordering::SeqCst);
            let mut run = self.uid.load(Ordering::SeqCst);
            unsent = Some((true, began, run));
            if send(unsent) {
                unsent = None;
            }
            // Flowing: wait for a quiet spell.
            loop {
                let last = self.last.load(Ordering::SeqCst);
                // A next run in the same pane began while output flowed:
                // its output began with it.
                let now_run = self.uid.load(Ordering::SeqCst);
                if now_run != run {
                    run = now_run;
                    unsent = Some((true, last, run));
                    if send(unsent) {
                        unsent = None;
                    }
                }
                let now = self.now_ms();
                let quiet_at = last + self.quiet_ms.load(Ordering::SeqCst);
                if now >= quiet_at {
                    reported_quiet = last;
                    unsent = Some((false, last, self.uid.load(Ordering::SeqCst)));
                    if send(unsent) {
                        unsent = None;
                    }
                    break;
                }
                let mut wait = Duration::from_millis(quiet_at - now);
                if unsent.is_some() {
                    wait = wait.min(retry);
                }
                std::thread::sleep(wait);
                if unsent.is_some() && send(unsent) {
                    unsent = None;
                }
            }
        }
    }
}

/// Opens `name` in `dir` for appending (0600, never through a link) and
/// says how long it is.
fn open_log(dir: &Dir, name: &str) -> io::Result<(File, u64)> {
    let f = dir.open_append(name)?;
    let size = f.metadata()?.len();
    Ok((f, size))
}

/// Finds a mark ([`RUN_ENDED`], [`RUN_BEGINS`]) in a stream read in
/// pieces: which bytes before it are output, holding back bytes while they
/// may begin the mark.
#[derive(Debug)]
struct Marker {
    mark: &'static [u8],
    /// Bytes of a possible mark at the end of the last piece.
    held: usize,
}

impl Marker {
    fn new(mark: &'static [u8]) -> Marker {
        Marker { mark, held: 0 }
    }

    /// Appends the output in `data` (after what was held back and turned
    /// out not to be the mark) to `out`, up to the mark if it is complete;
    /// says how much of `data` was read and whether the mark was.
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        for (i, &b) in data.iter().enumerate() {
            if b == self.mark[self.held] {
                self.held += 1;
                if self.held == self.mark.len() {
                    self.held = 0;
                    return (i + 1, true);
                }
                continue;
            }
            // Not the mark after all: what was held is output. (The mark's
            // first byte, ESC, occurs in it only there.)
            out.extend_from_slice(&self.mark[..self.held]);
            self.held = usize::from(b == self.mark[0]);
            if self.held == 0 {
                out.push(b);
            }
        }
        (data.len(), false)
    }
}

/// A log being written: its directory, its name and its rotated half's,
/// and the open file with its size (`None` until it can be opened).
struct LogFile {
    dir: Dir,
    name: String,
    rotated_name: String,
    file: Option<(File, u64)>,
}

impl LogFile {
    fn open(path: &Path) -> io::Result<LogFile> {
        let (dir, name) = Dir::open_parent(path).map_err(io::Error::other)?;
        let file = open_log(&dir, &name).ok();
        Ok(LogFile {
            rotated_name: format!("{name}.1"),
            dir,
            name,
            file,
        })
    }

    /// A log that cannot be written (a full disk) loses this piece, not
    /// the pane: the next piece tries again.
    fn write(&mut self, data: &[u8], max: u64) {
        if self.file.is_none() {
            self.file = open_log(&self.dir, &self.name).ok();
        }
        if let Some((file, size)) = &mut self.file
            && write_rotating(
                &self.dir,
                &self.name,
                &self.rotated_name,
                file,
                size,
                data,
                max,
            )
            .is_err()
        {
            self.file = None;
        }
    }
}

/// Copies `input` to the log at `path`, rotating it past `max`; calls
/// `seen` for each piece of output and `ended` once per run when its log
/// is complete: at [`RUN_ENDED`], or at the end of the input. What follows
/// the end of a run is no one's until [`RUN_BEGINS`]; then `next` names the
/// next run's log (`None`: nothing more is logged).
fn copy_rotating(
    input: &mut impl Read,
    path: &Path,
    max: u64,
    seen: &mut dyn FnMut(),
    ended: &mut dyn FnMut(),
    next: &mut dyn FnMut() -> Option<PathBuf>,
) -> io::Result<()> {
    let mut log = LogFile::open(path)?;
    let mut marker = Marker::new(RUN_ENDED);
    let mut writing = true;
    // On the heap: the shim's log thread has a small stack.
    let mut buf = vec![0u8; 16 << 10];
    let mut out = Vec::with_capacity(buf.len());
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => {
                if writing {
                    ended();
                }
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            out.clear();
            let (read, found) = marker.feed(rest, &mut out);
            rest = &rest[read..];
            if !writing {
                if found {
                    marker = Marker::new(RUN_ENDED);
                    match next().map(|p| LogFile::open(&p)) {
                        Some(Ok(l)) => {
                            log = l;
                            writing = true;
                        }
                        _ => marker = Marker::new(RUN_BEGINS),
                    }
                }
                continue;
            }
            if !out.is_empty() {
                seen();
                log.write(&out, max);
            }
            if found {
                ended();
                writing = false;
                marker = Marker::new(RUN_BEGINS);
            }
        }
    }
}

/// Appends `data` to the log, moving it aside first when it would grow
/// past `max`.
fn write_rotating(
    dir: &Dir,
    name: &str,
    rotated_name: &str,
    file: &mut File,
    size: &mut u64,
    mut data: &[u8],
    max: u64,
) -> io::Result<()> {
    while !data.is_empty() {
        if *size > 0 && *size + data.len() as u64 > max {
            dir.rename(name, rotated_name)?;
            (*file, *size) = open_log(dir, name)?;
        }
        // Only a chunk larger than the whole budget is split.
        let take = data.len().min(max.saturating_sub(*size).max(1) as usize);
        file.write_all(&data[..take])?;
        *size += take as u64;
        data = &data[take..];
    }
    Ok(())
}

/// The last `n` lines a session printed (its log and the rotated half),
/// cleaned of terminal escape sequences and carriage-return overwrites so
/// they read as text. Trailing empty lines are dropped.
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    // Enough for n ordinary lines without reading whole files.
    let budget = (n as u64 * 512).clamp(64 << 10, 4 << 20);
    let (current, whole) = read_tail(path, budget);
    let bytes = if whole {
        let left = budget.saturating_sub(current.len() as u64);
        let (mut older, older_whole) = read_tail(&rotated(path), left);
        if !older_whole {
            skip_partial_line(&mut older);
        }
        older.extend_from_slice(&current);
        older
    } else {
        // Starting mid-file: the first line is a fragment.
        let mut bytes = current;
        skip_partial_line(&mut bytes);
        bytes
    };
    let mut lines = clean_lines(&bytes);
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let skip = lines.len().saturating_sub(n);
    lines.split_off(skip)
}

/// The last `budget` bytes of a file, and whether that is the whole file.
fn read_tail(path: &Path, budget: u64) -> (Vec<u8>, bool) {
    let Ok(mut f) = File::open(path) else {
        return (Vec::new(), true);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(budget);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_ok() {
        let _ = f.take(budget).read_to_end(&mut bytes);
    }
    (bytes, start == 0)
}

fn skip_partial_line(bytes: &mut Vec<u8>) {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => {
            bytes.drain(..=i);
        }
        None => bytes.clear(),
    }
}

/// Widest line the cleaner lays out, in columns: text and cursor moves past
/// it are clipped, so no escape parameter can make a line grow.
pub const MAX_COLUMNS: usize = 4096;
/// Most lines the cleaner returns; older lines are dropped first.
pub const MAX_LINES: usize = 20_000;
/// Most bytes of text the cleaner returns; older lines are dropped first.
/// Cursor moves can turn a few bytes of input into a whole line of blanks,
/// so the output is bounded on its own, not through the input.
pub const MAX_TEXT_BYTES: usize = 4 << 20;

/// Replays output as a terminal would lay out each line: `\r` returns to
/// the start, backspace steps back, erase-in-line and cursor moves apply,
/// every other escape sequence or control character is dropped. Returns the
/// newest lines within [`MAX_LINES`] and [`MAX_TEXT_BYTES`], each at most
/// [`MAX_COLUMNS`] wide.
pub fn clean_lines(bytes: &[u8]) -> Vec<String> {
    let mut replay = LineReplay::default();
    vte::Parser::new().advance(&mut replay, bytes);
    replay.finish()
}

/// The state of [`clean_lines`]: finished lines and the one being drawn.
#[derive(Default)]
struct LineReplay {
    lines: std::collections::VecDeque<String>,
    /// Bytes held in `lines`.
    bytes: usize,
    line: Vec<char>,
    col: usize,
}

impl LineReplay {
    fn put(&mut self, c: char) {
        if self.col >= MAX_COLUMNS {
            return;
        }
        if self.col < self.line.len() {
            self.line[self.col] = c;
        } else {
            self.line.resize(self.col, ' ');
            self.line.push(c);
        }
        self.col += 1;
    }

    fn move_to(&mut self, col: usize) {
        self.col = col.min(MAX_COLUMNS);
    }

    fn end_line(&mut self) {
        let text: String = self.line.iter().collect();
        let text = text.trim_end().to_string();
        self.line.clear();
        self.col = 0;
        self.bytes += text.len();
        self.lines.push_back(text);
        while self.lines.len() > MAX_LINES || self.bytes > MAX_TEXT_BYTES {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.len(),
                None => break,
            }
        }
    }

    fn finish(mut self) -> Vec<String> {
        if !self.line.is_empty() {
            self.end_line();
        }
        self.lines.into()
    }
}

impl vte::Perform for LineReplay {
    fn print(&mut self, c: char) {
        // DEL arrives as a printable character.
        if !c.is_control() {
            self.put(c);
        }
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' => self.end_line(),
            b'\r' => self.col = 0,
            0x08 => self.col = self.col.saturating_sub(1),
            b'\t' => self.put('\t'),
            _ => {}
        }
    }

    fn csi_dispatch(
        &mut self,
        params: &vte::Params,
        intermediates: &[u8],
        ignore: bool,
        action: char,
    ) {
        // Private modes (`ESC[?25l`) and the like do not move text.
        if ignore || !intermediates.is_empty() {
            return;
        }
        let first = params.iter().next().and_then(|p| p.first().copied());
        let param = usize::from(first.unwrap_or(0));
        let count = param.max(1);
        match action {
            'K' => match param {
                0 => self.line.truncate(self.col),
                1 => {
                    let end = self.col.saturating_add(1).min(self.line.len());
                    self.line[..end].fill(' ');
                }
                _ => self.line.clear(),
            },
            'G' => self.move_to(count - 1),
            'C' => self.move_to(self.col.saturating_add(count)),
            'D' => self.col = self.col.saturating_sub(count),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_quick_runs_one_after_another_only_the_first_screen_is_kept() {
        let quick = Duration::from_millis(20);
        let lasted = Duration::from_secs(5);
        assert!(keeps_screen(quick, None), "the pane's first run");
        assert!(!keeps_screen(quick, Some(quick)), "one more quick run");
        assert!(keeps_screen(lasted, Some(quick)));
        assert!(
            keeps_screen(quick, Some(lasted)),
            "the first quick run after"
        );
        // A screen not kept is cleared before the reset, which would move
        // it to the scrollback.
        let forget = fresh_screen(false);
        assert!(forget.ends_with(b"\x1b[1J\x1bc"));
        assert!(fresh_screen(true).ends_with(b"\x1b[?1049l\x1bc"));
    }
    use std::fs;

    /// A shim's next run takes its last run's record over: the same file,
    /// renamed and written over in place, and read back whole whether the
    /// report is shorter or longer than what the file held.
    #[test]
    fn a_next_run_writes_its_record_over_the_last_one_in_place() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::resolve(Some(&tmp.path().join("home"))).unwrap();
        paths.ensure().unwrap();
        let at = Utc::now();
        let started = |uid, pid| ShimReport::Started { uid, pid, at };
        let ended = |uid, failure: Option<&str>| ShimReport::Exited {
            uid,
            code: Some(3),
            signal: None,
            at,
            hangup: false,
            failure: failure.map(String::from),
            rerun: true,
            run_in_answer: false,
        };
        let read = |uid| read_exit_record(&paths, uid).unwrap();
        let inode = |uid| fs::metadata(paths.exit_record(uid)).unwrap().ino();
        let long = "cannot run /a/program/with/a/long/path: No such file or directory";
        record(&paths, 5, &started(5, 1000), None);
        record(&paths, 5, &ended(5, Some(long)), None);
        assert!(matches!(read(5), Some(ShimReport::Exited { uid: 5, .. })));
        let first = inode(5);
        record(&paths, 6, &started(6, 77), Some(5));
        assert!(!paths.exit_record(5).exists());
        assert_eq!(inode(6), first, "the same file");
        // Shorter than what the file held: the rest is blanked.
        assert!(matches!(
            read(6),
            Some(ShimReport::Started {
                uid: 6,
                pid: 77,
                ..
            })
        ));
        record(&paths, 6, &ended(6, None), None);
        assert!(matches!(read(6), Some(ShimReport::Exited { uid: 6, .. })));
        assert_eq!(inode(6), first);
        // No record of the run before: a new one.
        record(&paths, 8, &started(8, 9), Some(7));
        assert!(matches!(read(8), Some(ShimReport::Started { uid: 8, .. })));
        // A record renamed for a run but not yet written holds the run
        // before's report: it is none of the new run's.
        fs::rename(paths.exit_record(8), paths.exit_record(9)).unwrap();
        assert!(read(9).is_none());
        // Another run's record already under the name is written over,
        // the one to take over stays for the pruning.
        record(&paths, 10, &started(10, 1), None);
        record(&paths, 10, &started(10, 2), Some(6));
        assert!(matches!(read(10), Some(ShimReport::Started { pid: 2, .. })));
        assert_eq!(inode(6), first);
    }

    #[test]
    fn logpipe_rotates_and_bounds_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("7.log");
        let input: Vec<u8> = (0..100)
            .flat_map(|i| format!("line {i:03}\n").into_bytes())
            .collect();
        // 9 bytes a line, in chunks of 16 KiB: one read, split by the budget.
        copy_rotating(
            &mut &input[..],
            &log,
            100,
            &mut || {},
            &mut || {},
            &mut || None,
        )
        .unwrap();
        let cur = fs::read(&log).unwrap();
        let old = fs::read(rotated(&log)).unwrap();
        assert!(
            cur.len() <= 100 && old.len() <= 100,
            "{} {}",
            cur.len(),
            old.len()
        );
        let both = [old, cur].concat();
        assert!(input.ends_with(&both));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn logpipe_rotates_before_a_write_that_would_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("1.log");
        fs::write(&log, b"old old old\n").unwrap();
        copy_rotating(
            &mut &b"0123456789\n"[..],
            &log,
            16,
            &mut || {},
            &mut || {},
            &mut || None,
        )
        .unwrap();
        assert_eq!(fs::read(rotated(&log)).unwrap(), b"old old old\n");
        assert_eq!(fs::read(&log).unwrap(), b"0123456789\n");
        copy_rotating(
            &mut &b"abc\n"[..],
            &log,
            16,
            &mut || {},
            &mut || {},
            &mut || None,
        )
        .unwrap();
        assert_eq!(fs::read(&log).unwrap(), b"0123456789\nabc\n");
    }

    #[test]
    fn logpipe_keeps_nothing_after_the_end_of_the_run_however_it_is_split() {
        let mut input = b"last words\n\x1b[1mbold\x1b]7777;not the marker\x07\x1b]7777".to_vec();
        input.extend_from_slice(RUN_ENDED);
        input.extend_from_slice(b"\r\n crashed: exit 3 \x1b[0m");
        let expected = b"last words\n\x1b[1mbold\x1b]7777;not the marker\x07\x1b]7777";
        for piece in [1, 2, 3, 7, 16 << 10] {
            let mut out = Vec::new();
            let mut m = Marker::new(RUN_ENDED);
            let mut seen = false;
            for chunk in input.chunks(piece) {
                let mut rest = chunk;
                while !seen && !rest.is_empty() {
                    let (read, found) = m.feed(rest, &mut out);
                    rest = &rest[read..];
                    seen = found;
                }
            }
            assert!(seen);
            assert_eq!(out, expected, "in pieces of {piece}");
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("8.log");
        copy_rotating(
            &mut &input[..],
            &log,
            1 << 20,
            &mut || {},
            &mut || {},
            &mut || None,
        )
        .unwrap();
        assert_eq!(fs::read(&log).unwrap(), expected);
    }

    #[test]
    fn each_run_in_a_pane_is_logged_to_its_own_file_however_it_is_split() {
        let mut input = b"first run\n\x1b]7777".to_vec();
        input.extend_from_slice(RUN_ENDED);
        input.extend_from_slice(b"\r\n crashed: exit 3 \x1b[?1049l\x1bc");
        input.extend_from_slice(RUN_BEGINS);
        input.extend_from_slice(b"second run\n");
        input.extend_from_slice(RUN_ENDED);
        input.extend_from_slice(b"\r\n frozen ");
        for piece in [1, 2, 5, 16 << 10] {
            let dir = tempfile::tempdir().unwrap();
            let (first, second) = (dir.path().join("8.log"), dir.path().join("9.log"));
            let mut ends = 0;
            let mut runs = vec![second.clone()];
            let mut input = Chunked(input.chunks(piece).collect());
            copy_rotating(
                &mut input,
                &first,
                1 << 20,
                &mut || {},
                &mut || ends += 1,
                &mut || runs.pop(),
            )
            .unwrap();
            assert_eq!(
                fs::read(&first).unwrap(),
                b"first run\n\x1b]7777",
                "in pieces of {piece}"
            );
            assert_eq!(
                fs::read(&second).unwrap(),
                b"second run\n",
                "in pieces of {piece}"
            );
            assert_eq!(ends, 2, "in pieces of {piece}");
        }
    }

    /// A reader that returns one chunk per read.
    struct Chunked<'a>(std::collections::VecDeque<&'a [u8]>);

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(c) = self.0.pop_front() else {
                return Ok(0);
            };
            buf[..c.len()].copy_from_slice(c);
            Ok(c.len())
        }
    }

    /// Issue: a log that could not be written stopped the pipe, and then
    /// the pane's output backed up. It is drained, and written again once
    /// it can be.
    #[test]
    fn logpipe_drains_its_input_while_the_log_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("9.log");
        // The log's place is taken by a directory: every write fails,
        // until the directory goes after the 500th piece.
        fs::create_dir(&log).unwrap();
        struct Pieces {
            left: usize,
            blocker: PathBuf,
        }
        impl Read for Pieces {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.left == 0 {
                    return Ok(0);
                }
                if self.left == 500 {
                    fs::remove_dir(&self.blocker).unwrap();
                }
                self.left -= 1;
                let line = format!("piece {}\n", self.left);
                buf[..line.len()].copy_from_slice(line.as_bytes());
                Ok(line.len())
            }
        }
        let mut input = Pieces {
            left: 1000,
            blocker: log.clone(),
        };
        copy_rotating(
            &mut input,
            &log,
            1 << 20,
            &mut || {},
            &mut || {},
            &mut || None,
        )
        .unwrap();
        assert_eq!(input.left, 0, "read to the end");
        let text = fs::read_to_string(&log).unwrap();
        assert!(
            text.starts_with("piece 499\n") && text.ends_with("piece 0\n"),
            "{text}"
        );
    }

    /// A daemon stand-in: records each request line, answers `Done`.
    fn fake_daemon(dir: &Path) -> std::sync::mpsc::Receiver<(Instant, Request)> {
        let listener = std::os::unix::net::UnixListener::bind(dir.join("marvel.sock")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut line = Vec::new();
                let mut byte = [0u8];
                while stream.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
                    line.push(byte[0]);
                }
                let env: Envelope = serde_json::from_slice(&line).unwrap();
                let mut answer = serde_json::to_vec(&Response::Done("ok".into())).unwrap();
                answer.push(b'\n');
                let _ = stream.write_all(&answer);
                if tx.send((Instant::now(), env.request)).is_err() {
                    return;
                }
            }
        });
        rx
    }

    fn next_report(
        rx: &std::sync::mpsc::Receiver<(Instant, Request)>,
    ) -> (Instant, bool, chrono::DateTime<Utc>) {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok((
                when,
                Request::Output {
                    uid: 7,
                    flowing,
                    at,
                },
            )) => (when, flowing, at),
            other => panic!("not an output report: {other:?}"),
        }
    }

    /// An output watch of run 7, quiet after 150 ms, reporting to a fake
    /// daemon in a new state directory.
    fn watched() -> (
        tempfile::TempDir,
        std::sync::mpsc::Receiver<(Instant, Request)>,
        OutputWatch,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rx = fake_daemon(dir.path());
        let watch = OutputWatch::start(Reports {
            uid: 7,
            state_dir: dir.path().to_path_buf(),
            quiet: Duration::from_millis(150),
        });
        (dir, rx, watch)
    }

    #[test]
    fn the_log_pipe_reports_edges_only_never_each_output() {
        let (_dir, rx, watch) = watched();
        // A program printing every 10 ms for 600 ms: one report that it
        // began, and one that it stopped once 150 ms passed without output.
        let t0 = Instant::now();
        let mut last = t0;
        while t0.elapsed() < Duration::from_millis(600) {
            watch.output();
            last = Instant::now();
            std::thread::sleep(Duration::from_millis(10));
        }
        let (_, flowing, began) = next_report(&rx);
        assert!(flowing);
        let (when, flowing, stopped) = next_report(&rx);
        assert!(!flowing);
        // (The pipe counts whole milliseconds.)
        assert!(
            when + Duration::from_millis(3) >= last + Duration::from_millis(150),
            "too early"
        );
        let printed = (stopped - began).to_std().unwrap();
        assert!(
            printed >= Duration::from_millis(550) && printed <= Duration::from_millis(700),
            "{printed:?}"
        );
        // Nothing more while it is quiet; output again is the next edge.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        watch.output();
        let (_, flowing, _) = next_report(&rx);
        assert!(flowing);
        let (_, flowing, _) = next_report(&rx);
        assert!(!flowing);
    }

    #[test]
    fn output_that_flows_on_into_the_next_run_in_the_pane_is_reported_for_it() {
        let (_dir, rx, watch) = watched();
        let output = |uid: u64, flowing: bool| {
            let got = rx.recv_timeout(Duration::from_secs(10)).unwrap().1;
            match got {
                Request::Output {
                    uid: u, flowing: f, ..
                } if (u, f) == (uid, flowing) => {}
                other => panic!("expected uid {uid} flowing {flowing}: {other:?}"),
            }
        };
        // Run 7 prints; run 8 follows in the same pane and prints before
        // any quiet spell: each run is told that its output began, and
        // the quiet spell after is run 8's.
        watch.output();
        output(7, true);
        watch.retarget(8, 150);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(400) {
            watch.output();
            std::thread::sleep(Duration::from_millis(10));
        }
        output(8, true);
        output(8, false);
    }

    #[test]
    fn a_report_the_daemon_missed_is_sent_again_once_it_listens() {
        let dir = tempfile::tempdir().unwrap();
        let watch = OutputWatch::start(Reports {
            uid: 7,
            state_dir: dir.path().to_path_buf(),
            quiet: Duration::from_millis(50),
        });
        // Output while no daemon listens: both reports fail.
        watch.output();
        std::thread::sleep(Duration::from_millis(200));
        let rx = fake_daemon(dir.path());
        // The newest news (it stopped) arrives once the daemon is there.
        let (_, flowing, _) = next_report(&rx);
        assert!(!flowing);
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }

    #[test]
    fn tail_reads_across_the_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("2.log");
        fs::write(rotated(&log), b"one\ntwo\nthr").unwrap();
        fs::write(&log, b"ee\nfour\n\n\n").unwrap();
        assert_eq!(tail_lines(&log, 3), ["two", "three", "four"]);
        assert_eq!(tail_lines(&log, 10), ["one", "two", "three", "four"]);
        assert!(tail_lines(&dir.path().join("none.log"), 5).is_empty());
    }

    #[test]
    fn tail_of_a_large_log_starts_at_a_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("3.log");
        let body: String = (0..20_000).map(|i| format!("row {i}\n")).collect();
        fs::write(&log, body).unwrap();
        let t = tail_lines(&log, 2);
        assert_eq!(t, ["row 19998", "row 19999"]);
        let many = tail_lines(&log, 5000);
        assert_eq!(many.len(), 5000);
        assert_eq!(many[0], "row 15000");
    }

    #[test]
    fn cleaning_removes_escapes_and_replays_carriage_returns() {
        let raw = b"\x1b]0;title\x07\x1b[1;31mred\x1b[0m text\r\n\
            50%\r100%\r\n\
            abcdef\rXY\r\n\
            downloading 50%\r\x1b[Kdone\r\n\
            \x1b(B\x1b[?25lhidden cursor\x1b[?25h\x07\r\n\
            a\tb\x08c \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\r\n\
            col\x1b[10Gx\r\n\
            prompt$ ";
        assert_eq!(
            clean_lines(raw),
            [
                "red text",
                "100%",
                "XYcdef",
                "done",
                "hidden cursor",
                "a\tc link",
                "col      x",
                "prompt$",
            ]
        );
    }

    #[test]
    fn huge_cursor_parameters_are_clipped_to_the_widest_line() {
        // Each of these once made the cleaner allocate gigabytes.
        assert_eq!(clean_lines(b"a\x1b[4294967295Gb\n"), ["a"]);
        assert_eq!(clean_lines(b"a\x1b[20000000Cb\n"), ["a"]);
        assert_eq!(clean_lines(b"a\x1b[99999999999999999999Gb\n"), ["a"]);
        // The last column can still be written, and nothing after it.
        let edge = clean_lines(b"\x1b[4096Gyz");
        assert_eq!(edge[0].chars().count(), MAX_COLUMNS);
        assert!(edge[0].ends_with(" y"));
        let long = clean_lines("x".repeat(MAX_COLUMNS + 100).as_bytes());
        assert_eq!(long[0].len(), MAX_COLUMNS);
    }

    #[test]
    fn cursor_moves_cannot_blow_up_the_output() {
        // 9 bytes of input, a whole line of output each.
        let raw = b"\x1b[4096Gx\n".repeat(3000);
        let lines = clean_lines(&raw);
        let bytes: usize = lines.iter().map(String::len).sum();
        assert!(bytes <= MAX_TEXT_BYTES, "{bytes}");
        assert!(lines.len() < 3000 && lines.len() > 100, "{}", lines.len());
        assert!(lines.iter().all(|l| l.ends_with('x')));
        let many = clean_lines(format!("{}last\n", "\n".repeat(MAX_LINES + 10)).as_bytes());
        assert_eq!(many.len(), MAX_LINES);
        assert_eq!(many.last().map(String::as_str), Some("last"));
    }

    #[test]
    fn cleaning_ignores_private_modes_and_clears_before_the_cursor() {
        assert_eq!(clean_lines(b"abc\x1b[?2004hdef\x7f\n"), ["abcdef"]);
        assert_eq!(clean_lines(b"abcdef\x1b[3D\x1b[1Kx\n"), ["   xef"]);
        assert_eq!(clean_lines(b"abc\x1b[2Kx\n"), ["   x"]);
        assert_eq!(clean_lines(b"ab\x1b[Cc\x1bPq#0;1\x1b\\d\x9b\n"), ["ab cd"]);
        // Invalid UTF-8 reads as U+FFFD.
        assert_eq!(clean_lines(b"a\xffb\n"), ["a\u{fffd}b"]);
    }

    /// Cases for the cleaner's property test: `MARVEL_FUZZ_CASES` for a
    /// longer run than `cargo test`'s.
    fn fuzz_cases() -> u32 {
        std::env::var("MARVEL_FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000)
    }

    /// Bytes that exercise the parser: pieces of escape sequences, huge
    /// parameters, controls, text, and any byte at all.
    fn terminal_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        const PIECES: &[&[u8]] = &[
            b"\x1b[",
            b"\x1b]",
            b"\x1bP",
            b"\x1b\\",
            b"\x1b",
            b"4294967295",
            b"4096",
            b"2",
            b"17",
            b";",
            b"?",
            b"G",
            b"C",
            b"D",
            b"K",
            b"m",
            b"\r",
            b"\n",
            b"\x08",
            b"\t",
            b"\x07",
            b"\x7f",
            b"\x9b",
            b"\xc3\xa9",
            b"\xe2\x82",
            b"ab",
            b" ",
        ];
        let piece = prop_oneof![
            3 => prop::sample::select(PIECES).prop_map(<[u8]>::to_vec),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: fuzz_cases(),
            failure_persistence: None,
            ..Default::default()
        })]

        #[test]
        fn fuzz_cleaner_any_bytes_give_bounded_printable_lines(raw in terminal_bytes()) {
            let lines = clean_lines(&raw);
            let newlines = raw.iter().filter(|&&b| b == b'\n').count();
            proptest::prop_assert!(lines.len() <= newlines + 1);
            let bytes: usize = lines.iter().map(String::len).sum();
            proptest::prop_assert!(bytes <= MAX_TEXT_BYTES);
            for l in &lines {
                proptest::prop_assert!(l.chars().count() <= MAX_COLUMNS);
                proptest::prop_assert!(!l.ends_with(char::is_whitespace), "{:?}", l);
                proptest::prop_assert!(
                    l.chars().all(|c| c == '\t' || !c.is_control()),
                    "{:?}",
                    l
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn plain_text_cleans_to_itself(text in "[ -~\n]{0,40}") {
            let expected: Vec<&str> = text.split_terminator('\n').map(str::trim_end).collect();
            proptest::prop_assert_eq!(clean_lines(text.as_bytes()), expected);
        }
    }

    #[test]
    fn shim_and_logpipe_arguments_parse() {
        let args: Vec<String> = ["--uid", "7", "--state-dir", "/s", "--", "sh", "-c", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let parsed = parse_shim_args(&args).unwrap();
        assert_eq!(
            parsed,
            ShimArgs {
                uid: 7,
                state_dir: PathBuf::from("/s"),
                cwd: None,
                env_keys: Vec::new(),
                argv: args[5..].to_vec(),
            }
        );
        assert!(parse_shim_args(&args[2..]).is_err());
        let built = shim_argv(
            Path::new("/bin/marvel"),
            7,
            Path::new("/s"),
            None,
            &[],
            &args[5..],
        );
        assert_eq!(&built[2..], &args[..]);
        let with_cwd = shim_argv(
            Path::new("/bin/marvel"),
            7,
            Path::new("/s"),
            Some(Path::new("/w")),
            &["API_KEY", "A B"],
            &args[5..],
        );
        let parsed = parse_shim_args(&with_cwd[2..]).unwrap();
        assert_eq!(parsed.cwd, Some(PathBuf::from("/w")));
        assert_eq!(parsed.env_keys, ["API_KEY", "A B"]);
        assert_eq!(parsed.argv, args[5..]);
        let lp: Vec<String> = ["--max-bytes", "10", "/f"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            parse_logpipe_args(&lp).unwrap(),
            LogpipeArgs {
                file: PathBuf::from("/f"),
                max_bytes: 10,
                reports: None,
                to_shim: false,
            }
        );
        assert!(parse_logpipe_args(&lp[1..]).is_err());
        let with: Vec<String> = [
            "--max-bytes",
            "10",
            "--uid",
            "7",
            "--state-dir",
            "/s",
            "--quiet-ms",
            "250",
            "/f",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            parse_logpipe_args(&with).unwrap().reports,
            Some(Reports {
                uid: 7,
                state_dir: PathBuf::from("/s"),
                quiet: Duration::from_millis(250),
            })
        );
        assert!(parse_logpipe_args(&with[2..]).is_err(), "no --max-bytes");
        assert!(parse_logpipe_args(&[&with[..4], &with[8..]].concat()).is_err());
        let mut handed = vec!["--to-shim".to_string()];
        handed.extend(with.iter().cloned());
        let args = parse_logpipe_args(&handed).unwrap();
        assert!(args.to_shim && args.reports.is_some(), "{args:?}");
        assert_eq!(dispatch(&["marvel".into(), "get".into()]), None);
    }
}
