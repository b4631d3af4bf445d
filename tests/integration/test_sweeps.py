"""Sweeps (issue 15, part 2): many runs from one command, placed over the fleet's slots, started or queued on the
hosts by one play, with a manifest; on two real hosts (sshd on loopback, Docker) with two declared GPUs each."""

from __future__ import annotations

import datetime
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from mlcube_ssh_ansible import sweep_workflow, sweeps, workflow
from mlcube_ssh_ansible.render import Job, remote_name
from mlcube_ssh_ansible.report import Reporter
from mlcube_ssh_ansible.settings import Settings
from tests.hosts import SshHost, example_cube, mlcube_settings

from .conftest import VENV_BIN, platform_settings, user_env

pytestmark = pytest.mark.integration

# The record task: writes its parameters (the names of its lr and bs outputs: MLCube task parameters are
# paths), the GPUs it was given and its start and end (seconds), sleeping in between.
RECORD_SCRIPT = """set -eu
bb=/bin/busybox
task="$1"
shift
for arg in "$@"; do
    case "$arg" in
        --seconds_file=*) seconds_file="${arg#*=}" ;;
        --lr=*) lr="${arg#*=}" ;;
        --bs=*) bs="${arg#*=}" ;;
        --record=*) record="${arg#*=}" ;;
    esac
done
start="$("$bb" date +%s)"
"$bb" sleep "$("$bb" cat "$seconds_file")"
printf 'lr=%s bs=%s devices=%s start=%s end=%s\\n' "$("$bb" basename "$lr")" "$("$bb" basename "$bs")" \\
    "${CUDA_VISIBLE_DEVICES-unset}" "$start" "$("$bb" date +%s)" > "$record"
echo "$task done"
"""


