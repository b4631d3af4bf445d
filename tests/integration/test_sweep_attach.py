"""`sweep-attach` (issue 15, part 2): following a sweep to its end, fetching each run as it ends, and re-placing the
waiting runs of a host that dropped; on two real hosts (sshd on loopback, one of them with an sshd of its own that
the test stops and starts again), one declared GPU each."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from mlcube_ssh_ansible import records, sweep_workflow, sweeps, workflow
from mlcube_ssh_ansible.render import Job, remote_name
from mlcube_ssh_ansible.report import Reporter
from tests.hosts import Sshd, SshHost, example_cube, make_user, mlcube_settings

from .conftest import VENV_BIN, platform_settings, user_env

pytestmark = pytest.mark.integration

# The hold task: a run whose `hold` parameter is .../yes waits for the file `go` in its times folder (the test
# makes it); every run then records the GPUs it was given.
HOLD_SCRIPT = """set -eu
bb=/bin/busybox
shift
for arg in "$@"; do
    case "$arg" in
        --hold=*) hold="${arg#*=}" ;;
        --times_dir=*) times_dir="${arg#*=}" ;;
    esac
done
"$bb" mkdir -p "$times_dir"
if [ "$("$bb" basename "$hold")" = yes ]; then
    while [ ! -e "$times_dir/go" ]; do "$bb" sleep 0.2; done
fi
printf '%s\\n' "${CUDA_VISIBLE_DEVICES-unset}" > "$times_dir/devices.txt"
"""


@pytest.fixture(scope="session")  # once per worker
def dropping_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An sshd of this module alone (its own port): the test stops it (the host drops) and starts it again."""
    with Sshd.start(["127.0.0.7"], tmp_path_factory.mktemp("dropping-sshd")) as server:
        yield server


def hold_cube(tmp_path: Path) -> Path:
    cube = example_cube(tmp_path)
    (cube / "build" / "hello.sh").write_text(HOLD_SCRIPT)
    config = yaml.safe_load((cube / "mlcube.yaml").read_text())
    config["docker"]["image"] = "mlcube-ssh-ansible/hold:0.1"
    config["tasks"] = {"hold": {"parameters": {"outputs": {
        "hold": {"type": "file", "default": "hold/no"}, "times_dir": {"type": "directory", "default": "times"}}}}}
    (cube / "mlcube.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return cube


def settings_of(tmp_path: Path, hosts: dict[str, SshHost], monkeypatch: pytest.MonkeyPatch) -> Path:
    """An inventory of the hosts, GPU 0 declared on each, a leases folder of its own each (they are one machine)."""
    suffix = uuid.uuid4().hex[:8]
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {name: {
        "ansible_host": host.address, "ansible_port": host.port, "ansible_user": host.user.name,
        "ansible_ssh_private_key_file": str(host.user.identity_file), "mlcube_ssh_gpus": [0],
        "mlcube_ssh_docker_gpus": False, "mlcube_ssh_leases_dir": f"/tmp/mlcube-ssh-leases-attach-{suffix}-{name}"}
        for name, host in hosts.items()}}}))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(host.known_hosts.read_text() for host in hosts.values()))
    settings = mlcube_settings(next(iter(hosts.values())))
    platform = settings["platforms"]["ssh-ansible"]
    for key in ("host", "port", "authentication"):
        del platform[key]
    platform.update(inventory=str(inventory), known_hosts=str(known_hosts), hosts="all", connect_timeout=3)
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(path))
    return path


def wait_for(what: str, check: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.5)
    return found


