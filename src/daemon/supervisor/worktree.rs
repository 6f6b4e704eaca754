//! The supervisor's side of git: a slot's worktree, asked for before its
//! program starts (its spawn waits for it, and a worktree that cannot be
//! had is a crash that says why); the checks a team with worktrees passes
//! before it is applied; what becomes of a removed team's worktrees. git
//! itself runs on its own thread (`daemon/git.rs`), never here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::domain::Rng;
use crate::domain::key::TeamKey;
use crate::domain::spec::TeamSpec;
use crate::domain::state::{Exit, ExitDetail, SlotWorktree};
use crate::error::{Error, Result};
use crate::proto::Response;

use super::super::git::{
    GitDone, GitJob, GitJobId, GitOutcome, GitRefusal, LeftWorktree, SlotCheck,
};
use super::super::worker::JobId;
use super::{Now, Output, RequestId, Supervisor};

/// git jobs under way, and what waits for them.
#[derive(Debug, Default)]
pub(super) struct GitJobs {
    last: GitJobId,
    pending: BTreeMap<GitJobId, GitThen>,
    /// Pending sessions whose worktree is being made: their spawn waits.
    pub preparing: BTreeSet<u64>,
    /// Removed teams whose worktrees are pruned once the tmux jobs up to
    /// `after` (those that end their programs) are done.
    leaving: Vec<Leaving>,
}

/// What to do with a git job's outcome.
#[derive(Debug)]
enum GitThen {
    Prepare {
        uid: u64,
    },
    Apply {
        id: RequestId,
        team: TeamSpec,
        source: Option<PathBuf>,
        force: bool,
    },
    Leave {
        id: RequestId,
        done: String,
    },
}

#[derive(Debug)]
struct Leaving {
    id: RequestId,
    job: GitJob,
    done: String,
    after: Option<JobId>,
}

impl Supervisor {
    fn submit_git(&mut self, job: GitJob, then: GitThen) {
        self.git.last += 1;
        let id = self.git.last;
        self.git.pending.insert(id, then);
        self.out.push(Output::Git { id, job });
    }

    /// A session about to be spawned for a role with a worktree: its
    /// worktree is asked for, and its spawn waits for it.
    pub(super) fn prepare_worktree(&mut self, uid: u64) {
        let Some(s) = self.world.sessions.get(&uid) else {
            return;
        };
        let key = s.key.clone();
        let Some(w) = self
            .world
            .role_spec(&key.role())
            .and_then(|r| r.worktree.clone())
        else {
            return;
        };
        let path = self.setup.paths.worktree(&key);
        let branch = w.branch.expand(&key);
        if let Some(s) = self.world.sessions.get_mut(&uid) {
            s.worktree = Some(SlotWorktree {
                path: path.clone(),
                branch: Some(branch.clone()),
            });
        }
        self.git.preparing.insert(uid);
        let job = GitJob::Prepare {
            repo: w.repo.to_path_buf(),
            path,
            branch,
        };
        self.submit_git(job, GitThen::Prepare { uid });
    }

    /// `run` of a team: one with worktrees is applied once git has
    /// checked them; what needs no git is refused at once.
    pub(super) fn apply_checked(
        &mut self,
        id: RequestId,
        team: TeamSpec,
        source: Option<PathBuf>,
        force: bool,
        now: Now,
    ) -> Result<Option<Response>> {
        let slots = self.slot_checks(&team);
        if slots.is_empty() {
            return self.apply(team, source, force, now);
        }
        self.refuse_apply(&team, source.as_deref(), force)?;
        let then = GitThen::Apply {
            id,
            team,
            source,
            force,
        };
        self.submit_git(GitJob::Check(slots), then);
        Ok(None)
    }

    /// Every slot `team` declares that has a worktree.
    fn slot_checks(&self, team: &TeamSpec) -> Vec<SlotCheck> {
        let mut out = Vec::new();
        for (i, role) in team.roles.iter().enumerate() {
            let Some(w) = &role.worktree else { continue };
            for slot in 0..role.replicas.get() {
                let key = team.role_key(role).session(slot);
                out.push(SlotCheck {
                    role: i,
                    slot,
                    repo: w.repo.to_path_buf(),
                    path: self.setup.paths.worktree(&key),
                    branch: w.branch.expand(&key),
                });
            }
        }
        out
    }

    /// A team was removed (`delete team`, `down`): the answer says where
    /// its worktrees are, kept with their branches; with `prune` those with
    /// no uncommitted change are removed once their programs are ended.
    pub(super) fn leave_worktrees(
        &mut self,
        id: RequestId,
        team: &TeamKey,
        spec: &TeamSpec,
        prune: bool,
        done: String,
    ) -> Result<Option<Response>> {
        if !prune && spec.roles.iter().all(|r| r.worktree.is_none()) {
            return Ok(Some(Response::Done(done)));
        }
        let job = GitJob::Leave {
            dir: self.setup.paths.team_worktrees(team),
            prune,
        };
        if prune {
            let after = None;
            self.git.leaving.push(Leaving {
                id,
                job,
                done,
                after,
            });
        } else {
            self.submit_git(job, GitThen::Leave { id, done });
        }
        Ok(None)
    }

    /// Prunes wait for the tmux jobs of their step (the kills of their
    /// team's panes): asked for once those are done.
    pub(super) fn release_leaving(&mut self) {
        let last = self.tmux.next_job_id() - 1;
        let oldest = self.tmux.jobs.keys().next().copied();
        for l in std::mem::take(&mut self.git.leaving) {
            let after = l.after.unwrap_or(last);
            if oldest.is_none_or(|first| first > after) {
                let then = GitThen::Leave {
                    id: l.id,
                    done: l.done,
                };
                self.submit_git(l.job, then);
            } else {
                self.git.leaving.push(Leaving {
                    after: Some(after),
                    ..l
                });
            }
        }
    }

