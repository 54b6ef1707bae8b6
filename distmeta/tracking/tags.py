"""Run tags describing where and with what code a training run ran."""

from __future__ import annotations

import getpass
import importlib.metadata
import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

from distmeta.uri import absolute, redact

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
COMMIT_ENV = "DISTMETA_GIT_COMMIT"
"""Where the commit comes from when the code has no ``.git`` (``ray job submit``'s working
dir, a Docker image: ``cluster/Dockerfile`` sets it from its ``GIT_COMMIT`` build argument,
beside the ``org.opencontainers.image.revision`` label)."""
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def package_version(name: str) -> str | None:
    """Installed version of distribution ``name``, or ``None`` when it is not installed.

    Reads package metadata only, so asking for ``ray`` does not import Ray.
    """
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(args: list[str], repo_dir: str | os.PathLike[str] | None) -> str | None:
    """``git ARGS`` in ``repo_dir`` (default: the distmeta source tree): its stdout, or ``None``
    when git is missing, the directory is not a work tree, or git does not answer in 5 s."""
    cwd = Path(repo_dir) if repo_dir is not None else _PACKAGE_DIR
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("git %s failed in %s: %s", " ".join(args), cwd, exc)
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit(repo_dir: str | os.PathLike[str] | None = None) -> str | None:
    """``git rev-parse HEAD`` in ``repo_dir``, else ``$DISTMETA_GIT_COMMIT``, else ``None``."""
    commit = (_git(["rev-parse", "HEAD"], repo_dir) or "").strip()
    return commit or os.environ.get(COMMIT_ENV, "").strip() or None


def ray_job(job_id: str | None = None) -> dict[str, str]:
    """The Ray job this driver belongs to: its id (``job_id``, which the runtime reads off
    Ray) and, under ``ray job submit``, the submission id (from the job config Ray hands the
    entrypoint in its environment)."""
    out: dict[str, str] = {"ray.job_id": job_id} if job_id else {}
    raw = os.environ.get(RAY_JOB_CONFIG_ENV)
    if raw:
        try:
            submission = json.loads(raw).get("metadata", {}).get("job_submission_id")
        except (ValueError, AttributeError):
            submission = None
        if submission:
            out["ray.job_submission_id"] = str(submission)
    return out


def source_tags(argv: list[str] | None = None) -> dict[str, str]:
    """MLflow's context tags (the UI's User and Source) and the command line: ``mlflow.user``,
    ``mlflow.source.name``, ``mlflow.source.type`` (JOB under ``ray job submit``, else LOCAL),
    ``distmeta.command``."""
    argv = list(sys.argv if argv is None else argv)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER", "unknown")
    name = Path(argv[0]).name if argv else "distmeta"
    command = shlex.join(["distmeta", *argv[1:]] if name in ("distmeta", "cli.py", "__main__.py") else argv)
    return {"mlflow.user": user, "mlflow.source.name": "distmeta" if name in ("cli.py", "__main__.py") else name,
            "mlflow.source.type": "JOB" if os.environ.get(RAY_JOB_CONFIG_ENV) else "LOCAL",
            "distmeta.command": command}


def project_tags(project_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The user's own project: the git work tree of the working directory (``project_dir``),
    when it is not distmeta's own: ``distmeta.project_commit``, ``distmeta.project_dirty`` and
    ``distmeta.project_dir``, beside distmeta's version and commit."""
    where = Path(project_dir) if project_dir is not None else Path.cwd()
    top = (_git(["rev-parse", "--show-toplevel"], where) or "").strip()
    own = (_git(["rev-parse", "--show-toplevel"], None) or "").strip()
    commit = (_git(["rev-parse", "HEAD"], where) or "").strip()
    if not top or not commit or top == own:
        return {}
    return {"distmeta.project_commit": commit, "distmeta.project_dirty": str(git_dirty(where)).lower(),
            "distmeta.project_dir": top}


def git_dirty(repo_dir: str | os.PathLike[str] | None = None) -> bool | None:
    """Whether tracked files differ from the commit (the run's code is not exactly
    :func:`git_commit`), or ``None`` outside a work tree."""
    status = _git(["status", "--porcelain", "--untracked-files=no"], repo_dir)
    return None if status is None else bool(status.strip())


def run_tags(
    nodes: int | None = None,
    workers: int | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    repo_dir: str | os.PathLike[str] | None = None,
    extra: dict[str, str] | None = None,
    parent_run_id: str | None = None,
) -> dict[str, str]:
    """Tags for a training run: versions, git commit, cluster shape and run directory.

    Keys: ``distmeta.version``, ``ray.version``, ``mlflow.source.git.commit`` (MLflow shows it
    in the UI) and ``distmeta.git_commit``, ``distmeta.git_dirty`` (uncommitted changes to
    tracked files), ``distmeta.nodes``, ``distmeta.workers``, ``distmeta.run_dir`` (a URI as
    given), the user's project commit (:func:`project_tags`), the context tags of
    :func:`source_tags`, the Ray job's submission id (the runtime
    adds ``ray.job_id`` through ``extra``) and ``mlflow.parentRunId`` for a nested run;
    entries that are unknown are left out. ``extra`` is added last.
    """
    tags: dict[str, str] = {}
    for key, dist in (("distmeta.version", "distmeta"), ("ray.version", "ray")):
        version = package_version(dist)
        if version is not None:
            tags[key] = version
    commit = git_commit(repo_dir)
    if commit is not None:
        tags["mlflow.source.git.commit"] = commit
        tags["distmeta.git_commit"] = commit
        tags["distmeta.git_dirty"] = str(git_dirty(repo_dir)).lower()
    if nodes is not None:
        tags["distmeta.nodes"] = str(nodes)
    if workers is not None:
        tags["distmeta.workers"] = str(workers)
    if run_dir is not None:
        location = str(run_dir)
        tags["distmeta.run_dir"] = absolute(location)
    tags |= source_tags() | ray_job() | project_tags()
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id  # nested under it in the MLflow UI
    tags.update(extra or {})
    return {k: redact(v) for k, v in tags.items()}
