#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Return what a launched command wrote since the last call, waiting briefly for more, and whether it ended."""

from __future__ import annotations

DOCUMENTATION = r"""
module: follow
short_description: Read new output of a command started by mlcube.ssh.launch
description:
  - Returns the complete lines the command wrote to C(stdout.log) and C(stderr.log) in O(run_dir) after the
    byte O(offsets) the caller already has, and the new offsets, waiting up to O(wait) seconds for some.
  - The read position lives with the caller, not on the host. A call whose answer was lost with the
    connection is asked again from the same offsets, so nothing is skipped and nothing is sent twice.
  - The action plugin of the same name passes the offsets of the previous answer of the same C(until) loop,
    and asks again after a lost connection, for up to O(reconnect_timeout) seconds.
  - With pipelining and a known Python on the host (C(ansible_python_interpreter)), and no privilege escalation,
    the action plugin sends this module's code (the module_utils C(follow_state), standard library only) to that
    Python as it is, without Ansible's module payload, which saves ~0.15 s of the host's CPU per call. The options
    are checked on the controller against the same spec, and the answer is the same.
  - Reports RV(done) and the exit code RV(rc) once the command has ended and all output was returned, and
    RV(died) when the command is gone without an exit code (killed with its supervisor, or the host rebooted).
  - Never changes anything on the host.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  run_dir:
    description: The run folder given to M(mlcube.ssh.launch).
    type: path
    required: true
  offsets:
    description: "Bytes of each stream already read, as C({stdout: N, stderr: M})."
    type: dict
    default: {}
  cursor:
    description: Name of this reader, returned as it is (the action plugin matches answers of one loop by it).
    type: str
    default: default
  wait:
    description: Most seconds to wait for new output or the end.
    type: float
    default: 5.0
  batch:
    description: Once some output arrived, seconds to gather more before returning.
    type: float
    default: 1.0
  max_bytes:
    description: Most bytes returned per stream per call.
    type: int
    default: 262144
  rewind:
    description: Read from the start, whatever O(offsets) say.
    type: bool
    default: false
  reconnect_timeout:
    description:
      - Seconds a lost connection is tried again (backoff 1, 2, 4 ... 30 s) before the task fails. V(0) fails
        at once.
      - Handled by the action plugin on the controller; the module ignores it.
    type: float
    default: 0
attributes:
  check_mode:
    support: full
    description: Reads only; check mode changes nothing.
notes:
  - The read position is carried by the action plugin in the registered result of the previous loop
    iteration, so use O(cursor) and C(register) as the role C(mlcube.ssh.mlcube_ssh_remote_run) does.
seealso:
  - module: mlcube.ssh.launch
  - module: mlcube.ssh.stop
"""

EXAMPLES = r"""
- name: Follow a run to its end, printing nothing twice after a lost connection
  mlcube.ssh.follow:
    run_dir: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/runs/20250101-120000
    cursor: follow
    reconnect_timeout: 600
  register: followed
  until: followed.done | default(false) or followed.died | default(false)
  retries: 100000
  delay: 0

- name: The state of a run, without its output
  mlcube.ssh.follow:
    run_dir: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/runs/20250101-120000
    wait: 0
    rewind: true
    max_bytes: 0
  register: state
"""

RETURN = r"""
stdout:
  description: New complete lines of standard output.
  returned: always
  type: str
stderr:
  description: New complete lines of standard error.
  returned: always
  type: str
offsets:
  description: Bytes of each stream read so far (pass them to the next call).
  returned: always
  type: dict
  sample: {stdout: 120, stderr: 0}
done:
  description: Whether the command ended and everything was read.
  returned: always
  type: bool
died:
  description: Whether the command is gone without an exit code.
  returned: always
  type: bool
rebooted:
  description: Whether the host booted after the command started.
  returned: always
  type: bool
run_failed:
  description:
    - Why the run failed, in the final answer of a run whose exit code is not 0 or that died without one
      (added by the action plugin); the message the C(result) tasks of the role mlcube_ssh_remote_run fail the
      host with.
  returned: when the run failed or died
  type: str
rc:
  description: The command's exit code.
  returned: once the command ended
  type: int
running:
  description: Whether the command's process group is still alive.
  returned: always
  type: bool
started:
  description: When the command started (ISO 8601).
  returned: always
  type: str
ended:
  description: When the command ended (ISO 8601).
  returned: once the command ended
  type: str
run_dir:
  description: O(run_dir), as given (added by the action plugin).
  returned: always
  type: str
cursor:
  description: O(cursor), as given (added by the action plugin).
  returned: always
  type: str
reconnected:
  description: After a lost connection came back, since when it was lost, for how many seconds, and the tries.
  returned: when a lost connection came back
  type: dict
lost:
  description: The connection is lost; the loop asks again after a backoff.
  returned: while the connection is lost
  type: dict
gave_up:
  description: The connection did not come back within O(reconnect_timeout); what was known.
  returned: when the task failed that way
  type: dict
mlcube_ssh_result:
  description: >-
    V(run), added by the action plugin. What this result is, for the mlcube-ssh-ansible shim (it never goes
    by task names).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlcube.ssh.plugins.module_utils.follow_state import ARGUMENT_SPEC, follow


def main() -> None:
    follow(AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True))


if __name__ == "__main__":
    main()
