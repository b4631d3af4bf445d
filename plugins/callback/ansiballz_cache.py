# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Keeps Ansible's built module payloads (AnsiballZ) from one command to the next.

Before it ships a module, every ansible-playbook process builds the module's payload: it parses the module and
every module_utils file it imports (basic.py and ~30 more) and zips them, ~0.1 s of CPU per module and command,
in the critical path of a one-host command. Ansible caches the payloads in its per-process temporary folder
(`ansible-local-*/ansiballz_cache`), which goes away when the process ends. With this callback enabled, that
folder is a link to a folder that stays, named after everything the payloads are built from (the ansible-core
version and installation, the module and module_utils sources Ansible may take them from, with sizes and
times), so a change to any of them gets a new folder and no stale payload. Ansible itself still builds, locks,
writes and reads the entries as it always does; it only finds them already there.

Enabled by mlcube-ssh-ansible (MLCUBE_SSH_ANSIBALLZ_CACHE names the parent folder); plain ansible-playbook runs
without it and builds every payload itself.
"""

from __future__ import annotations

DOCUMENTATION = """
name: ansiballz_cache
type: aggregate
short_description: Keep built module payloads between runs (a speed-up only)
description:
  - Links this run's AnsiballZ cache folder to a lasting folder under E(MLCUBE_SSH_ANSIBALLZ_CACHE), named after
    a digest of the ansible-core version and the module and module_utils sources. Enabled by mlcube-ssh-ansible.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
"""

import contextlib
import hashlib
import os
import sys
from pathlib import Path

from ansible import constants as C
from ansible import release
from ansible.plugins.callback import CallbackBase

VARIABLE = "MLCUBE_SSH_ANSIBALLZ_CACHE"
# Lasting folders kept per parent: the newest ones (one per checkout or ansible-core version in use).
KEEP = 4


def _sources() -> list[Path]:
    """Where the modules and module_utils that get built may come from, besides ansible-core itself."""
    places = [Path(p) for p in [*C.DEFAULT_ROLES_PATH, *C.DEFAULT_MODULE_PATH, *C.DEFAULT_MODULE_UTILS_PATH]]
    places += [Path(p, "ansible_collections", "mlcube") for p in [*C.COLLECTIONS_PATHS, *sys.path] if p]
    return places


def digest() -> str:
    """Names the payloads' inputs: a changed or added source file gives another folder."""
    h = hashlib.sha256("\0".join([release.__version__, os.path.dirname(release.__file__), sys.version,
                                  C.DEFAULT_MODULE_COMPRESSION]).encode())
    for place in _sources():
        if not place.is_dir():
            continue
        for folder, dirs, files in os.walk(place, followlinks=True):
            dirs.sort()
            for name in sorted(files):
                if name.endswith((".py", ".ps1", ".psm1")):
                    info = os.stat(os.path.join(folder, name))
                    h.update(f"{folder}/{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def link(parent: Path) -> Path:
    """Make this process's AnsiballZ cache folder a link to the lasting one; drop the least recent others."""
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lasting = parent / digest()
    lasting.mkdir(mode=0o700, exist_ok=True)
    os.utime(lasting)
    os.symlink(lasting, Path(C.DEFAULT_LOCAL_TMP, "ansiballz_cache"))
    folders = sorted((p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()),
                     key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in folders[KEEP:]:
        for entry in old.iterdir():
            entry.unlink(missing_ok=True)
        old.rmdir()
    return lasting


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "mlcube.ssh.ansiballz_cache"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        parent = os.environ.get(VARIABLE)
        if not parent:
            return
        with contextlib.suppress(OSError):  # only a speed-up: Ansible builds the payloads itself as usual
            link(Path(parent))
