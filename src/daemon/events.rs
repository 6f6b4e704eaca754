//! The daemon's event log. The ring of recent events and their numbering
//! ([`EventRing`]) are the supervisor's state, pure; the JSON-lines file
//! that survives restarts ([`EventFile`]) and the bounded queues of the
//! followers of `events --follow` ([`Followers`]) are the main loop's I/O.
//! Nothing in the file can stop the log, and a number is never handed out
//! twice.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::domain::event::Event;
use crate::domain::state::Time;
use crate::proto::EventFilter;
use crate::view::EventView;

/// Events kept in memory.
pub const RING: usize = 10_000;
/// Events queued for one follower; past this it is told how many it lost.
pub const FOLLOW_QUEUE: usize = 1_000;
/// The events file is rotated (to `.1`) past this size; at start-up at
/// most this much of each file is read.
const FILE_MAX: u64 = 8 << 20;
/// marvel never writes a longer line: anything longer is skipped unread.
const LINE_MAX: usize = 64 << 10;
/// How often a failing log write is retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Larger numbers in a file are not ours: JSON readers in other languages
/// lose precision past 2^53.
const SEQ_MAX: u64 = 1 << 53;

/// Event numbers are reserved in `events.seq` this many at a time: the mark
/// is written once a block instead of once an event (each write made its
/// page dirty again, a page to the disk per death), and a daemon that
/// starts again skips what its predecessor left of the block (numbers may
/// skip, never repeat).
const SEQ_BLOCK: u64 = 1_000;

/// Why the log is not being written, and since when. Cleared by the next
/// successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// The system's message, such as `No space left on device (os error 28)`.
    pub error: String,
    pub since: Time,
}

/// The most recent events, numbered: what `events` and `describe` show.
#[derive(Debug, Default)]
pub struct EventRing {
    ring: VecDeque<EventView>,
    next_seq: u64,
}

impl EventRing {
    /// A ring holding what an earlier daemon logged, numbering on past
    /// every number it may have handed out.
    pub fn new(earlier: Loaded) -> EventRing {
        EventRing {
            ring: earlier.ring,
            next_seq: earlier.last + 1,
        }
    }

