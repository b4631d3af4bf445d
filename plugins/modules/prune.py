#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Delete from the remote workspace the fetched files the user has since deleted locally."""

from __future__ import annotations

DOCUMENTATION = r"""
module: prune
short_description: Delete remote workspace files that were fetched and are gone locally
description:
  - Each entry of O(files) names a file below O(root) as a fetch brought it to the controller, with its size
    and modification time (whole seconds). The file is deleted only if it still has that size and time, so a
    result the host wrote since that fetch is never lost. Folders left empty by a deletion are removed too.
  - Paths that are absolute, contain C(..), or lead through a symbolic link are ignored.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  root:
    description: The remote workspace.
    type: path
    required: true
  files:
    description: C([path, size, mtime]) entries, paths relative to O(root).
    type: list
    elements: raw
    required: true
attributes:
  check_mode:
    support: full
    description: Deletes nothing, and reports what it would delete.
"""

EXAMPLES = r"""
- name: Delete the fetched results the user deleted locally since
  mlcube.ssh.prune:
    root: ~/mlcube/hello-1a2b3c4d/workspace
    files:
      - [greeting.txt, 14, 1735732800]
      - [logs/train.log, 2048, 1735732811]
"""

RETURN = r"""
pruned:
  description: Paths deleted.
  returned: always
  type: list
  elements: str
kept:
  description: Paths kept because the host changed them since the fetch.
  returned: always
  type: list
  elements: str
"""

import os
import stat

from ansible.module_utils.basic import AnsibleModule


def _safe(root: str, relative: str) -> str | None:
    """The absolute path of `relative` below `root`, or None if it could leave root."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or ".." in parts or "" in parts:
        return None
    current = root
    for part in parts[:-1]:
        current = os.path.join(current, part)
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return None  # a link or a file where a folder was
        except OSError:
            return None
    return os.path.join(current, parts[-1])


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(root=dict(type="path", required=True),
                           files=dict(type="list", elements="raw", required=True)),
        supports_check_mode=True,
    )
    root = module.params["root"]
    pruned, kept = [], []
    for entry in module.params["files"]:
        try:
            relative, size, mtime = str(entry[0]), int(entry[1]), int(entry[2])
        except (TypeError, ValueError, IndexError):
            continue
        path = _safe(root, relative)
        if path is None:
            continue
        try:
            info = os.lstat(path)
        except OSError:
            continue  # already gone
        if not stat.S_ISREG(info.st_mode) or info.st_size != size or int(info.st_mtime) != mtime:
            kept.append(relative)
            continue
        if not module.check_mode:
            os.remove(path)
            folder = os.path.dirname(path)
            while folder != root and folder.startswith(root + "/"):
                try:
                    os.rmdir(folder)  # only succeeds when empty
                except OSError:
                    break
                folder = os.path.dirname(folder)
        pruned.append(relative)
    module.exit_json(changed=bool(pruned), pruned=pruned, kept=kept)


if __name__ == "__main__":
    main()
