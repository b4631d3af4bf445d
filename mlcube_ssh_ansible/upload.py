"""What to upload: git's own ignore rules, `.mlcubeignore`, and a warning for huge trees.

rsync's filter rules only approximate `.gitignore` (no negation across levels, different anchoring),
so when the cube is in a git work tree, git itself lists what it ignores and that list becomes an
rsync exclude file. `.mlcubeignore` files use rsync's filter syntax (dir-merge, see the docs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .records import RECORDS_DIR, write_atomically
from .render import EXCLUDED_DIRS, remote_name
from .sweeps import sweep_folders

MANY_FILES = 10_000
EXCLUDES_FILE = "upload-excludes"


def git_ignored(cube_root: str) -> list[str] | None:
    """Paths below `cube_root` that git ignores (folders end with /), or None outside a git work tree."""
    git = shutil.which("git")
    if git is None:
        return None
    listed = subprocess.run(
        [git, "-C", cube_root, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"],
        capture_output=True, timeout=60, check=False,
    )
    if listed.returncode != 0:
        return None
    return [path for path in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if path]


def exclude_file(cube_root: str, workspace_in_cube: bool) -> str:
    """Write git's ignore list as an rsync exclude file in ~/.cache/mlcube-ssh-ansible/; '' if none.

    The workspace is never excluded (it is often git-ignored, yet it holds the task's inputs). The cube's sweep
    folders (each run's results, see sweeps.py) always are.
    """
    ignored = git_ignored(cube_root) or []
    keep = ("workspace/",) if workspace_in_cube else ()
    rules = [f"/{path}" for path in ignored if not path.startswith(keep + (RECORDS_DIR + "/",))]
    rules += [f"/{folder}/" for folder in sweep_folders(cube_root)]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "mlcube-ssh-ansible")
    target = cache / f"{remote_name(cube_root)}.{EXCLUDES_FILE}"
    if not rules:
        target.unlink(missing_ok=True)
        return ""
    write_atomically(target, "\n".join(rules) + "\n")  # another command may be reading it
    return str(target)


def count_files(cube_root: str, limit: int = MANY_FILES + 1) -> int:
    """Files an upload would consider (the default excludes' folders left out), counting up to `limit`."""
    count = 0
    sweeps = {os.path.join(cube_root, folder) for folder in sweep_folders(cube_root)}  # results, never uploaded
    for folder, dirnames, filenames in os.walk(cube_root):
        dirnames[:] = [name for name in dirnames
                       if name not in EXCLUDED_DIRS and os.path.join(folder, name) not in sweeps]
        count += len(filenames)
        if count >= limit:
            break
    return count


def too_many_files_warning(cube_root: str) -> str | None:
    """A one-line warning before a first sync of a huge tree; None when the tree is small."""
    count = count_files(cube_root)
    if count <= MANY_FILES:
        return None
    return (f"warning: {cube_root} holds more than {MANY_FILES} files to upload; list what the remote host "
            "does not need in .gitignore or .mlcubeignore")
