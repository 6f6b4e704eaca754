//! Resuming after a restart: a restarted slot runs its role's `resume`,
//! a first start and a reset run `command`, and every program is told
//! how it was started (`MARVEL_RESTARTS`, `MARVEL_PREVIOUS_EXIT`).

use crate::support::{Env, role, team};

/// Waits until `key`'s current run printed `needle`.
fn printed(env: &Env, key: &str, needle: &str) {
    env.wait(&format!("{key} to print {needle:?}"), |e| {
        e.ok(&["logs", key]).contains(needle).then_some(())
    });
}

#[test]
fn a_crash_resumes_a_reset_starts_afresh_and_the_program_knows_which() {
    let env = Env::new();
    let say = |word: &str, code: i32| {
        format!(
            r#"["sh", "-c", "echo {word} restarts=$MARVEL_RESTARTS prev=[$MARVEL_PREVIOUS_EXIT]; read x; exit {code}"]"#
        )
    };
    let extra = format!("resume: {}, max_restarts: 1,", say("resumed", 4));
    let file = env.manifest(
        "team.ron",
        &team("squad", &role("agent", 1, &say("fresh", 3), &extra)),
    );
    env.ok(&["run", &file, "--wait"]);
    printed(&env, "agent-0", "fresh restarts=0 prev=[]");

    // It crashes: the replacement resumes, and knows how its predecessor ended.
    env.ok(&["inject", "agent-0", "go", "--enter"]);
    printed(&env, "agent-0", "resumed restarts=1 prev=[exit 3]");

    // It crashes again: past its budget, the role freezes.
    env.ok(&["inject", "agent-0", "go", "--enter"]);
    env.wait("the role to freeze", |e| {
        (e.role("t/squad/agent")["state"] == "frozen").then_some(())
    });

    // A reset starts it afresh: the command, nothing to resume.
    env.ok(&["reset", "role", "agent"]);
    printed(&env, "agent-0", "fresh restarts=0 prev=[]");

    // `kill` is no crash, but the slot resumes all the same.
    env.ok(&["kill", "agent-0"]);
    printed(&env, "agent-0", "resumed restarts=1 prev=[killed]");
    env.wait("the role to be ready", |e| {
        (e.role("t/squad/agent")["state"] == "ready").then_some(())
    });
    assert_eq!(env.role("t/squad/agent")["restarts"], 0, "kill is no crash");
}
