//! Git, off the daemon's loop: one thread runs the git jobs the supervisor
//! asks for — a slot's worktree before its program starts, the checks of a
//! team before it is applied, a removed team's worktrees — in order, with
//! the real `git` CLI, each call bounded by a deadline. A slow git holds up
//! only this thread, never the supervision of any session.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

/// Identifies a submitted git job and its outcome.
pub type GitJobId = u64;

/// One thing to ask of git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitJob {
    /// Find the slot's worktree at `path`, or make it from `repo` on
    /// `branch` (the existing branch, or a new one from the repo's HEAD).
    Prepare {
        repo: PathBuf,
        path: PathBuf,
        branch: String,
    },
    /// Before a team is applied: git runs, each repository is one, and no
    /// slot's branch is checked out anywhere but in the slot's worktree.
    Check(Vec<SlotCheck>),
    /// The worktrees of a removed team (the slot directories in `dir`):
    /// listed, and with `prune` each one with no uncommitted change removed.
    Leave { dir: PathBuf, prune: bool },
}

/// One slot a team would have, for [`GitJob::Check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotCheck {
    /// The role's index in its team.
    pub role: usize,
    pub slot: u32,
    pub repo: PathBuf,
    pub path: PathBuf,
    pub branch: String,
}

/// What a git job came to, one variant per job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitOutcome {
    /// The branch the worktree is on (`None`: a detached HEAD), or why
    /// there is no worktree.
    Prepared(Result<Option<String>, String>),
    Checked(Result<(), GitRefusal>),
    Left(Vec<LeftWorktree>),
}

/// Why a team's worktrees cannot be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRefusal {
    /// git cannot be run.
    Missing(String),
    /// A role's `repo` is not a git repository.
    NotARepo {
        role: usize,
        repo: PathBuf,
        why: String,
    },
    /// A slot's branch is checked out in another worktree (`gone`: one
    /// whose directory was deleted, still registered).
    Taken {
        role: usize,
        slot: u32,
        branch: String,
        at: PathBuf,
        gone: bool,
    },
    /// A slot's directory holds something that is not a worktree of the
    /// role's repository.
    Occupied {
        role: usize,
        slot: u32,
        path: PathBuf,
        repo: PathBuf,
    },
    /// git failed otherwise (it timed out, say).
    Failed(String),
}

/// One worktree of a removed team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftWorktree {
    pub path: PathBuf,
    pub branch: Option<String>,
    pub removed: bool,
    /// Why a worktree to prune was kept.
    pub kept: Option<String>,
}

/// A finished git job, on its way to the loop.
#[derive(Debug)]
pub struct GitDone {
    pub id: GitJobId,
    pub outcome: GitOutcome,
}

/// Why one git call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GitError {
    /// git cannot be run at all.
    Missing(String),
    /// git ran and refused; its own words.
    Failed(String),
    Timeout(Duration),
}

impl fmt::Display for GitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitError::Missing(e) => write!(f, "git cannot be run: {e}"),
            GitError::Failed(why) => f.write_str(why),
            GitError::Timeout(d) => write!(
                f,
                "git did not finish within {}",
                humantime::format_duration(*d)
            ),
        }
    }
}

/// The real `git`, found on the daemon's `PATH`.
#[derive(Debug, Clone)]
pub struct Git {
    program: PathBuf,
    timeout: Duration,
}

/// A worktree as `git worktree list` tells it.
#[derive(Debug, Clone)]
struct Listed {
    path: PathBuf,
    branch: Option<String>,
    prunable: bool,
}

impl Git {
    pub fn new(timeout: Duration) -> Git {
        Git {
            program: PathBuf::from("git"),
            timeout,
        }
    }

    /// Runs a job (on the git thread, or directly in tests).
    pub fn run(&self, job: &GitJob) -> GitOutcome {
        match job {
            GitJob::Prepare { repo, path, branch } => {
                GitOutcome::Prepared(self.prepare(repo, path, branch))
            }
            GitJob::Check(slots) => GitOutcome::Checked(self.check(slots)),
            GitJob::Leave { dir, prune } => GitOutcome::Left(self.leave(dir, *prune)),
        }
    }

