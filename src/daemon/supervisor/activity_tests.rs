//! Activity and notifications, driven through the supervisor with the
//! injected clock and the fake tmux of `tests.rs`.

use std::time::Duration;

use super::tests::H;
use super::*;
use crate::domain::activity::ActivityState;
use crate::domain::spec::{NonZeroSpan, Pattern, RoleSpec};
use crate::domain::world::sim::{role, team};
use crate::substrate::fake::Call;

/// A role that turns idle after 1 s of silence, optionally with a
/// `waiting` pattern.
fn agent(waiting: Option<&str>) -> RoleSpec {
    let mut r = role("w", 1);
    r.idle_after = NonZeroSpan::from_secs(1);
    r.waiting = waiting.map(|p| Pattern::new(p).unwrap());
    r
}

/// A supervisor with one running session of `r`; returns its uid.
fn running(r: RoleSpec) -> (H, u64) {
    let mut h = H::new();
    h.apply(team(vec![r]));
    let s = h.live().remove(0);
    h.started(s.uid);
    (h, s.uid)
}

fn activity(h: &H, uid: u64) -> ActivityState {
    h.world().sessions[&uid].activity.state
}

fn output(h: &mut H, uid: u64, flowing: bool) -> Response {
    let at = h.now.wall;
    h.ask(Request::Output { uid, at, flowing })
}

fn captures(h: &H) -> usize {
    h.tmux
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Capture { .. }))
        .count()
}

#[test]
fn silence_turns_a_session_idle_by_a_timer_and_output_makes_it_busy_again() {
    let (mut h, uid) = running(agent(None));
    assert_eq!(activity(&h, uid), ActivityState::Busy);
    // The next wake-up is the idle instant, one second after the start.
    assert_eq!(h.wake, h.now.mono + Duration::from_secs(1));
    // Output flows from 200 ms on: no timer for it at all.
    h.advance(200);
    output(&mut h, uid, true);
    // (The start is written within a second; then nothing is due.)
    h.advance(1000);
    assert!(
        h.wake > h.now.mono + Duration::from_secs(60),
        "{:?}",
        h.wake
    );
    h.advance(5000);
    assert_eq!(activity(&h, uid), ActivityState::Busy);
    // It stops: idle exactly `idle_after` after its last output.
    output(&mut h, uid, false);
    h.advance(999);
    assert_eq!(activity(&h, uid), ActivityState::Busy);
    h.until_wake();
    assert_eq!(activity(&h, uid), ActivityState::Idle);
    let ev = h.events.last().unwrap();
    assert_eq!(
        (ev.kind.as_str(), ev.message.as_str()),
        ("idle", "idle: nothing printed for 1s")
    );
    // No screen read without a pattern.
    assert_eq!(captures(&h), 0);
    h.advance(10_000);
    output(&mut h, uid, true);
    assert_eq!(activity(&h, uid), ActivityState::Busy);
    assert_eq!(h.kinds().iter().filter(|k| **k == "busy").count(), 1);
    // `get sessions` shows it, and since when.
    let Response::Sessions(v) = h.ask(Request::Get {
        kind: crate::proto::Kind::Sessions,
        filter: Default::default(),
    }) else {
        panic!()
    };
    assert_eq!(v[0].activity, Some(ActivityState::Busy));
    assert_eq!(v[0].activity_since, Some(h.now.wall));
}

