"""ansible-runner's kept private folders: what helps a diagnosis, never the environment, and only a few.

Real ansible-runner and ansible-playbook, on a local play (no host needed)."""

from __future__ import annotations

import os
import shutil
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import pytest

from mlcube_ssh_ansible import execute
from mlcube_ssh_ansible.execute import Invocation, run_playbook

FAILING_PLAY = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.fail: {msg: "failing on purpose for the test"}
"""
SENTINEL = "sentinel-7f3a9c-not-for-artifacts"


@pytest.fixture
def failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invocation:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("HF_TOKEN", SENTINEL)  # what a user's shell may well hold
    playbook = tmp_path / "fail.yml"
    playbook.write_text(FAILING_PLAY)
    return Invocation(playbook=playbook, inventory={"all": {"hosts": {"localhost": {}}}}, extravars={})


def all_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_a_kept_private_folder_holds_events_and_output_but_not_the_environment(
        failing: Invocation, tmp_path: Path) -> None:
    outcome = run_playbook(failing, lambda _: True)

    assert outcome.rc != 0 and outcome.artifacts
    kept = Path(outcome.artifacts)
    assert kept.is_dir() and oct(kept.stat().st_mode)[-3:] == "700"
    names = {path.name for path in all_files(kept)}
    assert "stdout" in names and any(path.parent.name == "job_events" for path in all_files(kept))
    assert "failing on purpose" in next(kept.rglob("stdout")).read_text()
    assert [path for path in all_files(kept) if SENTINEL.encode() in path.read_bytes()] == []
    # ...and nothing else of this run is left in the temporary folder.
    assert list((tmp_path / "tmp").iterdir()) == []


def test_only_the_newest_kept_folders_stay(failing: Invocation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "KEEP_ARTIFACTS", 2)
    kept = [Path(str(run_playbook(failing, lambda _: True).artifacts)) for _ in range(3)]

    assert [folder.exists() for folder in kept] == [False, True, True]
    assert sorted(kept[0].parent.iterdir()) == sorted(kept[1:])


def test_the_shims_environment_loads_the_collections_callback(tmp_path: Path) -> None:
    """The lifeline (ends ansible-playbook with its parent) and the payload cache come from the package's collection
    mlcube.ssh:
    a name Ansible cannot load would only be a warning, so the load itself is asserted."""
    import os
    import subprocess

    from mlcube_ssh_ansible import assets

    playbook = tmp_path / "play.yml"
    playbook.write_text(FAILING_PLAY.replace("ansible.builtin.fail", "ansible.builtin.debug"))
    ran = subprocess.run([str(Path(assets.ansible_bin_dir(), "ansible-playbook")), "-i", "localhost,",
                          str(playbook), "-vvvv"], capture_output=True, text=True, check=False, cwd=tmp_path,
                         env={**os.environ, **execute.environment(True)})
    assert ran.returncode == 0, ran.stdout + ran.stderr
    loaded = [line for line in ran.stdout.splitlines() if line.startswith("Loading callback plugin mlcube.ssh.")]
    assert sorted(loaded) == [f"Loading callback plugin mlcube.ssh.{name} of type aggregate, v2.0 from "
                              f"{assets.plugins_dir() / 'callback' / name}.py"
                              for name in ("ansiballz_cache", "lifeline")], ran.stdout


# -- fixed costs (issue 12) ------------------------------------------------------------------------------------

PING_PLAY = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.ping:
"""


def test_ansible_runner_closes_the_pty_of_an_ended_process_without_sleeping() -> None:
    import ansible_runner.runner

    execute._no_close_delay()
    execute._no_close_delay()  # once is enough; a second call changes nothing
    spawn = ansible_runner.runner.pexpect.spawn

    ended = spawn("true")
    ended.expect(ansible_runner.runner.pexpect.EOF)
    while ended.isalive():
        pass
    ended.close()
    assert ended.ptyproc.delayafterclose == 0 and ended.exitstatus == 0

    running = spawn("sleep", ["30"])
    running.close()  # a process still alive (a cancel): pexpect's own delay, then it is ended
    assert running.ptyproc.delayafterclose == 0.1 and not running.isalive()


