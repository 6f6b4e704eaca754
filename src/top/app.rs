//! The dashboard's loop and its terminal. Threads that each wait on one
//! thing — the daemon's event stream, listings, the preview's screen, an
//! action, the keyboard, a signal — send into one channel; the loop merges
//! what comes, draws only when something changed (or a countdown shows),
//! and otherwise sleeps. The daemon is listed in full on start and after
//! every reconnection; in between, each event asks only for its team.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Stdout};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{Local, Utc};
use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste, Event};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute, terminal};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

use super::model::{CRASHES_READ, EVENTS_KEPT, Fetch, Fetched, Link, Model, Needs, Scope, live};
use super::ui::{Action, Effect, Footer, Ui};
use super::view::{self, Ctx, Preview};
use crate::client::{self, Endpoint};
use crate::commands::attach::attach_argv;
use crate::commands::unexpected;
use crate::error::{Error, Result, exit};
use crate::output;
use crate::proto::{EventFilter, Kind, Request, Response};
use crate::substrate::tmux::Tmux;
use crate::view::{EventKind, EventView};

/// How often the selected session's screen is read while it runs.
const PREVIEW_EVERY: Duration = Duration::from_millis(500);
/// How often sessions are listed again while a role has a heartbeat
/// check: its context % and note change without an event.
const HEARTBEATS_EVERY: Duration = Duration::from_secs(10);
/// How long the keyboard thread sleeps between looks at its orders.
const INPUT_POLL: Duration = Duration::from_millis(200);
/// The longest the loop sleeps when nothing is due.
const IDLE: Duration = Duration::from_secs(3600);
/// How long to wait for the daemon's first answer on start.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// A shift started from the dashboard fails after this long, as the CLI's.
const SHIFT_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// What the threads tell the loop.
enum Msg {
    Input(Event),
    Stream(Stream),
    Fetched(Result<Vec<Fetched>>),
    Captured {
        uid: u64,
        screen: std::result::Result<String, String>,
    },
    Done {
        result: Result<String>,
    },
    Signal,
}

/// What the event stream says.
enum Stream {
    /// (Re)connected: the recent events, then live ones.
    Connected(Vec<EventView>),
    Event(EventView),
    /// Events were dropped before the next one: the picture is stale.
    Lagged,
    /// The daemon went away (why).
    Down(String),
    /// The first connection failed: `top` ends with this error.
    Failed(Error),
}

/// Runs the dashboard until `q`; the daemon is started if none runs.
pub fn run(target: Endpoint, colour: bool) -> Result<i32> {
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        return Err(Error::refused(
            "top needs a terminal, and its standard input or output is not one",
            Some("`marvel get sessions -w` redraws a table without one".into()),
        ));
    }
    let (tx, rx) = mpsc::channel();
    {
        let (target, tx) = (target.clone(), tx.clone());
        thread::spawn(move || follow(&target, &tx));
    }
    let mut model = Model::default();
    // The stream is open before the first listing, so no change falls
    // between the two.
    let start_deadline = match &target {
        Endpoint::Local(_) => START_DEADLINE,
        // ssh reports its own failure, with its reason, within this.
        Endpoint::Ssh(r) => client::ssh::greeting_deadline(r) + START_DEADLINE,
    };
    match rx.recv_timeout(start_deadline) {
        Ok(Msg::Stream(Stream::Connected(backlog))) => model.backlog(backlog),
        Ok(Msg::Stream(Stream::Failed(e))) => return Err(e),
        Ok(Msg::Stream(Stream::Down(why))) => return Err(Error::daemon(why)),
        Ok(_) | Err(_) => {
            return Err(Error::daemon(format!(
                "the daemon of context {} did not answer within {} s",
                target.describe(),
                start_deadline.as_secs()
            )));
        }
    }
    for f in fetch_all(&target, &Needs::everything().fetches())? {
        model.apply(f);
    }
    model.link = Link::Up;
    let mut app = App {
        place: place(&target),
        target,
        colour,
        model,
        ui: Ui::default(),
        preview: None,
        needs: Needs::default(),
        fetching: false,
        capturing: false,
        last_capture: None,
        last_heartbeats: Instant::now(),
        tx,
    };
    let mut screen = Screen::enter()?;
    let input = Input::start(app.tx.clone());
    spawn_signals(app.tx.clone());
    let fetcher = worker(app.tx.clone(), &app.target, |t, batch: Vec<Fetch>| {
        Msg::Fetched(fetch_all(t, &batch))
    });
    let capturer = worker(
        app.tx.clone(),
        &app.target,
        |t, (uid, key): (u64, String)| Msg::Captured {
            uid,
            screen: capture(t, key),
        },
    );
    app.main_loop(&mut screen, &rx, &input, &fetcher, &capturer)?;
    drop(screen);
    Ok(exit::OK)
}

