"""What a run records as uploaded: the hosts that ran it, unless a local file changed while it ran."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlcube_ssh_ansible import fingerprint, workflow
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.report import HostReport, Reporter
from mlcube_ssh_ansible.settings import parse_settings

SETTINGS = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"}})


@pytest.fixture()
def job(cube: Path) -> Job:
    return Job(str(cube), str(cube / "workspace"))


def finished(**hosts: HostReport) -> Reporter:
    reporter = Reporter(write=lambda _line: None)
    reporter.hosts.update(hosts)
    return reporter


def ran(job: Job, fetched: list[str]) -> HostReport:
    return HostReport(run_rc=0, fetched=fetched, fetch_dest=job.workspace)


def stamps_now(job: Job) -> dict[str, str]:
    return fingerprint.synced_stamps(SETTINGS, job, fingerprint.upload_digest(SETTINGS, job))


def test_outputs_fetched_by_the_run_are_part_of_what_is_synced(job: Job) -> None:
    before = fingerprint.upload_listing(job)
    Path(job.workspace, "greeting.txt").write_text("fetched")
    workflow._remember_synced(SETTINGS, job, finished(h=ran(job, ["greeting.txt"])), "s1", before)
    assert stamps_now(job) == {"h": "s1"}


def test_a_file_edited_during_the_run_is_not_taken_as_uploaded(job: Job) -> None:
    workflow._remember_synced(SETTINGS, job, finished(h=ran(job, [])), "s1", fingerprint.upload_listing(job))
    assert stamps_now(job) == {"h": "s1"}
    before = fingerprint.upload_listing(job)
    Path(job.cube_root, "mlcube.yaml").write_text("name: edited while the task ran\n")
    os.utime(Path(job.cube_root, "mlcube.yaml"), ns=(7, 7))
    workflow._remember_synced(SETTINGS, job, finished(h=ran(job, [])), "s2", before)
    assert stamps_now(job) == {}
    assert fingerprint.synced_stamps(SETTINGS, job, fingerprint.upload_digest(SETTINGS, job, listing=before)) == {}


def test_failed_and_unfinished_hosts_are_forgotten(job: Job) -> None:
    listing = fingerprint.upload_listing(job)
    workflow._remember_synced(SETTINGS, job, finished(a=ran(job, []), b=ran(job, [])), "s1", listing)
    assert stamps_now(job) == {"a": "s1", "b": "s1"}
    failed = HostReport(run_rc=3, failed_step="remote run", reason="exit 3")
    detached = HostReport()  # started, not followed: no exit code yet
    workflow._remember_synced(SETTINGS, job, finished(a=failed, b=detached, c=ran(job, [])), "s2", listing)
    assert stamps_now(job) == {"b": "s1", "c": "s2"}
