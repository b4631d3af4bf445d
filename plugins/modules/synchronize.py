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
  - With O(also), one more transfer runs at the same time as the task's own, in a copy (a fork) of the worker.
    One task, and the two rsyncs overlap. Each is a transfer of its own, with its own options and its own
    reconnect retries. See RV(transfers) for how their results combine.
  - Without the collection C(ansible.posix) the task fails with a message that names the fix.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  also:
    description:
      - One more transfer, run at the same time as the task's own. A mapping of M(ansible.posix.synchronize)'s
        options (O(ansible.posix.synchronize#module:src), O(ansible.posix.synchronize#module:dest),
        O(ansible.posix.synchronize#module:rsync_opts), O(ansible.posix.synchronize#module:delete), ...), none of
        them taken from the task's. The key C(name) names it in a failure's message (by default
        C(the second transfer)).
      - The two must not write files into the same folders. rsync's C(--delay-updates), synchronize's default,
        holds each folder's new files in one folder there (C(.~tmp~) or the C(--partial-dir)), which either
        transfer removes when it ends. Both may create the same missing destination folder, or one's destination
        may lie in the other's, not made yet. The one that failed so (rsync's exit code 11) runs again once,
        alone, after the other ended. Not with C(async).
      - Empty or omitted, the task is one transfer, as without this option.
    type: dict
attributes:
  check_mode:
    support: full
    description: As M(ansible.posix.synchronize) (rsync C(--dry-run)).
notes:
  - Every option but O(also) is M(ansible.posix.synchronize)'s; see its documentation for them.
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

- name: Upload a cube (deleting what is gone) and, at the same time, its results folder (keeping newer files)
  mlcube.ssh.synchronize:
    src: /home/alice/cubes/hello/
    dest: ~/mlcube/hello-1a2b3c4d/
    archive: true
    delete: true
    rsync_opts: [--exclude=/workspace/]  # the other transfer writes there
    also:
      name: the workspace's upload
      src: /home/alice/results/hello/
      dest: ~/mlcube/hello-1a2b3c4d/workspace/
      archive: true
      rsync_opts: [--update]
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
  description: How many times the transfer was started again after a lost connection (with O(also), of both).
  returned: when a connection was lost
  type: int
transfers:
  description:
    - With O(also), each transfer's own result, the task's first. The task's result combines them. C(changed)
      or C(failed) when either is. RV(stdout_lines) and RV(msg) hold both transfers' lines, the task's first.
      A failure of the second transfer is named in RV(msg) (V(<name> failed) and rsync's reason), and RV(cmd)
      and C(rc) are those of the transfer that failed. Other keys are the first transfer's.
  returned: with O(also)
  type: list
  elements: dict
"""
