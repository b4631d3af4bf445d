"""Local fingerprints: skip a `configure` whose inputs did not change since the last successful one.

A no-op configure is the common case (scripts run it before every run) and Ansible's fixed cost is
a second or more, so when the cube's files (path, size, modification time of everything an upload
would consider) and the settings are exactly as they were at the last successful configure of the
same target, the hosts are not contacted at all. Any failed `run` forgets the fingerprint, so a host
that lost its environment is checked again by the next configure; `skip_unchanged: false` always checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from .records import RECORDS_DIR
from .render import DEFAULT_EXCLUDES, Job, remote_name
from .settings import Settings

LOCAL_ONLY = ("skip_unchanged", "keep_artifacts", "retries", "forks", "serial", "max_fail_percentage")


def _state_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "mlcube-ssh-ansible", "configured")


def _target(settings: Settings, job: Job) -> Path:
    """One file per cube and target (host or inventory + pattern)."""
    target = f"{settings.host}:{settings.port}" if settings.host else f"{settings.inventory}:{settings.hosts}"
    key = hashlib.sha256(target.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return _state_dir() / f"{remote_name(job.cube_root)}-{key}.json"


def _file_digest(path: str | None) -> str:
    if not path or not os.path.isfile(path):
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def digest(settings: Settings, job: Job, exclude_from: str = "") -> str:
    """What a configure depends on: the uploadable tree's metadata (but the workspace), the settings, the
    inventory and git's ignore list."""
    skipped = {pattern.rstrip("/") for pattern in DEFAULT_EXCLUDES if pattern.endswith("/")} | {RECORDS_DIR}
    summary = hashlib.sha256()
    # Settings that change nothing on the hosts stay out (toggling them must not force a check).
    relevant = {key: value for key, value in dataclasses.asdict(settings).items() if key not in LOCAL_ONLY}
    summary.update(json.dumps(relevant, sort_keys=True, default=str).encode())
    summary.update(_file_digest(settings.inventory).encode() + _file_digest(exclude_from).encode())
    root = os.path.abspath(job.cube_root)
    # The workspace is left out: remote `mlcube configure` does not read it, and `run` uploads it anyway.
    workspace = os.path.abspath(job.workspace)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(name for name in dirnames
                             if name not in skipped and os.path.join(dirpath, name) != workspace)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            record = f"{os.path.relpath(path, root)}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_mode}\n"
            summary.update(record.encode("utf-8", "surrogateescape"))
    return summary.hexdigest()


def unchanged(settings: Settings, job: Job, current: str) -> bool:
    try:
        recorded = json.loads(_target(settings, job).read_text()).get("digest")
    except (OSError, ValueError, AttributeError):
        return False
    return bool(recorded == current)


def remember(settings: Settings, job: Job, current: str) -> None:
    path = _target(settings, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"digest": current, "cube": os.path.abspath(job.cube_root)}) + "\n")


def forget(settings: Settings, job: Job) -> None:
    _target(settings, job).unlink(missing_ok=True)
