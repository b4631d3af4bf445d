"""Local fingerprints: skip what cannot have changed since it last succeeded.

* configure: a no-op configure is the common case (scripts run it before every run) and Ansible's fixed
  cost is a second or more, so when the cube's files (path, size, modification time of everything an
  upload would consider) and the settings are exactly as they were at the last successful configure of
  the same target, the hosts are not contacted at all. Any failed `run` forgets the fingerprint, so a host
  that lost its environment is checked again by the next configure.
* upload: a `run` uploads nothing to a host whose remote copy is what this controller left there, with the
  local files unchanged since: after every successful run the local tree's fingerprint is kept per host
  together with a random stamp the run wrote next to the remote copy. The next run passes the stamps of the
  hosts whose fingerprint still matches, and the upload step compares them with the remote one. Every other
  upload removes the remote stamp first, and a local file changed while a run goes on (other than its
  fetched outputs) voids the record, so a copy changed by anyone else is uploaded again.

`skip_unchanged: false` turns both off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import AbstractSet, Any, Iterable, Mapping

from . import assets, sweeps
from .records import write_atomically
from .render import EXCLUDED_DIRS, Job, remote_name
from .settings import Settings

LOCAL_ONLY = ("skip_unchanged", "keep_artifacts", "retries", "forks", "serial", "max_fail_percentage",
              "reconnect_timeout")


def _state_dir(kind: str = "configured") -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "mlcube-ssh-ansible", kind)


def _target(settings: Settings, job: Job, kind: str = "configured") -> Path:
    """One file per cube and target (host or inventory + pattern)."""
    target = f"{settings.host}:{settings.port}" if settings.host else f"{settings.inventory}:{settings.hosts}"
    key = hashlib.sha256(target.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return _state_dir(kind) / f"{remote_name(job.cube_root)}-{key}.json"


def _path_digest(path: str | Path | None) -> str:
    """A file's content, or a folder's (an inventory folder: hosts, group_vars, host_vars), as one digest."""
    if not path or not os.path.exists(path):
        return ""
    if os.path.isfile(path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    summary = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        summary.update(f"{file.relative_to(path)}\0".encode("utf-8", "surrogateescape"))
        summary.update(hashlib.sha256(file.read_bytes()).digest())
    return summary.hexdigest()


Listing = dict[str, str]


def _entry(info: os.stat_result, path: str) -> str:
    """What rsync -a would carry over for one path: a file's size and time, a link's target, a folder's mode."""
    if stat.S_ISLNK(info.st_mode):
        try:
            return f"l {os.readlink(path)}"
        except OSError:
            return "l ?"
    if stat.S_ISDIR(info.st_mode):
        return f"d {info.st_mode:o}"  # its time follows its content, which is listed anyway
    return f"f {info.st_size} {info.st_mtime_ns} {info.st_mode:o}"


def _list_tree(listing: Listing, prefix: str, root: str, skip: AbstractSet[str]) -> None:
    """Every file, folder and symbolic link under root, but folders named in `skip` (names anywhere, or
    absolute paths); keys are `prefix` + the path relative to root."""
    for dirpath, dirnames, filenames in os.walk(root):
        kept = []
        for name in sorted(dirnames):
            path = os.path.join(dirpath, name)
            if name in skip or path in skip:
                continue
            try:
                info = os.lstat(path)
            except OSError:
                continue
            listing[prefix + os.path.relpath(path, root)] = _entry(info, path)
            if not stat.S_ISLNK(info.st_mode):
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                listing[prefix + os.path.relpath(path, root)] = _entry(os.lstat(path), path)
            except OSError:
                continue


def _digest_of(summary: hashlib._Hash, listing: Listing) -> str:
    for key in sorted(listing):
        summary.update(f"{key}\0{listing[key]}\n".encode("utf-8", "surrogateescape"))
    return summary.hexdigest()


def _inputs(settings: Settings, exclude_from: str) -> hashlib._Hash:
    """A digest started with what decides where and how files go: settings, inventory (with the group_vars and
    host_vars Ansible reads next to an inventory file), git's ignore list."""
    summary = hashlib.sha256()
    # Settings that change nothing on the hosts stay out (toggling them must not force a check).
    relevant = {key: value for key, value in dataclasses.asdict(settings).items() if key not in LOCAL_ONLY}
    summary.update(json.dumps(relevant, sort_keys=True, default=str).encode())
    inventory = settings.inventory
    for part in (inventory, *((os.path.join(os.path.dirname(inventory), name) for name in ("group_vars", "host_vars"))
                              if inventory and os.path.isfile(inventory) else ()), exclude_from):
        summary.update(_path_digest(part).encode() + b"\0")
    return summary


SKIPPED = EXCLUDED_DIRS  # the records folder (RECORDS_DIR) among them


def _sweep_folders(job: Job) -> set[str]:
    """The cube's sweep folders (each run's results): never uploaded, so no part of an upload's inputs."""
    return {os.path.join(os.path.abspath(job.cube_root), folder) for folder in sweeps.sweep_folders(job.cube_root)}


