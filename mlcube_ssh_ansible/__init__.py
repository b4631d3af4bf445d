"""mlcube-ssh-ansible: run MLCube tasks on remote hosts over SSH, with Ansible doing the work.

MLCube finds this package (its name starts with ``mlcube_``) and calls :func:`get_runner_class`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_runner_class() -> Any:
    """The MLCube runner class (imported lazily: MLCube imports every mlcube_* package at start-up)."""
    from .runner import SshAnsibleRun

    return SshAnsibleRun
