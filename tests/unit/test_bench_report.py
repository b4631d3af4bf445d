"""The benchmark's report (benchmarks/report.py + templates/benchmarks.md.j2) from made-up results.

No timing is measured or asserted here: the numbers are given, and the tests check that each lands in its row,
that the new cases (z, f) show only when they ran, and that the template renders every section.
"""

from __future__ import annotations

import datetime
import json

from benchmarks.cases import Bench
from benchmarks.config import WORKDIR
from benchmarks.lab import Lab
from benchmarks.profiling import Profile
from benchmarks.report import render_report
from benchmarks.results import Result, Series

MB = 1024 * 1024
STARTED = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.timezone.utc)


def _series(key: str, *seconds: float, cpu: float = 1.0, pss: int = 0, lines: int = 0) -> Series:
    return Series(key, [Result(s, cpu=cpu, machine_cpu=2 * cpu, peak_rss=2 * pss, peak_pss=pss, lines=lines,
                               peak_detail="1x ansible-playbook" if pss else "") for s in seconds])


def _bench(series: list[Series], big_sizes: str = "") -> Bench:
    bench = Bench(Lab(WORKDIR), 1, 1, True)
    bench.series = {s.name: s for s in series}
    bench.meta = {"machine": json.dumps({"nproc": "2"}), "hosts": "64" if big_sizes else "8",
                  "big_sizes": big_sizes}
    return bench


def _row(text: str, start: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(start)]
    assert len(rows) == 1, (start, rows)
    return rows[0]


def test_big_fleets_near_zero_task_per_host_cpu_and_pss() -> None:
    bench = _bench([
        _series("a.ours", 3.0, 3.2, 3.1), _series("a.base", 2.0),
        _series("z.ours", 1.5, 1.4, 1.6, lines=4), _series("z.base", 1.0, lines=1),
        _series("f.ours.32", 30.0, cpu=64.0, pss=250 * MB, lines=12),
        _series("f.base.32", 10.0, cpu=16.0, pss=20 * MB),
        _series("f.ours.64", 70.0, cpu=192.0, pss=320 * MB), _series("f.base.64", 20.0, cpu=32.0, pss=40 * MB),
    ], big_sizes="32 64")
    text = render_report(bench, STARTED, 600.0, "")
    assert "one sshd on 127.0.0.2-127.0.0.65" in text
    assert _row(text, "| (z) warm `run`, near-zero task") == (
        "| (z) warm `run`, near-zero task (prints one line), 1 host | 1.50 s | 1.00 s | 1.50 x "
        "| <= 1.5x (stretch 1.2x) | met |")
    assert _row(text, "| (f) warm `run`, near-zero task, 32 hosts").endswith(
        "| 30.00 s | 10.00 s | 3.00 x | <= 1.5x | **not met** |")
    assert _row(text, "| (f) warm `run`, near-zero task, 64 hosts").endswith("| 70.00 s | 20.00 s | 3.50 x |  |  |")
    assert _row(text, "| (f) controller peak PSS, `run` on 32 hosts").endswith(
        "| 250 MB | 20 MB | 12.50 x | < 300 MB | met |")
    assert _row(text, "| (f) controller peak PSS, `run` on 64 hosts").endswith("| 320 MB | 40 MB | 8.00 x | < 300 MB "
                                                                               "| **not met** |")
    # Controller CPU per host: 64 s / 32 hosts, 16 s / 32 hosts.
    assert _row(text, "| (f) run, near-zero task, 32 hosts | 2.00 s") == (
        "| (f) run, near-zero task, 32 hosts | 2.00 s | 0.50 s | 4.00 x |")
    assert "Lines printed by a successful run: 32 hosts: ours 12, baseline 0; 64 hosts: ours 0, baseline 0." in text
    assert text.endswith("|\n") and not text.endswith("\n\n")


def test_a_run_without_the_new_cases_keeps_the_old_layout() -> None:
    profile = Profile(total=2.0, startup=0.5, first_task=0.6, last_result=1.8, stats=1.9, steps={"b1": []},
                      tasks=[{"host": "b1", "role": "mlcube_ssh_fetch", "task": "Fetch", "action": "x.stat",
                              "status": "ok", "changed": False, "start": 0.6, "end": 1.8, "duration": 1.2,
                              "retries": 0}])
    api = Series("a.ours-api", [Result(2.0, profile=profile)])
    text = render_report(_bench([_series("a.ours", 3.0), _series("a.base", 2.0), api]), STARTED, 60.0,
                         "--quick (1 repetition: not valid numbers)")
    assert "**--quick (1 repetition: not valid numbers)**" in text
    assert "one sshd on 127.0.0.2-127.0.0.9" in text
    assert "(z)" not in text and "(f)" not in text and "Controller CPU seconds per host" not in text
    assert _row(text, "| (a) warm `run`") == "| (a) warm `run`, 1-second task, 1 host | 3.00 s | 2.00 s | 1.50 x " \
                                             "| <= 2.0x | met |"
    assert _row(text, "| fetch | Fetch |") == "| fetch | Fetch | x.stat | module | 1.20 s | 1 | ok 1 |"


def test_sections_of_a_second_invocation_join_the_report() -> None:
    from benchmarks.bench import merge_into

    first = _bench([_series("a.ours", 3.0), _series("a.base", 2.0), _series("z.ours", 1.5), _series("z.base", 1.0)])
    first.loads = {"warm-up (not timed)": "1.00 1.00 1.00", "(a) warm run": "2.00 2.00 2.00"}
    first.phase_seconds = {"warm-up (not timed)": 60.0, "(a) warm run": 30.0}
    second = {"series": {s.name: s for s in [_series("f.ours.32", 30.0, cpu=64.0, pss=250 * MB),
                                             _series("f.base.32", 10.0, cpu=16.0, pss=20 * MB)]},
              "notes": ["(f): a note"], "loads": {"warm-up (not timed)": "9.00 9.00 9.00", "(f) big fleets": "8 8 8"},
              "phase_seconds": {"warm-up (not timed)": 5.0, "(f) big fleets": 300.0},
              "meta": {"big_sizes": "32", "hosts": "32"}, "started": STARTED + datetime.timedelta(hours=1),
              "wall": 400.0}

    assert merge_into(first, second) == 400.0
    first.meta["note"] = "Load 9 from other test suites."
    text = render_report(first, STARTED, 1000.0, "")

    assert "with sections of a second invocation at 13:00 UTC" in text and "\nLoad 9 from other test suites.\n" in text
    assert _row(text, "| (z) warm `run`, near-zero task").startswith("| (z) warm `run`, near-zero task (prints one "
                                                                      "line), 1 host | 1.50 s | 1.00 s | 1.50 x")
    assert _row(text, "| (f) warm `run`, near-zero task, 32 hosts").endswith("| 30.00 s | 10.00 s | 3.00 x | <= 1.5x "
                                                                             "| **not met** |")
    assert "warm-up (not timed) (run of 13:00): 9.00 9.00 9.00" in text and "(f): a note" in text
