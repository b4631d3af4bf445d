#!/usr/bin/env bash
# THE test command: prepare the machine (quick when already done), then run pytest.
# Arguments go to pytest, e.g. `bash scripts/test.sh tests/integration/test_harness.py -x`;
# without a path, pytest runs everything under tests/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-machine.sh
# The Debian bullseye test host image: built once per machine (~1 min), reused while its recipe is unchanged.
.venv/bin/python -m tests.container_hosts
has_path=0
for arg in "$@"; do
    [[ "$arg" != -* && -e "${arg%%::*}" ]] && has_path=1
done
if ((has_path)); then
    exec .venv/bin/python -m pytest -q "$@"
fi
exec .venv/bin/python -m pytest -q tests "$@"
