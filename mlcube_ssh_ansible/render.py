"""Render: Settings + a cube job -> (inventory, extravars), the two dicts Ansible runs on. Pure.

The split follows Ansible's variable precedence so that ops teams keep control of their hosts:

* connection details and every per-host-overridable ``mlcube_ssh_*`` variable go into the
  inventory's ``all`` group vars, the lowest inventory precedence, so a user's own inventory
  (host vars, ``group_vars/``) overrides them per host or group;
* what is the same for every host of one command (local paths, tasks, task arguments, the host
  pattern) goes into extra-vars.

Example (one host)::

    all:
      hosts:
        gpu1.example.org: {ansible_host: gpu1.example.org, ansible_port: 2222}
      vars:
        ansible_user: alice
        ansible_ssh_args: -o ControlMaster=auto ... -o StrictHostKeyChecking=yes
        mlcube_ssh_platform: docker
        mlcube_ssh_remote_root: ~/mlcube
        ...
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from . import spec
from .errors import SettingsError
from .settings import Settings

# Where the ssh master sockets live: stable across commands so a second command reuses the first
# one's connection (ControlPersist), and short enough for the 108-byte socket path limit. The name
# includes a digest of the settings that decide whom we trust, so changing them opens a new master.
CONTROL_PATH = "~/.ansible/cp/mlcube-{trust}-%C"
CONTROL_PERSIST = "60s"

# Never worth uploading: version control, caches, virtualenvs and editors' droppings, our own state and rsync's
# --partial-dir of the upload and fetch roles (cut-off files wait there). The upload role's default (spec.yml).
DEFAULT_EXCLUDES: tuple[str, ...] = tuple(spec.variable("mlcube_ssh_excludes")["default"])
# The folder names among them: walks of the cube (file counts, fingerprints) do not enter these.
EXCLUDED_DIRS = frozenset(pattern.rstrip("/") for pattern in DEFAULT_EXCLUDES if pattern.endswith("/"))

# `mlcube run` options that the remote `mlcube run` takes as they are.
RUN_OPTIONS = ("network", "security", "gpus", "memory", "cpu")


@dataclass(frozen=True)
class Job:
    """One command's local side: which cube, which workspace, which tasks with which arguments."""

    cube_root: str
    workspace: str
    tasks: tuple[str, ...] = ()
    task_args: tuple[str, ...] = ()
    run_options: tuple[str, ...] = ()
    run_id: str = ""
    detach: bool = False
    gpus_needed: int = -1  # slots the run takes on each host: -1 none, 0 a CPU-only slot, N GPUs
    queue: bool = False  # without free slots, the run waits on the host instead of being refused
    run_retries: int = 0  # how many more times the host's supervisor starts a failed task (docs/runs.md)


def check_job(job: Job) -> Job:
    """Refuse task names, task arguments, run options and run ids that would not stay data on the remote host
    (their formats in spec.yml, which the preflight role checks on the hosts too)."""
    for task in job.tasks:
        if not spec.fmt("task_name").matches(task):
            raise SettingsError(task, spec.fmt("task_name").says, kind="task")
    for argument in job.task_args:
        if not spec.fmt("task_arg").matches(argument):
            raise SettingsError(argument.partition("=")[0], spec.fmt("task_arg").says, kind="task argument")
    if job.gpus_needed < -1:
        raise SettingsError("need-gpus", f"{job.gpus_needed} is not a number of GPUs: use 0 (a CPU-only slot) or more",
                            kind="option")
    if job.run_retries < 0:
        raise SettingsError("retries-on-failure", f"{job.run_retries} is not a number of retries: use 0 or more",
                            kind="option")
    for option in job.run_options:
        if not spec.fmt("run_option").matches(option):
            raise SettingsError(option.partition("=")[0], spec.fmt("run_option").says, kind="option")
    if not spec.fmt("run_id").matches(job.run_id):
        raise SettingsError("run", f"{job.run_id!r} {spec.fmt('run_id').says}", kind="option")
    return job


def remote_name(cube_root: str) -> str:
    """A remote directory name that is safe in any shell: the sanitised folder name + a path hash.

    MLCube's remote runners build shell strings from the cube's path, so a local name like
    ``a b;$(rm -rf ~)`` must never reach the remote host as it is. The hash keeps two cubes with
    the same folder name (from different local paths) apart on a shared host.
    """
    absolute = os.path.abspath(cube_root)
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(absolute.rstrip(os.sep)))
    base = base.strip("._-")[:40] or "cube"
    digest = hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{base}-{digest}"


def workspace_key(job: Job) -> str:
    """'' for the cube's own workspace; else the name of the remote workspace of the local one (docs/runs.md):
    runs in different local workspaces get different remote workspaces, and so can go on at once."""
    cube_root, workspace = os.path.abspath(job.cube_root), os.path.abspath(job.workspace)
    return "" if workspace == os.path.join(cube_root, "workspace") else remote_name(workspace)


def ssh_config_path(path: str) -> str:
    """A path as one ssh option value: OpenSSH splits UserKnownHostsFile at spaces (a list of files) unless
    quoted, and expands `%` tokens in it. settings.py refuses the characters no quoting carries through
    Ansible's and rsync's splitting of the ssh arguments (quotes, backslashes, other whitespace)."""
    path = path.replace("%", "%%")
    return f'"{path}"' if " " in path else path


