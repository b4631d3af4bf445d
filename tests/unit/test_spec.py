"""One spec per setting (mlcube_ssh_ansible/spec.yml): everything derived from it says what it says."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from mlcube_ssh_ansible import spec
from mlcube_ssh_ansible.errors import SettingsError
from mlcube_ssh_ansible.render import DEFAULT_EXCLUDES, Job, render
from mlcube_ssh_ansible.settings import parse_settings

ROOT = Path(__file__).resolve().parent.parent.parent
ROLES = ROOT / "roles"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_every_generated_file_is_what_the_spec_generates() -> None:
    """The golden test: a file edited by hand (or a spec edit without --write) fails here."""
    stale = [str(path.relative_to(ROOT)) for path, text in spec.generated_files(ROOT).items()
             if not path.is_file() or path.read_text() != text]
    assert not stale, f"run `python -m mlcube_ssh_ansible.spec --write` (or edit spec.yml instead): {stale}"


def test_the_generator_reports_and_repairs_a_drifted_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for part in ("roles", "docs"):
        shutil.copytree(ROOT / part, tmp_path / part, symlinks=True)
    page = tmp_path / "docs" / "configuration.md"
    good, bad = "| `connect_timeout` | integer | 10 |", "| `connect_timeout` | integer | 30 |"
    page.write_text(page.read_text().replace(good, bad))
    defaults = tmp_path / "roles" / "mlcube_ssh_fetch" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text().replace("reconnect_timeout: 600", "reconnect_timeout: 60"))
    assert spec.main(["--root", str(tmp_path)]) == 1
    assert capsys.readouterr().out.split() == ["differs", "from", "the", "spec:", str(defaults),
                                               "differs", "from", "the", "spec:", str(page)]
    assert bad in page.read_text()  # checking changes nothing
    assert spec.main(["--root", str(tmp_path), "--write"]) == 0
    assert good in page.read_text() and bad not in page.read_text()
    assert "mlcube_ssh_reconnect_timeout: 600" in defaults.read_text()
    assert spec.main(["--root", str(tmp_path)]) == 0


@pytest.mark.parametrize("role", spec.role_names())
def test_role_defaults_pass_ansibles_own_validation_of_the_argument_specs(role: str) -> None:
    """Ansible's ArgumentSpecValidator (what validate_argument_spec runs) accepts each role's defaults."""
    own = _yaml(ROLES / role / "defaults" / "main.yml") or {}
    playbooks = spec.playbook_entry_points() if role == "mlcube_ssh_preflight" else {}
    for entry_point, entry in _yaml(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"].items():
        options = entry.get("options") or {}
        # A playbook's entry point covers its other roles too: their defaults are theirs.
        defaults = {name: value for other in playbooks.get(entry_point, ())
                    for name, value in (_yaml(ROLES / other / "defaults" / "main.yml") or {}).items()} | own
        given = {name: defaults[name] for name in options if name in defaults}
        given.update({name: "/x" for name, option in options.items() if option.get("required")})
        # As the validate_argument_spec action calls it.
        result = ArgumentSpecValidator(options).validate(given, validate_role_argument_spec=True)
        assert not result.error_messages, (role, entry_point, result.error_messages)
        for name, option in options.items():  # the defaults file and the argument specs agree
            assert option.get("default") == defaults.get(name), (role, name)


def test_a_required_variable_has_no_default_anywhere() -> None:
    """A default would satisfy `required` (role defaults count as given), so Ansible would never ask for it."""
    required = {name for name, entry in spec.variables().items() if entry.get("required")}
    assert {"mlcube_ssh_tasks", "mlcube_ssh_local_root", "mlcube_ssh_remote_name"} <= required
    for role in spec.role_names():
        assert not required & set(_yaml(ROLES / role / "defaults" / "main.yml") or {}), role


def test_the_shims_defaults_are_the_roles_defaults() -> None:
    """What settings.py makes of a section that sets nothing is what the roles assume when nothing is set."""
    settings = parse_settings({"host": "gpu1", "platform": "docker", "interpreter": {"type": "virtualenv",
                                                                                      "requirements": "mlcube"}})
    inventory, extravars = render(settings, Job("/cube", "/cube/workspace", ("hello",)))
    rendered = {**inventory["all"]["vars"], **extravars, "mlcube_ssh_hosts": "all"}
    compared = 0
    for name, entry in spec.variables().items():
        if "setting" in entry and name in rendered and name != "mlcube_ssh_requirements":
            assert rendered[name] == entry["default"], name
            compared += 1
    assert compared >= 14
    assert rendered["mlcube_ssh_excludes"] == spec.variable("mlcube_ssh_excludes")["default"] == list(DEFAULT_EXCLUDES)


def test_the_shim_passes_only_declared_variables() -> None:
    """Every mlcube_ssh_* variable the shim sets (inventory, extra-vars) is in the spec, so in the argument specs."""
    declared = set(spec.variables())
    source = "\n".join(path.read_text() for path in (ROOT / "mlcube_ssh_ansible").rglob("*.py")
                       if "ansible_collections" not in path.parts)
    passed = set(re.findall(r'"(mlcube_ssh_[a-z_]+)"\s*:', source))
    passed |= set(re.findall(r'\[\s*"(mlcube_ssh_[a-z_]+)"\s*\]\s*=', source))
    passed -= set(spec.role_names())  # report.py's role -> step table
    assert {"mlcube_ssh_remote_root", "mlcube_ssh_follow_cursor", "mlcube_ssh_pip_wheel"} <= passed
    assert passed <= declared, passed - declared
    for name in declared:
        entry = spec.variable(name)
        assert entry.get("roles") or entry.get("playbooks"), f"{name} is declared for no role or playbook"


def test_the_playbooks_fall_back_to_the_spec_defaults() -> None:
    found = 0
    for playbook in (ROOT / "playbooks").glob("*.yml"):
        for name, fallback in re.findall(r"(mlcube_ssh_[a-z_]+) \| default\(([^()]*)\)", playbook.read_text()):
            assert yaml.safe_load(fallback) == spec.variable(name)["default"], (playbook.name, name, fallback)
            found += 1
    assert found >= 10


def test_every_setting_key_is_checked_and_documented() -> None:
    """Each key of the spec is one settings.py accepts, and each has a docs table."""
    section = {"host": "gpu1", "platform": "docker", "interpreter": {"type": "system"}}
    for key, entry in spec.spec()["settings"].items():
        assert entry.get("table") and entry.get("allowed"), key
        top, _, sub = key.partition(".")
        if not sub:
            with pytest.raises(SettingsError) as raised:
                parse_settings({**section, top + "x": 1})
            assert top in str(raised.value)  # the near miss is suggested, so the key is known
    for name, entry in spec.variables().items():
        assert entry.get("table") in ("host", "command") and entry.get("description"), name


@pytest.mark.parametrize(("key", "good", "bad"), [
    ("remote_root", ["~", "~/a", "/srv/mlcube", "/a/..b/c"], ["a", "~user/x", "/a/../b", "~/..", "/a b", "/a;b"]),
    ("interpreter.name", ["venv", "v-1.2_x"], ["-x", ".x", "a/b", ""]),
    ("interpreter.python", ["python3", "/opt/py/bin/python"], ["-c", "python 3"]),
    ("remote_group", ["lab", "lab.users", "m$"], ["1lab", "lab; id"]),
])
def test_one_format_for_python_and_the_preflight_role(key: str, good: list[str], bad: list[str]) -> None:
    """The preflight role checks with the very pattern settings.py uses (Python's re in both), from the spec."""
    rule = spec.setting_format(key)
    checks = {check["var"]: check for check in _yaml(ROLES / "mlcube_ssh_preflight" / "vars" / "main.yml")[
        "_mlcube_ssh_preflight_formats"]}
    variable = next(name for name, entry in spec.variables().items() if entry.get("setting") == key)
    assert checks[variable]["pattern"] == rule.pattern and checks[variable]["says"] == rule.says
    for text in good:
        assert rule.matches(text), text
    for text in bad:
        assert not rule.matches(text), text


def test_the_docs_name_the_numbers_and_lists_the_code_uses() -> None:
    """`${...}` in a docs text is filled from the same spec entry settings.py reads: no second copy to drift."""
    from mlcube_ssh_ansible import settings

    page = (ROOT / "docs" / "configuration.md").read_text()
    [forks] = [line for line in page.splitlines() if line.startswith("| `forks` |")]
    assert f"`auto`: {settings.CONFIGURE_FORKS} for `configure`" in forks
    assert f"at least {settings.MIN_AUTO_FORKS} and at most {settings.MAX_AUTO_FORKS}" in forks
    [platform] = [line for line in page.splitlines() if line.startswith("| `platform_settings` |")]
    assert ", ".join(f"`{key}`" for key in settings.DOCKER_PLATFORM_KEYS) in platform
    assert ", ".join(f"`{key}`" for key in settings.DOCKER_BUILD_STRATEGIES) in platform
    assert not [line for line in page.splitlines() if line.startswith("|") and "${" in line]
    with pytest.raises(SettingsError, match="must be an Ansible host pattern without spaces"):
        parse_settings({"inventory": str(ROOT / "README.md"), "hosts": "gpu gpu2", "platform": "docker",
                        "interpreter": {"type": "system"}})


def test_every_role_is_generated_from_the_spec() -> None:
    """A new role gets its argument specs from spec.yml too; none keeps a hand-written copy."""
    assert set(spec.role_names()) == {path.name for path in ROLES.iterdir() if (path / "tasks").is_dir()}
    for role in spec.role_names():
        assert (ROLES / role / "meta" / "argument_specs.yml").read_text().startswith("---\n# " + spec.GENERATED)
