//! Misuse that clap would answer unhelpfully, answered with what to type
//! instead: verbs from other tools (`ps`, `ls`, `rm`), `delete KEY`
//! without `team`, and flags a verb does not have.

use std::ffi::OsString;

use clap::CommandFactory;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::cli::Cli;

/// Verbs users bring from kubectl, docker, pm2 and systemctl, and what
/// marvel calls them.
const SYNONYMS: &[(&str, &str)] = &[
    ("ps", "marvel get sessions"),
    ("ls", "marvel get sessions"),
    ("list", "marvel get sessions"),
    ("apply", "marvel run FILE"),
    ("create", "marvel run FILE"),
    ("rm", "marvel delete team KEY, or marvel down FILE"),
    ("remove", "marvel delete team KEY, or marvel down FILE"),
    ("show", "marvel describe session|role|team KEY"),
    ("inspect", "marvel describe session|role|team KEY"),
    ("info", "marvel describe session|role|team KEY"),
    ("log", "marvel logs KEY"),
    ("exec", "marvel inject KEY TEXT --enter"),
    ("send", "marvel inject KEY TEXT --enter"),
    ("type", "marvel inject KEY TEXT --enter"),
    ("unfreeze", "marvel reset role KEY"),
    ("reset-failed", "marvel reset role KEY"),
];

/// Our own text for a parse error, when we can say more than clap.
pub fn misuse(e: &clap::Error, args: &[OsString]) -> Option<String> {
    let words: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let invalid = [ContextKind::InvalidSubcommand, ContextKind::InvalidArg]
        .into_iter()
        .find_map(|k| match e.get(k) {
            Some(ContextValue::String(s)) => Some(s.clone()),
            _ => None,
        })?;
    let path = verb_path(&words);
    match e.kind() {
        ErrorKind::InvalidSubcommand if path.is_empty() => {
            let (_, instead) = SYNONYMS.iter().find(|(w, _)| *w == invalid)?;
            Some(format!(
                "error: marvel has no `{invalid}` command\nhelp: use {instead}"
            ))
        }
        ErrorKind::InvalidSubcommand if path == ["delete"] => Some(format!(
            "error: `marvel delete` needs to know what to delete\nhelp: did you mean `marvel delete team {invalid}`? (`marvel down FILE` removes the team a file declares)"
        )),
        ErrorKind::UnknownArgument if invalid.starts_with('-') => {
            let cmd = find(&path);
            let name = std::iter::once("marvel")
                .chain(path.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            let mut flags: Vec<String> = cmd
                .get_arguments()
                .filter(|a| !a.is_positional() && !a.is_hide_set() && !a.is_global_set())
                .filter_map(|a| match (a.get_short(), a.get_long()) {
                    (Some(s), Some(l)) => Some(format!("-{s}/--{l}")),
                    (None, Some(l)) => Some(format!("--{l}")),
                    (Some(s), None) => Some(format!("-{s}")),
                    (None, None) => None,
                })
                .collect();
            flags.retain(|f| f != "-h/--help");
            let suggested = e.get(ContextKind::SuggestedArg).and_then(|v| match v {
                ContextValue::String(s) => Some(s.clone()),
                _ => None,
            });
            let mut text = format!("error: `{name}` has no option {invalid}");
            match suggested {
                Some(s) => text.push_str(&format!("\nhelp: did you mean {s}?")),
                None if flags.is_empty() => {
                    text.push_str(&format!("\nhelp: it takes no options; see `{name} --help`"))
                }
                None => text.push_str(&format!(
                    "\nhelp: its options are {}; see `{name} --help`",
                    flags.join(", ")
                )),
            }
            Some(text)
        }
        _ => None,
    }
}

/// The verbs (and sub-verbs) named in `words`, as far as they go.
fn verb_path(words: &[String]) -> Vec<String> {
    let mut cmd = Cli::command();
    cmd.build();
    // Global options that take a value (`--context NAME`, `--state-dir
    // DIR`): their value is not a verb.
    let valued: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set() && a.get_action().takes_values())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let mut path = Vec::new();
    let mut words = words.iter();
    while let Some(w) = words.next() {
        if valued.contains(w) {
            words.next();
            continue;
        }
        if w.starts_with('-') {
            continue;
        }
        let Some(sub) = cmd
            .get_subcommands()
            .find(|s| s.get_name() == w || s.get_all_aliases().any(|a| a == w))
            .cloned()
        else {
            break;
        };
        path.push(sub.get_name().to_string());
        cmd = sub;
    }
    path
}

/// The command at `path`.
fn find(path: &[String]) -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    for p in path {
        match cmd.find_subcommand(p).cloned() {
            Some(sub) => cmd = sub,
            None => break,
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn said(args: &[&str]) -> Option<String> {
        let argv: Vec<OsString> = std::iter::once("marvel")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        let e = Cli::try_parse_from(&argv).expect_err("a usage error");
        assert_eq!(e.exit_code(), 2);
        misuse(&e, &argv)
    }

    #[test]
    fn verbs_of_other_tools_point_to_marvels() {
        let ps = said(&["ps"]).unwrap();
        assert_eq!(
            ps,
            "error: marvel has no `ps` command\nhelp: use marvel get sessions"
        );
        assert!(said(&["ls"]).unwrap().contains("marvel get sessions"));
        assert!(said(&["frobnicate"]).is_none(), "clap says the rest");
    }

    #[test]
    fn delete_without_team_says_delete_team() {
        let text = said(&["delete", "demo"]).unwrap();
        assert!(
            text.contains("did you mean `marvel delete team demo`?"),
            "{text}"
        );
    }

    #[test]
    fn a_flag_that_does_not_exist_is_named_with_the_ones_that_do() {
        let text = said(&["get", "sessions", "-f"]).unwrap();
        assert!(
            text.starts_with("error: `marvel get` has no option -f\n"),
            "{text}"
        );
        assert!(text.contains("-w/--watch"), "{text}");
        assert!(!text.contains("to pass"), "{text}");
        let text = said(&["scale", "worker", "-1"]).unwrap();
        assert!(
            text.starts_with("error: `marvel scale` has no option -1"),
            "{text}"
        );
        let text = said(&["get", "sessions", "--wach"]).unwrap();
        assert!(text.contains("did you mean --watch?"), "{text}");
    }

    /// Regression: the value of `--context` or `--state-dir` before the
    /// verb was taken for an unknown verb, and the advice was about
    /// `marvel` itself.
    #[test]
    fn the_value_of_a_global_option_is_not_taken_for_a_verb() {
        let text = said(&["--context", "build", "get", "sessions", "-f"]).unwrap();
        assert!(
            text.starts_with("error: `marvel get` has no option -f\n"),
            "{text}"
        );
        let text = said(&["--state-dir", "/tmp/s", "delete", "demo"]).unwrap();
        assert!(
            text.contains("did you mean `marvel delete team demo`?"),
            "{text}"
        );
        let text = said(&["--context=build", "delete", "demo"]).unwrap();
        assert!(text.contains("marvel delete team demo"), "{text}");
    }
}
