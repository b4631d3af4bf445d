"""`sweep-attach`: follow a sweep to its end from the controller (issue 15, part 2).

Each look is the sweep's status (sweep_workflow.sweep_status, one status play on the sweep's hosts), then the
fetch of every run that ended since (sweep_workflow.sweep_fetch: results into the run's own folder, exit code and
output checksums into the manifest). Nothing of it is needed for the runs to go on: the hosts run their queues
without the controller. What only an attached controller does is re-place the waiting runs of a host that
dropped:

* a host not reached (unreachable) for `replace_after` seconds has its runs that were still *queued* there (not
  started) placed again over the other hosts' slots (sweeps.place) and started or queued there by the sweep play,
  under the same run id and results folder; the manifest says where from (`moved_from`). Its runs that had
  started are left alone: they go on there, and are fetched when it answers again;
* when such a host answers again, the copies it still holds of the runs moved away are cancelled there
  (`cancelled_on`), whatever their state: if the host had only lost the controller, a copy may have started,
  and its results stay on that host, unfetched.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

from . import records, secrets, sweeps
from .execute import run_playbook
from .render import Job, check_job
from .report import Reporter
from .settings import Settings
from .sweep_workflow import SweepReport, _hosts_settings, read_slots, sweep_fetch, sweep_invocation, sweep_status
from .workflow import _preflight, _reporter, cancel


def _unreachable(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The sweep's hosts the last look could not reach (sweep_status records every host it did not reach)."""
    return {host: reason for host, reason in (manifest.get("not_reached") or {}).items()
            if str(reason).startswith("unreachable")}


def run_job(job: Job, manifest: Mapping[str, Any], run: Mapping[str, Any]) -> Job:
    """The run's own job, as `sweep` made it: its results folder as workspace, the sweep's and its own task
    arguments, queued on its host."""
    return check_job(dataclasses.replace(
        job, workspace=str(run["results"]), run_id=str(run["run_id"]), detach=True, queue=True,
        tasks=tuple(manifest.get("tasks") or job.tasks), gpus_needed=int(run.get("need_gpus") or 0),
        task_args=tuple(manifest.get("task_args") or ()) + tuple(sweeps.task_args(run.get("parameters") or {})),
        run_options=tuple(manifest.get("run_options") or ()), run_retries=int(manifest.get("run_retries") or 0)))


def replace_waiting(settings: Settings, job: Job, manifest: dict[str, Any], dropped: Sequence[str], *,
                    write: Callable[[str], None], verbosity: int = 0) -> list[str]:
    """Place the runs still queued on the `dropped` hosts again, over the other hosts' slots, and start or queue
    them there (one sweep play). Returns the run ids moved; the manifest says where each went."""
    waiting = [run for run in manifest["runs"] if run.get("host") in dropped and run.get("state") == "queued"]
    if not waiting:
        return []
    found = {host: slots for host, slots in read_slots(settings, job, write, verbosity).items()
             if host not in dropped}
    if not found:
        write(f"cannot re-place {len(waiting)} waiting run(s): no other host answers")
        return []
    try:
        plan = sweeps.place([int(run.get("need_gpus") or 0) for run in waiting], found)
    except sweeps.SweepError as error:
        write(f"cannot re-place the waiting runs of {', '.join(dropped)}: {error}")
        return []
    jobs = {run["run_id"]: run_job(job, manifest, run) for run in waiting}
    # The play's own variables are the sweep's (its tasks, fixed task arguments, retries); each run's are items.
    base = dataclasses.replace(job, run_id="", tasks=tuple(manifest.get("tasks") or job.tasks),
                               task_args=tuple(manifest.get("task_args") or ()),
                               run_options=tuple(manifest.get("run_options") or ()),
                               run_retries=int(manifest.get("run_retries") or 0))
    invocation = sweep_invocation(
        _hosts_settings(settings, sorted({placed.host for placed in plan})), base,
        [(jobs[run["run_id"]], run.get("parameters") or {}, placed) for run, placed in zip(waiting, plan)],
        f"sweep {manifest['sweep_id']} (re-placed)", verbosity=verbosity, offered=secrets.read(settings.secrets))
    reporter = _reporter(settings, SweepReport(write=write))
    assert isinstance(reporter, SweepReport)
    run_playbook(invocation, reporter)
    moved = []
    for run, placed in zip(waiting, plan):
        answer = reporter.launched.get(run["run_id"])
        if answer is None or answer.get("failed"):
            why = (answer or {}).get("msg") or (reporter.failures().get(placed.host) or ("", "not launched"))[1]
            write(f"run {run['run_id']}: could not be re-placed on {placed.host}: {why}")
            continue
        old = run["host"]
        run["moved_from"] = [*(run.get("moved_from") or []), old]
        run["host"] = placed.host
        run["state"] = "queued" if answer.get("queued") else "running"
        run["devices"] = answer.get("devices") or None
        records.start_record(_hosts_settings(settings, [placed.host]), jobs[run["run_id"]])
        write(f"run {run['run_id']}: re-placed from {old} (unreachable) on {placed.host}, {run['state']} there")
        moved.append(run["run_id"])
    sweeps.write_manifest(manifest)
    return moved


