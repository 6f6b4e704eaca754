//! The one error type of marvel. Every failure a user can see is a variant
//! here, rendered in one place with what failed, where, and what to do next,
//! and mapped to one documented exit code.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Exit codes, documented in the README. Each class of failure has its own.
pub mod exit {
    pub const OK: i32 = 0;
    /// Anything not covered below (an I/O failure, a bug).
    pub const FAILURE: i32 = 1;
    /// Bad command-line usage, including an ambiguous key.
    pub const USAGE: i32 = 2;
    /// The manifest was refused; nothing was applied.
    pub const INVALID_MANIFEST: i32 = 3;
    /// No workspace, team, role or session has that key.
    pub const NOT_FOUND: i32 = 4;
    /// The request is valid but marvel refuses it as things stand, for
    /// example spawning for a frozen role or typing into a crashed session.
    pub const REFUSED: i32 = 5;
    /// The daemon could not be reached or started.
    pub const DAEMON_UNAVAILABLE: i32 = 6;
    /// tmux is missing or its server cannot be reached.
    pub const TMUX_UNAVAILABLE: i32 = 7;
    /// With `--all-contexts`: some contexts answered and are shown, others
    /// did not (each is named with its reason on stderr).
    pub const PARTIAL: i32 = 8;
}

/// Where in a manifest a problem is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Error {
    /// The command line itself is wrong.
    Usage { message: String },
    /// A manifest was refused. `field` is the dotted path of the field at
    /// fault (`roles[0].replicas`), when there is one.
    Manifest {
        file: String,
        position: Option<Position>,
        field: Option<String>,
        message: String,
        help: Option<String>,
    },
    /// No resource of kind `kind` is named `key`.
    NotFound {
        kind: String,
        key: String,
        /// A did-you-mean, or where to look.
        #[serde(default)]
        help: Option<String>,
    },
    /// `key` names more than one resource.
    Ambiguous {
        kind: String,
        key: String,
        candidates: Vec<String>,
    },
    /// The request is understood and refused.
    Refused {
        message: String,
        help: Option<String>,
    },
    /// The daemon cannot be reached or started.
    DaemonUnavailable { message: String },
    /// The state directory, a file in it, or the process behind its socket
    /// is not safe to trust: another user could control it.
    Untrusted { message: String, help: String },
    /// tmux is missing, or its server does not answer.
    TmuxUnavailable { message: String },
    /// Another host's daemon cannot be reached over ssh (or speaks another
    /// protocol): what happened, and what to do.
    Unreachable { message: String, help: String },
    /// A file or socket operation failed; `object` names the path.
    Io { object: String, message: String },
    /// Anything else.
    Other { message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn usage(message: impl Into<String>) -> Error {
        Error::Usage {
            message: message.into(),
        }
    }

    pub fn refused(message: impl Into<String>, help: Option<String>) -> Error {
        Error::Refused {
            message: message.into(),
            help,
        }
    }

    pub fn not_found(kind: &str, key: impl Into<String>) -> Error {
        Error::NotFound {
            kind: kind.to_string(),
            key: key.into(),
            help: None,
        }
    }

    /// Adds advice to a not-found or refused error (others are unchanged).
    pub fn with_help(mut self, advice: impl Into<String>) -> Error {
        if let Error::NotFound { help, .. } | Error::Refused { help, .. } = &mut self {
            *help = Some(advice.into());
        }
        self
    }

    pub fn other(message: impl Into<String>) -> Error {
        Error::Other {
            message: message.into(),
        }
    }

    pub fn daemon(message: impl Into<String>) -> Error {
        Error::DaemonUnavailable {
            message: message.into(),
        }
    }

    pub fn untrusted(message: impl Into<String>, help: impl Into<String>) -> Error {
        Error::Untrusted {
            message: message.into(),
            help: help.into(),
        }
    }

    pub fn unreachable(message: impl Into<String>, help: impl Into<String>) -> Error {
        Error::Unreachable {
            message: message.into(),
            help: help.into(),
        }
    }

    pub fn tmux(message: impl Into<String>) -> Error {
        Error::TmuxUnavailable {
            message: message.into(),
        }
    }

    /// An I/O failure on `path`, keeping the system's message.
    pub fn io(path: impl AsRef<Path>, err: &std::io::Error) -> Error {
        Error::Io {
            object: path.as_ref().display().to_string(),
            message: err.to_string(),
        }
    }

    /// The process exit code for this error (see [`exit`]).
    pub fn code(&self) -> i32 {
        match self {
            Error::Usage { .. } | Error::Ambiguous { .. } => exit::USAGE,
            Error::Manifest { .. } => exit::INVALID_MANIFEST,
            Error::NotFound { .. } => exit::NOT_FOUND,
            Error::Refused { .. } => exit::REFUSED,
            Error::DaemonUnavailable { .. }
            | Error::Untrusted { .. }
            | Error::Unreachable { .. } => exit::DAEMON_UNAVAILABLE,
            Error::TmuxUnavailable { .. } => exit::TMUX_UNAVAILABLE,
            Error::Io { .. } | Error::Other { .. } => exit::FAILURE,
        }
    }
}

