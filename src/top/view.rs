//! Draws one frame of `marvel top` from the model and the dashboard's state:
//! header, the tree of teams, roles and sessions, the selected session's
//! preview, the events strip and the footer. Every text that came from a
//! program is escaped here; colour only when asked for.
//!
//! Narrow terminals drop the table's columns in this order: PANE, EXIT,
//! AGE, CTX, CRASHES, RESTARTS, HEALTH, ACTIVITY. NAME and STATE always
//! stay.

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table};

use super::model::{
    Item, Link, Look, Model, Row, Tone, countdown, live, role_badge, session_look, shift_text,
    sparkline, team_badge,
};
use super::ui::{Mode, Ui};
use crate::output::{self, Tint, Tinted};
use crate::view::{ActivityState, HealthState, SessionState, SessionView, TmuxState};

/// What a frame needs besides the model: the time, the reader's zone,
/// whether to colour, and which daemon this is (`host:state-dir`).
pub struct Ctx<'a> {
    pub now: DateTime<Utc>,
    pub tz: FixedOffset,
    pub colour: bool,
    pub place: &'a str,
}

/// The last screen read from a session's pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub uid: u64,
    pub screen: Result<String, String>,
}

/// The table's columns after NAME, in the order they are kept as the
/// terminal narrows (and shown, left to right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    State,
    Activity,
    Health,
    Restarts,
    Crashes,
    Ctx,
    Age,
    Exit,
    Pane,
}

const COLS: [(Col, &str, u16); 9] = [
    (Col::State, "STATE", 16),
    (Col::Activity, "ACTIVITY", 11),
    (Col::Health, "HEALTH", 12),
    (Col::Restarts, "RESTARTS", 12),
    (Col::Crashes, "CRASHES", 14),
    (Col::Ctx, "CTX", 4),
    (Col::Age, "AGE", 5),
    (Col::Exit, "EXIT", 14),
    (Col::Pane, "PANE", 5),
];

/// NAME never gets narrower than this while another column is shown.
const NAME_MIN: u16 = 17;
/// Room for a typical session key in the events strip.
const KEY_WIDTH: usize = 28;
/// From this width on, the preview sits beside the table, not under it.
const SIDE_BY_SIDE: u16 = 150;

/// The columns that fit in `width`, in order.
pub fn columns(width: u16) -> Vec<Col> {
    let mut used = NAME_MIN;
    let mut out = Vec::new();
    for (col, _, w) in COLS {
        if used + w + 1 > width {
            break;
        }
        used += w + 1;
        out.push(col);
    }
    out
}

fn tone_colour(t: Tone) -> Option<Color> {
    match t {
        Tone::Good => Some(Color::Green),
        Tone::Warn => Some(Color::Yellow),
        Tone::Bad => Some(Color::Red),
        Tone::Frozen => Some(Color::Magenta),
        Tone::Quiet => None,
    }
}

fn tint_colour(t: Tint) -> Color {
    match t {
        Tint::Green => Color::Green,
        Tint::Red => Color::Red,
        Tint::Yellow => Color::Yellow,
        Tint::Magenta => Color::Magenta,
    }
}

impl Ctx<'_> {
    fn fg(&self, c: Option<Color>) -> Style {
        match c {
            Some(c) if self.colour => Style::new().fg(c),
            _ => Style::new(),
        }
    }

    fn tone(&self, t: Tone) -> Style {
        self.fg(tone_colour(t))
    }
}

/// Draws the whole screen.
pub fn draw(f: &mut Frame<'_>, model: &Model, ui: &mut Ui, preview: Option<&Preview>, ctx: &Ctx) {
    let area = f.area();
    let events_h = match area.height {
        h if h >= 40 => 7,
        h if h >= 20 => 4,
        _ => 2,
    };
    let [header, middle, events, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Fill(1),
        Constraint::Length(events_h),
        Constraint::Length(1),
    ])
    .areas(area);
    let (table, side) = if area.width >= SIDE_BY_SIDE {
        let [t, p] = Layout::horizontal([Constraint::Fill(3), Constraint::Fill(2)]).areas(middle);
        (t, p)
    } else {
        let [t, p] =
            Layout::vertical([Constraint::Percentage(55), Constraint::Fill(1)]).areas(middle);
        (t, p)
    };
    let rows = model.rows(&ui.filter);
    let selected = ui.settle(&rows);
    draw_header(f, header, model, ui, ctx);
    draw_table(f, table, model, &rows, selected, ui, ctx);
    let target = ui.selected.as_ref().and_then(|id| model.target(id));
    draw_preview(f, side, target, preview, ctx);
    draw_events(f, events, model, ctx);
    draw_footer(f, footer, ui, ctx);
    if ui.mode == Mode::Help {
        draw_help(f, area);
    }
}

