"""Lean calls (issue 12, the host's side of a run): the actions of mlcube.ssh.follow, launch, paths, venv and stamp
send the module's code to the host's Python without the AnsiballZ payload when they can, and answer exactly as the
module does; otherwise (here: no pipelining) the module runs as any other. On a real host over ssh, with plain
`ansible`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcube_ssh_ansible import assets
from tests.hosts import REPO_ROOT, SshHost, remote

from .conftest import VENV_BIN

pytestmark = pytest.mark.integration

# The keys of a follow answer that say the run's state and output (the action adds run_dir, cursor, ...).
LAUNCH = ("mlcube.ssh.launch", ("run_dir", "lock"))  # the module, and the options kept apart between the calls
STATE = ("stdout", "stderr", "stdout_lines", "stderr_lines", "offsets", "done", "died", "running", "rebooted",
         "rc", "started", "ended", "changed", "failed", "msg")


def adhoc(tmp_path: Path, host: SshHost, module: str, args: dict[str, Any], *extra: str) -> dict[str, Any]:
    """`ansible HOST -m MODULE -vvv` over ssh with one-line JSON results: the host's answer, with `AnsiballZ`
    true when a module payload was sent (its name shows in the verbose output), and all `output`."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"h": {
        "ansible_host": host.address, "ansible_port": host.port, "ansible_user": host.user.name,
        "ansible_ssh_private_key_file": str(host.user.identity_file),
        "ansible_ssh_common_args": f"-F /dev/null -o UserKnownHostsFile={host.known_hosts}",
        "ansible_python_interpreter": "/usr/bin/python3"}}}}))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": assets.ansible_collections_path(),
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.oneline",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOST_KEY_CHECKING": "True"}
    run = subprocess.run([str(VENV_BIN / "ansible"), "h", "-i", str(inventory), "-m", module, "-a", json.dumps(args),
                          "-vvv", *extra], capture_output=True, text=True, env=env, check=False, timeout=120)
    lines = [line for line in run.stdout.splitlines() if line.startswith("h | ")]
    assert len(lines) == 1, run.stdout + run.stderr
    return {**json.loads(lines[0].split("=> ", 1)[1]), "failed": lines[0].startswith("h | FAILED"),
            "AnsiballZ": f"AnsiballZ_{module.rsplit('.', 1)[-1]}" in run.stdout, "output": run.stdout + run.stderr}


