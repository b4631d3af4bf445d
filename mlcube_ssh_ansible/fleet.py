"""The compact report of a fleet: counts per step instead of a line per host, output kept per host in files.

A 32-host run with a line per host and step prints well over a hundred lines, and 32 hosts' task output
interleaved is unreadable. :class:`FleetReporter` reads the same events as :class:`Reporter` and shows:

* on a terminal, one live line per command that counts, per step, the hosts done, running and failed;
* each host's task output in its own file (``<folder>/<host>.log``), whose folder is printed;
* at the end a short summary: per step the hosts in each state, where results went, the slowest hosts, and
  failures grouped by step and reason.

`-v` (or a single `host`) keeps the detailed per-host report of :class:`Reporter`.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable

from .report import HostReport, Reporter, _stdout, name_list

SLOWEST = 3  # hosts named in the summary's `slowest:` line
LIVE_INTERVAL = 0.2  # seconds between redraws of the live line


def _safe_file_name(host: str) -> str:
    """An inventory name as a file name: no folder separators, nothing hidden."""
    return re.sub(r"[^A-Za-z0-9._:@-]+", "_", host).lstrip(".") or "host"


class FleetReporter(Reporter):
    """A Reporter for many hosts: counts, a live line on a terminal, per-host output files, a summary."""

    def __init__(self, write: Callable[[str], None] = _stdout, *, output_dir: Path | None = None,
                 live: bool | None = None, stream: IO[str] | None = None) -> None:
        super().__init__(write=self._write_above_live, show_steps=True, prefix_hosts=True)
        self._write = write
        self.output_dir = output_dir
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.steps: dict[str, dict[str, str]] = {}  # step -> host -> state, in the order steps were first met
        self.running: dict[str, str] = {}  # host -> step in progress
        self.files: dict[str, int] = {}  # step -> files moved, all hosts
        self.warnings: dict[str, list[str]] = {}  # text -> hosts
        self._files: dict[str, IO[str]] = {}
        self._drawn = 0.0
        self._live_shown = False

    # --- what the base class reports ------------------------------------------------------------------
    def _open_step(self, host: str, data: dict[str, Any]) -> HostReport:
        report = super()._open_step(host, data)
        if report.step is not None:
            self.running[host] = report.step
            self.steps.setdefault(report.step, {})
            self._redraw()
        return report

    def step_done(self, host: str, step: str, state: str, seconds: float, files: int) -> None:
        self.steps.setdefault(step, {})[host] = state
        self.files[step] = self.files.get(step, 0) + files
        if self.running.get(host) == step:
            del self.running[host]
        self._redraw()

    def output(self, host: str, lines: list[str]) -> None:
        if self.output_dir is None:
            super().output(host, lines)
            return
        handle = self._files.get(host)
        if handle is None:
            self.output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle = open(self.output_dir / f"{_safe_file_name(host)}.log", "a",  # noqa: SIM115  closed in finish
                          encoding="utf-8", errors="replace")
            os.chmod(handle.name, 0o600)  # the task's output may be private
            self._files[host] = handle
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()

    def warning(self, host: str, text: str) -> None:
        self.warnings.setdefault(text, []).append(host)

    def _write_above_live(self, text: str) -> None:
        """Every line anyone writes through this reporter goes above the live line, which is drawn anew."""
        self._clear_live()
        self._write(text)

    # --- the live line -----------------------------------------------------------------------------------
    def progress_line(self) -> str:
        """`upload 3/4 done, 1 running | remote run 0/4 done, 3 running, 1 failed`: every step met so far."""
        parts = []
        for step, states in self.steps.items():
            running = sum(1 for current in self.running.values() if current == step)
            failed = sum(1 for state in states.values() if state == "FAILED")
            done = len(states) - failed
            text = f"{step} {done}/{len(self.hosts)} done"
            text += f", {running} running" if running else ""
            text += f", {failed} failed" if failed else ""
            parts.append(text)
        return " | ".join(parts)

    def _redraw(self) -> None:
        if not self.live or time.monotonic() - self._drawn < LIVE_INTERVAL:
            return
        self._drawn = time.monotonic()
        self.stream.write("\r\x1b[K" + self.progress_line()[:200])
        self.stream.flush()
        self._live_shown = True

    def _clear_live(self) -> None:
        if self._live_shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._live_shown = False

    # --- the end -------------------------------------------------------------------------------------------
    def summary(self) -> list[str]:
        """What the command did on the fleet, in a few lines (the failures' reasons come with the error)."""
        lines = []
        for step, states in self.steps.items():
            counts: dict[str, int] = {}
            for state in states.values():
                counts[state] = counts.get(state, 0) + 1
            if set(counts) == {"ok"} and step == "check":
                continue  # the checks passed: nothing to say
            order = sorted(counts.items(), key=lambda item: (item[0] != "FAILED", -item[1], item[0]))
            files = self.files.get(step, 0)
            lines.append(f"{step}: " + ", ".join(f"{count} {state}" for state, count in order)
                         + (f" ({files} files)" if files else ""))
        for text, hosts in self.warnings.items():
            lines.append(f"warning on {len(hosts)} host(s) ({name_list(hosts)}): {text}")
        destinations = sorted({report.fetch_dest for report in self.hosts.values() if report.fetch_dest})
        if destinations:
            common = os.path.commonpath(destinations) if len(destinations) > 1 else destinations[0]
            lines.append(f"results: {common}" + (f"/<host>/ ({len(destinations)} hosts)" if len(destinations) > 1
                                                  else ""))
        if self._files and self.output_dir is not None:
            lines.append(f"task output: {self.output_dir}/<host>.log ({len(self._files)} hosts)")
        seconds = {host: sum(step[2] for step in report.steps_done) for host, report in self.hosts.items()}
        if len(seconds) > 1:
            slowest = sorted(seconds, key=lambda host: -seconds[host])[:SLOWEST]
            lines.append("slowest: " + ", ".join(f"{host} {seconds[host]:.1f}s" for host in slowest))
        return lines

    def finish(self) -> None:
        self._clear_live()
        for handle in self._files.values():
            handle.close()
        for line in self.summary():
            self.write(line)