def test_built_module_payloads_are_kept_for_the_next_command(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ANSIBLE_DEBUG", "1")  # Ansible then says whether it built a payload or found it
    playbook = tmp_path / "ping.yml"
    playbook.write_text(PING_PLAY)
    inventory = {"all": {"hosts": {"localhost": {"ansible_python_interpreter": sys.executable}}}}
    invocation = Invocation(playbook=playbook, inventory=inventory, extravars={})

    def output(lines: list[str]) -> Callable[[dict[str, Any]], bool]:
        return lambda event: lines.append(str(event.get("stdout", ""))) or True

    first: list[str] = []
    assert run_playbook(invocation, output(first)).rc == 0
    [payload] = [path for path in execute.ansiballz_cache_dir().glob("*/ansible.modules.ping-*")
                 if not path.name.endswith(".lock")]
    built = payload.stat()
    second: list[str] = []
    assert run_playbook(invocation, output(second)).rc == 0

    assert any("ANSIBALLZ: Creating module" in line for line in first)
    assert not any("ANSIBALLZ: Creating module" in line for line in second)
    assert any("ANSIBALLZ: using cached module" in line for line in second)
    assert (payload.stat().st_ino, payload.stat().st_mtime_ns) == (built.st_ino, built.st_mtime_ns)


def _cache_plugin() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "ansiballz_cache", execute.assets.plugins_dir() / "callback" / "ansiballz_cache.py")
    assert spec and spec.loader
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    return plugin


def test_a_running_command_keeps_its_payloads_when_another_drops_the_lasting_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible import constants

    plugin = _cache_plugin()
    monkeypatch.setattr(constants, "DEFAULT_LOCAL_TMP", str(tmp_path / "ansible-local"), raising=False)
    (tmp_path / "ansible-local").mkdir()
    parent = tmp_path / "lasting"
    lasting = plugin.load(parent)
    (lasting / "ansible.modules.ping-ZIP_DEFLATED-none").write_bytes(b"payload")

    lasting = plugin.load(parent)  # the next command starts: it takes the payload into its own folder ...
    shutil.rmtree(lasting)  # ... and another command (another checkout) drops the lasting folder meanwhile

    local = tmp_path / "ansible-local" / "ansiballz_cache"
    assert (local / "ansible.modules.ping-ZIP_DEFLATED-none").read_bytes() == b"payload"
    (local / "ansible.modules.stat-ZIP_DEFLATED-none").write_bytes(b"built by this command")
    plugin.save(lasting)  # nothing to save into, and no error
    lasting.mkdir()
    plugin.save(lasting)
    assert sorted(p.name for p in lasting.iterdir()) == ["ansible.modules.ping-ZIP_DEFLATED-none",
                                                         "ansible.modules.stat-ZIP_DEFLATED-none"]


def test_the_payload_folder_changes_with_any_module_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible import constants

    plugin = _cache_plugin()
    library = tmp_path / "roles" / "some_role" / "library"
    library.mkdir(parents=True)
    (library / "some_module.py").write_text("# one\n")
    monkeypatch.setattr(constants, "DEFAULT_ROLES_PATH", [str(tmp_path / "roles")])

    first = plugin.digest()
    assert plugin.digest() == first
    (library / "some_module.py").write_text("# two, longer\n")
    assert plugin.digest() != first
    (library / "other_module.py").write_text("")
    third = plugin.digest()
    assert third != first
    monkeypatch.setenv("ANSIBLE_MODULE_COMPRESSION", "ZIP_STORED")  # read at start-up: not part of this check
    monkeypatch.setattr(constants, "DEFAULT_MODULE_COMPRESSION", "ZIP_STORED")
    assert plugin.digest() != third


