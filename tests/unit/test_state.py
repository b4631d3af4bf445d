"""The local state (state.State): configure fingerprints, upload stamps, fetch lists and run records, as the
workflow uses them at the start and the end of a command."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from mlcube_ssh_ansible.errors import SettingsError
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.report import HostReport, Reporter
from mlcube_ssh_ansible.settings import parse_settings
from mlcube_ssh_ansible.state import State

SETTINGS = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"}})


@pytest.fixture()
def job(cube: Path) -> Job:
    return Job(str(cube), str(cube / "workspace"), tasks=("train",), run_id="20260101-000000-aaaaaa")


def finished(**hosts: HostReport) -> Reporter:
    reporter = Reporter(write=lambda _line: None)
    reporter.hosts.update(hosts)
    return reporter


def ran(job: Job, fetched: list[str]) -> HostReport:
    return HostReport(run_rc=0, fetched=fetched, fetch_dest=job.workspace,
                      steps_done=[("fetch", bool(fetched), 0.1)])


def edit(path: Path, text: str) -> None:
    path.write_text(text)
    os.utime(path, ns=(7, 7))  # a time no earlier listing had


def test_a_configure_is_skipped_only_after_a_successful_one_with_the_same_inputs(job: Job) -> None:
    assert not State(SETTINGS, job).configure_skippable()
    State(SETTINGS, job).configured()
    assert State(SETTINGS, job).configure_skippable()
    assert not State(SETTINGS, job).configure_skippable(check=True)  # a check always contacts the hosts
    assert not State(dataclasses.replace(SETTINGS, host="h2"), job).configure_skippable()  # another target
    assert not State(dataclasses.replace(SETTINGS, skip_unchanged=False), job).configure_skippable()
    State(SETTINGS, job).forget_configured()  # a failed run
    assert not State(SETTINGS, job).configure_skippable()


def test_a_configure_records_its_inputs_as_they_were_when_it_started(job: Job) -> None:
    state = State(SETTINGS, job)
    assert not state.configure_skippable()
    edit(Path(job.cube_root, "mlcube.yaml"), "name: edited while configure ran\n")
    state.configured()
    assert not State(SETTINGS, job).configure_skippable()


def test_the_upload_plan_names_the_hosts_whose_copy_is_current(job: Job) -> None:
    first = State(SETTINGS, job)
    plan = first.upload_plan()
    assert first.upload_vars(plan) == {"mlcube_ssh_sync_stamp": plan.stamp, "mlcube_ssh_synced": {},
                                       "mlcube_ssh_known_paths": {}}
    with_paths = ran(job, [])
    with_paths.known_paths = {"remote_dir": "/home/u/mlcube/x", "key": "k1"}  # mlcube.ssh.paths' answer
    first.remember_synced(plan, finished(a=with_paths, b=ran(job, [])))
    second = State(SETTINGS, job).upload_plan()
    assert second.synced == {"a": plan.stamp, "b": plan.stamp} and second.stamp != plan.stamp
    # The hosts' paths answers go with their stamps (a warm run answers from them without a module call).
    assert State(SETTINGS, job).upload_vars(second) == {
        "mlcube_ssh_sync_stamp": second.stamp, "mlcube_ssh_synced": second.synced,
        "mlcube_ssh_known_paths": {"a": with_paths.known_paths}}
    edit(Path(job.cube_root, "mlcube.yaml"), "name: changed\n")
    assert State(SETTINGS, job).upload_plan().synced == {}
    assert State(SETTINGS, job).upload_plan().paths == {}
    off = State(dataclasses.replace(SETTINGS, skip_unchanged=False), job)
    assert off.upload_vars(off.upload_plan()) == {}


def test_outputs_fetched_by_the_run_are_part_of_what_is_synced(job: Job) -> None:
    state = State(SETTINGS, job)
    plan = state.upload_plan()
    Path(job.workspace, "greeting.txt").write_text("fetched")
    state.remember_synced(plan, finished(h=ran(job, ["greeting.txt"])))
    assert State(SETTINGS, job).upload_plan().synced == {"h": plan.stamp}


def test_a_file_edited_during_the_run_is_not_taken_as_uploaded(job: Job) -> None:
    state = State(SETTINGS, job)
    plan = state.upload_plan()
    state.remember_synced(plan, finished(h=ran(job, [])))
    assert State(SETTINGS, job).upload_plan().synced == {"h": plan.stamp}
    plan = state.upload_plan()
    edit(Path(job.cube_root, "mlcube.yaml"), "name: edited while the task ran\n")
    state.remember_synced(plan, finished(h=ran(job, [])))
    assert State(SETTINGS, job).upload_plan().synced == {}


def test_failed_and_unfinished_hosts_are_forgotten(job: Job) -> None:
    state = State(SETTINGS, job)
    first = state.upload_plan()
    state.remember_synced(first, finished(a=ran(job, []), b=ran(job, [])))
    second = state.upload_plan()
    failed = HostReport(run_rc=3, failed_step="remote run", reason="exit 3")
    detached = HostReport()  # started, not followed: no exit code yet
    state.remember_synced(second, finished(a=failed, b=detached, c=ran(job, [])))
    assert State(SETTINGS, job).upload_plan().synced == {"b": first.stamp, "c": second.stamp}


def test_an_interrupted_run_forgets_every_host(job: Job) -> None:
    state = State(SETTINGS, job)
    state.configured()
    state.remember_synced(state.upload_plan(), finished(a=ran(job, [])))
    state.forget_all_hosts()
    assert not State(SETTINGS, job).configure_skippable()
    assert State(SETTINGS, job).upload_plan().synced == {}


def test_results_deleted_locally_are_pruned_on_the_host(job: Job) -> None:
    state = State(SETTINGS, job)
    Path(job.workspace, "out.txt").write_text("result")
    assert state.prune_vars() == {}
    state.remember_fetched(finished(h=ran(job, ["out.txt"])))
    assert state.prune_vars() == {}
    Path(job.workspace, "out.txt").unlink()
    pruned = state.prune_vars()["mlcube_ssh_prune"]
    assert list(pruned) == ["h"] and [row[0] for row in pruned["h"]] == ["out.txt"]


def test_what_a_host_deleted_leaves_its_fetch_list_once_its_upload_is_done(job: Job) -> None:
    state = State(SETTINGS, job)
    for name in ("a.txt", "b.txt"):
        Path(job.workspace, name).write_text(name)
    state.remember_fetched(finished(h=ran(job, ["a.txt", "b.txt"]), g=ran(job, ["a.txt", "b.txt"]),
                                    f=ran(job, ["a.txt", "b.txt"])))
    Path(job.workspace, "a.txt").unlink()
    assert sorted(state.prune_vars()["mlcube_ssh_prune"]) == ["f", "g", "h"]
    state.remember_pruned(finished(h=HostReport(steps_done=[("preflight", False, 0.1), ("upload", True, 0.2)]),
                                   g=HostReport(steps_done=[("preflight", False, 0.1)], failed_step="upload"),
                                   f=HostReport(steps_done=[("preflight", False, 0.1)])))
    later = State(SETTINGS, job)
    assert sorted(later.prune_vars()["mlcube_ssh_prune"]) == ["f", "g"]  # failed, or never got to the upload
    Path(job.workspace, "b.txt").unlink()
    assert [row[0] for row in later.prune_vars()["mlcube_ssh_prune"]["h"]] == ["b.txt"]


def test_bookkeeping_that_cannot_be_written_is_a_warning(job: Job) -> None:
    lines: list[str] = []
    reporter = finished(h=ran(job, ["out.txt"]))
    reporter.write = lines.append
    Path(job.workspace, ".mlcube-ssh-ansible").write_text("a file where the records folder goes")
    State(SETTINGS, job).remember_fetched(reporter)
    assert len(lines) == 1 and "cannot record what was fetched" in lines[0]


def test_run_records_are_found_by_id_or_as_the_latest(job: Job) -> None:
    state = State(SETTINGS, job)
    with pytest.raises(SettingsError, match="no run recorded"):
        state.latest_run_id()
    record = state.start_run()
    assert record["tasks"] == ["train"] and record["hosts"] == {}
    later = State(SETTINGS, dataclasses.replace(job, run_id="20260101-000001-bbbbbb", tasks=("evaluate",)))
    later.finish_run(later.start_run(), finished(h=ran(job, [])))
    assert state.latest_run_id() == "20260101-000001-bbbbbb"
    found, recorded = State(SETTINGS, dataclasses.replace(job, run_id="", tasks=())).recorded_run(None)
    assert found.job.run_id == "20260101-000001-bbbbbb" and found.job.tasks == ("evaluate",)
    assert recorded["hosts"]["h"]["exit_code"] == 0 and "finished" in recorded
    assert found.run_output_dir() == Path(job.workspace, ".mlcube-ssh-ansible", "runs", "20260101-000001-bbbbbb")
    first, _ = state.recorded_run("20260101-000000-aaaaaa")
    assert first.job.tasks == ("train",)
    with pytest.raises(SettingsError, match="no readable record of run nope"):
        state.recorded_run("nope")


def test_the_latest_run_is_never_one_every_host_refused(job: Job) -> None:
    """Issue 15, gap 3: a run refused on every host (a busy workspace) is recorded, but never picked."""
    started = State(SETTINGS, dataclasses.replace(job, run_id="20260101-000001-aaaaaa"))
    started.finish_run(started.start_run(), finished(h=ran(job, [])))
    refused = State(SETTINGS, dataclasses.replace(job, run_id="20260101-000002-bbbbbb"))
    reporter = Reporter(write=lambda _: None)
    reporter.hosts["h"] = HostReport(failed_step="remote run", reason="busy: run ... is still running")
    refused.finish_run(refused.start_run(), reporter)
    assert State(SETTINGS, job).latest_run_id() == "20260101-000001-aaaaaa"
    going = State(SETTINGS, dataclasses.replace(job, run_id="20260101-000003-cccccc"))
    going.start_run()  # not finished yet (its command still runs, or died): it may have started
    assert State(SETTINGS, job).latest_run_id() == "20260101-000003-cccccc"
