"""What gets uploaded: git's own ignore rules (negations included), .mlcubeignore, the workspace."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlcube_ssh_ansible import workflow
from mlcube_ssh_ansible.render import Job, remote_name
from mlcube_ssh_ansible.report import Reporter
from tests.hosts import SshHost, example_cube, remote

from .conftest import platform_settings

pytestmark = pytest.mark.integration


def test_gitignore_and_mlcubeignore_are_honoured(tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    cube = example_cube(tmp_path)
    (cube / "build" / ".gitignore").unlink()  # the example keeps busybox out of *our* repo; this cube needs it
    (cube / ".gitignore").write_text("*.ckpt\n!keep.ckpt\ndata/raw/\nworkspace/\n")
    (cube / ".mlcubeignore").write_text("secret.txt\n")
    for name in ("big.ckpt", "keep.ckpt", "data/raw/x.bin", "data/clean.csv", "secret.txt", "workspace/secret.txt"):
        (cube / name).parent.mkdir(parents=True, exist_ok=True)
        (cube / name).write_text(name)
    subprocess.run(["git", "init", "-q", str(cube)], check=True)

    settings = platform_settings(settings_file(ssh_host))
    workflow.configure(settings, Job(str(cube), str(cube / "workspace")), reporter=Reporter(write=lambda _: None))

    remote_dir = f"{ssh_host.user.home}/mlcube/{remote_name(str(cube))}"
    found = set(remote(ssh_host, "find", remote_dir, "-type", "f", "-printf", "%P\n", check=True).stdout.split())
    assert {"keep.ckpt", "data/clean.csv", "workspace/name.txt", "mlcube.yaml"} <= found
    # The cube's .mlcubeignore applies in the workspace too (it is sent in a transfer of its own).
    assert not found & {"big.ckpt", "data/raw/x.bin", "secret.txt", "workspace/secret.txt"}, found