/// The idle timer looks at every session only when it must; in between,
/// at what changed. A session that changes into the soonest idle is still
/// found, and a change that puts the soonest off leaves only an early wake
/// that turns nobody idle.
#[test]
fn the_idle_timer_follows_changed_sessions_without_missing_or_anticipating_one() {
    let mut slow = role("slow", 40);
    slow.idle_after = NonZeroSpan::from_secs(60);
    let mut fast = role("fast", 1);
    fast.idle_after = NonZeroSpan::from_secs(1);
    let mut h = H::new();
    h.apply(team(vec![slow, fast]));
    let (fast, slow): (Vec<Session>, Vec<Session>) =
        h.live().into_iter().partition(|s| s.key.role == "fast");
    let busy = |h: &H| {
        slow.iter()
            .filter(|s| activity(h, s.uid) == ActivityState::Busy)
            .count()
    };
    // One slow session starts at 0 s, the others at 10 s.
    h.started(slow[0].uid);
    // A session that starts later but turns idle first: one change among
    // many sessions.
    h.advance(5000);
    h.started(fast[0].uid);
    h.advance(999);
    assert_eq!(activity(&h, fast[0].uid), ActivityState::Busy);
    h.advance(1);
    assert_eq!(activity(&h, fast[0].uid), ActivityState::Idle, "missed");
    h.advance(4000);
    for s in &slow[1..] {
        h.started(s.uid);
    }
    // The first prints at 30 s: the soonest idle moves from 60 s to 70 s,
    // unseen by a step that looks at that one session. The timer wakes at
    // 60 s, turns nobody idle, and waits for 70 s.
    h.advance(20_000);
    output(&mut h, slow[0].uid, false);
    h.advance(30_000);
    assert_eq!(busy(&h), 40, "idle before its time");
    assert!(h.wake > h.now.mono, "woken again at once");
    h.advance(9_999);
    assert_eq!(busy(&h), 40, "idle before its time");
    h.advance(1);
    assert_eq!(busy(&h), 1);
    h.advance(20_000);
    assert_eq!(busy(&h), 0);
}

#[test]
fn the_screen_is_read_once_when_a_session_with_a_pattern_turns_idle() {
    let (mut h, uid) = running(agent(Some(r"(?m)^Allow .*\(y/n\)$")));
    let pane = h.world().sessions[&uid].pane.clone().unwrap();
    h.tmux
        .set_screen(&pane, "working...\n\nAllow edit of main.rs? (y/n)\n\n");
    // Output flowing costs no tmux call, however long it flows.
    output(&mut h, uid, true);
    let calls = h.tmux.calls().len();
    h.advance(30_000);
    h.run_jobs();
    assert_eq!(h.tmux.calls().len(), calls);
    output(&mut h, uid, false);
    h.advance(1000);
    h.run_jobs();
    assert_eq!(captures(&h), 1);
    assert_eq!(activity(&h, uid), ActivityState::Waiting);
    assert_eq!(h.kinds().last(), Some(&"waiting"));
    assert!(
        h.events
            .last()
            .unwrap()
            .message
            .contains("the screen matches"),
        "{:?}",
        h.events.last()
    );
    // Waiting stays without another read; output ends it.
    h.advance(60_000);
    h.run_jobs();
    assert_eq!(captures(&h), 1);
    output(&mut h, uid, true);
    assert_eq!(activity(&h, uid), ActivityState::Busy);
    // A screen that does not match: idle.
    h.tmux.set_screen(&pane, "done.\n$ ");
    output(&mut h, uid, false);
    h.advance(1000);
    h.run_jobs();
    assert_eq!(captures(&h), 2);
    assert_eq!(activity(&h, uid), ActivityState::Idle);
}

#[test]
fn output_while_the_screen_is_read_makes_the_read_moot() {
    let (mut h, uid) = running(agent(Some("y/n")));
    let pane = h.world().sessions[&uid].pane.clone().unwrap();
    h.tmux.set_screen(&pane, "Allow? y/n");
    h.advance(1000);
    // The capture is asked for; output begins before it comes back.
    assert_eq!(h.jobs.len(), 1);
    output(&mut h, uid, true);
    h.run_jobs();
    assert_eq!(activity(&h, uid), ActivityState::Busy);
    assert!(!h.kinds().contains(&"waiting"));
}

#[test]
fn a_heartbeat_state_is_the_programs_word_until_it_prints_again() {
    let (mut h, uid) = running(agent(None));
    let key = h.world().sessions[&uid].key.to_string();
    let say = |h: &mut H, state| {
        h.ask(Request::Heartbeat {
            session: key.clone(),
            uid: Some(uid),
            context_pct: None,
            note: None,
            state: Some(state),
        })
    };
    output(&mut h, uid, true);
    h.advance(100);
    let r = say(&mut h, ActivityState::Waiting);
    assert!(matches!(r, Response::Done(_)), "{r:?}");
    assert_eq!(activity(&h, uid), ActivityState::Waiting);
    assert_eq!(
        h.events.last().unwrap().message,
        "waiting: said the program"
    );
    // The burst it was part of ends: no timer makes it idle.
    output(&mut h, uid, false);
    h.advance(5000);
    assert_eq!(activity(&h, uid), ActivityState::Waiting);
    // New output: busy; `busy` from the program restarts the silence.
    output(&mut h, uid, true);
    assert_eq!(activity(&h, uid), ActivityState::Busy);
    output(&mut h, uid, false);
    h.advance(900);
    say(&mut h, ActivityState::Busy);
    h.advance(900);
    assert_eq!(activity(&h, uid), ActivityState::Busy);
    h.advance(100);
    assert_eq!(activity(&h, uid), ActivityState::Idle);
    say(&mut h, ActivityState::Idle);
    assert_eq!(h.kinds().iter().filter(|k| **k == "idle").count(), 1);
}

