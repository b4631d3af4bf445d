"""The one small exception tree of mlcube-ssh-ansible.

Every layer raises these; the front doors (the MLCube plug-in, our CLI) translate them once.
Each message is one line that names the key or host and says what to do.
"""

from __future__ import annotations


class SshAnsibleError(Exception):
    """Base class: something the user can act on, described in one line."""

    exit_code: int = 1


class SettingsError(SshAnsibleError):
    """The platform settings (or the cube, or the command line) are wrong; nothing was touched."""

    exit_code = 2

    def __init__(self, key: str, problem: str, kind: str = "setting") -> None:
        key = str(key)
        self.key = key if key.isprintable() else repr(key)[1:-1]  # one line, whatever the user typed
        self.problem = problem if problem.isprintable() else repr(problem)[1:-1]
        super().__init__(f"{kind} '{self.key}': {self.problem}")


class EnvironmentProblem(SshAnsibleError):
    """The controller lacks something (ansible.posix, rsync, ssh); nothing was touched."""

    exit_code = 3


class HostFailure(SshAnsibleError):
    """One or more hosts failed a step; ``failures`` maps host -> (step, reason)."""

    def __init__(self, message: str, failures: dict[str, tuple[str, str]], exit_code: int = 1) -> None:
        self.failures = failures
        self.exit_code = exit_code
        super().__init__(message)


class Interrupted(SshAnsibleError):
    """The user interrupted the command (Ctrl-C)."""

    exit_code = 130
