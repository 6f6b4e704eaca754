//! Bad requests get clear errors and the documented exit codes.

use crate::support::*;

#[test]
fn unknown_and_crashed_sessions_and_unknown_roles_are_clear_errors() {
    let env = Env::new();
    let r = role("worker", 1, r#"["sh", "-c", "exit 7"]"#, "restart: Never,");
    let file = env.manifest("team.ron", &team("squad", &r));
    env.ok(&["run", &file]);
    env.wait("the crash", |e| {
        (!e.in_state("t/squad/worker", "crashed").is_empty()).then_some(())
    });

    let err = env.fails(&["inject", "nope-0", "hello"], 4);
    assert_eq!(
        err.lines().next(),
        Some("error: no session matches \"nope-0\"")
    );
    let err = env.fails(&["inject", "worker-0", "hello"], 5);
    assert!(
        err.starts_with("error: session t/squad/worker-0 is crashed (exit 7): it has no pane"),
        "{err}"
    );
    let err = env.fails(&["reset", "role", "nobody"], 4);
    assert_eq!(
        err.lines().next(),
        Some("error: no role matches \"nobody\"")
    );
}

#[test]
fn ambiguous_keys_name_their_candidates() {
    let env = Env::new();
    let sleep = r#"["sh", "-c", "exec sleep 600"]"#;
    let a = env.manifest("a.ron", &team("alpha", &role("worker", 1, sleep, "")));
    let b = env.manifest("b.ron", &team("beta", &role("worker", 1, sleep, "")));
    env.ok(&["run", &a]);
    env.ok(&["run", &b]);
    let err = env.fails(&["kill", "worker-0"], 2);
    assert!(
        err.contains("t/alpha/worker-0") && err.contains("t/beta/worker-0"),
        "{err}"
    );
}
