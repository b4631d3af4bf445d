"""Memory and CPU of a command's process tree, read from /proc and getrusage (no psutil)."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import resource
import threading
from pathlib import Path

from benchmarks.config import MB, PAGE

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
