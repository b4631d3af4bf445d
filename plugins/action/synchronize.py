# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""ansible.posix.synchronize, with its module run inside the Ansible worker instead of in a new Python.

synchronize's action works out the rsync arguments and then ships its module to the *controller* (a local
connection): every transfer starts a Python of its own (~25 MB resident, ~0.2 s of CPU to start and import
module_utils) only to run one rsync. With several hosts transferring at once these Pythons are the largest
part of the controller's peak memory after Ansible's own forks (docs/benchmarks.md). Here the same module code
runs in the worker process that already exists; the worker is forked for this one task and exits after it, so
nothing it changes outlives the task.

Everything else is synchronize's own code: the same options, the same rsync command line, the same result.
Whenever the in-process way is not possible (an unusual connection, async, `environment:`, `become` on the
controller, an ansible-core or ansible.posix this was not written for), it falls back to synchronize's usual
way, a module process.

One addition: a transfer that lost its connection (rsync's exit codes for a broken stream, a timeout, or
ssh's 255) is started again after a backoff (1, 2, 4 … 30 s), for up to ``mlcube_ssh_reconnect_timeout``
seconds since the connection was lost. rsync is idempotent, and with ``--partial-dir`` in the task's options
a file cut off half-way is resumed from what arrived. The files every attempt moved are reported together.

A pull says what it is, for the shim: ``mlcube_ssh_result: fetch`` (the files it lists came back), and where
they went (``fetch_dest``, the local destination).

``also``: one more transfer, with options of its own, run at the same time as the task's (the upload's cube and
workspace: different rsync semantics, one task). The worker is forked for it: the copy runs the same code (its
own arguments, its own reconnect retries) and hands its result back through a pipe; the task's result is the
two combined (``combined``).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import pickle
import time
from collections.abc import Mapping
from typing import Any

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.vars.clean import remove_internal_keys

try:
    from ansible_collections.ansible.posix.plugins.action.synchronize import ActionModule as SynchronizeAction
except ImportError:  # the task fails with the fix, instead of Ansible's "could not load action plugin"

    class SynchronizeAction(ActionBase):  # type: ignore[no-redef]
        def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
            return {"failed": True, "msg": "the Ansible collection ansible.posix is missing: install it with "
                    "`pip install 'mlcube-ssh-ansible[ansible]'` (the `ansible` package carries it) or "
                    "`ansible-galaxy collection install ansible.posix`"}

display = Display()

MODULE = "ansible.posix.synchronize"
# rsync: 10 socket I/O, 12 protocol data stream, 30 timeout in data send/receive, 35 timeout waiting for
# the daemon; 255: ssh could not connect or lost its connection.
CONNECTION_LOST = frozenset({10, 12, 30, 35, 255})
MAX_BACKOFF = 30.0
ALSO = "also"  # one more transfer, run at the same time as the task's own
ALSO_NAME = "name"  # what a failure of that transfer calls it (not a synchronize option)
MKDIR_FAILED = 11  # rsync: error in file I/O, e.g. making the destination folder


def _has_environment(environment: Any) -> bool:
    """Whether the task sets `environment:` (a module process would get it; this worker does not)."""
    if isinstance(environment, (list, tuple)):
        return any(environment)
    return bool(environment)


