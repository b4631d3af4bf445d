"""Reporting: ansible-runner events -> one line per host per step, the remote task's output, errors.

Plain Ansible output is long and shows nothing of what matters to an MLCube user (which host is
at which step, what the task printed, why it failed). The :class:`Reporter` turns the event stream
into a short report and keeps what the workflow needs to decide the exit code.
"""

from __future__ import annotations

import collections
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from . import rsync_items
from .secrets import mask

# Role -> the step name users see. Tasks outside a role belong to the run's result.
STEPS = {
    "mlcube_ssh_preflight": "check",
    "mlcube_ssh_python_env": "python env",
    "mlcube_ssh_upload": "upload",
    "mlcube_ssh_remote_configure": "remote configure",
    "mlcube_ssh_remote_run": "remote run",
    "mlcube_ssh_fetch": "fetch",
}
# What a result is, the plays say in the result itself, never in a task's name (tasks are free to be renamed;
# tests/unit/test_results_contract.py checks it): the modules and action plugins whose results the shim reads
# put RESULT_KEY in them, and facts it reads are known by their variable names.
RESULT_KEY = "mlcube_ssh_result"
RUN_RESULT = "run"  # follow: a run's state (running, rc, times, died) and its output since the last answer
FETCH_RESULT = "fetch"  # synchronize, mode pull: the files brought back, and where to (fetch_dest)
STOP_RESULT = "stop"  # stop: what a cancel found and did on the host
LAUNCH_RESULT = "launch"  # launch: the run started (or was queued) on the host, in run_dir
RUNS_RESULT = "runs"  # runs: every run of the cube on the host, newest first, with its state
SLOTS_RESULT = "slots"  # slots: the host's GPUs and CPU-only slots, each free, leased or busy
PATHS_RESULT = "paths"  # paths: the remote paths, with `known` (what a warm run passes to answer without a call)
# A launch that found the host's copy changed since the last run (mlcube.ssh.launch's expect_synced) starts with
# this: nothing started there, and the workflow runs the play again for that host with the full path.
STALE_COPY = "the remote copy changed"
VALIDATE_ACTIONS = {"validate_argument_spec", "ansible.builtin.validate_argument_spec"}
QUIET_STEPS = {"check"}  # only reported when they fail
SKIPPED_STATES = {"upload": "skipped, nothing changed since the last run"}


def _stdout(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class StderrFilter:
    """Drops Python traceback frames and warnings from a remote stderr stream, chunk by chunk.

    What is left is what the task itself said; MLCube's tracebacks around it say little to a user.
    """

    def __init__(self) -> None:
        self.skipping = False  # inside a traceback's or a warning's indented lines

    def feed(self, lines: list[str]) -> list[str]:
        kept: list[str] = []
        for line in lines:
            if line.startswith("Traceback (most recent call last)") or "Warning: " in line:
                self.skipping = True
            elif (not line.strip() or line.startswith("During handling of the above exception")
                  or (self.skipping and line.startswith((" ", "\t")))):
                continue
            else:
                self.skipping = False
                kept.append(line)
        return kept


@dataclass
class HostReport:
    """What one host did: the step in progress, failures, and the remote task's result."""

    step: str | None = None
    step_started: float = 0.0
    step_changed: bool = False
    step_ran: bool = False  # a task of the step ran (not all of them were skipped)
    step_files: int = 0
    failed_step: str | None = None
    reason: str | None = None
    run_rc: int | None = None
    run_started: str | None = None
    run_ended: str | None = None
    fetch_dest: str | None = None
    fetched: list[str] = field(default_factory=list)
    status: dict[str, Any] | None = None
    run_dir: str | None = None  # the run folder on the host, once launched or followed
    launched: bool = False  # this command started the run on the host (a refused launch starts nothing)
    runs: list[dict[str, Any]] | None = None  # the cube's runs on the host, newest first (status)
    slots: dict[str, Any] | None = None  # the host's GPUs and CPU-only slots (slots)
    known_paths: dict[str, Any] | None = None  # mlcube.ssh.paths' `known`: what the next warm run passes
    offsets: dict[str, int] | None = None  # how much of the run's stdout/stderr was shown (bytes)
    lost: dict[str, Any] | None = None  # the connection was lost while following and did not come back in time
    died: bool = False  # the run is gone without an exit code
    rebooted: bool = False  # ... because the host booted since it started
    run_failed: str = ""  # the follow's verdict on a run that failed or died (roles/.../tasks/result.yml's message)
    pick_up: str | None = None  # the command that picks the run up on this host, when it was given up on
    last_output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=3))
    stderr: StderrFilter = field(default_factory=StderrFilter)
    steps_done: list[tuple[str, bool, float]] = field(default_factory=list)

    def completed(self, step: str) -> bool:
        """The step ran to its end on this host without failing there."""
        return any(done == step for done, _, _ in self.steps_done) and self.failed_step != step


