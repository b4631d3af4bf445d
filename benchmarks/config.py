"""What the benchmark runs against: paths, the lab's hosts and users, fleet sizes, the issue's targets, logging."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BENCH_DIR = REPO / "benchmarks"
CUBE_SOURCE = BENCH_DIR / "cubes" / "bench"
BASELINE = BENCH_DIR / "baseline.sh"
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
# A fixed folder (not a random temporary one): the remote folders are named after the local cube paths, so a
# second benchmark run finds its remote cubes again. Only root writes here.
WORKDIR = Path(os.environ.get("MLCUBE_BENCH_DIR", "/var/tmp/mlcube-ssh-ansible-bench"))  # noqa: S108
VENV_BIN = Path(sys.executable).parent
MLCUBE = VENV_BIN / "mlcube"
TOOL = VENV_BIN / "mlcube-ssh-ansible"  # our own CLI (sweep, sweep-attach)
ANSIBLE_PLAYBOOK = VENV_BIN / "ansible-playbook"

FLEET_SIZES = (1, 2, 4, 8)
# Fleets at scale (issue 12): one user per host on 127.0.0.2 and up, a ready interpreter shared by all of them.
BIG_FLEET_SIZES = (32, 64)
# --smoke: every case once, the big fleets just past the 8 small-fleet hosts (not valid numbers).
SMOKE_BIG_FLEET_SIZES = (9, 10)
# (g) a sweep (issue 15): SWEEP_RUNS one-second runs over hosts 1-SWEEP_HOSTS, SWEEP_SLOTS CPU-only slots each.
SWEEP_HOSTS = 4
SWEEP_SLOTS = 4
SWEEP_RUNS = 64
SMOKE_SWEEP_RUNS = 8  # --smoke and --quick


def addresses(count: int) -> list[str]:
    """The lab's host addresses: 127.0.0.2 and up (127.0.0.1 is refused by design), one per host."""
    if not 0 < count <= 250:
        raise ValueError(f"the lab has room for 1-250 hosts on 127.0.0.2-127.0.0.251, not {count}")
    return [f"127.0.0.{i}" for i in range(2, count + 2)]


def users(count: int) -> list[str]:
    """One Linux user per host, mlcube-b1 ... (tests/hosts.py's make_user adds $MLCUBE_TEST_USER_SUFFIX)."""
    return [f"mlcube-b{i}" for i in range(1, count + 1)]


# What mlcube_settings() installs remotely; the baseline uses the very same virtualenv.
REQUIREMENTS = "mlcube==0.0.9 mlcube-docker==0.0.9"
BASELINE_PYTHON = "~/.venvs/mlcube/bin/python"

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024

# The targets: (label, limit, inclusive). Ratios for a-d, z and f32, megabytes for e8 and pss*.
TARGETS: dict[str, tuple[str, float, bool]] = {
    "a": ("<= 2.0x", 2.0, True),
    "b": ("<= 1.0x", 1.0, True),
    "c": ("<= 1.2x", 1.2, True),
    "d4": ("<= 2x one host", 2.0, True),
    "d8": ("<= 3x one host", 3.0, True),
    "e8": ("< 300 MB", 300.0, False),
    # Issue 12: a near-zero task on 1 host, 32 hosts against the floor's parallel run, PSS at 32 and 64 hosts.
    "z": ("<= 1.5x (stretch 1.2x)", 1.5, True),
    "f32": ("<= 1.5x", 1.5, True),
    "pss32": ("< 300 MB", 300.0, False),
    "pss64": ("< 300 MB", 300.0, False),
}


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", flush=True)
