"""Fleets on real hosts: the user's own inventory (groups, group_vars), patterns, parallel fan-out,
per-host results with a manifest, and partial failure with a dead host."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from mlcube_ssh_ansible.render import remote_name
from tests.hosts import SshHost, example_cube, free_port, mlcube_settings, remote

from .conftest import MlcubeCli

pytestmark = pytest.mark.integration


def write_inventory(tmp_path: Path, fleet: list[SshHost], *, groups: dict[str, list[int]],
                    dead: bool = False) -> Path:
    """An ops team's inventory folder: INI groups, per-host connection vars and a group_vars file."""
    folder = tmp_path / "inventory"
    (folder / "group_vars").mkdir(parents=True)
    lines = []
    for group, members in groups.items():
        lines.append(f"[{group}]")
        for index in members:
            host = fleet[index]
            lines.append(f"node{index + 1} ansible_host={host.address} ansible_user={host.user.name} "
                         f"ansible_ssh_private_key_file={host.user.identity_file}")
    if dead:
        lines += ["[gpu]", f"dead ansible_host=127.0.0.6 ansible_port={free_port('127.0.0.6')}"]
    lines += ["[all:vars]", f"ansible_port={fleet[0].port}"]
    (folder / "hosts.ini").write_text("\n".join(lines) + "\n")
    # A per-group override of one of our settings, the way ops teams keep them.
    (folder / "group_vars" / "gpu.yml").write_text("mlcube_ssh_remote_root: ~/fleet-cubes\n")
    return folder


