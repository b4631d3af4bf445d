"""Slots for queued runs (issue 15, part 2): GPUs from an nvidia-smi stand-in on the remote PATH, or declared in
the inventory; leases on the host; a GPU that a process we did not start uses is skipped."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from mlcube_ssh_ansible import workflow
from mlcube_ssh_ansible.render import Job, remote_name
from mlcube_ssh_ansible.report import Reporter
from tests.hosts import Sshd, SshHost, example_cube, make_user, mlcube_settings

from .conftest import VENV_BIN, platform_settings, user_env

pytestmark = pytest.mark.integration

# What `nvidia-smi --query-gpu=index,uuid,memory.used,memory.total --format=csv,noheader,nounits` prints on a
# 4-GPU box, and `--query-compute-apps=gpu_uuid,pid,used_memory ...` with one foreign process on GPU 2.
GPUS = "0, GPU-aaaa, 0, 16384\n1, GPU-bbbb, 0, 16384\n2, GPU-cccc, 9000, 16384\n3, GPU-dddd, 3, 16384\n"
APPS = "GPU-cccc, 4242, 8990\n"
# `--query-gpu=index,uuid,ecc.errors.uncorrected.volatile.total ...`: uncorrected ECC errors ([N/A]: no ECC).
ECC = "0, GPU-aaaa, 0\n1, GPU-bbbb, 0\n2, GPU-cccc, [N/A]\n3, GPU-dddd, 0\n"
STAND_IN = """#!/bin/sh
# nvidia-smi stand-in for the tests: answers the three queries mlcube-ssh-ansible asks from files. A test
# changes the next answer (an ECC counter that rises, a GPU that vanishes) with <kind>-next.csv: it replaces
# <kind>.csv once the current answer is given.
data="$HOME/.nvidia-smi-stand-in"
answer() {
    cat "$data/$1.csv"
    if [ -f "$data/$1-next.csv" ]; then mv "$data/$1-next.csv" "$data/$1.csv"; fi
}
case "${1:-}" in
    --query-gpu=*ecc*) answer ecc ;;
    --query-gpu=*) answer gpus ;;
    --query-compute-apps=*) answer apps ;;
    *) echo "nvidia-smi stand-in: unsupported arguments: $*" >&2; exit 2 ;;
esac
"""


def give(path: Path, host: SshHost) -> None:
    owner = host.user.home.stat()
    os.chown(path, owner.st_uid, owner.st_gid)


@pytest.fixture
def nvidia_smi(ssh_host: SshHost) -> Iterator[Path]:
    """The stand-in in ~/bin of the remote user (a folder a login shell puts on PATH), with its data."""
    home = ssh_host.user.home
    for folder in (home / "bin", home / ".nvidia-smi-stand-in"):
        folder.mkdir(exist_ok=True)
        give(folder, ssh_host)
    (home / ".nvidia-smi-stand-in" / "gpus.csv").write_text(GPUS)
    (home / ".nvidia-smi-stand-in" / "apps.csv").write_text(APPS)
    (home / ".nvidia-smi-stand-in" / "ecc.csv").write_text(ECC)
    script = home / "bin" / "nvidia-smi"
    script.write_text(STAND_IN)
    script.chmod(0o755)
    for path in (script, *(home / ".nvidia-smi-stand-in").iterdir()):
        give(path, ssh_host)
    yield script
    script.unlink()
    shutil.rmtree(home / ".nvidia-smi-stand-in")


@pytest.fixture
def leases_dir() -> Iterator[Path]:
    """A leases folder of this test only (the default, /tmp/mlcube-ssh-leases, is the host's)."""
    path = Path(f"/tmp/mlcube-ssh-leases-test-{uuid.uuid4().hex[:8]}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def inventory_settings(tmp_path: Path, host: SshHost, monkeypatch: pytest.MonkeyPatch, **host_vars: Any) -> Path:
    """Settings with a one-host inventory whose host vars are `host_vars` (as an ops team declares them)."""
    inventory = tmp_path / f"inventory-{uuid.uuid4().hex[:6]}.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"gpubox": {
        "ansible_host": host.address, "ansible_port": host.port, "ansible_user": host.user.name,
        "ansible_ssh_private_key_file": str(host.user.identity_file), **host_vars}}}}))
    settings = mlcube_settings(host)
    platform = settings["platforms"]["ssh-ansible"]
    for key in ("host", "port", "authentication"):
        del platform[key]
    platform.update(inventory=str(inventory), hosts="gpubox")
    path = tmp_path / f"settings-{inventory.stem}.yaml"
    path.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(path))
    return path