    fn prepare(&self, repo: &Path, path: &Path, branch: &str) -> Result<Option<String>, String> {
        if std::fs::symlink_metadata(path).is_ok() {
            let top = self
                .git(Some(path), ["rev-parse", "--show-toplevel"])
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if !same_path(Path::new(top.trim()), path) {
                return Err(format!(
                    "{} is not a git worktree (it lies in {})",
                    path.display(),
                    top.trim()
                ));
            }
            return Ok(self.branch_of(path));
        }
        let listed = self
            .worktrees(repo)
            .map_err(|e| format!("{}: {e}", repo.display()))?;
        // The registration of this slot's worktree whose directory was
        // deleted: git will not add it again until it is cleared.
        if listed.iter().any(|w| same_path(&w.path, path)) {
            self.git(
                Some(repo),
                [OsStr::new("worktree"), "remove".as_ref(), path.as_os_str()],
            )
            .map_err(|e| e.to_string())?;
        }
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let head = format!("refs/heads/{branch}");
        let exists = self
            .git(
                Some(repo),
                ["rev-parse", "--verify", "--quiet", head.as_str()],
            )
            .is_ok();
        let (branch, path) = (OsStr::new(branch), path.as_os_str());
        let add: Vec<&OsStr> = if exists {
            vec!["worktree".as_ref(), "add".as_ref(), path, branch]
        } else {
            vec![
                "worktree".as_ref(),
                "add".as_ref(),
                "-b".as_ref(),
                branch,
                path,
            ]
        };
        self.git(Some(repo), add).map_err(|e| e.to_string())?;
        Ok(Some(branch.to_string_lossy().into_owned()))
    }

    fn check(&self, slots: &[SlotCheck]) -> Result<(), GitRefusal> {
        if slots.is_empty() {
            return Ok(());
        }
        self.git(None, ["--version"]).map_err(|e| match e {
            GitError::Missing(m) => GitRefusal::Missing(m),
            other => GitRefusal::Failed(other.to_string()),
        })?;
        let mut lists: Vec<(&Path, Vec<Listed>)> = Vec::new();
        for s in slots {
            if !lists.iter().any(|(r, _)| *r == s.repo) {
                let list = self.worktrees(&s.repo).map_err(|e| match e {
                    GitError::Failed(why) => GitRefusal::NotARepo {
                        role: s.role,
                        repo: s.repo.clone(),
                        why,
                    },
                    GitError::Missing(m) => GitRefusal::Missing(m),
                    other => GitRefusal::Failed(other.to_string()),
                })?;
                lists.push((&s.repo, list));
            }
            let list = &lists
                .iter()
                .find(|(r, _)| *r == s.repo)
                .expect("listed above")
                .1;
            let taken = list.iter().find(|w| {
                w.branch.as_deref() == Some(s.branch.as_str()) && !same_path(&w.path, &s.path)
            });
            if let Some(w) = taken {
                return Err(GitRefusal::Taken {
                    role: s.role,
                    slot: s.slot,
                    branch: s.branch.clone(),
                    at: w.path.clone(),
                    gone: w.prunable,
                });
            }
            let ours = list.iter().any(|w| same_path(&w.path, &s.path));
            if std::fs::symlink_metadata(&s.path).is_ok() && !ours {
                return Err(GitRefusal::Occupied {
                    role: s.role,
                    slot: s.slot,
                    path: s.path.clone(),
                    repo: s.repo.clone(),
                });
            }
        }
        Ok(())
    }

