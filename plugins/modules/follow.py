#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Return what a launched command wrote since the last call, waiting briefly for more, and whether it ended."""

from __future__ import annotations

DOCUMENTATION = r"""
module: follow
short_description: Read new output of a command started by mlcube.ssh.launch
description:
  - Returns the complete lines the command wrote to C(stdout.log) and C(stderr.log) in O(run_dir) after the
    byte O(offsets) the caller already has, and the new offsets, waiting up to O(wait) seconds for some.
  - The read position lives with the caller, not on the host. A call whose answer was lost with the
    connection is asked again from the same offsets, so nothing is skipped and nothing is sent twice.
  - The action plugin of the same name passes the offsets of the previous answer of the same C(until) loop,
    and asks again after a lost connection, for up to O(reconnect_timeout) seconds.
  - Reports RV(done) and the exit code RV(rc) once the command has ended and all output was returned, and
    RV(died) when the command is gone without an exit code (killed with its supervisor, or the host rebooted).
  - Never changes anything on the host.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  run_dir:
    description: The run folder given to M(mlcube.ssh.launch).
    type: path
    required: true
  offsets:
    description: "Bytes of each stream already read, as C({stdout: N, stderr: M})."
    type: dict
    default: {}
  cursor:
    description: Name of this reader, returned as it is (the action plugin matches answers of one loop by it).
    type: str
    default: default
  wait:
    description: Most seconds to wait for new output or the end.
    type: float
    default: 5.0
  batch:
    description: Once some output arrived, seconds to gather more before returning.
    type: float
    default: 1.0
  max_bytes:
    description: Most bytes returned per stream per call.
    type: int
    default: 262144
  rewind:
    description: Read from the start, whatever O(offsets) say.
    type: bool
    default: false
  reconnect_timeout:
    description:
      - Seconds a lost connection is tried again (backoff 1, 2, 4 ... 30 s) before the task fails. V(0) fails
        at once.
      - Handled by the action plugin on the controller; the module ignores it.
    type: float
    default: 0
attributes:
  check_mode:
    support: full
    description: Reads only; check mode changes nothing.
notes:
  - The read position is carried by the action plugin in the registered result of the previous loop
    iteration, so use O(cursor) and C(register) as the role C(mlcube.ssh.mlcube_ssh_remote_run) does.
seealso:
  - module: mlcube.ssh.launch
  - module: mlcube.ssh.stop
"""

EXAMPLES = r"""
- name: Follow a run to its end, printing nothing twice after a lost connection
  mlcube.ssh.follow:
    run_dir: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/runs/20250101-120000
    cursor: follow
    reconnect_timeout: 600
  register: followed
  until: followed.done | default(false) or followed.died | default(false)
  retries: 100000
  delay: 0

- name: The state of a run, without its output
  mlcube.ssh.follow:
    run_dir: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/runs/20250101-120000
    wait: 0
    rewind: true
    max_bytes: 0
  register: state
"""

RETURN = r"""
stdout:
  description: New complete lines of standard output.
  returned: always
  type: str
stderr:
  description: New complete lines of standard error.
  returned: always
  type: str
offsets:
  description: Bytes of each stream read so far (pass them to the next call).
  returned: always
  type: dict
  sample: {stdout: 120, stderr: 0}
done:
  description: Whether the command ended and everything was read.
  returned: always
  type: bool
died:
  description: Whether the command is gone without an exit code.
  returned: always
  type: bool
rebooted:
  description: Whether the host booted after the command started.
  returned: always
  type: bool
rc:
  description: The command's exit code.
  returned: once the command ended
  type: int
running:
  description: Whether the command's process group is still alive.
  returned: always
  type: bool
started:
  description: When the command started (ISO 8601).
  returned: always
  type: str
ended:
  description: When the command ended (ISO 8601).
  returned: once the command ended
  type: str
run_dir:
  description: O(run_dir), as given (added by the action plugin).
  returned: always
  type: str
cursor:
  description: O(cursor), as given (added by the action plugin).
  returned: always
  type: str
reconnected:
  description: After a lost connection came back, since when it was lost, for how many seconds, and the tries.
  returned: when a lost connection came back
  type: dict
lost:
  description: The connection is lost; the loop asks again after a backoff.
  returned: while the connection is lost
  type: dict
gave_up:
  description: The connection did not come back within O(reconnect_timeout); what was known.
  returned: when the task failed that way
  type: dict
mlcube_ssh_result:
  description: >-
    V(run), added by the action plugin. What this result is, for the mlcube-ssh-ansible shim (it never goes
    by task names).
  returned: always
  type: str
"""

import datetime
import os
import time

from ansible.module_utils.basic import AnsibleModule

STREAMS = ("stdout", "stderr")


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


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            cursor=dict(type="str", default="default"),
            wait=dict(type="float", default=5.0),
            batch=dict(type="float", default=1.0),
            max_bytes=dict(type="int", default=262144),
            rewind=dict(type="bool", default=False),
            offsets=dict(type="dict", default={}),
            # Used by the action plugin (it never reaches the module): declared so that it is documented.
            reconnect_timeout=dict(type="float", default=0),
        ),
        supports_check_mode=True,
    )
    run_dir = module.params["run_dir"]
    if not os.path.isdir(run_dir):
        module.fail_json(msg="no such run on this host: %s" % run_dir)
    given = {} if module.params["rewind"] else (module.params["offsets"] or {})
    try:
        offsets = {stream: max(0, int(given.get(stream) or 0)) for stream in STREAMS}
    except (TypeError, ValueError):
        module.fail_json(msg="offsets must map stdout and stderr to byte counts, got %r" % (given,))
    # Return at the end, or `batch` seconds after the first new output (fewer round trips, still live),
    # or after `wait` seconds in any case (a heartbeat that shows the connection is alive).
    started = time.time()
    first_output = None
    chunks = {stream: b"" for stream in STREAMS}
    while True:
        ended = os.path.exists(os.path.join(run_dir, "rc"))
        for stream in STREAMS:
            room = module.params["max_bytes"] - len(chunks[stream])
            data, offsets[stream] = _read_new(os.path.join(run_dir, stream + ".log"), offsets.get(stream, 0),
                                              room, ended)
            chunks[stream] += data
        complete = ended and all(
            offsets[s] >= os.path.getsize(os.path.join(run_dir, s + ".log"))
            for s in STREAMS if os.path.exists(os.path.join(run_dir, s + ".log"))
        )
        now = time.time()
        if first_output is None and any(chunks.values()):
            first_output = now
        full = any(len(chunk) >= module.params["max_bytes"] for chunk in chunks.values())
        if complete or full or now - started >= module.params["wait"] or \
                (first_output is not None and now - first_output >= module.params["batch"]):
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
    result = dict(changed=False, done=complete, died=died, running=running, cursor=module.params["cursor"],
                  offsets=offsets, stdout=chunks["stdout"].decode("utf-8", "replace"),
                  stderr=chunks["stderr"].decode("utf-8", "replace"))
    for name in ("started", "ended"):
        text = _read_text(os.path.join(run_dir, name))
        if text is not None:
            result[name] = text
    result["rebooted"] = bool(result.get("started")) and _booted_after(result["started"])
    if ended:  # the exit code is known as soon as the command ended; `done` waits for all output too
        result["rc"] = int(_read_text(os.path.join(run_dir, "rc")) or 1)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
