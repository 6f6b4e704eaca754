//! The daemon's event log: a bounded in-memory ring for `events`, a
//! bounded JSON-lines file that survives restarts, and the followers of
//! `events --follow`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::mpsc::Sender;

use crate::domain::event::Event;
use crate::domain::key::matches_suffix;
use crate::proto::EventFilter;
use crate::view::EventView;

/// Events kept in memory.
pub const RING: usize = 10_000;
/// The events file is rotated (to `.1`) past this size.
const FILE_MAX: u64 = 8 << 20;

pub struct EventLog {
    ring: VecDeque<EventView>,
    next_seq: u64,
    path: PathBuf,
    file: Option<File>,
    written: u64,
    followers: Vec<(EventFilter, Sender<EventView>)>,
}

impl EventLog {
    /// Opens the log, reloading the tail of the previous file.
    pub fn open(path: PathBuf) -> EventLog {
        let mut ring = VecDeque::new();
        let mut next_seq = 1;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if let Ok(ev) = serde_json::from_str::<EventView>(&line) {
                    next_seq = next_seq.max(ev.seq + 1);
                    ring.push_back(ev);
                    if ring.len() > RING {
                        ring.pop_front();
                    }
                }
            }
        }
        let file = crate::statedir::open_append(&path).ok();
        let written = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        EventLog {
            ring,
            next_seq,
            path,
            file,
            written,
            followers: Vec::new(),
        }
    }

    pub fn push(&mut self, ev: Event) {
        let view = EventView {
            seq: self.next_seq,
            at: ev.at,
            kind: ev.kind.as_str().to_string(),
            key: ev.key,
            message: ev.message,
        };
        self.next_seq += 1;
        if let Ok(mut line) = serde_json::to_string(&view) {
            line.push('\n');
            self.write_line(line.as_bytes());
        }
        self.followers
            .retain(|(filter, tx)| !matches(filter, &view) || tx.send(view.clone()).is_ok());
        self.ring.push_back(view);
        if self.ring.len() > RING {
            self.ring.pop_front();
        }
    }

    fn write_line(&mut self, bytes: &[u8]) {
        if self.written + bytes.len() as u64 > FILE_MAX {
            let _ = std::fs::rename(&self.path, self.path.with_extension("jsonl.1"));
            self.file = crate::statedir::open_append(&self.path).ok();
            self.written = 0;
        }
        if let Some(f) = self.file.as_mut()
            && f.write_all(bytes).is_ok()
        {
            self.written += bytes.len() as u64;
        }
    }

    /// The most recent events that pass the filter, oldest first.
    pub fn query(&self, filter: &EventFilter) -> Vec<EventView> {
        let mut out: Vec<EventView> = self
            .ring
            .iter()
            .filter(|e| matches(filter, e))
            .cloned()
            .collect();
        if let Some(limit) = filter.limit
            && out.len() > limit
        {
            out.drain(..out.len() - limit);
        }
        out
    }

    pub fn follow(&mut self, filter: EventFilter, tx: Sender<EventView>) {
        self.followers.push((filter, tx));
    }
}

/// Does the event pass the filter? A key filter matches the event's key by
/// suffix, or any event under it (`squad` matches `demo/squad/worker-0`).
pub fn matches(filter: &EventFilter, ev: &EventView) -> bool {
    if !filter.kinds.is_empty() && !filter.kinds.contains(&ev.kind) {
        return false;
    }
    match &filter.key {
        None => true,
        Some(q) => {
            let q = q.trim_matches('/');
            let mut prefix = String::new();
            ev.key.split('/').any(|part| {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                matches_suffix(&prefix, q)
            }) || role_of_session(&ev.key).is_some_and(|r| matches_suffix(&r, q))
        }
    }
}

/// `demo/squad/worker-0` → `demo/squad/worker`, so a role filter sees its
/// sessions' events.
fn role_of_session(key: &str) -> Option<String> {
    key.parse::<crate::domain::key::SessionKey>()
        .ok()
        .map(|k| k.role().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EventKind;

    fn ev(kind: EventKind, key: &str) -> Event {
        Event::new("2026-01-01T00:00:00Z".parse().unwrap(), kind, key, "m")
    }

    #[test]
    fn filters_by_kind_and_by_key_at_any_level() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path().join("e.jsonl"));
        log.push(ev(EventKind::Crashed, "demo/squad/worker-0"));
        log.push(ev(EventKind::Frozen, "demo/squad/worker"));
        log.push(ev(EventKind::Crashed, "demo/other/lead-0"));
        let by = |key: Option<&str>, kinds: &[&str]| {
            log.query(&EventFilter {
                key: key.map(str::to_string),
                kinds: kinds.iter().map(|s| s.to_string()).collect(),
                limit: None,
            })
            .len()
        };
        assert_eq!(by(None, &[]), 3);
        assert_eq!(by(None, &["crashed"]), 2);
        assert_eq!(by(Some("squad"), &[]), 2);
        assert_eq!(by(Some("squad/worker"), &[]), 2);
        assert_eq!(by(Some("worker-0"), &[]), 1);
        assert_eq!(by(Some("demo"), &["crashed"]), 2);
        assert_eq!(by(Some("nothing"), &[]), 0);
    }

    #[test]
    fn the_log_survives_a_reopen_and_keeps_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut log = EventLog::open(path.clone());
        log.push(ev(EventKind::Created, "a/b/c-0"));
        drop(log);
        let mut log = EventLog::open(path);
        log.push(ev(EventKind::Started, "a/b/c-0"));
        let all = log.query(&EventFilter::default());
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    }
}
