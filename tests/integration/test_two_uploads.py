"""The upload is one task: the cube's rsync (--delete, the local copy wins) and the workspace's (--update, never
deletes) run at the same time, the second in a fork of the worker (mlcube.ssh.synchronize's `also`). Each keeps
its rules; a failure of either fails the task with its reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mlcube_ssh_ansible import assets, workflow
from mlcube_ssh_ansible.errors import HostFailure
from mlcube_ssh_ansible.render import Job, remote_name
from mlcube_ssh_ansible.report import Reporter
from tests.hosts import SshHost, example_cube, remote

from .conftest import VENV_BIN, platform_settings, render_cube, user_env
from .test_hardening import remote_text

pytestmark = pytest.mark.integration

UPLOAD = "Upload the cube and the workspace at once"


class UploadResults(Reporter):
    """A quiet reporter that keeps every final result of the upload role's tasks: (event, task, result)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.uploads: list[tuple[str, str, dict[str, Any]]] = []
        super().__init__(write=self.lines.append)

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        if str(event.get("event")).startswith("runner_on_") and str(data.get("role", "")).endswith("upload") \
                and event.get("event") != "runner_on_start":
            self.uploads.append((str(event["event"]), str(data.get("task")), dict(data.get("res") or {})))
        return super().__call__(event)


def test_the_cube_and_the_workspace_go_up_in_one_task_each_with_its_own_rules(
        tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    cube = example_cube(tmp_path)
    (cube / "old.txt").write_text("old\n")
    settings = platform_settings(settings_file(ssh_host, skip_unchanged=False))
    job = Job(str(cube), str(cube / "workspace"))
    workflow.configure(settings, job, reporter=UploadResults())
    remote_dir = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}"
    assert remote_text(ssh_host, f"{remote_dir}/old.txt") == "old\n"

    (cube / "old.txt").unlink()  # gone from the cube: the cube's transfer deletes it on the host
    (cube / "new.txt").write_text("new\n")
    # A result the host wrote after the last fetch, and an older local copy: the workspace's transfer keeps it.
    remote(ssh_host, "sh", "-c", f"echo remote-new > {remote_dir}/workspace/result.txt", check=True)
    (cube / "workspace" / "result.txt").write_text("local-old\n")
    an_hour_ago = time.time() - 3600
    os.utime(cube / "workspace" / "result.txt", (an_hour_ago, an_hour_ago))
    (cube / "workspace" / "input.csv").write_text("1,2\n")
    reporter = UploadResults()

    workflow.configure(settings, job, reporter=reporter)

    assert remote(ssh_host, "test", "-e", f"{remote_dir}/old.txt").returncode == 1
    assert remote_text(ssh_host, f"{remote_dir}/new.txt") == "new\n"
    assert remote_text(ssh_host, f"{remote_dir}/workspace/result.txt") == "remote-new\n"
    assert remote_text(ssh_host, f"{remote_dir}/workspace/input.csv") == "1,2\n"
    [(event, task, result)] = reporter.uploads  # one task: both transfers
    assert (event, task) == ("runner_on_ok", UPLOAD), reporter.uploads
    cube_part, workspace_part = result["transfers"]
    assert "--delete" in cube_part["cmd"] and "--update" not in cube_part["cmd"], cube_part["cmd"]
    assert "--update" in workspace_part["cmd"] and "--delete" not in workspace_part["cmd"], workspace_part["cmd"]
    assert "*deleting   old.txt" in cube_part["stdout_lines"] and any(
        line.endswith(" new.txt") for line in cube_part["stdout_lines"]), cube_part["stdout_lines"]
    assert any(line.endswith(" workspace/input.csv") for line in workspace_part["stdout_lines"]), workspace_part
    assert not any("result.txt" in line for line in result["stdout_lines"]), result["stdout_lines"]
    assert result["stdout_lines"] == cube_part["stdout_lines"] + workspace_part["stdout_lines"]
    assert result["changed"] is True

    # Without a local workspace there is only the cube's transfer, still the one task.
    shutil.rmtree(cube / "workspace")
    alone = UploadResults()
    workflow.configure(settings, job, reporter=alone)
    [(event, task, result)] = alone.uploads
    assert (event, task) == ("runner_on_ok", UPLOAD) and "transfers" not in result, alone.uploads
    assert remote_text(ssh_host, f"{remote_dir}/workspace/input.csv") == "1,2\n"  # never deleted there


