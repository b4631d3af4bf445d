# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Action of mlcube.ssh.follow: carries the read position from one call of the `until` loop to the next, and
rides out a lost connection.

The read position lives here on the controller, in the previous answer of the same loop (Ansible hands the
registered result of the last attempt to the next one), so an answer lost with the connection is asked for
again from the same offsets: nothing is printed twice and nothing is skipped.

A call that cannot reach the host (a reset TCP connection, an sshd restart, a VPN reconnect) does not fail
the task: it returns at once, without output, saying since when the connection is lost, and the loop asks
again after a backoff (1, 2, 4 … 30 s). Each try opens a new ssh connection (and so a new ControlMaster, as
the reset killed the old one). Only after ``reconnect_timeout`` seconds without an answer does the task fail,
saying what is known. All of this happens in the host's own worker process, so other hosts go on meanwhile.

``launched`` is the answer of the mlcube.ssh.launch call that started the run: when the command ended while the
launch waited (a short task), that answer already is the final one (all output, exit code), and it is returned
as this task's answer without another module call.

Each call is lean where it can be (plugins/plugin_utils/lean.py): the module's code, module_utils/follow_state.py,
goes as it is to the host's Python, without Ansible's module payload (~0.2 s of the host's CPU per call, where a
fleet follows every host at least once per run and a long run is asked every few seconds).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.action import ActionBase
from ansible_collections.mlcube.ssh.plugins.module_utils import follow_state
from ansible_collections.mlcube.ssh.plugins.plugin_utils import lean

MODULE = "mlcube.ssh.follow"
RESULT = {"mlcube_ssh_result": "run"}  # what every answer is, for the shim: a run's state and its new output
MAX_BACKOFF = 30.0


def _previous(task_vars: Mapping[str, Any], register: str | None, run_dir: str, cursor: str) -> dict[str, Any]:
    """The last answer of this same loop (same run folder, same reader), or {} on the first call."""
    previous = task_vars.get(register) if register else None
    if isinstance(previous, Mapping) and previous.get("run_dir") == run_dir and previous.get("cursor") == cursor:
        return dict(previous)
    return {}


# What the launch's answer shares with a final answer of the module.
_FOLLOW_KEYS = ("stdout", "stderr", "offsets", "done", "died", "running", "rebooted", "rc", "started", "ended")


def _final_from_launch(launched: Mapping[str, Any], run_dir: str, cursor: str) -> dict[str, Any]:
    """The launch's answer for a run that ended while it waited, as this module's final answer."""
    result = {key: launched[key] for key in _FOLLOW_KEYS if key in launched}
    for stream in ("stdout", "stderr"):  # as _execute_module adds them to a module's answer
        result[stream + "_lines"] = str(result.get(stream, "")).splitlines()
    result.update(RESULT, changed=False, run_dir=run_dir, cursor=cursor, at_launch=True)
    return result


class ActionModule(ActionBase):
    """Runs the module with the offsets of the previous answer; turns a lost connection into a retry."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("run_dir", "offsets", "cursor", "wait", "batch", "max_bytes", "rewind",
                             "reconnect_timeout", "launched"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        super().run(tmp, task_vars)
        args = dict(self._task.args)
        timeout = float(args.pop("reconnect_timeout", 0) or 0)
        run_dir = str(args.get("run_dir"))
        cursor = str(args.get("cursor") or "default")
        previous = _previous(task_vars, self._task.register, run_dir, cursor)
        launched = args.pop("launched", None)
        host = str(task_vars.get("inventory_hostname", ""))
        if not previous and isinstance(launched, Mapping) and launched.get("done") and \
                launched.get("run_dir") == run_dir:
            return follow_state.with_verdict(_final_from_launch(launched, run_dir, cursor), host)
        if previous and not args.get("rewind"):
            args["offsets"] = previous.get("offsets") or {}
        lost = previous.get("lost") if isinstance(previous.get("lost"), Mapping) else None
        if lost:  # the previous call found no connection: wait before the next try
            time.sleep(min(float(lost.get("backoff", 1.0)), max(0.0, float(lost["since"]) + timeout - time.time())))
        try:
            result = lean.answer(self, task_vars, MODULE, follow_state.__file__, follow_state.ARGUMENT_SPEC, args)
        except AnsibleConnectionFailure as error:
            if timeout <= 0:
                raise
            return self._lost(previous, lost, str(error), timeout, args.get("offsets") or {}, run_dir, cursor)
        result.update(RESULT, run_dir=run_dir, cursor=cursor)
        if lost:
            result["reconnected"] = {"since": lost["since"], "seconds": round(time.time() - float(lost["since"]), 1),
                                     "tries": int(lost.get("tries", 1)) + 1}
        return follow_state.with_verdict(result, host)

    def _lost(self, previous: dict[str, Any], lost: Mapping[str, Any] | None, error: str, timeout: float,
              offsets: Mapping[str, Any], run_dir: str, cursor: str) -> dict[str, Any]:
        """No answer: a non-final result (the loop retries after a backoff), or the failure past the limit."""
        now = time.time()
        since = float(lost["since"]) if lost else now
        tries = int(lost.get("tries", 0)) + 1 if lost else 1
        reason = error.strip().splitlines()[-1] if error.strip() else "connection lost"
        known = {key: previous.get(key) for key in ("rc", "started", "running") if key in previous}
        state = {"since": since, "tries": tries, "backoff": min(MAX_BACKOFF, 2.0 ** (tries - 1)), "reason": reason,
                 "timeout": timeout, "known": known}
        result: dict[str, Any] = {"changed": False, "stdout": "", "stderr": "", "offsets": dict(offsets),
                                  "run_dir": run_dir, "cursor": cursor, "lost": state, **RESULT}
        if previous.get("started"):
            result["started"] = previous["started"]
        if now - since >= timeout:
            del result["lost"]
            result["gave_up"] = state
            result["msg"] = (f"connection lost {round(now - since)} s ago and not back within reconnect_timeout "
                             f"({timeout:g} s): {reason}")
        return result