    /// A git job finished.
    pub(super) fn git_done(&mut self, done: GitDone, now: Now, rng: &mut impl Rng) {
        let Some(then) = self.git.pending.remove(&done.id) else {
            return;
        };
        match (then, done.outcome) {
            (GitThen::Prepare { uid }, GitOutcome::Prepared(result)) => {
                self.git.preparing.remove(&uid);
                match result {
                    Ok(branch) => {
                        if let Some(w) = self
                            .world
                            .sessions
                            .get_mut(&uid)
                            .and_then(|s| s.worktree.as_mut())
                            && w.branch != branch
                        {
                            w.branch = branch;
                            self.dirty = true;
                        }
                    }
                    Err(why) => {
                        self.tmux.queue.retain(|u| *u != uid);
                        if self.is_live(uid) {
                            let key = self.world.sessions[&uid].key.clone();
                            self.log(format!("no worktree for {key}: {why}"));
                            let why = format!("worktree unavailable: {why}");
                            let exit = Exit::detail(ExitDetail::StartFailed(why), now.wall);
                            self.record_death(uid, exit, now, rng);
                        }
                    }
                }
            }
            (
                GitThen::Apply {
                    id,
                    team,
                    source,
                    force,
                },
                GitOutcome::Checked(result),
            ) => {
                let answer = match result {
                    Ok(()) => self.apply(team, source, force, now),
                    Err(r) => Err(refusal(&team, source.as_deref(), r)),
                };
                match answer {
                    Ok(Some(response)) => self.reply(id, response),
                    Ok(None) => {}
                    Err(e) => self.reply(id, Response::Error(e)),
                }
            }
            (GitThen::Leave { id, done }, GitOutcome::Left(left)) => {
                self.reply(id, Response::Done(left_text(done, &left)));
            }
            (_, outcome) => self.log(format!("unexpected git outcome {outcome:?}")),
        }
    }
}

/// Why git stops a team from being applied, as the error `run` shows.
fn refusal(team: &TeamSpec, source: Option<&Path>, r: GitRefusal) -> Error {
    let key = team.key();
    let session = |role: usize, slot: u32| {
        team.roles
            .get(role)
            .map_or_else(String::new, |r| team.role_key(r).session(slot).to_string())
    };
    match r {
        GitRefusal::Missing(why) => Error::refused(
            format!("team {key} has roles with worktrees, and the daemon cannot run git ({why})"),
            Some("install git (on the daemon's PATH), then run the manifest again".into()),
        ),
        GitRefusal::NotARepo { role, repo, why } => Error::Manifest {
            file: source.map_or_else(|| format!("team {key}"), |s| s.display().to_string()),
            position: None,
            field: Some(format!("roles[{role}].worktree.repo")),
            message: format!("{} is not a git repository ({why})", repo.display()),
            help: Some(
                "give the directory of a git repository, or make one there with `git init`".into(),
            ),
        },
        GitRefusal::Taken {
            role,
            slot,
            branch,
            at,
            gone,
        } => {
            let help = if gone {
                "the directory of that worktree is gone; `git worktree prune` in the repository forgets it".to_string()
            } else {
                format!(
                    "give roles[{role}].worktree.branch other names, or free the branch there (`git -C {} switch` to another, or `git worktree remove {}`)",
                    at.display(),
                    at.display()
                )
            };
            Error::refused(
                format!(
                    "branch {branch} of {} is checked out at {}: git checks a branch out in one worktree only",
                    session(role, slot),
                    at.display()
                ),
                Some(help),
            )
        }
        GitRefusal::Occupied {
            role,
            slot,
            path,
            repo,
        } => Error::refused(
            format!(
                "{} (the worktree of {}) is not a worktree of {}",
                path.display(),
                session(role, slot),
                repo.display()
            ),
            Some("it was made for another repository, or by hand: keep what you need from it, then remove it (`git worktree remove PATH`)".into()),
        ),
        GitRefusal::Failed(why) => Error::refused(
            format!("cannot check the worktrees of team {key}: {why}"),
            None,
        ),
    }
}

/// The answer to a removal: what became of each worktree.
fn left_text(done: String, left: &[LeftWorktree]) -> String {
    let mut text = done;
    let branch = |l: &LeftWorktree| l.branch.clone().unwrap_or_else(|| "detached HEAD".into());
    let kept: Vec<&LeftWorktree> = left
        .iter()
        .filter(|l| !l.removed && l.kept.is_none())
        .collect();
    if !kept.is_empty() {
        text.push_str("\nits worktrees are kept, with their branches:");
        for l in &kept {
            text.push_str(&format!("\n  {}  {}", l.path.display(), branch(l)));
        }
        text.push_str("\nremove one with `git worktree remove PATH` once its work is merged");
    }
    for l in left.iter().filter(|l| l.removed) {
        text.push_str(&format!(
            "\nremoved worktree {} (its branch {} stays)",
            l.path.display(),
            branch(l)
        ));
    }
    for l in left.iter().filter(|l| !l.removed) {
        if let Some(why) = &l.kept {
            text.push_str(&format!(
                "\nkept worktree {} ({}): {why}",
                l.path.display(),
                branch(l)
            ));
        }
    }
    text
}
