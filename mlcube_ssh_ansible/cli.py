"""`mlcube-ssh-ansible`: configure, run, render and doctor, on the same settings as `mlcube`.

``configure`` and ``run`` take the options of ``mlcube configure|run`` and build the effective MLCube
configuration exactly as MLCube does (``mlcube.cli.parse_cli_args`` on the system settings file,
``$MLCUBE_SYSTEM_SETTINGS`` or ``~/mlcube.yaml``), then hand over to :mod:`.workflow`, as the MLCube
plug-in does. ``-P key=value`` overrides work for every command (``-P runner.host=gpu2``).

``configure --check`` runs the configure playbook in Ansible's check mode and lists, per host, the
files that would be uploaded and the packages that would be installed; nothing remote changes.
``render`` writes the inventory and extra-vars so that plain ``ansible-playbook`` does what ``run``
does. ``doctor`` checks the controller, the settings and every host, one line per check.

Every :class:`~.errors.SshAnsibleError` ends the command with ``mlcube-ssh-ansible: <message>`` on
stderr and the error's exit code, without a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import click

from . import __version__, assets, doctor, render, rsync_items, workflow
from .errors import EnvironmentProblem, Interrupted, SshAnsibleError
from .render import Job, unsafe_yaml
from .report import Reporter
from .settings import RUNNER_NAME, Settings, forks_for

PROG = "mlcube-ssh-ansible"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# --log-level info shows Ansible's own output; debug adds ssh's account of each connection (-vvv).
LOG_VERBOSITY = {"info": 1, "debug": 3}
RUN_OPTIONS = render.RUN_OPTIONS
MAX_LISTED_FILES = 200
_TASK_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*=")
_PARAM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*=")
_SECRET_KEY = re.compile(r"(^|_)(pass|password|passphrase|secret|token)$")


class CommandLineError(SshAnsibleError):
    """The command line names something that does not exist or is malformed; nothing was touched."""

    exit_code = 2


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


# ---------------------------------------------------------------------------------- the MLCube configuration


def cube_file(mlcube: str | None) -> Path:
    """The configuration file `--mlcube` names (a directory means its mlcube.yaml), as MLCube reads it."""
    path = Path(os.path.abspath(os.path.expanduser(mlcube or os.getcwd())))
    return path if path.is_file() else path / "mlcube.yaml"


def parse_task_args(args: Sequence[str]) -> tuple[str, ...]:
    """Task arguments as MLCube takes them: `name=value`, passed on unchanged."""
    for arg in args:
        if not _TASK_ARG.match(arg):
            raise CommandLineError(f"task argument {arg!r} must look like name=value (e.g. data_dir=/data)")
    return tuple(args)


def parse_params(params: Sequence[str]) -> tuple[str, ...]:
    """`-P key=value` overrides (the `-P` itself already removed by the option parser)."""
    cleaned = tuple(param.strip() for param in params)
    for param in cleaned:
        if not _PARAM.match(param):
            raise CommandLineError(f"-P {param!r} must look like key=value (e.g. -P runner.host=gpu2)")
    return cleaned


def run_options(values: Mapping[str, str | None]) -> tuple[str, ...]:
    """The `mlcube run` options the remote `mlcube run` gets as they are, in the plug-in's order."""
    return tuple(f"--{name}={values[name]}" for name in RUN_OPTIONS if values.get(name))


def select_tasks(requested: str | None, available: Sequence[str], *,
                 required: bool = True) -> tuple[str, ...]:
    """`--task=a,b` checked against the cube; without it, the cube's only task (or () if not required)."""
    listed = ", ".join(available) or "(none)"
    if not requested:
        if len(available) == 1:
            return (available[0],)
        if not required:
            return ()
        raise CommandLineError(f"--task is needed: this cube has tasks {listed}")
    tasks = tuple(name.strip() for name in requested.split(","))
    if any(not name for name in tasks):
        raise CommandLineError(f"--task={requested!r} has an empty task name; this cube has tasks {listed}")
    unknown = [name for name in tasks if name not in available]
    if unknown:
        raise CommandLineError(f"unknown task(s) {', '.join(unknown)}: this cube has tasks {listed}")
    return tasks


