"""Tests of the hosts unlike the controller (tests/container_hosts.py): they are what they claim to be.

The bullseye container must look like a fresh Debian 11 server (Python 3.9, `python3 -m venv` failing for
want of ensurepip, no pip) while still reaching this machine's Docker engine and the package index; the
podman host must run rootless podman and not Docker.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.container_hosts import CA_IN_CONTAINER, ContainerSshd
from tests.hosts import Sshd, SshHost, example_cube, remote, ssh_argv, user_name

pytestmark = pytest.mark.integration


def _as_user(host: SshHost, path: Path) -> None:
    """Give a file or folder made here by root (the tests) to the host's user, as if they had made it."""
    entry = pwd.getpwnam(host.user.name)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chown(item, entry.pw_uid, entry.pw_gid)


def _rsync_to(host: SshHost, source: Path, destination: str) -> subprocess.CompletedProcess[str]:
    """rsync `source` to `destination` on `host` over the same strict ssh as remote()."""
    ssh = shlex.join(ssh_argv(host)[:-1])  # without user@address, which rsync puts in the target
    return subprocess.run(["rsync", "-a", "-e", ssh, str(source), f"{host.user.name}@{host.address}:{destination}"],
                          capture_output=True, text=True, timeout=120, check=False)


# ------------------------------------------------------------------------------------------------- bullseye


def test_bullseye_host_answers_with_strict_host_keys(bullseye_host: SshHost, ssh_host: SshHost,
                                                     tmp_path: Path) -> None:
    proc = remote(bullseye_host, "sh", "-c", 'echo "$(id -un) $HOME $(cat /etc/debian_version)"')
    assert proc.returncode == 0, proc.stderr
    name, home, debian = proc.stdout.split()
    assert (name, home) == (user_name("mlcube-b1"), str(bullseye_host.user.home))
    assert debian.split(".")[0] == "11"
    # Its host key is its own: the known_hosts entry of the controller's test sshd is refused.
    wrong = tmp_path / "known_hosts"
    wrong.write_text(ssh_host.known_hosts.read_text().replace(f"[{ssh_host.address}]:{ssh_host.port}",
                                                              f"[{bullseye_host.address}]:{bullseye_host.port}"))
    refused = remote(SshHost(bullseye_host.address, bullseye_host.port, bullseye_host.user, wrong), "true")
    assert refused.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr or "verification failed" in refused.stderr


def test_bullseye_has_python_39_without_venv_or_pip(bullseye_host: SshHost) -> None:
    version = remote(bullseye_host, "python3", "-c", "import sys; print(sys.version_info[0], sys.version_info[1])")
    assert version.returncode == 0, version.stderr
    assert version.stdout.split() == ["3", "9"]
    # What the product must cope with: venv fails for want of ensurepip (and leaves a half-made venv) ...
    venv = remote(bullseye_host, "sh", "-c", 'd=$(mktemp -d) && python3 -m venv "$d/v"; s=$?; rm -rf "$d"; exit $s')
    assert venv.returncode != 0
    assert "ensurepip is not" in venv.stdout + venv.stderr
    # ... and there is no pip to install anything with.
    pip = remote(bullseye_host, "python3", "-m", "pip", "--version")
    assert pip.returncode != 0 and "No module named pip" in pip.stderr


def test_bullseye_rsync_round_trip(bullseye_host: SshHost, tmp_path: Path) -> None:
    source = tmp_path / "payload.txt"
    source.write_text("from the controller\n")
    target = f"{bullseye_host.user.home}/rsync-check.txt"
    try:
        sent = _rsync_to(bullseye_host, source, target)
        assert sent.returncode == 0, sent.stderr
        assert remote(bullseye_host, "cat", target, check=True).stdout == "from the controller\n"
        # The remote rsync is bullseye's, not this machine's.
        version = remote(bullseye_host, "rsync", "--version", check=True).stdout.splitlines()[0]
        local = subprocess.run(["rsync", "--version"], capture_output=True, text=True, check=True)
        assert version != local.stdout.splitlines()[0]
    finally:
        remote(bullseye_host, "rm", "-f", target)


def test_bullseye_user_uses_this_machines_docker_engine(bullseye_host: SshHost) -> None:
    inside = remote(bullseye_host, "docker", "info", "--format", "{{.ID}}")
    assert inside.returncode == 0, inside.stderr
    here = subprocess.run(["docker", "info", "--format", "{{.ID}}"], capture_output=True, text=True, check=True)
    assert inside.stdout.strip() == here.stdout.strip() != ""
    client = remote(bullseye_host, "docker", "version", "--format", "{{.Client.Version}}", check=True)
    assert client.stdout.startswith("20.10."), client.stdout  # bullseye's docker.io, not this machine's CLI


