"""Reliability on a real host through the real `mlcube` CLI: host keys, no shell injection, faults,
Ctrl-C, concurrent runs of one cube, and bad settings refused before any host is touched."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from mlcube_ssh_ansible.render import remote_name, ssh_args
from tests.hosts import Sshd, SshHost, deep_merge, example_cube, free_port, mlcube_settings, remote

from .conftest import MLCUBE, MlcubeCli, platform_settings, run_mlcube, user_env

pytestmark = pytest.mark.integration

SHIM = Path(__file__).with_name("fakebin_ssh")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
INSECURE_OPTIONS = re.compile(r"stricthostkeychecking[= ]+(no|off)\b|userknownhostsfile[= ]+/dev/null",
                              re.IGNORECASE)


# ----------------------------------------------------------------------------------------------- helpers


def both(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def cube_args(cube: Path) -> list[str]:
    return [f"--mlcube={cube}", "--platform=ssh-ansible"]


def remote_dir_of(host: SshHost, cube: Path) -> str:
    return f"{host.user.home}/mlcube/{remote_name(str(cube))}"


class Spawned:
    """A background `mlcube` process whose combined output is read line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([str(MLCUBE), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, env=user_env(),
                                        start_new_session=True)  # our own group: cleanup can kill it all
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        """True once a line contains `text`; False on timeout or when the output ended without it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    return False
                self._changed.wait(min(remaining, 0.5))
        return True

    def finish(self, timeout: float) -> int:
        rc = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return rc

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def leftovers(host: SshHost, remote_dir: str) -> tuple[dict[int, str], list[str]]:
    """What still runs for one cube on the (same-machine) host: the user's processes whose working folder is
    the cube's remote folder or below it (pid -> command line), and running containers mounting below it."""
    below = remote_dir.rstrip("/") + "/"
    processes: dict[int, str] = {}
    listed = subprocess.run(["pgrep", "-u", host.user.name], capture_output=True, text=True, check=False)
    for pid in map(int, listed.stdout.split()):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if cwd == remote_dir or cwd.startswith(below):
            processes[pid] = cmdline.strip()
    containers: list[str] = []
    ids = subprocess.run(["docker", "ps", "-q", "--no-trunc"], capture_output=True, text=True, check=True).stdout
    if ids.split():
        inspected = subprocess.run(["docker", "inspect", *ids.split()], capture_output=True, text=True, check=False)
        for item in json.loads(inspected.stdout or "[]"):
            if any((mount.get("Source") or "").startswith(below) for mount in item.get("Mounts") or []):
                containers.append(f"{item['Id'][:12]} {item.get('Config', {}).get('Cmd')}")
    return processes, containers


def kill_leftovers(host: SshHost, remote_dir: str) -> None:
    """Cleanup after a failed test, so a remote task does not outlive it."""
    processes, containers = leftovers(host, remote_dir)
    for pid in processes:
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(pid, signal.SIGKILL)
    for container in containers:
        subprocess.run(["docker", "kill", container.split()[0]], capture_output=True, check=False)


@pytest.fixture
def background(ssh_host: SshHost) -> Iterator[list[tuple[Spawned, str]]]:
    """Register (process, remote dir) pairs: whatever a test leaves running is killed, locally and remotely."""
    started: list[tuple[Spawned, str]] = []
    yield started
    for spawned, remote_dir in started:
        spawned.kill()
        kill_leftovers(ssh_host, remote_dir)


def configured(tmp_path: Path, ssh_host: SshHost, settings_file: Any, mlcube_cli: MlcubeCli,
               **overrides: Any) -> Path:
    cube = example_cube(tmp_path)
    settings_file(ssh_host, **overrides)
    done = mlcube_cli("configure", *cube_args(cube))
    assert done.returncode == 0, both(done)
    return cube


def ssh_calls(shim_dir: Path) -> list[list[str]]:
    """Every argv the ssh shim recorded."""
    calls = []
    for record in sorted((shim_dir / "ssh-calls").glob("*")):
        calls.append(record.read_bytes().decode(errors="surrogateescape").split("\0")[:-1])
    return calls


def shim_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "fakebin"
    folder.mkdir()
    (folder / "ssh").symlink_to(SHIM)
    return folder


def is_rsync(argv: list[str]) -> bool:
    return "rsync --server" in " ".join(argv)  # rsync passes its remote command as separate arguments


def close_master(settings_path: Path, host: SshHost) -> None:
    """End the ssh master (ControlPersist) that an earlier command left for these settings."""
    options = ssh_args(platform_settings(settings_path))
    subprocess.run(["ssh", *options, "-p", str(host.port), "-l", host.user.name, host.address, "-O", "exit"],
                   capture_output=True, check=False, timeout=30)


# --------------------------------------------------------------------------------------------- 1. host keys


@pytest.mark.parametrize("known", ["empty", "other host's key"])
def test_strict_refuses_a_host_whose_key_is_not_known(tmp_path: Path, ssh_host: SshHost, sshd: Sshd,
                                                      settings_file: Any, mlcube_cli: MlcubeCli,
                                                      known: str) -> None:
    cube = example_cube(tmp_path)
    known_hosts = tmp_path / "known_hosts"
    # The other host is another address of the same sshd: the very same key, under another name only.
    known_hosts.write_text("" if known == "empty" else
                           f"[127.0.0.3]:{ssh_host.port} ssh-ed25519 {sshd.host_public_key}\n")
    settings_file(ssh_host, known_hosts=str(known_hosts))  # host_key_checking: strict is the default

    configured = mlcube_cli("configure", *cube_args(cube), timeout=120)

    assert configured.returncode != 0
    output = both(configured)
    assert re.search(r"host key is not known|host key verification failed", output, re.IGNORECASE), output
    assert any(ssh_host.address in line and "host key" in line.lower() for line in output.splitlines()), output
    assert "Traceback" not in output
    assert known_hosts.read_text() == ("" if known == "empty" else
                                       f"[127.0.0.3]:{ssh_host.port} ssh-ed25519 {sshd.host_public_key}\n")


def test_accept_new_records_a_new_host_and_refuses_a_changed_key(tmp_path: Path, ssh_host: SshHost, sshd: Sshd,
                                                                 settings_file: Any) -> None:
    cube = example_cube(tmp_path)
    known_hosts = tmp_path / "known_hosts_new"
    assert not known_hosts.exists()
    settings_path = settings_file(ssh_host, host_key_checking="accept-new", known_hosts=str(known_hosts))
    shim = shim_dir(tmp_path)

    configured = run_mlcube("configure", *cube_args(cube), path_prefix=shim)

    assert configured.returncode == 0, both(configured)
    name = f"[{ssh_host.address}]:{ssh_host.port}"
    found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(known_hosts)], capture_output=True, text=True)
    assert found.returncode == 0 and sshd.host_public_key in found.stdout, known_hosts.read_text()
    calls = ssh_calls(shim)
    assert calls and not [argv for argv in calls if INSECURE_OPTIONS.search(" ".join(argv))]

    # Someone else's key under the host's name, e.g. after a man-in-the-middle took over the address.
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    wrong_line = f"{name} {' '.join(wrong.with_suffix('.pub').read_text().split()[:2])}\n"
    known_hosts.write_text(wrong_line)
    # The first command's ssh master stays up for a minute (ControlPersist), and a master already verified
    # the key when it connected: end it, so that the next command really checks the key again.
    close_master(settings_path, ssh_host)

    # `run`, as a configure with nothing changed no longer contacts the host (skip_unchanged).
    refused = run_mlcube("run", *cube_args(cube), "--task=hello", timeout=120)

    assert refused.returncode != 0, both(refused)
    output = both(refused)
    assert re.search(r"host key is not known or has changed|host identification has changed", output,
                     re.IGNORECASE), output
    assert any(ssh_host.address in line and "host key" in line.lower() for line in output.splitlines()), output
    assert known_hosts.read_text() == wrong_line  # accept-new never replaces a key it already has
    assert not (cube / "workspace" / "greeting.txt").exists()


