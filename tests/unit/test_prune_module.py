"""mlcube.ssh.prune, run as Ansible runs a module (its own process, arguments as JSON), on local folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
MODULE = ROOT / "plugins" / "modules" / "prune.py"


def prune(tmp_path: Path, root: Path, files: list[list[Any]]) -> dict[str, Any]:
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"root": str(root), "files": files}}))
    done = subprocess.run([sys.executable, str(MODULE), str(args)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def entry(root: Path, name: str) -> list[Any]:
    info = (root / name).stat()
    return [name, info.st_size, int(info.st_mtime)]


def test_deletes_what_is_as_fetched_and_keeps_what_the_host_changed(tmp_path: Path) -> None:
    root = tmp_path / "workspace"
    (root / "out" / "deep").mkdir(parents=True)
    (root / "out" / "deep" / "a.txt").write_text("fetched")
    (root / "b.txt").write_text("fetched")
    (root / "c.txt").write_text("fetched")
    (tmp_path / "outside.txt").write_text("not below root")
    (root / "link").symlink_to(tmp_path)
    listed = [entry(root, "out/deep/a.txt"), entry(root, "b.txt"), entry(root, "c.txt")]
    (root / "c.txt").write_text("rewritten by the host since the fetch")  # other size
    later = listed[1][2] + 5
    os.utime(root / "b.txt", (later, later))  # same size, newer time: also the host's since

    result = prune(tmp_path, root, [*listed, ["../outside.txt", 14, 0], ["link/outside.txt", 14, 0],
                                    ["/etc/passwd", 1, 1], ["gone.txt", 1, 1]])

    assert result["pruned"] == ["out/deep/a.txt"] and result["changed"] is True
    assert sorted(result["kept"]) == ["b.txt", "c.txt"]
    assert not (root / "out").exists()  # folders emptied by the deletion go too
    assert (root / "b.txt").exists() and (root / "c.txt").exists() and (tmp_path / "outside.txt").exists()


def test_the_fetch_record_lists_what_was_fetched_and_finds_what_the_user_deleted(tmp_path: Path) -> None:
    from mlcube_ssh_ansible import fetched
    from mlcube_ssh_ansible.report import HostReport, Reporter

    workspace = tmp_path / "workspace"
    (workspace / "hosts" / "h2").mkdir(parents=True)
    (workspace / "out.txt").write_text("result")
    (workspace / "hosts" / "h2" / "x.txt").write_text("h2's result")
    reporter = Reporter(write=lambda _: None)
    reporter.hosts["h1"] = HostReport(fetch_dest=str(workspace), steps_done=[("fetch", True, 0.1)])
    reporter.hosts["h2"] = HostReport(fetch_dest=str(workspace / "hosts" / "h2"), steps_done=[("fetch", True, 0.1)])
    reporter.hosts["h3"] = HostReport(fetch_dest=str(workspace), steps_done=[("fetch", False, 0.1)],
                                      failed_step="fetch")
    fetched.remember(str(workspace), reporter)
    assert fetched.to_prune(str(workspace)) == {}

    (workspace / "out.txt").unlink()
    (workspace / "hosts" / "h2" / "x.txt").unlink()

    gone = fetched.to_prune(str(workspace))
    assert list(gone) == ["h1", "h2"]  # h3's fetch failed: nothing of it was recorded
    assert [row[0] for row in gone["h1"]] == ["out.txt"]  # hosts/ is h2's, not h1's
    assert [row[0] for row in gone["h2"]] == ["x.txt"]
