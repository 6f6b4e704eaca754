//! The text of `describe session|role|team`: every field a person may want,
//! one per line, then the recent events as `events` prints them.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::{backoff, escape_line, event_line, exit_text, frozen_reason, shell_words};
use crate::view::{
    DescribeView, EventView, RoleDescription, SessionDescription, ShiftState, ShiftView,
    TeamDescription,
};

/// `view` as text. Times of fields are in UTC, marked so; event times are
/// in `tz`, as `events` shows them.
pub fn describe<Tz: TimeZone>(
    view: &DescribeView,
    now: DateTime<Utc>,
    tz: &Tz,
    colour: bool,
) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut out = String::new();
    let events = match view {
        DescribeView::Session(d) => {
            session(&mut out, d);
            &d.events
        }
        DescribeView::Role(d) => {
            role(&mut out, d);
            &d.events
        }
        DescribeView::Team(d) => {
            team(&mut out, d);
            &d.events
        }
    };
    push_events(&mut out, events, now, tz, colour);
    out
}

fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".into(), |t| {
        t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
    })
}

fn push_events<Tz: TimeZone>(
    out: &mut String,
    events: &[EventView],
    now: DateTime<Utc>,
    tz: &Tz,
    colour: bool,
) where
    Tz::Offset: std::fmt::Display,
{
    let _ = writeln!(out, "Events:");
    if events.is_empty() {
        let _ = writeln!(out, "  <none>");
    }
    for e in events {
        let _ = writeln!(out, "  {}", event_line(e, now, tz, colour));
    }
}

fn session(out: &mut String, d: &SessionDescription) {
    let v = &d.session;
    let role = format!("{}/{}/{}", v.workspace, v.team, v.role);
    let _ = writeln!(out, "Session:     {}", v.key);
    let _ = writeln!(out, "Role:        {role}");
    let _ = writeln!(out, "State:       {}", v.state);
    let _ = writeln!(out, "Pane:        {}", v.pane.as_deref().unwrap_or("-"));
    let _ = writeln!(
        out,
        "PID:         {}",
        v.pid.map_or("-".into(), |p| p.to_string())
    );
    let _ = writeln!(
        out,
        "tmux:        {}",
        v.tmux_session.as_deref().unwrap_or("-")
    );
    if let Some(w) = &v.worktree {
        let branch = v.branch.as_deref().unwrap_or("detached HEAD");
        let _ = writeln!(
            out,
            "Worktree:    {} (branch {})",
            escape_line(w),
            escape_line(branch)
        );
    }
    let _ = writeln!(out, "Created:     {}", ts(Some(v.created_at)));
    let _ = writeln!(out, "Started:     {}", ts(v.started_at));
    let _ = writeln!(out, "Restarts:    {}", v.restarts);
    if let Some(h) = v.health {
        let last = v
            .last_heartbeat_at
            .map_or("no heartbeat yet".to_string(), |t| {
                format!("last heartbeat {}", ts(Some(t)))
            });
        let _ = writeln!(out, "Health:      {h} ({last})");
    }
    if let (Some(a), Some(since)) = (v.activity, v.activity_since) {
        let _ = writeln!(out, "Activity:    {a} since {}", ts(Some(since)));
    }
    if let Some(p) = v.context_pct {
        let _ = writeln!(out, "Context:     {p}% used");
    }
    if let Some(n) = &v.heartbeat_note {
        let _ = writeln!(out, "Note:        {}", escape_line(n));
    }
    if v.outdated {
        let _ = writeln!(
            out,
            "Outdated:    yes: replaced once its successor is ready"
        );
    }
    if let Some(e) = &v.exit {
        let _ = writeln!(
            out,
            "Exit:        {} at {}",
            exit_text(Some(e)),
            ts(Some(e.at))
        );
    }
    let _ = writeln!(out, "Role state:  {}", v.role_state);
    if let Some(t) = v.next_restart_at {
        let _ = writeln!(out, "Next restart: {}", ts(Some(t)));
    }
    if v.frozen_reason.is_some() {
        let _ = writeln!(
            out,
            "Frozen:      {}",
            frozen_reason(v.frozen_reason.as_deref())
        );
        let _ = writeln!(
            out,
            "             run `marvel reset role {role}` to restart it"
        );
    }
    if !v.last_output.is_empty() {
        let _ = writeln!(out, "Last output:");
        for l in &v.last_output {
            let _ = writeln!(out, "  | {}", escape_line(l));
        }
    }
}

