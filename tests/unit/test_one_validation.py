"""Each playbook validates its variables once (issue 12): the preflight's entry point named after the playbook
covers every role entry point the playbook imports, and those are imported without a validation of their own
(each validation is a task, a worker fork per host on the controller)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlcube_ssh_ansible import spec

ROOT = Path(__file__).resolve().parents[2]
PREFLIGHT = "mlcube_ssh_preflight"


def _imports(playbook: str) -> list[dict]:
    plays = yaml.safe_load((ROOT / "playbooks" / f"{playbook}.yml").read_text())
    found = []
    for play in plays:
        for task in play.get("pre_tasks", []) + play.get("tasks", []) + play.get("post_tasks", []):
            if "ansible.builtin.import_role" in task:
                found.append(task["ansible.builtin.import_role"])
    return found


@pytest.mark.parametrize("playbook", sorted(spec.playbook_entry_points()))
def test_a_playbook_validates_once_in_its_preflight_entry_point(playbook: str) -> None:
    plays = yaml.safe_load((ROOT / "playbooks" / f"{playbook}.yml").read_text())
    assert not any("roles" in play for play in plays), "roles: cannot skip a role's own validation: import_role"
    imports = _imports(playbook)
    first, rest = imports[0], imports[1:]
    assert first == {"name": f"mlcube.ssh.{PREFLIGHT}", "tasks_from": playbook}
    assert (ROOT / "roles" / PREFLIGHT / "tasks" / f"{playbook}.yml").is_file()
    covered = spec.playbook_entry_points()[playbook]
    specs = {role: yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
             for role in spec.role_names()}
    for imported in rest:
        role, entry = imported["name"].split(".")[-1], imported.get("tasks_from", "main")
        assert imported.get("rolespec_validate") is False, (playbook, imported)
        entry = entry if entry in specs[role] else "main"  # a tasks file of the role's main (upload's transfer)
        # What the role entry point reads is validated by the preflight's (an entry point without variables
        # needs no cover).
        assert entry in covered.get(role, ()) or not specs[role][entry].get("options"), (playbook, role, entry)
    own = specs[PREFLIGHT][playbook]["options"]
    for role, entries in covered.items():
        for entry in entries:
            assert set(specs[role][entry].get("options") or {}) <= set(own), (playbook, role, entry)


def test_every_playbook_with_a_preflight_has_its_entry_point() -> None:
    for path in sorted((ROOT / "playbooks").glob("*.yml")):
        names = [imported["name"] for imported in _imports(path.stem)]
        if f"mlcube.ssh.{PREFLIGHT}" in names:
            assert path.stem in spec.playbook_entry_points(), path.name


def test_a_variable_several_entry_points_declare_is_written_once_and_aliased() -> None:
    """Ansible parses and deep-copies the preflight's argument specs at the start of every play: each variable's
    declaration is one YAML node, shared by every entry point that declares it (an anchor, then aliases)."""
    path = ROOT / "roles" / PREFLIGHT / "meta" / "argument_specs.yml"
    root = yaml.compose(path.read_text())
    nodes: dict[str, set[int]] = {}
    declared: dict[str, int] = {}
    for _, entry in next(value for key, value in root.value if key.value == "argument_specs").value:
        options = next(value for key, value in entry.value if key.value == "options")
        for key, value in options.value:
            nodes.setdefault(key.value, set()).add(id(value))
            declared[key.value] = declared.get(key.value, 0) + 1
    shared = [name for name, count in declared.items() if count > 1]
    assert len(shared) > 10
    assert {name: len(nodes[name]) for name in shared} == {name: 1 for name in shared}
    assert path.read_text().count(f"&{shared[0]}\n") == 1
