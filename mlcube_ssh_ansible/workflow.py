"""Workflow: which playbook a command runs, with which tags, and what its outcome means.

Both front doors (the MLCube plug-in and our CLI) call these functions and nothing else, so they
cannot drift apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import yaml

from . import assets, credentials, secrets, upload
from .errors import HostFailure, Interrupted
from .execute import Invocation, Outcome, run_playbook
from .fleet import FleetReporter
from .render import Job, remote_name, render, workspace_key
from .report import HOST_KEY_HINT, RESULT_KEY, STALE_COPY, STOP_RESULT, HostReport, Reporter, group_by_reason, name_list
from .settings import Settings, forks_for
from .state import State


def new_run_id() -> str:
    """Sortable and unique: the run's folder name on every host."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def rendered(settings: Settings, job: Job, *, exclude_from: str | None = None, pip_wheel: bool = True
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inventory and extra-vars exactly as a command that uploads passes them (`render` writes these).

    With `pip_wheel` (configure, render) and a virtualenv interpreter, the pip wheel that new virtualenvs get
    their pip from is named, downloaded into the controller's cache the first time."""
    inventory, extravars = render(settings, job)
    extravars["mlcube_ssh_exclude_from"] = _exclude_from(job) if exclude_from is None else exclude_from
    extravars["mlcube_ssh_shared_inputs"] = shared_inputs(job)
    if pip_wheel and settings.interpreter.type == "virtualenv":
        extravars["mlcube_ssh_pip_wheel"] = str(assets.pip_wheel())
    return inventory, extravars


def shared_inputs(job: Job) -> list[str]:
    """The inputs a run in a workspace of its own gets from the cube's workspace: as MLCube's own
    sync_workspace, the tasks' input paths (relative, in the workspace) that are no task's output."""
    if not workspace_key(job) or not job.tasks:
        return []
    try:
        tasks = (yaml.safe_load(Path(job.cube_root, "mlcube.yaml").read_text()) or {}).get("tasks") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return []  # MLCube itself then says what is wrong with the file

    def paths(task: Any, kind: str) -> list[str]:
        params = ((task or {}).get("parameters") or {}).get(kind) or {} if isinstance(task, dict) else {}
        found = []
        for value in params.values() if isinstance(params, dict) else ():
            path = value.get("default") if isinstance(value, dict) else value
            if isinstance(path, str) and path and "$" not in path and not os.path.isabs(path) and \
                    ".." not in Path(path).parts:
                found.append(os.path.normpath(path))
        return found

    outputs = {path for task in tasks.values() for path in paths(task, "outputs")} if isinstance(tasks, dict) else set()
    wanted = [path for name in job.tasks for path in paths(tasks.get(name) if isinstance(tasks, dict) else None,
                                                           "inputs")]
    return sorted(set(wanted) - outputs)


def _exclude_from(job: Job) -> str:
    """git's own list of what it ignores in the cube, as an rsync exclude file ('' outside git)."""
    in_cube = os.path.abspath(job.workspace) == os.path.join(os.path.abspath(job.cube_root), "workspace")
    return upload.exclude_file(job.cube_root, in_cube)


def playbook_invocation(name: str, settings: Settings, job: Job, *, extra: dict[str, Any] | None = None,
                        tags: Sequence[str] = (), check: bool = False, verbosity: int = 0,
                        exclude_from: str | None = None, offered: dict[str, str] | None = None) -> Invocation:
    """How a command runs playbook `name` on the settings' hosts: the one place an Invocation is built
    (`doctor` uses it too), so every playbook gets the same inventory, forks, host key and password rules."""
    if name in ("configure", "run", "sweep"):
        inventory, extravars = rendered(settings, job, exclude_from=exclude_from, pip_wheel=name == "configure")
    else:
        inventory, extravars = render(settings, job)
    extravars = {**extravars, **(extra or {})}
    return Invocation(
        playbook=assets.playbook(name),
        inventory=inventory,
        extravars=extravars,
        extra_inventories=[settings.inventory] if settings.inventory else [],
        forks=forks_for(settings, name),
        tags=tags,
        skip_tags=() if check else skipped_tags(name, settings, inventory, extravars),
        check=check,
        verbosity=verbosity,
        host_key_checking=settings.host_key_checking != "off",
        keep_artifacts=settings.keep_artifacts,
        password=credentials.password(settings),
        secrets=offered or {},
        hidden={name: os.environ[name] for name in settings.secrets if name in os.environ},
    )


