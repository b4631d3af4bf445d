"""The collection mlcube.ssh as ops teams get it: `ansible-galaxy collection build`, installed with
`ansible-galaxy collection install`, documented by ansible-doc, and run with plain
`ansible-playbook mlcube.ssh.<playbook>` against a real host, outside the checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest
import yaml

from mlcube_ssh_ansible.render import remote_name
from tests.hosts import REPO_ROOT, SshHost, example_cube

from .conftest import VENV_BIN, render_cube, user_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built artifact, installed into a collections path of its own; the path."""
    build = tmp_path_factory.mktemp("build")
    built = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(build),
                            str(REPO_ROOT)], capture_output=True, text=True, check=False, cwd=build)
    assert built.returncode == 0, built.stdout + built.stderr
    [artifact] = build.glob("mlcube-ssh-*.tar.gz")
    collections = tmp_path_factory.mktemp("collections")
    # --no-deps: the dependency ansible.posix comes with the `ansible` package here (Galaxy is unreachable).
    done = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p",
                           str(collections), str(artifact)], capture_output=True, text=True, check=False,
                          cwd=build, env=environment(collections))
    assert done.returncode == 0, done.stdout + done.stderr
    root = collections / "ansible_collections" / "mlcube" / "ssh"
    assert (root / "MANIFEST.json").is_file() and not (root / "mlcube_ssh_ansible").exists()
    assert not (root / "tests" / "unit").exists() and not (root / "benchmarks").exists()  # build_ignore
    return collections


def environment(collections: Path) -> dict[str, str]:
    """A user's environment with only the installed collection on the collections path (and, through
    sys.path, the `ansible` package's ansible.posix); run from outside the checkout, whose ansible.cfg
    would add the package's copy."""
    return {**user_env(), "ANSIBLE_COLLECTIONS_PATH": str(collections)}


def test_ansible_doc_documents_every_module_of_the_installed_collection(installed: Path, tmp_path: Path) -> None:
    root = installed / "ansible_collections" / "mlcube" / "ssh"
    modules = sorted(f"mlcube.ssh.{path.stem}" for path in (root / "plugins" / "modules").glob("*.py"))
    assert {"mlcube.ssh.launch", "mlcube.ssh.follow", "mlcube.ssh.synchronize"} <= set(modules)
    for name in modules:  # one call each, as a user types it
        shown = subprocess.run([str(VENV_BIN / "ansible-doc"), name], capture_output=True, text=True,
                               check=False, cwd=tmp_path, env=environment(installed))
        assert shown.returncode == 0 and "EXAMPLES" in shown.stdout and "RETURN VALUES" in shown.stdout, \
            f"{name}: {shown.stderr}"
        assert str(root / "plugins" / "modules") in shown.stdout, f"{name}: not the installed copy"
    for kind, name in (("lookup", "mlcube.ssh.secret"), ("callback", "mlcube.ssh.lifeline")):
        shown = subprocess.run([str(VENV_BIN / "ansible-doc"), "--json", "-t", kind, name], capture_output=True,
                               text=True, check=False, cwd=tmp_path, env=environment(installed))
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)[name]["doc"]["filename"].startswith(str(root)), name


def test_ansible_playbook_runs_a_cube_from_the_installed_collection(
        installed: Path, tmp_path: Path, ssh_host: SshHost, settings_file: Callable[..., Path]) -> None:
    cube = example_cube(tmp_path)
    settings_file(ssh_host)
    rendered = render_cube(cube, tmp_path / "rendered")
    inventory, extravars = rendered / "inventory.yml", rendered / "extravars.yml"

    def playbook(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(VENV_BIN / "ansible-playbook"), f"mlcube.ssh.{name}", "-i", str(inventory),
                               "-e", f"@{extravars}", *extra], capture_output=True, text=True, check=False,
                              cwd=tmp_path, env=environment(installed), timeout=600, stdin=subprocess.DEVNULL)

    for name in ("configure", "run"):
        played = playbook(name)
        assert played.returncode == 0, f"{name}:\n{played.stdout[-4000:]}\n{played.stderr[-2000:]}"
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, World!\n"

    # A task that fails fails the host after its workspace was fetched, and ansible-playbook's exit code says so.
    (cube / "workspace" / "greeting.txt").unlink()
    failed = playbook("run", "-e", json.dumps({"mlcube_ssh_tasks": ["fail"]}))
    assert failed.returncode == 2, failed.stdout[-4000:]
    recap = failed.stdout.split("PLAY RECAP", 1)[1]
    assert f"{ssh_host.address}" in recap and "failed=1" in recap, recap
    assert yaml.safe_load(extravars.read_text())["mlcube_ssh_tasks"] == ["hello"]  # the file is unchanged

    # A sweep by hand: host -> its runs, each in a workspace of its own (docs/runs.md); a bad run is refused by
    # name before any launch.
    leases = Path(f"/tmp/mlcube-ssh-leases-test-{uuid.uuid4().hex[:8]}")  # the remote user's, and this test's
    runs = {ssh_host.address: [{"run_id": "by-hand-001", "workspace_key": "by-hand-001", "task_args": [],
                                "gpus_needed": 0}]}
    swept = playbook("sweep", "-e", json.dumps({"mlcube_ssh_sweep_runs": runs, "mlcube_ssh_leases_dir": str(leases)}))
    assert swept.returncode == 0, swept.stdout[-4000:]
    state = Path(ssh_host.user.home, "mlcube", ".mlcube-ssh-ansible", remote_name(str(cube)))
    deadline = time.monotonic() + 120
    while not (state / "runs" / "by-hand-001" / "rc").exists():
        assert time.monotonic() < deadline, "the run started by hand did not end"
        time.sleep(0.5)
    assert (state / "runs" / "by-hand-001" / "rc").read_text().strip() == "0"
    assert (state / "workspaces" / "by-hand-001" / "greeting.txt").read_text() == "Hello, World!\n"
    runs[ssh_host.address][0].update(run_id="-bad", task_args=["name_file=a b"])
    refused = playbook("sweep", "-e", json.dumps({"mlcube_ssh_sweep_runs": runs}))
    assert refused.returncode == 2, refused.stdout[-4000:]
    assert 'mlcube_ssh_sweep_runs of 127.0.0.2: run_id \\"-bad\\" must use only' in refused.stdout
    assert 'task argument \\"name_file=a b\\" must look like name=value' in refused.stdout
    assert not (state / "runs" / "-bad").exists()
    shutil.rmtree(leases, ignore_errors=True)
