//! Contexts: which marvel daemon a command talks to. `local` is this host's;
//! every other context is a host reached over OpenSSH
//! (`ssh://[user@]host[:port]`), kept in `contexts.ron` in the user's config
//! directory. This module owns that file and the choice of a context; how a
//! host is reached is [`crate::client::ssh`]'s.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Environment variable naming the config directory (tests, and users who
/// keep several sets of contexts).
pub const CONFIG_ENV: &str = "MARVEL_CONFIG";
/// Environment variable naming the context, as `--context` does.
pub const CONTEXT_ENV: &str = "MARVEL_CONTEXT";
/// The context that is always there: this host's daemon.
pub const LOCAL: &str = "local";
/// The contexts file, in the config directory.
pub const FILE: &str = "contexts.ron";
/// How long ssh may take to connect when a context does not say.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest connect timeout a context may ask for.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_NAME: usize = 64;

/// A context name: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter
/// or digit, so that it is safe in a table, a file and a shell.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "context name {name:?} must be 1 to {MAX_NAME} characters long"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.chars().all(ok_char) {
        return Err(format!(
            "context name {name:?} may only hold letters, digits, '.', '_' and '-', and must start with a letter or digit"
        ));
    }
    Ok(())
}

/// Where a host's daemon is: `ssh://[user@]host[:port]`. Only what ssh
/// takes as a destination is accepted (no path, no options in disguise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SshUrl {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl SshUrl {
    pub fn parse(s: &str) -> std::result::Result<SshUrl, String> {
        let example =
            "write it as ssh://[user@]host[:port], for example ssh://me@build.example:2222";
        let rest = s
            .strip_prefix("ssh://")
            .ok_or_else(|| format!("{s:?} is not an ssh:// address; {example}"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(format!(
                "{s:?} has a path, query or fragment, which a context cannot use; {example}"
            ));
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let word = |w: &str, extra: &[char]| {
            !w.is_empty()
                && !w.starts_with('-')
                && w.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || extra.contains(&c)
                })
        };
        if let Some(u) = user
            && !word(u, &[])
        {
            return Err(format!("{s:?}: {u:?} is not a user name ssh accepts"));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: an IPv6 address needs its closing ']'"))?;
            if !word(h, &[':']) {
                return Err(format!("{s:?}: {h:?} is not an IPv6 address"));
            }
            match after {
                "" => (h, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return Err(format!("{s:?}: unexpected {p:?} after the address")),
                },
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if !word(
            host,
            if hostport.starts_with('[') {
                &[':']
            } else {
                &[]
            },
        ) {
            return Err(format!("{s:?}: {host:?} is not a host name; {example}"));
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(format!(
                        "{s:?}: the port {p:?} must be a number from 1 to 65535"
                    ));
                }
            },
        };
        Ok(SshUrl {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        })
    }

    /// `user@host` or `host`: what to type after `ssh` (with `-p`).
    pub fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for SshUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ssh://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            write!(f, "{}", self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for SshUrl {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<SshUrl, String> {
        SshUrl::parse(&s)
    }
}

impl From<SshUrl> for String {
    fn from(u: SshUrl) -> String {
        u.to_string()
    }
}

/// A connect timeout, written as a human duration (`"10s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timeout(Duration);