def test_no_ssh_call_disables_host_key_checking_unless_off(tmp_path: Path, ssh_host: SshHost,
                                                           settings_file: Any) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host)  # strict, with the host's key in known_hosts
    shim = shim_dir(tmp_path)

    configured = run_mlcube("configure", *cube_args(cube), path_prefix=shim)
    assert configured.returncode == 0, both(configured)
    ran = run_mlcube("run", *cube_args(cube), "--task=hello", path_prefix=shim)
    assert ran.returncode == 0, both(ran)

    calls = ssh_calls(shim)
    rsync_calls = [argv for argv in calls if is_rsync(argv)]
    ansible_calls = [argv for argv in calls if not is_rsync(argv)]
    # The upload (the host's rsync receives) and the fetch (it sends) went through the shim too.
    assert any("--sender" not in argv for argv in rsync_calls), rsync_calls
    assert any("--sender" in argv for argv in rsync_calls), rsync_calls
    assert ansible_calls, calls
    assert [argv for argv in calls if INSECURE_OPTIONS.search(" ".join(argv))] == []
    assert any("StrictHostKeyChecking=yes" in argv for argv in ansible_calls), ansible_calls[0]

    # With host_key_checking: off the options are there, for Ansible's connection and rsync alike.
    shutil.rmtree(shim / "ssh-calls")
    settings_file(ssh_host, host_key_checking="off")
    configured = run_mlcube("configure", *cube_args(cube), path_prefix=shim)
    assert configured.returncode == 0, both(configured)
    assert "host_key_checking is off" in configured.stderr
    calls = ssh_calls(shim)
    rsync_calls = [argv for argv in calls if is_rsync(argv)]
    ansible_calls = [argv for argv in calls if not is_rsync(argv)]
    assert rsync_calls and ansible_calls, calls
    for argv in calls:
        joined = " ".join(argv)
        assert re.search(r"stricthostkeychecking[= ]+no\b", joined, re.IGNORECASE), argv
        assert re.search(r"userknownhostsfile[= ]+/dev/null", joined, re.IGNORECASE), argv


