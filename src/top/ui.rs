//! The dashboard's own state (the selected row, the filter, a prompt being
//! typed, the footer's message) and what each key does to it. Pure: a key
//! comes in, at most one effect to carry out comes back.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::{Model, Row, RowId, live};
use crate::view::RoleState;

/// What the keyboard is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Typing the filter (it applies as it is typed).
    Filter,
    /// Typing a line for a session.
    Inject {
        session: String,
        text: String,
    },
    /// Waiting for `y` before doing this.
    Confirm(Action),
    /// The help overlay.
    Help,
}

/// A request to the daemon made from a key, the same as the CLI's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Attach(String),
    Inject { session: String, text: String },
    Reset(String),
    Kill(String),
    Shift { team: String, role: Option<String> },
}

impl Action {
    /// What the footer says while it runs.
    pub fn doing(&self) -> String {
        match self {
            Action::Attach(s) => format!("attaching to {s}…"),
            Action::Inject { session, .. } => format!("typing into {session}…"),
            Action::Reset(r) => format!("resetting {r}…"),
            Action::Kill(s) => format!("killing {s}…"),
            Action::Shift { team, role: None } => format!("shifting {team}…"),
            Action::Shift {
                team,
                role: Some(r),
            } => format!("shifting {team}/{r}…"),
        }
    }

    /// The question asked before it is done.
    fn question(&self) -> String {
        match self {
            Action::Reset(r) => {
                format!("reset {r}? it is not frozen: this clears its crash history [y/N]")
            }
            Action::Kill(s) => format!("kill {s}? it is replaced at once [y/N]"),
            Action::Shift { team, role: None } => {
                format!("shift {team}? every session is replaced, one at a time [y/N]")
            }
            Action::Shift {
                team,
                role: Some(r),
            } => format!("shift {team}/{r}? its sessions are replaced, one at a time [y/N]"),
            Action::Attach(_) | Action::Inject { .. } => String::new(),
        }
    }
}

/// What the loop has to do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Quit,
    Act(Action),
}

/// A one-line message in the footer: an action's result or refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub text: String,
    pub error: bool,
}

impl Footer {
    pub fn ok(text: impl Into<String>) -> Footer {
        Footer {
            text: text.into(),
            error: false,
        }
    }