def fleet_settings(monkeypatch: pytest.MonkeyPatch, fleet: list[SshHost], inventory: Path, tmp_path: Path,
                   **extra: object) -> Path:
    """Settings that point at the inventory instead of one host; connection details come from it."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(host.known_hosts.read_text() for host in fleet))
    settings = mlcube_settings(fleet[0])
    platform = settings["platforms"]["ssh-ansible"]
    for key in ("host", "port", "authentication"):
        del platform[key]
    platform.update(inventory=str(inventory), known_hosts=str(known_hosts), **extra)
    path = tmp_path / "mlcube-fleet-settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(path))
    return path


def test_group_runs_in_parallel_with_per_host_results(tmp_path: Path, fleet: list[SshHost],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     mlcube_cli: MlcubeCli) -> None:
    inventory = write_inventory(tmp_path, fleet, groups={"gpu": [0, 1, 2], "spare": [3]})
    fleet_settings(monkeypatch, fleet, inventory, tmp_path, hosts="gpu")
    cube = example_cube(tmp_path)
    name = remote_name(str(cube))

    configured = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode == 0, configured.stdout + configured.stderr
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")
    assert ran.returncode == 0, ran.stdout + ran.stderr

    hosts_dir = cube / "workspace" / "hosts"
    manifest = json.loads((hosts_dir / "manifest.json").read_text())
    assert sorted(manifest["hosts"]) == ["node1", "node2", "node3"]
    for node in ("node1", "node2", "node3"):
        greeting = hosts_dir / node / "greeting.txt"
        assert greeting.read_text() == "Hello, World!\n"
        entry = manifest["hosts"][node]
        assert entry["exit_code"] == 0 and entry["duration_s"] > 0
        [output] = [o for o in entry["outputs"] if o["path"] == "greeting.txt"]
        assert output["sha256"] == hashlib.sha256(greeting.read_bytes()).hexdigest()
    # A fleet's report is a summary; each host's task output is in a file whose folder is printed.
    [output_line] = [line for line in ran.stdout.splitlines() if line.startswith("task output: ")]
    output_dir = Path(output_line.split()[2].rsplit("/", 1)[0])
    for node in ("node1", "node2", "node3"):
        assert "Hello, World!" in (output_dir / f"{node}.log").read_text()
    assert "Hello, World!" not in ran.stdout
    assert f"results: {hosts_dir}/<host>/ (3 hosts)" in ran.stdout.splitlines(), ran.stdout
    assert "remote run: 3 changed" in ran.stdout.splitlines(), ran.stdout
    assert len(ran.stdout.splitlines()) <= 15, ran.stdout
    assert not (cube / "workspace" / "greeting.txt").exists()  # nothing overwrote anything
    # group_vars/gpu.yml moved the gpu group's cubes; the spare host outside the pattern was not touched.
    for index in (0, 1, 2):
        listing = remote(fleet[index], "ls", f"{fleet[index].user.home}/fleet-cubes", check=True).stdout
        assert name in listing
    spare = fleet[3]
    assert remote(spare, "test", "-e", f"{spare.user.home}/fleet-cubes/{name}").returncode != 0
    assert remote(spare, "test", "-e", f"{spare.user.home}/mlcube/{name}").returncode != 0

    # More hosts than forks: the tasks still run on every host at once (launched detached before any is
    # followed), and every host's output and results still come back.
    fleet_settings(monkeypatch, fleet, inventory, tmp_path, hosts="gpu", forks=1)
    (cube / "workspace" / "seconds.txt").write_text("3\n")
    slept = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=sleep")
    assert slept.returncode == 0, slept.stdout + slept.stderr
    runs = json.loads((hosts_dir / "manifest.json").read_text())["hosts"]
    assert sorted(runs) == ["node1", "node2", "node3"] and all(runs[n]["tasks"] == ["sleep"] for n in runs)
    starts = [datetime.datetime.fromisoformat(runs[n]["started"]) for n in runs]
    ends = [datetime.datetime.fromisoformat(runs[n]["ended"]) for n in runs]
    assert max(starts) < min(ends), runs  # all three ran at the same time, with one fork
    for node in ("node1", "node2", "node3"):
        assert (hosts_dir / node / "slept.txt").is_file()


def test_dead_host_fails_alone_and_quickly(tmp_path: Path, fleet: list[SshHost], monkeypatch: pytest.MonkeyPatch,
                                           mlcube_cli: MlcubeCli) -> None:
    inventory = write_inventory(tmp_path, fleet, groups={"gpu": [0, 1]}, dead=True)
    fleet_settings(monkeypatch, fleet, inventory, tmp_path, hosts="gpu", connect_timeout=5)
    cube = example_cube(tmp_path)

    configured = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")
    assert configured.returncode != 0
    assert "dead at check: unreachable" in configured.stdout, configured.stdout
    ran = mlcube_cli("run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=hello")

    assert ran.returncode != 0
    assert "run failed on 1 host(s): dead at check: unreachable" in ran.stdout, ran.stdout
    assert "dead: retry 2/2 after: unreachable" in ran.stdout  # transient failures get retries, shown
    # ... and no more: a closed port is given up on after them (no clock: the count of retries says it).
    assert ran.stdout.count("dead: retry ") == 2, ran.stdout
    for node in ("node1", "node2"):
        assert (cube / "workspace" / "hosts" / node / "greeting.txt").read_text() == "Hello, World!\n"
    manifest = json.loads((cube / "workspace" / "hosts" / "manifest.json").read_text())
    assert manifest["hosts"]["dead"]["failed_step"] == "check"


def test_bad_per_host_values_fail_at_check_naming_the_variable(tmp_path: Path, fleet: list[SshHost],
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               mlcube_cli: MlcubeCli) -> None:
    """host_vars get past settings.py: the roles' argument specs and the preflight role's formats (both from
    spec.yml) refuse them on their host, before anything is created there, one line per host naming the key."""
    inventory = write_inventory(tmp_path, fleet, groups={"gpu": [0, 1, 2]})
    (inventory / "host_vars").mkdir()
    bad = {"node1": {"mlcube_ssh_remote_root": "~/my cubes"},
           "node2": {"mlcube_ssh_interpreter_type": "conda"},
           "node3": {"mlcube_ssh_requirements": ["mlcube", "--index-url=http://mirror"]}}
    for node, values in bad.items():
        (inventory / "host_vars" / f"{node}.yml").write_text(yaml.safe_dump(values))
    fleet_settings(monkeypatch, fleet, inventory, tmp_path, hosts="gpu")
    cube = example_cube(tmp_path)

    configured = mlcube_cli("configure", f"--mlcube={cube}", "--platform=ssh-ansible")

    output = configured.stdout + configured.stderr
    assert configured.returncode != 0, output
    [summary] = [line for line in configured.stdout.splitlines() if "configure failed on 3 host(s)" in line]
    for node, values in bad.items():
        [variable] = values
        assert f"{node} at check" in summary and variable in summary, summary
    assert '"~/my cubes" must be absolute or start with ~/' in summary, summary
    assert "system, virtualenv" in summary and "is a pip option" in summary, summary
    name = remote_name(str(cube))
    for index in (0, 1, 2):  # refused before anything was created there
        home = fleet[index].user.home
        assert remote(fleet[index], "test", "-e", f"{home}/fleet-cubes/{name}").returncode != 0
        assert remote(fleet[index], "test", "-e", f"{home}/my cubes").returncode != 0
