# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Action of mlcube.ssh.launch: a lean call where it can be (plugins/plugin_utils/lean.py), else the module.

The launch's work (module_utils/launcher.py) goes as it is to the host's Python, without Ansible's module payload,
which saves ~0.15 s of the host's CPU per host and run. Runs that take slots or may be retried, and check mode,
go through the module (they use AnsibleModule's run_command and the slots helpers).
"""

from __future__ import annotations

from typing import Any, Mapping

from ansible.plugins.action import ActionBase
from ansible_collections.mlcube.ssh.plugins.module_utils import launcher
from ansible_collections.mlcube.ssh.plugins.plugin_utils import lean

MODULE = "mlcube.ssh.launch"


def _plain(options: Mapping[str, Any]) -> bool:
    """A run that takes no slots and is not retried: all of it is in launcher.py."""
    return bool(options["gpus_needed"] < 0 and options["run_retries"] == 0)


class ActionModule(ActionBase):
    """Runs launcher.py lean, or the module."""

    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        super().run(tmp, task_vars)
        return lean.answer(self, task_vars, MODULE, launcher.__file__, launcher.ARGUMENT_SPEC, dict(self._task.args),
                           accepts=_plain, lean=not self._task.check_mode)
