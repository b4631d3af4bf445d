"""The lab: sshd on loopback addresses (one per 16), one user per host, the cubes, settings files and inventories."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from benchmarks.config import CUBE_SOURCE, FLEET_SIZES, REQUIREMENTS, SWEEP_HOSTS, SWEEP_SLOTS, addresses, users
from benchmarks.sampler import reap_adopted
from mlcube_ssh_ansible.render import Job, ssh_args
from mlcube_ssh_ansible.settings import Settings, parse_settings
from tests.hosts import BUSYBOX, DROP, Sshd, SshHost, deep_merge, ensure_dockerd, make_user, mlcube_settings

# Addresses per sshd process: OpenSSH refuses more than 16 listen sockets ("Too many listen sockets").
SSHD_ADDRESSES = 16


def prepare_cube(dest: Path) -> Path:
    """A fresh copy of benchmarks/cubes/bench with the host's static busybox in its build context."""
    if not BUSYBOX.is_file():
        raise RuntimeError(f"{BUSYBOX} is missing; install busybox-static (scripts/setup-machine.sh)")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(CUBE_SOURCE, dest, ignore=shutil.ignore_patterns("busybox"))
    # The build context is image/, not build/: the repository's .gitignore ignores build/ folders.
    shutil.copy2(BUSYBOX, dest / "image" / "busybox")
    (dest / "image" / "busybox").chmod(0o755)
    (dest / "workspace").mkdir(exist_ok=True)
    (dest / "workspace" / "seconds.txt").write_text("1\n")
    return dest