def skipped_tags(name: str, settings: Settings, inventory: dict[str, Any], extravars: dict[str, Any]
                 ) -> tuple[str, ...]:
    """The tags of the tasks every host of the play would skip by their `when`, as known here before the play:
    the shim leaves them out (--skip-tags), because a task skipped by `when` still costs a worker fork per host
    (~20 ms of controller CPU). Plain ansible-playbook runs them, and their `when` decides as always.

    Only what holds for every host: with an inventory, the hosts' own variables may differ from the settings."""
    one_host = None if settings.inventory else next(iter(inventory["all"].get("hosts") or {}), None)
    prunes = bool(extravars.get("mlcube_ssh_prune"))
    skipped: list[str] = [] if prunes else [assets.TAG_PRUNE]
    if name == "run" and one_host and not prunes \
            and one_host in (extravars.get("mlcube_ssh_synced") or {}) \
            and one_host in (extravars.get("mlcube_ssh_known_paths") or {}):
        # The copy is the one the last run left: the launch checks that on the host, and when it is not, the play
        # runs again for the host, with its upload (_with_retries).
        skipped.append(assets.TAG_UPLOAD)
    if one_host and not extravars.get("mlcube_ssh_per_host_results"):
        skipped.append(assets.TAG_RESULTS_FOLDER)
    if one_host and not settings.platform_settings:
        skipped.append(assets.TAG_SYSTEM_SETTINGS)
    if name in ("run", "attach"):
        skipped.append(assets.TAG_RESULT)  # the reporter fails the hosts whose task failed (Reporter.fails_runs)
    return tuple(skipped)


def _play(invocation: Invocation, reporter: Reporter, cancel: threading.Event | None = None) -> Outcome:
    """run_playbook, with the reporter told what the play leaves out (skipped_tags): the upload it shows as
    skipped, and the result tasks whose verdict it gives itself."""
    reporter.left_out = ("upload",) if assets.TAG_UPLOAD in invocation.skip_tags and not invocation.tags else ()
    reporter.fails_runs = assets.TAG_RESULT in invocation.skip_tags
    return run_playbook(invocation, reporter, cancel)


def _preflight(settings: Settings) -> None:
    """Controller-side checks and warnings, before any host is touched."""
    assets.check_controller(needs_sshpass=credentials.configured(settings))
    if settings.host_key_checking == "off":
        sys.stderr.write("mlcube-ssh-ansible: warning: host_key_checking is off, so host keys are not "
                         "verified and anyone on the network path can impersonate the host; "
                         "use 'strict' or 'accept-new'\n")


def _warn_size(job: Job, reporter: Reporter) -> None:
    warning = upload.too_many_files_warning(job.cube_root)
    if warning:
        reporter.write(warning)


def _reporter(settings: Settings, reporter: Reporter | None, verbosity: int = 0,
              output_dir: Path | None = None) -> Reporter:
    """The caller's reporter, or: a fleet's compact one (an inventory, without -v), else one line per host."""
    if reporter is None and settings.inventory is not None and verbosity == 0:
        reporter = FleetReporter(output_dir=output_dir)
    else:
        reporter = reporter or Reporter()
        reporter.prefix_hosts = reporter.prefix_hosts or settings.inventory is not None
    # What the task prints is masked on the host already; this also covers every other line we print.
    reporter.hide([os.environ[name] for name in settings.secrets if os.environ.get(name)])
    return reporter


