"""Secrets on the controller (issue 17): names only in settings, values served from memory, masked output."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import threading
from pathlib import Path
from types import ModuleType

import pytest

from mlcube_ssh_ansible import secrets
from mlcube_ssh_ansible.errors import SettingsError
from mlcube_ssh_ansible.report import Reporter
from mlcube_ssh_ansible.settings import parse_settings

ROOT = Path(__file__).resolve().parent.parent.parent
LOOKUP = ROOT / "plugins" / "lookup" / "secret.py"
LAUNCH = ROOT / "plugins" / "module_utils" / "launcher.py"  # the work of mlcube.ssh.launch (standard library only)


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section(**overrides: object) -> dict[str, object]:
    return {"host": "gpu1", "platform": "docker", "interpreter": {"type": "system"}, **overrides}


def test_secrets_are_names_never_values() -> None:
    assert parse_settings(section(secrets="HF_TOKEN WANDB_API_KEY HF_TOKEN")).secrets == ("HF_TOKEN",
                                                                                          "WANDB_API_KEY")
    with pytest.raises(SettingsError) as caught:
        parse_settings(section(secrets=["hf_abcdef=123"]))
    assert caught.value.key == "secrets" and "NAMES" in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_variable_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SET_ONE", "x")
    monkeypatch.delenv("UNSET_ONE", raising=False)
    assert secrets.read(["SET_ONE"]) == {"SET_ONE": "x"}
    with pytest.raises(SettingsError) as caught:
        secrets.read(["SET_ONE", "UNSET_ONE"])
    assert "'secrets': UNSET_ONE is not set" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_lookup_gets_offered_values_from_memory_and_only_those(monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = load(LOOKUP)
    with secrets.served({"TOKEN": "v{{ 1 }}"}) as env:
        address = env[secrets.SOCKET_VARIABLE]
        assert address.startswith("@")  # abstract: no file anywhere
        answer = lookup._ask(address, ["TOKEN", "HOME"])
    assert answer == {"values": {"TOKEN": "v{{ 1 }}"}, "missing": ["HOME"]}  # HOME is set, but not offered


def test_another_user_gets_nothing_from_the_socket() -> None:
    if os.getuid() != 0:
        pytest.fail("this test switches to user nobody: run it as root (scripts/test.sh does)")
    client = "\n".join([
        "import socket, sys",
        "c = socket.socket(socket.AF_UNIX)",
        "c.connect('\\0' + sys.argv[1][1:])",
        "try:",
        "    c.sendall(b'{\"names\": [\"TOKEN\"]}\\n'); c.shutdown(socket.SHUT_WR); data = c.recv(65536)",
        "except OSError:",
        "    data = b''",
        "print(repr(data))"])
    with secrets.served({"TOKEN": "sentinel-value"}) as env:
        tried = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", client,
                                env[secrets.SOCKET_VARIABLE]], capture_output=True, text=True, check=False)
    assert tried.returncode == 0, tried.stderr  # it could connect (an abstract socket has no file modes)
    assert tried.stdout.strip() == "b''"  # and got no answer


def test_launcher_masks_values_split_across_reads(tmp_path: Path) -> None:
    masker = load(LAUNCH).Masker(["s3cr3t-value", "other"])
    read_end, write_end = os.pipe()
    log_path = tmp_path / "stdout.log"
    with log_path.open("wb") as log:
        pump = threading.Thread(target=masker.pump, args=(read_end, log))
        pump.start()
        for piece in (b"token=s3cr", b"3t-val", b"ue\npartial s3c", b"r and other\nends with s3cr3t-"):
            os.write(write_end, piece)
        os.close(write_end)
        pump.join()
    assert log_path.read_bytes() == b"token=********\npartial s3cr and ********\nends with s3cr3t-"


def test_reporter_masks_every_line_and_reason() -> None:
    lines: list[str] = []
    reporter = Reporter(write=lines.append)
    reporter.hide(["tok-123"])
    reporter.write("value tok-123 here")
    reporter._fail("h", "remote run", "failed with tok-123")
    assert lines[0] == "value ******** here" and "tok-123" not in reporter.hosts["h"].reason

