"""The local fingerprint that lets a no-op configure skip the hosts."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from mlcube_ssh_ansible import fingerprint
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.settings import parse_settings


def test_what_changes_the_fingerprint(cube: Path) -> None:
    settings = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"}})
    job = Job(str(cube), str(cube / "workspace"))
    first = fingerprint.digest(settings, job)
    (cube / "workspace" / "out.txt").write_text("fetched results do not matter")
    (cube / ".git").mkdir()
    (cube / ".git" / "HEAD").write_text("never uploaded")
    assert fingerprint.digest(settings, job) == first
    assert fingerprint.digest(dataclasses.replace(settings, platform="singularity"), job) != first
    (cube / "mlcube.yaml").write_text("name: changed\n")
    os.utime(cube / "mlcube.yaml", ns=(1, 1))
    assert fingerprint.digest(settings, job) != first


def test_remember_and_forget_per_target(cube: Path) -> None:
    settings = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"}})
    other_host = dataclasses.replace(settings, host="h2")
    job = Job(str(cube), str(cube / "workspace"))
    current = fingerprint.digest(settings, job)
    assert not fingerprint.unchanged(settings, job, current)
    fingerprint.remember(settings, job, current)
    assert fingerprint.unchanged(settings, job, current)
    assert not fingerprint.unchanged(other_host, job, fingerprint.digest(other_host, job))
    fingerprint.forget(settings, job)
    assert not fingerprint.unchanged(settings, job, current)


def test_settings_that_change_nothing_remote_stay_out(cube: Path) -> None:
    settings = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"}})
    job = Job(str(cube), str(cube / "workspace"))
    local_only = dataclasses.replace(settings, skip_unchanged=False, keep_artifacts=True, forks=3)
    assert fingerprint.digest(local_only, job) == fingerprint.digest(settings, job)


def test_an_inventory_folder_counts_with_its_group_vars(cube: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.ini").write_text("[gpu]\nnode1\n")
    (inventory / "group_vars" / "gpu.yml").write_text("mlcube_ssh_remote_root: ~/a\n")
    settings = parse_settings({"inventory": str(inventory), "hosts": "gpu", "platform": "docker",
                               "interpreter": {"type": "system"}})
    job = Job(str(cube), str(cube / "workspace"))
    before = fingerprint.digest(settings, job), fingerprint.upload_digest(settings, job)
    (inventory / "group_vars" / "gpu.yml").write_text("mlcube_ssh_remote_root: ~/b\n")
    after = fingerprint.digest(settings, job), fingerprint.upload_digest(settings, job)
    assert before[0] != after[0] and before[1] != after[1]


def test_what_changes_the_upload_fingerprint(cube: Path, tmp_path: Path) -> None:
    settings = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"}})
    job = Job(str(cube), str(cube / "workspace"))
    first = fingerprint.upload_digest(settings, job)
    # Never uploaded: per-host results of fleet runs, run records, .git.
    (cube / "workspace" / "hosts" / "node1").mkdir(parents=True)
    (cube / "workspace" / "hosts" / "node1" / "out.txt").write_text("fetched")
    (cube / "workspace" / ".mlcube-ssh-ansible" / "runs").mkdir(parents=True)
    (cube / "workspace" / ".mlcube-ssh-ansible" / "runs" / "r.json").write_text("{}")
    (cube / ".git").mkdir()
    (cube / ".git" / "HEAD").write_text("x")
    assert fingerprint.upload_digest(settings, job) == first
    # Uploaded: a workspace input (which the configure fingerprint ignores), and an outside workspace's files.
    configured = fingerprint.digest(settings, job)
    (cube / "workspace" / "in.txt").write_text("y")
    assert fingerprint.upload_digest(settings, job) != first
    assert fingerprint.digest(settings, job) == configured
    outside = tmp_path / "outside"
    outside.mkdir()
    elsewhere = Job(str(cube), str(outside))
    before = fingerprint.upload_digest(settings, elsewhere)
    (outside / "data.csv").write_text("1,2\n")
    assert fingerprint.upload_digest(settings, elsewhere) != before


def test_synced_stamps_per_host_only_while_the_files_match(cube: Path) -> None:
    settings = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"}})
    job = Job(str(cube), str(cube / "workspace"))
    assert fingerprint.synced_stamps(settings, job, "d1") == {}
    fingerprint.remember_synced(settings, job, ["a", "b"], "d1", "s1")
    fingerprint.remember_synced(settings, job, ["c"], "d2", "s2")
    assert fingerprint.synced_stamps(settings, job, "d1") == {"a": "s1", "b": "s1"}
    assert fingerprint.synced_stamps(settings, job, "d2") == {"c": "s2"}
    fingerprint.forget_synced(settings, job, ["b"])
    assert fingerprint.synced_stamps(settings, job, "d1") == {"a": "s1"}
    # Another target (here: host) never sees these stamps.
    assert fingerprint.synced_stamps(dataclasses.replace(settings, host="h2"), job, "d1") == {}
    fingerprint.forget_synced(settings, job)
    assert fingerprint.synced_stamps(settings, job, "d1") == {}
    assert fingerprint.new_stamp() != fingerprint.new_stamp()


def test_links_empty_folders_and_modes_count_like_rsync_sees_them(cube: Path, tmp_path: Path) -> None:
    job = Job(str(cube), str(cube / "workspace"))
    seen = [fingerprint.upload_listing(job)]
    (cube / "data").mkdir()  # an empty folder: rsync -a creates it remotely
    seen.append(fingerprint.upload_listing(job))
    (cube / "data").chmod(0o700)
    seen.append(fingerprint.upload_listing(job))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (cube / "model").symlink_to(tmp_path / "a")  # a link to a folder: copied as a link
    seen.append(fingerprint.upload_listing(job))
    (cube / "model").unlink()
    (cube / "model").symlink_to(tmp_path / "b")
    seen.append(fingerprint.upload_listing(job))
    assert all(earlier != later for earlier, later in zip(seen, seen[1:])), seen
    assert seen[-1]["cube:model"] == f"l {tmp_path / 'b'}"


def test_group_vars_next_to_an_inventory_file_count(cube: Path, tmp_path: Path) -> None:
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.ini").write_text("[gpu]\nnode1\n")
    settings = parse_settings({"inventory": str(tmp_path / "inv" / "hosts.ini"), "hosts": "gpu",
                               "platform": "docker", "interpreter": {"type": "system"}})
    job = Job(str(cube), str(cube / "workspace"))
    before = fingerprint.digest(settings, job), fingerprint.upload_digest(settings, job)
    (tmp_path / "inv" / "group_vars").mkdir()
    (tmp_path / "inv" / "group_vars" / "gpu.yml").write_text("mlcube_ssh_excludes: [data/]\n")
    after = fingerprint.digest(settings, job), fingerprint.upload_digest(settings, job)
    assert before[0] != after[0] and before[1] != after[1]


def test_only_fetched_files_may_change_during_a_run(cube: Path) -> None:
    job = Job(str(cube), str(cube / "workspace"))
    before = fingerprint.upload_listing(job)
    (cube / "workspace" / "out").mkdir()
    (cube / "workspace" / "out" / "result.txt").write_text("fetched")
    after = fingerprint.upload_listing(job)
    assert fingerprint.changed_besides(before, after, ["out/result.txt"]) == []
    (cube / "mlcube.yaml").write_text("name: edited while the task ran\n")
    os.utime(cube / "mlcube.yaml", ns=(5, 5))
    edited = fingerprint.upload_listing(job)
    assert fingerprint.changed_besides(before, edited, ["out/result.txt"]) == ["cube:mlcube.yaml"]
    assert fingerprint.changed_besides(before, after, []) == ["workspace:out", "workspace:out/result.txt"]
