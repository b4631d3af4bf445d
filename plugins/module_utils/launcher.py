# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""What mlcube.ssh.launch does (see its documentation), in the standard library only.

The module wraps it in AnsibleModule. Its action plugin may also send this file's text as it is to the host's
Python (a lean call, plugins/plugin_utils/lean.py), which saves ~0.15 s of the host's CPU per launch; then
`lean_main` gets lean.py's stand-in for AnsibleModule. Runs that take slots or may be retried always go through
the module (they use the slots helpers of module_utils/slots.py and AnsibleModule.run_command).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

# The module's options (the action plugin checks them on the controller with the same spec).
ARGUMENT_SPEC = dict(
    argv=dict(type="list", elements="str", required=True),
    chdir=dict(type="path", required=True),
    run_dir=dict(type="path", required=True),
    lock=dict(type="path", required=True),
    holder=dict(type="str", default=""),
    sync_stamp=dict(type="str", default=""),
    sync_file=dict(type="path"),
    expect_synced=dict(type="str", default=""),
    secrets=dict(type="dict", default={}, no_log=True),
    wait=dict(type="float", default=0.0),
    max_bytes=dict(type="int", default=262144),
    workspace=dict(type="path"),
    shared_from=dict(type="path"),
    shared=dict(type="list", elements="str", default=[]),
    gpus_needed=dict(type="int", default=-1),
    gpus=dict(type="list", elements="int"),
    cpu_slots=dict(type="int", default=0),
    nvidia_smi=dict(type="str", default="nvidia-smi"),
    leases_dir=dict(type="path", default="/tmp/mlcube-ssh-leases"),
    docker_gpus=dict(type="bool", default=True),
    queue=dict(type="bool", default=False),
    run_retries=dict(type="int", default=0),
)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_in(run_dir: str, name: str):
    try:
        with open(os.path.join(run_dir, name)) as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


def _running_holder(lock: str) -> dict | None:
    """The lock's content when its run is still going or waiting (its command or its supervisor alive, no exit
    code yet), else None."""
    try:
        with open(lock) as handle:
            holder = json.load(handle)
        run_dir = holder["run_dir"]
    except (OSError, ValueError, KeyError):
        return None
    if os.path.exists(os.path.join(run_dir, "rc")):
        return None
    if any(pid is not None and _alive(pid) for pid in (_pid_in(run_dir, "pid"), _pid_in(run_dir, "supervisor"))):
        return holder
    return None


def _inside(root: str, path: str) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(root).rstrip("/") + "/")


def _link_or_copy(source: str, target: str, counts: dict) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
        counts["linked"] += 1
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)
        counts["copied"] += 1


def _share_inputs(shared_from: str, workspace: str, paths: list) -> dict:
    """Hard-link the cube's inputs into the run's workspace (MLCube then finds them and copies nothing)."""
    counts = {"linked": 0, "copied": 0}
    for relative in paths:
        source, target = os.path.join(shared_from, relative), os.path.join(workspace, relative)
        if os.path.isabs(relative) or not _inside(shared_from, source) or not _inside(workspace, target) \
                or os.path.lexists(target) or not os.path.lexists(source):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.isdir(source) or os.path.islink(source):
            _link_or_copy(source, target, counts)
            continue
        for folder, dirnames, filenames in os.walk(source):
            into = os.path.join(target, os.path.relpath(folder, source))
            os.makedirs(into, exist_ok=True)
            shutil.copystat(folder, into)
            for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(folder, d))]:
                _link_or_copy(os.path.join(folder, name), os.path.join(into, name), counts)
    return counts


def _write(path: str, text: str) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


