"""`ansible-test sanity` on the collection as it ships (scripts/sanity.sh): part of the suite, so that a module's
documentation, argument spec or style cannot drift from what ansible-test (and Galaxy's checks) accept.

It runs without hosts; the first run on a machine installs each sanity test's requirements from PyPI into
ansible-test's own virtualenvs (cached in ~/.ansible/test afterwards)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The sanity tests that must run here (the others need other Pythons, Docker images or have nothing to check).
REQUIRED = ("action-plugin-docs", "ansible-doc", "compile", "empty-init", "ignores", "import", "no-assert",
            "pep8", "pylint", "runtime-metadata", "shebang", "use-argspec-type-path", "validate-modules", "yamllint")


def test_ansible_test_sanity_passes_on_the_built_collection() -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "sanity.sh")], capture_output=True, text=True,
                          timeout=1800, check=False, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    ran = set(re.findall(r'Running sanity test "([a-z0-9-]+)"', output))
    assert not set(REQUIRED) - ran, f"sanity tests that did not run: {sorted(set(REQUIRED) - ran)}\n{output[-3000:]}"
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert done.returncode == 0 and not errors, "\n".join(errors) or output[-3000:]
