//! The daemon's event log: a bounded ring in memory (the supervisor's, pure
//! state), a bounded JSON-lines file that survives restarts, and the
//! followers of `events --follow` (both I/O, the main loop's).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
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

/// The most recent events, numbered. Pure: what is appended to the file
/// and sent to followers is up to the caller.
#[derive(Debug, Default)]
pub struct EventRing {
    ring: VecDeque<EventView>,
    next_seq: u64,
}

impl EventRing {
    /// A ring holding what an earlier daemon logged, numbering on after it.
    pub fn new(earlier: Vec<EventView>) -> EventRing {
        let mut ring = EventRing {
            ring: VecDeque::new(),
            next_seq: 1,
        };
        for ev in earlier {
            ring.next_seq = ring.next_seq.max(ev.seq + 1);
            ring.keep(ev);
        }
        ring
    }

    /// Numbers an event and keeps it; returns what to log.
    pub fn push(&mut self, ev: Event) -> EventView {
        let view = EventView {
            seq: self.next_seq,
            at: ev.at,
            kind: ev.kind.as_str().to_string(),
            key: ev.key,
            message: ev.message,
        };
        self.next_seq += 1;
        self.keep(view.clone());
        view
    }

    fn keep(&mut self, view: EventView) {
        self.ring.push_back(view);
        if self.ring.len() > RING {
            self.ring.pop_front();
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
}

/// The events file: read once at start, appended to after every event.
pub struct EventFile {
    path: PathBuf,
    file: Option<File>,
    written: u64,
}

impl EventFile {
    /// Opens the file for appending; returns it with the events it holds.
    pub fn open(path: PathBuf) -> (EventFile, Vec<EventView>) {
        let mut earlier = VecDeque::new();
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if let Ok(ev) = serde_json::from_str::<EventView>(&line) {
                    earlier.push_back(ev);
                    if earlier.len() > RING {
                        earlier.pop_front();
                    }
                }
            }
        }
        let file = open_append(&path);
        let written = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        (
            EventFile {
                path,
                file,
                written,
            },
            earlier.into(),
        )
    }

    /// Appends one event, rotating the file past its size bound.
    pub fn append(&mut self, view: &EventView) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(view).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.written + line.len() as u64 > FILE_MAX {
            let _ = std::fs::rename(&self.path, self.path.with_extension("jsonl.1"));
            self.file = open_append(&self.path);
            self.written = 0;
        }
        let Some(f) = self.file.as_mut() else {
            self.file = open_append(&self.path);
            return Err(std::io::Error::other(format!(
                "cannot open {}",
                self.path.display()
            )));
        };
        f.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }
}

fn open_append(path: &std::path::Path) -> Option<File> {
    OpenOptions::new().create(true).append(true).open(path).ok()
}

/// The connections following the log.
#[derive(Default)]
pub struct Followers {
    list: Vec<(EventFilter, Sender<EventView>)>,
}

impl Followers {
    pub fn add(&mut self, filter: EventFilter, tx: Sender<EventView>) {
        self.list.push((filter, tx));
    }

    /// Passes the event to every follower it concerns; those gone are dropped.
    pub fn notify(&mut self, view: &EventView) {
        self.list
            .retain(|(filter, tx)| !matches(filter, view) || tx.send(view.clone()).is_ok());
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
        let mut log = EventRing::new(Vec::new());
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
        let (mut file, earlier) = EventFile::open(path.clone());
        let mut ring = EventRing::new(earlier);
        file.append(&ring.push(ev(EventKind::Created, "a/b/c-0")))
            .unwrap();
        drop(file);
        let (mut file, earlier) = EventFile::open(path);
        let mut ring2 = EventRing::new(earlier);
        file.append(&ring2.push(ev(EventKind::Started, "a/b/c-0")))
            .unwrap();
        let all = ring2.query(&EventFilter::default());
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        drop(ring);
    }
}
