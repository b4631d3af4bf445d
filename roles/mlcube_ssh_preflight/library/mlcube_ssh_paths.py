#!/usr/bin/python
"""Work out (and optionally create) every remote path the other steps use, in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
module: mlcube_ssh_paths
short_description: Expand and check the remote paths of mlcube-ssh-ansible in one call
description:
  - Expands C(~) in O(remote_root) and O(venv_location) to the remote user's home and returns the cube
    folder, its workspace, the state folder and the Python that runs MLCube, with whether it exists.
  - With O(create), creates the cube folder (like C(mkdir -p)); changed only when it did not exist.
  - Returns the stamp the last run left next to the uploaded cube (C(<state_dir>/synced)), if the cube's
    C(mlcube.yaml) is still there: the upload step skips a host whose stamp is the one the controller expects.
  - With O(clear_synced) (the play uploads), a stamp other than O(synced_expected) is removed and not
    returned: the upload that follows replaces the files it vouched for.
  - One module call instead of several keeps a warm command fast.
options:
  remote_root: {type: str, required: true, description: Folder holding uploaded cubes.}
  remote_name: {type: str, required: true, description: The cube's folder name under O(remote_root).}
  interpreter_type: {type: str, choices: [system, virtualenv], required: true, description: Python kind.}
  python: {type: str, required: true, description: System Python (name or path).}
  venv_location: {type: str, required: true, description: Parent folder of the virtualenv.}
  venv_name: {type: str, required: true, description: Folder name of the virtualenv.}
  create: {type: bool, default: false, description: Create the cube folder.}
  clear_synced: {type: bool, default: false, description: Remove an upload stamp other than O(synced_expected).}
  synced_expected: {type: str, default: '', description: The upload stamp the controller expects here.}
author: mlcube-ssh-ansible
"""

RETURN = r"""
remote_root: {description: Absolute folder holding uploaded cubes., returned: always, type: str}
remote_dir: {description: The cube's folder., returned: always, type: str}
remote_workspace: {description: The cube's remote workspace., returned: always, type: str}
state_dir: {description: Folder for this cube's fingerprints, locks and runs., returned: always, type: str}
venv_dir: {description: The virtualenv folder (virtualenv type)., returned: always, type: str}
env_python: {description: Python that runs MLCube., returned: always, type: str}
env_python_exists: {description: Whether env_python exists (a bare name is looked up on PATH)., returned: always, type: bool}
synced: {description: The last run's upload stamp, or an empty string., returned: always, type: str}
"""

import os
import shutil

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            remote_root=dict(type="str", required=True),
            remote_name=dict(type="str", required=True),
            interpreter_type=dict(type="str", choices=["system", "virtualenv"], required=True),
            python=dict(type="str", required=True),
            venv_location=dict(type="str", required=True),
            venv_name=dict(type="str", required=True),
            create=dict(type="bool", default=False),
            clear_synced=dict(type="bool", default=False),
            synced_expected=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    params = module.params
    root = os.path.expanduser(params["remote_root"]).rstrip("/") or "/"
    remote_dir = os.path.join(root, params["remote_name"])
    venv_dir = os.path.join(os.path.expanduser(params["venv_location"]), params["venv_name"])
    if params["interpreter_type"] == "virtualenv":
        env_python = os.path.join(venv_dir, "bin", "python")
        exists = os.path.exists(env_python)
    else:
        env_python = params["python"]
        exists = shutil.which(os.path.expanduser(env_python)) is not None
    state_dir = os.path.join(root, ".mlcube-ssh-ansible", params["remote_name"])
    synced_file = os.path.join(state_dir, "synced")
    synced = ""
    try:
        with open(synced_file) as handle:
            synced = handle.read().strip()
    except (OSError, UnicodeDecodeError):
        pass
    if not os.path.isfile(os.path.join(remote_dir, "mlcube.yaml")):
        synced = ""
    if params["clear_synced"] and (not synced or synced != params["synced_expected"]):
        synced = ""
        if not module.check_mode and os.path.lexists(synced_file):
            os.remove(synced_file)  # bookkeeping of ours, not a change to the user's files
    changed = False
    if params["create"] and not os.path.isdir(remote_dir):
        changed = True
        if not module.check_mode:
            os.makedirs(remote_dir, mode=0o755, exist_ok=True)
    module.exit_json(
        changed=changed,
        remote_root=root,
        remote_dir=remote_dir,
        remote_workspace=os.path.join(remote_dir, "workspace"),
        state_dir=state_dir,
        venv_dir=venv_dir,
        env_python=env_python,
        env_python_exists=exists,
        synced=synced,
    )


if __name__ == "__main__":
    main()
