# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Lean module calls: a module's code sent as it is to the host's Python, without Ansible's module payload.

Every module call unpacks an AnsiballZ payload on the host and imports ansible.module_utils.basic and ~30 more
files from it, compiled from the zip each time: ~0.15 s of the host's CPU per call (measured on the benchmark's
hosts), where the module's own work takes a few milliseconds. A fleet makes a launch and at least one follow call
per host and run, so that cost is most of what a run adds on the hosts.

The modules that run this way use only the params, check_mode, warn, exit_json and fail_json of AnsibleModule, and
a stand-in with just those takes its place on the host: either the module keeps its work in a module_utils file
that needs only the standard library and ends in `lean_main(module)` (launch, follow; the stand-in and the call are
appended to that file), or it is one file that imports nothing but the standard library and AnsibleModule
(paths, venv, stamp; the stand-in replaces that import, `module_source`). Their action plugins check
the options here, with the module's own argument spec (a `path` is expanded on the host, as the module's `path`
type does), send the text to the host's Python on stdin, and hide the no_log values in the answer as the module
would.
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
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

# The options (JSON), their paths expanded on the host as the module's `path` type does.
_OPTIONS = """
import json as _lean_json, os as _lean_os, sys as _lean_sys
_lean_options = _lean_json.loads({options!r})
for _lean_name in {paths!r}:
    if _lean_options.get(_lean_name) is not None:
        _lean_options[_lean_name] = _lean_os.path.expanduser(_lean_os.path.expandvars(_lean_options[_lean_name]))
"""
# In a module's text, in place of its import of AnsibleModule, or after a module_utils file's text (then with
# _CALL): the options, and what the module uses of AnsibleModule.
_STAND_IN = _OPTIONS + """

class AnsibleModule:
    \"\"\"Stand-in for a lean call (mlcube.ssh's plugin_utils/lean.py): options checked on the controller.\"\"\"

    def __init__(self, argument_spec=None, supports_check_mode=False, **_ignored):
        self.params, self.check_mode, self._warnings = _lean_options, {check!r}, []

    def warn(self, warning, **_ignored):
        self._warnings.append(str(warning))

    def _answer(self, result, code):
        if self._warnings:
            result["warnings"] = self._warnings
        _lean_sys.stdout.write(_lean_json.dumps(result) + "\\n")
        raise SystemExit(code)

    def exit_json(self, **result):
        self._answer(result, 0)

    def fail_json(self, msg, **result):
        result.update(failed=True, msg=msg)
        self._answer(result, 1)
"""
_CALL = "lean_main(AnsibleModule())\n"
_IMPORT = "from ansible.module_utils.basic import AnsibleModule\n"
_SOURCES: dict[str, str] = {}  # module_utils file -> its text, read once per process


def python_for(action: ActionBase, task_vars: Mapping[str, Any]) -> str | None:
    """The host's Python for a lean call, or None when the call must go through the module."""
    if action._play_context.become or not action._is_pipelining_enabled("new"):
        return None
    if not boolean(action._templar.template(task_vars.get("mlcube_ssh_lean_calls", True)), strict=False):
        return None  # the host's (or play's) choice: ordinary module calls
    try:  # Ansible's own choice of a module's interpreter (a private helper: any change falls back to the module)
        from ansible.executor.module_common import _get_shebang
        _shebang, python = _get_shebang("/usr/bin/python", task_vars, action._templar, remote_is_local=bool(
            getattr(action._connection, "_remote_is_local", False)))
    except Exception:  # noqa: BLE001 - discovery still needed (the module path does it), or another ansible-core
        return None
    return str(python) if python else None


def call(action: ActionBase, python: str, source: str, spec: Mapping[str, Mapping[str, Any]], name: str,
         args: Mapping[str, Any], accepts: Callable[[Mapping[str, Any]], bool] | None = None,
         module_source: bool = False) -> dict[str, Any] | None:
    """The answer of `lean_main` in the module_utils file `source` (a path) to `args`, or with `module_source` of
    the module file `source` run as a script, run by `python`, either with the stand-in for AnsibleModule; None
    when `accepts` refuses the checked options (then the module answers)."""
    paths = sorted(option for option, rules in spec.items() if rules.get("type") == "path")
    checked = ArgumentSpecValidator({option: dict(rules, type="str") if option in paths else rules
                                     for option, rules in spec.items()}).validate(dict(args))
    if checked.error_messages:
        return {"failed": True, "msg": "; ".join(checked.error_messages)}
    if accepts is not None and not accepts(checked.validated_parameters):
        return None
    if source not in _SOURCES:
        _SOURCES[source] = Path(source).read_text(encoding="utf-8")
    stand_in = _STAND_IN.format(options=json.dumps(checked.validated_parameters), paths=paths,
                                check=bool(action._task.check_mode))
    if module_source:
        if _SOURCES[source].count(_IMPORT) != 1:
            return None
        script = _SOURCES[source].replace(_IMPORT, stand_in)
    else:
        script = _SOURCES[source] + stand_in + _CALL
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


def answer(action: ActionBase, task_vars: dict[str, Any], name: str, source: str,
           spec: Mapping[str, Mapping[str, Any]], args: dict[str, Any], accepts: Callable[[Mapping[str, Any]], bool]
           | None = None, module_source: bool = False, lean: bool = True) -> dict[str, Any]:
    """Module `name`'s answer to `args`: a lean call of `source` (see call()) when `lean` and the host allow it
    and `accepts` takes the options, else the module, as Ansible runs it."""
    python = python_for(action, task_vars) if lean else None
    result = call(action, python, source, spec, name, args, accepts=accepts, module_source=module_source) \
        if python else None
    if result is None:
        result = action._execute_module(module_name=name, module_args=args, task_vars=task_vars)
    return result


class LeanModuleAction(ActionBase):
    """The action of a module that runs lean as a script with the stand-in (see the docstring), else as usual."""

    TRANSFERS_FILES = False
    MODULE = ""  # its name, mlcube.ssh.NAME
    SOURCE: Any = None  # the module itself (its ARGUMENT_SPEC and file)

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        super().run(tmp, task_vars)
        return self.answer(dict(self._task.args), task_vars)

    def answer(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        """The module's answer to `args`: lean when it can be."""
        return answer(self, task_vars, self.MODULE, self.SOURCE.__file__, self.SOURCE.ARGUMENT_SPEC, args,
                      module_source=True)
