"""Secrets (issue 17): a controller variable's value reaches the remote task, and is never written to a file or
put on a command line on either side; printed, it is masked. Both sides are this machine, so one search of its
files and one sample of its processes covers the controller and the host."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mlcube_ssh_ansible.render import remote_name
from tests.hosts import Sshd, SshHost, example_cube, make_user, mlcube_settings, remote

from .conftest import MlcubeCli, user_env

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).parent / "mlcube-ssh-ansible"
NAME = "CUBE_TOKEN"
MASK = "********"

SECRET_TASK = r"""
    secret)
        [ -n "$slept" ] || die "secret needs --slept"
        seconds=1
        if [ -n "$seconds_file" ] && [ -f "$seconds_file" ]; then seconds="$("$bb" cat "$seconds_file")"; fi
        printf 'token=%s\n' "${CUBE_TOKEN:-}"
        printf 'digest=%s\n' "$(printf '%s' "${CUBE_TOKEN:-}" | "$bb" sha256sum | "$bb" cut -d' ' -f1)"
        "$bb" sleep "$seconds"
        printf 'token on stderr=%s\n' "${CUBE_TOKEN:-}" >&2
        printf 'done\n' > "$slept"
        ;;
"""


def secret_cube(dest: Path) -> Path:
    """The example cube with a task that prints $CUBE_TOKEN and its digest, in an image of its own."""
    cube = example_cube(dest)
    script = cube / "build" / "hello.sh"
    text = script.read_text()
    script.write_text(text.replace("    *)\n        die \"unknown task", SECRET_TASK.lstrip("\n") + "    *)\n"
                                   "        die \"unknown task", 1))
    config = yaml.safe_load((cube / "mlcube.yaml").read_text())
    config["docker"]["image"] = "mlcube-ssh-ansible/hello-secret:0.1"
    config["tasks"]["secret"] = {"parameters": {"inputs": {"seconds_file": {"type": "file", "default": "seconds.txt"}},
                                                "outputs": {"slept": {"type": "file", "default": "slept.txt"}}}}
    (cube / "mlcube.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return cube


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=user_env(), timeout=timeout,
                          stdin=subprocess.DEVNULL)


def command_lines() -> list[str]:
    """Every process's command line, as `ps` shows it and as /proc/*/cmdline holds it."""
    found = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout.splitlines()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


def files_holding(value: str, since: float, folders: list[str]) -> list[str]:
    """Files below `folders` modified since `since` whose bytes hold `value`."""
    listed = subprocess.run(["find", *[f for f in folders if os.path.exists(f)], "-xdev", "-type", "f",
                             "-newermt", f"@{since - 2:.0f}", "-print0"], capture_output=True, check=False)
    paths = [path for path in listed.stdout.decode(errors="surrogateescape").split("\0") if path]
    holding = []
    for path in paths:
        try:
            if value.encode() in Path(path).read_bytes():
                holding.append(path)
        except OSError:
            pass
    return holding


def everywhere(ssh_host: SshHost) -> list[str]:
    """Where either side writes: temp folders, both users' homes, the container engine's state."""
    return ["/tmp", "/var/tmp", str(Path.home()), str(ssh_host.user.home), "/var/lib/docker/containers", "/run"]


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    value = "sentinel-" + secrets.token_hex(12)
    monkeypatch.setenv(NAME, value)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # ansible-runner's private folders, kept below
    return value


