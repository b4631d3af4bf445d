"""Test hosts unlike the controller: a Debian bullseye machine in a container, and a rootless-podman user.

The bullseye host is what a fresh Debian 11 server looks like: Python 3.9 without `venv`/`ensurepip` and
without pip, rsync, OpenSSH, the docker CLI, CA certificates. Its image is made only from Debian packages
(`debootstrap --variant=minbase`, then `docker import`), once per machine: the image tag carries a hash of the
recipe, so a changed recipe builds a new image and an unchanged one is reused. The container runs its own sshd
on a loopback address with host networking and a host key made here; the test user's home is mounted at the
same path and the Docker socket is mounted, so `docker run -v ~/…` from inside resolves on this machine's
engine. The user inside has the uid/gid of the user on this machine and is in a group with the socket's gid.

The podman host is a user of the normal test sshd (tests/hosts.py) who runs rootless podman and is NOT in
the docker group.

Like tests/hosts.py this module has no pytest dependency, and a missing real part raises RuntimeError.
Build the image ahead of a test run with `python -m tests.container_hosts` (scripts/test.sh does).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from tests.hosts import (
    SshHost,
    TestUser,
    _accepts,
    _check_loopback,
    _require,
    _run,
    _sshd_config,
    free_port,
    keyscan,
    user_name,
)

__all__ = [
    "BULLSEYE",
    "CA_BUNDLE",
    "ContainerSshd",
    "ImageRecipe",
    "DOCKER_SOCKET",
    "ensure_image",
    "ensure_podman_user",
    "image_exists",
]

DOCKER_SOCKET: Path = Path("/var/run/docker.sock")
CA_BUNDLE: Path = Path("/etc/ssl/certs/ca-certificates.crt")
"""This machine's CA bundle: the only one that lets pip inside a container reach the package index."""
CONFIG_IN_CONTAINER = "/etc/mlcube-test"
"""Where the container sees its sshd config and host key (a read-only mount of a folder made here)."""
CA_IN_CONTAINER = "/etc/mlcube-test-ca/ca-certificates.crt"
"""Where the container sees CA_BUNDLE (read-only); the image's /etc/pip.conf points pip's `cert` here."""
BUILD_LOCK: Path = Path("/var/lock/mlcube-ssh-ansible-test-images.lock")
CONTAINER_LABEL = "mlcube-ssh-ansible.test-host"
"""Label on every test host container; its value is the pid of the process that started it."""


# ------------------------------------------------------------------------------------------------- the image


@dataclass(frozen=True)
class ImageRecipe:
    """How an image is made from Debian packages alone; its tag is a hash of every field, so edits rebuild it."""

    repository: str
    suite: str
    mirror: str
    packages: tuple[str, ...]
    files: tuple[tuple[str, str], ...] = ()
    """(path in the rootfs, content) written after debootstrap."""
    remove: tuple[str, ...] = ()
    """Globs (relative to the rootfs) deleted after debootstrap: caches, and keys no host should share."""
    variant: str = "minbase"

    @property
    def tag(self) -> str:
        recipe = json.dumps([self.suite, self.mirror, self.variant, self.packages, self.files, self.remove])
        return f"{self.repository}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


