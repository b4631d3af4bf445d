#!/usr/bin/env bash
# ansible-test sanity on the collection mlcube.ssh as it ships: build the artifact, install it into a temporary
# .../ansible_collections/mlcube/ssh (where ansible-test wants it), and run the sanity tests with Python 3.11,
# each test in its own virtualenv that ansible-test makes (--venv; no Docker). Arguments go to ansible-test,
# e.g. `bash scripts/sanity.sh --test validate-modules`. Needs PyPI for the tests' requirements.
#
# ansible-test bootstraps pip in those virtualenvs with a get-pip.py from ci-files.testing.ansible.com; where
# that host can't be reached (as here) this puts a stand-in into its cache that installs the same pip from
# PyPI's wheel (docs/ansible.md, "Sanity tests").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="$PWD/.venv/bin"
pip_version=24.2
cache="$HOME/.ansible/test/cache"
if [[ ! -f "$cache/get_pip_${pip_version//./_}.py" ]]; then
    mkdir -p "$cache"
    if ! "$bin/python" -c 'import urllib.request; urllib.request.urlopen("https://ci-files.testing.ansible.com", timeout=5)' \
            2>/dev/null; then
        "$bin/python" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
            -d "$cache" "pip==$pip_version"
        cat >"$cache/get_pip_${pip_version//./_}.py" <<PY
# Stand-in for ansible-test's get-pip.py, written by mlcube-ssh-ansible's scripts/sanity.sh: installs pip
# from the wheel next to this file, as get-pip.py does from the copy it embeds.
import os
import sys

wheel = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip-$pip_version-py3-none-any.whl")
sys.path.insert(0, wheel)
from pip._internal.cli.main import main  # noqa: E402

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel") and not arg.startswith("pip==")]
sys.exit(main(["install", "--upgrade", "--force-reinstall", wheel] + args))
PY
    fi
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin/ansible-galaxy" collection build --output-path "$work" >/dev/null
"$bin/ansible-galaxy" collection install --no-deps --force -p "$work/collections" "$work"/mlcube-ssh-*.tar.gz >/dev/null
cd "$work/collections/ansible_collections/mlcube/ssh"
"$bin/ansible-test" sanity --venv --python 3.11 --color no "$@"
