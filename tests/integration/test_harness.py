"""Tests of the test harness itself: the sshd, users, keys, known_hosts and Docker it sets up are real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SettingsFactory
from tests.hosts import DROP, Sshd, SshHost, example_cube, make_user, remote, set_password, ssh_argv, user_name

pytestmark = pytest.mark.integration


def test_key_login_with_strict_known_hosts(ssh_host: SshHost) -> None:
    proc = remote(ssh_host, "id", "-un")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == user_name("mlcube-t1")


def test_arguments_are_quoted_for_the_remote_shell(ssh_host: SshHost) -> None:
    proc = remote(ssh_host, "printf", "%s|", "two words", "$HOME", "a;b")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "two words|$HOME|a;b|"


def test_user_can_use_docker(ssh_host: SshHost) -> None:
    proc = remote(ssh_host, "docker", "info", "--format", "{{.ServerVersion}}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_fleet_hosts_are_distinct(fleet: list[SshHost]) -> None:
    seen = {(host.address, remote(host, "sh", "-c", 'echo "$(id -un) $HOME"', check=True).stdout.strip())
            for host in fleet}
    names = [user_name(f"mlcube-f{i}") for i in range(1, 5)]
    assert seen == {(f"127.0.0.{i + 2}", f"{name} /home/{name}") for i, name in enumerate(names)}


def test_wrong_host_key_fails_verification(ssh_host: SshHost, tmp_path: Path) -> None:
    wrong_key = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True)
    known_hosts = tmp_path / "known_hosts"
    key_type, key = wrong_key.with_name("other_host_key.pub").read_text().split()[:2]
    known_hosts.write_text(f"[{ssh_host.address}]:{ssh_host.port} {key_type} {key}\n")
    wrong = SshHost(ssh_host.address, ssh_host.port, ssh_host.user, known_hosts)

    proc = remote(wrong, "true")

    assert proc.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr or "verification failed" in proc.stderr


def test_password_login(sshd: Sshd, ssh_keys: Path) -> None:
    user = make_user("mlcube-t2", ssh_keys)
    set_password(user, "harness-pw-1")
    host = sshd.host("127.0.0.6", user)
    argv = ssh_argv(host)
    # Keep the known_hosts check, but log in with the password only.
    argv[argv.index("BatchMode=yes")] = "BatchMode=no"
    argv[-1:-1] = ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]
    proc = subprocess.run(["sshpass", "-p", "harness-pw-1", *argv, "id -un"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == user_name("mlcube-t2")


def test_example_cube_has_static_busybox(tmp_path: Path) -> None:
    cube = example_cube(tmp_path)
    assert (cube / "mlcube.yaml").is_file()
    assert (cube / "build" / "busybox").stat().st_mode & 0o111
    assert (cube / "workspace" / "name.txt").read_text().strip() == "World"


def test_settings_file_deep_merges_overrides(ssh_host: SshHost, settings_file: SettingsFactory) -> None:
    from mlcube.system_settings import SystemSettings

    path = settings_file(ssh_host, interpreter={"type": "system"}, known_hosts=DROP, extra={"a": 1})

    assert os.environ["MLCUBE_SYSTEM_SETTINGS"] == str(path)
    platform = SystemSettings().get_platform("ssh-ansible")
    assert platform.host == ssh_host.address and platform.port == ssh_host.port
    assert platform.interpreter.type == "system"
    assert platform.interpreter.location == "~/.venvs"  # merged into, not replaced
    assert "known_hosts" not in platform
    assert platform.extra.a == 1
    assert platform.authentication.identity_file == str(ssh_host.user.identity_file)
