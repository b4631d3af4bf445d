"""`configure --check`: what the real configure would change on each host, from the check-mode play's results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import click

from .. import rsync_items
from ..report import Reporter

MAX_LISTED_FILES = 200

MISSING_FACT = "_mlcube_ssh_python_env_missing"


@dataclass
class HostPlan:
    """What configure would do on one host."""

    uploads: list[str] = field(default_factory=list)
    deletions: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    reconfigure: bool = False


class CheckReport(Reporter):
    """Reporter for `configure --check`: collects, per host, what the real configure would change."""

    def __init__(self, write: Callable[[str], None] = click.echo) -> None:
        super().__init__(write=write, show_steps=False)
        self.plans: dict[str, HostPlan] = {}

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        host = data.get("host")
        if host and event.get("event") == "runner_on_ok":
            self._collect(self.plans.setdefault(host, HostPlan()), data)
        return super().__call__(event)

    @staticmethod
    def _collect(plan: HostPlan, data: dict[str, Any]) -> None:
        role = str(data.get("role") or "").split(".")[-1]
        res = data.get("res") or {}
        facts = res.get("ansible_facts") or {}
        if isinstance(facts.get(MISSING_FACT), list):
            plan.packages = [str(package) for package in facts[MISSING_FACT]]
        # The cube's and the workspace's transfers are one task (mlcube.ssh.synchronize's `also`): each result
        # under `transfers`, with its own destination.
        for transfer in res.get("transfers") or [res] if role == "mlcube_ssh_upload" else []:
            if isinstance(transfer, dict) and isinstance(transfer.get("stdout_lines"), list):
                dest = str(((transfer.get("invocation") or {}).get("module_args") or {}).get("dest") or "")
                prefix = "workspace/" if dest.rstrip("/").endswith("/workspace") else ""
                changes = rsync_items.parse(transfer["stdout_lines"], prefix)
                plan.uploads += changes.sent
                plan.deletions += changes.deleted
        if role == "mlcube_ssh_remote_configure" and res.get("matched") is False:
            plan.reconfigure = True

    def summary(self) -> list[str]:
        lines: list[str] = []
        for host, plan in sorted(self.plans.items()):
            lines += _listing(host, "would upload", plan.uploads, "no file to upload")
            if plan.deletions:
                lines += _listing(host, "would delete (not in the local cube)", plan.deletions, "")
            lines.append(f"{host}: would install {len(plan.packages)} package(s): {' '.join(plan.packages)}"
                         if plan.packages else f"{host}: no package to install")
            cube_changed = any(not name.startswith("workspace/") for name in plan.uploads + plan.deletions)
            if plan.reconfigure or cube_changed:
                lines.append(f"{host}: would run `mlcube configure` (the cube or its settings changed)")
        lines.append("configure --check: nothing was changed on any host")
        return lines


def _listing(host: str, verb: str, names: list[str], nothing: str) -> list[str]:
    if not names:
        return [f"{host}: {nothing}"]
    lines = [f"{host}: {verb} {len(names)} file(s):"]
    lines += [f"  {name}" for name in names[:MAX_LISTED_FILES]]
    if len(names) > MAX_LISTED_FILES:
        lines.append(f"  ... and {len(names) - MAX_LISTED_FILES} more")
    return lines
