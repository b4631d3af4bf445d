"""Find the packaged collection mlcube.ssh (playbooks, roles, plugins), and the Ansible pieces it needs here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import EnvironmentProblem

_PACKAGE = Path(__file__).resolve().parent

POSIX_FIX = (
    "install it with `pip install 'mlcube-ssh-ansible[ansible]'` (the `ansible` package carries it) "
    "or `ansible-galaxy collection install ansible.posix`"
)

# mlcube 0.0.9 goes in beside this package, without its dependencies (pyproject.toml says why).
MLCUBE_INSTALL_HINT = "install it with `pip install --no-deps mlcube==0.0.9` (README: Install)"


# The Ansible side is the collection mlcube.ssh, whose root is the repository's root. The package carries it as
# ansible_collections/mlcube/ssh/ (in a checkout: links to the top-level galaxy.yml, meta/, plugins/, roles/ and
# playbooks/; in the wheel: copies), so the package folder is a collections path for Ansible.
COLLECTION = "mlcube.ssh"
# The playbooks' tags the shim runs parts of a playbook by; prefixed (as all of the collection's tags), so they
# never collide with other tags when a playbook is imported into a bigger play.
TAG_REMOTE_RUN = "mlcube_ssh_remote_run"
TAG_FETCH = "mlcube_ssh_fetch"
TAG_UPLOAD = "mlcube_ssh_upload"
# Tasks the shim leaves out (--skip-tags) when it knows before the play that every host would skip them by their
# `when`: a task skipped by `when` still costs a worker fork per host (workflow.skipped_tags says when).
TAG_PRUNE = "mlcube_ssh_prune"  # deleting results deleted locally: none were
TAG_RESULTS_FOLDER = "mlcube_ssh_results_folder"  # the local hosts/ folder: one host, whose results go to the workspace
TAG_SYSTEM_SETTINGS = "mlcube_ssh_system_settings"  # writing the platform settings' file: none are set
TAG_RESULT = "mlcube_ssh_result"  # failing the hosts whose task failed: the shim's reporter does it (report.py)


def collection_dir() -> Path:
    """The collection mlcube.ssh inside this package."""
    return _PACKAGE / "ansible_collections" / "mlcube" / "ssh"


def playbook(name: str) -> Path:
    """Absolute path of one of the collection's playbooks (`configure`, `run`, ...)."""
    path = collection_dir() / "playbooks" / f"{name}.yml"
    if not path.is_file():
        raise EnvironmentProblem(f"playbook {path} is missing: the mlcube-ssh-ansible install is broken")
    return path


def roles_dir() -> Path:
    """The collection's roles folder."""
    return collection_dir() / "roles"


def plugins_dir() -> Path:
    """The collection's plugins folder (modules, action, lookup, callback)."""
    return collection_dir() / "plugins"


def configured_collection_paths() -> list[str]:
    """The collections paths Ansible would use here without us: the environment's, else Ansible's defaults."""
    configured = os.environ.get("ANSIBLE_COLLECTIONS_PATH") or os.environ.get("ANSIBLE_COLLECTIONS_PATHS")
    return [p for p in configured.split(os.pathsep) if p] if configured else [
        "~/.ansible/collections", "/usr/share/ansible/collections"
    ]


def ansible_collections_path() -> str:
    """ANSIBLE_COLLECTIONS_PATH for our runs: this package's mlcube.ssh first (so another installed version never
    wins), then the usual paths (ansible.posix; Ansible also scans sys.path, where the `ansible` package has it)."""
    return os.pathsep.join([str(_PACKAGE), *configured_collection_paths()])


def collection_paths() -> list[Path]:
    """Where ansible-playbook (run with this Python) looks for collections."""
    return [Path(p).expanduser() for p in configured_collection_paths() + sys.path if p]


def posix_collection() -> Path | None:
    """The ansible.posix collection ansible-playbook finds first (it has `synchronize`), or None."""
    marker = Path("ansible_collections", "ansible", "posix", "plugins", "modules", "synchronize.py")
    for base in collection_paths():
        if (base / marker).is_file():
            return base / "ansible_collections" / "ansible" / "posix"
    return None


def check_controller(needs_sshpass: bool = False) -> None:
    """Fail before touching any host when ansible.posix, rsync, ssh (or sshpass) is missing here."""
    if posix_collection() is None:
        raise EnvironmentProblem(f"the Ansible collection ansible.posix is missing: {POSIX_FIX}")
    for tool in ("rsync", "ssh", "sshpass")[: 3 if needs_sshpass else 2]:
        if shutil.which(tool) is None:
            raise EnvironmentProblem(f"`{tool}` is not on PATH: install it (e.g. apt-get install {tool})")


def ansible_bin_dir() -> str:
    """The folder of this Python's ansible-playbook, so an unactivated venv works without PATH tweaks."""
    return os.path.dirname(sys.executable)


# New virtualenvs on the hosts are created without pip and get it from this wheel, uploaded by configure:
# pip 24.0 runs on Python 3.7+ and is the last pip that accepts mlcube 0.0.9's pin omegaconf==2.1.0.
PIP_REQUIREMENT = "pip==24.0"
PIP_WHEEL = "pip-24.0-py3-none-any.whl"


def wheels_dir() -> Path:
    """The controller's cache of wheels it uploads (next to the configure fingerprints)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "mlcube-ssh-ansible", "wheels")


def _whole_wheel(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as wheel:
            return "pip/__main__.py" in wheel.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def pip_wheel() -> Path:
    """The pip wheel for new virtualenvs: from the cache, else downloaded once from this machine's index.

    Raises EnvironmentProblem (nothing touched yet) naming the fix when it cannot be had."""
    folder = wheels_dir()
    path = folder / PIP_WHEEL
    if _whole_wheel(path):
        return path
    fix = (f"put {PIP_WHEEL} into {folder} (e.g. `python3 -m pip download {PIP_REQUIREMENT} --no-deps -d {folder}` "
           "where PyPI can be reached), or use interpreter.type: system")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", PIP_REQUIREMENT, "--no-deps", "--only-binary=:all:",
                 "--disable-pip-version-check", "--quiet", "-d", scratch],
                capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
            got = Path(scratch, PIP_WHEEL)
            if proc.returncode != 0 or not _whole_wheel(got):
                said = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
                raise EnvironmentProblem(f"cannot download {PIP_REQUIREMENT}, which new virtualenvs on the hosts "
                                         f"get their pip from ({said[-1].strip() if said else 'no wheel'}): {fix}")
            os.replace(got, path)
    except (OSError, subprocess.SubprocessError) as error:
        raise EnvironmentProblem(f"cannot download {PIP_REQUIREMENT} into {folder} ({error}): {fix}") from None
    return path
