"""Real test hosts for the integration tests: a root-run sshd on loopback addresses, users, keys, Docker.

Nothing here is mocked. One `sshd` listens on several loopback addresses (127.0.0.2, 127.0.0.3, ...), so that
each address looks like a separate machine to Ansible, and each test host gets its own Linux user (and so its
own home directory) to keep the "machines" apart. The users can run Docker, so a remote `docker build/run`
really happens. Anything missing (sshd, Docker, a static busybox) raises RuntimeError: these tests must never
skip quietly.

This module has no pytest dependency; tests/conftest.py turns it into fixtures.
"""

from __future__ import annotations

import copy
import grp
import ipaddress
import os
import pwd
import shlex
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Mapping, Sequence

__all__ = [
    "BUSYBOX",
    "DOCKERD_LOG",
    "DROP",
    "EXAMPLES_DIR",
    "REPO_ROOT",
    "SshHost",
    "Sshd",
    "TestUser",
    "deep_merge",
    "ensure_dockerd",
    "example_cube",
    "free_port",
    "keyscan",
    "make_user",
    "mlcube_settings",
    "remote",
    "set_password",
    "ssh_argv",
    "user_name",
]

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
EXAMPLES_DIR: Path = REPO_ROOT / "examples"
DOCKERD_LOG: Path = Path("/tmp/mlcube-ssh-ansible-dockerd.log")
DOCKERD_PID_FILE: Path = Path("/var/run/docker.pid")
SSHD_BINARY: Path = Path("/usr/sbin/sshd")
BUSYBOX: Path = Path("/bin/busybox")

# --------------------------------------------------------------------------------------------------- helpers


def _require(command: str) -> str:
    """Full path of `command`, or raise: a missing tool is a broken machine, not a reason to skip."""
    found = shutil.which(command)
    if found is None:
        raise RuntimeError(f"{command!r} is not installed; run `bash scripts/setup-machine.sh` as root")
    return found


def _run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a set-up command, raising with its output on failure so the cause shows in the test report."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed with exit code {proc.returncode}: {shlex.join(argv)}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def _tail(path: Path, lines: int = 40) -> str:
    """Last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace").replace("\0", "")
        return "\n".join(text.splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


def _check_loopback(address: str) -> None:
    """Every address the tests use must be loopback: the machine has no other network, nor may it get one."""
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"test hosts must use loopback addresses, got {address!r}")


# ---------------------------------------------------------------------------------------------------- docker


def _docker_ok(docker: str) -> bool:
    return subprocess.run([docker, "info"], capture_output=True, check=False).returncode == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_docker(docker: str, timeout: float, alive: Callable[[], bool]) -> bool:
    """Poll `docker info` until it answers (True), `alive()` turns False, or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _docker_ok(docker):
            return True
        if not alive():
            return _docker_ok(docker)
        time.sleep(0.25)
    return _docker_ok(docker)