class Lab:
    """Hosts, users, cubes, settings files, inventories and baseline host lists, all under WORKDIR."""

    def __init__(self, workdir: Path, big_sizes: Sequence[int] = ()) -> None:
        self.workdir = workdir
        self.big_sizes = tuple(big_sizes)
        self.size = max((*FLEET_SIZES, *self.big_sizes))
        self.sshds: list[Sshd] = []
        self.hosts: list[SshHost] = []
        # The big fleets' interpreter: one virtualenv, made by host 1's user through our own `configure`
        # (warm-up), that every host's user runs as `interpreter.type: system` (issue 12's "ready interpreter").
        self.shared_venvs = workdir / "shared-python"
        self.shared_python = self.shared_venvs / "mlcube" / "bin" / "python"

    def start(self) -> None:
        ensure_dockerd()
        for sub in ("cubes", "settings", "inventory", "baseline"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        sshd_dir = self.workdir / "sshd"
        if sshd_dir.exists():
            shutil.rmtree(sshd_dir)
        hosts = addresses(self.size)
        # One sshd per 16 hosts: OpenSSH listens on at most 16 addresses (MAX_LISTEN_SOCKS).
        chunks = [hosts[i:i + SSHD_ADDRESSES] for i in range(0, len(hosts), SSHD_ADDRESSES)]
        self.sshds = [Sshd.start(chunk, sshd_dir / str(i)) for i, chunk in enumerate(chunks)]
        keys = self.workdir / "keys"
        self.hosts = [self.sshds[i // SSHD_ADDRESSES].host(address, make_user(user, keys))
                      for i, (address, user) in enumerate(zip(hosts, users(self.size)))]
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.write_text("".join(h.known_hosts.read_text() for h in self.hosts))
        self.known_hosts.chmod(0o644)
        # Local cubes: one per (who, what), so that ours and the baseline never share a local or remote folder.
        self.cubes = {name: prepare_cube(self.workdir / "cubes" / name)
                      for name in ("ours-single", "base-single", "ours-zero", "base-zero",
                                   *(f"{who}-fleet-{n}" for who in ("ours", "base") for n in FLEET_SIZES),
                                   "ours-sweep", "base-sweep",
                                   *(("ours-python",) if self.big_sizes else ()),
                                   *(f"{who}-big-{n}" for who in ("ours", "base") for n in self.big_sizes))}
        self.single_settings_file = self.write_settings("single", mlcube_settings(self.hosts[0]))
        self.fleet_settings_files: dict[int, Path] = {}
        self.baseline_hosts: dict[int, Path] = {}
        for n in FLEET_SIZES:
            inventory = self.write_inventory(f"fleet-{n}", self.hosts[:n])
            self.fleet_settings_files[n] = self.write_settings(f"fleet-{n}", self.fleet_settings(inventory))
            self.baseline_hosts[n] = self._write_baseline_hosts(f"hosts-{n}", self.hosts[:n])
        # (g): hosts 1-SWEEP_HOSTS with SWEEP_SLOTS CPU-only slots each (a host variable, as an operator sets it).
        sweep_inventory = self.write_inventory("sweep", self.hosts[:SWEEP_HOSTS], mlcube_ssh_cpu_slots=SWEEP_SLOTS)
        self.sweep_settings_file = self.write_settings("sweep", self.fleet_settings(sweep_inventory))
        self.big_settings_files: dict[int, Path] = {}
        if self.big_sizes:
            self.shared_venvs.mkdir(exist_ok=True)
            owner = pwd.getpwnam(self.hosts[0].user.name)
            os.chown(self.shared_venvs, owner.pw_uid, owner.pw_gid)
            # remote_group: the venv's parent is made 2750 and of group docker, which every lab user is in;
            # a remote_root of its own keeps host 1's ~/mlcube (0700 without a group) as the other cases use it.
            self.python_settings_file = self.write_settings("shared-python", deep_merge(
                mlcube_settings(self.hosts[0]), {"platforms": {"ssh-ansible": {
                    "remote_group": "docker", "remote_root": "~/mlcube-shared-python",
                    "interpreter": {"location": str(self.shared_venvs), "name": "mlcube"}}}}))
        for n in self.big_sizes:
            inventory = self.write_inventory(f"big-{n}", self.hosts[:n])
            self.big_settings_files[n] = self.write_settings(f"big-{n}", deep_merge(
                self.fleet_settings(inventory), {"platforms": {"ssh-ansible": {"interpreter": {
                    "type": "system", "python": str(self.shared_python), "requirements": REQUIREMENTS,
                    "location": DROP, "name": DROP}}}}))
            self.baseline_hosts[n] = self._write_baseline_hosts(f"hosts-{n}", self.hosts[:n])

    def stop(self) -> None:
        for sshd in self.sshds:
            sshd.stop()

    def name(self, host: SshHost) -> str:
        """The host's inventory name, b1, b2, ...: its place in the lab (user names may carry a suffix)."""
        return f"b{self.hosts.index(host) + 1}"

    def write_inventory(self, name: str, hosts: Sequence[SshHost], **host_vars: Any) -> Path:
        inventory = {"all": {"hosts": {
            self.name(h): {"ansible_host": h.address, "ansible_port": h.port, "ansible_user": h.user.name,
                           "ansible_ssh_private_key_file": str(h.user.identity_file), **host_vars}
            for h in hosts}}}
        path = self.workdir / "inventory" / f"{name}.yml"
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        return path

    def fleet_settings(self, inventory: Path) -> dict[str, Any]:
        return deep_merge(mlcube_settings(self.hosts[0]), {"platforms": {"ssh-ansible": {
            "host": DROP, "port": DROP, "authentication": DROP,
            "inventory": str(inventory), "hosts": "all", "known_hosts": str(self.known_hosts)}}})

    def write_settings(self, name: str, system_settings: dict[str, Any]) -> Path:
        path = self.workdir / "settings" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(system_settings, sort_keys=False))
        return path

    def _write_baseline_hosts(self, name: str, hosts: Sequence[SshHost]) -> Path:
        path = self.workdir / "baseline" / f"{name}.txt"
        path.write_text("".join(
            f"{self.name(h)} {h.address} {h.port} {h.user.name} {h.user.identity_file} {self.known_hosts}\n"
            for h in hosts))
        return path

    @staticmethod
    def settings_of(settings_file: Path) -> Settings:
        section = yaml.safe_load(settings_file.read_text())["platforms"]["ssh-ansible"]
        return parse_settings(section)

    @staticmethod
    def job(cube: Path) -> Job:
        return Job(str(cube), str(cube / "workspace"))

    @staticmethod
    def _master_command(settings: Settings, h: SshHost, command: str) -> list[str]:
        """`ssh -O COMMAND` for the ControlPath mlcube-ssh-ansible gives `settings` (taken from render.ssh_args)."""
        args = ssh_args(settings)
        paths = [value for flag, value in zip(args, args[1:]) if flag == "-o" and value.startswith("ControlPath=")]
        return ["ssh", "-F", "/dev/null", "-o", paths[0], "-p", str(h.port), "-O", command,
                f"{h.user.name}@{h.address}"]

    def open_masters(self, settings: Settings, hosts: Sequence[SshHost]) -> None:
        """Open (or keep open) our connection master to each host, with mlcube-ssh-ansible's ssh options and so its
        ControlPath, as the previous command would have left it: a big fleet's other runs (the baseline's, the other
        size's) can outlast ControlPersist (60 s), and (f) measures warm runs."""
        procs = [subprocess.Popen(["ssh", "-F", "/dev/null", *ssh_args(settings), "-i", str(h.user.identity_file),
                                   "-p", str(h.port), f"{h.user.name}@{h.address}", "true"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for h in hosts]
        for proc in procs:
            proc.wait()
        reap_adopted()

    def masters_alive(self, settings: Settings, hosts: Sequence[SshHost]) -> int:
        """How many of `hosts` have a live ssh connection master of ours (`ssh -O check`)."""
        return sum(subprocess.run(self._master_command(settings, h, "check"), capture_output=True,
                                  check=False).returncode == 0 for h in hosts)

    def close_masters(self, settings: Settings, hosts: Sequence[SshHost]) -> None:
        """Stop our ssh connection masters for `hosts` (`ssh -O exit`), so the next command starts cold."""
        for h in hosts:
            subprocess.run(self._master_command(settings, h, "exit"), capture_output=True, check=False)
        deadline = time.monotonic() + 5
        while self.masters_alive(settings, hosts) and time.monotonic() < deadline:
            time.sleep(0.1)
        reap_adopted()


