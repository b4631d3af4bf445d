"""One measured command (Result) and the repetitions of one variant (Series)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from benchmarks.profiling import Profile


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
    lines: int = 0  # lines the command printed (stdout and stderr)


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
