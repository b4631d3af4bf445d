#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Report a host's slots for runs: GPUs (nvidia-smi or declared) and CPU-only slots, each free, leased or busy."""

from __future__ import annotations

DOCUMENTATION = r"""
module: slots
short_description: List the GPUs and CPU-only slots of a host, and which are free
description:
  - GPUs come from O(gpus) when it is set (a list of indices), else from C(nvidia-smi) (index, uuid, memory in
    use, processes). No C(nvidia-smi) means no GPU. C(nvidia-smi) is looked up on C(PATH) and in
    C(~/.local/bin) and C(~/bin), the folders a login shell adds.
  - A GPU is V(leased) while a run holds its lease file in O(leases_dir), V(busy) when a process that no lease
    accounts for uses it (a process we did not start; such GPUs are skipped), else V(free).
  - CPU-only slots are O(cpu_slots) (0 means one per CPU), each V(leased) or V(free) the same way.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  gpus:
    description: The host's GPU indices; unset asks nvidia-smi.
    type: list
    elements: int
  cpu_slots:
    description: How many CPU-only runs at once; 0 is one per CPU.
    type: int
    default: 0
  nvidia_smi:
    description: The nvidia-smi executable (a name or a path).
    type: str
    default: nvidia-smi
  leases_dir:
    description: The leases folder, shared by every user of the host.
    type: path
    default: /tmp/mlcube-ssh-leases
attributes:
  check_mode:
    support: full
    description: Reads only; check mode changes nothing.
seealso:
  - module: mlcube.ssh.launch
"""

EXAMPLES = r"""
- name: Which GPUs are free on this host
  mlcube.ssh.slots:
    cpu_slots: 4
  register: slots
"""

RETURN = r"""
gpus:
  description:
    - Per GPU C(index), C(uuid), C(memory_used_mib), C(memory_total_mib), C(processes) (pids), C(state) and
      C(faulty), the newest note of a run that found the GPU faulty after a failed attempt (C(why), C(run),
      C(uid), C(at)), or null. Runs do not avoid such a GPU; the notes are files in O(leases_dir)C(/faulty).
  returned: always
  type: list
  elements: dict
cpus:
  description: Per CPU-only slot C(index) and C(state).
  returned: always
  type: list
  elements: dict
source:
  description: Where the GPUs came from, V(nvidia-smi), V(declared) or V(none).
  returned: always
  type: str
waiting:
  description: How many queued runs wait in the host's line for slots (of every user of O(leases_dir)); a run
    launched now waits behind them, even with free slots.
  returned: always
  type: int
mlcube_ssh_result:
  description: V(slots), what this result is, for the mlcube-ssh-ansible shim.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlcube.ssh.plugins.module_utils.slots import (
    LEASES_DIR, cpu_slots_of_host, describe, gpus_of_host, held)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            gpus=dict(type="list", elements="int"),
            cpu_slots=dict(type="int", default=0),
            nvidia_smi=dict(type="str", default="nvidia-smi"),
            leases_dir=dict(type="path", default=LEASES_DIR),
        ),
        supports_check_mode=True,
    )
    params = module.params
    gpus, source, error = gpus_of_host(module.run_command, params["nvidia_smi"], params["gpus"])
    if error:
        module.warn(error)
    slots = describe(params["leases_dir"], gpus, cpu_slots_of_host(params["cpu_slots"]))
    module.exit_json(changed=False, source=source, waiting=_waiting(params["leases_dir"]), mlcube_ssh_result="slots",
                     **slots)


def _waiting(folder: str) -> int:
    """The live queued runs of the host's line (their waiting files are locked by their waiters); reads only."""
    line = os.path.join(folder, "waiting")
    try:
        names = os.listdir(line)
    except OSError:
        return 0
    return sum(1 for name in names if held(os.path.join(line, name)))


if __name__ == "__main__":
    main()