MASK = b"********"
# Added to `docker run` / `podman run` when there are secrets: the values travel by name (-e NAME takes the value
# from the client's own environment), and --rm makes the engine drop the container's configuration (which
# holds the environment) when it ends. Names only ever come from the module's validated option.
WRAPPER = """#!/bin/sh
# mlcube-ssh-ansible: pass the run's secrets to containers by name only (see mlcube.ssh.launch).
PATH="$MLCUBE_SSH_REAL_PATH"
export PATH
engine="${0##*/}"
if [ "${1:-}" = run ]; then
    shift
    for name in $MLCUBE_SSH_SECRET_NAMES; do
        set -- -e "$name" "$@"
    done
    if [ -n "${MLCUBE_SSH_DOCKER_GPUS:-}" ]; then
        set -- --gpus "\"device=$MLCUBE_SSH_DOCKER_GPUS\"" "$@"
    fi
    if [ -n "${MLCUBE_SSH_RM:-}" ]; then
        set -- --rm "$@"
    fi
    set -- run "$@"
fi
exec "$engine" "$@"
"""
ENGINES = ("docker", "podman")


class Masker:
    """Copies a stream to a log with every secret value replaced by MASK, also across read boundaries."""

    def __init__(self, values: list) -> None:
        self.values = sorted({value.encode() for value in values if value}, key=len, reverse=True)

    def _held(self, data: bytes) -> int:
        """How many bytes at the end of `data` could start a value: held back until more data comes."""
        for keep in range(min(len(data), max(len(v) for v in self.values) - 1), 0, -1):
            tail = data[-keep:]
            if any(value.startswith(tail) for value in self.values):
                return keep
        return 0

    def mask(self, data: bytes) -> bytes:
        for value in self.values:
            data = data.replace(value, MASK)
        return data

    def pump(self, source: int, log) -> None:
        pending = b""
        while True:
            chunk = os.read(source, 65536)
            if not chunk:
                break
            pending = self.mask(pending + chunk)
            keep = self._held(pending)
            ready, pending = (pending[:-keep], pending[-keep:]) if keep else (pending, b"")
            log.write(ready)
            log.flush()
        log.write(self.mask(pending))
        log.flush()
        os.close(source)


def _environment(run_dir: str, secrets: dict, devices: dict) -> dict:
    """The command's environment: ours, the secrets, the devices, and the container engine wrappers first on
    PATH."""
    env = dict(os.environ)
    names = sorted(secrets)
    if devices.get("gpus") is not None:
        visible = ",".join(str(index) for index in devices["gpus"])
        env["CUDA_VISIBLE_DEVICES"] = env["NVIDIA_VISIBLE_DEVICES"] = visible
        names += ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"]
        if devices["gpus"] and devices.get("docker_gpus"):
            env["MLCUBE_SSH_DOCKER_GPUS"] = visible
    if not names:
        return env
    bin_dir = os.path.join(run_dir, "bin")
    os.makedirs(bin_dir, mode=0o700, exist_ok=True)
    for engine in ENGINES:
        _write(os.path.join(bin_dir, engine), WRAPPER)
        os.chmod(os.path.join(bin_dir, engine), 0o700)
    env.update(secrets)
    env["MLCUBE_SSH_REAL_PATH"] = env.get("PATH", os.defpath)
    env["PATH"] = bin_dir + os.pathsep + env["MLCUBE_SSH_REAL_PATH"]
    env["MLCUBE_SSH_SECRET_NAMES"] = " ".join(names)
    if secrets:
        env["MLCUBE_SSH_RM"] = "1"
    return env


class Retry:
    """What the supervisor of a run that may be retried needs: how many more attempts, and the module (its
    parameters and the slots helpers) to take other GPUs with."""

    def __init__(self, module, retries: int) -> None:
        self.module, self.retries, self.api = module, retries, _slots_api()

    def health(self, devices: dict):
        """nvidia-smi's answer about the GPUs, when the run holds some: (health, error), else (None, None)."""
        if not devices.get("gpus"):
            return None, None
        return self.api.gpu_health(self.api.run_quietly, self.module.params["nvidia_smi"])


