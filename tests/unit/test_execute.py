"""ansible-runner's kept private folders: what helps a diagnosis, never the environment, and only a few.

Real ansible-runner and ansible-playbook, on a local play (no host needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcube_ssh_ansible import execute
from mlcube_ssh_ansible.execute import Invocation, run_playbook

FAILING_PLAY = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.fail: {msg: "failing on purpose for the test"}
"""
SENTINEL = "sentinel-7f3a9c-not-for-artifacts"


@pytest.fixture
def failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invocation:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("HF_TOKEN", SENTINEL)  # what a user's shell may well hold
    playbook = tmp_path / "fail.yml"
    playbook.write_text(FAILING_PLAY)
    return Invocation(playbook=playbook, inventory={"all": {"hosts": {"localhost": {}}}}, extravars={})


def all_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_a_kept_private_folder_holds_events_and_output_but_not_the_environment(
        failing: Invocation, tmp_path: Path) -> None:
    outcome = run_playbook(failing, lambda _: True)

    assert outcome.rc != 0 and outcome.artifacts
    kept = Path(outcome.artifacts)
    assert kept.is_dir() and oct(kept.stat().st_mode)[-3:] == "700"
    names = {path.name for path in all_files(kept)}
    assert "stdout" in names and any(path.parent.name == "job_events" for path in all_files(kept))
    assert "failing on purpose" in next(kept.rglob("stdout")).read_text()
    assert [path for path in all_files(kept) if SENTINEL.encode() in path.read_bytes()] == []
    # ...and nothing else of this run is left in the temporary folder.
    assert list((tmp_path / "tmp").iterdir()) == []


def test_only_the_newest_kept_folders_stay(failing: Invocation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "KEEP_ARTIFACTS", 2)
    kept = [Path(str(run_playbook(failing, lambda _: True).artifacts)) for _ in range(3)]

    assert [folder.exists() for folder in kept] == [False, True, True]
    assert sorted(kept[0].parent.iterdir()) == sorted(kept[1:])


def test_the_shims_environment_loads_the_collections_callback(tmp_path: Path) -> None:
    """The lifeline (ends ansible-playbook with its parent) comes from the package's collection mlcube.ssh:
    a name Ansible cannot load would only be a warning, so the load itself is asserted."""
    import os
    import subprocess

    from mlcube_ssh_ansible import assets

    playbook = tmp_path / "play.yml"
    playbook.write_text(FAILING_PLAY.replace("ansible.builtin.fail", "ansible.builtin.debug"))
    ran = subprocess.run([str(Path(assets.ansible_bin_dir(), "ansible-playbook")), "-i", "localhost,",
                          str(playbook), "-vvvv"], capture_output=True, text=True, check=False, cwd=tmp_path,
                         env={**os.environ, **execute.environment(True)})
    assert ran.returncode == 0, ran.stdout + ran.stderr
    loaded = [line for line in ran.stdout.splitlines() if line.startswith("Loading callback plugin mlcube.ssh.")]
    assert loaded == [f"Loading callback plugin mlcube.ssh.lifeline of type aggregate, v2.0 from "
                      f"{assets.plugins_dir() / 'callback' / 'lifeline.py'}"], ran.stdout