    fn leave(&self, dir: &Path, prune: bool) -> Vec<LeftWorktree> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        paths.sort();
        let mut out = Vec::new();
        for path in paths {
            let worktree = self
                .git(Some(&path), ["rev-parse", "--show-toplevel"])
                .is_ok_and(|top| same_path(Path::new(top.trim()), &path));
            if !worktree {
                out.push(LeftWorktree {
                    path,
                    branch: None,
                    removed: false,
                    kept: Some("not a git worktree; left alone".into()),
                });
                continue;
            }
            let branch = self.branch_of(&path);
            let mut left = LeftWorktree {
                path,
                branch,
                removed: false,
                kept: None,
            };
            if prune {
                let changes = self
                    .git(Some(&left.path), ["status", "--porcelain"])
                    .map(|s| s.lines().count());
                let remove = [
                    OsStr::new("worktree"),
                    "remove".as_ref(),
                    left.path.as_os_str(),
                ];
                match changes {
                    Ok(0) => match self.git(Some(&left.path), remove) {
                        Ok(_) => left.removed = true,
                        Err(e) => left.kept = Some(e.to_string()),
                    },
                    Ok(n) => {
                        let s = if n == 1 { "" } else { "s" };
                        left.kept = Some(format!("{n} uncommitted change{s}"));
                    }
                    Err(e) => left.kept = Some(e.to_string()),
                }
            }
            out.push(left);
        }
        if prune {
            // Only empty directories go: what was kept stays where it was.
            let _ = std::fs::remove_dir(dir);
            if let Some(workspace) = dir.parent() {
                let _ = std::fs::remove_dir(workspace);
            }
        }
        out
    }

    /// The worktrees of the repository at (or around) `repo`; fails when
    /// it is not in a git repository.
    fn worktrees(&self, repo: &Path) -> Result<Vec<Listed>, GitError> {
        let text = self.git(Some(repo), ["worktree", "list", "--porcelain"])?;
        let mut out: Vec<Listed> = Vec::new();
        for line in text.lines() {
            if let Some(path) = line.strip_prefix("worktree ") {
                out.push(Listed {
                    path: PathBuf::from(path),
                    branch: None,
                    prunable: false,
                });
            } else if let Some(last) = out.last_mut() {
                if let Some(b) = line.strip_prefix("branch ") {
                    last.branch = Some(b.strip_prefix("refs/heads/").unwrap_or(b).to_string());
                } else if line.starts_with("prunable") {
                    last.prunable = true;
                }
            }
        }
        Ok(out)
    }

    /// The branch checked out at `path`; `None` for a detached HEAD.
    fn branch_of(&self, path: &Path) -> Option<String> {
        self.git(Some(path), ["symbolic-ref", "--quiet", "--short", "HEAD"])
            .ok()
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
    }

    /// Runs `git [-C dir] args…` within the deadline; its output, or its
    /// own words on why it failed.
    fn git<A: AsRef<OsStr>>(
        &self,
        dir: Option<&Path>,
        args: impl IntoIterator<Item = A>,
    ) -> Result<String, GitError> {
        let mut cmd = Command::new(&self.program);
        if let Some(dir) = dir {
            cmd.arg("-C").arg(dir);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Never a prompt nobody can answer, never a lock an agent's
            // own git would trip over.
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0");
        let child = cmd.spawn().map_err(|e| GitError::Missing(e.to_string()))?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(self.timeout) {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(GitError::Failed(e.to_string())),
            Err(_) => {
                // Not reaped until the waiting thread sees it die, so the
                // pid is still git's.
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                return Err(GitError::Timeout(self.timeout));
            }
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let words: Vec<&str> = stderr
            .lines()
            .map(|l| {
                l.trim()
                    .trim_start_matches("fatal: ")
                    .trim_start_matches("error: ")
            })
            .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
            .collect();
        let mut why = words.join("; ");
        if why.is_empty() {
            why = format!("git {}", out.status);
        }
        if why.len() > 400 {
            let mut cut = 400;
            while !why.is_char_boundary(cut) {
                cut -= 1;
            }
            why.truncate(cut);
            why.push('…');
        }
        Err(GitError::Failed(why))
    }
}

/// Whether two paths name the same place, links resolved (one that does
/// not exist yet by its parent's real path).
fn same_path(a: &Path, b: &Path) -> bool {
    fn real(p: &Path) -> PathBuf {
        if let Ok(r) = std::fs::canonicalize(p) {
            return r;
        }
        match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => std::fs::canonicalize(parent)
                .map(|r| r.join(name))
                .unwrap_or_else(|_| p.to_path_buf()),
            _ => p.to_path_buf(),
        }
    }
    a == b || real(a) == real(b)
}

