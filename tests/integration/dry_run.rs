//! `marvel run FILE --dry-run`: validation and the plan, with no daemon and
//! no tmux.

use crate::support::*;

#[test]
fn every_example_team_passes_a_dry_run() {
    let env = Env::new();
    let roles = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("roles");
    let mut files: Vec<_> = std::fs::read_dir(&roles)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.retain(|p| p.extension().is_some_and(|x| x == "ron"));
    assert!(files.len() >= 2, "{files:?}");
    for f in files {
        let out = env.ok(&["run", f.to_str().unwrap(), "--dry-run"]);
        let spec = marvel::manifest::load(&f).unwrap();
        for r in &spec.roles {
            assert!(
                out.contains(&format!("{}/{}/{}", spec.workspace, spec.name, r.name)),
                "{out}"
            );
        }
    }
    assert!(
        !env.state_dir().join("marvel.sock").exists(),
        "a dry run starts no daemon"
    );
    assert!(env.panes().is_empty(), "a dry run touches no tmux");
}

#[test]
fn a_bad_manifest_is_refused_with_its_position_and_changes_nothing() {
    let env = Env::new();
    let file = env.manifest(
        "bad.ron",
        "Team(name: \"squad\", roles: [\n    Role(name: \"w\", replicas: 0, command: [\"sh\"]),\n])\n",
    );
    let err = env.fails(&["run", &file, "--dry-run"], 3);
    assert_eq!(
        err.trim_end(),
        format!("error: {file}:2:31: roles[0].replicas: must be between 1 and 1000, got 0")
    );
    // The same file without --dry-run is refused before any daemon starts.
    env.fails(&["run", &file], 3);
    assert!(!env.state_dir().join("marvel.sock").exists());
}

#[test]
fn a_misspelled_field_gets_a_suggestion() {
    let env = Env::new();
    let file = env.manifest(
        "typo.ron",
        "Team(name: \"squad\", roles: [Role(name: \"w\", replicass: 2, command: [\"sh\"])])",
    );
    let err = env.fails(&["run", &file, "--dry-run"], 3);
    assert!(err.contains("unknown field \"replicass\""), "{err}");
    assert!(err.contains("help: did you mean `replicas`?"), "{err}");
}
