"""The wheel carries the playbooks, roles and callback plugin: an installed package finds what it runs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from mlcube_ssh_ansible import assets

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_every_playbook_role_file_and_plugin(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("mlcube_ssh_ansible-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "mlcube_ssh_ansible/" + str(path.relative_to(ROOT))
        for folder in ("playbooks", "roles")
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    expected |= {"mlcube_ssh_ansible/callback_plugins/mlcube_ssh_lifeline.py", "mlcube_ssh_ansible/py.typed"}
    assert expected <= names, sorted(expected - names)
    assert any(name.endswith("entry_points.txt") and b"mlcube-ssh-ansible" in zipfile.ZipFile(wheel).read(name)
               for name in names)


def test_assets_resolve_inside_the_package() -> None:
    assert assets.playbook("run").is_file() and assets.playbook("configure").is_file()
    assert (assets.roles_dir() / "mlcube_ssh_upload" / "meta" / "argument_specs.yml").is_file()
    assert (assets.callback_plugins_dir() / "mlcube_ssh_lifeline.py").is_file()