def ssh_args(settings: Settings) -> list[str]:
    """The ssh options every connection gets: Ansible's own and synchronize's rsync alike."""
    trust = "\0".join([settings.host_key_checking, settings.known_hosts or "", settings.identity_file or "",
                        settings.password_env or "", str(settings.password_prompt)])
    options = [
        "ControlMaster=auto",
        f"ControlPersist={CONTROL_PERSIST}",
        "ControlPath=" + CONTROL_PATH.format(trust=hashlib.sha256(trust.encode()).hexdigest()[:8]),
        f"ConnectTimeout={settings.connect_timeout}",
        "ServerAliveInterval=15",
        "ServerAliveCountMax=4",
    ]
    if not (settings.password_env or settings.password_prompt):
        options.append("BatchMode=yes")  # never hang on a prompt nobody answers
    if settings.host_key_checking == "off":
        options += ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"]
    else:
        options.append("StrictHostKeyChecking=" + ("yes" if settings.host_key_checking == "strict" else "accept-new"))
        if settings.known_hosts:
            options.append(f"UserKnownHostsFile={ssh_config_path(settings.known_hosts)}")
    if settings.identity_file:
        options.append("IdentitiesOnly=yes")
    args: list[str] = []
    for option in options:
        args += ["-o", option]
    return args


def render_inventory(settings: Settings) -> dict[str, Any]:
    """The inventory: our one host (with `host`), or only fill-in defaults (with `inventory`)."""
    group_vars: dict[str, Any] = {
        "ansible_ssh_args": shlex.join(ssh_args(settings)),
        "ansible_ssh_pipelining": True,
        "ansible_host_key_checking": settings.host_key_checking != "off",
        "ansible_ssh_timeout": settings.connect_timeout,
        # The Python that runs (or creates the virtualenv for) MLCube runs Ansible's modules too: it exists
        # there, and naming it saves interpreter discovery's round trip. An inventory may set its own.
        "ansible_python_interpreter": settings.interpreter.python,
        "mlcube_ssh_platform": settings.platform,
        "mlcube_ssh_remote_root": settings.remote_root,
        "mlcube_ssh_remote_group": settings.remote_group or "",
        "mlcube_ssh_secrets": list(settings.secrets),
        "mlcube_ssh_interpreter_type": settings.interpreter.type,
        "mlcube_ssh_python": settings.interpreter.python,
        "mlcube_ssh_requirements": list(settings.interpreter.requirements),
        "mlcube_ssh_venv_location": settings.interpreter.location,
        "mlcube_ssh_venv_name": settings.interpreter.name,
        "mlcube_ssh_compress": settings.compress,
        "mlcube_ssh_verify_host": settings.host_key_checking != "off",
        "mlcube_ssh_excludes": list(DEFAULT_EXCLUDES + settings.excludes),
        "mlcube_ssh_reconnect_timeout": settings.reconnect_timeout,
        "mlcube_ssh_platform_settings": dict(settings.platform_settings),
    }
    if settings.user:
        group_vars["ansible_user"] = settings.user
    if settings.identity_file:
        group_vars["ansible_ssh_private_key_file"] = settings.identity_file
    if settings.port is not None and settings.inventory:
        group_vars["ansible_port"] = settings.port
    inventory: dict[str, Any] = {"all": {"vars": group_vars}}
    if settings.host:
        inventory["all"]["hosts"] = {
            settings.host: {"ansible_host": settings.host.strip("[]"), "ansible_port": settings.port or 22}
        }
    return inventory


def render_extravars(settings: Settings, job: Job) -> dict[str, Any]:
    """What is the same for every host of this command."""
    cube_root = os.path.abspath(job.cube_root)
    workspace = os.path.abspath(job.workspace)
    return {
        "mlcube_ssh_hosts": settings.hosts if settings.inventory else settings.host,
        "mlcube_ssh_local_root": cube_root,
        "mlcube_ssh_local_workspace": workspace,
        "mlcube_ssh_workspace_in_cube": workspace == os.path.join(cube_root, "workspace"),
        "mlcube_ssh_workspace_key": workspace_key(job),
        "mlcube_ssh_remote_name": remote_name(cube_root),
        "mlcube_ssh_tasks": list(job.tasks),
        "mlcube_ssh_task_args": list(job.task_args),
        "mlcube_ssh_run_options": list(job.run_options),
        "mlcube_ssh_serial": settings.serial,
        "mlcube_ssh_max_fail_percentage": settings.max_fail_percentage,
        "mlcube_ssh_run_id": job.run_id,
        "mlcube_ssh_detach": job.detach,
        "mlcube_ssh_gpus_needed": job.gpus_needed,
        "mlcube_ssh_queue": job.queue,
        "mlcube_ssh_run_retries": job.run_retries,
    }


class _UnsafeDumper(yaml.SafeDumper):
    """YAML whose strings with template syntax are tagged `!unsafe`, so Ansible never templates them.

    Ansible templates variables recursively: a local path such as `cube {{ lookup('pipe', 'rm -rf ~') }}`
    would otherwise run on the controller as soon as a task uses it. Only strings with a `{` (every Jinja
    delimiter starts with one) are tagged: ansible-core 2.19 re-resolves an `!unsafe` scalar as if it were
    plain, which would turn '' into null and '1' into 1; no such resolution matches a string with a `{`.
    """


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "{" in data:
        return dumper.represent_scalar("!unsafe", data, style="'")
    return dumper.represent_str(data)


_UnsafeDumper.add_representer(str, _represent_str)


def unsafe_yaml(data: Any) -> str:
    """The one way inventories and extra-vars are written for Ansible, by the runner and by `render` alike."""
    return yaml.dump(data, Dumper=_UnsafeDumper, sort_keys=False)


def render(settings: Settings, job: Job) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both dicts at once: the single entry point the workflow and `render` command use."""
    return render_inventory(settings), render_extravars(settings, check_job(job))