def _finish(command: str, outcome: Outcome, reporter: Reporter) -> Outcome:
    """Raise one HostFailure naming every failed host and step; return the outcome otherwise."""
    reporter.finish()
    failures = reporter.failures()
    if outcome.rc == 0 and not failures:
        if outcome.artifacts:  # keep_artifacts
            reporter.write(f"Ansible artifacts kept in {outcome.artifacts}")
        return outcome
    if not failures and not reporter.hosts:
        failures = {"(no host)": ("start", f"ansible-playbook exited with {outcome.rc} before reaching a host")}
    listed = "; ".join(group_by_reason(failures))
    where = f" (Ansible artifacts kept in {outcome.artifacts})" if outcome.artifacts else ""
    code = reporter.run_exit_code() if command == "run" else None
    raise HostFailure(f"{command} failed on {len(failures)} host(s): {listed}{where}", failures, code or 1)


@contextlib.contextmanager
def interruptible() -> Iterator[threading.Event]:
    """Turn Ctrl-C into an event ansible-runner polls, so the play stops cleanly instead of mid-write."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def pick_up_command(settings: Settings, job: Job, host: str, command: str = "attach") -> str:
    """The exact command that picks a run up on one host: `attach` follows it to its end and fetches."""
    argv = ["mlcube-ssh-ansible", command, f"--mlcube={os.path.abspath(job.cube_root)}"]
    if os.path.abspath(job.workspace) != os.path.join(os.path.abspath(job.cube_root), "workspace"):
        argv.append(f"--workspace={os.path.abspath(job.workspace)}")
    argv += ["--run", job.run_id]
    if settings.inventory:
        argv += ["-P", f"runner.hosts={host}"]
    return shlex.join(argv)


def _explain_lost_hosts(settings: Settings, job: Job, reporter: Reporter) -> None:
    """Per host whose connection did not come back, or whose run died: what is known, and how to go on.

    The reason is what the command's error and the run record say for that host."""
    for host, report in sorted(reporter.hosts.items()):
        last = " | ".join(report.last_output) or "(none)"
        if report.lost is not None and report.reason and "mlcube-ssh-ansible attach" not in report.reason:
            known = report.lost.get("known") or {}
            exit_code = (f"exit code {known['rc']} recorded" if known.get("rc") is not None
                         else "no exit code recorded yet, so its task may still be running there")
            report.pick_up = pick_up_command(settings, job, host)
            report.reason = (f"{report.reason}; {exit_code}; last output: {last}; nothing is lost: "
                             f"`{report.pick_up}` follows it to its end and fetches, "
                             f"`{pick_up_command(settings, job, host, 'fetch')}` fetches what exists now")
            reporter.write(f"{host}: gave up reconnecting after {settings.reconnect_timeout} s "
                           f"(reconnect_timeout); to pick the run up: {report.pick_up}")
        elif report.died and report.reason and "last output:" not in report.reason:
            report.reason = f"{report.reason}; last output: {last}"


class Interrupts:
    """Ctrl-C during `run`: the first stops the play (the workflow then cancels the remote task and fetches);
    a second, while that goes on, only says so; a third aborts it. No KeyboardInterrupt ever lands mid-play,
    where it would leave the private folder and the run record half done."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.abort = threading.Event()
        self.count = 0
        self.notice = ""  # what a second Ctrl-C prints

    def __call__(self, *_: object) -> None:
        self.count += 1
        if self.count == 1:
            self.cancel.set()
        elif self.count == 2 and self.notice:
            # A signal handler can interrupt a print on the same stream: write to the file descriptor directly.
            with contextlib.suppress(OSError):
                os.write(sys.stderr.fileno(), (self.notice + "\n").encode())
        elif self.count >= 3:
            self.abort.set()


@contextlib.contextmanager
def interrupts() -> Iterator[Interrupts]:
    """Interrupts for the length of a `run`, cancel and fetch included."""
    handler = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGINT, previous)


class CancelReport(Reporter):
    """The cancel play's reporter: what mlcube.ssh.stop found and did on each host."""

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(write=write, show_steps=False)
        self.stops: dict[str, dict[str, Any]] = {}

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        if event.get("event") == "runner_on_ok" and res.get(RESULT_KEY) == STOP_RESULT and data.get("host"):
            self.stops[str(data["host"])] = res
        return super().__call__(event)


