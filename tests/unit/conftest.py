"""Unit-test fixtures shared by the fingerprint and upload-record tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def cube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny local cube (mlcube.yaml, workspace/in.txt), with the local records kept under tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "cube"
    (root / "workspace").mkdir(parents=True)
    (root / "mlcube.yaml").write_text("name: c\n")
    (root / "workspace" / "in.txt").write_text("x")
    return root
