"""`mlcube-ssh-ansible doctor` on a real host: all ok on a good one; a named host and check, and what to do,
on a bad one. Run as the console script from .venv/bin, with the venv NOT on PATH."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from mlcube_ssh_ansible.render import remote_name
from tests.hosts import SshHost, example_cube, free_port, remote

from .test_cli import SshAnsible, out, user_env
from .test_cli import ssh_ansible as ssh_ansible  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration

HOST_CHECKS = ("reachable", "host key", "remote python", "remote rsync", "remote mlcube", "remote disk",
               "remote platform")
LOCAL_CHECKS = ("ansible-core", "ansible.posix", "rsync", "ssh", "settings")


def lines_of(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return proc.stdout.splitlines()


def test_doctor_passes_on_a_good_host(tmp_path: Path, ssh_host: SshHost, settings_file,
                                      ssh_ansible: SshAnsible) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host)

    checked = ssh_ansible("doctor", f"--mlcube={cube}", "--platform=ssh-ansible")

    assert checked.returncode == 0, out(checked)
    lines = lines_of(checked)
    for name in LOCAL_CHECKS:
        assert any(line.startswith(f"ok   {name}: ") for line in lines), (name, checked.stdout)
    for name in HOST_CHECKS:
        prefix = f"ok   {ssh_host.address}: {name}: "
        assert any(line.startswith(prefix) for line in lines), (name, checked.stdout)
    assert f"ok   {ssh_host.address}: reachable: logged in as {ssh_host.user.name}" in lines
    assert any("docker info works for " + ssh_host.user.name in line for line in lines)
    assert lines[-1] == f"doctor: all {len(LOCAL_CHECKS) + len(HOST_CHECKS)} checks passed"
    assert checked.stderr == ""
    # Checks only: the cube's remote folder was not created.
    remote_dir = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}"
    assert remote(ssh_host, "test", "-e", remote_dir).returncode == 1


def test_doctor_names_the_host_on_a_closed_port(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                ssh_ansible: SshAnsible) -> None:
    cube = example_cube(tmp_path)
    port = free_port(ssh_host.address)
    settings_file(ssh_host, port=port, connect_timeout=5)

    started = time.monotonic()
    checked = ssh_ansible("doctor", f"--mlcube={cube}")
    took = time.monotonic() - started

    assert checked.returncode == 1, out(checked)
    failed = [line for line in lines_of(checked) if line.startswith("FAIL")]
    assert len(failed) == 1, out(checked)
    assert failed[0].startswith(f"FAIL {ssh_host.address}: reachable: {ssh_host.address} port {port}: ")
    assert "Connection refused" in failed[0]
    assert f"is sshd running on {ssh_host.address} port {port}?" in failed[0]
    assert checked.stderr.strip() == ("mlcube-ssh-ansible: doctor: 1 of 6 checks failed: "
                                      f"{ssh_host.address} reachable")
    assert took < 60, took


def test_doctor_says_how_to_learn_an_unknown_host_key(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                      ssh_ansible: SshAnsible) -> None:
    cube = example_cube(tmp_path)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    settings_file(ssh_host, known_hosts=str(known_hosts))

    checked = ssh_ansible("doctor", f"--mlcube={cube}")

    assert checked.returncode == 1, out(checked)
    advice = f"ssh-keyscan -p {ssh_host.port} {ssh_host.address} >> {known_hosts}"
    assert any(line.startswith(f"FAIL {ssh_host.address}: host key not known: {advice}")
               for line in lines_of(checked)), out(checked)
    assert f"{ssh_host.address} host key not known" in checked.stderr

    # Following the advice (on this test's own sshd) fixes it.
    subprocess.run(["bash", "-c", advice], check=True, env=user_env(), capture_output=True, timeout=60)
    assert ssh_ansible("doctor", f"--mlcube={cube}").returncode == 0


def test_doctor_names_a_python_without_mlcube(tmp_path: Path, ssh_host: SshHost, settings_file,
                                              ssh_ansible: SshAnsible) -> None:
    """The host's system Python has no MLCube: with interpreter.type system that is a failure, with a fix."""
    cube = example_cube(tmp_path)
    settings_file(ssh_host, interpreter={"type": "system", "python": "/usr/bin/python3"})

    checked = ssh_ansible("doctor", f"--mlcube={cube}")

    assert checked.returncode == 1, out(checked)
    [failed] = [line for line in lines_of(checked) if line.startswith("FAIL")]
    assert failed.startswith(f"FAIL {ssh_host.address}: remote mlcube: /usr/bin/python3 lacks mlcube")
    assert "pip install mlcube" in failed
    assert f"{ssh_host.address} remote mlcube" in checked.stderr
