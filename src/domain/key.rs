//! Resource keys (`demo`, `demo/squad`, `demo/squad/worker`,
//! `demo/squad/worker-0`) and lookup by the shortest unambiguous suffix.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::spec::Name;

/// `workspace/team`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TeamKey {
    pub workspace: String,
    pub team: String,
}

/// `workspace/team/role`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleKey {
    pub workspace: String,
    pub team: String,
    pub role: String,
}

/// `workspace/team/role-slot`: one replica slot of a role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionKey {
    pub workspace: String,
    pub team: String,
    pub role: String,
    pub slot: u32,
}

impl TeamKey {
    pub fn new(workspace: &Name, team: &Name) -> TeamKey {
        TeamKey {
            workspace: workspace.to_string(),
            team: team.to_string(),
        }
    }

    pub fn role(&self, role: &Name) -> RoleKey {
        RoleKey {
            workspace: self.workspace.clone(),
            team: self.team.clone(),
            role: role.to_string(),
        }
    }
}

impl RoleKey {
    pub fn team(&self) -> TeamKey {
        TeamKey {
            workspace: self.workspace.clone(),
            team: self.team.clone(),
        }
    }

    pub fn session(&self, slot: u32) -> SessionKey {
        SessionKey {
            workspace: self.workspace.clone(),
            team: self.team.clone(),
            role: self.role.clone(),
            slot,
        }
    }
}

impl SessionKey {
    pub fn role(&self) -> RoleKey {
        RoleKey {
            workspace: self.workspace.clone(),
            team: self.team.clone(),
            role: self.role.clone(),
        }
    }

    pub fn team(&self) -> TeamKey {
        self.role().team()
    }

    /// Whether this session belongs to `role`, without building its key.
    pub fn is_of(&self, role: &RoleKey) -> bool {
        self.role == role.role && self.team == role.team && self.workspace == role.workspace
    }

    /// Whether `other` is a session of the same team.
    pub fn is_same_team(&self, other: &SessionKey) -> bool {
        self.team == other.team && self.workspace == other.workspace
    }

    /// Whether `other` is a session of the same role.
    pub fn is_same_role(&self, other: &SessionKey) -> bool {
        self.role == other.role && self.team == other.team && self.workspace == other.workspace
    }
}

impl fmt::Display for TeamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.workspace, self.team)
    }
}

impl fmt::Display for RoleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.workspace, self.team, self.role)
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}-{}",
            self.workspace, self.team, self.role, self.slot
        )
    }
}

fn parts(s: &str, n: usize, what: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() != n || parts.iter().any(|p| Name::new(p).is_err()) {
        return Err(format!("{s:?} is not a full {what} key"));
    }
    Ok(parts.into_iter().map(str::to_string).collect())
}

impl FromStr for TeamKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = parts(s, 2, "team (workspace/team)")?;
        Ok(TeamKey {
            workspace: p[0].clone(),
            team: p[1].clone(),
        })
    }
}

impl FromStr for RoleKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = parts(s, 3, "role (workspace/team/role)")?;
        Ok(RoleKey {
            workspace: p[0].clone(),
            team: p[1].clone(),
            role: p[2].clone(),
        })
    }
}

impl FromStr for SessionKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a full session key (workspace/team/role-N)");
        let p = parts(s, 3, "session (workspace/team/role-N)").map_err(|_| bad())?;
        let (role, slot) = p[2].rsplit_once('-').ok_or_else(bad)?;
        let slot: u32 = slot.parse().map_err(|_| bad())?;
        if Name::new(role).is_err() || slot.to_string() != p[2].rsplit_once('-').unwrap().1 {
            return Err(bad());
        }
        Ok(SessionKey {
            workspace: p[0].clone(),
            team: p[1].clone(),
            role: role.to_string(),
            slot,
        })
    }
}

macro_rules! string_conversions {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(k: $t) -> String {
                k.to_string()
            }
        }
    )*};
}
string_conversions!(TeamKey, RoleKey, SessionKey);

/// Why a query matched no single key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    NotFound,
    /// Every candidate that matched, in key order.
    Ambiguous(Vec<String>),
}

/// True when `query` names `key`: the whole key, or a suffix of it that
/// starts at a `/` boundary (`worker-0`, `squad/worker-0`).
pub fn matches_suffix(key: &str, query: &str) -> bool {
    let query = query.trim_matches('/');
    !query.is_empty() && (key == query || key.ends_with(&format!("/{query}")))
}

/// Finds the one candidate named by `query`. An exact full-key match always
/// wins; otherwise the suffix must match exactly one candidate.
pub fn lookup<'a, K: fmt::Display + 'a>(
    query: &str,
    candidates: impl IntoIterator<Item = &'a K>,
) -> Result<&'a K, LookupError> {
    let mut found: Vec<&K> = Vec::new();
    for k in candidates {
        let s = k.to_string();
        if s == query {
            return Ok(k);
        }
        if matches_suffix(&s, query) {
            found.push(k);
        }
    }
    match found.len() {
        0 => Err(LookupError::NotFound),
        1 => Ok(found[0]),
        _ => {
            let mut names: Vec<String> = found.iter().map(|k| k.to_string()).collect();
            names.sort();
            names.dedup();
            if names.len() == 1 {
                return Ok(found[0]);
            }
            Err(LookupError::Ambiguous(names))
        }
    }
}

