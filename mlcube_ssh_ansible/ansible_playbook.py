"""`python -m mlcube_ssh_ansible.ansible_playbook ARGS`: ansible-playbook ARGS, started with less fixed cost.

Every command of the shim starts ansible-playbook once or more, and each start parses the same YAML again: the
routing metadata of ansible.builtin (ansible-core's 370 kB `ansible_builtin_runtime.yml`) and of every collection
it loads, ~0.07 s of CPU per start. Ansible reads it through one function, `_meta_yml_to_dict`, which it documents
as replaceable by tools that cache its output (it is given a content id for that). This keeps its results, keyed by
a digest of the YAML text itself, so an edited or upgraded runtime.yml is parsed anew and nothing stale is used.

When ansible-playbook's `main()` has returned, the process ends without the interpreter's tear-down (see finish()).

Everything else is ansible-playbook's own `main()`, with the same arguments, environment, output and exit code;
plain `ansible-playbook` runs the same playbooks the same way, only without these two savings.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, NoReturn

# Kept runtime.yml results: one small JSON file each (a few per ansible-core version and collection in use).
KEEP = 32


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "mlcube-ssh-ansible", "collection-meta")


def cached(parse: Callable[[bytes | str, Any], Any], folder: Path) -> Callable[[bytes | str, Any], Any]:
    """`parse`, answering from `folder` for YAML text it has parsed before (the same text, byte for byte).

    The results are what Ansible's parser gives with its BaseLoader: dicts, lists and strings only, which JSON
    keeps exactly (a result of any other kind is not kept)."""

    def meta_yml_to_dict(yaml_string_data: bytes | str, content_id: Any) -> Any:
        raw = yaml_string_data.encode() if isinstance(yaml_string_data, str) else bytes(yaml_string_data)
        path = folder / (hashlib.sha256(raw).hexdigest()[:40] + ".json")
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_bytes())
        result = parse(yaml_string_data, content_id)
        if _plain(result):
            with contextlib.suppress(OSError):
                _save(folder, path, json.dumps(result))
        return result

    return meta_yml_to_dict


def _plain(value: Any) -> bool:
    """Only dicts with string keys, lists and strings: what JSON gives back unchanged."""
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return isinstance(value, str)


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
    """Put the cache in front of Ansible's collection metadata parser (before anything loads a collection)."""
    from ansible.utils.collection_loader import _collection_finder

    parse = getattr(_collection_finder, "_meta_yml_to_dict", None)
    if parse is not None:
        _collection_finder._meta_yml_to_dict = cached(parse, cache_dir())


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


def main() -> None:
    install()
    from ansible.cli.playbook import main as ansible_playbook

    sys.argv[0] = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    try:
        code: object = ansible_playbook()
    except SystemExit as ended:  # ansible's CLI ends with sys.exit(its exit code)
        code = ended.code
    finish(code)


if __name__ == "__main__":
    main()
