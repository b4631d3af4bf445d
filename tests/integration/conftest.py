"""Helpers shared by the integration tests: run the real `mlcube` CLI, read settings, look at hosts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from mlcube_ssh_ansible.settings import Settings, parse_settings
from tests.hosts import SshHost, remote

VENV_BIN = Path(sys.executable).parent
MLCUBE = VENV_BIN / "mlcube"

MlcubeCli = Callable[..., "subprocess.CompletedProcess[str]"]


PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def user_env(path_prefix: Path | None = None) -> dict[str, str]:
    """A user's environment: this venv not activated nor on PATH, nothing that weakens host key checks,
    optionally a folder first on PATH (e.g. an ssh shim)."""
    env = {key: value for key, value in os.environ.items()
           if key != "VIRTUAL_ENV" and not key.startswith("ANSIBLE_")}
    env["PATH"] = (f"{path_prefix}{os.pathsep}" if path_prefix else "") + PLAIN_PATH
    return env


def run_mlcube(*args: str, path_prefix: Path | None = None, timeout: float = 600
               ) -> subprocess.CompletedProcess[str]:
    """Run the installed `mlcube` as a user would, from a venv that is NOT on PATH (not activated)."""
    return subprocess.run([str(MLCUBE), *args], capture_output=True, text=True, env=user_env(path_prefix),
                          timeout=timeout, stdin=subprocess.DEVNULL)


def render_cube(cube: Path, out: Path) -> Path:
    """`mlcube-ssh-ansible render` of `cube`'s `hello` task into `out` (inventory.yml, extravars.yml), as a user
    runs it, for plays run by hand."""
    made = subprocess.run([str(VENV_BIN / "mlcube-ssh-ansible"), "render", f"--mlcube={cube}", "--task=hello",
                           f"--out={out}"], capture_output=True, text=True, check=False, env=user_env(),
                          stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stdout + made.stderr
    return out


@pytest.fixture
def mlcube_cli() -> MlcubeCli:
    return run_mlcube


def platform_settings(settings_path: Path) -> Settings:
    """The validated ssh-ansible platform of a settings file, for tests that call the workflow directly."""
    section: dict[str, Any] = yaml.safe_load(settings_path.read_text())["platforms"]["ssh-ansible"]
    return parse_settings(section)


def remote_tree(host: SshHost, path: str) -> list[str]:
    """Every entry below a remote path with its size and modification time: a fingerprint of 'touched'."""
    found = remote(host, "find", path, "-printf", "%P %y %s %T@ %m\n", check=True)
    return sorted(found.stdout.splitlines())
