"""Issue 13: the local cube wins on upload, known_hosts paths with spaces, results deleted locally stay
deleted, a cancel that finds the run over signals nothing, Ctrl-C twice."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from unittest import mock

import pytest

from mlcube_ssh_ansible import assets, fetched, workflow
from mlcube_ssh_ansible.render import Job, remote_name
from mlcube_ssh_ansible.report import Reporter
from mlcube_ssh_ansible.state import State
from tests.hosts import SshHost, example_cube, remote

from .conftest import platform_settings, run_mlcube
from .test_reliability import Spawned, background, close_master, configured, cube_args, leftovers, remote_dir_of

__all__ = ["background"]  # the fixture, used by name

pytestmark = pytest.mark.integration


def quiet() -> Reporter:
    return Reporter(write=lambda _: None)


def remote_text(host: SshHost, path: str) -> str:
    return remote(host, "cat", path, check=True).stdout


def test_the_local_cube_wins_over_a_newer_remote_copy_but_workspace_results_are_kept(
        tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    cube = example_cube(tmp_path)
    (cube / "data.txt").write_text("first\n")
    settings = platform_settings(settings_file(ssh_host, skip_unchanged=False))
    job = Job(str(cube), str(cube / "workspace"))
    workflow.configure(settings, job, reporter=quiet())
    remote_dir = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}"
    assert remote_text(ssh_host, f"{remote_dir}/data.txt") == "first\n"

    # A restored backup: older than the remote copy, yet it is what the user wants on the host.
    (cube / "data.txt").write_text("restored\n")
    an_hour_ago = time.time() - 3600
    os.utime(cube / "data.txt", (an_hour_ago, an_hour_ago))
    # A result the host wrote after the last fetch, and an older local copy of it: the host's is kept.
    remote(ssh_host, "sh", "-c", f"echo remote-new > {remote_dir}/workspace/result.txt", check=True)
    (cube / "workspace" / "result.txt").write_text("local-old\n")
    os.utime(cube / "workspace" / "result.txt", (an_hour_ago, an_hour_ago))

    workflow.configure(settings, job, reporter=quiet())

    assert remote_text(ssh_host, f"{remote_dir}/data.txt") == "restored\n"
    assert remote_text(ssh_host, f"{remote_dir}/workspace/result.txt") == "remote-new\n"
    assert remote_text(ssh_host, f"{remote_dir}/workspace/name.txt") == (cube / "workspace" / "name.txt").read_text()


def test_a_known_hosts_path_with_spaces_is_read_as_one_file(tmp_path: Path, ssh_host: SshHost,
                                                           settings_file) -> None:
    folder = tmp_path / "my keys 100%"
    folder.mkdir()
    known = folder / "known hosts"
    shutil.copy(ssh_host.known_hosts, known)
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host, known_hosts=str(known), skip_unchanged=False))
    reporter = quiet()

    workflow.configure(settings, Job(str(cube), str(cube / "workspace")), reporter=reporter)  # ssh and rsync

    assert reporter.failures() == {}
    assert [step for step, _, _ in reporter.hosts[ssh_host.address].steps_done][:3] == [
        "check", "python env", "upload"]


def test_cancelling_a_finished_run_by_id_signals_nothing(tmp_path: Path, ssh_host: SshHost,
                                                         settings_file) -> None:
    from mlcube_ssh_ansible.execute import run_playbook

    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host))
    job = Job(str(cube), str(cube / "workspace"))
    workflow.configure(settings, job, reporter=quiet())
    finished = dataclasses.replace(job, tasks=("hello",), run_id=workflow.new_run_id())
    workflow.run(settings, finished, reporter=quiet())
    run_dir = f"{ssh_host.user.home}/mlcube/.mlcube-ssh-ansible/{remote_name(str(cube))}/runs/{finished.run_id}"
    assert remote(ssh_host, "test", "-f", f"{run_dir}/rc").returncode == 0  # the run is over
    # The recorded process group id now belongs to someone else's process (pids are recycled).
    bystander = remote(ssh_host, "sh", "-c", "setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!",
                       check=True).stdout.strip()
    try:
        remote(ssh_host, "sh", "-c", f"echo {bystander} > {run_dir}/pid", check=True)

        outcome = run_playbook(workflow.playbook_invocation("cancel", settings, finished), quiet())

        assert outcome.rc == 0
        assert remote(ssh_host, "kill", "-0", bystander).returncode == 0, "the cancel signalled a stranger"
    finally:
        remote(ssh_host, "kill", "-KILL", f"-{bystander}")


# ------------------------------------------------------------------------------ results deleted locally


def test_results_deleted_locally_do_not_come_back(tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host))
    job = Job(str(cube), str(cube / "workspace"))
    workflow.configure(settings, job, reporter=quiet())
    workflow.run(settings, dataclasses.replace(job, tasks=("hello",)), reporter=quiet())
    greeting = cube / "workspace" / "greeting.txt"
    assert greeting.read_text() == "Hello, World!\n"
    remote_workspace = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}/workspace"

    greeting.unlink()  # the user starts clean
    # A result the host wrote after that fetch (a detached run, say) is not the user's to delete.
    remote(ssh_host, "sh", "-c", f"echo late > {remote_workspace}/late.txt", check=True)
    (cube / "workspace" / "seconds.txt").write_text("1")
    workflow.run(settings, dataclasses.replace(job, tasks=("sleep",)), reporter=quiet())

    assert (cube / "workspace" / "slept.txt").exists()
    assert not greeting.exists(), "a result deleted locally came back"
    assert remote(ssh_host, "test", "-e", f"{remote_workspace}/greeting.txt").returncode != 0
    assert (cube / "workspace" / "late.txt").read_text() == "late\n"
    # The next run has nothing left to delete, and brings back nothing either.
    workflow.run(settings, dataclasses.replace(job, tasks=("sleep",)), reporter=quiet())
    assert not greeting.exists() and (cube / "workspace" / "late.txt").exists()


def test_a_configure_deletes_results_deleted_locally_once(tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    """The upload of a configure deletes them on the host too, and then they leave the fetch list: the next
    command has nothing to delete (no prune task, no module call per host again)."""
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host, skip_unchanged=False))
    job = Job(str(cube), str(cube / "workspace"))
    workflow.configure(settings, job, reporter=quiet())
    workflow.run(settings, dataclasses.replace(job, tasks=("hello",)), reporter=quiet())
    remote_greeting = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}/workspace/greeting.txt"
    (cube / "workspace" / "greeting.txt").unlink()
    assert fetched.to_prune(job.workspace) == {ssh_host.address: [["greeting.txt", 14, mock.ANY]]}

    workflow.configure(settings, job, reporter=quiet())
    assert remote(ssh_host, "test", "-e", remote_greeting).returncode != 0
    assert fetched.to_prune(job.workspace) == {}
    again = workflow.playbook_invocation("configure", settings, job, extra=State(settings, job).prune_vars())
    assert assets.TAG_PRUNE in again.skip_tags


# ------------------------------------------------------------------------------------- Ctrl-C, twice or more


def interrupted_run(tmp_path: Path, ssh_host: SshHost, settings_file, background: list,
                    monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Spawned, str]:
    """A `mlcube run` of a 60 s task, Ctrl-C'd once it runs, at the point where it starts stopping it."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    cube = configured(tmp_path, ssh_host, settings_file, run_mlcube)
    (cube / "workspace" / "seconds.txt").write_text("60")
    remote_dir = remote_dir_of(ssh_host, cube)
    run = Spawned("run", *cube_args(cube), "--task=sleep")
    background.append((run, remote_dir))
    assert run.wait_for("sleeping 60 s", timeout=180), run.output
    run.process.send_signal(signal.SIGINT)
    assert run.wait_for("interrupted: stopping run", timeout=120), run.output
    return cube, run, remote_dir


