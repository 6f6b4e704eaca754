//! Validated desired state: what a team manifest means once it has passed
//! every check. Values here are always valid; the manifest module is the only
//! way to build them from user input.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::key::{RoleKey, TeamKey};

/// Longest workspace, team or role name accepted.
pub const MAX_NAME_LEN: usize = 40;
/// Largest `replicas` value accepted.
pub const MAX_REPLICAS: u32 = 1000;
/// The workspace used when a manifest names none.
pub const DEFAULT_WORKSPACE: &str = "default";

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

/// The crash-loop backoff curve: the n-th restart waits
/// `min(max, initial × factor^(n−1))`, spread by ± `jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            factor: 2.0,
            jitter: 0.1,
        }
    }
}

/// Liveness check beyond "the process exists".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// The program must run `marvel heartbeat` at least every `timeout`;
    /// `failures` missed timeouts in a row make the session unhealthy.
    Heartbeat { timeout: Duration, failures: u32 },
}

/// One role: a kind of program and how many replicas of it to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleSpec {
    pub name: Name,
    pub replicas: u32,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    /// Crashes allowed within `window`; `None` means unlimited.
    pub max_restarts: Option<u32>,
    pub window: Duration,
    pub reset_after: Duration,
    pub health: Option<Health>,
    /// A new session that replaces another counts as ready once it has run
    /// this long (and, with a heartbeat check, has reported): a program
    /// that dies on start-up must not take its predecessor with it.
    #[serde(default = "default_ready_after")]
    pub ready_after: Duration,
    /// A rolling shift of the team replaces this role after the others
    /// (for example a supervisor that watches them).
    #[serde(default)]
    pub shift_last: bool,
}

/// How long a replacement must run before it counts as ready, by default.
pub const DEFAULT_READY_AFTER: Duration = Duration::from_secs(1);

fn default_ready_after() -> Duration {
    DEFAULT_READY_AFTER
}

impl RoleSpec {
    /// A role with the documented defaults, for tests and examples.
    pub fn with_defaults(name: &str, replicas: u32, command: &[&str]) -> RoleSpec {
        RoleSpec {
            name: Name::new(name).expect("valid role name"),
            replicas,
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            cwd: None,
            restart: RestartPolicy::Always,
            backoff: Backoff::default(),
            max_restarts: Some(5),
            window: Duration::from_secs(600),
            reset_after: Duration::from_secs(600),
            health: None,
            ready_after: DEFAULT_READY_AFTER,
            shift_last: false,
        }
    }

    /// True when the two specs run the same program the same way, so that
    /// only `replicas` and how replacements are paced (`ready_after`,
    /// `shift_last`) may differ. A template change replaces the replicas
    /// and clears the role's crash-loop history.
    pub fn same_template(&self, other: &RoleSpec) -> bool {
        RoleSpec {
            replicas: other.replicas,
            ready_after: other.ready_after,
            shift_last: other.shift_last,
            ..self.clone()
        } == *other
    }
}

/// One team: the unit a manifest file declares and `marvel run` applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamSpec {
    pub workspace: Name,
    pub name: Name,
    pub roles: Vec<RoleSpec>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn only_replicas_may_change_without_a_new_template() {
        let a = RoleSpec::with_defaults("w", 1, &["sh"]);
        let mut b = a.clone();
        b.replicas = 9;
        assert!(a.same_template(&b));
        b.shift_last = true;
        assert!(
            a.same_template(&b),
            "shift order is not part of the template"
        );
        b.command.push("-c".into());
        assert!(!a.same_template(&b));
    }

    /// A state file written by an earlier marvel (format 1, before the spec's
    /// fields became checked types): the applied teams still load, and write
    /// back in exactly the same JSON layout.
    #[test]
    fn state_files_of_format_1_still_load() {
        let text = include_str!("../../tests/fixtures/state-format-1.json");
        let file: serde_json::Value = serde_json::from_str(text).unwrap();
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
                timeout: Duration::from_secs(30),
                failures: 2,
            })
        );
        // Scaled to zero after it was applied.
        assert_eq!(squad.role("idle").unwrap().replicas, 0);
        assert_eq!(serde_json::to_value(&world).unwrap(), file["world"]);
    }
}