struct App {
    target: Endpoint,
    place: String,
    colour: bool,
    model: Model,
    ui: Ui,
    preview: Option<Preview>,
    /// What events asked for and is not asked yet.
    needs: Needs,
    fetching: bool,
    capturing: bool,
    /// Which session's screen was read last, and when.
    last_capture: Option<(u64, Instant)>,
    last_heartbeats: Instant,
    tx: Sender<Msg>,
}

impl App {
    fn main_loop(
        &mut self,
        screen: &mut Screen,
        rx: &Receiver<Msg>,
        input: &Input,
        fetcher: &Sender<Vec<Fetch>>,
        capturer: &Sender<(u64, String)>,
    ) -> Result<()> {
        let mut dirty = true;
        loop {
            if dirty {
                self.draw(screen)?;
                dirty = false;
            }
            let now = Instant::now();
            self.ask(fetcher, capturer, now);
            let tick = self
                .model
                .next_tick(&self.model.rows(&self.ui.filter), Utc::now())
                .and_then(|d| d.to_std().ok());
            let mut wait = tick.unwrap_or(IDLE);
            for due in [self.capture_due(now), self.heartbeats_due()]
                .into_iter()
                .flatten()
            {
                wait = wait.min(due.saturating_duration_since(now));
            }
            let first = match rx.recv_timeout(wait) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    dirty |= tick.is_some();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            // A burst (200 sessions created at once) is merged before the
            // next frame.
            for msg in std::iter::once(first).chain(rx.try_iter()) {
                match self.handle(msg) {
                    Flow::Quit => return Ok(()),
                    Flow::Redraw => dirty = true,
                    Flow::Same => {}
                    Flow::Attach(key) => {
                        let footer = self.attach(&key, screen, input);
                        self.ui.footer = Some(footer);
                        dirty = true;
                    }
                }
            }
        }
    }

    fn draw(&mut self, screen: &mut Screen) -> Result<()> {
        let ctx = Ctx {
            now: Utc::now(),
            tz: *Local::now().offset(),
            colour: self.colour,
            place: &self.place,
        };
        let (model, ui, preview) = (&self.model, &mut self.ui, self.preview.as_ref());
        screen
            .term
            .draw(|f| view::draw(f, model, ui, preview, &ctx))
            .map_err(|e| Error::io("the terminal", &e))?;
        Ok(())
    }