@contextlib.contextmanager
def _settings_errors_raise() -> Iterator[None]:
    """Let MLCube's call of our Config.validate raise SettingsError instead of exiting.

    For `mlcube`, Config.validate prints the one-line error and exits (MLCube would print a traceback
    otherwise). Here the error travels up to the one place that reports errors, and `doctor` can turn
    it into a check line.
    """
    from . import runner  # imports MLCube: only once load() found it installed

    runner.Config.exit_on_error = False
    try:
        yield
    finally:
        runner.Config.exit_on_error = True


@dataclass(frozen=True)
class Loaded:
    """The effective MLCube configuration and our validated settings from it."""

    config: Any
    settings: Settings
    settings_file: str

    @property
    def tasks(self) -> list[str]:
        return [str(name) for name in (self.config.get("tasks") or {})]

    def job(self, tasks: tuple[str, ...] = (), task_args: tuple[str, ...] = (),
            options: tuple[str, ...] = ()) -> Job:
        return Job(cube_root=str(self.config.runtime.root), workspace=str(self.config.runtime.workspace),
                   tasks=tasks, task_args=task_args, run_options=options)


def load(mlcube: str | None, platform: str, workspace: str | None = None, task_args: Sequence[str] = (),
         params: Sequence[str] = ()) -> Loaded:
    """The effective MLCube configuration, built as `mlcube configure|run` build it, and our settings."""
    try:
        from mlcube.cli import parse_cli_args
        from mlcube.system_settings import SystemSettings
    except ImportError as error:
        raise EnvironmentProblem(f"MLCube is not installed here ({_one_line(error)}): "
                                 f"{assets.MLCUBE_INSTALL_HINT}") from None

    config_file = cube_file(mlcube)
    if not config_file.is_file():
        raise CommandLineError(f"--mlcube: {config_file} does not exist (name a cube or its mlcube.yaml)")
    settings_file = SystemSettings.system_settings_file()
    try:
        system = SystemSettings().update_installed_runners()  # registers this runner, as `mlcube` does
        platforms = dict(system.platforms)
    except Exception as error:  # a broken YAML file, a runner package that fails to import, ...
        problem = _one_line(error)
        raise CommandLineError(f"cannot read the MLCube system settings {settings_file}: {problem}") from None
    if platform not in platforms:
        raise CommandLineError(f"--platform: no platform '{platform}' in {settings_file}; it has "
                               f"{', '.join(map(str, platforms)) or 'none'}")
    runner_name = (platforms[platform] or {}).get("runner")
    if runner_name != RUNNER_NAME:
        raise CommandLineError(f"--platform: platform '{platform}' uses runner '{runner_name}', not "
                               f"'{RUNNER_NAME}': run it with `mlcube`")
    try:
        with _settings_errors_raise():
            _, config = parse_cli_args(
                unparsed_args=[*task_args, *("-P" + param for param in params)],
                parsed_args={"mlcube": str(config_file), "platform": platform, "workspace": workspace},
                resolve=True,
            )
    except SshAnsibleError:
        raise
    except Exception as error:  # OmegaConf: a bad -P key or interpolation, a malformed mlcube.yaml, ...
        problem = _one_line(error)
        raise CommandLineError(f"cannot build the MLCube configuration of {config_file}: {problem}") from None
    from . import runner

    return Loaded(config=config, settings=runner.settings_from(config), settings_file=settings_file)


# ------------------------------------------------------------------------------------------ configure --check

MISSING_FACT = "_mlcube_ssh_python_env_missing"


@dataclass
class HostPlan:
    """What configure would do on one host."""

    uploads: list[str] = field(default_factory=list)
    deletions: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    reconfigure: bool = False