    /// Numbers an event and keeps it; returns what to log.
    pub fn push(&mut self, ev: Event) -> EventView {
        let view = EventView {
            seq: self.next_seq,
            at: ev.at,
            kind: ev.kind,
            key: ev.key,
            message: ev.message,
        };
        self.next_seq += 1;
        self.ring.push_back(view.clone());
        if self.ring.len() > RING {
            self.ring.pop_front();
        }
        view
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

/// The events file (`events.jsonl`, rotated to `.1`) and its number mark.
pub struct EventFile {
    path: PathBuf,
    file: Option<File>,
    /// `events.seq`: the highest number handed out or reserved, so that a
    /// log that is truncated or lost does not bring old numbers back.
    mark: Option<File>,
    /// What the mark holds: numbers up to it go out without writing it.
    reserved: u64,
    /// The last number handed out.
    handed: u64,
    /// Bytes in the current file; rotation happens past `file_max`.
    written: u64,
    file_max: u64,
    /// The file's last line has no newline (a write torn by a crash): the
    /// next write starts a line of its own.
    torn: bool,
    /// Events not in the file yet (a failed write), oldest first.
    unwritten: VecDeque<EventView>,
    /// After a failed write, the next attempt waits until then, so a full
    /// disk costs one attempt per [`RETRY_EVERY`], not one per event.
    retry_at: Option<Instant>,
    failure: Option<WriteFailure>,
    /// Whether the last write of the log, and of the mark, failed.
    log_failed: bool,
    mark_failed: bool,
}

/// A log closed in order gives back the numbers it reserved and did not
/// hand out: the next daemon goes on from the last one. (One that crashed
/// leaves the block reserved, and the next skips it.)
impl Drop for EventFile {
    fn drop(&mut self) {
        if self.handed > 0 && self.reserved > self.handed && !self.mark_failed {
            self.write_mark(self.handed);
        }
    }
}

impl EventFile {
    /// Opens the log for appending; returns it with what the previous
    /// daemon wrote (the rotated file and the current one). Unreadable
    /// lines are skipped and counted.
    pub fn open(path: PathBuf) -> (EventFile, Loaded) {
        let mut loaded = Loaded::default();
        for p in [rotated(&path), path.clone()] {
            if let Ok(f) = crate::statedir::open_existing(&p) {
                let _ = read_tail(f, FILE_MAX, &mut loaded);
            }
        }
        loaded.last = loaded.last.max(read_mark(&seq_file(&path)));
        let mut file = EventFile {
            path,
            file: None,
            mark: None,
            reserved: 0,
            handed: 0,
            written: 0,
            file_max: FILE_MAX,
            torn: false,
            unwritten: VecDeque::new(),
            retry_at: None,
            failure: None,
            log_failed: false,
            mark_failed: false,
        };
        if let Err(e) = file.open_file() {
            file.log_failed = true;
            file.failed(&e);
        }
        (file, loaded)
    }

    /// The file's name, for messages.
    #[cfg(test)]
    pub fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// Appends an event. Its number is reserved in the mark first. It
    /// never blocks and never fails: a write that fails keeps the event,
    /// is retried with a later one, and shows in [`EventFile::write_failure`].
    pub fn append(&mut self, view: &EventView) {
        if view.seq > self.reserved || self.mark_failed {
            self.write_mark(view.seq.saturating_add(SEQ_BLOCK - 1).min(SEQ_MAX - 1));
        }
        self.handed = self.handed.max(view.seq);
        self.unwritten.push_back(view.clone());
        // Events that wait longer than the ring keeps them are gone.
        if self.unwritten.len() > RING {
            self.unwritten.pop_front();
        }
        self.flush();
    }

    /// Why the log (or its seq file) could not be written, if the last
    /// attempt failed.
    pub fn write_failure(&self) -> Option<&WriteFailure> {
        self.failure.as_ref()
    }

    /// Writes the unwritten events, rotating the file when it is full.
    fn flush(&mut self) {
        if self.unwritten.is_empty() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let mut buf = Vec::new();
        if self.torn {
            buf.push(b'\n');
        }
        for v in &self.unwritten {
            if serde_json::to_writer(&mut buf, v).is_ok() {
                buf.push(b'\n');
            }
        }
        match self.append_bytes(&buf) {
            Ok(()) => {
                self.unwritten.clear();
                self.torn = false;
                self.log_failed = false;
                self.retry_at = None;
            }
            Err(e) => {
                self.log_failed = true;
                self.retry_at = Some(Instant::now() + RETRY_EVERY);
                self.failed(&e);
            }
        }
        if !self.log_failed && !self.mark_failed {
            self.failure = None;
        }
    }

    fn append_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.written > 0 && self.written + bytes.len() as u64 > self.file_max {
            self.file = None;
            std::fs::rename(&self.path, rotated(&self.path))?;
            self.written = 0;
        }
        if self.file.is_none() {
            self.open_file()?;
        }
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        if let Err(e) = f.write_all(bytes) {
            // Take back a partly written line, so the file holds only
            // whole lines and the retry starts where this one did; if that
            // fails too, the retry starts on a line of its own.
            if let Ok(m) = f.metadata()
                && m.len() > self.written
                && f.set_len(self.written).is_err()
            {
                self.written = m.len();
                self.torn = true;
            }
            return Err(e);
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn open_file(&mut self) -> io::Result<()> {
        let f = open_for_write(&self.path, true)?;
        self.written = f.metadata()?.len();
        let mut last = [0u8; 1];
        self.torn = self.written > 0
            && f.read_exact_at(&mut last, self.written - 1).is_ok()
            && last[0] != b'\n';
        self.file = Some(f);
        Ok(())
    }

    /// Records numbers up to `seq` as handed out, before anyone sees one. A
    /// fixed-width write in place: one small write per block, no rename.
    fn write_mark(&mut self, seq: u64) {
        let text = format!("{seq:020}\n");
        let result = match self.mark.take() {
            Some(f) => Ok(f),
            None => open_for_write(&seq_file(&self.path), false),
        }
        .and_then(|f| f.write_all_at(text.as_bytes(), 0).map(|()| f));
        match result {
            Ok(f) => {
                self.mark = Some(f);
                self.reserved = seq;
                self.mark_failed = false;
            }
            Err(e) => {
                self.mark_failed = true;
                self.failed(&e);
            }
        }
    }

    fn failed(&mut self, e: &io::Error) {
        if self.failure.is_none() {
            self.failure = Some(WriteFailure {
                error: e.to_string(),
                since: Utc::now(),
            });
        }
    }
}

/// The followers of `events --follow`, each with its bounded queue.
#[derive(Default)]
pub struct Followers {
    list: Vec<Follower>,
}

impl Followers {
    /// Sends each new event that passes `filter` to `tx` until its reader
    /// goes away.
    pub fn add(&mut self, filter: EventFilter, tx: FollowTx) {
        // Readers that left without an event to notice it by go here.
        self.list.retain(|f| f.tx.reader.strong_count() > 0);
        self.list.push(Follower {
            filter,
            tx,
            dropped: 0,
        });
    }

    /// Offers the event to every follower; those gone are dropped.
    pub fn offer(&mut self, view: &EventView) {
        self.list.retain_mut(|f| f.offer(view));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.list.len()
    }
}

/// The one place the log's files are opened for writing (the log itself
/// with `append`, its seq mark without): never through a link, and only
/// a file of ours.
fn open_for_write(path: &Path, append: bool) -> io::Result<File> {
    crate::statedir::open_read_write(path, append)
}

/// `events.jsonl` → `events.jsonl.1`, where the file is rotated to.
fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// `events.jsonl` → `events.seq`: the last number handed out.
fn seq_file(path: &Path) -> PathBuf {
    path.with_extension("seq")
}

/// The last number handed out, or 0 when there is none worth believing.
fn read_mark(path: &Path) -> u64 {
    let mut text = String::new();
    let read =
        crate::statedir::open_existing(path).and_then(|f| f.take(32).read_to_string(&mut text));
    match read.ok().and_then(|_| text.trim().parse::<u64>().ok()) {
        Some(n) if n < SEQ_MAX => n,
        _ => 0,
    }
}

/// What a start-up read of the files found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The newest events, oldest first, with strictly rising numbers.
    pub ring: VecDeque<EventView>,
    /// The highest number read (0 when none).
    pub last: u64,
    /// Lines that were not an event, or not newer than the one before.
    pub skipped: u64,
}

/// Reads at most the last `max` bytes of a log file into `into`.
fn read_tail(mut f: File, max: u64, into: &mut Loaded) -> io::Result<()> {
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::new(f.take(max));
    if start > 0 {
        // Mid-line: the rest of that line is not an event to count.
        skip_line(&mut reader)?;
    }
    read_events(reader, into)
}

fn skip_line(r: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

/// Parses JSON lines into `into`: any bytes in, never a panic; lines
/// longer than [`LINE_MAX`], not an event, numbered 0 or past [`SEQ_MAX`],
/// or not newer than the event before are skipped and counted.
pub fn read_events(mut r: impl BufRead, into: &mut Loaded) -> io::Result<()> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            // A last line without its newline was torn by a crash.
            if too_long || !line.is_empty() {
                take_line(&line, too_long, into);
            }
            return Ok(());
        }
        let (piece, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let ends = done > piece.len();
        if !too_long {
            if line.len() + piece.len() > LINE_MAX {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(piece);
            }
        }
        r.consume(done);
        if ends {
            take_line(&line, too_long, into);
            line.clear();
            too_long = false;
        }
    }
}

fn take_line(line: &[u8], too_long: bool, into: &mut Loaded) {
    if !too_long && line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let ev = (!too_long)
        .then(|| serde_json::from_slice::<EventView>(line).ok())
        .flatten()
        .filter(|e| e.seq > into.last && e.seq <= SEQ_MAX);
    match ev {
        Some(ev) => {
            into.last = ev.seq;
            into.ring.push_back(ev);
            if into.ring.len() > RING {
                into.ring.pop_front();
            }
        }
        None => into.skipped += 1,
    }
}

/// One item of a follower's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    Event(EventView),
    /// This many events passed the follower's filter while its queue was
    /// full; they come before the events that follow this notice.
    Lagged(u64),
}

