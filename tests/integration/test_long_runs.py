"""Long runs that survive the controller: detach, status, logs, attach, fetch, on a real host."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from mlcube_ssh_ansible import workflow
from mlcube_ssh_ansible.errors import HostFailure
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.report import Reporter
from tests.hosts import SshHost, example_cube

from .conftest import MLCUBE, platform_settings

pytestmark = pytest.mark.integration


class Lines(Reporter):
    """A reporter that keeps what it would print."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        super().__init__(write=self.lines.append)


def configured_cube(tmp_path: Path, ssh_host: SshHost, settings_file) -> tuple[Path, Job, object]:
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host))
    job = Job(str(cube), str(cube / "workspace"))
    workflow.configure(settings, job, reporter=Lines())
    return cube, job, settings


def wait_for_state(settings, job, want_running: bool, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        [state] = workflow.status(settings, job, reporter=Lines()).values()
        if state["running"] == want_running or time.monotonic() > deadline:
            return state
        time.sleep(1)


def test_detach_status_logs_attach(tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    cube, job, settings = configured_cube(tmp_path, ssh_host, settings_file)
    (cube / "workspace" / "seconds.txt").write_text("20")

    workflow.run(settings, Job(job.cube_root, job.workspace, tasks=("sleep",), detach=True), reporter=Lines())
    # Returned while the task still runs: the host says so, and nothing was fetched (no clock involved).
    assert not (cube / "workspace" / "slept.txt").exists()
    running = workflow.status(settings, job, reporter=Lines())
    assert running[ssh_host.address]["running"] is True and running[ssh_host.address]["rc"] is None

    logs = Lines()
    workflow.status(settings, job, logs=True, reporter=logs)
    assert "sleeping 20 s" in logs.lines

    attached = Lines()
    workflow.attach(settings, job, reporter=attached)
    assert (cube / "workspace" / "slept.txt").exists()
    assert "slept 20 s" in attached.lines
    done = workflow.status(settings, job, reporter=Lines())[ssh_host.address]
    assert done["running"] is False and done["rc"] == 0 and done["ended"] > done["started"]


def test_failed_detached_task_shows_failed_with_its_exit_code(tmp_path: Path, ssh_host: SshHost,
                                                              settings_file) -> None:
    cube, job, settings = configured_cube(tmp_path, ssh_host, settings_file)
    workflow.run(settings, Job(job.cube_root, job.workspace, tasks=("fail",), detach=True), reporter=Lines())
    state = wait_for_state(settings, job, want_running=False)
    assert state["rc"] == 3
    with pytest.raises(HostFailure) as caught:
        workflow.attach(settings, job, reporter=Lines())
    assert caught.value.exit_code == 3
    assert (cube / "workspace" / "fail_output" / "partial.txt").exists()


def test_remote_task_survives_a_killed_controller(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                  mlcube_cli) -> None:
    cube, job, settings = configured_cube(tmp_path, ssh_host, settings_file)
    (cube / "workspace" / "seconds.txt").write_text("10")
    controller = subprocess.Popen([str(MLCUBE), "run", f"--mlcube={cube}", "--platform=ssh-ansible",
                                   "--task=sleep"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert controller.stdout is not None
    for line in controller.stdout:  # wait until the remote task is really running
        if "sleeping 10 s" in line:
            break
    controller.send_signal(signal.SIGKILL)
    controller.wait(timeout=30)
    assert not (cube / "workspace" / "slept.txt").exists()

    state = wait_for_state(settings, job, want_running=False)
    assert state["rc"] == 0  # it finished on its own, nobody cancelled it
    workflow.attach(settings, job, fetch=True, follow=False, reporter=Lines())
    assert (cube / "workspace" / "slept.txt").read_text().strip() != ""
