//! `marvel context add|ls|use|rm`: name the marvel daemons on other hosts
//! (reached over ssh) and pick the one commands talk to by default.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::output::Cell;
use clap::Subcommand;
use serde::Serialize;

use crate::cli::{Format, parse_duration};
use crate::commands::Ctx;
use crate::context::{self, Contexts, Host, LOCAL, SshUrl, Timeout};
use crate::error::{Error, Result, exit};
use crate::output;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  marvel context add build ssh://me@build.example     a host with marvel on its PATH
  marvel context add gpu ssh://gpu:2222 --remote-path /opt/marvel/bin/marvel
  marvel context use build                  commands now go to build
  marvel get sessions --context gpu         one command to another host
  marvel get sessions -A                    every context at once
  marvel context use local                  back to this host

A host is reached with your own ssh (keys, agent, ~/.ssh/config, known
hosts), which runs `marvel daemon dial-stdio` there; marvel listens on no
network port. Contexts are kept in contexts.ron in marvel's config directory
(~/.config/marvel, or MARVEL_CONFIG). `local` always exists.")]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Add a host: ssh://[user@]host[:port]
    #[command(after_help = "\
The host needs marvel installed; ssh must log in without a prompt (a key in
ssh-agent or named in ~/.ssh/config), and its host key must be known.
Connections are shared between commands (ssh ControlMaster, kept 60s after
the last command) unless your ssh config already shares them, or --no-share.")]
    Add {
        /// The context's name
        #[arg(value_name = "NAME")]
        name: String,

        /// Where: ssh://[user@]host[:port] (host may be a Host alias of ~/.ssh/config)
        #[arg(value_name = "URL")]
        url: String,

        /// marvel's path on the host, when it is not on the PATH of its login shell
        #[arg(long, value_name = "PATH")]
        remote_path: Option<String>,

        /// A variable for marvel on the host, such as MARVEL_HOME (repeat for several)
        #[arg(long = "remote-env", value_name = "NAME=VALUE")]
        remote_env: Vec<String>,

        /// How long ssh may take to connect [default: 10s]
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        connect_timeout: Option<Duration>,

        /// Open a new ssh connection for every command
        #[arg(long)]
        no_share: bool,

        /// Replace a context of that name
        #[arg(long)]
        force: bool,
    },
    /// List the contexts; the current one is marked
    Ls {
        /// Output format
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Make a context the one commands use when none is named
    Use {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Forget a context (the host and its daemon are untouched)
    Rm {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

pub fn run(args: Args, ctx: &Ctx) -> Result<i32> {
    match args.action {
        Action::Add {
            name,
            url,
            remote_path,
            remote_env,
            connect_timeout,
            no_share,
            force,
        } => {
            let host = host(&url, remote_path, &remote_env, connect_timeout, !no_share)?;
            add(&name, host, force, ctx)
        }
        Action::Ls { output } => ls(output, ctx),
        Action::Use { name } => use_(&name, ctx),
        Action::Rm { name } => rm(&name, ctx),
    }
}

/// A host context from the command line, checked as the file is.
fn host(
    url: &str,
    remote_path: Option<String>,
    remote_env: &[String],
    connect_timeout: Option<Duration>,
    share: bool,
) -> Result<Host> {
    let mut h = Host::new(SshUrl::parse(url).map_err(Error::usage)?);
    if let Some(p) = &remote_path {
        context::check_remote_path(p).map_err(|m| Error::usage(format!("--remote-path: {m}")))?;
    }
    h.remote_path = remote_path;
    for pair in remote_env {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            Error::usage(format!("--remote-env {pair:?}: write it as NAME=VALUE"))
        })?;
        context::check_env(k, v).map_err(|m| Error::usage(format!("--remote-env: {m}")))?;
        h.remote_env.insert(k.to_string(), v.to_string());
    }
    h.connect_timeout = connect_timeout
        .map(Timeout::new)
        .transpose()
        .map_err(|m| Error::usage(format!("--connect-timeout: {m}")))?;
    h.share = share;
    Ok(h)
}

fn add(name: &str, host: Host, force: bool, ctx: &Ctx) -> Result<i32> {
    context::check_name(name).map_err(Error::usage)?;
    if name == LOCAL {
        return Err(Error::usage(format!(
            "{LOCAL:?} is this host's daemon and always exists; pick another name"
        )));
    }
    let mut all = Contexts::load()?;
    if all.contexts.contains_key(name) && !force {
        return Err(Error::refused(
            format!(
                "a context called {name} exists ({})",
                all.contexts[name].url
            ),
            Some(format!(
                "add --force to replace it, or `marvel context rm {name}` first"
            )),
        ));
    }
    let url = host.url.to_string();
    all.contexts.insert(name.to_string(), host);
    all.save()?;
    ctx.out.print(&format!("context {name} added: {url}"))?;
    Ok(exit::OK)
}

/// One line of `context ls -o json`.
#[derive(Debug, Serialize)]
struct Entry<'a> {
    name: &'a str,
    /// `null` for `local`.
    url: Option<String>,
    current: bool,
    remote_path: Option<&'a str>,
    remote_env: BTreeMap<&'a str, &'a str>,
    connect_timeout: Option<String>,
    share: Option<bool>,
}

