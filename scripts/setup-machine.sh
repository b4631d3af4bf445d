#!/usr/bin/env bash
# Prepare this machine for the mlcube-ssh-ansible tests. Idempotent; run as root.
#
# The integration tests use real parts: an sshd on loopback addresses, a Docker engine, and a static busybox
# for the example cube's FROM-scratch image; for hosts unlike this one (tests/container_hosts.py) debootstrap,
# which builds a Debian bullseye host image (scripts/test.sh builds it once per machine), and rootless podman.
# CI starts on a clean machine, so everything is installed and started here; a second run only checks, and
# returns in well under a second.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

log() { printf 'setup-machine: %s\n' "$*" >&2; }

if [[ "$(id -u)" -ne 0 ]]; then
    log "must run as root (it installs packages, starts dockerd, and the tests create users)"
    exit 1
fi

# True when /bin/busybox is statically linked: the image is FROM scratch, so it has no libc to link against.
busybox_is_static() {
    local out
    [[ -x /bin/busybox ]] || return 1
    out="$(LC_ALL=C ldd /bin/busybox 2>&1 || true)"
    [[ "$out" == *"not a dynamic executable"* ]]
}

# --- Debian packages: installed only when one of the needed commands is missing ---------------------------
packages=(openssh-server rsync docker.io busybox-static sshpass git debootstrap podman uidmap slirp4netns
          fuse-overlayfs)
missing=()
[[ -x /usr/sbin/sshd ]] || missing+=(sshd)
command -v ssh-keyscan >/dev/null 2>&1 || missing+=(ssh-keyscan)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(ssh-keygen)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
command -v dockerd >/dev/null 2>&1 || missing+=(dockerd)
command -v docker >/dev/null 2>&1 || missing+=(docker)
busybox_is_static || missing+=(static-busybox)
command -v sshpass >/dev/null 2>&1 || missing+=(sshpass)
command -v git >/dev/null 2>&1 || missing+=(git)
[[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v newuidmap >/dev/null 2>&1 || missing+=(newuidmap)
command -v slirp4netns >/dev/null 2>&1 || missing+=(slirp4netns)
command -v fuse-overlayfs >/dev/null 2>&1 || missing+=(fuse-overlayfs)
if ((${#missing[@]})); then
    log "missing: ${missing[*]}; installing: ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${packages[@]}"
    busybox_is_static || { log "/bin/busybox is still not statically linked"; exit 1; }
fi

# Rootless podman's network (slirp4netns) opens /dev/net/tun as the user; a new machine has it root-only.
if [[ -c /dev/net/tun && "$(stat -c %a /dev/net/tun)" != 666 ]]; then
    log "chmod 0666 /dev/net/tun (for rootless podman)"
    chmod 0666 /dev/net/tun
fi

# --- Docker engine: nothing starts it on this kind of machine -----------------------------------------------
dockerd_log=/tmp/mlcube-ssh-ansible-dockerd.log

# Wait up to 60 s for `docker info` to answer; give up early once process $1 (if given) has exited.
wait_for_docker() {
    local pid="${1:-}"
    for _ in $(seq 1 240); do
        docker info >/dev/null 2>&1 && return 0
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.25
    done
    docker info >/dev/null 2>&1
}

if ! docker info >/dev/null 2>&1; then
    # A dockerd that is still starting (or stopping) holds the pid file; a second one would refuse to start.
    old_pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    if [[ -n "$old_pid" ]] && kill -0 "$old_pid" 2>/dev/null; then
        log "waiting for the running dockerd (pid $old_pid)"
        wait_for_docker "$old_pid" || true
    fi
fi
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: $dockerd_log)"
    setsid dockerd >>"$dockerd_log" 2>&1 </dev/null &
    if ! wait_for_docker "$!"; then
        log "dockerd did not come up within 60 s, or exited; last lines of $dockerd_log:"
        tail -n 40 "$dockerd_log" | tr -d '\000' >&2 || true
        exit 1
    fi
fi

# --- Dev virtualenv ------------------------------------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv"
    python3 -m venv .venv
fi
# (Re)install the project whenever pyproject.toml changed since the last install, so new dependencies arrive
# without recreating the venv. The stamp holds the hash of the pyproject.toml that was installed.
if [[ -f pyproject.toml ]]; then
    stamp=.venv/.mlcube-ssh-ansible-installed
    want="$(cat pyproject.toml scripts/mlcube-requirements.txt | sha256sum | cut -d' ' -f1)"
    if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
        log "installing the project into .venv: pip install -e '.[ansible,mlcube,dev]', then MLCube with --no-deps"
        .venv/bin/python -m pip install --disable-pip-version-check -q -e '.[ansible,mlcube,dev]'
        # As in the README: mlcube 0.0.9's own omegaconf pin can't be resolved by current pip (pyproject.toml).
        .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps -r scripts/mlcube-requirements.txt
        printf '%s\n' "$want" >"$stamp"
    fi
else
    log "no pyproject.toml yet: .venv is left without the project installed"
fi

log "ready"
