# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Action of mlcube.ssh.paths: a warm run answers from the host's last answer, without a module call.

Working out the remote paths is a round trip to the host (~0.3 s and ~0.1 s of controller CPU per host and
command). On a warm run it only tells what the last run was told: the shim passes, in O(known), the answer the
same call gave to the last successful run of this cube on this host, for the hosts whose remote copy it expects
unchanged (the upload stamp in O(synced_expected)). When that answer was given for the same options, it is the
answer again, marked ``cached``: the upload is then skipped as before, and the launch checks on the host, in the
call that starts the run, that the copy still carries the stamp, its mlcube.yaml and its Python (the stamp then
vouches for the folders too). A copy that changed meanwhile starts nothing there, and the shim runs the play again
for that host with the full path (this call, the upload).

Without O(known) (plain ansible-playbook, AWX, every other playbook) the module runs as always (a lean call where
it can be, plugins/plugin_utils/lean.py). Every answer carries ``known``: what to pass as O(known) next time.

The action also makes the preflight's two checks, so that they cost no task of their own (each task is a worker
fork per host on the controller): O(refuse), the settings check's reason, fails the task before anything is done
(no host is contacted); O(launches) fails it after the answer when the cube cannot run on the host (its Python,
or the platform settings' file, does not exist: it was not configured there).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible_collections.mlcube.ssh.plugins.modules import paths
from ansible_collections.mlcube.ssh.plugins.plugin_utils.lean import LeanModuleAction

MODULE = "mlcube.ssh.paths"
RESULT = {"mlcube_ssh_result": "paths"}  # for the shim: it keeps the answer's `known` for the next run
# The options the answer depends on; not what the call does (create, clear_synced, synced_expected).
KEY_OPTIONS = ("remote_root", "remote_name", "interpreter_type", "python", "venv_location", "venv_name", "group",
               "workspace_key")
# What a cached answer gives back.
ANSWER_KEYS = ("remote_root", "remote_dir", "remote_workspace", "cube_workspace", "workspace_lock", "state_dir",
               "venv_dir", "env_python", "env_python_exists", "system_settings", "system_settings_exists")


def options_key(args: Mapping[str, Any]) -> str:
    """Names the options an answer was given for."""
    return hashlib.sha256(json.dumps([str(args.get(name, "")) for name in KEY_OPTIONS]).encode()).hexdigest()[:16]


def _cached(known: Any, key: str, expected: str) -> dict[str, Any] | None:
    """The last answer, when it was for these options and the shim expects the copy it left (else None)."""
    if not (expected and isinstance(known, Mapping) and known.get("key") == key):
        return None
    if not all(name in known for name in ANSWER_KEYS) or not known.get("env_python_exists"):
        return None
    return {name: known[name] for name in ANSWER_KEYS}


def _cannot_launch(answer: Mapping[str, Any], args: Mapping[str, Any], host: str, settings_file: bool) -> str:
    """Why the cube cannot run on the host, as the answer says (empty when it can)."""
    if not answer.get("env_python_exists"):
        fix = ("run `mlcube configure` first" if args.get("interpreter_type") == "virtualenv"
               else "set interpreter.python to a Python that exists there")
        return f"{answer.get('env_python')} does not exist on {host}: {fix}"
    if settings_file and not answer.get("system_settings_exists"):
        return f"{answer.get('system_settings')} does not exist on {host}: platform_settings are set, run " \
               "`mlcube configure` first"
    return ""


class ActionModule(LeanModuleAction):
    """Answers from O(known) when it applies, else runs the module (a lean call where it can be); adds what to pass
    as O(known) next time."""

    MODULE = MODULE
    SOURCE = paths
    _VALID_ARGS = frozenset((*KEY_OPTIONS, "create", "clear_synced", "synced_expected", "known", "refuse", "launches",
                             "settings_file"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        ActionBase.run(self, tmp, task_vars)  # not LeanModuleAction.run, which would call the module
        args = dict(self._task.args)
        known = args.pop("known", None)
        refused = str(args.pop("refuse", "") or "").strip()
        launches = boolean(args.pop("launches", False), strict=False)
        settings_file = boolean(args.pop("settings_file", False), strict=False)
        if refused:
            return {"failed": True, "msg": refused, **RESULT}
        key = options_key(args)
        expected = str(args.get("synced_expected") or "")
        answer = None if self._task.check_mode else _cached(known, key, expected)
        if answer is not None:
            result = {**answer, "synced": expected, "made_private": [], "changed": False, "cached": True,
                      "known": {**answer, "key": key}, **RESULT}
        else:
            result = self.answer(args, task_vars)
            if not result.get("failed"):
                result["known"] = {**{name: result.get(name) for name in ANSWER_KEYS}, "key": key}
            result.update(RESULT, cached=False)
        if result.get("failed"):
            return result
        # Why the cube cannot run on the host (empty when it can): as data for mlcube_ssh_remote_run's own check
        # (the role used on its own), and the failure itself for a play that launches.
        result["cannot_launch"] = _cannot_launch(result, args, str(task_vars.get("inventory_hostname", "")),
                                                 settings_file)
        if launches and result["cannot_launch"]:
            result.update(failed=True, msg=result["cannot_launch"])
        return result
