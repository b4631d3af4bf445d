#!/usr/bin/python
"""Return what a launched command wrote since the last call, waiting briefly for more, and whether it ended."""

from __future__ import annotations

DOCUMENTATION = r"""
module: mlcube_ssh_follow
short_description: Read new output of a command started by mlcube_ssh_launch
description:
  - Returns the complete lines the command wrote to C(stdout.log) and C(stderr.log) in O(run_dir) since the
    previous call with the same O(cursor) (the read position is kept in the run folder, so a task that
    retries with C(until) streams the output piece by piece), waiting up to O(wait) seconds for some.
  - Reports C(done) and the exit code C(rc) once the command has ended and all output was returned.
  - Never changes anything but its own cursor file.
options:
  run_dir: {type: path, required: true, description: The run folder given to mlcube_ssh_launch.}
  cursor: {type: str, default: default, description: Name of this reader's read position.}
  wait: {type: float, default: 5.0, description: Most seconds to wait for new output or the end.}
  batch: {type: float, default: 1.0, description: Once some output arrived, seconds to gather more before returning.}
  max_bytes: {type: int, default: 262144, description: Most bytes returned per stream per call.}
  rewind: {type: bool, default: false, description: Read from the start and leave the cursor alone.}
author: mlcube-ssh-ansible
"""

RETURN = r"""
stdout: {description: New complete lines of standard output., returned: always, type: str}
stderr: {description: New complete lines of standard error., returned: always, type: str}
done: {description: Whether the command ended and everything was read., returned: always, type: bool}
rc: {description: The command's exit code once it ended., returned: once ended, type: int}
running: {description: Whether the command's process group is still alive., returned: always, type: bool}
started: {description: When the command started (ISO 8601)., returned: always, type: str}
ended: {description: When the command ended (ISO 8601)., returned: once ended, type: str}
"""

import json
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
    try:
        with open(os.path.join(run_dir, "pid")) as handle:
            os.killpg(int(handle.read()), 0)
    except (OSError, ValueError):
        return False
    return True


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            cursor=dict(type="str", default="default"),
            wait=dict(type="float", default=5.0),
            batch=dict(type="float", default=1.0),
            max_bytes=dict(type="int", default=262144),
            rewind=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run_dir = module.params["run_dir"]
    if not os.path.isdir(run_dir):
        module.fail_json(msg="no such run on this host: %s" % run_dir)
    cursor_file = os.path.join(run_dir, ".cursor-" + "".join(c for c in module.params["cursor"] if c.isalnum()))
    offsets = {}
    if not module.params["rewind"]:
        try:
            with open(cursor_file) as handle:
                offsets = json.load(handle)
        except (OSError, ValueError):
            pass
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
    if not module.params["rewind"]:
        with open(cursor_file + ".tmp", "w") as handle:
            json.dump(offsets, handle)
        os.replace(cursor_file + ".tmp", cursor_file)
    result = dict(changed=False, done=complete, running=_alive(run_dir),
                  stdout=chunks["stdout"].decode("utf-8", "replace"),
                  stderr=chunks["stderr"].decode("utf-8", "replace"))
    for name in ("started", "ended"):
        try:
            with open(os.path.join(run_dir, name)) as handle:
                result[name] = handle.read().strip()
        except OSError:
            pass
    if ended:  # the exit code is known as soon as the command ended; `done` waits for all output too
        with open(os.path.join(run_dir, "rc")) as handle:
            result["rc"] = int(handle.read().strip() or 1)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