fn role(out: &mut String, d: &RoleDescription) {
    let v = &d.role;
    let d_ = humantime::format_duration;
    let _ = writeln!(out, "Role:        {}", v.key);
    let _ = writeln!(out, "State:       {}", v.state);
    let _ = writeln!(
        out,
        "Replicas:    {} running / {} desired",
        v.running, v.desired
    );
    let _ = writeln!(out, "Command:     {}", shell_words(&v.command));
    if let Some(cwd) = &d.cwd {
        let _ = writeln!(
            out,
            "Directory:   {}",
            escape_line(&cwd.display().to_string())
        );
    }
    let _ = writeln!(out, "Restart:     {:?}", v.restart);
    let _ = writeln!(out, "Backoff:     {}", backoff(&d.backoff));
    let budget = v.max_restarts.map_or("unlimited".into(), |m| m.to_string());
    let _ = writeln!(
        out,
        "Budget:      {} of {} crashes in {}",
        v.crashes_in_window,
        budget,
        d_(Duration::from_millis(v.window_ms))
    );
    let _ = writeln!(
        out,
        "Forgive:     after {} of stable running",
        d_(d.reset_after)
    );
    let _ = writeln!(out, "Restarts:    {}", v.restarts);
    if let Some(t) = v.next_restart_at {
        let _ = writeln!(out, "Next restart: {}", ts(Some(t)));
    }
    if v.frozen_reason.is_some() {
        let _ = writeln!(
            out,
            "Frozen:      {} (since {})",
            frozen_reason(v.frozen_reason.as_deref()),
            ts(v.frozen_at)
        );
        let _ = writeln!(
            out,
            "             run `marvel reset role {}` to restart it",
            v.key
        );
    }
    if let Some(e) = &v.last_exit {
        let _ = writeln!(
            out,
            "Last exit:   {} at {}",
            exit_text(Some(e)),
            ts(Some(e.at))
        );
    }
    let _ = writeln!(out, "Sessions:");
    for s in &d.sessions {
        // A session and its successor share a key: the uid tells them apart.
        let outdated = if s.outdated { "  outdated" } else { "" };
        let _ = writeln!(
            out,
            "  {:<32} {:<10} {:<6} uid {}{outdated}",
            s.key,
            s.state.as_str(),
            s.pane.as_deref().unwrap_or("-"),
            s.uid
        );
    }
}

fn team(out: &mut String, d: &TeamDescription) {
    let v = &d.team;
    let _ = writeln!(out, "Team:        {}", v.key);
    let _ = writeln!(out, "State:       {}", v.state);
    let _ = writeln!(out, "Applied:     {}", ts(Some(v.applied_at)));
    let _ = writeln!(
        out,
        "Replicas:    {} running / {} desired",
        v.running, v.desired
    );
    if let Some(sh) = &v.shift {
        let _ = writeln!(out, "Shift:       {}", shift_line(sh));
        let _ = writeln!(
            out,
            "             started {}, deadline {}{}",
            ts(Some(sh.started_at)),
            ts(Some(sh.deadline)),
            sh.ended_at
                .map_or(String::new(), |t| format!(", ended {}", ts(Some(t))))
        );
    }
    let _ = writeln!(out, "Roles:");
    for r in &d.roles {
        let _ = writeln!(
            out,
            "  {:<32} {:<12} {}/{}  restarts {}",
            r.key,
            r.state.as_str(),
            r.running,
            r.desired,
            r.restarts
        );
    }
}