/// The daemon's end of a follower's bounded queue.
pub struct FollowTx {
    tx: SyncSender<Followed>,
    /// Dead once the reader's end is dropped.
    reader: Weak<()>,
}

/// The connection's end of a follower's bounded queue.
pub struct FollowRx {
    rx: Receiver<Followed>,
    _alive: Arc<()>,
}

impl FollowRx {
    pub fn recv_timeout(&self, wait: Duration) -> Result<Followed, RecvTimeoutError> {
        self.rx.recv_timeout(wait)
    }

    #[cfg(test)]
    pub fn try_recv(&self) -> Option<Followed> {
        self.rx.try_recv().ok()
    }
}

/// A queue of at most [`FOLLOW_QUEUE`] items: a reader that falls behind
/// costs bounded memory and never blocks the daemon.
pub fn follow_channel() -> (FollowTx, FollowRx) {
    let (tx, rx) = mpsc::sync_channel(FOLLOW_QUEUE);
    let alive = Arc::new(());
    (
        FollowTx {
            tx,
            reader: Arc::downgrade(&alive),
        },
        FollowRx { rx, _alive: alive },
    )
}

struct Follower {
    filter: EventFilter,
    tx: FollowTx,
    /// Events lost since the reader last had room.
    dropped: u64,
}