    /// Merges one message; what the loop does next.
    fn handle(&mut self, msg: Msg) -> Flow {
        match msg {
            Msg::Input(Event::Key(key)) => match self.ui.key(key, &self.model) {
                Some(Effect::Quit) => return Flow::Quit,
                Some(Effect::Act(Action::Attach(key))) => return Flow::Attach(key),
                Some(Effect::Act(action)) => self.act(action),
                None => {}
            },
            Msg::Input(Event::Paste(text)) => self.ui.paste(&text),
            Msg::Input(Event::Resize(..)) => {}
            Msg::Input(_) => return Flow::Same,
            Msg::Stream(Stream::Connected(backlog)) => {
                self.model.link = Link::Up;
                self.model.backlog(backlog);
                self.needs.merge(Needs::everything());
            }
            Msg::Stream(Stream::Event(e)) => {
                let mut needs = Needs::default();
                needs.event(&e);
                if self.model.event(e) {
                    self.needs.merge(needs);
                }
            }
            Msg::Stream(Stream::Lagged) => self.needs.merge(Needs::everything()),
            Msg::Stream(Stream::Down(why)) => {
                let down = Link::Down(why);
                if self.model.link == down {
                    return Flow::Same;
                }
                self.model.link = down;
            }
            // Only the first connection fails this way, before the loop.
            Msg::Stream(Stream::Failed(e)) => self.model.link = Link::Down(error_line(&e)),
            Msg::Fetched(result) => {
                self.fetching = false;
                // A failure is the daemon going away: the stream says so,
                // and its return brings a full refresh.
                for f in result.unwrap_or_default() {
                    self.model.apply(f);
                }
            }
            Msg::Captured { uid, screen } => {
                self.capturing = false;
                let preview = Preview { uid, screen };
                if self.preview.as_ref() == Some(&preview) {
                    return Flow::Same;
                }
                self.preview = Some(preview);
            }
            Msg::Done { result } => {
                self.ui.footer = Some(match result {
                    Ok(text) => Footer::ok(text),
                    Err(e) => Footer::error(error_line(&e)),
                });
                // What was typed shows at once.
                self.last_capture = None;
            }
            Msg::Signal => return Flow::Quit,
        }
        Flow::Redraw
    }

    /// Sends what is due: the listings events asked for (one batch at a
    /// time; what comes meanwhile waits for the next), and the selected
    /// session's screen.
    fn ask(
        &mut self,
        fetcher: &Sender<Vec<Fetch>>,
        capturer: &Sender<(u64, String)>,
        now: Instant,
    ) {
        if self.heartbeats_due().is_some_and(|at| at <= now) {
            self.last_heartbeats = now;
            self.needs.merge(Needs::sessions());
        }
        if !self.fetching && !self.needs.is_empty() && self.model.link == Link::Up {
            let batch = std::mem::take(&mut self.needs).fetches();
            self.fetching = fetcher.send(batch).is_ok();
        }
        if self.capture_due(now).is_some_and(|at| at <= now)
            && let Some((uid, key)) = self.capture_target()
        {
            self.capturing = capturer.send((uid, key)).is_ok();
            self.last_capture = Some((uid, now));
        }
    }

    /// The selected session, when it has a pane to read.
    fn capture_target(&self) -> Option<(u64, String)> {
        let id = self.ui.selected.as_ref()?;
        let s = self.model.target(id)?;
        (live(s) && s.pane.is_some()).then(|| (s.uid, s.key.clone()))
    }

    /// When the preview should be read next: at once for a newly selected
    /// session, then every [`PREVIEW_EVERY`]; never while a read is out.
    fn capture_due(&self, now: Instant) -> Option<Instant> {
        if self.capturing || self.model.link != Link::Up {
            return None;
        }
        let (uid, _) = self.capture_target()?;
        match self.last_capture {
            Some((last, at)) if last == uid => Some(at + PREVIEW_EVERY),
            _ => Some(now),
        }
    }

    fn heartbeats_due(&self) -> Option<Instant> {
        self.model
            .sessions
            .iter()
            .any(|s| s.health.is_some())
            .then_some(self.last_heartbeats + HEARTBEATS_EVERY)
    }

    /// Sends an action to the daemon from its own thread; its answer comes
    /// back as [`Msg::Done`].
    fn act(&self, action: Action) {
        let (target, tx) = (self.target.clone(), self.tx.clone());
        thread::spawn(move || {
            let _ = tx.send(Msg::Done {
                result: request(&target, action),
            });
        });
    }

