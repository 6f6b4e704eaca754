//! A git worktree per slot, with the real git in temporary repositories:
//! made once, kept across crashes and daemon restarts, one per slot,
//! refused at `run` when git cannot have it, kept (or pruned when clean)
//! when the team is deleted.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Env, role, signal, team};

/// Runs git for the test's own setup; its output.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository `repo` in the test's directory, with one commit.
fn repo(env: &Env) -> PathBuf {
    let repo = env.dir().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "first"]);
    repo
}

/// The worktrees git knows of `repo` (the main one included).
fn worktrees(repo: &Path) -> Vec<String> {
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .map(str::to_string)
        .collect()
}

/// A program that says where it runs, on which branch, and how it was
/// started, then waits.
const REPORTER: &str = r#"["sh", "-c", "echo at=$(pwd) branch=$(git branch --show-current) restarts=$MARVEL_RESTARTS; exec sleep 600"]"#;

/// A team of `replicas` reporters working in worktrees of `repo`.
fn manifest(env: &Env, replicas: u32) -> String {
    let tree = r#"worktree: (repo: "repo", branch: "agents/{role}-{slot}"),"#;
    env.manifest(
        "team.ron",
        &team("squad", &role("agent", replicas, REPORTER, tree)),
    )
}

fn slot_dir(env: &Env, slot: u32) -> PathBuf {
    env.state_dir()
        .join(format!("worktrees/t/squad/agent-{slot}"))
}

/// Waits until `key`'s current run printed `needle`; returns its output.
fn printed(env: &Env, key: &str, needle: &str) -> String {
    env.wait(&format!("{key} to print {needle:?}"), |e| {
        let text = e.ok(&["logs", key]);
        text.contains(needle).then_some(text)
    })
}

/// The program's pid of `key` once it runs a new uid (not `old`).
fn running_pid(env: &Env, key: &str, old: Option<u64>) -> (u64, u32) {
    env.wait(&format!("{key} running"), |e| {
        e.sessions().into_iter().find_map(|s| {
            let uid = s["uid"].as_u64()?;
            (s["key"] == key && s["state"] == "running" && Some(uid) != old)
                .then(|| (uid, s["pid"].as_u64().unwrap() as u32))
        })
    })
}

#[test]
fn a_slot_gets_its_worktree_once_and_keeps_it_across_a_crash_and_a_daemon_restart() {
    let env = Env::new();
    let repo = repo(&env);
    let file = manifest(&env, 1);
    env.ok(&["run", &file, "--wait"]);
    let dir = slot_dir(&env, 0);
    let real = std::fs::canonicalize(&dir).unwrap();
    printed(
        &env,
        "agent-0",
        &format!("at={} branch=agents/agent-0 restarts=0", real.display()),
    );
    // The worktree is a new branch from the repository's HEAD.
    assert_eq!(
        git(&dir, &["rev-parse", "HEAD"]),
        git(&repo, &["rev-parse", "HEAD"])
    );
    let s = &env.sessions()[0];
    assert_eq!(s["worktree"], dir.display().to_string(), "{s}");
    assert_eq!(s["branch"], "agents/agent-0");
    let wide = env.ok(&["get", "sessions", "-o", "wide"]);
    assert!(
        wide.contains(&format!("{}   agents/agent-0", dir.display())),
        "{wide}"
    );
    let described = env.ok(&["describe", "session", "agent-0"]);
    assert!(
        described.contains(&format!(
            "Worktree:    {} (branch agents/agent-0)",
            dir.display()
        )),
        "{described}"
    );
    // Work in progress, not committed.
    std::fs::write(dir.join("notes"), "half done").unwrap();

    // A crash: the same worktree, the work still there.
    let (uid, pid) = running_pid(&env, "t/squad/agent-0", None);
    signal(pid, 9);
    let (uid, pid) = running_pid(&env, "t/squad/agent-0", Some(uid));
    printed(&env, "agent-0", "branch=agents/agent-0 restarts=1");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes")).unwrap(),
        "half done"
    );

    // The daemon goes away and comes back; the program dies meanwhile.
    env.ok(&["daemon", "stop"]);
    signal(pid, 9);
    running_pid(&env, "t/squad/agent-0", Some(uid));
    printed(&env, "agent-0", "branch=agents/agent-0 restarts=2");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes")).unwrap(),
        "half done"
    );
    assert_eq!(worktrees(&repo).len(), 2, "one worktree, made once");
}

