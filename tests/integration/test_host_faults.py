"""Hosts in bad shape (issue 11): every failed remote step says why, and configure repairs what a failed or
interrupted attempt left (a full disk mid-upload, half-made or broken virtualenvs)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from mlcube_ssh_ansible.render import remote_name
from tests.hosts import SshHost, example_cube, remote

from .conftest import VENV_BIN, MlcubeCli, user_env

pytestmark = pytest.mark.integration

CLI = VENV_BIN / "mlcube-ssh-ansible"


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
        failed = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
        assert failed.returncode != 0, both(failed)
        text = failed.stdout + failed.stderr
        assert f"{ssh_host.address} at upload: " in text and "No space left on device" in text, both(failed)
        assert local_tree(cube) == before  # local files unharmed
        remote_dir = f"{disk}/{remote_name(str(cube))}"
        assert remote(ssh_host, "test", "-f", f"{remote_dir}/build/data.bin").returncode != 0  # partial indeed

        # More room (the admin grew the disk): the same configure again converges, twice over.
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        again = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
        assert again.returncode == 0, both(again)
        listed = remote(ssh_host, "sha256sum", f"{remote_dir}/build/data.bin", check=True).stdout.split()[0]
        assert listed == before["build/data.bin"]
        ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
        assert ran.returncode == 0 and (cube / "workspace" / "greeting.txt").is_file(), both(ran)
        assert local_tree(cube)["build/data.bin"] == before["build/data.bin"]