def test_bullseye_bind_mount_from_home_resolves(bullseye_host: SshHost, bullseye_server: ContainerSshd) -> None:
    folder = bullseye_host.user.home / "bind-check"
    folder.mkdir(exist_ok=True)
    (folder / "in.txt").write_text("written on the controller\n")
    _as_user(bullseye_host, folder)
    try:
        # `docker run -v ~/…` from inside the container is resolved by this machine's engine.
        ran = remote(bullseye_host, "sh", "-c",
                     'docker run --rm --network none --user "$(id -u):$(id -g)" -v "$HOME/bind-check:/data" '
                     f'{shlex.quote(bullseye_server.image)} sh -c "cat /data/in.txt; echo out > /data/out.txt"')
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "written on the controller\n"
        out = folder / "out.txt"
        assert out.read_text() == "out\n"
        assert out.stat().st_uid == pwd.getpwnam(bullseye_host.user.name).pw_uid
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


PIP_FROM_WHEEL = ("import runpy, sys, sysconfig; sysconfig._PIP_USE_SYSCONFIG = True; sys.path.insert(0, sys.argv[1]); "
                  "sys.argv = ['pip'] + sys.argv[2:]; runpy.run_module('pip', run_name='__main__', alter_sys=True)")
"""`python3 -c PIP_FROM_WHEEL WHEEL ARGS…` runs pip from its wheel without distutils (Python < 3.10 pip uses
distutils unless the distributor's sysconfig says otherwise, and bullseye ships distutils in python3-distutils)."""


@pytest.fixture(scope="session")  # once per worker, though its tests come interleaved with others
def pip_wheel_on_bullseye(bullseye_host: SshHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A pip wheel in the bullseye user's home; pip<24.1, the last that installs mlcube 0.0.9's omegaconf 2.1.0."""
    wheels = tmp_path_factory.mktemp("pip-wheel")
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                              "--python-version", "3.9", "--dest", str(wheels), "pip<24.1"],
                             capture_output=True, text=True, timeout=300, check=False)
    assert fetched.returncode == 0, fetched.stderr
    (wheel,) = wheels.glob("pip-*.whl")
    remote_wheel = f"{bullseye_host.user.home}/{wheel.name}"
    sent = _rsync_to(bullseye_host, wheel, remote_wheel)
    assert sent.returncode == 0, sent.stderr
    yield remote_wheel
    remote(bullseye_host, "rm", "-f", remote_wheel)


def test_bullseye_pip_needs_distutils_which_is_missing(bullseye_host: SshHost, pip_wheel_on_bullseye: str) -> None:
    # Also what the product must cope with: pip run plainly on bullseye's Python fails without python3-distutils.
    plain = remote(bullseye_host, "python3", f"{pip_wheel_on_bullseye}/pip", "--version")
    assert plain.returncode != 0
    assert "No module named 'distutils." in plain.stderr, plain.stderr


def test_bullseye_pip_reaches_the_index_with_this_machines_ca(bullseye_host: SshHost,
                                                             pip_wheel_on_bullseye: str) -> None:
    config = remote(bullseye_host, "python3", "-c", PIP_FROM_WHEEL, pip_wheel_on_bullseye, "config", "list")
    assert config.returncode == 0, config.stderr
    assert f"global.cert={CA_IN_CONTAINER!r}" in config.stdout
    downloaded = remote(bullseye_host, "sh", "-c",
                        'd=$(mktemp -d) && python3 -c "$0" "$1" download -q --no-deps -d "$d" six && ls "$d"; '
                        's=$?; rm -rf "$d"; exit $s', PIP_FROM_WHEEL, pip_wheel_on_bullseye, timeout=300)
    assert downloaded.returncode == 0, downloaded.stdout + downloaded.stderr
    assert downloaded.stdout.startswith("six-") and downloaded.stdout.strip().endswith(".whl")


# ---------------------------------------------------------------------------------------------------- podman


def test_podman_host_has_rootless_podman_and_no_docker(podman_host: SshHost) -> None:
    info = remote(podman_host, "podman", "info", "--format", "json", timeout=180)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["host"]["security"]["rootless"] is True
    groups = remote(podman_host, "id", "-Gn", check=True).stdout.split()
    assert "docker" not in groups
    docker = remote(podman_host, "docker", "info")
    assert docker.returncode != 0 and "permission denied" in docker.stderr.lower()


def test_podman_builds_from_scratch_and_outputs_belong_to_the_user(podman_host: SshHost, sshd: Sshd,
                                                                   tmp_path: Path) -> None:
    cube = example_cube(tmp_path)
    context = f"{podman_host.user.home}/podman-check"
    image = "mlcube-ssh-ansible/podman-check:1"
    try:
        assert _rsync_to(podman_host, cube / "build", context).returncode == 0
        built = remote(podman_host, "podman", "build", "-q", "-t", image, f"{context}/build", timeout=300)
        assert built.returncode == 0, built.stdout + built.stderr
        # The example cube's way to run: as the calling user's uid, writing into a folder bind-mounted from home.
        ran = remote(podman_host, "sh", "-c",
                     f'mkdir -p {context}/out && podman run --rm --user "$(id -u):$(id -g)" '
                     f'-v {context}/out:/out --entrypoint /bin/busybox {image} sh -c "echo out > /out/f"',
                     timeout=300)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        out = podman_host.user.home / "podman-check" / "out" / "f"
        assert out.read_text() == "out\n"
        assert out.stat().st_uid == pwd.getpwnam(podman_host.user.name).pw_uid
    finally:
        remote(podman_host, "podman", "rmi", "-f", image)
        remote(podman_host, "rm", "-rf", context)
