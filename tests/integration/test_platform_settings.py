"""Remote platform settings from the controller (issue 11, point 5): `platform_settings` (or the inventory
variable mlcube_ssh_platform_settings per host) become the remote MLCube platform, through a system settings
file that configure writes and that configure and run point MLCUBE_SYSTEM_SETTINGS at."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest
import yaml

from mlcube_ssh_ansible.render import remote_name
from tests.hosts import SshHost, example_cube, mlcube_settings, remote

from .conftest import VENV_BIN, MlcubeCli, user_env

pytestmark = pytest.mark.integration


def ssh_ansible(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "mlcube-ssh-ansible"), *args], capture_output=True, text=True,
                          env=user_env(), timeout=900, stdin=subprocess.DEVNULL)


def both(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def own_file(host: SshHost, relative: str, text: str, mode: int) -> str:
    """A file in the host user's home, written here as root and given to the user."""
    path = host.user.home / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    entry = pwd.getpwnam(host.user.name)
    for item in (path.parent, path):
        os.chown(item, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)
    return str(path)


def test_the_docker_executable_comes_from_the_controller_for_configure_and_run(
        tmp_path: Path, ssh_host: SshHost, settings_file, mlcube_cli: MlcubeCli) -> None:
    calls = ssh_host.user.home / "engine-calls.log"
    calls.unlink(missing_ok=True)
    engine = own_file(ssh_host, "engine/logged-docker",
                      f'#!/bin/sh\necho "$*" >> {calls}\nexec docker "$@"\n', 0o755)
    own_mlcube_yaml = remote(ssh_host, "cat", f"{ssh_host.user.home}/mlcube.yaml").stdout
    cube = example_cube(tmp_path)
    settings_file(ssh_host, platform_settings={"docker": engine, "build_strategy": "always"})

    configured = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, both(configured)
    assert any(line.startswith("build ") for line in calls.read_text().splitlines()), calls.read_text()
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0 and "Hello, World!" in ran.stdout, both(ran)
    assert any(line.startswith("run ") for line in calls.read_text().splitlines()), calls.read_text()

    state = f"{ssh_host.user.home}/mlcube/.mlcube-ssh-ansible/{remote_name(str(cube))}"
    written = remote(ssh_host, "stat", "-c", "%a", f"{state}/system-settings.yaml", check=True).stdout.strip()
    assert written == "600"
    loaded = yaml.safe_load(remote(ssh_host, "cat", f"{state}/system-settings.yaml", check=True).stdout)
    assert loaded["platforms"]["docker"]["docker"] == engine
    assert loaded["runners"]["docker"] == {"pkg": "mlcube_docker"}
    # The user's own settings file on the host is none of our business.
    assert remote(ssh_host, "cat", f"{ssh_host.user.home}/mlcube.yaml").stdout == own_mlcube_yaml

    # Contacted again with nothing changed: the file is left as it is (MLCube did not rewrite it either).
    again = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible", "-Prunner.skip_unchanged=false")
    assert again.returncode == 0, both(again)
    assert "remote configure changed" not in again.stdout and "remote configure ok" in again.stdout, both(again)


def test_a_fleet_of_docker_and_podman_hosts_runs_one_cube(tmp_path: Path, ssh_host: SshHost, podman_host: SshHost,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          mlcube_cli: MlcubeCli) -> None:
    def entry(host: SshHost) -> dict[str, object]:
        return {"ansible_host": host.address, "ansible_port": host.port, "ansible_user": host.user.name,
                "ansible_ssh_private_key_file": str(host.user.identity_file)}

    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        "docker-node": entry(ssh_host),
        # The podman host's user is not in group docker: only podman can work there.
        "podman-node": {**entry(podman_host), "mlcube_ssh_platform_settings": {"docker": "podman"}},
    }}}))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ssh_host.known_hosts.read_text() + podman_host.known_hosts.read_text())
    settings = mlcube_settings(ssh_host)
    platform = settings["platforms"]["ssh-ansible"]
    for key in ("host", "port", "authentication"):
        del platform[key]
    platform.update(inventory=str(inventory), known_hosts=str(known_hosts))
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(path))
    cube = example_cube(tmp_path)

    configured = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, both(configured)
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0, both(ran)
    for node in ("docker-node", "podman-node"):
        assert (cube / "workspace" / "hosts" / node / "greeting.txt").read_text() == "Hello, World!\n"
    images = remote(podman_host, "podman", "images", "--format", "{{.Repository}}", timeout=120, check=True).stdout
    assert "mlcube-ssh-ansible/hello" in images


def test_doctor_checks_the_engine_the_platform_settings_name(tmp_path: Path, podman_host: SshHost,
                                                             settings_file, mlcube_cli: MlcubeCli) -> None:
    """The podman host's user may not use docker: doctor fails it as configure would, until podman is named."""
    cube = example_cube(tmp_path)
    settings_file(podman_host)
    checked = ssh_ansible("doctor", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert checked.returncode == 1, both(checked)
    [line] = [line for line in checked.stdout.splitlines() if line.startswith("FAIL")]
    assert line.startswith(f"FAIL {podman_host.address}: remote platform: docker info fails for "
                           f"{podman_host.user.name}: "), both(checked)
    assert "permission denied" in line.lower()
    failed = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert failed.returncode != 0, both(failed)
    said = failed.stdout + failed.stderr
    assert f"{podman_host.address} at remote configure: " in said and "permission denied" in said.lower(), both(failed)

    settings_file(podman_host, platform_settings={"docker": "podman"})
    checked = ssh_ansible("doctor", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert checked.returncode == 0, both(checked)
    assert f"ok   {podman_host.address}: remote platform: podman info works for {podman_host.user.name}" in (
        checked.stdout), both(checked)
    assert mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible").returncode == 0
