"""Where our seconds go: a Reporter that times every Ansible event, and medians per phase, step and task."""

from __future__ import annotations

import collections
import statistics
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from mlcube_ssh_ansible.report import Reporter


class ProfilingReporter(Reporter):
    """Our Reporter (its per-host steps_done) plus the time of every Ansible event, per task and host."""

    def __init__(self) -> None:
        super().__init__(write=lambda _line: None, show_steps=False)
        self.t0 = time.monotonic()
        self.first: dict[str, float] = {}
        self.last_event = 0.0
        self.tasks: list[dict[str, Any]] = []
        self._started: dict[tuple[str, str], float] = {}
        self._retries: collections.Counter[tuple[str, str]] = collections.Counter()

    def __call__(self, event: dict[str, Any]) -> bool:
        now = time.monotonic() - self.t0
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        self.first.setdefault(kind, now)
        self.last_event = now
        host = data.get("host")
        if host and kind == "runner_on_start":
            self._started[(host, data.get("task_uuid", ""))] = now
        elif host and kind == "runner_retry":
            self._retries[(host, data.get("task_uuid", ""))] += 1
        elif host and kind.startswith("runner_on_"):
            start = self._started.pop((host, data.get("task_uuid", "")), None)
            res = data.get("res") or {}
            self.tasks.append({
                "host": host,
                "role": str(data.get("role") or "").split(".")[-1] or "(play)",
                "task": data.get("task"),
                # A follow answered by its launch (the task ended while the launch waited) ships no module.
                "action": str(data.get("task_action") or data.get("resolved_action"))
                + (AT_LAUNCH if res.get("at_launch") else ""),
                "status": kind[len("runner_on_"):],
                "changed": bool(res.get("changed")),
                "start": start,
                "end": now,
                "duration": data.get("duration"),
                "retries": self._retries.pop((host, data.get("task_uuid", "")), 0),
            })
        return super().__call__(event)


@dataclass
class Profile:
    """One in-process run, as timings relative to the workflow call."""

    total: float
    startup: float | None  # call -> playbook_on_start: ansible-runner + ansible-playbook start-up
    first_task: float | None  # call -> first task started on a host
    last_result: float | None
    stats: float | None
    tasks: list[dict[str, Any]]
    steps: dict[str, list[tuple[str, bool, float]]]

    @classmethod
    def of(cls, reporter: ProfilingReporter, total: float) -> Profile:
        starts = [t["start"] for t in reporter.tasks if t["start"] is not None]
        ends = [t["end"] for t in reporter.tasks]
        return cls(
            total=total,
            startup=reporter.first.get("playbook_on_start"),
            first_task=min(starts) if starts else None,
            last_result=max(ends) if ends else None,
            stats=reporter.first.get("playbook_on_stats"),
            tasks=reporter.tasks,
            steps={host: list(report.steps_done) for host, report in reporter.hosts.items()},
        )


STEP_ORDER = {"preflight": 0, "python_env": 1, "upload": 2, "remote_configure": 3, "remote_run": 4, "fetch": 5}


def role_label(role: str) -> str:
    return role.replace("mlcube_ssh_", "")


# Actions that run inside the controller's Ansible process: no module is shipped, no connection is used.
CONTROLLER_ACTIONS = {"assert", "set_fact", "fail", "validate_argument_spec", "debug", "meta", "include_tasks",
                      "import_tasks", "include_role", "include_vars", "add_host", "group_by"}


AT_LAUNCH = " (answered at launch)"


def action_kind(action: str | None) -> str:
    name = str(action or "").split(".")[-1]
    if name in CONTROLLER_ACTIONS or name.endswith(AT_LAUNCH):
        return "controller"
    if name in ("synchronize", "mlcube_ssh_synchronize"):
        return "rsync"
    return "module"


