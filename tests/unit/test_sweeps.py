"""Sweeps without hosts: the grid and the file of runs, the checks of every value, and the placement plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlcube_ssh_ansible import sweeps, upload
from mlcube_ssh_ansible.sweeps import HostSlots, Placement, SweepError


def test_a_grid_is_the_cartesian_product_in_order_after_the_file_rows() -> None:
    grid = sweeps.parse_grid(["lr=0.1,0.01", "bs=32,64"])
    assert grid == [("lr", ["0.1", "0.01"]), ("bs", ["32", "64"])]
    assert sweeps.expand(["data=in.csv"], grid) == [
        {"lr": "0.1", "bs": "32"}, {"lr": "0.1", "bs": "64"}, {"lr": "0.01", "bs": "32"}, {"lr": "0.01", "bs": "64"}]
    rows = [{"config": "a.yaml"}, {"config": "b.yaml"}]
    assert sweeps.expand([], sweeps.parse_grid(["seed=1,2"]), rows) == [
        {"config": "a.yaml", "seed": "1"}, {"config": "a.yaml", "seed": "2"},
        {"config": "b.yaml", "seed": "1"}, {"config": "b.yaml", "seed": "2"}]
    assert sweeps.expand([], [], rows) == rows
    assert sweeps.task_args({"lr": "0.1", "bs": "32"}) == ["lr=0.1", "bs=32"]


@pytest.mark.parametrize(("grid", "says"), [
    (["lr=0.1,a b"], "parameter 'lr': value 'a b' (--grid) is not allowed: task arguments must look like"),
    (["lr=0.1,$(rm -rf ~)"], "parameter 'lr': value '$(rm -rf ~)' (--grid)"),
    (["lr"], "--grid 'lr': must look like NAME=V1,V2,..."),
    (["lr=0.1,,0.2"], "--grid 'lr': has an empty value in '0.1,,0.2'"),
    (["lr=1", "lr=2"], "--grid 'lr': is given twice"),
    (["-x=1"], "parameter '-x': is not a task parameter name (--grid)"),
])
def test_a_bad_grid_is_one_line_naming_the_key(grid: list[str], says: str) -> None:
    with pytest.raises(SweepError) as caught:
        sweeps.parse_grid(grid)
    assert str(caught.value).startswith(says)
    assert "\n" not in str(caught.value)


def test_a_name_given_twice_over_fixed_grid_and_file_is_refused() -> None:
    with pytest.raises(SweepError, match="parameter 'lr': is both a fixed task argument and a --grid parameter"):
        sweeps.expand(["lr=1"], sweeps.parse_grid(["lr=2,3"]))
    with pytest.raises(SweepError, match="parameter 'lr': is set both in the file of runs"):
        sweeps.expand([], sweeps.parse_grid(["lr=2"]), [{"lr": "1"}])
    with pytest.raises(SweepError, match="a sweep needs --grid"):
        sweeps.expand(["lr=1"], [])


def test_files_of_runs_yaml_json_and_csv_keep_values_as_written(tmp_path: Path) -> None:
    (tmp_path / "runs.yaml").write_text("- {lr: 0.10, bs: 32}\n- lr: 1e-3\n  bs: 064\n")
    (tmp_path / "runs.json").write_text(json.dumps([{"lr": "0.1", "bs": 32}, {"lr": "0.2", "bs": 64}]))
    (tmp_path / "runs.csv").write_text("lr,bs\n0.10,32\n0.2,64\n")
    assert sweeps.read_runs(str(tmp_path / "runs.yaml")) == [{"lr": "0.10", "bs": "32"}, {"lr": "1e-3", "bs": "064"}]
    assert sweeps.read_runs(str(tmp_path / "runs.json")) == [{"lr": "0.1", "bs": "32"}, {"lr": "0.2", "bs": "64"}]
    assert sweeps.read_runs(str(tmp_path / "runs.csv")) == [{"lr": "0.10", "bs": "32"}, {"lr": "0.2", "bs": "64"}]


@pytest.mark.parametrize(("name", "text", "says"), [
    ("bad.yaml", "lr: 0.1\n", "must be a list of mappings"),
    ("bad.yaml", "- {lr: [1, 2]}\n", "parameter 'lr': --runs"),
    ("bad.yaml", "- {lr: a;b}\n", "parameter 'lr': value 'a;b' (--runs"),
    ("bad.yaml", "[]\n", "lists no run"),
    ("bad.csv", "lr,bs\n0.1\n", "line 2 has not as many fields as the header"),
    ("bad.yaml", "- {lr: 1\n", "is not YAML or JSON"),
])
def test_a_bad_file_of_runs_is_one_line_naming_it(tmp_path: Path, name: str, text: str, says: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(SweepError) as caught:
        sweeps.read_runs(str(tmp_path / name))
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def slots(gpus: str, cpus: int = 0, free_cpus: int | None = None) -> dict[str, Any]:
    """A slots module answer: one letter per GPU, f(ree), l(eased) or b(usy)."""
    states = {"f": "free", "l": "leased", "b": "busy"}
    return {"gpus": [{"index": index, "state": states[letter]} for index, letter in enumerate(gpus)],
            "cpus": [{"index": index, "state": "free" if index < (cpus if free_cpus is None else free_cpus)
                      else "leased"} for index in range(cpus)]}


def test_host_slots_skip_busy_gpus_and_count_what_runs_at_once() -> None:
    found = HostSlots.of(slots("flbf", cpus=4, free_cpus=1))
    assert found == HostSlots(gpus=3, free_gpus=2, cpus=4, free_cpus=1)
    assert (found.at_once(1), found.at_once(2), found.at_once(4), found.at_once(0)) == (3, 1, 0, 4)


def test_placement_fills_free_slots_across_the_fleet_then_queues_in_proportion() -> None:
    hosts = {"a": HostSlots.of(slots("ff")), "b": HostSlots.of(slots("ffff")), "c": HostSlots.of(slots("ll"))}
    plan = sweeps.place([1] * 12, hosts)
    # Free first, the host with the most free GPUs first (b has 4, a 2, c none free): 6 start at once.
    assert plan[:6] == [Placement("b", True), Placement("b", True), Placement("a", True), Placement("b", True),
                        Placement("a", True), Placement("b", True)]
    # The other 6 wait where they wait least: b runs 4 at once, a and c 2 each, so b gets twice their share.
    assert [placed.host for placed in plan[6:]] == ["b", "a", "b", "c", "b", "a"]
    assert all(not placed.now for placed in plan[6:])


def test_placement_counts_the_runs_already_waiting_in_a_hosts_line() -> None:
    """b has four free GPUs, but three runs (of anyone) wait in its line: a new run would wait behind them."""
    hosts = {"a": HostSlots.of(slots("ff")), "b": HostSlots.of({**slots("ffff"), "waiting": 3})}
    assert hosts["b"] == HostSlots(gpus=4, free_gpus=4, cpus=0, free_cpus=0, waiting=3)
    assert sweeps.place([1] * 5, hosts) == [Placement("a", True), Placement("a", True), Placement("a", False),
                                            Placement("a", False), Placement("b", False)]


def test_placement_never_sends_a_run_where_it_cannot_run_and_refuses_what_no_host_can() -> None:
    hosts = {"small": HostSlots.of(slots("f", cpus=2)), "big": HostSlots.of(slots("llff", cpus=1))}
    assert sweeps.place([2, 2, 2], hosts) == [Placement("big", True), Placement("big", False),
                                             Placement("big", False)]
    # CPU-only runs: small has 2 free slots, big 1; on a tie the first name; the fourth waits on small (2 at once).
    assert sweeps.place([0, 0, 0, 0], hosts) == [Placement("small", True), Placement("big", True),
                                                 Placement("small", True), Placement("small", False)]
    with pytest.raises(SweepError) as caught:
        sweeps.place([1, 5], hosts)
    assert str(caught.value) == ("sweep 'run 2': needs 5 GPU(s), and no host has as many (big: 4 GPU(s), 1 CPU "
                                 "slot(s), small: 1 GPU(s), 2 CPU slot(s))")
    with pytest.raises(SweepError, match="needs 1 GPU"):
        sweeps.place([1], {"cpu-only": HostSlots.of(slots("", cpus=8))})


def manifest_of(tmp_path: Path) -> dict[str, Any]:
    cube = tmp_path / "cube"
    runs = [sweeps.new_run(index, f"s1-00{index}", {"lr": str(index)}, "h1", index == 1,
                           sweeps.run_folder(str(cube), "s1", index, 2), 1) for index in (1, 2)]
    return sweeps.new_manifest("s1", str(cube), ["train"], ["data=d"], runs, hosts_pattern="gpus", need_gpus=1,
                               run_options=["--memory=8g"], run_retries=2)


def test_the_manifest_follows_launches_hosts_and_fetches(tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path)
    assert {key: manifest[key] for key in ("tasks", "task_args", "run_options", "run_retries", "need_gpus")} == {
        "tasks": ["train"], "task_args": ["data=d"], "run_options": ["--memory=8g"], "run_retries": 2, "need_gpus": 1}
    assert [run["results"] for run in manifest["runs"]] == [str(tmp_path / "cube/sweeps/s1/001"),
                                                             str(tmp_path / "cube/sweeps/s1/002")]
    sweeps.update_from_launch(manifest, {"s1-001": {"queued": False, "devices": {"gpus": [1]}, "started": "t1"},
                                         "s1-002": {"queued": True, "devices": {}}})
    assert [(run["state"], run["devices"], run["attempts"]) for run in manifest["runs"]] == [
        ("running", {"gpus": [1]}, 1), ("queued", None, 0)]
    missing = sweeps.update_from_hosts(manifest, {"h1": [
        {"run_id": "s1-001", "state": "succeeded", "rc": 0, "devices": {"gpus": [1]}, "started": "t1", "ended": "t2"},
        {"run_id": "other", "state": "running"}]})
    assert missing == ["s1-002"]
    assert {key: manifest["runs"][0][key] for key in ("state", "exit_code", "started", "ended")} == {
        "state": "succeeded", "exit_code": 0, "started": "t1", "ended": "t2"}
    # With retries (run --retries-on-failure), the host lists the attempts that ended; one more is going on.
    sweeps.update_from_hosts(manifest, {"h1": [
        {"run_id": "s1-002", "state": "running", "rc": None, "devices": {"gpus": [0]}, "started": "t3",
         "attempts": [{"attempt": 1, "rc": 3, "cause": "device", "faulty": [1]}]}]})
    assert {key: manifest["runs"][1][key] for key in ("state", "attempts", "devices", "attempt_details")} == {
        "state": "running", "attempts": 2, "devices": {"gpus": [0]},
        "attempt_details": [{"attempt": 1, "rc": 3, "cause": "device", "faulty": [1]}]}
    folder = Path(manifest["runs"][0]["results"])
    (folder / ".mlcube-ssh-ansible").mkdir(parents=True)
    (folder / ".mlcube-ssh-ansible" / "record.json").write_text("{}")
    (folder / "out.txt").write_text("hello\n")
    run = sweeps.update_from_fetch(manifest, "s1-001")
    assert run["outputs"] == [{"path": "out.txt", "size": 6, "sha256":
                               "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"}]
    assert sweeps.describe(run) == "001 s1-001 on h1: succeeded (exit code 0) on gpu 1 (lr=1)"
    sweeps.write_manifest(manifest)
    assert sweeps.load_manifest(str(tmp_path / "cube")) == manifest


def test_sweep_folders_are_never_uploaded(tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path)
    sweeps.write_manifest(manifest)
    (tmp_path / "cube" / "sweeps" / "mine").mkdir()  # a user's folder without a manifest is theirs: uploaded
    (tmp_path / "cube" / "sweeps" / "mine" / "config.yaml").write_text("lr: 1\n")
    assert sweeps.sweep_folders(str(tmp_path / "cube")) == ["sweeps/s1"]
    assert upload.count_files(str(tmp_path / "cube")) == 1  # the user's file; not the sweep's manifest
    excludes = upload.exclude_file(str(tmp_path / "cube"), True)
    assert Path(excludes).read_text().splitlines() == ["/sweeps/s1/"]