    /// `enter`: inside tmux on the same server, switches the client to the
    /// session and stays; otherwise leaves the dashboard for `tmux attach`
    /// (on another host's context, `ssh -t HOST marvel attach KEY`) and
    /// comes back when the user detaches.
    fn attach(&mut self, key: &str, screen: &mut Screen, input: &Input) -> Footer {
        // The daemon says first whether the session has a pane to open.
        let found = match client::call_running(&self.target, Request::Attach { key: key.into() }) {
            Ok(Some(Response::AttachTarget {
                tmux_session,
                window,
                pane,
            })) => Ok((tmux_session, window, pane)),
            Ok(Some(other)) => Err(unexpected(&other)),
            Ok(None) => Err(no_daemon()),
            Err(e) => Err(e),
        };
        let (argv, inside) = match &self.target {
            Endpoint::Local(t) => {
                let tmux = Tmux::new(t.tmux_socket.clone(), Duration::from_secs(5));
                let inside = tmux.is_client_of(
                    std::env::var(crate::substrate::tmux::TMUX_ENV)
                        .ok()
                        .as_deref(),
                );
                let argv = found
                    .and_then(|(s, w, p)| {
                        attach_argv(&tmux, inside, &s, w.as_deref(), p.as_deref())
                    })
                    .map(|v| v.into_iter().map(OsString::from).collect());
                (argv, inside)
            }
            Endpoint::Ssh(r) => (found.and_then(|_| client::ssh::attach_argv(r, key)), false),
        };
        let argv = match argv {
            Ok(argv) => argv,
            Err(e) => return Footer::error(error_line(&e)),
        };
        let (program, rest) = argv
            .split_first()
            .expect("an attach argv starts with its program");
        let program = program.to_string_lossy().into_owned();
        let mut cmd = Command::new(&program);
        cmd.args(rest);
        if inside {
            return match cmd.output() {
                Ok(out) if out.status.success() => Footer::ok(format!(
                    "switched to {key}; the tmux prefix then L comes back"
                )),
                Ok(out) => Footer::error(format!(
                    "tmux could not switch to {key}: {}",
                    output::escape_line(String::from_utf8_lossy(&out.stderr).trim())
                )),
                Err(e) => Footer::error(format!("cannot run {program}: {e}")),
            };
        }
        // A tmux client of another server would refuse to nest: this one
        // is asked for, and ends when the user detaches. tmux draws on the
        // terminal it finds on stdin; its stdout only gets the closing
        // "[detached ...]", which would stay on the screen below the
        // dashboard, and its stderr the reason it failed, for the footer.
        cmd.env_remove(crate::substrate::tmux::TMUX_ENV)
            .stdin(Stdio::inherit())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Over ssh the far tmux draws through ssh's stdout.
        let remote = matches!(self.target, Endpoint::Ssh(_));
        if remote {
            cmd.stdout(Stdio::inherit());
        }
        input.pause();
        let left = screen.suspend();
        let ran = cmd.output();
        let back = screen.resume();
        input.resume();
        if let Err(e) = left.and(back) {
            return Footer::error(format!("the terminal: {e}"));
        }
        match ran {
            Ok(out) if out.status.success() => Footer::ok(format!("back from {key}")),
            Ok(out) => Footer::error(format!(
                "{} to {key} failed ({}): {}",
                if remote { "ssh attach" } else { "tmux attach" },
                out.status,
                output::escape_line(String::from_utf8_lossy(&out.stderr).trim())
            )),
            Err(e) => Footer::error(format!("cannot run {program}: {e}")),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Quit,
    Redraw,
    /// Nothing shown changed.
    Same,
    /// Leave the dashboard for this session's pane (it needs the terminal).
    Attach(String),
}

/// An error in one line, as the footer and header show it.
fn error_line(e: &Error) -> String {
    let text = e.to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    text.replace("\nhelp: ", "; ")
}

fn no_daemon() -> Error {
    Error::daemon("no daemon is running")
}

/// Which daemon this dashboard shows: `host:~/state-dir` on this host,
/// the context (`build (ssh://me@build.example)`) on another.
fn place(target: &Endpoint) -> String {
    let target = match target {
        Endpoint::Local(t) => t,
        Endpoint::Ssh(r) => return r.describe(),
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let dir = &target.paths.root;
    let shown = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .and_then(|h| {
            dir.strip_prefix(Path::new(&h))
                .ok()
                .map(|rest| Path::new("~").join(rest))
        })
        .unwrap_or_else(|| dir.clone());
    format!("{host}:{}", shown.display())
}

/// Follows the event log, reconnecting when the daemon goes away. Only
/// the first connection may start a daemon: after that one that was
/// stopped stays stopped until something else starts it.
fn follow(target: &Endpoint, tx: &Sender<Msg>) {
    let req = Request::Events {
        filter: EventFilter {
            limit: Some(EVENTS_KEPT),
            ..EventFilter::default()
        },
        follow: true,
    };
    let send = |s: Stream| tx.send(Msg::Stream(s)).is_ok();
    let mut first = true;
    let mut delay = Duration::from_millis(250);
    loop {
        if !first {
            thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(2));
            match client::call_running(target, Request::Ping) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    if !send(Stream::Down("no daemon is running".into())) {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    if !send(Stream::Down(error_line(&e))) {
                        return;
                    }
                    continue;
                }
            }
        }
        let mut connected = false;
        let mut open = true;
        let result = client::follow(target, req.clone(), &mut |resp| {
            let msg = match resp {
                Response::Events(evs) => {
                    connected = true;
                    Stream::Connected(evs)
                }
                Response::Event(e) => Stream::Event(e),
                Response::Lagged { .. } => Stream::Lagged,
                other => return Err(unexpected(&other)),
            };
            open = send(msg);
            Ok(open)
        });
        if !open {
            return;
        }
        let why = match result {
            Err(e) if first && !connected => {
                let _ = send(Stream::Failed(e));
                return;
            }
            Err(e) => error_line(&e),
            Ok(()) => "the daemon closed the connection".into(),
        };
        if connected {
            delay = Duration::from_millis(250);
        }
        first = false;
        if !send(Stream::Down(why)) {
            return;
        }
    }
}

/// A thread that runs `job` for each order, one at a time, and sends its
/// answer to the loop.
fn worker<T: Send + 'static>(
    tx: Sender<Msg>,
    target: &Endpoint,
    job: impl Fn(&Endpoint, T) -> Msg + Send + 'static,
) -> Sender<T> {
    let (orders, rx) = mpsc::channel::<T>();
    let target = target.clone();
    thread::spawn(move || {
        for order in rx {
            if tx.send(job(&target, order)).is_err() {
                return;
            }
        }
    });
    orders
}