def _run_once(argv: list, chdir: str, run_dir: str, secrets: dict, devices: dict, state: dict) -> int:
    """One attempt: run the command with the devices, record its process group, wait for its exit code.

    With secrets, the command's output goes through pipes and is masked before it reaches the logs."""
    try:
        env = _environment(run_dir, secrets, devices)
        pumps = []
        with open(os.path.join(run_dir, "stdout.log"), "ab") as out, \
                open(os.path.join(run_dir, "stderr.log"), "ab") as err:
            if secrets:
                masker = Masker(list(secrets.values()))
                pipes = [os.pipe(), os.pipe()]
                child = subprocess.Popen(argv, cwd=chdir, stdin=subprocess.DEVNULL, stdout=pipes[0][1],
                                         stderr=pipes[1][1], start_new_session=True, env=env)
                for (read_end, write_end), log in zip(pipes, (out, err)):
                    os.close(write_end)
                    pumps.append(threading.Thread(target=masker.pump, args=(read_end, log)))
                    pumps[-1].start()
            else:
                child = subprocess.Popen(argv, cwd=chdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True, env=env)
            state["child"] = child
            if state["cancelled"]:  # a TERM that came while it started
                os.killpg(child.pid, signal.SIGTERM)
            _write(os.path.join(run_dir, "pid"), str(child.pid))
            rc = child.wait()
            state["child"] = None
            for pump in pumps:  # the rest of the output (not waiting forever for what the command left behind)
                pump.join(timeout=10)
        return 128 - rc if rc < 0 else rc
    except Exception as error:  # the command could not start: say why where the follower looks
        state["child"] = None
        state["unstartable"] = True
        _note(run_dir, "cannot start %s: %s" % (argv[0], error))
        return 127


def _note(run_dir: str, text: str) -> None:
    """A line of ours in the run's stderr.log, where the follower shows it."""
    with open(os.path.join(run_dir, "stderr.log"), "a") as err:
        err.write("mlcube-ssh-ansible: %s\n" % text)


def _output_since(run_dir: str, offsets: dict, limit: int = 1 << 20) -> str:
    """What the attempt wrote (its last `limit` bytes per stream), to look for a device fault in."""
    text = ""
    for stream, offset in offsets.items():
        try:
            with open(os.path.join(run_dir, stream + ".log"), "rb") as handle:
                handle.seek(max(offset, os.path.getsize(handle.name) - limit))
                text += handle.read().decode("utf-8", "replace")
        except OSError:
            pass
    return text


def _diagnose(retry: Retry, run_dir: str, devices: dict, before, offsets: dict) -> tuple:
    """(faulty GPUs {index: why}, cause) of a failed attempt: `device` when nvidia-smi finds a GPU the run held
    gone, lost or with more uncorrected ECC errors than before, or (all its GPUs) when the task's output names a
    device fault; else `task`."""
    held = devices.get("gpus") or []
    after, error = retry.health(devices)
    faulty = retry.api.faulty_gpus(before[0], after, error, held) if after is not None else {}
    if held and not faulty:
        said = retry.api.device_signature(_output_since(run_dir, offsets))
        if said:
            faulty = {index: "the task's output says %r" % said for index in held}
    return faulty, "device" if faulty else "task"


def _take_other_gpus(retry: Retry, run_dir: str, count: int, exclude: list, state: dict):
    """`count` more GPUs, none of `exclude`, through the leases and the queue (a retry waits in line like a queued
    run): (indices, lease descriptors), or (None, why) when the host has no other GPU for it or it is cancelled."""
    module, api = retry.module, retry.api
    folder = module.params["leases_dir"]
    name, place = None, None
    try:
        while not state["cancelled"]:
            guard = _guard(api, folder)
            try:
                got, leases, why = _try_slots(module, api, me=name, exclude=exclude, count=count)
            finally:
                os.close(guard)
            if got is not None:
                return got["gpus"], leases
            if why.startswith("no GPU left"):
                return None, why
            if name is None:
                name = "%s-%s" % (_now(), os.path.basename(run_dir.rstrip("/")))
                place = api.wait_in_line(folder, name)
            time.sleep(1.0)
        return None, "cancelled"
    finally:
        if place is not None:
            try:
                os.unlink(os.path.join(folder, "waiting", name))
            except OSError:
                pass
            os.close(place)


