"""The MLCube plug-in: `mlcube configure|run --platform=ssh-ansible`.

This is the boundary where our exception tree meets MLCube's: a settings error is one line and
exit code 2 (MLCube would print a traceback for it), everything else becomes MLCube's
``ExecutionError`` carrying our exit code, which MLCube's CLI exits with.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import click
from mlcube.errors import ExecutionError
from mlcube.runner import Runner, RunnerConfig
from omegaconf import DictConfig, OmegaConf

from . import workflow
from .errors import SettingsError, SshAnsibleError
from .render import RUN_OPTIONS, Job
from .settings import Settings, default_platform_section, parse_settings


class RemoteError(ExecutionError):  # type: ignore[misc]  # mlcube has no type hints
    """Our failure in MLCube's terms; MLCube's CLI exits with ``context['code']``."""


class _NoTraceback(logging.Filter):
    """MLCube logs its runners' errors with a traceback; ours already say all there is in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], RemoteError):
            record.exc_info = None
        return True


logging.getLogger("mlcube.__main__").addFilter(_NoTraceback())


def _exit(error: SettingsError) -> NoReturn:
    click.echo(f"mlcube-ssh-ansible: {error}", err=True)
    sys.exit(error.exit_code)


def settings_from(mlcube: DictConfig) -> Settings:
    """The validated platform section of an effective MLCube configuration."""
    section = OmegaConf.to_container(mlcube.runner, resolve=True)
    assert isinstance(section, dict)
    return parse_settings({str(key): value for key, value in section.items()})


class Config(RunnerConfig):  # type: ignore[misc]
    """Defaults written into the system settings file, and validation before any host is touched."""

    DEFAULT = OmegaConf.create(default_platform_section())
    exit_on_error = True  # our own CLI sets False and reports the SettingsError itself

    @staticmethod
    def merge(mlcube: DictConfig) -> None:
        """The platform section comes from the system settings file (and -Prunner.KEY=...) only."""

    @staticmethod
    def validate(mlcube: DictConfig) -> None:
        try:
            settings_from(mlcube)
        except SettingsError as error:
            if not Config.exit_on_error:
                raise
            _exit(error)


def _cli_context() -> dict[str, Any]:
    """The parameters and extra arguments of the `mlcube` command that is calling us, if any."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return {"params": {}, "args": []}
    return {"params": dict(ctx.params), "args": list(ctx.args)}


def _verbosity() -> int:
    """`mlcube --log-level debug` shows Ansible's own output too."""
    return 1 if logging.getLogger().getEffectiveLevel() <= logging.DEBUG else 0


class SshAnsibleRun(Runner):  # type: ignore[misc]
    """Runs MLCube tasks on remote hosts: Ansible does the remote work, this class only hands over."""

    CONFIG = Config

    def _job(self, tasks: tuple[str, ...] = ()) -> Job:
        context = _cli_context()
        params = context["params"]
        return Job(
            cube_root=str(self.mlcube.runtime.root),
            workspace=str(self.mlcube.runtime.workspace),
            tasks=tasks,
            # Task arguments (name=value) are what MLCube left unparsed, without -P overrides.
            task_args=tuple(arg for arg in context["args"] if not arg.startswith("-P")),
            run_options=tuple(f"--{name}={params[name]}" for name in RUN_OPTIONS if params.get(name)),
        )

    def configure(self) -> None:
        """`mlcube configure`: remote Python, upload, remote `mlcube configure`."""
        try:
            workflow.configure(settings_from(self.mlcube), self._job(), verbosity=_verbosity())
        except SettingsError as error:
            _exit(error)
        except SshAnsibleError as error:
            raise RemoteError.mlcube_configure_error(type(self).__name__, str(error), code=error.exit_code) from None

    def run(self) -> None:
        """`mlcube run`: upload what changed, run the tasks remotely, fetch the workspace.

        MLCube calls this once per task of `--task=a,b`; the first call runs them all in one play
        (one upload, one remote `mlcube run --task=a,b`, one fetch) and the later calls have nothing left.
        """
        requested = [name for name in str(_cli_context()["params"].get("task") or "").split(",") if name]
        tasks = tuple(requested) if self.task in requested else (str(self.task),)
        if tasks.index(str(self.task)) > 0:
            return
        try:
            workflow.run(settings_from(self.mlcube), self._job(tasks), verbosity=_verbosity())
        except SettingsError as error:
            _exit(error)
        except SshAnsibleError as error:
            raise RemoteError.mlcube_run_error(type(self).__name__, str(error), code=error.exit_code) from None