#[test]
fn a_report_for_a_session_that_is_not_live_is_refused_and_changes_nothing() {
    let (mut h, uid) = running(agent(None));
    let at = h.now.wall;
    let r = h.ask(Request::Output {
        uid: uid + 99,
        at,
        flowing: true,
    });
    assert!(matches!(r, Response::Error(_)), "{r:?}");
    assert_eq!(activity(&h, uid), ActivityState::Busy);
}

#[test]
fn an_activity_survives_a_daemon_restart_and_its_timer_resumes() {
    let (mut h, uid) = running(agent(None));
    output(&mut h, uid, true);
    h.advance(300);
    output(&mut h, uid, false);
    let mut h = h.restart();
    h.run_jobs();
    assert_eq!(activity(&h, uid), ActivityState::Busy);
    h.advance(699);
    assert_eq!(activity(&h, uid), ActivityState::Busy);
    h.advance(1);
    assert_eq!(activity(&h, uid), ActivityState::Idle);
}

fn inject(h: &mut H, text: &str, when_idle_ms: Option<u64>) -> RequestId {
    let id = h.send(Request::Inject {
        key: "w-0".into(),
        text: text.into(),
        enter: true,
        keys: false,
        when_idle_ms,
    });
    h.run_jobs();
    id
}

#[test]
fn inject_when_idle_waits_for_quiet_without_holding_anything_up() {
    let (mut h, uid) = running(agent(None));
    output(&mut h, uid, true);
    let id = inject(&mut h, "go on", Some(20_000));
    assert!(!h.replies.contains_key(&id), "waits while busy");
    assert!(h.tmux.sent().is_empty());
    // Other requests are answered meanwhile.
    assert!(matches!(h.ask(Request::Status), Response::Status(_)));
    h.advance(5000);
    output(&mut h, uid, false);
    h.advance(999);
    h.run_jobs();
    assert!(h.tmux.sent().is_empty());
    h.advance(1);
    h.run_jobs();
    assert_eq!(activity(&h, uid), ActivityState::Idle);
    assert!(matches!(&h.replies[&id], Response::Done(m) if m.starts_with("typed 5 bytes")));
    let pane = h.world().sessions[&uid].pane.clone().unwrap();
    assert_eq!(h.tmux.sent(), [(pane, "go on\n".to_string())]);
}

#[test]
fn inject_when_idle_answers_still_busy_when_its_wait_is_up() {
    let (mut h, uid) = running(agent(None));
    output(&mut h, uid, true);
    let started = h.world().sessions[&uid].started_at;
    let id = inject(&mut h, "go on", Some(3000));
    h.advance(2999);
    assert!(!h.replies.contains_key(&id));
    h.until_wake();
    let Response::StillBusy { since } = &h.replies[&id] else {
        panic!("{:?}", h.replies[&id]);
    };
    assert_eq!(*since, started);
    assert!(h.tmux.sent().is_empty());
    // An idle session is typed into at once.
    output(&mut h, uid, false);
    h.advance(1000);
    let id = inject(&mut h, "now", Some(3000));
    assert!(matches!(&h.replies[&id], Response::Done(_)));
}

#[test]
fn inject_when_idle_into_a_session_that_ends_is_refused() {
    let (mut h, uid) = running(agent(None));
    output(&mut h, uid, true);
    let id = inject(&mut h, "go on", Some(60_000));
    h.exited(uid, Some(1), None, false);
    h.run_jobs();
    let Response::Error(e) = &h.replies[&id] else {
        panic!("{:?}", h.replies[&id]);
    };
    assert!(e.to_string().contains("ended while waiting"), "{e}");
}

