//! Validated desired state: what a team manifest means once it has passed
//! every check. Each field's rule is a type whose every constructor (and
//! whose deserialisation) checks it, and the rules across fields are checked
//! whenever a role or team is built or decoded: a spec from the wire or a
//! state file passes the same checks as one read from a manifest.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::key::{RoleKey, SessionKey, TeamKey};

/// Longest workspace, team or role name accepted.
pub const MAX_NAME_LEN: usize = 40;
/// Largest `replicas` value accepted.
pub const MAX_REPLICAS: u32 = 1000;
/// The workspace used when a manifest names none.
pub const DEFAULT_WORKSPACE: &str = "default";
/// Longest duration accepted anywhere: 10 years (`"10y"`; humantime counts
/// a year as 365.25 days). Far beyond any sensible delay or window, and far
/// inside what time arithmetic can hold.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);
/// The most bytes a role's command, env and cwd may take in the command
/// that creates its pane. tmux refuses a command of more than 16 KiB; the
/// rest is kept for what marvel adds (its shim, its paths, `MARVEL_*`).
pub const MAX_COMMAND_LINE_BYTES: usize = 12 * 1024;

/// Budget of restarts within `window` when a manifest does not say.
pub const DEFAULT_MAX_RESTARTS: u32 = 5;
pub const DEFAULT_WINDOW: NonZeroSpan = NonZeroSpan::from_secs(600);
pub const DEFAULT_RESET_AFTER: NonZeroSpan = NonZeroSpan::from_secs(600);
pub const DEFAULT_HEARTBEAT_FAILURES: Failures = Failures(3);
/// How long a replacement must run before it counts as ready, by default.
pub const DEFAULT_READY_AFTER: Span = Span::from_secs(1);
/// How long a session may stay silent and still count as busy, by default.
pub const DEFAULT_IDLE_AFTER: NonZeroSpan = NonZeroSpan::from_secs(30);
/// How long a notification command may run, and the window in which
/// notifications of one kind about one key are coalesced, by default.
pub const DEFAULT_NOTIFY_TIMEOUT: NonZeroSpan = NonZeroSpan::from_secs(10);
pub const DEFAULT_NOTIFY_COALESCE: Span = Span::from_secs(60);

