"""Real network faults on loopback, on sshds of this module's own (so resetting or stopping them hurts no other
test): reset connections (`ss -K` on the sshd's port) while a run is followed, during a large upload and a large
fetch; an sshd restart; a host that goes away for good; a run that dies. Each checks the exit code, the output,
the results and their checksums."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from mlcube_ssh_ansible.render import remote_name
from tests.hosts import DROP, Sshd, SshHost, example_cube, make_user, mlcube_settings

from .conftest import VENV_BIN, user_env
from .test_reliability import Spawned, kill_leftovers

pytestmark = pytest.mark.integration

CLI = VENV_BIN / "mlcube-ssh-ansible"
TICKS = 200  # lines the `count` task prints, one every 50 ms
PARTIAL_DIR = ".mlcube-ssh-partial"

COUNT_TASK = r"""
    count)
        n="$("$bb" cat "$count_file")"
        i=1
        while [ "$i" -le "$n" ]; do
            printf 'tick %s of %s\n' "$i" "$n"
            "$bb" usleep 50000
            i=$((i + 1))
        done
        printf 'counted %s\n' "$n" > "$counted"
        ;;
"""


@pytest.fixture(scope="session")  # once per worker, though its tests come interleaved with others
def own_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An sshd of this module alone (its own port): its connections are reset, it is restarted and stopped."""
    with Sshd.start(["127.0.0.9"], tmp_path_factory.mktemp("own-sshd")) as server:
        yield server


@pytest.fixture(scope="session")  # once per worker, though its tests come interleaved with others
def net_host(own_sshd: Sshd, ssh_keys: Path) -> SshHost:
    return own_sshd.host("127.0.0.9", make_user("mlcube-n1", ssh_keys))


@pytest.fixture
def live(own_sshd: Sshd) -> Iterator[Sshd]:
    """The module's sshd, listening again after the test whatever the test did to it."""
    yield own_sshd
    if own_sshd.process.poll() is not None:
        own_sshd.restart()


def ticker_cube(dest: Path, ticks: int = TICKS) -> Path:
    """The example cube plus a `count` task that prints `tick i of n` every 50 ms, in an image of its own."""
    cube = example_cube(dest)
    script = cube / "build" / "hello.sh"
    text = script.read_text()
    text = text.replace('slept=""\n', 'slept=""\ncount_file=""\ncounted=""\n', 1)
    text = text.replace('        *) die "unknown argument', '        --count_file=*) count_file="${arg#*=}" ;;\n'
                        '        --counted=*) counted="${arg#*=}" ;;\n        *) die "unknown argument', 1)
    text = text.replace("    sleep)\n", COUNT_TASK.lstrip("\n") + "    sleep)\n", 1)
    script.write_text(text)
    config = yaml.safe_load((cube / "mlcube.yaml").read_text())
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    config["docker"]["image"] = f"mlcube-ssh-ansible/ticker:{digest}"
    config["tasks"]["count"] = {"parameters": {"inputs": {"count_file": {"type": "file", "default": "count.txt"}},
                                               "outputs": {"counted": {"type": "file", "default": "counted.txt"}}}}
    (cube / "mlcube.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (cube / "workspace" / "count.txt").write_text(f"{ticks}\n")
    return cube


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=user_env(), timeout=timeout,
                          stdin=subprocess.DEVNULL)


def both(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def remote_dir(host: SshHost, cube: Path) -> str:
    return f"{host.user.home}/mlcube/{remote_name(str(cube))}"


def run_dirs(host: SshHost, cube: Path) -> list[Path]:
    return sorted(Path(host.user.home, "mlcube", ".mlcube-ssh-ansible", remote_name(str(cube)), "runs").glob("*"))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ticks(output: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"^(?:\[[^]]+\] )?tick (\d+) of \d+$", output, re.MULTILINE)]


def record_of(cube: Path) -> dict[str, Any]:
    [path] = sorted((cube / "workspace" / ".mlcube-ssh-ansible" / "runs").glob("*.json"))[-1:]
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def assert_outputs_match_the_record(cube: Path, host: SshHost, names: list[str]) -> None:
    """Every named output came back whole: in the run record with the local file's checksum, equal to the
    remote file's, and no partial-transfer folder is left in the local workspace."""
    [entry] = record_of(cube)["hosts"].values()
    recorded = {output["path"]: output["sha256"] for output in entry["outputs"]}
    for name in names:
        local = cube / "workspace" / name
        assert recorded.get(name) == sha256(local), (name, recorded)
        assert sha256(Path(remote_dir(host, cube), "workspace", name)) == sha256(local)
    assert not list((cube / "workspace").rglob(PARTIAL_DIR)), "a partial-transfer folder was left behind"