HOST_KEY_HINT = (
    "the host key is not known or has changed: check the key with the host's owner, then add it with "
    "`ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts` (or the file in 'known_hosts'), or use "
    "host_key_checking: accept-new for hosts seen for the first time"
)


# Module messages that only say *that* a command failed; the command's own output says why.
GENERIC_MESSAGES = re.compile(r"^(non-zero return code|MODULE FAILURE\b.*|Task failed: .*non-zero return code)$",
                              re.IGNORECASE | re.DOTALL)
# Lines that name the root cause even when later lines say something else (rsync's sender reports a broken
# pipe after the receiver died of a full disk): kept in the reason wherever they are.
ROOT_CAUSES = re.compile(r"No space left on device|Disk quota exceeded|Read-only file system|Cannot allocate memory",
                         re.IGNORECASE)
REASON_LINES = 5  # the last lines of the remote command's error output that a failure shows
_NOISE = re.compile(r"^\[notice\]|^WARNING: You are using pip version|^Traceback \(most recent call last\)")
INTERPRETER_HINT = (
    "the Python that runs Ansible's modules is missing on the host: install python3 there (3.8 or newer) or set "
    "interpreter.python (or ansible_python_interpreter) to its path"
)


def _lines(text: str) -> list[str]:
    """The telling lines of an error output: no blanks, traceback frames, warnings or pip notices."""
    kept = StderrFilter().feed([line.rstrip() for line in text.replace("\r", "\n").splitlines()])
    return [line.strip() for line in kept if line.strip() and not _NOISE.search(line.strip())]


def _reason(res: dict[str, Any]) -> str:
    """One line that says why a task failed: the last lines (at most REASON_LINES) of what the remote command
    said on stderr (or stdout, if it said nothing there), joined with ' | ', never just 'non-zero return code'.

    A root cause such as 'No space left on device' is kept even when it came before those lines."""
    texts = [res.get(key) for key in ("stderr", "module_stderr", "stdout", "module_stdout", "msg")]
    found = {key: text for key, text in zip(("stderr", "module_stderr", "stdout", "module_stdout", "msg"), texts)
             if isinstance(text, str) and text.strip()}
    everything = "\n".join(found.values())
    if "Host key verification failed" in everything or "REMOTE HOST IDENTIFICATION HAS CHANGED" in everything:
        return HOST_KEY_HINT
    if res.get("rc") == 127 and re.search(r"python[0-9.]*: (not found|No such file)", everything):
        return INTERPRETER_HINT
    msg = found.get("msg", "")
    generic = not msg or bool(GENERIC_MESSAGES.match(msg.strip()))
    lines: list[str] = []
    for key in ("stderr", "module_stderr", "stdout", "module_stdout") if generic else ("msg",):
        lines = _lines(found.get(key, ""))
        if lines:
            break
    if not lines and not generic:
        lines = _lines(msg)
    if not lines:
        return "failed" + (f" with exit code {res['rc']}" if isinstance(res.get("rc"), int) else "")
    tail = lines[-REASON_LINES:]
    causes = [line for line in lines[:-REASON_LINES] if ROOT_CAUSES.search(line)]
    return " | ".join(line[:300] for line in causes[-1:] + tail)[:1500]


def moved_files(res: dict[str, Any]) -> list[str]:
    """Files rsync transferred, either way, from synchronize's result."""
    return rsync_items.parse(res.get("stdout_lines") or []).files_moved


def name_list(hosts: list[str], most: int = 8) -> str:
    """`a, b, c` or, past `most`, `a, b, ... (+N more)`."""
    shown = ", ".join(hosts[:most])
    return shown + (f", ... (+{len(hosts) - most} more)" if len(hosts) > most else "")


def group_by_reason(failures: dict[str, tuple[str, str]], most: int = 8) -> list[str]:
    """host -> (step, reason) as one phrase per distinct (step, reason), the largest group first."""
    groups: dict[tuple[str, str], list[str]] = {}
    for host, cause in sorted(failures.items()):
        groups.setdefault(cause, []).append(host)
    phrases = []
    for (step, reason), hosts in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        phrases.append(f"{hosts[0]} at {step}: {reason}" if len(hosts) == 1
                       else f"{len(hosts)} hosts at {step}: {reason}: {name_list(hosts, most)}")
    return phrases