/// A workspace, team or role name: `[a-z0-9][a-z0-9_-]*`, at most
/// [`MAX_NAME_LEN`] characters, so it is safe in keys and tmux targets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    /// Checks `s` against the naming rule; the error says what is allowed.
    pub fn new(s: &str) -> Result<Name, String> {
        if s.is_empty() {
            return Err("must not be empty; use lower-case letters, digits, '-' and '_', starting with a letter or digit".into());
        }
        if s.len() > MAX_NAME_LEN {
            return Err(format!(
                "{:?} is {} characters long; at most {MAX_NAME_LEN} are allowed",
                s,
                s.len()
            ));
        }
        let mut chars = s.chars();
        let first = chars.next().unwrap_or('-');
        let ok_first = first.is_ascii_lowercase() || first.is_ascii_digit();
        let ok_rest =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok_first || !ok_rest {
            return Err(format!(
                "{s:?} is not allowed; use lower-case letters, digits, '-' and '_', starting with a letter or digit ([a-z0-9][a-z0-9_-]*)"
            ));
        }
        Ok(Name(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Name::new(&s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many sessions a role keeps: 0 to [`MAX_REPLICAS`]. Zero comes from
/// `marvel scale`; a manifest declares at least one ([`Replicas::declared`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Replicas(u32);

impl Replicas {
    pub const ONE: Replicas = Replicas(1);

    pub fn new(n: u32) -> Result<Replicas, String> {
        Replicas::within(0, i64::from(n))
    }

    /// What a manifest may declare: 1 to [`MAX_REPLICAS`].
    pub fn declared(n: i64) -> Result<Replicas, String> {
        Replicas::within(1, n)
    }

    // Signed, so that `-1` gets the same range message as `5000`.
    fn within(min: u32, n: i64) -> Result<Replicas, String> {
        match u32::try_from(n) {
            Ok(v) if (min..=MAX_REPLICAS).contains(&v) => Ok(Replicas(v)),
            _ => Err(format!("must be between {min} and {MAX_REPLICAS}, got {n}")),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Replicas {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        Replicas::within(0, n)
    }
}

impl From<Replicas> for u32 {
    fn from(r: Replicas) -> u32 {
        r.0
    }
}

impl fmt::Display for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One word of a command: exec cannot pass a NUL character.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct Arg(String);

impl TryFrom<String> for Arg {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.contains('\0') {
            return Err("contains a NUL character, which no program can receive".into());
        }
        Ok(Arg(s))
    }
}

/// A program and its arguments: at least the program, no NUL anywhere.
/// How long it may be together with env and cwd is a rule of [`RoleSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Arg>", into = "Vec<String>")]
pub struct Command(Vec<String>);

impl Command {
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Result<Command, String> {
        let args = argv
            .into_iter()
            .map(|a| Arg::try_from(a.into()))
            .collect::<Result<Vec<Arg>, String>>()?;
        Command::try_from(args)
    }
}

impl TryFrom<Vec<Arg>> for Command {
    type Error = String;
    fn try_from(args: Vec<Arg>) -> Result<Self, String> {
        if args.is_empty() {
            return Err(
                r#"must not be empty; give the program and its arguments, e.g. ["sh", "-c", "..."]"#
                    .into(),
            );
        }
        Ok(Command(args.into_iter().map(|a| a.0).collect()))
    }
}

impl From<Command> for Vec<String> {
    fn from(c: Command) -> Vec<String> {
        c.0
    }
}

impl Deref for Command {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

/// Variables added to a program's environment: names non-empty, without
/// `=`; no NUL in names or values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// Adds or replaces one variable, if it is a valid one.
    pub fn insert(&mut self, name: String, value: String) -> Result<Option<String>, String> {
        Env::check(&name, &value)?;
        Ok(self.0.insert(name, value))
    }

    fn check(name: &str, value: &str) -> Result<(), String> {
        let bad_name = if name.is_empty() {
            Some("it is empty")
        } else if name.contains('=') {
            Some("it contains '='")
        } else if name.contains('\0') {
            Some("it contains a NUL character")
        } else {
            None
        };
        if let Some(why) = bad_name {
            return Err(format!(
                "{name:?} cannot be an environment variable name: {why}"
            ));
        }
        if value.contains('\0') {
            return Err(format!(
                "the value of {name:?} contains a NUL character, which no program can receive"
            ));
        }
        Ok(())
    }
}

impl TryFrom<BTreeMap<String, String>> for Env {
    type Error = String;
    fn try_from(vars: BTreeMap<String, String>) -> Result<Self, String> {
        for (k, v) in &vars {
            Env::check(k, v)?;
        }
        Ok(Env(vars))
    }
}

impl From<Env> for BTreeMap<String, String> {
    fn from(e: Env) -> BTreeMap<String, String> {
        e.0
    }
}

impl Deref for Env {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// The directory a role's program starts in: not empty, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PathBuf", into = "PathBuf")]
pub struct Cwd(PathBuf);

impl Cwd {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Cwd, String> {
        let dir = dir.into();
        if dir.as_os_str().is_empty() {
            return Err("must not be empty; leave it out to use the default".into());
        }
        if dir.as_os_str().as_encoded_bytes().contains(&0) {
            return Err("contains a NUL character, which no directory name can".into());
        }
        Ok(Cwd(dir))
    }
}

impl TryFrom<PathBuf> for Cwd {
    type Error = String;
    fn try_from(dir: PathBuf) -> Result<Self, String> {
        Cwd::new(dir)
    }
}

impl From<Cwd> for PathBuf {
    fn from(c: Cwd) -> PathBuf {
        c.0
    }
}

impl Deref for Cwd {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

/// Why a duration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanError {
    /// Zero where only a positive duration makes sense.
    Zero,
    /// Longer than [`MAX_DURATION`].
    TooLong(Duration),
}

impl SpanError {
    /// The refusal, with the duration shown as `shown` (as it was written).
    pub fn explain(&self, shown: &str) -> String {
        match self {
            SpanError::Zero => format!("must be longer than zero, got {shown}"),
            SpanError::TooLong(_) => {
                format!("{shown} is too long; durations are at most 10 years (\"10y\")")
            }
        }
    }
}

impl fmt::Display for SpanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self {
            SpanError::Zero => Duration::ZERO,
            SpanError::TooLong(d) => *d,
        };
        let shown = format!("{:?}", humantime::format_duration(d).to_string());
        f.write_str(&self.explain(&shown))
    }
}

fn span(d: Duration, positive: bool) -> Result<Duration, SpanError> {
    if positive && d.is_zero() {
        Err(SpanError::Zero)
    } else if d > MAX_DURATION {
        Err(SpanError::TooLong(d))
    } else {
        Ok(d)
    }
}

/// `ms` as a duration that a [`Span`] may hold; panics otherwise, which for
/// the constants it builds happens at compile time.
const fn const_span(ms: u64, positive: bool) -> Duration {
    assert!(
        ms <= MAX_DURATION.as_millis() as u64,
        "longer than MAX_DURATION"
    );
    assert!(
        !positive || ms > 0,
        "zero where a positive duration is needed"
    );
    Duration::from_millis(ms)
}

/// A duration from zero to [`MAX_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Duration", into = "Duration")]
pub struct Span(Duration);

impl Span {
    pub const ZERO: Span = Span(Duration::ZERO);

    pub fn new(d: Duration) -> Result<Span, SpanError> {
        span(d, false).map(Span)
    }

    /// For constants and tests: panics beyond [`MAX_DURATION`].
    pub const fn from_millis(ms: u64) -> Span {
        Span(const_span(ms, false))
    }

    /// For constants and tests: panics beyond [`MAX_DURATION`].
    pub const fn from_secs(secs: u64) -> Span {
        Span::from_millis(secs * 1000)
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<Duration> for Span {
    type Error = SpanError;
    fn try_from(d: Duration) -> Result<Self, SpanError> {
        Span::new(d)
    }
}

impl From<Span> for Duration {
    fn from(s: Span) -> Duration {
        s.0
    }
}

/// A duration longer than zero and at most [`MAX_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Duration", into = "Duration")]
pub struct NonZeroSpan(Duration);

impl NonZeroSpan {
    pub fn new(d: Duration) -> Result<NonZeroSpan, SpanError> {
        span(d, true).map(NonZeroSpan)
    }

    /// For constants and tests: panics on zero or beyond [`MAX_DURATION`].
    pub const fn from_millis(ms: u64) -> NonZeroSpan {
        NonZeroSpan(const_span(ms, true))
    }

    /// For constants and tests: panics on zero or beyond [`MAX_DURATION`].
    pub const fn from_secs(secs: u64) -> NonZeroSpan {
        NonZeroSpan::from_millis(secs * 1000)
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<Duration> for NonZeroSpan {
    type Error = SpanError;
    fn try_from(d: Duration) -> Result<Self, SpanError> {
        NonZeroSpan::new(d)
    }
}

impl From<NonZeroSpan> for Duration {
    fn from(s: NonZeroSpan) -> Duration {
        s.0
    }
}

/// What happens when a session's program ends on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RestartPolicy {
    /// Replace it whatever the exit status.
    #[default]
    Always,
    /// Replace it unless it exited with status 0 (then it has succeeded).
    OnFailure,
    /// Never replace it.
    Never,
}

/// How much longer each restart of the backoff curve waits: finite, ≥ 1.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Factor(f64);

impl Factor {
    pub fn new(x: f64) -> Result<Factor, String> {
        if x.is_finite() && x >= 1.0 {
            Ok(Factor(x))
        } else {
            Err(format!("must be a finite number of at least 1, got {x}"))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Factor {
    type Error = String;
    fn try_from(x: f64) -> Result<Self, String> {
        Factor::new(x)
    }
}

impl From<Factor> for f64 {
    fn from(f: Factor) -> f64 {
        f.0
    }
}

/// The fraction by which a backoff delay is spread either way: 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Jitter(f64);

impl Jitter {
    pub fn new(x: f64) -> Result<Jitter, String> {
        if (0.0..=1.0).contains(&x) {
            Ok(Jitter(x))
        } else {
            Err(format!("must be between 0 and 1, got {x}"))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Jitter {
    type Error = String;
    fn try_from(x: f64) -> Result<Self, String> {
        Jitter::new(x)
    }
}

impl From<Jitter> for f64 {
    fn from(j: Jitter) -> f64 {
        j.0
    }
}

/// The crash-loop backoff curve: the n-th restart waits
/// `min(max, initial × factor^(n−1))`, spread by ± `jitter`. Built only
/// through [`Backoff::new`] (or decoding), which keeps `initial ≤ max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BackoffParts")]
pub struct Backoff {
    initial: NonZeroSpan,
    max: Span,
    factor: Factor,
    jitter: Jitter,
}

/// A backoff curve whose `initial` is longer than its `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialAboveMax {
    pub initial: Duration,
    pub max: Duration,
}

impl fmt::Display for InitialAboveMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "initial ({}) is longer than max ({}); initial must not exceed max",
            humantime::format_duration(self.initial),
            humantime::format_duration(self.max)
        )
    }
}

impl Backoff {
    pub fn new(
        initial: NonZeroSpan,
        max: Span,
        factor: Factor,
        jitter: Jitter,
    ) -> Result<Backoff, InitialAboveMax> {
        if initial.get() > max.get() {
            return Err(InitialAboveMax {
                initial: initial.get(),
                max: max.get(),
            });
        }
        Ok(Backoff {
            initial,
            max,
            factor,
            jitter,
        })
    }

    pub fn initial(&self) -> Duration {
        self.initial.get()
    }

    pub fn max(&self) -> Duration {
        self.max.get()
    }

    pub fn factor(&self) -> f64 {
        self.factor.get()
    }

    pub fn jitter(&self) -> f64 {
        self.jitter.get()
    }
}

// The default curve, part by part: 1 s doubling up to 60 s, ± 10 %.
pub const DEFAULT_BACKOFF_INITIAL: NonZeroSpan = NonZeroSpan::from_secs(1);
pub const DEFAULT_BACKOFF_MAX: Span = Span::from_secs(60);
pub const DEFAULT_BACKOFF_FACTOR: Factor = Factor(2.0);
pub const DEFAULT_BACKOFF_JITTER: Jitter = Jitter(0.1);

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: DEFAULT_BACKOFF_INITIAL,
            max: DEFAULT_BACKOFF_MAX,
            factor: DEFAULT_BACKOFF_FACTOR,
            jitter: DEFAULT_BACKOFF_JITTER,
        }
    }
}

/// [`Backoff`] as written on the wire and in state files.
#[derive(Deserialize)]
struct BackoffParts {
    initial: NonZeroSpan,
    max: Span,
    factor: Factor,
    jitter: Jitter,
}

impl TryFrom<BackoffParts> for Backoff {
    type Error = InitialAboveMax;
    fn try_from(p: BackoffParts) -> Result<Self, InitialAboveMax> {
        Backoff::new(p.initial, p.max, p.factor, p.jitter)
    }
}

/// How many missed heartbeat timeouts in a row make a session unhealthy:
/// at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Failures(u32);

impl Failures {
    pub fn new(n: u32) -> Result<Failures, String> {
        if n == 0 {
            return Err("must be at least 1, got 0".into());
        }
        Ok(Failures(n))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Failures {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, String> {
        Failures::new(n)
    }
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Failures> for u32 {
    fn from(f: Failures) -> u32 {
        f.0
    }
}

/// Liveness check beyond "the process exists".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// The program must run `marvel heartbeat` at least every `timeout`;
    /// `failures` missed timeouts in a row make the session unhealthy.
    Heartbeat {
        timeout: NonZeroSpan,
        failures: Failures,
    },
}

/// Longest `waiting` pattern accepted, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// A role's `waiting` pattern: a regular expression (the `regex` crate's
/// syntax), checked whenever it is built or decoded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern(regex::Regex);

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern, String> {
        if text.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "the pattern is {} bytes long; at most {MAX_PATTERN_BYTES} are allowed",
                text.len()
            ));
        }
        if text.is_empty() {
            return Err("must not be empty: an empty pattern matches every screen".into());
        }
        regex::RegexBuilder::new(text)
            .size_limit(1 << 20)
            .build()
            .map(Pattern)
            .map_err(|e| {
                // The parser's own words, on one line: what is wrong, not
                // its drawing of where.
                let why = match &e {
                    regex::Error::Syntax(s) => s
                        .lines()
                        .rev()
                        .find(|l| l.starts_with("error: "))
                        .map_or_else(|| s.clone(), |l| l["error: ".len()..].to_string()),
                    other => other.to_string(),
                };
                format!("{text:?} is not a regular expression: {why}")
            })
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.as_str() == other.as_str()
    }
}

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Pattern::new(&s)
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.as_str().to_string()
    }
}

/// The events a team's `notify` command can be run for: those about a
/// session, role or team (`on: [Waiting, Frozen, Crashed]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Trigger {
    Started,
    Crashed,
    Backoff,
    Frozen,
    Reset,
    Forgiven,
    Succeeded,
    Stopped,
    Killed,
    Healthy,
    Unhealthy,
    Busy,
    Idle,
    Waiting,
    ShiftStarted,
    ShiftCompleted,
    ShiftFailed,
    ShiftAborted,
}

impl Trigger {
    /// The event kind it names.
    pub fn kind(self) -> crate::domain::event::EventKind {
        use crate::domain::event::EventKind as K;
        match self {
            Trigger::Started => K::Started,
            Trigger::Crashed => K::Crashed,
            Trigger::Backoff => K::Backoff,
            Trigger::Frozen => K::Frozen,
            Trigger::Reset => K::Reset,
            Trigger::Forgiven => K::Forgiven,
            Trigger::Succeeded => K::Succeeded,
            Trigger::Stopped => K::Stopped,
            Trigger::Killed => K::Killed,
            Trigger::Healthy => K::Healthy,
            Trigger::Unhealthy => K::Unhealthy,
            Trigger::Busy => K::Busy,
            Trigger::Idle => K::Idle,
            Trigger::Waiting => K::Waiting,
            Trigger::ShiftStarted => K::ShiftStarted,
            Trigger::ShiftCompleted => K::ShiftCompleted,
            Trigger::ShiftFailed => K::ShiftFailed,
            Trigger::ShiftAborted => K::ShiftAborted,
        }
    }
}

/// The events of one `Notify`: at least one, each once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Trigger>", into = "Vec<Trigger>")]
pub struct Triggers(Vec<Trigger>);

impl TryFrom<Vec<Trigger>> for Triggers {
    type Error = String;
    fn try_from(mut on: Vec<Trigger>) -> Result<Self, String> {
        if on.is_empty() {
            return Err(
                "must name at least one event, e.g. [Waiting, Frozen, Unhealthy, Crashed]".into(),
            );
        }
        on.sort();
        on.dedup();
        Ok(Triggers(on))
    }
}

impl From<Triggers> for Vec<Trigger> {
    fn from(t: Triggers) -> Vec<Trigger> {
        t.0
    }
}

impl Deref for Triggers {
    type Target = [Trigger];
    fn deref(&self) -> &[Trigger] {
        &self.0
    }
}

/// A command the daemon runs for each event of a kind in `on` about the
/// team: the event is in its environment, never on its command line.
/// Events of one kind about one key within `coalesce` of the first are
/// summed up in one more run at the end of that window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub on: Triggers,
    pub command: Command,
    pub timeout: NonZeroSpan,
    pub coalesce: Span,
}