def stop_summary(settings: Settings, job: Job, hosts: Sequence[str], stopped: CancelReport,
                 aborted: bool) -> tuple[list[str], str]:
    """One line per host saying what the cancel really did, and the command's one-line outcome."""
    failures = stopped.failures()
    lines: list[str] = []
    verdicts: dict[str, list[str]] = {}
    for host in sorted(set(hosts) | set(stopped.stops) | set(failures)):
        res = stopped.stops.get(host)
        containers = len(res.get("containers") or []) if res else 0
        if res is not None and res.get("stopped"):
            verdict = "stopped" + (f" with {containers} container(s)" if containers else "")
        elif res is not None and res.get("ended"):
            verdict = "had already ended"
        elif res is not None:
            verdict = "had not started" + (f"; {containers} container(s) stopped" if containers else "")
        elif host in failures:
            verdict = f"may still be running: the cancel failed at {failures[host][0]}: {failures[host][1]}"
        else:
            verdict = "may still be running: the cancel was aborted" if aborted else \
                "may still be running: the cancel did not reach this host"
        lines.append(f"{host}: run {job.run_id} {verdict}")
        verdicts.setdefault(verdict.split(":")[0], []).append(host)
    left = verdicts.get("may still be running", [])
    parts = [f"{verdict} on {', '.join(names)}" for verdict, names in verdicts.items()
             if verdict != "may still be running"]
    if left:
        where = f"{settings.remote_root}/{remote_name(job.cube_root)}"
        parts.append(f"it may still be running on {', '.join(left)} in {where} (output in "
                     f"{settings.remote_root}/.mlcube-ssh-ansible/{remote_name(job.cube_root)}/runs/{job.run_id}); "
                     f"check with `mlcube-ssh-ansible status --run {job.run_id}`")
    return lines, "; ".join(parts) or "no host to stop it on"


def handover_seconds(settings: Settings) -> int:
    """With an inventory, how long the play waits for a host whose connection was lost while following its run
    before going on without it (so the other hosts fetch meanwhile); it is then followed apart, in a play of
    its own, for the rest of reconnect_timeout."""
    return min(settings.reconnect_timeout, 3 * settings.connect_timeout)


def _handover_extra(settings: Settings) -> dict[str, Any]:
    return {"_mlcube_ssh_follow_handover": handover_seconds(settings)} if settings.inventory else {}


def _follow_lost_hosts(settings: Settings, job: Job, reporter: Reporter, outcome: Outcome,
                       cancel: threading.Event, verbosity: int) -> Outcome:
    """Follow apart, to their end, the hosts the play went on without (see handover_seconds), and fetch."""
    now = time.time()
    lost = {host: report for host, report in reporter.hosts.items()
            if report.lost is not None and report.failed_step == "remote run"}
    if not lost or cancel.is_set() or not settings.inventory:
        return outcome
    since = min(float(report.lost.get("since") or now) for report in lost.values() if report.lost)
    remaining = int(settings.reconnect_timeout - (now - since))
    if remaining <= 0:
        return outcome
    reporter.write(f"{name_list(sorted(lost))}: still not reachable; the other hosts went on; reconnecting for "
                   f"up to {remaining} s more")
    offsets = {host: dict(report.offsets or {}) for host, report in lost.items()}
    for host, report in lost.items():
        fresh = HostReport(run_dir=report.run_dir, run_started=report.run_started)
        fresh.last_output.extend(report.last_output)
        reporter.hosts[host] = fresh
    extra = {"mlcube_ssh_follow_cursor": job.run_id or "follow", "mlcube_ssh_follow_offsets": offsets,
             "mlcube_ssh_reconnect_timeout": remaining,
             "mlcube_ssh_per_host_results": len(reporter.hosts) > 1}  # where results go stays put
    invocation = dataclasses.replace(
        playbook_invocation("attach", settings, job, tags=(assets.TAG_REMOTE_RUN, assets.TAG_FETCH), extra=extra,
                            verbosity=verbosity),
        limit=",".join(sorted(lost)))
    retried = _play(invocation, reporter, cancel)
    failed_elsewhere = set(reporter.failures()) - set(lost)
    return retried if not failed_elsewhere else dataclasses.replace(retried, rc=retried.rc or outcome.rc)


# Steps a host can be retried from after a lost connection: nothing on it was started yet.
BEFORE_LAUNCH = ("check", "python env", "upload", "remote configure")