fn draw_header(f: &mut Frame<'_>, area: Rect, model: &Model, ui: &Ui, ctx: &Ctx) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut first = vec![Span::styled("marvel top", bold), Span::raw("  daemon ")];
    let badge = |look: Look, text: String| {
        Span::styled(format!("{} {text}", look.symbol()), ctx.tone(look.tone()))
    };
    first.push(match (&model.link, &model.status) {
        (Link::Up, Some(s)) => badge(
            Look::Running,
            format!(
                "up {}, pid {}",
                output::age(s.daemon.started_at, ctx.now),
                s.daemon.pid
            ),
        ),
        (Link::Up, None) => badge(Look::Running, "up".into()),
        (Link::Connecting, _) => badge(Look::Starting, "connecting".into()),
        (Link::Down(why), _) => badge(
            Look::Crashed,
            format!("unreachable ({}); reconnecting", output::escape_line(why)),
        ),
    });
    if let Some(s) = &model.status {
        let t = &s.tmux;
        first.push(Span::raw("  tmux "));
        let version = t
            .version
            .as_deref()
            .map(|v| format!(" {}", output::escape_line(v.trim_start_matches("tmux "))))
            .unwrap_or_default();
        first.push(match t.state {
            TmuxState::Up => badge(Look::Running, format!("up{version}")),
            TmuxState::Degraded => badge(Look::Unhealthy, "degraded: not answering".into()),
            TmuxState::Unknown => badge(Look::Starting, "unknown".into()),
            TmuxState::Down => badge(
                Look::Crashed,
                match t.next_retry_at.and_then(|at| countdown(at, ctx.now)) {
                    Some(left) => format!("down, retry in {left}"),
                    None => "down, retrying".into(),
                },
            ),
        });
        if s.daemon.persist_error.is_some() {
            first.push(Span::raw("  "));
            first.push(Span::styled("state not persisted", ctx.tone(Tone::Bad)));
        }
    }
    first.push(Span::raw("  "));
    first.push(Span::raw(output::escape_line(ctx.place).into_owned()));

    let c = model.counts();
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut second = vec![Span::raw(format!(
        "{}, {}:",
        plural(c.teams, "team"),
        plural(c.sessions, "session")
    ))];
    for (n, look, always) in [
        (c.running, Look::Running, true),
        (c.backoff, Look::Backoff(None), false),
        (c.frozen, Look::Frozen, false),
        (c.crashed, Look::Crashed, false),
        (c.unhealthy, Look::Unhealthy, false),
        (c.starting, Look::Starting, false),
        (c.stopped, Look::Stopped, false),
    ] {
        if n > 0 || always {
            let word = match look {
                Look::Backoff(_) => "backoff".to_string(),
                l => l.label(ctx.now),
            };
            second.push(Span::raw("  "));
            second.push(Span::styled(
                format!("{} {n} {word}", look.symbol()),
                ctx.tone(look.tone()),
            ));
        }
    }
    if !ui.filter.is_empty() && ui.mode != Mode::Filter {
        second.push(Span::raw(format!(
            "   filter: {} (esc clears)",
            output::escape_line(&ui.filter)
        )));
    }
    f.render_widget(
        Paragraph::new(vec![Line::from(first), Line::from(second)]),
        area,
    );
}

/// `healthy 2s` (since the last heartbeat), `unhealthy`, `unknown`, or
/// `-` for a session whose role has no heartbeat check.
fn health_text(s: &SessionView, now: DateTime<Utc>) -> String {
    match (s.health, s.last_heartbeat_at) {
        (None, _) => "-".into(),
        (Some(h), Some(at)) if s.state == SessionState::Running => {
            format!("{h} {}", output::age(at, now))
        }
        (Some(h), _) => h.to_string(),
    }
}

