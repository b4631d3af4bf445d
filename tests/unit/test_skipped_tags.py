"""The tasks the shim leaves out because every host would skip them by their `when` (issue 12): golden lists of
the --skip-tags per command, and the follow's verdict (`run_failed`), which the left-out `result` tasks and the
reporter both fail a host with."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from mlcube_ssh_ansible import workflow
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.report import Reporter
from mlcube_ssh_ansible.settings import parse_settings

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("mlcube_ssh_follow_state",
                                               ROOT / "plugins" / "module_utils" / "follow_state.py")
assert _spec is not None and _spec.loader is not None
follow_state: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(follow_state)
ONE = {"host": "127.0.0.2", "platform": "docker", "interpreter": {"type": "system"}}
PRUNE, UPLOAD, FOLDER, SETTINGS, RESULT = ("mlcube_ssh_prune", "mlcube_ssh_upload", "mlcube_ssh_results_folder",
                                           "mlcube_ssh_system_settings", "mlcube_ssh_result")


def _skipped(name: str, section: dict[str, Any], cube: Path, extra: dict[str, Any] | None = None,
             check: bool = False) -> tuple[str, ...]:
    job = Job(str(cube), str(cube / "workspace"), ("hello",))
    return tuple(workflow.playbook_invocation(name, parse_settings(section), job, extra=extra, check=check,
                                              exclude_from="").skip_tags)


WARM = {"mlcube_ssh_synced": {"127.0.0.2": "s1"}, "mlcube_ssh_known_paths": {"127.0.0.2": {"key": "k"}}}


@pytest.mark.parametrize(("name", "section", "extra", "expected"), [
    # A warm run of one host: 6 tasks (validate, paths, set_fact, launch, follow, fetch).
    ("run", ONE, WARM, (PRUNE, UPLOAD, FOLDER, SETTINGS, RESULT)),
    ("run", ONE, None, (PRUNE, FOLDER, SETTINGS, RESULT)),  # no record of the copy: the upload decides
    ("run", ONE, {**WARM, "mlcube_ssh_prune": {"127.0.0.2": [["a", 1, 2]]}}, (FOLDER, SETTINGS, RESULT)),
    ("run", ONE, {"mlcube_ssh_synced": WARM["mlcube_ssh_synced"]}, (PRUNE, FOLDER, SETTINGS, RESULT)),
    ("run", {**ONE, "platform_settings": {"docker": "podman"}}, WARM, (PRUNE, UPLOAD, FOLDER, RESULT)),
    ("configure", ONE, None, (PRUNE, FOLDER, SETTINGS)),
    ("attach", ONE, None, (PRUNE, FOLDER, SETTINGS, RESULT)),
    ("attach", ONE, {"mlcube_ssh_per_host_results": True}, (PRUNE, SETTINGS, RESULT)),
    ("status", ONE, None, (PRUNE, FOLDER, SETTINGS)),
])
def test_the_tags_a_command_leaves_out(cube: Path, name: str, section: dict[str, Any],
                                       extra: dict[str, Any] | None, expected: tuple[str, ...]) -> None:
    assert _skipped(name, section, cube, extra) == expected


def test_with_an_inventory_only_what_holds_for_every_host_is_left_out(cube: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    a: {}\n    b: {}\n")
    fleet = {"inventory": str(inventory), "hosts": "all", "platform": "docker", "interpreter": {"type": "system"}}
    assert _skipped("run", fleet, cube, {"mlcube_ssh_synced": {"a": "s", "b": "s"}}) == (PRUNE, RESULT)
    assert _skipped("configure", fleet, cube) == (PRUNE,)


def test_a_check_run_leaves_out_nothing(cube: Path) -> None:
    assert _skipped("configure", ONE, cube, check=True) == ()


def _result_task(result: dict[str, Any]) -> str | None:
    """The message the `result` task fails the host with, as Ansible renders it; None when its `when` skips it."""
    task = yaml.safe_load((ROOT / "roles/mlcube_ssh_remote_run/tasks/result.yml").read_text())[0]
    variables = {"inventory_hostname": "h1", "__mlcube_ssh_remote_run_result": result}
    templar = Templar(loader=DataLoader(), variables=variables)
    if not all(templar.template(trust_as_template("{{ " + condition + " }}")) for condition in task["when"]):
        return None
    return str(templar.template(trust_as_template(task["ansible.builtin.fail"]["msg"])))


@pytest.mark.parametrize(("result", "verdict"), [
    ({"rc": 3, "done": True}, "mlcube run failed on h1 with exit code 3"),
    ({"died": True}, "the run died on h1 without an exit code: its processes are gone (killed, or out of memory)"),
    ({"died": True, "rebooted": True}, "the run died on h1 without an exit code: the host rebooted since it started"),
    ({"rc": 0, "done": True}, None),
    ({"rc": 3, "done": False}, None),  # the exit code is known, the output not all read yet: not the final answer
    ({"done": False}, None),
])
def test_the_follows_verdict_is_what_the_result_task_fails_the_host_with(result: dict[str, Any],
                                                                           verdict: str | None) -> None:
    answer = follow_state.with_verdict(dict(result), "h1")
    assert answer.get("run_failed") == verdict
    assert _result_task(answer) == verdict


def _play(reporter: Reporter, rc: int) -> None:
    """A followed run that ended with `rc`, then its fetch, then the end of the play."""
    data = {"host": "h1", "role": "mlcube_ssh_remote_run"}
    reporter({"event": "runner_on_start", "event_data": data})
    answer = follow_state.with_verdict({"mlcube_ssh_result": "run", "rc": rc, "done": True}, "h1")  # the action's
    reporter({"event": "runner_on_ok", "event_data": {**data, "res": answer}})
    fetch = {"host": "h1", "role": "mlcube_ssh_fetch"}
    reporter({"event": "runner_on_start", "event_data": fetch})
    reporter({"event": "runner_on_ok", "event_data": {**fetch, "res": {"mlcube_ssh_result": "fetch"}}})
    reporter({"event": "playbook_on_stats", "event_data": {}})


def test_the_reporter_fails_the_hosts_whose_task_failed_after_the_fetch() -> None:
    lines: list[str] = []
    reporter = Reporter(write=lines.append)
    reporter.fails_runs = True
    _play(reporter, 3)
    assert reporter.failures() == {"h1": ("remote run", "mlcube run failed on h1 with exit code 3")}
    assert reporter.run_exit_code() == 3
    assert any(line.startswith("h1: fetch ok") for line in lines), lines  # fetched first, then failed

    ok = Reporter(write=lines.append)
    ok.fails_runs = True
    _play(ok, 0)
    assert ok.failures() == {}
    # Without fails_runs (the play's own result tasks, or a status read), a run's exit code fails nothing here.
    read = Reporter(write=lines.append)
    _play(read, 3)
    assert read.failures() == {}


def test_an_upload_left_out_is_shown_as_skipped_before_the_hosts_next_step() -> None:
    lines: list[str] = []
    reporter = Reporter(write=lines.append)
    reporter.left_out = ("upload",)
    for role in ("mlcube_ssh_preflight", "mlcube_ssh_remote_run"):
        reporter({"event": "runner_on_start", "event_data": {"host": "h1", "role": role}})
        reporter({"event": "runner_on_ok", "event_data": {"host": "h1", "role": role, "res": {}}})
    reporter({"event": "playbook_on_stats", "event_data": {}})
    assert [line.split(" (")[0] for line in lines] == [
        "h1: upload skipped, nothing changed since the last run", "h1: remote run ok"]
