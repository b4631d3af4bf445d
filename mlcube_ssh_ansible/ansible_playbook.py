"""`python -m mlcube_ssh_ansible.ansible_playbook ARGS`: ansible-playbook ARGS, started with less fixed cost.

Every command of the shim starts ansible-playbook once or more, and each start parses the same YAML again: the
definitions of Ansible's settings (ansible-core's 90 kB `config/base.yml`, ~0.02 s of CPU) and the routing metadata
of ansible.builtin (its 370 kB `ansible_builtin_runtime.yml`) and of every collection it loads (~0.07 s). This keeps
what the parser made of each text, keyed by a digest of the text itself (an edited or upgraded file is parsed anew,
nothing stale is used), and hands Ansible a fresh copy: the collection metadata through `_meta_yml_to_dict`, which
Ansible documents as replaceable by tools that cache its output; the settings through ConfigManager's reader, put
in place before `ansible.constants` creates the one ConfigManager.

The YAML of this collection's own playbooks and roles, and the plugins' documentation Ansible reads their settings
from (it loads every connection, shell and become plugin at the start of each play), is parsed into Ansible's tagged
values (each string knows its file, line and column, and whether it may be templated), which JSON cannot carry: these
parses are kept as pickles (parses_kept), keyed the same way, in the same private folder. Files outside the collection
(a user's inventory, host_vars, extra-vars files) are never kept, nor anything vault-encrypted: no secret is written.

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
import pickle
import signal
import stat
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


def _save(folder: Path, path: Path, content: str | bytes, keep: int = KEEP) -> None:
    """Write aside, then rename into place (another command may read it meanwhile); drop the oldest beyond `keep`."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    aside = path.with_name(f"{path.name}.{os.getpid()}.saving")
    if isinstance(content, bytes):  # a pickle: readable and writable by this user only, whatever the umask
        with open(os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
            file.write(content)
    else:
        aside.write_text(content)
    os.replace(aside, path)
    files = sorted(folder.glob("*" + path.suffix), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


# Kept pickles of tagged parses (see parses_kept): ~50 per ansible-core version and collection version in use.
KEEP_PICKLES = 256


def kept(parse: Callable[[], Any], key: bytes, folder: Path) -> Any:
    """`parse()`, answered from a pickle in `folder` made by an earlier parse with the same `key` (which names
    everything the result depends on); any problem reading or writing it just parses."""
    path = folder / (hashlib.sha256(key).hexdigest()[:40] + ".pickle")
    with contextlib.suppress(Exception):  # missing, damaged, or from a version whose classes moved
        if _private(folder) and _private(path):
            return pickle.loads(path.read_bytes())  # noqa: S301 - written by this user, in a folder only it can write
    result = parse()
    with contextlib.suppress(Exception):
        _save(folder, path, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL), KEEP_PICKLES)
    return result


def _private(path: Path) -> bool:
    """Owned by this user and writable by nobody else: a pickle is code, so none is read from anywhere else."""
    info = path.stat()
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def parses_kept(folder: Path, roots: tuple[str, ...]) -> None:
    """Keep Ansible's parses of the YAML files below `roots` (the collection's playbooks and roles) and of the
    plugins' documentation (settings definitions), as tagged values; see the module's docstring."""
    import yaml
    from ansible.module_utils._internal._datatag import AnsibleTagHelper
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.yaml.loader import AnsibleLoader
    from ansible.plugins import loader as plugin_loader
    from ansible.release import __version__

    def key(kind: str, name: str, text: str, *flags: object) -> bytes:
        tags = sorted(type(tag).__name__ for tag in AnsibleTagHelper.tags(text))
        return "\0".join([kind, __version__, sys.version, name, repr(flags), repr(tags), text]).encode(
            "utf-8", "surrogateescape")

    load = DataLoader.load

    def load_kept(self: Any, data: Any, file_name: Any = "<string>", show_content: bool = True,
                  json_only: bool = False) -> Any:
        ours = isinstance(file_name, str) and os.path.realpath(file_name).startswith(roots)
        if not ours or not show_content or not isinstance(data, str) or "$ANSIBLE_VAULT" in data:
            return load(self, data, file_name, show_content, json_only)
        return kept(lambda: load(self, data, file_name, show_content, json_only),
                    key("file", file_name, data, json_only), folder)

    DataLoader.load = load_kept

    class DocumentationYaml:
        """The `yaml` that ansible.plugins.loader sees: its parse of a plugin's documentation is kept."""

        def __getattr__(self, name: str) -> Any:
            return getattr(yaml, name)

        @staticmethod
        def load(stream: Any, Loader: Any = None) -> Any:  # noqa: N803 - yaml.load's own name
            if Loader is not AnsibleLoader or not isinstance(stream, str):
                return yaml.load(stream, Loader=Loader)  # noqa: S506 - as Ansible calls it
            origin = next((tag for tag in AnsibleTagHelper.tags(stream) if type(tag).__name__ == "Origin"), None)
            return kept(lambda: yaml.load(stream, Loader=Loader),  # noqa: S506 - Ansible's own loader
                        key("documentation", repr(origin), stream), folder)

    if getattr(plugin_loader, "yaml", None) is yaml:
        plugin_loader.yaml = DocumentationYaml()


def install() -> None:
    """Put the caches in front of the parses, before anything reads a setting or loads a collection."""
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
    collection = Path(__file__).resolve().parent / "ansible_collections" / "mlcube" / "ssh"
    parses_kept(folder.with_name("tagged-parses"),
                tuple(os.path.realpath(collection / part) + os.sep for part in ("roles", "playbooks")))


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
