"""mlcube.ssh.synchronize is ansible.posix.synchronize with the module run inside the worker: the same
command line, result and failures, no module process (and its local temporary files), and the usual way
whenever a task asks for something a worker cannot give (here: `environment:`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from mlcube_ssh_ansible import assets

from .conftest import VENV_BIN

pytestmark = pytest.mark.integration

def adhoc(module: str, args: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`ansible localhost -m MODULE` on the local connection, with one-line JSON results."""
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": assets.ansible_collections_path(),
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
           "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.oneline", "ANSIBLE_LOCALHOST_WARNING": "False",
           "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run([str(VENV_BIN / "ansible"), "localhost", "-c", "local", "-m", module, "-a", args, *extra],
                          capture_output=True, text=True, env=env, check=False, timeout=120)


def play_locally(playbook: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`ansible-playbook PLAYBOOK` for localhost, with this collection and the venv's Python for modules."""
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": assets.ansible_collections_path(),
           "ANSIBLE_LOCALHOST_WARNING": "False"}
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), *extra,
                           "-e", f"ansible_python_interpreter={VENV_BIN / 'python'}"],
                          capture_output=True, text=True, env=env, check=False, timeout=timeout)


def result_of(run: subprocess.CompletedProcess[str]) -> dict[str, object]:
    [line] = [line for line in run.stdout.splitlines() if line.startswith("localhost | ")]
    return json.loads(line.split("=> ", 1)[1])


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_transfer_and_result_as_synchronize_without_a_module_process(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("a\n")
    (source / "sub" / "b.txt").write_text("b\n")
    results = {}
    for module in ("mlcube.ssh.synchronize", "ansible.posix.synchronize"):
        dest = tmp_path / module
        args = f"src={source}/ dest={dest}/ archive=true delete=true"
        checked = adhoc(module, args, "--check", "-vvv")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert not dest.exists()  # check mode: rsync --dry-run
        done = adhoc(module, args, "-vvv")
        assert done.returncode == 0, done.stdout + done.stderr
        again = adhoc(module, args)
        results[module] = (result_of(checked), result_of(done), result_of(again), done.stdout)
        assert tree(dest) == tree(source)

    ours, theirs = results["mlcube.ssh.synchronize"], results["ansible.posix.synchronize"]
    for index in range(3):
        mine, posix = ours[index], theirs[index]
        assert mine["changed"] == posix["changed"]
        assert str(mine["cmd"]).replace("mlcube.ssh.synchronize", "X") == \
            str(posix["cmd"]).replace("ansible.posix.synchronize", "X")
    assert [r["changed"] for r in ours[:3]] == [True, True, False]  # idempotent: the second run changes nothing
    assert "AnsiballZ_synchronize" in theirs[3]  # synchronize starts a module process ...
    assert "AnsiballZ_synchronize" not in ours[3] and "EXEC" not in ours[3]  # ... ours none, nor any command


def test_rsync_failure_is_the_task_failure(tmp_path: Path) -> None:
    failed = adhoc("mlcube.ssh.synchronize", f"src={tmp_path}/missing/ dest={tmp_path}/dest/")
    assert failed.returncode != 0
    result = result_of(failed)
    assert result["rc"] == 23 and "missing" in str(result["msg"]), result
    bad = adhoc("mlcube.ssh.synchronize", f"src={tmp_path}/ dest={tmp_path}/dest/ bogus=1")
    assert bad.returncode != 0 and "Unsupported parameters" in bad.stdout, bad.stdout


def test_a_task_environment_gets_the_usual_module_process(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_text("x\n")
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"""
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - mlcube.ssh.synchronize: {{src: "{tmp_path}/src/", dest: "{tmp_path}/dest/"}}
      environment: {{RSYNC_EXAMPLE: "1"}}
""")
    ran = play_locally(playbook, "-vvv")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "AnsiballZ_synchronize" in ran.stdout  # the module process gets the environment
    assert (tmp_path / "dest" / "x.txt").read_text() == "x\n"


def test_without_ansible_posix_the_task_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANSIBLE_COLLECTIONS_PATH", str(tmp_path / "no-collections"))
    monkeypatch.setenv("ANSIBLE_COLLECTIONS_SCAN_SYS_PATH", "False")  # hides the `ansible` package's copy
    missing = adhoc("mlcube.ssh.synchronize", f"src={tmp_path}/ dest={tmp_path}/dest/")
    assert missing.returncode != 0
    message = str(result_of(missing)["msg"])
    assert message == f"the Ansible collection ansible.posix is missing: {assets.POSIX_FIX}"  # the shim's words
    assert not (tmp_path / "dest").exists()


def test_two_transfers_into_a_folder_neither_found_both_arrive(tmp_path: Path) -> None:
    """`also`: run at the same time, both rsyncs make the missing destination (one loses with "File exists"),
    or one's destination is inside the other's (not there yet): the one that failed so goes again, alone.
    As the upload does it: the cube but its workspace's content, and the workspace, from the same folder."""
    cube = tmp_path / "cube"
    (cube / "workspace").mkdir(parents=True)
    (cube / "a.txt").write_text("a\n")
    (cube / "workspace" / "w.txt").write_text("w\n")
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"""
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - mlcube.ssh.synchronize:
        src: "{cube}/"
        dest: "{tmp_path}/same-{{{{ item }}}}/"
        rsync_opts: [--exclude=/workspace/*]
        also:
          src: "{cube}/"
          dest: "{tmp_path}/same-{{{{ item }}}}/"
          rsync_opts: [--include=/workspace/***, --exclude=*]
      loop: "{{{{ range(12) | list }}}}"
    - mlcube.ssh.synchronize:
        src: "{cube}/"
        dest: "{tmp_path}/inner-{{{{ item }}}}/"
        rsync_opts: [--exclude=/workspace/]
        also: {{src: "{cube}/workspace/", dest: "{tmp_path}/inner-{{{{ item }}}}/workspace/"}}
      loop: "{{{{ range(12) | list }}}}"
""")
    ran = play_locally(playbook, timeout=300)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    for item in range(12):
        assert tree(tmp_path / f"same-{item}") == tree(cube)
        assert tree(tmp_path / f"inner-{item}") == tree(cube)