/// One line on a shift: where it is, or how it ended.
fn shift_line(sh: &ShiftView) -> String {
    let progress = format!("{} of {} sessions replaced", sh.replaced, sh.total);
    match (sh.state, &sh.role, &sh.reason) {
        (ShiftState::Running, Some(role), _) => format!(
            "running: {role} ({progress}); order {}",
            sh.roles.join(", ")
        ),
        (state, _, Some(reason)) => format!("{state}: {} ({progress})", escape_line(reason)),
        (state, _, None) => format!("{state} ({progress})"),
    }
}

#[cfg(test)]
mod tests {
    use chrono::FixedOffset;

    use super::*;
    use crate::view::{
        Backoff, EventKind, ExitView, RestartPolicy, RoleState, RoleView, SessionState,
        SessionView, TeamState, TeamView,
    };

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn session() -> SessionView {
        SessionView {
            key: "demo/squad/worker-0".into(),
            workspace: "demo".into(),
            team: "squad".into(),
            role: "worker".into(),
            slot: 0,
            state: SessionState::Crashed,
            pane: None,
            pid: None,
            restarts: 6,
            last_restart_at: None,
            created_at: t("2025-01-02T11:00:00Z"),
            started_at: Some(t("2025-01-02T11:00:01Z")),
            exit: Some(ExitView {
                code: Some(1),
                signal: None,
                at: t("2025-01-02T11:59:00Z"),
                reason: "exit 1".into(),
            }),
            role_state: RoleState::Frozen,
            next_restart_at: None,
            frozen_reason: Some("6 crashes in 10m, last: exit 1".into()),
            last_output: vec!["boom \x1b[2J".into(), "\x1b]0;title\x07".into()],
            tmux_session: None,
            uid: 7,
            health: None,
            last_heartbeat_at: None,
            context_pct: Some(42),
            heartbeat_note: Some("note \x1b]52;c;aGk=\x07".into()),
            outdated: false,
            worktree: None,
            branch: None,
            activity: None,
            activity_since: None,
        }
    }

    fn event(at: &str, kind: EventKind, key: &str, message: &str) -> EventView {
        EventView {
            seq: 1,
            at: t(at),
            kind,
            key: key.into(),
            message: message.into(),
        }
    }

    fn role_view() -> RoleView {
        RoleView {
            key: "demo/squad/worker".into(),
            workspace: "demo".into(),
            team: "squad".into(),
            role: "worker".into(),
            desired: 2,
            running: 1,
            state: RoleState::Backoff,
            restarts: 2,
            last_restart_at: None,
            crashes_in_window: 2,
            max_restarts: Some(5),
            window_ms: 600_000,
            next_restart_at: Some(t("2025-01-02T12:00:03Z")),
            frozen_reason: None,
            frozen_at: None,
            last_exit: None,
            command: vec!["sh".into(), "-c".into(), "my-agent --flag".into()],
            restart: RestartPolicy::Always,
        }
    }

    #[test]
    fn a_session_reads_field_by_field_with_events_in_local_time() {
        let now = t("2025-01-02T12:00:00Z");
        let view = DescribeView::Session(SessionDescription {
            session: session(),
            events: vec![event(
                "2025-01-02T11:59:00.250Z",
                EventKind::Crashed,
                "demo/squad/worker-0",
                "exit 1 \x1b[2J",
            )],
        });
        let zone = FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(
            describe(&view, now, &zone, false),
            "\
Session:     demo/squad/worker-0
Role:        demo/squad/worker
State:       crashed
Pane:        -
PID:         -
tmux:        -
Created:     2025-01-02 11:00:00.000 UTC
Started:     2025-01-02 11:00:01.000 UTC
Restarts:    6
Context:     42% used
Note:        note \\e]52;c;aGk=^G
Exit:        exit 1 at 2025-01-02 11:59:00.000 UTC
Role state:  frozen
Frozen:      6 crashes in 10m, last: exit 1
             run `marvel reset role demo/squad/worker` to restart it
Last output:
  | boom \\e[2J
  | \\e]0;title^G
Events:
  13:59:00.250  crashed    demo/squad/worker-0           exit 1 \\e[2J
"
        );
    }