fn draw_table(
    f: &mut Frame<'_>,
    area: Rect,
    model: &Model,
    rows: &[Row<'_>],
    selected: Option<usize>,
    ui: &mut Ui,
    ctx: &Ctx,
) {
    let cols = columns(area.width);
    let body = area.height.saturating_sub(1) as usize;
    ui.page = body.max(1);
    // Keep the selection on screen, moving the window as little as may be.
    if let Some(i) = selected {
        if i < ui.offset {
            ui.offset = i;
        } else if body > 0 && i >= ui.offset + body {
            ui.offset = i + 1 - body;
        }
    }
    ui.offset = ui.offset.min(rows.len().saturating_sub(body));
    let visible = rows.iter().enumerate().skip(ui.offset).take(body);
    let mut lines: Vec<TableRow<'_>> = Vec::with_capacity(body);
    for (i, row) in visible {
        let mut r = table_row(model, row, &cols, ctx);
        if Some(i) == selected {
            r = r.style(Style::new().add_modifier(Modifier::REVERSED));
        }
        lines.push(r);
    }
    let mut widths = vec![Constraint::Min(NAME_MIN.min(area.width))];
    let mut header = vec![Cell::from("NAME")];
    for (col, name, w) in COLS {
        if cols.contains(&col) {
            widths.push(Constraint::Length(w));
            header.push(Cell::from(name));
        }
    }
    let table = Table::new(lines, widths)
        .header(TableRow::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .column_spacing(1);
    f.render_widget(table, area);
    if rows.is_empty() && area.height > 1 {
        let text = if ui.filter.is_empty() {
            "No teams yet: `marvel run TEAM.ron` starts one."
        } else {
            "Nothing matches the filter (esc clears it)."
        };
        let below = Rect {
            y: area.y + 1,
            height: area.height - 1,
            ..area
        };
        f.render_widget(Paragraph::new(text), below);
    }
}

fn table_row<'a>(model: &Model, row: &Row<'_>, cols: &[Col], ctx: &Ctx) -> TableRow<'a> {
    let now = ctx.now;
    let indent = "  ".repeat(row.depth as usize);
    let state = |look: Look, text: String| {
        Cell::from(Span::styled(
            format!("{} {text}", look.symbol()),
            ctx.tone(look.tone()),
        ))
    };
    let empty = || Cell::from("");
    let (name, mut cells): (Cell<'a>, Vec<(Col, Cell<'a>)>) = match &row.item {
        Item::Team { key, view } => {
            let name = Cell::from(Span::styled(
                output::escape_line(key).into_owned(),
                Style::new().add_modifier(Modifier::BOLD),
            ));
            let cells = match view {
                Some(t) => {
                    let (look, text) = team_badge(t);
                    vec![
                        (Col::State, state(look, text)),
                        (Col::Health, Cell::from(shift_text(t).unwrap_or_default())),
                        (Col::Age, Cell::from(output::age(t.applied_at, now))),
                    ]
                }
                None => vec![(Col::State, Cell::from("-"))],
            };
            (name, cells)
        }
        Item::Role {
            name,
            view: Some(r),
            ..
        } => {
            let (look, text) = role_badge(r, now);
            let spark = sparkline(&model.deaths(r, now));
            let crashes = Line::from(vec![
                Span::styled(
                    spark,
                    ctx.tone(if r.crashes_in_window > 0 {
                        look.tone()
                    } else {
                        Tone::Quiet
                    }),
                ),
                Span::raw(format!(
                    " {}",
                    output::window(r.crashes_in_window, r.max_restarts)
                )),
            ]);
            (
                Cell::from(format!("{indent}{}", output::escape_line(name))),
                vec![
                    (Col::State, state(look, text)),
                    (
                        Col::Restarts,
                        Cell::from(output::restarts(r.restarts, r.last_restart_at, now)),
                    ),
                    (Col::Crashes, Cell::from(crashes)),
                    (
                        Col::Exit,
                        Cell::from(output::exit_text(r.last_exit.as_ref())),
                    ),
                ],
            )
        }
        Item::Role {
            name, view: None, ..
        } => (
            Cell::from(format!("{indent}{}", output::escape_line(name))),
            vec![(Col::State, Cell::from("-"))],
        ),
        Item::Session { view: s, role } => {
            let look = session_look(s, *role);
            let mut name = format!("{indent}{}-{}", s.role, s.slot);
            if s.outdated {
                name.push_str(" (old)");
            }
            let health = Span::styled(
                health_text(s, now),
                match s.health {
                    Some(HealthState::Unhealthy) => ctx.tone(Tone::Bad),
                    _ => Style::new(),
                },
            );
            let activity = Span::styled(
                match output::activity(s, now).as_str() {
                    "-" => String::new(),
                    text => text.to_string(),
                },
                match s.activity {
                    Some(ActivityState::Waiting) => ctx.tone(Tone::Warn),
                    _ => Style::new(),
                },
            );
            (
                Cell::from(output::escape_line(&name).into_owned()),
                vec![
                    (Col::State, state(look, look.label(now))),
                    (Col::Activity, Cell::from(activity)),
                    (Col::Health, Cell::from(health)),
                    (
                        Col::Restarts,
                        Cell::from(output::restarts(s.restarts, s.last_restart_at, now)),
                    ),
                    (
                        Col::Ctx,
                        Cell::from(s.context_pct.map(|p| format!("{p}%")).unwrap_or_default()),
                    ),
                    (Col::Age, Cell::from(output::age(s.created_at, now))),
                    (Col::Exit, Cell::from(output::exit_text(s.exit.as_ref()))),
                    (
                        Col::Pane,
                        Cell::from(
                            s.pane
                                .as_deref()
                                .map(|p| output::escape_line(p).into_owned())
                                .unwrap_or_default(),
                        ),
                    ),
                ],
            )
        }
    };
    let mut out = vec![name];
    for col in cols {
        let at = cells.iter().position(|(c, _)| c == col);
        out.push(match at {
            Some(i) => cells.swap_remove(i).1,
            None => empty(),
        });
    }
    TableRow::new(out)
}

