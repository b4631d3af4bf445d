"""SSH passwords: read from an environment variable or asked for once per command, never written down.

The password travels to Ansible only through ansible-runner's in-memory answer to Ansible's own
``--ask-pass`` prompt (with ``suppress_env_files``, so no ``env/passwords`` file). Ansible's
connection opens the ssh master with it; synchronize's rsync rides that master.
"""

from __future__ import annotations

import getpass
import os

from .errors import SettingsError
from .settings import Settings

_asked: dict[str, str] = {}  # one prompt per command, even when MLCube runs several tasks


def configured(settings: Settings) -> bool:
    """True when the settings log in with a password (so Ansible needs sshpass)."""
    return bool(settings.password_env or settings.password_prompt)


def password(settings: Settings) -> str | None:
    """The SSH password the settings ask for, or None for key-based login."""
    if settings.password_env:
        value = os.environ.get(settings.password_env)
        if not value:
            raise SettingsError("authentication.password_env",
                                f"environment variable {settings.password_env} is not set")
        return value
    if settings.password_prompt:
        target = f"{settings.user or getpass.getuser()}@{settings.host or settings.hosts}"
        if target not in _asked:
            _asked[target] = getpass.getpass(f"SSH password for {target}: ")
        return _asked[target]
    return None
