"""The sweep commands' workflow: read the fleet's slots, place the runs, start them all in one play, and keep the
sweep's manifest (sweeps.py) up to date from what the hosts say.

`sweep` runs two plays: `slots` (every host's GPUs and CPU-only slots) and `sweep` (upload the cube once per host,
then start that host's runs, each detached in a workspace of its own and queued on the host when its slots are
taken). It returns once the runs are started or queued: the hosts run the queue without the controller.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import socket
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import records, secrets, sweeps
from .errors import HostFailure, Interrupted
from .execute import Invocation, run_playbook
from .render import Job, check_job, workspace_key
from .report import FETCH_RESULT, RESULT_KEY, Reporter, group_by_reason, moved_files
from .settings import Settings
from .workflow import (
    CancelReport,
    _exclude_from,
    _finish,
    _preflight,
    _reporter,
    _stop_lines,
    _with_retries,
    interruptible,
    new_run_id,
    playbook_invocation,
    shared_inputs,
)

LAUNCH_ACTIONS = {"mlcube.ssh.launch", "launch"}


class SweepReport(Reporter):
    """The sweep play's reporter: each run's launch answer (a loop item per run), by run id."""

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(write=write, show_steps=False)
        self.launched: dict[str, dict[str, Any]] = {}

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        item = res.get("item")
        if event.get("event") in ("runner_item_on_ok", "runner_item_on_failed") and isinstance(item, dict) \
                and data.get("task_action") in LAUNCH_ACTIONS and item.get("run_id"):
            self.launched[str(item["run_id"])] = {**res, "failed": event["event"] == "runner_item_on_failed"}
        elif event.get("event") == "runner_on_failed" and isinstance(res.get("results"), list):
            # The loop's own verdict says only that some item failed: name the runs and why.
            reasons = [f"run {result.get('item', {}).get('run_id')}: {result.get('msg')}"
                       for result in res["results"] if isinstance(result, dict) and result.get("failed")]
            event = {**event, "event_data": {**data, "res": {**res, "msg": "; ".join(reasons) or res.get("msg")}}}
        return super().__call__(event)


def _hosts_settings(settings: Settings, hosts: Sequence[str]) -> Settings:
    """The settings narrowed to some hosts (of an inventory): the plays then touch only those."""
    return dataclasses.replace(settings, hosts=",".join(hosts)) if settings.inventory else settings


def sweep_invocation(play_settings: Settings, job: Job,
                     runs: Sequence[tuple[Job, Mapping[str, str], sweeps.Placement]], holder: str, *,
                     verbosity: int = 0, offered: dict[str, str] | None = None) -> Invocation:
    """The sweep play that starts `runs` (each its own job, parameters and placement) on `play_settings`' hosts:
    per host (mlcube_ssh_sweep_runs) the runs with a free slot first (they take it), then those that wait, in
    order. `sweep` and sweep-attach's re-placing both start runs with it. `holder` ends the run holder's text."""
    by_host: dict[str, list[tuple[bool, dict[str, Any]]]] = {}
    for run_job, params, placed in runs:
        by_host.setdefault(placed.host, []).append((not placed.now, {
            "run_id": run_job.run_id, "workspace_key": workspace_key(run_job),
            "task_args": sweeps.task_args(params), "gpus_needed": run_job.gpus_needed}))
    plans = {host: [item for _, item in sorted(listed, key=lambda pair: pair[0])] for host, listed in by_host.items()}
    extra = {"mlcube_ssh_sweep_runs": plans,
             "mlcube_ssh_shared_inputs": shared_inputs(runs[0][0]),
             "mlcube_ssh_run_holder": f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} {holder}"}
    # _exclude_from is written now: it names every sweep folder, this one's too.
    return playbook_invocation("sweep", play_settings, job, extra=extra, verbosity=verbosity,
                               exclude_from=_exclude_from(job), offered=offered)


def read_slots(settings: Settings, job: Job, write: Callable[[str], None],
               verbosity: int = 0) -> dict[str, sweeps.HostSlots]:
    """Every host's slots (the `slots` play). A host that fails is left out, with a line saying why; if every host
    fails, nothing is placed."""
    reporter = _reporter(settings, Reporter(write=write, show_steps=False))
    outcome = run_playbook(playbook_invocation("slots", settings, job, verbosity=verbosity), reporter)
    failures = reporter.failures()
    found = {host: sweeps.HostSlots.of(report.slots) for host, report in reporter.hosts.items()
             if report.slots is not None and host not in failures}
    if not found:
        _finish("slots", outcome, reporter)  # raises with every host's reason
        raise HostFailure("sweep: no host answered the slots play", failures)
    for phrase in group_by_reason(failures):
        write(f"left out of the sweep: {phrase}")
    return found


def sweep(settings: Settings, job: Job, parameters: Sequence[Mapping[str, str]], *, need_gpus: int = 0,
          write: Callable[[str], None] = print, verbosity: int = 0) -> dict[str, Any]:
    """Start a sweep: one run per parameter set, each with its own run id, local and remote workspace, placed on
    the fleet's slots (sweeps.place) and started or queued on its host by one play. Returns the manifest.

    Every run's task arguments are checked before any host is touched, and so is the placement (after the
    read-only slots play)."""
    offered = secrets.read(settings.secrets)  # a missing one stops here, before any host is touched
    _preflight(settings)
    sweep_id = new_run_id()
    count = len(parameters)
    runs: list[tuple[Job, Mapping[str, str]]] = []
    for index, params in enumerate(parameters, start=1):
        folder = sweeps.run_folder(job.cube_root, sweep_id, index, count)
        run_job = dataclasses.replace(job, workspace=str(folder), run_id=f"{sweep_id}-{folder.name}",
                                      task_args=tuple(job.task_args) + tuple(sweeps.task_args(params)),
                                      detach=True, gpus_needed=need_gpus, queue=True)
        runs.append((check_job(run_job), params))
    if not runs:
        raise sweeps.SweepError("runs", "the sweep has no run", kind="option")
    plan = sweeps.place([need_gpus] * count, read_slots(settings, job, write, verbosity))

    # Nothing on the hosts changed yet: the run folders, run records and the manifest are written first, so the
    # sweep's folder is excluded from the upload and every run can be found whatever happens next.
    entries = []
    for index, ((run_job, params), placed) in enumerate(zip(runs, plan), start=1):
        Path(run_job.workspace).mkdir(parents=True, exist_ok=True)
        records.start_record(_hosts_settings(settings, [placed.host]), run_job)
        entries.append(sweeps.new_run(index, run_job.run_id, params, placed.host, placed.now,
                                      Path(run_job.workspace), need_gpus))
    manifest = sweeps.new_manifest(sweep_id, job.cube_root, job.tasks, job.task_args, entries,
                                   hosts_pattern=settings.hosts if settings.inventory else str(settings.host),
                                   need_gpus=need_gpus, run_options=job.run_options, run_retries=job.run_retries)
    path = sweeps.write_manifest(manifest)
    hosts = sorted({placed.host for placed in plan})
    write(f"sweep {sweep_id}: starting {count} run(s) on {len(hosts)} host(s) ("
          f"{sum(1 for placed in plan if placed.now)} on free slots, the rest queued there); manifest {path}")
    play_settings = _hosts_settings(settings, hosts)
    invocation = sweep_invocation(play_settings, job, [(run_job, params, placed) for (run_job, params), placed
                                                       in zip(runs, plan)],
                                  f"sweep {sweep_id}", verbosity=verbosity, offered=offered)
    reporter = _reporter(settings, SweepReport(write=write))
    assert isinstance(reporter, SweepReport)
    with interruptible() as cancel:
        outcome = _with_retries(invocation, play_settings, reporter, cancel)
    sweeps.update_from_launch(manifest, reporter.launched)
    for run in manifest["runs"]:
        if run["state"] == "planned" and run["host"] in reporter.failures():
            step, reason = reporter.failures()[run["host"]]
            run["state"], run["reason"] = "not started", f"{run['host']} failed at {step}: {reason}"
    sweeps.write_manifest(manifest)
    if cancel.is_set():
        raise Interrupted(f"sweep {sweep_id} interrupted; some runs may have started: `sweep-status --sweep "
                          f"{sweep_id}` shows them (manifest {path})")
    _finish("sweep", outcome, reporter)
    return manifest


def sweep_status(settings: Settings, job: Job, sweep_id: str | None = None, *,
                 write: Callable[[str], None] = print, verbosity: int = 0) -> dict[str, Any]:
    """The sweep's runs as their hosts say (the status play's run list, on the sweep's hosts only): the manifest
    is updated with each run's state, devices, exit code and times. A host that does not answer keeps its runs'
    last known state, with a line saying why."""
    _preflight(settings)
    manifest = sweeps.load_manifest(job.cube_root, sweep_id)
    hosts = sorted({str(run["host"]) for run in manifest["runs"]})
    reporter = _reporter(settings, Reporter(write=write, show_steps=False))
    status_job = dataclasses.replace(job, run_id="")
    invocation = playbook_invocation("status", _hosts_settings(settings, hosts), status_job, verbosity=verbosity)
    run_playbook(invocation, reporter)
    failures = reporter.failures()
    listed = {host: report.runs or [] for host, report in reporter.hosts.items()
              if host not in failures and report.runs is not None}
    for host in hosts:
        if host not in listed and host not in failures:
            listed[host] = []  # reached, but the cube has no run there
    missing = sweeps.update_from_hosts(manifest, listed)
    for run in manifest["runs"]:
        if run["run_id"] in missing and run["state"] not in ("not started",):
            run["state"] = "not on host"
    for phrase in group_by_reason(failures):
        write(f"not reached, last known states shown: {phrase}")
    # The hosts of this look that did not answer, and why (sweep-attach re-places an unreachable host's queue).
    manifest["not_reached"] = {host: reason for host, (_step, reason) in sorted(failures.items())}
    sweeps.write_manifest(manifest)
    return manifest


def sweep_fetch(settings: Settings, job: Job, manifest: dict[str, Any], *, write: Callable[[str], None] = print,
                verbosity: int = 0) -> list[str]:
    """Bring back each ended run's results not fetched yet into its own folder, and put their checksums in the
    manifest: one play (`sweep_fetch`) for the whole sweep, one rsync per run on its host. Returns the run ids
    fetched; a run whose fetch failed is said in a line and tried again by the next call."""
    wanted = [run for run in manifest["runs"] if run.get("state") in sweeps.ENDED_STATES and not run.get("fetched")]
    if not wanted:
        return []
    plan: dict[str, list[dict[str, str]]] = {}
    for run in wanted:
        key = workspace_key(dataclasses.replace(job, workspace=str(run["results"])))
        plan.setdefault(str(run["host"]), []).append({"run_id": run["run_id"], "workspace_key": key,
                                                      "dest": str(run["results"])})
    reporter = FetchReport(write=write)
    _reporter(settings, reporter)
    invocation = playbook_invocation("sweep_fetch", _hosts_settings(settings, sorted(plan)), job, verbosity=verbosity,
                                     extra={"mlcube_ssh_sweep_fetch": plan})
    run_playbook(invocation, reporter)
    failures = reporter.failures()
    fetched = []
    for run in wanted:
        if run["run_id"] not in reporter.fetched:
            why = reporter.failed.get(run["run_id"]) or \
                (failures[run["host"]][1] if run["host"] in failures else "the fetch did not reach its host")
            write(f"run {run['run_id']} on {run['host']}: results not fetched: {why}")
            continue
        sweeps.update_from_fetch(manifest, run["run_id"], reporter.fetched[run["run_id"]] or None)
        run["fetched"] = True
        fetched.append(run["run_id"])
    sweeps.write_manifest(manifest)
    return fetched


class FetchReport(Reporter):
    """The sweep_fetch play's reporter: per run id, the files its rsync brought (or why it failed)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(write=write, show_steps=False)
        self.fetched: dict[str, list[str]] = {}
        self.failed: dict[str, str] = {}

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        item = res.get("item")
        if isinstance(item, dict) and item.get("run_id") and res.get(RESULT_KEY) == FETCH_RESULT:
            if event.get("event") == "runner_item_on_ok":
                self.fetched[str(item["run_id"])] = moved_files(res)
            elif event.get("event") == "runner_item_on_failed":
                self.failed[str(item["run_id"])] = str(res.get("msg") or "failed")
        return super().__call__(event)


