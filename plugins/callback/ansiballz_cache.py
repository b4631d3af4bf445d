# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Keeps Ansible's built module payloads (AnsiballZ) from one command to the next.

Before it ships a module, every ansible-playbook process builds the module's payload: it parses the module and
every module_utils file it imports (basic.py and ~30 more) and zips them, ~0.1 s of CPU per module and command,
in the critical path of a one-host command. Ansible caches the payloads in its per-process temporary folder
(`ansible-local-*/ansiballz_cache`), which goes away when the process ends. With this callback enabled, they are
also kept in a folder that stays, named after everything the payloads are built from (the ansible-core version
and installation, the module and module_utils sources Ansible may take them from, with sizes and times), so a
change to any of them gets a new folder and no stale payload.

At the start this callback puts the lasting payloads into Ansible's own cache folder (hard links), where Ansible
builds, locks, writes and reads its entries as it always does and only finds most of them already there; at the
end it adds what was built to the lasting folder. A running command never depends on the lasting folder, so other
commands (other checkouts or versions at once) may drop old lasting folders at any time.

Enabled by mlcube-ssh-ansible (MLCUBE_SSH_ANSIBALLZ_CACHE names the parent folder); plain ansible-playbook runs
without it and builds every payload itself.
"""

from __future__ import annotations

DOCUMENTATION = """
name: ansiballz_cache
type: aggregate
short_description: Keep built module payloads between runs (a speed-up only)
description:
  - Fills this run's AnsiballZ cache folder from a lasting folder under E(MLCUBE_SSH_ANSIBALLZ_CACHE), named after
    a digest of the ansible-core version and the module and module_utils sources, and adds what the run built to
    it at the end. Enabled by mlcube-ssh-ansible.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
"""

import contextlib
import hashlib
import os
import shutil
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
    # Other collections' modules (ansible.posix's synchronize, when it runs as a module): an installed collection
    # changes as a whole, and its MANIFEST.json (with its version and file checksums) changes with it.
    for base in dict.fromkeys(p for p in [*C.COLLECTIONS_PATHS, *sys.path] if p):
        for manifest in sorted(Path(base, "ansible_collections").glob("*/*/MANIFEST.json")):
            with contextlib.suppress(OSError):
                info = manifest.stat()
                h.update(f"{manifest}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _local() -> Path:
    """This process's own AnsiballZ cache folder (Ansible's, in its temporary folder)."""
    return Path(C.DEFAULT_LOCAL_TMP, "ansiballz_cache")


def _payloads(folder: Path) -> list[Path]:
    """The finished payloads in a folder (not Ansible's lock files nor a payload being written)."""
    return [p for p in folder.iterdir() if p.is_file() and not p.name.endswith((".lock", "-part", ".saving"))]


def load(parent: Path) -> Path:
    """Give this process the lasting payloads (hard links, else copies) in its own cache folder, which stays
    Ansible's own: another command may drop a lasting folder at any time without harm. The lasting folder."""
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lasting = parent / digest()
    lasting.mkdir(mode=0o700, exist_ok=True)
    os.utime(lasting)
    local = _local()
    local.mkdir(mode=0o700, exist_ok=True)
    for payload in _payloads(lasting):
        target = local / payload.name
        try:
            os.link(payload, target)
        except OSError:
            with contextlib.suppress(OSError):
                shutil.copy2(payload, target)
    folders = sorted((p for p in parent.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in folders[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    return lasting


def save(lasting: Path) -> None:
    """Add the payloads this process built to the lasting folder (each written aside, then renamed into place)."""
    if not lasting.is_dir():
        return
    for payload in _payloads(_local()):
        target = lasting / payload.name
        if not target.exists():
            aside = lasting / f"{payload.name}.{os.getpid()}.saving"
            shutil.copy2(payload, aside)
            os.replace(aside, target)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "mlcube.ssh.ansiballz_cache"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.lasting: Path | None = None
        parent = os.environ.get(VARIABLE)
        if not parent:
            return
        with contextlib.suppress(OSError):  # only a speed-up: Ansible builds the payloads itself as usual
            self.lasting = load(Path(parent))

    def v2_playbook_on_stats(self, stats: object) -> None:
        """At the end of the playbook, in the main process (the workers built the payloads in the same folder)."""
        if self.lasting is not None:
            with contextlib.suppress(OSError):
                save(self.lasting)