/// The daemon's handle on the git thread.
pub struct GitWorker {
    jobs: Sender<(GitJobId, GitJob)>,
}

impl GitWorker {
    /// Starts the thread; each outcome is sent to `results`.
    pub fn start<M>(git: Git, results: Sender<M>) -> std::io::Result<GitWorker>
    where
        M: From<GitDone> + Send + 'static,
    {
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("marvel-git".into())
            .spawn(move || run(&git, rx, results))?;
        Ok(GitWorker { jobs })
    }

    /// Queues job `id`; its outcome arrives later as a [`GitDone`].
    pub fn submit(&self, id: GitJobId, job: GitJob) {
        let _ = self.jobs.send((id, job));
    }
}

fn run<M: From<GitDone>>(git: &Git, jobs: Receiver<(GitJobId, GitJob)>, results: Sender<M>) {
    for (id, job) in jobs {
        let outcome = git.run(&job);
        if results.send(M::from(GitDone { id, outcome })).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs git for a test's own setup.
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A repository with one commit, in a temporary directory.
    fn repo() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "first"]);
        (tmp, repo)
    }

    fn g() -> Git {
        Git::new(Duration::from_secs(30))
    }

    fn prepare(repo: &Path, path: &Path, branch: &str) -> Result<Option<String>, String> {
        g().prepare(repo, path, branch)
    }

    #[test]
    fn a_worktree_is_made_once_on_a_new_branch_from_head_and_found_again() {
        let (tmp, repo) = repo();
        let path = tmp.path().join("state/worktrees/demo/squad/w-0");
        assert_eq!(
            prepare(&repo, &path, "agents/w-0"),
            Ok(Some("agents/w-0".into()))
        );
        let head = git(&repo, &["rev-parse", "HEAD"]);
        assert_eq!(git(&path, &["rev-parse", "HEAD"]), head);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        // Work done there stays: the next start finds it as it was.
        std::fs::write(path.join("work"), "x").unwrap();
        assert_eq!(
            prepare(&repo, &path, "agents/w-0"),
            Ok(Some("agents/w-0".into()))
        );
        assert!(path.join("work").exists());
        // An agent that moved to a branch of its own keeps it.
        git(&path, &["switch", "-q", "-c", "feature"]);
        assert_eq!(
            prepare(&repo, &path, "agents/w-0"),
            Ok(Some("feature".into()))
        );
    }

    #[test]
    fn an_existing_branch_is_checked_out_and_a_deleted_worktree_made_again() {
        let (tmp, repo) = repo();
        git(&repo, &["branch", "agents/w-1"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "second"]);
        let path = tmp.path().join("wt/w-1");
        prepare(&repo, &path, "agents/w-1").unwrap();
        assert_eq!(
            git(&path, &["log", "-1", "--format=%s"]).trim(),
            "first",
            "the branch as it was, not HEAD"
        );
        std::fs::remove_dir_all(&path).unwrap();
        assert_eq!(
            prepare(&repo, &path, "agents/w-1"),
            Ok(Some("agents/w-1".into()))
        );
        assert!(path.join(".git").exists());
    }

    #[test]
    fn a_branch_in_use_elsewhere_or_a_missing_repository_is_refused_with_gits_words() {
        let (tmp, repo) = repo();
        let here = prepare(&repo, &tmp.path().join("a"), "x/0");
        assert!(here.is_ok(), "{here:?}");
        let e = prepare(&repo, &tmp.path().join("b"), "x/0").unwrap_err();
        assert!(e.contains("'x/0' is already used by worktree at"), "{e}");
        let plain = tmp.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        let e = prepare(&plain, &tmp.path().join("c"), "x/1").unwrap_err();
        assert!(e.contains("not a git repository"), "{e}");
        let e = prepare(&tmp.path().join("gone"), &tmp.path().join("d"), "x/2").unwrap_err();
        assert!(e.contains("gone"), "{e}");
        // A directory in the slot's place that is no worktree is not used.
        let e = prepare(&repo, &plain, "x/3").unwrap_err();
        assert!(
            e.contains("is not a git worktree") || e.contains("not a git repository"),
            "{e}"
        );
    }

    fn slot(repo: &Path, path: &Path, branch: &str) -> SlotCheck {
        SlotCheck {
            role: 1,
            slot: 2,
            repo: repo.to_path_buf(),
            path: path.to_path_buf(),
            branch: branch.into(),
        }
    }

    #[test]
    fn a_check_finds_what_would_stop_a_worktree_before_anything_is_applied() {
        let (tmp, repo) = repo();
        let own = tmp.path().join("own");
        prepare(&repo, &own, "x/0").unwrap();
        // Its own worktree on its branch, and a free branch: fine.
        let ok = [
            slot(&repo, &own, "x/0"),
            slot(&repo, &tmp.path().join("new"), "x/1"),
        ];
        assert_eq!(g().check(&ok), Ok(()));
        // The branch is checked out elsewhere (here: the slot's branch is
        // the main worktree's).
        let main = git(&repo, &["symbolic-ref", "--short", "HEAD"]);
        let taken = g().check(&[slot(&repo, &tmp.path().join("n"), main.trim())]);
        assert!(
            matches!(&taken, Err(GitRefusal::Taken { role: 1, slot: 2, at, gone: false, .. }) if same_path(at, &repo)),
            "{taken:?}"
        );
        // The slot's directory is something else.
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let occupied = g().check(&[slot(&repo, &other, "x/5")]);
        assert!(
            matches!(occupied, Err(GitRefusal::Occupied { .. })),
            "{occupied:?}"
        );
        // Not a repository.
        let plain = tmp.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        let not = g().check(&[slot(&plain, &tmp.path().join("m"), "x/4")]);
        assert!(
            matches!(&not, Err(GitRefusal::NotARepo { role: 1, why, .. }) if why.contains("not a git repository")),
            "{not:?}"
        );
        // No git at all.
        let none = Git {
            program: PathBuf::from("/nonexistent/git"),
            timeout: Duration::from_secs(5),
        };
        assert!(matches!(none.check(&ok), Err(GitRefusal::Missing(_))));
        assert_eq!(none.check(&[]), Ok(()), "no worktree, no git needed");
    }

    #[test]
    fn leaving_lists_the_worktrees_and_pruning_removes_only_clean_ones() {
        let (tmp, repo) = repo();
        let dir = tmp.path().join("worktrees/demo/squad");
        let (clean, dirty) = (dir.join("w-0"), dir.join("w-1"));
        prepare(&repo, &clean, "x/0").unwrap();
        prepare(&repo, &dirty, "x/1").unwrap();
        std::fs::write(dirty.join("notes"), "unsaved").unwrap();
        let listed = g().leave(&dir, false);
        assert_eq!(
            listed
                .iter()
                .map(|l| (l.branch.clone(), l.removed))
                .collect::<Vec<_>>(),
            [(Some("x/0".into()), false), (Some("x/1".into()), false)]
        );
        assert!(clean.exists() && dirty.exists());
        let pruned = g().leave(&dir, true);
        assert!(pruned[0].removed && pruned[0].kept.is_none(), "{pruned:?}");
        assert!(!pruned[1].removed);
        assert_eq!(pruned[1].kept.as_deref(), Some("1 uncommitted change"));
        assert!(!clean.exists() && dirty.join("notes").exists());
        // Its branch stays: work is precious.
        git(&repo, &["rev-parse", "--verify", "refs/heads/x/0"]);
        // Once the last one goes, so do the directories marvel made.
        std::fs::remove_file(dirty.join("notes")).unwrap();
        assert!(g().leave(&dir, true)[0].removed);
        assert!(!dir.exists() && !dir.parent().unwrap().exists());
    }

    #[test]
    fn a_git_that_does_not_finish_is_stopped_at_its_deadline() {
        let slow = Git {
            program: PathBuf::from("sh"),
            timeout: Duration::from_millis(200),
        };
        // `sh` is not git, but it takes as long as it is told to.
        let started = std::time::Instant::now();
        let e = slow.git(None, ["-c", "sleep 5"]).unwrap_err();
        assert_eq!(e, GitError::Timeout(Duration::from_millis(200)));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