# ------------------------------------------------------------------------------------------ 2. no injection


def pwned(token: str, host: SshHost) -> list[str]:
    """Files named PWNED_<token>* anywhere a payload could have written them, locally and on the host."""
    local = subprocess.run(["find", "/tmp", "/root", "/home", str(Path.cwd()), "-xdev", "-name", f"PWNED_{token}*"],
                           capture_output=True, text=True, check=False).stdout.split("\n")
    on_host = remote(host, "find", str(host.user.home), "/tmp", "-name", f"PWNED_{token}*").stdout.split("\n")
    return sorted({path for path in local + on_host if path})


def hostile_name(token: str) -> str:
    """A folder name full of shell syntax; each payload would create a PWNED_<token>_* file somewhere."""
    return (f"my cube 'q' \"dq\" ;a&b $(touch PWNED_{token}_cwd) $(cd;touch PWNED_{token}_home) "
            f"$(cd;cd ..;cd ..;cd tmp;touch PWNED_{token}_tmp) `touch PWNED_{token}_tick`;touch PWNED_{token}_semi")


def test_hostile_cube_and_workspace_paths_stay_data(tmp_path: Path, ssh_host: SshHost, settings_file: Any,
                                                     mlcube_cli: MlcubeCli) -> None:
    token = uuid.uuid4().hex[:8]
    parent = tmp_path / "parent dir"
    parent.mkdir()
    cube = example_cube(tmp_path, "plain").rename(parent / hostile_name(token))
    workspace = tmp_path / f"my work space $(touch PWNED_{token}_ws) `touch PWNED_{token}_wst`"
    shutil.copytree(cube / "workspace", workspace)
    (workspace / "name.txt").write_text("Space")
    settings_file(ssh_host)

    configured = mlcube_cli("configure", *cube_args(cube))
    assert configured.returncode == 0, both(configured)
    ran = mlcube_cli("run", *cube_args(cube), "--task=hello", f"--workspace={workspace}")
    assert ran.returncode == 0, both(ran)

    assert (workspace / "greeting.txt").read_text() == "Hello, Space!\n"
    assert not (cube / "workspace" / "greeting.txt").exists()
    name = remote_name(str(cube))
    assert SAFE_NAME.match(name), name
    listed = remote(ssh_host, "ls", "-1", f"{ssh_host.user.home}/mlcube", check=True).stdout.split("\n")
    assert name in listed
    assert "mlcube.yaml" in remote(ssh_host, "ls", f"{ssh_host.user.home}/mlcube/{name}", check=True).stdout
    assert pwned(token, ssh_host) == []


