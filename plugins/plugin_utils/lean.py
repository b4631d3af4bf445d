# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Lean module calls: a module's code sent as it is to the host's Python, without Ansible's module payload.

Every module call unpacks an AnsiballZ payload on the host and imports ansible.module_utils.basic and ~30 more
files from it, compiled from the zip each time: ~0.15 s of the host's CPU per call (measured on the benchmark's
hosts), where the module's own work takes a few milliseconds. A fleet makes a launch and at least one follow call
per host and run, so that cost is most of what a run adds on the hosts.

The modules that run this way (launch, follow) keep their work in a module_utils file that needs only the standard
library and ends in `lean_main(options)`. Their action plugins check the options here, with the module's own
argument spec (a `path` is expanded on the host, as the module's `path` type does), send the file's text with a
call of `lean_main` to the host's Python on stdin, and hide the no_log values in the answer as the module would.
The answer is the module's. This needs pipelining (the options, secrets among them, stay in memory on the host as
with a pipelined module), no privilege escalation and a known Python (`ansible_python_interpreter` or one found
earlier); otherwise the action runs the module as usual. Connection errors are raised the same either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase

# After the module_utils file's text: the options (JSON), their paths expanded on the host, then the call.
_CALL = """
import json as _lean_json, os as _lean_os
_lean_options = _lean_json.loads({options!r})
for _lean_name in {paths!r}:
    if _lean_options.get(_lean_name) is not None:
        _lean_options[_lean_name] = _lean_os.path.expanduser(_lean_os.path.expandvars(_lean_options[_lean_name]))
lean_main(_lean_options)
"""
_SOURCES: dict[str, str] = {}  # module_utils file -> its text, read once per process


def python_for(action: ActionBase, task_vars: Mapping[str, Any]) -> str | None:
    """The host's Python for a lean call, or None when the call must go through the module."""
    if action._play_context.become or not action._is_pipelining_enabled("new"):
        return None
    try:  # Ansible's own choice of a module's interpreter (a private helper: any change falls back to the module)
        from ansible.executor.module_common import _get_shebang
        _shebang, python = _get_shebang("/usr/bin/python", task_vars, action._templar, remote_is_local=bool(
            getattr(action._connection, "_remote_is_local", False)))
    except Exception:  # noqa: BLE001 - discovery still needed (the module path does it), or another ansible-core
        return None
    return str(python) if python else None


def call(action: ActionBase, python: str, source: str, spec: Mapping[str, Mapping[str, Any]], name: str,
         args: Mapping[str, Any], accepts: Callable[[Mapping[str, Any]], bool] | None = None) -> dict[str, Any] | None:
    """The answer of `lean_main` in the module_utils file `source` (a path) to `args`, run by `python`; None when
    `accepts` refuses the checked options (then the module answers)."""
    paths = sorted(option for option, rules in spec.items() if rules.get("type") == "path")
    checked = ArgumentSpecValidator({option: dict(rules, type="str") if option in paths else rules
                                     for option, rules in spec.items()}).validate(dict(args))
    if checked.error_messages:
        return {"failed": True, "msg": "; ".join(checked.error_messages)}
    if accepts is not None and not accepts(checked.validated_parameters):
        return None
    if source not in _SOURCES:
        _SOURCES[source] = Path(source).read_text(encoding="utf-8")
    script = _SOURCES[source] + _CALL.format(options=json.dumps(checked.validated_parameters), paths=paths)
    command = action._connection._shell.build_module_command(action._compute_environment_string(), "#!" + python,
                                                             "").strip()
    res = action._low_level_execute_command(command, sudoable=False, in_data=script.encode("utf-8"))
    try:
        answer = json.loads(res.get("stdout") or "")
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        said = (res.get("stderr") or res.get("stdout") or "").strip().splitlines()[-1:] or ["no output"]
        return {"failed": True, "msg": f"{name} on {python} failed (exit code {res.get('rc')}): {said[0]}"}
    answer = remove_values(answer, checked._no_log_values)
    for stream in ("stdout", "stderr"):  # as Ansible adds them to a module's answer
        if stream in answer and stream + "_lines" not in answer:
            answer[stream + "_lines"] = str(answer[stream] or "").splitlines()
    return answer
