//! Notifications: which of a team's `notify` commands an event runs, and
//! when. The supervisor only decides ([`Output::Notify`]); the main loop
//! hands the run to a small bounded runner, off its own thread. Events of
//! one kind about one key are coalesced: the first runs the command at
//! once, the ones after it within the `coalesce` window are counted and
//! summed up in one more run when the window ends, so a crash storm sends
//! one notification and then a summary per window, never hundreds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::event::{Event, EventKind};
use crate::domain::key::TeamKey;
use crate::view::EventView;

use super::{Now, Output, Supervisor};

/// One run of a notification command, as decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub command: Vec<String>,
    /// `MARVEL_EVENT_*`, added to the daemon's own environment.
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Where it runs: the directory of the team's manifest, when known.
    pub cwd: Option<PathBuf>,
    /// What it was for, to name in a `notify-failed` event.
    pub team: String,
    pub kind: EventKind,
    pub key: String,
}

/// How a run went, when it did not go well: the exit status (or what
/// stopped it) and the first line of its stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    pub status: String,
    pub stderr: String,
}

/// What coalesces: a team's `notify[index]`, an event kind, a key.
type Slot = (TeamKey, usize, &'static str, String);

/// A coalescing window under way.
#[derive(Debug, Clone)]
struct Window {
    /// Monotonic end.
    until: Duration,
    /// Events held back since the window began, and the newest of them.
    held: u32,
    last: Option<EventView>,
}

#[derive(Debug, Default)]
pub(super) struct Notifier {
    windows: BTreeMap<Slot, Window>,
}

impl Notifier {
    /// When the next window ends.
    pub fn next(&self) -> Option<Duration> {
        self.windows.values().map(|w| w.until).min()
    }
}

/// The team an event's key lies under (`ws/team/...`), if any.
fn team_of(key: &str) -> Option<TeamKey> {
    let mut parts = key.splitn(3, '/');
    let (ws, team) = (parts.next()?, parts.next()?);
    format!("{ws}/{team}").parse().ok()
}

impl Supervisor {
    /// An event was emitted: runs the commands of its team that want it,
    /// or counts it in the window of one that ran for its like.
    pub(super) fn notify(&mut self, view: &EventView) {
        if view.kind == EventKind::NotifyFailed {
            return;
        }
        let Some(team) = team_of(&view.key) else {
            return;
        };
        let Some(record) = self.world.teams.get(&team) else {
            return;
        };
        let wanted: Vec<(usize, Duration)> = record
            .spec
            .notify
            .iter()
            .enumerate()
            .filter(|(_, n)| n.wants(view.kind))
            .map(|(i, n)| (i, n.coalesce.get()))
            .collect();
        let Some(mono) = self.clock.map(|c| c.mono) else {
            return;
        };
        for (index, coalesce) in wanted {
            let slot = (team.clone(), index, view.kind.as_str(), view.key.clone());
            if let Some(w) = self.notifier.windows.get_mut(&slot)
                && mono < w.until
            {
                w.held += 1;
                w.last = Some(view.clone());
                continue;
            }
            self.run_hook(&team, index, view, None);
            if !coalesce.is_zero() {
                let w = Window {
                    until: mono + coalesce,
                    held: 0,
                    last: None,
                };
                self.notifier.windows.insert(slot, w);
            }
        }
    }

    /// Windows that end: one summary for what each held back, and a new
    /// window after it (a storm that goes on is summed up again at its
    /// end); a window that held nothing just closes.
    pub(super) fn notify_timers(&mut self, now: Now) {
        let ended: Vec<Slot> = self
            .notifier
            .windows
            .iter()
            .filter(|(_, w)| now.mono >= w.until)
            .map(|(s, _)| s.clone())
            .collect();
        for slot in ended {
            let Some(w) = self.notifier.windows.remove(&slot) else {
                continue;
            };
            let (team, index, _, _) = &slot;
            let coalesce = self
                .world
                .teams
                .get(team)
                .and_then(|t| t.spec.notify.get(*index))
                .map(|n| n.coalesce.get());
            let (Some(coalesce), Some(last)) = (coalesce, w.last) else {
                continue;
            };
            self.run_hook(team, *index, &last, Some((w.held, coalesce)));
            self.notifier.windows.insert(
                slot,
                Window {
                    until: now.mono + coalesce,
                    held: 0,
                    last: None,
                },
            );
        }
    }

    /// Decides one run of `notify[index]` of `team` for `view`; `summary`:
    /// it sums up this many events held back in a window this long, the
    /// newest being `view`.
    fn run_hook(
        &mut self,
        team: &TeamKey,
        index: usize,
        view: &EventView,
        summary: Option<(u32, Duration)>,
    ) {
        let Some(record) = self.world.teams.get(team) else {
            return;
        };
        let Some(n) = record.spec.notify.get(index) else {
            return;
        };
        let (message, count, json) = match summary {
            None => (
                view.message.clone(),
                1,
                serde_json::to_value(view).unwrap_or_default(),
            ),
            Some((held, window)) => {
                let message = format!(
                    "{held} more {} event{} of {} within {}; the last: {}",
                    view.kind,
                    if held == 1 { "" } else { "s" },
                    view.key,
                    humantime::format_duration(window),
                    view.message
                );
                let mut json = serde_json::to_value(view).unwrap_or_default();
                if let Some(o) = json.as_object_mut() {
                    o.insert("coalesced".into(), held.into());
                }
                (message, held, json)
            }
        };
        let env = vec![
            ("MARVEL_EVENT_KIND".to_string(), view.kind.to_string()),
            ("MARVEL_EVENT_KEY".to_string(), view.key.clone()),
            ("MARVEL_EVENT_MESSAGE".to_string(), message),
            (
                "MARVEL_EVENT_AT".to_string(),
                view.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            ("MARVEL_EVENT_COUNT".to_string(), count.to_string()),
            ("MARVEL_EVENT_JSON".to_string(), json.to_string()),
        ];
        let hook = Hook {
            command: n.command.to_vec(),
            env,
            timeout: n.timeout.get(),
            cwd: record
                .source
                .as_deref()
                .and_then(|p| p.parent())
                .map(PathBuf::from),
            team: team.to_string(),
            kind: view.kind,
            key: view.key.clone(),
        };
        self.out.push(Output::Notify(hook));
    }

    /// A run of a notification command failed: said in an event (which
    /// itself never runs a command).
    pub(super) fn hook_failed(&mut self, hook: &Hook, failure: HookFailure, now: Now) {
        let program = hook.command.first().cloned().unwrap_or_default();
        let mut message = format!(
            "notify command {program} for {} of {} failed: {}",
            hook.kind, hook.key, failure.status
        );
        if !failure.stderr.is_empty() {
            message.push_str(": ");
            message.push_str(&failure.stderr);
        }
        self.emit(Event::new(
            now.wall,
            EventKind::NotifyFailed,
            &hook.team,
            message,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::team_of;

    #[test]
    fn events_belong_to_the_team_their_key_lies_under() {
        for key in ["demo/squad", "demo/squad/w", "demo/squad/w-0"] {
            assert_eq!(
                team_of(key).map(|t| t.to_string()).as_deref(),
                Some("demo/squad")
            );
        }
        assert!(team_of("").is_none() && team_of("demo").is_none());
    }
}
