"""`python -m mlcube_ssh_ansible.ansible_playbook ARGS`: ansible-playbook ARGS, started with less fixed cost.

Every command of the shim starts ansible-playbook once or more, and each start parses the same YAML again: the
definitions of Ansible's settings (ansible-core's 90 kB `config/base.yml`, ~0.02 s of CPU) and the routing metadata
of ansible.builtin (its 370 kB `ansible_builtin_runtime.yml`) and of every collection it loads (~0.07 s). This keeps
what the parser made of each text, keyed by a digest of the text itself (an edited or upgraded file is parsed anew,
nothing stale is used), and hands Ansible a fresh copy: the collection metadata through `_meta_yml_to_dict`, which
Ansible documents as replaceable by tools that cache its output; the settings through ConfigManager's reader, put
in place before `ansible.constants` creates the one ConfigManager.

When ansible-playbook's `main()` has returned, the process ends without the interpreter's tear-down (see finish()).

Everything else is ansible-playbook's own `main()`, with the same arguments, environment, output and exit code;
plain `ansible-playbook` runs the same playbooks the same way, only without these savings.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, NoReturn

# Kept parses: one JSON file each (three or four per ansible-core version and collections in use).
KEEP = 32


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "mlcube-ssh-ansible", "yaml-parses")


def cached(parse: Callable[[bytes | str, Any], Any], folder: Path, kind: str) -> Callable[[bytes | str, Any], Any]:
    """`parse(text, context)`, answering from `folder` for a text it has parsed before (byte for byte, same `kind`
    of parse). Only results that JSON gives back unchanged are kept (see _exact)."""

    def parse_cached(text: bytes | str, context: Any) -> Any:
        raw = text.encode() if isinstance(text, str) else bytes(text)
        path = folder / (hashlib.sha256(kind.encode() + b"\0" + raw).hexdigest()[:40] + ".json")
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_bytes())
        result = parse(text, context)
        if _exact(result):
            with contextlib.suppress(OSError):
                _save(folder, path, json.dumps(result))
        return result

    return parse_cached


def _exact(value: Any) -> bool:
    """Dicts with string keys, lists, strings, numbers, booleans and None: what JSON gives back unchanged."""
    if isinstance(value, dict):
        return all(isinstance(key, str) and _exact(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_exact(item) for item in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _save(folder: Path, path: Path, text: str) -> None:
    """Write aside, then rename into place (another command may read it meanwhile); drop the oldest beyond KEEP."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    aside = path.with_name(f"{path.name}.{os.getpid()}.saving")
    aside.write_text(text)
    os.replace(aside, path)
    kept = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in kept[KEEP:]:
        old.unlink(missing_ok=True)


def install() -> None:
    """Put the cache in front of both parses, before anything reads a setting or loads a collection."""
    from ansible.config.manager import ConfigManager
    from ansible.module_utils.common.yaml import yaml_load
    from ansible.utils.collection_loader import _collection_finder

    folder = cache_dir()
    parse = getattr(_collection_finder, "_meta_yml_to_dict", None)
    if parse is not None:
        _collection_finder._meta_yml_to_dict = cached(parse, folder, "collection-meta")
    if "ansible.constants" in sys.modules or not hasattr(ConfigManager, "_read_config_yaml_file"):
        return
    read = ConfigManager._read_config_yaml_file
    definitions = cached(lambda text, _: yaml_load(text) or {}, folder, "config-definitions")

    def read_config_yaml_file(self: Any, yml_file: Any) -> Any:
        try:
            with open(yml_file, "rb") as file:
                text = file.read()
        except OSError:
            return read(self, yml_file)  # Ansible's own error
        return definitions(text, yml_file)

    ConfigManager._read_config_yaml_file = read_config_yaml_file


def exit_code(code: object) -> int:
    """The exit status sys.exit(code) gives (a message is printed, and is status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return int(code)
    sys.stderr.write(f"{code}\n")
    return 1


def finish(code: object) -> NoReturn:
    """Exit as the interpreter would, less its tear-down: everything registered to run at exit runs (Ansible's
    removal of its local temporary folder, the ssh-agent it started, logging's and multiprocessing's clean-up),
    other threads are waited for, the output is flushed; then the process ends without freeing each of the
    ~100 000 objects ansible-playbook holds one by one (~0.08 s of CPU). The exit status is the same."""
    status = exit_code(code)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


# Linux's prctl option: the signal a process gets when the process that forked it ends.
_PR_SET_PDEATHSIG = 1


def workers_end_with_this_process() -> None:
    """Each process this one forks (Ansible's workers) gets SIGTERM from the kernel when this one ends.

    Ansible's workers start sessions of their own (setsid), so a cancel, which kills ansible-playbook's process
    group (ansible-runner sends SIGKILL to it), does not reach them: a worker in the middle of a task (a follow
    loop, a pause) went on alone, with nobody left to take its result, and stayed. SIGTERM ends a worker as
    Ansible's own clean-up would. Only the processes forked by this one (not theirs) ask for it."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    main_pid = os.getpid()
    forking = {"by": main_pid}

    def before_fork() -> None:
        forking["by"] = os.getpid()

    def in_child() -> None:
        if forking["by"] != main_pid:
            return
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0 and os.getppid() != main_pid:
            os.kill(os.getpid(), signal.SIGTERM)  # this process ended before the request was made

    os.register_at_fork(before=before_fork, after_in_child=in_child)


def main() -> None:
    install()
    workers_end_with_this_process()
    from ansible.cli.playbook import main as ansible_playbook

    sys.argv[0] = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    try:
        code: object = ansible_playbook()
    except SystemExit as ended:  # ansible's CLI ends with sys.exit(its exit code)
        code = ended.code
    finish(code)


if __name__ == "__main__":
    main()
