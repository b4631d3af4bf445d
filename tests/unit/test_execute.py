"""ansible-runner's kept private folders: what helps a diagnosis, never the environment, and only a few.

Real ansible-runner and ansible-playbook, on a local play (no host needed)."""

from __future__ import annotations

import shutil
import sys
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
