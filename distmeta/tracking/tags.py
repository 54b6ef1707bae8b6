"""Run tags describing where and with what code a training run ran."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


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
    """``git rev-parse HEAD`` in ``repo_dir``, or ``None`` (see :func:`_git`)."""
    commit = (_git(["rev-parse", "HEAD"], repo_dir) or "").strip()
    return commit or None


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
) -> dict[str, str]:
    """Tags for a training run: versions, git commit, cluster shape and run directory.

    Keys: ``distmeta.version``, ``ray.version``, ``mlflow.source.git.commit`` (MLflow shows it
    in the UI) and ``distmeta.git_commit``, ``distmeta.git_dirty`` (uncommitted changes to
    tracked files), ``distmeta.nodes``, ``distmeta.workers``,
    ``distmeta.run_dir``; entries that are unknown are left out. ``extra`` is added last.
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
        tags["distmeta.run_dir"] = str(Path(run_dir).resolve())
    tags.update(extra or {})
    return tags