def test_the_payload_folder_changes_with_another_installed_collection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgraded ansible.posix (its synchronize module is built when it runs as a module) is no stale payload."""
    from ansible import constants

    plugin = _cache_plugin()
    manifest = tmp_path / "ansible_collections" / "some" / "collection" / "MANIFEST.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"collection_info": {"version": "1.0.0"}}')
    monkeypatch.setattr(constants, "COLLECTIONS_PATHS", [str(tmp_path)])
    first = plugin.digest()
    assert plugin.digest() == first
    manifest.write_text('{"collection_info": {"version": "1.10.0"}}')
    assert plugin.digest() != first


def test_the_stats_are_those_ansible_runner_reads_from_the_events_on_disk(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The outcome's per-host stats come from the stats event as it passes (ansible-runner's Runner.stats would
    parse every event file of the run again): the same dict, for a host that failed and one that did not."""
    import ansible_runner

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    playbook = tmp_path / "play.yml"
    playbook.write_text(PING_PLAY.replace("hosts: localhost", "hosts: all") +
                        "    - ansible.builtin.fail: {msg: one fails}\n      when: inventory_hostname == 'two'\n")
    hosts = {name: {"ansible_python_interpreter": sys.executable} for name in ("one", "two")}
    invocation = Invocation(playbook=playbook, inventory={"all": {"hosts": hosts}}, extravars={}, keep_artifacts=True)

    outcome = run_playbook(invocation, lambda _: True)

    assert outcome.rc == 2 and outcome.artifacts
    [artifacts] = Path(outcome.artifacts, "artifacts").iterdir()
    reference = ansible_runner.Runner(config=types.SimpleNamespace(artifact_dir=str(artifacts)))
    reference.status = "successful"
    assert outcome.stats == reference.stats
    assert outcome.stats["failures"] == {"two": 1} and outcome.stats["skipped"] == {"one": 1}


# -- the starter (mlcube_ssh_ansible.ansible_playbook): ansible-playbook's main(), less fixed cost ---------------

def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


OUTCOMES = {
    "ok": ("ansible.builtin.debug: {msg: fine}", {}),
    "failed": ("ansible.builtin.fail: {msg: failing on purpose}", {}),
    # A real connection attempt on loopback, to a port where nothing listens.
    "unreachable": ("ansible.builtin.ping:", {"ansible_connection": "ssh", "ansible_host": "127.0.0.1",
                                              "ansible_ssh_common_args": "-o BatchMode=yes -o ConnectTimeout=5"}),
    "bad play": ("ansible.builtin.no_such_module_here:", {}),
}


