"""The command line and the MLCube configuration: what `mlcube configure|run` would build, and our settings.

The effective configuration comes from ``mlcube.cli.parse_cli_args`` on the system settings file, exactly
as MLCube builds it, so that this CLI and the MLCube plug-in run a cube with the same settings.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from .. import assets, render
from ..errors import EnvironmentProblem, SshAnsibleError
from ..render import Job
from ..settings import RUNNER_NAME, Settings

PROG = "mlcube-ssh-ansible"
RUN_OPTIONS = render.RUN_OPTIONS
_TASK_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*=")
_PARAM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*=")


class CommandLineError(SshAnsibleError):
    """The command line names something that does not exist or is malformed; nothing was touched."""

    exit_code = 2


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


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
    from .. import runner  # imports MLCube: only once load() found it installed

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


def _registered(system: Any, platform: str) -> bool:
    """The platform is in the system settings file and this runner is registered there: nothing for
    update_installed_runners to add that this command needs. It imports every installed mlcube_* package to find
    runners (mlcube_docker imports setuptools: ~0.1 s of CPU), which `mlcube` itself does on every command."""
    section = system.platforms.get(platform) or {}
    return section.get("runner") == RUNNER_NAME and RUNNER_NAME in system.runners


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
        system = SystemSettings()
        if not _registered(system, platform):  # registers this runner, as `mlcube` does
            system = system.update_installed_runners()
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
    from .. import runner

    return Loaded(config=config, settings=runner.settings_from(config), settings_file=settings_file)
