"""Settings validation: every bad value is one SettingsError naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlcube_ssh_ansible import settings as settings_module
from mlcube_ssh_ansible.errors import SettingsError
from mlcube_ssh_ansible.settings import Interpreter, Settings, forks_for, parse_settings


@pytest.fixture()
def key_file(tmp_path: Path) -> str:
    path = tmp_path / "id_test"
    path.write_text("not really a key\n")
    return str(path)


def section(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "runner": "ssh-ansible",
        "host": "gpu1.example.org",
        "platform": "docker",
        "remote_root": "~/mlcube",
        "interpreter": {"type": "virtualenv", "python": "python3", "requirements": "mlcube mlcube-docker",
                        "location": "~/.venvs", "name": "mlcube"},
        "authentication": {"user": "alice"},
    }
    base.update(overrides)
    return base


def test_original_ssh_runner_section_is_accepted(key_file: str) -> None:
    settings = parse_settings(section(authentication={"user": "alice", "identify_file": key_file}))
    assert settings == Settings(
        platform="docker",
        host="gpu1.example.org",
        remote_root="~/mlcube",
        interpreter=Interpreter("virtualenv", "python3", ("mlcube", "mlcube-docker"), "~/.venvs", "mlcube"),
        user="alice",
        identity_file=key_file,
    )


def test_identity_file_and_old_spelling_must_agree(key_file: str, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("x")
    assert parse_settings(section(authentication={"identity_file": key_file})).identity_file == key_file
    with pytest.raises(SettingsError, match="authentication.identify_file"):
        parse_settings(section(authentication={"identity_file": key_file, "identify_file": str(other)}))


def test_requirements_accept_a_list_and_a_string() -> None:
    as_list = parse_settings(section(interpreter={"type": "system", "requirements": ["mlcube", "mlcube-docker"]}))
    as_text = parse_settings(section(interpreter={"type": "system", "requirements": " mlcube\n mlcube-docker "}))
    assert as_list.interpreter.requirements == as_text.interpreter.requirements == ("mlcube", "mlcube-docker")


def test_port_given_as_text_from_the_command_line() -> None:
    assert parse_settings(section(port="2222")).port == 2222


@pytest.mark.parametrize("cpus", [1, 2, 8, 64])
def test_forks_auto_follows_the_command_and_the_controller_cpus(cpus: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "controller_cpus", lambda: cpus)
    auto = parse_settings(section())
    assert auto.forks is None and parse_settings(section(forks="Auto")).forks is None
    # configure holds a fork per host for its remote steps (pip, docker build); the rest is controller work.
    assert forks_for(auto, "configure") == 20
    expected = min(max(cpus, 2), 20)
    assert [forks_for(auto, name) for name in ("run", "attach", "status", "cancel", "doctor")] == [expected] * 5
    fixed = parse_settings(section(forks="7"))
    assert {forks_for(fixed, name) for name in ("configure", "run", "doctor")} == {7}


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        ({"hots": "x"}, "hots", "did you mean 'host"),
        ({"remote_rot": "x"}, "remote_rot", "did you mean 'remote_root'"),
        ({"host": None}, "host", "set 'host'"),
        ({"host": "localhost"}, "host", "127.0.0.2"),
        ({"host": "127.0.0.1"}, "host", "synchronize"),
        ({"host": "alice@gpu1"}, "host", "authentication.user"),
        ({"host": "gpu1; rm -rf /"}, "host", "not a host name"),
        ({"port": "22x"}, "port", "whole number"),
        ({"port": 70000}, "port", "1 to 65535"),
        ({"port": True}, "port", "whole number"),
        ({"platform": ""}, "platform", "required"),
        ({"platform": "docker; id"}, "platform", "platform name"),
        ({"remote_root": "mlcube"}, "remote_root", "absolute or start with ~/"),
        ({"remote_root": "~/a/../b"}, "remote_root", "'..'"),
        ({"remote_root": "/srv/my cubes"}, "remote_root", "letters, digits"),
        ({"remote_root": 5}, "remote_root", "must be a string"),
        ({"interpreter": {"type": "conda"}}, "interpreter.type", "system, virtualenv"),
        ({"interpreter": {"type": "virtualenv", "requirements": ""}}, "interpreter.requirements", "mlcube"),
        ({"interpreter": {"type": "system", "requirements": "--index-url=http://x mlcube"}},
         "interpreter.requirements", "pip option"),
        ({"interpreter": {"type": "system", "pyton": "python3"}}, "interpreter.pyton", "interpreter.python"),
        ({"interpreter": {"type": "virtualenv", "requirements": "mlcube", "name": "../x"}}, "interpreter.name",
         "letters"),
        ({"interpreter": "python3"}, "interpreter", "mapping"),
        ({"authentication": {"identity_file": "/nonexistent/key"}}, "authentication.identity_file",
         "does not exist"),
        ({"authentication": {"user": "bad user"}}, "authentication.user", "valid user"),
        ({"host_key_checking": "no"}, "host_key_checking", "strict, accept-new, off"),
        ({"known_hosts": "/nonexistent/known_hosts"}, "known_hosts", "ssh-keyscan"),
        ({"inventory": "/nonexistent/inventory.ini", "host": None}, "inventory", "does not exist"),
        ({"hosts": "gpu"}, "hosts", "needs 'inventory'"),
        ({"connect_timeout": 0}, "connect_timeout", "1 to 300"),
        ({"reconnect_timeout": "10m"}, "reconnect_timeout", "0 to 86400"),
        ({"reconnect_timeout": 86401}, "reconnect_timeout", "0 to 86400"),
        ({"forks": 0}, "forks", "'auto' or a whole number from 1 to 500"),
        ({"forks": "many"}, "forks", "'auto' or a whole number"),
        ({"compress": "maybe"}, "compress", "true or false"),
        ({"runner": "ssh"}, "runner", "'ssh-ansible'"),
        ({"remote_group": "lab; id"}, "remote_group", "not a group name"),
        ({"remote_group": ["lab"]}, "remote_group", "must be a string"),
    ],
)
def test_bad_values_name_their_key(overrides: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(section(**overrides))
    message = str(caught.value)
    assert caught.value.key == key
    assert words in message
    assert "\n" not in message


def test_host_and_inventory_together_is_an_error(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[gpu]\ngpu1\n")
    with pytest.raises(SettingsError, match="either 'host' or 'inventory'"):
        parse_settings(section(inventory=str(inventory)))
    settings = parse_settings(section(host=None, inventory=str(inventory), hosts="gpu:!gpu2"))
    assert settings.inventory == str(inventory) and settings.hosts == "gpu:!gpu2"


@pytest.mark.parametrize(("files", "expected"), [
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_a_container_cpu_quota_caps_the_cpus(tmp_path: Path, files: dict[str, str], expected: int | None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert settings_module._cgroup_cpu_quota(str(tmp_path)) == expected
    monkeypatch.setattr(settings_module, "_cgroup_cpu_quota", lambda: expected)
    monkeypatch.setattr(settings_module.os, "sched_getaffinity", lambda _pid: set(range(8)))
    assert settings_module.controller_cpus() == (expected or 8)


# ------------------------------------------------------------------------------------ platform_settings


def test_platform_settings_reach_the_inventory_as_a_mapping(key_file: str) -> None:
    from mlcube_ssh_ansible.render import render_inventory

    parsed = parse_settings(section(platform_settings={
        "docker": "podman", "gpu_args": "--gpus=all", "build_strategy": "auto", "env_args": {"HTTP_PROXY": "x"}}))
    assert parsed.platform_settings == {"docker": "podman", "gpu_args": "--gpus=all", "build_strategy": "auto",
                                        "env_args": {"HTTP_PROXY": "x"}}
    assert render_inventory(parsed)["all"]["vars"]["mlcube_ssh_platform_settings"] == parsed.platform_settings
    assert parse_settings(section()).platform_settings == {}


@pytest.mark.parametrize(("value", "key", "says"), [
    ({"dokcer": "podman"}, "platform_settings.dokcer", "did you mean 'platform_settings.docker'?"),
    ({"build_strategy": "sometimes"}, "platform_settings.build_strategy", "must be one of pull, auto, always"),
    ({"docker": ""}, "platform_settings.docker", "must name the container engine's command"),
    ({"gpu_args": ["--gpus", "all"]}, "platform_settings.gpu_args", "must be a string, number or boolean"),
    ({"cpu_args": "a\nb"}, "platform_settings.cpu_args", "must be a single line"),
    ("docker: podman", "platform_settings", "must be a mapping"),
    ({"runner": "bad name"}, "platform_settings.runner", "must be an MLCube runner name"),
])
def test_bad_platform_settings_are_one_line_errors_naming_the_key(key_file: str, value: Any, key: str,
                                                                  says: str) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings(section(platform_settings=value))
    assert raised.value.key == key and says in str(raised.value) and "\n" not in str(raised.value)


def test_platform_settings_of_other_runners_are_left_to_the_remote_mlcube(key_file: str) -> None:
    parsed = parse_settings(section(platform="singularity", platform_settings={"singularity": "apptainer"}))
    assert parsed.platform_settings == {"singularity": "apptainer"}
