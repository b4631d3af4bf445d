#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Start a command detached from the SSH session, with its output and exit code kept in a run folder."""

from __future__ import annotations

DOCUMENTATION = r"""
module: launch
short_description: Start a command that outlives the SSH connection, logging to a run folder
description:
  - Starts O(argv) (no shell) in O(chdir) in a new session, detached from the connection, so a dropped
    connection or a killed controller does not stop it.
  - The run folder O(run_dir) receives C(stdout.log), C(stderr.log), C(pid) (the command's process
    group), C(argv.json), C(started) and, when the command ends, C(ended) and C(rc) (written atomically).
  - A lock file O(lock) keeps two runs of the same cube on the same host apart. A second launch while the
    first is running fails with a message naming the running one.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  argv:
    description: The command, as a list (no shell).
    type: list
    elements: str
    required: true
  chdir:
    description: Working directory of the command.
    type: path
    required: true
  run_dir:
    description: Folder for this run's logs and exit code.
    type: path
    required: true
  lock:
    description: Lock file shared by all runs of this cube.
    type: path
    required: true
  holder:
    description: Who starts the run, written into the lock and shown to a refused second run.
    type: str
    default: ''
  sync_stamp:
    description: Written to O(sync_file) before the start; empty writes nothing.
    type: str
    default: ''
  sync_file:
    description: Where O(sync_stamp) goes (it marks the uploaded copy as this run's).
    type: path
  secrets:
    description:
      - Name to value, added to the command's environment, never written to a file or a command line. Every
        value is masked (C(********)) in C(stdout.log) and C(stderr.log) before it is written.
      - C(docker run) and C(podman run) started by the command get C(-e NAME) for each name (Docker copies
        the value from its client's environment) and C(--rm), so the engine forgets the container, and the
        values in its configuration, when it ends. This is done by a wrapper in C(<run_dir>/bin), first on
        C(PATH).
      - Send this option only with pipelining, so that the module's arguments stay in memory on the host.
    type: dict
    default: {}
  wait:
    description:
      - Most seconds to wait for the command to end before returning. When it ends in time and its output fits
        O(max_bytes), the result is also a final answer of M(mlcube.ssh.follow) (RV(done), RV(rc), all output),
        so a short task costs one module call instead of two. V(0) returns at once.
    type: float
    default: 0
  max_bytes:
    description: Most bytes of each stream a final answer carries.
    type: int
    default: 262144
attributes:
  check_mode:
    support: full
    description: Starts nothing, and reports the change a real run would make.
seealso:
  - module: mlcube.ssh.follow
  - module: mlcube.ssh.stop
"""

EXAMPLES = r"""
- name: Start mlcube run detached from the connection
  mlcube.ssh.launch:
    argv: [~/.mlcube-ssh-ansible/venv/bin/python, -m, mlcube, run, --mlcube=., --platform=docker, --task=hello]
    chdir: ~/mlcube/hello-1a2b3c4d
    run_dir: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/runs/20250101-120000
    lock: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/run.lock
    holder: alice@laptop pid 4242
    secrets: "{{ lookup('mlcube.ssh.secret', ['HF_TOKEN']) }}"
    wait: 2
  register: launched
"""

RETURN = r"""
run_dir:
  description: The run folder.
  returned: always
  type: str
pid:
  description: Process group id of the command.
  returned: success
  type: int
done:
  description: Whether the command ended within O(wait), with all its output returned.
  returned: success
  type: bool
stdout:
  description: All standard output, when RV(done).
  returned: when done
  type: str
stderr:
  description: All standard error, when RV(done).
  returned: when done
  type: str
offsets:
  description: Bytes of each stream returned (as M(mlcube.ssh.follow) returns them).
  returned: when done
  type: dict
rc:
  description: The command's exit code, when RV(done).
  returned: when done
  type: int
"""

import datetime
import fcntl
import json
import os
import re
import signal
import subprocess
import threading
import time

from ansible.module_utils.basic import AnsibleModule


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


def _running_holder(lock: str) -> dict | None:
    """The lock's content when its run is still going (pid alive and no exit code yet), else None."""
    try:
        with open(lock) as handle:
            holder = json.load(handle)
        run_dir = holder["run_dir"]
        with open(os.path.join(run_dir, "pid")) as handle:
            pid = int(handle.read())
    except (OSError, ValueError, KeyError):
        return None
    if os.path.exists(os.path.join(run_dir, "rc")) or not _alive(pid):
        return None
    return holder


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
    set -- run --rm "$@"
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