def _with_retries(invocation: Invocation, settings: Settings, reporter: Reporter,
                  cancel: threading.Event) -> Outcome:
    """Run the play; rerun it for hosts that were unreachable before their task started, `retries` times.

    Every step is idempotent, so a rerun only finishes what the lost connection interrupted.
    """
    outcome = _play(invocation, reporter, cancel)
    stale = sorted(host for host, (_, reason) in reporter.failures().items() if reason.startswith(STALE_COPY))
    if stale and not cancel.is_set():  # their copy changed since the last run: this time work it out and upload
        for host in stale:
            reporter.hosts[host] = HostReport()
        full = {name: {host: value for host, value in (invocation.extravars.get(name) or {}).items()
                       if host not in stale} for name in ("mlcube_ssh_synced", "mlcube_ssh_known_paths")}
        per_host = {"mlcube_ssh_per_host_results": len(reporter.hosts) > 1}  # where results go stays put
        uploads = tuple(tag for tag in invocation.skip_tags if tag != assets.TAG_UPLOAD)
        retried = _play(dataclasses.replace(invocation, limit=",".join(stale), skip_tags=uploads,
                                            extravars={**invocation.extravars, **full, **per_host}),
                        reporter, cancel)
        failed_elsewhere = set(reporter.failures()) - set(stale)
        outcome = retried if not failed_elsewhere else dataclasses.replace(retried, rc=retried.rc or outcome.rc)
    for attempt in range(1, settings.retries + 1):
        lost = {host: reason for host, (step, reason) in reporter.failures().items()
                if reason.startswith("unreachable") and step in BEFORE_LAUNCH and HOST_KEY_HINT not in reason}
        if not lost or cancel.is_set():
            break
        by_reason: dict[str, list[str]] = {}
        for host, reason in sorted(lost.items()):
            by_reason.setdefault(reason, []).append(host)
            reporter.hosts[host] = HostReport()
        for reason, hosts in by_reason.items():
            reporter.write(f"{name_list(hosts)}: retry {attempt}/{settings.retries} after: {reason}")
        time.sleep(attempt)
        per_host = {"mlcube_ssh_per_host_results": len(reporter.hosts) > 1}  # where results go stays put
        retry = dataclasses.replace(invocation, limit=",".join(sorted(lost)),
                                    extravars={**invocation.extravars, **per_host})
        retried = _play(retry, reporter, cancel)
        failed_elsewhere = set(reporter.failures()) - set(lost)
        outcome = retried if not failed_elsewhere else dataclasses.replace(retried, rc=retried.rc or outcome.rc)
    return outcome


def configure(settings: Settings, job: Job, *, reporter: Reporter | None = None, check: bool = False,
              verbosity: int = 0) -> Outcome:
    """Create/check the remote Python, upload the cube, and run the remote `mlcube configure`."""
    _preflight(settings)
    reporter = _reporter(settings, reporter, verbosity)
    _warn_size(job, reporter)
    exclude_from = _exclude_from(job)
    state = State(settings, job, exclude_from)
    if state.configure_skippable(check):
        reporter.write(f"{settings.host or settings.hosts}: nothing changed since the last configure; hosts not "
                       "contacted (skip_unchanged: false checks them anyway)")
        return Outcome(status="skipped", rc=0)
    invocation = playbook_invocation("configure", settings, job, check=check, verbosity=verbosity,
                                     exclude_from=exclude_from, extra=state.prune_vars())
    with interruptible() as cancel:
        outcome = _with_retries(invocation, settings, reporter, cancel)
    if cancel.is_set():
        raise Interrupted("configure interrupted; the remote hosts may be half-configured: run configure again")
    if not check:
        state.remember_pruned(reporter)
    outcome = _finish("configure", outcome, reporter)
    if not check:
        state.configured()
    return outcome