impl Notify {
    /// Whether events of `kind` run this command.
    pub fn wants(&self, kind: crate::domain::event::EventKind) -> bool {
        self.on.iter().any(|t| t.kind() == kind)
    }
}

/// A private field of [`RoleSpec`] and [`TeamSpec`]: it keeps struct
/// literals out of other modules, so that every spec is built through the
/// checks of its `TryFrom` parts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Checked;

/// One role: a kind of program and how many replicas of it to keep. Built
/// only from [`RoleParts`] (or by decoding them), which checks the one rule
/// across fields: command, env and cwd must fit in what tmux accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RoleParts")]
pub struct RoleSpec {
    pub name: Name,
    pub replicas: Replicas,
    pub command: Command,
    pub env: Env,
    pub cwd: Option<Cwd>,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    /// Crashes allowed within `window`; `None` means unlimited.
    pub max_restarts: Option<u32>,
    pub window: NonZeroSpan,
    pub reset_after: NonZeroSpan,
    pub health: Option<Health>,
    /// A new session that replaces another counts as ready once it has run
    /// this long (and, with a heartbeat check, has reported): a program
    /// that dies on start-up must not take its predecessor with it.
    pub ready_after: Span,
    /// A rolling shift of the team replaces this role after the others
    /// (for example a supervisor that watches them).
    pub shift_last: bool,
    /// How the role's sessions sit in the team's tmux session.
    #[serde(default, skip_serializing_if = "Layout::is_default")]
    pub layout: Layout,
    /// A git worktree per slot, where the slot's program runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<Worktree>,
    /// What a restarted slot runs instead of `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Command>,
    // Activity: silent this long makes a session idle; a screen that then
    // matches `waiting` makes it waiting.
    #[serde(
        default = "default_idle_after",
        skip_serializing_if = "is_default_idle_after"
    )]
    pub idle_after: NonZeroSpan,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Pattern>,
    #[serde(skip)]
    checked: Checked,
}

/// How a role's sessions are laid out in its team's tmux session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Layout {
    /// One window per session, named after it (`worker-0`).
    #[default]
    Windows,
    /// The role's sessions side by side as panes of one window, named after
    /// the role.
    Tiled,
}

impl Layout {
    fn is_default(&self) -> bool {
        *self == Layout::Windows
    }
}

/// A git repository a role's slots get worktrees of: not empty, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PathBuf", into = "PathBuf")]
pub struct Repo(PathBuf);

impl Repo {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Repo, String> {
        let dir = dir.into();
        if dir.as_os_str().is_empty() {
            return Err("must not be empty; give the directory of a git repository".into());
        }
        if dir.as_os_str().as_encoded_bytes().contains(&0) {
            return Err("contains a NUL character, which no directory name can".into());
        }
        Ok(Repo(dir))
    }
}

