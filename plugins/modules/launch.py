#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Start a command detached from the SSH session, with its output and exit code kept in a run folder."""

from __future__ import annotations

DOCUMENTATION = r"""
module: launch
short_description: Start a command that outlives the SSH connection, logging to a run folder
description:
  - Starts O(argv) (no shell) in O(chdir) in a new session, detached from the connection, so a dropped
    connection or a killed controller does not stop it.
  - The run folder O(run_dir) receives C(stdout.log), C(stderr.log), C(pid) (the command's process
    group), C(argv.json), C(started) and, when the command ends, C(ended) and C(rc) (written atomically).
  - A lock file O(lock) belongs to one remote workspace (O(workspace)). A second launch into that workspace
    while its run is still going fails with a message naming the running one. Runs in other workspaces (other
    locks) start beside it.
  - Before the start, each path of O(shared) that exists below O(shared_from) and not yet below O(workspace)
    becomes a hard link there (a folder becomes a tree of hard links), or a copy where no link can be made
    (another filesystem). These are the inputs MLCube would otherwise copy from the cube's workspace.
  - With O(gpus_needed) of 0 or more, the run takes slots first (see M(mlcube.ssh.slots)). Each is a lease, a
    lock on a file in O(leases_dir) taken under one guard lock, held by the run's supervisor until the command
    ends. The command gets the GPUs as E(CUDA_VISIBLE_DEVICES) and E(NVIDIA_VISIBLE_DEVICES), which
    C(docker run) and C(podman run) get by name (C(-e NAME)), and C(--gpus "device=...") when O(docker_gpus).
    Without enough free slots, the launch fails and starts nothing, or with O(queue) the run waits on the host.
  - With O(queue), the run is queued on the host when its slots are taken (or runs queued earlier still wait),
    first come first served across every user of O(leases_dir). Its supervisor starts at once and waits
    (C(queued) in its run folder). When it is first in line and its slots are free, it takes them and starts
    the command. No controller and no daemon is needed for that.
  - With O(run_retries), a command that exits non-zero (and was not cancelled) is started again by the same
    supervisor, up to that many more times; each attempt (exit code, devices, cause) is kept in
    C(attempts.json). Before and after each attempt the supervisor asks C(nvidia-smi) about the GPUs it holds; a
    GPU gone from its answer, shown as lost, needing a reset or in unknown error, or whose uncorrected ECC error
    count rose, is faulty (so are all of them when the task's output names a device fault, such as an
    uncorrectable ECC error). The next attempt then runs without it, on other GPUs taken through the leases and
    the queue; any other failure is retried on the same slots.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  argv:
    description: The command, as a list (no shell).
    type: list
    elements: str
    required: true
  chdir:
    description: Working directory of the command.
    type: path
    required: true
  run_dir:
    description: Folder for this run's logs and exit code.
    type: path
    required: true
  lock:
    description: Lock file of the remote workspace the run uses.
    type: path
    required: true
  holder:
    description: Who starts the run, written into the lock and shown to a refused second run.
    type: str
    default: ''
  sync_stamp:
    description: Written to O(sync_file) before the start; empty writes nothing.
    type: str
    default: ''
  sync_file:
    description: Where O(sync_stamp) goes (it marks the uploaded copy as this run's).
    type: path
  expect_synced:
    description:
      - The upload stamp the copy must carry in O(sync_file), with its C(mlcube.yaml) in O(chdir), the command's
        program (a path) and the file C(MLCUBE_SYSTEM_SETTINGS) names (when set) still there; otherwise nothing
        starts and the call fails with RV(stale). For a warm run that skipped working out the paths and the
        upload on the word of the last run (O(mlcube.ssh.paths#module:known)). Empty checks nothing.
    type: str
    default: ''
  workspace:
    description: The remote workspace of the run, kept in the run folder (cancel stops the containers that mount it).
    type: path
  shared_from:
    description: The cube's own remote workspace, where the O(shared) inputs are.
    type: path
  shared:
    description: Input paths, relative to the workspaces, to share by hard links.
    type: list
    elements: str
    default: []
  gpus_needed:
    description: Slots to take before the start, -1 none, 0 one CPU-only slot, N that many free GPUs.
    type: int
    default: -1
  gpus:
    description: The host's GPU indices; unset asks nvidia-smi (see M(mlcube.ssh.slots)).
    type: list
    elements: int
  cpu_slots:
    description: CPU-only runs at once on the host; 0 is one per CPU.
    type: int
    default: 0
  nvidia_smi:
    description: The nvidia-smi executable.
    type: str
    default: nvidia-smi
  leases_dir:
    description: The leases folder, shared by every user of the host.
    type: path
    default: /tmp/mlcube-ssh-leases
  docker_gpus:
    description: Give C(docker run) C(--gpus "device=<the leased GPUs>").
    type: bool
    default: true
  queue:
    description: Without free slots, wait for them on the host instead of failing.
    type: bool
    default: false
  run_retries:
    description: How many more times a failed command is started (see above); 0 runs it once.
    type: int
    default: 0
  secrets:
    description:
      - Name to value, added to the command's environment, never written to a file or a command line. Every
        value is masked (C(********)) in C(stdout.log) and C(stderr.log) before it is written.
      - C(docker run) and C(podman run) started by the command get C(-e NAME) for each name (Docker copies
        the value from its client's environment) and C(--rm), so the engine forgets the container, and the
        values in its configuration, when it ends. This is done by a wrapper in C(<run_dir>/bin), first on
        C(PATH).
      - Send this option only with pipelining, so that the module's arguments stay in memory on the host.
    type: dict
    default: {}
  wait:
    description:
      - Most seconds to wait for the command to end before returning. When it ends in time and its output fits
        O(max_bytes), the result is also a final answer of M(mlcube.ssh.follow) (RV(done), RV(rc), all output),
        so a short task costs one module call instead of two. V(0) returns at once.
    type: float
    default: 0
  max_bytes:
    description: Most bytes of each stream a final answer carries.
    type: int
    default: 262144
attributes:
  check_mode:
    support: full
    description: Starts nothing, and reports the change a real run would make.
seealso:
  - module: mlcube.ssh.follow
  - module: mlcube.ssh.stop
"""

