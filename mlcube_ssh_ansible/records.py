"""Run records and manifests: what ran where, and what came back, kept next to the workspace.

* ``<workspace>/.mlcube-ssh-ansible/runs/<run_id>.json`` — one record per `run`: hosts, tasks,
  remote folders, start time; completed at the end with each host's exit code, times and outputs.
* ``<workspace>/hosts/manifest.json`` — with several hosts, the same per-host results next to the
  per-host folders ``<workspace>/hosts/<host>/``.

No secrets are written: settings go in only as the remote platform and paths.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import SettingsError
from .render import Job, remote_name
from .report import Reporter
from .settings import Settings

RECORDS_DIR = ".mlcube-ssh-ansible"


def runs_dir(workspace: str) -> Path:
    return Path(workspace, RECORDS_DIR, "runs")


def sha256(path: Path) -> str:
    """A file's sha256, read in blocks: the checksum a run record and a sweep manifest give each output."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _seconds(started: str | None, ended: str | None) -> float | None:
    if not started or not ended:
        return None
    delta = datetime.datetime.fromisoformat(ended) - datetime.datetime.fromisoformat(started)
    return round(delta.total_seconds(), 3)


def _iso(seconds: Any) -> str | None:
    """A Unix time as ISO 8601 UTC, as the other times in the record."""
    if not isinstance(seconds, (int, float)):
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds")


def write_atomically(path: Path, text: str) -> None:
    """Written aside and renamed: a reader (another command, rsync --exclude-from) never sees half a file,
    and two writers at once never share a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(handle, "w", encoding="utf-8", errors="surrogateescape") as out:
        out.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def _write_json(path: Path, content: dict[str, Any]) -> None:
    write_atomically(path, json.dumps(content, indent=2, sort_keys=False) + "\n")


def start_record(settings: Settings, job: Job) -> dict[str, Any]:
    """The record written when a run starts (before any host is touched)."""
    record: dict[str, Any] = {
        "run_id": job.run_id,
        "cube": os.path.abspath(job.cube_root),
        "workspace": os.path.abspath(job.workspace),
        "tasks": list(job.tasks),
        "task_args": list(job.task_args),
        "platform": settings.platform,
        "hosts_pattern": settings.hosts if settings.inventory else settings.host,
        "inventory": settings.inventory,
        "remote_root": settings.remote_root,
        "remote_name": remote_name(job.cube_root),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "detached": job.detach,
        "hosts": {},
    }
    _write_json(runs_dir(job.workspace) / f"{job.run_id}.json", record)
    return record


def started_somewhere(record: dict[str, Any]) -> bool:
    """Whether a run record's run started on some host: not when every host refused it (a busy workspace) or
    failed before the launch. A record not finished yet (the command still runs, or died) may have started."""
    hosts = record.get("hosts") or {}
    if "finished" not in record or not hosts:
        return "finished" not in record
    return any(host.get("launched", host.get("exit_code") is not None) for host in hosts.values())


def load_record(workspace: str, run_id: str) -> dict[str, Any]:
    """A run's record, as `run` wrote it."""
    path = runs_dir(workspace) / f"{run_id}.json"
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SettingsError("run", f"no readable record of run {run_id} in {path.parent}: {error}",
                            kind="option") from None
    return record


def host_results(reporter: Reporter, job: Job) -> dict[str, dict[str, Any]]:
    """Per host: exit code, times, failure, and each fetched output with its size and checksum."""
    results: dict[str, dict[str, Any]] = {}
    for host, report in sorted(reporter.hosts.items()):
        dest = Path(report.fetch_dest or job.workspace)
        outputs = []
        for name in sorted(set(report.fetched)):
            path = dest / name
            if path.is_file():
                outputs.append({"path": name, "size": path.stat().st_size, "sha256": sha256(path)})
        results[host] = {
            "tasks": list(job.tasks),
            "exit_code": report.run_rc,
            "started": report.run_started,
            "ended": report.run_ended,
            "duration_s": _seconds(report.run_started, report.run_ended),
            "failed_step": report.failed_step,
            "reason": report.reason,
            "results": str(dest),
            "launched": report.launched or report.run_rc is not None or report.run_dir is not None,
            "outputs": outputs,
        }
        if report.lost is not None:  # given up on while its task may still run there: how to pick it up
            results[host]["connection_lost"] = {"since": _iso(report.lost.get("since")),
                                                "reason": report.lost.get("reason"),
                                                "reconnect_timeout_s": report.lost.get("timeout"),
                                                "last_output": list(report.last_output),
                                                "pick_up": report.pick_up}
        if report.died:
            results[host]["died"] = {"rebooted": report.rebooted, "last_output": list(report.last_output)}
    return results


def finish_record(record: dict[str, Any], reporter: Reporter, job: Job) -> dict[str, Any]:
    """Complete the run record with every host's results; with several hosts, write hosts/manifest.json."""
    results = host_results(reporter, job)
    for host, earlier in (record.get("hosts") or {}).items():  # e.g. `fetch` of a run `run` launched
        if host in results and isinstance(earlier, dict) and earlier.get("launched"):
            results[host]["launched"] = True
    record = {**record, "hosts": results,
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")}
    _write_json(runs_dir(job.workspace) / f"{job.run_id}.json", record)
    if any(Path(job.workspace, "hosts") in Path(h["results"]).parents for h in record["hosts"].values()):
        _write_json(Path(job.workspace, "hosts", "manifest.json"), record)
    return record
