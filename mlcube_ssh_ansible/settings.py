"""Settings: validate the `ssh-ansible` platform section into a typed :class:`Settings`.

Everything here is checked before any host is touched, and each problem is reported as one
:class:`SettingsError` line naming the key and what is allowed. The keys of MLCube's original
SSH runner (`host`, `platform`, `remote_root`, `interpreter`, `authentication`) keep their meaning;
the old misspelling `authentication.identify_file` is accepted as an alias of `identity_file`.

Each key's default, range, choices and format come from spec.yml (see spec.py), the file the roles'
argument specs and defaults, the preflight role's checks and the docs' tables are generated from; this
module adds what one key cannot say alone (rules between keys, files that must exist).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import spec
from .errors import SettingsError

RUNNER_NAME = "ssh-ansible"

# synchronize copies locally (no SSH, as the local user) for these names: see docs/troubleshooting.md.
CONTROLLER_NAMES = spec.controller_names()

HOST_KEY_CHECKING: tuple[str, ...] = tuple(spec.setting("host_key_checking")["choices"])
INTERPRETER_TYPES: tuple[str, ...] = tuple(spec.setting("interpreter.type")["choices"])

TOP_KEYS = spec.keys()
INTERPRETER_KEYS = spec.keys("interpreter.")
AUTHENTICATION_KEYS = spec.keys("authentication.")
# Runner and platform names (also of platform_settings.runner): letters, digits and . _ -
_SAFE_NAME = re.compile(spec.fmt("name").pattern)

# Runners whose platforms' keys are checked before any host is touched (spec.yml); others are checked remotely.
_RUNNERS: dict[str, Any] = spec.setting("platform_settings")["runners"]
KNOWN_PLATFORM_KEYS: dict[str, tuple[str, ...]] = {runner: tuple(known["keys"]) for runner, known in _RUNNERS.items()}
DOCKER_PLATFORM_KEYS = KNOWN_PLATFORM_KEYS["docker"]
DOCKER_BUILD_STRATEGIES: tuple[str, ...] = tuple(_RUNNERS["docker"]["build_strategy"])

DEFAULT_PLATFORM: str = spec.default("platform")
DEFAULT_REMOTE_ROOT: str = spec.default("remote_root")
DEFAULT_VENV_LOCATION: str = spec.default("interpreter.location")
DEFAULT_VENV_NAME: str = spec.default("interpreter.name")
DEFAULT_CONNECT_TIMEOUT: int = spec.default("connect_timeout")
# How long a host whose connection was lost after its task started (while following it, or in a transfer)
# is tried again, with backoff, before the command gives up on it: VPN reconnects, Wi-Fi changes and sshd
# restarts last seconds to minutes. Its task keeps running there either way; `attach`/`fetch` pick it up.
DEFAULT_RECONNECT_TIMEOUT: int = spec.default("reconnect_timeout")
MAX_RECONNECT_TIMEOUT: int = spec.setting("reconnect_timeout")["max"]
# `forks: auto` (the default): commands whose remote steps hold a fork for minutes (configure: pip, docker
# build) use CONFIGURE_FORKS; the others (run, attach, status, cancel, doctor) start the remote work
# detached, so a fork only carries controller-side work, which is CPU-bound: one fork per controller CPU
# (at least MIN_AUTO_FORKS). Every fork is a copy of ansible-playbook (~50 MB RSS), see docs/benchmarks.md.
CONFIGURE_FORKS: int = spec.setting("forks")["auto"]["configure"]
MIN_AUTO_FORKS: int = spec.setting("forks")["auto"]["min"]
MAX_AUTO_FORKS: int = spec.setting("forks")["auto"]["max"]


@dataclass(frozen=True)
class Interpreter:
    """The remote Python that runs MLCube: the system one, or a virtualenv we create."""

    type: str = spec.default("interpreter.type")
    python: str = spec.default("interpreter.python")
    requirements: tuple[str, ...] = ()
    location: str = DEFAULT_VENV_LOCATION
    name: str = DEFAULT_VENV_NAME


@dataclass(frozen=True)
class Settings:
    """A validated platform section. Paths on the controller are absolute; remote paths may start with ~."""

    platform: str
    host: str | None = None
    port: int | None = None
    remote_root: str = DEFAULT_REMOTE_ROOT
    interpreter: Interpreter = field(default_factory=Interpreter)
    user: str | None = None
    identity_file: str | None = None
    password_env: str | None = None
    password_prompt: bool = spec.default("authentication.password_prompt")
    inventory: str | None = None
    hosts: str = spec.default("hosts")
    forks: int | None = None  # None: auto, see forks_for()
    host_key_checking: str = spec.default("host_key_checking")
    known_hosts: str | None = None
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    compress: bool = spec.default("compress")
    excludes: tuple[str, ...] = ()
    keep_artifacts: bool = spec.default("keep_artifacts")
    serial: str | int = spec.default("serial")
    max_fail_percentage: int = spec.default("max_fail_percentage")
    retries: int = spec.default("retries")
    skip_unchanged: bool = spec.default("skip_unchanged")
    # Remote folders are owner-only (0700); with a group, 2750 and that group (see docs/security.md).
    remote_group: str | None = None
    reconnect_timeout: int = DEFAULT_RECONNECT_TIMEOUT
    # The remote MLCube platform's own settings (e.g. docker: podman), written into a system settings file on
    # each host; empty leaves the host's ~/mlcube.yaml in charge. Inventory: mlcube_ssh_platform_settings.
    platform_settings: Mapping[str, Any] = field(default_factory=dict)
    # Names of controller environment variables whose values the remote task gets (never the values).
    secrets: tuple[str, ...] = ()


def _unknown_keys(section: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in section:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else "allowed: " + ", ".join(allowed)
            raise SettingsError(f"{prefix}{key}", f"unknown key; {hint}")


def _string(value: Any, key: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise SettingsError(key, "is required and must be a non-empty string")
        return None
    if not isinstance(value, str):
        raise SettingsError(key, f"must be a string, got {type(value).__name__} {value!r}")
    if "\n" in value or "\x00" in value:
        raise SettingsError(key, "must be a single line")
    return value


def _formatted(value: Any, key: str) -> str | None:
    """A string that matches the key's format in spec.yml (None when not given)."""
    text = _string(value, key)
    if text is not None:
        rule = spec.setting_format(key)
        if not rule.matches(text):
            raise SettingsError(key, f"{text!r} {rule.says}")
    return text