def test_a_failed_workspace_transfer_fails_the_upload_with_its_reason(
        tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host, skip_unchanged=False))
    job = Job(str(cube), str(cube / "workspace"))
    workflow.configure(settings, job, reporter=UploadResults())
    remote_dir = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}"
    # A folder of the remote workspace that its user cannot write (nor change: it is root's).
    locked = Path(remote_dir, "workspace", "locked")
    locked.mkdir(mode=0o755)
    try:
        (cube / "workspace" / "locked").mkdir()
        (cube / "workspace" / "locked" / "data.csv").write_text("1\n")
        (cube / "cube-file.txt").write_text("sent\n")
        reporter = UploadResults()

        with pytest.raises(HostFailure):
            workflow.configure(settings, job, reporter=reporter)

        [(event, task, result)] = reporter.uploads
        assert (event, task) == ("runner_on_failed", UPLOAD), reporter.uploads
        assert result["msg"].startswith("the workspace's upload failed: rsync"), result["msg"]
        assert "Permission denied" in result["msg"], result["msg"]
        assert [part.get("failed", False) for part in result["transfers"]] == [False, True]
        step, reason = reporter.failures()[ssh_host.address]
        assert step == "upload" and "the workspace's upload failed" in reason and "Permission denied" in reason, \
            reason
        assert remote_text(ssh_host, f"{remote_dir}/cube-file.txt") == "sent\n"  # the cube's transfer went on
    finally:
        shutil.rmtree(locked)


RENDEZVOUS = """#!/bin/sh
# The remote end of one transfer: says it started, waits (at most a minute) for the other one's start, then is
# the usual rsync. Two transfers one after the other would never meet: the first would fail.
touch "{marks}/$MARK"
i=0
until [ -e "{marks}/$OTHER" ]; do
    i=$((i + 1)); [ "$i" -gt 6000 ] && {{ echo "{marks}/$OTHER never started" >&2; exit 99; }}
    sleep 0.01
done
exec rsync "$@"
"""


def test_the_two_transfers_run_at_the_same_time(tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    """Each transfer's remote rsync waits for the other's to start: they meet only if both run at once."""
    cube = example_cube(tmp_path)
    settings_file(ssh_host)
    rendered = render_cube(cube, tmp_path / "rendered")
    home = ssh_host.user.home
    marks = home / "rendezvous"
    if marks.exists():
        shutil.rmtree(marks)
    marks.mkdir()
    script = marks / "rsync-after-the-other"
    script.write_text(RENDEZVOUS.format(marks=marks))
    script.chmod(0o755)
    shutil.chown(marks, ssh_host.user.name, ssh_host.user.name)
    playbook = tmp_path / "together.yml"
    playbook.write_text(f"""
- hosts: all
  gather_facts: false
  tasks:
    - mlcube.ssh.synchronize:
        src: "{cube}/"
        dest: "{home}/together/a/"
        rsync_path: "MARK=a OTHER=b {script}"
        use_ssh_args: true
        ssh_connection_multiplexing: true
        also:
          src: "{cube}/workspace/"
          dest: "{home}/together/b/"
          rsync_path: "MARK=b OTHER=a {script}"
          use_ssh_args: true
          ssh_connection_multiplexing: true
      register: together
    - ansible.builtin.assert:
        that: together.transfers | length == 2
""")
    remote(ssh_host, "mkdir", "-p", f"{home}/together", check=True)
    env = {**user_env(), "ANSIBLE_COLLECTIONS_PATH": assets.ansible_collections_path()}
    played = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(rendered / "inventory.yml"),
                             "-e", f"@{rendered / 'extravars.yml'}", str(playbook)], capture_output=True, text=True,
                            check=False, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert played.returncode == 0, played.stdout[-4000:] + played.stderr[-2000:]
    assert (marks / "a").exists() and (marks / "b").exists()
    assert (home / "together" / "a" / "mlcube.yaml").read_text() == (cube / "mlcube.yaml").read_text()
    assert (home / "together" / "b" / "name.txt").read_text() == (cube / "workspace" / "name.txt").read_text()
    remote(ssh_host, "rm", "-rf", f"{home}/together", str(marks))
