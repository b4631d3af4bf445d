"""Sweeps: many runs of one cube from one command (issue 15, part 2). Pure, but for the manifest's file.

* what runs: a grid of task parameters (``--grid NAME=V1,V2``, the cartesian product) and/or a file of runs
  (YAML/JSON list of mappings, or CSV with a header), each checked with the task argument format of spec.yml;
* where: :func:`place` plans each run on a host from the hosts' slots (the `slots` play): free slots across the
  fleet first, the rest queued on the hosts in proportion to what each can run at once. The plan only picks the
  host: each host's launcher takes the leases itself, atomically, or queues the run there;
* what happened: one manifest per sweep, ``<cube>/sweeps/<sweep id>/manifest.json``, with every run's
  parameters, host, devices, state, exit code and (once fetched) output checksums. Each run's results come back
  to ``<cube>/sweeps/<sweep id>/<NNN>/``, its own local workspace, which is never uploaded.
"""

from __future__ import annotations

import csv
import datetime
import io
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from . import spec
from .errors import SettingsError
from .records import sha256, write_atomically

SWEEPS_DIR = "sweeps"
MANIFEST = "manifest.json"
# A run's state as the host's run folder says (runs module), plus `planned` (not started yet by the sweep play)
# and `not started` (its launch failed on the host).
ENDED_STATES = ("succeeded", "failed", "cancelled", "died")


class SweepError(SettingsError):
    """A sweep's runs or placement are wrong; nothing was touched."""

    def __init__(self, key: str, problem: str, kind: str = "sweep") -> None:
        super().__init__(key, problem, kind)


# ------------------------------------------------------------------------------------------------ what runs


def _check_value(source: str, name: str, value: str) -> None:
    """One task argument of a run, with the format every task argument has (spec.yml's task_arg)."""
    task_arg = spec.fmt("task_arg")
    if not task_arg.matches(f"{name}=x"):
        raise SweepError(name, f"is not a task parameter name ({source}); {task_arg.says}", kind="parameter")
    if not task_arg.matches(f"{name}={value}"):
        raise SweepError(name, f"value {value!r} ({source}) is not allowed: task arguments {task_arg.says}",
                         kind="parameter")


