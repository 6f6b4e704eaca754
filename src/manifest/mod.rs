//! RON team manifests → validated [`TeamSpec`]s, in three steps: the
//! written form (`schema`, whose fields are the spec's checked types, so
//! ron refuses a bad value where it is written), the rules across fields
//! and against this machine (`validate`), and turning every refusal into
//! `FILE:LINE:COL: field: message` (`diagnose`, with `locate` finding
//! the field at a position, which ron cannot tell).

mod diagnose;
mod locate;
mod schema;
mod validate;

use std::path::Path;

use crate::domain::spec::TeamSpec;
use crate::error::{Error, Result};

pub use validate::check_on_path;

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

/// Reads and validates the manifest at `path` for the daemon of another
/// host (`host` names it in messages): every rule but those about this
/// machine, since the programs and directories it names are that host's.
/// So a path must be absolute: a relative `cwd`, or a relative path to a
/// program, would name a place on this machine. A program name without a
/// `/` is looked up on that host's `PATH` when its pane starts.
pub fn load_for_host(path: &Path, host: &str) -> Result<TeamSpec> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, &e))?;
    let file = path.display().to_string();
    let raw = schema::read(&text).map_err(|e| diagnose::ron_error(&file, &text, e))?;
    for (i, role) in raw.roles.iter().enumerate() {
        let dirs = [
            ("cwd", role.cwd.as_deref()),
            ("worktree.repo", role.worktree.as_ref().map(|w| &*w.repo)),
        ];
        for (field, dir) in dirs {
            let Some(dir) = dir.filter(|d| d.is_relative()) else {
                continue;
            };
            let refusal = validate::Refusal {
                path: format!("roles[{i}].{field}"),
                message: format!(
                    "{} is relative, and the team goes to {host}: a relative {field} would name a directory on this machine",
                    dir.display()
                ),
                help: Some(format!("give the absolute path of the directory on {host}")),
            };
            return Err(diagnose::refusal(&file, &text, refusal));
        }
    }
    let on_host = |cmd: &str| -> Result<(), String> {
        if cmd.contains('/') && !cmd.starts_with('/') {
            return Err(format!(
                "{cmd} is a relative path, and the team goes to {host}: give the absolute path of the program on {host}, or a name to look up on its PATH"
            ));
        }
        Ok(())
    };
    validate::team(raw, &on_host, None).map_err(|r| diagnose::refusal(&file, &text, r))
}

