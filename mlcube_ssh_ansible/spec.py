"""The one definition of every setting and role variable (spec.yml), and what is derived from it.

settings.py validates with the defaults, ranges, choices and formats read here. The roles' argument specs
and defaults, the preflight role's format checks and the docs' settings tables are written from the same
spec by ``python -m mlcube_ssh_ansible.spec --write`` (``--check`` says which file differs); a unit test
fails when any of them differs, so a setting cannot drift apart again.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Mapping

import yaml

SPEC_FILE = Path(__file__).resolve().parent / "spec.yml"
GENERATED = "Generated from mlcube_ssh_ansible/spec.yml by `python -m mlcube_ssh_ansible.spec --write`: edit that."
# Docs tables live between these markers; the generator replaces what is between them.
TABLE_START = "<!-- spec:{name} (generated from mlcube_ssh_ansible/spec.yml; edit that, then --write) -->"
TABLE_END = "<!-- spec:end -->"
ROLE_PREFIX = "mlcube_ssh_"
DOC_PAGES = ("configuration.md", "ansible.md", "migration.md")


@dataclass(frozen=True)
class Format:
    """A pattern a value must match, and the words that complete "<value> ..." when it does not."""

    name: str
    pattern: str
    says: str

    def matches(self, value: str) -> bool:
        return re.match(self.pattern, value) is not None


@cache
def spec() -> dict[str, Any]:
    """spec.yml as loaded: read once per process, by libyaml when PyYAML has it (every command imports the
    settings, which read the spec: ~65 ms of CPU with the pure-Python loader, ~8 ms with libyaml)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loaded = yaml.load(SPEC_FILE.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 (a safe loader)
    assert isinstance(loaded, dict)
    return loaded


def setting(key: str) -> dict[str, Any]:
    """One platform-section key (dotted for nested ones, e.g. `interpreter.type`)."""
    found: dict[str, Any] = spec()["settings"][key]
    return found


def default(key: str) -> Any:
    """The default of a platform-section key (None when it has none)."""
    return setting(key).get("default")


def fmt(name: str) -> Format:
    """A named format of spec.yml."""
    entry = spec()["formats"][name]
    return Format(name, entry["pattern"], entry["says"])


def setting_format(key: str) -> Format:
    """The format a platform-section key's value (or each of its words) must match."""
    return fmt(setting(key)["format"])


def keys(prefix: str = "") -> tuple[str, ...]:
    """The keys of the platform section (prefix ''), or of one of its mappings (prefix 'interpreter.')."""
    found: list[str] = []
    for key in spec()["settings"]:
        if prefix and key.startswith(prefix):
            found.append(key[len(prefix):])
        elif not prefix and key.split(".")[0] not in found:
            found.append(key.split(".")[0])
    return tuple(found)


def controller_names() -> frozenset[str]:
    """Names that synchronize treats as the controller itself (it would copy locally, without SSH)."""
    return frozenset(spec()["controller_names"])


def variable(name: str) -> dict[str, Any]:
    """A role variable with what it takes from its setting (default, choices, format) filled in."""
    entry = dict(spec()["variables"][name])
    if "setting" in entry:
        source = setting(entry["setting"])
        for field in ("default", "choices", "format"):
            if field in source and field not in entry:
                entry[field] = source[field]
    return entry


def variables() -> dict[str, dict[str, Any]]:
    """Every role variable, in spec order."""
    return {name: variable(name) for name in spec()["variables"]}


# ------------------------------------------------------------------------------------------------ roles


def markup(text: str) -> str:
    """Markdown of the spec -> Ansible's doc markup: `code` -> C(code), [text](link) -> text."""
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    return re.sub(r"`([^`]+)`", r"C(\1)", text)


def _option(entry: Mapping[str, Any]) -> dict[str, Any]:
    option: dict[str, Any] = {"type": entry["type"]}
    if "elements" in entry:
        option["elements"] = entry["elements"]
    if entry.get("required"):
        option["required"] = True
    elif "default" in entry:
        option["default"] = entry["default"]
    if "choices" in entry:
        option["choices"] = list(entry["choices"])
    text = markup(" ".join(entry["description"].split()))
    option["description"] = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
    return option


def role_names() -> tuple[str, ...]:
    """The roles whose argument specs and defaults are generated: every role of the collection."""
    return tuple(spec()["roles"])


def argument_specs(role: str) -> dict[str, Any]:
    """A role's meta/argument_specs.yml: its entry points' descriptions and the variables each declares.

    An entry point with `validates` (the preflight role's, one per playbook) declares every variable of the
    entry points it names: the playbook validates them all once, there, and imports its other roles with
    `rolespec_validate: false` (each validation is a task, a worker fork per host).

    A variable declared by several entry points is one object, written once as a YAML anchor (named after the
    variable) and then as aliases: Ansible parses and deep-copies the preflight's file, all of whose entry
    points declare most variables, at the start of every play, and aliases are parsed and copied once."""
    entries: dict[str, Any] = {}
    shared = {name: _option(entry) for name, entry in variables().items()}
    for entry_point, about in spec()["roles"][role].items():
        covered = about.get("validates") or {role: [entry_point]}
        options = {name: shared[name] for name, entry in variables().items()
                   if any(point in entry.get("roles", {}).get(other, ())
                          for other, points in covered.items() for point in points)}
        entries[entry_point] = {**{key: value for key, value in about.items() if key != "validates"},
                                "options": options}
    return {"argument_specs": entries}


def playbook_entry_points() -> dict[str, dict[str, list[str]]]:
    """Preflight entry point (named after its playbook) -> the role entry points whose variables it validates."""
    return {name: dict(about["validates"]) for name, about in spec()["roles"]["mlcube_ssh_preflight"].items()
            if "validates" in about}


def role_defaults(role: str) -> dict[str, Any]:
    """A role's defaults/main.yml: every variable it declares that has a default (required ones have none)."""
    return {name: entry["default"] for name, entry in variables().items()
            if role in entry.get("roles", {}) and "default" in entry and not entry.get("required")}


def preflight_vars() -> dict[str, Any]:
    """The preflight role's vars/main.yml: the names it refuses as a host, and the format of each variable that
    has one, checked on every host when set (a user's inventory may set them per host, past settings.py), in
    every playbook (all start with the preflight role)."""
    checks = []
    for name, entry in variables().items():
        if "format" in entry:
            rule = fmt(entry["format"])
            checks.append({"var": name, "pattern": rule.pattern, "says": rule.says,
                           "each": entry["type"] == "list", "empty": entry.get("default") == ""})
    return {"_mlcube_ssh_preflight_controller_names": sorted(controller_names()),
            "_mlcube_ssh_preflight_formats": checks}


class _Dumper(yaml.SafeDumper):
    """Block sequences indented under their key, as yamllint (ansible-lint) wants them; a mapping that appears
    more than once (a variable declared by several entry points) is anchored with the name of its key."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._key_of: dict[int, str] = {}  # id of a mapping's node -> the key it is the value of
        self._named: set[str] = set()

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def represent_mapping(self, tag: str, mapping: Any, flow_style: bool | None = None) -> yaml.MappingNode:
        node = super().represent_mapping(tag, mapping, flow_style)
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and isinstance(value, yaml.MappingNode):
                self._key_of.setdefault(id(value), key.value)
        return node

    def generate_anchor(self, node: yaml.Node) -> str:
        name = self._key_of.get(id(node))
        if name and name not in self._named:
            self._named.add(name)
            return name
        return str(super().generate_anchor(node))


def _dump(data: Any, flow: bool | None) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True, default_flow_style=flow)


def _yaml(data: Any, comment: str, flow: bool | None = None) -> str:
    """A YAML file; with `flow` None, each top-level value on one line where it fits, else in block style."""
    if flow is None:
        parts = []
        for key, value in data.items():
            inline = f"{key}: " + _dump(value, True).strip() if isinstance(value, (list, dict)) and value else ""
            parts.append(inline + "\n" if inline and "\n" not in inline else _dump({key: value}, False))
        body = "".join(parts)
    else:
        body = _dump(data, flow)
    return "---\n# " + comment + "\n" + body


def role_files(roles_dir: Path) -> dict[Path, str]:
    """Every generated file of the roles, path -> text."""
    files: dict[Path, str] = {}
    for role in role_names():
        files[roles_dir / role / "meta" / "argument_specs.yml"] = _yaml(argument_specs(role), GENERATED, flow=False)
        files[roles_dir / role / "defaults" / "main.yml"] = _yaml(
            role_defaults(role), GENERATED + "\n# The mlcube_ssh_* variables are shared by every role (one inventory "
            "feeds them all).")
    files[roles_dir / "mlcube_ssh_preflight" / "vars" / "main.yml"] = _yaml(preflight_vars(), GENERATED, flow=False)
    return files


# ------------------------------------------------------------------------------------------------- docs

_SETTING_TYPES = {"str": "string", "int": "integer", "bool": "boolean", "choice": "string",
                  "words": "string or list", "path": "path", "file": "path"}


def _setting_default(entry: Mapping[str, Any]) -> str:
    if "doc_default" in entry:
        return str(entry["doc_default"])
    value = entry.get("default")
    if value is None:
        return "—"
    if value in ("", [], {}):
        return "empty"
    if isinstance(value, bool):
        return f"`{json.dumps(value)}`"
    if isinstance(value, int):
        return str(value)
    return f"`{value}`"


def expand(text: str, entry: Mapping[str, Any]) -> str:
    """`${path}` in a docs text -> the entry's own value there (`auto.min`), lists as `a`, `b`: the docs name
    each number and list the code uses, not a copy of it."""

    def value(match: re.Match[str]) -> str:
        found: Any = entry
        for part in match.group(1).split("."):
            found = found[part]
        return ", ".join(f"`{item}`" for item in found) if isinstance(found, list) else str(found)

    return re.sub(r"\$\{([a-z_.]+)\}", value, text)


def settings_table(table: str) -> list[str]:
    """A docs/configuration.md table: the platform-section keys of one group."""
    lines = ["| Key | Type | Default | Allowed values |", "|---|---|---|---|"]
    for key, entry in spec()["settings"].items():
        if entry.get("table") == table:
            kind = entry.get("doc_type") or _SETTING_TYPES[entry["type"]]
            allowed = " ".join(expand(entry["allowed"], entry).split())
            lines.append(f"| `{key}` | {kind} | {_setting_default(entry)} | {allowed} |")
    return lines


def new_keys_table() -> list[str]:
    """docs/migration.md: the keys MLCube's original SSH runner did not have."""
    lines = ["| Key | Default | What it is for |", "|---|---|---|"]
    for key, entry in spec()["settings"].items():
        if not entry.get("original"):
            summary = " ".join(expand(entry["summary"], entry).split())
            lines.append(f"| `{key}` | {_setting_default(entry)} | {summary} |")
    return lines


def inventory_table() -> list[str]:
    """Per-host role variables and the settings keys they come from (docs/configuration.md)."""
    lines = ["| Role variable | Settings key |", "|---|---|"]
    for name, entry in variables().items():
        if entry.get("table") == "host" and "setting" in entry:
            note = f" ({entry['inventory_note']})" if "inventory_note" in entry else ""
            lines.append(f"| `{name}` | `{entry['setting']}`{note} |")
    return lines


def _variable_type(entry: Mapping[str, Any]) -> str:
    if "doc_type" in entry:
        return str(entry["doc_type"])
    kind = str(entry["type"]) + (f" of {entry['elements']}" if "elements" in entry else "")
    if "choices" in entry:
        kind += ": " + ", ".join(f"`{choice}`" for choice in entry["choices"])
    return kind


def _variable_default(entry: Mapping[str, Any]) -> str:
    if "doc_default" in entry:
        return str(entry["doc_default"])
    if entry.get("required"):
        return "required"
    value = entry["default"]
    return f"`{value}`" if isinstance(value, str) and value else f"`{json.dumps(value)}`"


def _variable_roles(entry: Mapping[str, Any]) -> str:
    names = []
    for role, entry_points in entry.get("roles", {}).items():
        short = role[len(ROLE_PREFIX):] if role.startswith(ROLE_PREFIX) else role
        names.append(short if "main" in entry_points else short + " (" + ", ".join(
            f"`{point}`" for point in entry_points) + ")")
    if entry.get("playbooks"):
        names.append("playbooks")
    return ", ".join(names)


def variables_table(table: str) -> list[str]:
    """A docs/ansible.md table: the role variables set per host, or per command."""
    lines = ["| Variable | Type | Default | Roles | Meaning |", "|---|---|---|---|---|"]
    for name, entry in variables().items():
        if entry.get("table") == table:
            lines.append(f"| `{name}` | {_variable_type(entry)} | {_variable_default(entry)} | "
                         f"{_variable_roles(entry)} | {' '.join(entry['description'].split())} |")
    return lines


def doc_tables() -> dict[str, list[str]]:
    """Table name (as in the docs' markers) -> its lines."""
    tables = {f"settings-{name}": settings_table(name) for name in ("connect", "host_keys", "remote", "transfers")}
    tables["inventory"] = inventory_table()
    tables["new-keys"] = new_keys_table()
    tables["variables-host"] = variables_table("host")
    tables["variables-command"] = variables_table("command")
    return tables


def fill_tables(text: str) -> str:
    """A docs page with every marked table replaced by the one generated from the spec."""
    tables = doc_tables()

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in tables:
            raise KeyError(f"unknown spec table {name!r}")
        return TABLE_START.format(name=name) + "\n" + "\n".join(tables[name]) + "\n" + TABLE_END

    start = re.escape(TABLE_START).replace(re.escape("{name}"), r"([a-z_-]+)")
    return re.sub(start + r"\n.*?" + re.escape(TABLE_END), replace, text, flags=re.DOTALL)


def generated_files(root: Path) -> dict[Path, str]:
    """Every file derived from the spec under a checkout's root, path -> the text it must have."""
    files = role_files(root / "roles")
    for page in DOC_PAGES:
        path = root / "docs" / page
        files[path] = fill_tables(path.read_text(encoding="utf-8"))
    return files


def main(argv: list[str] | None = None) -> int:
    """List the files that differ from the spec (exit 1), or rewrite them (`--write`)."""
    parser = argparse.ArgumentParser(prog="python -m mlcube_ssh_ansible.spec", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the files that differ (default: list them)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(argv)
    stale = [path for path, text in generated_files(args.root).items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    for path in stale:
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(generated_files(args.root)[path], encoding="utf-8")
        print(("wrote " if args.write else "differs from the spec: ") + str(path))
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
