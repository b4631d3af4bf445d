"""Local state: everything this controller remembers between commands, behind one small API.

The workflow asks three kinds of question of the past, and each used to be answered by another module:

* configure fingerprints (``fingerprint``): did anything a configure depends on change since the last
  successful one against this target? If not, the hosts are not contacted;
* upload stamps (``fingerprint``): which hosts still hold the copy the last run left there, so their upload
  is skipped;
* run records and fetch lists (``records``, ``fetched``): what ran where and what came back, so that
  `attach`, `status`, `logs` and `fetch` find a run, and results deleted locally stay deleted.

:class:`State` holds one cube (a :class:`Job`) and one target (the :class:`Settings`); the workflow calls it
at a few fixed points of a command (before the play, after it, when it is interrupted) and nowhere else.
Writing the state is bookkeeping: a failure to write is a warning, never the command's outcome.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

from . import fetched, fingerprint, records
from .errors import SettingsError
from .render import Job
from .report import Reporter
from .settings import Settings

Warn = Callable[[str], None]


@dataclasses.dataclass
class UploadPlan:
    """What a run's upload may skip, taken before the play: the stamp this run leaves on the hosts, the
    local listing it uploads (to tell later what changed while it ran), and the hosts whose copy is current."""

    stamp: str
    listing: fingerprint.Listing
    synced: dict[str, str]
    paths: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # mlcube.ssh.paths' last answers


class State:
    """The local memory of one cube on one target (a host, or an inventory and host pattern)."""

    def __init__(self, settings: Settings, job: Job, exclude_from: str = "") -> None:
        self.settings = settings
        self.job = job
        self.exclude_from = exclude_from  # git's ignore list, part of what a configure or upload depends on
        self._configure_digest: str | None = None
        self._prune: dict[str, list[list[Any]]] = {}  # what prune_vars asked the hosts to delete

    # ------------------------------------------------------------------------------------------- configure

    def configure_skippable(self, check: bool = False) -> bool:
        """Before a configure: True when its hosts need not be contacted (skip_unchanged, not a check, and
        nothing it depends on changed since the last successful one). What it depends on is taken now, so a
        file changed while the configure goes on is seen by the next one."""
        self._configure_digest = fingerprint.digest(self.settings, self.job, self.exclude_from)
        return (self.settings.skip_unchanged and not check
                and fingerprint.unchanged(self.settings, self.job, self._configure_digest))

    def configured(self) -> None:
        """A configure succeeded: the next one with the same inputs may skip the hosts."""
        if self._configure_digest is None:
            self._configure_digest = fingerprint.digest(self.settings, self.job, self.exclude_from)
        fingerprint.remember(self.settings, self.job, self._configure_digest)

    def forget_configured(self) -> None:
        """A run failed: the next configure checks the hosts for real (one may have lost its environment)."""
        fingerprint.forget(self.settings, self.job)

    # ----------------------------------------------------------------------------------------------- upload

    def upload_plan(self) -> UploadPlan:
        """Before a run: a new stamp, and with skip_unchanged the hosts whose remote copy is current."""
        stamp = fingerprint.new_stamp()
        if not self.settings.skip_unchanged:
            return UploadPlan(stamp, {}, {})
        listing = fingerprint.upload_listing(self.job)
        current = fingerprint.upload_digest(self.settings, self.job, self.exclude_from, listing)
        return UploadPlan(stamp, listing, fingerprint.synced_stamps(self.settings, self.job, current),
                          fingerprint.known_paths(self.settings, self.job, current))

    def upload_vars(self, plan: UploadPlan) -> dict[str, Any]:
        """The play's variables for the plan (nothing without skip_unchanged)."""
        if not self.settings.skip_unchanged:
            return {}
        return {"mlcube_ssh_sync_stamp": plan.stamp, "mlcube_ssh_synced": plan.synced,
                "mlcube_ssh_known_paths": {host: paths for host, paths in plan.paths.items() if host in plan.synced}}

    def remember_synced(self, plan: UploadPlan, reporter: Reporter) -> None:
        """After a run: the hosts that ran it have the local files as they are now (outputs fetched) and the
        run's stamp. Not so when a local file changed while the run went on (it was not uploaded), nor for the
        hosts that failed: those are forgotten, so that their next run uploads in full."""
        settings, job = self.settings, self.job
        failed = set(reporter.failures())
        done = [host for host, report in reporter.hosts.items() if host not in failed and report.run_rc is not None]
        try:
            fingerprint.forget_synced(settings, job, failed)
            if not (settings.skip_unchanged and done):
                return
            after = fingerprint.upload_listing(job)
            workspace = os.path.abspath(job.workspace)
            brought = [path for host in done for path in reporter.hosts[host].fetched
                       if os.path.abspath(reporter.hosts[host].fetch_dest or "") == workspace]
            if fingerprint.changed_besides(plan.listing, after, brought):
                fingerprint.forget_synced(settings, job, done)  # edited during the run: the next run uploads
                return
            current = fingerprint.upload_digest(settings, job, self.exclude_from, after)
            fingerprint.remember_synced(settings, job, done, current, plan.stamp,
                                        {host: reporter.hosts[host].known_paths for host in done})
        except OSError as error:  # bookkeeping only: the run itself succeeded
            reporter.write(f"mlcube-ssh-ansible: warning: cannot record what was uploaded ({error}); the next run "
                           "uploads again")
            with contextlib.suppress(OSError):
                fingerprint.forget_synced(settings, job)

    def forget_all_hosts(self) -> None:
        """An interrupted run: neither the configure nor any upload is known to be complete on any host."""
        fingerprint.forget(self.settings, self.job)
        fingerprint.forget_synced(self.settings, self.job)

    # -------------------------------------------------------------------------------------------- fetched

    def prune_vars(self) -> dict[str, Any]:
        """Results fetched earlier that the user has deleted locally since: the upload deletes them on the
        hosts too (``mlcube_ssh_prune``), so they do not come back."""
        self._prune = fetched.to_prune(self.job.workspace)
        return {"mlcube_ssh_prune": self._prune} if self._prune else {}

    def remember_pruned(self, reporter: Reporter) -> None:
        """After the play: the hosts whose upload step is done deleted what prune_vars named; those files leave
        the fetch lists (a failure to write only means the next command asks those hosts again)."""
        uploaded = [host for host, report in reporter.hosts.items() if report.completed("upload")]
        if not self._prune or not uploaded:
            return
        try:
            fetched.forget_pruned(self.job.workspace, self._prune, uploaded)
        except OSError as error:
            reporter.write(f"mlcube-ssh-ansible: warning: cannot record what was deleted on the hosts ({error}); "
                           "the next command deletes it again")

    def remember_fetched(self, reporter: Reporter) -> None:
        """What each host's fetch brought (a failure only means deletions are not carried over)."""
        try:
            fetched.remember(self.job.workspace, reporter)
        except OSError as error:
            reporter.write(f"mlcube-ssh-ansible: warning: cannot record what was fetched ({error}); results "
                           "deleted locally may come back with the next fetch")

    # ---------------------------------------------------------------------------------------------- runs

    def run_output_dir(self) -> Path:
        """Where a fleet's per-host task output of this run goes."""
        return records.runs_dir(self.job.workspace) / str(self.job.run_id)

    def start_run(self) -> dict[str, Any]:
        """The run's record, written before any host is touched."""
        return records.start_record(self.settings, self.job)

    def finish_run(self, record: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
        """The run's record completed with every host's results (and hosts/manifest.json for a fleet)."""
        return records.finish_record(record, reporter, self.job)

    def latest_run_id(self) -> str:
        """The newest run recorded next to this workspace (run ids sort by time) that started on some host: never
        one that every host refused (a busy workspace) or that failed before its start."""
        folder = records.runs_dir(self.job.workspace)
        for path in sorted(folder.glob("*.json"), reverse=True):
            with contextlib.suppress(SettingsError):
                if records.started_somewhere(records.load_record(self.job.workspace, path.stem)):
                    return path.stem
        raise SettingsError("run", f"no run recorded in {folder} that started on a host: start one with `run`, or "
                            "name one with --run", kind="option")

    def recorded_run(self, run_id: str | None) -> tuple[State, dict[str, Any]]:
        """The state of a recorded run (default: the latest), its job with the run's id and tasks, and the
        run's record."""
        run_id = run_id or self.latest_run_id()
        record = records.load_record(self.job.workspace, run_id)
        job = dataclasses.replace(self.job, run_id=run_id, tasks=tuple(record.get("tasks") or self.job.tasks))
        return State(self.settings, job, self.exclude_from), record
