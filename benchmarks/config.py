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
