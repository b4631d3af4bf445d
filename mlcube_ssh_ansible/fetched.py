"""What the fetches brought, per host: so that results the user deletes locally stay deleted.

Without it, a result deleted from the local workspace comes back with the next fetch, because the host
keeps its copy (uploads never delete in the remote workspace), and a task that appends to an output keeps
adding to lines the user threw away. After every fetch, the files in the folder the host's results went to
are listed (path, size, modification time) in ``<workspace>/.mlcube-ssh-ansible/fetched.json``. The next
`run` or `configure` passes the listed files that are gone locally as ``mlcube_ssh_prune``, and the upload
step deletes them on the host, but only where the host's copy still has the listed size and time: a result
the host wrote since the last fetch is never lost. Once a host's upload is done, those files leave its list
(``forget_pruned``): either they are gone there too, or the host's copy is newer and the next fetch lists it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from .records import RECORDS_DIR, write_atomically
from .report import Reporter

FETCHED_FILE = "fetched.json"


def _path(workspace: str) -> Path:
    return Path(workspace, RECORDS_DIR, FETCHED_FILE)


def listing(dest: str, workspace: str) -> dict[str, list[int]]:
    """Regular files below `dest` -> [size, whole-second mtime]; not this tool's records, nor (when `dest`
    is the workspace itself) the per-host results in hosts/."""
    files: dict[str, list[int]] = {}
    skip_hosts = os.path.abspath(dest) == os.path.abspath(workspace)
    for dirpath, dirnames, filenames in os.walk(dest):
        dirnames[:] = [name for name in dirnames if name != RECORDS_DIR
                       and not (skip_hosts and dirpath == dest and name == "hosts")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if os.path.isfile(path) and not os.path.islink(path):
                files[os.path.relpath(path, dest)] = [info.st_size, int(info.st_mtime)]
    return files


def _load(workspace: str) -> dict[str, Any]:
    try:
        loaded = json.loads(_path(workspace).read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def remember(workspace: str, reporter: Reporter) -> None:
    """After a fetch: list what each host's fetch folder holds now (hosts whose fetch failed keep their list)."""
    entries = _load(workspace)
    changed = False
    for host, report in reporter.hosts.items():
        if report.completed("fetch") and report.fetch_dest and os.path.isdir(report.fetch_dest):
            entries[host] = {"dest": os.path.abspath(report.fetch_dest),
                             "files": listing(report.fetch_dest, workspace)}
            changed = True
    if changed:
        write_atomically(_path(workspace), json.dumps(entries) + "\n")


def forget_pruned(workspace: str, pruned: dict[str, list[list[Any]]], hosts: Iterable[str]) -> None:
    """After `hosts` uploaded, i.e. deleted what `pruned` named for them: take those files off their lists,
    so that the next command does not ask the host to delete them again (a module call per host each time)."""
    entries = _load(workspace)
    changed = False
    for host in hosts:
        entry = entries.get(host)
        if host not in pruned or not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            continue
        names = {item[0] for item in pruned[host]}
        kept = {name: meta for name, meta in entry["files"].items() if name not in names}
        if len(kept) != len(entry["files"]):
            entry["files"] = kept
            changed = True
    if changed:
        write_atomically(_path(workspace), json.dumps(entries) + "\n")


def to_prune(workspace: str) -> dict[str, list[list[Any]]]:
    """Host -> [path, size, mtime] of each file its last fetch brought that is gone locally now."""
    gone: dict[str, list[list[Any]]] = {}
    for host, entry in _load(workspace).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            continue
        dest = str(entry.get("dest") or workspace)
        missing = [[name, *meta] for name, meta in sorted(entry["files"].items())
                   if not os.path.lexists(os.path.join(dest, name))]
        if missing:
            gone[host] = missing
    return gone
