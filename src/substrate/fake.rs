//! An in-memory substrate for the daemon's unit tests: records every call,
//! keeps sessions, windows (`@0, @1, ...`) and panes (`%0, %1, ...`) as
//! tmux does (dead panes stay, a respawn keeps its pane id), and lets a
//! test kill panes, end programs, lose the server, make the next calls
//! fail, or hold every call as a stopped server would.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The pid the fake tmux server says it has.
pub const FAKE_SERVER_PID: u32 = 4000;

use super::{
    Decoration, Observation, PaneInfo, Place, SpawnRequest, Spawned, SubResult, Substrate,
    SubstrateError, WindowRef,
};

/// One call made through the [`Substrate`] trait, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Version,
    Spawn(Box<SpawnRequest>),
    Kill(String),
    List,
    Capture {
        pane: String,
        history: u32,
    },
    SendText {
        pane: String,
        text: String,
        enter: bool,
    },
    SendKeys {
        pane: String,
        keys: Vec<String>,
    },
    Paste {
        pane: String,
        text: String,
        enter: bool,
    },
    Decorate(Vec<Decoration>),
}

/// A pane of the fake server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePane {
    pub session_name: String,
    pub pane: String,
    pub pane_pid: u32,
    pub window: String,
    pub window_name: String,
    pub owner: String,
    /// The session key and uid marvel kept on it.
    pub key: Option<String>,
    pub uid: Option<u64>,
    /// The last status set on its window.
    pub status: Option<String>,
    /// `Some((status, signal))` once marked dead (the pane stays listed, as
    /// with tmux's remain-on-exit).
    pub dead: Option<(Option<i32>, Option<i32>)>,
    /// What `capture` returns.
    pub screen: String,
    /// The request that created it; `None` for a foreign pane.
    pub request: Option<SpawnRequest>,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    panes: BTreeMap<u32, FakePane>,
    /// The team of each session marvel made (`@marvel-team`).
    teams: BTreeMap<String, String>,
    next_pane: u32,
    next_window: u32,
    next_pid: u32,
    failures: VecDeque<SubstrateError>,
    no_server: bool,
}

/// See the module docs. All methods take `&self`; the state sits behind a
/// mutex so the fake is `Send + Sync` like the real one.
#[derive(Debug)]
pub struct FakeSubstrate {
    state: Mutex<State>,
    gate: Arc<Gate>,
}