def ensure_dockerd(timeout: float = 60.0) -> None:
    """Make sure a Docker engine answers, starting `dockerd` if needed (nothing starts it on this machine).

    Same logic as scripts/setup-machine.sh. Raises RuntimeError with the tail of the daemon's log if it does
    not answer within `timeout` seconds, or exits.
    """
    docker = _require("docker")
    if _docker_ok(docker):
        return
    # A dockerd that is still starting (or stopping) holds the pid file; a second one would refuse to start.
    try:
        old_pid = int(DOCKERD_PID_FILE.read_text().strip())
    except (OSError, ValueError):
        old_pid = 0
    if old_pid > 0 and _pid_alive(old_pid) and _wait_for_docker(docker, timeout, lambda: _pid_alive(old_pid)):
        return
    dockerd = _require("dockerd")
    with DOCKERD_LOG.open("ab") as log:
        process = subprocess.Popen(  # a daemon that outlives the tests on purpose, like a system service
            [dockerd], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    if not _wait_for_docker(docker, timeout, lambda: process.poll() is None):
        raise RuntimeError(f"dockerd did not answer within {timeout:.0f} s, or exited (code "
                           f"{process.poll()}); last lines of {DOCKERD_LOG}:\n{_tail(DOCKERD_LOG)}")


# ----------------------------------------------------------------------------------------------------- users


@dataclass
class TestUser:
    """A Linux user playing the account on a remote machine; the tests (root) log in with `identity_file`."""

    __test__ = False  # not a test class, though its name starts with "Test"

    name: str
    home: Path
    identity_file: Path


USER_SUFFIX_VARIABLE = "MLCUBE_TEST_USER_SUFFIX"
WORKER_VARIABLE = "PYTEST_XDIST_WORKER"
"""Set by pytest-xdist in each worker (gw0, gw1, ...): the workers of one run are apart like two checkouts."""


def user_name(name: str) -> str:
    """`name`, plus `-$MLCUBE_TEST_USER_SUFFIX` and `-$PYTEST_XDIST_WORKER` when set: test runs from two checkouts
    at once, and the parallel workers of one run, get apart homes (and so apart venvs, cubes, processes)."""
    suffixes = [os.environ.get(variable, "") for variable in (USER_SUFFIX_VARIABLE, WORKER_VARIABLE)]
    return "-".join([name, *[suffix for suffix in suffixes if suffix]])


def make_user(name: str, key_dir: Path, docker: bool = True) -> TestUser:
    """Create (or reuse) user `name`, able to run Docker, logging in with an ed25519 key pair in `key_dir`.

    With docker=False the user is kept out of group `docker` (removed from it if an earlier run added it).

    `name` gets the suffix of :func:`user_name`, so every caller of one test run lands in the same homes.

    The key pair is made unless `key_dir` already holds one for `name` (so calling this twice is harmless).
    An existing user keeps its home; its authorized_keys is replaced by this key, so keys from an earlier
    session stop working.
    """
    docker_group_exists = subprocess.run(["getent", "group", "docker"], capture_output=True,
                                         check=False).returncode == 0
    if not docker_group_exists:
        raise RuntimeError("group 'docker' does not exist; install docker.io (scripts/setup-machine.sh)")
    name = user_name(name)
    try:
        pwd.getpwnam(name)
    except KeyError:
        _run([_require("useradd"), "-m", "-s", "/bin/bash", name])
    if docker:
        _run([_require("usermod"), "-aG", "docker", name])
    elif name in grp.getgrnam("docker").gr_mem:
        _run([_require("gpasswd"), "-d", name, "docker"])
    entry = pwd.getpwnam(name)
    home = Path(entry.pw_dir)
    if not home.is_dir():  # an existing user whose home was removed
        home.mkdir(mode=0o750, parents=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    # Every test gets the home as `useradd -m` makes it here (others may enter it: the security tests say what
    # our tool leaves of that), whatever an earlier test, or an earlier run that failed midway, left.
    home.chmod(0o755)

    key_dir.mkdir(parents=True, exist_ok=True)
    identity = key_dir / f"id_ed25519_{name}"
    public = identity.with_name(identity.name + ".pub")
    if not (identity.is_file() and public.is_file()):
        for stale in (identity, public):
            stale.unlink(missing_ok=True)
        _run([_require("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
              f"{name}@mlcube-ssh-ansible-tests", "-f", str(identity)])
    os.chown(identity, 0, 0)
    identity.chmod(0o600)
    public_key = public.read_text()

    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    authorized_keys = ssh_dir / "authorized_keys"
    existing = authorized_keys.read_text() if authorized_keys.exists() else ""
    if public_key not in existing:  # other test sessions on this machine keep their keys
        authorized_keys.write_text(existing + public_key)
    for path, mode in ((ssh_dir, 0o700), (authorized_keys, 0o600)):
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(mode)
    return TestUser(name=name, home=home, identity_file=identity)


def set_password(user: TestUser | str, password: str) -> None:
    """Give `user` a password (via chpasswd), for tests that log in with a password instead of a key."""
    name = user.name if isinstance(user, TestUser) else user
    _run([_require("chpasswd")], input=f"{name}:{password}\n")


# ------------------------------------------------------------------------------------------------------- sshd


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `address` (found by binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free_on_all(port: int, addresses: Sequence[str]) -> bool:
    for address in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def _accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class SshHost:
    """One "remote machine": an address of the test sshd, the user to log in as, and a known_hosts for it."""

    address: str
    port: int
    user: TestUser
    known_hosts: Path


@dataclass
class Sshd:
    """A real OpenSSH server, run by root with its own config, host key and pid file in a temp dir.

    One process listens on several loopback addresses with one port; each address serves as a distinct host.
    """

    addresses: list[str]
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    host_public_key: str = field(repr=False)

    @property
    def config_file(self) -> Path:
        return self.workdir / "sshd_config"

    @property
    def log_file(self) -> Path:
        """sshd's own log (-e): read it when a login is refused."""
        return self.workdir / "sshd.log"

    @classmethod
    def start(cls, addresses: list[str], tmp: Path, timeout: float = 30.0) -> Sshd:
        """Start sshd on `addresses` (loopback only) and one free port; return once every address accepts."""
        if not SSHD_BINARY.is_file():
            raise RuntimeError(f"{SSHD_BINARY} is missing; install openssh-server (scripts/setup-machine.sh)")
        if not addresses:
            raise ValueError("Sshd.start needs at least one address")
        for address in addresses:
            _check_loopback(address)
        # sshd's privilege separation wants this directory, which only the packaged service normally creates.
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)

        tmp.mkdir(parents=True, exist_ok=True)
        host_key = tmp / "ssh_host_ed25519_key"
        if not host_key.exists():
            _run([_require("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
                  "mlcube-ssh-ansible-test-sshd", "-f", str(host_key)])
        host_key.chmod(0o600)
        host_public_key = host_key.with_name(host_key.name + ".pub").read_text().split()[1]

        last_error = ""
        for _attempt in range(5):
            port = free_port(addresses[0])
            if not _port_free_on_all(port, addresses):
                continue
            config = tmp / "sshd_config"
            config.write_text(_sshd_config(addresses, port, host_key, tmp / "sshd.pid"))
            _run([str(SSHD_BINARY), "-t", "-f", str(config)])
            log = (tmp / "sshd.log").open("ab")
            process = subprocess.Popen(
                [str(SSHD_BINARY), "-D", "-e", "-f", str(config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
            log.close()
            server = cls(addresses=list(addresses), port=port, workdir=tmp, process=process,
                         host_public_key=host_public_key)
            deadline = time.monotonic() + timeout
            waiting = list(addresses)
            while waiting and process.poll() is None and time.monotonic() < deadline:
                waiting = [a for a in waiting if not _accepts(a, port)]
                if waiting:
                    time.sleep(0.05)
            if not waiting:
                return server
            last_error = (f"sshd (exit code {process.poll()}) is not accepting on {waiting} port {port}; "
                          f"log {server.log_file}:\n{_tail(server.log_file)}")
            server.stop()  # lost a race for the port on some address: try another port
        raise RuntimeError(f"could not start sshd: {last_error or 'no port free on all addresses'}")

    def stop(self) -> None:
        """Stop the listening sshd (sessions already open end on their own)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self, timeout: float = 30.0) -> None:
        """Start the listener again after stop(), on the same addresses, port and host key (an sshd restart)."""
        self.stop()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen([str(SSHD_BINARY), "-D", "-e", "-f", str(self.config_file)],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        waiting = list(self.addresses)
        while waiting and self.process.poll() is None and time.monotonic() < deadline:
            waiting = [a for a in waiting if not _accepts(a, self.port)]
            if waiting:
                time.sleep(0.05)
        if waiting:
            raise RuntimeError(f"sshd (exit code {self.process.poll()}) did not accept again on {waiting} port "
                               f"{self.port}; log {self.log_file}:\n{_tail(self.log_file)}")

    def reset_connections(self) -> int:
        """Reset every established TCP connection to this sshd's port (`ss -K`, as a VPN reconnect or a NAT
        timeout does), and no other: other sshds on the same addresses are untouched. Returns how many."""
        listed = _run([_require("ss"), "-K", "-t", "-n", "-H", "state", "established", "dport", "=",
                       f":{self.port}"])
        return len([line for line in listed.stdout.splitlines() if line.strip()])

    def __enter__(self) -> Sshd:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def host(self, address: str, user: TestUser) -> SshHost:
        """An SshHost for `address`, with a known_hosts file scanned from the running server."""
        if address not in self.addresses:
            raise ValueError(f"sshd does not listen on {address}; it listens on {self.addresses}")
        known_hosts = self.workdir / f"known_hosts_{address}_{self.port}"
        if not known_hosts.exists():
            known_hosts.write_text(self._keyscan(address))
        return SshHost(address=address, port=self.port, user=user, known_hosts=known_hosts)

    def _keyscan(self, address: str) -> str:
        return keyscan(address, self.port, self.host_public_key, lambda: _tail(self.log_file))


def keyscan(address: str, port: int, public_key: str, server_log: Callable[[], str],
            timeout: float = 10.0) -> str:
    """known_hosts lines from ssh-keyscan of a real server, checked against the key it was given.

    The scan races with the server's start, so it retries briefly; `server_log` gives the log for errors.
    """
    scanner = _require("ssh-keyscan")
    deadline = time.monotonic() + timeout
    scanned = ""
    while time.monotonic() < deadline:
        proc = subprocess.run([scanner, "-t", "ed25519", "-p", str(port), address],
                              capture_output=True, text=True, check=False)
        scanned = "".join(line + "\n" for line in proc.stdout.splitlines()
                          if line.strip() and not line.startswith("#"))
        if scanned:
            break
        time.sleep(0.1)
    if not scanned:
        raise RuntimeError(f"ssh-keyscan got no key from {address}:{port}; server log:\n{server_log()}")
    expected_prefix = f"[{address}]:{port} ssh-ed25519 {public_key}"
    if not scanned.startswith(expected_prefix):
        raise RuntimeError(f"ssh-keyscan got an unexpected key from {address}:{port}:\n{scanned}")
    return scanned


def _sshd_config(addresses: Sequence[str], port: int, host_key: Path, pid_file: Path, use_pam: bool = True) -> str:
    """The test sshd's config: key and password login, generous limits for parallel runs and multiplexing.

    Without PAM (`use_pam=False`, for sshd in a container, where PAM's session modules fail) logins are by key.
    """
    listen = "".join(f"ListenAddress {address}:{port}\n" for address in addresses)
    return (
        f"# Written by tests/hosts.py for the mlcube-ssh-ansible integration tests.\n"
        f"Port {port}\n"
        f"{listen}"
        f"HostKey {host_key}\n"
        f"PidFile {pid_file}\n"
        "PermitRootLogin no\n"
        "PubkeyAuthentication yes\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        f"PasswordAuthentication {'yes' if use_pam else 'no'}\n"
        "KbdInteractiveAuthentication no\n"
        # PAM does the password check, and does not refuse key logins for users without a password.
        f"UsePAM {'yes' if use_pam else 'no'}\n"
        "StrictModes no\n"
        "MaxStartups 100:30:200\n"
        "MaxSessions 50\n"
        "MaxAuthTries 10\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "X11Forwarding no\n"
        "LogLevel VERBOSE\n"
        # Ansible copies files over SFTP by default.
        "Subsystem sftp internal-sftp\n"
    )


# ------------------------------------------------------------------------------------------------ ssh client


def ssh_argv(host: SshHost) -> list[str]:
    """An ssh command line that logs into `host` with its key and strict host key checking, never prompting.

    `-F /dev/null` keeps root's own ~/.ssh/config out of the tests. Append the remote command as one string.
    """
    return [
        _require("ssh"), "-F", "/dev/null",
        "-i", str(host.user.identity_file),
        "-p", str(host.port),
        "-o", f"UserKnownHostsFile={host.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "ConnectTimeout=10",
        f"{host.user.name}@{host.address}",
    ]


def remote(host: SshHost, *argv: str, check: bool = False,
           timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
    """Run `argv` on `host` over ssh (each argument shell-quoted), capturing text output, e.g. to list files.

    With check=True a non-zero exit raises subprocess.CalledProcessError.
    """
    return subprocess.run([*ssh_argv(host), shlex.join(argv)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=check, timeout=timeout)


# ------------------------------------------------------------------------------------------------ the cube


def _is_static_elf(path: Path) -> bool:
    """True if `path` is an ELF executable with no program interpreter (so it runs in an empty image)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return False
    endian = "<" if data[5] == 1 else ">"
    if data[4] == 2:  # 64-bit
        (phoff,) = struct.unpack_from(endian + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    else:
        (phoff,) = struct.unpack_from(endian + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x2A)
    pt_interp = 3
    return all(struct.unpack_from(endian + "I", data, phoff + i * phentsize)[0] != pt_interp
               for i in range(phnum))


def example_cube(dest: Path, name: str = "hello") -> Path:
    """Copy examples/hello to dest/name, with the host's static busybox in its build context; return the copy.

    busybox is not committed; the remote `docker build` of the FROM-scratch image COPYs this one.
    """
    source = EXAMPLES_DIR / "hello"
    if not (source / "mlcube.yaml").is_file():
        raise RuntimeError(f"example cube missing: {source}/mlcube.yaml")
    if not BUSYBOX.is_file():
        raise RuntimeError(f"{BUSYBOX} is missing; install busybox-static (scripts/setup-machine.sh)")
    if not _is_static_elf(BUSYBOX):
        raise RuntimeError(f"{BUSYBOX} is not statically linked, so it cannot run in a FROM-scratch image; "
                           "install busybox-static")
    cube = dest / name
    shutil.copytree(source, cube, ignore=shutil.ignore_patterns("busybox"))
    shutil.copy2(BUSYBOX, cube / "build" / "busybox")
    (cube / "build" / "busybox").chmod(0o755)
    return cube


# ---------------------------------------------------------------------------------------- MLCube settings


class _Drop:
    """Type of DROP."""

    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()
"""Value for deep_merge / platform overrides that removes the key instead of setting it."""


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in: nested dicts merge, other values replace, DROP removes the key."""
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if value is DROP:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def mlcube_settings(host: SshHost, **platform_overrides: Any) -> dict[str, Any]:
    """MLCube system settings with one `ssh-ansible` platform pointing at `host` (overrides deep-merged)."""
    platform: dict[str, Any] = {
        "runner": "ssh-ansible",
        "host": host.address,
        "port": host.port,
        "platform": "docker",
        "remote_root": "~/mlcube",
        "known_hosts": str(host.known_hosts),
        "interpreter": {
            "type": "virtualenv",
            "python": "/usr/bin/python3",
            "requirements": "mlcube==0.0.9 mlcube-docker==0.0.9",
            "location": "~/.venvs",
            "name": "mlcube",
        },
        "authentication": {"user": host.user.name, "identity_file": str(host.user.identity_file)},
    }
    return {
        "runners": {"ssh-ansible": {"pkg": "mlcube_ssh_ansible"}},
        "platforms": {"ssh-ansible": deep_merge(platform, platform_overrides)},
        "storage": {},
    }