def sweep_cancel(settings: Settings, job: Job, sweep_id: str | None = None, *,
                 write: Callable[[str], None] = print, verbosity: int = 0) -> tuple[list[str], dict[str, Any]]:
    """Stop every run of a sweep that is going on or queued, on the sweep's hosts only (the cancel play with the
    sweep's run ids: queued runs leave the line first, so none of them takes a slot the others free), then read
    the states back into the manifest. Returns one line per host and stopped run, and the manifest."""
    _preflight(settings)
    manifest = sweeps.load_manifest(job.cube_root, sweep_id)
    # Also the hosts a run was moved away from (sweep-attach): a copy left there is stopped too.
    hosts = sorted({str(run["host"]) for run in manifest["runs"]}
                   | {str(host) for run in manifest["runs"] for host in run.get("moved_from") or []})
    cancel_job = dataclasses.replace(job, run_id="")
    stopped = CancelReport(write=write)
    _reporter(settings, stopped)
    invocation = playbook_invocation("cancel", _hosts_settings(settings, hosts), cancel_job, verbosity=verbosity,
                                     extra={"mlcube_ssh_run_ids": [run["run_id"] for run in manifest["runs"]]})
    outcome = run_playbook(invocation, stopped)
    lines = [line.replace("no run of this cube is running", "no run of this sweep is going on")
             for line in _stop_lines(cancel_job, list(stopped.hosts), stopped)]
    for line in lines:
        write(line)
    _finish("cancel", outcome, stopped)
    return lines, sweep_status(settings, job, manifest["sweep_id"], write=write, verbosity=verbosity)