#[test]
fn text_with_newlines_is_one_paste_and_long_text_is_still_typed_in_pieces() {
    let (mut h, uid) = running(agent(None));
    let pane = h.world().sessions[&uid].pane.clone().unwrap();
    let prompt = "line one\nline two\n".repeat(2000);
    let id = inject(&mut h, &prompt, None);
    assert!(matches!(&h.replies[&id], Response::Done(_)));
    let pastes: Vec<Call> = h
        .tmux
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Paste { .. } | Call::SendText { .. }))
        .collect();
    assert_eq!(
        pastes,
        [Call::Paste {
            pane: pane.clone(),
            text: prompt.clone(),
            enter: true
        }],
        "one paste, however long"
    );
    // One line of 20 000 bytes: typed in pieces within tmux's limit.
    let line = "x".repeat(20_000);
    inject(&mut h, &line, None);
    let typed: Vec<(String, bool)> = h
        .tmux
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::SendText { text, enter, .. } => Some((text, enter)),
            _ => None,
        })
        .collect();
    assert_eq!(typed.len(), 3);
    assert!(typed.iter().all(|(t, _)| t.len() <= 8 * 1024));
    assert_eq!(
        typed.iter().map(|(_, e)| *e).collect::<Vec<_>>(),
        [false, false, true]
    );
}

/// A team whose role crashes at will, with `notify` on crashes and
/// frozen roles, coalesced over `coalesce`.
fn notifying(coalesce: crate::domain::spec::Span) -> crate::domain::spec::TeamSpec {
    use crate::domain::spec::{Command, Notify, Trigger, Triggers};
    let mut w = role("w", 1);
    w.max_restarts = None;
    let mut t = team(vec![w]);
    t.notify = vec![Notify {
        on: Triggers::try_from(vec![Trigger::Crashed, Trigger::Frozen]).unwrap(),
        command: Command::new(["notify-send", "marvel"]).unwrap(),
        timeout: NonZeroSpan::from_secs(10),
        coalesce,
    }];
    t
}

/// Crashes the running session of the team, waits out the backoff and
/// starts its replacement.
fn crash(h: &mut H) {
    let s = h.live().remove(0);
    if s.state == crate::domain::state::SessionState::Pending {
        h.started(s.uid);
    }
    h.exited(s.uid, Some(3), None, false);
    h.run_jobs();
    h.advance(1000);
    h.run_jobs();
}

fn env<'a>(hook: &'a Hook, name: &str) -> &'a str {
    hook.env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {:?}", hook.env))
}