def reset_until_lost(run: Spawned, sshd: Sshd, tries: int = 20) -> None:
    """Reset the connections until the run says it lost one (a reset between two follow calls goes unnoticed:
    the next call just opens a new connection)."""
    seen = run.output.count("connection lost")
    for _ in range(tries):
        sshd.reset_connections()
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            if run.output.count("connection lost") > seen:
                return
            time.sleep(0.05)
    raise AssertionError(f"no reset was noticed: {run.output}")


def configured_ticker(tmp_path: Path, host: SshHost, settings_file: Any, **overrides: Any) -> Path:
    cube = ticker_cube(tmp_path)
    settings_file(host, **overrides)
    done = cli("configure", f"--mlcube={cube}")
    assert done.returncode == 0, both(done)
    return cube


# ------------------------------------------------------------------------------------------ following a run


def test_resets_while_following_resume_the_output_exactly(tmp_path: Path, net_host: SshHost, live: Sshd,
                                                          settings_file: Any) -> None:
    cube = configured_ticker(tmp_path, net_host, settings_file)
    run = Spawned("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=count")
    try:
        for at in (15, 100):  # twice: the second reset hits the connection the first reconnection opened
            assert run.wait_for(f"tick {at} of", timeout=300), run.output
            reset_until_lost(run, live)
            assert run.wait_for("reconnected after", timeout=120), run.output
        rc = run.finish(timeout=300)
    finally:
        run.kill()
        kill_leftovers(net_host, remote_dir(net_host, cube))

    assert rc == 0, run.output
    assert ticks(run.output) == list(range(1, TICKS + 1)), run.output  # nothing twice, nothing skipped
    assert "connection lost" in run.output and "reconnected after" in run.output, run.output
    assert (cube / "workspace" / "counted.txt").read_text() == f"counted {TICKS}\n"
    assert_outputs_match_the_record(cube, net_host, ["counted.txt"])
    assert record_of(cube)["hosts"][net_host.address]["exit_code"] == 0


def test_sshd_restart_while_following_is_ridden_out_and_the_tasks_own_exit_code_decides(
        tmp_path: Path, net_host: SshHost, live: Sshd, settings_file: Any) -> None:
    cube = configured_ticker(tmp_path, net_host, settings_file)
    run = Spawned("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=count,fail")
    try:
        assert run.wait_for("tick 20 of", timeout=300), run.output
        live.stop()  # the listener goes; sessions already open stay, as with a real restart ...
        assert live.reset_connections() > 0  # ... unless the network drops them meanwhile
        assert run.wait_for("connection lost", timeout=120), run.output
        live.restart()
        rc = run.finish(timeout=300)
    finally:
        run.kill()
        kill_leftovers(net_host, remote_dir(net_host, cube))

    assert rc == 3, run.output  # the `fail` task's exit code, not a connection error
    assert ticks(run.output) == list(range(1, TICKS + 1)), run.output
    assert "reconnected after" in run.output and "unreachable" not in run.output, run.output
    assert (cube / "workspace" / "fail_output" / "partial.txt").exists()
    assert record_of(cube)["hosts"][net_host.address]["exit_code"] == 3
    assert_outputs_match_the_record(cube, net_host, ["counted.txt"])


# ------------------------------------------------------------------------------------------ the limit, a host gone


def test_host_gone_for_good_is_reported_with_how_to_pick_the_run_up(tmp_path: Path, net_host: SshHost,
                                                                    live: Sshd, settings_file: Any) -> None:
    cube = configured_ticker(tmp_path, net_host, settings_file, reconnect_timeout=8)
    run = Spawned("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=count")
    try:
        assert run.wait_for("tick 10 of", timeout=300), run.output
        live.stop()
        assert live.reset_connections() > 0
        rc = run.finish(timeout=300)
        output = run.output
        assert rc != 0, output
        assert "gave up reconnecting" in output and "reconnect_timeout" in output, output
        assert "no exit code recorded yet" in output, output
        lost = record_of(cube)["hosts"][net_host.address]["connection_lost"]
        assert lost["reconnect_timeout_s"] == 8 and lost["last_output"], lost
        assert re.match(r"tick \d+ of", lost["last_output"][-1]), lost
        assert lost["pick_up"] in output and lost["pick_up"].startswith("mlcube-ssh-ansible attach "), output
        assert Path(run_dirs(net_host, cube)[-1], "pid").exists()  # the task was left running there

        live.restart()  # the host is back: the printed command picks the run up where it is
        argv = shlex.split(lost["pick_up"])
        picked = subprocess.run([str(CLI), *argv[1:]], capture_output=True, text=True, env=user_env(),
                                timeout=300, stdin=subprocess.DEVNULL)
    finally:
        run.kill()
        kill_leftovers(net_host, remote_dir(net_host, cube))
    assert picked.returncode == 0, both(picked)
    assert ticks(picked.stdout) == list(range(1, TICKS + 1))  # attach shows the whole log
    assert (cube / "workspace" / "counted.txt").read_text() == f"counted {TICKS}\n"
    assert_outputs_match_the_record(cube, net_host, ["counted.txt"])