def _integer(value: Any, key: str, low: int, high: int) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit())):
        raise SettingsError(key, f"must be a whole number from {low} to {high}, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise SettingsError(key, f"must be a whole number from {low} to {high}, got {number}")
    return number


def _number(section: Mapping[str, Any], key: str) -> int:
    """A whole number in the key's range, or its default."""
    entry = spec.setting(key)
    number = _integer(section.get(key), key, entry["min"], entry["max"])
    return int(entry["default"]) if number is None else number


def _forks(value: Any) -> int | None:
    entry = spec.setting("forks")
    if isinstance(value, str) and value.strip().lower() == entry["default"]:
        return None
    try:
        return _integer(value, "forks", entry["min"], entry["max"])
    except SettingsError:
        raise SettingsError("forks", f"must be 'auto' or a whole number from {entry['min']} to {entry['max']}, "
                            f"got {value!r}") from None


def controller_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a container's `--cpus`)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, quota)) if quota else cpus


def _cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> int | None:
    """The CPU quota of this process's cgroup, rounded up (v2 cpu.max, or v1 cfs quota/period); None without."""
    candidates = [(f"{root}/cpu.max", None), (f"{root}/cpu/cpu.cfs_quota_us", f"{root}/cpu/cpu.cfs_period_us"),
                  (f"{root}/cpu,cpuacct/cpu.cfs_quota_us", f"{root}/cpu,cpuacct/cpu.cfs_period_us")]
    for quota_file, period_file in candidates:
        try:
            words = Path(quota_file).read_text().split()
            if period_file is not None:
                words.append(Path(period_file).read_text().strip())
            quota, period = words[0], int(words[1])
        except (OSError, ValueError, IndexError):
            continue
        if quota in ("max", "-1") or period <= 0:
            return None
        return -(-int(quota) // period)
    return None


def forks_for(settings: Settings, playbook: str) -> int:
    """How many hosts Ansible works on at once for `playbook`: the setting, or what `auto` means there.

    Peak controller memory grows ~50 MB per fork; wall time only while forks wait on remote work."""
    if settings.forks is not None:
        return settings.forks
    if playbook == "configure":
        return CONFIGURE_FORKS
    return max(MIN_AUTO_FORKS, min(MAX_AUTO_FORKS, controller_cpus()))


def _boolean(value: Any, key: str) -> bool:
    if value is None:
        return bool(spec.default(key))
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "false", "no"):
        return value.lower() in ("true", "yes")
    raise SettingsError(key, f"must be true or false, got {value!r}")


def _choice(value: Any, key: str) -> str:
    choices = tuple(spec.setting(key)["choices"])
    text = _string(value, key) or spec.default(key)
    if text not in choices:
        raise SettingsError(key, f"must be one of {', '.join(choices)}; got {text!r}")
    return text


def _word_list(value: Any, key: str, hint: str = "") -> tuple[str, ...]:
    """A whitespace-separated string (the original runner's form) or a list of strings; each word in the key's
    format when spec.yml gives one."""
    if value is None:
        return ()
    if isinstance(value, str):
        words = tuple(value.split())
    elif isinstance(value, (list, tuple)) and all(isinstance(item, str) and item.strip() for item in value):
        words = tuple(item.strip() for item in value)
    else:
        raise SettingsError(key, f"must be a whitespace-separated string or a list of strings, got {value!r}")
    if "format" in spec.setting(key):
        rule = spec.setting_format(key)
        for word in words:
            if not rule.matches(word):
                raise SettingsError(key, f"{word!r} {rule.says}{hint}")
    return words


def remote_path(value: Any, key: str) -> str:
    """A remote directory: absolute or under the remote user's home (~), shell-safe, without `..`."""
    text = _formatted(value, key) or spec.default(key)
    return text.rstrip("/") or "/"


def local_path(text: str, key: str) -> Path:
    """A controller-side path with ~ expanded; a path the system can't even look at is a settings error."""
    try:
        path = Path(text).expanduser()
        path.exists()  # raises for names too long for the file system
    except (RuntimeError, OSError, ValueError) as error:
        raise SettingsError(key, f"{text!r} is not a usable path on this machine ({error})") from None
    return path


def local_file(value: Any, key: str) -> str | None:
    """A controller-side file that must exist now: fail before connecting, not halfway through."""
    text = _string(value, key)
    if text is None:
        return None
    path = local_path(text, key)
    if not path.is_file():
        raise SettingsError(key, f"file {str(path)!r} does not exist on this machine")
    return str(path.resolve())


def _serial(section: Mapping[str, Any]) -> str | int:
    """Ansible's rolling batch size: a number of hosts or a percentage; 0 means all at once."""
    value = section.get("serial")
    if isinstance(value, str) and re.fullmatch(r"[1-9][0-9]?%|100%", value):
        return value
    return _number(section, "serial")


def _host(value: Any) -> str | None:
    host = _string(value, "host")
    if host is None:
        return None
    if "@" in host:
        raise SettingsError("host", f"{host!r} contains '@'; put the user name in authentication.user")
    _formatted(host, "host")
    if host.lower() in CONTROLLER_NAMES:
        raise SettingsError(
            "host",
            f"{host!r} is this controller: Ansible's synchronize would copy locally without SSH; "
            "use another loopback address (e.g. 127.0.0.2) or the machine's host name",
        )
    return host


def _interpreter(value: Any) -> Interpreter:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise SettingsError("interpreter", f"must be a mapping with keys {', '.join(INTERPRETER_KEYS)}")
    _unknown_keys(value, INTERPRETER_KEYS, "interpreter.")
    kind = _choice(value.get("type"), "interpreter.type")
    python = _formatted(value.get("python"), "interpreter.python") or spec.default("interpreter.python")
    requirements = _word_list(value.get("requirements"), "interpreter.requirements")
    if kind == "virtualenv" and not requirements:
        raise SettingsError(
            "interpreter.requirements",
            "a new virtualenv needs MLCube and the remote platform's runner, e.g. 'mlcube mlcube-docker'",
        )
    location = remote_path(value.get("location"), "interpreter.location")
    name = _formatted(value.get("name"), "interpreter.name") or DEFAULT_VENV_NAME
    return Interpreter(kind, python, requirements, location, name)


def _scalar(value: Any, key: str) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return _string(value, key) or ""
    raise SettingsError(key, f"must be a string, number or boolean, got {type(value).__name__}")


def platform_settings(value: Any, platform: str) -> dict[str, Any]:
    """`platform_settings`: values for the remote MLCube platform, checked where the runner's keys are known."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SettingsError("platform_settings", "must be a mapping of the remote platform's settings, e.g. "
                            "{docker: podman, gpu_args: '--gpus=all'}")
    runner = _string(value.get("runner"), "platform_settings.runner") or platform
    if not _SAFE_NAME.match(runner):
        raise SettingsError("platform_settings.runner", f"{runner!r} must be an MLCube runner name such as 'docker'")
    known = KNOWN_PLATFORM_KEYS.get(runner)
    checked: dict[str, Any] = {}
    for key, item in value.items():
        name = f"platform_settings.{key}"
        if not isinstance(key, str) or not key:
            raise SettingsError("platform_settings", f"{key!r} is not a setting name")
        if known is not None and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean 'platform_settings.{close[0]}'?" if close else "allowed: " + ", ".join(known)
            raise SettingsError(name, f"is not a setting of MLCube's {runner} platform; {hint}")
        if isinstance(item, Mapping):  # env_args, build_args: name -> value
            checked[key] = {str(sub): _scalar(sub_value, f"{name}.{sub}") for sub, sub_value in item.items()}
        else:
            checked[key] = _scalar(item, name)
    if runner == "docker":
        strategy = checked.get("build_strategy")
        if strategy is not None and strategy not in DOCKER_BUILD_STRATEGIES:
            raise SettingsError("platform_settings.build_strategy",
                                f"must be one of {', '.join(DOCKER_BUILD_STRATEGIES)}; got {strategy!r}")
        executable = checked.get("docker")
        if executable is not None and (not isinstance(executable, str) or not executable.strip()):
            raise SettingsError("platform_settings.docker", "must name the container engine's command, e.g. podman")
    return checked


@dataclass(frozen=True)
class _Authentication:
    user: str | None
    identity_file: str | None
    password_env: str | None
    password_prompt: bool


def _authentication(value: Any) -> _Authentication:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise SettingsError("authentication", "must be a mapping with keys " + ", ".join(AUTHENTICATION_KEYS))
    _unknown_keys(value, AUTHENTICATION_KEYS, "authentication.")
    user = _formatted(value.get("user"), "authentication.user")
    identity, alias = value.get("identity_file"), value.get("identify_file")
    if identity and alias and identity != alias:
        raise SettingsError(
            "authentication.identify_file",
            "is the old spelling of identity_file and disagrees with it; keep only identity_file",
        )
    key = "authentication.identity_file" if identity else "authentication.identify_file"
    password_env = _formatted(value.get("password_env"), "authentication.password_env")
    prompt = _boolean(value.get("password_prompt"), "authentication.password_prompt")
    if prompt and password_env:
        raise SettingsError("authentication.password_prompt", "use either password_env or password_prompt")
    return _Authentication(user, local_file(identity or alias, key), password_env, prompt)


def _secrets(value: Any) -> tuple[str, ...]:
    """Environment variable names only: a value here would be written down (this file, records, artifacts)."""
    names = _word_list(value, "secrets", "; list the NAMES of variables set on this machine, never their values")
    return tuple(dict.fromkeys(names))


def parse_settings(section: Mapping[str, Any]) -> Settings:
    """Validate a platform section (plain dict) into :class:`Settings`, or raise one SettingsError."""
    if not isinstance(section, Mapping):
        raise SettingsError(RUNNER_NAME, "the platform section must be a mapping")
    _unknown_keys(section, TOP_KEYS, "")
    runner = _string(section.get("runner"), "runner")
    if runner is not None and runner != RUNNER_NAME:
        raise SettingsError("runner", f"must be {RUNNER_NAME!r}, got {runner!r}")
    host = _host(section.get("host"))
    inventory = _string(section.get("inventory"), "inventory")
    if host and inventory:
        raise SettingsError("inventory", "use either 'host' or 'inventory', not both")
    if not host and not inventory:
        raise SettingsError("host", "set 'host' (one machine) or 'inventory' (an Ansible inventory)")
    if inventory is not None:
        inventory_path = local_path(inventory, "inventory")
        if not inventory_path.exists():
            raise SettingsError("inventory", f"{str(inventory_path)!r} does not exist on this machine")
        inventory = str(inventory_path.resolve())
    platform = _string(section.get("platform"), "platform", required=True)
    assert platform is not None
    _formatted(platform, "platform")
    hosts = _formatted(section.get("hosts"), "hosts") or spec.default("hosts")
    if host and hosts != spec.default("hosts"):
        raise SettingsError("hosts", "a host pattern needs 'inventory'; with 'host' there is one host")
    auth = _authentication(section.get("authentication"))
    checking = _choice(section.get("host_key_checking"), "host_key_checking")
    known_hosts = _string(section.get("known_hosts"), "known_hosts")
    if known_hosts is not None:
        known_hosts_path = local_path(known_hosts, "known_hosts").resolve()
        if any(char in "\"'\\" or (char.isspace() and char != " ") for char in str(known_hosts_path)):
            raise SettingsError("known_hosts", f"{str(known_hosts_path)!r} has a quote, backslash, tab or newline, "
                                "which ssh options cannot carry; move or link the file to a plainer path")
        if checking == "strict" and not known_hosts_path.is_file():
            raise SettingsError(
                "known_hosts",
                f"{str(known_hosts_path)!r} does not exist; create it with ssh-keyscan or use "
                "host_key_checking: accept-new",
            )
        known_hosts = str(known_hosts_path)
    return Settings(
        platform=platform,
        host=host,
        port=_integer(section.get("port"), "port", spec.setting("port")["min"], spec.setting("port")["max"]),
        remote_root=remote_path(section.get("remote_root"), "remote_root"),
        interpreter=_interpreter(section.get("interpreter")),
        user=auth.user,
        identity_file=auth.identity_file,
        password_env=auth.password_env,
        password_prompt=auth.password_prompt,
        inventory=inventory,
        hosts=hosts,
        forks=_forks(section.get("forks")),
        host_key_checking=checking,
        known_hosts=known_hosts,
        connect_timeout=_number(section, "connect_timeout"),
        compress=_boolean(section.get("compress"), "compress"),
        excludes=_word_list(section.get("excludes"), "excludes"),
        keep_artifacts=_boolean(section.get("keep_artifacts"), "keep_artifacts"),
        serial=_serial(section),
        retries=_number(section, "retries"),
        skip_unchanged=_boolean(section.get("skip_unchanged"), "skip_unchanged"),
        remote_group=_formatted(section.get("remote_group"), "remote_group"),
        reconnect_timeout=_number(section, "reconnect_timeout"),
        platform_settings=platform_settings(section.get("platform_settings"), platform),
        secrets=_secrets(section.get("secrets")),
        max_fail_percentage=_number(section, "max_fail_percentage"),
    )


def default_platform_section() -> dict[str, Any]:
    """What MLCube writes into the system settings file when it first finds this runner.

    Only the original SSH runner's keys, with nothing nested: MLCube warns about every default key
    a user's platform section lacks and then deep-merges this whole section under the user's, so a
    nested default (say, requirements) would silently land in a user's own interpreter section.
    """
    return {
        "runner": RUNNER_NAME,
        "host": "",
        "platform": DEFAULT_PLATFORM,
        "remote_root": DEFAULT_REMOTE_ROOT,
        "interpreter": {},
        "authentication": {},
    }
