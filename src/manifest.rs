//! RON team manifests → validated [`TeamSpec`]s. Owns the file format: raw
//! serde structs (which never leave this module), every check on user input,
//! and pointing each refusal at a file, line, column and field.

mod locate;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ron::error::{Error as RonError, SpannedError};
use ron::extensions::Extensions;
use serde::Deserialize;
use serde::de::{Deserializer, Visitor};

use crate::domain::spec::{
    Backoff, DEFAULT_READY_AFTER, DEFAULT_WORKSPACE, Health, MAX_REPLICAS, Name, RestartPolicy,
    RoleSpec, TeamSpec,
};
use crate::error::{Error, Result};
use locate::Located;

/// Budget of restarts within `window` when `max_restarts` is not written.
const DEFAULT_MAX_RESTARTS: u32 = 5;
const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
const DEFAULT_RESET_AFTER: Duration = Duration::from_secs(600);
const DEFAULT_HEARTBEAT_FAILURES: u32 = 3;

const DURATION_HELP: &str = r#"write a number and a unit, e.g. "250ms", "2s", "5m" or "1h""#;

/// Reads, parses and validates the manifest at `path`, checking each role's
/// program against this process's `PATH`. A relative `cwd` is taken relative
/// to the manifest's directory and stored absolute; it must be a directory.
pub fn load(path: &Path) -> Result<TeamSpec> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, &e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::path::absolute(dir).map_err(|e| Error::io(dir, &e))?;
    parse_in(
        &path.display().to_string(),
        &text,
        &check_on_path,
        Some(&dir),
    )
}

/// Parses and validates manifest `text` without touching the file system.
/// `file` names the text in messages; `resolver` checks each role's program
/// (`command[0]`) and says why it cannot be run. `cwd` is kept as written.
pub fn parse(
    file: &str,
    text: &str,
    resolver: &dyn Fn(&str) -> Result<(), String>,
) -> Result<TeamSpec> {
    parse_in(file, text, resolver, None)
}

/// The real resolver: a name with a `/` is checked as a path, any other is
/// searched in `PATH`. It must be a regular file with an execute bit.
pub fn check_on_path(cmd: &str) -> Result<(), String> {
    check_in(cmd, std::env::var_os("PATH").as_deref())
}

fn check_in(cmd: &str, path_var: Option<&OsStr>) -> Result<(), String> {
    if cmd.is_empty() {
        return Err("the program name is empty".into());
    }
    if cmd.contains('/') {
        return match std::fs::metadata(cmd) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{cmd} does not exist"))
            }
            Err(e) => Err(format!("{cmd}: {e}")),
            Ok(m) if m.is_dir() => Err(format!("{cmd} is a directory, not a program")),
            Ok(m) if !m.is_file() => Err(format!("{cmd} is not a regular file")),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(format!("{cmd} is not executable")),
            Ok(_) => Ok(()),
        };
    }
    let Some(path_var) = path_var else {
        return Err(format!("{cmd:?} cannot be looked up: PATH is not set"));
    };
    let mut not_executable = None;
    for dir in std::env::split_paths(path_var) {
        let candidate = dir.join(cmd);
        if let Ok(m) = std::fs::metadata(&candidate) {
            if !m.is_file() {
                continue;
            }
            if m.permissions().mode() & 0o111 != 0 {
                return Ok(());
            }
            not_executable.get_or_insert(candidate);
        }
    }
    match not_executable {
        Some(p) => Err(format!(
            "{cmd:?} was found at {} but it is not executable",
            p.display()
        )),
        None => Err(format!("{cmd:?} was not found in any directory on PATH")),
    }
}

/// [`parse`], and with `base` (the manifest's directory) also resolve each
/// `cwd` against it and check that it is a directory.
fn parse_in(
    file: &str,
    text: &str,
    resolver: &dyn Fn(&str) -> Result<(), String>,
    base: Option<&Path>,
) -> Result<TeamSpec> {
    let cx = Cx {
        file,
        doc: Located::new(text),
    };
    // Without IMPLICIT_SOME every optional field would need `Some(...)`.
    let options = ron::Options::default().with_default_extension(Extensions::IMPLICIT_SOME);
    let raw: RawTeam = options.from_str(text).map_err(|e| cx.retell(e))?;
    cx.team(raw, resolver, base)
}

// ---------------------------------------------------------------------------
// The file format as written. Field order here is the order listed in
// "allowed fields" messages, so it follows the documented schema.

#[derive(Debug, Deserialize)]
#[serde(rename = "Team", deny_unknown_fields)]
struct RawTeam {
    name: String,
    #[serde(default)]
    workspace: Option<String>,
    roles: Vec<RawRole>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Role", deny_unknown_fields)]
struct RawRole {
    name: String,
    // Signed so that `-1` and `5000` get the same range message as `0`.
    #[serde(default)]
    replicas: Option<i64>,
    command: Vec<String>,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    restart: Option<RawRestart>,
    #[serde(default)]
    backoff: Option<RawBackoff>,
    #[serde(default)]
    max_restarts: RawBudget,
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    reset_after: Option<String>,
    #[serde(default)]
    health: Option<RawHealth>,
    #[serde(default)]
    ready_after: Option<String>,
    #[serde(default)]
    shift_last: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Restart")]
enum RawRestart {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename = "Backoff", deny_unknown_fields)]
struct RawBackoff {
    #[serde(default)]
    initial: Option<String>,
    #[serde(default)]
    max: Option<String>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    jitter: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Health", deny_unknown_fields)]
enum RawHealth {
    Heartbeat {
        timeout: String,
        #[serde(default)]
        failures: Option<u32>,
    },
}

/// `max_restarts` as written. A plain `Option` cannot tell a field left out
/// (the default budget) from `max_restarts: None` (unlimited).
#[derive(Debug, Default)]
enum RawBudget {
    #[default]
    Absent,
    Unlimited,
    Limit(u32),
}

impl<'de> Deserialize<'de> for RawBudget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Budget;
        impl<'de> Visitor<'de> for Budget {
            type Value = RawBudget;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of restarts or None")
            }
            fn visit_none<E>(self) -> std::result::Result<RawBudget, E> {
                Ok(RawBudget::Unlimited)
            }
            fn visit_some<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<RawBudget, D::Error> {
                u32::deserialize(d).map(RawBudget::Limit)
            }
        }
        d.deserialize_option(Budget)
    }
}

// ---------------------------------------------------------------------------
// Checking and converting.

/// What one manifest is being checked against: its label and its text.
struct Cx<'a> {
    file: &'a str,
    doc: Located<'a>,
}

