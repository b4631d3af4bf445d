"""The role variable tables in docs/ansible.md say what the roles' argument specs say (names and defaults)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
ROW = re.compile(r"^\| `(mlcube_ssh_[a-z_]+)` \| [^|]+ \| ([^|]+) \|")


def spec_defaults() -> dict[str, list[Any]]:
    """Variable -> the defaults every role entry point that declares it gives it."""
    found: dict[str, list[Any]] = {}
    for spec_file in (ROOT / "roles").glob("*/meta/argument_specs.yml"):
        for entry in yaml.safe_load(spec_file.read_text())["argument_specs"].values():
            for name, option in (entry.get("options") or {}).items():
                found.setdefault(name, []).append(option.get("default"))
    return found


def test_documented_role_variables_exist_with_their_documented_defaults() -> None:
    specs = spec_defaults()
    rows = [ROW.match(line) for line in (ROOT / "docs" / "ansible.md").read_text().splitlines()]
    documented = {m.group(1): m.group(2).strip() for m in rows if m}
    assert len(documented) > 30
    playbook_only = {"mlcube_ssh_hosts", "mlcube_ssh_serial", "mlcube_ssh_max_fail_percentage"}
    assert set(documented) - playbook_only <= set(specs), set(documented) - playbook_only - set(specs)
    checked = 0
    for name, cell in documented.items():
        scalar = re.fullmatch(r"`([^`]*)`", cell)
        if name in playbook_only or not scalar or " " in scalar.group(1):
            continue  # "required", lists shown as words, prose
        value = yaml.safe_load(scalar.group(1)) if scalar.group(1) else ""
        for default in specs[name]:
            assert value == default, (name, cell, default)
        checked += 1
    assert checked > 15


def test_reconnect_timeout_is_one_default_everywhere() -> None:
    """settings.py, the roles' defaults and argument specs, and docs/configuration.md give the same default."""
    from mlcube_ssh_ansible.settings import DEFAULT_RECONNECT_TIMEOUT, parse_settings

    assert parse_settings({"host": "gpu1", "platform": "docker", "interpreter": {"type": "system"}}
                          ).reconnect_timeout == DEFAULT_RECONNECT_TIMEOUT
    roles = ("mlcube_ssh_upload", "mlcube_ssh_fetch", "mlcube_ssh_remote_run")
    for role in roles:
        defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
        assert defaults["mlcube_ssh_reconnect_timeout"] == DEFAULT_RECONNECT_TIMEOUT, role
    found = spec_defaults()["mlcube_ssh_reconnect_timeout"]  # + follow, fetch sweep, the playbooks' preflights
    assert found == [DEFAULT_RECONNECT_TIMEOUT] * len(found) and len(found) >= 5, found
    row = re.search(r"^\| `reconnect_timeout` \| integer \| (\d+) \|", (ROOT / "docs" / "configuration.md").read_text(),
                    re.MULTILINE)
    assert row and int(row.group(1)) == DEFAULT_RECONNECT_TIMEOUT


def test_the_docs_settings_tables_are_the_spec() -> None:
    """docs/configuration.md, ansible.md and migration.md carry every table generated from spec.yml, unedited."""
    from mlcube_ssh_ansible import spec

    pages = {page: (ROOT / "docs" / page).read_text() for page in spec.DOC_PAGES}
    for name, lines in spec.doc_tables().items():
        block = "\n".join([spec.TABLE_START.format(name=name), *lines, spec.TABLE_END])
        assert sum(block in text for text in pages.values()) == 1, f"table {name}: run spec.py --write"
    for text in pages.values():
        assert spec.fill_tables(text) == text
    documented = "\n".join(pages.values())
    for key in spec.spec()["settings"]:
        assert f"| `{key}` |" in documented, key
    for name in spec.variables():
        assert f"| `{name}` |" in documented, name


SETTING_ROW = re.compile(r"^\| `([a-z_.]+)` \| [^|]+ \| ([^|]+) \|", re.MULTILINE)


def test_the_documented_setting_defaults_are_what_settings_py_gives() -> None:
    """Read apart from the generator: the Default column against what parse_settings makes of an empty key."""
    from mlcube_ssh_ansible.settings import parse_settings

    parsed = parse_settings({"host": "gpu1", "platform": "docker", "interpreter": {"type": "system"}})
    rows = dict(SETTING_ROW.findall((ROOT / "docs" / "configuration.md").read_text()))
    checked = 0
    for key, cell in rows.items():
        cell = cell.strip()
        attribute = key.rpartition(".")[2]
        holder = parsed.interpreter if key.startswith("interpreter.") else parsed
        if key == "interpreter.type" or not hasattr(holder, attribute):
            continue
        value = getattr(holder, attribute)
        value = "auto" if key == "forks" and value is None else value  # Settings.forks: None means auto
        if re.fullmatch(r"\d+", cell) or re.fullmatch(r"`[^`]*`", cell):
            assert str(value).lower() == cell.strip("`"), (key, cell, value)
            checked += 1
        elif cell == "empty":
            assert not value, (key, value)
            checked += 1
    assert checked >= 15, checked
