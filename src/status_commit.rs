//! Closing the GitOps loop: after a pass, the status files that changed are committed back
//! to git (one commit at most, a machine author, a message naming the resources), to the
//! checked-out branch or to a status-only branch, and pushed when asked. A push the remote
//! refuses because it moved is retried on top of it: our commits hold only status files, so
//! they are replayed over whatever was pushed meanwhile (ours win for status files, which
//! say what this process observed last). Nothing else of the repository is ever committed.
//!
//! Reading status files back from a revision (`--status-from`) lives with the other readers
//! in `status`.

use std::path::Path;

use crate::config::loader::{GitError, git, git_with_env};
use crate::status::STATUS_DIR;

/// The machine author of status commits.
const AUTHOR: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "dualwrite"),
    ("GIT_AUTHOR_EMAIL", "dualwrite@localhost"),
    ("GIT_COMMITTER_NAME", "dualwrite"),
    ("GIT_COMMITTER_EMAIL", "dualwrite@localhost"),
];

/// How many times a refused push is replayed on the moved remote before giving up.
const PUSH_ATTEMPTS: usize = 5;

/// Where status commits go, from `--commit-status`, `--status-branch` and `--push`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitOptions {
    /// A branch that holds only `status/` (created on first use); the checked-out branch
    /// when absent.
    pub branch: Option<String>,
    /// Push the branch to its remote after committing.
    pub push: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusCommitError {
    #[error("--commit-status needs a git repository: {0}")]
    NotARepository(#[source] GitError),
    #[error("--commit-status: HEAD is not on a branch (detached); use --status-branch NAME")]
    Detached,
    #[error("--status-branch {0:?} is not a valid branch name")]
    BadBranch(String),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(
        "the status commit stays local: the branch has commits that change more than status files ({0}), so it is not replayed over the remote; push them first"
    )]
    NotStatusOnly(String),
    #[error("the remote refused the status push {PUSH_ATTEMPTS} times (it keeps moving): {0}")]
    PushRefused(String),
}

/// What [`commit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committed {
    /// No status file changed since the last status commit.
    Nothing,
    Commit {
        /// The commit id (abbreviated).
        id: String,
        branch: String,
        /// The resources whose status changed, as `maps/customers`.
        resources: Vec<String>,
        pushed: bool,
    },
}

impl std::fmt::Display for Committed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Committed::Nothing => f.write_str("status unchanged; nothing committed"),
            Committed::Commit {
                id,
                branch,
                resources,
                pushed,
            } => write!(
                f,
                "status committed to {branch} as {id} ({}){}",
                resources.join(", "),
                if *pushed { ", pushed" } else { "" }
            ),
        }
    }
}

/// Runs git, naming the command in the error.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String, StatusCommitError> {
    Ok(git_with_env(dir, args, env)?)
}

