"""`mlcube-ssh-ansible configure|run|render` on a real host, run as a user would: the console script from
.venv/bin, with the venv NOT on PATH."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import yaml

from mlcube_ssh_ansible.render import remote_name
from mlcube_ssh_ansible.settings import controller_cpus
from tests.hosts import REPO_ROOT, SshHost, example_cube, free_port, remote

from .conftest import VENV_BIN, remote_tree, user_env

pytestmark = pytest.mark.integration

CLI = VENV_BIN / "mlcube-ssh-ansible"

SshAnsible = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def ssh_ansible() -> SshAnsible:
    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=user_env(),
                              timeout=timeout, stdin=subprocess.DEVNULL)

    return run


def secret_keys(value: object) -> list[str]:
    """Password-like keys anywhere in a loaded YAML document."""
    if isinstance(value, dict):
        found = [key for key in value if "pass" in str(key).lower()]
        return found + [key for item in value.values() for key in secret_keys(item)]
    if isinstance(value, list):
        return [key for item in value for key in secret_keys(item)]
    return []


def out(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def test_configure_and_run_bring_the_results_back(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                  ssh_ansible: SshAnsible) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host)

    configured = ssh_ansible("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, out(configured)

    ran = ssh_ansible("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0, out(ran)
    assert "Hello, World!" in ran.stdout
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, World!\n"

    # Two tasks in one command (one remote `mlcube run --task=hello,sleep`), with a task argument.
    (cube / "workspace" / "other.txt").write_text("Both")
    ran = ssh_ansible("run", f"--mlcube={cube}", "--task=hello,sleep", "name_file=other.txt")
    assert ran.returncode == 0, out(ran)
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, Both!\n"
    assert (cube / "workspace" / "slept.txt").is_file()


def test_unknown_task_is_refused_before_any_host(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                 ssh_ansible: SshAnsible) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host)
    ran = ssh_ansible("run", f"--mlcube={cube}", "--task=train")
    assert ran.returncode == 2, out(ran)
    assert ran.stderr.strip() == ("mlcube-ssh-ansible: unknown task(s) train: "
                                  "this cube has tasks hello, fail, sleep")
    remote_dir = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}"
    assert remote(ssh_host, "test", "-e", remote_dir).returncode == 1


def test_p_overrides_reach_the_settings_of_both_commands(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                         ssh_ansible: SshAnsible) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host, port=free_port(ssh_host.address))  # the settings file names a port nobody serves

    refused = ssh_ansible("run", f"--mlcube={cube}", "--task=hello")
    assert refused.returncode != 0, out(refused)
    assert refused.stderr.startswith(f"mlcube-ssh-ansible: run failed on 1 host(s): {ssh_host.address}")
    assert "Traceback" not in refused.stdout + refused.stderr

    configured = ssh_ansible("configure", f"--mlcube={cube}", "-P", f"runner.port={ssh_host.port}")
    assert configured.returncode == 0, out(configured)
    ran = ssh_ansible("run", f"--mlcube={cube}", "--task=hello", f"-Prunner.port={ssh_host.port}")
    assert ran.returncode == 0, out(ran)
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, World!\n"


def test_configure_check_names_an_edited_file_and_changes_nothing(
        tmp_path: Path, ssh_host: SshHost, settings_file, ssh_ansible: SshAnsible) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host)
    assert ssh_ansible("configure", f"--mlcube={cube}").returncode == 0
    remote_dir = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}"
    before = remote_tree(ssh_host, remote_dir)
    original = (cube / "workspace" / "name.txt").read_text()
    (cube / "workspace" / "name.txt").write_text("Edited locally")

    checked = ssh_ansible("configure", f"--mlcube={cube}", "--check")

    assert checked.returncode == 0, out(checked)
    lines = checked.stdout.splitlines()
    assert f"{ssh_host.address}: would upload 1 file(s):" in lines, out(checked)
    assert "  workspace/name.txt" in lines
    assert f"{ssh_host.address}: no package to install" in lines
    assert lines[-1] == "configure --check: nothing was changed on any host"
    assert remote(ssh_host, "cat", f"{remote_dir}/workspace/name.txt", check=True).stdout == original
    assert remote_tree(ssh_host, remote_dir) == before


def test_configure_check_on_a_cube_the_host_never_saw(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                      ssh_ansible: SshAnsible) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host, interpreter={"location": "~/.venvs-never-created"})

    checked = ssh_ansible("configure", f"--mlcube={cube}", "--check")

    assert checked.returncode == 0, out(checked)
    assert "  mlcube.yaml" in checked.stdout.splitlines()
    packages = "mlcube==0.0.9 mlcube-docker==0.0.9"
    assert f"{ssh_host.address}: would install 2 package(s): {packages}" in checked.stdout
    for path in (f"mlcube/{remote_name(str(cube))}", ".venvs-never-created"):
        assert remote(ssh_host, "test", "-e", f"{ssh_host.user.home}/{path}").returncode == 1, path


def test_render_then_plain_ansible_playbook_brings_the_results_back(tmp_path: Path, ssh_host: SshHost,
                                                                    settings_file,
                                                                    ssh_ansible: SshAnsible) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host)
    rendered_dir = tmp_path / "rendered"

    rendered = ssh_ansible("render", f"--mlcube={cube}", "--task=hello", f"--out={rendered_dir}")

    assert rendered.returncode == 0, out(rendered)
    inventory, extravars = rendered_dir / "inventory.yml", rendered_dir / "extravars.yml"
    for path in (inventory, extravars):
        assert not secret_keys(yaml.safe_load(path.read_text())), path
        assert "PRIVATE KEY" not in path.read_text()
    assert yaml.safe_load(extravars.read_text())["mlcube_ssh_tasks"] == ["hello"]
    printed = [line.strip() for line in rendered.stdout.splitlines() if line.startswith("  cd ")]
    auto_forks = min(max(controller_cpus(), 2), 20)  # forks: auto; configure keeps 20 (unit-tested)
    expected = [
        f"cd {shlex.quote(str(REPO_ROOT))} && " + shlex.join([
            str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), f"mlcube.ssh.{name}",
            "-e", f"@{extravars}", "--forks", "20" if name == "configure" else str(auto_forks)])
        for name in ("configure", "run", "cancel")
    ]
    assert printed == expected, rendered.stdout

    # Plain ansible-playbook from the repository root, as printed (the collection's playbooks by name, found
    # through the checkout's ansible.cfg); host key checking stays on.
    for name in ("configure", "run"):
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), f"mlcube.ssh.{name}",
                "-e", f"@{extravars}"]
        played = subprocess.run(argv, cwd=REPO_ROOT, env=user_env(), capture_output=True, text=True,
                                timeout=600, stdin=subprocess.DEVNULL)
        assert played.returncode == 0, f"{name}:\n{played.stdout[-4000:]}\n{played.stderr[-2000:]}"
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, World!\n"


def test_detach_status_logs_attach_from_the_command_line(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                        ssh_ansible: SshAnsible) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host)
    assert ssh_ansible("configure", f"--mlcube={cube}").returncode == 0
    # Long enough to be still running when `status` asks, on a busy machine too (the test waits for its end).
    (cube / "workspace" / "seconds.txt").write_text("20")

    started = ssh_ansible("run", f"--mlcube={cube}", "--task=sleep", "--detach")
    assert started.returncode == 0, out(started)
    run_id = started.stdout.split("started run ")[1].split(";")[0]
    assert (cube / "workspace" / ".mlcube-ssh-ansible" / "runs" / f"{run_id}.json").is_file()

    status = ssh_ansible("status", f"--mlcube={cube}")
    assert f"{ssh_host.address}: {run_id} running (" in status.stdout, out(status)  # the run list, newest first
    logs = ssh_ansible("logs", f"--mlcube={cube}", "--run", run_id)
    assert "sleeping 20 s" in logs.stdout, out(logs)

    attached = ssh_ansible("attach", f"--mlcube={cube}")
    assert attached.returncode == 0, out(attached)
    assert "slept 20 s" in attached.stdout
    assert (cube / "workspace" / "slept.txt").is_file()
    status = ssh_ansible("status", f"--mlcube={cube}", "--run", run_id)
    assert f"{ssh_host.address}: succeeded (exit code 0, " in status.stdout, out(status)