    #[test]
    fn a_session_with_a_worktree_says_where_and_on_which_branch() {
        let now = t("2025-01-02T12:00:00Z");
        let mut v = session();
        v.worktree = Some("/state/worktrees/demo/squad/worker-0".into());
        v.branch = Some("agents/worker-0".into());
        let view = DescribeView::Session(SessionDescription {
            session: v.clone(),
            events: vec![],
        });
        let zone = FixedOffset::east_opt(0).unwrap();
        let text = describe(&view, now, &zone, false);
        assert!(
            text.contains(
                "tmux:        -\nWorktree:    /state/worktrees/demo/squad/worker-0 (branch agents/worker-0)\n"
            ),
            "{text}"
        );
        v.branch = None;
        let view = DescribeView::Session(SessionDescription {
            session: v,
            events: vec![],
        });
        assert!(describe(&view, now, &zone, false).contains("(branch detached HEAD)"));
    }

    #[test]
    fn a_role_shows_its_policy_and_every_session() {
        let now = t("2025-01-02T12:00:00Z");
        let mut old = session();
        old.state = SessionState::Running;
        old.pane = Some("%3".into());
        old.outdated = true;
        let mut new = old.clone();
        new.uid = 9;
        new.outdated = false;
        let view = DescribeView::Role(RoleDescription {
            role: role_view(),
            cwd: Some("/srv/project".into()),
            backoff: {
                use crate::domain::spec::{Factor, Jitter, NonZeroSpan, Span};
                Backoff::new(
                    NonZeroSpan::from_secs(1),
                    Span::new(Duration::from_secs(60)).unwrap(),
                    Factor::new(3.0).unwrap(),
                    Jitter::new(0.1).unwrap(),
                )
                .unwrap()
            },
            reset_after: Duration::from_secs(600),
            sessions: vec![old, new],
            events: vec![],
        });
        assert_eq!(
            describe(&view, now, &Utc, false),
            "\
Role:        demo/squad/worker
State:       backoff
Replicas:    1 running / 2 desired
Command:     sh -c 'my-agent --flag'
Directory:   /srv/project
Restart:     Always
Backoff:     1s ×3 up to 1m, jitter ±10%
Budget:      2 of 5 crashes in 10m
Forgive:     after 10m of stable running
Restarts:    2
Next restart: 2025-01-02 12:00:03.000 UTC
Sessions:
  demo/squad/worker-0              running    %3     uid 7  outdated
  demo/squad/worker-0              running    %3     uid 9
Events:
  <none>
"
        );
    }

    #[test]
    fn a_team_lists_its_roles_and_its_shift() {
        let now = t("2025-01-02T12:00:00Z");
        let view = DescribeView::Team(TeamDescription {
            team: TeamView {
                key: "demo/squad".into(),
                workspace: "demo".into(),
                team: "squad".into(),
                roles: 1,
                desired: 2,
                running: 1,
                state: TeamState::Degraded,
                applied_at: t("2025-01-02T10:00:00Z"),
                shift: Some(ShiftView {
                    id: 1,
                    state: ShiftState::Failed,
                    roles: vec!["worker".into()],
                    role: None,
                    replaced: 1,
                    total: 2,
                    started_at: t("2025-01-02T11:00:00Z"),
                    deadline: t("2025-01-02T11:10:00Z"),
                    ended_at: Some(t("2025-01-02T11:01:00Z")),
                    reason: Some("crashed \x1b[2J".into()),
                }),
            },
            roles: vec![role_view()],
            events: vec![event(
                "2025-01-01T08:00:00Z",
                EventKind::Applied,
                "demo/squad",
                "applied",
            )],
        });
        assert_eq!(
            describe(&view, now, &Utc, false),
            "\
Team:        demo/squad
State:       degraded
Applied:     2025-01-02 10:00:00.000 UTC
Replicas:    1 running / 2 desired
Shift:       failed: crashed \\e[2J (1 of 2 sessions replaced)
             started 2025-01-02 11:00:00.000 UTC, deadline 2025-01-02 11:10:00.000 UTC, ended 2025-01-02 11:01:00.000 UTC
Roles:
  demo/squad/worker                backoff      1/2  restarts 2
Events:
  2025-01-01 08:00:00.000  applied    demo/squad                    applied
"
        );
    }
}
