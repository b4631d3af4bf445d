"""doctor reuses what the workflow and assets already do (issue 14, point 5): the same Invocation (with fresh
logins), the same password look-up, the same ansible.posix look-up."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from mlcube_ssh_ansible import assets, credentials, doctor, workflow
from mlcube_ssh_ansible.errors import EnvironmentProblem
from mlcube_ssh_ansible.execute import Invocation, Outcome
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.settings import parse_settings


def test_doctor_runs_its_playbook_as_the_workflow_builds_it(cube: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = parse_settings({"host": "h", "port": 2222, "platform": "docker", "interpreter": {"type": "system"},
                               "authentication": {"password_env": "DOCTOR_TEST_PW"}})
    monkeypatch.setenv("DOCTOR_TEST_PW", "pw")
    job = Job(str(cube), str(cube / "workspace"))
    ran: list[Invocation] = []

    def run_playbook(invocation: Invocation, handler: Any, cancel: Any = None) -> Outcome:
        ran.append(invocation)
        return Outcome(status="failed", rc=4)

    monkeypatch.setattr(doctor, "run_playbook", run_playbook)
    [check] = doctor.host_checks(settings, job, verbosity=2)
    assert not check.ok and check.name == "hosts"  # nothing ran
    expected = workflow.playbook_invocation("doctor", settings, job, verbosity=2,
                                            extra={"mlcube_ssh_doctor_upload_mb": doctor.upload_mb(job)})
    assert ran == [dataclasses.replace(expected, inventory=doctor.fresh_connections(expected.inventory))]
    assert ran[0].password == "pw" and ran[0].playbook == assets.playbook("doctor")
    assert credentials.configured(settings)


def test_one_look_up_finds_ansible_posix(monkeypatch: pytest.MonkeyPatch) -> None:
    found = assets.posix_collection()
    assert found is not None and (found / "plugins" / "modules" / "synchronize.py").is_file()
    assert doctor.check_posix().ok and str(found.parents[2]) in doctor.check_posix().detail
    monkeypatch.setattr(assets, "posix_collection", lambda: None)
    assert not doctor.check_posix().ok
    with pytest.raises(EnvironmentProblem, match="ansible.posix is missing"):
        assets.check_controller()
