"""Security on a shared host (issue 17): another user of the same machine cannot read a user's remote files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mlcube_ssh_ansible.render import remote_name
from tests.hosts import Sshd, SshHost, example_cube, make_user, remote, user_name

from .conftest import MlcubeCli

pytestmark = pytest.mark.integration


def _mode(host: SshHost, path: str) -> str:
    return remote(host, "stat", "-c", "%a %G", path, check=True).stdout.strip()


@pytest.fixture(scope="session")  # once per worker, though its tests come interleaved with others
def peer(sshd: Sshd, ssh_keys: Path) -> SshHost:
    """Another account on the same machine (same address) as the `ssh_host` user."""
    return sshd.host("127.0.0.2", make_user("mlcube-peer", ssh_keys))


def test_another_user_of_the_host_cannot_read_remote_files(tmp_path: Path, ssh_host: SshHost, peer: SshHost,
                                                           settings_file, mlcube_cli: MlcubeCli) -> None:
    home = str(ssh_host.user.home)
    root = f"{home}/mlcube-private"
    # A remote root left world-readable by an earlier version, with a cube folder and a run log in it.
    remote(ssh_host, "rm", "-rf", root, check=True)
    remote(ssh_host, "mkdir", "-m", "755", "-p", root, check=True)
    assert _mode(ssh_host, home).startswith("755")  # the usual Debian home: others may enter it
    settings_file(ssh_host, remote_root="~/mlcube-private")
    cube = example_cube(tmp_path)
    (cube / "workspace" / "name.txt").chmod(0o644)
    for command in (["configure"], ["run", "--task=hello"]):
        ran = mlcube_cli(*command, f"--mlcube={cube}", "--platform=ssh-ansible")
        assert ran.returncode == 0, ran.stdout + ran.stderr

    cube_dir = f"{root}/{remote_name(str(cube))}"
    state = f"{root}/.mlcube-ssh-ansible"
    [run_dir] = remote(ssh_host, "sh", "-c", f"ls -d {state}/*/runs/*", check=True).stdout.split()
    venv_parent = f"{home}/.venvs"
    for folder in (root, state, f"{state}/{remote_name(str(cube))}", venv_parent):
        assert _mode(ssh_host, folder).split()[0] == "700", folder
    # Uploaded files keep their modes (a docker build bakes the build context's modes into the image, where
    # a task running as another uid must still read them): the private folders above them keep others out.
    assert _mode(ssh_host, f"{cube_dir}/workspace/name.txt").split()[0] == "644"

    for path in (f"{cube_dir}/mlcube.yaml", f"{cube_dir}/workspace/greeting.txt", f"{run_dir}/stdout.log",
                 f"{venv_parent}/mlcube/bin/python"):
        tried = remote(peer, "cat", path)
        assert tried.returncode != 0 and "Permission denied" in tried.stderr, (path, tried)
    for folder in (root, state, venv_parent):
        tried = remote(peer, "ls", folder)
        assert tried.returncode != 0 and "Permission denied" in tried.stderr, (folder, tried)

    # Fetched results get this machine's usual modes, not the remote private ones; local files keep theirs.
    umask = os.umask(0)
    os.umask(umask)
    assert (cube / "workspace" / "greeting.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (cube / "workspace" / "name.txt").stat().st_mode & 0o777 == 0o644


def test_remote_group_shares_the_folders_with_a_group(tmp_path: Path, ssh_host: SshHost, peer: SshHost,
                                                      settings_file, mlcube_cli: MlcubeCli) -> None:
    group = user_name("mlcube-lab")
    if subprocess.run(["getent", "group", group], capture_output=True).returncode != 0:
        subprocess.run(["groupadd", group], check=True)
    for user in (ssh_host.user.name, peer.user.name):
        subprocess.run(["usermod", "-aG", group, user], check=True)
    home = str(ssh_host.user.home)
    root = f"{home}/mlcube-shared"
    remote(ssh_host, "rm", "-rf", root, check=True)
    # A key file of its own: a new ssh master connection, so a login that knows the new group membership.
    key = tmp_path / "key"
    key.write_bytes(ssh_host.user.identity_file.read_bytes())
    key.chmod(0o600)
    settings_file(ssh_host, remote_root="~/mlcube-shared", remote_group=group,
                  authentication={"identity_file": str(key)})
    cube = example_cube(tmp_path)
    ran = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert ran.returncode == 0, ran.stdout + ran.stderr

    cube_dir = f"{root}/{remote_name(str(cube))}"
    for folder in (root, f"{root}/.mlcube-ssh-ansible", f"{root}/.mlcube-ssh-ansible/{remote_name(str(cube))}"):
        assert _mode(ssh_host, folder) == f"2750 {group}", folder
    assert remote(peer, "cat", f"{cube_dir}/mlcube.yaml").returncode == 0  # the group may read
    wrote = remote(peer, "touch", f"{cube_dir}/intruder")
    assert wrote.returncode != 0 and "Permission denied" in wrote.stderr  # but not write


def test_a_home_folder_as_remote_root_is_named_in_a_warning(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                            mlcube_cli: MlcubeCli) -> None:
    settings_file(ssh_host, remote_root="~")
    cube = example_cube(tmp_path)
    ran = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"warning: {ssh_host.user.home} is not private" in ran.stdout + ran.stderr
    assert _mode(ssh_host, str(ssh_host.user.home)).startswith("755")  # left as it was
    assert _mode(ssh_host, f"{ssh_host.user.home}/.mlcube-ssh-ansible").split()[0] == "700"