/// Asks each question of `batch`, in order, of a running daemon.
fn fetch_all(target: &Endpoint, batch: &[Fetch]) -> Result<Vec<Fetched>> {
    let ask = |req: Request| match client::call_running(target, req)? {
        Some(resp) => Ok(resp),
        None => Err(no_daemon()),
    };
    let mut out = Vec::new();
    for f in batch {
        match f {
            Fetch::Views(scope, parts) => {
                for (wanted, kind) in [
                    (parts.teams, Kind::Teams),
                    (parts.roles, Kind::Roles),
                    (parts.sessions, Kind::Sessions),
                ] {
                    if !wanted {
                        continue;
                    }
                    let filter = scope.filter();
                    let scope: Scope = scope.clone();
                    out.push(match ask(Request::Get { kind, filter })? {
                        Response::Sessions(v) => Fetched::Sessions(scope, v),
                        Response::Roles(v) => Fetched::Roles(scope, v),
                        Response::Teams(v) => Fetched::Teams(scope, v),
                        other => return Err(unexpected(&other)),
                    });
                }
            }
            Fetch::Status => match ask(Request::Status)? {
                Response::Status(s) => out.push(Fetched::Status(s)),
                other => return Err(unexpected(&other)),
            },
            Fetch::Crashes => {
                let filter = EventFilter {
                    kinds: vec![EventKind::Crashed],
                    limit: Some(CRASHES_READ),
                    ..EventFilter::default()
                };
                match ask(Request::Events {
                    filter,
                    follow: false,
                })? {
                    Response::Events(evs) => out.push(Fetched::Crashes(evs)),
                    other => return Err(unexpected(&other)),
                }
            }
        }
    }
    Ok(out)
}

