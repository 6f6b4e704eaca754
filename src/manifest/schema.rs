//! The manifest file format as written: serde structs that refuse unknown
//! fields, whose fields are the spec's checked types, so that ron refuses a
//! value that breaks its field's rule where it is written. These types never
//! leave the manifest module.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use ron::error::SpannedError;
use ron::extensions::Extensions;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::domain::spec::{
    BranchTemplate, Command, Cwd, Env, Factor, Failures, Jitter, Layout, Name, NonZeroSpan,
    Pattern, Replicas, Repo, RestartPolicy, Span, SpanError, Triggers,
};

use super::diagnose::with_help;

pub(super) const DURATION_HELP: &str =
    r#"write a number and a unit, e.g. "250ms", "2s", "5m" or "1h""#;

/// Parses manifest text into the written form of a team.
pub(super) fn read(text: &str) -> Result<RawTeam, SpannedError> {
    // Without IMPLICIT_SOME every optional field would need `Some(...)`.
    let options = ron::Options::default().with_default_extension(Extensions::IMPLICIT_SOME);
    options.from_str(text)
}

// Field order here is the order listed in "allowed fields" messages, so it
// follows the documented schema.

#[derive(Debug, Deserialize)]
#[serde(rename = "Team", deny_unknown_fields)]
pub(super) struct RawTeam {
    pub name: Name,
    #[serde(default)]
    pub workspace: Option<Name>,
    pub roles: Vec<RawRole>,
    #[serde(default)]
    pub notify: Option<Vec<RawNotify>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Role", deny_unknown_fields)]
pub(super) struct RawRole {
    pub name: Name,
    #[serde(default)]
    pub replicas: Option<Declared>,
    pub command: Command,
    #[serde(default)]
    pub env: Option<Env>,
    #[serde(default)]
    pub cwd: Option<Cwd>,
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    #[serde(default)]
    pub backoff: Option<RawBackoff>,
    #[serde(default)]
    pub max_restarts: RawBudget,
    #[serde(default)]
    pub window: Option<Written<NonZeroSpan>>,
    #[serde(default)]
    pub reset_after: Option<Written<NonZeroSpan>>,
    #[serde(default)]
    pub health: Option<RawHealth>,
    #[serde(default)]
    pub ready_after: Option<Written<Span>>,
    #[serde(default)]
    pub shift_last: Option<bool>,
    #[serde(default)]
    pub layout: Option<Layout>,
    #[serde(default)]
    pub worktree: Option<RawWorktree>,
    #[serde(default)]
    pub resume: Option<Command>,
    #[serde(default)]
    pub idle_after: Option<Written<NonZeroSpan>>,
    #[serde(default)]
    pub waiting: Option<Pattern>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Worktree", deny_unknown_fields)]
pub(super) struct RawWorktree {
    pub repo: Repo,
    #[serde(default)]
    pub branch: Option<RawBranch>,
}

/// A branch name as written; a refusal carries its advice.
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct RawBranch(pub BranchTemplate);

impl TryFrom<String> for RawBranch {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        BranchTemplate::new(&s)
            .map(RawBranch)
            .map_err(|e| with_help(&e.message, &e.help))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Notify", deny_unknown_fields)]
pub(super) struct RawNotify {
    pub on: Triggers,
    pub command: Command,
    #[serde(default)]
    pub timeout: Option<Written<NonZeroSpan>>,
    #[serde(default)]
    pub coalesce: Option<Written<Span>>,
}

/// `replicas` as a manifest may declare it: at least one.
#[derive(Debug, Deserialize)]
#[serde(try_from = "i64")]
pub(super) struct Declared(pub Replicas);

impl TryFrom<i64> for Declared {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        Replicas::declared(n).map(Declared)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename = "Backoff", deny_unknown_fields)]
pub(super) struct RawBackoff {
    #[serde(default)]
    pub initial: Option<Written<NonZeroSpan>>,
    #[serde(default)]
    pub max: Option<Written<Span>>,
    #[serde(default)]
    pub factor: Option<Factor>,
    #[serde(default)]
    pub jitter: Option<Jitter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Health", deny_unknown_fields)]
pub(super) enum RawHealth {
    Heartbeat {
        timeout: Written<NonZeroSpan>,
        #[serde(default)]
        failures: Option<Failures>,
    },
}

/// `max_restarts` as written. A plain `Option` cannot tell a field left out
/// (the default budget) from `max_restarts: None` (unlimited).
#[derive(Debug, Default)]
pub(super) enum RawBudget {
    #[default]
    Absent,
    Unlimited,
    Limit(u32),
}

impl<'de> Deserialize<'de> for RawBudget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Budget;
        impl<'de> Visitor<'de> for Budget {
            type Value = RawBudget;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of restarts or None")
            }
            fn visit_none<E>(self) -> Result<RawBudget, E> {
                Ok(RawBudget::Unlimited)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawBudget, D::Error> {
                u32::deserialize(d).map(RawBudget::Limit)
            }
        }
        d.deserialize_option(Budget)
    }
}

/// A duration as written (`"250ms"`), checked by the rule of `T`; the text
/// is kept, so that messages quote what the user wrote.
#[derive(Debug)]
pub(super) struct Written<T> {
    pub text: String,
    pub value: T,
}

impl<T: TryFrom<Duration, Error = SpanError>> Written<T> {
    pub fn parse(text: &str) -> Result<Written<T>, String> {
        use humantime::DurationError as E;
        let d = humantime::parse_duration(text).map_err(|e| {
            let why = match e {
                E::Empty => "it is empty".to_string(),
                E::UnknownUnit { unit, .. } if unit.is_empty() => "it has no unit".to_string(),
                E::UnknownUnit { unit, .. } => format!("unknown unit {unit:?}"),
                E::NumberOverflow => "it is too large, or finer than a nanosecond".to_string(),
                E::InvalidCharacter(_) | E::NumberExpected(_) => {
                    "expected a number followed by a unit".to_string()
                }
            };
            with_help(&format!("{text:?} is not a duration: {why}"), DURATION_HELP)
        })?;
        let value = T::try_from(d).map_err(|e| match e {
            SpanError::Zero => with_help(&e.explain(&format!("{text:?}")), DURATION_HELP),
            SpanError::TooLong(_) => e.explain(&format!("{text:?}")),
        })?;
        Ok(Written {
            text: text.to_string(),
            value,
        })
    }
}

impl<'de, T: TryFrom<Duration, Error = SpanError>> Deserialize<'de> for Written<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text<T>(PhantomData<T>);
        impl<T: TryFrom<Duration, Error = SpanError>> Visitor<'_> for Text<T> {
            type Value = Written<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Written<T>, E> {
                Written::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(Text(PhantomData))
    }
}