def _environment(run_dir: str, secrets: dict) -> dict:
    """The command's environment: ours, the secrets, and the container engine wrappers first on PATH."""
    env = dict(os.environ)
    if not secrets:
        return env
    bin_dir = os.path.join(run_dir, "bin")
    os.makedirs(bin_dir, mode=0o700, exist_ok=True)
    for engine in ENGINES:
        _write(os.path.join(bin_dir, engine), WRAPPER)
        os.chmod(os.path.join(bin_dir, engine), 0o700)
    env.update(secrets)
    env["MLCUBE_SSH_REAL_PATH"] = env.get("PATH", os.defpath)
    env["PATH"] = bin_dir + os.pathsep + env["MLCUBE_SSH_REAL_PATH"]
    env["MLCUBE_SSH_SECRET_NAMES"] = " ".join(sorted(secrets))
    return env


def _supervise(argv: list, chdir: str, run_dir: str, secrets: dict) -> None:
    """In the detached grandchild: run the command, then record its exit code. Never returns.

    With secrets, the command's output goes through pipes and is masked before it reaches the logs."""
    try:
        env = _environment(run_dir, secrets)
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
            _write(os.path.join(run_dir, "pid"), str(child.pid))
            # A TERM to the supervisor (e.g. from a cancel) is passed on to the command's process group.
            signal.signal(signal.SIGTERM, lambda *_: os.killpg(child.pid, signal.SIGTERM))
            rc = child.wait()
            for pump in pumps:  # the rest of the output (not waiting forever for what the command left behind)
                pump.join(timeout=10)
        rc = 128 - rc if rc < 0 else rc
    except Exception as error:  # the command could not start: say why where the follower looks
        with open(os.path.join(run_dir, "stderr.log"), "a") as err:
            err.write("mlcube-ssh-ansible: cannot start %s: %s\n" % (argv[0], error))
        rc = 127
    _write(os.path.join(run_dir, "ended"), _now())
    _write(os.path.join(run_dir, "rc"), str(rc))
    os._exit(0)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            argv=dict(type="list", elements="str", required=True),
            chdir=dict(type="path", required=True),
            run_dir=dict(type="path", required=True),
            lock=dict(type="path", required=True),
            holder=dict(type="str", default=""),
            sync_stamp=dict(type="str", default=""),
            sync_file=dict(type="path"),
            secrets=dict(type="dict", default={}, no_log=True),
            wait=dict(type="float", default=0.0),
            max_bytes=dict(type="int", default=262144),
        ),
        supports_check_mode=True,
    )
    params = module.params
    secrets = {str(name): str(value) for name, value in (params["secrets"] or {}).items()}
    bad = [name for name in secrets if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name)]
    if bad:
        module.fail_json(msg="secrets: %s not an environment variable name" % ", ".join(bad))
    os.makedirs(os.path.dirname(params["lock"]), mode=0o700, exist_ok=True)
    # Check, record and start under one lock, so two launches at the same moment cannot both start.
    with open(params["lock"] + ".guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        busy = _running_holder(params["lock"])
        if busy is not None:
            module.fail_json(msg="busy: run %s of this cube (started %s by %s) is still running on this host"
                             % (busy.get("run_id"), busy.get("started"), busy.get("holder") or "unknown"))
        if module.check_mode:
            module.exit_json(changed=True, run_dir=params["run_dir"])
        argv = [os.path.expanduser(params["argv"][0])] + params["argv"][1:]
        if not os.path.exists(argv[0]) and "/" in argv[0]:
            module.fail_json(msg="%s does not exist on this host" % argv[0])
        run_dir = params["run_dir"]
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        if params["sync_stamp"] and params["sync_file"]:
            _write(params["sync_file"], params["sync_stamp"] + "\n")
        started = _now()
        _write(os.path.join(run_dir, "argv.json"), json.dumps(argv))
        _write(os.path.join(run_dir, "started"), started)
        for name in ("rc", "pid", "ended"):
            if os.path.exists(os.path.join(run_dir, name)):
                os.remove(os.path.join(run_dir, name))
        _write(params["lock"], json.dumps({"run_id": os.path.basename(run_dir), "run_dir": run_dir,
                                           "started": started, "holder": params["holder"]}))
        pid = _start_detached(argv, params["chdir"], run_dir, secrets)
    if pid is None:
        module.fail_json(msg="the command did not start", run_dir=run_dir)
    module.exit_json(changed=True, run_dir=run_dir, pid=pid, started=started,
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


def _start_detached(argv: list, chdir: str, run_dir: str, secrets: dict):
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
        os.closerange(3, 1024)
        _supervise(argv, chdir, run_dir, secrets)
    os.waitpid(first, 0)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with open(os.path.join(run_dir, "pid")) as handle:
                return int(handle.read())
        except (OSError, ValueError):
            time.sleep(0.01)
    return None


if __name__ == "__main__":
    main()