/// What a session's pane shows now, through the daemon.
fn capture(target: &Endpoint, key: String) -> std::result::Result<String, String> {
    match client::call_running(target, Request::Capture { key }) {
        Ok(Some(Response::Text(text))) => Ok(text),
        Ok(Some(other)) => Err(error_line(&unexpected(&other))),
        Ok(None) => Err(error_line(&no_daemon())),
        Err(e) => Err(error_line(&e)),
    }
}

/// One action as the CLI would send it; the daemon's answer in a line.
fn request(target: &Endpoint, action: Action) -> Result<String> {
    let req = match action {
        Action::Reset(key) => Request::Reset { key },
        Action::Kill(key) => Request::Kill { key },
        Action::Inject { session, text } => Request::Inject {
            key: session,
            text,
            enter: true,
            keys: false,
            when_idle_ms: None,
        },
        Action::Shift { team, role } => Request::Shift {
            team,
            role,
            timeout_ms: SHIFT_TIMEOUT_MS,
        },
        Action::Attach(_) => unreachable!("attach runs in the loop: it needs the terminal"),
    };
    match client::call_running(target, req)? {
        Some(Response::Done(text)) => Ok(output::escape_line(&text).into_owned()),
        Some(Response::Shift { team, shift }) => Ok(format!(
            "{team} shift started: {} ({} sessions, one at a time)",
            output::escape_line(&shift.roles.join(", ")),
            shift.total
        )),
        Some(other) => Err(unexpected(&other)),
        None => Err(no_daemon()),
    }
}

/// SIGTERM, SIGHUP and SIGINT end the dashboard like `q`, so the terminal
/// is given back as it was.
fn spawn_signals(tx: Sender<Msg>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP, SIGINT]) else {
        return;
    };
    thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = tx.send(Msg::Signal);
        }
    });
}

/// The keyboard, read on its own thread. It can be paused while another
/// program (a tmux client) owns the terminal.
struct Input {
    orders: Sender<bool>,
    paused: Receiver<()>,
}

impl Input {
    fn start(tx: Sender<Msg>) -> Input {
        let (orders, rx) = mpsc::channel::<bool>();
        let (ack, paused) = mpsc::channel();
        thread::spawn(move || {
            loop {
                match rx.try_recv() {
                    Ok(true) => {
                        let _ = ack.send(());
                        // Until resumed (or the dashboard ends).
                        loop {
                            match rx.recv() {
                                Ok(false) => break,
                                Ok(true) => {
                                    let _ = ack.send(());
                                }
                                Err(_) => return,
                            }
                        }
                    }
                    Ok(false) | Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
                match crossterm::event::poll(INPUT_POLL) {
                    Ok(true) => match crossterm::event::read() {
                        Ok(ev) => {
                            if tx.send(Msg::Input(ev)).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    },
                    Ok(false) => {}
                    Err(_) => return,
                }
            }
        });
        Input { orders, paused }
    }

    /// Returns once the thread reads no more keys.
    fn pause(&self) {
        if self.orders.send(true).is_ok() {
            let _ = self.paused.recv_timeout(INPUT_POLL * 5);
        }
    }

    fn resume(&self) {
        let _ = self.orders.send(false);
    }
}

/// The terminal while the dashboard owns it: raw mode, the alternate
/// screen, bracketed paste, no cursor. Dropping it (or a panic) gives the
/// terminal back as it was.
struct Screen {
    term: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> Result<Screen> {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = leave();
            hook(info);
        }));
        take().map_err(|e| Error::io("the terminal", &e))?;
        let term = Terminal::new(CrosstermBackend::new(io::stdout()))
            .map_err(|e| Error::io("the terminal", &e))?;
        Ok(Screen { term })
    }

    fn suspend(&mut self) -> io::Result<()> {
        leave()
    }

    fn resume(&mut self) -> io::Result<()> {
        take()?;
        // Whatever the other program left on the screen is drawn over.
        self.term.clear()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = leave();
    }
}

