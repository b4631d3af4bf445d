#!/usr/bin/env python3
"""Benchmark of mlcube-ssh-ansible against a hand-written `ssh` + `rsync -a` baseline (issue 6).

One command, run as root from the repository root:

    .venv/bin/python benchmarks/bench.py            # full run (~10-15 min on 2 cores), writes docs/benchmarks.md
    .venv/bin/python benchmarks/bench.py --quick    # 1 repetition of everything, for development only

It sets up its own "remote" hosts with tests/hosts.py (one sshd on 127.0.0.2-127.0.0.9, users mlcube-b1..b8,
Docker), warms them up (remote virtualenvs, cube configured; excluded from every timing), then measures
mlcube-ssh-ansible ("ours") and benchmarks/baseline.sh side by side, interleaved (A, B, A, B, ...), and writes
the medians, ratios, targets, the machine and a per-step profile of ours to docs/benchmarks.md.

The parts: config.py (paths, hosts, targets), sampler.py (/proc memory and CPU of a process tree), lab.py (sshd,
users, cubes, settings), commands.py (one measured command of either side), profiling.py (where our seconds go),
cases.py (the measurements), report.py + templates/benchmarks.md.j2 (the report).

This is not a test: nothing here asserts on timings. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pickle
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cases import Bench  # noqa: E402
from benchmarks.config import DEFAULT_OUT, REPO, WORKDIR, log  # noqa: E402
from benchmarks.lab import Lab  # noqa: E402
from benchmarks.report import machine, write_report  # noqa: E402
from benchmarks.sampler import become_subreaper  # noqa: E402


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
