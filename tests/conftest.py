"""Fixtures for the tests: real ssh hosts on loopback addresses, backed by tests/hosts.py.

The sshd and the users are session-scoped: starting them is cheap, but the remote virtualenv and Docker image
that the tests build in a user's home are not, so later tests reuse what earlier ones left there. Under
pytest-xdist (scripts/test.sh) each worker is a session of its own: its own sshd port, containers and users
(tests/hosts.py:user_name), so workers never share a home.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from tests.container_hosts import BULLSEYE, ContainerSshd, ensure_image, ensure_podman_user
from tests.hosts import Sshd, SshHost, ensure_dockerd, make_user, mlcube_settings

PODMAN_ADDRESS = "127.0.0.12"
"""The test sshd's address for the rootless-podman host (127.0.0.11 is kept free: nothing listens there)."""
BULLSEYE_ADDRESS = "127.0.0.10"
"""Where the bullseye container's own sshd listens (another port than any other test sshd's)."""
SSHD_ADDRESSES: list[str] = [f"127.0.0.{i}" for i in range(2, 10)] + [PODMAN_ADDRESS]
"""Every address the test sshd listens on; each plays a separate machine."""

SLOWEST_FIRST: tuple[str, ...] = (
    # The longest tests, apart in pairs: at the start each worker is handed two tests in this order.
    "tests/integration/test_install.py::test_readme_install_works_with_the_newest_pip",
    "tests/integration/test_host_faults.py::test_a_full_remote_root",
    "tests/integration/test_install.py::test_readme_install_keeps_an_existing_mlcube_install",
    "tests/integration/test_configure_run.py::test_configure_run_fetch_and_idempotence",
    "tests/integration/test_fleet.py::test_group_runs_in_parallel",
    "tests/integration/test_other_hosts.py::test_podman_host_through_platform_settings",
    "tests/unit/test_sanity.py",
    "tests/integration/test_install.py",
    "tests/integration/test_host_faults.py",
    "tests/integration/test_network_faults.py",
    "tests/integration/test_reliability.py",
    "tests/integration/test_hardening.py",
    "tests/integration/test_fleet.py",
    "tests/integration/test_platform_settings.py",
    "tests/integration/test_configure_run.py",
    "tests/integration/test_secrets.py",
    "tests/integration/test_other_hosts.py",
    "tests/integration/",
    "tests/unit/test_properties.py",
)
"""Node id prefixes, the slowest tests first: the order in which parallel workers take them (pytest_collection_
modifyitems). Only the wall time depends on it: a long test taken last keeps the run going while others idle."""

SettingsFactory = Callable[..., Path]
"""settings_file(host, **platform_overrides) -> path of the MLCube system settings file written."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (scripts/test.sh), hand out the slowest tests first (SLOWEST_FIRST, then the rest in
    the usual order): each free worker takes the next one, so the run ends with short tests on every worker."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def rank(item: pytest.Item) -> int:
        return next((i for i, prefix in enumerate(SLOWEST_FIRST) if item.nodeid.startswith(prefix)),
                    len(SLOWEST_FIRST))

    items.sort(key=rank)  # stable: within a rank, the collection order


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the test users' client keys (root-owned, mode 0600)."""
    return tmp_path_factory.mktemp("ssh-keys")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One real sshd on 127.0.0.2-127.0.0.9 and PODMAN_ADDRESS for the whole session; Docker runs first."""
    ensure_dockerd()
    with Sshd.start(SSHD_ADDRESSES, tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def ssh_host(sshd: Sshd, ssh_keys: Path) -> SshHost:
    """The single remote host most tests use: 127.0.0.2, user mlcube-t1."""
    return sshd.host("127.0.0.2", make_user("mlcube-t1", ssh_keys))


@pytest.fixture(scope="session")
def fleet(sshd: Sshd, ssh_keys: Path) -> list[SshHost]:
    """Four hosts, 127.0.0.2-127.0.0.5, with users mlcube-f1..mlcube-f4 so that their homes are apart."""
    return [sshd.host(f"127.0.0.{i + 1}", make_user(f"mlcube-f{i}", ssh_keys)) for i in range(1, 5)]


@pytest.fixture(scope="session")
def bullseye_server(tmp_path_factory: pytest.TempPathFactory, ssh_keys: Path) -> Iterator[ContainerSshd]:
    """A Debian 11 container (Python 3.9, no venv, no pip) with its own sshd on BULLSEYE_ADDRESS.

    Its one user, mlcube-b1, has the uid/gid and the home (mounted) of the user of that name here, and
    reaches this machine's Docker engine through the mounted socket. The image is built once per machine.
    """
    ensure_dockerd()
    ensure_image(BULLSEYE)
    user = make_user("mlcube-b1", ssh_keys, docker=False)  # docker comes from the group inside the container
    with ContainerSshd.start(BULLSEYE.tag, BULLSEYE_ADDRESS, tmp_path_factory.mktemp("bullseye"),
                             homes=[user.home]) as server:
        server.add_user(user)
        yield server


@pytest.fixture(scope="session")
def bullseye_host(bullseye_server: ContainerSshd, ssh_keys: Path) -> SshHost:
    """The bullseye container as a host: user mlcube-b1, strict host key checking against its own key."""
    return bullseye_server.host(make_user("mlcube-b1", ssh_keys, docker=False))


@pytest.fixture(scope="session")
def podman_host(sshd: Sshd, ssh_keys: Path) -> SshHost:
    """PODMAN_ADDRESS, user mlcube-p1: rootless podman (userns keep-id), NOT in group docker."""
    user = make_user("mlcube-p1", ssh_keys, docker=False)
    ensure_podman_user(user)
    return sshd.host(PODMAN_ADDRESS, user)


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SettingsFactory:
    """Factory writing an MLCube system settings file for a host, and pointing MLCUBE_SYSTEM_SETTINGS at it.

    `make(host, **platform_overrides)` deep-merges the overrides into the `ssh-ansible` platform
    (tests.hosts.DROP as a value removes a key). Each call writes a new file and re-points the variable.
    """
    count = 0

    def make(host: SshHost, **platform_overrides: Any) -> Path:
        nonlocal count
        count += 1
        path = tmp_path / f"mlcube-system-settings-{count}.yaml"
        path.write_text(yaml.safe_dump(mlcube_settings(host, **platform_overrides), sort_keys=False))
        monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(path))
        return path

    return make
