"""Results are data (issue 14, point 3), on a real host: plays whose every task has another name give the same
outcome. The shim reads what the plays return (result kinds, facts), so renaming tasks changes no exit code,
no failure reason, no fetched file, no run record and no status."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcube_ssh_ansible import assets, doctor, workflow
from mlcube_ssh_ansible.errors import HostFailure
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.report import Reporter
from tests.hosts import SshHost, example_cube
from tests.unit.test_results_contract import tasks_in

from .conftest import platform_settings

pytestmark = pytest.mark.integration


class Seen(Reporter):
    """Keeps the lines it would print and the names of the tasks it saw."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.task_names: set[str] = set()
        super().__init__(write=self.lines.append)

    def __call__(self, event: dict[str, Any]) -> bool:
        name = (event.get("event_data") or {}).get("task")
        if name and event.get("event", "").startswith("runner_on_"):
            self.task_names.add(str(name))
        return super().__call__(event)


def renamed_collection(dest: Path) -> tuple[Path, int]:
    """A copy of the collection mlcube.ssh (links resolved) whose playbooks and roles name every task
    `renamed N`, in a folder that can stand for the package (dest/ansible_collections/mlcube/ssh)."""
    target = dest / "ansible_collections" / "mlcube" / "ssh"
    shutil.copytree(assets.collection_dir(), target)
    count = 0
    for path in sorted([*target.glob("playbooks/*.yml"), *target.glob("roles/*/tasks/*.yml")]):
        content = yaml.safe_load(path.read_text())
        for task in tasks_in(content):
            task["name"] = f"renamed {count}"
            count += 1
        path.write_text(yaml.safe_dump(content, sort_keys=False, width=10000))
    return dest, count


def test_a_failed_run_through_renamed_tasks_has_the_same_outcome(tmp_path: Path, ssh_host: SshHost,
                                                                 settings_file: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host))
    job = Job(str(cube), str(cube / "workspace"))
    package, renamed = renamed_collection(tmp_path / "renamed")
    monkeypatch.setattr(assets, "_PACKAGE", package)
    assert assets.playbook("run").is_relative_to(package)
    host = ssh_host.address

    workflow.configure(settings, job, reporter=Seen())
    ran = Seen()
    with pytest.raises(HostFailure) as caught:
        workflow.run(settings, dataclasses.replace(job, tasks=("fail",)), reporter=ran)

    assert caught.value.exit_code == 3  # the remote task's own
    assert caught.value.failures == {host: ("remote run", f"mlcube run failed on {host} with exit code 3")}
    assert (cube / "workspace" / "fail_output" / "partial.txt").is_file()  # fetched although the task failed
    steps = [match[1] for line in ran.lines if (match := re.match(rf"^{re.escape(host)}: (\w[\w ]*?) \w+ \(", line))]
    assert steps == ["upload", "remote run", "fetch"], ran.lines  # the verdict after the fetch opens no line
    assert any(line.startswith(f"{host}: fetch ") and ", 1 files)" in line for line in ran.lines), ran.lines
    [record_file] = (cube / "workspace" / ".mlcube-ssh-ansible" / "runs").glob("*.json")
    record = json.loads(record_file.read_text())["hosts"][host]
    assert record["exit_code"] == 3 and record["failed_step"] == "remote run"
    assert [output["path"] for output in record["outputs"]] == ["fail_output/partial.txt"]

    status = Seen()
    state = workflow.status(settings, job, reporter=status)[host]
    assert state["running"] is False and state["rc"] == 3

    # The copy ran, not the original (Ansible names the argument checks that it adds to each role itself).
    seen = {name for name in ran.task_names | status.task_names if not name.startswith("Validating arguments")}
    assert seen and all(name.startswith("renamed ") for name in seen), seen
    assert renamed > 40


def test_doctor_through_renamed_tasks_names_the_same_failed_check(tmp_path: Path, ssh_host: SshHost,
                                                                    settings_file: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The doctor role fails a host itself when a check failed: known from the checks, not the task's name."""
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host, interpreter={"type": "system", "python": "/usr/bin/python3"}))
    job = Job(str(cube), str(cube / "workspace"))
    monkeypatch.setattr(assets, "_PACKAGE", renamed_collection(tmp_path / "renamed")[0])

    checks = doctor.host_checks(settings, job)

    assert [check.name for check in checks if not check.ok] == ["remote mlcube"], [c.line() for c in checks]
    assert "/usr/bin/python3 lacks mlcube" in next(check.detail for check in checks if not check.ok)