BULLSEYE = ImageRecipe(
    repository="mlcube-ssh-ansible/bullseye-host",
    suite="bullseye",
    mirror="http://deb.debian.org/debian",
    # As a fresh Debian 11 server comes: python3 (3.9) with no python3-venv and no python3-pip. docker.io is
    # bullseye's only package with the docker client (its daemon is never started: the socket is mounted).
    packages=("python3", "rsync", "openssh-server", "docker.io", "ca-certificates"),
    files=(
        ("etc/pip.conf", f"[global]\ncert = {CA_IN_CONTAINER}\n"),
        ("run/sshd/.keep", ""),
    ),
    remove=("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "etc/ssh/ssh_host_*"),
)


def image_exists(tag: str) -> bool:
    """True if the local Docker engine has an image with this tag."""
    return subprocess.run([_require("docker"), "image", "inspect", tag], capture_output=True,
                          check=False).returncode == 0


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One image build at a time on this machine: two test runs starting together must not both debootstrap."""
    BUILD_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with BUILD_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(recipe: ImageRecipe) -> None:
    """debootstrap the rootfs into a temp folder, adjust it, and `docker import` it under recipe.tag."""
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        raise RuntimeError("'debootstrap' is not installed; run `bash scripts/setup-machine.sh` as root")
    docker = _require("docker")
    with tempfile.TemporaryDirectory(prefix="mlcube-test-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run([debootstrap, f"--variant={recipe.variant}", f"--include={','.join(recipe.packages)}",
              recipe.suite, str(rootfs), recipe.mirror])
        for pattern in recipe.remove:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        for relative, content in recipe.files:
            path = rootfs / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        # tar streams the rootfs into `docker import`; the tag appears only once the import is complete.
        tar = subprocess.Popen([_require("tar"), "--numeric-owner", "-C", str(rootfs), "-c", "."],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert tar.stdout is not None
        imported = subprocess.run([docker, "import", "-", recipe.tag], stdin=tar.stdout, capture_output=True,
                                  text=True, check=False)
        tar.stdout.close()
        tar_error = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
        if tar.wait() != 0 or imported.returncode != 0:
            raise RuntimeError(f"could not import {rootfs} as {recipe.tag}: tar exit {tar.returncode} "
                               f"{tar_error.strip()}; docker import exit {imported.returncode} "
                               f"{imported.stderr.strip()}")


def ensure_image(recipe: ImageRecipe = BULLSEYE) -> float | None:
    """Build the recipe's image unless its tag exists; return the build's seconds, or None when reused."""
    if image_exists(recipe.tag):
        return None
    with _build_lock():
        if image_exists(recipe.tag):  # built by another test run while this one waited for the lock
            return None
        started = time.monotonic()
        _build(recipe)
        return time.monotonic() - started


# ------------------------------------------------------------------------------------- the container's sshd


def _docker(*argv: str) -> subprocess.CompletedProcess[str]:
    return _run([_require("docker"), *argv])


def _remove_orphans() -> None:
    """Remove test host containers whose starting process is gone (a killed test run leaves them behind)."""
    listed = _docker("ps", "-a", "--filter", f"label={CONTAINER_LABEL}",
                     "--format", f'{{{{.ID}}}} {{{{.Label "{CONTAINER_LABEL}"}}}}').stdout
    for line in listed.splitlines():
        container, _, pid = line.partition(" ")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run([_require("docker"), "rm", "-f", container], capture_output=True, check=False)


@dataclass
class ContainerSshd:
    """A container from a host image running its own sshd on `address:port` (host networking)."""

    container: str
    image: str
    address: str
    port: int
    workdir: Path
    host_public_key: str = field(repr=False)
    users: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, image: str, address: str, tmp: Path, homes: Sequence[Path] = (),
              timeout: float = 60.0) -> ContainerSshd:
        """Run `image` with sshd on `address` and a free port; return once it accepts connections.

        `homes` are mounted read-write at their own paths: the users of :meth:`host` live there.
        """
        _check_loopback(address)
        docker = _require("docker")
        for part in (DOCKER_SOCKET, CA_BUNDLE):
            if not part.exists():
                raise RuntimeError(f"{part} is missing: the container host needs it (scripts/setup-machine.sh)")
        if not image_exists(image):
            raise RuntimeError(f"image {image} is missing; build it with `python -m tests.container_hosts`")
        _remove_orphans()
        config_dir = tmp / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        host_key = config_dir / "ssh_host_ed25519_key"
        if not host_key.exists():
            _run([_require("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
                  "mlcube-ssh-ansible-test-container", "-f", str(host_key)])
        host_key.chmod(0o600)
        host_public_key = host_key.with_name(host_key.name + ".pub").read_text().split()[1]
        name = f"mlcube-test-host-{user_name('bullseye')}-{os.getpid()}"
        last_error = ""
        for attempt in range(5):
            port = free_port(address)
            (config_dir / "sshd_config").write_text(_sshd_config(
                [address], port, Path(f"{CONFIG_IN_CONTAINER}/{host_key.name}"), Path("/run/sshd.pid"),
                use_pam=False))
            container = f"{name}-{attempt}"
            subprocess.run([docker, "rm", "-f", container], capture_output=True, check=False)
            _docker("run", "-d", "--name", container, "--label", f"{CONTAINER_LABEL}={os.getpid()}",
                    "--network", "host",
                    "--volume", f"{DOCKER_SOCKET}:/var/run/docker.sock",
                    "--volume", f"{CA_BUNDLE}:{CA_IN_CONTAINER}:ro",
                    "--volume", f"{config_dir}:{CONFIG_IN_CONTAINER}:ro",
                    *[arg for home in homes for arg in ("--volume", f"{home}:{home}")],
                    image, "/usr/sbin/sshd", "-D", "-e", "-f", f"{CONFIG_IN_CONTAINER}/sshd_config")
            server = cls(container=container, image=image, address=address, port=port, workdir=tmp,
                         host_public_key=host_public_key)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and server.running() and not _accepts(address, port):
                time.sleep(0.1)
            if _accepts(address, port):
                # The engine's socket may belong to any gid here; the user reaches it through group `docker`.
                server.exec("groupmod", "-o", "-g", str(DOCKER_SOCKET.stat().st_gid), "docker")
                return server
            last_error = f"sshd in container {container} is not accepting on {address}:{port}; " \
                         f"its log:\n{server.logs()}"
            server.stop()  # most likely lost a race for the port: try another
        raise RuntimeError(f"could not start the container host from {image}: {last_error}")

    def running(self) -> bool:
        proc = subprocess.run([_require("docker"), "inspect", "-f", "{{.State.Running}}", self.container],
                              capture_output=True, text=True, check=False)
        return proc.stdout.strip() == "true"

    def logs(self, lines: int = 40) -> str:
        """The last lines of the container's output: sshd's log (-e), for a refused login."""
        proc = subprocess.run([_require("docker"), "logs", "--tail", str(lines), self.container],
                              capture_output=True, text=True, check=False)
        return (proc.stdout + proc.stderr).strip()

    def exec(self, *argv: str, user: str = "root") -> subprocess.CompletedProcess[str]:
        """Run `argv` in the container (as root by default), raising with its output on failure."""
        return _docker("exec", "--user", user, self.container, *argv)

    def stop(self) -> None:
        subprocess.run([_require("docker"), "rm", "-f", self.container], capture_output=True, check=False)

    def __enter__(self) -> ContainerSshd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_user(self, user: TestUser) -> None:
        """Create `user` inside with the uid, gid and home of the user on this machine, in group `docker`.

        Its home must be one of the `homes` given to :meth:`start`.
        """
        if user.name in self.users:
            return
        entry = pwd.getpwnam(user.name)
        group = grp.getgrgid(entry.pw_gid).gr_name
        if subprocess.run([_require("docker"), "exec", self.container, "getent", "group", group],
                          capture_output=True, check=False).returncode != 0:
            self.exec("groupadd", "-o", "-g", str(entry.pw_gid), group)
        # '*' (no password) instead of useradd's '!': sshd without PAM refuses logins to locked accounts.
        self.exec("useradd", "-o", "-u", str(entry.pw_uid), "-g", str(entry.pw_gid), "-G", "docker", "-M",
                  "-d", entry.pw_dir, "-s", "/bin/bash", "-p", "*", user.name)
        self.users.add(user.name)

    def host(self, user: TestUser) -> SshHost:
        """An SshHost for `user` on this container, with a known_hosts scanned from its sshd."""
        self.add_user(user)
        known_hosts = self.workdir / f"known_hosts_{self.address}_{self.port}"
        if not known_hosts.exists():
            known_hosts.write_text(keyscan(self.address, self.port, self.host_public_key, self.logs))
        return SshHost(address=self.address, port=self.port, user=user, known_hosts=known_hosts)



# ----------------------------------------------------------------------------------------------------- podman


def ensure_podman_user(user: TestUser) -> None:
    """Make `user` able to run rootless podman here; RuntimeError naming the missing part if it cannot be."""
    _require("podman")
    for tool in ("newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool!r} is missing; install uidmap (scripts/setup-machine.sh)")
    for table in ("/etc/subuid", "/etc/subgid"):
        text = Path(table).read_text() if Path(table).exists() else ""
        if not any(line.split(":")[0] == user.name for line in text.splitlines()):
            flag = "--add-subuids" if table.endswith("uid") else "--add-subgids"
            start = 200000 + (pwd.getpwnam(user.name).pw_uid % 1000) * 65536
            _run([_require("usermod"), flag, f"{start}-{start + 65535}", user.name])
    tun = Path("/dev/net/tun")
    if not tun.exists() or (tun.stat().st_mode & 0o006) != 0o006:
        raise RuntimeError("/dev/net/tun is missing or not usable by other users (rootless podman's network "
                           "needs it): run `bash scripts/setup-machine.sh`, which does chmod 0666")
    # Outputs written by a container running as the user's own uid must belong to the user on this machine
    # (the example cube runs as --user=$(id -u):$(id -g)); keep-id maps that uid to itself.
    entry = pwd.getpwnam(user.name)
    config = user.home / ".config" / "containers" / "containers.conf"
    wanted = '[containers]\nuserns = "keep-id"\n'
    if not config.exists() or config.read_text() != wanted:
        for folder in (user.home / ".config", config.parent):
            folder.mkdir(mode=0o755, exist_ok=True)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        config.write_text(wanted)
        os.chown(config, entry.pw_uid, entry.pw_gid)


def main() -> int:
    """`python -m tests.container_hosts`: build the test host images that are missing (once per machine)."""
    seconds = ensure_image(BULLSEYE)
    if seconds is None:
        print(f"container_hosts: {BULLSEYE.tag} exists", file=sys.stderr)
    else:
        print(f"container_hosts: built {BULLSEYE.tag} in {seconds:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
