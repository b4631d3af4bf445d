"""What a followed run's lost connection looks like to a user: the events the follow action plugin's results
produce (shapes as it returns them), the give-up with the command that picks the run up, and a run that died."""

from __future__ import annotations

from typing import Any

from mlcube_ssh_ansible import workflow
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.report import RESULT_KEY, RUN_RESULT, Reporter
from mlcube_ssh_ansible.settings import parse_settings

HOST = "gpu1"


def event(kind: str, res: dict[str, Any]) -> dict[str, Any]:
    """An event of the remote_run role; which task it was does not matter (the result says what it is)."""
    return {"event": kind, "event_data": {"host": HOST, "task": "any name", "role": "mlcube_ssh_remote_run",
                                          "res": res}}


def follow(lines: list[str], offsets: int, **extra: Any) -> dict[str, Any]:
    return {"stdout_lines": lines, "stderr_lines": [], "offsets": {"stdout": offsets, "stderr": 0},
            "run_dir": "/r", "cursor": "c", "started": "2026-12-04T12:00:00+00:00", RESULT_KEY: RUN_RESULT, **extra}


def settings() -> Any:
    return parse_settings({"host": HOST, "platform": "docker", "interpreter": {"type": "system"},
                           "reconnect_timeout": 60})


def test_a_lost_connection_is_said_once_and_its_return_too() -> None:
    lines: list[str] = []
    reporter = Reporter(write=lines.append)
    reporter(event("runner_retry", follow(["tick 1"], 7)))
    lost = {"since": 1.0, "tries": 1, "backoff": 1.0, "reason": "Data could not be sent", "timeout": 60}
    reporter(event("runner_retry", follow([], 7, lost=lost)))
    reporter(event("runner_retry", follow([], 7, lost={**lost, "tries": 2})))
    reporter(event("runner_on_ok", follow(["tick 2"], 14, done=True, rc=0,
                                                       reconnected={"since": 1.0, "seconds": 3.5, "tries": 3})))
    assert lines == ["tick 1", "gpu1: connection lost (Data could not be sent); its task runs on, reconnecting",
                     "gpu1: reconnected after 3.5 s; the output goes on where it stopped", "tick 2"]
    assert reporter.hosts[HOST].run_rc == 0 and reporter.failures() == {}
    assert reporter.hosts[HOST].offsets == {"stdout": 14, "stderr": 0}


def test_past_the_limit_the_host_fails_with_what_is_known_and_the_pick_up_command() -> None:
    lines: list[str] = []
    reporter = Reporter(write=lines.append)
    reporter(event("runner_retry", follow(["epoch 3"], 8)))
    gave_up = {"since": 1.0, "tries": 9, "reason": "Connection refused", "timeout": 60, "known": {}}
    reporter(event("runner_on_failed", follow([], 8, gave_up=gave_up, failed=True,
                                                           msg="connection lost 60 s ago and not back")))
    job = Job("/home/u/cube", "/home/u/cube/workspace", tasks=("train",), run_id="20261204-1")
    workflow._explain_lost_hosts(settings(), job, reporter)
    [(step, reason)] = reporter.failures().values()
    pick_up = "mlcube-ssh-ansible attach --mlcube=/home/u/cube --run 20261204-1"
    assert step == "remote run" and reporter.hosts[HOST].pick_up == pick_up
    assert "no exit code recorded yet" in reason and "last output: epoch 3" in reason and pick_up in reason
    assert "mlcube-ssh-ansible fetch --mlcube=/home/u/cube --run 20261204-1" in reason
    assert lines[-1] == f"gpu1: gave up reconnecting after 60 s (reconnect_timeout); to pick the run up: {pick_up}"


def test_a_run_that_died_is_named_with_its_last_output() -> None:
    reporter = Reporter(write=lambda _: None)
    reporter(event("runner_on_ok", follow(["step 41"], 8, done=False, died=True, rebooted=True)))
    reporter(event("runner_on_failed", {"failed": True, "msg": "the run died on gpu1 without an exit "
                                                     "code: the host rebooted since it started"}))
    workflow._explain_lost_hosts(settings(), Job("/c", "/c/workspace", run_id="r"), reporter)
    report = reporter.hosts[HOST]
    assert report.died and report.rebooted and report.run_rc is None
    assert reporter.failures()[HOST][1].endswith("host rebooted since it started; last output: step 41")
