"""Doctor: can this controller, these settings and each host run this cube? One line per check.

Checks, in order, each printed as ``ok`` or ``FAIL`` with what to do:

* the controller: ansible-core, the ansible.posix collection, rsync and ssh (sshpass only when a
  password is configured);
* the settings: the platform section, validated as every command validates it;
* each host, through ``playbooks/doctor.yml`` (role ``mlcube_ssh_doctor``) run with the inventory
  that ``configure``/``run`` use: reachable, host key known, remote Python, remote rsync, MLCube in the
  configured environment, and the remote platform (``docker info`` as the login user).

Nothing on the hosts is changed. The verdict is a :class:`DoctorFailed` naming each failing host and
check, or a closing ``ok`` line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import assets, credentials, workflow
from .errors import Interrupted, SshAnsibleError
from .execute import run_playbook
from .render import EXCLUDED_DIRS, Job
from .settings import Settings

MIN_ANSIBLE_CORE = (2, 15)
PLAYBOOK = "doctor"
CHECKS_FACT = "mlcube_ssh_doctor_checks"  # the role's results: one entry (name, status, detail, fix) per check

Write = Callable[[str], None]


@dataclass(frozen=True)
class Check:
    """One result: what was checked (on which host), whether it passed, what was found, what to do."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    host: str | None = None

    def line(self) -> str:
        where = f"{self.host}: " if self.host else ""
        text = f"{'ok  ' if self.ok else 'FAIL'} {where}{self.name}: {self.detail}"
        return f"{text} -> {self.fix}" if not self.ok and self.fix else text

    @property
    def label(self) -> str:
        return f"{self.host} {self.name}" if self.host else self.name


class DoctorFailed(SshAnsibleError):
    """At least one check failed; the message names each failing host and check."""

    def __init__(self, message: str, failed: list[Check], exit_code: int = 1) -> None:
        self.failed = failed
        self.exit_code = exit_code
        super().__init__(message)


# ------------------------------------------------------------------------------------------ the controller


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_ansible_core() -> Check:
    try:
        from ansible.release import __version__ as version
    except ImportError:
        return Check("ansible-core", False, "not installed for this Python",
                     "pip install 'mlcube-ssh-ansible[ansible]'")
    playbook = Path(assets.ansible_bin_dir(), "ansible-playbook")
    where = str(playbook) if playbook.is_file() else shutil.which("ansible-playbook")
    if where is None:
        return Check("ansible-core", False, f"{version} is installed but ansible-playbook is not found",
                     "reinstall ansible-core in this environment")
    if _version(version) < MIN_ANSIBLE_CORE:
        need = ".".join(map(str, MIN_ANSIBLE_CORE))
        return Check("ansible-core", False, f"{version} is older than {need}",
                     f"pip install 'ansible-core>={need}'")
    return Check("ansible-core", True, f"{version} ({where})")


def check_posix() -> Check:
    """The collection every command checks for (assets.posix_collection), with the version found."""
    root = assets.posix_collection()
    if root is None:
        return Check("ansible.posix", False, "the collection is missing (it has `synchronize`)", assets.POSIX_FIX)
    try:
        version = json.loads((root / "MANIFEST.json").read_text())["collection_info"]["version"]
    except (OSError, ValueError, KeyError, TypeError):
        version = "(version unknown)"
    return Check("ansible.posix", True, f"{version} in {root.parents[2]}")


def check_tool(tool: str, why: str = "") -> Check:
    path = shutil.which(tool)
    if path is None:
        return Check(tool, False, f"not on PATH{why}", f"install it (e.g. apt-get install {tool})")
    try:
        probe = subprocess.run([path, "-V" if tool == "ssh" else "--version"], capture_output=True, text=True,
                               timeout=10, check=False)
        first = (probe.stdout or probe.stderr).strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        first = []
    version = re.sub(r"\s+", " ", first[0]) if first else ""
    return Check(tool, True, f"{path}" + (f" ({version})" if version else ""))


def controller_checks() -> list[Check]:
    return [check_ansible_core(), check_posix(), check_tool("rsync"), check_tool("ssh")]


def settings_check(settings: Settings, source: str) -> Check:
    if settings.host:
        where = f"{settings.host}:{settings.port or 22}"
    else:
        where = f"hosts '{settings.hosts}' of {settings.inventory}"
    user = f" as {settings.user}" if settings.user else ""
    return Check("settings", True, f"{source}: {where}{user}, remote platform {settings.platform}, "
                 f"interpreter {settings.interpreter.type}")


# ------------------------------------------------------------------------------------------------ the hosts