fn ls(format: Format, ctx: &Ctx) -> Result<i32> {
    let all = Contexts::load()?;
    // The one this invocation would use: --context and MARVEL_CONTEXT count.
    let current = ctx
        .context
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(all.current_name())
        .to_string();
    let mut entries = vec![Entry {
        name: LOCAL,
        url: None,
        current: current == LOCAL,
        remote_path: None,
        remote_env: BTreeMap::new(),
        connect_timeout: None,
        share: None,
    }];
    for (name, h) in &all.contexts {
        entries.push(Entry {
            name,
            url: Some(h.url.to_string()),
            current: *name == current,
            remote_path: h.remote_path.as_deref(),
            remote_env: h
                .remote_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            connect_timeout: Some(humantime::format_duration(h.connect_timeout()).to_string()),
            share: Some(h.share),
        });
    }
    match format {
        Format::Json => ctx.out.json(&entries)?,
        Format::Text => ctx.out.print(&table(&entries))?,
    }
    Ok(exit::OK)
}

fn table(entries: &[Entry]) -> String {
    let header = ["CURRENT", "NAME", "URL", "REMOTE PATH", "REMOTE ENV"];
    let rows = entries
        .iter()
        .map(|e| {
            let env: Vec<String> = e
                .remote_env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            vec![
                Cell::new(if e.current { "*" } else { "" }),
                Cell::new(e.name),
                Cell::new(e.url.as_deref().unwrap_or("(this host)")),
                Cell::new(output::escape_line(e.remote_path.unwrap_or("-"))),
                Cell::new(if env.is_empty() {
                    "-".to_string()
                } else {
                    output::escape_line(&env.join(" ")).into_owned()
                }),
            ]
        })
        .collect();
    output::table(&header, rows, false)
}

fn use_(name: &str, ctx: &Ctx) -> Result<i32> {
    let mut all = Contexts::load()?;
    all.get(name)?;
    all.current = (name != LOCAL).then(|| name.to_string());
    all.save()?;
    ctx.out.print(&format!("current context: {name}"))?;
    if let Some(env) = ctx
        .context
        .as_deref()
        .filter(|c| !c.is_empty() && *c != name)
    {
        ctx.out.note(&format!(
            "note: {} is set to {env}, which wins over the current context in this shell",
            context::CONTEXT_ENV
        ));
    }
    Ok(exit::OK)
}

fn rm(name: &str, ctx: &Ctx) -> Result<i32> {
    if name == LOCAL {
        return Err(Error::usage(format!(
            "{LOCAL:?} is this host's daemon and cannot be removed"
        )));
    }
    let mut all = Contexts::load()?;
    if all.contexts.remove(name).is_none() {
        return Err(context::unknown(name, &all));
    }
    let was_current = all.current.as_deref() == Some(name);
    if was_current {
        all.current = None;
    }
    all.save()?;
    ctx.out.print(&format!("context {name} removed"))?;
    if was_current {
        ctx.out
            .note("it was the current context: commands now go to local");
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_hosts_are_checked_like_the_file() {
        let h = host(
            "ssh://me@b:22",
            Some("/opt/marvel".into()),
            &["MARVEL_HOME=/srv/m=x".into()],
            Some(Duration::from_secs(3)),
            false,
        )
        .unwrap();
        assert_eq!(h.remote_env["MARVEL_HOME"], "/srv/m=x");
        assert_eq!(h.connect_timeout(), Duration::from_secs(3));
        assert!(!h.share);
        for (url, path, env, says) in [
            ("b", None, vec![], "not an ssh:// address"),
            ("ssh://b", Some("-x"), vec![], "--remote-path"),
            ("ssh://b", None, vec!["NOEQUALS"], "NAME=VALUE"),
            ("ssh://b", None, vec!["1X=y"], "not a variable name"),
        ] {
            let env: Vec<String> = env.into_iter().map(String::from).collect();
            let e = host(url, path.map(String::from), &env, None, true).unwrap_err();
            assert_eq!(e.code(), exit::USAGE);
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn the_listing_marks_the_current_context() {
        let entries = [
            Entry {
                name: "local",
                url: None,
                current: false,
                remote_path: None,
                remote_env: BTreeMap::new(),
                connect_timeout: None,
                share: None,
            },
            Entry {
                name: "build",
                url: Some("ssh://me@build".into()),
                current: true,
                remote_path: Some("/opt/marvel"),
                remote_env: [("MARVEL_HOME", "/srv/m")].into_iter().collect(),
                connect_timeout: Some("10s".into()),
                share: Some(true),
            },
        ];
        assert_eq!(
            table(&entries),
            "\
CURRENT   NAME    URL              REMOTE PATH   REMOTE ENV
          local   (this host)      -             -
*         build   ssh://me@build   /opt/marvel   MARVEL_HOME=/srv/m
"
        );
    }
}
