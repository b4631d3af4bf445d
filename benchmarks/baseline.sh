#!/usr/bin/env bash
# The hand-written baseline of the benchmark: the same steps as mlcube-ssh-ansible, with plain `ssh` and
# `rsync -a` (no ControlMaster, strict host key checking against a given known_hosts file).
#
#   baseline.sh configure HOSTS_FILE CUBE_DIR        pip install REQS + rsync up + remote `mlcube configure`
#   baseline.sh run       HOSTS_FILE CUBE_DIR TASK   rsync up + remote `mlcube run` + rsync the workspace back
#   baseline.sh sweep     HOSTS_FILE CUBE_DIR TASK   rsync up, then BASELINE_SWEEP_RUNS remote `mlcube run`s per
#                                                    host, BASELINE_SWEEP_PARALLEL at a time (xargs -P, one ssh
#                                                    connection each), each with PARAM=sweep-<host>-<n>.txt, then
#                                                    rsync the workspace back
#
# HOSTS_FILE has one host per line: NAME ADDRESS PORT USER IDENTITY_FILE KNOWN_HOSTS_FILE.
# With several hosts, every host runs in a background job (then `wait`), and each host's workspace comes
# back into CUBE_DIR/workspace/hosts/NAME/, as mlcube-ssh-ansible does; with one host into CUBE_DIR/workspace/.
#
# Environment (defaults in brackets):
#   BASELINE_PYTHON        remote Python of the MLCube virtualenv [~/.venvs/mlcube/bin/python]
#   BASELINE_REQUIREMENTS  pip requirements [mlcube==0.0.9 mlcube-docker==0.0.9]
#   BASELINE_REMOTE_ROOT   remote folder (relative to the remote home) holding the cube [mlcube-baseline]
#   BASELINE_PLATFORM      the remote MLCube platform [docker]
#   BASELINE_SWEEP_RUNS, BASELINE_SWEEP_PARALLEL, BASELINE_SWEEP_PARAM   sweep: runs per host [16], at a time [4],
#                          the task parameter each run varies [slept]
# Paths must not contain white space (this is a baseline, not a product). Exit status: the first failure.
set -uo pipefail

mode="${1:?usage: baseline.sh configure|run|sweep HOSTS_FILE CUBE_DIR [TASK]}"
hosts_file="${2:?missing HOSTS_FILE}"
cube="${3:?missing CUBE_DIR}"
task="${4:-}"
default_python='~/.venvs/mlcube/bin/python'  # expanded by the remote shell
python="${BASELINE_PYTHON:-$default_python}"
requirements="${BASELINE_REQUIREMENTS:-mlcube==0.0.9 mlcube-docker==0.0.9}"
platform="${BASELINE_PLATFORM:-docker}"
remote_dir="${BASELINE_REMOTE_ROOT:-mlcube-baseline}/$(basename "$cube")"
excludes=(--exclude=.git/ --exclude=__pycache__/ --exclude='*.pyc' --exclude=.venv/)

one_host() {  # one_host NAME ADDRESS PORT USER IDENTITY_FILE KNOWN_HOSTS DEST
    local name="$1" address="$2" port="$3" user="$4" key="$5" known="$6" dest="$7"
    local rsh="ssh -F /dev/null -i $key -p $port -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$known"
    rsh+=" -o GlobalKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes"
    local target="$user@$address"
    # Like mlcube-ssh-ansible: per-host results of fleet runs (workspace/hosts/) stay on the controller.
    local up=(--delete --filter='P /workspace/***' --exclude=/workspace/hosts/ "${excludes[@]}")
    case "$mode" in
        configure)
            $rsh "$target" "mkdir -p $remote_dir && $python -m pip install -q --disable-pip-version-check $requirements" \
                || return
            rsync -a "${up[@]}" -e "$rsh" "$cube/" "$target:$remote_dir/" \
                || return
            $rsh "$target" "cd $remote_dir && $python -m mlcube configure --mlcube=. --platform=$platform"
            ;;
        run)
            rsync -a "${up[@]}" -e "$rsh" "$cube/" "$target:$remote_dir/" \
                || return
            local rc=0
            $rsh "$target" "cd $remote_dir && $python -m mlcube run --mlcube=. --platform=$platform --task=$task" || rc=$?
            mkdir -p "$dest"
            rsync -a -e "$rsh" "$target:$remote_dir/workspace/" "$dest/" || return
            return "$rc"
            ;;
        sweep)
            rsync -a "${up[@]}" -e "$rsh" "$cube/" "$target:$remote_dir/" \
                || return
            local rc=0
            # Each run its own ssh connection and output file, BASELINE_SWEEP_PARALLEL at a time on this host.
            seq -w 1 "${BASELINE_SWEEP_RUNS:-16}" | xargs -P "${BASELINE_SWEEP_PARALLEL:-4}" -I{} \
                $rsh "$target" "cd $remote_dir && $python -m mlcube run --mlcube=. --platform=$platform --task=$task \
${BASELINE_SWEEP_PARAM:-slept}=sweep-$name-{}.txt" >/dev/null || rc=$?
            mkdir -p "$dest"
            rsync -a -e "$rsh" "$target:$remote_dir/workspace/" "$dest/" || return
            return "$rc"
            ;;
        *)
            echo "baseline.sh: unknown mode $mode" >&2
            return 2
            ;;
    esac
}

mapfile -t hosts < <(grep -v '^[[:space:]]*\(#\|$\)' "$hosts_file")
if [[ "$mode" != configure && -z "$task" ]]; then
    echo "baseline.sh: $mode needs a TASK" >&2
    exit 2
fi
if ((${#hosts[@]} == 1)); then
    read -r name address port user key known <<<"${hosts[0]}"
    one_host "$name" "$address" "$port" "$user" "$key" "$known" "$cube/workspace"
    exit
fi
pids=()
for line in "${hosts[@]}"; do
    read -r name address port user key known <<<"$line"
    one_host "$name" "$address" "$port" "$user" "$key" "$known" "$cube/workspace/hosts/$name" &
    pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || { rc=$?; ((status)) || status=$rc; }
done
exit "$status"