def _supervise(argv: list, chdir: str, run_dir: str, secrets: dict, devices: dict, leases: list,
               retry: Retry | None = None) -> None:
    """In the detached grandchild: run the command, then record its exit code. Never returns.

    With `retry`, a failed attempt (not cancelled) is recorded in attempts.json and the command runs again, up
    to `retry.retries` more times: on the same slots, or, when a GPU it held is found faulty (_diagnose), on
    others (that GPU's lease is let go and it is never taken again by this run)."""
    state = {"child": None, "cancelled": False, "unstartable": False}

    def on_term(*_) -> None:  # a TERM (e.g. from a cancel) is passed on to the command's process group
        state["cancelled"] = True
        child = state["child"]
        if child is not None:
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except OSError:
                pass

    signal.signal(signal.SIGTERM, on_term)
    gpus = devices.get("gpus")
    held = dict(zip(gpus, leases)) if gpus else {}  # GPU index -> its lease
    attempts, excluded, rc = [], [], 127
    while True:
        attempt = {"attempt": len(attempts) + 1, "started": _now(),
                   "devices": {key: value for key, value in devices.items() if key in ("gpus", "cpu")}}
        before = retry.health(devices) if retry else (None, None)
        offsets = {stream: _size(os.path.join(run_dir, stream + ".log")) for stream in ("stdout", "stderr")}
        rc = _run_once(argv, chdir, run_dir, secrets, devices, state)
        attempt.update(ended=_now(), rc=rc)
        if retry is None:
            break
        again = rc != 0 and not state["cancelled"] and not state["unstartable"] and len(attempts) < retry.retries
        if again:  # between attempts the run has no process group: followers look at the supervisor
            _write(os.path.join(run_dir, "retrying"), _now())
            os.remove(os.path.join(run_dir, "pid"))
        faulty, cause = _diagnose(retry, run_dir, devices, before, offsets) \
            if rc != 0 and not state["cancelled"] else ({}, None)
        attempt.update(cause=cause, faulty=sorted(faulty), why="; ".join(
            "gpu %d %s" % (index, why) for index, why in sorted(faulty.items())))
        attempts.append(attempt)
        _write(os.path.join(run_dir, "attempts.json"), json.dumps(attempts))
        if not again:
            break
        where = "on other GPUs" if faulty else "on the same slots"
        _note(run_dir, "attempt %d of %d failed with exit code %d%s; trying again %s" % (
            len(attempts), retry.retries + 1, rc, " (%s: %s)" % (cause, attempt["why"]) if faulty else "", where))
        for index, why in sorted(faulty.items()):  # for `slots`, also when the run is not tried again
            uuid = ((before[0] or {}).get(index) or {}).get("uuid") or ""
            retry.api.record_faulty(retry.module.params["leases_dir"], index, uuid, why,
                                    os.path.basename(run_dir.rstrip("/")), attempt["ended"])
        if faulty:
            for index in faulty:  # let the faulty GPUs go; this run never takes them again
                os.close(held.pop(index))
                excluded.append(index)
            taken, more = _take_other_gpus(retry, run_dir, len(faulty), excluded + sorted(held), state)
            if taken is None:
                _note(run_dir, "no retry: %s" % more)
                break
            held.update(zip(taken, more))
            devices["gpus"] = sorted(held)
            _write(os.path.join(run_dir, "devices"), json.dumps({"gpus": devices["gpus"], "excluded": excluded}))
        if state["cancelled"]:
            break
        os.remove(os.path.join(run_dir, "retrying"))
    _write(os.path.join(run_dir, "ended"), _now())
    _write(os.path.join(run_dir, "rc"), str(rc))
    os._exit(0)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# The start of a launch's message when the copy is not what the last run left (the shim looks for it).
STALE = "the remote copy changed"


