#!/usr/bin/env python3
"""Benchmark of mlcube-ssh-ansible against a hand-written `ssh` + `rsync -a` baseline (issue 6).

One command, run as root from the repository root:

    .venv/bin/python benchmarks/bench.py            # full run (~10-15 min on 2 cores), writes docs/benchmarks.md
    .venv/bin/python benchmarks/bench.py --quick    # 1 repetition of everything, for development only

It sets up its own "remote" hosts with tests/hosts.py (one sshd on 127.0.0.2-127.0.0.9, users mlcube-b1..b8,
Docker), warms them up (remote virtualenvs, cube configured; excluded from every timing), then measures
mlcube-ssh-ansible ("ours") and benchmarks/baseline.sh side by side, interleaved (A, B, A, B, ...), and writes
the medians, ratios, targets, the machine and a per-step profile of ours to docs/benchmarks.md.

This is not a test: nothing here asserts on timings. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import datetime
import json
import os
import pickle
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlcube_ssh_ansible import assets, execute, workflow  # noqa: E402
from mlcube_ssh_ansible import render as render_module  # noqa: E402
from mlcube_ssh_ansible import settings as settings_module  # noqa: E402
from mlcube_ssh_ansible.errors import SshAnsibleError  # noqa: E402
from mlcube_ssh_ansible.render import Job, remote_name, render, ssh_args  # noqa: E402
from mlcube_ssh_ansible.report import Reporter  # noqa: E402
from mlcube_ssh_ansible.settings import Settings, forks_for, parse_settings  # noqa: E402
from tests.hosts import (  # noqa: E402
    BUSYBOX,
    DROP,
    Sshd,
    SshHost,
    deep_merge,
    ensure_dockerd,
    make_user,
    mlcube_settings,
    remote,
    ssh_argv,
)

BENCH_DIR = REPO / "benchmarks"
CUBE_SOURCE = BENCH_DIR / "cubes" / "bench"
BASELINE = BENCH_DIR / "baseline.sh"
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
# A fixed folder (not a random temporary one): the remote folders are named after the local cube paths, so a
# second benchmark run finds its remote cubes again. Only root writes here.
WORKDIR = Path(os.environ.get("MLCUBE_BENCH_DIR", "/var/tmp/mlcube-ssh-ansible-bench"))  # noqa: S108
VENV_BIN = Path(sys.executable).parent
MLCUBE = VENV_BIN / "mlcube"
ANSIBLE_PLAYBOOK = VENV_BIN / "ansible-playbook"

ADDRESSES = [f"127.0.0.{i}" for i in range(2, 10)]
USERS = [f"mlcube-b{i}" for i in range(1, 9)]
FLEET_SIZES = (1, 2, 4, 8)
# What mlcube_settings() installs remotely; the baseline uses the very same virtualenv.
REQUIREMENTS = "mlcube==0.0.9 mlcube-docker==0.0.9"
BASELINE_PYTHON = "~/.venvs/mlcube/bin/python"

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024

# The targets: (label, limit, inclusive). Ratios for a-d, megabytes for e.
TARGETS: dict[str, tuple[str, float, bool]] = {
    "a": ("<= 2.0x", 2.0, True),
    "b": ("<= 1.0x", 1.0, True),
    "c": ("<= 1.2x", 1.2, True),
    "d4": ("<= 2x one host", 2.0, True),
    "d8": ("<= 3x one host", 3.0, True),
    "e8": ("< 300 MB", 300.0, False),
}


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", flush=True)


# ------------------------------------------------------------------------------------------- process trees


def _proc_table() -> dict[int, tuple[int, str, str, int]]:
    """pid -> (ppid, comm, state, rss bytes) for every process, read from /proc/PID/stat."""
    table: dict[int, tuple[int, str, str, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        close = data.rfind(b")")
        comm = data[data.find(b"(") + 1:close].decode(errors="replace")
        fields = data[close + 2:].split()
        # fields[0] is stat field 3 (state): ppid is field 4, rss (pages) field 24.
        table[int(name)] = (int(fields[1]), comm, fields[0].decode(), int(fields[21]) * PAGE)
    return table


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def become_subreaper() -> None:
    """Orphans of our commands (ssh's ControlPersist masters daemonise) are re-parented to us, so we see them."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def adopted_ssh() -> set[int]:
    """ssh processes (connection masters) that were orphaned and adopted by this process."""
    me = os.getpid()
    return {pid for pid, (ppid, comm, state, _) in _proc_table().items()
            if ppid == me and comm == "ssh" and state != "Z"}


def reap_adopted() -> None:
    """Collect adopted children that have exited; only called between measurements (nothing else running)."""
    me = os.getpid()
    for pid, (ppid, _comm, state, _) in _proc_table().items():
        if ppid == me and state == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


class TreeSampler(threading.Thread):
    """Samples the summed RSS (every `interval`) and PSS (every 5th sample) of a process tree.

    The tree is `root` and its descendants, plus ssh processes adopted by this (subreaper) process during the
    measurement: ssh's ControlPersist masters leave the tree by double-forking but are the command's memory.
    """

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.stopping = threading.Event()
        self.before = adopted_ssh()
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_count = 0
        self.peak_detail = ""
        self.samples = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            self.sample(self.samples % 5 == 0)
            self.samples += 1
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        self.join()

    def sample(self, with_pss: bool) -> None:
        table = _proc_table()
        children: dict[int, list[int]] = collections.defaultdict(list)
        for pid, (ppid, *_rest) in table.items():
            children[ppid].append(pid)
        me = os.getpid()
        stack = [self.root] + [pid for pid in children.get(me, ())
                               if table[pid][1] == "ssh" and pid not in self.before]
        tree: set[int] = set()
        while stack:
            pid = stack.pop()
            if pid in tree or pid not in table or table[pid][2] == "Z":
                continue
            tree.add(pid)
            stack.extend(children.get(pid, ()))
        rss = sum(table[pid][3] for pid in tree)
        if rss > self.peak_rss:
            self.peak_rss = rss
            self.peak_count = len(tree)
            counts = collections.Counter(table[pid][1] for pid in tree)
            sizes: collections.Counter[str] = collections.Counter()
            for pid in tree:
                sizes[table[pid][1]] += table[pid][3]
            self.peak_detail = ", ".join(f"{counts[comm]}x {comm} {size / MB:.0f} MB"
                                         for comm, size in sizes.most_common())
        if with_pss:
            self.peak_pss = max(self.peak_pss, sum(_pss(pid) for pid in tree))


# ------------------------------------------------------------------------------------------------ results


@dataclass
class Result:
    seconds: float
    ok: bool = True
    detail: str = ""
    peak_rss: int = 0
    peak_pss: int = 0
    peak_detail: str = ""
    profile: Profile | None = None
    note: str = ""
    cpu: float = 0.0  # CPU seconds of the command's process tree (user + system, reaped children included)
    machine_cpu: float = 0.0  # busy CPU seconds of the whole machine meanwhile (remote side and other jobs too)


@dataclass
class Series:
    """Repetitions of one variant of one measurement."""

    name: str
    results: list[Result] = field(default_factory=list)

    @property
    def ok_seconds(self) -> list[float]:
        return [r.seconds for r in self.results if r.ok]

    @property
    def failures(self) -> list[str]:
        return [r.detail for r in self.results if not r.ok]

    @property
    def median(self) -> float | None:
        values = self.ok_seconds
        return statistics.median(values) if values else None

    def raw(self) -> str:
        return " ".join(f"{r.seconds:.2f}" + ("" if r.ok else "(FAILED)") + (f" ({r.note})" if r.note else "")
                        for r in self.results)


def fmt(value: float | None, unit: str = "s", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}".strip()


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def verdict(key: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    _label, limit, inclusive = TARGETS[key]
    return "met" if (value <= limit if inclusive else value < limit) else "**not met**"


# -------------------------------------------------------------------------------------------- profiling


class ProfilingReporter(Reporter):
    """Our Reporter (its per-host steps_done) plus the time of every Ansible event, per task and host."""

    def __init__(self) -> None:
        super().__init__(write=lambda _line: None, show_steps=False)
        self.t0 = time.monotonic()
        self.first: dict[str, float] = {}
        self.last_event = 0.0
        self.tasks: list[dict[str, Any]] = []
        self._started: dict[tuple[str, str], float] = {}
        self._retries: collections.Counter[tuple[str, str]] = collections.Counter()

    def __call__(self, event: dict[str, Any]) -> bool:
        now = time.monotonic() - self.t0
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        self.first.setdefault(kind, now)
        self.last_event = now
        host = data.get("host")
        if host and kind == "runner_on_start":
            self._started[(host, data.get("task_uuid", ""))] = now
        elif host and kind == "runner_retry":
            self._retries[(host, data.get("task_uuid", ""))] += 1
        elif host and kind.startswith("runner_on_"):
            start = self._started.pop((host, data.get("task_uuid", "")), None)
            res = data.get("res") or {}
            self.tasks.append({
                "host": host,
                "role": str(data.get("role") or "").split(".")[-1] or "(play)",
                "task": data.get("task"),
                "action": data.get("task_action") or data.get("resolved_action"),
                "status": kind[len("runner_on_"):],
                "changed": bool(res.get("changed")),
                "start": start,
                "end": now,
                "duration": data.get("duration"),
                "retries": self._retries.pop((host, data.get("task_uuid", "")), 0),
            })
        return super().__call__(event)


@dataclass
class Profile:
    """One in-process run, as timings relative to the workflow call."""

    total: float
    startup: float | None  # call -> playbook_on_start: ansible-runner + ansible-playbook start-up
    first_task: float | None  # call -> first task started on a host
    last_result: float | None
    stats: float | None
    tasks: list[dict[str, Any]]
    steps: dict[str, list[tuple[str, bool, float]]]

    @classmethod
    def of(cls, reporter: ProfilingReporter, total: float) -> Profile:
        starts = [t["start"] for t in reporter.tasks if t["start"] is not None]
        ends = [t["end"] for t in reporter.tasks]
        return cls(
            total=total,
            startup=reporter.first.get("playbook_on_start"),
            first_task=min(starts) if starts else None,
            last_result=max(ends) if ends else None,
            stats=reporter.first.get("playbook_on_stats"),
            tasks=reporter.tasks,
            steps={host: list(report.steps_done) for host, report in reporter.hosts.items()},
        )


STEP_ORDER = {"preflight": 0, "python_env": 1, "upload": 2, "remote_configure": 3, "remote_run": 4, "fetch": 5}


def role_label(role: str) -> str:
    return role.replace("mlcube_ssh_", "")


# Actions that run inside the controller's Ansible process: no module is shipped, no connection is used.
CONTROLLER_ACTIONS = {"assert", "set_fact", "fail", "validate_argument_spec", "debug", "meta", "include_tasks",
                      "import_tasks", "include_role", "include_vars", "add_host", "group_by"}


def action_kind(action: str | None) -> str:
    name = str(action or "").split(".")[-1]
    if name in CONTROLLER_ACTIONS:
        return "controller"
    if name in ("synchronize", "mlcube_ssh_synchronize"):
        return "rsync"
    return "module"


def summarize_profiles(profiles: Sequence[Profile]) -> dict[str, Any]:
    """Medians over runs: phases of the whole run; per role the time and calls per host; per task."""
    if not profiles:
        return {}
    if not any(p.tasks for p in profiles):
        return {"runs": len(profiles), "empty": True, "total": statistics.median(p.total for p in profiles)}

    def med(values: Iterable[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return statistics.median(kept) if kept else None

    phases = {
        "start-up (call -> playbook_on_start)": med(p.startup for p in profiles),
        "playbook parse + first task dispatch (playbook_on_start -> first task)": med(
            (p.first_task - p.startup) if p.first_task is not None and p.startup is not None else None
            for p in profiles),
        "tasks (first task start -> last task result)": med(
            (p.last_result - p.first_task) if p.last_result is not None and p.first_task is not None else None
            for p in profiles),
        "end (last result -> workflow returns)": med(
            (p.total - p.last_result) if p.last_result is not None else None for p in profiles),
        "total": med(p.total for p in profiles),
    }
    # Per role and host: wall time from its first task's start to its last result, and what ran.
    roles: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    task_rows: dict[tuple[str, str, str], dict[str, list[float]]] = collections.defaultdict(
        lambda: collections.defaultdict(list))
    task_status: dict[tuple[str, str, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for profile in profiles:
        per_host_role: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
        for task in profile.tasks:
            per_host_role[(task["host"], task["role"])].append(task)
        for (_host, role), tasks in per_host_role.items():
            executed = [t for t in tasks if t["status"] != "skipped"]
            starts = [t["start"] for t in tasks if t["start"] is not None]
            entry = roles[role]
            entry["wall"].append(max(t["end"] for t in tasks) - (min(starts) if starts else 0.0))
            entry["executed"].append(len(executed))
            entry["skipped"].append(len(tasks) - len(executed))
            entry["in_tasks"].append(sum(float(t["duration"] or 0.0) for t in executed))
            entry["modules"].append(sum(1 + t["retries"] for t in executed if action_kind(t["action"]) == "module"))
            entry["rsyncs"].append(sum(1 + t["retries"] for t in executed if action_kind(t["action"]) == "rsync"))
        for task in profile.tasks:
            key = (role_label(task["role"]), str(task["task"]), str(task["action"]))
            if task["status"] != "skipped":
                task_rows[key]["duration"].append(float(task["duration"] or 0.0))
                task_rows[key]["calls"].append(1 + task["retries"])
            task_status[key][task["status"]] += 1
    role_rows: list[dict[str, Any]] = []
    for role, entry in roles.items():
        role_rows.append({name: med(values) for name, values in entry.items()} | {"role": role_label(role)})
    role_rows.sort(key=lambda r: STEP_ORDER.get(str(r["role"]), 99))
    steps: dict[str, list[float]] = collections.defaultdict(list)
    for profile in profiles:
        for host_steps in profile.steps.values():
            for step, _changed, seconds in host_steps:
                steps[step].append(seconds)
    module_durations = [float(t["duration"] or 0.0) / (1 + t["retries"]) for p in profiles for t in p.tasks
                        if t["status"] != "skipped" and action_kind(t["action"]) == "module"
                        and "follow" not in str(t["action"])]
    return {
        "runs": len(profiles),
        "hosts": max(len(p.steps) for p in profiles),
        "phases": phases,
        "roles": role_rows,
        "tasks": [
            {"role": k[0], "task": k[1], "action": k[2], "kind": action_kind(k[2]),
             "median": med(v.get("duration", [])), "calls": med(v.get("calls", [])), "status": dict(task_status[k])}
            for k, v in task_rows.items()
        ] + [
            {"role": k[0], "task": k[1], "action": k[2], "kind": action_kind(k[2]), "median": None, "calls": 0,
             "status": dict(task_status[k])}
            for k in task_status if k not in task_rows
        ],
        "reporter_steps": {step: med(values) for step, values in steps.items()},
        "module_call": med(module_durations),
    }


# ----------------------------------------------------------------------------------------------- the lab


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

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.sshd: Sshd | None = None
        self.hosts: list[SshHost] = []

    def start(self) -> None:
        ensure_dockerd()
        for sub in ("cubes", "settings", "inventory", "baseline"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        sshd_dir = self.workdir / "sshd"
        if sshd_dir.exists():
            shutil.rmtree(sshd_dir)
        self.sshd = Sshd.start(ADDRESSES, sshd_dir)
        keys = self.workdir / "keys"
        self.hosts = [self.sshd.host(address, make_user(user, keys)) for address, user in zip(ADDRESSES, USERS)]
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.write_text("".join(h.known_hosts.read_text() for h in self.hosts))
        self.known_hosts.chmod(0o644)
        # Local cubes: one per (who, what), so that ours and the baseline never share a local or remote folder.
        self.cubes = {name: prepare_cube(self.workdir / "cubes" / name)
                      for name in ("ours-single", "base-single",
                                   *(f"{who}-fleet-{n}" for who in ("ours", "base") for n in FLEET_SIZES))}
        self.single_settings_file = self.write_settings("single", mlcube_settings(self.hosts[0]))
        self.fleet_settings_files: dict[int, Path] = {}
        self.baseline_hosts: dict[int, Path] = {}
        for n in FLEET_SIZES:
            inventory = self.write_inventory(f"fleet-{n}", self.hosts[:n])
            self.fleet_settings_files[n] = self.write_settings(f"fleet-{n}", self.fleet_settings(inventory))
            self.baseline_hosts[n] = self._write_baseline_hosts(f"hosts-{n}", self.hosts[:n])

    def stop(self) -> None:
        if self.sshd is not None:
            self.sshd.stop()

    @staticmethod
    def name(host: SshHost) -> str:
        return "b" + host.user.name.rsplit("b", 1)[-1]

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


# ---------------------------------------------------------------------------------------------- commands


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by this process and its reaped descendants, and by the whole machine, over a block."""

    def __enter__(self) -> CpuMeter:
        self.self_start = resource.getrusage(resource.RUSAGE_SELF)
        self.children_start = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.machine_start = _machine_busy()
        return self

    def __exit__(self, *exc: object) -> None:
        now_self = resource.getrusage(resource.RUSAGE_SELF)
        now_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = (now_children.ru_utime + now_children.ru_stime
                         - self.children_start.ru_utime - self.children_start.ru_stime)
        self.own = now_self.ru_utime + now_self.ru_stime - self.self_start.ru_utime - self.self_start.ru_stime
        self.machine = _machine_busy() - self.machine_start


def run_process(argv: Sequence[str], env: dict[str, str] | None = None, sample: bool = False,
                timeout: float = 900, cwd: Path | None = None) -> Result:
    reap_adopted()
    meter = CpuMeter().__enter__()
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd)
    sampler = TreeSampler(proc.pid) if sample else None
    if sampler:
        sampler.start()
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    seconds = time.monotonic() - start
    if sampler:
        sampler.stop()
    meter.__exit__()  # before reaping adopted masters that exited: their CPU belongs to earlier commands
    reap_adopted()
    text = output.decode(errors="replace")
    result = Result(seconds, proc.returncode == 0,
                    "" if proc.returncode == 0 else f"exit {proc.returncode}: " + " | ".join(text.splitlines()[-6:]),
                    cpu=meter.children, machine_cpu=meter.machine)
    if sampler:
        result.peak_rss, result.peak_pss, result.peak_detail = sampler.peak_rss, sampler.peak_pss, sampler.peak_detail
    return result


def cli_env(settings_file: Path) -> dict[str, str]:
    """The environment of a user running the installed `mlcube` from a venv that is not activated."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
    env["MLCUBE_SYSTEM_SETTINGS"] = str(settings_file)
    return env


def ours_cli(command: str, cube: Path, settings_file: Path, task: str | None = None, sample: bool = False,
             env: dict[str, str] | None = None) -> Result:
    argv = [str(MLCUBE), command, f"--mlcube={cube}", "--platform=ssh-ansible"]
    if task:
        argv.append(f"--task={task}")
    return run_process(argv, env=cli_env(settings_file) | (env or {}), sample=sample)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables of this process for the block (for in-process runs)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ours_api(command: str, settings: Settings, job: Job) -> Result:
    call = workflow.run if command == "run" else workflow.configure
    reap_adopted()
    with CpuMeter() as meter:
        reporter = ProfilingReporter()
        try:
            call(settings, job, reporter=reporter)
            ok, detail = True, ""
        except SshAnsibleError as error:
            ok, detail = False, str(error)
        total = time.monotonic() - reporter.t0
    reap_adopted()
    return Result(total, ok, detail, profile=Profile.of(reporter, total), cpu=meter.own + meter.children,
                  machine_cpu=meter.machine)


def baseline(command: str, hosts_file: Path, cube: Path, task: str | None = None, sample: bool = False) -> Result:
    env = dict(os.environ, BASELINE_PYTHON=BASELINE_PYTHON, BASELINE_REQUIREMENTS=REQUIREMENTS)
    argv = ["bash", str(BASELINE), command, str(hosts_file), str(cube)] + ([task] if task else [])
    return run_process(argv, env=env, sample=sample)


def must(result: Result, what: str) -> Result:
    if not result.ok:
        raise RuntimeError(f"{what} failed: {result.detail}")
    return result


# ---------------------------------------------------------------------------------------------- sections


class Bench:
    def __init__(self, lab: Lab, reps: int, reps_slow: int, experiments: bool) -> None:
        self.lab = lab
        self.reps = reps
        self.reps_slow = reps_slow
        self.experiments = experiments
        self.series: dict[str, Series] = {}
        self.notes: list[str] = []
        self.phase_seconds: dict[str, float] = {}
        self.loads: dict[str, str] = {}
        self.meta: dict[str, str] = {}

    def s(self, key: str) -> Series:
        return self.series.setdefault(key, Series(key))

    def record(self, key: str, result: Result) -> Result:
        self.s(key).results.append(result)
        flag = "" if result.ok else f"  FAILED: {result.detail[:300]}"
        mem = f"  peak RSS {result.peak_rss / MB:.0f} MB" if result.peak_rss else ""
        cpu = f"  cpu {result.cpu:5.2f} s (machine {result.machine_cpu:5.2f} s)" if result.machine_cpu else ""
        note = f"  [{result.note}]" if result.note else ""
        log(f"  {key:<28} {result.seconds:7.2f} s{cpu}{mem}{note}{flag}")
        return result

    def phase(self, name: str, body: Callable[[], None]) -> None:
        log(f"--- {name}")
        self.loads[name] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        start = time.monotonic()
        try:
            body()
        except Exception as error:  # a broken section must not hide the others' numbers
            self.notes.append(f"{name}: aborted: {error!r}")
            log(f"{name} aborted:\n{traceback.format_exc()}")
        self.phase_seconds[name] = time.monotonic() - start

    # -- warm-up --------------------------------------------------------------------------------------------

    def warm_up(self) -> None:
        lab = self.lab
        fleet8 = lab.settings_of(lab.fleet_settings_files[8])
        single = lab.settings_of(lab.single_settings_file)
        # Remote virtualenvs and the cube on all 8 hosts at once, through the fleet path (inventory + hosts).
        result = ours_api("configure", fleet8, lab.job(lab.cubes["ours-fleet-8"]))
        log(f"  warm-up configure, 8 hosts (inventory): {result.seconds:.1f} s ok={result.ok}")
        if not result.ok:
            self.notes.append(f"warm-up: 8-host configure through `inventory` failed: {result.detail}")
            log("  falling back to one `host` configure per host")
            for h in lab.hosts:
                settings = parse_settings(mlcube_settings(h)["platforms"]["ssh-ansible"])
                must(ours_api("configure", settings, lab.job(lab.cubes["ours-fleet-8"])), f"configure {h.address}")
        must(ours_api("configure", single, lab.job(lab.cubes["ours-single"])), "configure ours-single")
        must(baseline("configure", lab.baseline_hosts[1], lab.cubes["base-single"]), "baseline configure single")
        # One local cube per fleet size (and side): every (d) run is then the same warm repeat of its own last
        # run. With one cube for all sizes, a 1-host run fetches into the workspace itself, which changes the
        # local files and makes the next N-host run upload again.
        for n in FLEET_SIZES:
            if n != 8:
                must(ours_api("configure", lab.settings_of(lab.fleet_settings_files[n]),
                              lab.job(lab.cubes[f"ours-fleet-{n}"])), f"configure ours-fleet-{n}")
            must(baseline("configure", lab.baseline_hosts[n], lab.cubes[f"base-fleet-{n}"]),
                 f"baseline configure fleet-{n}")
        # One run of every task on both sides: images, page cache and the remote workspaces exist afterwards.
        for task in ("sleep", "tiny", "blob"):
            must(ours_api("run", single, self.job("ours-single", task)), f"run {task}")
            must(baseline("run", lab.baseline_hosts[1], lab.cubes["base-single"], task), f"baseline run {task}")
        self.drop_blobs()
        for n in FLEET_SIZES:
            ours_api("run", lab.settings_of(lab.fleet_settings_files[n]), self.job(f"ours-fleet-{n}", "sleep"))
            baseline("run", lab.baseline_hosts[n], lab.cubes[f"base-fleet-{n}"], "sleep")

    def job(self, cube: str, task: str) -> Job:
        path = self.lab.cubes[cube]
        return Job(str(path), str(path / "workspace"), (task,))

    def clear_output(self, task: str) -> None:
        """Remove a task's local output (both sides), so that its next run brings back all of the new data."""
        for cube in ("ours-single", "base-single"):
            shutil.rmtree(self.lab.cubes[cube] / "workspace" / task, ignore_errors=True)

    def drop_blobs(self) -> None:
        """Remove the 100 MiB outputs locally and on host 1, so that no later run fetches them again."""
        self.clear_output("blob")
        h1 = self.lab.hosts[0]
        ours_dir = f"{h1.user.home}/mlcube/{remote_name(str(self.lab.cubes['ours-single']))}/workspace/blob"
        base_dir = f"{h1.user.home}/mlcube-baseline/{self.lab.cubes['base-single'].name}/workspace/blob"
        remote(h1, "rm", "-rf", ours_dir, base_dir, check=True)

    # -- (a) warm run of a one-second task ------------------------------------------------------------------

    def warm_run(self) -> None:
        lab = self.lab
        single = lab.settings_of(lab.single_settings_file)
        for _ in range(self.reps):
            self.record("a.ours", ours_cli("run", lab.cubes["ours-single"], lab.single_settings_file, "sleep"))
            self.record("a.base", baseline("run", lab.baseline_hosts[1], lab.cubes["base-single"], "sleep"))
            self.record("a.ours-api", ours_api("run", single, self.job("ours-single", "sleep")))

    # -- (b) no-op configure --------------------------------------------------------------------------------

    def noop_configure(self) -> None:
        """No-op configure with the default settings; and, where the shim can skip it locally (skip_unchanged),
        also with `skip_unchanged: false`, so that the hosts are contacted (and profiled)."""
        lab = self.lab
        contact_file = lab.single_settings_file
        if "skip_unchanged" in getattr(settings_module, "TOP_KEYS", ()):
            contact_file = lab.write_settings("single-contact", deep_merge(
                mlcube_settings(lab.hosts[0]), {"platforms": {"ssh-ansible": {"skip_unchanged": False}}}))
            self.meta["skip_unchanged"] = "yes"
        contact = lab.settings_of(contact_file)
        # The contacting runs remember their (different) settings' fingerprint in a cache of their own, so that
        # they do not make the default runs' next configure contact the host.
        contact_cache = {"XDG_CACHE_HOME": str(lab.workdir / "cache-contact")}
        for _ in range(self.reps):
            self.record("b.ours", ours_cli("configure", lab.cubes["ours-single"], lab.single_settings_file))
            self.record("b.base", baseline("configure", lab.baseline_hosts[1], lab.cubes["base-single"]))
            if contact_file != lab.single_settings_file:
                self.record("b.ours-contact", ours_cli("configure", lab.cubes["ours-single"], contact_file,
                                                       env=contact_cache))
            with environment(contact_cache):
                self.record("b.ours-api", ours_api("configure", contact, lab.job(lab.cubes["ours-single"])))

    # -- (c) marginal cost of 100 MB of output --------------------------------------------------------------

    def big_output(self) -> None:
        lab = self.lab
        single = lab.settings_of(lab.single_settings_file)
        # Each run fetches the whole remote workspace: only the output of the task about to run is removed
        # locally, so the tiny run does not bring the (unchanged) 100 MiB back; a check below makes sure.
        blobs = [lab.cubes[cube] / "workspace" / "blob" / "data.bin" for cube in ("ours-single", "base-single")]
        for _ in range(self.reps):
            for task in ("blob", "tiny"):
                self.clear_output(task)
                before = [b.stat().st_ino if b.is_file() else None for b in blobs]
                self.record(f"c.ours.{task}", ours_api("run", single, self.job("ours-single", task)))
                self.record(f"c.base.{task}", baseline("run", lab.baseline_hosts[1], lab.cubes["base-single"], task))
                for cube in ("ours-single", "base-single"):
                    got = lab.cubes[cube] / "workspace" / task / "data.bin"
                    size = got.stat().st_size if got.is_file() else None
                    if size != (4096 if task == "tiny" else 100 * MB):
                        self.notes.append(f"(c): {got} has size {size} after the {task} run")
                after = [b.stat().st_ino if b.is_file() else None for b in blobs]
                if task == "tiny" and before != after:
                    self.notes.append(f"(c): a tiny run fetched the 100 MiB output again: {blobs}")
        self.drop_blobs()

    # -- (d) fleet scaling ----------------------------------------------------------------------------------

    def fleet(self) -> None:
        lab = self.lab
        fleet8 = lab.settings_of(lab.fleet_settings_files[8])
        for _ in range(self.reps_slow):
            for n in FLEET_SIZES:
                warm = lab.masters_alive(lab.settings_of(lab.fleet_settings_files[n]), lab.hosts[:n])
                result = ours_cli("run", lab.cubes[f"ours-fleet-{n}"], lab.fleet_settings_files[n], "sleep")
                result.note = f"{warm}/{n} masters warm"
                self.record(f"d.ours.{n}", result)
                self.record(f"d.base.{n}", baseline("run", lab.baseline_hosts[n], lab.cubes[f"base-fleet-{n}"],
                                                    "sleep"))
        # One in-process 8-host run for the per-step profile (not part of the table).
        self.record("d.ours-api.8", ours_api("run", fleet8, self.job("ours-fleet-8", "sleep")))
        for n in FLEET_SIZES[1:]:
            results = lab.cubes[f"ours-fleet-{n}"] / "workspace" / "hosts"
            missing = [h for h in (lab.name(x) for x in lab.hosts[:n]) if not (results / h / "slept.txt").is_file()]
            if missing:
                self.notes.append(f"(d): after the {n}-host runs no slept.txt came back for {missing}")

    # -- (e) controller memory ------------------------------------------------------------------------------

    def memory(self) -> None:
        """Peak memory with 1 and 8 hosts; at 8 hosts also two Ansible knobs (strategy, forks), set from outside."""
        lab = self.lab
        # `forks: auto` (the default) gives a run one fork per controller CPU; forks 8 is one per host (what the
        # previous default, a fixed 20, gave): the memory/time trade-off of that choice, measured.
        forks8 = lab.write_settings("fleet-8-forks8", deep_merge(
            yaml.safe_load(lab.fleet_settings_files[8].read_text()), {"platforms": {"ssh-ansible": {"forks": 8}}}))
        for _ in range(2 if self.reps_slow > 1 else 1):
            for key, n, settings_file, env in (
                    ("e.ours.1", 1, lab.fleet_settings_files[1], {}),
                    ("e.ours.8", 8, lab.fleet_settings_files[8], {}),
                    ("e.ours.8.upload", 8, lab.fleet_settings_files[8], {}),
                    ("e.ours.8.free", 8, lab.fleet_settings_files[8], {"ANSIBLE_STRATEGY": "free"}),
                    ("e.ours.8.forks8", 8, forks8, {})):
                cube = lab.cubes[f"ours-fleet-{n}"]
                if key == "e.ours.8.upload":  # a local input changed: all 8 hosts get an upload too
                    (cube / "workspace" / "seconds.txt").write_text("1\n")
                # The run starts its own masters: their memory is counted.
                lab.close_masters(lab.settings_of(settings_file), lab.hosts[:n])
                argv = [str(MLCUBE), "run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=sleep"]
                self.record(key, run_process(argv, env=cli_env(settings_file) | env, sample=True))
                if n == 1 or key == "e.ours.8":
                    self.record(f"e.base.{n}", baseline("run", lab.baseline_hosts[n], lab.cubes[f"base-fleet-{n}"],
                                                        "sleep", sample=True))

    # -- where the time goes: start-up costs and experiments ------------------------------------------------

    def startup_costs(self) -> None:
        empty_dir = Path(tempfile.mkdtemp(prefix="bench-empty-", dir=self.lab.workdir))
        (empty_dir / "empty.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks: []\n")
        (empty_dir / "inventory.yml").write_text("all: {}\n")
        env = dict(os.environ, **execute.environment(True))
        for _ in range(3):
            self.record("x.python-pass", run_process([sys.executable, "-c", "pass"]))
            self.record("x.mlcube-help", run_process([str(MLCUBE), "--help"],
                                                     env=cli_env(self.lab.single_settings_file)))
            self.record("x.ansible-playbook-version", run_process([str(ANSIBLE_PLAYBOOK), "--version"], env=env))
            self.record("x.ansible-playbook-empty", run_process(
                [str(ANSIBLE_PLAYBOOK), "-i", str(empty_dir / "inventory.yml"), str(empty_dir / "empty.yml")], env=env))
            self.record("x.runner-empty", self._runner_playbook(empty_dir / "empty.yml",
                                                                empty_dir / "inventory.yml", {}))
            self.record("x.runner-run.yml-no-host", self._runner_playbook(
                assets.playbook("run"), empty_dir / "inventory.yml", {"mlcube_ssh_hosts": "nohost"}))
        shutil.rmtree(empty_dir, ignore_errors=True)

    @staticmethod
    def _runner_playbook(playbook: Path, inventory: Path, extravars: dict[str, Any]) -> Result:
        import ansible_runner

        private = tempfile.mkdtemp(prefix="bench-runner-")
        start = time.monotonic()
        out = ansible_runner.run(private_data_dir=private, playbook=str(playbook), inventory=str(inventory),
                                 extravars=extravars, envvars=execute.environment(True), quiet=True,
                                 settings={"suppress_ansible_output": True})
        seconds = time.monotonic() - start
        shutil.rmtree(private, ignore_errors=True)
        return Result(seconds, out.rc == 0, f"rc {out.rc}")

    def variants(self) -> None:
        """Same warm 1-second run on host 1, changing one thing at a time (through settings/inventory only)."""
        lab = self.lab
        h1 = lab.hosts[0]
        job = self.job("ours-single", "sleep")
        single = lab.settings_of(lab.single_settings_file)
        plain_inventory = lab.write_inventory("x-plain", [h1])
        discovery_inventory = lab.write_inventory("x-discovery", [h1], ansible_python_interpreter="auto_silent")
        by_inventory = lab.settings_of(lab.write_settings("x-plain", lab.fleet_settings(plain_inventory)))
        discovery = lab.settings_of(lab.write_settings("x-discovery", lab.fleet_settings(discovery_inventory)))
        rendered = render_module.render_inventory(single)["all"]["vars"]
        self.meta["shim_python"] = str(rendered.get("ansible_python_interpreter"))
        for _ in range(self.reps):
            self.record("x.run.host", ours_api("run", single, job))
            self.record("x.run.unchanged", ours_api("run", single, job))
            self.record("x.run.inventory", ours_api("run", by_inventory, job))
            self.record("x.run.inventory+discovery", ours_api("run", discovery, job))
            lab.close_masters(single, [h1])
            self.record("x.run.cold-master", ours_api("run", single, job))
            self.record("x.run.ansible-playbook", self._plain_playbook(single, job))
            self.record("x.rsync-noop", run_process(self._baseline_rsync(h1, lab.cubes["base-single"])))
            self.record("x.rsync-mux-noop", run_process(self._mux_rsync(single, h1, lab.cubes["ours-single"])))
            self.record("x.ssh-new-true", run_process([*ssh_argv(h1), "true"]))
            self.record("x.ssh-mux-true", run_process([*self._mux_ssh(single, h1), "true"]))
            self.record("x.ssh-mux-python", run_process([*self._mux_ssh(single, h1),
                                                                     "/usr/bin/python3 -c pass"]))

    @staticmethod
    def _mux_ssh(settings: Settings, h: SshHost) -> list[str]:
        """ssh through our ControlPersist master (the one Ansible just used), with mlcube-ssh-ansible's options."""
        argv = ssh_argv(h)
        return argv[:-1] + ssh_args(settings) + [argv[-1]]

    @classmethod
    def _mux_rsync(cls, settings: Settings, h: SshHost, cube: Path) -> list[str]:
        """A bare `rsync -a --dry-run` of our unchanged cube to our remote folder, through our warm master."""
        rsh = shlex.join(cls._mux_ssh(settings, h)[:-1])
        return ["rsync", "-a", "--dry-run", "--delete", "--filter=P /workspace/***", "--exclude=/workspace/hosts/",
                "-e", rsh, f"{cube}/", f"{h.user.name}@{h.address}:{h.user.home}/mlcube/{remote_name(str(cube))}/"]

    @staticmethod
    def _baseline_rsync(h: SshHost, cube: Path) -> list[str]:
        rsh = shlex.join(ssh_argv(h)[:-1])
        return ["rsync", "-a", "--delete", "--filter=P /workspace/***", "--exclude=/workspace/hosts/", "-e", rsh,
                f"{cube}/",
                f"{h.user.name}@{h.address}:mlcube-baseline/{cube.name}/"]

    def _plain_playbook(self, settings: Settings, job: Job) -> Result:
        """The same playbook, inventory and extra-vars through ansible-playbook directly (no ansible-runner)."""
        inventory, extravars = render(settings, job)
        private = Path(tempfile.mkdtemp(prefix="bench-plain-", dir=self.lab.workdir))
        (private / "inventory.yml").write_text(yaml.safe_dump(inventory))
        (private / "extravars.json").write_text(json.dumps(extravars))
        env = dict(os.environ, **execute.environment(settings.host_key_checking != "off"))
        result = run_process([str(ANSIBLE_PLAYBOOK), "-i", str(private / "inventory.yml"), "-e",
                              f"@{private / 'extravars.json'}", "-f", str(forks_for(settings, "run")),
                              str(assets.playbook("run"))], env=env, cwd=private)
        shutil.rmtree(private, ignore_errors=True)
        return result

    def task_costs(self) -> None:
        """What one task costs the controller per host: synthetic plays on the 8 hosts, through ansible-playbook.

        The same inventory and ssh options as ours (render + the fleet inventory file); `set_fact` tasks never
        connect, `stat` tasks ship a module to every host through the (warm) connection masters.
        """
        lab = self.lab
        settings = lab.settings_of(lab.fleet_settings_files[8])
        private = Path(tempfile.mkdtemp(prefix="bench-tasks-", dir=lab.workdir))
        inventory, _ = render(settings, lab.job(lab.cubes["ours-fleet-8"]))
        (private / "inventory.yml").write_text(yaml.safe_dump(inventory))
        plays = {
            "empty": [],
            "set_fact-x20": [{"ansible.builtin.set_fact": {f"x{i}": i}} for i in range(20)],
            "stat-x5": [{"ansible.builtin.stat": {"path": "/", "get_checksum": False}} for _ in range(5)],
        }
        for name, tasks in plays.items():
            (private / f"{name}.yml").write_text(yaml.safe_dump(
                [{"hosts": "all", "gather_facts": False, "tasks": tasks}], sort_keys=False))
        env = dict(os.environ, **execute.environment(settings.host_key_checking != "off"))
        for _ in range(self.reps_slow):
            for name in plays:
                self.record(f"t.8.{name}", run_process(
                    [str(ANSIBLE_PLAYBOOK), "-i", str(private / "inventory.yml"), "-i", str(settings.inventory),
                     "-f", str(forks_for(settings, "run")), str(private / f"{name}.yml")], env=env, cwd=private))
        shutil.rmtree(private, ignore_errors=True)

    def cleanup_remote(self) -> None:
        """Drop the 100 MB outputs (the rest stays: the next benchmark run reuses it)."""
        self.drop_blobs()


# ------------------------------------------------------------------------------------------------ report


def _first_line(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
        return ((proc.stdout or proc.stderr).strip().splitlines() or ["?"])[0]
    except OSError:
        return "?"


def machine() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "CPU": cpu,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "ansible-core": version("ansible-core"),
        "ansible-runner": version("ansible-runner"),
        "ansible (collections)": version("ansible"),
        "mlcube / mlcube-docker": f"{version('mlcube')} / {version('mlcube-docker')}",
        "rsync": _first_line(["rsync", "--version"]),
        "OpenSSH": _first_line(["ssh", "-V"]),
        "Docker": _first_line(["docker", "version", "--format", "{{.Server.Version}}"]),
        "mlcube-ssh-ansible commit": _commit(),
    }


def _commit() -> str:
    """The checkout's commit, and whether the shim, roles or playbooks differ from it."""
    head = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "mlcube_ssh_ansible", "roles",
                            "playbooks"], capture_output=True, text=True, check=False).stdout.strip()
    return head + (" with uncommitted changes to the shim, roles or playbooks" if dirty else "")


def _median_of(bench: Bench, key: str) -> float | None:
    return bench.series[key].median if key in bench.series else None


def _peaks(bench: Bench, key: str) -> list[Result]:
    return [r for r in bench.series.get(key, Series("")).results if r.ok and r.peak_rss]


def _peak_mb(bench: Bench, key: str) -> float | None:
    results = _peaks(bench, key)
    return statistics.median(r.peak_rss / MB for r in results) if results else None


def _profile_summary(bench: Bench, key: str) -> dict[str, Any]:
    return summarize_profiles([r.profile for r in bench.series.get(key, Series("")).results if r.ok and r.profile])


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def write_report(bench: Bench, out: Path, started: datetime.datetime, wall: float, quick: bool) -> None:
    S = bench.series

    def med(key: str) -> float | None:
        return _median_of(bench, key)

    lines: list[str] = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add("Generated by `.venv/bin/python benchmarks/bench.py`" + (" **--quick (1 repetition: not valid numbers)**"
                                                                   if quick else "") + "; do not edit by hand.")
    add(f"Run on {started:%Y-%m-%d %H:%M} UTC, {wall / 60:.1f} min in all. How to run it and what each "
        "measurement does: [benchmarks/README.md](../benchmarks/README.md).")
    add("")
    add("*Ours* is mlcube-ssh-ansible, *baseline* is [benchmarks/baseline.sh](../benchmarks/baseline.sh): the same "
        "steps with plain `ssh` and `rsync -a` (no ControlMaster). Every number is the median of the repetitions, "
        "which ran interleaved (ours, baseline, ours, baseline, ...) on loopback hosts (one sshd on "
        "127.0.0.2-127.0.0.9, one Linux user per host, one shared Docker engine) on the same 2-core machine: "
        "the \"remote\" work competes with the controller for the same two CPUs, and other jobs may have run too "
        "(load averages below).")
    add("")

    # ---- main table
    a_o, a_b = med("a.ours"), med("a.base")
    b_o, b_b = med("b.ours"), med("b.base")
    c_o = _diff(med("c.ours.blob"), med("c.ours.tiny"))
    c_b = _diff(med("c.base.blob"), med("c.base.tiny"))
    d1, d1_b = med("d.ours.1"), med("d.base.1")
    add("## Results")
    add("")
    add("| Measurement | Ours | Baseline | Ours / baseline | Target | Met? |")
    add("|---|---|---|---|---|---|")
    add(f"| (a) warm `run`, 1-second task, 1 host | {fmt(a_o)} | {fmt(a_b)} | {fmt(ratio(a_o, a_b), 'x')} | "
        f"{TARGETS['a'][0]} | {verdict('a', ratio(a_o, a_b))} |")
    add(f"| (b) no-op `configure`, 1 host{' (default: skip_unchanged)' if 'b.ours-contact' in S else ''} | "
        f"{fmt(b_o)} | {fmt(b_b)} | {fmt(ratio(b_o, b_b), 'x')} | {TARGETS['b'][0]} | "
        f"{verdict('b', ratio(b_o, b_b))} |")
    if "b.ours-contact" in S:
        b_c = med("b.ours-contact")
        add(f"| (b) no-op `configure`, 1 host, `skip_unchanged: false` (contacts the host) | {fmt(b_c)} | "
            f"{fmt(b_b)} | {fmt(ratio(b_c, b_b), 'x')} | {TARGETS['b'][0]} | {verdict('b', ratio(b_c, b_b))} |")
    add(f"| (c) marginal cost of 100 MB of task output | {fmt(c_o)} | {fmt(c_b)} | {fmt(ratio(c_o, c_b), 'x')} | "
        f"{TARGETS['c'][0]} | {verdict('c', ratio(c_o, c_b))} |")
    for n in FLEET_SIZES:
        o, b = med(f"d.ours.{n}"), med(f"d.base.{n}")
        scale, base_scale = ratio(o, d1), ratio(b, d1_b)
        target, met = {4: (TARGETS["d4"][0], verdict("d4", scale)),
                       8: (TARGETS["d8"][0], verdict("d8", scale))}.get(n, ("", ""))
        add(f"| (d) `run` on {n} host{'s' if n > 1 else ''}: ours {fmt(scale, 'x')} one host, baseline "
            f"{fmt(base_scale, 'x')} | {fmt(o)} | {fmt(b)} | {fmt(ratio(o, b), 'x')} | {target} | {met} |")
    for n in (1, 8):
        o, b = _peak_mb(bench, f"e.ours.{n}"), _peak_mb(bench, f"e.base.{n}")
        target, met = (TARGETS["e8"][0], verdict("e8", o)) if n == 8 else ("", "")
        add(f"| (e) controller peak RSS, `run` on {n} host{'s' if n > 1 else ''} | {fmt(o, 'MB', 0)} | "
            f"{fmt(b, 'MB', 0)} | {fmt(ratio(o, b), 'x')} | {target} | {met} |")
    add("")
    add("Ours is the `mlcube` command line (`mlcube run|configure --platform=ssh-ansible`) in (a), (b), (d) and "
        "(e), as a user runs it; in (c) it is `workflow.run` called in-process (the difference of two runs "
        "cancels the fixed costs either way), which also gives the per-step profile below.")
    add("")

    # ---- CPU
    def cpu_med(key: str, attr: str) -> float | None:
        values = [getattr(r, attr) for r in S.get(key, Series("")).results if r.ok and r.machine_cpu]
        return statistics.median(values) if values else None

    add("CPU seconds per command (medians): *controller* is the command's own process tree (user + system); "
        "*machine* is every busy CPU second of the 2-core machine meanwhile, which includes the \"remote\" side "
        "(sshd, remote Python, Docker) and whatever else ran at the time.")
    add("")
    add("| Command | Ours: controller | Ours: machine | Baseline: controller | Baseline: machine |")
    add("|---|---|---|---|---|")
    for label, ours_key, base_key in (
            ("(a) warm run, 1 host", "a.ours", "a.base"), ("(b) no-op configure", "b.ours", "b.base"),
            ("(b) no-op configure, hosts contacted", "b.ours-contact", "b.base"),
            *((f"(d) run, {n} hosts", f"d.ours.{n}", f"d.base.{n}") for n in FLEET_SIZES)):
        add(f"| {label} | {fmt(cpu_med(ours_key, 'cpu'))} | {fmt(cpu_med(ours_key, 'machine_cpu'))} | "
            f"{fmt(cpu_med(base_key, 'cpu'))} | {fmt(cpu_med(base_key, 'machine_cpu'))} |")
    add("")

    # ---- details of each measurement
    add("### What was measured")
    add("")
    add("- (a) Ours: `mlcube run --platform=ssh-ansible --task=sleep` (seconds.txt = 1), connection masters warm "
        "(ControlPersist from the previous repetition); nothing changed locally since the previous repetition, so "
        "the upload is skipped (the host still carries that run's stamp; the outputs are fetched as always). "
        "Baseline: `rsync -a --delete` up (finding nothing to send), `ssh host "
        "venv/bin/python -m mlcube run --platform=docker --task=sleep`, `rsync -a` of the workspace back. "
        f"The same run through the Python API (`workflow.run`, no MLCube CLI): {fmt(med('a.ours-api'))}.")
    add("- (b) Ours: `mlcube configure --platform=ssh-ansible` with nothing changed"
        + (": by default (`skip_unchanged`) the shim compares a local fingerprint of the cube and settings with "
           "the last successful configure's and does not contact the host at all; with `skip_unchanged: false` "
           "it runs the playbook, whose remote fingerprint skips the remote `mlcube configure`."
           if "b.ours-contact" in S else " (the remote `mlcube configure` is skipped by the fingerprint).")
        + " Baseline: `ssh host pip install -q REQS` (already satisfied), `rsync -a` up, `ssh host mlcube "
        "configure --platform=docker` (a cached `docker build`). Through the Python API (hosts contacted): "
        f"{fmt(med('b.ours-api'))}.")
    if c_o is not None and c_b is not None:
        add(f"- (c) A task writing 100 MiB from /dev/urandom minus a task writing 4 KiB, both fetched; a task's "
            f"local output is deleted before it runs, so every blob run moves all 100 MiB and no tiny run moves "
            f"them (checked). Ours: blob "
            f"{fmt(med('c.ours.blob'))}, tiny {fmt(med('c.ours.tiny'))}; baseline: blob {fmt(med('c.base.blob'))}, "
            f"tiny {fmt(med('c.base.tiny'))}. Effective rate of the marginal part (writing + moving the data): ours "
            f"{100 / c_o if c_o > 0 else float('nan'):.0f} MiB/s, baseline "
            f"{100 / c_b if c_b > 0 else float('nan'):.0f} MiB/s.")
    add("- (d) Ours: `inventory` (YAML, per-host ansible_host/ansible_port/ansible_user/"
        "ansible_ssh_private_key_file) + `hosts: all`; each host's workspace comes back into "
        "workspace/hosts/NAME/. Baseline: the per-host script for every host as a background job, then `wait`. "
        "Masters warm, as in (a). Each fleet size has its own local cube (both sides), so that every run "
        "repeats its own previous one: a 1-host run fetches into the workspace itself, which would make the "
        "next N-host run of a shared cube upload again.")
    add("- (e) Peak of the summed RSS of the command's whole process tree, sampled every 50 ms from /proc, "
        "including the ssh connection masters the command starts (they daemonise; the benchmark is their "
        "subreaper, so it still sees them). Masters were closed before each of these runs, so that the run "
        "starts, and is charged for, its own. RSS counts pages shared by the forked Ansible workers once per "
        "process; the summed PSS (shared pages divided among their users, sampled every 250 ms) is the "
        "memory the machine really gives up. A sample may catch one more `ansible-playbook` than forks + 1: a "
        "process between fork and exec (an ssh or rsync starting), whose pages are still the parent's; it "
        "lasts about a millisecond and adds ~50 MB to the sum, not to PSS. "
        "`e.ours.8.upload` changes a local input first, so that all 8 hosts "
        "upload as well as fetch. Per run:")
    for key in ("e.ours.1", "e.base.1", "e.ours.8", "e.base.8", "e.ours.8.upload", "e.ours.8.free",
                "e.ours.8.forks8"):
        results = _peaks(bench, key)
        if results:
            worst = max(results, key=lambda r: r.peak_rss)
            add(f"  - `{key}`: {', '.join(f'{r.seconds:.1f} s' for r in results)}; peak RSS "
                f"{', '.join(f'{r.peak_rss / MB:.0f}' for r in results)} MB, peak PSS "
                f"{', '.join(f'{r.peak_pss / MB:.0f}' for r in results)} MB; at the highest peak: {worst.peak_detail}")
    add("")

    # ---- findings
    add("## Where our seconds go")
    add("")
    sa = _profile_summary(bench, "a.ours-api")
    sb = _profile_summary(bench, "b.ours-api")
    s8 = _profile_summary(bench, "d.ours-api.8")
    findings: list[str] = []
    if sa:
        modules = sum(r.get("modules") or 0 for r in sa["roles"])
        rsyncs = sum(r.get("rsyncs") or 0 for r in sa["roles"])
        call = sa.get("module_call")
        plural = "" if rsyncs == 1 else "s"
        findings.append(
            f"A warm 1-host `run` ships **{modules:.0f} Ansible module calls** and starts {rsyncs:.0f} rsync{plural} "
            "per host "
            f"(table below). One module call (a tiny `stat`/`file`/`command`) costs a median "
            f"**{fmt(call)}** through the warm ControlPersist master, while the same master answers `ssh host true` "
            f"in {fmt(med('x.ssh-mux-true'))} and `ssh host python3 -c pass` in {fmt(med('x.ssh-mux-python'))}: the "
            "rest is Ansible's per-task machinery (worker fork, templating, AnsiballZ payload, remote module "
            "start-up), not the network.")
        findings.append(
            f"Fixed costs per command: Ansible start-up (`workflow.run` called -> first event) "
            f"{fmt(sa['phases'].get('start-up (call -> playbook_on_start)'))}, after the last task "
            f"{fmt(sa['phases'].get('end (last result -> workflow returns)'))}, and the `mlcube` CLI around it "
            f"{fmt(_diff(a_o, med('a.ours-api')))} more (CLI run (a) minus API run). For comparison "
            f"`ansible-playbook --version` takes {fmt(med('x.ansible-playbook-version'))}, an empty play through "
            f"ansible-runner {fmt(med('x.runner-empty'))}, and `mlcube --help` {fmt(med('x.mlcube-help'))}.")
    if a_b is not None:
        findings.append(
            f"The baseline's whole warm run is {fmt(a_b)}: two rsyncs over new connections "
            f"({fmt(med('x.rsync-noop'))} each for an unchanged cube; a new ssh login alone is "
            f"{fmt(med('x.ssh-new-true'))}) and one ssh running `mlcube run`.")
    if sa:
        syncs = [row for row in sa["tasks"] if row["kind"] == "rsync" and row["median"] is not None]
        if syncs:
            findings.append(
                "Transfers (`mlcube_ssh_synchronize`: ansible.posix.synchronize with its module run inside the "
                "Ansible worker): " + ", ".join(f"\"{row['task']}\" takes {fmt(row['median'])}" for row in syncs)
                + f" in a warm run, while a bare `rsync -a -n` of the same unchanged cube through the same warm "
                f"master takes {fmt(med('x.rsync-mux-noop'))}: the rest is the synchronize action and the task "
                "around it, not rsync. A warm run whose local files did not change skips the upload (the host "
                "still carries the last run's stamp).")
    skip = _diff(med("x.run.host"), med("x.run.unchanged"))
    findings.append(
        f"Skipping an unchanged upload: the same warm run takes {fmt(med('x.run.unchanged'))} when nothing "
        f"changed locally since the previous run vs {fmt(med('x.run.host'))} right after runs of other settings "
        f"changed the local workspace (difference {fmt(skip)}). The other variants below all upload.")
    interp = _diff(med("x.run.inventory+discovery"), med("x.run.inventory"))
    shim_python = bench.meta.get("shim_python", "?")
    cold = _diff(med("x.run.cold-master"), med("x.run.host"))
    runner = _diff(med("x.run.host"), med("x.run.ansible-playbook"))
    findings.append(
        f"Interpreter: the shim sets `ansible_python_interpreter: {shim_python}`; forcing discovery "
        f"(`auto_silent`) from the inventory gives {fmt(med('x.run.inventory+discovery'))} vs "
        f"{fmt(med('x.run.inventory'))} (difference {fmt(interp)}, one extra round trip per host and command). "
        f"The same host given as `host` instead of `inventory`: {fmt(med('x.run.host'))}.")
    findings.append(
        f"ControlPersist reuse: a run right after `ssh -O exit` (new master) takes {fmt(med('x.run.cold-master'))} "
        f"vs {fmt(med('x.run.host'))} warm (difference {fmt(cold)}); the masters live "
        f"ControlPersist={getattr(render_module, 'CONTROL_PERSIST', '?')} after the last use, so a command "
        "that comes later than that pays this.")
    findings.append(
        f"ansible-runner vs `ansible-playbook` run directly with the same inventory, extra-vars and environment: "
        f"{fmt(med('x.run.host'))} (in-process `workflow.run`) vs {fmt(med('x.run.ansible-playbook'))} "
        f"(difference {fmt(runner)}).")
    t_empty, t_fact, t_stat = (S[f"t.8.{n}"] if f"t.8.{n}" in S else Series(n)
                               for n in ("empty", "set_fact-x20", "stat-x5"))

    def cpu_of(series: Series) -> float | None:
        values = [r.cpu for r in series.results if r.ok]
        return statistics.median(values) if values else None

    def machine_of(series: Series) -> float | None:
        values = [r.machine_cpu for r in series.results if r.ok]
        return statistics.median(values) if values else None

    fact_cpu = _diff(cpu_of(t_fact), cpu_of(t_empty))
    stat_machine = _diff(machine_of(t_stat), machine_of(t_empty))
    stat_cpu = _diff(cpu_of(t_stat), cpu_of(t_empty))
    fact_wall = _diff(t_fact.median, t_empty.median)
    stat_wall = _diff(t_stat.median, t_empty.median)
    if fact_cpu is not None and stat_cpu is not None and fact_wall is not None and stat_wall is not None:
        tasks_a = sum((r.get("executed") or 0) for r in sa["roles"]) if sa else None
        findings.append(
            f"What one task costs on 8 hosts (synthetic plays through `ansible-playbook`, same inventory and ssh "
            f"options): a `set_fact`, which never connects, costs the controller "
            f"**{fact_cpu / 160 * 1000:.0f} ms of CPU per host** and {fact_wall / 20:.2f} s of wall time per task; "
            f"a `stat` module call costs **{stat_cpu / 40 * 1000:.0f} ms of CPU per host** and {stat_wall / 5:.2f} s "
            f"per task (all 8 hosts in lock-step). Every task runs in a forked worker per host, so the "
            f"{fmt(tasks_a, '', 0)} tasks a warm run executes per host (validate_argument_spec, assert and set_fact "
            "included) all cost controller CPU.")
        if stat_machine is not None:
            findings.append(
                f"The \"remote\" side of a module call is dearer still: the whole machine spent "
                f"{stat_machine / 40:.2f} CPU s per `stat` call per host, so about "
                f"{(stat_machine - stat_cpu) / 40:.2f} s outside the controller (sshd, the remote Python unpacking "
                "the AnsiballZ payload and importing module_utils). Here all 8 \"hosts\" share the controller's 2 "
                f"cores, so one module task on 8 hosts needs at least {stat_machine / 40 * 8 / 2:.2f} s of wall "
                f"time (measured: {stat_wall / 5:.2f} s); on real, separate hosts only the controller's share would "
                "add up, and the fleet targets are as much a measure of this machine as of the shim.")
    if s8:
        findings.append(
            f"On 8 hosts every task runs in lock-step (strategy `linear`): a step ends when its slowest host ends, "
            f"and the 8 hosts' module calls, rsyncs and `mlcube run`s share the two CPUs with the controller. "
            f"Per-host median module call at 8 hosts: {fmt(s8.get('module_call'))} (1 host: "
            f"{fmt(sa.get('module_call') if sa else None)}). Cold 8-host runs in (e): linear "
            f"{fmt(med('e.ours.8'))}, `ANSIBLE_STRATEGY=free` {fmt(med('e.ours.8.free'))}, `forks: 8` "
            f"{fmt(med('e.ours.8.forks8'))} (peak RSS {fmt(_peak_mb(bench, 'e.ours.8'), 'MB', 0)} / "
            f"{fmt(_peak_mb(bench, 'e.ours.8.free'), 'MB', 0)} / {fmt(_peak_mb(bench, 'e.ours.8.forks8'), 'MB', 0)}).")
    for finding in findings:
        add(f"- {finding}")
    add("")

    for key, title, summary in (("a.ours-api", "(a) warm `run`, 1 host, 1-second task", sa),
                                ("b.ours-api", "(b) no-op `configure`, 1 host, hosts contacted", sb),
                                ("c.ours.blob", "(c) `run` of the 100 MiB task, 1 host",
                                 _profile_summary(bench, "c.ours.blob")),
                                ("d.ours-api.8", "(d) `run` on 8 hosts", s8)):
        if not summary:
            continue
        add(f"### {title}")
        add("")
        if summary.get("empty"):
            add(f"The {summary['runs']} in-process runs started no Ansible task (median {fmt(summary['total'])}).")
            add("")
            continue
        call = "configure" if key.startswith("b") else "run"
        add(f"Median of {summary['runs']} in-process run(s) (`workflow.{call}` "
            f"with our own Reporter){', per host' if summary['hosts'] > 1 else ''}.")
        add("")
        add("| Phase | Seconds |")
        add("|---|---|")
        for phase, value in summary["phases"].items():
            add(f"| {phase} | {fmt(value)} |")
        add("")
        add("| Role (step) | Wall per host | Inside tasks | Module calls | rsyncs | Tasks run / skipped "
            "| Reporter's `steps_done` |")
        add("|---|---|---|---|---|---|---|")
        steps = summary["reporter_steps"]
        names = {"preflight": "check", "python_env": "python env", "upload": "upload",
                 "remote_configure": "remote configure", "remote_run": "remote run", "fetch": "fetch"}
        for row in summary["roles"]:
            add(f"| {row['role']} | {fmt(row.get('wall'))} | {fmt(row.get('in_tasks'))} | "
                f"{row.get('modules') or 0:.0f} "
                f"| {row.get('rsyncs') or 0:.0f} | {row.get('executed') or 0:.0f} / {row.get('skipped') or 0:.0f} | "
                f"{fmt(steps.get(names.get(row['role'], row['role'])))} |")
        add("")
        add("<details><summary>Per task: median seconds inside the task as Ansible times it, and calls per host "
            "(retries of `until` loops count)</summary>")
        add("")
        add("| Role | Task | Action | Kind | Median | Calls | Results |")
        add("|---|---|---|---|---|---|---|")
        for row in summary["tasks"]:
            status = ", ".join(f"{k} {v}" for k, v in sorted(row["status"].items()))
            add(f"| {row['role']} | {row['task']} | {row['action']} | {row['kind']} | {fmt(row['median'])} | "
                f"{row['calls'] or 0:.0f} | {status} |")
        add("")
        add("</details>")
        add("")
    add("Reporter's `steps_done` times a step from its first task's result to the next step's first result, so it "
        "is shifted by one task against the wall column, which runs from the step's first task start to its last "
        "result. Kinds: *module* ships a module (remote, or local when delegated to localhost), *rsync* is "
        "ansible.posix.synchronize (as `mlcube_ssh_synchronize`), *controller* runs inside the Ansible process (no "
        "connection).")
    add("")

    # ---- start-up and experiments
    add("### Fixed costs and experiments (all numbers)")
    add("")
    add("Each variant changes one thing, through settings, inventory variables or the environment only (no role "
        "edits); the variants ran interleaved with each other.")
    add("")
    add("| What | Median | Controller CPU | Repetitions (s) |")
    add("|---|---|---|---|")
    labels = {
        "x.python-pass": "`python -c pass` (interpreter start)",
        "x.mlcube-help": "`mlcube --help` (MLCube CLI start-up)",
        "x.ansible-playbook-version": "`ansible-playbook --version`",
        "x.ansible-playbook-empty": "`ansible-playbook` of an empty play, no hosts",
        "x.runner-empty": "ansible-runner (in-process), empty play, no hosts",
        "x.runner-run.yml-no-host": "ansible-runner (in-process), our run.yml with its roles, no host matched",
        "x.run.host": "warm run, `host` settings (Python API, as a.ours-api), uploads (the variants before it "
                      "fetched into the same workspace)",
        "x.run.unchanged": "the same run again at once: nothing changed locally, so no upload",
        "x.run.inventory": "warm run, the same host through `inventory`",
        "x.run.inventory+discovery": "... and `ansible_python_interpreter: auto_silent` (discovery) in the inventory",
        "x.run.cold-master": "warm run right after `ssh -O exit` (new ControlPersist master)",
        "x.run.ansible-playbook": "the same run by `ansible-playbook` directly (no ansible-runner)",
        "x.rsync-noop": "baseline's `rsync -a` up of the unchanged cube (new ssh connection)",
        "x.rsync-mux-noop": "bare `rsync -a -n` of the same unchanged cube through our warm master",
        "x.ssh-new-true": "`ssh host true`, new connection (what the baseline pays per step)",
        "x.ssh-mux-true": "`ssh host true` through our warm master",
        "x.ssh-mux-python": "`ssh host /usr/bin/python3 -c pass` through our warm master",
        "t.8.empty": "`ansible-playbook`, empty play on the 8 hosts",
        "t.8.set_fact-x20": "... 20 `set_fact` tasks (no connection)",
        "t.8.stat-x5": "... 5 `stat` tasks (module calls through warm masters)",
        "e.ours.8": "8-host run, cold masters, defaults (linear, `forks: auto`)",
        "e.ours.8.upload": "8-host run, cold masters, a local input changed (all 8 hosts upload)",
        "e.ours.8.free": "8-host run, cold masters, `ANSIBLE_STRATEGY=free`",
        "e.ours.8.forks8": "8-host run, cold masters, `forks: 8` (one per host)",
    }
    for key, label in labels.items():
        if key in S:
            series = S[key]
            fails = f"; {len(series.failures)} failed: {series.failures[0][:200]}" if series.failures else ""
            add(f"| {label} | {fmt(series.median)} | {fmt(cpu_med(key, 'cpu'))} | {series.raw()}{fails} |")
    add("")

    # ---- machine
    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    recorded = json.loads(bench.meta["machine"]) if "machine" in bench.meta else machine()
    for key, value in recorded.items():
        add(f"| {key} | {value} |")
    add(f"| load average (1, 5, 15 min) at each phase's start | "
        f"{'; '.join(f'{k}: {v}' for k, v in bench.loads.items())} |")
    add(f"| phase durations | {'; '.join(f'{k}: {v:.0f} s' for k, v in bench.phase_seconds.items())} |")
    add("")

    # ---- raw
    add("## Raw repetitions (seconds, in run order)")
    add("")
    add("| Series | Runs | Median |")
    add("|---|---|---|")
    for key, series in S.items():
        add(f"| {key} | {series.raw()} | {fmt(series.median)} |")
    add("")
    failures = [(key, f) for key, series in S.items() for f in series.failures]
    if failures or bench.notes:
        add("## Failures and notes")
        add("")
        for note in bench.notes:
            add(f"- {note}")
        for key, failure in failures:
            add(f"- `{key}`: {failure[:400]}")
        add("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


# -------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition of everything (development only)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of (a), (b) and (c) [5]")
    parser.add_argument("--reps-slow", type=int, default=3, help="repetitions of (d) and the variants [3]")
    parser.add_argument("--only", default="abcdex", help="sections to run, e.g. 'ad' [abcdex]")
    parser.add_argument("--report-only", action="store_true",
                        help=f"rewrite the report from the last run's {WORKDIR}/results.pickle, measuring nothing")
    parser.add_argument("--out", type=Path, help=f"report file [{DEFAULT_OUT.relative_to(REPO)}; "
                                                 f"{WORKDIR}/benchmarks-quick.md with --quick]")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.py must run as root: it starts sshd and creates users (like the integration tests)",
              file=sys.stderr)
        return 2
    reps, reps_slow = (1, 1) if args.quick else (args.reps, args.reps_slow)
    out = args.out or (WORKDIR / "benchmarks-quick.md" if args.quick else DEFAULT_OUT)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    saved = WORKDIR / "results.pickle"
    if args.report_only:
        state = pickle.loads(saved.read_bytes())  # noqa: S301 (our own file, written by the previous run)
        bench = Bench(Lab(WORKDIR), reps, reps_slow, True)
        bench.series, bench.notes, bench.loads, bench.phase_seconds = (
            state["series"], state["notes"], state["loads"], state["phase_seconds"])
        bench.meta = state.get("meta", {})
        write_report(bench, out, state["started"], state["wall"], state["quick"])
        log(f"report written to {out}")
        return 0
    # A `kill` must still stop our sshd and write what was measured (finally below).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    become_subreaper()
    WORKDIR.mkdir(parents=True, exist_ok=True)
    lab = Lab(WORKDIR)
    bench = Bench(lab, reps, reps_slow, "x" in args.only)
    try:
        bench.meta["machine"] = json.dumps(machine())
        log(f"setting up hosts in {WORKDIR}")
        lab.start()
        bench.phase("warm-up (not timed)", bench.warm_up)
        if "b" in args.only:
            bench.phase("(b) no-op configure", bench.noop_configure)
        if "a" in args.only:
            bench.phase("(a) warm run", bench.warm_run)
        if "c" in args.only:
            bench.phase("(c) 100 MB output", bench.big_output)
        if "d" in args.only:
            bench.phase("(d) fleet", bench.fleet)
        if "e" in args.only:
            bench.phase("(e) memory", bench.memory)
        if "x" in args.only:
            bench.phase("start-up costs", bench.startup_costs)
            bench.phase("variants", bench.variants)
            bench.phase("task costs", bench.task_costs)
        bench.phase("clean-up", bench.cleanup_remote)
    finally:
        lab.stop()
        wall = time.monotonic() - t0
        saved.write_bytes(pickle.dumps({"series": bench.series, "notes": bench.notes, "loads": bench.loads,
                                        "meta": bench.meta,
                                        "phase_seconds": bench.phase_seconds, "started": started, "wall": wall,
                                        "quick": args.quick}))
        write_report(bench, out, started, wall, args.quick)
        (WORKDIR / "results.json").write_text(json.dumps(
            {k: [{"seconds": r.seconds, "ok": r.ok, "detail": r.detail, "peak_rss": r.peak_rss,
                  "peak_pss": r.peak_pss} for r in s.results] for k, s in bench.series.items()}, indent=1))
        log(f"report written to {out} ({(time.monotonic() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