fn rev_parse(dir: &Path, rev: &str) -> Option<String> {
    git(dir, &["rev-parse", "--verify", "-q", rev], None)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Commits the status files of `dir` that changed (and removals), then pushes if asked.
/// `revision` is the config revision the statuses observe, named in the message.
pub fn commit(
    dir: &Path,
    options: &CommitOptions,
    revision: &str,
) -> Result<Committed, StatusCommitError> {
    git(dir, &["rev-parse", "--show-toplevel"], None).map_err(StatusCommitError::NotARepository)?;
    let (branch, changed, id) = match &options.branch {
        None => commit_on_head(dir, revision)?,
        Some(branch) => commit_on_status_branch(dir, branch, revision)?,
    };
    let Some(id) = id else {
        // Nothing new; a push that failed earlier still goes out.
        if options.push && ahead_of_remote(dir, &branch) {
            push(dir, &branch, options.branch.is_some())?;
        }
        return Ok(Committed::Nothing);
    };
    if options.push {
        push(dir, &branch, options.branch.is_some())?;
    }
    Ok(Committed::Commit {
        id,
        branch,
        resources: changed,
        pushed: options.push,
    })
}

/// `git pull --ff-only` for a process that commits status to the checked-out branch: when
/// the branch cannot fast-forward because of our own status commits, they are replayed on
/// top of the remote's (config) commits instead.
pub fn pull(dir: &Path) -> Result<(), StatusCommitError> {
    let Err(message) = git(dir, &["pull", "--ff-only", "-q"], None) else {
        return Ok(());
    };
    let upstream = run(
        dir,
        &["rev-parse", "--symbolic-full-name", "@{upstream}"],
        &[],
    )?;
    replay_head(dir, upstream.trim()).map_err(|replay| match replay {
        StatusCommitError::NotStatusOnly(_) => StatusCommitError::Git(message),
        other => other,
    })
}

/// `maps/customers` for `status/maps/customers.yaml` (paths relative to the config dir or
/// the repository root).
fn resource_of(path: &str) -> Option<String> {
    let rest = path.split(&format!("{STATUS_DIR}/")).nth(1)?;
    Some(rest.strip_suffix(".yaml").unwrap_or(rest).to_string())
}

fn message(resources: &[String], revision: &str) -> String {
    let shown: Vec<&str> = resources.iter().take(20).map(String::as_str).collect();
    let more = resources.len().saturating_sub(shown.len());
    let mut subject = format!("dualwrite status: {}", shown.join(", "));
    if more > 0 {
        subject.push_str(&format!(" and {more} more"));
    }
    format!("{subject}\n\nObserved config revision {revision}.\n")
}

/// The checked-out branch: stage `status/` (it may be ignored: `-f`) and commit only it,
/// leaving whatever else the user staged alone.
fn commit_on_head(
    dir: &Path,
    revision: &str,
) -> Result<(String, Vec<String>, Option<String>), StatusCommitError> {
    let branch = git(dir, &["symbolic-ref", "-q", "--short", "HEAD"], None)
        .map(|s| s.trim().to_string())
        .map_err(|_| StatusCommitError::Detached)?;
    run(dir, &["add", "-A", "-f", "--", STATUS_DIR], &[])?;
    let staged = run(
        dir,
        &["diff", "--cached", "--name-only", "-z", "--", STATUS_DIR],
        &[],
    )?;
    let resources: Vec<String> = staged.split('\0').filter_map(resource_of).collect();
    if resources.is_empty() {
        return Ok((branch, resources, None));
    }
    let msg = message(&resources, revision);
    run(
        dir,
        &["commit", "-q", "--no-verify", "-m", &msg, "--", STATUS_DIR],
        &AUTHOR,
    )?;
    let id = run(dir, &["rev-parse", "--short", "HEAD"], &[])?
        .trim()
        .to_string();
    Ok((branch, resources, Some(id)))
}

/// A branch holding only `status/`: built in a private index from the files on disk, so the
/// work tree, the user's index and HEAD are never touched.
fn commit_on_status_branch(
    dir: &Path,
    branch: &str,
    revision: &str,
) -> Result<(String, Vec<String>, Option<String>), StatusCommitError> {
    let reference = format!("refs/heads/{branch}");
    if git(dir, &["check-ref-format", &reference], None).is_err() {
        return Err(StatusCommitError::BadBranch(branch.to_string()));
    }
    let parent = rev_parse(dir, &reference);
    let index = run(
        dir,
        &["rev-parse", "--git-path", "dualwrite-status-index"],
        &[],
    )?;
    let index = dir.join(index.trim());
    let index = index.to_string_lossy().into_owned();
    let env = [("GIT_INDEX_FILE", index.as_str())];
    let _ = std::fs::remove_file(&index);
    match &parent {
        Some(parent) => run(dir, &["read-tree", parent], &env)?,
        None => run(dir, &["read-tree", "--empty"], &env)?,
    };
    run(dir, &["add", "-A", "-f", "--", STATUS_DIR], &env)?;
    let tree = run(dir, &["write-tree"], &env)?.trim().to_string();
    let _ = std::fs::remove_file(&index);
    let changed = match &parent {
        Some(parent) => run(
            dir,
            &["diff-tree", "-r", "--name-only", "-z", parent, &tree],
            &[],
        )?,
        None => run(dir, &["ls-tree", "-r", "--name-only", "-z", &tree], &[])?,
    };
    let resources: Vec<String> = changed.split('\0').filter_map(resource_of).collect();
    if resources.is_empty() {
        return Ok((branch.to_string(), resources, None));
    }
    let msg = message(&resources, revision);
    let id = commit_tree(dir, &tree, parent.as_deref(), &msg)?;
    run(
        dir,
        &[
            "update-ref",
            &reference,
            &id,
            parent.as_deref().unwrap_or(""),
        ],
        &[],
    )?;
    Ok((branch.to_string(), resources, Some(id[..12].to_string())))
}

fn commit_tree(
    dir: &Path,
    tree: &str,
    parent: Option<&str>,
    msg: &str,
) -> Result<String, StatusCommitError> {
    let mut args = vec!["commit-tree", tree, "-m", msg];
    if let Some(parent) = parent {
        args.extend(["-p", parent]);
    }
    Ok(run(dir, &args, &AUTHOR)?.trim().to_string())
}

/// The remote a branch pushes to: its upstream's remote, else `origin`.
fn remote_of(dir: &Path, branch: &str) -> String {
    git(dir, &["config", &format!("branch.{branch}.remote")], None)
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            // A status branch follows the checked-out branch's remote.
            let head = git(dir, &["symbolic-ref", "-q", "--short", "HEAD"], None).ok()?;
            git(
                dir,
                &["config", &format!("branch.{}.remote", head.trim())],
                None,
            )
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "origin".into())
}