def summarize_profiles(profiles: Sequence[Profile]) -> dict[str, Any]:
    """Medians over runs: phases of the whole run; per role the time and calls per host; per task."""
    if not profiles:
        return {}
    if not any(p.tasks for p in profiles):
        return {"runs": len(profiles), "empty": True, "total": statistics.median(p.total for p in profiles)}

    def med(values: Iterable[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return statistics.median(kept) if kept else None

    phases = {
        "start-up (call -> playbook_on_start)": med(p.startup for p in profiles),
        "playbook parse + first task dispatch (playbook_on_start -> first task)": med(
            (p.first_task - p.startup) if p.first_task is not None and p.startup is not None else None
            for p in profiles),
        "tasks (first task start -> last task result)": med(
            (p.last_result - p.first_task) if p.last_result is not None and p.first_task is not None else None
            for p in profiles),
        "end (last result -> workflow returns)": med(
            (p.total - p.last_result) if p.last_result is not None else None for p in profiles),
        "total": med(p.total for p in profiles),
    }
    # Per role and host: wall time from its first task's start to its last result, and what ran.
    roles: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    task_rows: dict[tuple[str, str, str], dict[str, list[float]]] = collections.defaultdict(
        lambda: collections.defaultdict(list))
    task_status: dict[tuple[str, str, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for profile in profiles:
        per_host_role: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
        for task in profile.tasks:
            per_host_role[(task["host"], task["role"])].append(task)
        for (_host, role), tasks in per_host_role.items():
            executed = [t for t in tasks if t["status"] != "skipped"]
            starts = [t["start"] for t in tasks if t["start"] is not None]
            entry = roles[role]
            entry["wall"].append(max(t["end"] for t in tasks) - (min(starts) if starts else 0.0))
            entry["executed"].append(len(executed))
            entry["skipped"].append(len(tasks) - len(executed))
            entry["in_tasks"].append(sum(float(t["duration"] or 0.0) for t in executed))
            entry["modules"].append(sum(1 + t["retries"] for t in executed if action_kind(t["action"]) == "module"))
            entry["rsyncs"].append(sum(1 + t["retries"] for t in executed if action_kind(t["action"]) == "rsync"))
        for task in profile.tasks:
            key = (role_label(task["role"]), str(task["task"]), str(task["action"]))
            if task["status"] != "skipped":
                task_rows[key]["duration"].append(float(task["duration"] or 0.0))
                task_rows[key]["calls"].append(1 + task["retries"])
            task_status[key][task["status"]] += 1
    role_rows: list[dict[str, Any]] = []
    for role, entry in roles.items():
        role_rows.append({name: med(values) for name, values in entry.items()} | {"role": role_label(role)})
    role_rows.sort(key=lambda r: STEP_ORDER.get(str(r["role"]), 99))
    steps: dict[str, list[float]] = collections.defaultdict(list)
    for profile in profiles:
        for host_steps in profile.steps.values():
            for step, _changed, seconds in host_steps:
                steps[step].append(seconds)
    module_durations = [float(t["duration"] or 0.0) / (1 + t["retries"]) for p in profiles for t in p.tasks
                        if t["status"] != "skipped" and action_kind(t["action"]) == "module"
                        and "follow" not in str(t["action"])]
    return {
        "runs": len(profiles),
        "hosts": max(len(p.steps) for p in profiles),
        "phases": phases,
        "roles": role_rows,
        "tasks": [
            {"role": k[0], "task": k[1], "action": k[2], "kind": action_kind(k[2]),
             "median": med(v.get("duration", [])), "calls": med(v.get("calls", [])), "status": dict(task_status[k])}
            for k, v in task_rows.items()
        ] + [
            {"role": k[0], "task": k[1], "action": k[2], "kind": action_kind(k[2]), "median": None, "calls": 0,
             "status": dict(task_status[k])}
            for k in task_status if k not in task_rows
        ],
        "reporter_steps": {step: med(values) for step, values in steps.items()},
        "module_call": med(module_durations),
    }
