"""docs/benchmarks.md: the numbers worked out here, the text in templates/benchmarks.md.j2 (Jinja2)."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import jinja2

from benchmarks.config import FLEET_SIZES, MB, REPO, TARGETS
from benchmarks.profiling import summarize_profiles
from benchmarks.results import Result, Series
from mlcube_ssh_ansible import render as render_module

if TYPE_CHECKING:
    from benchmarks.cases import Bench

TEMPLATES = Path(__file__).resolve().parent / "templates"

# The fixed costs and experiments table: series name -> what it measured, in the order of the table.
EXPERIMENT_LABELS = {
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
# Role (step) -> the step's name in the Reporter's steps_done.
STEP_NAMES = {"preflight": "check", "python_env": "python env", "upload": "upload",
              "remote_configure": "remote configure", "remote_run": "remote run", "fetch": "fetch"}


def fmt(value: float | None, unit: str = "s", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} {unit}".strip()


def num(value: float, digits: int = 2) -> str:
    """A bare number with `digits` decimals (a template filter)."""
    return f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def verdict(key: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    _label, limit, inclusive = TARGETS[key]
    return "met" if (value <= limit if inclusive else value < limit) else "**not met**"


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


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


class Numbers:
    """Medians, peaks and CPU of a benchmark's series, for the template."""

    def __init__(self, series: dict[str, Series]) -> None:
        self.series = series

    def results(self, key: str) -> list[Result]:
        return self.series.get(key, Series("")).results

    def med(self, key: str) -> float | None:
        return self.series[key].median if key in self.series else None

    def peaks(self, key: str) -> list[Result]:
        return [r for r in self.results(key) if r.ok and r.peak_rss]

    def peak_mb(self, key: str) -> float | None:
        results = self.peaks(key)
        return statistics.median(r.peak_rss / MB for r in results) if results else None

    def cpu_med(self, key: str, attr: str) -> float | None:
        """Median controller (`cpu`) or machine (`machine_cpu`) CPU seconds of the runs that recorded them."""
        values = [getattr(r, attr) for r in self.results(key) if r.ok and r.machine_cpu]
        return statistics.median(values) if values else None

    def cpu_of(self, key: str, attr: str = "cpu") -> float | None:
        """Median CPU seconds of every successful run (runs without machine CPU included)."""
        values = [getattr(r, attr) for r in self.results(key) if r.ok]
        return statistics.median(values) if values else None

    def peak_pss_mb(self, key: str) -> float | None:
        results = self.peaks(key)
        return statistics.median(r.peak_pss / MB for r in results) if results else None

    def lines(self, key: str) -> str:
        """How many lines the successful runs printed ("n/a" when none ran)."""
        counts = sorted({r.lines for r in self.results(key) if r.ok})
        if not counts:
            return "n/a"
        return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"

    def per_host(self, key: str, hosts: int) -> float | None:
        """Median controller CPU seconds (as in the CPU table) divided by the command's hosts."""
        cpu = self.cpu_med(key, "cpu")
        return None if cpu is None else cpu / hosts

    def profile(self, key: str) -> dict[str, Any]:
        return summarize_profiles([r.profile for r in self.results(key) if r.ok and r.profile])


