# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Action of mlcube.ssh.venv: a lean call where it can be (plugins/plugin_utils/lean.py), else the module."""

from __future__ import annotations

from ansible_collections.mlcube.ssh.plugins.modules import venv
from ansible_collections.mlcube.ssh.plugins.plugin_utils.lean import LeanModuleAction


class ActionModule(LeanModuleAction):
    """Runs mlcube.ssh.venv lean, or as usual."""

    MODULE = "mlcube.ssh.venv"
    SOURCE = venv
