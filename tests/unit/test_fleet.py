"""The compact fleet report (issue 12): counts per step, output per host in files, grouped failures.

Events have the shapes ansible-runner hands the event handler; tests/integration/test_fleet.py shows the same
on real hosts.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from mlcube_ssh_ansible.fleet import FleetReporter
from mlcube_ssh_ansible.report import FETCH_RESULT, RESULT_KEY, RUN_RESULT, Reporter, group_by_reason

ROLES = {"check": "mlcube_ssh_preflight", "upload": "mlcube_ssh_upload", "remote run": "mlcube_ssh_remote_run",
         "fetch": "mlcube_ssh_fetch"}


def event(kind: str, host: str, step: str, **res: Any) -> dict[str, Any]:
    return {"event": kind, "event_data": {"host": host, "role": ROLES[step], "task": "a task", "res": res}}


def play(reporter: Reporter, hosts: list[str], *, fail: dict[str, str] | None = None,
         workspace: str = "/ws") -> None:
    """Every host goes through check, upload, remote run (printing two lines) and fetch, in turn."""
    fail = fail or {}
    for step in ROLES:
        for host in hosts:
            reporter(event("runner_on_start", host, step))
            if fail.get(host) and step == "check":
                reporter(event("runner_on_failed", host, step, msg=fail[host]))
            elif fail.get(host):
                continue
            elif step == "remote run":
                reporter(event("runner_on_ok", host, step, rc=0, stdout_lines=[f"hello from {host}", "done"],
                               **{RESULT_KEY: RUN_RESULT}))
            elif step == "fetch":
                reporter(event("runner_on_ok", host, step, changed=True, stdout_lines=[">f+++++++++ out.txt"],
                               fetch_dest=f"{workspace}/hosts/{host}", **{RESULT_KEY: FETCH_RESULT}))
            else:
                reporter(event("runner_on_ok", host, step, changed=step == "upload"))
    reporter({"event": "playbook_on_stats", "event_data": {}})


def test_a_successful_32_host_run_prints_a_short_summary_and_keeps_output_per_host(tmp_path: Path) -> None:
    lines: list[str] = []
    hosts = [f"node{n}" for n in range(1, 33)]
    reporter = FleetReporter(lines.append, output_dir=tmp_path / "out", live=False)

    play(reporter, hosts)
    reporter.finish()

    assert len(lines) <= 15, lines
    assert "upload: 32 changed" in lines
    assert "remote run: 32 ok" in lines
    assert "fetch: 32 changed (32 files)" in lines
    assert "results: /ws/hosts/<host>/ (32 hosts)" in lines
    assert f"task output: {tmp_path / 'out'}/<host>.log (32 hosts)" in lines
    assert any(line.startswith("slowest: ") and line.count("node") == 3 for line in lines)
    assert not any("hello from" in line for line in lines)
    assert (tmp_path / "out" / "node7.log").read_text() == "hello from node7\ndone\n"
    assert oct((tmp_path / "out" / "node7.log").stat().st_mode)[-3:] == "600"


def test_failures_are_grouped_by_step_and_reason() -> None:
    lines: list[str] = []
    hosts = [f"n{n}" for n in range(1, 11)]
    failing = {host: "unreachable: connection refused" for host in hosts[:7]}
    failing["n8"] = "python3: not found"
    reporter = FleetReporter(lines.append, live=False)

    play(reporter, hosts, fail=failing)
    reporter.finish()

    assert reporter.grouped_failures() == [
        "7 hosts at check: unreachable: connection refused: n1, n2, n3, n4, n5, n6, n7",
        "n8 at check: python3: not found",
    ]
    assert "check: 8 FAILED, 2 ok" in lines


def test_long_host_lists_are_cut() -> None:
    failures = {f"h{n:02}": ("upload", "disk full") for n in range(20)}
    [phrase] = group_by_reason(failures, most=3)
    assert phrase == "20 hosts at upload: disk full: h00, h01, h02, ... (+17 more)"


def test_a_terminal_gets_a_live_line_that_counts_hosts_per_step() -> None:
    screen = io.StringIO()
    lines: list[str] = []
    reporter = FleetReporter(lines.append, live=True, stream=screen)
    reporter._drawn = float("-inf")
    for host in ("a", "b", "c"):
        reporter(event("runner_on_start", host, "upload"))
    reporter(event("runner_on_ok", "a", "upload", changed=True))
    reporter(event("runner_on_start", "a", "remote run"))

    assert reporter.progress_line() == "upload 1/3 done, 2 running | remote run 0/3 done, 1 running"
    assert "\r\x1b[K" in screen.getvalue()
    reporter.write("a line of its own")
    assert screen.getvalue().endswith("\r\x1b[K") and lines == ["a line of its own"]


def test_the_detailed_reporter_still_writes_a_line_per_host_and_step() -> None:
    lines: list[str] = []
    play(Reporter(lines.append, prefix_hosts=True), ["a", "b"])
    assert any(line.startswith("a: upload changed") for line in lines)
    assert "[b] hello from b" in lines
