"""The example cube end to end on hosts unlike the controller (issue 11): `mlcube configure` and `mlcube run`.

- A fresh Debian 11 host (tests/container_hosts.py): Python 3.9 with no venv/ensurepip, no pip, no distutils.
  The product must still make its virtualenv there, without root.
- A rootless-podman host that has no Docker: the remote MLCube's docker runner is pointed at `podman` through
  the platform setting `platform_settings`, written into the system settings file the remote `mlcube` uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcube_ssh_ansible.render import remote_name
from tests.hosts import SshHost, example_cube, remote

from .conftest import MlcubeCli

pytestmark = pytest.mark.integration


def _configure_and_run(cube: Path, mlcube_cli: MlcubeCli) -> None:
    """configure, then run the hello task; both must succeed and the greeting must come back."""
    configured = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, configured.stdout + configured.stderr
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Hello, World!" in ran.stdout
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, World!\n"


def test_virtualenv_on_fresh_bullseye(tmp_path: Path, bullseye_host: SshHost, settings_file,
                                      mlcube_cli: MlcubeCli) -> None:
    # The default virtualenv, ~/.venvs/mlcube: made here if missing. test_host_faults.py starts it from nothing
    # (the same venv, so a session pays for one install).
    cube = example_cube(tmp_path)
    venv = f"{bullseye_host.user.home}/.venvs/mlcube"
    settings_file(bullseye_host, interpreter={"type": "virtualenv", "python": "python3"})

    _configure_and_run(cube, mlcube_cli)

    # The venv is bullseye's Python 3.9 (not this machine's), and the host still has no venv module or pip.
    version = remote(bullseye_host, f"{venv}/bin/python", "-c", "import sys; print(*sys.version_info[:2])")
    assert version.stdout.split() == ["3", "9"], version.stdout + version.stderr
    assert remote(bullseye_host, "python3", "-c", "import ensurepip").returncode != 0
    # The cube's outputs on the host belong to the user (the example cube runs as --user=$(id -u):$(id -g)).
    greeting = f"{bullseye_host.user.home}/mlcube/{remote_name(str(cube))}/workspace/greeting.txt"
    owner = remote(bullseye_host, "sh", "-c", 'stat -c %u "$1"; id -u', "_", greeting, check=True).stdout.split()
    assert owner[0] == owner[1]


def test_podman_host_through_platform_settings(tmp_path: Path, podman_host: SshHost, settings_file,
                                               mlcube_cli: MlcubeCli) -> None:
    cube = example_cube(tmp_path)
    image = "mlcube-ssh-ansible/hello:0.1"  # examples/hello/mlcube.yaml
    remote(podman_host, "podman", "rmi", "-f", image)
    settings_file(podman_host, platform_settings={"docker": "podman"})

    _configure_and_run(cube, mlcube_cli)

    # podman built the image (this user cannot reach Docker at all) ...
    assert remote(podman_host, "podman", "image", "exists", image).returncode == 0
    # ... and the outputs it wrote on the host belong to the user, who can replace them.
    greeting = f"{podman_host.user.home}/mlcube/{remote_name(str(cube))}/workspace/greeting.txt"
    owner = remote(podman_host, "sh", "-c", 'stat -c %u "$1"; id -u', "_", greeting, check=True).stdout.split()
    assert owner[0] == owner[1]
    (cube / "workspace" / "name.txt").write_text("podman")
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, podman!\n"
