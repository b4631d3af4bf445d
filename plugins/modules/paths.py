#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Work out (and optionally create) every remote path the other steps use, in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
module: paths
short_description: Expand and check the remote paths of mlcube-ssh-ansible in one call
description:
  - Expands C(~) in O(remote_root) and O(venv_location) to the remote user's home and returns the cube
    folder, its workspace, the state folder and the Python that runs MLCube, with whether it exists.
  - With O(create), creates the cube folder (like C(mkdir -p)); changed only when it did not exist.
  - The folders it creates (O(remote_root), the state folders below it, and for a virtualenv its parent
    O(venv_location)) are private, with mode 0700, or 2750 and group O(group). Those that exist already and
    belong to the remote user are given that mode (RV(made_private)). The others (the home folder itself,
    folders of other users, C(/)) are left as they are, with a warning naming them when other users can
    enter them.
  - Returns the stamp the last run left next to the uploaded cube (C(<state_dir>/synced)), if the cube's
    C(mlcube.yaml) is still there. The upload step skips a host whose stamp is the one the controller expects.
  - With O(clear_synced) (the play uploads), a stamp other than O(synced_expected) is removed and not
    returned, since the upload that follows replaces the files it vouched for.
  - One module call instead of several keeps a warm command fast; a warm run needs none (O(known)).
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  remote_root:
    description: Folder holding uploaded cubes, absolute or starting with C(~/).
    type: path
    required: true
  remote_name:
    description: The cube's folder name under O(remote_root).
    type: str
    required: true
  interpreter_type:
    description: Use O(python) as it is (V(system)), or a virtualenv in O(venv_location) (V(virtualenv)).
    type: str
    choices: [system, virtualenv]
    required: true
  python:
    description: The system Python, a name looked up on C(PATH) or a path.
    type: path
    required: true
  venv_location:
    description: Parent folder of the virtualenv, absolute or starting with C(~/).
    type: path
    required: true
  venv_name:
    description: Folder name of the virtualenv.
    type: str
    required: true
  create:
    description: Create the cube folder and the private folders above it.
    type: bool
    default: false
  clear_synced:
    description: Remove an upload stamp other than O(synced_expected).
    type: bool
    default: false
  synced_expected:
    description: The upload stamp the controller expects on this host.
    type: str
    default: ''
  group:
    description: Group that may read the private folders; empty for the owner only.
    type: str
    default: ''
  known:
    description:
      - The RV(known) of this call's answer to the last successful run, which the shim passes for a host whose
        remote copy it expects unchanged (O(synced_expected)). When it was given for the same options, the action
        answers from it without contacting the host (RV(cached)); the launch then checks the copy on the host.
        Ignored by the module itself.
    type: dict
    default: {}
  workspace_key:
    description:
      - Empty for the cube's own workspace (C(<cube folder>/workspace)). Otherwise the name of a remote
        workspace of its own, C(<state_dir>/workspaces/<workspace_key>), for a local C(--workspace).
    type: str
    default: ''
  refuse:
    description:
      - Why the settings do not allow going on with this host (the preflight role's check); when not empty, the
        action fails with it on the controller before anything else, without contacting the host. Ignored by the
        module itself.
    type: str
    default: ''
  launches:
    description:
      - The play starts the cube on this host; the action then fails, after the answer, when the environment's
        Python does not exist there (or, with O(settings_file), the platform settings' file). Ignored by the
        module itself.
    type: bool
    default: false
  settings_file:
    description:
      - The host has platform settings, so with O(launches) their file (RV(system_settings)) must exist. Ignored by
        the module itself.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Creates and changes nothing, and reports what it would.
"""

EXAMPLES = r"""
- name: Work out the remote paths, creating the cube's folder
  mlcube.ssh.paths:
    remote_root: ~/mlcube
    remote_name: hello-1a2b3c4d
    interpreter_type: virtualenv
    python: python3
    venv_location: ~/.mlcube-ssh-ansible
    venv_name: venv
    create: true
  register: paths

- name: Use them
  ansible.builtin.debug:
    msg: "{{ paths.env_python }} runs MLCube in {{ paths.remote_dir }}"
"""

RETURN = r"""
remote_root:
  description: Absolute folder holding uploaded cubes.
  returned: always
  type: str
  sample: /home/alice/mlcube
remote_dir:
  description: The cube's folder.
  returned: always
  type: str
  sample: /home/alice/mlcube/hello-1a2b3c4d
remote_workspace:
  description: The remote workspace of this command (see O(workspace_key)).
  returned: always
  type: str
cube_workspace:
  description: The cube's own remote workspace, where the shared inputs are.
  returned: always
  type: str
workspace_lock:
  description: The lock file of the remote workspace.
  returned: always
  type: str
state_dir:
  description: Folder for this cube's fingerprints, locks and runs.
  returned: always
  type: str
  sample: /home/alice/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d
venv_dir:
  description: The virtualenv folder (for the virtualenv type).
  returned: always
  type: str
env_python:
  description: The Python that runs MLCube.
  returned: always
  type: str
env_python_exists:
  description: Whether RV(env_python) exists (a bare name is looked up on C(PATH)).
  returned: always
  type: bool
system_settings:
  description: The remote platform's settings file that C(configure) writes (C(<state_dir>/system-settings.yaml)).
  returned: always
  type: str
system_settings_exists:
  description: Whether RV(system_settings) exists (so a run need not look for it with a task of its own).
  returned: always
  type: bool
cached:
  description: The answer came from O(known), without contacting the host.
  returned: always
  type: bool
cannot_launch:
  description:
    - Why the cube cannot run on the host (its environment's Python, or with O(settings_file) the platform
      settings' file, does not exist there), empty when it can; added by the action plugin.
  returned: success
  type: str
known:
  description: What to pass as O(known) next time (the answer's paths and the options they were worked out for).
  returned: success
  type: dict
synced:
  description: The last run's upload stamp, or an empty string.
  returned: always
  type: str
made_private:
  description: Folders created, or whose mode (or group) was changed to the private one.
  returned: always
  type: list
  elements: str
"""

import grp
import os
import pwd
import shutil
import stat

from ansible.module_utils.basic import AnsibleModule


def _private(module, paths, group, home, check):
    """Create each folder (parents first) with the private mode, or tighten it; return what changed.

    Only folders of the remote user are changed, never the home folder or /: a warning names those that
    others can enter."""
    mode = 0o2750 if group else 0o700
    gid = -1
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            module.fail_json(msg="remote_group %r does not exist on this host" % group)
    others = stat.S_IRWXO | (0 if group else stat.S_IRWXG)
    changed = []

    def give(path):
        os.chmod(path, mode)
        if group:
            try:
                os.chown(path, -1, gid)
            except OSError as error:
                module.fail_json(msg="cannot give %s to remote_group %s (%s): the remote user must be a member of "
                                 "it (a new membership needs a new login)" % (path, group, error.strerror))

    for path in paths:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            changed.append(path)
            if not check:
                os.makedirs(path, exist_ok=True)
                give(path)
            continue
        if path in (home, "/") or info.st_uid != os.getuid():
            if info.st_mode & others:
                module.warn("%s is not private (mode %o, owner uid %d): other users of this host can enter it; "
                            "not changed, as it is %s" % (path, stat.S_IMODE(info.st_mode), info.st_uid,
                                                          "your home folder" if path == home else
                                                          "/" if path == "/" else "not yours"))
            continue
        if stat.S_IMODE(info.st_mode) != mode or (group and info.st_gid != gid):
            changed.append(path)
            if not check:
                give(path)
    return changed


# The options; the action plugin checks them on the controller too, for a lean call (plugin_utils/lean.py).
ARGUMENT_SPEC = dict(
    remote_root=dict(type="path", required=True),
    remote_name=dict(type="str", required=True),
    interpreter_type=dict(type="str", choices=["system", "virtualenv"], required=True),
    python=dict(type="path", required=True),
    venv_location=dict(type="path", required=True),
    venv_name=dict(type="str", required=True),
    create=dict(type="bool", default=False),
    clear_synced=dict(type="bool", default=False),
    synced_expected=dict(type="str", default=""),
    group=dict(type="str", default=""),
    workspace_key=dict(type="str", default="", no_log=False),
    known=dict(type="dict", default={}),
    refuse=dict(type="str", default=""),
    launches=dict(type="bool", default=False),
    settings_file=dict(type="bool", default=False),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    root = params["remote_root"].rstrip("/") or "/"
    remote_dir = os.path.join(root, params["remote_name"])
    venv_dir = os.path.join(params["venv_location"], params["venv_name"])
    if params["interpreter_type"] == "virtualenv":
        env_python = os.path.join(venv_dir, "bin", "python")
        exists = os.path.exists(env_python)
    else:
        env_python = params["python"]
        exists = shutil.which(env_python) is not None
    state_dir = os.path.join(root, ".mlcube-ssh-ansible", params["remote_name"])
    key = params["workspace_key"]
    if key and (key in (".", "..") or "/" in key):
        module.fail_json(msg="workspace_key must be a plain folder name, got %r" % key)
    cube_workspace = os.path.join(remote_dir, "workspace")
    workspace = os.path.join(state_dir, "workspaces", key) if key else cube_workspace
    system_settings = os.path.join(state_dir, "system-settings.yaml")
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
    made_private = []
    if params["create"]:
        home = (os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir).rstrip("/") or "/"  # what ~ means
        # Not the cube's folder: the upload gives it the local folder's mode (as to every file in it), and
        # the private remote_root above it keeps others out.
        folders = [root, os.path.join(root, ".mlcube-ssh-ansible"), state_dir]
        if key:  # the upload creates the workspace itself in there
            folders.append(os.path.join(state_dir, "workspaces"))
        if params["interpreter_type"] == "virtualenv":
            folders.append(os.path.dirname(venv_dir))
        # Missing parents of remote_root (and of the venv's parent) are created private too.
        for top in (root, os.path.dirname(venv_dir)):
            parent = os.path.dirname(top)
            while parent not in ("/", home) and not os.path.exists(parent):
                folders.insert(0, parent)
                parent = os.path.dirname(parent)
        seen = set()
        ordered = [path for path in sorted(folders, key=lambda path: path.count("/"))
                   if not (path in seen or seen.add(path))]
        made_private = _private(module, ordered, params["group"], home, module.check_mode)
        if not os.path.isdir(remote_dir):
            made_private.append(remote_dir)
            if not module.check_mode:
                os.makedirs(remote_dir, mode=0o700, exist_ok=True)
    module.exit_json(
        changed=bool(made_private),
        made_private=made_private,
        remote_root=root,
        remote_dir=remote_dir,
        remote_workspace=workspace,
        cube_workspace=cube_workspace,
        workspace_lock=os.path.join(state_dir, "locks", (key or "workspace") + ".lock"),
        state_dir=state_dir,
        venv_dir=venv_dir,
        env_python=env_python,
        env_python_exists=exists,
        system_settings=system_settings,
        system_settings_exists=os.path.isfile(system_settings),
        synced=synced,
    )


if __name__ == "__main__":
    main()
