"""Passwords that never touch the disk, a prompt asked once per command, an interrupted fetch that leaves
no half-written file, and a short default output."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest
import yaml

from mlcube_ssh_ansible.render import remote_name
from tests.hosts import SshHost, example_cube, remote, set_password

from .conftest import MlcubeCli

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).parent / "mlcube-ssh-ansible"
PASSWORD = "s3cr3t pass-phrase"


def files_containing(text: str, folders: list[Path]) -> list[Path]:
    needle = text.encode()
    return [path for folder in folders if folder.exists() for path in folder.rglob("*")
            if path.is_file() and needle in path.read_bytes()]


def kill_processes(argument: str, program: str) -> list[int]:
    """SIGKILL this user's `program` processes whose command line has `argument`: exactly this test's ones."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == program and any(argument in arg for arg in argv):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    return killed


def test_password_from_the_environment_is_never_written(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                        mlcube_cli: MlcubeCli, monkeypatch) -> None:
    set_password(ssh_host.user, PASSWORD)
    from tests.hosts import DROP
    path = settings_file(ssh_host, authentication={"identity_file": DROP, "password_env": "CUBE_SSH_PW"},
                         keep_artifacts=True)
    monkeypatch.setenv("CUBE_SSH_PW", PASSWORD)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "tmp").mkdir()
    cube = example_cube(tmp_path)

    ran = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert list((tmp_path / "tmp").iterdir()) == []
    artifacts = list((tmp_path / "cache" / "mlcube-ssh-ansible" / "artifacts").iterdir())
    assert artifacts, "keep_artifacts kept the private data dir"
    assert f"Ansible artifacts kept in {artifacts[0]}" in ran.stdout + ran.stderr
    assert all(oct(folder.stat().st_mode)[-3:] == "700" for folder in artifacts)
    assert files_containing(PASSWORD, [*artifacts, path.parent, cube]) == []
    assert PASSWORD not in yaml.safe_dump(yaml.safe_load(path.read_text()))


def test_password_prompt_asks_once_per_command(tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    set_password(ssh_host.user, PASSWORD)
    from tests.hosts import DROP
    settings_file(ssh_host, authentication={"identity_file": DROP, "password_prompt": True},
                  skip_unchanged=False)
    cube = example_cube(tmp_path)
    env = {**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin"}

    child = pexpect.spawn(str(CLI), ["configure", f"--mlcube={cube}"], env=env, encoding="utf-8", timeout=300)
    child.expect("SSH password for ")
    child.sendline(PASSWORD)
    rest = child.read()  # to the end
    child.close()
    assert child.exitstatus == 0, rest
    assert "SSH password for" not in rest  # one prompt for the whole command, not one per step

    child = pexpect.spawn(str(CLI), ["run", f"--mlcube={cube}", "--task=hello"], env=env, encoding="utf-8",
                          timeout=300)
    child.expect("SSH password for ")
    child.sendline(PASSWORD)
    rest = child.read()
    child.close()
    assert child.exitstatus == 0, rest
    assert "Hello, World!" in rest and "SSH password for" not in rest


def test_interrupted_fetch_leaves_no_half_written_file_and_a_rerun_completes(
        tmp_path: Path, ssh_host: SshHost, settings_file, mlcube_cli: MlcubeCli) -> None:
    settings_file(ssh_host)
    cube = example_cube(tmp_path)
    assert mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible").returncode == 0
    assert mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello").returncode == 0
    remote_big = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}/workspace/big.bin"
    remote(ssh_host, "dd", "if=/dev/urandom", f"of={remote_big}", "bs=1M", "count=400", "status=none", check=True)
    local_big = cube / "workspace" / "big.bin"

    fetch = subprocess.Popen([str(CLI), "fetch", f"--mlcube={cube}"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    partial: list[Path] = []
    while time.monotonic() < deadline:  # wait until rsync is writing the file, then kill it
        partial = list((cube / "workspace").glob(".~tmp~/*")) + list((cube / "workspace").glob(".big.bin.*"))
        if partial and any(path.stat().st_size > 0 for path in partial):
            break
        time.sleep(0.01)
    assert partial, "the fetch never started writing big.bin"
    killed = kill_processes(f"{cube}/workspace", "rsync")
    output, _ = fetch.communicate(timeout=120)

    assert killed, "no rsync of this fetch was found to kill"
    assert fetch.returncode != 0, output  # the transfer really was interrupted...
    assert not local_big.exists() or local_big.stat().st_size == 400 * 2**20  # ...and left no half file
    again = subprocess.run([str(CLI), "fetch", f"--mlcube={cube}"], capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    remote_sum = remote(ssh_host, "sha256sum", remote_big, check=True).stdout.split()[0]
    assert hashlib.sha256(local_big.read_bytes()).hexdigest() == remote_sum


def test_default_output_is_short_and_says_what_happens(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                       mlcube_cli: MlcubeCli) -> None:
    settings_file(ssh_host)
    cube = example_cube(tmp_path)
    assert mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible").returncode == 0

    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")

    lines = (ran.stdout + ran.stderr).splitlines()
    assert ran.returncode == 0 and len(lines) <= 40, lines
    for step in ("upload", "remote run", "fetch"):
        assert any(line.startswith(f"{ssh_host.address}: {step} ") for line in lines), lines
    assert "Hello, World!" in lines
