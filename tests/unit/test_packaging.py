"""The wheel carries the collection mlcube.ssh (playbooks, roles, plugins): an installed package finds what it runs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from mlcube_ssh_ansible import assets

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = "mlcube_ssh_ansible/ansible_collections/mlcube/ssh/"
# What the collection is made of: the repository root's galaxy.yml, meta/, plugins/, roles/ and playbooks/.
PARTS = ("galaxy.yml", "meta", "plugins", "roles", "playbooks")


def collection_files() -> set[str]:
    return {str(path.relative_to(ROOT)) for part in PARTS for path in [ROOT / part, *(ROOT / part).rglob("*")]
            if path.is_file() and "__pycache__" not in path.parts}


def test_wheel_ships_the_whole_collection(tmp_path: Path) -> None:
    """The collection, and spec.yml (settings.py reads it at import)."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("mlcube_ssh_ansible-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {COLLECTION + name for name in collection_files()} | {"mlcube_ssh_ansible/py.typed",
                                                                     "mlcube_ssh_ansible/ansible.cfg",
                                                                     "mlcube_ssh_ansible/spec.yml"}
    assert expected <= names, sorted(expected - names)
    assert any(name.endswith("entry_points.txt") and b"mlcube-ssh-ansible" in zipfile.ZipFile(wheel).read(name)
               for name in names)
    # Unpacked as pip would, Ansible finds every plugin of the collection through the package's ansible.cfg
    # (what `render` prints for an installed package).
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_COLLECTIONS_PATH")}
    env["ANSIBLE_CONFIG"] = str(tmp_path / "site" / "mlcube_ssh_ansible" / "ansible.cfg")
    listed = {}
    for kind in ("module", "lookup", "callback"):
        ran = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-t", kind, "-l", "mlcube.ssh"],
                             capture_output=True, text=True, check=False, cwd=tmp_path, env=env)
        assert ran.returncode == 0, ran.stderr
        listed[kind] = {line.split()[0] for line in ran.stdout.splitlines() if line.strip()}
    assert listed == {kind: {f"mlcube.ssh.{path.stem}" for path in (ROOT / "plugins" / folder).glob("*.py")}
                      for kind, folder in (("module", "modules"), ("lookup", "lookup"), ("callback", "callback"))}


def test_assets_resolve_inside_the_package() -> None:
    assert assets.playbook("run").is_file() and assets.playbook("configure").is_file()
    assert (assets.roles_dir() / "mlcube_ssh_upload" / "meta" / "argument_specs.yml").is_file()
    assert (assets.plugins_dir() / "callback" / "lifeline.py").is_file()
    found = {os.path.relpath(os.path.join(folder, name), assets.collection_dir())
             for folder, _, names in os.walk(assets.collection_dir(), followlinks=True) for name in names}
    assert {name for name in found if "__pycache__" not in name} == collection_files()


def test_the_collection_has_no_role_local_plugins_and_the_package_version() -> None:
    """Every plugin lives once, in plugins/ (no role's library/ or *_plugins/, no links between roles)."""
    assert not [path for path in ROOT.glob("roles/*/*") if path.name == "library" or path.name.endswith("_plugins")]
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    project = __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (galaxy["namespace"], galaxy["name"], galaxy["version"]) == ("mlcube", "ssh", project["version"])
    assert "ansible.posix" in galaxy["dependencies"]


def _omegaconf_specs() -> dict[str, str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [controller] = [dep for dep in project["optional-dependencies"]["mlcube"] if dep.startswith("omegaconf")]
    defaults = yaml.safe_load((ROOT / "roles/mlcube_ssh_python_env/defaults/main.yml").read_text())
    spec = yaml.safe_load((ROOT / "roles/mlcube_ssh_python_env/meta/argument_specs.yml").read_text())
    [uv] = [line for line in (ROOT / "overrides.txt").read_text().splitlines() if line and line[0] != "#"]
    return {"pyproject": controller, "role default": defaults["mlcube_ssh_pip_overrides"][0],
            "argument spec": spec["argument_specs"]["main"]["options"]["mlcube_ssh_pip_overrides"]["default"][0],
            "overrides.txt": uv}


def test_one_omegaconf_override_everywhere() -> None:
    specs = _omegaconf_specs()
    assert len(set(specs.values())) == 1, specs
    project = __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "mlcube" not in " ".join(project["dependencies"]), "no pip >= 24.1 can resolve mlcube 0.0.9"
    assert "omegaconf" not in " ".join(project["dependencies"]), "pip >= 24.1 can't process an installed 2.1.0"


CHECK = ROOT / "roles/mlcube_ssh_python_env/files/check_requirements.py"


def _check(requirements: list[str], overrides: list[str]) -> dict[str, object]:
    import json

    out = subprocess.run([sys.executable, str(CHECK), json.dumps({"requirements": requirements,
                                                                  "overrides": overrides})],
                         capture_output=True, text=True, check=True).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_check_requirements_applies_overrides_to_direct_dependencies() -> None:
    # This venv has mlcube 0.0.9 beside omegaconf 2.1.2 (installed as the README says).
    from importlib.metadata import version

    with_override = _check(["mlcube==0.0.9", "mlcube-docker==0.0.9"], ["omegaconf>=2.1,<2.2"])
    impossible_override = _check(["mlcube==0.0.9"], ["omegaconf==0.1"])
    without = _check(["mlcube==0.0.9"], [])
    missing_package = _check(["mlcube==0.0.9", "surely-not-installed-pkg==1.0"], ["omegaconf>=2.1,<2.2"])

    assert with_override["missing"] == [] and with_override["dependencies"] == []
    assert impossible_override["dependencies"] == ["omegaconf==0.1"]  # the override replaced mlcube's pin
    # mlcube's own pin: unsatisfied beside 2.1.2 (a fresh install), satisfied in a venv an older pip made
    assert without["dependencies"] == ([] if version("omegaconf") == "2.1.0" else ["omegaconf==2.1.0"])
    assert missing_package["missing"] == ["surely-not-installed-pkg==1.0"]