def parse_grid(grid: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`--grid NAME=V1,V2,...` options -> [(name, [values])] in the order given; values are split at commas
    (a value with a comma goes in a --runs file)."""
    parsed: list[tuple[str, list[str]]] = []
    for option in grid:
        name, equals, values = option.partition("=")
        name = name.strip()
        if not equals or not name:
            raise SweepError(option, "must look like NAME=V1,V2,... (e.g. --grid lr=0.1,0.01)", kind="--grid")
        if name in (known for known, _ in parsed):
            raise SweepError(name, "is given twice: list all its values in one --grid NAME=V1,V2", kind="--grid")
        split = values.split(",")
        if any(value == "" for value in split):
            raise SweepError(name, f"has an empty value in {values!r}: list values as V1,V2,...", kind="--grid")
        for value in split:
            _check_value("--grid", name, value)
        parsed.append((name, split))
    return parsed


def _scalar(value: Any, where: str, name: str) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise SweepError(name, f"{where}: give one value, not {json.dumps(value)}", kind="parameter")
    return str(value)


def read_runs(path: str) -> list[dict[str, str]]:
    """A file of runs: a YAML or JSON list of mappings (name -> value), or CSV with a header row (`.csv`).

    Values are kept as written (YAML is read without type conversion: `0.10` stays `0.10`)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise SweepError(path, f"cannot read the file of runs: {error}", kind="--runs") from None
    rows: list[dict[str, str]] = []
    if path.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise SweepError(path, "the CSV file has no header row naming the parameters", kind="--runs")
        for number, row in enumerate(reader, start=2):
            if None in row or any(value is None for value in row.values()):
                raise SweepError(path, f"line {number} has not as many fields as the header", kind="--runs")
            rows.append({name.strip(): str(value).strip() for name, value in row.items()})
    else:
        try:
            loaded = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds only str, list, dict
        except yaml.YAMLError as error:
            problem = " ".join(str(error).split())
            raise SweepError(path, f"is not YAML or JSON: {problem}", kind="--runs") from None
        if not isinstance(loaded, list) or not all(isinstance(row, dict) for row in loaded):
            raise SweepError(path, "must be a list of mappings (parameter name -> value), one per run",
                             kind="--runs")
        for number, row in enumerate(loaded, start=1):
            rows.append({str(name): _scalar(value, f"--runs {path} run {number}", str(name))
                         for name, value in row.items()})
    if not rows:
        raise SweepError(path, "lists no run", kind="--runs")
    for number, row in enumerate(rows, start=1):
        for name, value in row.items():
            _check_value(f"--runs {path} run {number}", name, value)
    return rows


def expand(fixed: Sequence[str], grid: Sequence[tuple[str, list[str]]],
           rows: Sequence[Mapping[str, str]] | None = None) -> list[dict[str, str]]:
    """Each run's parameters: every row of the file (or one empty row) with every combination of the grid, in
    order (the last grid option varies fastest). A name both fixed (NAME=VALUE) and varied is refused."""
    fixed_names = {argument.partition("=")[0] for argument in fixed}
    names = [name for name, _ in grid]
    for name in names:
        if name in fixed_names:
            raise SweepError(name, "is both a fixed task argument and a --grid parameter: give it once",
                             kind="parameter")
    runs: list[dict[str, str]] = []
    for row in rows if rows is not None else [{}]:
        for name in row:
            if name in fixed_names or name in names:
                raise SweepError(name, "is set both in the file of runs and as a task argument or --grid "
                                 "parameter: give it once", kind="parameter")
        for combination in itertools.product(*(values for _, values in grid)):
            runs.append({**row, **dict(zip(names, combination))})
    if not grid and rows is None:
        raise SweepError("grid", "a sweep needs --grid NAME=V1,V2,... and/or --runs FILE", kind="option")
    return runs


def task_args(parameters: Mapping[str, str]) -> list[str]:
    """A run's own task arguments (after the sweep's fixed ones)."""
    return [f"{name}={value}" for name, value in parameters.items()]


# ---------------------------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class HostSlots:
    """What one host can give runs, from its slots: GPUs that no foreign process uses, and CPU-only slots."""

    gpus: int  # usable: free or leased by a run (a GPU busy with a process we did not start is skipped)
    free_gpus: int
    cpus: int
    free_cpus: int
    waiting: int = 0  # runs already in the host's line: a new run waits behind them, free slots or not

    @staticmethod
    def of(found: Mapping[str, Any]) -> HostSlots:
        gpus = [gpu for gpu in found.get("gpus") or [] if gpu.get("state") != "busy"]
        cpus = found.get("cpus") or []
        return HostSlots(gpus=len(gpus), free_gpus=sum(1 for gpu in gpus if gpu.get("state") == "free"),
                         cpus=len(cpus), free_cpus=sum(1 for cpu in cpus if cpu.get("state") == "free"),
                         waiting=int(found.get("waiting") or 0))

    def at_once(self, need: int) -> int:
        """How many runs needing `need` GPUs (0: a CPU-only slot) the host runs at once when it is idle."""
        return self.gpus // need if need > 0 else self.cpus


@dataclass(frozen=True)
class Placement:
    """Where a run goes, and whether a slot was free for it when the slots were read (else it is queued)."""

    host: str
    now: bool


def place(needs: Sequence[int], hosts: Mapping[str, HostSlots]) -> list[Placement]:
    """Plan each run (its GPUs needed, 0 = a CPU-only slot) on a host.

    1. In order, each run goes to a host with a free slot for it now: the one with the most free slots of that
       kind (so the runs spread over the fleet), the first by name on a tie. A host whose line already holds
       queued runs (`waiting`, of any user) has no free slot for a new run: it would wait behind them.
    2. The rest are queued: each on the host where it would wait least, counting a host's queued runs (those
       already waiting there and ours) in units of what it runs at once (a host that runs twice as many at once
       gets twice as many queued).
    A host never gets a run that needs more GPUs than it has; a run that no host can ever run is refused,
    naming it. Only a plan: each host takes the leases itself, atomically, when its launcher starts the run."""
    names = sorted(hosts)
    for index, need in enumerate(needs, start=1):
        if not any(hosts[name].at_once(need) > 0 for name in names):
            most = ", ".join(f"{name}: {hosts[name].gpus} GPU(s), {hosts[name].cpus} CPU slot(s)" for name in names)
            wanted = f"{need} GPU(s)" if need else "a CPU-only slot"
            raise SweepError(f"run {index}", f"needs {wanted}, and no host has as many ({most or 'no host'})",
                             kind="sweep")
    free_gpus = {name: 0 if hosts[name].waiting else hosts[name].free_gpus for name in names}
    free_cpus = {name: 0 if hosts[name].waiting else hosts[name].free_cpus for name in names}
    plan: list[Placement | None] = [None] * len(needs)
    for index, need in enumerate(needs):
        free = free_gpus if need > 0 else free_cpus
        fits = [name for name in names if free[name] >= max(need, 1)]
        if fits:
            host = max(fits, key=lambda name: (free[name], -names.index(name)))
            free[host] -= max(need, 1)
            plan[index] = Placement(host, True)
    waiting = {name: 0.0 for name in names}  # our runs queued on the host, in units of its runs at once

    def wait(name: str, need: int) -> float:
        """How long a run needing `need` would wait on the host, in units of its runs at once."""
        return waiting[name] + (hosts[name].waiting + 1) / hosts[name].at_once(need)

    for index, need in enumerate(needs):
        if plan[index] is not None:
            continue
        fits = [name for name in names if hosts[name].at_once(need) > 0]
        host = min(fits, key=lambda name: (wait(name, need), names.index(name)))
        waiting[host] += 1 / hosts[host].at_once(need)
        plan[index] = Placement(host, False)
    return [placement for placement in plan if placement is not None]


# ----------------------------------------------------------------------------------------------- manifest


def sweeps_root(cube_root: str) -> Path:
    return Path(os.path.abspath(cube_root), SWEEPS_DIR)


def sweep_dir(cube_root: str, sweep_id: str) -> Path:
    return sweeps_root(cube_root) / sweep_id


def run_folder(cube_root: str, sweep_id: str, index: int, count: int) -> Path:
    """A run's own local workspace: `<cube>/sweeps/<sweep id>/<NNN>` (its results come back there)."""
    return sweep_dir(cube_root, sweep_id) / str(index).zfill(max(3, len(str(count))))


def sweep_folders(cube_root: str) -> list[str]:
    """The cube's sweep folders (those with a manifest), relative to the cube: never uploaded (upload.py's
    exclude file), nor part of what a configure or an upload depends on (fingerprint.py)."""
    root = sweeps_root(cube_root)
    try:
        found = sorted(path.name for path in root.iterdir() if (path / MANIFEST).is_file())
    except OSError:
        return []
    return [f"{SWEEPS_DIR}/{name}" for name in found]


def new_manifest(sweep_id: str, cube_root: str, tasks: Sequence[str], fixed: Sequence[str],
                 runs: Sequence[Mapping[str, Any]], *, hosts_pattern: str, need_gpus: int,
                 run_options: Sequence[str] = (), run_retries: int = 0) -> dict[str, Any]:
    """The manifest written before the sweep's play: every run planned, with its parameters and host, and what
    every run gets (task arguments, `mlcube run` options, retries: a run placed again starts as it was)."""
    return {
        "sweep_id": sweep_id,
        "cube": os.path.abspath(cube_root),
        "tasks": list(tasks),
        "task_args": list(fixed),
        "run_options": list(run_options),
        "run_retries": run_retries,
        "need_gpus": need_gpus,
        "hosts_pattern": hosts_pattern,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "runs": [dict(run) for run in runs],
    }


def new_run(index: int, run_id: str, parameters: Mapping[str, str], host: str, now: bool, results: Path,
            need_gpus: int) -> dict[str, Any]:
    """One run's entry in the manifest."""
    return {"index": index, "run_id": run_id, "parameters": dict(parameters), "host": host,
            "need_gpus": need_gpus, "placed": "free slot" if now else "queued", "state": "planned",
            "devices": None, "exit_code": None, "attempts": 0, "started": None, "ended": None,
            "results": str(results), "outputs": []}


def manifest_path(cube_root: str, sweep_id: str) -> Path:
    return sweep_dir(cube_root, sweep_id) / MANIFEST


def write_manifest(manifest: Mapping[str, Any]) -> Path:
    path = manifest_path(str(manifest["cube"]), str(manifest["sweep_id"]))
    write_atomically(path, json.dumps(manifest, indent=2) + "\n")
    return path


def load_manifest(cube_root: str, sweep_id: str | None = None) -> dict[str, Any]:
    """A sweep's manifest; without `sweep_id`, the newest sweep of the cube (sweep ids sort by time)."""
    if not sweep_id:
        found = sweep_folders(cube_root)
        if not found:
            raise SweepError("sweep", f"no sweep recorded in {sweeps_root(cube_root)}: start one with `sweep`",
                             kind="option")
        sweep_id = found[-1].split("/", 1)[1]
    path = manifest_path(cube_root, sweep_id)
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SweepError("sweep", f"no readable manifest of sweep {sweep_id} at {path}: {error}",
                         kind="option") from None
    return manifest


def update_from_launch(manifest: dict[str, Any], launched: Mapping[str, Mapping[str, Any]]) -> None:
    """After the sweep's play: run id -> the launch's answer (queued, devices, started) or its failure (msg)."""
    for run in manifest["runs"]:
        answer = launched.get(run["run_id"])
        if answer is None:
            continue
        if answer.get("failed"):
            run["state"], run["reason"] = "not started", str(answer.get("msg") or "failed")
            continue
        run["attempts"] = 0 if answer.get("queued") else 1
        run["state"] = "queued" if answer.get("queued") else "running"
        run["devices"] = answer.get("devices") or None
        run["started"] = None if answer.get("queued") else answer.get("started")


def update_from_hosts(manifest: dict[str, Any], listed: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Each run's state, devices, exit code and times from its host's run list (the runs module), host ->
    runs; returns the run ids its host did not list (its launch never reached it, or its folder is gone)."""
    missing: list[str] = []
    for run in manifest["runs"]:
        if run.get("host") not in listed:
            continue
        found = next((item for item in listed[run["host"]] if item.get("run_id") == run["run_id"]), None)
        if found is None:
            missing.append(run["run_id"])
            continue
        run["state"] = found.get("state") or run["state"]
        run["exit_code"] = found.get("rc")
        if found.get("devices"):
            run["devices"] = found["devices"]
        run["started"] = found.get("started") or run.get("started")
        run["ended"] = found.get("ended") or found.get("cancelled") or run.get("ended")
        # Attempts started: those that ended (the host's attempts.json, with retries), and the one going on.
        finished = [attempt for attempt in found.get("attempts") or [] if isinstance(attempt, dict)]
        going = 1 if run["state"] in ("running", "starting") else 0
        run["attempts"] = max(len(finished) + going, 1 if found.get("started") else 0)  # 0: never left the line
        if finished:
            run["attempt_details"] = finished
    return missing


def update_from_fetch(manifest: dict[str, Any], run_id: str, fetched: Iterable[str] | None = None) -> dict[str, Any]:
    """After a run's results came back to its folder: its outputs (path, size, sha256). `fetched` names the
    files (relative to the folder); None lists every file there but our records."""
    run: dict[str, Any] = next(run for run in manifest["runs"] if run["run_id"] == run_id)
    folder = Path(run["results"])
    if fetched is None:
        fetched = [str(path.relative_to(folder)) for path in sorted(folder.rglob("*"))
                   if path.is_file() and ".mlcube-ssh-ansible" not in path.relative_to(folder).parts]
    outputs = {output["path"]: output for output in run.get("outputs") or []}
    for name in sorted(set(fetched)):
        path = folder / name
        if path.is_file():
            outputs[name] = {"path": name, "size": path.stat().st_size, "sha256": sha256(path)}
    run["outputs"] = [outputs[name] for name in sorted(outputs)]
    return run


def describe(run: Mapping[str, Any]) -> str:
    """One run of `sweep-status`: `002 <run id> on gpu1: running on gpu 1 (lr=0.1 bs=32)`."""
    devices = run.get("devices") or {}
    if devices.get("gpus"):
        on = " on gpu " + ",".join(str(index) for index in devices["gpus"])
    elif devices.get("cpu") is not None:
        on = f" on cpu slot {devices['cpu']}"
    else:
        on = ""
    state = str(run.get("state"))
    if state in ("succeeded", "failed") or (state == "cancelled" and run.get("exit_code") is not None):
        state += f" (exit code {run.get('exit_code')})"
    elif state == "not started":
        state += f": {run.get('reason')}"
    parameters = " ".join(f"{name}={value}" for name, value in (run.get("parameters") or {}).items())
    return f"{str(run['index']).zfill(3)} {run['run_id']} on {run['host']}: {state}{on} ({parameters})"