EXAMPLES = r"""
- name: Start mlcube run detached from the connection
  mlcube.ssh.launch:
    argv: [~/.mlcube-ssh-ansible/venv/bin/python, -m, mlcube, run, --mlcube=., --platform=docker, --task=hello]
    chdir: ~/mlcube/hello-1a2b3c4d
    run_dir: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/runs/20250101-120000
    lock: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/run.lock
    holder: alice@laptop pid 4242
    secrets: "{{ lookup('mlcube.ssh.secret', ['HF_TOKEN']) }}"
    wait: 2
  register: launched
"""

RETURN = r"""
run_dir:
  description: The run folder.
  returned: always
  type: str
stale:
  description: The copy is not the one O(expect_synced) names, so nothing started (the call failed).
  returned: when the copy changed
  type: bool
pid:
  description: Process group id of the command.
  returned: success
  type: int
done:
  description: Whether the command ended within O(wait), with all its output returned.
  returned: success
  type: bool
stdout:
  description: All standard output, when RV(done).
  returned: when done
  type: str
stderr:
  description: All standard error, when RV(done).
  returned: when done
  type: str
offsets:
  description: Bytes of each stream returned (as M(mlcube.ssh.follow) returns them).
  returned: when done
  type: dict
rc:
  description: The command's exit code, when RV(done).
  returned: when done
  type: int
queued:
  description: Whether the run waits for its slots on the host.
  returned: success
  type: bool
devices:
  description: The slots the run holds (C(gpus), a list of indices, or C(cpu), a slot number) at its start.
  returned: when gpus_needed >= 0
  type: dict
shared:
  description: How many files of O(shared) were linked and copied (C(linked), C(copied)).
  returned: success
  type: dict
mlcube_ssh_result:
  description: V(launch), what this result is, for the mlcube-ssh-ansible shim.
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlcube.ssh.plugins.module_utils.launcher import ARGUMENT_SPEC, launch


def main() -> None:
    launch(AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True))


if __name__ == "__main__":
    main()