def cancel_moved_copies(settings: Settings, job: Job, manifest: dict[str, Any], reached: Sequence[str], *,
                        write: Callable[[str], None], verbosity: int = 0) -> list[tuple[str, str]]:
    """On each host that answers again, cancel the copies of the runs moved away from it. Returns (host, run id)
    of each copy cancelled."""
    done = []
    for run in manifest["runs"]:
        for host in run.get("moved_from") or []:
            if host not in reached or host in (run.get("cancelled_on") or []) or host == run.get("host"):
                continue
            lines = cancel(_hosts_settings(settings, [host]), dataclasses.replace(job, run_id=""),
                           run_id=str(run["run_id"]), reporter=Reporter(write=lambda _: None),
                           verbosity=verbosity)
            for line in lines:
                write(f"{line} (moved to {run['host']} while {host} was unreachable)")
            run["cancelled_on"] = [*(run.get("cancelled_on") or []), host]
            done.append((host, str(run["run_id"])))
    if done:
        sweeps.write_manifest(manifest)
    return done


def sweep_attach(settings: Settings, job: Job, sweep_id: str | None = None, *, replace_after: float = 60.0,
                 poll: float = 10.0, write: Callable[[str], None] = print, verbosity: int = 0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
                 ) -> dict[str, Any]:
    """Follow the sweep until every run has ended and its results are back: a line for each run whose state
    changed, its results fetched as soon as it ends, and a dropped host's waiting runs re-placed (see the module's
    docstring). Returns the manifest."""
    _preflight(settings)
    manifest = sweeps.load_manifest(job.cube_root, sweep_id)
    sweep_id = str(manifest["sweep_id"])
    shown: dict[str, str] = {}
    lost_since: dict[str, float] = {}
    while True:
        manifest = sweep_status(settings, job, sweep_id, write=write, verbosity=verbosity)
        now = clock()
        lost = _unreachable(manifest)
        for host in sorted(set(lost_since) - set(lost)):
            write(f"{host} answers again")
            del lost_since[host]
        for host in lost:
            lost_since.setdefault(host, now)
        known = {str(run["host"]) for run in manifest["runs"]} \
            | {host for run in manifest["runs"] for host in run.get("moved_from") or []}
        reached = sorted(known - set(manifest.get("not_reached") or {}))
        cancel_moved_copies(settings, job, manifest, reached, write=write, verbosity=verbosity)
        dropped = sorted(host for host, since in lost_since.items() if now - since >= replace_after)
        if dropped and replace_waiting(settings, job, manifest, dropped, write=write, verbosity=verbosity):
            continue  # look again at once: the moved runs' states on their new hosts
        sweep_fetch(settings, job, manifest, write=write, verbosity=verbosity)
        for run in manifest["runs"]:
            line = sweeps.describe(run)
            if shown.get(run["run_id"]) != line:
                shown[run["run_id"]] = line
                write(line)
        if all(_done(run) for run in manifest["runs"]):
            return manifest
        sleep(poll)


def _done(run: Mapping[str, Any]) -> bool:
    """Nothing more will change for the run: ended with its results back, never started, or gone from its host."""
    if run.get("state") in ("not started", "not on host"):
        return True
    return run.get("state") in sweeps.ENDED_STATES and bool(run.get("fetched"))