def context(bench: Bench, started: datetime.datetime, wall: float, label: str) -> dict[str, Any]:
    """Everything the template shows, worked out from the bench's series."""
    S = bench.series
    n = Numbers(S)
    med = n.med
    a_o, a_b = med("a.ours"), med("a.base")
    c_o = _diff(med("c.ours.blob"), med("c.ours.tiny"))
    c_b = _diff(med("c.base.blob"), med("c.base.tiny"))
    d1, d1_b = med("d.ours.1"), med("d.base.1")
    fleet_rows = []
    for size in FLEET_SIZES:
        ours, base = med(f"d.ours.{size}"), med(f"d.base.{size}")
        scale = ratio(ours, d1)
        target, met = {4: (TARGETS["d4"][0], verdict("d4", scale)),
                       8: (TARGETS["d8"][0], verdict("d8", scale))}.get(size, ("", ""))
        fleet_rows.append({"n": size, "ours": ours, "base": base, "scale": scale, "base_scale": ratio(base, d1_b),
                           "target": target, "met": met})
    memory_rows = []
    for size in (1, 8):
        ours, base = n.peak_mb(f"e.ours.{size}"), n.peak_mb(f"e.base.{size}")
        target, met = (TARGETS["e8"][0], verdict("e8", ours)) if size == 8 else ("", "")
        memory_rows.append({"n": size, "ours": ours, "base": base, "target": target, "met": met})
    big_sizes = [int(size) for size in bench.meta.get("big_sizes", "").split()]
    big_rows = []
    pss_rows = []
    for size in (1, 8):  # (e)'s target is on RSS (issue 6); PSS is shown beside it
        if n.peaks(f"e.ours.{size}") and big_sizes:
            pss_rows.append({"case": "e", "n": size, "ours": n.peak_pss_mb(f"e.ours.{size}"),
                             "base": n.peak_pss_mb(f"e.base.{size}"), "target": "", "met": ""})
    for size in big_sizes:
        ours, base = med(f"f.ours.{size}"), med(f"f.base.{size}")
        key = f"f{size}"
        target, met = (TARGETS[key][0], verdict(key, ratio(ours, base))) if key in TARGETS else ("", "")
        big_rows.append({"n": size, "ours": ours, "base": base, "target": target, "met": met})
        pss = n.peak_pss_mb(f"f.ours.{size}")
        key = f"pss{size}"
        target, met = (TARGETS[key][0], verdict(key, pss)) if key in TARGETS else ("", "")
        pss_rows.append({"case": "f", "n": size, "ours": pss, "base": n.peak_pss_mb(f"f.base.{size}"),
                         "target": target, "met": met})
    sweep_meta = json.loads(bench.meta["sweep"]) if "sweep" in bench.meta else None
    sweep_row = None
    if sweep_meta and ("g.ours" in S or "g.base" in S):
        run_seconds = float(bench.meta.get("sweep_run_seconds") or "nan")
        rounds = math.ceil(sweep_meta["runs"] / (sweep_meta["hosts"] * sweep_meta["slots"]))
        sweep_row = {**sweep_meta, "ours": med("g.ours"), "base": med("g.base"), "rounds": rounds,
                     "ideal_task": rounds * 1.0, "run_seconds": None if math.isnan(run_seconds) else run_seconds,
                     "ideal_run": None if math.isnan(run_seconds) else rounds * run_seconds,
                     "pss": n.peak_pss_mb("g.ours"), "pss_base": n.peak_pss_mb("g.base"),
                     "notes": [r.note for r in n.results("g.ours") if r.note]}
    per_host_rows = [
        {"label": label_, "ours": n.per_host(ours_key, size), "base": n.per_host(base_key, size)}
        for label_, ours_key, base_key, size in (
            ("(z) warm run, near-zero task, 1 host", "z.ours", "z.base", 1),
            ("(z) warm run, near-zero task, 1 host, `mlcube-ssh-ansible run`", "z.tool", "z.base", 1),
            ("(a) warm run, 1 host", "a.ours", "a.base", 1),
            ("(b) no-op configure, 1 host", "b.ours", "b.base", 1),
            ("(b) no-op configure, hosts contacted, 1 host", "b.ours-contact", "b.base", 1),
            *((f"(d) run, {size} hosts", f"d.ours.{size}", f"d.base.{size}", size) for size in FLEET_SIZES),
            *((f"(f) run, near-zero task, {size} hosts", f"f.ours.{size}", f"f.base.{size}", size)
              for size in big_sizes),
            *(((f"(g) sweep of {sweep_meta['runs']} runs, {sweep_meta['hosts']} hosts", "g.ours", "g.base",
                sweep_meta["hosts"]),) if sweep_meta else ()))
        if ours_key in S or base_key in S]
    if not big_sizes and "z.ours" not in S and not sweep_row:
        per_host_rows = []  # a report of an older run, which measured none of this (its layout unchanged)
    memory_runs = []
    for key in ("e.ours.1", "e.base.1", "e.ours.8", "e.base.8", "e.ours.8.upload", "e.ours.8.free",
                "e.ours.8.forks8", *(f"f.{side}.{size}" for size in big_sizes for side in ("ours", "base")),
                "g.ours", "g.base"):
        results = n.peaks(key)
        if results:
            memory_runs.append({
                "key": key,
                "seconds": ", ".join(f"{r.seconds:.1f} s" for r in results),
                "rss": ", ".join(f"{r.peak_rss / MB:.0f}" for r in results),
                "pss": ", ".join(f"{r.peak_pss / MB:.0f}" for r in results),
                "detail": max(results, key=lambda r: r.peak_rss).peak_detail,
            })
    sa, sb, s8 = n.profile("a.ours-api"), n.profile("b.ours-api"), n.profile("d.ours-api.8")
    task_costs: dict[str, Any] | None = None
    t_empty, t_fact, t_stat = "t.8.empty", "t.8.set_fact-x20", "t.8.stat-x5"
    fact_cpu = _diff(n.cpu_of(t_fact), n.cpu_of(t_empty))
    stat_cpu = _diff(n.cpu_of(t_stat), n.cpu_of(t_empty))
    fact_wall = _diff(med(t_fact), med(t_empty))
    stat_wall = _diff(med(t_stat), med(t_empty))
    if fact_cpu is not None and stat_cpu is not None and fact_wall is not None and stat_wall is not None:
        task_costs = {
            "fact_cpu": fact_cpu, "stat_cpu": stat_cpu, "fact_wall": fact_wall, "stat_wall": stat_wall,
            "stat_machine": _diff(n.cpu_of(t_stat, "machine_cpu"), n.cpu_of(t_empty, "machine_cpu")),
            "tasks_a": sum((r.get("executed") or 0) for r in sa["roles"]) if sa else None,
        }
    profiles = [(key, title, summary) for key, title, summary in (
        ("a.ours-api", "(a) warm `run`, 1 host, 1-second task", sa),
        ("b.ours-api", "(b) no-op `configure`, 1 host, hosts contacted", sb),
        ("c.ours.blob", "(c) `run` of the 100 MiB task, 1 host", n.profile("c.ours.blob")),
        ("d.ours-api.8", "(d) `run` on 8 hosts", s8)) if summary]
    return {
        "label": label, "started": started,
        "last_address": f"127.0.0.{int(bench.meta.get('hosts', 8)) + 1}",
        "note": bench.meta.get("note", ""),
        "merged": bench.meta.get("merged", ""),
        "z_o": med("z.ours"), "z_b": med("z.base"), "z_t": med("z.tool"), "lines": n.lines,
        "big_rows": big_rows, "pss_rows": pss_rows, "per_host_rows": per_host_rows, "sweep_row": sweep_row,
        "cli_cases": ["(a)", "(b)", "(d)", "(e)", *(["(f)"] if big_rows else []),
                      *(["(z)"] if "z.ours" in S else [])],
        "wall": wall, "TARGETS": TARGETS,
        "fmt": fmt, "ratio": ratio, "verdict": verdict, "diff": _diff,
        "med": med, "peak_mb": n.peak_mb, "cpu_med": n.cpu_med,
        "contact": "b.ours-contact" in S, "b_c": med("b.ours-contact"), "b_ct": med("b.tool-contact"),
        "a_o": a_o, "a_b": a_b, "b_o": med("b.ours"), "b_b": med("b.base"), "c_o": c_o, "c_b": c_b,
        "c_rate_o": (100 / c_o if c_o > 0 else math.nan) if c_o is not None else None,
        "c_rate_b": (100 / c_b if c_b > 0 else math.nan) if c_b is not None else None,
        "fleet_rows": fleet_rows, "memory_rows": memory_rows, "memory_runs": memory_runs,
        "cpu_rows": [("(a) warm run, 1 host", "a.ours", "a.base"), ("(b) no-op configure", "b.ours", "b.base"),
                     ("(b) no-op configure, hosts contacted", "b.ours-contact", "b.base"),
                     *((("(b) no-op configure, hosts contacted, `mlcube-ssh-ansible configure`", "b.tool-contact",
                         "b.base"),) if "b.tool-contact" in S else ()),
                     *((f"(d) run, {size} hosts", f"d.ours.{size}", f"d.base.{size}") for size in FLEET_SIZES),
                     *((("(z) warm run, near-zero task, 1 host", "z.ours", "z.base"),) if "z.ours" in S else ()),
                     *((("(z) warm run, near-zero task, 1 host, `mlcube-ssh-ansible run`", "z.tool", "z.base"),)
                       if "z.tool" in S else ()),
                     *((f"(f) run, near-zero task, {size} hosts", f"f.ours.{size}", f"f.base.{size}")
                       for size in big_sizes),
                     *((("(g) sweep, submission to last result", "g.ours", "g.base"),) if sweep_row else ())],
        "sa": sa, "s8": s8, "profiles": profiles, "step_names": STEP_NAMES,
        "sa_modules": sum(r.get("modules") or 0 for r in sa["roles"]) if sa else 0,
        "sa_rsyncs": sum(r.get("rsyncs") or 0 for r in sa["roles"]) if sa else 0,
        "sa_syncs": [row for row in sa["tasks"] if row["kind"] == "rsync" and row["median"] is not None] if sa else [],
        "shim_python": bench.meta.get("shim_python", "?"),
        "control_persist": getattr(render_module, "CONTROL_PERSIST", "?"),
        "task_costs": task_costs,
        "experiments": [(key, label, S[key]) for key, label in EXPERIMENT_LABELS.items() if key in S],
        "machine": json.loads(bench.meta["machine"]) if "machine" in bench.meta else machine(),
        "loads": bench.loads, "phase_seconds": bench.phase_seconds, "all_series": S,
        "notes": bench.notes, "failures": [(key, f) for key, series in S.items() for f in series.failures],
    }


def render_report(bench: Bench, started: datetime.datetime, wall: float, label: str) -> str:
    environment = jinja2.Environment(  # noqa: S701 (Markdown, not HTML: nothing to escape)
        loader=jinja2.FileSystemLoader(TEMPLATES), trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    environment.filters["num"] = num
    text = environment.get_template("benchmarks.md.j2").render(context(bench, started, wall, label))
    return text.rstrip("\n") + "\n"  # one final newline, whichever optional section came last


def write_report(bench: Bench, out: Path, started: datetime.datetime, wall: float, label: str = "") -> None:
    """Write the report; `label` (e.g. "--quick (...)") marks a run whose numbers are not valid."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(bench, started, wall, label))