def test_template_syntax_in_cube_path_stays_data(tmp_path: Path, ssh_host: SshHost, settings_file: Any,
                                                  mlcube_cli: MlcubeCli) -> None:
    """Ansible templates variables recursively: a path is data, never a Jinja expression to evaluate."""
    token = uuid.uuid4().hex[:8]
    cube = example_cube(tmp_path, "plain").rename(
        tmp_path / f"cube {{{{ lookup('pipe', 'cd;touch PWNED_{token}_jinja') }}}} {{{{ 6 * 7 }}}}")
    settings_file(ssh_host)

    configured = mlcube_cli("configure", *cube_args(cube))
    assert configured.returncode == 0, both(configured)
    ran = mlcube_cli("run", *cube_args(cube), "--task=hello")
    assert ran.returncode == 0, both(ran)

    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, World!\n"
    assert not list(tmp_path.glob("cube * 42*"))
    assert pwned(token, ssh_host) == []


# ----------------------------------------------------------------------------------------------- 3. faults


def test_closed_port_fails_fast_naming_the_host(tmp_path: Path, ssh_host: SshHost, settings_file: Any,
                                                mlcube_cli: MlcubeCli) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host, port=free_port(ssh_host.address), connect_timeout=5)

    configured = mlcube_cli("configure", *cube_args(cube), timeout=120)  # a hang fails here, not a clock

    assert configured.returncode != 0
    output = both(configured)
    assert any(ssh_host.address in line and re.search(r"unreachable|connection refused", line, re.IGNORECASE)
               for line in output.splitlines()), output
    assert "Traceback" not in output


def test_fetch_never_deletes_local_only_files(tmp_path: Path, ssh_host: SshHost, settings_file: Any,
                                              mlcube_cli: MlcubeCli) -> None:
    cube = configured(tmp_path, ssh_host, settings_file, mlcube_cli)
    workspace = cube / "workspace"
    mine = {
        workspace / "fail_output" / "nested" / "deeper" / "local-only.txt": "nested in an output folder",
        workspace / "fail_output" / "local-only.txt": "next to an output",
        workspace / "local-folder" / "sub" / "notes.txt": "a folder the host never had",
    }
    for path, text in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    for _ in range(2):  # the second time the host's workspace already has fail_output/ from the first run
        ran = mlcube_cli("run", *cube_args(cube), "--task=fail")
        assert ran.returncode == 3, both(ran)
        assert (workspace / "fail_output" / "partial.txt").read_text().startswith("partial result")
        for path, text in mine.items():
            assert path.read_text() == text, path


# -------------------------------------------------------------------------------------------- 4. interrupts


