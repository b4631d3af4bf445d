# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Action of mlcube.ssh.stamp: a lean call where it can be (plugins/plugin_utils/lean.py), else the module."""

from __future__ import annotations

from ansible_collections.mlcube.ssh.plugins.modules import stamp
from ansible_collections.mlcube.ssh.plugins.plugin_utils.lean import LeanModuleAction


class ActionModule(LeanModuleAction):
    """Runs mlcube.ssh.stamp lean, or as usual."""

    MODULE = "mlcube.ssh.stamp"
    SOURCE = stamp
