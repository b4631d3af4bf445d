#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Fingerprint a directory tree plus settings, and compare it with (or record it in) a stamp file."""

from __future__ import annotations

DOCUMENTATION = r"""
module: stamp
short_description: Tell whether a directory and some settings changed since they were last recorded
description:
  - Computes a SHA-256 over every entry's relative path, type, size, modification time and link
    target below O(path) (except top-level names in O(exclude)), plus O(extra).
  - With O(state=check), reports whether that equals the digest stored in O(stamp); never changes anything.
  - With O(state=present), stores the digest in O(stamp) (changed only when it differs).
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  path:
    description: Directory to fingerprint.
    type: path
    required: true
  exclude:
    description: Top-level names to leave out.
    type: list
    elements: str
    default: []
  extra:
    description: Settings that belong to the fingerprint.
    type: str
    default: ''
  stamp:
    description: File that holds the recorded digest.
    type: path
    required: true
  state:
    description: Compare with the recorded digest (V(check)) or record it (V(present)).
    type: str
    choices: [check, present]
    default: check
attributes:
  check_mode:
    support: full
    description: Records nothing, and reports whether O(state=present) would.
"""

EXAMPLES = r"""
- name: Did the cube or its settings change since the last configure?
  mlcube.ssh.stamp:
    path: ~/mlcube/hello-1a2b3c4d
    exclude: [workspace]
    extra: "docker\npython3"
    stamp: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/configured
  register: fingerprint

- name: Record it after a successful configure
  mlcube.ssh.stamp:
    path: ~/mlcube/hello-1a2b3c4d
    exclude: [workspace]
    extra: "docker\npython3"
    stamp: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/configured
    state: present
  when: not fingerprint.matched
"""

RETURN = r"""
digest:
  description: The current digest (empty when O(path) does not exist).
  returned: always
  type: str
matched:
  description: Whether O(stamp) holds the current digest.
  returned: always
  type: bool
"""

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule


def tree_digest(root: str, exclude: list, extra: str) -> str:
    digest = hashlib.sha256(extra.encode("utf-8", "surrogateescape") + b"\0")
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in exclude]
            filenames = [f for f in filenames if f not in exclude]
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            full = os.path.join(dirpath, name)
            info = os.lstat(full)
            link = os.readlink(full) if os.path.islink(full) else ""
            record = "%s\0%o\0%d\0%d\0%s\n" % (
                os.path.relpath(full, root), info.st_mode, info.st_size, info.st_mtime_ns, link)
            digest.update(record.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


# The options; the action plugin checks them on the controller too, for a lean call (plugin_utils/lean.py).
ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    exclude=dict(type="list", elements="str", default=[]),
    extra=dict(type="str", default=""),
    stamp=dict(type="path", required=True),
    state=dict(type="str", choices=["check", "present"], default="check"),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    if not os.path.isdir(params["path"]):
        module.exit_json(changed=False, digest="", matched=False)
    digest = tree_digest(params["path"], params["exclude"], params["extra"])
    try:
        with open(params["stamp"]) as handle:
            recorded = handle.read().strip()
    except OSError:
        recorded = ""
    matched = recorded == digest
    if params["state"] == "check" or matched:
        module.exit_json(changed=False, digest=digest, matched=matched)
    if not module.check_mode:
        os.makedirs(os.path.dirname(params["stamp"]), exist_ok=True)
        temporary = params["stamp"] + ".tmp"
        with open(temporary, "w") as handle:
            handle.write(digest + "\n")
        os.replace(temporary, params["stamp"])
    module.exit_json(changed=True, digest=digest, matched=False)


if __name__ == "__main__":
    main()
