"""The install path a user takes, with today's pip: the README's commands in a fresh virtualenv, then a cube.

(A host whose own pip is current: tests/integration/test_configure_run.py.)

mlcube 0.0.9 pins omegaconf==2.1.0, whose metadata pip >= 24.1 rejects; these tests fail when the documented
install stops working with the newest pip, breaks an existing MLCube install, or the remote side can't install
MLCube with a current pip.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.hosts import REPO_ROOT, SshHost, example_cube

from .conftest import PLAIN_PATH, user_env

pytestmark = pytest.mark.integration

README = REPO_ROOT / "README.md"
NOT_SOURCES = {".venv", ".git", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", ".ansible"}


def checkout_copy(dest: Path) -> Path:
    """This checkout's sources copied to `dest` (links kept): pip and uv build a package in its source folder
    (build/, *.egg-info), so tests on parallel workers each build from a copy of their own."""

    def ignored(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == REPO_ROOT
        return {name for name in names if name in NOT_SOURCES or name.endswith(".egg-info")
                or (top and name in {"build", "dist"})}

    shutil.copytree(REPO_ROOT, dest, symlinks=True, ignore=ignored)
    return dest


def documented_install(source: Path, after: str = "\n## Install\n") -> list[list[str]]:
    """The `pip install` commands of the README's first bash block after `after`, as argv lists, our package
    name replaced by `source`, a copy of this checkout (the package is not on PyPI)."""
    section = README.read_text().split(after, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's Install section has no bash block"
    commands = []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        argv = shlex.split(line)
        assert argv[:2] == ["pip", "install"], f"README's install block has a command that is not pip: {line}"
        commands.append([str(source) + arg[len("mlcube-ssh-ansible"):] if arg.startswith("mlcube-ssh-ansible")
                         else arg for arg in argv])
    assert 1 <= len(commands) <= 2, "the install is one command, two at most"
    return commands


def sh(argv: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900,
                          env={**user_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env_extra or {})})
    assert proc.returncode == 0, f"{shlex.join(argv)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def new_venv(path: Path, newest_pip: bool) -> Path:
    """A virtualenv made with this machine's Python (seeded with its bundled pip), pip upgraded if asked."""
    sh([sys.executable, "-m", "venv", str(path)])  # from a venv too, Python makes it from the base install
    if newest_pip:
        sh([str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    return path / "bin"


def versions(bin_dir: Path) -> dict[str, str]:
    listed = sh([str(bin_dir / "python"), "-m", "pip", "list", "--format=json"]).stdout
    return {entry["name"].lower(): entry["version"] for entry in json.loads(listed)}


def pip_major_minor(bin_dir: Path) -> tuple[int, int]:
    major, minor = versions(bin_dir)["pip"].split(".")[:2]
    return int(major), int(minor)


def run_install(bin_dir: Path, source: Path, after: str = "\n## Install\n") -> None:
    for argv in documented_install(source, after):
        sh([str(bin_dir / "python"), "-m", *argv])


def test_readme_install_works_with_the_newest_pip_and_runs_a_cube(tmp_path: Path, ssh_host: SshHost,
                                                                   settings_file) -> None:
    bin_dir = new_venv(tmp_path / "venv", newest_pip=True)
    assert pip_major_minor(bin_dir) >= (24, 1), "the newest pip must be one that rejects omegaconf 2.1.0's metadata"

    run_install(bin_dir, checkout_copy(tmp_path / "source"))

    installed = versions(bin_dir)
    assert installed["mlcube"] == "0.0.9"
    assert installed["mlcube-ssh-ansible"]
    cli = sh([str(bin_dir / "mlcube-ssh-ansible"), "--version"])
    assert "mlcube-ssh-ansible" in cli.stdout
    settings_file(ssh_host)
    cube = example_cube(tmp_path)
    env = {**user_env(), "PATH": PLAIN_PATH}
    for command in (["configure"], ["run", "--task=hello"]):
        proc = subprocess.run([str(bin_dir / "mlcube"), *command, f"--mlcube={cube}", "--platform=ssh-ansible"],
                              capture_output=True, text=True, env=env, timeout=900, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (cube / "workspace" / "greeting.txt").read_text().startswith("Hello")


def test_readme_install_keeps_an_existing_mlcube_install(tmp_path: Path) -> None:
    # MLCube as an older pip installed it, with its own pins (omegaconf 2.1.0); then today's pip adds ours.
    bin_dir = new_venv(tmp_path / "venv", newest_pip=False)
    assert pip_major_minor(bin_dir) < (24, 1), "this machine's bundled pip must still read omegaconf 2.1.0"
    sh([str(bin_dir / "python"), "-m", "pip", "install", "-q", "mlcube==0.0.9", "mlcube-docker==0.0.9"])
    sh([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    before = versions(bin_dir)
    assert before["omegaconf"] == "2.1.0"

    run_install(bin_dir, checkout_copy(tmp_path / "source"), after="**Beside an existing MLCube**")

    after = versions(bin_dir)
    changed = {name: (version, after.get(name)) for name, version in before.items() if after.get(name) != version}
    assert changed == {}, f"installing mlcube-ssh-ansible changed the existing install: {changed}"
    sh([str(bin_dir / "python"), "-c", "import mlcube_ssh_ansible.runner, mlcube_docker"])
    sh([str(bin_dir / "mlcube"), "--help"])


def test_readme_uv_command_installs_it(tmp_path: Path) -> None:
    section = README.read_text().split("**With uv**", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README has no uv command"
    argv = shlex.split(block.group(1).strip())
    assert argv[:3] == ["uv", "pip", "install"]
    source = checkout_copy(tmp_path / "source")
    argv = [str(source) + arg[len("mlcube-ssh-ansible"):] if arg.startswith("mlcube-ssh-ansible")
            else str(source / arg) if arg == "overrides.txt" else arg for arg in argv]
    tool = new_venv(tmp_path / "tool", newest_pip=False)
    sh([str(tool / "python"), "-m", "pip", "install", "-q", "uv"])
    sh([str(tool / "uv"), "venv", "-q", "-p", sys.executable, str(tmp_path / "venv")])

    sh([str(tool / "uv"), *argv[1:]], env_extra={"VIRTUAL_ENV": str(tmp_path / "venv")})

    bin_dir = tmp_path / "venv" / "bin"  # uv's venvs have no pip: ask the packages' metadata
    listed = sh([str(bin_dir / "python"), "-c", "import json, importlib.metadata as m; print(json.dumps("
                 "{d.metadata['Name'].lower(): d.version for d in m.distributions()}))"]).stdout
    installed = json.loads(listed)
    assert installed["mlcube"] == "0.0.9" and installed["omegaconf"].startswith("2.1.")
    sh([str(bin_dir / "python"), "-c", "import mlcube_ssh_ansible.runner, ansible_collections.ansible.posix"])


@pytest.fixture(scope="session")
def built_wheels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This checkout's wheel, and antlr4-python3-runtime 4.8's (omegaconf's; an sdist only, so built here, pure
    Python, as pip would): built once per test run for the Python versions below, by whichever parallel worker
    comes first (a lock in the run's temp folder, which the workers share)."""
    run_folder = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_folder = run_folder.parent  # the workers' own folders are popen-gw0, ... in it
    wheels = run_folder / "built-wheels"
    with (run_folder / "built-wheels.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not wheels.is_dir():
            building = tmp_path_factory.mktemp("wheels")
            sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(building / "wheels"),
                str(checkout_copy(building / "source")), "antlr4-python3-runtime==4.8"])
            (building / "wheels").rename(wheels)
    yield wheels


@pytest.mark.parametrize("python", ["3.9", "3.12", "3.13"])
def test_pins_allow_other_controller_pythons(tmp_path: Path, built_wheels: Path, python: str) -> None:
    """Only 3.11 runs here; resolving the wheel's dependencies for other Pythons shows no pin rules them out."""
    [wheel] = built_wheels.glob("mlcube_ssh_ansible-*.whl")
    sh([sys.executable, "-m", "pip", "download", "-q", "--python-version", python, "--only-binary=:all:",
        "--find-links", str(built_wheels), "-d", str(tmp_path / "resolved"), f"{wheel}[ansible,mlcube]"])
    resolved = {path.name.split("-")[0].lower() for path in (tmp_path / "resolved").iterdir()}
    assert {"ansible", "ansible_core", "ansible_runner", "omegaconf", "cookiecutter"} <= resolved