impl fmt::Display for Error {
    /// Renders `error: …` with the location, and a `help:` line when there
    /// is advice. This is the only place errors are turned into text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage { message } => write!(f, "error: {message}"),
            Error::Manifest {
                file,
                position,
                field,
                message,
                help,
            } => {
                write!(f, "error: {file}")?;
                if let Some(p) = position {
                    write!(f, ":{}:{}", p.line, p.column)?;
                }
                write!(f, ": ")?;
                if let Some(field) = field {
                    write!(f, "{field}: ")?;
                }
                write!(f, "{message}")?;
                if let Some(help) = help {
                    write!(f, "\nhelp: {help}")?;
                }
                Ok(())
            }
            Error::NotFound { kind, key, help } => {
                write!(f, "error: no {kind} matches {key:?}")?;
                if let Some(help) = help {
                    write!(f, "\nhelp: {help}")?;
                }
                Ok(())
            }
            Error::Ambiguous {
                kind,
                key,
                candidates,
            } => {
                write!(
                    f,
                    "error: {key:?} matches more than one {kind}: {}",
                    candidates.join(", ")
                )?;
                write!(
                    f,
                    "\nhelp: give more of the key, for example {:?}",
                    candidates[0]
                )
            }
            Error::Refused { message, help } => {
                write!(f, "error: {message}")?;
                if let Some(help) = help {
                    write!(f, "\nhelp: {help}")?;
                }
                Ok(())
            }
            Error::DaemonUnavailable { message } => {
                write!(f, "error: daemon unavailable: {message}")
            }
            Error::Untrusted { message, help } | Error::Unreachable { message, help } => {
                write!(f, "error: {message}\nhelp: {help}")
            }
            Error::TmuxUnavailable { message } => write!(f, "error: tmux not ready: {message}"),
            Error::Io { object, message } => write!(f, "error: {object}: {message}"),
            Error::Other { message } => write!(f, "error: {message}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_own_exit_code() {
        let all = [
            Error::usage("x").code(),
            Error::Manifest {
                file: "f".into(),
                position: None,
                field: None,
                message: "m".into(),
                help: None,
            }
            .code(),
            Error::not_found("role", "x").code(),
            Error::refused("x", None).code(),
            Error::daemon("x").code(),
            Error::tmux("x").code(),
            Error::other("x").code(),
        ];
        let mut unique = all.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
        assert!(!all.contains(&exit::OK));
    }

    #[test]
    fn manifest_errors_name_file_position_and_field() {
        let e = Error::Manifest {
            file: "team.ron".into(),
            position: Some(Position {
                line: 4,
                column: 17,
            }),
            field: Some("roles[0].replicas".into()),
            message: "must be between 1 and 1000, got 0".into(),
            help: None,
        };
        assert_eq!(
            e.to_string(),
            "error: team.ron:4:17: roles[0].replicas: must be between 1 and 1000, got 0"
        );
    }
}