def test_a_run_that_died_is_reported_as_such_with_its_last_output(tmp_path: Path, net_host: SshHost,
                                                                  live: Sshd, settings_file: Any) -> None:
    cube = configured_ticker(tmp_path, net_host, settings_file)
    run = Spawned("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=count")
    try:
        assert run.wait_for("tick 10 of", timeout=300), run.output
        run_dir = run_dirs(net_host, cube)[-1]
        group = int(Path(run_dir, "pid").read_text())
        supervisor = int(Path(f"/proc/{group}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(supervisor, signal.SIGKILL)  # as a reboot or the OOM killer would: no exit code is written
        os.killpg(group, signal.SIGKILL)
        kill_leftovers(net_host, remote_dir(net_host, cube))  # its container too
        rc = run.finish(timeout=300)
    finally:
        run.kill()
        kill_leftovers(net_host, remote_dir(net_host, cube))
    output = run.output
    assert rc != 0, output
    assert not Path(run_dir, "rc").exists()
    assert re.search(r"run died on \S+ without an exit code: its processes are gone.*last output: .*tick \d+ of",
                     output), output
    host = record_of(cube)["hosts"][net_host.address]
    assert host["died"]["rebooted"] is False and host["exit_code"] is None, host


# ---------------------------------------------------------------------------------------------- transfers


def big_file(path: Path, megabytes: int) -> None:
    with path.open("wb") as out:
        for _ in range(megabytes):
            out.write(os.urandom(1 << 20))


def wait_for_partial(folder: Path, name: str, timeout: float = 120) -> bool:
    """True once rsync is writing `name` in `folder` (its temporary file, or its partial folder)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(folder.glob(f".{name}.*")) + list(folder.glob(f"{PARTIAL_DIR}/*"))
        try:
            if any(path.stat().st_size > 0 for path in found):
                return True
        except OSError:
            pass
        time.sleep(0.005)
    return False


def test_reset_during_a_large_upload_resumes_it(tmp_path: Path, net_host: SshHost, live: Sshd,
                                                settings_file: Any) -> None:
    cube = configured_ticker(tmp_path, net_host, settings_file)
    (cube / "workspace" / "count.txt").write_text("3\n")
    big_file(cube / "data.bin", 300)
    upload = subprocess.Popen([str(CLI), "run", f"--mlcube={cube}", "--task=count"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=user_env(), stdin=subprocess.DEVNULL)
    try:
        assert wait_for_partial(Path(remote_dir(net_host, cube)), "data.bin")
        assert live.reset_connections() > 0
        output, _ = upload.communicate(timeout=600)
    finally:
        upload.kill()
        kill_leftovers(net_host, remote_dir(net_host, cube))
    assert upload.returncode == 0, output
    assert re.search(r"upload resumed after \d+ lost connection", output), output
    assert sha256(Path(remote_dir(net_host, cube), "data.bin")) == sha256(cube / "data.bin")
    assert not list(Path(remote_dir(net_host, cube)).rglob(PARTIAL_DIR))
    assert_outputs_match_the_record(cube, net_host, ["counted.txt"])


def test_reset_during_a_large_fetch_resumes_it(tmp_path: Path, net_host: SshHost, live: Sshd,
                                               settings_file: Any) -> None:
    cube = configured_ticker(tmp_path, net_host, settings_file)
    (cube / "workspace" / "count.txt").write_text("3\n")
    ran = cli("run", f"--mlcube={cube}", "--task=count")
    assert ran.returncode == 0, both(ran)
    big_file(Path(remote_dir(net_host, cube), "workspace", "big.bin"), 300)
    os.chown(Path(remote_dir(net_host, cube), "workspace", "big.bin"), *_ids(net_host))

    fetch = subprocess.Popen([str(CLI), "fetch", f"--mlcube={cube}"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=user_env(), stdin=subprocess.DEVNULL)
    try:
        assert wait_for_partial(cube / "workspace", "big.bin")
        assert live.reset_connections() > 0
        assert not (cube / "workspace" / "big.bin").exists()  # never half a file in place
        output, _ = fetch.communicate(timeout=600)
    finally:
        fetch.kill()
    assert fetch.returncode == 0, output
    assert re.search(r"fetch resumed after \d+ lost connection", output), output
    assert_outputs_match_the_record(cube, net_host, ["big.bin"])  # a fetch records what it moved


def _ids(host: SshHost) -> tuple[int, int]:
    stat = host.user.home.stat()
    return stat.st_uid, stat.st_gid


# ------------------------------------------------------------------------------------------------------ fleets


@pytest.fixture(scope="session")  # once per worker, though its tests come interleaved with others
def second_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with Sshd.start(["127.0.0.8"], tmp_path_factory.mktemp("second-sshd")) as server:
        yield server


def test_one_hosts_lost_connection_never_stalls_the_others(tmp_path: Path, net_host: SshHost, live: Sshd,
                                                           second_sshd: Sshd, ssh_keys: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    healthy = second_sshd.host("127.0.0.8", make_user("mlcube-n2", ssh_keys))
    cube = ticker_cube(tmp_path)
    inventory = tmp_path / "inventory.yml"
    hosts = {"sick": net_host, "healthy": healthy}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        name: {"ansible_host": h.address, "ansible_port": h.port, "ansible_user": h.user.name,
               "ansible_ssh_private_key_file": str(h.user.identity_file)} for name, h in hosts.items()}}}))
    known = tmp_path / "known_hosts"
    known.write_text(net_host.known_hosts.read_text() + healthy.known_hosts.read_text())
    # connect_timeout 3: the play goes on without a lost host after 9 s (3 x connect_timeout) and follows it
    # apart for the rest of reconnect_timeout.
    settings = mlcube_settings(net_host, inventory=str(inventory), known_hosts=str(known), reconnect_timeout=300,
                               connect_timeout=3, authentication=DROP)
    for key in ("host", "port"):
        del settings["platforms"]["ssh-ansible"][key]
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(tmp_path / "settings.yaml"))
    done = cli("configure", f"--mlcube={cube}")
    assert done.returncode == 0, both(done)

    run = Spawned("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=count")
    try:
        logs = wait_for_run_folder(cube)  # a fleet's task output goes to one file per host there
        assert wait_for_text(logs / "sick.log", "tick 10 of"), run.output
        # Both hosts print before the fault (on a loaded machine the healthy host's task may start later).
        assert wait_for_text(logs / "healthy.log", "tick 1 of"), run.output
        live.stop()
        assert live.reset_connections() > 0
        assert run.wait_for("sick: connection lost", timeout=120), run.output
        healthy_then = (logs / "healthy.log").read_text()
        # While the sick host is being retried, the healthy one goes on printing, to its end.
        assert wait_for_text(logs / "healthy.log", f"tick {TICKS} of"), run.output
        assert f"tick {TICKS} of" not in healthy_then
        # ... and its results come back while the sick host is still away.
        assert wait_for_text(cube / "workspace" / "hosts" / "healthy" / "counted.txt", f"counted {TICKS}"), run.output
        assert run.wait_for("sick: still not reachable; the other hosts went on", timeout=60), run.output
        assert "reconnected" not in run.output
        live.restart()
        rc = run.finish(timeout=300)
    finally:
        run.kill()
        kill_leftovers(net_host, remote_dir(net_host, cube))
        kill_leftovers(healthy, remote_dir(healthy, cube))
    assert rc == 0, run.output
    for name in hosts:
        assert ticks((logs / f"{name}.log").read_text()) == list(range(1, TICKS + 1)), name
        assert (cube / "workspace" / "hosts" / name / "counted.txt").read_text() == f"counted {TICKS}\n"


def wait_for_run_folder(cube: Path, timeout: float = 300) -> Path:
    runs = cube / "workspace" / ".mlcube-ssh-ansible" / "runs"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        folders = [path for path in runs.glob("*") if path.is_dir()]
        if folders:
            return folders[0]
        time.sleep(0.1)
    raise AssertionError(f"no run folder in {runs}")


def wait_for_text(path: Path, text: str, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False
