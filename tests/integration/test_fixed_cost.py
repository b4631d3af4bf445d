"""The fixed cost of a run (issue 12): a short task is followed by the call that launched it, on a real host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlcube_ssh_ansible import workflow
from mlcube_ssh_ansible.errors import HostFailure
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.report import RESULT_KEY, RUN_RESULT, STALE_COPY, Reporter
from tests.hosts import SshHost, example_cube, remote

from .conftest import platform_settings

pytestmark = pytest.mark.integration


RESULTS = ("runner_on_ok", "runner_on_failed", "runner_retry")


class Recorder(Reporter):
    """A reporter that keeps the lines it would print and the follow task's answers (a run's state)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.follows: list[dict[str, Any]] = []
        super().__init__(write=self.lines.append)

    def __call__(self, event: dict[str, Any]) -> bool:
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        if res.get(RESULT_KEY) == RUN_RESULT and event.get("event") in RESULTS:
            self.follows.append(dict(res))
        return super().__call__(event)


def test_a_short_task_is_followed_by_its_launch_and_a_longer_one_by_the_follow_module(
        tmp_path: Path, ssh_host: SshHost, settings_file, monkeypatch: pytest.MonkeyPatch) -> None:
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host))
    workflow.configure(settings, Job(str(cube), str(cube / "workspace")), reporter=Recorder())
    # The short tasks' launches wait long enough for them to end however loaded the machine is (a `docker run`
    # may take over the default 2 s then); the longer task below runs with the default.
    invocation = workflow.playbook_invocation
    wait = {"mlcube_ssh_launch_wait": 120}
    monkeypatch.setattr(workflow, "playbook_invocation", lambda *args, **kwargs: invocation(
        *args, **{**kwargs, "extra": {**(kwargs.get("extra") or {}), **wait}}))

    # A task that ends while the launch waits: the follow task's answer is the launch's (no second module call),
    # with the output shown once and the results fetched.
    short = Recorder()
    workflow.run(settings, Job(str(cube), str(cube / "workspace"), ("hello",)), reporter=short)
    assert [answer.get("at_launch") for answer in short.follows] == [True], short.follows
    assert short.follows[0]["rc"] == 0 and short.follows[0]["done"]
    assert short.lines.count("Hello, World!") == 1, short.lines
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, World!\n"

    # A failing short task: its exit code and its stderr come the same way.
    failing = Recorder()
    with pytest.raises(HostFailure) as failed:
        workflow.run(settings, Job(str(cube), str(cube / "workspace"), ("fail",)), reporter=failing)
    assert failed.value.exit_code == 3
    assert [answer.get("at_launch") for answer in failing.follows] == [True]
    assert any("failing on purpose with exit status 3" in line for line in failing.lines), failing.lines

    # A task that outlives the launch's wait (the default 2 s) is followed by the module, from the start of its
    # output.
    wait.clear()
    (cube / "workspace" / "seconds.txt").write_text("4\n")
    longer = Recorder()
    workflow.run(settings, Job(str(cube), str(cube / "workspace"), ("sleep",)), reporter=longer)
    assert longer.follows and not any(answer.get("at_launch") for answer in longer.follows), longer.follows
    assert longer.follows[-1]["rc"] == 0 and longer.follows[-1]["done"]
    assert (cube / "workspace" / "slept.txt").exists()


class PathsRecorder(Recorder):
    """Also keeps the answers of mlcube.ssh.paths (whether each came from the last run's, without a call)."""

    def __init__(self) -> None:
        self.paths: list[dict[str, Any]] = []
        super().__init__()

    def __call__(self, event: dict[str, Any]) -> bool:
        res = (event.get("event_data") or {}).get("res") or {}
        if res.get(RESULT_KEY) == "paths" and event.get("event") == "runner_on_ok":
            self.paths.append(dict(res))
        return super().__call__(event)


def test_a_warm_run_works_out_its_paths_without_a_call_and_a_changed_copy_is_uploaded_again(
        tmp_path: Path, ssh_host: SshHost, settings_file) -> None:
    cube = example_cube(tmp_path)
    settings = platform_settings(settings_file(ssh_host))
    job = Job(str(cube), str(cube / "workspace"), ("hello",))
    workflow.configure(settings, Job(str(cube), str(cube / "workspace")), reporter=Recorder())
    first = PathsRecorder()
    workflow.run(settings, job, reporter=first)  # uploads (configure's upload voided the stamp)
    assert [answer["cached"] for answer in first.paths] == [False], first.paths

    # Nothing changed: the paths are the last run's answer (no module call), the upload is skipped.
    warm = PathsRecorder()
    workflow.run(settings, job, reporter=warm)
    assert [answer["cached"] for answer in warm.paths] == [True], warm.paths
    assert warm.paths[0]["remote_dir"] == first.paths[0]["remote_dir"]
    assert any("upload skipped" in line for line in warm.lines), warm.lines
    assert warm.lines.count("Hello, World!") == 1, warm.lines

    # The copy changed meanwhile (another controller's upload removes the stamp): the launch starts nothing and
    # the run goes on with a module call and an upload; the result comes back as always.
    state_dir = warm.paths[0]["state_dir"]
    remote(ssh_host, "rm", f"{state_dir}/synced", check=True)
    remote(ssh_host, "sh", "-c", f"echo from-the-host > {warm.paths[0]['remote_workspace']}/greeting.txt", check=True)
    stale = PathsRecorder()
    workflow.run(settings, job, reporter=stale)
    assert [answer["cached"] for answer in stale.paths] == [True, False], stale.paths
    assert any(line.startswith(f"{ssh_host.address}: {STALE_COPY} since the last run (its upload stamp is gone")
               and line.endswith("uploading it again") for line in stale.lines), stale.lines
    assert any(": upload ok" in line or ": upload changed" in line for line in stale.lines), stale.lines
    assert stale.lines.count("Hello, World!") == 1, stale.lines
    assert (cube / "workspace" / "greeting.txt").read_text() == "Hello, World!\n"  # this run's, fetched
    assert not stale.failures()
    # ... and the run after it is warm again.
    again = PathsRecorder()
    workflow.run(settings, job, reporter=again)
    assert [answer["cached"] for answer in again.paths] == [True], again.paths
