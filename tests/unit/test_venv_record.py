"""The record of mlcube.ssh.venv's last complete check: it answers while nothing its answer depends on changed.

On a local virtualenv with a stand-in pip (its module files and metadata, enough for check_requirements.py) and
packaging; the whole module on a real host is tests/integration/test_lean_calls.py."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import packaging
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
CHECK = (ROOT / "roles" / "mlcube_ssh_python_env" / "files" / "check_requirements.py").read_text()


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mlcube_ssh_venv_module", ROOT / "plugins" / "modules" / "venv.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VENV = load_module()


def dist_info(site: Path, name: str, version: str) -> Path:
    folder = site / f"{name}-{version}.dist-info"
    folder.mkdir()
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


@pytest.fixture()
def venv(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(virtualenv, its python, its site-packages) with pip 99.0 (a stand-in), packaging and fakepkg 1.0."""
    folder = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    shutil.copytree(Path(packaging.__file__).parent, site / "packaging")
    for package in ("pip", "pip/_internal", "pip/_internal/cli"):
        (site / package).mkdir()
        (site / package / "__init__.py").write_text("")
    (site / "pip" / "_internal" / "cli" / "main.py").write_text("")
    dist_info(site, "pip", "99.0")
    dist_info(site, "fakepkg", "1.0")
    return folder, python, site


def check_of(requirements: list[str]) -> tuple[str, str]:
    return CHECK, json.dumps({"requirements": requirements, "overrides": []})


def checked(folder: Path, python: Path, check: tuple[str, str]) -> dict[str, Any]:
    """A check by the environment's python, recorded as if it had started long after the last change."""
    state, found = VENV._check(str(python), check)
    assert state == "ok", found
    VENV._keep_record(str(folder), str(python), VENV._record_key(str(folder), check), found,
                      time.time_ns() + VENV.SETTLED_NS)
    return dict(found)


def test_a_complete_check_answers_from_its_record_until_site_packages_changes(venv: tuple[Path, Path, Path]) -> None:
    folder, python, site = venv
    check = check_of(["fakepkg==1.0"])
    found = checked(folder, python, check)
    assert found["missing"] == [] and found["pip"] == "99.0" and str(site) in found["path"]
    assert (folder / VENV.RECORD).is_file()
    key = VENV._record_key(str(folder), check)
    answer = VENV._recorded(str(folder), str(python), key)
    assert answer == {"missing": [], "dependencies": [], "pip": "99.0", "distutils": found["distutils"],
                      "purelib": found["purelib"], "checked": "record"}
    # Another check or input: another key.
    assert VENV._recorded(str(folder), str(python), VENV._record_key(str(folder), check_of(["other"]))) is None
    # What pip uninstall does: the package's metadata folder goes from site-packages.
    shutil.rmtree(site / "fakepkg-1.0.dist-info")
    assert VENV._recorded(str(folder), str(python), key) is None
    state, again = VENV._check(str(python), check)
    assert state == "ok" and again["missing"] == ["fakepkg==1.0"]


def test_an_upgrade_or_another_python_makes_the_record_not_match(venv: tuple[Path, Path, Path]) -> None:
    folder, python, site = venv
    check = check_of(["fakepkg==1.0"])
    key = VENV._record_key(str(folder), check)
    checked(folder, python, check)
    shutil.rmtree(site / "fakepkg-1.0.dist-info")
    dist_info(site, "fakepkg", "2.0")
    assert VENV._recorded(str(folder), str(python), key) is None
    checked(folder, python, check_of(["fakepkg==2.0"]))
    key = VENV._record_key(str(folder), check_of(["fakepkg==2.0"]))
    assert VENV._recorded(str(folder), str(python), key) is not None
    target = os.readlink(python)
    python.unlink()
    python.symlink_to(target)  # the same target, a new link (as `python -m venv --upgrade` makes)
    assert VENV._recorded(str(folder), str(python), key) is None


def test_a_check_close_to_a_change_or_incomplete_is_not_recorded(venv: tuple[Path, Path, Path]) -> None:
    folder, python, site = venv
    check = check_of(["fakepkg==1.0"])
    found = checked(folder, python, check)
    assert (folder / VENV.RECORD).is_file()
    (site / "new.pth").write_text("")
    # Started now: site-packages changed less than SETTLED_NS before, so a change during the check could go
    # unseen (the same time stamp); the old record is removed as well.
    VENV._keep_record(str(folder), str(python), VENV._record_key(str(folder), check), found, time.time_ns())
    assert not (folder / VENV.RECORD).exists()
    found = checked(folder, python, check)
    assert (folder / VENV.RECORD).is_file()
    VENV._keep_record(str(folder), str(python), VENV._record_key(str(folder), check), {},
                      time.time_ns() + VENV.SETTLED_NS)  # what main passes for a check that found something missing
    assert not (folder / VENV.RECORD).exists()


def test_a_damaged_record_or_other_environment_variables_mean_a_check(venv: tuple[Path, Path, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    folder, python, _site = venv
    check = check_of(["fakepkg==1.0"])
    key = VENV._record_key(str(folder), check)
    checked(folder, python, check)
    record = json.loads((folder / VENV.RECORD).read_text())
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    assert VENV._record_key(str(folder), check) != key
    monkeypatch.delenv("PYTHONPATH")
    assert VENV._record_key(str(folder), check) == key
    for damaged in ("", "{", "[]", json.dumps({**record, "signature": []}),
                    json.dumps({**record, "signature": record["signature"][3:]}),
                    json.dumps({**record, "answer": {"pip": None}})):
        (folder / VENV.RECORD).write_text(damaged)
        assert VENV._recorded(str(folder), str(python), key) is None, damaged
    (folder / VENV.RECORD).write_text(json.dumps(record))
    assert VENV._recorded(str(folder), str(python), key) is not None
    # A folder holding only a virtualenv's entries and the record is still safe to remove and create again.
    (folder / "pyvenv.cfg").unlink()
    assert VENV._looks_like_venv(str(folder))
