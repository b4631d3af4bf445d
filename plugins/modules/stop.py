#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Stop a command started by mlcube.ssh.launch: its process group, and the Docker containers it started."""

from __future__ import annotations

DOCUMENTATION = r"""
module: stop
short_description: Stop a launched MLCube run and the containers it started
description:
  - Sends SIGTERM to the run's process group, waits up to O(grace) seconds, then sends SIGKILL.
  - A run that already ended (its C(rc) file exists) is left alone. Nothing is signalled and no container
    is killed, since its process group id may belong to another process by now.
  - With O(docker), also kills the running containers that bind-mount a path below O(mounts_below).
    MLCube's docker runner starts containers that outlive a killed C(docker run) client.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  run_dir:
    description: The run folder given to M(mlcube.ssh.launch).
    type: path
    required: true
  grace:
    description: Seconds between SIGTERM and SIGKILL.
    type: float
    default: 10.0
  docker:
    description: Docker executable; empty for platforms other than Docker.
    type: str
    default: ''
  mounts_below:
    description: Kill the containers with a bind mount below this folder.
    type: path
attributes:
  check_mode:
    support: full
    description: Signals and kills nothing, and reports whether it would.
seealso:
  - module: mlcube.ssh.launch
"""

EXAMPLES = r"""
- name: Stop a run and the containers it started
  mlcube.ssh.stop:
    run_dir: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/runs/20250101-120000
    docker: docker
    mounts_below: ~/mlcube/hello-1a2b3c4d
"""

RETURN = r"""
stopped:
  description: Whether the run was still running and was stopped.
  returned: always
  type: bool
ended:
  description: Whether the run had already ended (nothing was signalled).
  returned: always
  type: bool
containers:
  description: Ids of the containers killed.
  returned: always
  type: list
  elements: str
mlcube_ssh_result:
  description: V(stop). What this result is, for the mlcube-ssh-ansible shim (it never goes by task names).
  returned: always
  type: str
"""

import json
import os
import signal
import time

from ansible.module_utils.basic import AnsibleModule


RESULT = {"mlcube_ssh_result": "stop"}  # what every answer is, for the shim


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    return True


def _our_containers(module: AnsibleModule, docker: str, below: str) -> list:
    rc, out, _err = module.run_command([docker, "ps", "-q", "--no-trunc"])
    ids = out.split()
    if rc != 0 or not ids:
        return []
    rc, out, _err = module.run_command([docker, "inspect"] + ids)
    if rc != 0:
        return []
    prefix = below.rstrip("/") + "/"
    return [
        item["Id"] for item in json.loads(out)
        if any((mount.get("Source") or "").startswith(prefix) for mount in item.get("Mounts") or [])
    ]


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            grace=dict(type="float", default=10.0),
            docker=dict(type="str", default=""),
            mounts_below=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if os.path.exists(os.path.join(params["run_dir"], "rc")):
        module.exit_json(**RESULT, changed=False, stopped=False, ended=True, containers=[])
    try:
        with open(os.path.join(params["run_dir"], "pid")) as handle:
            pgid = int(handle.read())
    except (OSError, ValueError):
        module.exit_json(**RESULT, changed=False, stopped=False, ended=False, containers=[])
    running = _group_alive(pgid)
    containers = _our_containers(module, params["docker"], params["mounts_below"]) \
        if params["docker"] and params["mounts_below"] else []
    if module.check_mode or not (running or containers):
        module.exit_json(**RESULT, changed=False, stopped=False, ended=False, containers=containers)
    if running:
        os.killpg(pgid, signal.SIGTERM)
    if containers:
        module.run_command([params["docker"], "kill"] + containers)
    deadline = time.time() + params["grace"]
    while _group_alive(pgid) and time.time() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    module.exit_json(**RESULT, changed=True, stopped=running, ended=False, containers=containers)


if __name__ == "__main__":
    main()
