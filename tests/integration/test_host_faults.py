"""Hosts in bad shape (issue 11): every failed remote step says why, and configure repairs what a failed or
interrupted attempt left (a full disk mid-upload, half-made or broken virtualenvs)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from mlcube_ssh_ansible.doctor import upload_mb
from mlcube_ssh_ansible.render import Job, remote_name
from tests.hosts import Sshd, SshHost, TestUser, example_cube, make_user, remote

from .conftest import VENV_BIN, MlcubeCli, user_env

pytestmark = pytest.mark.integration

CLI = VENV_BIN / "mlcube-ssh-ansible"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
SYSTEM_STDLIB = Path("/usr/lib/python3.11")


def both(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def ssh_ansible(*args: str) -> subprocess.CompletedProcess[str]:
    """Our own command, run as a user would (the venv not on PATH)."""
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=user_env(), timeout=900,
                          stdin=subprocess.DEVNULL)


def local_tree(root: Path) -> dict[str, str]:
    """Every local file with a digest of its content: what 'unharmed' means."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


@contextlib.contextmanager
def small_disk(host: SshHost, name: str, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted in the host user's home (root mounts it; the user owns it)."""
    entry = pwd.getpwnam(host.user.name)
    mount_point = host.user.home / name
    subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
    mount_point.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},uid={entry.pw_uid},gid={entry.pw_gid},mode=0755",
                    "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
        mount_point.rmdir()


