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


def _omegaconf_specs() -> dict[str, str]:
    import tomllib
    import yaml

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