/// A line of a pane's screen, safe to show: tabs to spaces, every other
/// control escaped.
fn screen_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if c == '\t' {
            let pad = 8 - out.chars().count() % 8;
            out.extend(std::iter::repeat_n(' ', pad));
        } else {
            out.push(c);
        }
    }
    output::escape_line(&out).into_owned()
}

/// The last `n` lines of `text` that end in something, escaped.
fn last_lines(text: &str, n: usize) -> Vec<Line<'static>> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    lines[end.saturating_sub(n)..end]
        .iter()
        .map(|l| Line::raw(screen_line(l)))
        .collect()
}

fn span(d: TimeDelta) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d.num_seconds().max(0) as u64))
        .to_string()
        .replace(' ', "")
}

fn draw_preview(
    f: &mut Frame<'_>,
    area: Rect,
    target: Option<&SessionView>,
    preview: Option<&Preview>,
    ctx: &Ctx,
) {
    let Some(s) = target else {
        let block = Block::new().borders(Borders::TOP).title(" preview ");
        let inner = block.inner(area);
        f.render_widget(block, area);
        f.render_widget(Paragraph::new("no session to show"), inner);
        return;
    };
    let look = session_look(s, None);
    let mut title = vec![
        Span::raw(format!(" {} ", s.key)),
        Span::styled(
            format!("{} {} ", look.symbol(), look.label(ctx.now)),
            ctx.tone(look.tone()),
        ),
    ];
    if let Some(pane) = &s.pane {
        title.push(Span::raw(format!("{} ", output::escape_line(pane))));
    }
    if let Some(note) = &s.heartbeat_note {
        title.push(Span::raw(format!("· {} ", output::escape_line(note))));
    }
    let block = Block::new().borders(Borders::TOP).title(Line::from(title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let h = inner.height as usize;
    let lines = if live(s) {
        match preview.filter(|p| p.uid == s.uid).map(|p| &p.screen) {
            Some(Ok(text)) => last_lines(text, h),
            Some(Err(e)) => vec![Line::styled(
                output::escape_line(e).into_owned(),
                ctx.tone(Tone::Bad),
            )],
            None if s.pane.is_none() => vec![Line::raw("starting…")],
            None => vec![Line::raw("reading the pane…")],
        }
    } else {
        ended(s, h, ctx)
    };
    f.render_widget(Paragraph::new(lines), inner);
}

/// A crashed or finished session: how and when it ended, what happens
/// next, and the last lines it printed.
fn ended(s: &SessionView, h: usize, ctx: &Ctx) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if let Some(e) = &s.exit {
        let after = s
            .started_at
            .map(|t| format!(" after {}", span(e.at - t)))
            .unwrap_or_default();
        lines.push(Line::styled(
            format!(
                "{} at {}{after}",
                output::exit_text(Some(e)),
                output::clock(e.at, ctx.now, &ctx.tz)
            ),
            ctx.tone(Tone::Bad),
        ));
    }
    match session_look(s, None) {
        Look::Frozen => lines.push(Line::styled(
            format!(
                "frozen: {}; r resets the role",
                output::frozen_reason(s.frozen_reason.as_deref())
            ),
            ctx.tone(Tone::Frozen),
        )),
        look @ Look::Backoff(_) => {
            lines.push(Line::styled(look.label(ctx.now), ctx.tone(Tone::Warn)))
        }
        _ => {}
    }
    if s.last_output.is_empty() {
        lines.push(Line::raw("(it printed nothing)"));
    } else {
        lines.push(Line::styled(
            "last output:",
            Style::new().add_modifier(Modifier::DIM),
        ));
        let room = h.saturating_sub(lines.len());
        lines.extend(last_lines(&s.last_output.join("\n"), room));
    }
    lines
}

fn draw_events(f: &mut Frame<'_>, area: Rect, model: &Model, ctx: &Ctx) {
    let block = Block::new().borders(Borders::TOP).title(" events ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let n = inner.height as usize;
    let skip = model.events.len().saturating_sub(n);
    let key = |k: &str| {
        if k.is_empty() {
            "-".to_string()
        } else {
            output::escape_line(k).into_owned()
        }
    };
    // Messages line up under each other, up to a long key.
    let key_width = model
        .events
        .iter()
        .skip(skip)
        .map(|e| key(&e.key).chars().count())
        .max()
        .unwrap_or(0)
        .min(KEY_WIDTH);
    let lines: Vec<Line<'_>> = model
        .events
        .iter()
        .skip(skip)
        .map(|e| {
            let kind = e.kind.as_str();
            let key = key(&e.key);
            Line::from(vec![
                Span::raw(format!("{}  ", output::clock(e.at, ctx.now, &ctx.tz))),
                Span::styled(format!("{kind:<9}"), ctx.fg(e.kind.tint().map(tint_colour))),
                Span::raw(format!(
                    "  {key:<key_width$}  {}",
                    output::escape_line(&e.message)
                )),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

/// The keys the footer lists when it has nothing else to say.
const HINTS: [(&str, &str); 8] = [
    ("enter", "attach"),
    ("i", "type"),
    ("r", "reset"),
    ("k", "kill"),
    ("s", "shift"),
    ("/", "filter"),
    ("?", "help"),
    ("q", "quit"),
];

fn draw_footer(f: &mut Frame<'_>, area: Rect, ui: &Ui, ctx: &Ctx) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    if let Some(prompt) = ui.prompt() {
        let text = output::escape_line(&prompt).into_owned();
        let width = Span::raw(text.as_str()).width() as u16;
        f.render_widget(Paragraph::new(Line::styled(text, bold)), area);
        f.set_cursor_position((area.x + width.min(area.width.saturating_sub(1)), area.y));
        return;
    }
    let line = match (&ui.mode, &ui.footer) {
        (Mode::Help, _) => Line::raw("any key closes the help"),
        (_, Some(msg)) => {
            let text = output::escape_line(&msg.text.replace('\n', "  ")).into_owned();
            let style = match (&ui.mode, msg.error) {
                (Mode::Confirm(_), _) => bold,
                (_, true) => ctx.tone(Tone::Bad),
                (_, false) => Style::new(),
            };
            Line::styled(text, style)
        }
        (_, None) => {
            let mut spans = Vec::new();
            for (i, (key, what)) in HINTS.iter().enumerate() {
                if i > 0 {
                    spans.push(Span::raw("  "));
                }
                spans.push(Span::styled(*key, bold));
                spans.push(Span::raw(format!(" {what}")));
            }
            Line::from(spans)
        }
    };
    f.render_widget(Paragraph::new(line), area);
}

fn draw_help(f: &mut Frame<'_>, area: Rect) {
    let text: Vec<Line<'_>> = [
        "↑ ↓ PgUp PgDn Home End  move",
        "enter  attach to the session (detach to come back)",
        "i      type a line into the session",
        "r      reset the role (asks first unless it is frozen)",
        "k      kill the session; it is replaced at once",
        "s      shift the team (on a team row) or the role",
        "/      filter by key; esc clears the filter",
        "?      this help        q  quit",
        "",
        "● running   ▲ unhealthy   ◌ starting   ◷ backoff",
        "✗ crashed   ❄ frozen      ■ stopped",
        "CRASHES: deaths over the role's window, and",
        "         crashes counted against its budget",
        "Narrow terminals drop PANE, EXIT, AGE, CTX, ...",
    ]
    .into_iter()
    .map(Line::raw)
    .collect();
    let w = 58.min(area.width);
    let h = (text.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" marvel top: keys ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::{
        NOW, crashed, event, picture, role, session, status, t, team, up,
    };
    use crate::top::model::{Fetched, Scope};
    use crate::view::{EventKind, EventView, RoleState, TeamState};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    fn ctx(colour: bool) -> Ctx<'static> {
        Ctx {
            now: t(NOW),
            tz: FixedOffset::east_opt(0).unwrap(),
            colour,
            place: "host:~/.local/share/marvel",
        }
    }

    fn render(
        model: &Model,
        ui: &mut Ui,
        preview: Option<&Preview>,
        w: u16,
        h: u16,
        colour: bool,
    ) -> Buffer {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| draw(f, model, ui, preview, &ctx(colour)))
            .unwrap();
        term.backend().buffer().clone()
    }

    /// The buffer as text, one line per row, trailing blanks cut.
    fn text(buf: &Buffer) -> String {
        let mut out = String::new();
        for y in 0..buf.area.height {
            let mut line = String::new();
            let mut skip = 0;
            for x in 0..buf.area.width {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                let sym = buf[(x, y)].symbol();
                skip = Span::raw(sym).width().saturating_sub(1);
                line.push_str(sym);
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Compares a frame with `tests/top/<name>.txt`;
    /// `MARVEL_UPDATE_TOP=1 cargo test --lib top::` rewrites the files.
    fn snapshot(name: &str, buf: &Buffer) {
        let actual = text(buf);
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/top")
            .join(format!("{name}.txt"));
        if std::env::var_os("MARVEL_UPDATE_TOP").is_some_and(|v| !v.is_empty()) {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            actual == expected,
            "the {name} frame changed; if that is intended, run MARVEL_UPDATE_TOP=1 cargo test --lib top::\n--- {}\n{expected}\n--- now\n{actual}",
            file.display()
        );
    }

    fn select(ui: &mut Ui, model: &Model, key: &str) {
        let rows = model.rows("");
        ui.selected = rows.iter().find(|r| r.id().key() == key).map(Row::id);
    }

    #[test]
    fn snapshot_empty() {
        let mut m = up();
        m.apply(Fetched::Status(Box::new(status(TmuxState::Up))));
        let buf = render(&m, &mut Ui::default(), None, 100, 20, false);
        snapshot("empty", &buf);
        assert!(text(&buf).contains("No teams yet"));
    }

    #[test]
    fn snapshot_one_team() {
        let mut m = up();
        m.apply(Fetched::Status(Box::new(status(TmuxState::Up))));
        m.apply(Fetched::Teams(
            Scope::All,
            vec![team("demo/squad", 2, 2, TeamState::Ready)],
        ));
        m.apply(Fetched::Roles(
            Scope::All,
            vec![role("demo/squad/worker", 2, 2, RoleState::Ready)],
        ));
        let mut s0 = session("demo/squad/worker-0", 1, SessionState::Running);
        s0.health = Some(HealthState::Healthy);
        s0.last_heartbeat_at = Some(t("2025-01-02T11:59:58Z"));
        s0.context_pct = Some(42);
        s0.activity = Some(ActivityState::Waiting);
        s0.activity_since = Some(t("2025-01-02T11:59:40Z"));
        let s1 = session("demo/squad/worker-1", 2, SessionState::Running);
        m.apply(Fetched::Sessions(Scope::All, vec![s0, s1]));
        m.backlog(vec![
            event(
                1,
                "2025-01-02T11:57:00Z",
                EventKind::Created,
                "demo/squad/worker-0",
                "pane %1",
            ),
            event(
                2,
                "2025-01-02T11:57:01Z",
                EventKind::Started,
                "demo/squad/worker-0",
                "running as pid 1001",
            ),
        ]);
        let mut ui = Ui::default();
        select(&mut ui, &m, "demo/squad/worker-0");
        let preview = Preview {
            uid: 1,
            screen: Ok("$ my-agent --flag\n\tthinking…\x1b]0;title\x07\n\n\n".into()),
        };
        let buf = render(&m, &mut ui, Some(&preview), 120, 24, false);
        snapshot("one-team", &buf);
        let text = text(&buf);
        assert!(text.contains("        thinking…\\e]0;title^G"), "{text}");
        assert!(text.contains("healthy 2s"), "{text}");
        assert!(text.contains("waiting 20s"), "{text}");
    }

    #[test]
    fn snapshot_a_frozen_role() {
        let m = picture();
        let mut ui = Ui::default();
        select(&mut ui, &m, "demo/ops/cron");
        let buf = render(&m, &mut ui, None, 120, 24, false);
        snapshot("frozen-role", &buf);
        let text = text(&buf);
        assert!(text.contains("❄ frozen"), "{text}");
        assert!(
            text.contains("frozen: 5 crashes in 1m, last: exit 3; r resets the role"),
            "{text}"
        );
        assert!(text.contains("giving up"), "{text}");
    }

    /// A role that keeps dying: deaths spread over its window.
    fn crash_loop() -> Model {
        let mut m = picture();
        let mut r = role("demo/squad/flaky", 1, 0, RoleState::Backoff);
        r.crashes_in_window = 4;
        r.restarts = 9;
        r.last_restart_at = Some(t("2025-01-02T11:59:58Z"));
        r.window_ms = 80_000;
        r.last_exit = crashed("demo/squad/flaky-0", 3, RoleState::Backoff).exit;
        m.apply(Fetched::Roles(
            Scope::Team("demo/squad".into()),
            vec![role("demo/squad/worker", 2, 2, RoleState::Ready), r],
        ));
        let deaths = [
            "11:58:50", "11:59:12", "11:59:31", "11:59:40", "11:59:50", "11:59:55", "11:59:58",
        ];
        let deaths: Vec<EventView> = deaths
            .iter()
            .enumerate()
            .map(|(i, at)| {
                let at = format!("2025-01-02T{at}Z");
                event(
                    i as u64,
                    &at,
                    EventKind::Crashed,
                    "demo/squad/flaky-0",
                    "exit 3 after 1s",
                )
            })
            .collect();
        m.apply(Fetched::Crashes(deaths.clone()));
        for e in deaths {
            m.event(e);
        }
        m.event(event(
            200,
            "2025-01-02T11:59:58Z",
            EventKind::Backoff,
            "demo/squad/flaky",
            "restart 9 in 4.5s",
        ));
        m
    }

    #[test]
    fn snapshot_a_crash_loop() {
        let m = crash_loop();
        let mut ui = Ui::default();
        select(&mut ui, &m, "demo/squad/flaky-0");
        let buf = render(&m, &mut ui, None, 120, 30, false);
        snapshot("crash-loop", &buf);
        let text = text(&buf);
        assert!(text.contains("·▃·▃·▃▃█ 4/5"), "{text}");
        assert!(text.contains("◷ backoff 3s"), "{text}");
    }

    fn many(n: usize) -> Model {
        let mut m = up();
        m.apply(Fetched::Status(Box::new(status(TmuxState::Up))));
        let teams = 10;
        let per = n / teams;
        m.apply(Fetched::Teams(
            Scope::All,
            (0..teams)
                .map(|i| {
                    team(
                        &format!("fleet/t{i:02}"),
                        per as u32,
                        per as u32,
                        TeamState::Ready,
                    )
                })
                .collect(),
        ));
        m.apply(Fetched::Roles(
            Scope::All,
            (0..teams)
                .map(|i| {
                    role(
                        &format!("fleet/t{i:02}/agent"),
                        per as u32,
                        per as u32,
                        RoleState::Ready,
                    )
                })
                .collect(),
        ));
        m.apply(Fetched::Sessions(
            Scope::All,
            (0..n)
                .map(|i| {
                    session(
                        &format!("fleet/t{:02}/agent-{}", i / per, i % per),
                        i as u64 + 1,
                        SessionState::Running,
                    )
                })
                .collect(),
        ));
        m
    }

    #[test]
    fn snapshot_200_sessions() {
        let m = many(200);
        assert_eq!(m.rows("").len(), 220);
        let mut ui = Ui::default();
        // Far down the list: the window follows the selection.
        select(&mut ui, &m, "fleet/t05/agent-7");
        let buf = render(&m, &mut ui, None, 160, 48, false);
        snapshot("200-sessions", &buf);
        let text = text(&buf);
        assert!(text.contains("200 sessions:  ● 200 running"), "{text}");
        assert!(text.contains("agent-7"), "{text}");
        assert!(ui.offset > 0);
    }

    #[test]
    fn snapshot_80x24() {
        let m = crash_loop();
        let mut ui = Ui::default();
        select(&mut ui, &m, "demo/squad/worker-0");
        let preview = Preview {
            uid: 1,
            screen: Err("error: tmux not ready: the server does not answer".into()),
        };
        let buf = render(&m, &mut ui, Some(&preview), 80, 24, false);
        snapshot("80x24", &buf);
        let text = text(&buf);
        for header in ["NAME", "STATE", "ACTIVITY", "HEALTH", "RESTARTS"] {
            assert!(text.contains(header), "{header}: {text}");
        }
        assert!(!text.contains("CTX") && !text.contains("PANE"), "{text}");
        assert!(text.lines().all(|l| Span::raw(l).width() <= 80));
    }

    #[test]
    fn columns_drop_in_the_documented_order() {
        let names = |w| {
            columns(w)
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            names(119),
            "State Activity Health Restarts Crashes Ctx Age Exit Pane"
        );
        assert_eq!(
            names(118),
            "State Activity Health Restarts Crashes Ctx Age Exit"
        );
        assert_eq!(names(100), "State Activity Health Restarts Crashes Ctx Age");
        assert_eq!(names(86), "State Activity Health Restarts");
        assert_eq!(names(80), "State Activity Health Restarts");
        assert_eq!(names(60), "State Activity Health");
        assert_eq!(names(40), "State");
        assert_eq!(names(20), "");
    }

    #[test]
    fn colour_only_when_asked_for() {
        let m = picture();
        let mut ui = Ui::default();
        let plain = render(&m, &mut ui, None, 120, 24, false);
        assert!(
            plain
                .content
                .iter()
                .all(|c| c.fg == Color::Reset && c.bg == Color::Reset)
        );
        let painted = render(&m, &mut ui, None, 120, 24, true);
        let frozen = text(&painted)
            .lines()
            .position(|l| l.contains("cron-0"))
            .unwrap() as u16;
        let x = (0..120)
            .find(|x| painted[(*x, frozen)].symbol() == "❄")
            .unwrap();
        assert_eq!(painted[(x, frozen)].fg, Color::Magenta);
        let reversed = painted
            .content
            .iter()
            .filter(|c| c.modifier.contains(Modifier::REVERSED))
            .count();
        assert!(reversed >= 100, "the selected row is shown reversed");
    }

    #[test]
    fn prompts_put_the_cursor_at_their_end() {
        let m = picture();
        let mut ui = Ui {
            mode: Mode::Filter,
            filter: "fla".into(),
            ..Ui::default()
        };
        let mut term = Terminal::new(TestBackend::new(100, 24)).unwrap();
        term.draw(|f| draw(f, &m, &mut ui, None, &ctx(false)))
            .unwrap();
        term.backend_mut().assert_cursor_position((4, 23));
        let text = text(term.backend().buffer());
        assert!(text.lines().last().unwrap().starts_with("/fla"), "{text}");
    }

    #[test]
    fn the_help_lists_every_key() {
        let m = picture();
        let mut ui = Ui {
            mode: Mode::Help,
            ..Ui::default()
        };
        let text = text(&render(&m, &mut ui, None, 80, 24, false));
        for key in ["enter", "i ", "r ", "k ", "s ", "/ ", "q  quit", "❄ frozen"] {
            assert!(text.contains(key), "{key}: {text}");
        }
    }

    #[test]
    fn a_lost_daemon_is_said_in_the_header() {
        let mut m = picture();
        m.link = Link::Down("the daemon closed the connection".into());
        let text = text(&render(&m, &mut Ui::default(), None, 120, 24, false));
        assert!(
            text.lines()
                .next()
                .unwrap()
                .contains("✗ unreachable (the daemon closed the connection); reconnecting"),
            "{text}"
        );
    }
}