/// Closed while a [`Hold`] exists: calls wait at it.
#[derive(Debug, Default)]
struct Gate {
    held: Mutex<u32>,
    opened: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, u32> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pass(&self) {
        let mut held = self.lock();
        while *held > 0 {
            held = self.opened.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Every call of the fake blocks until this is dropped (see
/// [`FakeSubstrate::hold`]).
#[must_use = "the calls are released when the hold is dropped"]
pub struct Hold {
    gate: Arc<Gate>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        *self.gate.lock() -= 1;
        self.gate.opened.notify_all();
    }
}

impl Default for FakeSubstrate {
    fn default() -> Self {
        FakeSubstrate::new()
    }
}

impl FakeSubstrate {
    pub fn new() -> FakeSubstrate {
        FakeSubstrate {
            state: Mutex::new(State {
                next_pid: 1000,
                ..State::default()
            }),
            gate: Arc::default(),
        }
    }

    /// Makes every call wait, as with a stopped tmux server, until the
    /// returned guard is dropped.
    pub fn hold(&self) -> Hold {
        *self.gate.lock() += 1;
        Hold {
            gate: Arc::clone(&self.gate),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; the
        // state is still worth reading for the report.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The spawn requests made so far, including failed ones.
    pub fn spawns(&self) -> Vec<SpawnRequest> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Spawn(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    /// The panes passed to `kill` so far.
    pub fn kills(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Kill(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Texts and keys sent so far, as `(pane, text)`; keys are joined by
    /// spaces, an Enter after text is written as a trailing `\n`.
    pub fn sent(&self) -> Vec<(String, String)> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::SendText { pane, text, enter } => {
                    Some((pane, if enter { format!("{text}\n") } else { text }))
                }
                Call::SendKeys { pane, keys } => Some((pane, keys.join(" "))),
                Call::Paste { pane, text, enter } => {
                    Some((pane, if enter { format!("{text}\n") } else { text }))
                }
                _ => None,
            })
            .collect()
    }

    /// The pane with this id, if the fake server has it.
    pub fn pane(&self, pane: &str) -> Option<FakePane> {
        let id = pane_number(pane)?;
        self.lock().panes.get(&id).cloned()
    }

    /// All panes of the fake server, dead or alive.
    pub fn panes(&self) -> Vec<FakePane> {
        self.lock().panes.values().cloned().collect()
    }

    /// The pane's program ended: it stays listed as dead, as a pane of
    /// marvel's does (`remain-on-exit`).
    pub fn exit(&self, pane: &str, status: Option<i32>) {
        self.set_dead(pane, status, None);
    }

    /// Marks the pane's program as ended; it stays listed as dead.
    pub fn set_dead(&self, pane: &str, status: Option<i32>, signal: Option<i32>) {
        let mut st = self.lock();
        if let Some(p) = pane_number(pane).and_then(|id| st.panes.get_mut(&id)) {
            p.dead = Some((status, signal));
        }
    }

    /// Gives the pane another program, as when the pane id was handed out
    /// again by a new server.
    pub fn set_pid(&self, pane: &str, pid: u32) {
        let mut st = self.lock();
        if let Some(p) = pane_number(pane).and_then(|id| st.panes.get_mut(&id)) {
            p.pane_pid = pid;
        }
    }

    /// Removes the pane as if it was destroyed from outside.
    pub fn remove(&self, pane: &str) {
        if let Some(id) = pane_number(pane) {
            self.lock().panes.remove(&id);
        }
    }

    /// Sets what `capture` returns for the pane.
    pub fn set_screen(&self, pane: &str, screen: &str) {
        let mut st = self.lock();
        if let Some(p) = pane_number(pane).and_then(|id| st.panes.get_mut(&id)) {
            p.screen = screen.to_string();
        }
    }

    /// Adds a pane in a session of its own, made by someone else (another
    /// owner, or none), or by an older marvel (one session per spawn).
    pub fn add_foreign(&self, session_name: &str, owner: &str) -> Spawned {
        let mut st = self.lock();
        let window = st.new_window();
        st.new_pane(session_name, &window, "foreign", owner, None)
    }

    /// The sessions of the fake server, each with its windows' names in
    /// index order.
    pub fn sessions(&self) -> BTreeMap<String, Vec<String>> {
        let st = self.lock();
        let mut out: BTreeMap<String, Vec<(u32, String)>> = BTreeMap::new();
        for p in st.panes.values() {
            let w = window_number(&p.window).unwrap_or(0);
            let names = out.entry(p.session_name.clone()).or_default();
            if !names.iter().any(|(n, _)| *n == w) {
                names.push((w, p.window_name.clone()));
            }
        }
        out.into_iter()
            .map(|(s, mut w)| {
                w.sort();
                (s, w.into_iter().map(|(_, n)| n).collect())
            })
            .collect()
    }

    /// Makes the next call fail with `err` (queued: several calls to this
    /// make several calls fail, in order). `list`, `spawn`, `kill`,
    /// `capture`, `send_*`, and `version` all consume it.
    pub fn fail_next(&self, err: SubstrateError) {
        self.lock().failures.push_back(err);
    }

    /// Makes the next `n` calls fail with `err`.
    pub fn fail_next_n(&self, err: SubstrateError, n: usize) {
        let mut st = self.lock();
        st.failures.extend(std::iter::repeat_n(err, n));
    }

    /// Simulates the server going away: every pane is gone, `list` answers
    /// `NoServer`, and calls needing a pane fail with `NoServer`. The next
    /// successful `spawn` starts a fresh server, as tmux does.
    pub fn lose_server(&self) {
        let mut st = self.lock();
        st.panes.clear();
        st.no_server = true;
    }

    /// Records `call` and returns the queued failure, if any.
    fn enter(&self, call: Call) -> (MutexGuard<'_, State>, SubResult<()>) {
        self.gate.pass();
        let mut st = self.lock();
        st.calls.push(call);
        let r = match st.failures.pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        (st, r)
    }
}

impl State {
    fn new_window(&mut self) -> String {
        let id = self.next_window;
        self.next_window += 1;
        format!("@{id}")
    }

    fn new_pane(
        &mut self,
        session_name: &str,
        window: &str,
        window_name: &str,
        owner: &str,
        req: Option<SpawnRequest>,
    ) -> Spawned {
        let id = self.next_pane;
        self.next_pane += 1;
        let pid = self.next_pid;
        self.next_pid += 1;
        let pane = format!("%{id}");
        self.panes.insert(
            id,
            FakePane {
                session_name: session_name.to_string(),
                pane: pane.clone(),
                pane_pid: pid,
                window: window.to_string(),
                window_name: window_name.to_string(),
                owner: owner.to_string(),
                key: req.as_ref().map(|r| r.key.clone()),
                uid: req.as_ref().map(|r| r.uid),
                status: None,
                dead: None,
                screen: String::new(),
                request: req,
            },
        );
        self.no_server = false;
        Spawned {
            pane,
            pane_pid: pid,
            window: window.to_string(),
            server_pid: Some(FAKE_SERVER_PID),
        }
    }

    fn session_exists(&self, session: &str) -> bool {
        self.panes.values().any(|p| p.session_name == session)
    }

    fn window_session(&self, window: &str) -> Option<String> {
        self.panes
            .values()
            .find(|p| p.window == window)
            .map(|p| p.session_name.clone())
    }

    /// The pane, or the error tmux would give for it.
    fn live(&self, pane: &str) -> SubResult<&FakePane> {
        if self.no_server {
            return Err(SubstrateError::NoServer("no server running (fake)".into()));
        }
        pane_number(pane)
            .and_then(|id| self.panes.get(&id))
            .ok_or_else(|| SubstrateError::Refused(format!("can't find pane: {pane}")))
    }
}

fn window_number(window: &str) -> Option<u32> {
    window.strip_prefix('@')?.parse().ok()
}

fn pane_number(pane: &str) -> Option<u32> {
    pane.strip_prefix('%')?.parse().ok()
}

impl Substrate for FakeSubstrate {
    fn version(&self) -> SubResult<String> {
        let (_st, r) = self.enter(Call::Version);
        r.map(|_| "tmux 3.3a (fake)".to_string())
    }

    fn spawn(&self, req: &SpawnRequest) -> SubResult<Spawned> {
        let (mut st, r) = self.enter(Call::Spawn(Box::new(req.clone())));
        r?;
        let refused = |m: String| Err(SubstrateError::Refused(m));
        match &req.place {
            Place::NewSession { session, team, .. } => {
                if st.session_exists(session) {
                    return refused(format!("duplicate session: {session}"));
                }
                st.teams.insert(session.clone(), team.clone());
                let window = st.new_window();
                Ok(st.new_pane(
                    session,
                    &window,
                    &req.window_name,
                    &req.owner,
                    Some(req.clone()),
                ))
            }
            Place::NewWindow { session, after } => {
                // As tmux answers: a server with no session at all knows
                // no target whatever it is.
                if st.panes.is_empty() {
                    return refused("no current target".into());
                }
                if !st.session_exists(session) {
                    return refused(format!("can't find session: {session}"));
                }
                match after {
                    Some(WindowRef::Id(w)) if st.window_session(w).is_none() => {
                        return refused(format!("can't find window: {w}"));
                    }
                    Some(WindowRef::Name(n))
                        if !st
                            .panes
                            .values()
                            .any(|p| p.session_name == *session && p.window_name == *n) =>
                    {
                        return refused(format!("can't find window: {n}"));
                    }
                    _ => {}
                }
                let window = st.new_window();
                Ok(st.new_pane(
                    session,
                    &window,
                    &req.window_name,
                    &req.owner,
                    Some(req.clone()),
                ))
            }
            Place::Split { window, .. } => {
                let Some(session) = st.window_session(window) else {
                    return refused(format!("can't find window: {window}"));
                };
                let name = st
                    .panes
                    .values()
                    .find(|p| p.window == *window)
                    .map(|p| p.window_name.clone())
                    .unwrap_or_default();
                Ok(st.new_pane(&session, window, &name, &req.owner, Some(req.clone())))
            }
            Place::Respawn { pane } => {
                let Some(id) = pane_number(pane).filter(|id| st.panes.contains_key(id)) else {
                    return refused(format!("can't find pane: {pane}"));
                };
                let pid = st.next_pid;
                st.next_pid += 1;
                let p = st.panes.get_mut(&id).expect("checked above");
                p.pane_pid = pid;
                p.dead = None;
                p.owner = req.owner.clone();
                p.key = Some(req.key.clone());
                p.uid = Some(req.uid);
                p.request = Some(req.clone());
                Ok(Spawned {
                    pane: pane.clone(),
                    pane_pid: pid,
                    window: p.window.clone(),
                    server_pid: Some(FAKE_SERVER_PID),
                })
            }
        }
    }

    fn kill(&self, pane: &str) -> SubResult<()> {
        let (mut st, r) = self.enter(Call::Kill(pane.to_string()));
        r?;
        if let Some(id) = pane_number(pane) {
            st.panes.remove(&id);
        }
        Ok(())
    }

    fn list(&self) -> SubResult<Observation> {
        let (st, r) = self.enter(Call::List);
        r?;
        if st.no_server {
            return Ok(Observation::NoServer);
        }
        Ok(Observation::Panes(
            st.panes
                .values()
                .map(|p| PaneInfo {
                    session_name: p.session_name.clone(),
                    pane: p.pane.clone(),
                    pane_pid: p.pane_pid,
                    window: p.window.clone(),
                    owner: p.owner.clone(),
                    key: p.key.clone(),
                    uid: p.uid,
                    team: st.teams.get(&p.session_name).cloned(),
                    dead: p.dead.is_some(),
                    dead_status: p.dead.and_then(|d| d.0),
                    dead_signal: p.dead.and_then(|d| d.1),
                    server_pid: Some(FAKE_SERVER_PID),
                })
                .collect(),
        ))
    }

    fn capture(&self, pane: &str, history: u32) -> SubResult<String> {
        let (st, r) = self.enter(Call::Capture {
            pane: pane.to_string(),
            history,
        });
        r?;
        st.live(pane).map(|p| p.screen.clone())
    }

    fn send_text(&self, pane: &str, text: &str, enter: bool) -> SubResult<()> {
        let (st, r) = self.enter(Call::SendText {
            pane: pane.to_string(),
            text: text.to_string(),
            enter,
        });
        r?;
        st.live(pane).map(|_| ())
    }

    fn send_keys(&self, pane: &str, keys: &[String]) -> SubResult<()> {
        let (st, r) = self.enter(Call::SendKeys {
            pane: pane.to_string(),
            keys: keys.to_vec(),
        });
        r?;
        st.live(pane).map(|_| ())
    }

    fn paste(&self, pane: &str, text: &str, enter: bool) -> SubResult<()> {
        let (st, r) = self.enter(Call::Paste {
            pane: pane.to_string(),
            text: text.to_string(),
            enter,
        });
        r?;
        st.live(pane).map(|_| ())
    }

    fn decorate(&self, decorations: &[Decoration]) -> SubResult<()> {
        let (mut st, r) = self.enter(Call::Decorate(decorations.to_vec()));
        r?;
        for d in decorations {
            for p in st.panes.values_mut().filter(|p| p.window == d.window) {
                p.status = Some(d.status.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str) -> SpawnRequest {
        placed(Place::NewSession {
            session: name.into(),
            team: "t/t".into(),
            status_left: String::new(),
        })
    }

    fn placed(place: Place) -> SpawnRequest {
        SpawnRequest {
            place,
            window_name: "w-0".into(),
            key: "t/t/w-0".into(),
            uid: 1,
            argv: vec!["sleep".into(), "1".into()],
            env: BTreeMap::new(),
            cwd: None,
            log: None,
            reports: None,
            owner: "me".into(),
            status: String::new(),
        }
    }

    #[test]
    fn windows_split_and_respawn_keep_to_their_session_as_tmux_does() {
        let f = FakeSubstrate::new();
        let a = f.spawn(&req("team")).unwrap();
        let mut w1 = placed(Place::NewWindow {
            session: "team".into(),
            after: None,
        });
        w1.window_name = "w-1".into();
        let b = f.spawn(&w1).unwrap();
        assert_ne!(a.window, b.window);
        let c = f
            .spawn(&placed(Place::Split {
                window: b.window.clone(),
                tiled: false,
            }))
            .unwrap();
        assert_eq!(c.window, b.window);
        assert_eq!(
            f.sessions()["team"],
            vec!["w-0".to_string(), "w-1".to_string()]
        );
        f.exit(&a.pane, Some(3));
        assert!(f.pane(&a.pane).unwrap().dead.is_some(), "a dead pane stays");
        let again = f
            .spawn(&placed(Place::Respawn {
                pane: a.pane.clone(),
            }))
            .unwrap();
        assert_eq!(again.pane, a.pane);
        assert_ne!(again.pane_pid, a.pane_pid);
        assert!(f.pane(&a.pane).unwrap().dead.is_none());
        let gone = placed(Place::NewWindow {
            session: "nobody".into(),
            after: None,
        });
        assert!(
            matches!(f.spawn(&gone), Err(SubstrateError::Refused(m)) if m.contains("can't find session"))
        );
        assert!(
            matches!(f.spawn(&req("team")), Err(SubstrateError::Refused(m)) if m.contains("duplicate session"))
        );
        assert_eq!(
            listed(&f)
                .iter()
                .filter(|p| p.team.as_deref() == Some("t/t"))
                .count(),
            3
        );
    }

    fn listed(f: &FakeSubstrate) -> Vec<PaneInfo> {
        match f.list().unwrap() {
            Observation::Panes(p) => p,
            Observation::NoServer => panic!("no server"),
        }
    }

    #[test]
    fn spawns_get_sequential_panes_and_are_listed() {
        let f = FakeSubstrate::new();
        let a = f.spawn(&req("a")).unwrap();
        let b = f.spawn(&req("b")).unwrap();
        assert_eq!((a.pane.as_str(), b.pane.as_str()), ("%0", "%1"));
        assert_ne!(a.pane_pid, b.pane_pid);
        let p = listed(&f);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].session_name.as_str(), p[0].owner.as_str()),
            ("a", "me")
        );
        assert_eq!(f.spawns(), vec![req("a"), req("b")]);
        assert!(matches!(
            f.spawn(&req("a")),
            Err(SubstrateError::Refused(m)) if m.contains("duplicate")
        ));
    }

    #[test]
    fn dead_and_removed_panes_show_in_the_listing() {
        let f = FakeSubstrate::new();
        let a = f.spawn(&req("a")).unwrap();
        let b = f.spawn(&req("b")).unwrap();
        f.set_dead(&a.pane, None, Some(9));
        f.remove(&b.pane);
        let p = listed(&f);
        assert_eq!(p.len(), 1);
        assert!(p[0].dead);
        assert_eq!((p[0].dead_status, p[0].dead_signal), (None, Some(9)));
    }

    #[test]
    fn queued_failures_hit_the_next_calls_in_order() {
        let f = FakeSubstrate::new();
        f.fail_next(SubstrateError::Timeout(std::time::Duration::from_millis(5)));
        f.fail_next_n(SubstrateError::Missing("tmux".into()), 2);
        assert!(matches!(f.list(), Err(SubstrateError::Timeout(_))));
        assert!(matches!(
            f.spawn(&req("a")),
            Err(SubstrateError::Missing(_))
        ));
        assert!(matches!(f.kill("%0"), Err(SubstrateError::Missing(_))));
        assert!(f.spawn(&req("a")).is_ok());
        assert_eq!(f.calls().len(), 4);
    }

    #[test]
    fn a_lost_server_lists_as_no_server_until_the_next_spawn() {
        let f = FakeSubstrate::new();
        let a = f.spawn(&req("a")).unwrap();
        f.lose_server();
        assert_eq!(f.list().unwrap(), Observation::NoServer);
        assert!(matches!(
            f.capture(&a.pane, 10),
            Err(SubstrateError::NoServer(_))
        ));
        assert!(f.kill(&a.pane).is_ok());
        f.spawn(&req("b")).unwrap();
        assert_eq!(listed(&f).len(), 1);
    }

    #[test]
    fn sends_and_kills_are_recorded() {
        let f = FakeSubstrate::new();
        let a = f.spawn(&req("a")).unwrap();
        f.set_screen(&a.pane, "hello\n");
        assert_eq!(f.capture(&a.pane, 0).unwrap(), "hello\n");
        f.send_text(&a.pane, "hi", true).unwrap();
        f.send_keys(&a.pane, &["C-c".into()]).unwrap();
        f.kill(&a.pane).unwrap();
        assert!(f.send_text(&a.pane, "x", false).is_err());
        assert_eq!(
            f.sent(),
            vec![
                (a.pane.clone(), "hi\n".to_string()),
                (a.pane.clone(), "C-c".to_string()),
                (a.pane.clone(), "x".to_string()),
            ]
        );
        assert_eq!(f.kills(), vec![a.pane.clone()]);
        assert!(f.pane(&a.pane).is_none());
    }

    #[test]
    fn foreign_panes_are_listed_with_their_owner() {
        let f = FakeSubstrate::new();
        f.add_foreign("work", "");
        let p = listed(&f);
        assert_eq!(
            (p[0].session_name.as_str(), p[0].owner.as_str()),
            ("work", "")
        );
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FakeSubstrate>();
    }
}