def test_secret_reaches_the_task_and_is_written_nowhere(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                        token: str) -> None:
    since = time.time()
    settings_file(ssh_host, secrets=[NAME], keep_artifacts=True)
    cube = secret_cube(tmp_path)
    (cube / "workspace" / "seconds.txt").write_text("6")
    configured = cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, configured.stdout + configured.stderr

    running = subprocess.Popen([str(CLI), "run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=secret"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_env(),
                               stdin=subprocess.DEVNULL)
    leaked, docker_runs = [], []
    while running.poll() is None:
        for line in command_lines():
            if token in line:
                leaked.append(line)
            if "docker run" in line and f"-e {NAME}" in line:
                docker_runs.append(line)
        time.sleep(0.2)
    out, err = running.communicate()

    assert running.returncode == 0, out + err
    assert docker_runs, "the samples caught the remote `docker run`, with the secret passed by name"
    assert leaked == []
    assert f"digest={digest(token)}" in out  # the task got the value
    assert f"token={MASK}" in out and f"token on stderr={MASK}" in out + err  # and printed it masked
    assert token not in out + err
    kept = [*(tmp_path / "tmp").glob("mlcube-ssh-ansible-*/artifacts/*/job_events"),
            *Path.home().glob(".cache/mlcube-ssh-ansible/artifacts/*/artifacts/*/job_events")]
    assert [events for events in kept if events.stat().st_mtime >= since - 2]  # kept, so searched below
    assert files_holding(token, since, everywhere(ssh_host)) == []


def test_detached_run_keeps_the_secret_in_memory_and_masks_logs(tmp_path: Path, ssh_host: SshHost, sshd: Sshd,
                                                                ssh_keys: Path, settings_file, token: str) -> None:
    since = time.time()
    settings_file(ssh_host, secrets=[NAME])
    cube = secret_cube(tmp_path)
    (cube / "workspace" / "seconds.txt").write_text("8")
    configured = cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, configured.stdout + configured.stderr

    started = cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=secret", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    # The running task holds the value in its environment: its own user can see that, another one cannot.
    runs = f"{ssh_host.user.home}/mlcube/.mlcube-ssh-ansible/{remote_name(str(cube))}/runs"
    run_dir = remote(ssh_host, "sh", "-c", f"ls -d {runs}/* | tail -n 1", check=True).stdout.strip()
    pid = remote(ssh_host, "cat", f"{run_dir}/pid", check=True).stdout.strip()
    assert remote(ssh_host, "grep", "-c", f"{NAME}=", f"/proc/{pid}/environ").stdout.strip() == "1"
    peer = sshd.host(ssh_host.address, make_user("mlcube-peer", ssh_keys))
    denied = remote(peer, "cat", f"/proc/{pid}/environ")
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    assert token not in remote(peer, "ps", "-eo", "args").stdout
    logs = cli("logs", f"--mlcube={cube}", "--platform=ssh-ansible")
    attached = cli("attach", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert attached.returncode == 0, attached.stdout + attached.stderr
    logs_after = cli("logs", f"--mlcube={cube}", "--platform=ssh-ansible")

    assert f"token={MASK}" in logs_after.stdout and f"digest={digest(token)}" in logs_after.stdout
    for shown in (started, logs, attached, logs_after):
        assert token not in shown.stdout + shown.stderr
    assert (cube / "workspace" / "slept.txt").read_text() == "done\n"
    assert files_holding(token, since, everywhere(ssh_host)) == []


def test_a_missing_secret_stops_before_any_host_is_touched(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                           mlcube_cli: MlcubeCli,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NAME, raising=False)
    remote(ssh_host, "rm", "-rf", "mlcube-untouched", check=True)
    settings_file(ssh_host, secrets=[NAME], remote_root="~/mlcube-untouched")
    cube = example_cube(tmp_path)

    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")

    assert ran.returncode == 2, ran.stdout + ran.stderr
    errors = [line for line in (ran.stdout + ran.stderr).splitlines() if NAME in line]
    assert len(errors) == 1 and "secrets" in errors[0] and "not set" in errors[0], ran.stdout + ran.stderr
    assert remote(ssh_host, "test", "-e", "mlcube-untouched").returncode != 0


def test_inventory_chooses_secrets_per_host_among_those_offered(tmp_path: Path, ssh_host: SshHost, token: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = tmp_path / "inventory.yml"
    host_vars = {"ansible_host": ssh_host.address, "ansible_port": ssh_host.port}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"gpu": {**host_vars, "mlcube_ssh_secrets": []}}}}))
    settings = mlcube_settings(ssh_host, inventory=str(inventory), secrets=[NAME])
    del settings["platforms"]["ssh-ansible"]["host"]
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "settings.yaml"))
    cube = secret_cube(tmp_path)
    configured = cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, configured.stdout + configured.stderr

    without = cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=secret")
    assert without.returncode == 0, without.stdout + without.stderr
    [output] = sorted((cube / "workspace" / ".mlcube-ssh-ansible" / "runs").glob("*/gpu.log"))  # a fleet's
    assert f"digest={digest('')}" in output.read_text()  # this host was given none

    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"gpu": {**host_vars,
                                                                   "mlcube_ssh_secrets": ["NOT_OFFERED"]}}}}))
    refused = cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=secret")
    assert refused.returncode != 0
    assert "NOT_OFFERED" in refused.stdout + refused.stderr and "check" in refused.stdout + refused.stderr
    assert "upload" not in refused.stdout  # stopped at the first step, before the upload
