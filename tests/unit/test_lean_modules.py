"""The modules whose text goes lean to the hosts (plugins/plugin_utils/lean.py) stay within what the stand-in has.

A lean call replaces the module's one import of AnsibleModule by a stand-in with params, check_mode, warn, exit_json
and fail_json only, and sends the text to a bare Python: a module that used anything else of AnsibleModule, or
imported anything but the standard library, would fail on the hosts only when called lean. These checks read the
modules' source, so such a change fails here first.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LEAN_IMPORT = "from ansible.module_utils.basic import AnsibleModule\n"
LEAN = REPO / "plugins" / "plugin_utils" / "lean.py"


def stand_in_has() -> set[str]:
    """The public methods and attributes of the stand-in class, read from lean.py's text."""
    text = LEAN.read_text()
    stand_in = text[text.index("class AnsibleModule:"):]
    stand_in = stand_in[:stand_in.index('\n"""\n')]  # the end of the stand-in's text
    methods = set(re.findall(r"^    def ([a-z]\w*)\(", stand_in, re.M))
    assigned = re.search(r"^        (self\.\w+(?:, self\.\w+)*) = ", stand_in, re.M)
    assert assigned, "the stand-in sets its attributes in one line of __init__"
    attributes = {name.split(".")[1] for name in assigned.group(1).split(", ")}
    return {name for name in methods | attributes if not name.startswith("_")}


STAND_IN_HAS = stand_in_has()


def lean_modules() -> list[Path]:
    """The module files whose action plugins run them lean with the stand-in (LeanModuleAction's SOURCE)."""
    found = []
    for action in sorted((REPO / "plugins" / "action").glob("*.py")):
        text = action.read_text()
        if "(LeanModuleAction)" in text:
            name = re.search(r"^\s+SOURCE = (\w+)$", text, re.M)
            assert name, f"{action.name}: a LeanModuleAction names its module in SOURCE"
            found.append(REPO / "plugins" / "modules" / f"{name.group(1)}.py")
    return found


def test_the_lean_modules_and_the_stand_in_are_found() -> None:
    assert {path.stem for path in lean_modules()} >= {"paths", "venv", "stamp"}
    assert {"params", "check_mode", "warn", "exit_json", "fail_json"} == STAND_IN_HAS


@pytest.mark.parametrize("module", lean_modules(), ids=lambda path: path.stem)
def test_a_lean_module_imports_only_the_standard_library_and_ansiblemodule_once(module: Path) -> None:
    source = module.read_text()
    assert source.count(LEAN_IMPORT) == 1, "the stand-in replaces exactly one import line"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or name == "ansible.module_utils.basic" or top == "__future__", \
                f"{module.name} imports {name}, which a bare Python on a host may not have"


@pytest.mark.parametrize("module", lean_modules(), ids=lambda path: path.stem)
def test_a_lean_module_uses_only_what_the_stand_in_has(module: Path) -> None:
    tree = ast.parse(module.read_text())
    # Every name AnsibleModule(...) is assigned to, and every parameter that receives it (named `module`).
    holders = {"module"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and getattr(node.value.func, "id", None) == "AnsibleModule":
            holders |= {target.id for target in node.targets if isinstance(target, ast.Name)}
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in holders}
    assert used, f"{module.name}: no use of its AnsibleModule found (is it still named {sorted(holders)}?)"
    assert used <= STAND_IN_HAS, f"{module.name} uses {sorted(used - STAND_IN_HAS)} of AnsibleModule, which the " \
                                 "lean stand-in (plugins/plugin_utils/lean.py) does not have"
