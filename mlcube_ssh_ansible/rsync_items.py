"""rsync's itemized output (what synchronize returns in `stdout_lines`), parsed in one place.

Each line is `YXcstpoguax name` (`<f.st...... a.txt`: a file sent, `>f+++++++++ b`: a file received,
`cd+++++++++ sub/`: a folder made, `hf... x => y`: a hard link) or `*deleting   name`. The reporter counts the
files moved, and `configure --check` lists what would be sent and deleted; both read :func:`parse`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

ITEMIZED = re.compile(r"^(?P<code>[<>ch.*][fdLDS+][^ ]{9}) (?P<name>.+)$")
DELETING = re.compile(r"^\*deleting +(?P<name>.+)$")


@dataclass(frozen=True)
class Changes:
    """What one rsync run changed (or, in check mode, would change)."""

    sent: list[str] = field(default_factory=list)  # files, links and hard links created on the receiving side
    received: list[str] = field(default_factory=list)  # files pulled from the remote side
    deleted: list[str] = field(default_factory=list)
    files_moved: list[str] = field(default_factory=list)  # regular files transferred, either way


def parse(lines: Sequence[Any], prefix: str = "") -> Changes:
    """The changes in synchronize's itemized lines; other lines (and non-strings) are ignored."""
    changes = Changes()
    for line in lines:
        if not isinstance(line, str):
            continue
        deleting = DELETING.match(line)
        if deleting:
            changes.deleted.append(prefix + deleting.group("name"))
            continue
        item = ITEMIZED.match(line)
        if item is None:
            continue
        code, name = item.group("code"), prefix + item.group("name").split(" -> ")[0]
        if code[0] == ">" and code[1] == "f":
            changes.received.append(name)
        elif code[0] in "<ch" and code[1] != "d":
            changes.sent.append(name)
        if code[0] in "<>" and code[1] == "f":
            changes.files_moved.append(name)
    return changes
