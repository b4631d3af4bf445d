"""Results are data (issue 14, point 3): the shim reads what the plays return, never a task's name.

The contract between the playbooks and the Python side, checked on the files themselves:
* no string in the package is the name of a task (so renaming a task cannot change an exit code or a message);
* every result kind the reporter reads (report.RESULT_KEY) is put into results by a module or action plugin;
* every fact the Python side reads is set by a role.
tests/integration/test_results_contract.py runs plays whose tasks all have other names and gets the same outcome.
"""

from __future__ import annotations

import ast
import re
import uuid
from pathlib import Path
from typing import Any, Iterator

import yaml

from mlcube_ssh_ansible import doctor, report
from mlcube_ssh_ansible.cli import check_mode

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mlcube_ssh_ansible"


def playbook_files() -> list[Path]:
    return sorted([*ROOT.glob("playbooks/*.yml"), *ROOT.glob("roles/*/tasks/*.yml")])


def tasks_in(items: Any) -> Iterator[dict[str, Any]]:
    """Every task of a task list or a playbook, blocks and plays opened."""
    for item in items or []:
        if not isinstance(item, dict):
            continue
        if "hosts" in item:  # a play
            for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                yield from tasks_in(item.get(key))
            continue
        yield item
        for key in ("block", "rescue", "always"):
            yield from tasks_in(item.get(key))


def all_tasks() -> list[dict[str, Any]]:
    return [task for path in playbook_files() for task in tasks_in(yaml.safe_load(path.read_text()))]


def package_strings() -> set[str]:
    """Every string constant in the package's Python (f-strings' literal parts too)."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value.strip())
    return found


def plugin_sources() -> str:
    """The modules' and action plugins' code (in plugins/, or in the roles' library/ and action_plugins/)."""
    files = [*ROOT.glob("plugins/*/*.py"), *ROOT.glob("roles/*/library/*.py"),
             *ROOT.glob("roles/*/action_plugins/*.py")]
    return "\n".join(path.read_text() for path in sorted(set(files)) if path.is_file())


def test_the_playbooks_are_found_and_their_tasks_named() -> None:
    names = [task.get("name") for task in all_tasks()]
    assert len(names) > 40 and all(isinstance(name, str) and name for name in names)


def test_no_python_reads_a_task_name() -> None:
    names = {str(task["name"]).strip() for task in all_tasks()}
    assert names & package_strings() == set()


def test_every_result_kind_the_reporter_reads_is_returned_by_a_plugin() -> None:
    kinds = set(re.findall(r"""["']mlcube_ssh_result["'][\s\]:=,]+["'](\w+)["']""", plugin_sources()))
    assert report.RESULT_KEY == "mlcube_ssh_result"
    assert {report.RUN_RESULT, report.FETCH_RESULT, report.STOP_RESULT} <= kinds, kinds


def test_every_fact_the_python_side_reads_is_set_by_a_role() -> None:
    set_facts = {key for task in all_tasks() for action in ("ansible.builtin.set_fact", "set_fact")
                 for key in (task.get(action) or {}) if isinstance(task.get(action), dict)}
    for fact in (doctor.CHECKS_FACT, check_mode.MISSING_FACT):
        assert fact in set_facts, fact


def test_what_a_run_returned_makes_the_report_whatever_the_tasks_are_named() -> None:
    """A followed run that exits 3, its fetch, and the remote_run role's verdict given after the fetch."""
    lines: list[str] = []
    reporter = report.Reporter(write=lines.append)

    def event(kind: str, role: str, **res: Any) -> dict[str, Any]:
        return {"event": kind, "event_data": {"host": "h", "role": role, "task": uuid.uuid4().hex, "res": res}}

    reporter(event("runner_on_ok", "mlcube_ssh_remote_run", rc=3, stdout_lines=["epoch 1"],
                   **{report.RESULT_KEY: report.RUN_RESULT}))
    reporter(event("runner_on_ok", "mlcube_ssh_fetch", changed=True, stdout_lines=[">f+++++++++ out.txt"],
                   fetch_dest="/ws", **{report.RESULT_KEY: report.FETCH_RESULT}))
    reporter(event("runner_on_start", "mlcube_ssh_remote_run"))
    reporter(event("runner_on_failed", "mlcube_ssh_remote_run", msg="mlcube run failed on h with exit code 3"))
    reporter({"event": "playbook_on_stats", "event_data": {}})

    assert [line.split(" (")[0] for line in lines] == ["epoch 1", "h: remote run ok", "h: fetch changed"]
    assert reporter.failures() == {"h": ("remote run", "mlcube run failed on h with exit code 3")}
    host = reporter.hosts["h"]
    assert (host.run_rc, host.fetch_dest, host.fetched, host.status and host.status["rc"]) == (3, "/ws", ["out.txt"], 3)
    assert reporter.run_exit_code() == 3
