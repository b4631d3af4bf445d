"""The core path on a real host: mlcube configure, mlcube run, fetch, idempotence, failures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mlcube_ssh_ansible import workflow
from mlcube_ssh_ansible.render import Job, remote_name
from mlcube_ssh_ansible.report import Reporter
from tests.hosts import SshHost, example_cube, remote

from .conftest import MlcubeCli, platform_settings, remote_tree

pytestmark = pytest.mark.integration


def quiet_reporter() -> Reporter:
    return Reporter(write=lambda line: None)


def test_configure_run_fetch_and_idempotence(tmp_path: Path, ssh_host: SshHost, settings_file,
                                             mlcube_cli: MlcubeCli) -> None:
    cube = example_cube(tmp_path)
    settings_path = settings_file(ssh_host)

    configured = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, configured.stdout + configured.stderr
    remote_dir = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}"
    assert "mlcube.yaml" in remote(ssh_host, "ls", remote_dir, check=True).stdout

    # A second configure with nothing changed is skipped locally: the hosts are not contacted.
    state_dir = f"{ssh_host.user.home}/mlcube/.mlcube-ssh-ansible/{remote_name(str(cube))}"
    before = remote_tree(ssh_host, remote_dir) + remote_tree(ssh_host, state_dir)
    again = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert again.returncode == 0 and "nothing changed since the last configure" in again.stdout, again.stdout
    # Forced through Ansible anyway, every role reports changed=0 and no remote file is touched.
    reporter = quiet_reporter()
    settings = dataclasses.replace(platform_settings(settings_path), skip_unchanged=False)
    outcome = workflow.configure(settings, Job(str(cube), str(cube / "workspace")), reporter=reporter)
    assert outcome.stats.get("changed", {}) == {}, outcome.stats
    assert [step for step, changed, _ in reporter.hosts[ssh_host.address].steps_done if changed] == []
    assert remote_tree(ssh_host, remote_dir) + remote_tree(ssh_host, state_dir) == before
    # A local change makes the next configure contact the host and upload it.
    (cube / "build" / "hello.sh").write_text((cube / "build" / "hello.sh").read_text() + "\n# edited\n")
    changed = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert changed.returncode == 0 and "upload changed" in changed.stdout, changed.stdout

    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Hello, World!" in ran.stdout
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, World!\n"

    # An input edited locally is used by the next run, without a new configure.
    (cube / "workspace" / "name.txt").write_text("Ansible")
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, Ansible!\n"

    # Nothing changed locally since that run (its outputs were fetched): the next run skips the upload, so a
    # file put into the remote cube folder by someone else survives, where an upload would delete it ...
    stray = f"{remote_dir}/stray.txt"
    remote(ssh_host, "touch", stray, check=True)
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0 and "upload skipped, nothing changed since the last run" in ran.stdout, ran.stdout
    assert remote(ssh_host, "test", "-e", stray).returncode == 0
    # ... until a local file changes: then it uploads (mirroring the cube, so the stray file goes) ...
    (cube / "workspace" / "name.txt").write_text("again")
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0 and "upload changed" in ran.stdout, ran.stdout
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, again!\n"
    assert remote(ssh_host, "test", "-e", stray).returncode != 0
    # ... or when the remote copy is not what the last run left (here its mlcube.yaml was deleted).
    remote(ssh_host, "rm", f"{remote_dir}/mlcube.yaml", check=True)
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0 and "upload changed" in ran.stdout, ran.stdout + ran.stderr
    assert remote(ssh_host, "test", "-f", f"{remote_dir}/mlcube.yaml").returncode == 0
    # Any other upload (here a configure that contacts the host) voids the stamp: the next run uploads too.
    workflow.configure(settings, Job(str(cube), str(cube / "workspace")), reporter=quiet_reporter())
    assert remote(ssh_host, "test", "-e", f"{state_dir}/synced").returncode != 0
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0 and "upload ok" in ran.stdout, ran.stdout


def test_failing_task_exits_with_its_code_and_partial_outputs_come_back(
        tmp_path: Path, ssh_host: SshHost, settings_file, mlcube_cli: MlcubeCli) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host)
    assert mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible").returncode == 0
    (cube / "workspace" / "local-only.txt").write_text("mine")

    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=fail")

    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert (cube / "workspace" / "fail_output" / "partial.txt").read_text().startswith("partial result")
    assert (cube / "workspace" / "local-only.txt").read_text() == "mine"
    assert "failing on purpose with exit status 3" in ran.stdout  # the remote stderr is shown
    assert f"{ssh_host.address} at remote run" in ran.stdout
    assert "Traceback" not in ran.stdout + ran.stderr


def test_virtualenv_with_current_pip_still_gets_mlcube(tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    """mlcube 0.0.9 pins omegaconf 2.1.0, whose metadata pip >= 24.1 rejects: the role copes."""
    venvs = f"{ssh_host.user.home}/.venvs-newpip"
    remote(ssh_host, "rm", "-rf", venvs, check=True)
    remote(ssh_host, "/usr/bin/python3", "-m", "venv", f"{venvs}/fresh", check=True)
    remote(ssh_host, f"{venvs}/fresh/bin/python", "-m", "pip", "install", "-q", "pip>=24.1", check=True)
    pip = remote(ssh_host, f"{venvs}/fresh/bin/python", "-m", "pip", "--version", check=True).stdout
    assert int(pip.split()[1].split(".")[0]) >= 24, pip

    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host, interpreter={"location": venvs, "name": "fresh"}))
    workflow.configure(settings, Job(str(cube), str(cube / "workspace")), reporter=quiet_reporter())

    shown = remote(ssh_host, f"{venvs}/fresh/bin/python", "-m", "pip", "list", "--format=json", check=True)
    versions = {entry["name"].lower(): entry["version"] for entry in json.loads(shown.stdout)}
    assert versions["mlcube"] == "0.0.9" and versions["mlcube-docker"] == "0.0.9"
    # The requirements went in --no-deps, their dependencies with the omegaconf override; pip stayed current.
    assert versions["omegaconf"].startswith("2.1.") and versions["omegaconf"] != "2.1.0"
    assert int(versions["pip"].split(".")[0]) >= 24, "pip was downgraded"
    lines: list[str] = []
    again = dataclasses.replace(settings, skip_unchanged=False)
    workflow.configure(again, Job(str(cube), str(cube / "workspace")), reporter=Reporter(write=lines.append))
    assert any(": python env ok" in line for line in lines), lines  # nothing left to install