class HostResults:
    """Event handler: the role's check list per host, and what broke a host outside the checks."""

    def __init__(self) -> None:
        self.checks: dict[str, list[dict[str, Any]]] = {}
        self.targets: dict[str, tuple[str, str]] = {}
        self.unreachable: dict[str, str] = {}
        self.failed: dict[str, tuple[str, str]] = {}
        self.hosts: list[str] = []

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host")
        if not host or not kind.startswith("runner_on_"):
            return True
        if host not in self.hosts:
            self.hosts.append(host)
        res = data.get("res") or {}
        if kind == "runner_on_ok":
            facts = res.get("ansible_facts") or {}
            if isinstance(facts.get(CHECKS_FACT), list):
                self.checks[host] = facts[CHECKS_FACT]
            if "mlcube_ssh_doctor_address" in facts:
                self.targets[host] = (str(facts["mlcube_ssh_doctor_address"]),
                                      str(facts.get("mlcube_ssh_doctor_port") or 22))
        elif kind == "runner_on_unreachable":
            self.unreachable[host] = str(res.get("msg") or "unreachable")
        elif kind == "runner_on_failed" and not data.get("ignore_errors") and not self._check_failed(host):
            action = str(data.get("resolved_action") or data.get("task_action") or "a task")
            role = str(data.get("role") or "").split(".")[-1]
            self.failed.setdefault(host, (action + (f" (role {role})" if role else ""), _last_line(res)))
        return True

    def _check_failed(self, host: str) -> bool:
        """A check recorded as failed: the role then fails the host itself, for reasons the checks already say."""
        return any(str(entry.get("status")).strip() != "ok" for entry in self.checks.get(host, [])
                   if isinstance(entry, dict))


def _last_line(res: dict[str, Any]) -> str:
    for key in ("msg", "stderr", "stdout"):
        text = res.get(key)
        if isinstance(text, str) and text.strip():
            return [line for line in text.strip().splitlines() if line.strip()][-1].strip()[:300]
    return "failed"


def _ssh_reason(message: str) -> str:
    prefixes = r"^(Task failed: )?(Failed to connect to the host via ssh: )?"
    text = re.sub(prefixes, "", message.replace("\r", ""))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("@")]
    return lines[-1] if lines else "unreachable"


def unreachable_checks(host: str, message: str, target: tuple[str, str], settings: Settings) -> list[Check]:
    """The reachable/host key lines for a host ssh could not log in to, with what to do."""
    address, port = target
    known_hosts = settings.known_hosts or "~/.ssh/known_hosts"
    reason = _ssh_reason(message)
    answered = Check("reachable", True, f"sshd answers on {address} port {port}", host=host)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in message or "has changed and you have requested" in message:
        entry = f"'[{address}]:{port}'" if port != "22" else address
        return [answered, Check(
            "host key", False, f"changed since it was recorded in {known_hosts}",
            f"make sure the host was reinstalled (not impersonated), then ssh-keygen -R {entry} "
            f"-f {known_hosts} and ssh-keyscan -p {port} {address} >> {known_hosts}", host=host)]
    if "Host key verification failed" in message or "host key is known" in message:
        scan = f"ssh-keyscan -p {port} {address} >> {known_hosts}"
        return [answered, Check("host key not known", False, scan,
                                "compare the scanned key's fingerprint with the host's before trusting it",
                                host=host)]
    lowered = reason.lower()
    if "permission denied" in lowered:
        fix = ("check authentication.user and authentication.identity_file: the key must be in the user's "
               "~/.ssh/authorized_keys on the host")
        return [answered, Check("login", False, reason, fix, host=host)]
    if "refused" in lowered:
        fix = f"is sshd running on {address} port {port}? check 'host' and 'port'"
    elif "timed out" in lowered or "timeout" in lowered:
        fix = (f"no answer within connect_timeout ({settings.connect_timeout} s): check 'host', 'port' and "
               "firewalls, or raise connect_timeout")
    elif "resolve" in lowered:
        fix = "check the host name ('host' or the inventory)"
    else:
        fix = "check 'host', 'port' and authentication; run doctor with -vvv for ssh's own account"
    return [Check("reachable", False, f"{address} port {port}: {reason}", fix, host=host)]


def _host_key_check(host: str, settings: Settings) -> Check:
    detail = {
        "strict": "known (strict checking)",
        "accept-new": "known, or recorded on first contact (host_key_checking: accept-new)",
        "off": "not verified (host_key_checking: off)",
    }[settings.host_key_checking]
    return Check("host key", True, detail, host=host)


def _role_checks(host: str, entries: list[dict[str, Any]], settings: Settings) -> list[Check]:
    checks: list[Check] = []
    for entry in entries:
        check = Check(str(entry.get("name")), str(entry.get("status")).strip() == "ok",
                      " ".join(str(entry.get("detail") or "").split()),
                      " ".join(str(entry.get("fix") or "").split()), host=host)
        checks.append(check)
        if check.name == "reachable":
            checks.append(_host_key_check(host, settings))
    return checks


