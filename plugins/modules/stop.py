#!/usr/bin/python
"""Stop a command started by mlcube.ssh.launch: its process group, and the Docker containers it started."""

from __future__ import annotations

DOCUMENTATION = r"""
module: stop
short_description: Stop a launched MLCube run and the containers it started
description:
  - Sends SIGTERM to the run's process group, waits up to O(grace) seconds, then SIGKILL.
  - A run that already ended (its C(rc) file exists) is left alone: nothing is signalled and no container
    is killed, since its process group id may belong to another process by now.
  - With O(docker), also kills the running containers that bind-mount a path below O(mounts_below)
    (MLCube's docker runner starts containers that outlive a killed C(docker run) client).
options:
  run_dir: {type: path, required: true, description: The run folder given to mlcube.ssh.launch.}
  grace: {type: float, default: 10.0, description: Seconds between SIGTERM and SIGKILL.}
  docker: {type: str, default: '', description: Docker executable; empty for non-Docker platforms.}
  mounts_below: {type: path, description: Kill containers with a bind mount below this folder.}
author: mlcube-ssh-ansible
"""

RETURN = r"""
stopped: {description: Whether the run was still running and was stopped., returned: always, type: bool}
ended: {description: Whether the run had already ended (nothing was signalled)., returned: always, type: bool}
containers: {description: Ids of the containers killed., returned: always, type: list}
mlcube_ssh_result: {description: "C(stop): what this result is, for the mlcube-ssh-ansible shim (it never goes by
  task names).", returned: always, type: str}
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
    rc, out, _ = module.run_command([docker, "ps", "-q", "--no-trunc"])
    ids = out.split()
    if rc != 0 or not ids:
        return []
    rc, out, _ = module.run_command([docker, "inspect"] + ids)
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
