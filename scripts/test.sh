#!/usr/bin/env bash
# THE test command: prepare the machine (quick when already done), then run pytest.
# Arguments go to pytest, e.g. `bash scripts/test.sh tests/integration/test_harness.py -x`;
# without a path, pytest runs everything under tests/, in parallel.
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
# The whole suite runs on parallel workers (pytest-xdist). Each worker has its own test users (tests/hosts.py:
# user_name), so its own homes, virtualenvs and cubes, its own sshd port and containers. Each worker has one
# test queued and takes the next when it gets free, the slowest first (tests/conftest.py).
# MLCUBE_TEST_WORKERS=0 runs everything in one process; `-n N` after this command overrides it too.
exec .venv/bin/python -m pytest -q -n "${MLCUBE_TEST_WORKERS:-3}" --dist load --maxschedchunk 1 tests "$@"
