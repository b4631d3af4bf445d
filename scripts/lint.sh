#!/usr/bin/env bash
# Lint everything: ruff (Python style and bugs), mypy (types, config in pyproject.toml), ansible-lint
# (production profile) on the collection's playbooks and roles. Installs the linters into .venv when missing, without
# letting ansible-lint move ansible-core (2.19.x is the newest that supports Python 3.11).
# Runs all three even when one fails; exits non-zero when any failed. Arguments are ignored.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'lint: %s\n' "$*" >&2; }

if [[ ! -x .venv/bin/python ]]; then
    log ".venv is missing: run scripts/setup-machine.sh (or scripts/test.sh) first"
    exit 2
fi
py=.venv/bin/python

core_version() { "$py" -c 'from ansible.release import __version__; print(__version__)' 2>/dev/null; }

missing=()
[[ -x .venv/bin/ruff ]] || missing+=(ruff)
[[ -x .venv/bin/mypy ]] || missing+=(mypy)
"$py" -m pip show -q types-PyYAML >/dev/null 2>&1 || missing+=(types-PyYAML)
[[ -x .venv/bin/ansible-lint ]] || missing+=(ansible-lint)
if ((${#missing[@]})); then
    before="$(core_version)"
    log "installing into .venv: ${missing[*]} (ansible-core stays ${before:-as it is})"
    # The constraint keeps pip from replacing the installed ansible-core to satisfy ansible-lint.
    constraint=()
    if [[ -n "$before" ]]; then
        pins="$(mktemp)"
        trap 'rm -f "$pins"' EXIT
        printf 'ansible-core==%s\n' "$before" >"$pins"
        constraint=(--constraint "$pins")
    fi
    if ! "$py" -m pip install --disable-pip-version-check -q "${constraint[@]}" "${missing[@]}"; then
        log "could not install ${missing[*]}"
        exit 2
    fi
    after="$(core_version)"
    if [[ "$before" != "$after" ]]; then
        log "ansible-core changed from $before to $after: reinstall it with pip install 'ansible-core==$before'"
        exit 2
    fi
fi
case "$(core_version)" in
    2.19.*) ;;
    *) log "warning: ansible-core is $(core_version), the project is tested with 2.19.x" ;;
esac

failed=()
run() {
    local name="$1"
    shift
    printf '\n== %s: %s\n' "$name" "$*"
    if "$@"; then
        printf '== %s: ok\n' "$name"
    else
        printf '== %s: FAILED\n' "$name"
        failed+=("$name")
    fi
}

# The collection's action, lookup and callback plugins and plugin_utils run on the controller, so they are held to
# the shim's rules. Its modules, module_utils and the roles' scripts run on the hosts, with Python 3.8 and up: ruff
# checks them for errors and for syntax newer than 3.8.
run ruff .venv/bin/ruff check mlcube_ssh_ansible tests plugins/action plugins/lookup plugins/callback plugins/plugin_utils
run ruff-remote .venv/bin/ruff check --target-version py38 --select E,F,W,B --ignore B904,E402 \
    plugins/modules plugins/module_utils roles/*/files
run mypy .venv/bin/mypy
run ansible-lint .venv/bin/ansible-lint --profile production --nocolor playbooks roles

if ((${#failed[@]})); then
    printf '\nlint: failed: %s\n' "${failed[*]}"
    exit 1
fi
printf '\nlint: all passed\n'