def _not_as_left(params: dict) -> str:
    """Why the copy on this host is not the one the last run left (expect_synced), or '' when it is."""
    try:
        with open(params["sync_file"] or "") as handle:
            found = handle.read().strip()
    except (OSError, UnicodeDecodeError):
        found = ""
    if found != params["expect_synced"]:
        return "its upload stamp is %s, not %s" % (found or "gone", params["expect_synced"])
    if not os.path.isfile(os.path.join(params["chdir"], "mlcube.yaml")):
        return "%s/mlcube.yaml is gone" % params["chdir"]
    program = os.path.expanduser(params["argv"][0]) if params["argv"] else ""
    if "/" in program and not os.path.exists(program):
        return "%s is gone" % program
    settings = os.environ.get("MLCUBE_SYSTEM_SETTINGS")
    if settings and not os.path.isfile(settings):
        return "%s is gone" % settings
    return ""


def launch(module) -> None:
    """Check, record and start the run, then answer through `module` (an AnsibleModule, or lean.py's stand-in for
    it): its exit_json and fail_json end the process."""
    params = module.params
    if params["run_retries"] < 0:
        module.fail_json(msg="run_retries: %d is not a number of retries (0 or more)" % params["run_retries"])
    secrets = {str(name): str(value) for name, value in (params["secrets"] or {}).items()}
    bad = [name for name in secrets if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name)]
    if bad:
        module.fail_json(msg="secrets: %s not an environment variable name" % ", ".join(bad))
    changed_copy = _not_as_left(params) if params["expect_synced"] else ""
    if changed_copy:
        module.fail_json(msg="%s since the last run (%s); nothing started" % (STALE, changed_copy), stale=True)
    os.makedirs(os.path.dirname(params["lock"]), mode=0o700, exist_ok=True)
    # Check, record and start under one lock, so two launches at the same moment cannot both start.
    with open(params["lock"] + ".guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        busy = _running_holder(params["lock"])
        if busy is not None:
            module.fail_json(msg="busy: run %s of this cube (started %s by %s) is still running in the remote "
                             "workspace %s on this host; give this run a workspace of its own (--workspace=DIR), "
                             "or wait for that run or cancel it"
                             % (busy.get("run_id"), busy.get("started"), busy.get("holder") or "unknown",
                                busy.get("workspace") or "of this cube"))
        if module.check_mode:
            module.exit_json(changed=True, run_dir=params["run_dir"])
        devices, leases, waiting = _take_slots(module) if params["gpus_needed"] >= 0 else ({}, [], None)
        argv = [os.path.expanduser(params["argv"][0])] + params["argv"][1:]
        if not os.path.exists(argv[0]) and "/" in argv[0]:
            module.fail_json(msg="%s does not exist on this host" % argv[0])
        run_dir = params["run_dir"]
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        if params["sync_stamp"] and params["sync_file"]:
            _write(params["sync_file"], params["sync_stamp"] + "\n")
        counts = {"linked": 0, "copied": 0}
        if params["workspace"]:
            os.makedirs(params["workspace"], exist_ok=True)
            _write(os.path.join(run_dir, "workspace"), params["workspace"])
            if params["shared_from"] and params["shared"]:
                try:
                    counts = _share_inputs(params["shared_from"], params["workspace"], params["shared"])
                except OSError as error:
                    module.fail_json(msg="cannot share the cube's inputs with the run's workspace %s: %s"
                                     % (params["workspace"], error), run_dir=run_dir)
        started = _now()
        _write(os.path.join(run_dir, "argv.json"), json.dumps(argv))
        for name in ("rc", "pid", "ended", "cancelled", "started", "queued", "supervisor", "devices", "retries",
                     "retrying", "attempts.json"):
            if os.path.exists(os.path.join(run_dir, name)):
                os.remove(os.path.join(run_dir, name))
        _write(os.path.join(run_dir, "queued" if waiting is not None else "started"), started)
        _write(params["lock"], json.dumps({"run_id": os.path.basename(run_dir), "run_dir": run_dir,
                                           "started": started, "holder": params["holder"],
                                           "workspace": params["workspace"] or ""}))
        if devices:
            _write(os.path.join(run_dir, "devices"), json.dumps(devices))
        if params["run_retries"] > 0:
            _write(os.path.join(run_dir, "retries"), str(params["run_retries"]))
        devices["docker_gpus"] = params["docker_gpus"]
        retry = Retry(module, params["run_retries"]) if params["run_retries"] > 0 else None
        pid = _start_detached(argv, params["chdir"], run_dir, secrets, devices, leases,
                              (waiting, module) if waiting is not None else None, retry)
    devices.pop("docker_gpus")
    if waiting is not None:  # its supervisor waits for the slots on the host
        module.exit_json(changed=True, run_dir=run_dir, queued=True, started=started, shared=counts, devices={},
                         done=False, mlcube_ssh_result="launch")
    if pid is None:
        module.fail_json(msg="the command did not start", run_dir=run_dir)
    module.exit_json(changed=True, run_dir=run_dir, pid=pid, started=started, shared=counts, devices=devices,
                     queued=False, mlcube_ssh_result="launch",
                     **_ended_within(run_dir, params["wait"], params["max_bytes"]))


def _ended_within(run_dir: str, wait: float, max_bytes: int) -> dict:
    """When the command ends within `wait` seconds: the final answer mlcube.ssh.follow would give (all output,
    exit code), so that following it needs no second module call. Otherwise just done=False."""
    deadline = time.time() + wait
    rc_file = os.path.join(run_dir, "rc")
    while not os.path.exists(rc_file):
        if time.time() >= deadline:
            return {"done": False}
        time.sleep(0.02)
    # The supervisor writes rc after the logs are complete (masked output included). failed=False: the launch
    # went well whatever the exit code (Ansible would fail a result whose rc is not 0); the result step judges it.
    answer = {"done": True, "failed": False, "died": False, "running": False, "rebooted": False, "offsets": {}}
    for stream in ("stdout", "stderr"):
        try:
            with open(os.path.join(run_dir, stream + ".log"), "rb") as handle:
                data = handle.read(max_bytes + 1)
        except OSError:
            data = b""
        if len(data) > max_bytes:
            return {"done": False}  # mlcube.ssh.follow returns it in parts
        answer[stream] = data.decode("utf-8", "replace")
        answer["offsets"][stream] = len(data)
    with open(rc_file) as handle:
        answer["rc"] = int(handle.read().strip() or 1)
    try:
        with open(os.path.join(run_dir, "ended")) as handle:
            answer["ended"] = handle.read().strip()
    except OSError:
        pass
    return answer


def _slots_api():
    """The slots helpers (imported here: the launcher's other parts load without the collection)."""
    from ansible_collections.mlcube.ssh.plugins.module_utils import slots
    return slots


def _guard(api, folder: str) -> int:
    """The one lock under which launches and waiting runs choose and take slots on this host."""
    api.ensure_dir(folder)
    guard = api.take(os.path.join(folder, ".guard"))
    while guard is None:
        time.sleep(0.05)
        guard = api.take(os.path.join(folder, ".guard"))
    return guard


def _try_slots(module, api, me=None, exclude=(), count=None):
    """Under the guard: (devices, leases, None), or (None, [], why not) when the slots are not free or runs
    queued earlier (`me`: this waiting run's name) wait for them. A retry asks for `count` GPUs, none of
    `exclude` (its faulty ones and those it holds); why not starts with `no GPU left` when the host has too few."""
    params = module.params
    folder = params["leases_dir"]
    line = api.waiters(folder)
    ahead = line[:line.index(me)] if me in line else line
    if ahead:
        return None, [], "%d run(s) queued before it wait for slots" % len(ahead)
    gpus, source, error = api.gpus_of_host(module.run_command, params["nvidia_smi"], params["gpus"])
    needed = params["gpus_needed"] if count is None else count
    if error and needed > 0:
        return None, [], error
    slots = api.describe(folder, gpus, api.cpu_slots_of_host(params["cpu_slots"]))
    if needed == 0:
        kind, pool = "cpu", slots["cpus"]
    else:
        kind, pool = "gpu", [slot for slot in slots["gpus"] if slot["index"] not in exclude]
    if exclude and len(pool) < needed:
        return None, [], "no GPU left for the retry on this host: it needs %d other than %s, and there are %d" % (
            needed, ", ".join("gpu %s" % index for index in exclude), len(pool))
    chosen = [slot["index"] for slot in pool if slot["state"] == "free"][:max(needed, 1)]
    leases = [api.take(api.lease_path(folder, kind, number)) for number in chosen]
    if len(chosen) < max(needed, 1) or None in leases:
        for fd in leases:
            if fd is not None:
                os.close(fd)
        states = ", ".join("%s %s %s" % (kind, slot["index"], slot["state"]) for slot in pool) \
            or "no GPU (%s)" % source
        return None, [], "no free slot: the run needs %s, and this host has %s" % (
            "%d GPU(s)" % needed if needed else "a CPU-only slot", states)
    return ({"gpus": chosen} if kind == "gpu" else {"cpu": chosen[0]}), leases, None


def _take_slots(module):
    """The run's slots, taken atomically: ({gpus: [...]} or {cpu: n}, the lease file descriptors, None); or,
    with `queue` and no free slots, ({}, [], the descriptor of its place in the queue).

    One guard (a lock on a file in the shared leases folder) makes the choice and the taking one step for every
    launch on the host, whoever starts it; each lease is a lock that the run's supervisor holds until it ends."""
    params = module.params
    api = _slots_api()
    try:
        guard = _guard(api, params["leases_dir"])
    except OSError as error:
        module.fail_json(msg="cannot use the leases folder %s: %s" % (params["leases_dir"], error))
    try:
        devices, leases, why = _try_slots(module, api)
        if devices is not None:
            return devices, leases, None
        if not params["queue"]:
            module.fail_json(msg=why)
        name = "%s-%s" % (_now(), os.path.basename(params["run_dir"].rstrip("/")))
        return {}, [], (api.wait_in_line(params["leases_dir"], name), name, api)
    finally:
        os.close(guard)


def _wait_for_slots(run_dir: str, waiting, devices: dict) -> list:
    """In the waiting supervisor: poll (under the guard) until this run is first in line and its slots are
    free; take them and leave the queue. Returns the lease descriptors; `devices` gets the slots."""
    (fd, name, api), module = waiting
    folder = module.params["leases_dir"]
    while True:
        guard = _guard(api, folder)
        try:
            got, leases, _why = _try_slots(module, api, me=name)
            if got is not None:
                devices.update(got)
                try:
                    os.unlink(os.path.join(folder, "waiting", name))
                except OSError:
                    pass
                os.close(fd)
                _write(os.path.join(run_dir, "devices"), json.dumps(got))
                _write(os.path.join(run_dir, "started"), _now())
                return leases
        finally:
            os.close(guard)
        time.sleep(1.0)


def _start_detached(argv: list, chdir: str, run_dir: str, secrets: dict, devices: dict, leases: list,
                    waiting=None, retry: Retry | None = None):
    """Double-fork a supervisor in a new session; return the command's process group id once known."""
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        # Detach from the SSH channel: anything left open on it would keep the connection alive.
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        keep = set(leases) | ({waiting[0][0]} if waiting else set())
        for fd in range(3, 1024):  # but the leases (and its place in the queue): the supervisor holds them
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        _write(os.path.join(run_dir, "supervisor"), str(os.getpid()))
        if waiting:
            try:
                leases = _wait_for_slots(run_dir, waiting, devices)
            except Exception as error:  # say why where the follower looks
                with open(os.path.join(run_dir, "stderr.log"), "a") as err:
                    err.write("mlcube-ssh-ansible: cannot take slots: %s\n" % error)
                _write(os.path.join(run_dir, "ended"), _now())
                _write(os.path.join(run_dir, "rc"), "125")
                os._exit(0)
        _supervise(argv, chdir, run_dir, secrets, devices, leases, retry)
    for fd in leases + ([waiting[0][0]] if waiting else []):
        os.close(fd)
    os.waitpid(first, 0)
    if waiting:
        return None
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with open(os.path.join(run_dir, "pid")) as handle:
                return int(handle.read())
        except (OSError, ValueError):
            time.sleep(0.01)
    return None


def lean_main(module) -> None:
    """Entry of a lean call (plugins/plugin_utils/lean.py): `module` is its stand-in for AnsibleModule."""
    launch(module)