fn take() -> io::Result<()> {
    terminal::enable_raw_mode()?;
    execute!(
        io::stdout(),
        EnterAlternateScreen,
        EnableBracketedPaste,
        cursor::Hide
    )
}

fn leave() -> io::Result<()> {
    let raw = terminal::disable_raw_mode();
    execute!(
        io::stdout(),
        DisableBracketedPaste,
        LeaveAlternateScreen,
        cursor::Show
    )?;
    raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::{Paths, Target};
    use crate::top::model::tests::{NOW, event, picture};
    use crate::top::model::{Parts, RowId};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn app() -> (App, Receiver<Msg>) {
        let (tx, rx) = mpsc::channel();
        let app = App {
            target: Endpoint::Local(Target {
                paths: Paths {
                    root: "/nonexistent/marvel".into(),
                },
                tmux_socket: None,
            }),
            place: String::new(),
            colour: false,
            model: picture(),
            ui: Ui::default(),
            preview: None,
            needs: Needs::default(),
            fetching: false,
            capturing: false,
            last_capture: None,
            last_heartbeats: Instant::now(),
            tx,
        };
        (app, rx)
    }

    fn select(app: &mut App, key: &str) {
        let rows = app.model.rows("");
        app.ui.selected = rows.iter().find(|r| r.id().key() == key).map(|r| r.id());
    }

    fn key(code: KeyCode) -> Msg {
        Msg::Input(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    /// Regression: the time the preview was due and the time the loop
    /// looked were read from the clock apart, so a due read was never
    /// sent and the loop spun without sleeping.
    #[test]
    fn the_header_names_another_hosts_context() {
        use crate::client::ssh::Remote;
        use crate::context::{Host, SshUrl};
        let remote = Endpoint::Ssh(Remote {
            context: "build".into(),
            host: Host::new(SshUrl::parse("ssh://me@build.example:2222").unwrap()),
        });
        assert_eq!(place(&remote), "build (ssh://me@build.example:2222)");
        let local = Endpoint::Local(Target {
            paths: Paths {
                root: "/srv/marvel".into(),
            },
            tmux_socket: None,
        });
        assert!(place(&local).ends_with("/srv/marvel"), "{}", place(&local));
    }

    #[test]
    fn the_selected_screen_is_read_at_once_then_every_half_second() {
        let (mut app, _rx) = app();
        let (fetcher, _f) = mpsc::channel();
        let (capturer, captures) = mpsc::channel();
        select(&mut app, "demo/squad/worker-0");
        let now = Instant::now();
        assert_eq!(app.capture_due(now), Some(now));
        app.ask(&fetcher, &capturer, now);
        assert_eq!(
            captures.try_recv().unwrap(),
            (1, "demo/squad/worker-0".into())
        );
        // One read at a time.
        assert_eq!(app.capture_due(now), None);
        app.capturing = false;
        assert_eq!(app.capture_due(now), Some(now + PREVIEW_EVERY));
        app.ask(&fetcher, &capturer, now + PREVIEW_EVERY / 2);
        assert!(captures.try_recv().is_err());
        app.ask(&fetcher, &capturer, now + PREVIEW_EVERY);
        assert!(captures.try_recv().is_ok());
        // Another session: at once. A crashed one has no screen to read.
        app.capturing = false;
        select(&mut app, "demo/squad/worker-1");
        assert_eq!(app.capture_due(now), Some(now));
        select(&mut app, "demo/ops/cron-0");
        assert_eq!(app.capture_due(now), None);
        // Nor does anything while the daemon is away.
        select(&mut app, "demo/squad/worker-1");
        app.model.link = Link::Down("gone".into());
        assert_eq!(app.capture_due(now), None);
    }

    #[test]
    fn events_ask_for_their_team_one_batch_at_a_time() {
        let (mut app, _rx) = app();
        let (fetcher, batches) = mpsc::channel();
        let (capturer, _c) = mpsc::channel();
        let crash = event(9, NOW, EventKind::Crashed, "demo/squad/worker-0", "exit 1");
        assert_eq!(
            app.handle(Msg::Stream(Stream::Event(crash.clone()))),
            Flow::Redraw
        );
        let now = Instant::now();
        app.ask(&fetcher, &capturer, now);
        let squad = Scope::Team("demo/squad".into());
        assert_eq!(
            batches.try_recv().unwrap(),
            [Fetch::Views(squad.clone(), Parts::ALL)]
        );
        // Seen already: nothing to ask. A new one waits for the batch out.
        app.handle(Msg::Stream(Stream::Event(crash)));
        let health = event(10, NOW, EventKind::Unhealthy, "demo/squad/worker-1", "");
        app.handle(Msg::Stream(Stream::Event(health)));
        app.ask(&fetcher, &capturer, now);
        assert!(batches.try_recv().is_err());
        app.handle(Msg::Fetched(Ok(Vec::new())));
        app.ask(&fetcher, &capturer, now);
        assert_eq!(
            batches.try_recv().unwrap(),
            [Fetch::Views(squad, Parts::SESSIONS)]
        );
        // A reconnection lists everything again.
        app.handle(Msg::Fetched(Ok(Vec::new())));
        app.handle(Msg::Stream(Stream::Connected(Vec::new())));
        app.ask(&fetcher, &capturer, now);
        assert_eq!(batches.try_recv().unwrap(), Needs::everything().fetches());
    }

    #[test]
    fn the_daemon_going_away_is_said_once() {
        let (mut app, _rx) = app();
        let down = || Msg::Stream(Stream::Down("no daemon is running".into()));
        assert_eq!(app.handle(down()), Flow::Redraw);
        assert_eq!(app.model.link, Link::Down("no daemon is running".into()));
        assert_eq!(app.handle(down()), Flow::Same);
        // Nothing is asked of a daemon that is not there.
        let (fetcher, batches) = mpsc::channel();
        let (capturer, _c) = mpsc::channel();
        app.needs.merge(Needs::sessions());
        app.ask(&fetcher, &capturer, Instant::now());
        assert!(batches.try_recv().is_err());
    }

    #[test]
    fn keys_act_or_attach_and_answers_land_in_the_footer() {
        let (mut app, _rx) = app();
        select(&mut app, "demo/squad/worker-0");
        assert_eq!(
            app.handle(key(KeyCode::Enter)),
            Flow::Attach("demo/squad/worker-0".into())
        );
        assert_eq!(app.handle(key(KeyCode::Char('q'))), Flow::Quit);
        assert_eq!(app.handle(Msg::Signal), Flow::Quit);
        app.handle(Msg::Done {
            result: Err(Error::refused("session x is crashed", Some("try y".into()))),
        });
        assert_eq!(
            app.ui.footer,
            Some(Footer::error("session x is crashed; try y"))
        );
        let screen = Msg::Captured {
            uid: 1,
            screen: Ok("$ ".into()),
        };
        assert_eq!(app.handle(screen), Flow::Redraw);
        let same = Msg::Captured {
            uid: 1,
            screen: Ok("$ ".into()),
        };
        assert_eq!(app.handle(same), Flow::Same);
        assert_eq!(
            app.ui.selected,
            Some(RowId::Session {
                key: "demo/squad/worker-0".into(),
                uid: 1
            })
        );
    }
}