def fresh_connections(inventory: dict[str, Any]) -> dict[str, Any]:
    """The inventory with ssh multiplexing off, so every check makes a real login.

    A master connection that an earlier command left open (ControlPersist) would otherwise answer for
    the host and hide a host key or login that no longer works.
    """
    group = dict(inventory.get("all", {}).get("vars") or {})
    args = shlex.split(str(group.get("ansible_ssh_args", "")))
    kept: list[str] = []
    for flag, value in zip(args[::2], args[1::2]):
        if not (flag == "-o" and value.split("=")[0] in ("ControlMaster", "ControlPersist", "ControlPath")):
            kept += [flag, value]
    group["ansible_ssh_args"] = shlex.join([*kept, "-o", "ControlMaster=no", "-o", "ControlPath=none"])
    return {**inventory, "all": {**inventory.get("all", {}), "vars": group}}


def upload_mb(job: Job) -> int:
    """What an upload of the cube sends at most (MB, rounded up): the remote_root must have it free."""
    total = 0
    for folder, dirs, files in os.walk(job.cube_root):
        dirs[:] = [name for name in dirs if name not in EXCLUDED_DIRS]
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return -(-total // (1024 * 1024))


def host_checks(settings: Settings, job: Job, *, verbosity: int = 0) -> list[Check]:
    """Run the doctor playbook on every host of the settings, as the workflow runs its playbooks (but for
    fresh connections); one Check per line to print."""
    invocation = workflow.playbook_invocation(PLAYBOOK, settings, job, verbosity=verbosity,
                                              extra={"mlcube_ssh_doctor_upload_mb": upload_mb(job)})
    invocation = dataclasses.replace(invocation, inventory=fresh_connections(invocation.inventory))
    results = HostResults()
    with workflow.interruptible() as cancel:
        outcome = run_playbook(invocation, results, cancel)
    if cancel.is_set():
        raise Interrupted("doctor interrupted")
    if not results.hosts:
        where = f" (Ansible artifacts kept in {outcome.artifacts})" if outcome.artifacts else ""
        pattern = settings.hosts if settings.inventory else settings.host
        return [Check("hosts", False, f"no host matched '{pattern}' (ansible-playbook exited with "
                      f"{outcome.rc}){where}", "check 'hosts' and the inventory (ansible-inventory --graph)")]
    default_port = str(settings.port or 22)
    checks: list[Check] = []
    for host in results.hosts:
        target = results.targets.get(host, (host.strip("[]"), default_port))
        if host in results.unreachable:
            checks += unreachable_checks(host, results.unreachable[host], target, settings)
            continue
        checks += _role_checks(host, results.checks.get(host, []), settings)
        if host in results.failed:
            where, reason = results.failed[host]
            checks.append(Check("doctor", False, f"{where} failed: {reason}",
                                "run doctor with -vvv to see Ansible's account", host=host))
    return checks


# ------------------------------------------------------------------------------------------------- verdict


def verdict(checks: list[Check], exit_code: int = 1) -> str:
    """The closing line when every check passed; else raise DoctorFailed naming each failing check."""
    failed = [check for check in checks if not check.ok]
    if not failed:
        return f"doctor: all {len(checks)} checks passed"
    names = "; ".join(check.label for check in failed)
    raise DoctorFailed(f"doctor: {len(failed)} of {len(checks)} checks failed: {names}", failed, exit_code)


def doctor(load: Callable[[], tuple[Settings, Job, str]], *, write: Write, verbosity: int = 0) -> list[Check]:
    """Every check in order, each line written as soon as it is known; raises DoctorFailed at the end.

    ``load`` returns (settings, job, where the settings came from) or raises an SshAnsibleError, which
    becomes the settings check's FAIL line. The hosts are checked unless the settings or ansible-core
    failed. Exit codes: 2 for the settings, 3 for the controller, 1 for the hosts.
    """
    checks: list[Check] = []

    def add(found: list[Check]) -> None:
        for check in found:
            checks.append(check)
            write(check.line())

    add(controller_checks())
    try:
        settings, job, source = load()
    except SshAnsibleError as error:
        add([Check("settings", False, str(error), "fix the platform section (or the command line)")])
        verdict(checks, exit_code=2)
        raise  # not reached: verdict raised for the failed settings check
    add([settings_check(settings, source)])
    if credentials.configured(settings):
        add([check_tool("sshpass", " (needed for password logins)")])
        try:
            credentials.password(settings)  # asked here, once: the play gets it from the same cache
        except SshAnsibleError as error:
            add([Check("password", False, str(error), "set the variable, or use password_prompt")])
            verdict(checks, exit_code=2)
    controller_code = 1 if all(check.ok for check in checks) else 3
    if checks[0].ok:  # without ansible-core no host can be checked
        add(host_checks(settings, job, verbosity=verbosity))
    write(verdict(checks, exit_code=controller_code))
    return checks
