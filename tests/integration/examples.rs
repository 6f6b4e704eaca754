//! The shipped example of agents (`roles/agents.ron` with
//! `roles/fake-agent.sh`) does what its comments and the README say, run
//! from a copy of it inside a throwaway git repository (its worktrees are
//! of the repository the file is in).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::Env;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// Waits until the agent `key` shows `text` on its screen.
fn shows(env: &Env, key: &str, text: &str) {
    env.wait(&format!("{key} to show {text:?}"), |e| {
        let screen = e.ok(&["capture", key]);
        screen.contains(text).then_some(())
    });
}

#[test]
fn the_agents_example_works_waits_resumes_and_notifies_as_documented() {
    let mut env = Env::new();
    // The notify command writes to $TMPDIR; the agents work 2 steps a task.
    env.env
        .push(("TMPDIR".into(), env.dir().display().to_string()));
    env.env.push(("FAKE_AGENT_STEPS".into(), "2".into()));
    let repo = env.dir().join("clone");
    let roles = repo.join("roles");
    std::fs::create_dir_all(&roles).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("roles");
    for f in ["agents.ron", "fake-agent.sh"] {
        std::fs::copy(shipped.join(f), roles.join(f)).unwrap();
    }
    let mode = std::fs::metadata(roles.join("fake-agent.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "the shipped fake agent is executable");
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);

    let file = roles.join("agents.ron").display().to_string();
    env.ok(&["run", &file]);
    env.wait_running("demo/agents/agent", 2);
    // Busy while it works, then waiting at its prompt (through the role's
    // pattern, once idle for 3 s).
    for slot in 0..2 {
        let key = format!("demo/agents/agent-{slot}");
        env.wait(&format!("{key} waiting"), |e| {
            e.sessions()
                .into_iter()
                .find(|s| s["key"] == key.as_str() && s["activity"] == "waiting")
        });
    }

    // An answer reaches the agent, which edits a file in its own worktree.
    env.ok(&[
        "inject",
        "demo/agents/agent-0",
        "y",
        "--enter",
        "--when-idle",
    ]);
    let notes = env
        .state_dir()
        .join("worktrees/demo/agents/agent-0/notes.txt");
    env.wait("the agent's edit", |_| {
        let text = std::fs::read_to_string(&notes).ok()?;
        text.contains("task 1 edited by demo/agents/agent-0")
            .then_some(())
    });

    // Told to crash, the other agent is restarted with its resume command.
    env.ok(&["inject", "demo/agents/agent-1", "crash 3", "--enter"]);
    shows(
        &env,
        "demo/agents/agent-1",
        "fake agent: resuming after restart 1 (exit 3)",
    );
    let s = env
        .sessions()
        .into_iter()
        .find(|s| s["key"] == "demo/agents/agent-1" && s["state"] == "running")
        .expect("agent-1 running again");
    assert_eq!(s["branch"], "agents/demo-1", "{s}");

    // The notify command was told of both, in its environment.
    let log = env.dir().join("marvel-agents-demo.log");
    let told = env.wait("the notifications", |_| {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.contains("waiting demo/agents/agent-0: ")
            && text.contains("crashed demo/agents/agent-1: exit 3"))
        .then_some(text)
    });
    assert!(
        told.lines().all(|l| l.starts_with("20")),
        "each line starts with the event's time: {told}"
    );

    // Deleting the team keeps the worktree with work in it.
    let out = env.ok(&["delete", "team", "demo/agents", "--prune-worktrees"]);
    assert!(
        out.contains("agent-1 (its branch agents/demo-1 stays)"),
        "{out}"
    );
    assert!(
        out.contains("kept worktree") && out.contains("1 uncommitted change"),
        "{out}"
    );
    assert!(notes.exists());
}