impl TryFrom<PathBuf> for Repo {
    type Error = String;
    fn try_from(dir: PathBuf) -> Result<Self, String> {
        Repo::new(dir)
    }
}

impl From<Repo> for PathBuf {
    fn from(r: Repo) -> PathBuf {
        r.0
    }
}

impl Deref for Repo {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

/// The placeholders a branch name may hold, each replaced by the slot's
/// part of its key.
pub const BRANCH_PLACEHOLDERS: [&str; 4] = ["{workspace}", "{team}", "{role}", "{slot}"];
/// The branch a slot's worktree is on when the manifest names none.
pub const DEFAULT_BRANCH: &str = "agents/{team}/{role}-{slot}";

/// Why a branch name was refused: what is wrong, and what would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchError {
    pub message: String,
    pub help: String,
}

impl fmt::Display for BranchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The name of each slot's branch, with placeholders: `{slot}` at least,
/// so that two slots never share a branch (git checks a branch out in one
/// worktree only), and a valid git branch name once filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BranchTemplate(String);

impl BranchTemplate {
    pub fn new(text: &str) -> Result<BranchTemplate, BranchError> {
        let refuse = |message: String, help: &str| BranchError {
            message,
            help: help.to_string(),
        };
        const EXAMPLE: &str = r#"for example "agents/{role}-{slot}""#;
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let tail = &rest[open..];
            let end = tail.find('}').map_or(tail.len(), |e| e + 1);
            let name = &tail[..end];
            if !BRANCH_PLACEHOLDERS.contains(&name) {
                let close = strsim_closest(name, &BRANCH_PLACEHOLDERS);
                let help = match close {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => "use {workspace}, {team}, {role} or {slot}".to_string(),
                };
                return Err(refuse(
                    format!(
                        "{name:?} in {text:?} is not a placeholder; the placeholders are {{workspace}}, {{team}}, {{role}} and {{slot}}"
                    ),
                    &help,
                ));
            }
            rest = &tail[end..];
        }
        if !text.contains("{slot}") {
            return Err(refuse(
                format!("{text:?} has no {{slot}}: every slot needs a branch of its own"),
                EXAMPLE,
            ));
        }
        let sample = BranchTemplate(text.to_string()).fill("w", "t", "r", 0);
        if let Some(why) = ref_name_problem(&sample) {
            return Err(refuse(
                format!("{text:?} cannot be a git branch name: {why}"),
                EXAMPLE,
            ));
        }
        Ok(BranchTemplate(text.to_string()))
    }

    /// The branch of the slot `key`.
    pub fn expand(&self, key: &SessionKey) -> String {
        self.fill(&key.workspace, &key.team, &key.role, key.slot)
    }

    /// The template with `{role}` filled in: two roles whose results are
    /// equal would share branches.
    pub fn for_role(&self, role: &str) -> String {
        self.0.replace("{role}", role)
    }

    fn fill(&self, workspace: &str, team: &str, role: &str, slot: u32) -> String {
        self.0
            .replace("{workspace}", workspace)
            .replace("{team}", team)
            .replace("{role}", role)
            .replace("{slot}", &slot.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BranchTemplate {
    type Error = BranchError;
    fn try_from(s: String) -> Result<Self, BranchError> {
        BranchTemplate::new(&s)
    }
}

impl From<BranchTemplate> for String {
    fn from(b: BranchTemplate) -> String {
        b.0
    }
}

impl Default for BranchTemplate {
    fn default() -> Self {
        BranchTemplate(DEFAULT_BRANCH.to_string())
    }
}

/// What makes `name` unusable as a git branch (git's `check-ref-format`
/// rules), if anything.
fn ref_name_problem(name: &str) -> Option<&'static str> {
    if name.len() > 200 {
        return Some("it is longer than 200 characters");
    }
    if name
        .chars()
        .any(|c| c.is_control() || " ~^:?*[\\".contains(c))
    {
        return Some("it holds a space, a control character or one of ~ ^ : ? * [ \\");
    }
    if name.contains("..") || name.contains("@{") || name == "@" {
        return Some(r#"it holds "..", "@{" or is "@""#);
    }
    if name.starts_with(['-', '/']) || name.ends_with(['/', '.']) || name.contains("//") {
        return Some(r#"it starts with "-" or "/", ends with "/" or ".", or holds "//""#);
    }
    if name
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return Some(r#"a part of it starts with "." or ends with ".lock""#);
    }
    None
}

/// The candidate closest to `found`, when it is probably a typo of it.
fn strsim_closest<'c>(found: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let limit = (found.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(found, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A git worktree per slot: made from `repo` (its current HEAD for a new
/// branch), on the slot's `branch`, in a directory marvel owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worktree {
    pub repo: Repo,
    pub branch: BranchTemplate,
}

/// The fields of a [`RoleSpec`], each valid on its own; also its layout on
/// the wire and in state files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RoleParts {
    pub name: Name,
    pub replicas: Replicas,
    pub command: Command,
    pub env: Env,
    pub cwd: Option<Cwd>,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    pub max_restarts: Option<u32>,
    pub window: NonZeroSpan,
    pub reset_after: NonZeroSpan,
    pub health: Option<Health>,
    // State files written before these fields existed lack them.
    #[serde(default = "default_ready_after")]
    pub ready_after: Span,
    #[serde(default)]
    pub shift_last: bool,
    #[serde(default)]
    pub layout: Layout,
    #[serde(default)]
    pub worktree: Option<Worktree>,
    #[serde(default)]
    pub resume: Option<Command>,
    #[serde(default = "default_idle_after")]
    pub idle_after: NonZeroSpan,
    #[serde(default)]
    pub waiting: Option<Pattern>,
}

fn default_ready_after() -> Span {
    DEFAULT_READY_AFTER
}

fn default_idle_after() -> NonZeroSpan {
    DEFAULT_IDLE_AFTER
}

fn is_default_idle_after(d: &NonZeroSpan) -> bool {
    *d == DEFAULT_IDLE_AFTER
}

/// A role whose command, env and cwd would not fit in tmux's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTooLong {
    /// The larger part, `command`, `resume` or `env`, to point at.
    pub field: &'static str,
    pub bytes: usize,
}

impl CommandTooLong {
    pub fn message(&self) -> String {
        format!(
            "command, env and cwd take {} bytes; tmux accepts at most {MAX_COMMAND_LINE_BYTES} \
             of them in the command that starts a pane",
            self.bytes
        )
    }
}

impl fmt::Display for CommandTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

/// The bytes that command, env and cwd take in the message tmux receives:
/// each word with its NUL, `-e NAME=VALUE` per variable, `-c DIR` with the
/// `#` that tmux needs doubled, and room for a `\` before a trailing `;`.
fn command_line_bytes(command: &Command, env: &Env, cwd: Option<&Cwd>) -> (usize, usize, usize) {
    let argv = argv_bytes(command);
    let vars: usize = env.iter().map(|(k, v)| k.len() + v.len() + 5).sum();
    let dir = cwd.map_or(0, |c| {
        let bytes = c.as_os_str().as_encoded_bytes();
        4 + bytes.len() + bytes.iter().filter(|&&b| b == b'#').count()
    });
    (argv, vars, dir)
}

fn argv_bytes(command: &Command) -> usize {
    command.iter().map(|a| a.len() + 2).sum()
}

