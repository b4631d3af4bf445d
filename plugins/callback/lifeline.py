# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Ends ansible-playbook when the mlcube-ssh-ansible process that started it dies.

ansible-runner starts ansible-playbook on a pseudo-terminal with SIGHUP ignored, so a controller that
is killed (SIGKILL, OOM, a closed laptop) would leave it behind, blocked on a terminal nobody reads.
The remote task itself runs detached and is not affected: `attach` finds it later.
"""

from __future__ import annotations

DOCUMENTATION = """
name: lifeline
type: aggregate
short_description: End ansible-playbook when its parent process dies (Linux)
description:
  - Asks the kernel (prctl PR_SET_PDEATHSIG) to send SIGTERM to ansible-playbook when the process that
    started it exits. Enabled by mlcube-ssh-ansible; does nothing on other systems.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
requirements:
  - Enable it with C(callbacks_enabled = mlcube.ssh.lifeline) (environment C(ANSIBLE_CALLBACKS_ENABLED)).
"""

import ctypes
import os
import signal
import sys

from ansible.plugins.callback import CallbackBase

_PR_SET_PDEATHSIG = 1


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "mlcube.ssh.lifeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        if not sys.platform.startswith("linux"):
            return
        parent = os.getppid()
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)
