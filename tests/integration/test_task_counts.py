"""The tasks each host goes through (issue 12): every task is a worker fork per host on the controller (~25-30 ms
of its CPU, ~20 ms even when skipped by `when`). Counted from ansible-runner's events on a real loopback host:
a warm `run` (nothing changed since the last run) and a `configure` that contacts the host with nothing to do."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from mlcube_ssh_ansible import workflow
from mlcube_ssh_ansible.errors import HostFailure
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.report import Reporter
from tests.hosts import SshHost, example_cube

from .conftest import platform_settings

pytestmark = pytest.mark.integration

FINAL = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")
WARM_RUN = 6  # validate the play's variables, check and work out the paths, keep them, launch, follow, fetch
CONTACTING_CONFIGURE = 8  # ... venv, its install (skipped), the upload (the cube's and the workspace's rsyncs
# at once: one task), stamp, configure


class TaskCounter(Reporter):
    """A quiet reporter that also lists the tasks each host went through (one final result per task)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.tasks: dict[str, list[str]] = collections.defaultdict(list)
        super().__init__(write=self.lines.append)

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        if event.get("event") in FINAL and data.get("host"):
            self.tasks[str(data["host"])].append(f"{event['event'][len('runner_on_'):]} {data.get('task')}")
        return super().__call__(event)


def test_a_warm_run_and_a_contacting_configure_stay_within_their_tasks(
        tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host))
    job = Job(str(cube), str(cube / "workspace"), ("hello",))
    host = ssh_host.address
    workflow.configure(settings, Job(str(cube), str(cube / "workspace")), reporter=TaskCounter())
    workflow.run(settings, job, reporter=TaskCounter())  # uploads: the configure's upload voided the stamp

    warm = TaskCounter()
    workflow.run(settings, job, reporter=warm)
    assert not warm.failures() and warm.lines.count("Hello, World!") == 1, warm.lines
    assert any("upload skipped" in line for line in warm.lines), warm.lines
    assert len(warm.tasks[host]) <= WARM_RUN, warm.tasks[host]
    assert not any(task.startswith("skipped") for task in warm.tasks[host]), warm.tasks[host]

    # A failing task still fails its host, after its results were fetched (the reporter's verdict: the play
    # leaves out the result tasks), with the task's exit code.
    failing = TaskCounter()
    with pytest.raises(HostFailure, match="exit code 3"):
        workflow.run(settings, dataclasses.replace(job, tasks=("fail",)), reporter=failing)
    assert failing.failures()[host][0] == "remote run", failing.failures()
    assert (cube / "workspace" / "fail_output" / "partial.txt").exists()
    assert len(failing.tasks[host]) <= WARM_RUN, failing.tasks[host]

    # A configure's upload voids the stamp, so this comes last.
    contacting = TaskCounter()
    workflow.configure(dataclasses.replace(settings, skip_unchanged=False), Job(str(cube), str(cube / "workspace")),
                       reporter=contacting)
    assert not contacting.failures(), contacting.lines
    assert len(contacting.tasks[host]) <= CONTACTING_CONFIGURE, contacting.tasks[host]
    assert [task for task in contacting.tasks[host] if "Upload" in task] == [
        "ok Upload the cube and the workspace at once"], contacting.tasks[host]


def test_a_run_on_a_host_where_the_cube_was_not_configured_stops_at_its_check(
        tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    """The playbook's preflight makes remote_run's check in its paths call: nothing is launched."""
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host, interpreter={"location": "~/never-configured"}))
    reporter = TaskCounter()
    with pytest.raises(HostFailure):
        workflow.run(settings, Job(str(cube), str(cube / "workspace"), ("hello",)), reporter=reporter)
    host = ssh_host.address
    assert reporter.failures()[host] == (
        "check", f"{ssh_host.user.home}/never-configured/mlcube/bin/python does not exist on {host}: "
                 "run `mlcube configure` first"), reporter.failures()
    assert reporter.tasks[host][-1].startswith("failed") and len(reporter.tasks[host]) == 2, reporter.tasks[host]