@pytest.mark.parametrize("kind", sorted(OUTCOMES))
def test_the_starter_ends_with_ansible_playbooks_exit_code_and_clean_up(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same exit code as plain ansible-playbook for each outcome, every event seen, and Ansible's local
    temporary folder removed (the early exit runs what Python runs at exit)."""
    import subprocess

    from mlcube_ssh_ansible import assets

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    local_temp = tmp_path / "ansible-local"
    local_temp.mkdir()
    monkeypatch.setenv("ANSIBLE_LOCAL_TEMP", str(local_temp))
    task, host_vars = OUTCOMES[kind]
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"- hosts: all\n  gather_facts: false\n  tasks:\n    - {task}\n")
    hosts = {"one": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "ansible_port": _closed_port(), **host_vars}}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(execute._unsafe_yaml({"all": {"hosts": hosts}}))
    plain = subprocess.run([str(Path(assets.ansible_bin_dir(), "ansible-playbook")), "-i", str(inventory),
                            str(playbook)], capture_output=True, text=True, check=False,
                           env={**os.environ, **execute.environment(False)})
    assert list(local_temp.iterdir()) == []
    events: list[dict[str, Any]] = []

    outcome = run_playbook(Invocation(playbook=playbook, inventory={"all": {"hosts": hosts}}, extravars={},
                                      host_key_checking=False), lambda event: events.append(event) or True)

    assert outcome.rc == plain.returncode == {"ok": 0, "failed": 2, "unreachable": 4, "bad play": 4}[kind], \
        plain.stdout + plain.stderr
    assert list(local_temp.iterdir()) == []
    if kind != "bad play":
        assert [event["event"] for event in events][-1] == "playbook_on_stats"
        assert outcome.stats["processed"] == {"one": 1}


def test_a_cancelled_starter_is_ended_as_ansible_playbook_was(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (the workflow's cancel event) ends the play under the starter as it did plain ansible-playbook."""
    import threading

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    playbook = tmp_path / "long.yml"
    playbook.write_text(PING_PLAY.replace("ansible.builtin.ping:", "ansible.builtin.pause: {seconds: 600}"))
    cancel = threading.Event()

    def handler(event: dict[str, Any]) -> bool:
        if event.get("event") == "runner_on_start":
            cancel.set()
        return True

    outcome = run_playbook(Invocation(playbook=playbook, inventory={"all": {"hosts": {"localhost": {}}}},
                                      extravars={}), handler, cancel)
    assert (outcome.status, outcome.rc) == ("canceled", 254)
    # No process of the play stays: the worker in the pause (a session of its own) ends with ansible-playbook.
    deadline = time.monotonic() + 20
    while _processes_of(playbook) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_of(playbook) == []


def _processes_of(playbook: Path) -> list[int]:
    """The processes whose command line names `playbook` (ansible-playbook and its forked workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(playbook).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_collection_metadata_is_parsed_once_per_text(tmp_path: Path) -> None:
    from ansible.utils.collection_loader import _collection_meta

    from mlcube_ssh_ansible import ansible_playbook

    parsed: list[Any] = []

    def parse(data: bytes | str, content_id: Any) -> Any:
        parsed.append(content_id)
        return _collection_meta._meta_yml_to_dict(data, content_id)

    folder = tmp_path / "meta"
    meta = ansible_playbook.cached(parse, folder, "collection-meta")
    builtin = (Path(_collection_meta.__file__).parents[2] / "config" / "ansible_builtin_runtime.yml").read_bytes()
    first = meta(builtin, ("ansible.builtin", "runtime.yml"))
    again = meta(builtin, ("ansible.builtin", "runtime.yml"))
    assert first == again == _collection_meta._meta_yml_to_dict(builtin, None) and len(parsed) == 1
    assert meta("requires_ansible: '>=2.15'\n", "a") == {"requires_ansible": ">=2.15"} and len(parsed) == 2
    assert meta("requires_ansible: '>=2.16'\n", "b") == {"requires_ansible": ">=2.16"} and len(parsed) == 3
    assert ansible_playbook.cached(parse, folder, "another parse")(builtin, "c") == first and len(parsed) == 4
    for kept in folder.glob("*.json"):
        kept.write_text("{not json")  # a damaged entry is parsed again
    assert meta(builtin, "d") == first and len(parsed) == 5
    assert ansible_playbook._exact(first) and not ansible_playbook._exact({1: "a"})
    assert not ansible_playbook._exact({"a": (1, 2)})


def test_ansibles_settings_are_the_same_from_the_cache(tmp_path: Path) -> None:
    """The definitions of Ansible's settings (config/base.yml), read before ansible.constants exists: the same
    parse from the cache as without it (a fresh process each, as every ansible-playbook is)."""
    import subprocess

    script = ("import json, sys; from mlcube_ssh_ansible import ansible_playbook as starter; "
              "sys.argv[1] == 'cached' and starter.install(); from ansible import constants; "
              "print(json.dumps([constants.config._base_defs, constants.DEFAULT_LOCAL_TMP.rsplit('/', 1)[0], "
              "constants.COLLECTIONS_PATHS], sort_keys=True, default=repr))")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, check=True, env=env,
                           cwd=tmp_path).stdout for how in ("plain", "cached", "cached")]
    assert runs[0] == runs[1] == runs[2] and "DEFAULT_LOCAL_TMP" in runs[0]
    assert len(list((tmp_path / "cache" / "mlcube-ssh-ansible" / "yaml-parses").glob("*.json"))) == 1


KEPT_PARSES_SCRIPT = r"""
import json, sys
from pathlib import Path
from mlcube_ssh_ansible import ansible_playbook as starter
from mlcube_ssh_ansible import assets
if sys.argv[1] == "kept":
    starter.install()
from ansible.module_utils._internal._datatag import AnsibleTagHelper
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import become_loader, connection_loader, shell_loader, init_plugin_loader
from ansible import constants as C

def tree(value):  # every node with its type and its tags (file, line, column, trust)
    tags = sorted(repr(tag) for tag in AnsibleTagHelper.tags(value))
    if isinstance(value, dict):
        return [type(value).__name__, tags, [[tree(k), tree(v)] for k, v in value.items()]]
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, tags, [tree(v) for v in value]]
    return [type(value).__name__, tags, repr(value)]