class ActionModule(SynchronizeAction):
    """synchronize's action; only the last step (running its module on the controller) is done in-process."""

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        args = self._task.args
        if ALSO not in args:
            return self._transfer(tmp, task_vars)
        also = args[ALSO]
        try:
            self._task.args = {key: value for key, value in args.items() if key != ALSO}
            if not also:  # none this time (e.g. `omit`ted by a condition)
                return self._transfer(tmp, task_vars)
            if not isinstance(also, Mapping):
                return {"failed": True, "msg": f"also must be a mapping of synchronize's options, got {also!r}"}
            if self._task.async_val:
                return {"failed": True, "msg": "also cannot be combined with async (one job per task)"}
            return self._together(tmp, task_vars, dict(also))
        finally:
            self._task.args = args

    def _transfer(self, tmp: Any, task_vars: dict[str, Any] | None) -> dict[str, Any]:
        """One transfer, the one self._task.args describe: synchronize's action, then our result keys."""
        pull = self._task.args.get("mode") == "pull"
        result: dict[str, Any] = super().run(tmp, task_vars)
        if pull:
            result["mlcube_ssh_result"] = "fetch"
            # Where this host's results went (the shim keeps it: fetch records, per-host results folders).
            result["fetch_dest"] = str(self._task.args.get("dest") or "").rstrip("/") or "/"
        return result

    def _together(self, tmp: Any, task_vars: dict[str, Any] | None, also: dict[str, Any]) -> dict[str, Any]:
        """The task's transfer here and `also`'s in a fork of this worker, at the same time; both results as one.

        A fork, not a thread: synchronize's action switches this object's connection and play context, and the
        in-worker module run sets module-wide state (its arguments, sys.stdout). The copy runs exactly the code
        a transfer runs here, then leaves with os._exit (nothing of the worker's own exit runs twice).

        Both may make a missing destination folder at once, and one's destination may be inside the other's,
        not there yet: the one that failed so (rsync's exit code 11, mkdir failed) goes again, alone, once."""
        name = str(also.pop(ALSO_NAME, "") or "the second transfer")
        own = self._task.args
        read_end, write_end = os.pipe()
        try:
            pid = os.fork()
        except OSError as error:
            os.close(read_end)
            os.close(write_end)
            return {"failed": True, "msg": f"could not start {name}: {error}"}
        if pid == 0:  # pragma: no cover - the copy; its result is what the tests check
            os.close(read_end)
            try:
                self._task.args = also
                data = pickle.dumps(self._transfer(tmp, task_vars))
            except BaseException as error:  # noqa: BLE001 - whatever it is, the task hears of it
                data = pickle.dumps({"failed": True, "msg": f"{type(error).__name__}: {error}"})
            try:
                with os.fdopen(write_end, "wb") as pipe:
                    pipe.write(data)
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            try:
                first = self._alone(own, tmp, task_vars)
            finally:
                data = pipe.read()  # to its end: the copy writes its whole result, then exits
                os.waitpid(pid, 0)
        try:
            second = pickle.loads(data)  # noqa: S301 - our own fork's result, through our own pipe
        except Exception:  # noqa: BLE001 - the copy died before it answered
            second = {"failed": True, "msg": "it ended without a result"}
        if first.get("rc") == MKDIR_FAILED and not second.get("failed"):
            first = self._alone(own, tmp, task_vars)
        elif second.get("rc") == MKDIR_FAILED and not first.get("failed"):
            second = self._alone(also, tmp, task_vars)
        return combined(first, second, name)

    def _alone(self, args: dict[str, Any], tmp: Any, task_vars: dict[str, Any] | None) -> dict[str, Any]:
        """The transfer `args` describe, in this process; it can run another one afterwards: synchronize's
        action swaps this object's connection for a local one, and changes the play context and task_vars."""
        context = self._play_context
        saved = self._connection, context.shell, context.executable, context.become
        self._task.args = args
        try:
            return self._transfer(tmp, dict(task_vars or {}))
        finally:
            self._connection, context.shell, context.executable, context.become = saved
            self._task.args = args

    def _execute_module(self, module_name: str | None = None, module_args: dict[str, Any] | None = None,
                        tmp: Any = None, task_vars: dict[str, Any] | None = None, *args: Any,
                        **kwargs: Any) -> dict[str, Any]:
        timeout = self._reconnect_timeout(task_vars or {}) if module_name == MODULE else 0.0
        lost_since: float | None = None
        tries = 0
        moved: list[str] = []
        while True:
            result = self._execute_once(module_name, module_args, tmp, task_vars, *args, **kwargs)
            lines = [line for line in result.get("stdout_lines") or [] if isinstance(line, str)]
            moved += [line for line in lines if line not in moved]
            if result.get("rc") not in CONNECTION_LOST or timeout <= 0:
                break
            now = time.time()
            if lost_since is None or lines:  # files moved since the last loss: the connection had come back
                lost_since = now
            tries += 1
            left = lost_since + timeout - now
            if left <= 0:
                result["msg"] = (f"{result.get('msg') or 'rsync failed'} (connection lost; not back within "
                                 f"reconnect_timeout, {timeout:g} s)")
                break
            display.vv(f"mlcube.ssh.synchronize: connection lost (rsync exit code {result.get('rc')}); "
                       f"trying again, attempt {tries + 1}")
            time.sleep(min(left, MAX_BACKOFF, 2.0 ** (tries - 1)))
        if tries:
            result["stdout_lines"] = moved
            result["stdout"] = "".join(line + "\n" for line in moved)
            result["mlcube_ssh_reconnects"] = tries
        return result

    def _reconnect_timeout(self, task_vars: dict[str, Any]) -> float:
        """mlcube_ssh_reconnect_timeout of this host (0, no retries, when unset or not a number)."""
        try:
            return float(self._templar.template(task_vars.get("mlcube_ssh_reconnect_timeout", 0)) or 0)
        except (TypeError, ValueError):
            return 0.0

    def _execute_once(self, module_name: str | None, module_args: dict[str, Any] | None, tmp: Any,
                      task_vars: dict[str, Any] | None, *args: Any, **kwargs: Any) -> dict[str, Any]:
        in_worker = (module_name == MODULE and module_args is not None and tmp is None and not args
                     and not kwargs.get("wrap_async") and not self._task.async_val
                     and not _has_environment(self._task.environment)
                     and not self._play_context.become  # synchronize drops it for remote ends; a module
                     and getattr(self._connection, "transport", None) == "local")  # process does it otherwise
        if in_worker:
            result = self._run_in_worker(dict(module_args), task_vars or {})
            if result is not None:
                return result
        return super()._execute_module(module_name, module_args, tmp, task_vars, *args, **kwargs)

    def _run_in_worker(self, module_args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any] | None:
        """The module's result, or None when it could not be run here (the caller then runs it as usual)."""
        try:
            from ansible.module_utils import basic
            from ansible_collections.ansible.posix.plugins.modules import synchronize as module

            self._update_module_args(MODULE, module_args, task_vars)  # the _ansible_* options of a real run
            basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": module_args}).encode()
            basic._ANSIBLE_PROFILE = "legacy"  # ansible-core >= 2.19 reads it; older ones ignore it
        except Exception as error:  # noqa: BLE001 - anything unexpected: the usual way still works
            display.vvv(f"mlcube.ssh.synchronize: running the module in a process of its own ({error!r})")
            return None
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                module.main()
        except SystemExit:
            pass  # exit_json and fail_json end with sys.exit after printing the result
        except Exception as error:  # noqa: BLE001 - rsync is idempotent: the usual way may run it again
            display.vvv(f"mlcube.ssh.synchronize: the in-process module failed ({error!r}); running it again "
                        "in a process of its own")
            return None
        finally:
            basic._ANSIBLE_ARGS = None
        text = output.getvalue()
        if "{" not in text:
            display.vvv("mlcube.ssh.synchronize: no result from the in-process module; running it again")
            return None
        # Parsed the way a module process's output is (warnings, result tagging of this ansible-core).
        res = {"rc": 0, "stdout": text, "stderr": ""}
        if "profile" in inspect.signature(self._parse_returned_data).parameters:
            data: dict[str, Any] = self._parse_returned_data(res, "legacy")
        else:  # ansible-core < 2.19
            data = self._parse_returned_data(res)
        remove_internal_keys(data)
        return data


