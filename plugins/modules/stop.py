#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Stop runs started by mlcube.ssh.launch: their process groups, and the Docker containers each started."""

from __future__ import annotations

DOCUMENTATION = r"""
module: stop
short_description: Stop a launched MLCube run (or every run of a cube) and the containers it started
description:
  - Stops the run in O(run_dir), or with O(runs_dir) every run below it that is still going on.
  - For each run, writes C(cancelled) into its folder (so the run list says C(cancelled)), sends SIGTERM to
    its process group, waits up to O(grace) seconds, then sends SIGKILL.
  - A run that already ended (its C(rc) file exists) is left alone. Nothing is signalled and no container
    is killed, since its process group id may belong to another process by now.
  - With O(docker), also kills the running containers that bind-mount the run's own remote workspace or a
    path below it (recorded by M(mlcube.ssh.launch) in C(<run folder>/workspace); O(mounts_below) for runs
    that recorded none). MLCube's docker runner starts containers that outlive a killed C(docker run) client.
    The containers of the cube's runs in other workspaces are left alone.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  run_dir:
    description: The run folder given to M(mlcube.ssh.launch) (one run).
    type: path
  runs_dir:
    description: The folder of all the cube's run folders; every run still going on is stopped.
    type: path
  run_ids:
    description: With O(runs_dir), only the runs of these ids (e.g. a sweep's); ids with no folder on this host
      are left out.
    type: list
    elements: str
  grace:
    description: Seconds between SIGTERM and SIGKILL.
    type: float
    default: 10.0
  docker:
    description: Docker executable; empty for platforms other than Docker.
    type: str
    default: ''
  mounts_below:
    description: Kill the containers with a bind mount below this folder (runs that recorded no workspace).
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
    mounts_below: ~/mlcube/hello-1a2b3c4d/workspace

- name: Stop every run of the cube that is going on
  mlcube.ssh.stop:
    runs_dir: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/runs
    docker: docker
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
runs:
  description:
    - Per run looked at, newest first, C(run_id), C(stopped), C(ended), C(containers) (with O(runs_dir), only
      the runs that were going on).
  returned: always
  type: list
  elements: dict
mlcube_ssh_result:
  description: V(stop). What this result is, for the mlcube-ssh-ansible shim (it never goes by task names).
  returned: always
  type: str
"""

import datetime
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
    below = below.rstrip("/")
    return [
        item["Id"] for item in json.loads(out)
        if any((mount.get("Source") or "") == below or (mount.get("Source") or "").startswith(below + "/")
               for mount in item.get("Mounts") or [])
    ]


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _look(module: AnsibleModule, run_dir: str) -> dict:
    """What is still going on of one run: its process group, and its containers."""
    found = {"run_id": os.path.basename(run_dir.rstrip("/")), "stopped": False, "ended": False, "containers": [],
             "pgid": None}
    if os.path.exists(os.path.join(run_dir, "rc")):
        found["ended"] = True
        return found
    try:
        found["pgid"] = int(_read(os.path.join(run_dir, "pid")))
    except ValueError:
        try:  # queued: its supervisor waits for slots, nothing else runs yet
            found["supervisor"] = int(_read(os.path.join(run_dir, "supervisor")))
            os.kill(found["supervisor"], 0)
            found["running"] = True
        except (ValueError, OSError):
            pass
        return found
    params = module.params
    below = _read(os.path.join(run_dir, "workspace")) or params["mounts_below"]
    if params["docker"] and below:
        found["containers"] = _our_containers(module, params["docker"], below)
    found["running"] = _group_alive(found["pgid"])
    return found


def _stop(module: AnsibleModule, runs: list) -> None:
    """TERM every run's process group and kill its containers, then KILL what outlives the grace period.

    Queued runs first: a run stopped first would free slots that a queued run of the same cancel could take."""
    for run in sorted(runs, key=lambda run: run["pgid"] is not None):
        run["stopped"] = bool(run.get("running"))
        with open(os.path.join(run["dir"], "cancelled"), "w") as handle:
            handle.write(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"))
        if run["stopped"]:
            try:
                if run["pgid"] is None:
                    os.kill(run["supervisor"], signal.SIGTERM)  # a queued run: it leaves the queue
                else:
                    os.killpg(run["pgid"], signal.SIGTERM)
            except OSError:
                pass
        if run["containers"]:
            module.run_command([module.params["docker"], "kill"] + run["containers"])
    deadline = time.time() + module.params["grace"]
    for run in runs:
        if run["pgid"] is None:
            continue
        while run["stopped"] and _group_alive(run["pgid"]) and time.time() < deadline:
            time.sleep(0.1)
        if run["stopped"] and _group_alive(run["pgid"]):
            os.killpg(run["pgid"], signal.SIGKILL)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path"),
            runs_dir=dict(type="path"),
            run_ids=dict(type="list", elements="str"),
            grace=dict(type="float", default=10.0),
            docker=dict(type="str", default=""),
            mounts_below=dict(type="path"),
        ),
        required_one_of=[("run_dir", "runs_dir")],
        mutually_exclusive=[("run_dir", "runs_dir")],
        supports_check_mode=True,
    )
    params = module.params
    if params["run_dir"]:
        dirs = [params["run_dir"]]
    else:
        try:
            dirs = sorted((os.path.join(params["runs_dir"], name) for name in os.listdir(params["runs_dir"])
                           if os.path.isdir(os.path.join(params["runs_dir"], name))), reverse=True)
        except FileNotFoundError:
            dirs = []
        if params["run_ids"] is not None:
            dirs = [path for path in dirs if os.path.basename(path) in set(params["run_ids"])]
    looked = []
    for run_dir in dirs:
        run = _look(module, run_dir)
        run["dir"] = run_dir
        looked.append(run)
    going = [run for run in looked if run.get("running") or run["containers"]]
    if going and not module.check_mode:
        _stop(module, going)
    shown = looked if params["run_dir"] else going
    runs = [{key: run[key] for key in ("run_id", "stopped", "ended", "containers")} for run in shown]
    first = runs[0] if params["run_dir"] else {"stopped": False, "ended": False, "containers": []}
    module.exit_json(**RESULT, changed=bool(going), stopped=first["stopped"], ended=first["ended"],
                     containers=first["containers"], runs=runs)


if __name__ == "__main__":
    main()
