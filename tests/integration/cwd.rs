//! Where a program starts: its manifest's directory unless the role says
//! otherwise; relative paths resolved against the manifest when it is
//! checked, so that what was checked is what runs.

use std::os::unix::fs::PermissionsExt;

use crate::support::{Env, role, team};

/// What session `key`'s program printed so far.
fn output(env: &Env, key: &str, what: &str, needle: &str) -> String {
    env.wait(what, |e| {
        let text = e.ok(&["logs", key]);
        text.contains(needle).then_some(text)
    })
}

#[test]
fn programs_start_in_the_manifests_directory_and_relative_paths_are_resolved_from_it() {
    let env = Env::new();
    let project = env.dir().join("project");
    std::fs::create_dir_all(project.join("sub")).unwrap();
    let agent = project.join("agent.sh");
    std::fs::write(
        &agent,
        "#!/bin/sh\necho agent-ran-in \"$(pwd)\"\nexec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pwd = r#"["sh", "-c", "echo started-in \"$(pwd)\"; exec sleep 600"]"#;
    let roles = role("agent", 1, r#"["./agent.sh"]"#, "")
        + &role("plain", 1, pwd, "")
        + &role("sub", 1, pwd, r#"cwd: "sub","#);
    let text = team("squad", &roles);
    let file = project.join("team.ron");
    std::fs::write(&file, text).unwrap();
    let file = file.display().to_string();
    let dir = project.display().to_string();

    // The dry run shows the paths as they will be used.
    let plan = env.ok(&["run", &file, "--dry-run"]);
    assert!(
        plan.contains(&format!("command   {dir}/agent.sh")),
        "{plan}"
    );
    assert!(plan.contains(&format!("cwd       {dir}/sub")), "{plan}");
    assert!(plan.contains(&format!("cwd       {dir}\n")), "{plan}");

    // marvel runs from elsewhere (this test's own directory).
    assert_ne!(std::env::current_dir().unwrap(), project);
    env.ok(&["run", &file, "--wait"]);
    output(
        &env,
        "agent-0",
        "the agent",
        &format!("agent-ran-in {dir}\n"),
    );
    output(
        &env,
        "plain-0",
        "the plain role",
        &format!("started-in {dir}\n"),
    );
    output(
        &env,
        "sub-0",
        "the sub role",
        &format!("started-in {dir}/sub\n"),
    );
    assert!(env.events("crashed").is_empty(), "{}", env.dump());
}

#[test]
fn a_relative_program_that_is_not_there_is_refused_when_checked() {
    let env = Env::new();
    let file = env.manifest(
        "team.ron",
        &team("squad", &role("agent", 1, r#"["./missing.sh"]"#, "")),
    );
    let err = env.fails(&["run", &file], 3);
    let missing = env.dir().join("missing.sh");
    assert!(
        err.contains(&missing.display().to_string()),
        "names the resolved path: {err}"
    );
}

#[test]
fn a_working_directory_that_vanished_is_a_crash_that_says_so() {
    let env = Env::new();
    let work = env.dir().join("work");
    std::fs::create_dir(&work).unwrap();
    let sleep = r#"["sh", "-c", "exec sleep 600"]"#;
    let file = env.manifest(
        "team.ron",
        &team("squad", &role("worker", 1, sleep, r#"cwd: "work","#)),
    );
    env.ok(&["run", &file, "--wait"]);
    std::fs::remove_dir(&work).unwrap();
    env.ok(&["kill", "worker-0"]);
    let marker = env.wait("the crash", |e| {
        e.in_state("t/squad/worker", "crashed").pop()
    });
    assert_eq!(
        marker["exit"]["reason"],
        format!("cwd missing: {}", work.display()),
        "{marker}"
    );
    // Never started elsewhere: nothing ran in its place.
    assert!(env.in_state("t/squad/worker", "running").is_empty());
}
