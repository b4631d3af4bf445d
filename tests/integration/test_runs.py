"""Many runs of one cube on one host (issue 15, part 1): each in its own workspace, cancel, the run list."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mlcube_ssh_ansible import records, workflow
from mlcube_ssh_ansible.errors import HostFailure
from mlcube_ssh_ansible.render import Job, remote_name
from mlcube_ssh_ansible.report import Reporter
from mlcube_ssh_ansible.settings import Settings
from mlcube_ssh_ansible.state import State
from tests.hosts import SshHost, example_cube

from .conftest import VENV_BIN, platform_settings, user_env

pytestmark = pytest.mark.integration

CLI = VENV_BIN / "mlcube-ssh-ansible"


def silent() -> Reporter:
    lines: list[str] = []
    return Reporter(write=lines.append)


@pytest.fixture
def cleanup() -> Any:
    """Whatever a failed test left running is stopped: (settings, job) pairs to cancel every run of."""
    started: list[tuple[Settings, Job]] = []
    yield started
    for settings, job in started:
        workflow.cancel(settings, job, reporter=silent())


def configured(tmp_path: Path, ssh_host: SshHost, settings_file: Any, seconds: int) -> tuple[Path, Job, Settings]:
    cube = example_cube(tmp_path)
    (cube / "workspace" / "seconds.txt").write_text(str(seconds))
    settings = platform_settings(settings_file(ssh_host))
    job = Job(str(cube), str(cube / "workspace"))
    workflow.configure(settings, job, reporter=silent())
    return cube, job, settings


def detach(settings: Settings, job: Job, workspace: Path | None = None) -> str:
    started = Job(job.cube_root, str(workspace or job.workspace), tasks=("sleep",), detach=True,
                  run_id=workflow.new_run_id())
    workflow.run(settings, started, reporter=silent())
    return started.run_id


def runs_on(settings: Settings, job: Job, host: SshHost) -> list[dict[str, Any]]:
    """The host's run list, newest first."""
    runs: list[dict[str, Any]] = workflow.status(settings, job, reporter=silent())[host.address]["runs"]
    return runs


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=user_env(), timeout=300,
                          stdin=subprocess.DEVNULL)


def our_containers(below: str) -> list[str]:
    """Running containers that bind-mount `below` (a remote workspace) or something in it."""
    ids = subprocess.run(["docker", "ps", "-q", "--no-trunc"], capture_output=True, text=True,
                         check=True).stdout.split()
    if not ids:
        return []
    inspected = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                                          check=True).stdout)
    return [item["Id"] for item in inspected
            if any(str(mount.get("Source") or "") == below or str(mount.get("Source") or "").startswith(below + "/")
                   for mount in item.get("Mounts") or [])]


