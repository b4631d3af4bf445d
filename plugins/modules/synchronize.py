#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Documentation of the action plugin mlcube.ssh.synchronize (plugins/action/synchronize.py), which does the work."""

from __future__ import annotations

DOCUMENTATION = r"""
module: synchronize
short_description: ansible.posix.synchronize, with its module run inside the Ansible worker
description:
  - Takes the options of M(ansible.posix.synchronize) and runs its own action and module code, with the same
    rsync command line and the same result.
  - The difference is where the module runs. M(ansible.posix.synchronize) starts a Python process on the
    controller for every transfer (about 25 MB and 0.2 s of CPU) only to run one rsync. Here that module code
    runs in the Ansible worker that already carries the task. A task with C(environment), C(async), C(become)
    on the controller, or a connection that synchronize does not run locally gets the usual module process.
  - A transfer that lost its connection (rsync's exit codes 10, 12, 30, 35, or ssh's 255) is started again
    after a backoff (1, 2, 4 ... 30 s), for up to the host variable C(mlcube_ssh_reconnect_timeout) seconds
    since the connection was lost (none when it is unset). rsync is idempotent, and with C(--partial-dir) in
    the task's C(rsync_opts) a file cut off half-way resumes from what arrived.
  - Without the collection C(ansible.posix) the task fails with a message that names the fix.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options: {}
attributes:
  check_mode:
    support: full
    description: As M(ansible.posix.synchronize) (rsync C(--dry-run)).
notes:
  - Every option is M(ansible.posix.synchronize)'s; see its documentation for them.
  - This is an action plugin; this file holds only its documentation.
requirements:
  - The collection C(ansible.posix) on the controller.
  - rsync on the controller and on the host.
seealso:
  - module: ansible.posix.synchronize
"""

EXAMPLES = r"""
- name: Upload a cube, resuming cut-off files after a lost connection
  mlcube.ssh.synchronize:
    src: /home/alice/cubes/hello/
    dest: ~/mlcube/hello-1a2b3c4d/
    archive: true
    delete: true
    rsync_opts: [--partial-dir=.mlcube-ssh-partial, --exclude=/workspace]
  vars:
    mlcube_ssh_reconnect_timeout: 600
"""

RETURN = r"""
cmd:
  description: The rsync command line, as M(ansible.posix.synchronize) returns it.
  returned: success
  type: str
msg:
  description: rsync's output, or why it failed.
  returned: always
  type: str
stdout_lines:
  description: rsync's itemized changes, of every attempt after a lost connection.
  returned: success
  type: list
  elements: str
mlcube_ssh_result:
  description: V(fetch) for a pull (O(ansible.posix.synchronize#module:mode=pull)), for the mlcube-ssh-ansible shim.
  returned: for a pull
  type: str
mlcube_ssh_reconnects:
  description: How many times the transfer was started again after a lost connection.
  returned: when a connection was lost
  type: int
"""