def test_a_failed_pip_install_shows_pips_own_error_in_our_cli(tmp_path: Path, ssh_host: SshHost,
                                                               settings_file) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host, interpreter={
        "requirements": "mlcube==0.0.9 mlcube-docker==0.0.9 mlcube-ssh-ansible-no-such-package==1.0"})
    failed = ssh_ansible("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert failed.returncode == 1, both(failed)
    assert f"{ssh_host.address} at python env: " in failed.stderr, both(failed)
    assert "No matching distribution found for mlcube-ssh-ansible-no-such-package==1.0" in failed.stderr, both(failed)
    assert "non-zero return code" not in failed.stdout + failed.stderr


def test_a_full_remote_root_is_reported_as_such_and_the_next_configure_repairs_the_partial_upload(
        tmp_path: Path, ssh_host: SshHost, settings_file, mlcube_cli: MlcubeCli) -> None:
    cube = example_cube(tmp_path)
    (cube / "build" / "data.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    settings_file(ssh_host, remote_root="~/small-disk")
    before = local_tree(cube)
    with small_disk(ssh_host, "small-disk", "2m") as disk:
        # doctor predicts it: the disk check fails, naming the space there and what the upload needs.
        checked = ssh_ansible("doctor", f"--mlcube={cube}", "--platform=ssh-ansible")
        assert checked.returncode == 1, both(checked)
        [line] = [line for line in checked.stdout.splitlines() if line.startswith("FAIL")]
        needs = upload_mb(Job(str(cube), str(cube / "workspace")))
        assert needs > 3
        assert line.startswith(f"FAIL {ssh_host.address}: remote disk: {disk} has 2 MB free; the upload needs "
                               f"about {needs} MB (the upload would fail with No space left on device)"), both(checked)
        failed = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
        assert failed.returncode != 0, both(failed)
        text = failed.stdout + failed.stderr
        assert f"{ssh_host.address} at upload: " in text and "No space left on device" in text, both(failed)
        assert local_tree(cube) == before  # local files unharmed
        remote_dir = f"{disk}/{remote_name(str(cube))}"
        assert remote(ssh_host, "test", "-f", f"{remote_dir}/build/data.bin").returncode != 0  # partial indeed

        # More room (the admin grew the disk): the same configure again converges, twice over.
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        assert ssh_ansible("doctor", f"--mlcube={cube}", "--platform=ssh-ansible").returncode == 0
        again = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
        assert again.returncode == 0, both(again)
        listed = remote(ssh_host, "sha256sum", f"{remote_dir}/build/data.bin", check=True).stdout.split()[0]
        assert listed == before["build/data.bin"]
        ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
        assert ran.returncode == 0 and (cube / "workspace" / "greeting.txt").is_file(), both(ran)
        assert local_tree(cube)["build/data.bin"] == before["build/data.bin"]


# ------------------------------------------------------------------------------------- hosts without venv


def stripped_python(user: TestUser, name: str, drop: tuple[str, ...]) -> str:
    """A real Python 3.11 in the user's home whose standard library lacks `drop` (e.g. ensurepip, as on Debian
    without python3-venv; or venv too): the binary copied, the library hard-linked from /usr/lib."""
    root = user.home / name
    if root.exists():
        shutil.rmtree(root)
    (root / "bin").mkdir(parents=True)
    shutil.copy2(SYSTEM_PYTHON, root / "bin" / "python3")
    (root / "lib").mkdir()
    subprocess.run(["cp", "-al", str(SYSTEM_STDLIB), str(root / "lib")], check=True)
    for module in drop:
        shutil.rmtree(root / "lib" / SYSTEM_STDLIB.name / module)
    for path in (root, root / "bin", root / "bin" / "python3", root / "lib"):
        os.chown(path, pwd.getpwnam(user.name).pw_uid, pwd.getpwnam(user.name).pw_gid)
    python = str(root / "bin" / "python3")
    for module in drop:  # really gone for this Python
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, check=False)
        assert probe.returncode != 0 and "No module named" in probe.stderr, probe
    return python


@pytest.fixture(scope="session")  # once per worker, though its tests come interleaved with others
def bare_host(sshd: Sshd, ssh_keys: Path) -> SshHost:
    """A host whose users' Pythons (made per test) lack ensurepip or venv; its own user, so its own home."""
    return sshd.host("127.0.0.6", make_user("mlcube-bare", ssh_keys))


def venv_settings(python: str, name: str) -> dict[str, Any]:
    return {"interpreter": {"python": python, "name": name}}


def test_without_ensurepip_a_half_made_virtualenv_is_repaired_and_gets_pip_from_the_controller(
        tmp_path: Path, bare_host: SshHost, settings_file, mlcube_cli: MlcubeCli) -> None:
    python = stripped_python(bare_host.user, "py-no-ensurepip", ("ensurepip",))
    venv = f"{bare_host.user.home}/.venvs/half-made"
    remote(bare_host, "rm", "-rf", venv, check=True)
    # What a plain `python -m venv` leaves on Debian without python3-venv: a python, and no pip.
    made = remote(bare_host, python, "-m", "venv", venv)
    assert made.returncode != 0 and remote(bare_host, "test", "-x", f"{venv}/bin/python").returncode == 0
    assert remote(bare_host, f"{venv}/bin/python", "-m", "pip", "--version").returncode != 0

    cube = example_cube(tmp_path)
    settings_file(bare_host, **venv_settings(python, "half-made"))
    configured = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, both(configured)
    assert f"{bare_host.address}: python env changed" in configured.stdout
    pip = remote(bare_host, f"{venv}/bin/python", "-m", "pip", "--version", check=True).stdout
    assert pip.startswith("pip 24.0 ")
    # Repaired in place: its python works, so the folder was kept and only pip was put in.
    assert f"command = {python} -m venv {venv}\n" in remote(bare_host, "cat", f"{venv}/pyvenv.cfg", check=True).stdout
    assert remote(bare_host, "ls", venv, check=True).stdout.split() == ["bin", "include", "lib", "lib64",
                                                                         "pyvenv.cfg"]  # the wheel is gone
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0 and "Hello, World!" in ran.stdout, both(ran)


def test_without_venv_nor_virtualenv_a_virtualenv_is_made_the_built_in_way(
        tmp_path: Path, bare_host: SshHost, settings_file) -> None:
    python = stripped_python(bare_host.user, "py-no-venv", ("ensurepip", "venv"))
    venv = f"{bare_host.user.home}/.venvs/built-in"
    remote(bare_host, "rm", "-rf", venv, check=True)
    cube = example_cube(tmp_path)
    settings_file(bare_host, **venv_settings(python, "built-in"))
    # doctor predicts it: the host passes, and doctor says how configure will make the virtualenv.
    checked = ssh_ansible("doctor", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert checked.returncode == 0, both(checked)
    assert (f"ok   {bare_host.address}: remote mlcube: configure creates virtualenv {venv} with the built-in way "
            "(no venv module, no virtualenv) (Python 3.11.2), pip from the wheel the controller uploads, then "
            "mlcube==0.0.9 mlcube-docker==0.0.9") in checked.stdout.splitlines(), both(checked)
    configured = ssh_ansible("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, both(configured)
    config = remote(bare_host, "cat", f"{venv}/pyvenv.cfg", check=True).stdout
    assert "command" not in config and f"home = {Path(python).parent}" in config
    where = remote(bare_host, f"{venv}/bin/python", "-c",
                   "import sys, mlcube; print(sys.prefix); print(mlcube.__file__)", check=True).stdout.split()
    assert where[0] == venv and where[1].startswith(f"{venv}/lib/python3.")
    ran = ssh_ansible("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0 and "Hello, World!" in ran.stdout, both(ran)


def test_a_virtualenv_whose_python_went_away_is_made_again_and_runs_twice(
        tmp_path: Path, bare_host: SshHost, settings_file, mlcube_cli: MlcubeCli) -> None:
    old = stripped_python(bare_host.user, "py-old", ())
    venv = f"{bare_host.user.home}/.venvs/upgraded"
    remote(bare_host, "rm", "-rf", venv, check=True)
    remote(bare_host, old, "-m", "venv", "--without-pip", venv, check=True)
    shutil.rmtree(bare_host.user.home / "py-old")  # the OS upgrade: that Python is gone
    assert remote(bare_host, "test", "-e", f"{venv}/bin/python").returncode != 0  # a dangling link now
    cube = example_cube(tmp_path)
    settings_file(bare_host, **venv_settings(str(SYSTEM_PYTHON), "upgraded"))
    for attempt in range(2):  # the second configure is contacted for real and changes nothing
        configured = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible",
                                *(["-Prunner.skip_unchanged=false"] if attempt else []))
        assert configured.returncode == 0, both(configured)
        state = "changed" if attempt == 0 else "ok"
        assert f"{bare_host.address}: python env {state}" in configured.stdout, both(configured)
    assert remote(bare_host, "readlink", "-f", f"{venv}/bin/python", check=True).stdout.strip() == str(SYSTEM_PYTHON)
    assert "-m venv --without-pip" in remote(bare_host, "cat", f"{venv}/pyvenv.cfg", check=True).stdout
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0 and "Hello, World!" in ran.stdout, both(ran)


def test_a_folder_that_is_not_a_virtualenv_is_left_alone_with_a_one_line_reason(
        tmp_path: Path, bare_host: SshHost, settings_file) -> None:
    venv = bare_host.user.home / ".venvs" / "not-a-venv"
    remote(bare_host, "mkdir", "-p", f"{venv}/bin", check=True)
    remote(bare_host, "touch", f"{venv}/notes.txt", check=True)
    cube = example_cube(tmp_path)
    settings_file(bare_host, **venv_settings(str(SYSTEM_PYTHON), "not-a-venv"))
    failed = ssh_ansible("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert failed.returncode == 1, both(failed)
    reason = f"{venv} exists but is not a virtualenv (no pyvenv.cfg) and it has no python: move it away"
    assert f"{bare_host.address} at python env: {reason}" in failed.stderr, both(failed)
    # doctor fails the host with the same reason.
    checked = ssh_ansible("doctor", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert checked.returncode == 1, both(checked)
    [line] = [line for line in checked.stdout.splitlines() if line.startswith("FAIL")]
    assert line.startswith(f"FAIL {bare_host.address}: remote mlcube: {reason}"), both(checked)
    assert remote(bare_host, "test", "-f", f"{venv}/notes.txt").returncode == 0


# ----------------------------------------------------------------------------------- a real Debian 11 host


def test_a_fresh_debian_bullseye_host_configures_and_runs_with_nothing_installed_by_its_admin(
        tmp_path: Path, bullseye_host: SshHost, settings_file, mlcube_cli: MlcubeCli) -> None:
    """Python 3.9, no python3-venv, no pip, no python3-distutils: what fresh Debian 11 servers look like."""
    venv = f"{bullseye_host.user.home}/.venvs/mlcube"
    remote(bullseye_host, "rm", "-rf", venv, check=True)
    cube = example_cube(tmp_path)
    settings_file(bullseye_host)
    checked = ssh_ansible("doctor", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert checked.returncode == 0, both(checked)
    assert f"configure creates virtualenv {venv} with python -m venv --without-pip (Python 3.9." in checked.stdout
    configured = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, both(configured)
    pip = remote(bullseye_host, f"{venv}/bin/python", "-m", "pip", "--version", check=True).stdout
    assert pip.startswith("pip 24.0 ") and "(python 3.9)" in pip
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0 and "Hello, World!" in ran.stdout, both(ran)
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, World!\n"