class CheckReport(Reporter):
    """Reporter for `configure --check`: collects, per host, what the real configure would change."""

    def __init__(self, write: Callable[[str], None] = click.echo) -> None:
        super().__init__(write=write, show_steps=False)
        self.plans: dict[str, HostPlan] = {}

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        host = data.get("host")
        if host and event.get("event") == "runner_on_ok":
            self._collect(self.plans.setdefault(host, HostPlan()), data)
        return super().__call__(event)

    @staticmethod
    def _collect(plan: HostPlan, data: dict[str, Any]) -> None:
        role = str(data.get("role") or "").split(".")[-1]
        res = data.get("res") or {}
        facts = res.get("ansible_facts") or {}
        if isinstance(facts.get(MISSING_FACT), list):
            plan.packages = [str(package) for package in facts[MISSING_FACT]]
        if role == "mlcube_ssh_upload" and isinstance(res.get("stdout_lines"), list):
            dest = str(((res.get("invocation") or {}).get("module_args") or {}).get("dest") or "")
            prefix = "workspace/" if dest.rstrip("/").endswith("/workspace") else ""
            changes = rsync_items.parse(res["stdout_lines"], prefix)
            uploads, deletions = changes.sent, changes.deleted
            plan.uploads += uploads
            plan.deletions += deletions
        if role == "mlcube_ssh_remote_configure" and res.get("matched") is False:
            plan.reconfigure = True

    def summary(self) -> list[str]:
        lines: list[str] = []
        for host, plan in sorted(self.plans.items()):
            lines += _listing(host, "would upload", plan.uploads, "no file to upload")
            if plan.deletions:
                lines += _listing(host, "would delete (not in the local cube)", plan.deletions, "")
            lines.append(f"{host}: would install {len(plan.packages)} package(s): {' '.join(plan.packages)}"
                         if plan.packages else f"{host}: no package to install")
            cube_changed = any(not name.startswith("workspace/") for name in plan.uploads + plan.deletions)
            if plan.reconfigure or cube_changed:
                lines.append(f"{host}: would run `mlcube configure` (the cube or its settings changed)")
        lines.append("configure --check: nothing was changed on any host")
        return lines


def _listing(host: str, verb: str, names: list[str], nothing: str) -> list[str]:
    if not names:
        return [f"{host}: {nothing}"]
    lines = [f"{host}: {verb} {len(names)} file(s):"]
    lines += [f"  {name}" for name in names[:MAX_LISTED_FILES]]
    if len(names) > MAX_LISTED_FILES:
        lines.append(f"  ... and {len(names) - MAX_LISTED_FILES} more")
    return lines


# ---------------------------------------------------------------------------------------------------- render


def without_secrets(value: Any, dropped: list[str]) -> Any:
    """A copy of an inventory or extra-vars without password-like keys (their names go in `dropped`)."""
    if isinstance(value, Mapping):
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and _SECRET_KEY.search(key.lower()):
                dropped.append(key)
            else:
                kept[key] = without_secrets(item, dropped)
        return kept
    if isinstance(value, list):
        return [without_secrets(item, dropped) for item in value]
    return value


def checkout_root() -> Path | None:
    """The source checkout this package runs from (the collection's root, with its ansible.cfg), if any."""
    root = Path(assets.__file__).resolve().parent.parent
    parts = (root / "ansible.cfg", root / "galaxy.yml", root / "playbooks" / "run.yml")
    return root if all(part.exists() for part in parts) else None


def playbook_commands(settings: Settings, inventory: Path, extravars: Path,
                      playbooks: Sequence[str]) -> list[str]:
    """The shell commands that run `playbooks` with the rendered files exactly as this tool would."""
    binary = Path(assets.ansible_bin_dir(), "ansible-playbook")
    ansible_playbook = str(binary) if binary.is_file() else "ansible-playbook"
    sources = ["-i", str(inventory)] + (["-i", settings.inventory] if settings.inventory else [])
    root = checkout_root()
    commands = []
    for name in playbooks:
        # The collection's playbook by name; ansible.cfg (the checkout's, or the package's copy) puts this
        # package's collection first on the collections path.
        playbook = f"{assets.COLLECTION}.{name}"
        if root is not None:
            prefix = f"cd {shlex.quote(str(root))} && "
        else:
            package = Path(assets.__file__).resolve().parent
            prefix = f"ANSIBLE_CONFIG={shlex.quote(str(package / 'ansible.cfg'))} "
        forks = str(forks_for(settings, name))
        argv = [ansible_playbook, *sources, playbook, "-e", f"@{extravars}", "--forks", forks]
        if settings.password_env or settings.password_prompt:
            argv.append("--ask-pass")  # the password never goes into the files
        commands.append(prefix + shlex.join(argv))
    return commands


