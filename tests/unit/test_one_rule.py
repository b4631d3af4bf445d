"""Rules that must live in two places (Python and a role) say the same in both."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlcube_ssh_ansible.render import DEFAULT_EXCLUDES
from mlcube_ssh_ansible.settings import CONTROLLER_NAMES

ROLES = Path(__file__).resolve().parent.parent.parent / "roles"


def _yaml(path: Path) -> dict:  # type: ignore[type-arg]
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_preflight_role_refuses_the_names_settings_refuse() -> None:
    role = _yaml(ROLES / "mlcube_ssh_preflight" / "vars" / "main.yml")["_mlcube_ssh_preflight_controller_names"]
    assert sorted(role) == sorted(CONTROLLER_NAMES)
    tasks = (ROLES / "mlcube_ssh_preflight" / "tasks" / "main.yml").read_text()
    assert "in _mlcube_ssh_preflight_controller_names" in tasks


def test_the_upload_role_defaults_exclude_what_the_runner_excludes() -> None:
    defaults = _yaml(ROLES / "mlcube_ssh_upload" / "defaults" / "main.yml")["mlcube_ssh_excludes"]
    spec = _yaml(ROLES / "mlcube_ssh_upload" / "meta" / "argument_specs.yml")
    assert defaults == list(DEFAULT_EXCLUDES)
    assert spec["argument_specs"]["main"]["options"]["mlcube_ssh_excludes"]["default"] == list(DEFAULT_EXCLUDES)