fn ahead_of_remote(dir: &Path, branch: &str) -> bool {
    let remote = remote_of(dir, branch);
    let tracking = format!("refs/remotes/{remote}/{branch}");
    match rev_parse(dir, &tracking) {
        Some(remote_tip) => git(
            dir,
            &[
                "rev-list",
                "--count",
                &format!("{remote_tip}..refs/heads/{branch}"),
            ],
            None,
        )
        .is_ok_and(|n| n.trim() != "0"),
        None => true,
    }
}

/// Pushes `branch`; when the remote moved, replays our status-only commits on top of it and
/// tries again.
fn push(dir: &Path, branch: &str, status_branch: bool) -> Result<(), StatusCommitError> {
    let remote = remote_of(dir, branch);
    let spec = format!("refs/heads/{branch}:refs/heads/{branch}");
    let mut last = String::new();
    for _ in 0..PUSH_ATTEMPTS {
        match git(dir, &["push", "-q", &remote, &spec], None) {
            Ok(_) => {
                // Keep the tracking ref in step, so the next pass knows what is pushed.
                let tracking = format!("refs/remotes/{remote}/{branch}");
                run(
                    dir,
                    &["update-ref", &tracking, &format!("refs/heads/{branch}")],
                    &[],
                )?;
                return Ok(());
            }
            Err(refused) if refused_as_stale(&refused.message) => last = refused.message,
            Err(failed) => return Err(failed.into()),
        }
        let tracking = format!("refs/remotes/{remote}/{branch}");
        run(
            dir,
            &[
                "fetch",
                "-q",
                &remote,
                &format!("+refs/heads/{branch}:{tracking}"),
            ],
            &[],
        )?;
        if status_branch {
            replay_status_branch(dir, branch, &tracking)?;
        } else {
            replay_head(dir, &tracking)?;
        }
    }
    Err(StatusCommitError::PushRefused(last))
}

fn refused_as_stale(message: &str) -> bool {
    ["non-fast-forward", "fetch first", "rejected", "stale info"]
        .iter()
        .any(|m| message.contains(m))
}

/// A status branch: our tree (the whole status as this process last saw it) as one commit
/// on top of the remote's tip.
fn replay_status_branch(dir: &Path, branch: &str, tracking: &str) -> Result<(), StatusCommitError> {
    let reference = format!("refs/heads/{branch}");
    let ours = run(dir, &["rev-parse", &reference], &[])?
        .trim()
        .to_string();
    let tree = run(dir, &["rev-parse", &format!("{ours}^{{tree}}")], &[])?
        .trim()
        .to_string();
    let theirs = run(dir, &["rev-parse", tracking], &[])?.trim().to_string();
    let msg = run(dir, &["log", "-1", "--format=%B", &ours], &[])?;
    let id = commit_tree(dir, &tree, Some(&theirs), msg.trim_end())?;
    run(dir, &["update-ref", &reference, &id, &ours], &[])?;
    Ok(())
}

/// The checked-out branch: rebase the local commits over the remote's, when every one of
/// them changes only status files (theirs for config, ours for status).
fn replay_head(dir: &Path, tracking: &str) -> Result<(), StatusCommitError> {
    let local = run(dir, &["rev-list", &format!("{tracking}..HEAD")], &[])?;
    let prefix = run(dir, &["rev-parse", "--show-prefix"], &[])?;
    let status_prefix = format!("{}{STATUS_DIR}/", prefix.trim());
    for commit in local.lines().filter(|l| !l.is_empty()) {
        let files = run(
            dir,
            &[
                "diff-tree",
                "--no-commit-id",
                "--name-only",
                "-r",
                "-z",
                commit,
            ],
            &[],
        )?;
        if files
            .split('\0')
            .any(|f| !f.is_empty() && !f.starts_with(&status_prefix))
        {
            return Err(StatusCommitError::NotStatusOnly(commit[..12].to_string()));
        }
    }
    // In a rebase "theirs" is the commits replayed: ours, status only.
    run(
        dir,
        &["rebase", "-q", "--autostash", "-X", "theirs", tracking],
        &AUTHOR,
    )
    .inspect_err(|_| {
        let _ = git(dir, &["rebase", "--abort"], None);
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_named_from_their_paths() {
        assert_eq!(
            resource_of("status/maps/customers.yaml").as_deref(),
            Some("maps/customers")
        );
        assert_eq!(
            resource_of("cfg/status/alerts/a.yaml").as_deref(),
            Some("alerts/a")
        );
        assert_eq!(resource_of("maps/customers.yaml"), None);
        assert_eq!(resource_of(""), None);
    }

    #[test]
    fn a_long_list_is_shortened_in_the_subject() {
        let many: Vec<String> = (0..25).map(|i| format!("maps/m{i}")).collect();
        let msg = message(&many, "abc");
        assert!(msg.starts_with("dualwrite status: maps/m0, "), "{msg}");
        assert!(msg.contains(" and 5 more\n"), "{msg}");
        assert!(msg.contains("Observed config revision abc."), "{msg}");
    }
}