def test_slots_from_an_nvidia_smi_stand_in_skip_foreign_gpus_and_see_leases(
        tmp_path: Path, ssh_host: SshHost, nvidia_smi: Path, leases_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cube = example_cube(tmp_path)
    job = Job(str(cube), str(cube / "workspace"))
    settings = platform_settings(inventory_settings(tmp_path, ssh_host, monkeypatch, mlcube_ssh_cpu_slots=3,
                                                    mlcube_ssh_leases_dir=str(leases_dir)))
    leases_dir.mkdir(mode=0o1777)
    leases_dir.chmod(0o1777)
    with open(leases_dir / "gpu-1.lease", "w") as held, open(leases_dir / "cpu-0.lease", "w") as cpu:
        fcntl.flock(held, fcntl.LOCK_EX)  # another run (here: this test) holds GPU 1 and a CPU slot
        fcntl.flock(cpu, fcntl.LOCK_EX)
        found = workflow.slots(settings, job, reporter=Reporter(write=lambda _: None))["gpubox"]
        shown = subprocess.run([str(VENV_BIN / "mlcube-ssh-ansible"), "slots", f"--mlcube={cube}"],
                               capture_output=True, text=True, env=user_env(), timeout=300)
    assert found["source"] == "nvidia-smi"
    assert [(gpu["index"], gpu["state"], gpu["processes"]) for gpu in found["gpus"]] == [
        (0, "free", []), (1, "leased", []), (2, "busy", [4242]), (3, "free", [])]
    assert [gpu["memory_used_mib"] for gpu in found["gpus"]] == [0, 0, 9000, 3]
    assert [cpu["state"] for cpu in found["cpus"]] == ["leased", "free", "free"]
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "gpubox: gpu 0 free (0/16384 MiB)", "gpubox: gpu 1 leased (0/16384 MiB)",
        "gpubox: gpu 2 busy (9000/16384 MiB), pids 4242", "gpubox: gpu 3 free (3/16384 MiB)",
        "gpubox: cpu slots: 2 free of 3"]

    # Once the lease is let go, the GPU is free again: the kernel drops the lock, no cleanup needed.
    again = workflow.slots(settings, job, reporter=Reporter(write=lambda _: None))["gpubox"]
    assert [gpu["state"] for gpu in again["gpus"]] == ["free", "free", "busy", "free"]

    # Declared in the inventory instead: nvidia-smi is not asked.
    declared = platform_settings(inventory_settings(tmp_path, ssh_host, monkeypatch, mlcube_ssh_gpus=[0, 1],
                                                    mlcube_ssh_leases_dir=str(leases_dir)))
    found = workflow.slots(declared, job, reporter=Reporter(write=lambda _: None))["gpubox"]
    assert found["source"] == "declared"
    assert [(gpu["index"], gpu["state"]) for gpu in found["gpus"]] == [(0, "free"), (1, "free")]