impl Cx<'_> {
    /// A refusal pointing at the value of `path`.
    fn fail(&self, path: &str, message: impl Into<String>, help: Option<String>) -> Error {
        Error::Manifest {
            file: self.file.to_string(),
            position: Some(self.doc.position_of(path)),
            field: (!path.is_empty()).then(|| path.to_string()),
            message: message.into(),
            help,
        }
    }

    fn team(
        &self,
        raw: RawTeam,
        resolver: &dyn Fn(&str) -> Result<(), String>,
        base: Option<&Path>,
    ) -> Result<TeamSpec> {
        let name = self.name("name", &raw.name)?;
        let workspace = match &raw.workspace {
            Some(w) => self.name("workspace", w)?,
            None => Name::new(DEFAULT_WORKSPACE).expect("the default workspace name is valid"),
        };
        if raw.roles.is_empty() {
            return Err(self.fail(
                "roles",
                "a team needs at least one role",
                Some(r#"add one, e.g. roles: [Role(name: "worker", command: ["sh"])]"#.into()),
            ));
        }
        let mut roles: Vec<RoleSpec> = Vec::with_capacity(raw.roles.len());
        for (i, r) in raw.roles.into_iter().enumerate() {
            let role = self.role(&format!("roles[{i}]"), r, &roles, resolver, base)?;
            roles.push(role);
        }
        Ok(TeamSpec {
            workspace,
            name,
            roles,
        })
    }

    fn role(
        &self,
        p: &str,
        raw: RawRole,
        earlier: &[RoleSpec],
        resolver: &dyn Fn(&str) -> Result<(), String>,
        base: Option<&Path>,
    ) -> Result<RoleSpec> {
        let name = self.name(&format!("{p}.name"), &raw.name)?;
        if let Some(j) = earlier.iter().position(|r| r.name == name) {
            return Err(self.fail(
                &format!("{p}.name"),
                format!(
                    "role {:?} is declared twice (also roles[{j}]); \
                     role names must be unique within a team",
                    name.as_str()
                ),
                None,
            ));
        }

        let replicas = raw.replicas.unwrap_or(1);
        if !(1..=i64::from(MAX_REPLICAS)).contains(&replicas) {
            return Err(self.fail(
                &format!("{p}.replicas"),
                format!("must be between 1 and {MAX_REPLICAS}, got {replicas}"),
                None,
            ));
        }
        let replicas = u32::try_from(replicas).expect("checked against the range above");

        self.command(p, &raw.command, resolver)?;
        let env = self.env(p, raw.env.unwrap_or_default())?;
        let cwd = match &raw.cwd {
            Some(c) => Some(self.cwd(&format!("{p}.cwd"), c, base)?),
            None => None,
        };
        let restart = match raw.restart.unwrap_or(RawRestart::Always) {
            RawRestart::Always => RestartPolicy::Always,
            RawRestart::OnFailure => RestartPolicy::OnFailure,
            RawRestart::Never => RestartPolicy::Never,
        };
        let backoff = self.backoff(&format!("{p}.backoff"), raw.backoff.unwrap_or_default())?;
        let max_restarts = match raw.max_restarts {
            RawBudget::Absent => Some(DEFAULT_MAX_RESTARTS),
            RawBudget::Unlimited => None,
            RawBudget::Limit(n) => Some(n),
        };
        let window = self.positive_or(
            &format!("{p}.window"),
            raw.window.as_deref(),
            DEFAULT_WINDOW,
        )?;
        let reset_after = self.positive_or(
            &format!("{p}.reset_after"),
            raw.reset_after.as_deref(),
            DEFAULT_RESET_AFTER,
        )?;
        let health = match raw.health {
            None => None,
            Some(RawHealth::Heartbeat { timeout, failures }) => {
                let timeout = self.positive(&format!("{p}.health.timeout"), &timeout)?;
                let failures = failures.unwrap_or(DEFAULT_HEARTBEAT_FAILURES);
                if failures == 0 {
                    return Err(self.fail(
                        &format!("{p}.health.failures"),
                        "must be at least 1, got 0",
                        None,
                    ));
                }
                Some(Health::Heartbeat { timeout, failures })
            }
        };

        let ready_after = match raw.ready_after.as_deref() {
            Some(s) => self.duration(&format!("{p}.ready_after"), s)?,
            None => DEFAULT_READY_AFTER,
        };

        Ok(RoleSpec {
            name,
            replicas,
            command: raw.command,
            env,
            cwd,
            restart,
            backoff,
            max_restarts,
            window,
            reset_after,
            health,
            ready_after,
            shift_last: raw.shift_last.unwrap_or(false),
        })
    }

    fn name(&self, path: &str, s: &str) -> Result<Name> {
        Name::new(s).map_err(|m| self.fail(path, m, None))
    }

    fn command(
        &self,
        p: &str,
        argv: &[String],
        resolver: &dyn Fn(&str) -> Result<(), String>,
    ) -> Result<()> {
        if argv.is_empty() {
            return Err(self.fail(
                &format!("{p}.command"),
                r#"must not be empty; give the program and its arguments, e.g. ["sh", "-c", "..."]"#,
                None,
            ));
        }
        // Arguments reach the program through exec, which cannot carry NUL.
        if let Some(k) = argv.iter().position(|a| a.contains('\0')) {
            return Err(self.fail(
                &format!("{p}.command[{k}]"),
                "contains a NUL character, which no program can receive",
                None,
            ));
        }
        resolver(&argv[0]).map_err(|reason| {
            let help = if argv[0].contains('/') {
                "check the path, and that the file is executable (chmod +x)"
            } else {
                "give the full path to the program, or add its directory to PATH"
            };
            self.fail(&format!("{p}.command[0]"), reason, Some(help.into()))
        })
    }

    fn env(&self, p: &str, env: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        for (k, v) in &env {
            let bad_name = if k.is_empty() {
                Some("it is empty")
            } else if k.contains('=') {
                Some("it contains '='")
            } else if k.contains('\0') {
                Some("it contains a NUL character")
            } else {
                None
            };
            if let Some(why) = bad_name {
                return Err(self.fail(
                    &format!("{p}.env"),
                    format!("{k:?} cannot be an environment variable name: {why}"),
                    None,
                ));
            }
            if v.contains('\0') {
                return Err(self.fail(
                    &format!("{p}.env"),
                    format!(
                        "the value of {k:?} contains a NUL character, which no program can receive"
                    ),
                    None,
                ));
            }
        }
        Ok(env)
    }

    fn cwd(&self, path: &str, cwd: &str, base: Option<&Path>) -> Result<PathBuf> {
        if cwd.is_empty() {
            return Err(self.fail(
                path,
                "must not be empty; leave it out to use the default",
                None,
            ));
        }
        let Some(base) = base else {
            return Ok(PathBuf::from(cwd));
        };
        let dir = base.join(cwd);
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => Ok(dir),
            Ok(_) => Err(self.fail(path, format!("{} is not a directory", dir.display()), None)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(self.fail(path, format!("{} does not exist", dir.display()), None))
            }
            Err(e) => Err(self.fail(path, format!("{}: {e}", dir.display()), None)),
        }
    }

    fn backoff(&self, p: &str, raw: RawBackoff) -> Result<Backoff> {
        let default = Backoff::default();
        let initial_path = format!("{p}.initial");
        let initial = self.positive_or(&initial_path, raw.initial.as_deref(), default.initial)?;
        let max_path = format!("{p}.max");
        let max = match &raw.max {
            Some(s) => self.duration(&max_path, s)?,
            None => default.max,
        };
        if initial > max {
            let shown = |written: &Option<String>, d: Duration| match written {
                Some(s) => format!("{s:?}"),
                None => format!("{} by default", humantime::format_duration(d)),
            };
            // Point at whichever of the two the user wrote, initial first.
            let (path, message) = if raw.initial.is_some() {
                (
                    &initial_path,
                    format!(
                        "{} is longer than max ({}); initial must not exceed max",
                        shown(&raw.initial, initial),
                        shown(&raw.max, max)
                    ),
                )
            } else {
                (
                    &max_path,
                    format!(
                        "{} is shorter than initial ({}); max must not be below initial",
                        shown(&raw.max, max),
                        shown(&raw.initial, initial)
                    ),
                )
            };
            return Err(self.fail(path, message, None));
        }
        let factor = raw.factor.unwrap_or(default.factor);
        if !(factor.is_finite() && factor >= 1.0) {
            return Err(self.fail(
                &format!("{p}.factor"),
                format!("must be a finite number of at least 1, got {factor}"),
                None,
            ));
        }
        let jitter = raw.jitter.unwrap_or(default.jitter);
        if !(0.0..=1.0).contains(&jitter) {
            return Err(self.fail(
                &format!("{p}.jitter"),
                format!("must be between 0 and 1, got {jitter}"),
                None,
            ));
        }
        Ok(Backoff {
            initial,
            max,
            factor,
            jitter,
        })
    }

    /// A duration that must be above zero, or `default` when not written.
    fn positive_or(
        &self,
        path: &str,
        written: Option<&str>,
        default: Duration,
    ) -> Result<Duration> {
        written.map_or(Ok(default), |s| self.positive(path, s))
    }

    fn positive(&self, path: &str, s: &str) -> Result<Duration> {
        let d = self.duration(path, s)?;
        if d.is_zero() {
            return Err(self.fail(
                path,
                format!("must be longer than zero, got {s:?}"),
                Some(DURATION_HELP.into()),
            ));
        }
        Ok(d)
    }

    fn duration(&self, path: &str, s: &str) -> Result<Duration> {
        use humantime::DurationError as E;
        humantime::parse_duration(s).map_err(|e| {
            let why = match e {
                E::Empty => "it is empty".to_string(),
                E::UnknownUnit { unit, .. } if unit.is_empty() => "it has no unit".to_string(),
                E::UnknownUnit { unit, .. } => format!("unknown unit {unit:?}"),
                E::NumberOverflow => "it is too large, or finer than a nanosecond".to_string(),
                E::InvalidCharacter(_) | E::NumberExpected(_) => {
                    "expected a number followed by a unit".to_string()
                }
            };
            self.fail(
                path,
                format!("{s:?} is not a duration: {why}"),
                Some(DURATION_HELP.into()),
            )
        })
    }

    // -----------------------------------------------------------------------
    // ron's errors, retold with the field they concern.

    /// ron's error, told in terms of the manifest: which field, what it
    /// should be, and (for typos) what was probably meant.
    fn retell(&self, e: SpannedError) -> Error {
        let reported = self.doc.offset(e.span.start.line, e.span.start.col);
        let offset = match e.code {
            RonError::Eof => reported,
            // ron may point at the blank before the culprit.
            _ => self.doc.next_token(reported).unwrap_or(reported),
        };
        let at = self.doc.innermost(offset);
        let here = at.map_or("", |a| a.path.as_str());
        // The field named by ron, unless `here` is already that field.
        let child = |name: &str| {
            if last_segment(here) == name {
                here.to_string()
            } else {
                join(here, name)
            }
        };

        let (offset, path, message, help) = match &e.code {
            RonError::NoSuchStructField {
                expected, found, ..
            } => (
                offset,
                child(found),
                format!(
                    "unknown field {found:?}; allowed fields: {}",
                    expected.join(", ")
                ),
                did_you_mean(found, expected),
            ),
            RonError::NoSuchEnumVariant {
                expected, found, ..
            } => (
                offset,
                here.to_string(),
                format!(
                    "unknown variant {found:?}; allowed variants: {}",
                    expected.join(", ")
                ),
                did_you_mean(found, expected),
            ),
            RonError::MissingStructField { field, .. } => {
                let path = join(here, field);
                let message = match describe(&path) {
                    Some(what) => format!("required field is missing; expected {what}"),
                    None => "required field is missing".to_string(),
                };
                (offset, path, message, None)
            }
            RonError::DuplicateStructField { field, .. } => (
                offset,
                child(field),
                "is given more than once; write each field once".to_string(),
                None,
            ),
            RonError::ExpectedDifferentStructName { expected, found } => (
                offset,
                here.to_string(),
                format!("expected {expected}(...), found {found}(...)"),
                did_you_mean(found, &[expected]),
            ),
            _ if self.doc.find("").is_none() => (
                self.doc.len(),
                String::new(),
                format!(
                    "the file holds no team; expected {}",
                    describe("").unwrap_or_default()
                ),
                None,
            ),
            code => match self.culprit(code, reported, offset, at) {
                Some((value, what)) => {
                    let found = self.doc.source(value);
                    (
                        value.start,
                        value.path.clone(),
                        format!("expected {what}, found {}", snippet(found)),
                        unquote_help(&value.path, found),
                    )
                }
                None => {
                    let end = self.doc.offset(e.span.end.line, e.span.end.col);
                    self.syntax(code, offset, end, here)
                }
            },
        };
        Error::Manifest {
            file: self.file.to_string(),
            position: Some(self.doc.position(offset)),
            field: (!path.is_empty()).then_some(path),
            message,
            help,
        }
    }

    /// A complaint about the text itself rather than a value: says which
    /// bracket is still open when that is what ron is missing.
    /// `end` is where ron stopped reading.
    fn syntax(
        &self,
        code: &RonError,
        offset: usize,
        end: usize,
        here: &str,
    ) -> (usize, String, String, Option<String>) {
        let at_end = self.doc.next_token(end).is_none();
        let open = self
            .doc
            .open_brackets(if at_end { self.doc.len() } else { offset });
        let innermost_path = |o: usize| {
            self.doc
                .innermost(o)
                .map_or(String::new(), |e| e.path.clone())
        };
        match (code, open.last()) {
            (_, Some(&(opened, bracket)))
                if self
                    .doc
                    .char_at(offset)
                    .is_some_and(|c| ")]}".contains(c) && c != locate::closer(bracket)) =>
            {
                let from = self.doc.position(opened);
                (
                    offset,
                    innermost_path(opened),
                    format!(
                        "found `{}` while the `{bracket}` at {}:{} is still open",
                        self.doc.char_at(offset).unwrap_or(' '),
                        from.line,
                        from.column
                    ),
                    Some(format!("close it with `{}` first", locate::closer(bracket))),
                )
            }
            (RonError::ExpectedComma, Some(&(_, bracket))) if !at_end => (
                offset,
                here.to_string(),
                format!("expected `,` or `{}` before this", locate::closer(bracket)),
                None,
            ),
            (_, Some(&(opened, bracket))) if at_end => {
                let from = self.doc.position(opened);
                (
                    self.doc.len(),
                    innermost_path(opened),
                    format!(
                        "unexpected end of file; the `{bracket}` at {}:{} is never closed",
                        from.line, from.column
                    ),
                    Some(format!("close it with `{}`", locate::closer(bracket))),
                )
            }
            _ => (offset, here.to_string(), syntax_message(code), None),
        }
    }

    /// The value that ron's complaint `code` is really about when the
    /// complaint means "wrong type", with what that value should look like.
    fn culprit<'e>(
        &'e self,
        code: &RonError,
        reported: usize,
        offset: usize,
        at: Option<&'e locate::Entry>,
    ) -> Option<(&'e locate::Entry, &'static str)> {
        // A name, number or string; not a group, which has parts to blame.
        let atom = |e: &locate::Entry| {
            let src = self.doc.source(e);
            src.starts_with(['"', '\'']) || !src.contains(['(', '[', '{', ')', ']', '}'])
        };
        let value = if is_type_error(code) {
            // ron points at the start of the value, or for some numbers
            // inside it (`-1` at the `1`).
            at.filter(|a| a.start == offset || (a.start < offset && atom(a)))
                // `health: Heartbeat`: ron wants a `(` after the name.
                .or_else(|| self.doc.ending_at(reported).filter(|e| atom(e)))
        } else if matches!(code, RonError::ExpectedComma) {
            // `replicas: 2.5`, `restart: Always(1)`: ron read the start of
            // the value as the right type, then stumbled on the rest.
            // Only for leaves: in a list or struct the stumble is a syntax error.
            at.filter(|a| a.start < offset && !self.doc.has_children(&a.path))
        } else {
            None
        };
        let value = value.filter(|v| !self.is_stray(v))?;
        Some((value, describe(&value.path)?))
    }

    /// A bare value directly inside a struct's parentheses, where a field
    /// name belongs (`Role("x")`), as opposed to the inside of `Some(3)`.
    fn is_stray(&self, value: &locate::Entry) -> bool {
        if value.key.is_some() {
            return false;
        }
        match self.doc.find(&value.path) {
            Some(outer) if outer.start < value.start => !self.doc.source(outer).starts_with("Some"),
            _ => false,
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn last_segment(path: &str) -> &str {
    path.rsplit(['.', '[']).next().unwrap_or(path)
}

/// `roles[2].command[0]` → `roles[].command[]`: the shape of a path.
fn shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// What the value at `path` must look like, for type errors.
fn describe(path: &str) -> Option<&'static str> {
    const DURATION: &str = r#"a duration string such as "500ms", "30s" or "10m""#;
    Some(match shape(path).as_str() {
        "" => r#"Team(name: "...", roles: [...])"#,
        "name" => r#"a team name string such as "squad""#,
        "workspace" => r#"a workspace name string such as "demo""#,
        "roles" => r#"a list of roles: [Role(name: "...", command: [...]), ...]"#,
        "roles[]" => r#"a role: Role(name: "...", command: [...], ...)"#,
        "roles[].name" => r#"a role name string such as "worker""#,
        "roles[].replicas" => "an integer from 1 to 1000",
        "roles[].command" => {
            r#"a non-empty list of strings, the program and its arguments: ["sh", "-c", "..."]"#
        }
        "roles[].command[]" => "a string",
        "roles[].env" => r#"a map of strings: {"NAME": "value"}"#,
        "roles[].env[]" => "a string",
        "roles[].cwd" => "a directory path string",
        "roles[].restart" => "one of Always, OnFailure, Never",
        "roles[].backoff" => r#"(initial: "1s", max: "60s", factor: 2.0, jitter: 0.1)"#,
        "roles[].backoff.initial" | "roles[].backoff.max" => DURATION,
        "roles[].backoff.factor" => "a number of at least 1, such as 2.0",
        "roles[].backoff.jitter" => "a number from 0 to 1, such as 0.1",
        "roles[].max_restarts" => "a number of restarts, or None for unlimited",
        "roles[].window"
        | "roles[].reset_after"
        | "roles[].health.timeout"
        | "roles[].ready_after" => DURATION,
        "roles[].health" => r#"Heartbeat(timeout: "30s", failures: 3)"#,
        "roles[].health.failures" => "a positive integer",
        "roles[].shift_last" => "true or false",
        _ => return None,
    })
}

/// ron's complaints that mean "this value has the wrong type".
fn is_type_error(code: &RonError) -> bool {
    matches!(
        code,
        RonError::ExpectedInteger
            | RonError::ExpectedFloat
            | RonError::ExpectedString
            | RonError::ExpectedArray
            | RonError::ExpectedMap
            | RonError::ExpectedBoolean
            | RonError::ExpectedChar
            | RonError::ExpectedByteString
            | RonError::ExpectedOption
            | RonError::ExpectedUnit
            | RonError::ExpectedStructLike
            | RonError::ExpectedNamedStructLike(_)
            | RonError::ExpectedIdentifier
            | RonError::InvalidValueForType { .. }
            | RonError::ExpectedDifferentLength { .. }
            | RonError::IntegerOutOfBounds
            | RonError::InvalidIntegerDigit { .. }
            | RonError::UnderscoreAtBeginning
    )
}

fn syntax_message(code: &RonError) -> String {
    match code {
        RonError::Eof => "unexpected end of file".into(),
        RonError::ExpectedComma => "expected `,` before this".into(),
        RonError::ExpectedArrayEnd => "expected `]` to close the list".into(),
        RonError::ExpectedMapEnd => "expected `}` to close the map".into(),
        RonError::ExpectedStructLikeEnd | RonError::ExpectedOptionEnd => {
            "expected `)` to close the parentheses".into()
        }
        RonError::ExpectedMapColon => "expected `:` between name and value".into(),
        RonError::SuggestRawIdentifier(name) | RonError::InvalidIdentifier(name) => {
            format!("{name:?} is not a valid name")
        }
        RonError::ExpectedStringEnd => "this string is not closed; expected `\"`".into(),
        RonError::UnclosedBlockComment => "this comment is not closed; expected `*/`".into(),
        RonError::TrailingCharacters => "unexpected text after the end of the team".into(),
        RonError::UnexpectedChar(c) => format!("unexpected character {c:?}"),
        RonError::ExpectedIdentifier => "expected a field name, as in `name: value`".into(),
        RonError::ExceededRecursionLimit => "brackets are nested too deeply".into(),
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    }
}

/// The first line of a value, shortened for a message.
fn snippet(source: &str) -> String {
    if source.is_empty() {
        return "nothing".into();
    }
    let line = source.lines().next().unwrap_or("");
    let short: String = line.chars().take(40).collect();
    if short.len() < source.len() {
        format!("{short}...")
    } else {
        short
    }
}

/// `restart: "Always"` is a natural slip: variants take no quotes.
fn unquote_help(path: &str, found: &str) -> Option<String> {
    const VARIANTS: &[&str] = &["Always", "OnFailure", "Never"];
    if shape(path) != "roles[].restart" {
        return None;
    }
    let inner = found.strip_prefix('"')?.strip_suffix('"')?;
    let best = closest(inner, VARIANTS)?;
    Some(format!("variant names take no quotes: write {best}"))
}

fn did_you_mean(found: &str, candidates: &[&str]) -> Option<String> {
    closest(found, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate nearest to `found`, ignoring case, if it is near enough to
/// be a likely typo (about one edit per three characters).
fn closest<'c>(found: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let found = found.to_lowercase();
    let limit = (found.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&found, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// Stands in for `PATH`: every program exists except `no-such-agent`.
    fn fake_path(cmd: &str) -> Result<(), String> {
        match cmd {
            "no-such-agent" => Err(format!("{cmd:?} was not found in any directory on PATH")),
            _ => Ok(()),
        }
    }

    fn accept(text: &str) -> TeamSpec {
        parse("team.ron", text, &fake_path).unwrap_or_else(|e| panic!("refused:\n{e}"))
    }

    fn refuse(text: &str) -> String {
        match parse("team.ron", text, &fake_path) {
            Ok(spec) => panic!("accepted: {spec:#?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A team whose one role is written on line 4, from column 9.
    fn one_role(role: &str) -> String {
        format!("Team(\n    name: \"squad\",\n    roles: [\n        {role},\n    ],\n)\n")
    }

    // --- accepted manifests ------------------------------------------------

    #[test]
    fn a_minimal_role_gets_every_default() {
        let spec = accept(&one_role(r#"Role(name: "worker", command: ["sh"])"#));
        assert_eq!(spec.workspace.as_str(), "default");
        assert_eq!(spec.name.as_str(), "squad");
        assert_eq!(
            spec.roles,
            vec![RoleSpec::with_defaults("worker", 1, &["sh"])]
        );
    }

    #[test]
    fn every_field_written_out() {
        let spec = accept(
            r#"
            // Comments, trailing commas and explicit Some(...) are all fine.
            Team(
                name: "squad",
                workspace: "demo",
                roles: [
                    Role(
                        name: "worker",
                        replicas: 3,
                        command: ["my-agent", "--flag"],
                        env: {"TOKEN_FILE": "/run/token", "MODE": "fast"},
                        cwd: "/srv/project",
                        restart: OnFailure,
                        backoff: (initial: "250ms", max: "2m", factor: 1.5, jitter: 0),
                        max_restarts: Some(7),
                        window: "1h",
                        reset_after: "90s",
                        health: Heartbeat(timeout: "30s", failures: 2),
                    ),
                    Role(name: "lead", command: ["sh"], restart: Never, replicas: Some(2)),
                ],
            )"#,
        );
        assert_eq!(spec.workspace.as_str(), "demo");
        let w = &spec.roles[0];
        assert_eq!(w.replicas, 3);
        assert_eq!(w.command, ["my-agent", "--flag"]);
        assert_eq!(
            w.env,
            BTreeMap::from([
                ("MODE".to_string(), "fast".to_string()),
                ("TOKEN_FILE".to_string(), "/run/token".to_string()),
            ])
        );
        assert_eq!(w.cwd, Some(PathBuf::from("/srv/project")));
        assert_eq!(w.restart, RestartPolicy::OnFailure);
        assert_eq!(
            w.backoff,
            Backoff {
                initial: Duration::from_millis(250),
                max: Duration::from_secs(120),
                factor: 1.5,
                jitter: 0.0,
            }
        );
        assert_eq!(w.max_restarts, Some(7));
        assert_eq!(w.window, Duration::from_secs(3600));
        assert_eq!(w.reset_after, Duration::from_secs(90));
        assert_eq!(
            w.health,
            Some(Health::Heartbeat {
                timeout: Duration::from_secs(30),
                failures: 2
            })
        );
        let lead = &spec.roles[1];
        assert_eq!((lead.replicas, lead.restart), (2, RestartPolicy::Never));
    }

    #[test]
    fn max_restarts_absent_is_five_and_none_is_unlimited() {
        let budget = |field: &str| {
            let spec = accept(&one_role(&format!(
                r#"Role(name: "worker", command: ["sh"]{field})"#
            )));
            spec.roles[0].max_restarts
        };
        assert_eq!(budget(""), Some(5));
        assert_eq!(budget(", max_restarts: None"), None);
        assert_eq!(budget(", max_restarts: 0"), Some(0));
        assert_eq!(budget(", max_restarts: 9"), Some(9));
        assert_eq!(budget(", max_restarts: Some(9)"), Some(9));
    }

    #[test]
    fn backoff_fields_default_one_by_one() {
        let spec = accept(&one_role(
            r#"Role(name: "worker", command: ["sh"], backoff: (max: "5s"))"#,
        ));
        assert_eq!(
            spec.roles[0].backoff,
            Backoff {
                max: Duration::from_secs(5),
                ..Backoff::default()
            }
        );
    }

    #[test]
    fn heartbeat_failures_default_to_three() {
        let spec = accept(&one_role(
            r#"Role(name: "worker", command: ["sh"], health: Heartbeat(timeout: "5s"))"#,
        ));
        assert_eq!(
            spec.roles[0].health,
            Some(Health::Heartbeat {
                timeout: Duration::from_secs(5),
                failures: 3
            })
        );
    }

    #[test]
    fn shift_last_defaults_to_false_and_orders_nothing_else() {
        let spec = accept(&one_role(
            r#"Role(name: "lead", command: ["sh"], shift_last: true)"#,
        ));
        assert!(spec.roles[0].shift_last);
        let spec = accept(&one_role(r#"Role(name: "lead", command: ["sh"])"#));
        assert!(!spec.roles[0].shift_last);
    }

    #[test]
    fn ready_after_defaults_to_a_second_and_may_be_zero() {
        let spec = accept(&one_role(r#"Role(name: "w", command: ["sh"])"#));
        assert_eq!(spec.roles[0].ready_after, Duration::from_secs(1));
        let spec = accept(&one_role(
            r#"Role(name: "w", command: ["sh"], ready_after: "0s")"#,
        ));
        assert_eq!(spec.roles[0].ready_after, Duration::ZERO);
        let spec = accept(&one_role(
            r#"Role(name: "w", command: ["sh"], ready_after: "250ms")"#,
        ));
        assert_eq!(spec.roles[0].ready_after, Duration::from_millis(250));
        assert!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], ready_after: "soon")"#
            ))
            .contains("roles[0].ready_after: \"soon\" is not a duration"),
        );
    }

    #[test]
    fn shift_last_must_be_a_boolean() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], shift_last: "yes")"#
            )),
            "error: team.ron:4:54: roles[0].shift_last: expected true or false, found \"yes\""
        );
    }

    #[test]
    fn parse_keeps_a_relative_cwd_as_written() {
        let spec = accept(&one_role(
            r#"Role(name: "worker", command: ["sh"], cwd: "sub/dir")"#,
        ));
        assert_eq!(spec.roles[0].cwd, Some(PathBuf::from("sub/dir")));
    }

    #[test]
    fn load_makes_cwd_absolute_from_the_manifest_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        let file = dir.path().join("team.ron");
        std::fs::write(
            &file,
            one_role(r#"Role(name: "worker", command: ["sh"], cwd: "work")"#),
        )
        .unwrap();
        let spec = load(&file).unwrap();
        assert_eq!(spec.roles[0].cwd, Some(dir.path().join("work")));
    }

    // --- refused manifests: one test per kind of mistake -------------------

    #[test]
    fn syntax_error() {
        assert_eq!(
            refuse(
                r#"Team(
    name: "squad",
    roles: [
        Role(name: "worker", command: ["sh"])
        Role(name: "lead", command: ["sh"]),
    ],
)"#
            ),
            "error: team.ron:5:9: roles[1]: expected `,` or `]` before this"
        );
    }

    #[test]
    fn unclosed_bracket() {
        assert_eq!(
            refuse(
                "Team(\n    name: \"squad\",\n    roles: [Role(name: \"w\", command: [\"sh\"])]\n"
            ),
            "error: team.ron:4:1: unexpected end of file; the `(` at 1:5 is never closed\n\
             help: close it with `)`"
        );
    }

    #[test]
    fn mismatched_bracket() {
        assert_eq!(
            refuse(&one_role(r#"Role(name: "w", command: ["sh"]]"#)),
            "error: team.ron:4:40: roles[0]: found `]` while the `(` at 4:13 is still open\n\
             help: close it with `)` first"
        );
    }

    #[test]
    fn value_left_out() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], window: , replicas: 2)"#
            )),
            "error: team.ron:4:50: roles[0].window: expected a duration string such as \"500ms\", \
             \"30s\" or \"10m\", found nothing"
        );
    }

    #[test]
    fn unclosed_string() {
        assert_eq!(
            refuse(&one_role(r#"Role(name: "worker", command: ["sh", "-c])"#)),
            "error: team.ron:4:46: roles[0].command[1]: this string is not closed; expected `\"`"
        );
    }

    #[test]
    fn text_after_the_team() {
        assert_eq!(
            refuse(&format!(
                "{}  x\n",
                one_role(r#"Role(name: "w", command: ["sh"])"#)
            )),
            "error: team.ron:7:3: unexpected text after the end of the team"
        );
    }

    #[test]
    fn no_team_at_all() {
        assert_eq!(
            refuse("// nothing yet\n"),
            "error: team.ron:2:1: the file holds no team; expected Team(name: \"...\", roles: [...])"
        );
    }

    #[test]
    fn unknown_field() {
        assert_eq!(
            refuse(
                r#"Team(
    name: "squad",
    roles: [
        Role(
            name: "worker",
            replicass: 2,
            command: ["sh"],
        ),
    ],
)"#
            ),
            "error: team.ron:6:13: roles[0].replicass: unknown field \"replicass\"; allowed fields: \
             name, replicas, command, env, cwd, restart, backoff, max_restarts, window, reset_after, health, ready_after, shift_last\n\
             help: did you mean `replicas`?"
        );
    }

    #[test]
    fn unknown_field_with_no_likely_meaning() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], backoff: (colour: "red"))"#
            )),
            "error: team.ron:4:52: roles[0].backoff.colour: unknown field \"colour\"; \
             allowed fields: initial, max, factor, jitter"
        );
    }

    #[test]
    fn unknown_variant() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], restart: Allways)"#
            )),
            "error: team.ron:4:51: roles[0].restart: unknown variant \"Allways\"; \
             allowed variants: Always, OnFailure, Never\n\
             help: did you mean `Always`?"
        );
    }

    #[test]
    fn variant_written_as_a_string() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], restart: "onfailure")"#
            )),
            "error: team.ron:4:51: roles[0].restart: expected one of Always, OnFailure, Never, \
             found \"onfailure\"\n\
             help: variant names take no quotes: write OnFailure"
        );
    }

    #[test]
    fn wrong_type() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", replicas: "two", command: ["sh"])"#
            )),
            "error: team.ron:4:35: roles[0].replicas: expected an integer from 1 to 1000, found \"two\""
        );
    }

    #[test]
    fn wrong_type_inside_a_list() {
        assert_eq!(
            refuse(&one_role(r#"Role(name: "w", command: ["sleep", 3])"#)),
            "error: team.ron:4:44: roles[0].command[1]: expected a string, found 3"
        );
    }

    #[test]
    fn wrong_type_noticed_partway_through_the_value() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", replicas: 2.5, command: ["sh"])"#
            )),
            "error: team.ron:4:35: roles[0].replicas: expected an integer from 1 to 1000, found 2.5"
        );
    }

    #[test]
    fn health_check_without_its_settings() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], health: Heartbeat)"#
            )),
            "error: team.ron:4:50: roles[0].health: expected Heartbeat(timeout: \"30s\", failures: 3), \
             found Heartbeat"
        );
    }

    #[test]
    fn missing_required_field() {
        assert_eq!(
            refuse(
                r#"Team(
    name: "squad",
    roles: [
        Role(
            name: "worker",
        ),
    ],
)"#
            ),
            "error: team.ron:6:9: roles[0].command: required field is missing; expected a non-empty \
             list of strings, the program and its arguments: [\"sh\", \"-c\", \"...\"]"
        );
    }

    #[test]
    fn field_given_twice() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", replicas: 2, replicas: 3, command: ["sh"])"#
            )),
            "error: team.ron:4:38: roles[0].replicas: is given more than once; write each field once"
        );
    }

    #[test]
    fn misspelled_struct_name() {
        assert_eq!(
            refuse(r#"Teem(name: "squad", roles: [])"#),
            "error: team.ron:1:1: expected Team(...), found Teem(...)\nhelp: did you mean `Team`?"
        );
    }

    #[test]
    fn zero_replicas() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", replicas: 0, command: ["sh"])"#
            )),
            "error: team.ron:4:35: roles[0].replicas: must be between 1 and 1000, got 0"
        );
    }

    #[test]
    fn too_many_replicas() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", replicas: 1001, command: ["sh"])"#
            )),
            "error: team.ron:4:35: roles[0].replicas: must be between 1 and 1000, got 1001"
        );
    }

    #[test]
    fn empty_command() {
        assert_eq!(
            refuse(&one_role(r#"Role(name: "w", command: [])"#)),
            "error: team.ron:4:34: roles[0].command: must not be empty; give the program and its \
             arguments, e.g. [\"sh\", \"-c\", \"...\"]"
        );
    }

    #[test]
    fn duplicate_role_names_point_at_the_second() {
        assert_eq!(
            refuse(
                r#"Team(
    name: "squad",
    roles: [
        Role(name: "worker", command: ["sh"]),
        Role(name: "lead", command: ["sh"]),
        Role(name: "worker", command: ["sh"]),
    ],
)"#
            ),
            "error: team.ron:6:20: roles[2].name: role \"worker\" is declared twice (also roles[0]); \
             role names must be unique within a team"
        );
    }

    #[test]
    fn team_name_unsafe_for_tmux() {
        assert_eq!(
            refuse(r#"Team(name: "my.squad", roles: [Role(name: "w", command: ["sh"])])"#),
            "error: team.ron:1:12: name: \"my.squad\" is not allowed; use lower-case letters, \
             digits, '-' and '_', starting with a letter or digit ([a-z0-9][a-z0-9_-]*)"
        );
    }

    #[test]
    fn role_name_too_long() {
        let long = "a".repeat(41);
        assert_eq!(
            refuse(&one_role(&format!(
                r#"Role(name: "{long}", command: ["sh"])"#
            ))),
            format!(
                "error: team.ron:4:20: roles[0].name: \"{long}\" is 41 characters long; at most 40 are allowed"
            )
        );
    }

    #[test]
    fn empty_workspace_name() {
        assert_eq!(
            refuse(
                r#"Team(name: "squad", workspace: "", roles: [Role(name: "w", command: ["sh"])])"#
            ),
            "error: team.ron:1:32: workspace: must not be empty; use lower-case letters, digits, \
             '-' and '_', starting with a letter or digit"
        );
    }

    #[test]
    fn duration_without_a_unit() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], window: "10")"#
            )),
            "error: team.ron:4:50: roles[0].window: \"10\" is not a duration: it has no unit\n\
             help: write a number and a unit, e.g. \"250ms\", \"2s\", \"5m\" or \"1h\""
        );
    }

    #[test]
    fn duration_with_an_unknown_unit() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], reset_after: "5 fortnights")"#
            )),
            "error: team.ron:4:55: roles[0].reset_after: \"5 fortnights\" is not a duration: \
             unknown unit \"fortnights\"\n\
             help: write a number and a unit, e.g. \"250ms\", \"2s\", \"5m\" or \"1h\""
        );
    }

    #[test]
    fn zero_initial_backoff() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], backoff: (initial: "0s"))"#
            )),
            "error: team.ron:4:61: roles[0].backoff.initial: must be longer than zero, got \"0s\"\n\
             help: write a number and a unit, e.g. \"250ms\", \"2s\", \"5m\" or \"1h\""
        );
    }

    #[test]
    fn zero_window() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], window: "0ms")"#
            )),
            "error: team.ron:4:50: roles[0].window: must be longer than zero, got \"0ms\"\n\
             help: write a number and a unit, e.g. \"250ms\", \"2s\", \"5m\" or \"1h\""
        );
    }

    #[test]
    fn initial_longer_than_max() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], backoff: (initial: "2m", max: "90s"))"#
            )),
            "error: team.ron:4:61: roles[0].backoff.initial: \"2m\" is longer than max (\"90s\"); \
             initial must not exceed max"
        );
    }

    #[test]
    fn max_shorter_than_the_default_initial() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], backoff: (max: "500ms"))"#
            )),
            "error: team.ron:4:57: roles[0].backoff.max: \"500ms\" is shorter than initial \
             (1s by default); max must not be below initial"
        );
    }

    #[test]
    fn factor_below_one() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], backoff: (factor: 0.5))"#
            )),
            "error: team.ron:4:60: roles[0].backoff.factor: must be a finite number of at least 1, got 0.5"
        );
    }

    #[test]
    fn factor_not_finite() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], backoff: (factor: inf))"#
            )),
            "error: team.ron:4:60: roles[0].backoff.factor: must be a finite number of at least 1, got inf"
        );
    }

    #[test]
    fn jitter_above_one() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], backoff: (jitter: 1.5))"#
            )),
            "error: team.ron:4:60: roles[0].backoff.jitter: must be between 0 and 1, got 1.5"
        );
    }

    #[test]
    fn negative_max_restarts() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], max_restarts: -1)"#
            )),
            "error: team.ron:4:56: roles[0].max_restarts: expected a number of restarts, or None \
             for unlimited, found -1"
        );
    }

    #[test]
    fn zero_heartbeat_failures() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], health: Heartbeat(timeout: "5s", failures: 0))"#
            )),
            "error: team.ron:4:85: roles[0].health.failures: must be at least 1, got 0"
        );
    }

    #[test]
    fn misspelled_health_check() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], health: HeartBeat(timeout: "5s"))"#
            )),
            "error: team.ron:4:50: roles[0].health: unknown variant \"HeartBeat\"; \
             allowed variants: Heartbeat\n\
             help: did you mean `Heartbeat`?"
        );
    }

    #[test]
    fn environment_name_with_equals_sign() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], env: {"A=B": "c"})"#
            )),
            "error: team.ron:4:47: roles[0].env: \"A=B\" cannot be an environment variable name: \
             it contains '='"
        );
    }

    #[test]
    fn no_roles() {
        assert_eq!(
            refuse(r#"Team(name: "squad", roles: [])"#),
            "error: team.ron:1:28: roles: a team needs at least one role\n\
             help: add one, e.g. roles: [Role(name: \"worker\", command: [\"sh\"])]"
        );
    }

    #[test]
    fn program_not_on_path() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["no-such-agent", "--flag"])"#
            )),
            "error: team.ron:4:35: roles[0].command[0]: \"no-such-agent\" was not found in any \
             directory on PATH\n\
             help: give the full path to the program, or add its directory to PATH"
        );
    }

    #[test]
    fn load_refuses_a_cwd_that_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("team.ron");
        std::fs::write(
            &file,
            one_role(r#"Role(name: "w", command: ["sh"], cwd: "team.ron")"#),
        )
        .unwrap();
        assert_eq!(
            load(&file).unwrap_err().to_string(),
            format!(
                "error: {0}:4:47: roles[0].cwd: {0} is not a directory",
                file.display()
            )
        );
        std::fs::write(
            &file,
            one_role(r#"Role(name: "w", command: ["sh"], cwd: "gone")"#),
        )
        .unwrap();
        assert_eq!(
            load(&file).unwrap_err().to_string(),
            format!(
                "error: {}:4:47: roles[0].cwd: {} does not exist",
                file.display(),
                dir.path().join("gone").display()
            )
        );
    }

    #[test]
    fn load_names_an_unreadable_file() {
        let err = load(Path::new("/no/such/team.ron")).unwrap_err();
        assert_eq!(err.code(), crate::error::exit::FAILURE);
        assert_eq!(
            err.to_string(),
            "error: /no/such/team.ron: No such file or directory (os error 2)"
        );
    }

    // --- the real PATH check -----------------------------------------------

    #[test]
    fn programs_are_found_on_path_only_when_executable() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let runnable = write("runnable", 0o755);
        let plain = write("plain", 0o644);
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        let path_var = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        let check = |cmd: &str| check_in(cmd, Some(&path_var));

        assert_eq!(check("runnable"), Ok(()));
        assert_eq!(check(runnable.to_str().unwrap()), Ok(()));
        assert_eq!(
            check("plain"),
            Err(format!(
                "\"plain\" was found at {} but it is not executable",
                plain.display()
            ))
        );
        assert_eq!(
            check(plain.to_str().unwrap()),
            Err(format!("{} is not executable", plain.display()))
        );
        assert_eq!(
            check("subdir"),
            Err("\"subdir\" was not found in any directory on PATH".into())
        );
        assert_eq!(
            check(dir.path().join("subdir").to_str().unwrap()),
            Err(format!(
                "{}/subdir is a directory, not a program",
                dir.path().display()
            ))
        );
        assert_eq!(check("./missing"), Err("./missing does not exist".into()));
        assert_eq!(
            check_in("sh", None),
            Err("\"sh\" cannot be looked up: PATH is not set".into())
        );
        assert_eq!(check(""), Err("the program name is empty".into()));
    }

    #[test]
    fn suggestions_ignore_case_and_stay_close() {
        assert_eq!(closest("always", &["Always", "Never"]), Some("Always"));
        assert_eq!(
            closest("reset-after", &["reset_after", "window"]),
            Some("reset_after")
        );
        assert_eq!(
            closest("colour", &["initial", "max", "factor", "jitter"]),
            None
        );
    }

    // --- shipped examples --------------------------------------------------

    #[test]
    fn every_example_team_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("roles");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "ron"))
            .collect();
        files.sort();
        assert!(
            files.len() >= 2,
            "expected example teams in {}",
            dir.display()
        );
        for file in files {
            if let Err(e) = load(&file) {
                panic!("{} is refused:\n{e}", file.display());
            }
        }
    }

    // --- no input makes the parser panic -----------------------------------

    const VALID: &str = r##"Team(
    name: "squad",
    workspace: "demo", // trailing comment
    roles: [
        Role(
            name: "worker",
            replicas: 2,
            command: ["sh", "-c", "echo \"hi\"; exit 1"],
            env: {"K": "V"},
            cwd: "/tmp",
            restart: OnFailure,
            backoff: (initial: "1s", max: "60s", factor: 2.0, jitter: 0.1),
            max_restarts: None,
            window: "10m",
            reset_after: "10m",
            health: Heartbeat(timeout: "30s", failures: 3),
        ),
        /* a second role */ Role(name: "lead", command: [r#"sh"#], max_restarts: Some(1)),
    ],
)
"##;

    /// Whatever the text, the parser either refuses it with a manifest
    /// error that points into the text, or returns a team that keeps every
    /// rule the validated types promise.
    fn assert_refused_cleanly(text: &str) {
        match parse("fuzz.ron", text, &fake_path) {
            Ok(spec) => assert_valid(&spec),
            Err(e @ Error::Manifest { .. }) => {
                let shown = e.to_string();
                assert!(shown.starts_with("error: fuzz.ron"), "{shown}");
                if let Error::Manifest {
                    position: Some(p), ..
                } = &e
                {
                    let lines = text.split('\n').count();
                    assert!(
                        p.line >= 1 && p.line <= lines + 1,
                        "{shown} in {lines} lines"
                    );
                }
            }
            Err(other) => panic!("not a manifest error: {other:?}"),
        }
    }

    fn assert_valid(spec: &TeamSpec) {
        let mut names = std::collections::BTreeSet::new();
        for r in &spec.roles {
            assert!(names.insert(r.name.as_str()), "duplicate role {}", r.name);
            assert!(!r.name.as_str().contains(['.', ':']), "{}", r.name);
            assert!(r.replicas <= crate::domain::spec::MAX_REPLICAS);
            assert!(!r.command.is_empty());
            assert!(r.backoff.initial <= r.backoff.max, "{:?}", r.backoff);
            assert!(
                r.backoff.factor >= 1.0 && r.backoff.jitter >= 0.0,
                "{:?}",
                r.backoff
            );
        }
    }

    #[test]
    fn the_fuzzing_seed_is_valid() {
        assert_eq!(accept(VALID).roles.len(), 2);
    }

    /// One edit to a text: delete, insert or repeat a few characters.
    #[derive(Debug, Clone)]
    enum Edit {
        Delete(usize, usize),
        Insert(usize, char),
        Repeat(usize, usize),
    }

    fn apply(text: &str, edits: &[Edit]) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for edit in edits {
            let n = chars.len();
            match *edit {
                Edit::Delete(at, len) if n > 0 => {
                    let at = at % n;
                    chars.drain(at..(at + len).min(n));
                }
                Edit::Insert(at, c) => chars.insert(at % (n + 1), c),
                Edit::Repeat(at, len) if n > 0 => {
                    let at = at % n;
                    let piece: Vec<char> = chars[at..(at + len).min(n)].to_vec();
                    chars.splice(at..at, piece);
                }
                _ => {}
            }
        }
        chars.into_iter().collect()
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let significant =
            prop::sample::select("()[]{},:\"'#/*\\ \n0-_.aeNrSé".chars().collect::<Vec<_>>());
        prop_oneof![
            (any::<usize>(), 1..8usize).prop_map(|(a, l)| Edit::Delete(a, l)),
            (any::<usize>(), significant).prop_map(|(a, c)| Edit::Insert(a, c)),
            (any::<usize>(), any::<char>()).prop_map(|(a, c)| Edit::Insert(a, c)),
            (any::<usize>(), 1..40usize).prop_map(|(a, l)| Edit::Repeat(a, l)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_text_is_refused_cleanly(text in any::<String>()) {
            assert_refused_cleanly(&text);
        }

        #[test]
        fn ron_like_text_is_refused_cleanly(text in "[()\\[\\]{},:\" a-zA-Z0-9_/*\n#'-]{0,80}") {
            assert_refused_cleanly(&text);
        }

        #[test]
        fn mutated_manifests_are_refused_cleanly(edits in prop::collection::vec(edit(), 1..6)) {
            assert_refused_cleanly(&apply(VALID, &edits));
        }
    }
}