def combined(first: dict[str, Any], second: dict[str, Any], name: str) -> dict[str, Any]:
    """One task result from two transfers' (the task's own first): each in full under `transfers`; rsync's lines
    of both in stdout_lines (the files moved, as the shim counts them); changed or failed if either is; a failure
    of the second says `name` first. Other keys (cmd, invocation) are the first's."""
    results = [first, second]
    result = dict(first)
    result["transfers"] = results
    result["changed"] = any(bool(each.get("changed")) for each in results)
    result["stdout_lines"] = [line for each in results for line in each.get("stdout_lines") or []]
    result["msg"] = "".join(str(each.get("msg") or "") for each in results)
    if any("stdout" in each for each in results):  # after a lost connection: every attempt's lines
        result["stdout"] = "".join(str(each.get("stdout") or "") for each in results)
    reconnects = sum(int(each.get("mlcube_ssh_reconnects") or 0) for each in results)
    if reconnects:
        result["mlcube_ssh_reconnects"] = reconnects
    for key in ("warnings", "deprecations"):
        merged = [item for each in results for item in each.get(key) or []]
        if merged:
            result[key] = merged
    diffs = [each["diff"] for each in results if each.get("diff")]
    if diffs:
        result["diff"] = diffs  # a list of diffs: Ansible shows each
    failed = [(label, each) for label, each in (("", first), (name, second)) if each.get("failed")]
    if failed:
        result["failed"] = True
        result["msg"] = "\n".join(
            f"{label} failed: {each.get('msg') or 'no reason given'}" if label else str(each.get("msg") or "failed")
            for label, each in failed)
        for key in ("rc", "cmd"):
            if key in failed[0][1]:
                result[key] = failed[0][1][key]
    return result
