#!/usr/bin/env python3
"""Benchmark of mlcube-ssh-ansible against a hand-written `ssh` + `rsync -a` baseline (issue 6).

One command, run as root from the repository root:

    .venv/bin/python benchmarks/bench.py            # full run, writes docs/benchmarks.md (see README.md)
    .venv/bin/python benchmarks/bench.py --quick    # 1 repetition of everything, for development only
    .venv/bin/python benchmarks/bench.py --smoke    # every case once, small big fleets: does it all still run?

It sets up its own "remote" hosts with tests/hosts.py (one sshd on 127.0.0.2 and up, one user per host,
mlcube-b1..b64, Docker), warms them up (remote virtualenvs, cube configured; excluded from every timing), then
measures mlcube-ssh-ansible ("ours") and benchmarks/baseline.sh side by side, interleaved (A, B, A, B, ...), and writes
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
from benchmarks.config import (  # noqa: E402
    BIG_FLEET_SIZES,
    DEFAULT_OUT,
    REPO,
    SMOKE_BIG_FLEET_SIZES,
    SMOKE_SWEEP_RUNS,
    WORKDIR,
    log,
)
from benchmarks.lab import Lab  # noqa: E402
from benchmarks.report import machine, write_report  # noqa: E402
from benchmarks.sampler import become_subreaper  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="1 repetition of everything (development only)")
    modes.add_argument("--smoke", action="store_true",
                       help="every case once, big fleets of " + " and ".join(map(str, SMOKE_BIG_FLEET_SIZES))
                       + " hosts: shows that the benchmark works end to end (not valid numbers)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of (a), (b), (c) and (z) [5]")
    parser.add_argument("--reps-slow", type=int, default=3, help="repetitions of (d), (f) and the variants [3]")
    parser.add_argument("--only", default="abcdefgx", help="sections to run, e.g. 'ad' [abcdefgx]; without f, no "
                                                           "big fleets")
    parser.add_argument("--big-fleets", default=",".join(map(str, BIG_FLEET_SIZES)),
                        help="host counts of (f), comma-separated [%(default)s]")
    parser.add_argument("--report-only", action="store_true",
                        help=f"rewrite the report from the last run's {WORKDIR}/results.pickle (results-quick or "
                             "-smoke with those flags), measuring nothing")
    parser.add_argument("--note", default="", help="a sentence for the report's head, e.g. what else loaded the "
                                                   "machine (kept with the saved results)")
    parser.add_argument("--merge", type=Path, action="append", default=[],
                        help="with --report-only: also report the sections of another run's saved results (e.g. the "
                             "big fleets measured by a second invocation with --only f); repeatable")
    parser.add_argument("--out", type=Path, help=f"report file [{DEFAULT_OUT.relative_to(REPO)}; "
                                                 f"{WORKDIR}/benchmarks-quick.md or -smoke.md with those flags]")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.py must run as root: it starts sshd and creates users (like the integration tests)",
              file=sys.stderr)
        return 2
    mode = "smoke" if args.smoke else "quick" if args.quick else ""
    label = {"quick": "--quick (1 repetition: not valid numbers)",
             "smoke": "--smoke (every case once, big fleets of " + " and ".join(map(str, SMOKE_BIG_FLEET_SIZES))
                      + " hosts: not valid numbers)"}.get(mode, "")
    reps, reps_slow = (1, 1) if mode else (args.reps, args.reps_slow)
    big_sizes = SMOKE_BIG_FLEET_SIZES if args.smoke else tuple(int(n) for n in args.big_fleets.split(",") if n)
    if "f" not in args.only:
        big_sizes = ()
    out = args.out or (WORKDIR / f"benchmarks-{mode}.md" if mode else DEFAULT_OUT)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    saved = WORKDIR / (f"results-{mode}.pickle" if mode else "results.pickle")
    if args.report_only:
        state = pickle.loads(saved.read_bytes())  # noqa: S301 (our own file, written by the previous run)
        bench = Bench(Lab(WORKDIR), reps, reps_slow, True)
        bench.series, bench.notes, bench.loads, bench.phase_seconds = (
            state["series"], state["notes"], state["loads"], state["phase_seconds"])
        bench.meta = state.get("meta", {})
        label = state.get("label", "--quick (1 repetition: not valid numbers)" if state.get("quick") else "")
        wall = state["wall"]
        for other_file in args.merge:
            other = pickle.loads(other_file.read_bytes())  # noqa: S301 (our own file, from another run)
            wall += merge_into(bench, other)
        if args.note:
            bench.meta["note"] = args.note
        write_report(bench, out, state["started"], wall, label)
        log(f"report written to {out}")
        return 0
    # A `kill` must still stop our sshd and write what was measured (finally below).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    become_subreaper()
    WORKDIR.mkdir(parents=True, exist_ok=True)
    lab = Lab(WORKDIR, big_sizes)
    bench = Bench(lab, reps, reps_slow, "x" in args.only)
    if mode:
        bench.sweep_runs = SMOKE_SWEEP_RUNS
    try:
        bench.meta["machine"] = json.dumps(machine())
        bench.meta["hosts"] = str(lab.size)
        bench.meta["big_sizes"] = " ".join(map(str, big_sizes))
        if args.note:
            bench.meta["note"] = args.note
        log(f"setting up {lab.size} hosts in {WORKDIR}")
        lab.start()
        if set(args.only) & set("abcdex"):  # the big fleets (f) and the sweep (g) have warm-ups of their own
            bench.phase("warm-up (not timed)", bench.warm_up)
        if "b" in args.only:
            bench.phase("(b) no-op configure", bench.noop_configure)
        if "a" in args.only:
            bench.phase("(a) warm run", bench.warm_run)
        if "c" in args.only:
            bench.phase("(c) 100 MB output", bench.big_output)
        if "d" in args.only:
            bench.phase("(d) fleet", bench.fleet)
        if big_sizes:
            bench.phase("warm-up, big fleets (not timed)", bench.warm_up_big)
            bench.phase("(f) big fleets", bench.big_fleets)
        if "g" in args.only:
            bench.phase("warm-up, sweep (not timed)", bench.warm_up_sweep)
            bench.phase("(g) sweep", bench.sweep)
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
                                        "quick": bool(mode), "label": label}))
        write_report(bench, out, started, wall, label)
        (WORKDIR / (f"results-{mode}.json" if mode else "results.json")).write_text(json.dumps(
            {k: [{"seconds": r.seconds, "ok": r.ok, "detail": r.detail, "peak_rss": r.peak_rss,
                  "peak_pss": r.peak_pss} for r in s.results] for k, s in bench.series.items()}, indent=1))
        log(f"report written to {out} ({(time.monotonic() - t0) / 60:.1f} min)")
    return 0


def merge_into(bench: Bench, other: dict) -> float:
    """Add another invocation's saved results (its series, notes, phases, big fleet sizes); its wall time."""
    started = other["started"].strftime("%H:%M")
    bench.series.update(other["series"])
    bench.notes += other["notes"]
    for phase, value in other["loads"].items():
        bench.loads[phase if phase not in bench.loads else f"{phase} (run of {started})"] = value
    for phase, seconds in other["phase_seconds"].items():
        bench.phase_seconds[phase if phase not in bench.phase_seconds else f"{phase} (run of {started})"] = seconds
    meta = other.get("meta", {})
    if meta.get("big_sizes"):
        bench.meta["big_sizes"] = meta["big_sizes"]
        bench.meta["hosts"] = str(max(int(bench.meta.get("hosts", 8)), int(meta.get("hosts", 8))))
    for key in ("sweep", "sweep_run_seconds"):  # what (g)'s rows are computed from
        if key in meta:
            bench.meta[key] = meta[key]
    bench.meta["merged"] = " ".join(filter(None, [bench.meta.get("merged", ""), started]))
    return float(other["wall"])


if __name__ == "__main__":
    sys.exit(main())