#[test]
fn a_notify_command_runs_once_per_event_with_the_event_in_its_environment() {
    let mut h = H::new();
    h.apply(notifying(crate::domain::spec::Span::ZERO));
    crash(&mut h);
    assert_eq!(h.hooks.len(), 1, "{:?}", h.hooks);
    let hook = &h.hooks[0];
    assert_eq!(hook.command, ["notify-send", "marvel"]);
    assert_eq!(hook.timeout, Duration::from_secs(10));
    let ev = h
        .events
        .iter()
        .find(|e| e.kind.as_str() == "crashed")
        .unwrap();
    assert_eq!(env(hook, "MARVEL_EVENT_KIND"), "crashed");
    assert_eq!(env(hook, "MARVEL_EVENT_KEY"), "demo/squad/w-0");
    assert_eq!(env(hook, "MARVEL_EVENT_MESSAGE"), ev.message);
    assert_eq!(
        env(hook, "MARVEL_EVENT_AT"),
        ev.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    assert_eq!(env(hook, "MARVEL_EVENT_COUNT"), "1");
    let json: serde_json::Value = serde_json::from_str(env(hook, "MARVEL_EVENT_JSON")).unwrap();
    assert_eq!(json, serde_json::to_value(ev).unwrap());
    // Without a window, each crash runs it once more; other kinds never.
    crash(&mut h);
    crash(&mut h);
    assert_eq!(h.hooks.len(), 3);
    assert!(h.kinds().contains(&"backoff") && h.kinds().contains(&"started"));
    assert!(
        h.hooks
            .iter()
            .all(|k| env(k, "MARVEL_EVENT_KIND") == "crashed")
    );
}

#[test]
fn a_crash_storm_sends_one_notification_then_a_summary_per_window() {
    let mut h = H::new();
    h.apply(notifying(crate::domain::spec::Span::from_secs(60)));
    for _ in 0..10 {
        crash(&mut h);
    }
    // Ten crashes within a minute: one run, the rest held back.
    assert_eq!(h.hooks.len(), 1);
    // The window statuses held back by their rate go first.
    while h.sup.statuses_due(h.now).is_some() {
        h.until_wake();
        h.run_jobs();
    }
    assert_eq!(h.hooks.len(), 1);
    let window_end = h.wake;
    h.until_wake();
    assert!(h.now.mono >= window_end);
    assert_eq!(h.hooks.len(), 2, "the summary at the end of the window");
    let summary = &h.hooks[1];
    assert_eq!(env(summary, "MARVEL_EVENT_COUNT"), "9");
    assert!(
        env(summary, "MARVEL_EVENT_MESSAGE")
            .starts_with("9 more crashed events of demo/squad/w-0 within 1m; the last: exit 3"),
        "{}",
        env(summary, "MARVEL_EVENT_MESSAGE")
    );
    let json: serde_json::Value = serde_json::from_str(env(summary, "MARVEL_EVENT_JSON")).unwrap();
    assert_eq!(json["coalesced"], 9);
    // The storm goes on: the next window holds the next crashes back too.
    crash(&mut h);
    crash(&mut h);
    assert_eq!(h.hooks.len(), 2);
    h.advance(60_000);
    assert_eq!(h.hooks.len(), 3);
    assert_eq!(env(&h.hooks[2], "MARVEL_EVENT_COUNT"), "2");
    // Quiet for a whole window: it closes with nothing to say, and the
    // next crash runs the command at once.
    h.advance(60_000);
    assert_eq!(h.hooks.len(), 3);
    h.advance(60_000);
    crash(&mut h);
    assert_eq!(h.hooks.len(), 4);
    assert_eq!(env(&h.hooks[3], "MARVEL_EVENT_COUNT"), "1");
}

#[test]
fn a_failed_notify_command_leaves_an_event_that_runs_nothing() {
    let mut h = H::new();
    h.apply(notifying(crate::domain::spec::Span::ZERO));
    crash(&mut h);
    let hook = h.hooks[0].clone();
    h.step(Input::Hooked {
        hook,
        failure: Some(HookFailure {
            status: "exit 7".into(),
            stderr: "curl: (6) Could not resolve host".into(),
        }),
    });
    let ev = h.events.last().unwrap();
    assert_eq!(ev.kind.as_str(), "notify-failed");
    assert_eq!(ev.key, "demo/squad");
    assert_eq!(
        ev.message,
        "notify command notify-send for crashed of demo/squad/w-0 failed: exit 7: curl: (6) Could not resolve host"
    );
    assert_eq!(h.hooks.len(), 1);
    // A run that went well says nothing.
    let n = h.events.len();
    let hook = h.hooks[0].clone();
    h.step(Input::Hooked {
        hook,
        failure: None,
    });
    assert_eq!(h.events.len(), n);
}

/// What a session is doing changes often and is told again after a crash
/// (by its next output, silence or heartbeat): written lazily, never with
/// a wait for the disk.
#[test]
fn activity_changes_are_written_lazily() {
    let (mut h, uid) = running(agent(None));
    h.advance(1000);
    let durable = |h: &H, from: usize| {
        h.trace[from..]
            .iter()
            .filter(|o| matches!(o, Output::Persist(Durability::Soon | Durability::Now)))
            .count()
    };
    let from = h.trace.len();
    // Idle after the silence, busy again with output.
    h.advance(1000);
    assert_eq!(activity(&h, uid), ActivityState::Idle);
    output(&mut h, uid, true);
    assert_eq!(activity(&h, uid), ActivityState::Busy);
    assert_eq!(durable(&h, from), 0, "{:?}", &h.trace[from..]);
    // Written within a second all the same.
    h.advance(1000);
    let saved = h.saved.as_ref().expect("written");
    assert_eq!(saved.sessions[&uid].activity.state, ActivityState::Busy);
    assert!(
        h.trace[from..]
            .iter()
            .any(|o| matches!(o, Output::Persist(Durability::Later))),
        "{:?}",
        &h.trace[from..]
    );
}
