"""The local fingerprint that lets a no-op configure skip the hosts."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from mlcube_ssh_ansible import fingerprint
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.settings import parse_settings


@pytest.fixture()
def cube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "cube"
    (root / "workspace").mkdir(parents=True)
    (root / "mlcube.yaml").write_text("name: c\n")
    (root / "workspace" / "in.txt").write_text("x")
    return root


def test_what_changes_the_fingerprint(cube: Path) -> None:
    settings = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"}})
    job = Job(str(cube), str(cube / "workspace"))
    first = fingerprint.digest(settings, job)
    (cube / "workspace" / "out.txt").write_text("fetched results do not matter")
    (cube / ".git").mkdir()
    (cube / ".git" / "HEAD").write_text("never uploaded")
    assert fingerprint.digest(settings, job) == first
    assert fingerprint.digest(dataclasses.replace(settings, platform="singularity"), job) != first
    (cube / "mlcube.yaml").write_text("name: changed\n")
    os.utime(cube / "mlcube.yaml", ns=(1, 1))
    assert fingerprint.digest(settings, job) != first


def test_remember_and_forget_per_target(cube: Path) -> None:
    settings = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"}})
    other_host = dataclasses.replace(settings, host="h2")
    job = Job(str(cube), str(cube / "workspace"))
    current = fingerprint.digest(settings, job)
    assert not fingerprint.unchanged(settings, job, current)
    fingerprint.remember(settings, job, current)
    assert fingerprint.unchanged(settings, job, current)
    assert not fingerprint.unchanged(other_host, job, fingerprint.digest(other_host, job))
    fingerprint.forget(settings, job)
    assert not fingerprint.unchanged(settings, job, current)


def test_settings_that_change_nothing_remote_stay_out(cube: Path) -> None:
    settings = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"}})
    job = Job(str(cube), str(cube / "workspace"))
    local_only = dataclasses.replace(settings, skip_unchanged=False, keep_artifacts=True, forks=3)
    assert fingerprint.digest(local_only, job) == fingerprint.digest(settings, job)