impl TryFrom<RoleParts> for RoleSpec {
    type Error = CommandTooLong;
    fn try_from(p: RoleParts) -> Result<Self, CommandTooLong> {
        let (argv, vars, dir) = command_line_bytes(&p.command, &p.env, p.cwd.as_ref());
        // A restart runs `resume` in the same place: it must fit as well.
        let resume = p.resume.as_ref().map_or(0, argv_bytes);
        let bytes = argv.max(resume) + vars + dir;
        if bytes > MAX_COMMAND_LINE_BYTES {
            let field = if vars > argv.max(resume) {
                "env"
            } else if resume > argv {
                "resume"
            } else {
                "command"
            };
            return Err(CommandTooLong { field, bytes });
        }
        Ok(RoleSpec {
            name: p.name,
            replicas: p.replicas,
            command: p.command,
            env: p.env,
            cwd: p.cwd,
            restart: p.restart,
            backoff: p.backoff,
            max_restarts: p.max_restarts,
            window: p.window,
            reset_after: p.reset_after,
            health: p.health,
            ready_after: p.ready_after,
            shift_last: p.shift_last,
            layout: p.layout,
            worktree: p.worktree,
            resume: p.resume,
            idle_after: p.idle_after,
            waiting: p.waiting,
            checked: Checked,
        })
    }
}

impl RoleSpec {
    /// A role with the documented defaults, for tests and examples; panics
    /// on an invalid name, count or command.
    pub fn with_defaults(name: &str, replicas: u32, command: &[&str]) -> RoleSpec {
        RoleSpec::try_from(RoleParts {
            name: Name::new(name).expect("valid role name"),
            replicas: Replicas::new(replicas).expect("valid replicas"),
            command: Command::new(command.iter().copied()).expect("valid command"),
            env: Env::default(),
            cwd: None,
            restart: RestartPolicy::Always,
            backoff: Backoff::default(),
            max_restarts: Some(DEFAULT_MAX_RESTARTS),
            window: DEFAULT_WINDOW,
            reset_after: DEFAULT_RESET_AFTER,
            health: None,
            ready_after: DEFAULT_READY_AFTER,
            shift_last: false,
            layout: Layout::Windows,
            worktree: None,
            resume: None,
            idle_after: DEFAULT_IDLE_AFTER,
            waiting: None,
        })
        .expect("a short command fits")
    }

    /// The fields that differ between the two specs, by their manifest
    /// names, in manifest order.
    pub fn changed_fields(&self, other: &RoleSpec) -> Vec<&'static str> {
        let checks: [(&'static str, bool); 17] = [
            ("replicas", self.replicas != other.replicas),
            ("command", self.command != other.command),
            ("env", self.env != other.env),
            ("cwd", self.cwd != other.cwd),
            ("restart", self.restart != other.restart),
            ("backoff", self.backoff != other.backoff),
            ("max_restarts", self.max_restarts != other.max_restarts),
            ("window", self.window != other.window),
            ("reset_after", self.reset_after != other.reset_after),
            ("health", self.health != other.health),
            ("ready_after", self.ready_after != other.ready_after),
            ("shift_last", self.shift_last != other.shift_last),
            ("layout", self.layout != other.layout),
            ("worktree", self.worktree != other.worktree),
            ("resume", self.resume != other.resume),
            ("idle_after", self.idle_after != other.idle_after),
            ("waiting", self.waiting != other.waiting),
        ];
        checks
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(name, _)| name)
            .collect()
    }

    /// True when the two specs start the same program the same way: only
    /// `replicas` and policy fields (how crashes are handled, how
    /// replacements are paced) may differ. A change of a [`TEMPLATE_FIELDS`]
    /// field replaces the role's sessions; a policy change applies in place.
    pub fn same_template(&self, other: &RoleSpec) -> bool {
        self.changed_fields(other)
            .iter()
            .all(|f| !TEMPLATE_FIELDS.contains(f))
    }
}

/// The fields that decide the running program itself: changing one
/// replaces the role's sessions. Every other field but `replicas` is
/// policy, applied to running sessions in place.
pub const TEMPLATE_FIELDS: &[&str] = &["command", "env", "cwd", "worktree"];

/// One team: the unit a manifest file declares and `marvel run` applies.
/// Built only from [`TeamParts`] (or by decoding them): at least one role,
/// role names unique.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TeamParts")]
pub struct TeamSpec {
    pub workspace: Name,
    pub name: Name,
    pub roles: Vec<RoleSpec>,
    /// Commands run for the team's events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
    #[serde(skip)]
    checked: Checked,
}

/// The fields of a [`TeamSpec`]; also its layout on the wire and in state
/// files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TeamParts {
    pub workspace: Name,
    pub name: Name,
    pub roles: Vec<RoleSpec>,
    #[serde(default)]
    pub notify: Vec<Notify>,
}

/// Why a team's roles do not make a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamError {
    NoRoles,
    /// `roles[index]` has the name of the earlier `roles[first]`.
    DuplicateRole {
        index: usize,
        first: usize,
        name: String,
    },
    /// `roles[index]` would put its slots on the branches of the earlier
    /// `roles[first]`'s, in the same repository.
    SharedBranch {
        index: usize,
        first: usize,
        branch: String,
    },
}

impl TeamError {
    /// The path of the value at fault, from the team.
    pub fn field(&self) -> String {
        match self {
            TeamError::NoRoles => "roles".into(),
            TeamError::DuplicateRole { index, .. } => format!("roles[{index}].name"),
            TeamError::SharedBranch { index, .. } => format!("roles[{index}].worktree.branch"),
        }
    }

    pub fn message(&self) -> String {
        match self {
            TeamError::NoRoles => "a team needs at least one role".into(),
            TeamError::DuplicateRole { first, name, .. } => format!(
                "role {name:?} is declared twice (also roles[{first}]); \
                 role names must be unique within a team"
            ),
            TeamError::SharedBranch { first, branch, .. } => format!(
                "{branch:?} gives the same branches as roles[{first}] in the same repository; \
                 a branch can be checked out in one worktree only"
            ),
        }
    }
}

impl fmt::Display for TeamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field(), self.message())
    }
}

impl TryFrom<TeamParts> for TeamSpec {
    type Error = TeamError;
    fn try_from(p: TeamParts) -> Result<Self, TeamError> {
        if p.roles.is_empty() {
            return Err(TeamError::NoRoles);
        }
        let mut seen = std::collections::HashMap::new();
        for (index, role) in p.roles.iter().enumerate() {
            if let Some(&first) = seen.get(&role.name) {
                return Err(TeamError::DuplicateRole {
                    index,
                    first,
                    name: role.name.to_string(),
                });
            }
            seen.insert(&role.name, index);
        }
        let mut branches = std::collections::HashMap::new();
        for (index, role) in p.roles.iter().enumerate() {
            let Some(w) = &role.worktree else { continue };
            let branch = w.branch.for_role(role.name.as_str());
            if let Some(&first) = branches.get(&(&*w.repo, branch.clone())) {
                return Err(TeamError::SharedBranch {
                    index,
                    first,
                    branch: w.branch.as_str().to_string(),
                });
            }
            branches.insert((&*w.repo, branch), index);
        }
        Ok(TeamSpec {
            workspace: p.workspace,
            name: p.name,
            roles: p.roles,
            notify: p.notify,
            checked: Checked,
        })
    }
}

impl TeamSpec {
    pub fn key(&self) -> TeamKey {
        TeamKey::new(&self.workspace, &self.name)
    }

    pub fn role_key(&self, role: &RoleSpec) -> RoleKey {
        self.key().role(&role.name)
    }

    pub fn role(&self, name: &str) -> Option<&RoleSpec> {
        self.roles.iter().find(|r| r.name.as_str() == name)
    }
}