def run(settings: Settings, job: Job, *, reporter: Reporter | None = None, verbosity: int = 0,
        fetch_on_interrupt: bool = True) -> Outcome:
    """Upload what changed, run the tasks remotely, fetch the workspace back (also after a failure).

    Ctrl-C stops the remote task too (and the containers it started), fetches what exists when
    `fetch_on_interrupt`, and raises Interrupted (exit code 130). With ``job.detach`` the task is only
    started: it keeps running on the hosts, and `attach`, `status`, `logs` and `fetch` find it by run id.
    """
    offered = secrets.read(settings.secrets)  # a missing one stops here, before any host is touched
    _preflight(settings)
    job = dataclasses.replace(job, run_id=job.run_id or new_run_id())
    exclude_from = _exclude_from(job)
    state = State(settings, job, exclude_from)
    reporter = _reporter(settings, reporter, verbosity, state.run_output_dir())
    _warn_size(job, reporter)
    # Hosts whose remote copy is what the last run left skip their upload; results deleted locally go there too.
    plan = state.upload_plan()
    extra: dict[str, Any] = {
        "mlcube_ssh_run_holder": f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}",
        **state.upload_vars(plan), **state.prune_vars(), **_handover_extra(settings)}
    invocation = playbook_invocation("run", settings, job, extra=extra, verbosity=verbosity,
                                     exclude_from=exclude_from, offered=offered)
    record = state.start_run()
    with interrupts() as signals:
        signals.notice = (f"still stopping run {job.run_id} on the remote hosts; Ctrl-C once more to abort "
                          "(the task may then keep running there)")
        outcome = _with_retries(invocation, settings, reporter, signals.cancel)
        if not job.detach:
            outcome = _follow_lost_hosts(settings, job, reporter, outcome, signals.cancel, verbosity)
        if not signals.cancel.is_set():
            _explain_lost_hosts(settings, job, reporter)
            state.remember_pruned(reporter)
            state.remember_fetched(reporter)
            state.finish_run(record, reporter)
            state.remember_synced(plan, reporter)
            try:
                return _finish("run", outcome, reporter)
            except HostFailure:
                state.forget_configured()
                raise
        state.forget_all_hosts()
        reporter.write(f"interrupted: stopping run {job.run_id} on the remote hosts")
        stopped = CancelReport(write=reporter.write)
        try:
            run_playbook(playbook_invocation("cancel", settings, job, verbosity=verbosity), stopped, signals.abort)
            fetch = fetch_on_interrupt and not signals.abort.is_set()
            if fetch:
                _play(playbook_invocation("run", settings, job, tags=(assets.TAG_FETCH,), verbosity=verbosity),
                      reporter, signals.abort)
                state.remember_fetched(reporter)
        finally:
            state.finish_run(record, reporter)
        lines, outcome_text = stop_summary(settings, job, list(reporter.hosts), stopped, signals.abort.is_set())
        for line in lines:
            reporter.write(line)
        reporter.finish()
    fetched_text = ("; outputs so far were fetched" if fetch and not signals.abort.is_set()
                    else "; nothing was fetched" if fetch_on_interrupt else "")
    raise Interrupted(f"run {job.run_id} interrupted; {outcome_text}{fetched_text}")


def status(settings: Settings, job: Job, *, run_id: str | None = None, logs: bool = False,
           reporter: Reporter | None = None, verbosity: int = 0) -> dict[str, dict[str, Any]]:
    """Per host: running or not, exit code and times of a run, with `logs` its output, and under "runs" every
    run of the cube there, newest first, with its state.

    Without `run_id`, each host reads its newest run that started (a refused launch leaves none), not the
    newest local record, which may be of a run that every host refused."""
    _preflight(settings)
    reporter = _reporter(settings, reporter or Reporter(show_steps=False))
    job = dataclasses.replace(job, run_id=run_id or "")
    invocation = playbook_invocation("status", settings, job, extra={"mlcube_ssh_logs": logs}, verbosity=verbosity)
    outcome = run_playbook(invocation, reporter)
    _finish("status", outcome, reporter)
    states: dict[str, dict[str, Any]] = {}
    for host, report in reporter.hosts.items():
        runs = report.runs or []
        shown = run_id or (runs[0]["run_id"] if runs else None)
        states[host] = {**(report.status or {}), "run_id": shown, "runs": runs}
    return states