def record_cube(tmp_path: Path) -> Path:
    cube = example_cube(tmp_path)
    (cube / "build" / "hello.sh").write_text(RECORD_SCRIPT)
    config = yaml.safe_load((cube / "mlcube.yaml").read_text())
    config["docker"]["image"] = "mlcube-ssh-ansible/record:0.1"
    config["tasks"] = {"record": {"parameters": {
        "inputs": {"seconds_file": {"type": "file", "default": "seconds.txt"}},
        "outputs": {"lr": {"type": "file", "default": "lr/none"}, "bs": {"type": "file", "default": "bs/none"},
                    "record": {"type": "file", "default": "record.txt"}}}}}
    (cube / "mlcube.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (cube / "workspace" / "seconds.txt").write_text("4")
    return cube


def two_gpu_hosts(tmp_path: Path, fleet: list[SshHost], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings with an inventory of two hosts, each with GPUs 0 and 1 declared and a leases folder of its own
    (both "hosts" are this machine), without docker --gpus (no GPU driver here)."""
    suffix = uuid.uuid4().hex[:8]
    hosts = {}
    for number, host in enumerate(fleet[:2], start=1):
        hosts[f"gpu{number}"] = {
            "ansible_host": host.address, "ansible_port": host.port, "ansible_user": host.user.name,
            "ansible_ssh_private_key_file": str(host.user.identity_file), "mlcube_ssh_gpus": [0, 1],
            "mlcube_ssh_docker_gpus": False, "mlcube_ssh_leases_dir": f"/tmp/mlcube-ssh-leases-sweep-{suffix}-{number}"}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(host.known_hosts.read_text() for host in fleet[:2]))
    settings = mlcube_settings(fleet[0])
    platform = settings["platforms"]["ssh-ansible"]
    for key in ("host", "port", "authentication"):
        del platform[key]
    platform.update(inventory=str(inventory), known_hosts=str(known_hosts), hosts="all")
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(path))
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "mlcube-ssh-ansible"), *args], capture_output=True, text=True,
                          env=user_env(), timeout=600, stdin=subprocess.DEVNULL)


def seconds(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp).timestamp()


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory, fleet: list[SshHost]) -> Iterator[tuple[Path, Settings, Job]]:
    """The record cube configured on the two GPU hosts, for every test of this module."""
    tmp_path = tmp_path_factory.mktemp("sweeps")
    with pytest.MonkeyPatch.context() as monkeypatch:
        cube = record_cube(tmp_path)
        settings = platform_settings(two_gpu_hosts(tmp_path, fleet, monkeypatch))
        job = Job(str(cube), str(cube / "workspace"), tasks=("record",))
        workflow.configure(settings, job, reporter=Reporter(write=lambda _: None))
        yield cube, settings, job


def test_a_grid_sweep_fills_the_free_gpus_queues_the_rest_and_records_every_run(
        configured: tuple[Path, Settings, Job], fleet: list[SshHost]) -> None:
    """2 x 3 runs needing one GPU each on two hosts with two GPUs each: four start at once, two are queued on the
    hosts and start there by themselves when a GPU is free; no two runs hold one GPU at once; every run ran with
    its own parameters and GPU, and the manifest lists each with its host, devices and exit code."""
    cube, settings, job = configured

    # A bad value fails at once, naming the parameter, before any host is touched (no sweep folder either).
    bad = cli("sweep", f"--mlcube={cube}", "--need-gpus", "1", "--grid", "lr=0.1,a b")
    assert bad.returncode == 2, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "'lr'" in bad.stderr and "'a b'" in bad.stderr
    assert not (cube / "sweeps").exists()
    # A run that no host can ever run (3 GPUs, hosts have 2) is refused after reading the slots, before any start.
    refused = cli("sweep", f"--mlcube={cube}", "--need-gpus", "3", "--grid", "lr=lr/0.1")
    assert refused.returncode == 2, refused.stderr
    assert "run 1" in refused.stderr and "needs 3 GPU(s)" in refused.stderr
    assert not (cube / "sweeps").exists()

    started = cli("sweep", f"--mlcube={cube}", "--need-gpus", "1", "--grid", "lr=lr/0.1,lr/0.01",
                  "--grid", "bs=bs/16,bs/32,bs/64", "--retries-on-failure", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    manifest = sweeps.load_manifest(str(cube))
    sweep_id = manifest["sweep_id"]
    runs = manifest["runs"]
    assert [run["parameters"] for run in runs] == [{"lr": f"lr/{lr}", "bs": f"bs/{bs}"}
                                                   for lr in ("0.1", "0.01") for bs in (16, 32, 64)]
    assert sorted(run["placed"] for run in runs) == ["free slot"] * 4 + ["queued"] * 2
    assert sorted(run["host"] for run in runs) == ["gpu1"] * 3 + ["gpu2"] * 3
    assert sorted(run["state"] for run in runs) == ["queued"] * 2 + ["running"] * 4
    assert f"sweep {sweep_id}: 6 run(s) on 2 host(s): 2 queued, 4 running" in started.stdout

    # The hosts run the queue: the controller only asks (sweep-status) until every run has ended.
    deadline = time.monotonic() + 300
    while any(run["state"] not in sweeps.ENDED_STATES for run in runs):
        assert time.monotonic() < deadline, f"the sweep did not end: {runs}"
        time.sleep(2)
        runs = sweep_workflow.sweep_status(settings, job, sweep_id, write=lambda _: None)["runs"]
    shown = cli("sweep-status", f"--mlcube={cube}", "--fetch")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    manifest = json.loads(sweeps.manifest_path(str(cube), sweep_id).read_text())
    runs = manifest["runs"]
    assert [(run["state"], run["exit_code"], run["attempts"]) for run in runs] == [("succeeded", 0, 1)] * 6
    assert (manifest["run_retries"], manifest["tasks"]) == (1, ["record"])
    for run in runs:
        assert f"{run['run_id']} on {run['host']}: succeeded (exit code 0) on gpu {run['devices']['gpus'][0]}" \
            in shown.stdout
        record = dict(field.split("=") for field in (Path(run["results"]) / "record.txt").read_text().split())
        # Each run ran with its own parameters and the GPU its host leased it, which the manifest names.
        assert (record["lr"], record["bs"]) == (run["parameters"]["lr"].split("/")[1],
                                                 run["parameters"]["bs"].split("/")[1])
        assert [int(record["devices"])] == run["devices"]["gpus"]
        run["task"] = (int(record["start"]), int(record["end"]))
        outputs = {output["path"]: output for output in run["outputs"]}
        assert len(outputs["record.txt"]["sha256"]) == 64
        assert Path(run["results"]).parent == sweeps.sweep_dir(str(cube), sweep_id)
    # No two runs held one GPU at once (the run folders' times, from when the lease was taken to the end), and
    # the queued runs started after a run on their host had ended: on their own, the controller was not there.
    for host in ("gpu1", "gpu2"):
        on_host = [run for run in runs if run["host"] == host]
        for gpu in (0, 1):
            held = sorted((seconds(run["started"]), seconds(run["ended"]), run["task"]) for run in on_host
                          if run["devices"]["gpus"] == [gpu])
            for (_, end, task), (start, _, next_task) in zip(held, held[1:]):
                assert end <= start and task[1] <= next_task[0], held
        first_end = min(seconds(run["ended"]) for run in on_host if run["placed"] == "free slot")
        assert all(seconds(run["started"]) >= first_end for run in on_host if run["placed"] == "queued")
    # The sweep's folders are never uploaded: the remote cube has no sweeps/ content.
    remote_cube = Path(fleet[0].user.home, "mlcube", remote_name(str(cube)))
    assert (remote_cube / "mlcube.yaml").is_file() and not list(remote_cube.glob("sweeps/*/*"))
    # Each run had a remote workspace of its own, with the cube's input hard-linked into it, not copied.
    state = Path(fleet[0].user.home, "mlcube", ".mlcube-ssh-ansible", remote_name(str(cube)))
    on_first = [run for run in runs if run["host"] == "gpu1"]
    inputs = [state / "workspaces" / remote_name(run["results"]) / "seconds.txt" for run in on_first]
    assert {path.stat().st_ino for path in inputs} == {(remote_cube / "workspace" / "seconds.txt").stat().st_ino}
    assert len({path.parent for path in inputs}) == 3


def test_a_sweep_from_a_file_of_runs_is_cancelled_queued_runs_first(
        configured: tuple[Path, Settings, Job], fleet: list[SshHost]) -> None:
    """A CSV file of five runs that sleep long (an input path per run): four take the GPUs, one is queued;
    sweep-cancel stops all five, the queued one without ever starting (no GPU, no record), and every GPU is free
    again."""
    cube, settings, job = configured
    (cube / "workspace" / "long.txt").write_text("600")
    runs_file = cube.parent / "runs.csv"
    runs_file.write_text("seconds_file,lr\n" + "".join(f"long.txt,lr/{number}\n" for number in range(5)))
    started = cli("sweep", f"--mlcube={cube}", "--need-gpus", "1", "--runs", str(runs_file))
    assert started.returncode == 0, started.stdout + started.stderr
    sweep_id = started.stdout.split("sweep ", 1)[1].split(":", 1)[0]
    manifest = sweeps.load_manifest(str(cube), sweep_id)
    assert [run["parameters"] for run in manifest["runs"]] == [{"seconds_file": "long.txt", "lr": f"lr/{number}"}
                                                               for number in range(5)]
    assert sorted(run["state"] for run in manifest["runs"]) == ["queued"] + ["running"] * 4
    # The slots play sees the line: no GPU free, and the queued run waiting on its host (placement counts it).
    [queued_host] = [run["host"] for run in manifest["runs"] if run["state"] == "queued"]
    found = sweep_workflow.read_slots(settings, job, lambda _: None)
    assert {host: (slots.free_gpus, slots.waiting) for host, slots in found.items()} == {
        host: (0, int(host == queued_host)) for host in ("gpu1", "gpu2")}

    stopped = cli("sweep-cancel", f"--mlcube={cube}", "--sweep", sweep_id)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    lines = stopped.stdout.splitlines()
    for run in manifest["runs"]:  # the queued one's supervisor left the line: stopped, with no container
        said = [line for line in lines if line.startswith(f"{run['host']}: run {run['run_id']} ")]
        assert said == [f"{run['host']}: run {run['run_id']} stopped"] if run["state"] == "queued" else \
            len(said) == 1 and said[0].split(" ", 3)[3].startswith("stopped"), lines
    assert f"sweep {sweep_id}: 5 run(s) on 2 host(s): 5 cancelled" in stopped.stdout
    manifest = sweeps.load_manifest(str(cube), sweep_id)
    queued = [run for run in manifest["runs"] if run["placed"] == "queued"]
    assert len(queued) == 1 and queued[0]["devices"] is None and queued[0]["attempts"] == 0
    found = sweep_workflow.read_slots(settings, job, lambda _: None)
    assert {host: slots.free_gpus for host, slots in found.items()} == {"gpu1": 2, "gpu2": 2}
