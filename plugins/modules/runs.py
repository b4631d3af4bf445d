#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""List a cube's runs on this host, newest first, with the state of each."""

from __future__ import annotations

DOCUMENTATION = r"""
module: runs
short_description: List the runs of a cube started by mlcube.ssh.launch, newest first
description:
  - Reads every run folder below O(runs_dir) (one per run that was launched; a launch that was refused creates
    none) and returns its state, V(queued), V(running), V(retrying) (between two attempts of a run started with
    C(run_retries), or waiting for other GPUs), V(succeeded), V(failed), V(cancelled) or V(died) (gone without
    an exit code), with its exit code, times and remote workspace, and the attempts of a run that may be retried.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  runs_dir:
    description: The folder of the cube's run folders.
    type: path
    required: true
attributes:
  check_mode:
    support: full
    description: Reads only; check mode changes nothing.
seealso:
  - module: mlcube.ssh.launch
  - module: mlcube.ssh.stop
"""

EXAMPLES = r"""
- name: List the runs of a cube
  mlcube.ssh.runs:
    runs_dir: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/runs
  register: listed
"""

RETURN = r"""
runs:
  description:
    - One entry per run, newest first, with C(run_id), C(state), C(rc), C(started), C(ended), C(workspace),
      C(cancelled), C(devices) (the slots it holds or held, C(gpus) or C(cpu), as M(mlcube.ssh.launch)
      returns them; none for a run that took none or still waits), C(retries) (how many more attempts it
      may make) and C(attempts) (per finished attempt C(attempt), C(started), C(ended), C(rc), C(devices),
      C(cause) V(task) or V(device), C(faulty) GPU indices and C(why)).
  returned: always
  type: list
  elements: dict
mlcube_ssh_result:
  description: V(runs), what this result is, for the mlcube-ssh-ansible shim.
  returned: always
  type: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule


def _read(path: str):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _alive(pgid) -> bool:
    try:
        os.killpg(int(pgid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def _alive_pid(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True
    except (OSError, ValueError, TypeError):
        return False
    return True


def state_of(run_dir: str) -> dict:
    """One run's state from its folder: the files mlcube.ssh.launch, its supervisor and mlcube.ssh.stop write."""
    run = {"run_id": os.path.basename(run_dir.rstrip("/"))}
    for name in ("started", "ended", "workspace", "cancelled", "queued"):
        run[name] = _read(os.path.join(run_dir, name))
    rc = _read(os.path.join(run_dir, "rc"))
    run["rc"] = int(rc) if rc not in (None, "") and rc.lstrip("-").isdigit() else None
    try:
        devices = json.loads(_read(os.path.join(run_dir, "devices")) or "null")
    except ValueError:
        devices = None
    run["devices"] = devices if isinstance(devices, dict) else None
    pgid = _read(os.path.join(run_dir, "pid"))
    running = pgid is not None and _alive(pgid)
    if run["rc"] is not None:
        state = "cancelled" if run["cancelled"] else "succeeded" if run["rc"] == 0 else "failed"
    elif running:
        state = "running"
    elif run["cancelled"]:
        state = "cancelled"
    elif pgid is None and os.path.exists(os.path.join(run_dir, "retrying")) \
            and _alive_pid(_read(os.path.join(run_dir, "supervisor"))):
        state = "retrying"
    elif pgid is None and run["queued"] is not None and _alive_pid(_read(os.path.join(run_dir, "supervisor"))):
        state = "queued"
    elif pgid is None and run["started"]:
        state = "starting"
    else:
        state = "died"
    run["state"] = state
    run["running"] = running
    retries = _read(os.path.join(run_dir, "retries"))
    run["retries"] = int(retries) if retries and retries.isdigit() else 0
    try:
        run["attempts"] = json.loads(_read(os.path.join(run_dir, "attempts.json")) or "[]")
    except ValueError:
        run["attempts"] = []
    return run


def main() -> None:
    module = AnsibleModule(argument_spec=dict(runs_dir=dict(type="path", required=True)), supports_check_mode=True)
    runs_dir = module.params["runs_dir"]
    try:
        names = [name for name in os.listdir(runs_dir) if os.path.isdir(os.path.join(runs_dir, name))]
    except FileNotFoundError:
        names = []
    runs = [state_of(os.path.join(runs_dir, name)) for name in names]
    runs.sort(key=lambda run: (run.get("started") or run.get("queued") or "", run["run_id"]), reverse=True)
    module.exit_json(changed=False, runs=runs, mlcube_ssh_result="runs")


if __name__ == "__main__":
    main()