impl Follower {
    /// Queues the event if it passes the filter and there is room; false
    /// once the reader is gone.
    fn offer(&mut self, ev: &EventView) -> bool {
        if self.tx.reader.strong_count() == 0 {
            return false;
        }
        if !matches(&self.filter, ev) {
            return true;
        }
        if self.dropped > 0 {
            match self.tx.tx.try_send(Followed::Lagged(self.dropped)) {
                Ok(()) => self.dropped = 0,
                Err(TrySendError::Full(_)) => {
                    self.dropped += 1;
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        match self.tx.tx.try_send(Followed::Event(ev.clone())) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Does the event pass the filter? A key filter matches the event's key by
/// suffix, or any event under it (`squad` matches `demo/squad/worker-0`).
pub fn matches(filter: &EventFilter, ev: &EventView) -> bool {
    if !filter.kinds.is_empty() && !filter.kinds.contains(&ev.kind) {
        return false;
    }
    filter
        .key
        .as_deref()
        .is_none_or(|q| crate::domain::key::under(&ev.key, q))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::event::EventKind;
    use proptest::prelude::*;
    use std::fs::OpenOptions;

    /// The parts put together as the main loop and the supervisor do.
    pub(crate) struct EventLog {
        pub ring: EventRing,
        pub file: EventFile,
        pub followers: Followers,
        skipped: u64,
    }

    impl EventLog {
        pub fn open(path: PathBuf) -> EventLog {
            let (file, loaded) = EventFile::open(path);
            let skipped = loaded.skipped;
            let mut log = EventLog {
                ring: EventRing::new(loaded),
                file,
                followers: Followers::default(),
                skipped,
            };
            if skipped > 0 {
                let msg = format!(
                    "skipped {skipped} unreadable or out-of-order lines of {}",
                    log.file.name()
                );
                log.push(Event::new(Utc::now(), EventKind::Warning, "", msg));
            }
            log
        }

        pub fn push(&mut self, ev: Event) {
            let view = self.ring.push(ev);
            self.file.append(&view);
            self.followers.offer(&view);
        }

        pub fn query(&self, filter: &EventFilter) -> Vec<EventView> {
            self.ring.query(filter)
        }

        pub fn follow(&mut self, filter: EventFilter, tx: FollowTx) {
            self.followers.add(filter, tx);
        }

        pub fn write_failure(&self) -> Option<&WriteFailure> {
            self.file.write_failure()
        }

        pub fn skipped_lines(&self) -> u64 {
            self.skipped
        }
    }

    fn ev(kind: EventKind, key: &str) -> Event {
        Event::new("2026-01-01T00:00:00Z".parse().unwrap(), kind, key, "m")
    }

    fn line(seq: u64) -> String {
        format!(
            r#"{{"seq":{seq},"at":"2026-01-01T00:00:00Z","kind":"created","key":"a/b/c-0","message":"m"}}"#
        )
    }

    fn seqs(log: &EventLog) -> Vec<u64> {
        log.query(&EventFilter::default())
            .iter()
            .map(|e| e.seq)
            .collect()
    }

    fn file_seqs(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<EventView>(l).unwrap().seq)
            .collect()
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
                kinds: kinds.iter().map(|s| s.parse().unwrap()).collect(),
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
        assert_eq!(seqs(&log), vec![1, 2]);
        assert!(log.write_failure().is_none());
    }

    #[test]
    fn a_bad_line_hides_nothing_after_it_and_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut text = Vec::new();
        text.extend(line(1).as_bytes());
        text.extend(b"\n{\"seq\": \xff\xfe not json\n");
        text.extend(line(2).as_bytes());
        text.extend(b"\n\n");
        text.extend(line(3).as_bytes());
        text.push(b'\n');
        std::fs::write(&path, text).unwrap();
        let mut log = EventLog::open(path.clone());
        assert_eq!(log.skipped_lines(), 1);
        log.push(ev(EventKind::Started, "a/b/c-0"));
        let all = log.query(&EventFilter::default());
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(all[3].kind.as_str(), "warning");
        assert_eq!(
            all[3].message,
            "skipped 1 unreadable or out-of-order lines of events.jsonl"
        );
        // The warning is written once: the next start finds nothing new
        // to complain about beyond the line still in the file.
        drop(log);
        let log = EventLog::open(path);
        let warnings = log
            .query(&EventFilter::default())
            .into_iter()
            .filter(|e| e.kind.as_str() == "warning")
            .count();
        assert_eq!(warnings, 2, "one per start that found the bad line");
    }

    #[test]
    fn out_of_order_and_absurd_numbers_are_skipped() {
        let mut loaded = Loaded::default();
        let text = [line(5), line(3), line(0), line(SEQ_MAX + 1), line(6)].join("\n");
        read_events(text.as_bytes(), &mut loaded).unwrap();
        let got: Vec<u64> = loaded.ring.iter().map(|e| e.seq).collect();
        assert_eq!(got, [5, 6]);
        assert_eq!(loaded.skipped, 3);
        assert_eq!(loaded.last, 6);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_next_event_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, format!("{}\n{{\"seq\":2,\"at\"", line(1))).unwrap();
        let mut log = EventLog::open(path.clone());
        log.push(ev(EventKind::Started, "a/b/c-0"));
        drop(log);
        let log = EventLog::open(path);
        assert_eq!(log.skipped_lines(), 1);
        assert_eq!(seqs(&log)[..3], [1, 2, 3]);
    }

    #[test]
    fn a_giant_line_is_skipped_without_reading_it_into_memory() {
        let mut loaded = Loaded::default();
        let mut text = vec![b'x'; LINE_MAX * 3];
        text.push(b'\n');
        text.extend(line(7).as_bytes());
        read_events(&text[..], &mut loaded).unwrap();
        assert_eq!(loaded.skipped, 1);
        assert_eq!(loaded.ring.len(), 1);
    }

    #[test]
    fn numbers_are_not_reused_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut log = EventLog::open(path.clone());
        log.file.file_max = 1_000;
        for _ in 0..30 {
            log.push(ev(EventKind::Created, "a/b/c-0"));
        }
        drop(log);
        // Each file holds whole events only, and stays near its bound.
        let old = file_seqs(&rotated(&path));
        let new = file_seqs(&path);
        assert!(!old.is_empty() && !new.is_empty());
        assert_eq!(*new.first().unwrap(), old.last().unwrap() + 1);
        assert!(std::fs::metadata(&path).unwrap().len() <= 1_000);
        // Start from a rotation that left the current file empty.
        std::fs::rename(&path, rotated(&path)).unwrap();
        let mut log = EventLog::open(path.clone());
        log.push(ev(EventKind::Started, "a/b/c-0"));
        assert_eq!(*seqs(&log).last().unwrap(), 31);
    }

    /// The mark reserves a block of numbers: written once for it, not once
    /// an event. A log closed in order gives the rest back; one that was
    /// not (a crash) leaves it, and the next numbers skip it.
    #[test]
    fn numbers_are_reserved_a_block_at_a_time_and_a_crash_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mark = || std::fs::read_to_string(seq_file(&path)).unwrap();
        let mut log = EventLog::open(path.clone());
        for _ in 0..5 {
            log.push(ev(EventKind::Created, "a/b/c-0"));
        }
        assert_eq!(mark().trim().parse::<u64>().unwrap(), SEQ_BLOCK);
        // Written again only past the block.
        std::fs::write(seq_file(&path), "garbage").unwrap();
        log.push(ev(EventKind::Created, "a/b/c-0"));
        assert_eq!(mark(), "garbage");
        std::fs::write(seq_file(&path), format!("{SEQ_BLOCK:020}\n")).unwrap();
        drop(log);
        assert_eq!(mark().trim().parse::<u64>().unwrap(), 6, "given back");
        // A daemon killed: no drop, the block stays reserved.
        let mut log = EventLog::open(path.clone());
        log.push(ev(EventKind::Started, "a/b/c-0"));
        assert_eq!(*seqs(&log).last().unwrap(), 7);
        std::mem::forget(log);
        std::fs::write(&path, "").unwrap();
        let mut log = EventLog::open(path.clone());
        log.push(ev(EventKind::Started, "a/b/c-0"));
        assert_eq!(*seqs(&log).last().unwrap(), 7 + SEQ_BLOCK);
    }