def slots(settings: Settings, job: Job, *, reporter: Reporter | None = None,
          verbosity: int = 0) -> dict[str, dict[str, Any]]:
    """Per host: its GPUs (nvidia-smi, or declared) and CPU-only slots, each free, leased or busy."""
    _preflight(settings)
    reporter = _reporter(settings, reporter or Reporter(show_steps=False))
    outcome = run_playbook(playbook_invocation("slots", settings, job, verbosity=verbosity), reporter)
    _finish("slots", outcome, reporter)
    return {host: report.slots or {} for host, report in reporter.hosts.items()}


def _stop_lines(job: Job, hosts: Sequence[str], stopped: CancelReport) -> list[str]:
    """What `cancel` did, one line per host and run (with --all, only the runs that were going on)."""
    failures = stopped.failures()
    lines: list[str] = []
    for host in sorted(set(hosts) | set(stopped.stops) | set(failures)):
        res = stopped.stops.get(host)
        if res is None:
            reason = f"the cancel failed at {failures[host][0]}: {failures[host][1]}" if host in failures else \
                "the cancel did not reach this host"
            lines.append(f"{host}: {'run ' + job.run_id if job.run_id else 'the runs'} may still be running: {reason}")
            continue
        runs = [run for run in res.get("runs") or [] if isinstance(run, dict)]
        if not runs:
            lines.append(f"{host}: no run of this cube is running")
        for run in runs:
            containers = len(run.get("containers") or [])
            if run.get("stopped"):
                verdict = "stopped" + (f" with {containers} container(s)" if containers else "")
            elif run.get("ended"):
                verdict = "had already ended"
            else:
                verdict = "had not started" + (f"; {containers} container(s) stopped" if containers else "")
            lines.append(f"{host}: run {run.get('run_id')} {verdict}")
    return lines


def cancel(settings: Settings, job: Job, *, run_id: str | None = None, reporter: Reporter | None = None,
           verbosity: int = 0) -> list[str]:
    """Stop one run (`run_id`), or every run of the cube that is going on, on the selected hosts: the remote
    task and the containers it started. Prints and returns one line per host and run."""
    _preflight(settings)
    reporter = _reporter(settings, reporter or Reporter(show_steps=False))
    job = dataclasses.replace(job, run_id=run_id or "")
    stopped = CancelReport(write=reporter.write)
    outcome = run_playbook(playbook_invocation("cancel", settings, job, verbosity=verbosity), stopped)
    lines = _stop_lines(job, list(stopped.hosts), stopped)
    for line in lines:
        reporter.write(line)
    _finish("cancel", outcome, stopped)
    return lines


def attach(settings: Settings, job: Job, *, run_id: str | None = None, reporter: Reporter | None = None,
           verbosity: int = 0, follow: bool = True, fetch: bool = True) -> Outcome:
    """Follow a run to its end and fetch exactly as an attached `run` would (`attach`); or only follow its
    output (`logs --follow`); or only fetch what exists now (`fetch`)."""
    _preflight(settings)
    state, record = State(settings, job).recorded_run(run_id)
    job = state.job
    reporter = _reporter(settings, reporter, verbosity, state.run_output_dir())
    tags = (assets.TAG_REMOTE_RUN,) * follow + (assets.TAG_FETCH,) * fetch
    extra: dict[str, Any] = {"mlcube_ssh_follow_cursor": uuid.uuid4().hex}
    if len(record.get("hosts") or {}) > 1:
        extra["mlcube_ssh_per_host_results"] = True
    extra.update(_handover_extra(settings) if follow and fetch else {})
    invocation = playbook_invocation("attach", settings, job, tags=tags, verbosity=verbosity, extra=extra)
    with interruptible() as cancel:
        outcome = _play(invocation, reporter, cancel)
        if follow and fetch:
            outcome = _follow_lost_hosts(settings, job, reporter, outcome, cancel, verbosity)
    if cancel.is_set():
        raise Interrupted(f"stopped following run {job.run_id}; it keeps running on the hosts")
    _explain_lost_hosts(settings, job, reporter)
    if fetch:
        state.remember_fetched(reporter)
        state.finish_run(record, reporter)
    return _finish("run" if follow else "fetch", outcome, reporter)