def test_ctrl_c_stops_the_remote_task_and_its_container(tmp_path: Path, ssh_host: SshHost, settings_file: Any,
                                                        mlcube_cli: MlcubeCli, background: list) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it. (SIGINT to the mlcube process alone:
    test_hardening.py's Ctrl-C tests, which send it twice, and check the same outcome.)"""
    cube = configured(tmp_path, ssh_host, settings_file, mlcube_cli)
    (cube / "workspace" / "seconds.txt").write_text("60")
    remote_dir = remote_dir_of(ssh_host, cube)
    run = Spawned("run", *cube_args(cube), "--task=sleep")
    background.append((run, remote_dir))
    assert run.wait_for("sleeping 60 s", timeout=120), run.output
    processes, containers = leftovers(ssh_host, remote_dir)
    assert processes and containers, (processes, containers)  # what the interrupt must stop is really there

    os.killpg(run.process.pid, signal.SIGINT)  # mlcube, ansible-playbook, its ssh: the terminal's way
    rc = run.finish(timeout=120)

    output = run.output
    assert rc == 130, output
    [record] = (cube / "workspace" / ".mlcube-ssh-ansible" / "runs").glob("*.json")
    run_id = json.loads(record.read_text())["run_id"]
    # Said once when Ctrl-C arrives (stopping takes a few seconds), and once as the command's one-line outcome.
    notices = [line for line in output.splitlines() if line.startswith("interrupted")]
    outcomes = [line for line in output.splitlines() if f"run {run_id} interrupted" in line]
    assert len(notices) == 1 and run_id in notices[0], output
    assert len(outcomes) == 1 and "stopped" in outcomes[0], output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert leftovers(ssh_host, remote_dir) == ({}, [])
    assert not (cube / "workspace" / "slept.txt").exists()


# ------------------------------------------------------------------------------------------- 5. concurrency


def test_second_run_of_a_running_cube_is_refused_as_busy(tmp_path: Path, ssh_host: SshHost, settings_file: Any,
                                                         mlcube_cli: MlcubeCli, background: list) -> None:
    cube = configured(tmp_path, ssh_host, settings_file, mlcube_cli)
    (cube / "workspace" / "seconds.txt").write_text("20")
    first = Spawned("run", *cube_args(cube), "--task=sleep")
    background.append((first, remote_dir_of(ssh_host, cube)))
    assert first.wait_for("sleeping 20 s", timeout=120), first.output
    [record] = (cube / "workspace" / ".mlcube-ssh-ansible" / "runs").glob("*.json")
    first_run_id = json.loads(record.read_text())["run_id"]

    second = mlcube_cli("run", *cube_args(cube), "--task=sleep", timeout=120)

    assert second.returncode != 0, both(second)
    busy = [line for line in both(second).splitlines() if "busy" in line]
    assert busy, both(second)
    assert any(first_run_id in line and f"pid {first.process.pid}" in line for line in busy), busy
    assert "Traceback" not in both(second)

    assert first.finish(timeout=120) == 0, first.output
    assert "slept 20 s" in first.output
    assert (cube / "workspace" / "slept.txt").read_text() == "slept 20 s\n"


# ------------------------------------------------------------------------------------------- 6. bad input


NOTHING_LISTENS = "127.0.0.11"  # a loopback address the test sshd does not listen on

BAD_SETTINGS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown key", {"colour": "blue"}, "colour"),
    ("wrong type", {"platform": ["docker"]}, "platform"),
    ("unknown interpreter type", {"interpreter": {"type": "conda"}}, "interpreter.type"),
    ("non-numeric port", {"port": "twenty-two"}, "port"),
    ("out-of-range port", {"port": 70000}, "port"),
    ("missing identity file", {"authentication": {"identity_file": "/nonexistent/id_ed25519"}},
     "authentication.identity_file"),
    # A typo in the user part of ~user/...: no such user, so no home folder to expand.
    ("identity file under an unknown user's home", {"authentication": {"identity_file": "~nosuchuser/.ssh/id"}},
     "authentication.identity_file"),
    ("relative remote_root", {"remote_root": "mlcube"}, "remote_root"),
    ("remote_root with ..", {"remote_root": "~/mlcube/../../etc"}, "remote_root"),
    ("empty requirements with virtualenv", {"interpreter": {"type": "virtualenv", "requirements": ""}},
     "interpreter.requirements"),
    # `host: ''` as docs/configuration.md shows it for inventories (it silences a warning of MLCube's).
    ("inventory file missing", {"host": "", "inventory": "/nonexistent/inventory.yml"}, "inventory"),
]


@pytest.mark.parametrize(("overrides", "key"), [case[1:] for case in BAD_SETTINGS],
                         ids=[case[0] for case in BAD_SETTINGS])
def test_bad_settings_are_one_line_naming_the_key(tmp_path: Path, ssh_host: SshHost,
                                                  monkeypatch: pytest.MonkeyPatch, mlcube_cli: MlcubeCli,
                                                  overrides: dict[str, Any], key: str) -> None:
    cube = example_cube(tmp_path)
    # settings_file() cannot drop `host` (its first parameter), so the file is written here the same way.
    settings = mlcube_settings(dataclasses.replace(ssh_host, address=NOTHING_LISTENS))
    settings["platforms"]["ssh-ansible"] = deep_merge(settings["platforms"]["ssh-ansible"], overrides)
    settings_path = tmp_path / "mlcube-system-settings.yaml"
    settings_path.write_text(yaml.safe_dump(settings, sort_keys=False))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(settings_path))

    shim = shim_dir(tmp_path)
    configured = run_mlcube("configure", *cube_args(cube), path_prefix=shim, timeout=60)

    output = both(configured)
    assert configured.returncode != 0, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith(f"mlcube-ssh-ansible: setting '{key}': "), output
    assert "Traceback" not in output
    assert ssh_calls(shim) == []  # refused before any host was contacted (not merely quickly)
