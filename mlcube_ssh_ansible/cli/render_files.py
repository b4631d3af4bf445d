"""`render`: the inventory and extra-vars files (secrets left out) and the ansible-playbook commands that use
them, so that plain Ansible does what `run` does."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from .. import assets, credentials, workflow
from ..render import Job, unsafe_yaml
from ..settings import Settings, forks_for
from .config import PROG, Loaded

_SECRET_KEY = re.compile(r"(^|_)(pass|password|passphrase|secret|token)$")


def without_secrets(value: Any, dropped: list[str]) -> Any:
    """A copy of an inventory or extra-vars without password-like keys (their names go in `dropped`)."""
    if isinstance(value, Mapping):
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and _SECRET_KEY.search(key.lower()):
                dropped.append(key)
            else:
                kept[key] = without_secrets(item, dropped)
        return kept
    if isinstance(value, list):
        return [without_secrets(item, dropped) for item in value]
    return value


def checkout_root() -> Path | None:
    """The source checkout this package runs from (the collection's root, with its ansible.cfg), if any."""
    root = Path(assets.__file__).resolve().parent.parent
    parts = (root / "ansible.cfg", root / "galaxy.yml", root / "playbooks" / "run.yml")
    return root if all(part.exists() for part in parts) else None


def playbook_commands(settings: Settings, inventory: Path, extravars: Path,
                      playbooks: Sequence[str]) -> list[str]:
    """The shell commands that run `playbooks` with the rendered files exactly as this tool would."""
    binary = Path(assets.ansible_bin_dir(), "ansible-playbook")
    ansible_playbook = str(binary) if binary.is_file() else "ansible-playbook"
    sources = ["-i", str(inventory)] + (["-i", settings.inventory] if settings.inventory else [])
    root = checkout_root()
    commands = []
    for name in playbooks:
        # The collection's playbook by name; ansible.cfg (the checkout's, or the package's copy) puts this
        # package's collection first on the collections path.
        playbook = f"{assets.COLLECTION}.{name}"
        if root is not None:
            prefix = f"cd {shlex.quote(str(root))} && "
        else:
            package = Path(assets.__file__).resolve().parent
            prefix = f"ANSIBLE_CONFIG={shlex.quote(str(package / 'ansible.cfg'))} "
        forks = str(forks_for(settings, name))
        argv = [ansible_playbook, *sources, playbook, "-e", f"@{extravars}", "--forks", forks]
        if credentials.configured(settings):
            argv.append("--ask-pass")  # the password never goes into the files
        commands.append(prefix + shlex.join(argv))
    return commands


def write_rendered(loaded: Loaded, job: Job, out: Path,
                   write: Callable[[str], None] = click.echo) -> list[str]:
    """Write DIR/inventory.yml and DIR/extravars.yml; print and return the commands that use them."""
    inventory, extravars = workflow.rendered(loaded.settings, job)
    dropped: list[str] = []
    inventory, extravars = without_secrets(inventory, dropped), without_secrets(extravars, dropped)
    out = Path(os.path.abspath(os.path.expanduser(str(out))))
    out.mkdir(parents=True, exist_ok=True)
    inventory_file, extravars_file = out / "inventory.yml", out / "extravars.yml"
    # json.dumps: a newline in a folder name cannot end the comment and start YAML of its own.
    header = (f"# Written by `{PROG} render` for {json.dumps(job.cube_root)} "
              f"(settings: {json.dumps(str(loaded.settings_file))}).\n"
              "# No secrets: SSH keys appear as paths, passwords never. Render again after changing settings.\n"
              "# Values with template syntax are tagged !unsafe: Ansible keeps them as data.\n")
    inventory_file.write_text(header + unsafe_yaml(inventory))
    extravars_file.write_text(header + unsafe_yaml(extravars))
    # The ssh ControlPath lives here; the CLI creates it before each run, and so does render for the commands.
    Path("~/.ansible/cp").expanduser().mkdir(mode=0o700, parents=True, exist_ok=True)
    names = ["configure", "run"] if job.tasks else ["configure"]
    if job.tasks and (assets.collection_dir() / "playbooks" / "cancel.yml").is_file():
        names.append("cancel")  # Ctrl-C on plain ansible-playbook leaves the remote task running
    commands = playbook_commands(loaded.settings, inventory_file, extravars_file, names)
    write(f"wrote {inventory_file} and {extravars_file}")
    if loaded.settings.inventory:
        write(f"your inventory comes second: -i {loaded.settings.inventory} (already in the commands below)")
    if dropped:
        write(f"left out (secrets): {', '.join(sorted(set(dropped)))}; give them to ansible-playbook "
              "yourself, e.g. with --ask-pass")
    titles = {"cancel": "cancel (stops the cube's remote task and its containers; Ctrl-C on the run "
                        "command above stops only Ansible):"}
    for name, command in zip(names, commands):
        write(titles.get(name, f"{name}:"))
        write(f"  {command}")
    if not job.tasks:
        write(f"run: give --task to render a run (this cube has tasks {', '.join(loaded.tasks)})")
    return commands