def both(tmp_path: Path, host: SshHost, args: dict[str, Any], module: str = "mlcube.ssh.follow",
         apart: tuple[str, ...] = (), *extra: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The lean answer (pipelining, the shim's way) and the module's (pipelining off) to the same question; the
    options `apart` get "module" for "lean" in the second call (a launch's run folder and lock)."""
    lean = adhoc(tmp_path, host, module, args, *extra)
    by_module = adhoc(tmp_path, host, module, {k: v.replace("lean", "module") if k in apart else v
                                               for k, v in args.items()}, "-e", "ansible_ssh_pipelining=false", *extra)
    assert by_module["AnsiballZ"] and not lean["AnsiballZ"]  # the module ran in one, not in the other
    return lean, by_module


def bare(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what tells the two ways apart (the module's -vvv `invocation`, our `AnsiballZ`, `output`)."""
    return {key: value for key, value in answer.items() if key not in ("invocation", "AnsiballZ", "output")}


def state(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: answer[key] for key in STATE if key in answer}


def test_follow_answers_lean_as_the_module_does(tmp_path: Path, ssh_host: SshHost) -> None:
    run_dir = f"/tmp/lean-follow-{ssh_host.user.name}"
    remote(ssh_host, "sh", "-c", f"rm -rf {run_dir} && mkdir -p {run_dir} && printf 'one\\ntwo\\npart' > "
           f"{run_dir}/stdout.log && printf 'warn\\n' > {run_dir}/stderr.log && "
           f"echo 2026-12-04T10:00:00.000+00:00 > {run_dir}/started", check=True)
    # Still going (no exit code): complete lines only, read from the offsets given; `~` is the host's home.
    question = {"run_dir": run_dir, "offsets": {"stdout": 4}, "wait": 0, "cursor": "c1"}
    lean, module = both(tmp_path, ssh_host, question)
    assert state(lean) == state(module)
    assert lean["stdout"] == "two\n" and lean["offsets"] == {"stdout": 8, "stderr": 5} and not lean["done"]
    assert lean["cursor"] == "c1" and lean["run_dir"] == run_dir and lean["mlcube_ssh_result"] == "run"

    # Ended: everything, the exit code, and done.
    remote(ssh_host, "sh", "-c", f"echo 3 > {run_dir}/rc && echo 2026-12-04T10:00:01.000+00:00 > {run_dir}/ended",
           check=True)
    lean, module = both(tmp_path, ssh_host, {**question, "offsets": {"stdout": 8, "stderr": 5}})
    assert state(lean) == state(module)
    assert lean["stdout"] == "part" and lean["rc"] == 3 and lean["done"] and lean["ended"].startswith("2026-12-04")

    # The run folder given with `~` (the module's path type expands it on the host).
    remote(ssh_host, "sh", "-c", f"rm -rf ~/lean-run && cp -r {run_dir} ~/lean-run", check=True)
    lean, module = both(tmp_path, ssh_host, {"run_dir": "~/lean-run", "wait": 0, "rewind": True})
    assert state(lean) == state(module) and lean["stdout"] == "one\ntwo\npart" and lean["rc"] == 3


def test_follow_fails_lean_as_the_module_does(tmp_path: Path, ssh_host: SshHost) -> None:
    gone = f"/tmp/lean-follow-none-{ssh_host.user.name}"
    lean, module = both(tmp_path, ssh_host, {"run_dir": gone, "wait": 0})
    assert lean["failed"] and lean["msg"] == module["msg"] == f"no such run on this host: {gone}", (lean, module)
    # Options are checked as the module checks them (here on the controller, with the module's own spec).
    lean, module = both(tmp_path, ssh_host, {"run_dir": gone, "wait": "soon"})
    assert lean["failed"] and module["failed"] and "wait" in lean["msg"] and "float" in lean["msg"], lean


def test_launch_answers_lean_as_the_module_does(tmp_path: Path, ssh_host: SshHost) -> None:
    base = f"/tmp/launches-{ssh_host.user.name}"
    remote(ssh_host, "sh", "-c", f"rm -rf {base} && mkdir -p {base}", check=True)
    question = {"argv": ["/bin/sh", "-c", "echo out $TOKEN; echo err >&2; exit 3"], "chdir": "~",
                "run_dir": f"{base}/lean-run", "lock": f"{base}/lean.lock", "secrets": {"TOKEN": "s3cr3t"},
                "wait": 60, "holder": "test"}
    lean, module = both(tmp_path, ssh_host, question, *LAUNCH)
    same = ("changed", "done", "rc", "stdout", "stderr", "offsets", "queued", "devices", "shared", "died", "running",
            "mlcube_ssh_result", "failed", "stdout_lines")
    assert {k: lean.get(k) for k in same} == {k: module.get(k) for k in same}, (lean, module)
    # The task ended within the wait, its exit code is the answer's, the secret reached it and is masked.
    assert lean["done"] and lean["rc"] == 3 and lean["stdout"] == "out ********\n" and lean["stderr"] == "err\n"
    assert lean["run_dir"] == f"{base}/lean-run" and isinstance(lean["pid"], int)
    kept = remote(ssh_host, "cat", f"{base}/lean-run/rc", f"{base}/lean.lock", check=True).stdout
    assert kept.startswith("3{") and '"holder": "test"' in kept

    # A refusal: the same message, with the secret's value hidden (no_log) either way.
    missing = {**question, "argv": [f"{base}/no-such-s3cr3t"], "wait": 0}
    lean, module = both(tmp_path, ssh_host, missing, *LAUNCH)
    assert lean["failed"] and module["failed"]
    assert lean["msg"] == module["msg"] == f"{base}/no-such-******** does not exist on this host", (lean, module)
    # A second launch into a busy workspace is refused by the lock, lean as by the module.
    remote(ssh_host, "sh", "-c", f"rm -rf {base}/lean-run {base}/module-run", check=True)
    long = {**question, "argv": ["/bin/sleep", "30"], "wait": 0, "secrets": {}}
    first, _ = both(tmp_path, ssh_host, long, *LAUNCH)
    assert first["changed"] and not first["done"]
    lean, module = both(tmp_path, ssh_host, {**long, "run_dir": f"{base}/lean-second"}, *LAUNCH)
    assert lean["failed"] and module["failed"] and lean["msg"].startswith("busy: run lean-run of this cube"), lean
    assert module["msg"].startswith("busy: run module-run of this cube"), module
    remote(ssh_host, "sh", "-c", f"kill -TERM $(cat {base}/lean-run/pid {base}/module-run/pid)")


def test_stamp_answers_lean_as_the_module_does_also_in_check_mode(tmp_path: Path, ssh_host: SshHost) -> None:
    base = f"/tmp/stamps-{ssh_host.user.name}"
    remote(ssh_host, "sh", "-c", f"rm -rf {base} && mkdir -p {base}/tree && echo x > {base}/tree/a", check=True)
    question = {"path": f"{base}/tree", "stamp": f"{base}/lean.stamp", "state": "present", "extra": "e"}
    checked, checked_module = both(tmp_path, ssh_host, question, "mlcube.ssh.stamp", ("stamp",), "--check")
    assert checked["changed"] and bare(checked) == bare(checked_module), (checked, checked_module)
    assert remote(ssh_host, "ls", base, check=True).stdout.split() == ["tree"]  # check mode wrote nothing
    lean, module = both(tmp_path, ssh_host, question, "mlcube.ssh.stamp", ("stamp",))
    assert lean["changed"] and len(lean["digest"]) == 64 and lean["digest"] == module["digest"] == checked["digest"]
    again, again_module = both(tmp_path, ssh_host, question, "mlcube.ssh.stamp", ("stamp",))
    assert not again["changed"] and again["matched"] and not again_module["changed"] and again_module["matched"]
    kept = remote(ssh_host, "cat", f"{base}/lean.stamp", f"{base}/module.stamp", check=True).stdout.split()
    assert kept == [lean["digest"]] * 2


def test_paths_and_venv_answer_lean_as_the_modules_do(tmp_path: Path, ssh_host: SshHost) -> None:
    # paths: the same answer, and the same warning about a folder that is not private (the home folder, 0755).
    # The host is shared by other tests (one per worker): its home folder's mode is put back afterwards.
    home_mode = remote(ssh_host, "stat", "-c", "%a", ".", check=True).stdout.strip()
    remote(ssh_host, "chmod", "0755", ".", check=True)
    try:
        question = {"remote_root": "~", "remote_name": "lean-cube", "interpreter_type": "system",
                    "python": "/usr/bin/python3", "venv_location": "~/.venvs", "venv_name": "v", "create": True}
        made = "rm -rf ~/lean-cube ~/.mlcube-ssh-ansible"
        remote(ssh_host, "sh", "-c", made, check=True)
        lean = adhoc(tmp_path, ssh_host, "mlcube.ssh.paths", question)
        remote(ssh_host, "sh", "-c", made, check=True)  # the module's call creates the same folders again
        module = adhoc(tmp_path, ssh_host, "mlcube.ssh.paths", question, "-e", "ansible_ssh_pipelining=false")
        assert module["AnsiballZ"] and not lean["AnsiballZ"]
        assert bare(lean) == bare(module) and lean["changed"] and len(lean["made_private"]) == 3, (lean, module)
        assert lean["remote_dir"] == f"{ssh_host.user.home}/lean-cube" and lean["env_python"] == "/usr/bin/python3"
        assert "is not private" in lean["output"] and "is not private" in module["output"]  # Ansible's warning
    finally:
        remote(ssh_host, "chmod", home_mode, ".", check=True)
    # venv: the probe of a system Python (it runs the check script with that Python on the host).
    check = (REPO_ROOT / "roles" / "mlcube_ssh_python_env" / "files" / "check_requirements.py").read_text()
    probe = {"interpreter_type": "system", "python": "/usr/bin/python3", "venv_dir": "~/.venvs/v",
             "requirements": ["no-such-package-h12==1.0"], "check_script": check,
             "check_input": json.dumps({"requirements": ["no-such-package-h12==1.0"], "overrides": []}),
             "probe": True}
    lean, module = both(tmp_path, ssh_host, probe, "mlcube.ssh.venv")
    assert bare(lean) == bare(module), (lean, module)
    assert lean["missing"] == ["no-such-package-h12==1.0"] and lean["env_python"] == "/usr/bin/python3", lean


@pytest.mark.parametrize("value", ["false", "no"])
def test_lean_calls_off_runs_the_module_as_usual(tmp_path: Path, ssh_host: SshHost, value: str) -> None:
    """`mlcube_ssh_lean_calls: false` (per host or for the play): the module's payload goes, with pipelining on."""
    run_dir = f"/tmp/lean-off-{ssh_host.user.name}"
    remote(ssh_host, "sh", "-c", f"rm -rf {run_dir} && mkdir -p {run_dir} && printf 'one\\n' > {run_dir}/stdout.log"
           f" && echo 0 > {run_dir}/rc", check=True)
    question = {"run_dir": run_dir, "wait": 0}
    lean = adhoc(tmp_path, ssh_host, "mlcube.ssh.follow", question)
    off = adhoc(tmp_path, ssh_host, "mlcube.ssh.follow", question, "-e", f"mlcube_ssh_lean_calls={value}")
    # With pipelining no payload file is put on the host: Ansible names the module file it builds the payload from.
    built = "Using module file"
    assert built not in lean["output"] and built in off["output"], (lean["output"][-2000:], off["output"][-2000:])
    assert state(lean) == state(off) and off["stdout"] == "one\n" and off["rc"] == 0 and off["done"]


# Waits (on the host) until the given files and folders last changed more than 2.5 s ago: mlcube.ssh.venv does not
# record a check that started within 2 s of a change to what its answer depends on (SETTLED_NS in the module).
SETTLE = """
import os, sys, time
for _ in range(300):
    if all(time.time() - max(os.lstat(p).st_mtime, os.lstat(p).st_ctime) > 2.5 for p in sys.argv[1:]):
        break
    time.sleep(0.1)
"""


def test_venv_answers_from_its_record_until_the_environment_changes(tmp_path: Path, ssh_host: SshHost) -> None:
    """A check that found everything is recorded in the virtualenv; the next call answers from the record without
    starting the environment's Python, lean as by the module, until the check's input or the packages change."""
    venv = f"{ssh_host.user.home}/.venvs/recorded"
    record = f"{venv}/.mlcube-ssh-ansible-check.json"
    remote(ssh_host, "sh", "-c", f"rm -rf {venv} && /usr/bin/python3 -m venv {venv}", check=True)
    site = remote(ssh_host, f"{venv}/bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                  check=True).stdout.strip()
    # A package as pip installs it, without its files: its metadata, and the RECORD that `pip uninstall` reads.
    info = f"{site}/fakepkg_h12-1.0.dist-info"
    remote(ssh_host, "sh", "-c", f"mkdir {info} && printf 'Metadata-Version: 2.1\\nName: fakepkg-h12\\nVersion: 1.0\\n'"
           f" > {info}/METADATA && printf"
           f" 'fakepkg_h12-1.0.dist-info/METADATA,,\\nfakepkg_h12-1.0.dist-info/RECORD,,\\n' > {info}/RECORD",
           check=True)
    remote(ssh_host, "/usr/bin/python3", "-c", SETTLE, f"{venv}/pyvenv.cfg", f"{venv}/bin/python", site, check=True)
    check = (REPO_ROOT / "roles" / "mlcube_ssh_python_env" / "files" / "check_requirements.py").read_text()

    def question(*requirements: str) -> dict[str, Any]:
        return {"interpreter_type": "virtualenv", "python": "/usr/bin/python3", "venv_dir": "~/.venvs/recorded",
                "requirements": list(requirements), "check_script": check,
                "check_input": json.dumps({"requirements": list(requirements), "overrides": []})}

    first = adhoc(tmp_path, ssh_host, "mlcube.ssh.venv", question("fakepkg-h12==1.0"))
    assert not first["failed"] and not first["AnsiballZ"], first
    assert first["checked"] == "python" and first["missing"] == [] and first["dependencies"] == [] and first["pip"]
    assert remote(ssh_host, "test", "-f", record).returncode == 0
    # (1, 4) Asked again, lean and by the module: the record answers, as the python did.
    lean, module = both(tmp_path, ssh_host, question("fakepkg-h12==1.0"), "mlcube.ssh.venv")
    assert lean["checked"] == module["checked"] == "record", (lean, module)
    assert bare(lean) == bare(module) == {**bare(first), "checked": "record"}, (lean, module, first)

    # (3) Another requirement, so another check input: the python runs (and what it finds is recorded instead).
    other = adhoc(tmp_path, ssh_host, "mlcube.ssh.venv", question("fakepkg-h12==1.0", "pip>=1"))
    assert other["checked"] == "python" and other["missing"] == [] and not other["failed"], other
    assert adhoc(tmp_path, ssh_host, "mlcube.ssh.venv", question("fakepkg-h12==1.0", "pip>=1"))["checked"] == "record"

    # (2) pip uninstalls the package: the python runs and finds it missing, lean as by the module; no record is
    # kept of an environment that lacks something.
    remote(ssh_host, f"{venv}/bin/python", "-m", "pip", "uninstall", "--yes", "--disable-pip-version-check",
           "fakepkg-h12", check=True)
    assert remote(ssh_host, "test", "-e", info).returncode != 0
    lean, module = both(tmp_path, ssh_host, question("fakepkg-h12==1.0", "pip>=1"), "mlcube.ssh.venv")
    assert lean["checked"] == module["checked"] == "python", (lean, module)
    assert lean["missing"] == module["missing"] == ["fakepkg-h12==1.0"] and bare(lean) == bare(module)
    assert remote(ssh_host, "test", "-e", record).returncode != 0