def digest(settings: Settings, job: Job, exclude_from: str = "") -> str:
    """What a configure depends on: the uploadable tree's metadata (but the workspace), the settings, the
    inventory and git's ignore list."""
    listing: Listing = {}
    # The workspace is left out: remote `mlcube configure` does not read it, and `run` uploads it anyway.
    _list_tree(listing, "", os.path.abspath(job.cube_root), SKIPPED | {os.path.abspath(job.workspace)}
               | _sweep_folders(job))
    return _digest_of(_inputs(settings, exclude_from), listing)


def upload_listing(job: Job) -> Listing:
    """What a run's upload sends: the whole uploadable tree, workspace included, but the per-host results a
    fleet run fetches into <workspace>/hosts/ (never uploaded)."""
    root, workspace = os.path.abspath(job.cube_root), os.path.abspath(job.workspace)
    listing: Listing = {}
    _list_tree(listing, "cube:", root, SKIPPED | {os.path.join(root, "workspace"), workspace} | _sweep_folders(job))
    _list_tree(listing, "workspace:", workspace, SKIPPED | {os.path.join(workspace, "hosts")})
    return listing


# The collection's files that decide what an upload does: the role and the plugins its tasks call.
UPLOAD_RULES = ("roles/mlcube_ssh_upload", "plugins/action/synchronize.py", "plugins/modules/prune.py")


def upload_digest(settings: Settings, job: Job, exclude_from: str = "", listing: Listing | None = None) -> str:
    """The upload's inputs as one digest: the listing, the settings, and this tool's upload rules."""
    summary = _inputs(settings, exclude_from)
    for rules in UPLOAD_RULES:
        summary.update(_path_digest(assets.collection_dir() / rules).encode())
    # Which remote workspace the upload fills (each local workspace has its own): a stamp left by a run in
    # another workspace must not vouch for this one.
    summary.update(f"workspace at {os.path.abspath(job.workspace)}\0".encode("utf-8", "surrogateescape"))
    return _digest_of(summary, upload_listing(job) if listing is None else listing)


def changed_besides(before: Listing, after: Listing, fetched: Iterable[str]) -> list[str]:
    """Paths that changed between the listings other than the fetched workspace files and their folders:
    what someone changed while the run went on (those were not uploaded)."""
    allowed: set[str] = set()
    for path in fetched:
        parts = path.strip("/").split("/")
        allowed.update("workspace:" + "/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    return sorted(key for key in before.keys() | after.keys()
                  if before.get(key) != after.get(key) and key not in allowed)


def new_stamp() -> str:
    return secrets.token_hex(8)


def _synced(settings: Settings, job: Job) -> dict[str, dict[str, Any]]:
    try:
        hosts = json.loads(_target(settings, job, "synced").read_text()).get("hosts")
    except (OSError, ValueError, AttributeError):
        return {}
    return hosts if isinstance(hosts, dict) else {}


def synced_stamps(settings: Settings, job: Job, current: str) -> dict[str, str]:
    """Host -> the stamp its remote copy had after the last successful run, for hosts whose local
    fingerprint is still `current` (the others get a full upload)."""
    return {host: str(entry.get("stamp")) for host, entry in _synced(settings, job).items()
            if isinstance(entry, dict) and entry.get("digest") == current and entry.get("stamp")}


def known_paths(settings: Settings, job: Job, current: str) -> dict[str, dict[str, Any]]:
    """Host -> mlcube.ssh.paths' answer to its last successful run (its `known`), for the hosts of
    synced_stamps: a warm run works out its paths from it without a module call."""
    return {host: entry["paths"] for host, entry in _synced(settings, job).items()
            if isinstance(entry, dict) and entry.get("digest") == current and entry.get("stamp")
            and isinstance(entry.get("paths"), dict)}


def remember_synced(settings: Settings, job: Job, hosts: Iterable[str], current: str, stamp: str,
                    paths: Mapping[str, dict[str, Any] | None] | None = None) -> None:
    """The hosts' copies carry `stamp` and the local files' fingerprint `current`; with each host's paths answer."""
    entries = _synced(settings, job)
    for host in hosts:
        known = (paths or {}).get(host)
        entries[host] = {"digest": current, "stamp": stamp, **({"paths": known} if known else {})}
    _save(_target(settings, job, "synced"), {"hosts": entries, "cube": os.path.abspath(job.cube_root)})


def forget_synced(settings: Settings, job: Job, hosts: Iterable[str] | None = None) -> None:
    """Forget some hosts (their next run uploads in full), or all."""
    if hosts is None:
        _target(settings, job, "synced").unlink(missing_ok=True)
        return
    entries = _synced(settings, job)
    for host in hosts:
        entries.pop(host, None)
    _save(_target(settings, job, "synced"), {"hosts": entries, "cube": os.path.abspath(job.cube_root)})


def _save(path: Path, content: dict[str, object]) -> None:
    write_atomically(path, json.dumps(content) + "\n")


def unchanged(settings: Settings, job: Job, current: str) -> bool:
    try:
        recorded = json.loads(_target(settings, job).read_text()).get("digest")
    except (OSError, ValueError, AttributeError):
        return False
    return bool(recorded == current)


def remember(settings: Settings, job: Job, current: str) -> None:
    _save(_target(settings, job), {"digest": current, "cube": os.path.abspath(job.cube_root)})


def forget(settings: Settings, job: Job) -> None:
    _target(settings, job).unlink(missing_ok=True)
