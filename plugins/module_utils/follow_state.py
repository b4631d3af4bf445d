# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""A launched run's new output and state: what mlcube.ssh.follow answers, in the standard library only.

The module mlcube.ssh.follow wraps it in AnsibleModule; its action plugin may also send this file's text as it is
to the host's Python (a lean call, plugins/plugin_utils/lean.py: ~0.03 s of the host's CPU instead of ~0.2 s).
"""

from __future__ import annotations

import datetime
import os
import time

STREAMS = ("stdout", "stderr")

# The module's options (the action plugin checks them on the controller with the same spec, run_dir as a string).
ARGUMENT_SPEC = dict(
    run_dir=dict(type="path", required=True),
    cursor=dict(type="str", default="default"),
    wait=dict(type="float", default=5.0),
    batch=dict(type="float", default=1.0),
    max_bytes=dict(type="int", default=262144),
    rewind=dict(type="bool", default=False),
    offsets=dict(type="dict", default={}),
    # Used by the action plugin (it never reaches the module): declared so that it is documented.
    reconnect_timeout=dict(type="float", default=0),
)


def _read_new(path: str, offset: int, limit: int, final: bool) -> tuple[bytes, int]:
    """Complete lines after `offset` (everything, when `final`), at most `limit` bytes."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(limit)
    except OSError:
        return b"", offset
    if not final and len(data) < limit:
        cut = data.rfind(b"\n") + 1
        data = data[:cut]
    return data, offset + len(data)


def _alive(run_dir: str) -> bool:
    """The command's process group is alive, or (a queued run) its supervisor still waits for slots."""
    try:
        with open(os.path.join(run_dir, "pid")) as handle:
            os.killpg(int(handle.read()), 0)
    except FileNotFoundError:
        try:
            with open(os.path.join(run_dir, "supervisor")) as handle:
                os.kill(int(handle.read()), 0)
        except (OSError, ValueError):
            return False
    except (OSError, ValueError):
        return False
    return True


def _booted_after(started: str) -> bool:
    """Whether this Linux host booted after `started` (ISO 8601): then the command died with the old boot."""
    try:
        with open("/proc/stat") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
        return boot > datetime.datetime.fromisoformat(started).timestamp() + 1
    except (OSError, ValueError, StopIteration, IndexError):
        return False


def _read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def answer(run_dir: str, offsets: dict, cursor: str = "default", wait: float = 5.0, batch: float = 1.0,
           max_bytes: int = 262144, rewind: bool = False) -> dict:
    """The run's output after `offsets` and its state; {failed, msg} when there is no such run or bad offsets."""
    if not os.path.isdir(run_dir):
        return {"failed": True, "msg": "no such run on this host: %s" % run_dir}
    given = {} if rewind else (offsets or {})
    try:
        read = {stream: max(0, int(given.get(stream) or 0)) for stream in STREAMS}
    except (TypeError, ValueError, AttributeError):
        return {"failed": True, "msg": "offsets must map stdout and stderr to byte counts, got %r" % (given,)}
    # Return at the end, or `batch` seconds after the first new output (fewer round trips, still live),
    # or after `wait` seconds in any case (a heartbeat that shows the connection is alive).
    started = time.time()
    first_output = None
    chunks = {stream: b"" for stream in STREAMS}
    while True:
        ended = os.path.exists(os.path.join(run_dir, "rc"))
        for stream in STREAMS:
            room = max_bytes - len(chunks[stream])
            data, read[stream] = _read_new(os.path.join(run_dir, stream + ".log"), read[stream], room, ended)
            chunks[stream] += data
        complete = ended and all(
            read[s] >= os.path.getsize(os.path.join(run_dir, s + ".log"))
            for s in STREAMS if os.path.exists(os.path.join(run_dir, s + ".log"))
        )
        now = time.time()
        if first_output is None and any(chunks.values()):
            first_output = now
        full = any(len(chunk) >= max_bytes for chunk in chunks.values())
        if complete or full or now - started >= wait or (first_output is not None and now - first_output >= batch):
            break
        time.sleep(0.1)
    running = _alive(run_dir)
    died = False
    if not ended and not running and os.path.exists(os.path.join(run_dir, "pid")):
        # Between the command's end and its exit code being written, nothing runs either: look again.
        for _attempt in range(20):
            time.sleep(0.1)
            ended = os.path.exists(os.path.join(run_dir, "rc"))
            if ended or _alive(run_dir):
                break
        else:
            died = True
    result = dict(changed=False, done=complete, died=died, running=running, cursor=cursor, offsets=read,
                  stdout=chunks["stdout"].decode("utf-8", "replace"),
                  stderr=chunks["stderr"].decode("utf-8", "replace"))
    for name in ("started", "ended"):
        text = _read_text(os.path.join(run_dir, name))
        if text is not None:
            result[name] = text
    result["rebooted"] = bool(result.get("started")) and _booted_after(result["started"])
    if ended:  # the exit code is known as soon as the command ended; `done` waits for all output too
        result["rc"] = int(_read_text(os.path.join(run_dir, "rc")) or 1)
    return result


def with_verdict(result: dict, host: str) -> dict:
    """`result`, the final answer of a run that failed (its exit code is not 0) or died without an exit code, with
    `run_failed` saying so: the one message that the result tasks (roles/mlcube_ssh_remote_run/tasks/result.yml)
    fail the host with and that the shim's reporter gives when it leaves those tasks out."""
    if not (result.get("done") or result.get("died")):
        return result
    if "rc" in result:
        if int(result["rc"]) != 0:
            result["run_failed"] = "mlcube run failed on %s with exit code %d" % (host, int(result["rc"]))
    elif result.get("died"):
        why = ("the host rebooted since it started" if result.get("rebooted")
               else "its processes are gone (killed, or out of memory)")
        result["run_failed"] = "the run died on %s without an exit code: %s" % (host, why)
    return result


def follow(module) -> None:
    """Answer through `module` (the module's AnsibleModule, or lean.py's stand-in for it): the run's new output
    and state, or the failure."""
    options = {name: value for name, value in module.params.items() if name != "reconnect_timeout"}
    result = answer(**options)
    if result.get("failed"):
        module.fail_json(msg=result["msg"])
    module.exit_json(**result)


lean_main = follow  # the entry of a lean call (plugins/plugin_utils/lean.py)
