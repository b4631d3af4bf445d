"""Execution: one ansible-runner call per command, in a private data dir that holds no secrets."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import assets, secrets
from .render import unsafe_yaml as _unsafe_yaml

EventHandler = Callable[[dict[str, Any]], bool]

# How many kept private folders stay in kept_dir(): the newest ones, per user.
KEEP_ARTIFACTS = 10
# What runs the playbooks: ansible-playbook's main() with less fixed cost (ansible_playbook.py), by this Python.
STARTER = "mlcube_ssh_ansible.ansible_playbook"
# Files ansible-runner may write that hold the controller's environment (env/* only without suppress_env_files).
_ENVIRONMENT_FILES = ("env/envvars", "env/passwords", "env/ssh_key", "env/cmdline", "env/settings")


@dataclass
class Outcome:
    """What ansible-runner reports: status, return code, per-host stats, and kept artifacts."""

    status: str
    rc: int
    stats: dict[str, Any] = field(default_factory=dict)
    artifacts: str | None = None


@dataclass
class Invocation:
    """Everything one ansible-playbook run needs, as data (no shell text anywhere)."""

    playbook: Path
    inventory: dict[str, Any]
    extravars: dict[str, Any]
    extra_inventories: Sequence[str] = ()
    forks: int = 20
    tags: Sequence[str] = ()
    skip_tags: Sequence[str] = ()
    check: bool = False
    verbosity: int = 0
    host_key_checking: bool = True
    keep_artifacts: bool = False
    password: str | None = field(default=None, repr=False)
    limit: str | None = None
    # Secret name -> value, served to the lookup mlcube_ssh_secret from memory (see secrets.py).
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # Secret name -> value, kept out of Ansible's environment (every command, also those that serve none).
    hidden: dict[str, str] = field(default_factory=dict, repr=False)


def environment(host_key_checking: bool) -> dict[str, str]:
    """Ansible settings the shim fixes (ansible-runner would turn host key checking off otherwise)."""
    return {
        "PATH": assets.ansible_bin_dir() + os.pathsep + os.environ.get("PATH", os.defpath),
        "ANSIBLE_HOST_KEY_CHECKING": str(host_key_checking),
        # The collection mlcube.ssh (playbooks, roles, plugins) from this package, then the usual paths.
        "ANSIBLE_COLLECTIONS_PATH": assets.ansible_collections_path(),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_PIPELINING": "True",
        # Templated task arguments (a secret, once looked up) never go into events or artifacts.
        "ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "False",
        # Ends ansible-playbook if this process dies; keeps built module payloads from one command to the next
        # (the collection's callback plugins).
        "ANSIBLE_CALLBACKS_ENABLED": "mlcube.ssh.lifeline,mlcube.ssh.ansiballz_cache",
        "MLCUBE_SSH_ANSIBALLZ_CACHE": str(ansiballz_cache_dir()),
    }


def _without_password(envvars: dict[str, str], password: str | None) -> dict[str, str]:
    """Blank every inherited variable that holds the password (e.g. authentication.password_env's):
    ansible-runner writes its whole environment into artifacts/<id>/command, and Ansible gets the
    password from its prompt instead."""
    if not password:
        return envvars
    return {**envvars, **{name: "" for name, value in os.environ.items() if value == password}}


def _without_secrets(envvars: dict[str, str], offered: dict[str, str]) -> dict[str, str]:
    """Blank the secrets' variables, and every other that holds one of their values, for the same reason:
    Ansible gets the values from this process (secrets.served), never from its environment."""
    if not offered:
        return envvars
    values = {value for value in offered.values() if value}
    blank = {name: "" for name, value in os.environ.items()
             if (name in offered or value in values) and name not in envvars}
    return {**envvars, **blank}


def _no_close_delay() -> None:
    """Make ansible-runner's pexpect skip its 0.1 s sleep when it closes the pty of a process that has ended.

    ansible-runner closes the pseudo-terminal only after ansible-playbook exited (its loop runs while the
    process is alive, then it reads to EOF); ptyprocess's close() still sleeps `delayafterclose` "to give the
    kernel time to update the process status", which is known already. A process still alive at close (a
    cancel) keeps the delay. Only ansible-runner's own reference to pexpect is changed, once."""
    import ansible_runner.runner
    import pexpect

    if getattr(ansible_runner.runner.pexpect, "mlcube_ssh_ansible", False):
        return

    class Spawn(pexpect.spawn):  # type: ignore[misc]  # pexpect has no type hints
        def close(self, force: bool = True) -> None:
            if not self.ptyproc.isalive():
                self.ptyproc.delayafterclose = 0.0
            super().close(force=force)

    proxy = types.ModuleType("pexpect")
    proxy.__dict__.update(vars(pexpect))
    proxy.__dict__.update(spawn=Spawn, mlcube_ssh_ansible=True)
    ansible_runner.runner.pexpect = proxy


