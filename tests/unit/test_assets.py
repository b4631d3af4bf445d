"""The pip wheel the controller carries to the hosts (issue 11, point 1): cached once, or a one-line fix."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from mlcube_ssh_ansible import assets
from mlcube_ssh_ansible.errors import EnvironmentProblem


def test_the_wheel_is_downloaded_once_into_the_cache_and_then_reused(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    wheel = assets.pip_wheel()  # from this machine's index, as a user's controller would
    assert wheel == tmp_path / "mlcube-ssh-ansible" / "wheels" / "pip-24.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as opened:
        assert "pip-24.0.dist-info/METADATA" in opened.namelist()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a second call could not download: it must not need to
    assert assets.pip_wheel() == wheel
    assert [path.name for path in wheel.parent.iterdir()] == [wheel.name]  # no scratch folders left


def test_a_broken_cached_wheel_without_an_index_is_a_one_line_error_naming_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "mlcube-ssh-ansible" / "wheels"
    folder.mkdir(parents=True)
    (folder / assets.PIP_WHEEL).write_bytes(b"half a download")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing-here"))
    with pytest.raises(EnvironmentProblem) as raised:
        assets.pip_wheel()
    message = str(raised.value)
    assert "\n" not in message and raised.value.exit_code == 3
    assert f"put pip-24.0-py3-none-any.whl into {folder}" in message
    assert f"pip download pip==24.0 --no-deps -d {folder}" in message and "interpreter.type: system" in message
    shutil.rmtree(folder)
