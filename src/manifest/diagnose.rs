//! Turns what went wrong into a message a person can act on: ron's
//! complaints and the validation's refusals become
//! `FILE:LINE:COL: field: message`, with the value's expected shape and a
//! "did you mean" where a name was probably misspelled.

use ron::error::{Error as RonError, SpannedError};

use crate::error::Error;

use super::locate::{self, Located};
use super::validate::Refusal;

/// Separates a field rule's message from its advice, inside the one string
/// that serde lets a rule's error carry through ron.
const HELP_SEPARATOR: &str = "\nhelp: ";

/// A field rule's message with advice, for [`split_help`] to take apart.
pub(super) fn with_help(message: &str, help: &str) -> String {
    format!("{message}{HELP_SEPARATOR}{help}")
}

fn split_help(text: &str) -> (String, Option<String>) {
    match text.split_once(HELP_SEPARATOR) {
        Some((message, help)) => (message.to_string(), Some(help.to_string())),
        None => (text.to_string(), None),
    }
}

/// A refusal from validation, pointed at the value it concerns (or, for a
/// field left to its default, at its closest written ancestor).
pub(super) fn refusal(file: &str, text: &str, r: Refusal) -> Error {
    let doc = Located::new(text);
    Error::Manifest {
        file: file.to_string(),
        position: Some(doc.position_of(&r.path)),
        field: (!r.path.is_empty()).then_some(r.path),
        message: r.message,
        help: r.help,
    }
}

/// ron's error, told in terms of the manifest.
pub(super) fn ron_error(file: &str, text: &str, e: SpannedError) -> Error {
    Cx {
        file,
        doc: Located::new(text),
    }
    .retell(e)
}

/// One manifest's label and its located text.
struct Cx<'a> {
    file: &'a str,
    doc: Located<'a>,
}

impl Cx<'_> {
    /// ron's error, told in terms of the manifest: which field, what it
    /// should be, and (for typos) what was probably meant.
    fn retell(&self, e: SpannedError) -> Error {
        if let RonError::Message(text) = &e.code {
            return self.field_rule(text, &e);
        }
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

    /// A value that broke its field's rule (one of the spec's checked
    /// types refused it). ron's span ends just past the value (a string's
    /// closing quote, a list's `]`), so its last character names the field.
    fn field_rule(&self, text: &str, e: &SpannedError) -> Error {
        let end = self.doc.offset(e.span.end.line, e.span.end.col);
        let path = self
            .doc
            .innermost(self.doc.char_before(end))
            .map_or(String::new(), |a| a.path.clone());
        let (message, help) = split_help(text);
        Error::Manifest {
            file: self.file.to_string(),
            position: Some(self.doc.position_of(&path)),
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
        "roles[].layout" => "Windows or Tiled",
        "roles[].worktree" => r#"(repo: "..", branch: "agents/{role}-{slot}")"#,
        "roles[].worktree.repo" => "the directory of a git repository",
        "roles[].worktree.branch" => {
            r#"a branch name string with {slot}, such as "agents/{role}-{slot}""#
        }
        "roles[].resume" => {
            r#"a non-empty list of strings, the program and its arguments: ["claude", "--continue"]"#
        }
        "roles[].resume[]" => "a string",
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
pub(super) fn closest<'c>(found: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let found = found.to_lowercase();
    let limit = (found.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&found, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