/// True when `key` lies under what `query` names: `query` names the key
/// itself or one of its parents by suffix (`squad` is over
/// `demo/squad/worker-0`), or the role of a session key.
pub fn under(key: &str, query: &str) -> bool {
    let query = query.trim_matches('/');
    let mut prefix = String::new();
    key.split('/').any(|part| {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        matches_suffix(&prefix, query)
    }) || key
        .parse::<SessionKey>()
        .is_ok_and(|k| matches_suffix(&k.role().to_string(), query))
}

/// The key most like `query`, to suggest for a key that names nothing:
/// each candidate is compared by its every suffix at a `/`, and the
/// suggestion is given in the form compared (`worker-0` for `worker-9`
/// when that names one key), or not at all when nothing is close.
pub fn suggest<'a>(query: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let query = query.trim_matches('/');
    let mut best: Option<(f64, String)> = None;
    let all: Vec<&str> = candidates.into_iter().collect();
    for key in &all {
        let parts: Vec<&str> = key.split('/').collect();
        for start in 0..parts.len() {
            let suffix = parts[start..].join("/");
            // Give the short form only when it names one key.
            let unique = all.iter().filter(|k| matches_suffix(k, &suffix)).count() == 1;
            let shown = if unique {
                suffix.clone()
            } else {
                key.to_string()
            };
            let score = strsim::jaro_winkler(query, &suffix);
            if score >= 0.8 && best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, shown));
            }
        }
    }
    best.map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_lies_under_itself_its_parents_and_its_role() {
        assert!(under("demo/squad/worker-0", "worker-0"));
        assert!(under("demo/squad/worker-0", "worker"));
        assert!(under("demo/squad/worker-0", "squad"));
        assert!(under("demo/squad/worker-0", "demo/squad"));
        assert!(!under("demo/squad/worker-0", "worker-1"));
        assert!(!under("demo/squad/worker-0", "orker"));
        assert!(!under("demo/squad/lead", "worker"));
    }

    #[test]
    fn suggestions_are_close_keys_in_their_shortest_unique_form() {
        let keys = [
            "demo/squad/worker-0",
            "demo/squad/worker-1",
            "demo/squad/lead",
        ];
        assert_eq!(suggest("wroker-0", keys), Some("worker-0".into()));
        assert_eq!(suggest("laed", keys), Some("lead".into()));
        assert_eq!(suggest("squad/leda", keys), Some("squad/lead".into()));
        assert_eq!(suggest("zzzzzz", keys), None);
        assert_eq!(suggest("x", []), None);
    }

    fn sk(s: &str) -> SessionKey {
        s.parse().unwrap()
    }

    #[test]
    fn keys_round_trip_through_text() {
        let k = sk("demo/squad/worker-1-12");
        assert_eq!(k.role, "worker-1");
        assert_eq!(k.slot, 12);
        assert_eq!(k.to_string(), "demo/squad/worker-1-12");
        assert_eq!(k.role().to_string(), "demo/squad/worker-1");
        assert_eq!(k.team().to_string(), "demo/squad");
        assert!("demo/squad/worker".parse::<SessionKey>().is_err());
        assert!("demo/squad/worker-01".parse::<SessionKey>().is_err());
        assert!("squad/worker-0".parse::<SessionKey>().is_err());
        assert!("demo/Squad".parse::<TeamKey>().is_err());
        assert_eq!("demo/squad".parse::<TeamKey>().unwrap().team, "squad");
    }

    #[test]
    fn suffix_lookup_finds_the_single_match() {
        let keys = [
            sk("demo/squad/worker-0"),
            sk("demo/squad/worker-1"),
            sk("demo/other/lead-0"),
        ];
        assert_eq!(lookup("worker-0", &keys).unwrap(), &keys[0]);
        assert_eq!(lookup("squad/worker-1", &keys).unwrap(), &keys[1]);
        assert_eq!(lookup("demo/other/lead-0", &keys).unwrap(), &keys[2]);
        assert_eq!(lookup("orker-0", &keys), Err(LookupError::NotFound));
        assert_eq!(lookup("", &keys), Err(LookupError::NotFound));
    }

    #[test]
    fn ambiguous_lookup_names_every_candidate() {
        let keys = [
            sk("a/squad/worker-0"),
            sk("b/squad/worker-0"),
            sk("b/squad/worker-1"),
        ];
        assert_eq!(
            lookup("squad/worker-0", &keys),
            Err(LookupError::Ambiguous(vec![
                "a/squad/worker-0".to_string(),
                "b/squad/worker-0".to_string()
            ]))
        );
        assert_eq!(lookup("b/squad/worker-0", &keys).unwrap(), &keys[1]);
    }
}