    pub fn error(text: impl Into<String>) -> Footer {
        Footer {
            text: text.into(),
            error: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ui {
    pub mode: Mode,
    pub filter: String,
    pub selected: Option<RowId>,
    /// The first row on screen.
    pub offset: usize,
    /// Rows the table shows at once (set as it is drawn), for page keys.
    pub page: usize,
    pub footer: Option<Footer>,
}

impl Default for Ui {
    fn default() -> Ui {
        Ui {
            mode: Mode::Normal,
            filter: String::new(),
            selected: None,
            offset: 0,
            page: 10,
            footer: None,
        }
    }
}

impl Ui {
    /// Keeps the selection on a row that is there: the same row; else the
    /// session that replaced it (same key), its role, its team; else the
    /// first row. Returns the selected index.
    pub fn settle(&mut self, rows: &[Row<'_>]) -> Option<usize> {
        let ids: Vec<RowId> = rows.iter().map(Row::id).collect();
        let found = self.selected.as_ref().and_then(|sel| {
            let key = sel.key();
            let role = sel.role();
            let team = super::model::team_of(key).map(str::to_string);
            ids.iter().position(|id| id == sel).or_else(|| {
                ids.iter()
                    .position(|id| matches!(id, RowId::Session { key: k, .. } if k == key))
                    .or_else(|| {
                        role.and_then(|r| ids.iter().position(|id| *id == RowId::Role(r.clone())))
                    })
                    .or_else(|| {
                        team.and_then(|t| ids.iter().position(|id| *id == RowId::Team(t.clone())))
                    })
            })
        });
        let index = found.or((!rows.is_empty()).then_some(0));
        self.selected = index.map(|i| ids[i].clone());
        index
    }

    /// After the filter changed: stay on the selected row if it still
    /// matches (by itself or under a match), else go to the first row
    /// that matches by itself.
    fn refilter(&mut self, model: &Model) {
        let rows = model.rows(&self.filter);
        let shown = self
            .selected
            .as_ref()
            .is_some_and(|sel| rows.iter().any(|r| r.id() == *sel && !r.context));
        if !shown {
            self.selected = rows.iter().find(|r| r.hit).or(rows.first()).map(Row::id);
        }
        self.offset = 0;
    }

    fn step(&mut self, rows: &[Row<'_>], by: isize) {
        let Some(i) = self.settle(rows) else {
            return;
        };
        let last = rows.len() as isize - 1;
        let j = (i as isize + by).clamp(0, last) as usize;
        self.selected = Some(rows[j].id());
    }

    /// Text pasted into the terminal: part of a prompt, never a command.
    pub fn paste(&mut self, text: &str) {
        let clean = text.replace(|c: char| c.is_control(), " ");
        match &mut self.mode {
            Mode::Inject { text, .. } => text.push_str(&clean),
            Mode::Filter => self.filter.push_str(&clean),
            _ => {}
        }
    }

    /// What `key` does.
    pub fn key(&mut self, key: KeyEvent, model: &Model) -> Option<Effect> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Some(Effect::Quit);
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal(key, model),
            Mode::Help => None,
            Mode::Filter => {
                match key.code {
                    KeyCode::Enter => {}
                    KeyCode::Esc => self.filter.clear(),
                    KeyCode::Backspace => {
                        self.filter.pop();
                        self.mode = Mode::Filter;
                    }
                    KeyCode::Char('u') if ctrl => {
                        self.filter.clear();
                        self.mode = Mode::Filter;
                    }
                    KeyCode::Char(c) if !ctrl => {
                        self.filter.push(c);
                        self.mode = Mode::Filter;
                    }
                    _ => self.mode = Mode::Filter,
                }
                self.refilter(model);
                None
            }
            Mode::Inject { session, mut text } => match key.code {
                KeyCode::Enter => {
                    let action = Action::Inject { session, text };
                    self.footer = Some(Footer::ok(action.doing()));
                    Some(Effect::Act(action))
                }
                KeyCode::Esc => {
                    self.footer = Some(Footer::ok("nothing typed"));
                    None
                }
                code => {
                    match code {
                        KeyCode::Backspace => {
                            text.pop();
                        }
                        KeyCode::Char('u') if ctrl => text.clear(),
                        KeyCode::Char(c) if !ctrl => text.push(c),
                        _ => {}
                    }
                    self.mode = Mode::Inject { session, text };
                    None
                }
            },
            Mode::Confirm(action) => {
                if matches!(key.code, KeyCode::Char('y' | 'Y')) {
                    self.footer = Some(Footer::ok(action.doing()));
                    Some(Effect::Act(action))
                } else {
                    self.footer = Some(Footer::ok("cancelled"));
                    None
                }
            }
        }
    }

    fn normal(&mut self, key: KeyEvent, model: &Model) -> Option<Effect> {
        let rows = model.rows(&self.filter);
        self.footer = None;
        let page = self.page.max(1) as isize;
        match key.code {
            KeyCode::Char('q') => return Some(Effect::Quit),
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Up => self.step(&rows, -1),
            KeyCode::Down => self.step(&rows, 1),
            KeyCode::PageUp => self.step(&rows, -page),
            KeyCode::PageDown => self.step(&rows, page),
            KeyCode::Home => self.step(&rows, isize::MIN / 2),
            KeyCode::End => self.step(&rows, isize::MAX / 2),
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.refilter(model);
            }
            KeyCode::Enter => {
                return match self.session(&rows, model) {
                    Ok(s) => {
                        let action = Action::Attach(s);
                        self.footer = Some(Footer::ok(action.doing()));
                        Some(Effect::Act(action))
                    }
                    Err(e) => {
                        self.footer = Some(Footer::error(e));
                        None
                    }
                };
            }
            KeyCode::Char('i') => match self.live_session(&rows, model) {
                Ok(session) => {
                    self.mode = Mode::Inject {
                        session,
                        text: String::new(),
                    }
                }
                Err(e) => self.footer = Some(Footer::error(e)),
            },
            KeyCode::Char('k') => match self.session(&rows, model) {
                Ok(s) => self.confirm(Action::Kill(s)),
                Err(e) => self.footer = Some(Footer::error(e)),
            },
            KeyCode::Char('r') => {
                let Some(role) = self.selected_row(&rows).and_then(|r| r.id().role()) else {
                    self.footer = Some(Footer::error(
                        "r resets a role: select a role or one of its sessions",
                    ));
                    return None;
                };
                let frozen = model
                    .role(&role)
                    .is_some_and(|r| r.state == RoleState::Frozen);
                let action = Action::Reset(role);
                if frozen {
                    self.footer = Some(Footer::ok(action.doing()));
                    return Some(Effect::Act(action));
                }
                self.confirm(action);
            }
            KeyCode::Char('s') => match self.selected_row(&rows).map(|r| r.id()) {
                Some(RowId::Team(team)) => self.confirm(Action::Shift { team, role: None }),
                Some(id) => {
                    let role = id.role().unwrap_or_default();
                    let (team, name) = role.rsplit_once('/').unwrap_or(("", &role));
                    self.confirm(Action::Shift {
                        team: team.to_string(),
                        role: Some(name.to_string()),
                    })
                }
                None => self.footer = Some(Footer::error("nothing to shift")),
            },
            _ => {}
        }
        None
    }

    fn confirm(&mut self, action: Action) {
        self.footer = Some(Footer::ok(action.question()));
        self.mode = Mode::Confirm(action);
    }

    fn selected_row<'r, 'a>(&mut self, rows: &'r [Row<'a>]) -> Option<&'r Row<'a>> {
        self.settle(rows).map(|i| &rows[i])
    }

    /// The key of the session the selected row stands for.
    fn session(&mut self, rows: &[Row<'_>], model: &Model) -> Result<String, String> {
        let id = self
            .selected_row(rows)
            .map(Row::id)
            .ok_or("nothing selected")?;
        match model.target(&id) {
            Some(s) => Ok(s.key.clone()),
            None => Err(format!("{} has no session", id.key())),
        }
    }

    /// Like [`Ui::session`], for a session that can be typed into.
    fn live_session(&mut self, rows: &[Row<'_>], model: &Model) -> Result<String, String> {
        let id = self
            .selected_row(rows)
            .map(Row::id)
            .ok_or("nothing selected")?;
        match model.target(&id) {
            Some(s) if live(s) => Ok(s.key.clone()),
            Some(s) => Err(format!("session {} is {}: it has no pane", s.key, s.state)),
            None => Err(format!("{} has no session", id.key())),
        }
    }

    /// The line being typed in this mode, as the footer shows it (the
    /// cursor goes at its end).
    pub fn prompt(&self) -> Option<String> {
        match &self.mode {
            Mode::Filter => Some(format!("/{}", self.filter)),
            Mode::Inject { session, text } => Some(format!("type into {session}: {text}")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::{picture, session};
    use crate::view::SessionState;

    fn press(ui: &mut Ui, m: &Model, code: KeyCode) -> Option<Effect> {
        ui.key(KeyEvent::new(code, KeyModifiers::NONE), m)
    }

    fn typed(ui: &mut Ui, m: &Model, text: &str) {
        for c in text.chars() {
            press(ui, m, KeyCode::Char(c));
        }
    }

    fn select(ui: &mut Ui, m: &Model, key: &str) {
        let rows = m.rows("");
        let i = rows.iter().position(|r| r.id().key() == key).unwrap();
        ui.selected = Some(rows[i].id());
    }

    #[test]
    fn arrows_move_within_the_rows() {
        let m = picture();
        let mut ui = Ui::default();
        assert_eq!(ui.settle(&m.rows("")), Some(0));
        press(&mut ui, &m, KeyCode::Up);
        assert_eq!(ui.selected, Some(RowId::Team("demo/ops".into())));
        press(&mut ui, &m, KeyCode::Down);
        assert_eq!(ui.selected, Some(RowId::Role("demo/ops/cron".into())));
        press(&mut ui, &m, KeyCode::End);
        assert_eq!(ui.selected.as_ref().unwrap().key(), "demo/squad/flaky-0");
        ui.page = 3;
        press(&mut ui, &m, KeyCode::PageUp);
        assert_eq!(ui.selected.as_ref().unwrap().key(), "demo/squad/worker-0");
        press(&mut ui, &m, KeyCode::Home);
        assert_eq!(ui.selected, Some(RowId::Team("demo/ops".into())));
    }

    #[test]
    fn the_selection_follows_a_session_to_its_successor() {
        let mut m = picture();
        let mut ui = Ui::default();
        select(&mut ui, &m, "demo/squad/worker-1");
        // worker-1 is replaced: same key, new uid.
        m.sessions.retain(|s| s.key != "demo/squad/worker-1");
        m.sessions
            .push(session("demo/squad/worker-1", 12, SessionState::Pending));
        let rows = m.rows("");
        let i = ui.settle(&rows).unwrap();
        assert_eq!(
            rows[i].id(),
            RowId::Session {
                key: "demo/squad/worker-1".into(),
                uid: 12
            }
        );
        // Gone altogether: its role.
        m.sessions.retain(|s| s.key != "demo/squad/worker-1");
        let rows = m.rows("");
        let i = ui.settle(&rows).unwrap();
        assert_eq!(rows[i].id(), RowId::Role("demo/squad/worker".into()));
    }

    #[test]
    fn slash_filters_as_it_is_typed_and_selects_the_first_match() {
        let m = picture();
        let mut ui = Ui::default();
        ui.settle(&m.rows(""));
        press(&mut ui, &m, KeyCode::Char('/'));
        assert_eq!(ui.mode, Mode::Filter);
        typed(&mut ui, &m, "flak");
        assert_eq!(ui.prompt().as_deref(), Some("/flak"));
        assert_eq!(ui.selected, Some(RowId::Role("demo/squad/flaky".into())));
        // q while filtering is part of the filter, not quit.
        assert_eq!(press(&mut ui, &m, KeyCode::Char('q')), None);
        press(&mut ui, &m, KeyCode::Backspace);
        press(&mut ui, &m, KeyCode::Enter);
        assert_eq!(
            (ui.mode.clone(), ui.filter.as_str()),
            (Mode::Normal, "flak")
        );
        assert_eq!(m.rows(&ui.filter).len(), 3);
        press(&mut ui, &m, KeyCode::Esc);
        assert_eq!(ui.filter, "");
        assert_eq!(ui.selected, Some(RowId::Role("demo/squad/flaky".into())));
        // A team row that shows only because a role under it matches is
        // left for that role.
        select(&mut ui, &m, "demo/squad");
        press(&mut ui, &m, KeyCode::Char('/'));
        typed(&mut ui, &m, "worker");
        assert_eq!(ui.selected, Some(RowId::Role("demo/squad/worker".into())));
    }

    #[test]
    fn r_resets_a_frozen_role_at_once_and_asks_first_otherwise() {
        let m = picture();
        let mut ui = Ui::default();
        select(&mut ui, &m, "demo/ops/cron-0");
        assert_eq!(
            press(&mut ui, &m, KeyCode::Char('r')),
            Some(Effect::Act(Action::Reset("demo/ops/cron".into())))
        );
        select(&mut ui, &m, "demo/squad/worker");
        assert_eq!(press(&mut ui, &m, KeyCode::Char('r')), None);
        assert!(matches!(ui.mode, Mode::Confirm(Action::Reset(_))));
        assert!(ui.footer.as_ref().unwrap().text.contains("not frozen"));
        assert_eq!(press(&mut ui, &m, KeyCode::Char('n')), None);
        assert_eq!(ui.footer, Some(Footer::ok("cancelled")));
        press(&mut ui, &m, KeyCode::Char('r'));
        assert_eq!(
            press(&mut ui, &m, KeyCode::Char('y')),
            Some(Effect::Act(Action::Reset("demo/squad/worker".into())))
        );
        select(&mut ui, &m, "demo/squad");
        assert_eq!(press(&mut ui, &m, KeyCode::Char('r')), None);
        assert!(ui.footer.as_ref().unwrap().error);
    }

    #[test]
    fn k_and_s_ask_before_they_act() {
        let m = picture();
        let mut ui = Ui::default();
        select(&mut ui, &m, "demo/squad/worker-1");
        press(&mut ui, &m, KeyCode::Char('k'));
        assert_eq!(
            press(&mut ui, &m, KeyCode::Char('y')),
            Some(Effect::Act(Action::Kill("demo/squad/worker-1".into())))
        );
        press(&mut ui, &m, KeyCode::Char('s'));
        assert_eq!(
            press(&mut ui, &m, KeyCode::Char('y')),
            Some(Effect::Act(Action::Shift {
                team: "demo/squad".into(),
                role: Some("worker".into())
            }))
        );
        select(&mut ui, &m, "demo/squad");
        press(&mut ui, &m, KeyCode::Char('s'));
        assert_eq!(
            press(&mut ui, &m, KeyCode::Char('Y')),
            Some(Effect::Act(Action::Shift {
                team: "demo/squad".into(),
                role: None
            }))
        );
    }

    #[test]
    fn i_types_a_line_into_a_live_session_only() {
        let m = picture();
        let mut ui = Ui::default();
        select(&mut ui, &m, "demo/squad/worker");
        press(&mut ui, &m, KeyCode::Char('i'));
        typed(&mut ui, &m, "git statuss");
        press(&mut ui, &m, KeyCode::Backspace);
        ui.paste(" --short\n");
        assert_eq!(
            ui.prompt().as_deref(),
            Some("type into demo/squad/worker-0: git status --short ")
        );
        assert_eq!(
            press(&mut ui, &m, KeyCode::Enter),
            Some(Effect::Act(Action::Inject {
                session: "demo/squad/worker-0".into(),
                text: "git status --short ".into()
            }))
        );
        select(&mut ui, &m, "demo/ops/cron-0");
        assert_eq!(press(&mut ui, &m, KeyCode::Char('i')), None);
        assert_eq!(
            ui.footer,
            Some(Footer::error(
                "session demo/ops/cron-0 is crashed: it has no pane"
            ))
        );
        assert_eq!(ui.mode, Mode::Normal);
    }

    #[test]
    fn enter_attaches_to_what_the_row_stands_for_and_q_quits() {
        let m = picture();
        let mut ui = Ui::default();
        select(&mut ui, &m, "demo/squad");
        assert_eq!(
            press(&mut ui, &m, KeyCode::Enter),
            Some(Effect::Act(Action::Attach("demo/squad/worker-0".into())))
        );
        select(&mut ui, &m, "demo/ops");
        assert_eq!(press(&mut ui, &m, KeyCode::Enter), None);
        assert_eq!(ui.footer, Some(Footer::error("demo/ops has no session")));
        press(&mut ui, &m, KeyCode::Char('?'));
        assert_eq!(ui.mode, Mode::Help);
        // Any key closes the help, q too.
        assert_eq!(press(&mut ui, &m, KeyCode::Char('q')), None);
        assert_eq!(press(&mut ui, &m, KeyCode::Char('q')), Some(Effect::Quit));
        assert_eq!(
            ui.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), &m),
            Some(Effect::Quit)
        );
    }
}