def write_rendered(loaded: Loaded, job: Job, out: Path,
                   write: Callable[[str], None] = click.echo) -> list[str]:
    """Write DIR/inventory.yml and DIR/extravars.yml; print and return the commands that use them."""
    inventory, extravars = workflow.rendered(loaded.settings, job)
    dropped: list[str] = []
    inventory, extravars = without_secrets(inventory, dropped), without_secrets(extravars, dropped)
    out = Path(os.path.abspath(os.path.expanduser(str(out))))
    out.mkdir(parents=True, exist_ok=True)
    inventory_file, extravars_file = out / "inventory.yml", out / "extravars.yml"
    # json.dumps: a newline in a folder name cannot end the comment and start YAML of its own.
    header = (f"# Written by `{PROG} render` for {json.dumps(job.cube_root)} "
              f"(settings: {json.dumps(str(loaded.settings_file))}).\n"
              "# No secrets: SSH keys appear as paths, passwords never. Render again after changing settings.\n"
              "# Values with template syntax are tagged !unsafe: Ansible keeps them as data.\n")
    inventory_file.write_text(header + unsafe_yaml(inventory))
    extravars_file.write_text(header + unsafe_yaml(extravars))
    # The ssh ControlPath lives here; the CLI creates it before each run, and so does render for the commands.
    Path("~/.ansible/cp").expanduser().mkdir(mode=0o700, parents=True, exist_ok=True)
    names = ["configure", "run"] if job.tasks else ["configure"]
    if job.tasks and (assets.collection_dir() / "playbooks" / "cancel.yml").is_file():
        names.append("cancel")  # Ctrl-C on plain ansible-playbook leaves the remote task running
    commands = playbook_commands(loaded.settings, inventory_file, extravars_file, names)
    write(f"wrote {inventory_file} and {extravars_file}")
    if loaded.settings.inventory:
        write(f"your inventory comes second: -i {loaded.settings.inventory} (already in the commands below)")
    if dropped:
        write(f"left out (secrets): {', '.join(sorted(set(dropped)))}; give them to ansible-playbook "
              "yourself, e.g. with --ask-pass")
    titles = {"cancel": "cancel (stops the cube's remote task and its containers; Ctrl-C on the run "
                        "command above stops only Ansible):"}
    for name, command in zip(names, commands):
        write(titles.get(name, f"{name}:"))
        write(f"  {command}")
    if not job.tasks:
        write(f"run: give --task to render a run (this cube has tasks {', '.join(loaded.tasks)})")
    return commands


# ------------------------------------------------------------------------------------------------ the command


class _Cli(click.Group):
    """Reports every SshAnsibleError once, as one line on stderr, and exits with its code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SshAnsibleError as error:
            click.echo(f"{PROG}: {' '.join(str(error).split())}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo(f"{PROG}: interrupted", err=True)
            ctx.exit(Interrupted.exit_code)


def _verbosity(log_level: str | None, verbose: int) -> int:
    """Ansible's verbosity from this command's and the group's --log-level / -v (the larger wins)."""
    root = click.get_current_context().find_root().params
    levels = [level for level in (log_level, root.get("log_level")) if level]
    counts = [verbose, int(root.get("verbose") or 0)] + [LOG_VERBOSITY.get(level, 0) for level in levels]
    verbosity = max(counts)
    name = max(levels, key=LOG_LEVELS.index) if levels else "warning"
    logging.basicConfig(level=name.upper(), format="%(levelname)s %(name)s: %(message)s")
    return verbosity