def wait_for(check: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_second_run_in_its_own_workspace_runs_beside_the_first(tmp_path: Path, ssh_host: SshHost,
                                                               settings_file: Any, cleanup: Any) -> None:
    """Gap 1: a second run of the cube on the host, with another --workspace, is not refused; it shares the
    cube's inputs by hard links, and each run's results come back to its own workspace, as its record says."""
    cube, job, settings = configured(tmp_path, ssh_host, settings_file, seconds=600)
    cleanup.append((settings, job))
    first = detach(settings, job)
    other = tmp_path / "other-workspace"
    other.mkdir()
    # Refused before: "busy: run ... is still running on this host".
    second = Job(job.cube_root, str(other), tasks=("hello",), run_id=workflow.new_run_id())
    workflow.run(settings, second, reporter=silent())
    assert (other / "greeting.txt").read_text() == "Hello, World!\n"

    runs = runs_on(settings, job, ssh_host)
    assert [run["run_id"] for run in runs] == sorted([first, second.run_id], reverse=True)
    # The first run is still going on after the second one ended: they ran at once (no clock involved).
    assert {run["run_id"]: run["state"] for run in runs} == {first: "running", second.run_id: "succeeded"}
    workspaces = {run["run_id"]: run["workspace"] for run in runs}

    # The input the second run read is the cube's, linked, not copied.
    state_dir = Path(ssh_host.user.home, "mlcube", ".mlcube-ssh-ansible", remote_name(str(cube)))
    shared = Path(ssh_host.user.home, "mlcube", remote_name(str(cube)), "workspace", "name.txt")
    linked = Path(workspaces[second.run_id], "name.txt")
    assert Path(workspaces[second.run_id]).parent == state_dir / "workspaces"
    assert Path(workspaces[first]) == shared.parent
    assert os.stat(linked).st_ino == os.stat(shared).st_ino

    workflow.cancel(settings, job, run_id=first, reporter=silent())
    workflow.attach(settings, job, run_id=first, follow=False, reporter=silent())
    first_record = records.load_record(job.workspace, first)
    second_record = records.load_record(str(other), second.run_id)
    assert first_record["hosts"][ssh_host.address]["results"] == str(cube / "workspace")
    assert second_record["hosts"][ssh_host.address]["results"] == str(other)
    assert "greeting.txt" in {output["path"] for output in second_record["hosts"][ssh_host.address]["outputs"]}
    assert not (cube / "workspace" / "greeting.txt").exists()  # each run's results in its own place


def test_cancel_stops_one_run_and_its_containers_then_all(tmp_path: Path, ssh_host: SshHost,
                                                          settings_file: Any, cleanup: Any) -> None:
    """Gap 2: `cancel --run ID` stops that run's task and container and leaves the other run alone;
    `cancel --all` stops the rest; each says per host what it did."""
    cube, job, settings = configured(tmp_path, ssh_host, settings_file, seconds=600)
    cleanup.append((settings, job))
    first = detach(settings, job)
    other = tmp_path / "other-workspace"
    other.mkdir()
    second = detach(settings, job, other)
    workspaces = {run["run_id"]: run["workspace"] for run in runs_on(settings, job, ssh_host)}
    wait_for(lambda: our_containers(workspaces[first]) and our_containers(workspaces[second]),
             "both runs' containers")
    second_container = our_containers(workspaces[second])

    one = cli("cancel", f"--mlcube={cube}", "--run", first)
    assert one.returncode == 0, one.stderr
    assert f"{ssh_host.address}: run {first} stopped with 1 container(s)" in one.stdout
    assert our_containers(workspaces[first]) == []
    assert our_containers(workspaces[second]) == second_container
    states = {run["run_id"]: run["state"] for run in runs_on(settings, job, ssh_host)}
    assert states == {first: "cancelled", second: "running"}

    every = cli("cancel", f"--mlcube={cube}", "--all")
    assert every.returncode == 0, every.stderr
    assert f"{ssh_host.address}: run {second} stopped with 1 container(s)" in every.stdout
    assert first not in every.stdout  # it had ended: nothing to say about it
    assert our_containers(workspaces[second]) == []
    assert [run["state"] for run in runs_on(settings, job, ssh_host)] == ["cancelled", "cancelled"]

    again = cli("cancel", f"--mlcube={cube}", "--all")
    assert again.returncode == 0, again.stderr
    assert f"{ssh_host.address}: no run of this cube is running" in again.stdout


def test_status_without_run_never_picks_a_refused_run(tmp_path: Path, ssh_host: SshHost,
                                                      settings_file: Any, cleanup: Any) -> None:
    """Gap 3: a run into a busy workspace is refused; `status` (and `logs`) without --run then show the run
    that is running, not the refused one."""
    cube, job, settings = configured(tmp_path, ssh_host, settings_file, seconds=600)
    cleanup.append((settings, job))
    first = detach(settings, job)
    with pytest.raises(HostFailure) as refused:
        detach(settings, job)
    assert "busy" in str(refused.value) and first in str(refused.value) and "--workspace" in str(refused.value)

    shown = cli("status", f"--mlcube={cube}")
    assert shown.returncode == 0, shown.stderr
    assert "no such run" not in shown.stdout + shown.stderr
    lines = [line for line in shown.stdout.splitlines() if line.startswith(f"{ssh_host.address}: ")]
    assert len(lines) == 1 and lines[0].startswith(f"{ssh_host.address}: {first} running")
    assert State(settings, job).latest_run_id() == first

    logs = wait_for(lambda: (shown := cli("logs", f"--mlcube={cube}")).returncode == 0
                    and "sleeping 600 s" in shown.stdout and shown, "the running run's output")
    assert "no such run" not in logs.stdout + logs.stderr

    stopped = cli("cancel", f"--mlcube={cube}", "--run", first)
    assert stopped.returncode == 0, stopped.stderr
    assert [run["state"] for run in runs_on(settings, job, ssh_host)] == ["cancelled"]