def test_no_nvidia_smi_means_no_gpu_and_a_bad_declaration_names_the_key(
        tmp_path: Path, ssh_host: SshHost, leases_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cube = example_cube(tmp_path)
    job = Job(str(cube), str(cube / "workspace"))
    settings = platform_settings(inventory_settings(tmp_path, ssh_host, monkeypatch, mlcube_ssh_cpu_slots=2,
                                                    mlcube_ssh_leases_dir=str(leases_dir)))
    found = workflow.slots(settings, job, reporter=Reporter(write=lambda _: None))["gpubox"]
    assert (found["source"], found["gpus"], len(found["cpus"])) == ("none", [], 2)

    bad = platform_settings(inventory_settings(tmp_path, ssh_host, monkeypatch, mlcube_ssh_gpus="all",
                                               mlcube_ssh_leases_dir=str(leases_dir)))
    with pytest.raises(workflow.HostFailure) as caught:
        workflow.slots(bad, job, reporter=Reporter(write=lambda _: None))
    assert "mlcube_ssh_gpus" in str(caught.value)


DEVICES_SCRIPT = """set -eu
# The devices task of the test cube: records the GPUs it was given, then sleeps.
bb=/bin/busybox
task="$1"
shift
for arg in "$@"; do
    case "$arg" in
        --seconds_file=*) seconds_file="${arg#*=}" ;;
        --devices=*) devices="${arg#*=}" ;;
    esac
done
printf '%s\\n' "${CUDA_VISIBLE_DEVICES-unset}" > "$devices"
printf '%s got devices %s\\n' "$task" "${CUDA_VISIBLE_DEVICES-unset}"
"$bb" sleep "$("$bb" cat "$seconds_file")"
"""


ENDED = {"succeeded", "failed", "cancelled", "died"}


def quiet() -> Reporter:
    """A reporter of its own for each command (a reporter keeps the failures it saw)."""
    return Reporter(write=lambda _: None)


def devices_cube(tmp_path: Path) -> Path:
    """The example cube with one task that writes $CUDA_VISIBLE_DEVICES to devices.txt, then sleeps."""
    cube = example_cube(tmp_path)
    (cube / "build" / "hello.sh").write_text(DEVICES_SCRIPT)
    config = yaml.safe_load((cube / "mlcube.yaml").read_text())
    config["docker"]["image"] = "mlcube-ssh-ansible/devices:0.1"
    config["tasks"] = {"devices": {"parameters": {
        "inputs": {"seconds_file": {"type": "file", "default": "seconds.txt"}},
        "outputs": {"devices": {"type": "file", "default": "devices.txt"}}}}}
    (cube / "mlcube.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (cube / "workspace" / "seconds.txt").write_text("600")
    return cube


def test_runs_lease_free_gpus_and_get_them_as_cuda_visible_devices(
        tmp_path: Path, ssh_host: SshHost, nvidia_smi: Path, leases_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs take 2 and 1 of the 3 free GPUs (GPU 2 is busy with a process we did not start); a third finds no
    free slot and starts nothing; each task records the GPUs it got; cancelled, they give the GPUs back."""
    cube = devices_cube(tmp_path)
    job = Job(str(cube), str(cube / "workspace"), tasks=("devices",))
    # No GPU driver here: the devices go through the environment only, not docker's --gpus.
    settings = platform_settings(inventory_settings(tmp_path, ssh_host, monkeypatch, mlcube_ssh_docker_gpus=False,
                                                    mlcube_ssh_leases_dir=str(leases_dir)))
    workflow.configure(settings, job, reporter=quiet())
    workspaces = {name: tmp_path / name for name in ("two", "one", "none")}
    started = {}
    try:
        for name, gpus in (("two", 2), ("one", 1)):
            workspaces[name].mkdir()
            run = Job(job.cube_root, str(workspaces[name]), tasks=("devices",), detach=True,
                      run_id=workflow.new_run_id(), gpus_needed=gpus)
            workflow.run(settings, run, reporter=quiet())
            started[name] = run
        workspaces["none"].mkdir()
        with pytest.raises(workflow.HostFailure) as refused:
            workflow.run(settings, Job(job.cube_root, str(workspaces["none"]), tasks=("devices",), detach=True,
                                       run_id=workflow.new_run_id(), gpus_needed=1), reporter=quiet())
        assert "no free slot: the run needs 1 GPU(s)" in str(refused.value)
        assert "gpu 2 busy" in str(refused.value)
        found = workflow.slots(settings, job, reporter=quiet())["gpubox"]
        assert [gpu["state"] for gpu in found["gpus"]] == ["leased", "leased", "busy", "leased"]
        listed = workflow.status(settings, job, reporter=quiet())["gpubox"]["runs"]
        states = {run["run_id"]: run["state"] for run in listed}
        assert states == {started["two"].run_id: "running", started["one"].run_id: "running"}
    finally:
        workflow.cancel(settings, job, reporter=quiet())
    for name, run in started.items():
        workflow.attach(settings, Job(job.cube_root, str(workspaces[name])), run_id=run.run_id, follow=False,
                        reporter=quiet())
    assert (workspaces["two"] / "devices.txt").read_text() == "0,1\n"
    assert (workspaces["one"] / "devices.txt").read_text() == "3\n"
    found = workflow.slots(settings, job, reporter=quiet())["gpubox"]
    assert [gpu["state"] for gpu in found["gpus"]] == ["free", "free", "busy", "free"]


def test_a_queued_run_waits_on_the_host_and_starts_when_its_gpu_is_free(
        tmp_path: Path, ssh_host: SshHost, leases_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one GPU (declared), a second and a third run are queued on the host, first come first served; when
    the first run ends (cancelled here), the second starts there by itself (no controller command in between)
    and gets the GPU; the third keeps waiting; a queued run can be cancelled."""
    cube = devices_cube(tmp_path)
    job = Job(str(cube), str(cube / "workspace"), tasks=("devices",))
    settings = platform_settings(inventory_settings(tmp_path, ssh_host, monkeypatch, mlcube_ssh_gpus=[0],
                                                    mlcube_ssh_docker_gpus=False,
                                                    mlcube_ssh_leases_dir=str(leases_dir)))
    workflow.configure(settings, job, reporter=quiet())
    runs = {}
    try:
        for name in ("first", "second", "third"):
            (tmp_path / name).mkdir()
            runs[name] = Job(job.cube_root, str(tmp_path / name), tasks=("devices",), detach=True,
                             run_id=workflow.new_run_id(), gpus_needed=1, queue=True)
            workflow.run(settings, runs[name], reporter=quiet())

        def states() -> dict[str, str]:
            listed = workflow.status(settings, job, reporter=quiet())["gpubox"]["runs"]
            return {name: next(run["state"] for run in listed if run["run_id"] == runs[name].run_id)
                    for name in runs}

        assert states() == {"first": "running", "second": "queued", "third": "queued"}
        workflow.cancel(settings, job, run_id=runs["first"].run_id, reporter=quiet())
        deadline = time.monotonic() + 120
        while states()["second"] != "running":
            assert time.monotonic() < deadline, "the queued run did not start"
        assert states() == {"first": "cancelled", "second": "running", "third": "queued"}
        workflow.cancel(settings, job, run_id=runs["third"].run_id, reporter=quiet())
        assert states()["third"] == "cancelled"
    finally:
        workflow.cancel(settings, job, reporter=quiet())
    workflow.attach(settings, Job(job.cube_root, str(tmp_path / "second")), run_id=runs["second"].run_id,
                    follow=False, reporter=quiet())
    assert (tmp_path / "second" / "devices.txt").read_text() == "0\n"
    assert not (tmp_path / "third" / "devices.txt").exists()


ATTEMPTS_SCRIPT = """set -eu
# The attempts task of the test cube: counts its attempts in its workspace, records the GPUs each one was given,
# and fails (exit code 10 + the attempt) as many times as fails_file says first, printing the rest of its line.
bb=/bin/busybox
shift
for arg in "$@"; do
    case "$arg" in
        --fails_file=*) fails_file="${arg#*=}" ;;
        --log_dir=*) log_dir="${arg#*=}" ;;
    esac
done
"$bb" mkdir -p "$log_dir"
count=$(( $("$bb" cat "$log_dir/count" 2>/dev/null || echo 0) + 1 ))
echo "$count" > "$log_dir/count"
printf '%s\\n' "${CUDA_VISIBLE_DEVICES-unset}" > "$log_dir/devices-$count.txt"
read -r fails message < "$fails_file" || true
if [ "$count" -le "$fails" ]; then
    echo "attempt $count fails: ${message:-}" >&2
    exit $((10 + count))
fi
echo "attempt $count succeeds"
"""


def attempts_cube(tmp_path: Path) -> Path:
    """The example cube with one task that fails as many times as workspace/fails.txt says, then succeeds."""
    cube = example_cube(tmp_path)
    (cube / "build" / "hello.sh").write_text(ATTEMPTS_SCRIPT)
    config = yaml.safe_load((cube / "mlcube.yaml").read_text())
    config["docker"]["image"] = "mlcube-ssh-ansible/attempts:0.1"
    config["tasks"] = {"attempts": {"parameters": {
        "inputs": {"fails_file": {"type": "file", "default": "fails.txt"}},
        "outputs": {"log_dir": {"type": "directory", "default": "attempts"}}}}}
    (cube / "mlcube.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (cube / "workspace" / "fails.txt").write_text("0")
    return cube


def test_failed_runs_are_retried_on_the_host_never_on_a_faulty_gpu(
        tmp_path: Path, ssh_host: SshHost, nvidia_smi: Path, leases_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Three detached runs with --retries-on-failure, retried by their supervisors on the host: (b) fails on GPU 0
    while its uncorrected ECC count rises (the stand-in's next answer), so its retry runs on another GPU; (a)
    fails once on its GPU for another reason and succeeds on the same GPU; (c) fails every time and ends failed
    with its last exit code. Each attempt is listed with its exit code, devices and cause."""
    cube = attempts_cube(tmp_path)
    job = Job(str(cube), str(cube / "workspace"), tasks=("attempts",))
    settings_path = inventory_settings(tmp_path, ssh_host, monkeypatch, mlcube_ssh_docker_gpus=False,
                                       mlcube_ssh_leases_dir=str(leases_dir))
    settings = platform_settings(settings_path)
    workflow.configure(settings, job, reporter=quiet())
    data = ssh_host.user.home / ".nvidia-smi-stand-in"
    (data / "ecc-next.csv").write_text(ECC.replace("0, GPU-aaaa, 0", "0, GPU-aaaa, 2"))
    give(data / "ecc-next.csv", ssh_host)
    plan = {"faulty": (1, 1, 2), "flaky": (1, 1, 1), "broken": (-1, 5, 1)}  # GPUs, failures, retries
    runs = {}
    try:
        for name, (gpus, fails, retries) in plan.items():  # in this order: `faulty` asks nvidia-smi first
            (tmp_path / name).mkdir()
            (tmp_path / name / "fails.txt").write_text(str(fails))
            runs[name] = Job(job.cube_root, str(tmp_path / name), tasks=("attempts",), detach=True,
                             run_id=workflow.new_run_id(), gpus_needed=gpus, run_retries=retries)
            workflow.run(settings, runs[name], reporter=quiet())
        deadline = time.monotonic() + 300
        while True:
            listed = {run["run_id"]: run for run in workflow.status(settings, job, reporter=quiet())["gpubox"]["runs"]}
            if all(listed[run.run_id]["state"] in ENDED for run in runs.values()):
                break
            assert time.monotonic() < deadline, f"the runs did not end: {listed}"
        shown = subprocess.run([str(VENV_BIN / "mlcube-ssh-ansible"), "status", f"--mlcube={cube}"],
                               capture_output=True, text=True, env=user_env(), timeout=300)
    finally:
        workflow.cancel(settings, job, reporter=quiet())
    got = {name: listed[run.run_id] for name, run in runs.items()}
    for name, run in runs.items():
        workflow.attach(settings, Job(job.cube_root, str(tmp_path / name)), run_id=run.run_id, follow=False,
                        reporter=quiet())

    def devices(name: str) -> list[str]:
        count = int((tmp_path / name / "attempts" / "count").read_text())
        return [(tmp_path / name / "attempts" / f"devices-{n}.txt").read_text().strip() for n in range(1, count + 1)]

    # (b) A device failure: the retry runs on another GPU (not 0, found faulty; not 2, busy with a foreign process).
    faulty = got["faulty"]
    assert (faulty["state"], faulty["rc"]) == ("succeeded", 0)
    assert [(a["rc"], a["cause"], a["faulty"], a["devices"]) for a in faulty["attempts"]] == [
        (11, "device", [0], {"gpus": [0]}), (0, None, [], {"gpus": [int(devices("faulty")[1])]})]
    assert faulty["attempts"][0]["why"] == "gpu 0 uncorrected ECC errors rose from 0 to 2"
    assert devices("faulty")[0] == "0" and devices("faulty")[1] in ("1", "3")
    # (a) Another failure: the same GPU again, and it succeeds on its second attempt.
    flaky = got["flaky"]
    assert (flaky["state"], flaky["rc"], len(flaky["attempts"])) == ("succeeded", 0, 2)
    assert [a["cause"] for a in flaky["attempts"]] == ["task", None]
    assert devices("flaky")[0] == devices("flaky")[1] in ("0", "1", "3")
    # (c) Retries exhausted: failed, with the last attempt's exit code.
    broken = got["broken"]
    assert (broken["state"], broken["rc"], [a["rc"] for a in broken["attempts"]]) == ("failed", 12, [11, 12])
    assert devices("broken") == ["unset", "unset"]
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert f"gpubox: {runs['broken'].run_id} failed (exit code 12, " in "\n".join(lines)
    assert any(line.startswith(f"gpubox: {runs['faulty'].run_id} succeeded (exit code 0, ") and
               line.endswith(f"2 attempts) in {faulty['workspace']}") for line in lines), lines
    assert "gpubox:   attempt 1: exit code 11 on gpu 0, device fault: gpu 0 uncorrected ECC errors rose from 0 " \
           "to 2" in lines
    # The leases were all let go: the faulty GPU too (other runs may take it), and `slots` shows what was found.
    found = workflow.slots(settings, job, reporter=quiet())["gpubox"]
    assert [gpu["state"] for gpu in found["gpus"]] == ["free", "free", "busy", "free"]
    assert [bool(gpu["faulty"]) for gpu in found["gpus"]] == [True, False, False, False]
    assert (found["gpus"][0]["faulty"]["run"], found["gpus"][0]["faulty"]["why"]) == (
        runs["faulty"].run_id, "uncorrected ECC errors rose from 0 to 2")


GATE_SCRIPT = """set -eu
# The gate task of the test cube: records when it starts (the host's uptime, 10 ms steps: containers share the
# kernel's clock), waits for the file `go` in its output folder, records when it ends and the GPUs it had.
bb=/bin/busybox
shift
for arg in "$@"; do
    case "$arg" in
        --times_dir=*) times_dir="${arg#*=}" ;;
    esac
done
start=$("$bb" cut -d' ' -f1 /proc/uptime)
while [ ! -e "$times_dir/go" ]; do "$bb" sleep 0.2; done
end=$("$bb" cut -d' ' -f1 /proc/uptime)
printf '%s %s %s\\n' "$start" "$end" "${CUDA_VISIBLE_DEVICES-unset}" > "$times_dir/times.txt"
"""


def gate_cube(dest: Path) -> Path:
    """The example cube with one task that holds its GPU until the test lets it end (times/go)."""
    dest.mkdir()
    cube = example_cube(dest)
    (cube / "build" / "hello.sh").write_text(GATE_SCRIPT)
    config = yaml.safe_load((cube / "mlcube.yaml").read_text())
    config["docker"]["image"] = "mlcube-ssh-ansible/gate:0.1"
    config["tasks"] = {"gate": {"parameters": {"outputs": {"times_dir": {"type": "directory", "default": "times"}}}}}
    (cube / "mlcube.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return cube


def test_two_users_of_a_host_queue_for_its_one_gpu_and_never_share_it(
        tmp_path: Path, sshd: Sshd, ssh_keys: Path, ssh_host: SshHost, leases_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two Linux users of one host each submit a run needing its single GPU at the same moment (run --need-gpus 1
    --queue, two commands at once). The leases folder is created by whichever comes first; the other user's run
    is queued, takes the lease file the first user created when the first run ends, and runs on GPU 0 then: the
    tasks' own times never overlap."""
    users = {"first": ssh_host, "second": sshd.host(ssh_host.address, make_user("mlcube-peer", ssh_keys))}
    setups: dict[str, tuple[Path, Path, Job]] = {}
    for name, host in users.items():
        cube = gate_cube(tmp_path / name)
        settings_path = inventory_settings(tmp_path, host, monkeypatch, mlcube_ssh_gpus=[0],
                                           mlcube_ssh_docker_gpus=False, mlcube_ssh_leases_dir=str(leases_dir))
        job = Job(str(cube), str(cube / "workspace"), tasks=("gate",))
        workflow.configure(platform_settings(settings_path), job, reporter=quiet())
        setups[name] = (cube, settings_path, job)
    assert not leases_dir.exists()  # the first launch creates it, as on a host where nobody ran yet
    commands = {name: subprocess.Popen(
        [str(VENV_BIN / "mlcube-ssh-ansible"), "run", f"--mlcube={cube}", "--need-gpus", "1", "--queue", "--detach"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        env={**user_env(), "MLCUBE_SYSTEM_SETTINGS": str(settings_path)})
        for name, (cube, settings_path, _job) in setups.items()}
    run_ids = {}
    for name, command in commands.items():
        out, err = command.communicate(timeout=600)
        assert command.returncode == 0, err
        run_ids[name] = out.split("started run ", 1)[1].split(";")[0]

    def states() -> dict[str, str]:
        found = {}
        for name, (_cube, settings_path, job) in setups.items():
            runs = workflow.status(platform_settings(settings_path), job, reporter=quiet())["gpubox"]["runs"]
            found[name] = next(run["state"] for run in runs if run["run_id"] == run_ids[name])
        return found

    gates = {name: Path(host.user.home, "mlcube", remote_name(str(setups[name][0])), "workspace", "times")
             for name, host in users.items()}
    try:
        deadline = time.monotonic() + 120
        while sorted((seen := states()).values()) != ["queued", "running"]:
            assert time.monotonic() < deadline, f"not one running and one queued: {seen}"
        # The lease file is the running user's; the waiting user may not even write it (fs.protected_regular,
        # the default of most distributions, refuses opening another user's file in a sticky folder for writing,
        # and a file may be left 0644): a lock needs no write access.
        first = next(name for name, state in seen.items() if state == "running")
        lease = leases_dir / "gpu-0.lease"
        assert lease.stat().st_uid == users[first].user.home.stat().st_uid
        lease.chmod(0o444)
        for name, gate in gates.items():  # let both end: the queued one as soon as it starts
            gate.mkdir(parents=True, exist_ok=True)
            (gate / "go").touch()
            for path in (gate, gate / "go"):
                give(path, users[name])
        deadline = time.monotonic() + 300
        while not set((seen := states()).values()) <= ENDED:
            assert time.monotonic() < deadline, f"the runs did not end: {seen}"
        assert seen == {"first": "succeeded", "second": "succeeded"}
    finally:
        for name, (_cube, settings_path, job) in setups.items():
            workflow.cancel(platform_settings(settings_path), job, reporter=quiet())
    times = {}
    for name, (cube, settings_path, job) in setups.items():
        workflow.attach(platform_settings(settings_path), job, run_id=run_ids[name], follow=False, reporter=quiet())
        start, end, devices = (cube / "workspace" / "times" / "times.txt").read_text().split()
        times[name] = (float(start), float(end), devices)
    second = next(name for name in users if name != first)
    assert times[first][2] == times[second][2] == "0"  # both on the one GPU
    # One after the other, never both at once; the second user's run took the first user's lease file.
    assert times[first][0] <= times[first][1] <= times[second][0] <= times[second][1], times
    assert lease.stat().st_uid == users[first].user.home.stat().st_uid
    assert leases_dir.stat().st_mode & 0o7777 == 0o1777


def test_a_device_fault_in_the_tasks_output_retries_on_another_gpu_when_one_is_free(
        tmp_path: Path, ssh_host: SshHost, leases_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Declared GPUs, no nvidia-smi: only the task's output can tell a device fault. A run on GPU 1 that fails saying
    `uncorrectable ECC error` waits (`retrying`) while the only other GPU is leased, and runs its retry there once
    it is let go; a run whose every GPU was faulty has none left to retry on and ends failed at once."""
    cube = attempts_cube(tmp_path)
    job = Job(str(cube), str(cube / "workspace"), tasks=("attempts",))
    settings_path = inventory_settings(tmp_path, ssh_host, monkeypatch, mlcube_ssh_gpus=[0, 1],
                                       mlcube_ssh_docker_gpus=False, mlcube_ssh_leases_dir=str(leases_dir))
    settings = platform_settings(settings_path)
    workflow.configure(settings, job, reporter=quiet())
    runs = {}

    def state(name: str) -> dict[str, Any]:
        listed = workflow.status(settings, job, reporter=quiet())["gpubox"]["runs"]
        found: dict[str, Any] = next(run for run in listed if run["run_id"] == runs[name].run_id)
        return found

    def launch(name: str, gpus: int) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "fails.txt").write_text("1 CUDA error: uncorrectable ECC error encountered\n")
        runs[name] = Job(job.cube_root, str(tmp_path / name), tasks=("attempts",), detach=True,
                         run_id=workflow.new_run_id(), gpus_needed=gpus, run_retries=2)
        workflow.run(settings, runs[name], reporter=quiet())

    leases_dir.mkdir(mode=0o1777)
    leases_dir.chmod(0o1777)
    try:
        with open(leases_dir / "gpu-0.lease", "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # another run (here: this test) holds GPU 0
            launch("moved", 1)
            deadline = time.monotonic() + 120
            while (seen := state("moved"))["state"] != "retrying" or not seen["attempts"]:
                assert seen["state"] in ("running", "retrying", "starting"), seen
                assert time.monotonic() < deadline, f"no retry waiting: {seen}"
            shown = subprocess.run([str(VENV_BIN / "mlcube-ssh-ansible"), "status", f"--mlcube={cube}"],
                                   capture_output=True, text=True, env=user_env(), timeout=300)
        deadline = time.monotonic() + 120
        while (seen := state("moved"))["state"] not in ENDED:
            assert time.monotonic() < deadline, f"the retry did not run: {seen}"
        launch("stuck", 2)
        deadline = time.monotonic() + 120
        while (stuck := state("stuck"))["state"] not in ENDED:
            assert time.monotonic() < deadline, f"the run did not end: {stuck}"
        logs = subprocess.run([str(VENV_BIN / "mlcube-ssh-ansible"), "logs", f"--mlcube={cube}",
                               f"--workspace={tmp_path / 'stuck'}", "--run", runs["stuck"].run_id],
                              capture_output=True, text=True, env=user_env(), timeout=300)
    finally:
        workflow.cancel(settings, job, reporter=quiet())
    assert shown.returncode == 0, shown.stderr
    assert f"gpubox: {runs['moved'].run_id} retrying (attempt 2 of 3 next, " in shown.stdout
    assert "gpubox:   attempt 1: exit code 11 on gpu 1, device fault: gpu 1 the task's output says " \
           "'uncorrectable ECC error'" in shown.stdout.splitlines()
    assert (seen["state"], seen["rc"], [(a["devices"], a["cause"]) for a in seen["attempts"]]) == (
        "succeeded", 0, [({"gpus": [1]}, "device"), ({"gpus": [0]}, None)])
    assert (stuck["state"], stuck["rc"], len(stuck["attempts"])) == ("failed", 11, 1)
    assert stuck["attempts"][0]["faulty"] == [0, 1]
    assert "no retry: no GPU left for the retry on this host: it needs 2 other than gpu 0, gpu 1, and there are 0" \
        in logs.stdout + logs.stderr