def _log_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option("-v", "--verbose", count=True,
                            help="More Ansible output: -v shows Ansible's output, -vvv ssh's too.")(function)
    return click.option("--log-level", "--log_level", type=click.Choice(LOG_LEVELS), default=None,
                        help="Logging level; info shows Ansible's output (-v), debug ssh's (-vvv).")(function)


def _cube_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--mlcube", metavar="PATH", default=None,
                     help="MLCube directory or its mlcube.yaml (default: the current directory)."),
        click.option("--platform", metavar="NAME", default=RUNNER_NAME, show_default=True,
                     help="Platform in the system settings ($MLCUBE_SYSTEM_SETTINGS or ~/mlcube.yaml)."),
        click.option("--workspace", metavar="PATH", default=None,
                     help="Workspace folder (default: the cube's workspace/)."),
        click.option("-P", "-p", "params", metavar="KEY=VALUE", multiple=True,
                     help="Override, e.g. -P runner.host=gpu2 or -Prunner.port=2222 (repeatable)."),
    ]):
        function = option(function)
    return function


def _run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(RUN_OPTIONS):
        option = click.option(f"--{name}", default=None, help=f"`mlcube run --{name}`, passed to the host.")
        function = option(function)
    return function


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
@_log_options
def cli(log_level: str | None, verbose: int) -> None:
    """Run MLCube tasks on remote hosts over SSH, with Ansible doing the work."""


@cli.command()
@_cube_options
@click.option("--check", is_flag=True,
              help="Dry run: list per host the files that would be uploaded and the packages that would be "
                   "installed; change nothing.")
@_log_options
def configure(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...], check: bool,
              log_level: str | None, verbose: int) -> None:
    """Create the remote Python, upload the cube, run the remote `mlcube configure`."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    if not check:
        workflow.configure(loaded.settings, loaded.job(), verbosity=verbosity)
        return
    report = CheckReport()
    workflow.configure(loaded.settings, loaded.job(), reporter=report, check=True, verbosity=verbosity)
    for line in report.summary():
        click.echo(line)


@cli.command()
@_cube_options
@click.option("--task", default=None, metavar="NAMES",
              help="Task(s) to run, comma-separated (default: the cube's only task).")
@_run_options
@click.option("--detach", is_flag=True,
              help="Start the task(s) on every host and return at once, printing the run id; see status, "
                   "logs, attach and fetch.")
@click.argument("task_args", nargs=-1, metavar="[NAME=VALUE]...")
@_log_options
def run(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...], task: str | None,
        detach: bool, task_args: tuple[str, ...], log_level: str | None, verbose: int,
        **options: str | None) -> None:
    """Upload what changed, run the task(s) remotely, fetch the workspace back.

    The remote task runs detached from the SSH connection: if this command dies or loses its connection,
    the task carries on and `attach` completes the job. Only Ctrl-C cancels it.
    """
    verbosity = _verbosity(log_level, verbose)
    arguments = parse_task_args(task_args)
    loaded = load(mlcube, platform, workspace, arguments, parse_params(params))
    job = loaded.job(select_tasks(task, loaded.tasks), arguments, run_options(options))
    job = dataclasses.replace(job, detach=detach, run_id=workflow.new_run_id())
    workflow.run(loaded.settings, job, verbosity=verbosity)
    if detach:
        click.echo(f"started run {job.run_id}; follow it with `{PROG} attach --run {job.run_id}`")


# ---------------------------------------------------------------------------------------- long runs

_run_id_option = click.option("--run", "run_id", default=None, metavar="ID",
                              help="Run id (default: the latest run recorded next to the workspace).")


@cli.command()
@_cube_options
@_run_id_option
@_log_options
def status(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
           run_id: str | None, log_level: str | None, verbose: int) -> None:
    """Per host: running, succeeded or failed, exit code and elapsed time of a run."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    states = workflow.status(loaded.settings, loaded.job(), run_id=run_id, verbosity=verbosity)
    for host, state in sorted(states.items()):
        click.echo(f"{host}: {describe_state(state)}")


