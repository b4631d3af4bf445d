"""Secrets: controller environment variables whose values reach the remote task and are never written down.

The values go from this process's memory to Ansible's lookup `mlcube_ssh_secret` over a Unix socket (no file:
an abstract socket on Linux, which only this user can use), from there as a `no_log` module option through the
SSH connection's stdin (pipelining) into the remote launcher's memory, and from there into the environment of
the remote `mlcube run` (and of `docker run -e NAME`, which copies it from there). See docs/security.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets as _random
import socket
import struct
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from .errors import SettingsError

SOCKET_VARIABLE = "MLCUBE_SSH_SECRETS_SOCKET"
MASK = "********"


def read(names: Sequence[str]) -> dict[str, str]:
    """The values of `names` from this process's environment; a missing one is a one-line settings error."""
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise SettingsError("secrets", f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set in "
                            "this environment: export the variable(s) before the command, or remove them from "
                            "'secrets'")
    return {name: os.environ[name] for name in names}


def mask(text: str, values: Sequence[str]) -> str:
    """`text` with every value replaced by MASK (longest first, so one value inside another goes too)."""
    for value in sorted(values, key=len, reverse=True):
        if value:
            text = text.replace(value, MASK)
    return text


def _peer_uid(connection: socket.socket) -> int | None:
    try:
        _pid, uid, _gid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                     struct.calcsize("3i")))
    except (AttributeError, OSError):  # not Linux: the socket's 0700 folder keeps others out
        return None
    return int(uid)


def _answer(connection: socket.socket, offered: Mapping[str, str]) -> None:
    with connection:
        connection.settimeout(10)
        uid = _peer_uid(connection)
        if uid is not None and uid != os.getuid():
            return  # only this user's processes (ansible-playbook and its workers)
        data = b""
        while not data.endswith(b"\n"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
        names = [str(name) for name in json.loads(data or b"{}").get("names") or []]
        answer = {"values": {name: offered[name] for name in names if name in offered},
                  "missing": [name for name in names if name not in offered]}
        connection.sendall(json.dumps(answer).encode())


@contextlib.contextmanager
def served(offered: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Serve `offered` while the block runs; yields the environment ansible-playbook needs to find it."""
    if not offered:
        yield {}
        return
    folder = None
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if sys.platform.startswith("linux"):
        name = "mlcube-ssh-ansible-" + _random.token_hex(16)
        server.bind("\0" + name)
        address = "@" + name
    else:
        folder = tempfile.mkdtemp(prefix="mlcube-ssh-")  # 0700
        address = str(Path(folder, "secrets.sock"))
        server.bind(address)
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError, ValueError):
                _answer(connection, offered)

    thread = threading.Thread(target=serve, name="mlcube-ssh-secrets", daemon=True)
    thread.start()
    try:
        yield {SOCKET_VARIABLE: address}
    finally:
        stop.set()
        thread.join()
        server.close()
        if folder:
            with contextlib.suppress(OSError):
                os.unlink(address)
                os.rmdir(folder)
