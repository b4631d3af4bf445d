"""Issue 13: the local cube wins on upload, known_hosts paths with spaces, results deleted locally stay
deleted, a cancel that finds the run over signals nothing, Ctrl-C twice."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import pytest

from mlcube_ssh_ansible import workflow
from mlcube_ssh_ansible.render import Job, remote_name
from mlcube_ssh_ansible.report import Reporter
from tests.hosts import SshHost, example_cube, remote

from .conftest import platform_settings

pytestmark = pytest.mark.integration


def quiet() -> Reporter:
    return Reporter(write=lambda _: None)


def remote_text(host: SshHost, path: str) -> str:
    return remote(host, "cat", path, check=True).stdout


def test_the_local_cube_wins_over_a_newer_remote_copy_but_workspace_results_are_kept(
        tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    cube = example_cube(tmp_path)
    (cube / "data.txt").write_text("first\n")
    settings = platform_settings(settings_file(ssh_host, skip_unchanged=False))
    job = Job(str(cube), str(cube / "workspace"))
    workflow.configure(settings, job, reporter=quiet())
    remote_dir = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}"
    assert remote_text(ssh_host, f"{remote_dir}/data.txt") == "first\n"

    # A restored backup: older than the remote copy, yet it is what the user wants on the host.
    (cube / "data.txt").write_text("restored\n")
    an_hour_ago = time.time() - 3600
    os.utime(cube / "data.txt", (an_hour_ago, an_hour_ago))
    # A result the host wrote after the last fetch, and an older local copy of it: the host's is kept.
    remote(ssh_host, "sh", "-c", f"echo remote-new > {remote_dir}/workspace/result.txt", check=True)
    (cube / "workspace" / "result.txt").write_text("local-old\n")
    os.utime(cube / "workspace" / "result.txt", (an_hour_ago, an_hour_ago))

    workflow.configure(settings, job, reporter=quiet())

    assert remote_text(ssh_host, f"{remote_dir}/data.txt") == "restored\n"
    assert remote_text(ssh_host, f"{remote_dir}/workspace/result.txt") == "remote-new\n"
    assert remote_text(ssh_host, f"{remote_dir}/workspace/name.txt") == (cube / "workspace" / "name.txt").read_text()


def test_a_known_hosts_path_with_spaces_is_read_as_one_file(tmp_path: Path, ssh_host: SshHost,
                                                           settings_file) -> None:
    folder = tmp_path / "my keys 100%"
    folder.mkdir()
    known = folder / "known hosts"
    shutil.copy(ssh_host.known_hosts, known)
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host, known_hosts=str(known), skip_unchanged=False))
    reporter = quiet()

    workflow.configure(settings, Job(str(cube), str(cube / "workspace")), reporter=reporter)  # ssh and rsync

    assert reporter.failures() == {}
    assert [step for step, _, _ in reporter.hosts[ssh_host.address].steps_done][:3] == [
        "check", "python env", "upload"]


def test_cancelling_a_finished_run_by_id_signals_nothing(tmp_path: Path, ssh_host: SshHost,
                                                         settings_file) -> None:
    from mlcube_ssh_ansible.execute import run_playbook

    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host))
    job = Job(str(cube), str(cube / "workspace"))
    workflow.configure(settings, job, reporter=quiet())
    finished = dataclasses.replace(job, tasks=("hello",), run_id=workflow.new_run_id())
    workflow.run(settings, finished, reporter=quiet())
    run_dir = f"{ssh_host.user.home}/mlcube/.mlcube-ssh-ansible/{remote_name(str(cube))}/runs/{finished.run_id}"
    assert remote(ssh_host, "test", "-f", f"{run_dir}/rc").returncode == 0  # the run is over
    # The recorded process group id now belongs to someone else's process (pids are recycled).
    bystander = remote(ssh_host, "sh", "-c", "setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!",
                       check=True).stdout.strip()
    try:
        remote(ssh_host, "sh", "-c", f"echo {bystander} > {run_dir}/pid", check=True)

        outcome = run_playbook(workflow._invocation("cancel", settings, finished), quiet())

        assert outcome.rc == 0
        assert remote(ssh_host, "kill", "-0", bystander).returncode == 0, "the cancel signalled a stranger"
    finally:
        remote(ssh_host, "kill", "-KILL", f"-{bystander}")
