#!/usr/bin/env bash
# THE demo command: prepare this machine (quick when already done), then run the example cube on a loopback
# SSH host with the real `mlcube` CLI and show the result it fetched. Run as root. Arguments go to demo.py
# (e.g. --keep).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-machine.sh
exec .venv/bin/python scripts/demo.py "$@"