    #[test]
    fn numbers_are_not_reused_when_the_log_is_truncated_or_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut log = EventLog::open(path.clone());
        for _ in 0..5 {
            log.push(ev(EventKind::Created, "a/b/c-0"));
        }
        drop(log);
        std::fs::write(&path, "").unwrap();
        let mut log = EventLog::open(path.clone());
        log.push(ev(EventKind::Started, "a/b/c-0"));
        let after_truncation = *seqs(&log).last().unwrap();
        assert!(after_truncation > 5, "{after_truncation}");
        drop(log);
        std::fs::remove_file(&path).unwrap();
        let mut log = EventLog::open(path.clone());
        log.push(ev(EventKind::Started, "a/b/c-0"));
        assert_eq!(*seqs(&log).last().unwrap(), after_truncation + 1);
    }

    #[test]
    fn a_failed_write_is_reported_keeps_the_event_and_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut log = EventLog::open(path.clone());
        log.push(ev(EventKind::Created, "a/b/c-0"));
        // A full disk: every write fails with ENOSPC.
        log.file.file = Some(OpenOptions::new().append(true).open("/dev/full").unwrap());
        log.push(ev(EventKind::Started, "a/b/c-0"));
        log.push(ev(EventKind::Crashed, "a/b/c-0"));
        let failure = log
            .write_failure()
            .expect("the failure is reported")
            .clone();
        assert!(failure.error.contains("No space left"), "{failure:?}");
        assert_eq!(seqs(&log), [1, 2, 3], "the events stay in memory");
        log.push(ev(EventKind::Backoff, "a/b/c-0"));
        assert_eq!(
            log.write_failure(),
            Some(&failure),
            "since the first failure"
        );
        // The disk has room again: at the next attempt everything missed
        // is written, in order.
        assert!(log.file.retry_at.is_some(), "attempts are paced");
        log.file.file = None;
        log.file.retry_at = Some(Instant::now());
        log.push(ev(EventKind::Started, "a/b/c-0"));
        assert_eq!(log.write_failure(), None);
        assert_eq!(file_seqs(&path), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_follower_that_never_reads_costs_bounded_memory_and_is_told_what_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path().join("e.jsonl"));
        log.file.file = Some(OpenOptions::new().append(true).open("/dev/null").unwrap());
        let (tx, rx) = follow_channel();
        log.follow(EventFilter::default(), tx);
        for _ in 0..100_000 {
            log.push(ev(EventKind::Created, "a/b/c-0"));
        }
        let mut queued = Vec::new();
        while let Some(item) = rx.try_recv() {
            queued.push(item);
        }
        assert_eq!(
            queued.len(),
            FOLLOW_QUEUE,
            "the queue never grew past its bound"
        );
        assert!(matches!(&queued[0], Followed::Event(e) if e.seq == 1));
        log.push(ev(EventKind::Started, "a/b/c-0"));
        assert_eq!(rx.try_recv(), Some(Followed::Lagged(99_000)));
        assert!(matches!(rx.try_recv(), Some(Followed::Event(e)) if e.seq == 100_001));
        assert_eq!(rx.try_recv(), None);
        assert_eq!(log.ring.ring.len(), RING);
    }

    #[test]
    fn followers_that_left_are_forgotten_even_if_no_event_matches_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path().join("e.jsonl"));
        let only = EventFilter {
            key: Some("nothing".into()),
            ..Default::default()
        };
        for _ in 0..100 {
            let (tx, rx) = follow_channel();
            log.follow(only.clone(), tx);
            drop(rx);
        }
        assert_eq!(log.followers.len(), 1);
        log.push(ev(EventKind::Created, "a/b/c-0"));
        assert_eq!(log.followers.len(), 0);
    }

    /// A line that is an event, or something close to one, or junk.
    fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (0..40u64).prop_map(|s| line(s).into_bytes()),
            (0..40u64, any::<usize>(), any::<u8>()).prop_map(|(s, at, b)| {
                let mut l = line(s).into_bytes();
                let at = at % l.len();
                l[at] = b;
                l
            }),
            prop::collection::vec(any::<u8>(), 0..64),
        ]
    }

    fn check_loaded(loaded: &Loaded, lines: usize) -> Result<(), TestCaseError> {
        prop_assert!(loaded.ring.len() <= RING);
        prop_assert!(loaded.ring.len() as u64 + loaded.skipped <= lines as u64 + 1);
        let seqs: Vec<u64> = loaded.ring.iter().map(|e| e.seq).collect();
        prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{:?}", seqs);
        prop_assert_eq!(loaded.last, seqs.last().copied().unwrap_or(0));
        Ok(())
    }

    proptest! {
        #![proptest_config(crate::daemon::server::fuzz_config())]

        /// Fuzz: arbitrary bytes in, bounded monotonic events out, no panic.
        #[test]
        fn any_bytes_read_as_a_log_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut loaded = Loaded::default();
            read_events(&bytes[..], &mut loaded).unwrap();
            let lines = bytes.iter().filter(|&&b| b == b'\n').count();
            check_loaded(&loaded, lines)?;
        }

        #[test]
        fn any_mix_of_lines_reads_as_monotonic_events(lines in prop::collection::vec(line_strategy(), 0..8)) {
            let text = lines.join(&b'\n');
            let mut loaded = Loaded::default();
            read_events(&text[..], &mut loaded).unwrap();
            check_loaded(&loaded, text.iter().filter(|&&b| b == b'\n').count())?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the two files hold, the log opens, and the next event
        /// is numbered past everything in them.
        #[test]
        fn any_files_open_and_numbering_continues_past_them(
            old in prop::collection::vec(line_strategy(), 0..8),
            new in prop::collection::vec(line_strategy(), 0..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("events.jsonl");
            std::fs::write(rotated(&path), old.join(&b'\n')).unwrap();
            std::fs::write(&path, new.join(&b'\n')).unwrap();
            let highest = old.iter().chain(&new)
                .filter_map(|l| serde_json::from_slice::<EventView>(l).ok())
                .map(|e| e.seq)
                .max()
                .unwrap_or(0);
            let mut log = EventLog::open(path);
            log.push(ev(EventKind::Created, "a/b/c-0"));
            let all = seqs(&log);
            prop_assert!(all.windows(2).all(|w| w[0] < w[1]), "{:?}", all);
            prop_assert!(*all.last().unwrap() > highest);
        }
    }
}