impl Timeout {
    pub fn new(d: Duration) -> std::result::Result<Timeout, String> {
        if d < Duration::from_secs(1) || d > MAX_CONNECT_TIMEOUT {
            return Err(format!(
                "a connect timeout must be from 1s to {}, got {}",
                humantime::format_duration(MAX_CONNECT_TIMEOUT),
                humantime::format_duration(d)
            ));
        }
        Ok(Timeout(d))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<String> for Timeout {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Timeout, String> {
        let d = humantime::parse_duration(&s).map_err(|e| format!("{s:?}: {e}"))?;
        Timeout::new(d)
    }
}

impl From<Timeout> for String {
    fn from(t: Timeout) -> String {
        humantime::format_duration(t.0).to_string()
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One host context as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub url: SshUrl,
    /// The marvel program on the host, when it is not `marvel` on the
    /// remote login shell's PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_path: Option<String>,
    /// Variables set for marvel on the host (`MARVEL_HOME`,
    /// `MARVEL_TMUX_SOCKET`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remote_env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Timeout>,
    /// Share one ssh connection between commands (ControlMaster), unless
    /// the user's ssh config already does.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub share: bool,
}

impl Host {
    pub fn new(url: SshUrl) -> Host {
        Host {
            url,
            remote_path: None,
            remote_env: BTreeMap::new(),
            connect_timeout: None,
            share: true,
        }
    }

    /// The rules a stored host must keep; the file is checked with them.
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Some(p) = &self.remote_path {
            check_remote_path(p)?;
        }
        for (k, v) in &self.remote_env {
            check_env(k, v)?;
        }
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
            .map_or(DEFAULT_CONNECT_TIMEOUT, Timeout::get)
    }

    /// The program run on the host.
    pub fn program(&self) -> &str {
        self.remote_path.as_deref().unwrap_or("marvel")
    }
}

/// A remote path is one word for the remote shell: not empty, no NUL, not
/// an option, and not a `NAME=value` that `env` would take as a variable.
pub fn check_remote_path(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() || p.contains(['\0', '=', '\n']) || p.starts_with('-') {
        return Err(format!(
            "remote path {p:?} must be a program name or path, without '=', not starting with '-'"
        ));
    }
    Ok(())
}

/// A remote variable: a shell name and a value without NUL.
pub fn check_env(name: &str, value: &str) -> std::result::Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "{name:?} is not a variable name (letters, digits and '_', not starting with a digit)"
        ));
    }
    if value.contains('\0') {
        return Err(format!("the value of {name} contains a NUL character"));
    }
    Ok(())
}

/// What `contexts.ron` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contexts {
    /// The context commands use when none is named; `local` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Host>,
}

/// The context a command works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selected {
    Local,
    Host { name: String, host: Host },
}

/// The config directory: `MARVEL_CONFIG`, else the per-user one
/// (`$XDG_CONFIG_HOME/marvel`, usually `~/.config/marvel`).
pub fn config_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "marvel")
        .map(|d| d.config_dir().to_path_buf())
        .ok_or_else(|| Error::other(format!("cannot find a home directory; set {CONFIG_ENV}")))
}

fn ron_options() -> ron::Options {
    ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
}

impl Contexts {
    /// The contexts file's path.
    pub fn path() -> Result<PathBuf> {
        Ok(config_dir()?.join(FILE))
    }

    /// Reads the contexts file; none yet is no context but `local`.
    pub fn load() -> Result<Contexts> {
        let path = Contexts::path()?;
        let text = match read_own(&path)? {
            Some(t) => t,
            None => return Ok(Contexts::default()),
        };
        Contexts::parse(&text).map_err(|m| Error::other(format!("{}: {m}", path.display())))
    }

    /// Parses and checks the file's text.
    pub fn parse(text: &str) -> std::result::Result<Contexts, String> {
        let c: Contexts = ron_options().from_str(text).map_err(|e| e.to_string())?;
        for (name, host) in &c.contexts {
            check_name(name)?;
            if name == LOCAL {
                return Err(format!(
                    "{LOCAL:?} is built in and cannot be a host context"
                ));
            }
            host.check().map_err(|m| format!("context {name}: {m}"))?;
        }
        if let Some(cur) = &c.current
            && cur != LOCAL
            && !c.contexts.contains_key(cur)
        {
            return Err(format!("the current context {cur:?} is not defined"));
        }
        Ok(c)
    }

    pub fn render(&self) -> String {
        let pretty = ron::ser::PrettyConfig::new()
            .extensions(ron::extensions::Extensions::IMPLICIT_SOME)
            .struct_names(false);
        let body = ron::ser::to_string_pretty(self, pretty).expect("contexts serialise");
        format!("// marvel contexts: edit with `marvel context add|use|rm`\n{body}\n")
    }