def test_attach_fetches_every_run_and_replaces_a_dropped_hosts_waiting_runs(
        tmp_path: Path, ssh_host: SshHost, dropping_sshd: Sshd, ssh_keys: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Four runs needing the one GPU of each of two hosts: two run (held until the test lets them end), one waits on
    each host. The host `drops` stops answering while `sweep-attach` follows the sweep: its waiting run is placed
    again on `stable` (same run id, same results folder). When `drops` answers again, the copy there is cancelled
    before it ever started. Every run then succeeds, its results come back into its own folder as it ends, and the
    manifest has each run's host, exit code and output checksums."""
    hosts = {"stable": ssh_host, "drops": dropping_sshd.host("127.0.0.7", make_user("mlcube-peer", ssh_keys))}
    cube = hold_cube(tmp_path)
    settings_path = settings_of(tmp_path, hosts, monkeypatch)
    settings = platform_settings(settings_path)
    job = Job(str(cube), str(cube / "workspace"), tasks=("hold",))
    workflow.configure(settings, job, reporter=Reporter(write=lambda _: None))
    parameters = sweeps.expand([], sweeps.parse_grid(["hold=h1/yes,h2/yes,h3/no,h4/no"]))
    manifest = sweep_workflow.sweep(settings, dataclasses.replace(job, run_retries=1), parameters, need_gpus=1,
                                    write=lambda _: None)
    assert manifest["run_retries"] == 1
    sweep_id = manifest["sweep_id"]
    assert sorted((run["host"], run["state"]) for run in manifest["runs"]) == [
        ("drops", "queued"), ("drops", "running"), ("stable", "queued"), ("stable", "running")]
    moved = next(run for run in manifest["runs"] if run["host"] == "drops" and run["state"] == "queued")

    def run_dir(host: str, run_id: str) -> Path:
        return Path(hosts[host].user.home, "mlcube", ".mlcube-ssh-ansible", remote_name(str(cube)), "runs", run_id)

    attach = None
    try:
        dropping_sshd.stop()  # `drops` stops answering; its runs go on (the machine is up)
        dropping_sshd.reset_connections()
        attach = subprocess.Popen(
            [str(VENV_BIN / "mlcube-ssh-ansible"), "sweep-attach", f"--mlcube={cube}", "--sweep", sweep_id,
             "--replace-after", "0", "--poll", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
            env={**user_env(), "MLCUBE_SYSTEM_SETTINGS": str(settings_path)})

        def moved_entry() -> dict[str, Any] | None:
            entry = next(run for run in sweeps.load_manifest(str(cube), sweep_id)["runs"]
                         if run["run_id"] == moved["run_id"])
            return entry if entry["host"] == "stable" else None

        replaced = wait_for("the waiting run re-placed", moved_entry)
        assert replaced["moved_from"] == ["drops"]
        assert not (run_dir("drops", moved["run_id"]) / "cancelled").exists()
        dropping_sshd.restart()  # `drops` answers again: the copy it still holds is cancelled there
        wait_for("the copy on drops cancelled", lambda: (run_dir("drops", moved["run_id"]) / "cancelled").exists())
        for run in manifest["runs"]:  # let the held runs end
            if run["parameters"]["hold"].endswith("/yes"):
                folder = run_dir(run["host"], run["run_id"])
                times = Path((folder / "workspace").read_text().strip(), "times")
                times.mkdir(parents=True, exist_ok=True)
                (times / "go").touch()
                owner = folder.stat()
                for path in (times, times / "go"):
                    os.chown(path, owner.st_uid, owner.st_gid)
        out, err = attach.communicate(timeout=600)
    finally:
        if attach is not None and attach.poll() is None:
            attach.kill()
        dropping_sshd.restart()
        workflow.cancel(settings, job, reporter=Reporter(write=lambda _: None))
    assert attach.returncode == 0, out + err
    assert f"run {moved['run_id']}: re-placed from drops (unreachable) on stable" in out
    final = sweeps.load_manifest(str(cube), sweep_id)
    for run in final["runs"]:
        assert (run["state"], run["exit_code"]) == ("succeeded", 0), run
        devices = Path(run["results"], "times", "devices.txt")
        assert devices.read_text() == "0\n", run  # fetched into the run's own folder
        assert {"path": "times/devices.txt", "size": 2, "sha256": records.sha256(devices)} in run["outputs"]
    entry = next(run for run in final["runs"] if run["run_id"] == moved["run_id"])
    assert (entry["host"], entry["moved_from"], entry["cancelled_on"]) == ("stable", ["drops"], ["drops"])
    assert (run_dir("stable", moved["run_id"]) / "retries").read_text() == "1"  # as the sweep gave it
    # The copy on `drops` never started: cancelled while it waited, no devices taken, nothing written.
    copy = run_dir("drops", moved["run_id"])
    assert (copy / "cancelled").exists() and not (copy / "started").exists() and not (copy / "devices").exists()
    assert not Path((copy / "workspace").read_text().strip(), "times", "devices.txt").exists()