collection = assets.collection_dir()
files = sorted([*collection.glob("roles/*/*/*.yml"), *collection.glob("playbooks/*.yml"), Path(sys.argv[2])])
loaded = {str(path): tree(DataLoader().load_from_file(str(path), cache="none", trusted_as_template=True))
          for path in files}
init_plugin_loader([])
for loader in (connection_loader, shell_loader, become_loader):
    list(loader.all(class_only=True))
defs = {kind: {name: tree(C.config.get_configuration_definitions(kind, name))
               for name in sorted(C.config._plugins.get(kind, {}))} for kind in ("connection", "shell", "become")}
print(json.dumps([loaded, defs]))
"""


def test_the_kept_parses_are_ansibles_own_tags_and_all(tmp_path: Path) -> None:
    """The collection's playbooks and roles and the plugins' settings, parsed by Ansible into tagged values (file,
    line, column, trusted as a template): the same from the kept pickles as parsed anew, in fresh processes as every
    ansible-playbook is; a file outside the collection (an inventory, extra-vars) is never kept."""
    import subprocess

    outside = tmp_path / "host_vars.yml"
    outside.write_text("ansible_password: not-to-be-written\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", KEPT_PARSES_SCRIPT, how, str(outside)], capture_output=True,
                           text=True, check=True, env=env, cwd=tmp_path).stdout for how in ("plain", "kept", "kept")]
    kept = list((tmp_path / "cache" / "mlcube-ssh-ansible" / "tagged-parses").glob("*.pickle"))
    assert runs[0] == runs[1] == runs[2]
    assert "TrustedAsTemplate" in runs[0] and "line_num=" in runs[0] and '"ssh"' in runs[0]
    assert len(kept) > 20
    assert not any(b"not-to-be-written" in path.read_bytes() for path in kept)


def test_a_kept_parse_is_read_only_from_a_folder_and_file_no_one_else_can_write(tmp_path: Path) -> None:
    from mlcube_ssh_ansible import ansible_playbook

    folder = tmp_path / "tagged-parses"
    parses: list[str] = []

    def parse() -> dict[str, str]:
        parses.append("parsed")
        return {"parsed": "anew"}

    assert ansible_playbook.kept(parse, b"key", folder) == {"parsed": "anew"} and len(parses) == 1
    assert ansible_playbook.kept(parse, b"key", folder) == {"parsed": "anew"} and len(parses) == 1
    [pickled] = folder.glob("*.pickle")
    assert folder.stat().st_mode & 0o777 == 0o700
    for loose, mode in ((folder, 0o770), (pickled, 0o666)):
        original = loose.stat().st_mode & 0o777
        loose.chmod(mode)
        assert ansible_playbook.kept(parse, b"key", folder) == {"parsed": "anew"}
        loose.chmod(original)
    assert len(parses) == 3
    pickled.write_bytes(b"damaged")
    assert ansible_playbook.kept(parse, b"key", folder) == {"parsed": "anew"} and len(parses) == 4
    previous = os.umask(0o002)
    try:
        pickled.unlink()
        assert ansible_playbook.kept(parse, b"key", folder) == {"parsed": "anew"} and len(parses) == 5
        assert pickled.stat().st_mode & 0o777 == 0o600  # a group-writable umask would make it unreadable here
        assert ansible_playbook.kept(parse, b"key", folder) == {"parsed": "anew"} and len(parses) == 5
    finally:
        os.umask(previous)