/// Every rule a spec promises, checked from the outside through its
/// getters, for tests that build or decode specs from arbitrary input.
#[cfg(test)]
pub(crate) fn assert_valid(spec: &TeamSpec) {
    assert!(!spec.roles.is_empty(), "a team without roles");
    let mut names = std::collections::BTreeSet::new();
    for r in &spec.roles {
        assert!(names.insert(r.name.as_str()), "duplicate role {}", r.name);
        assert!(Name::new(r.name.as_str()).is_ok(), "{}", r.name);
        assert!(r.replicas.get() <= MAX_REPLICAS);
        assert!(!r.command.is_empty());
        assert!(r.command.iter().all(|a| !a.contains('\0')));
        for (k, v) in r.env.iter() {
            assert!(!k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0'));
        }
        let (argv, vars, dir) = command_line_bytes(&r.command, &r.env, r.cwd.as_ref());
        let resume = r.resume.as_ref().map_or(0, argv_bytes);
        assert!(argv.max(resume) + vars + dir <= MAX_COMMAND_LINE_BYTES);
        if let Some(resume) = &r.resume {
            assert!(!resume.is_empty() && resume.iter().all(|a| !a.contains('\0')));
        }
        if let Some(w) = &r.worktree {
            assert!(!w.repo.as_os_str().is_empty());
            assert!(w.branch.as_str().contains("{slot}"), "{:?}", w.branch);
            assert_eq!(ref_name_problem(&w.branch.fill("w", "t", "r", 7)), None);
        }
        let b = &r.backoff;
        assert!(b.initial() > Duration::ZERO && b.initial() <= b.max());
        assert!(b.factor().is_finite() && b.factor() >= 1.0);
        assert!((0.0..=1.0).contains(&b.jitter()));
        let mut spans = vec![
            b.max(),
            r.window.get(),
            r.reset_after.get(),
            r.ready_after.get(),
        ];
        assert!(!r.window.get().is_zero() && !r.reset_after.get().is_zero());
        if let Some(Health::Heartbeat { timeout, failures }) = r.health {
            assert!(!timeout.get().is_zero() && failures.get() >= 1);
            spans.push(timeout.get());
        }
        assert!(spans.iter().all(|d| *d <= MAX_DURATION), "{spans:?}");
    }
}

/// Seeded random cases for the fuzz tests of everything that decodes input
/// from outside: many cheap cases, each failure replayable from its seed.
#[cfg(test)]
pub(crate) mod fuzz {
    use std::fmt::Debug;
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

    /// Cases per fuzz target: `MARVEL_FUZZ_CASES`, else 100 000.
    pub fn cases() -> usize {
        std::env::var("MARVEL_FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000)
    }

    /// `MARVEL_TEST_SEED` replays a reported failure (as in the integration
    /// tests); else a new seed.
    fn seed() -> u64 {
        std::env::var("MARVEL_TEST_SEED")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..))
    }

    /// Runs `check` on `n` inputs from `make`. A panic is reported with the
    /// input and the seed that reproduces it.
    pub fn run<T: Debug>(
        n: usize,
        mut make: impl FnMut(&mut fastrand::Rng) -> T,
        check: impl Fn(&T),
    ) {
        let seed = seed();
        let mut rng = fastrand::Rng::with_seed(seed);
        for i in 0..n {
            let input = make(&mut rng);
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| check(&input))) {
                eprintln!("fuzz case {i} failed on {input:?}\nreplay it: MARVEL_TEST_SEED={seed}");
                resume_unwind(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::{Value, json};

    #[test]
    fn names_follow_the_documented_rule() {
        assert!(Name::new("worker").is_ok());
        assert!(Name::new("0day_x-1").is_ok());
        assert_eq!(
            Name::new("").unwrap_err(),
            "must not be empty; use lower-case letters, digits, '-' and '_', starting with a letter or digit"
        );
        assert!(Name::new("-x").is_err());
        assert!(Name::new("Worker").is_err());
        assert!(Name::new("a.b").is_err());
        assert!(Name::new("a:b").is_err());
        assert!(Name::new("a/b").is_err());
        assert!(Name::new(&"a".repeat(MAX_NAME_LEN)).is_ok());
        assert_eq!(
            Name::new(&"a".repeat(MAX_NAME_LEN + 1)).unwrap_err(),
            format!(
                "{:?} is 41 characters long; at most 40 are allowed",
                "a".repeat(41)
            )
        );
    }

    #[test]
    fn only_the_program_command_env_and_cwd_make_a_new_template() {
        let a = RoleSpec::with_defaults("w", 1, &["sh"]);
        let mut b = a.clone();
        b.replicas = Replicas::new(9).unwrap();
        b.shift_last = true;
        b.max_restarts = Some(1);
        b.window = NonZeroSpan::from_secs(5);
        b.reset_after = NonZeroSpan::from_secs(5);
        b.ready_after = Span::from_secs(3);
        b.restart = RestartPolicy::Never;
        b.health = Some(Health::Heartbeat {
            timeout: NonZeroSpan::from_secs(9),
            failures: Failures::new(1).unwrap(),
        });
        b.layout = Layout::Tiled;
        b.resume = Some(Command::new(["sh", "-c", "resume"]).unwrap());
        b.idle_after = NonZeroSpan::from_secs(5);
        b.waiting = Some(Pattern::new("y/n").unwrap());
        assert!(a.same_template(&b), "policy fields apply in place");
        assert_eq!(
            a.changed_fields(&b),
            [
                "replicas",
                "restart",
                "max_restarts",
                "window",
                "reset_after",
                "health",
                "ready_after",
                "shift_last",
                "layout",
                "resume",
                "idle_after",
                "waiting"
            ]
        );
        for change in [
            |r: &mut RoleSpec| r.command = Command::new(["sh", "-c"]).unwrap(),
            |r: &mut RoleSpec| {
                r.env.insert("K".into(), "V".into()).unwrap();
            },
            |r: &mut RoleSpec| r.cwd = Some(Cwd::new("/tmp").unwrap()),
            |r: &mut RoleSpec| {
                r.worktree = Some(Worktree {
                    repo: Repo::new("/srv/repo").unwrap(),
                    branch: BranchTemplate::default(),
                })
            },
        ] {
            let mut c = a.clone();
            change(&mut c);
            assert!(!a.same_template(&c), "{:?}", a.changed_fields(&c));
            assert_eq!(a.changed_fields(&c).len(), 1);
        }
        assert!(a.changed_fields(&a).is_empty());
    }

    #[test]
    fn replicas_range_from_zero_and_a_manifest_declares_at_least_one() {
        assert_eq!(Replicas::new(0).map(Replicas::get), Ok(0));
        assert_eq!(Replicas::new(MAX_REPLICAS).map(Replicas::get), Ok(1000));
        assert_eq!(
            Replicas::new(u32::MAX).unwrap_err(),
            "must be between 0 and 1000, got 4294967295"
        );
        assert_eq!(
            Replicas::declared(0).unwrap_err(),
            "must be between 1 and 1000, got 0"
        );
        assert_eq!(
            Replicas::declared(-1).unwrap_err(),
            "must be between 1 and 1000, got -1"
        );
    }

    #[test]
    fn durations_are_capped_at_ten_years() {
        assert_eq!(MAX_DURATION, humantime::parse_duration("10y").unwrap());
        assert_eq!(Span::new(MAX_DURATION).map(Span::get), Ok(MAX_DURATION));
        let over = MAX_DURATION + Duration::from_nanos(1);
        assert_eq!(Span::new(over), Err(SpanError::TooLong(over)));
        assert_eq!(
            NonZeroSpan::new(Duration::MAX),
            Err(SpanError::TooLong(Duration::MAX))
        );
        assert_eq!(NonZeroSpan::new(Duration::ZERO), Err(SpanError::Zero));
        assert_eq!(Span::new(Duration::ZERO), Ok(Span::ZERO));
        assert_eq!(
            SpanError::TooLong(Duration::from_secs(31_557_600 * 11)).to_string(),
            "\"11years\" is too long; durations are at most 10 years (\"10y\")"
        );
        assert_eq!(
            SpanError::Zero.to_string(),
            "must be longer than zero, got \"0s\""
        );
    }

    #[test]
    fn backoff_keeps_initial_at_most_max() {
        let f = Factor::new(2.0).unwrap();
        let j = Jitter::new(0.0).unwrap();
        let b = Backoff::new(NonZeroSpan::from_secs(2), Span::from_secs(2), f, j).unwrap();
        assert_eq!(
            (b.initial(), b.max()),
            (Duration::from_secs(2), Duration::from_secs(2))
        );
        assert_eq!(
            Backoff::new(NonZeroSpan::from_secs(3), Span::from_secs(2), f, j)
                .unwrap_err()
                .to_string(),
            "initial (3s) is longer than max (2s); initial must not exceed max"
        );
        assert!(Factor::new(0.99).is_err() && Factor::new(f64::NAN).is_err());
        assert!(Factor::new(f64::INFINITY).is_err());
        assert!(Jitter::new(-0.1).is_err() && Jitter::new(f64::NAN).is_err());
        assert!(Jitter::new(1.0).is_ok());
    }

    #[test]
    fn commands_and_env_refuse_what_exec_cannot_carry() {
        assert!(Command::new(Vec::<String>::new()).is_err());
        assert_eq!(
            Command::new(["sh", "a\0b"]).unwrap_err(),
            "contains a NUL character, which no program can receive"
        );
        let mut env = Env::default();
        assert_eq!(env.insert("A".into(), "1".into()), Ok(None));
        assert_eq!(
            env.insert("".into(), "x".into()).unwrap_err(),
            "\"\" cannot be an environment variable name: it is empty"
        );
        assert_eq!(
            env.insert("A=B".into(), "x".into()).unwrap_err(),
            "\"A=B\" cannot be an environment variable name: it contains '='"
        );
        assert!(env.insert("B".into(), "\0".into()).is_err());
        assert_eq!(env.len(), 1);
        assert!(Cwd::new("").is_err() && Cwd::new("a\0b").is_err());
        assert!(Failures::new(0).is_err() && Failures::new(1).is_ok());
    }

    fn role_with(command: Vec<String>, env: &[(&str, &str)], cwd: Option<&str>) -> RoleParts {
        let mut parts = parts(&RoleSpec::with_defaults("w", 1, &["sh"]));
        parts.command = Command::new(command).unwrap();
        for (k, v) in env {
            parts.env.insert(k.to_string(), v.to_string()).unwrap();
        }
        parts.cwd = cwd.map(|c| Cwd::new(c).unwrap());
        parts
    }

    fn parts(r: &RoleSpec) -> RoleParts {
        serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap()
    }

    #[test]
    fn command_env_and_cwd_must_fit_in_what_tmux_accepts() {
        // Two words of n bytes take n + 2 bytes each.
        let word = |n: usize| "x".repeat(n);
        let fits = role_with(
            vec![word(100), word(MAX_COMMAND_LINE_BYTES - 104)],
            &[],
            None,
        );
        assert!(RoleSpec::try_from(fits).is_ok());
        let over = role_with(
            vec![word(100), word(MAX_COMMAND_LINE_BYTES - 103)],
            &[],
            None,
        );
        assert_eq!(
            RoleSpec::try_from(over).unwrap_err(),
            CommandTooLong {
                field: "command",
                bytes: MAX_COMMAND_LINE_BYTES + 1
            }
        );
        // A variable takes its name, its value and 5 bytes; the larger part
        // is the one named.
        let big_env = "v".repeat(MAX_COMMAND_LINE_BYTES);
        let err =
            RoleSpec::try_from(role_with(vec!["sh".into()], &[("K", &big_env)], None)).unwrap_err();
        assert_eq!(err.field, "env");
        assert_eq!(
            err.to_string(),
            format!(
                "env: command, env and cwd take {} bytes; tmux accepts at most 12288 of them \
                 in the command that starts a pane",
                MAX_COMMAND_LINE_BYTES + 10
            )
        );
        // A cwd counts too, with every `#` doubled.
        let dir = format!("/{}", "#".repeat(MAX_COMMAND_LINE_BYTES / 2));
        assert!(RoleSpec::try_from(role_with(vec!["sh".into()], &[], Some(&dir))).is_err());
    }

    #[test]
    fn teams_need_roles_with_unique_names() {
        let team = |roles: Vec<RoleSpec>| {
            TeamSpec::try_from(TeamParts {
                workspace: Name::new("demo").unwrap(),
                name: Name::new("squad").unwrap(),
                roles,
                notify: Vec::new(),
            })
        };
        assert_eq!(team(vec![]).unwrap_err(), TeamError::NoRoles);
        let w = RoleSpec::with_defaults("w", 1, &["sh"]);
        let l = RoleSpec::with_defaults("l", 1, &["sh"]);
        assert_eq!(
            team(vec![w.clone(), l.clone(), w.clone()])
                .unwrap_err()
                .to_string(),
            "roles[2].name: role \"w\" is declared twice (also roles[0]); \
             role names must be unique within a team"
        );
        assert_eq!(team(vec![w, l]).unwrap().roles.len(), 2);
    }

    /// A valid team as it travels on the wire and sits in state files.
    fn wire_team() -> Value {
        let mut w = RoleSpec::with_defaults("worker", 2, &["sh", "-c", "sleep 9"]);
        w.health = Some(Health::Heartbeat {
            timeout: NonZeroSpan::from_secs(30),
            failures: Failures::new(3).unwrap(),
        });
        w.env.insert("K".into(), "V".into()).unwrap();
        w.cwd = Some(Cwd::new("/tmp").unwrap());
        w.worktree = Some(Worktree {
            repo: Repo::new("/srv/repo").unwrap(),
            branch: BranchTemplate::new("agents/{role}-{slot}").unwrap(),
        });
        w.resume = Some(Command::new(["sh", "-c", "resume"]).unwrap());
        let team = TeamSpec::try_from(TeamParts {
            workspace: Name::new("demo").unwrap(),
            name: Name::new("squad").unwrap(),
            roles: vec![w, RoleSpec::with_defaults("lead", 1, &["sh"])],
            notify: Vec::new(),
        })
        .unwrap();
        serde_json::to_value(team).unwrap()
    }

    /// The decoding error of the wire team with `path` (a JSON pointer)
    /// set to `value`.
    fn refusal(path: &str, value: Value) -> String {
        let mut team = wire_team();
        // A field left out of the wire form (a default) is added.
        let (parent, field) = path.rsplit_once('/').unwrap();
        match team.pointer_mut(parent) {
            Some(Value::Object(m)) => {
                m.insert(field.to_string(), value);
            }
            _ => *team.pointer_mut(path).unwrap_or_else(|| panic!("{path}")) = value,
        }
        match serde_json::from_value::<TeamSpec>(team) {
            Ok(spec) => panic!("accepted {path}: {spec:#?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_team_decoded_from_the_wire_passes_every_rule_of_a_manifest() {
        let spec: TeamSpec = serde_json::from_value(wire_team()).unwrap();
        assert_valid(&spec);
        let year = 31_557_600u64;
        for (path, value, expected) in [
            (
                "/roles/0/replicas",
                json!(4_294_967_295u64),
                "must be between 0 and 1000, got 4294967295",
            ),
            (
                "/roles/0/replicas",
                json!(-1),
                "must be between 0 and 1000, got -1",
            ),
            (
                "/roles/0/command",
                json!([]),
                "must not be empty; give the program",
            ),
            (
                "/roles/0/command/1",
                json!("a\u{0}b"),
                "contains a NUL character",
            ),
            (
                "/roles/0/env",
                json!({"": "x"}),
                "\"\" cannot be an environment variable name: it is empty",
            ),
            (
                "/roles/0/env",
                json!({"A=B": "x"}),
                "\"A=B\" cannot be an environment variable name: it contains '='",
            ),
            ("/roles/0/cwd", json!(""), "must not be empty"),
            (
                "/roles/0/health/Heartbeat/timeout",
                json!({"secs": 0, "nanos": 0}),
                "must be longer than zero, got \"0s\"",
            ),
            (
                "/roles/0/health/Heartbeat/failures",
                json!(0),
                "must be at least 1, got 0",
            ),
            (
                "/roles/0/window",
                json!({"secs": 1_000_000 * year, "nanos": 0}),
                "is too long; durations are at most 10 years",
            ),
            (
                "/roles/0/reset_after",
                json!({"secs": u64::MAX, "nanos": 999_999_999}),
                "is too long",
            ),
            (
                "/roles/0/ready_after",
                json!({"secs": 11 * year, "nanos": 0}),
                "is too long",
            ),
            (
                "/roles/0/backoff/initial",
                json!({"secs": 120, "nanos": 0}),
                "initial (2m) is longer than max (1m); initial must not exceed max",
            ),
            (
                "/roles/0/backoff/factor",
                json!(0.5),
                "must be a finite number of at least 1, got 0.5",
            ),
            (
                "/roles/0/backoff/jitter",
                json!(-1.0),
                "must be between 0 and 1, got -1",
            ),
            (
                "/roles/0/command/1",
                json!("x".repeat(MAX_COMMAND_LINE_BYTES)),
                "command: command, env and cwd take",
            ),
            (
                "/roles/1/name",
                json!("worker"),
                "roles[1].name: role \"worker\" is declared twice",
            ),
            ("/roles", json!([]), "roles: a team needs at least one role"),
            (
                "/roles/0/resume",
                json!([]),
                "must not be empty; give the program",
            ),
            (
                "/roles/0/resume/0",
                json!("x".repeat(MAX_COMMAND_LINE_BYTES)),
                "resume: command, env and cwd take",
            ),
            ("/roles/0/worktree/repo", json!(""), "must not be empty"),
            (
                "/roles/0/worktree/branch",
                json!("agents/{role}"),
                "has no {slot}",
            ),
            (
                "/roles/0/worktree/branch",
                json!("a b {slot}"),
                "cannot be a git branch name",
            ),
            ("/name", json!("Squad"), "\"Squad\" is not allowed"),
            (
                "/roles/1/waiting",
                json!("(unclosed"),
                "\"(unclosed\" is not a regular expression",
            ),
            (
                "/roles/1/idle_after",
                json!({"secs": 0, "nanos": 0}),
                "must be longer than zero",
            ),
            (
                "/notify",
                json!([{"on": [], "command": ["x"], "timeout": {"secs": 1, "nanos": 0}, "coalesce": {"secs": 0, "nanos": 0}}]),
                "must name at least one event",
            ),
        ] {
            let got = refusal(path, value);
            assert!(got.contains(expected), "{path}: {got}");
        }
        let mut team = wire_team();
        team["roles"][1]["worktree"] =
            json!({"repo": "/srv/repo", "branch": "agents/worker-{slot}"});
        let got = serde_json::from_value::<TeamSpec>(team)
            .unwrap_err()
            .to_string();
        assert!(
            got.contains("roles[1].worktree.branch: \"agents/worker-{slot}\" gives the same branches as roles[0]"),
            "{got}"
        );
    }

    #[test]
    fn out_of_range_durations_in_a_state_file_are_refused_not_wrapped() {
        // chrono cannot even represent this window: decoding must refuse it
        // before any arithmetic sees it.
        let got = refusal("/roles/0/window", json!({"secs": u64::MAX, "nanos": 0}));
        assert!(got.contains("too long"), "{got}");
    }

    /// A state file written in format 1, before the spec's fields became
    /// checked types: the applied teams still load, and write back in
    /// exactly the same JSON layout.
    #[test]
    fn state_files_of_format_1_still_load() {
        let text = include_str!("../../tests/fixtures/state-format-1.json");
        let file: Value = serde_json::from_str(text).unwrap();
        let world: crate::domain::state::World =
            serde_json::from_value(file["world"].clone()).unwrap();
        let keys: Vec<String> = world.teams.keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["demo/demo", "demo/squad"]);
        let squad = &world.teams.values().nth(1).unwrap().spec;
        let worker = squad.role("worker").unwrap();
        assert_eq!(worker.command.join(" "), "sh -c exec sleep 600");
        assert_eq!(worker.env.len(), 2);
        assert!(worker.shift_last);
        assert_eq!(
            worker.health,
            Some(Health::Heartbeat {
                timeout: NonZeroSpan::from_secs(30),
                failures: Failures::new(2).unwrap(),
            })
        );
        // Scaled to zero after it was applied.
        assert_eq!(squad.role("idle").unwrap().replicas.get(), 0);
        for record in world.teams.values() {
            assert_valid(&record.spec);
        }
        // Written back the same, but for fields added since (with defaults).
        let mut back = serde_json::to_value(&world).unwrap();
        let top = back.as_object_mut().unwrap();
        top.remove("uid_reserved");
        assert_eq!(top.remove("kept"), Some(json!({})));
        // A session leaves out what is unset (format 1 wrote it all),
        // but for `restarts` and `last_output`: compared without those.
        let unset = |s: &mut Value| {
            s.as_object_mut().unwrap().retain(|k, v| {
                !(v.is_null()
                    || (k == "health" && *v == json!("Unknown"))
                    || (k == "heartbeat" && *v == json!({"context_pct": null, "note": null})))
            });
        };
        let mut expected = file["world"].clone();
        for world in [&mut expected, &mut back] {
            let top = world.as_object_mut().unwrap();
            top["sessions"]
                .as_object_mut()
                .unwrap()
                .values_mut()
                .for_each(unset);
            for h in top["roles"].as_object_mut().unwrap().values_mut() {
                if let Some(marker) = h.get_mut("marker").filter(|m| !m.is_null()) {
                    unset(marker);
                }
            }
        }
        let top = back.as_object_mut().unwrap();
        for s in top["sessions"].as_object().unwrap().values() {
            assert!(
                s.get("window").is_none(),
                "a session of format 1 has no window"
            );
        }
        for h in top["roles"].as_object_mut().unwrap().values_mut() {
            let h = h.as_object_mut().unwrap();
            assert_eq!(h.remove("stopped"), Some(Value::Bool(false)));
            assert_eq!(h.remove("failed_slots"), Some(json!([])));
            assert_eq!(h.remove("past"), Some(json!({})));
        }
        for t in top["teams"].as_object_mut().unwrap().values_mut() {
            assert_eq!(
                t.as_object_mut().unwrap().remove("source"),
                Some(Value::Null)
            );
        }
        assert_eq!(back, expected);
    }
}
