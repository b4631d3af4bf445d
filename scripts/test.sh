#!/usr/bin/env bash
# THE test command: prepare the machine (quick when already done), then run pytest.
# Arguments go to pytest, e.g. `bash scripts/test.sh tests/integration/test_harness.py -x`;
# without a path, pytest runs everything under tests/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-machine.sh
has_path=0
for arg in "$@"; do
    [[ "$arg" != -* && -e "${arg%%::*}" ]] && has_path=1
done
if ((has_path)); then
    exec .venv/bin/python -m pytest -q "$@"
fi
exec .venv/bin/python -m pytest -q tests "$@"