    /// Writes the file atomically (private, 0600), creating its directory.
    pub fn save(&self) -> Result<()> {
        let path = Contexts::path()?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, &e))?;
        let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&tmp)?;
            f.write_all(self.render().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&path, &e)
        })
    }

    /// The context named `explicit` (from `--context` or `MARVEL_CONTEXT`),
    /// else the current one, else `local`.
    pub fn select(&self, explicit: Option<&str>) -> Result<Selected> {
        let name = explicit
            .filter(|n| !n.is_empty())
            .or(self.current.as_deref())
            .unwrap_or(LOCAL);
        self.get(name)
    }

    /// The context called `name`.
    pub fn get(&self, name: &str) -> Result<Selected> {
        if name == LOCAL {
            return Ok(Selected::Local);
        }
        match self.contexts.get(name) {
            Some(host) => Ok(Selected::Host {
                name: name.to_string(),
                host: host.clone(),
            }),
            None => Err(unknown(name, self)),
        }
    }

    /// Every context, `local` first, then by name.
    pub fn all(&self) -> Vec<Selected> {
        std::iter::once(Selected::Local)
            .chain(self.contexts.iter().map(|(name, host)| Selected::Host {
                name: name.clone(),
                host: host.clone(),
            }))
            .collect()
    }

    /// The name of the context commands use by default.
    pub fn current_name(&self) -> &str {
        self.current.as_deref().unwrap_or(LOCAL)
    }
}

/// A context that is not defined, with the ones that are: a usage error,
/// as a misspelled option is.
pub fn unknown(name: &str, c: &Contexts) -> Error {
    let known: Vec<&str> = std::iter::once(LOCAL)
        .chain(c.contexts.keys().map(String::as_str))
        .collect();
    Error::usage(format!(
        "no context is called {name:?} (known: {}); add it with `marvel context add {name} ssh://[user@]host[:port]`",
        known.join(", ")
    ))
}

/// Picks the context from `--context`/`MARVEL_CONTEXT` or the file. The
/// file is read only when needed: naming `local` never reads it.
pub fn select(explicit: Option<&str>) -> Result<Selected> {
    match explicit.filter(|n| !n.is_empty()) {
        Some(LOCAL) => Ok(Selected::Local),
        _ => Contexts::load()?.select(explicit),
    }
}