class Reporter:
    """Event handler for ansible-runner; also the source of the command's summary."""

    def __init__(self, write: Callable[[str], None] = _stdout, show_steps: bool = True,
                 prefix_hosts: bool = False) -> None:
        self.write = write
        self.show_steps = show_steps
        self.prefix_hosts = prefix_hosts  # prefix the task's output with its host (fleets)
        self.hosts: dict[str, HostReport] = {}
        self.hidden: list[str] = []
        # The play leaves out the `result` tasks (which fail the hosts whose task failed, after the fetch): the
        # reporter fails those hosts with the follow's `run_failed` instead, when the play ends.
        self.fails_runs = False
        # Steps the play leaves out, known to be skipped on every host: shown as skipped all the same, before
        # the host's first step after the check.
        self.left_out: tuple[str, ...] = ()

    def hide(self, values: Iterable[str]) -> None:
        """Mask these values (secrets) in every line written and every failure reason from now on."""
        new = [value for value in values if value and value not in self.hidden]
        if not new:
            return
        if not self.hidden:
            write = self.write
            self.write = lambda text: write(mask(text, self.hidden))
        self.hidden += new

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            for name in self.hosts:
                self._close_step(name)
            for name, report in self.hosts.items() if self.fails_runs else ():
                if report.run_failed and report.failed_step is None:
                    self._fail(name, STEPS["mlcube_ssh_remote_run"], report.run_failed)
        host = data.get("host")
        if data.get("task_action") in VALIDATE_ACTIONS and kind != "runner_on_failed":
            return True  # role argument checks: noise unless they fail
        res = data.get("res") or {}
        if host and kind == "runner_retry" and res.get(RESULT_KEY) == RUN_RESULT:
            self._follow_state(host, res)
            self._show_output(host, res)
        elif host and kind == "runner_on_start":
            self._open_step(host, data)
        elif host and kind.startswith("runner_on_"):
            self._on_result(kind, host, data)
        return True

    @staticmethod
    def _step_of(report: HostReport, data: dict[str, Any]) -> str | None:
        """The step a task belongs to: its role's (a task outside any role belongs to the step in progress)."""
        role = str(data.get("role") or "").split(".")[-1]
        return STEPS.get(role, role) if role else report.step

    def _open_step(self, host: str, data: dict[str, Any]) -> HostReport:
        """The step a task belongs to; a new step closes the previous one's line.

        A task of a step that is over is that step's verdict (remote run's, given after the fetch, so that a
        failed task's outputs come back too): it opens no new line."""
        report = self.hosts.setdefault(host, HostReport())
        step = self._step_of(report, data)
        if step != report.step and not any(done == step for done, _, _ in report.steps_done):
            self._close_step(host)
            for left in self.left_out if step not in QUIET_STEPS else ():
                if not any(done == left for done, _, _ in report.steps_done):
                    report.steps_done.append((left, False, 0.0))
                    self.step_done(host, left, SKIPPED_STATES.get(left, "skipped"), 0.0, 0)
            report.step, report.step_started = step, time.monotonic()
            report.step_changed, report.step_ran, report.step_files = False, False, 0
        return report

    def _on_result(self, kind: str, host: str, data: dict[str, Any]) -> None:
        report = self._open_step(host, data)
        res = data.get("res") or {}
        over = self._step_of(report, data)
        if over != report.step:  # the verdict of a step that is over
            if kind == "runner_on_failed" and not data.get("ignore_errors"):
                self._fail(host, over or "?", _reason(res))
            return
        if kind == "runner_on_skipped":
            return
        report.step_ran = True
        for warning in res.get("warnings") or []:  # e.g. a remote folder other users can enter
            self.warning(host, str(warning.get("msg") if isinstance(warning, dict) else warning))
        step = report.step or "?"
        report.step_changed = report.step_changed or bool(res.get("changed"))
        moved = moved_files(res)
        report.step_files += len(moved)
        if res.get("mlcube_ssh_reconnects"):
            self.write(f"{host}: {step} resumed after {int(res['mlcube_ssh_reconnects'])} lost connection(s)")
        if res.get(RESULT_KEY) == RUN_RESULT:  # following a run, or reading its state (status, logs)
            self._follow_state(host, res)
            self._show_output(host, res)
            report.status = {key: res.get(key) for key in ("running", "rc", "started", "ended", "msg")}
            report.run_started, report.run_ended = res.get("started"), res.get("ended")
            if "rc" in res:
                report.run_rc = int(res["rc"])
            report.died, report.rebooted = bool(res.get("died")) and "rc" not in res, bool(res.get("rebooted"))
            report.run_failed = str(res.get("run_failed") or "")
            if isinstance(res.get("gave_up"), dict):
                report.lost = res["gave_up"]
        elif res.get(RESULT_KEY) == FETCH_RESULT:
            report.fetched += moved
            report.fetch_dest = str(res.get("fetch_dest") or "") or report.fetch_dest
        elif res.get(RESULT_KEY) == LAUNCH_RESULT and kind == "runner_on_ok":
            report.launched, report.run_dir = True, res.get("run_dir") or report.run_dir
        elif res.get(RESULT_KEY) == RUNS_RESULT and kind == "runner_on_ok":
            report.runs = [dict(run) for run in res.get("runs") or [] if isinstance(run, dict)]
        elif res.get(RESULT_KEY) == SLOTS_RESULT and kind == "runner_on_ok":
            report.slots = {key: res.get(key) for key in ("gpus", "cpus", "source", "waiting")}
        elif res.get(RESULT_KEY) == PATHS_RESULT and kind == "runner_on_ok" and isinstance(res.get("known"), dict):
            report.known_paths = dict(res["known"])
        if kind == "runner_on_unreachable":
            self._fail(host, step, "unreachable: " + _reason(res))
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            self._fail(host, step, _reason(res))

    def _follow_state(self, host: str, res: dict[str, Any]) -> None:
        """Say when the connection to a followed run is lost and when it is back (the output resumes)."""
        report = self.hosts.setdefault(host, HostReport())
        report.run_dir = res.get("run_dir") or report.run_dir
        if isinstance(res.get("offsets"), dict):
            report.offsets = res["offsets"]
        lost = res.get("lost")
        if isinstance(lost, dict) and int(lost.get("tries") or 0) == 1:
            self.write(f"{host}: connection lost ({lost.get('reason')}); its task runs on, reconnecting")
        back = res.get("reconnected")
        if isinstance(back, dict):
            self.write(f"{host}: reconnected after {back.get('seconds')} s; the output goes on where it stopped")

    def _show_output(self, host: str, res: dict[str, Any]) -> None:
        report = self.hosts.setdefault(host, HostReport())
        lines = list(res.get("stdout_lines") or []) + report.stderr.feed(list(res.get("stderr_lines") or []))
        lines = [mask(line, self.hidden) for line in lines]  # also what goes to fleet files and error tails
        if lines:
            self.output(host, lines)
        report.last_output.extend(line for line in lines if line.strip())

    # Presentation: what a user sees of an event. FleetReporter (fleet.py) shows the same events compactly.
    def output(self, host: str, lines: list[str]) -> None:
        """The remote task's new output, as it arrives (prefixed with the host when there are several)."""
        prefix = f"[{host}] " if self.prefix_hosts else ""
        for line in lines:
            self.write(prefix + line)

    def warning(self, host: str, text: str) -> None:
        self.write(f"{host}: warning: {text}")

    def step_done(self, host: str, step: str, state: str, seconds: float, files: int) -> None:
        """A host finished a step (or failed it): one line, unless the step is quiet and went well."""
        if self.show_steps and (state == "FAILED" or step not in QUIET_STEPS):
            moved = f", {files} files" if files else ""
            self.write(f"{host}: {step} {state} ({seconds:.1f}s{moved})")

    def finish(self) -> None:
        """The command is over: nothing more to show here (FleetReporter prints its summary)."""

    def _fail(self, host: str, step: str, reason: str) -> None:
        report = self.hosts.setdefault(host, HostReport())
        if report.failed_step is None:
            report.failed_step, report.reason = step, mask(reason, self.hidden)
        if reason.startswith(STALE_COPY):  # not a failure to show: the workflow uploads and starts it again
            report.step = None
            self.write(f"{host}: {reason}; uploading it again")
            return
        self._close_step(host)

    def _close_step(self, host: str) -> None:
        report = self.hosts[host]
        if report.step is None:
            return
        seconds = time.monotonic() - report.step_started
        failed = report.failed_step == report.step
        report.steps_done.append((report.step, report.step_changed, seconds))
        state = ("FAILED" if failed else "changed" if report.step_changed else "ok" if report.step_ran
                 else SKIPPED_STATES.get(report.step, "skipped"))
        step, report.step = report.step, None
        self.step_done(host, step, state, seconds, report.step_files)

    def failures(self) -> dict[str, tuple[str, str]]:
        """host -> (step, reason) for every host that failed."""
        return {
            host: (report.failed_step, report.reason or "failed")
            for host, report in self.hosts.items()
            if report.failed_step is not None
        }

    def grouped_failures(self, most: int = 8) -> list[str]:
        """The failures, one phrase per step and reason: `host at step: reason` for one host,
        `7 hosts at step: reason: n1, n6, ...` for several (a fleet's shared cause is said once)."""
        return group_by_reason(self.failures(), most)

    def run_exit_code(self) -> int | None:
        """The remote task's exit code when exactly that decided the outcome (for `mlcube run`'s own)."""
        codes = {report.run_rc for report in self.hosts.values() if report.run_rc}
        return codes.pop() if len(codes) == 1 else None