def finished_record(cube: Path) -> dict:  # type: ignore[type-arg]
    [record] = (cube / "workspace" / ".mlcube-ssh-ansible" / "runs").glob("*.json")
    content = json.loads(record.read_text())
    assert content.get("finished"), content
    return content  # type: ignore[no-any-return]


def test_a_second_ctrl_c_while_stopping_lets_the_stop_finish(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                             background: list,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cube, run, remote_dir = interrupted_run(tmp_path, ssh_host, settings_file, background, monkeypatch)
    run.process.send_signal(signal.SIGINT)  # while the cancel play runs

    rc = run.finish(timeout=300)

    output = run.output
    assert rc == 130, output
    assert "still stopping run" in output and "Ctrl-C once more to abort" in output, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    run_id = finished_record(cube)["run_id"]
    assert f"{ssh_host.address}: run {run_id} stopped" in output, output
    # Said once when the first Ctrl-C arrives, and once as the command's one-line outcome, as for one Ctrl-C
    # (test_reliability.py sends that one to the process group; here it goes to the mlcube process alone).
    notices = [line for line in output.splitlines() if line.startswith("interrupted")]
    outcomes = [line for line in output.splitlines() if f"run {run_id} interrupted" in line]
    assert len(notices) == 1 and run_id in notices[0], output
    assert len(outcomes) == 1 and "stopped" in outcomes[0], output
    assert leftovers(ssh_host, remote_dir) == ({}, [])
    assert not (cube / "workspace" / "slept.txt").exists()
    assert list((tmp_path / "tmp").iterdir()) == []  # no private folder left behind


def test_a_third_ctrl_c_aborts_and_says_what_is_left_running(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                             background: list,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cube, run, remote_dir = interrupted_run(tmp_path, ssh_host, settings_file, background, monkeypatch)
    run.process.send_signal(signal.SIGINT)
    assert run.wait_for("still stopping run", timeout=60), run.output
    run.process.send_signal(signal.SIGINT)

    rc = run.finish(timeout=300)

    output = run.output
    assert rc == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    run_id = finished_record(cube)["run_id"]
    where = f"~/mlcube/{remote_name(str(cube))}"
    if leftovers(ssh_host, remote_dir) != ({}, []):  # what is said must be what is true
        assert f"{ssh_host.address}: run {run_id} may still be running" in output, output
        assert f"may still be running on {ssh_host.address} in {where}" in output, output
    else:  # the stop may have done its work before the abort ended the play that waited for its answer
        assert (f"{ssh_host.address}: run {run_id} stopped" in output
                or f"{ssh_host.address}: run {run_id} may still be running: the cancel was aborted" in output), output
    assert "the remote task was stopped" not in output
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_cancel_that_cannot_reach_the_host_says_so(tmp_path: Path, ssh_host: SshHost, settings_file,
                                                     background: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    cube = configured(tmp_path, ssh_host, settings_file, run_mlcube, connect_timeout=3, retries=0)
    (cube / "workspace" / "seconds.txt").write_text("60")
    remote_dir = remote_dir_of(ssh_host, cube)
    run = Spawned("run", *cube_args(cube), "--task=sleep")
    background.append((run, remote_dir))
    assert run.wait_for("sleeping 60 s", timeout=180), run.output
    # Only this test's sshd port, on its address: other tests' hosts are not touched.
    rules = [["-p", "tcp", "-d", ssh_host.address, "--dport", str(ssh_host.port), "-j", "REJECT",
              "--reject-with", "tcp-reset"],
             ["-p", "tcp", "-s", ssh_host.address, "--sport", str(ssh_host.port), "-j", "REJECT",
              "--reject-with", "tcp-reset"]]
    for rule in rules:
        subprocess.run(["iptables", "-I", "OUTPUT", *rule], check=True)
    try:
        close_master(Path(os.environ["MLCUBE_SYSTEM_SETTINGS"]), ssh_host)  # its open connection would linger
        run.process.send_signal(signal.SIGINT)
        rc = run.finish(timeout=300)
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-D", "OUTPUT", *rule], check=True)

    output = run.output
    assert rc == 130, output
    run_id = finished_record(cube)["run_id"]
    assert f"{ssh_host.address}: run {run_id} may still be running: the cancel failed at check: unreachable" \
        in output, output
    assert f"may still be running on {ssh_host.address} in ~/mlcube/{remote_name(str(cube))}" in output, output
    assert "the remote task was stopped" not in output
    assert leftovers(ssh_host, remote_dir) != ({}, [])  # which is the truth: the cleanup stops it