/// Reads `path` if it exists. It decides which hosts commands (and what
/// they type into agents) go to, so it must be the user's alone, as ssh
/// insists for its config.
fn read_own(path: &Path) -> Result<Option<String>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, &e)),
    };
    let me = crate::statedir::me();
    let problem = if meta.file_type().is_symlink() {
        None
    } else if !meta.is_file() {
        Some("it is not a regular file")
    } else if meta.uid() != me {
        Some("it belongs to another user")
    } else if meta.mode() & 0o022 != 0 {
        Some("other users can write to it")
    } else {
        None
    };
    // A link is followed (dotfile managers link config files), but what it
    // leads to must pass the same checks.
    let meta = if meta.file_type().is_symlink() {
        std::fs::metadata(path).map_err(|e| Error::io(path, &e))?
    } else {
        meta
    };
    let problem = problem.or(if meta.uid() != me {
        Some("it belongs to another user")
    } else if meta.mode() & 0o022 != 0 {
        Some("other users can write to it")
    } else {
        None
    });
    if let Some(problem) = problem {
        return Err(Error::untrusted(
            format!(
                "refusing the contexts file {}: {problem} (owner uid {}, mode {:04o}; you are uid {me})",
                path.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ),
            format!(
                "it names the hosts commands are sent to; make it yours alone (`chmod go-w {}`), or set {CONFIG_ENV} to a directory of your own",
                path.display()
            ),
        ));
    }
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|e| Error::io(path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_take_user_host_and_port() {
        let u = SshUrl::parse("ssh://me@build.example:2222").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.host.as_str(), u.port),
            (Some("me"), "build.example", Some(2222))
        );
        assert_eq!(u.to_string(), "ssh://me@build.example:2222");
        assert_eq!(u.destination(), "me@build.example");
        let u = SshUrl::parse("ssh://box/").unwrap();
        assert_eq!((u.user, u.host.as_str(), u.port), (None, "box", None));
        let u = SshUrl::parse("ssh://[::1]:22").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", Some(22)));
        assert_eq!(u.to_string(), "ssh://[::1]:22");
    }

    #[test]
    fn ssh_urls_that_ssh_would_misread_are_refused() {
        for (url, says) in [
            ("build.example", "not an ssh:// address"),
            ("http://x", "not an ssh:// address"),
            ("ssh://", "not a host name"),
            ("ssh://-oProxyCommand=x", "not a host name"),
            ("ssh://-l@host", "not a user name"),
            ("ssh://host:0", "from 1 to 65535"),
            ("ssh://host:99999", "from 1 to 65535"),
            ("ssh://host/path", "path, query or fragment"),
            ("ssh://ho st", "not a host name"),
            ("ssh://[::1", "closing ']'"),
        ] {
            let e = SshUrl::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn names_are_safe_words() {
        assert!(check_name("build-box.1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn the_file_round_trips_and_reads_plain_optional_fields() {
        let mut c = Contexts::default();
        let mut h = Host::new(SshUrl::parse("ssh://me@build:2222").unwrap());
        h.remote_path = Some("/opt/marvel/bin/marvel".into());
        h.remote_env
            .insert("MARVEL_HOME".into(), "/srv/marvel".into());
        h.connect_timeout = Some(Timeout::new(Duration::from_secs(5)).unwrap());
        h.share = false;
        c.contexts.insert("build".into(), h);
        c.contexts
            .insert("gpu".into(), Host::new(SshUrl::parse("ssh://gpu").unwrap()));
        c.current = Some("build".into());
        let text = c.render();
        assert!(
            text.contains(r#"remote_path: "/opt/marvel/bin/marvel""#),
            "{text}"
        );
        assert!(!text.contains("Some("), "{text}");
        assert_eq!(Contexts::parse(&text).unwrap(), c);
        let by_hand = r#"(contexts: {"b": (url: "ssh://b", connect_timeout: "3s")})"#;
        let c = Contexts::parse(by_hand).unwrap();
        assert_eq!(c.contexts["b"].connect_timeout(), Duration::from_secs(3));
        assert!(c.contexts["b"].share);
    }

    #[test]
    fn a_bad_file_says_what_is_wrong() {
        for (text, says) in [
            (r#"(contexts: {"b": (url: "b")})"#, "not an ssh:// address"),
            (
                r#"(contexts: {"b": (url: "ssh://b", colour: 1)})"#,
                "colour",
            ),
            (r#"(contexts: {"local": (url: "ssh://b")})"#, "built in"),
            (r#"(current: "gone")"#, "not defined"),
            (
                r#"(contexts: {"b": (url: "ssh://b", remote_env: {"A=B": "x"})})"#,
                "not a variable name",
            ),
            (
                r#"(contexts: {"b": (url: "ssh://b", connect_timeout: "0s")})"#,
                "from 1s",
            ),
        ] {
            let e = Contexts::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn the_named_context_wins_over_the_current_one() {
        let mut c = Contexts::default();
        c.contexts
            .insert("b".into(), Host::new(SshUrl::parse("ssh://b").unwrap()));
        assert_eq!(c.select(None).unwrap(), Selected::Local);
        c.current = Some("b".into());
        assert!(matches!(c.select(None).unwrap(), Selected::Host { name, .. } if name == "b"));
        assert_eq!(c.select(Some("local")).unwrap(), Selected::Local);
        let e = c.select(Some("nope")).unwrap_err();
        assert!(e.to_string().contains("(known: local, b)"), "{e}");
        assert_eq!(c.all().len(), 2);
    }
}
