"""Workflow: which playbook a command runs, with which tags, and what its outcome means.

Both front doors (the MLCube plug-in and our CLI) call these functions and nothing else, so they
cannot drift apart.
"""

from __future__ import annotations

import threading
from typing import Sequence

from . import assets
from .errors import HostFailure
from .execute import Invocation, Outcome, run_playbook
from .render import Job, render
from .report import Reporter
from .settings import Settings


def _invocation(name: str, settings: Settings, job: Job, *, tags: Sequence[str] = (),
                check: bool = False, verbosity: int = 0) -> Invocation:
    inventory, extravars = render(settings, job)
    return Invocation(
        playbook=assets.playbook(name),
        inventory=inventory,
        extravars=extravars,
        extra_inventories=[settings.inventory] if settings.inventory else [],
        forks=settings.forks,
        tags=tags,
        check=check,
        verbosity=verbosity,
        host_key_checking=settings.host_key_checking != "off",
        keep_artifacts=settings.keep_artifacts,
    )


def _finish(command: str, outcome: Outcome, reporter: Reporter) -> Outcome:
    """Raise one HostFailure naming every failed host and step; return the outcome otherwise."""
    failures = reporter.failures()
    if outcome.rc == 0 and not failures:
        return outcome
    if not failures and not reporter.hosts:
        failures = {"(no host)": ("start", f"ansible-playbook exited with {outcome.rc} before reaching a host")}
    listed = "; ".join(f"{host} at {step}: {reason}" for host, (step, reason) in sorted(failures.items()))
    where = f" (Ansible artifacts kept in {outcome.artifacts})" if outcome.artifacts else ""
    code = reporter.run_exit_code() if command == "run" else None
    raise HostFailure(f"{command} failed on {len(failures)} host(s): {listed}{where}", failures, code or 1)


def configure(settings: Settings, job: Job, *, reporter: Reporter | None = None, check: bool = False,
              verbosity: int = 0, cancel: threading.Event | None = None) -> Outcome:
    """Create/check the remote Python, upload the cube, and run the remote `mlcube configure`."""
    assets.check_controller()
    reporter = reporter or Reporter()
    invocation = _invocation("configure", settings, job, check=check, verbosity=verbosity)
    return _finish("configure", run_playbook(invocation, reporter, cancel), reporter)


def run(settings: Settings, job: Job, *, reporter: Reporter | None = None, verbosity: int = 0,
        cancel: threading.Event | None = None) -> Outcome:
    """Upload what changed, run the tasks remotely, fetch the workspace back (also after a failure)."""
    assets.check_controller()
    reporter = reporter or Reporter()
    invocation = _invocation("run", settings, job, verbosity=verbosity)
    return _finish("run", run_playbook(invocation, reporter, cancel), reporter)
