"""Find the packaged playbooks and roles, and the Ansible pieces they need on this controller."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .errors import EnvironmentProblem

_PACKAGE = Path(__file__).resolve().parent

POSIX_FIX = (
    "install it with `pip install 'mlcube-ssh-ansible[ansible]'` (the `ansible` package carries it) "
    "or `ansible-galaxy collection install ansible.posix`"
)

# mlcube 0.0.9 goes in beside this package, without its dependencies (pyproject.toml says why).
MLCUBE_INSTALL_HINT = "install it with `pip install --no-deps mlcube==0.0.9` (README: Install)"


def playbook(name: str) -> Path:
    """Absolute path of a packaged playbook (`configure`, `run`)."""
    path = _PACKAGE / "playbooks" / f"{name}.yml"
    if not path.is_file():
        raise EnvironmentProblem(f"playbook {path} is missing: the mlcube-ssh-ansible install is broken")
    return path


def roles_dir() -> Path:
    """The packaged roles folder (in a checkout: the top-level `roles/`, through a symlink)."""
    return _PACKAGE / "roles"


def callback_plugins_dir() -> Path:
    """Our Ansible callback plugins (the lifeline that ends ansible-playbook with its parent)."""
    return _PACKAGE / "callback_plugins"


def collection_paths() -> list[Path]:
    """Where ansible-playbook (run with this Python) looks for collections."""
    configured = os.environ.get("ANSIBLE_COLLECTIONS_PATH") or os.environ.get("ANSIBLE_COLLECTIONS_PATHS")
    paths = configured.split(os.pathsep) if configured else [
        "~/.ansible/collections", "/usr/share/ansible/collections"
    ]
    return [Path(p).expanduser() for p in paths + sys.path if p]


def check_controller(needs_sshpass: bool = False) -> None:
    """Fail before touching any host when ansible.posix, rsync, ssh (or sshpass) is missing here."""
    marker = Path("ansible_collections", "ansible", "posix", "plugins", "modules", "synchronize.py")
    if not any((base / marker).is_file() for base in collection_paths()):
        raise EnvironmentProblem(f"the Ansible collection ansible.posix is missing: {POSIX_FIX}")
    for tool in ("rsync", "ssh", "sshpass")[: 3 if needs_sshpass else 2]:
        if shutil.which(tool) is None:
            raise EnvironmentProblem(f"`{tool}` is not on PATH: install it (e.g. apt-get install {tool})")


def ansible_bin_dir() -> str:
    """The folder of this Python's ansible-playbook, so an unactivated venv works without PATH tweaks."""
    return os.path.dirname(sys.executable)
