"""`mlcube-ssh-ansible`: configure, run, render and doctor, on the same settings as `mlcube`.

``configure`` and ``run`` take the options of ``mlcube configure|run`` and build the effective MLCube
configuration exactly as MLCube does (``mlcube.cli.parse_cli_args`` on the system settings file,
``$MLCUBE_SYSTEM_SETTINGS`` or ``~/mlcube.yaml``), then hand over to :mod:`..workflow`, as the MLCube
plug-in does. ``-P key=value`` overrides work for every command (``-P runner.host=gpu2``).

One module per concern:

* :mod:`.config`: the command line and the MLCube configuration -> validated settings and a job;
* :mod:`.check_mode`: ``configure --check``, which runs the configure playbook in Ansible's check mode and
  lists, per host, the files that would be uploaded and the packages that would be installed;
* :mod:`.render_files`: ``render``, which writes the inventory and extra-vars (without secrets) so that
  plain ``ansible-playbook`` does what ``run`` does, and prints the commands;
* :mod:`.commands`: the click commands, which only parse, call the above and :mod:`..workflow`, and print.

Every :class:`~..errors.SshAnsibleError` ends the command with ``mlcube-ssh-ansible: <message>`` on
stderr and the error's exit code, without a traceback.
"""

from __future__ import annotations

from .commands import cli, main

__all__ = ["cli", "main"]