#[test]
fn two_slots_get_two_worktrees_on_two_branches() {
    let env = Env::new();
    let repo = repo(&env);
    let file = manifest(&env, 2);
    env.ok(&["run", &file, "--wait"]);
    for slot in 0..2 {
        let real = std::fs::canonicalize(slot_dir(&env, slot)).unwrap();
        printed(
            &env,
            &format!("agent-{slot}"),
            &format!("at={} branch=agents/agent-{slot} ", real.display()),
        );
    }
    assert_eq!(worktrees(&repo).len(), 3);
    let branches: Vec<String> = env
        .sessions()
        .iter()
        .map(|s| s["branch"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(branches, ["agents/agent-0", "agents/agent-1"]);
}

#[test]
fn what_git_cannot_do_is_refused_at_run_and_nothing_starts() {
    let env = Env::new();
    // Not a repository: a manifest error, pointed at the field.
    std::fs::create_dir(env.dir().join("repo")).unwrap();
    let file = manifest(&env, 1);
    let err = env.fails(&["run", &file], 3);
    assert!(
        err.contains(&format!("error: {file}:1:")) && err.contains("roles[0].worktree.repo: "),
        "{err}"
    );
    assert!(err.contains("is not a git repository"), "{err}");
    assert!(env.sessions().is_empty());
    assert!(env.json(&["get", "teams"]).as_array().unwrap().is_empty());

    // A branch a slot would use is checked out elsewhere: refused.
    std::fs::remove_dir(env.dir().join("repo")).unwrap();
    let repo = repo(&env);
    let other = env.dir().join("other");
    git(
        &repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "agents/agent-1",
            other.to_str().unwrap(),
        ],
    );
    let file = manifest(&env, 2);
    let err = env.fails(&["run", &file], 5);
    assert!(
        err.contains(&format!(
            "error: branch agents/agent-1 of t/squad/agent-1 is checked out at {}",
            other.display()
        )),
        "{err}"
    );
    assert!(err.contains("help: "), "{err}");
    assert!(env.sessions().is_empty());
    // A directory that is not there is refused before any daemon is asked.
    let gone = env.manifest(
        "gone.ron",
        &team(
            "gone",
            &role("agent", 1, REPORTER, r#"worktree: (repo: "nowhere"),"#),
        ),
    );
    let err = env.fails(&["run", &gone], 3);
    assert!(
        err.contains("roles[0].worktree.repo: ") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn without_git_a_team_with_worktrees_is_refused_at_run() {
    let env = Env::new();
    repo(&env);
    // The daemon's PATH has tmux, sh and sleep, and no git.
    let bin = env.dir().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in ["tmux", "sh", "sleep"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
        std::os::unix::fs::symlink(path, bin.join(tool)).unwrap();
    }
    let mut env = env;
    env.env.push(("PATH".into(), bin.display().to_string()));
    let file = manifest(&env, 1);
    let err = env.fails(&["run", &file], 5);
    assert!(
        err.contains("error: team t/squad has roles with worktrees, and the daemon cannot run git"),
        "{err}"
    );
    assert!(err.contains("help: install git"), "{err}");
    assert!(env.sessions().is_empty());
    // A team without worktrees runs as ever.
    let plain = env.manifest(
        "plain.ron",
        &team("plain", &role("w", 1, r#"["sleep", "600"]"#, "")),
    );
    env.ok(&["run", &plain, "--wait"]);
}

#[test]
fn delete_keeps_worktrees_and_prune_removes_only_the_clean_ones() {
    let env = Env::new();
    let repo = repo(&env);
    let file = manifest(&env, 2);
    env.ok(&["run", &file, "--wait"]);
    let (clean, dirty) = (slot_dir(&env, 0), slot_dir(&env, 1));
    std::fs::write(dirty.join("notes"), "unsaved").unwrap();

    let out = env.ok(&["delete", "team", "squad"]);
    assert_eq!(
        out,
        format!(
            "team t/squad deleted\nits worktrees are kept, with their branches:\n  \
             {}  agents/agent-0\n  {}  agents/agent-1\n\
             remove one with `git worktree remove PATH` once its work is merged\n",
            clean.display(),
            dirty.display()
        )
    );
    assert!(clean.exists() && dirty.join("notes").exists());
    assert!(env.sessions().is_empty());

    // Run again: the slots find their worktrees, the work where it was.
    env.ok(&["run", &file, "--wait"]);
    printed(&env, "agent-1", "branch=agents/agent-1 restarts=0");
    assert_eq!(worktrees(&repo).len(), 3);

    let out = env.ok(&["delete", "team", "squad", "--prune-worktrees"]);
    assert_eq!(
        out,
        format!(
            "team t/squad deleted\n\
             removed worktree {} (its branch agents/agent-0 stays)\n\
             kept worktree {} (agents/agent-1): 1 uncommitted change\n",
            clean.display(),
            dirty.display()
        )
    );
    assert!(!clean.exists());
    assert_eq!(
        std::fs::read_to_string(dirty.join("notes")).unwrap(),
        "unsaved"
    );
    assert_eq!(worktrees(&repo).len(), 2);
    // The branch of the removed worktree keeps its commits.
    git(
        &repo,
        &["rev-parse", "--verify", "refs/heads/agents/agent-0"],
    );
}

#[test]
fn a_worktree_that_cannot_be_had_any_more_is_a_crash_that_says_so() {
    let env = Env::new();
    let repo = repo(&env);
    let file = manifest(&env, 1);
    env.ok(&["run", &file, "--wait"]);
    // The repository goes, and with it what the worktree refers to.
    std::fs::remove_dir_all(&repo).unwrap();
    env.ok(&["kill", "agent-0"]);
    let marker = env.wait("the crash", |e| {
        e.in_state("t/squad/agent", "crashed").pop()
    });
    let reason = marker["exit"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "worktree unavailable: {}: ",
            slot_dir(&env, 0).display()
        )),
        "{marker}"
    );
    // Never started anywhere else.
    assert!(env.in_state("t/squad/agent", "running").is_empty());
}