def run_playbook(invocation: Invocation, event_handler: EventHandler,
                 cancel: threading.Event | None = None) -> Outcome:
    """Run one playbook through ansible-runner; keep the private data dir only on failure or when asked."""
    import ansible_runner  # slow import (~0.3 s): only when something runs

    _no_close_delay()

    Path("~/.ansible/cp").expanduser().mkdir(mode=0o700, parents=True, exist_ok=True)
    private = tempfile.mkdtemp(prefix="mlcube-ssh-ansible-")  # created 0700
    inventory_file = Path(private, "inventory.yml")
    inventory_file.write_text(_unsafe_yaml(invocation.inventory))
    inventory_file.chmod(0o600)
    # ansible-runner passes env/extravars as `-e @file`; a dict would go on the command line as JSON,
    # where no value can be marked as data.
    Path(private, "env").mkdir(mode=0o700)
    Path(private, "env", "extravars").write_text(_unsafe_yaml(invocation.extravars))
    # ansible-playbook through our starter (the same main(), with its collection metadata cache): the playbook
    # is then ours to put on the command line (ansible-runner adds it only when it picks the binary itself).
    cmdline = ["-m", STARTER, str(invocation.playbook), *(["--check", "--diff"] if invocation.check else [])]
    passwords = None
    if invocation.password is not None:
        # Answered in memory by ansible-runner; suppress_env_files keeps it out of env/passwords.
        cmdline.append("--ask-pass")
        passwords = {r"^SSH password:\s*?$": invocation.password}
    scrubbed = False
    stats: dict[str, Any] = {}

    def handler(event: dict[str, Any]) -> bool:
        nonlocal scrubbed
        if not scrubbed:  # the command file is written before the first event: scrub it while the run goes on
            scrub(private)
            scrubbed = True
        if event.get("event") == "playbook_on_stats":
            stats.update(play_stats(event))
        return event_handler(event)

    try:
        with secrets.served(invocation.secrets) as found:  # the values, from memory, while Ansible runs
            result = ansible_runner.run(
                private_data_dir=private,
                binary=sys.executable,
                inventory=[str(inventory_file), *invocation.extra_inventories],
                envvars={**_without_secrets(_without_password(environment(invocation.host_key_checking),
                                                              invocation.password),
                                            {**invocation.hidden, **invocation.secrets}), **found},
                forks=invocation.forks,
                limit=invocation.limit,
                tags=",".join(invocation.tags) or None,
                skip_tags=",".join(invocation.skip_tags) or None,
                cmdline=shlex.join(cmdline),
                verbosity=invocation.verbosity or None,
                quiet=invocation.verbosity == 0,
                event_handler=handler,
                cancel_callback=(lambda: cancel.is_set()) if cancel else None,
                settings={"suppress_ansible_output": invocation.verbosity == 0},
                passwords=passwords,
                suppress_env_files=True,
            )
    except BaseException:
        keep(private)  # scrubbed and bounded, not left behind in the temporary folder
        raise
    rc = result.rc if isinstance(result.rc, int) else 1
    # Not result.stats: ansible-runner would read and parse every event file of the run again to find them.
    outcome = Outcome(status=result.status, rc=rc, stats=stats)
    if invocation.keep_artifacts or rc != 0:
        outcome.artifacts = keep(private)
    else:
        shutil.rmtree(private, ignore_errors=True)
    return outcome


STATS_KEYS = ("skipped", "ok", "dark", "failures", "ignored", "rescued", "processed", "changed")


def play_stats(event: dict[str, Any]) -> dict[str, Any]:
    """Per-host stats from the playbook_on_stats event, as ansible-runner's Runner.stats gives them."""
    data = event.get("event_data") or {}
    return {key: data.get(key, {}) for key in STATS_KEYS}


def kept_dir() -> Path:
    """Where kept private folders go: the user's own cache, not a shared /tmp, bounded by KEEP_ARTIFACTS."""
    return _cache_home() / "artifacts"


def ansiballz_cache_dir() -> Path:
    """Where Ansible's built module payloads stay between commands (callback mlcube_ssh_ansiballz_cache)."""
    return _cache_home() / "ansiballz"


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "mlcube-ssh-ansible")


def scrub(private: str) -> None:
    """Remove the controller's environment from a private folder: ansible-runner writes all of it (any
    AWS_*, HF_TOKEN, ...) into artifacts/<id>/command, which is rewritten with the command line only."""
    for command in Path(private, "artifacts").glob("*/command"):
        try:
            recorded = json.loads(command.read_text())
            kept = {key: recorded.get(key) for key in ("command", "cwd")}
        except (OSError, ValueError, AttributeError):
            kept = {}
        command.unlink(missing_ok=True)
        command.write_text(json.dumps(kept))
        command.chmod(0o600)
    for name in _ENVIRONMENT_FILES:
        Path(private, name).unlink(missing_ok=True)


def keep(private: str) -> str:
    """Scrub the private folder, move it to kept_dir() and drop the oldest beyond KEEP_ARTIFACTS; its path."""
    scrub(private)
    folder = kept_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / (time.strftime("%Y%m%d-%H%M%S-") + os.path.basename(private).rsplit("-", 1)[-1])
    shutil.move(private, target)
    os.utime(target)
    kept = sorted(folder.iterdir(), key=lambda path: (path.stat().st_mtime_ns, path.name), reverse=True)
    for old in kept[KEEP_ARTIFACTS:]:
        shutil.rmtree(old, ignore_errors=True)
    return str(target)