def describe_state(state: Mapping[str, Any]) -> str:
    """`running (12.3 s)`, `succeeded (exit code 0, 4.1 s)` or `failed (exit code 3, 1.2 s)`."""
    started, ended = state.get("started"), state.get("ended")
    elapsed = ""
    if started:
        begin = datetime.datetime.fromisoformat(str(started))
        end = datetime.datetime.fromisoformat(str(ended)) if ended else datetime.datetime.now(begin.tzinfo)
        elapsed = f"{(end - begin).total_seconds():.1f} s"
    if state.get("running") or state.get("rc") is None:
        return f"running ({elapsed})" if state.get("running") else f"unknown ({state.get('msg') or 'no exit code'})"
    verdict = "succeeded" if state.get("rc") == 0 else "failed"
    return f"{verdict} (exit code {state.get('rc')}, {elapsed})"


@cli.command()
@_cube_options
@_run_id_option
@click.option("--follow", "-f", is_flag=True, help="Stream the output until the run ends.")
@_log_options
def logs(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
         run_id: str | None, follow: bool, log_level: str | None, verbose: int) -> None:
    """The remote output of a run so far, per host; with --follow, until it ends."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    if follow:
        workflow.attach(loaded.settings, loaded.job(), run_id=run_id, fetch=False, verbosity=verbosity,
                        reporter=Reporter(show_steps=False))
    else:
        workflow.status(loaded.settings, loaded.job(), run_id=run_id, logs=True, verbosity=verbosity)


@cli.command()
@_cube_options
@_run_id_option
@_log_options
def attach(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
           run_id: str | None, log_level: str | None, verbose: int) -> None:
    """Follow a run to its end, then fetch exactly as an attached `run` would."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    workflow.attach(loaded.settings, loaded.job(), run_id=run_id, verbosity=verbosity)


@cli.command()
@_cube_options
@_run_id_option
@_log_options
def fetch(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
          run_id: str | None, log_level: str | None, verbose: int) -> None:
    """Fetch what a run has written so far, at any time (never deletes local files)."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    workflow.attach(loaded.settings, loaded.job(), run_id=run_id, follow=False, verbosity=verbosity)


@cli.command(name="render")
@_cube_options
@click.option("--task", default=None, metavar="NAMES",
              help="Task(s) the run command runs (default: the cube's only task; none: configure only).")
@_run_options
@click.option("--out", required=True, metavar="DIR", type=click.Path(file_okay=False),
              help="Folder for inventory.yml and extravars.yml.")
@click.argument("task_args", nargs=-1, metavar="[NAME=VALUE]...")
@_log_options
def render_command(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
                   task: str | None, out: str, task_args: tuple[str, ...], log_level: str | None,
                   verbose: int, **options: str | None) -> None:
    """Write the inventory and extra-vars for plain ansible-playbook, and print the commands."""
    _verbosity(log_level, verbose)
    arguments = parse_task_args(task_args)
    loaded = load(mlcube, platform, workspace, arguments, parse_params(params))
    job = loaded.job(select_tasks(task, loaded.tasks, required=False), arguments, run_options(options))
    write_rendered(loaded, job, Path(out))


@cli.command(name="doctor")
@_cube_options
@_log_options
def doctor_command(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
                   log_level: str | None, verbose: int) -> None:
    """Check the controller, the settings and every host; one line per check, non-zero exit on a failure."""
    verbosity = _verbosity(log_level, verbose)

    def load_settings() -> tuple[Settings, Job, str]:
        loaded = load(mlcube, platform, workspace, (), parse_params(params))
        return loaded.settings, loaded.job(), f"platform '{platform}' in {loaded.settings_file}"

    doctor.doctor(load_settings, write=click.echo, verbosity=verbosity)


def main() -> None:
    """Console script entry point."""
    cli.main(prog_name=PROG)