/// A refusal of a manifest's value that the daemon found (git's verdict
/// on a `worktree.repo`), pointed at that value in the file at `path`.
pub fn locate_in(e: Error, path: &Path) -> Error {
    let Error::Manifest {
        position: None,
        field: Some(field),
        message,
        help,
        file,
    } = e
    else {
        return e;
    };
    let (file, position) = match std::fs::read_to_string(path) {
        Ok(text) => (
            path.display().to_string(),
            Some(locate::Located::new(&text).position_of(&field)),
        ),
        Err(_) => (file, None),
    };
    Error::Manifest {
        file,
        position,
        field: Some(field),
        message,
        help,
    }
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

/// [`parse`], and with `base` (the manifest's directory) also resolve each
/// `cwd` against it and check that it is a directory.
fn parse_in(
    file: &str,
    text: &str,
    resolver: &dyn Fn(&str) -> Result<(), String>,
    base: Option<&Path>,
) -> Result<TeamSpec> {
    let raw = schema::read(text).map_err(|e| diagnose::ron_error(file, text, e))?;
    validate::team(raw, resolver, base).map_err(|r| diagnose::refusal(file, text, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::diagnose::closest;
    use super::validate::check_in;
    use crate::domain::spec::fuzz;
    use crate::domain::spec::{Failures, Health, NonZeroSpan, RestartPolicy, RoleSpec};

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
    fn a_team_for_another_host_takes_only_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("team.ron");
        // Programs are that host's: not looked up here.
        std::fs::write(
            &file,
            one_role(r#"Role(name: "w", command: ["no-such-agent-here"], cwd: "/srv/x")"#),
        )
        .unwrap();
        let spec = load_for_host(&file, "build").unwrap();
        assert_eq!(spec.roles[0].cwd.as_deref(), Some(Path::new("/srv/x")));
        std::fs::write(
            &file,
            one_role(r#"Role(name: "w", command: ["sh"], cwd: "work")"#),
        )
        .unwrap();
        let e = load_for_host(&file, "build").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "error: {}:4:47: roles[0].cwd: work is relative",
                file.display()
            )),
            "{e}"
        );
        assert!(
            e.contains("help: give the absolute path of the directory on build"),
            "{e}"
        );
        std::fs::write(&file, one_role(r#"Role(name: "w", command: ["./agent"])"#)).unwrap();
        let e = load_for_host(&file, "build").unwrap_err().to_string();
        assert!(
            e.contains("roles[0].command[0]: ./agent is a relative path"),
            "{e}"
        );
        // Every other rule still holds.
        std::fs::write(
            &file,
            one_role(r#"Role(name: "w", command: ["sh"], replicas: 0)"#),
        )
        .unwrap();
        assert!(load_for_host(&file, "build").is_err());
    }

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
        assert_eq!(w.replicas.get(), 3);
        assert_eq!(*w.command, ["my-agent", "--flag"]);
        assert_eq!(
            *w.env,
            BTreeMap::from([
                ("MODE".to_string(), "fast".to_string()),
                ("TOKEN_FILE".to_string(), "/run/token".to_string()),
            ])
        );
        assert_eq!(w.cwd.as_deref(), Some(Path::new("/srv/project")));
        assert_eq!(w.restart, RestartPolicy::OnFailure);
        let b = &w.backoff;
        assert_eq!(
            (b.initial(), b.max(), b.factor(), b.jitter()),
            (
                Duration::from_millis(250),
                Duration::from_secs(120),
                1.5,
                0.0
            )
        );
        assert_eq!(w.max_restarts, Some(7));
        assert_eq!(w.window.get(), Duration::from_secs(3600));
        assert_eq!(w.reset_after.get(), Duration::from_secs(90));
        assert_eq!(
            w.health,
            Some(Health::Heartbeat {
                timeout: NonZeroSpan::from_secs(30),
                failures: Failures::new(2).unwrap()
            })
        );
        let lead = &spec.roles[1];
        assert_eq!(
            (lead.replicas.get(), lead.restart),
            (2, RestartPolicy::Never)
        );
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
        let b = &spec.roles[0].backoff;
        assert_eq!(
            (b.initial(), b.max(), b.factor(), b.jitter()),
            (Duration::from_secs(1), Duration::from_secs(5), 2.0, 0.1)
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
                timeout: NonZeroSpan::from_secs(5),
                failures: Failures::new(3).unwrap()
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
        assert_eq!(spec.roles[0].ready_after.get(), Duration::from_secs(1));
        let spec = accept(&one_role(
            r#"Role(name: "w", command: ["sh"], ready_after: "0s")"#,
        ));
        assert_eq!(spec.roles[0].ready_after.get(), Duration::ZERO);
        let spec = accept(&one_role(
            r#"Role(name: "w", command: ["sh"], ready_after: "250ms")"#,
        ));
        assert_eq!(spec.roles[0].ready_after.get(), Duration::from_millis(250));
        assert!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], ready_after: "soon")"#
            ))
            .contains("roles[0].ready_after: \"soon\" is not a duration"),
        );
    }

    #[test]
    fn idle_after_defaults_to_thirty_seconds_and_waiting_to_none() {
        let spec = accept(&one_role(r#"Role(name: "w", command: ["sh"])"#));
        assert_eq!(spec.roles[0].idle_after.get(), Duration::from_secs(30));
        assert!(spec.roles[0].waiting.is_none());
        let spec = accept(&one_role(
            r#"Role(name: "w", command: ["sh"], idle_after: "2s", waiting: "(?i)allow .*\\?")"#,
        ));
        let w = &spec.roles[0];
        assert_eq!(w.idle_after.get(), Duration::from_secs(2));
        let pattern = w.waiting.as_ref().unwrap();
        assert_eq!(pattern.as_str(), r"(?i)allow .*\?");
        assert!(pattern.is_match("Allow this edit?"));
        assert!(!pattern.is_match("Allowed."));
    }

    #[test]
    fn a_waiting_pattern_that_is_not_a_regular_expression_is_refused_where_it_is_written() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], waiting: "Allow (y/n")"#
            )),
            "error: team.ron:4:51: roles[0].waiting: \"Allow (y/n\" is not a regular expression: unclosed group"
        );
        assert!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], waiting: "")"#
            ))
            .contains("roles[0].waiting: must not be empty")
        );
        assert!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], idle_after: "0s")"#
            ))
            .contains("roles[0].idle_after: must be longer than zero")
        );
    }

    #[test]
    fn notify_commands_get_defaults_and_are_checked_like_role_commands() {
        let text = |notify: &str| {
            format!(
                "Team(\n    name: \"squad\",\n    roles: [Role(name: \"w\", command: [\"sh\"])],\n    notify: [{notify}],\n)\n"
            )
        };
        let spec = accept(&text(
            r#"Notify(on: [Waiting, Crashed, Waiting], command: ["notify-send", "marvel"])"#,
        ));
        let n = &spec.notify[0];
        use crate::domain::spec::Trigger;
        assert_eq!(&*n.on, &[Trigger::Crashed, Trigger::Waiting]);
        assert_eq!(*n.command, ["notify-send", "marvel"]);
        assert_eq!(n.timeout.get(), Duration::from_secs(10));
        assert_eq!(n.coalesce.get(), Duration::from_secs(60));
        assert!(n.wants(crate::domain::event::EventKind::Crashed));
        assert!(!n.wants(crate::domain::event::EventKind::Frozen));
        let spec = accept(&text(
            r#"Notify(on: [Frozen], command: ["x"], timeout: "2s", coalesce: "0s")"#,
        ));
        assert_eq!(spec.notify[0].coalesce.get(), Duration::ZERO);
        assert_eq!(
            refuse(&text(r#"Notify(on: [Waitng], command: ["x"])"#)),
            "error: team.ron:4:26: notify[0].on[0]: unknown variant \"Waitng\"; allowed variants: \
             Started, Crashed, Backoff, Frozen, Reset, Forgiven, Succeeded, Stopped, Killed, Healthy, \
             Unhealthy, Busy, Idle, Waiting, ShiftStarted, ShiftCompleted, ShiftFailed, ShiftAborted\n\
             help: did you mean `Waiting`?"
        );
        assert!(
            refuse(&text(r#"Notify(on: [], command: ["x"])"#))
                .contains("notify[0].on: must name at least one event")
        );
        assert!(
            refuse(&text(r#"Notify(on: [Idle], command: ["no-such-agent"])"#)).contains(
                "notify[0].command[0]: \"no-such-agent\" was not found in any directory on PATH"
            )
        );
        let e = refuse(&text(r#"Notify(on: [Idle], comand: ["x"])"#));
        assert!(e.contains("help: did you mean `command`?"), "{e}");
        assert!(
            refuse(&text(
                r#"Notify(on: [Idle], command: ["x"], timeout: "0s")"#
            ))
            .contains("notify[0].timeout: must be longer than zero")
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
        assert_eq!(spec.roles[0].cwd.as_deref(), Some(Path::new("sub/dir")));
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
        assert_eq!(
            spec.roles[0].cwd.as_deref(),
            Some(dir.path().join("work").as_path())
        );
    }

    #[test]
    fn worktree_and_resume_are_read_with_the_default_branch() {
        let spec = accept(&one_role(
            r#"Role(name: "w", command: ["agent"], worktree: (repo: "/srv/repo"), resume: ["agent", "--continue"])"#,
        ));
        let w = &spec.roles[0];
        let tree = w.worktree.as_ref().unwrap();
        assert_eq!(&*tree.repo, Path::new("/srv/repo"));
        assert_eq!(tree.branch.as_str(), "agents/{team}/{role}-{slot}");
        let key: crate::domain::key::SessionKey = "default/squad/w-3".parse().unwrap();
        assert_eq!(tree.branch.expand(&key), "agents/squad/w-3");
        assert_eq!(**w.resume.as_ref().unwrap(), ["agent", "--continue"]);
        let spec = accept(&one_role(
            r#"Role(name: "w", command: ["sh"], worktree: (repo: "r", branch: "{workspace}/{team}/{role}/{slot}"))"#,
        ));
        let tree = spec.roles[0].worktree.as_ref().unwrap();
        assert_eq!(&*tree.repo, Path::new("r"), "parse keeps it as written");
        let key: crate::domain::key::SessionKey = "demo/squad/w-0".parse().unwrap();
        assert_eq!(tree.branch.expand(&key), "demo/squad/w/0");
        // Neither is there unless asked for.
        let spec = accept(&one_role(r#"Role(name: "w", command: ["sh"])"#));
        assert!(spec.roles[0].worktree.is_none() && spec.roles[0].resume.is_none());
    }

    #[test]
    fn load_resolves_the_repository_and_the_resume_program_from_the_manifest_directory() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir_all(project.join("repo")).unwrap();
        let agent = project.join("agent.sh");
        std::fs::write(&agent, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = project.join("team.ron");
        std::fs::write(
            &file,
            one_role(
                r#"Role(name: "w", command: ["sh"], worktree: (repo: "../project/repo"), resume: ["./agent.sh", "-c"])"#,
            ),
        )
        .unwrap();
        let spec = load(&file).unwrap();
        let w = &spec.roles[0];
        let repo = std::fs::canonicalize(project.join("repo")).unwrap();
        assert_eq!(&*w.worktree.as_ref().unwrap().repo, repo.as_path());
        assert_eq!(
            w.resume.as_ref().unwrap()[0],
            project.join("agent.sh").display().to_string()
        );
        // A repository that is not there is refused where it is written.
        std::fs::write(
            &file,
            one_role(r#"Role(name: "w", command: ["sh"], worktree: (repo: "gone"))"#),
        )
        .unwrap();
        let e = load(&file).unwrap_err();
        assert_eq!(e.code(), crate::error::exit::INVALID_MANIFEST);
        assert!(
            e.to_string().contains(&format!(
                "roles[0].worktree.repo: {} does not exist",
                project.join("gone").display()
            )),
            "{e}"
        );
        // For another host, a relative repository names nothing there.
        std::fs::write(
            &file,
            one_role(r#"Role(name: "w", command: ["sh"], worktree: (repo: "repo"))"#),
        )
        .unwrap();
        let e = load_for_host(&file, "build").unwrap_err().to_string();
        assert!(
            e.contains("roles[0].worktree.repo: repo is relative, and the team goes to build"),
            "{e}"
        );
    }

    #[test]
    fn a_refusal_from_the_daemon_is_pointed_at_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("team.ron");
        std::fs::write(
            &file,
            one_role(r#"Role(name: "w", command: ["sh"], worktree: (repo: "/r"))"#),
        )
        .unwrap();
        let e = Error::Manifest {
            file: "/elsewhere/team.ron".into(),
            position: None,
            field: Some("roles[0].worktree.repo".into()),
            message: "/r is not a git repository".into(),
            help: None,
        };
        assert_eq!(
            locate_in(e, &file).to_string(),
            format!(
                "error: {}:4:59: roles[0].worktree.repo: /r is not a git repository",
                file.display()
            )
        );
        let other = Error::refused("no", None);
        assert_eq!(locate_in(other.clone(), &file), other);
    }

    #[test]
    fn a_branch_without_a_slot_is_refused() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], worktree: (repo: "/r", branch: "agents/{role}"))"#
            )),
            "error: team.ron:4:73: roles[0].worktree.branch: \"agents/{role}\" has no {slot}: \
             every slot needs a branch of its own\n\
             help: for example \"agents/{role}-{slot}\""
        );
    }

    #[test]
    fn a_misspelled_placeholder_gets_a_suggestion() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], worktree: (repo: "/r", branch: "a/{rol}-{slot}"))"#
            )),
            "error: team.ron:4:73: roles[0].worktree.branch: \"{rol}\" in \"a/{rol}-{slot}\" is not a \
             placeholder; the placeholders are {workspace}, {team}, {role} and {slot}\n\
             help: did you mean `{role}`?"
        );
    }

    #[test]
    fn a_branch_git_cannot_name_is_refused() {
        for bad in [
            "a b/{slot}",
            "a..b/{slot}",
            "{slot}.lock",
            "/a/{slot}",
            "a/.{slot}",
            "x~{slot}",
        ] {
            let e = refuse(&one_role(&format!(
                r#"Role(name: "w", command: ["sh"], worktree: (repo: "/r", branch: "{bad}"))"#
            )));
            assert!(
                e.contains(&format!(
                    "roles[0].worktree.branch: {bad:?} cannot be a git branch name"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn a_misspelled_worktree_field_gets_a_suggestion() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], worktree: (repo: "/r", brnach: "b/{slot}"))"#
            )),
            "error: team.ron:4:65: roles[0].worktree.brnach: unknown field \"brnach\"; allowed \
             fields: repo, branch\n\
             help: did you mean `branch`?"
        );
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], resum: ["sh"])"#
            )),
            "error: team.ron:4:42: roles[0].resum: unknown field \"resum\"; allowed fields: name, \
             replicas, command, env, cwd, restart, backoff, max_restarts, window, reset_after, \
             health, ready_after, shift_last, layout, worktree, resume, idle_after, waiting\n\
             help: did you mean `resume`?"
        );
    }

    #[test]
    fn a_role_runs_in_its_worktree_or_in_its_cwd_not_both() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], cwd: "/srv", worktree: (repo: "/r"))"#
            )),
            "error: team.ron:4:47: roles[0].cwd: a role with a worktree runs in it: cwd would say \
             otherwise\n\
             help: leave out cwd"
        );
    }

    #[test]
    fn a_worktree_needs_its_repository() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], worktree: (branch: "b/{slot}"))"#
            )),
            "error: team.ron:4:71: roles[0].worktree.repo: required field is missing; expected \
             the directory of a git repository"
        );
    }

    #[test]
    fn a_resume_program_that_cannot_run_is_refused() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], resume: ["no-such-agent", "--continue"])"#
            )),
            "error: team.ron:4:51: roles[0].resume[0]: \"no-such-agent\" was not found in any \
             directory on PATH\n\
             help: give the full path to the program, or add its directory to PATH"
        );
        assert!(
            refuse(&one_role(r#"Role(name: "w", command: ["sh"], resume: [])"#))
                .contains("roles[0].resume: must not be empty")
        );
    }

    #[test]
    fn two_roles_on_the_same_branches_of_one_repository_are_refused() {
        assert_eq!(
            refuse(
                r#"Team(
    name: "squad",
    roles: [
        Role(name: "a", command: ["sh"], worktree: (repo: "/r", branch: "x/{slot}")),
        Role(name: "b", command: ["sh"], worktree: (repo: "/r", branch: "x/{slot}")),
    ],
)"#
            ),
            "error: team.ron:5:73: roles[1].worktree.branch: \"x/{slot}\" gives the same branches \
             as roles[0] in the same repository; a branch can be checked out in one worktree only\n\
             help: put {role} in the branch names, or give each role its own"
        );
        // Another repository, or {role} in the name, keeps them apart.
        accept(
            r#"Team(name: "squad", roles: [
                Role(name: "a", command: ["sh"], worktree: (repo: "/r", branch: "x/{slot}")),
                Role(name: "b", command: ["sh"], worktree: (repo: "/s", branch: "x/{slot}")),
                Role(name: "c", command: ["sh"], worktree: (repo: "/r", branch: "{role}/{slot}")),
                Role(name: "d", command: ["sh"], worktree: (repo: "/r")),
            ])"#,
        );
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
             name, replicas, command, env, cwd, restart, backoff, max_restarts, window, reset_after, health, ready_after, shift_last, layout, worktree, resume, idle_after, waiting\n\
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
    fn a_layout_that_does_not_exist() {
        let err = refuse(&one_role(
            r#"Role(name: "w", command: ["sh"], layout: Tile)"#,
        ));
        assert!(
            err.starts_with("error: team.ron:4:50: roles[0].layout: unknown variant \"Tile\"; allowed variants: Windows, Tiled"),
            "{err}"
        );
        assert!(err.ends_with("help: did you mean `Tiled`?"), "{err}");
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
    fn duration_longer_than_ten_years() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], window: "1000000years")"#
            )),
            "error: team.ron:4:50: roles[0].window: \"1000000years\" is too long; durations are \
             at most 10 years (\"10y\")"
        );
        let spec = accept(&one_role(
            r#"Role(name: "w", command: ["sh"], window: "10y", health: Heartbeat(timeout: "10y"))"#,
        ));
        assert_eq!(
            spec.roles[0].window.get(),
            crate::domain::spec::MAX_DURATION
        );
        for field in ["reset_after", "ready_after"] {
            let text = one_role(&format!(
                r#"Role(name: "w", command: ["sh"], {field}: "3653d")"#
            ));
            assert!(refuse(&text).contains("is too long"), "{field}");
        }
        assert!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], backoff: (max: "11y"))"#
            ))
            .contains("roles[0].backoff.max: \"11y\" is too long")
        );
        assert!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], health: Heartbeat(timeout: "11y"))"#
            ))
            .contains("roles[0].health.timeout: \"11y\" is too long")
        );
    }

    #[test]
    fn command_line_longer_than_tmux_accepts() {
        let long = "x".repeat(crate::domain::spec::MAX_COMMAND_LINE_BYTES);
        assert_eq!(
            refuse(&one_role(&format!(
                r#"Role(name: "w", command: ["sh", "{long}"])"#
            ))),
            "error: team.ron:4:34: roles[0].command: command, env and cwd take 12294 bytes; \
             tmux accepts at most 12288 of them in the command that starts a pane\n\
             help: pass long text through a file, and name the file in the command or env"
        );
        assert!(
            refuse(&one_role(&format!(
                r#"Role(name: "w", command: ["sh"], env: {{"K": "{long}"}})"#
            )))
            .starts_with("error: team.ron:4:47: roles[0].env: command, env and cwd take")
        );
    }

    #[test]
    fn command_argument_with_a_nul_character() {
        assert_eq!(
            refuse(&one_role(r#"Role(name: "w", command: ["sh", "a\u{0}b"])"#)),
            "error: team.ron:4:41: roles[0].command[1]: contains a NUL character, which no \
             program can receive"
        );
    }

    #[test]
    fn empty_environment_name() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", command: ["sh"], env: {"": "c"})"#
            )),
            "error: team.ron:4:47: roles[0].env: \"\" cannot be an environment variable name: \
             it is empty"
        );
    }

    #[test]
    fn negative_replicas() {
        assert_eq!(
            refuse(&one_role(
                r#"Role(name: "w", replicas: -1, command: ["sh"])"#
            )),
            "error: team.ron:4:35: roles[0].replicas: must be between 1 and 1000, got -1"
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
            files.len() >= 3,
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
            Ok(spec) => crate::domain::spec::assert_valid(&spec),
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

    #[test]
    fn the_fuzzing_seeds_are_valid() {
        for seed in examples() {
            accept(&seed);
        }
        accept(VALID);
    }

    /// The shipped examples without their comment lines: small inputs make
    /// many cases cheap, and [`VALID`] has every kind of comment.
    fn examples() -> Vec<String> {
        let bare = |text: &str| -> String {
            text.lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        vec![
            bare(include_str!("../../roles/demo.ron")),
            bare(include_str!("../../roles/crashy.ron")),
        ]
    }

    /// Pieces that matter to the parser or to a field's rule.
    const SNIPPETS: &[&str] = &[
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "\"",
        "'",
        "#",
        "//",
        "/*",
        "*/",
        "\\",
        " ",
        "\n",
        "0",
        "-1",
        "1001",
        "4294967296",
        "2.5",
        "inf",
        "NaN",
        "None",
        "Some(",
        "true",
        "r#\"",
        "\"#",
        "b\"",
        "\"\"",
        "\"0s\"",
        "\"10y\"",
        "\"11y\"",
        "\"1000000years\"",
        "\"A=B\"",
        "\"\\u{0}\"",
        "Heartbeat(",
        "(initial: \"2m\")",
        "name: \"x\"",
        "é",
    ];

    /// A few random edits of `seed`: deletions, insertions (of characters,
    /// or of pieces the parser cares about) and repeats.
    fn mutate(rng: &mut fastrand::Rng, seed: &str) -> String {
        let mut chars: Vec<char> = seed.chars().collect();
        for _ in 0..rng.usize(1..6) {
            let n = chars.len();
            let at = rng.usize(..=n);
            match rng.u8(..4) {
                0 if at < n => {
                    let end = (at + rng.usize(1..8)).min(n);
                    chars.drain(at..end);
                }
                1 => {
                    let piece = SNIPPETS[rng.usize(..SNIPPETS.len())];
                    chars.splice(at..at, piece.chars());
                }
                2 => chars.insert(at, rng.char(..)),
                _ if at < n => {
                    let end = (at + rng.usize(1..40)).min(n);
                    let piece = chars[at..end].to_vec();
                    chars.splice(at..at, piece);
                }
                _ => {}
            }
        }
        chars.into_iter().collect()
    }

    // Of a fuzz run's cases, 7/20 mutate the examples, 3/20 the manifest that
    // writes every field, and a quarter each are random bytes and RON soup.

    #[test]
    fn mutated_examples_are_refused_cleanly() {
        let examples = examples();
        fuzz::run(
            fuzz::cases() * 7 / 20,
            |rng| {
                let seed = &examples[rng.usize(..examples.len())];
                mutate(rng, seed)
            },
            |text| assert_refused_cleanly(text),
        );
    }

    #[test]
    fn mutated_manifests_are_refused_cleanly() {
        fuzz::run(
            fuzz::cases() * 3 / 20,
            |rng| mutate(rng, VALID),
            |text| assert_refused_cleanly(text),
        );
    }

    #[test]
    fn random_bytes_are_refused_cleanly() {
        fuzz::run(
            fuzz::cases() / 4,
            |rng| {
                let ascii = rng.bool();
                let bytes: Vec<u8> = (0..rng.usize(..64))
                    .map(|_| {
                        if ascii {
                            rng.u8(b' '..=b'~')
                        } else {
                            rng.u8(..)
                        }
                    })
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            },
            |text| assert_refused_cleanly(text),
        );
    }

    #[test]
    fn ron_like_text_is_refused_cleanly() {
        const WORDS: &[&str] = &[
            "Team", "Role", "name", "roles", "command", "replicas", "env", "backoff", "health",
            "window", "\"w\"", "\"sh\"", "x", "_", "r#x",
        ];
        fuzz::run(
            fuzz::cases() / 4,
            |rng| {
                (0..rng.usize(..24))
                    .map(|_| {
                        if rng.bool() {
                            WORDS[rng.usize(..WORDS.len())]
                        } else {
                            SNIPPETS[rng.usize(..SNIPPETS.len())]
                        }
                    })
                    .collect::<String>()
            },
            |text| assert_refused_cleanly(text),
        );
    }
}
