"""Render: Settings + Job -> the exact inventory and extra-vars Ansible gets (golden dicts)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from mlcube_ssh_ansible.render import DEFAULT_EXCLUDES, Job, remote_name, render
from mlcube_ssh_ansible.settings import parse_settings

SSH_ARGS = (
    "-o ControlMaster=auto -o ControlPersist=60s -o 'ControlPath=~/.ansible/cp/mlcube-TRUST-%C' "
    "-o ConnectTimeout=10 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o BatchMode=yes "
)


def trust_free(ssh_args: str) -> str:
    """The ssh args with the ControlPath's trust digest replaced by TRUST (checked on its own below)."""
    return re.sub(r"mlcube-[0-9a-f]{8}-%C", "mlcube-TRUST-%C", ssh_args)


def test_one_host_golden(tmp_path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("x")
    known = tmp_path / "known hosts"
    known.write_text("x")
    settings = parse_settings({
        "host": "gpu1.example.org", "port": 2222, "platform": "docker", "remote_root": "/srv/mlcube",
        "interpreter": {"type": "system", "python": "/usr/bin/python3", "requirements": "mlcube mlcube-docker"},
        "authentication": {"user": "alice", "identity_file": str(key)},
        "known_hosts": str(known), "compress": True, "excludes": ["data/raw/"],
    })
    job = Job(cube_root="/home/u/cubes/mnist", workspace="/home/u/cubes/mnist/workspace",
              tasks=("train",), task_args=("epochs=3",), run_options=("--gpus=all",))
    inventory, extravars = render(settings, job)
    inventory["all"]["vars"]["ansible_ssh_args"] = trust_free(inventory["all"]["vars"]["ansible_ssh_args"])
    assert inventory == {
        "all": {
            "vars": {
                "ansible_ssh_args": SSH_ARGS + f"-o StrictHostKeyChecking=yes -o 'UserKnownHostsFile=\"{known}\"' "
                "-o IdentitiesOnly=yes",
                "ansible_ssh_pipelining": True,
                "ansible_host_key_checking": True,
                "ansible_ssh_timeout": 10,
                "ansible_python_interpreter": "/usr/bin/python3",
                "mlcube_ssh_platform": "docker",
                "mlcube_ssh_remote_root": "/srv/mlcube",
                "mlcube_ssh_remote_group": "",
                "mlcube_ssh_secrets": [],
                "mlcube_ssh_interpreter_type": "system",
                "mlcube_ssh_python": "/usr/bin/python3",
                "mlcube_ssh_requirements": ["mlcube", "mlcube-docker"],
                "mlcube_ssh_venv_location": "~/.mlcube-ssh-ansible",
                "mlcube_ssh_venv_name": "venv",
                "mlcube_ssh_compress": True,
                "mlcube_ssh_verify_host": True,
                "mlcube_ssh_excludes": [*DEFAULT_EXCLUDES, "data/raw/"],
                "mlcube_ssh_reconnect_timeout": 600,
                "mlcube_ssh_platform_settings": {},
                "ansible_user": "alice",
                "ansible_ssh_private_key_file": str(key),
            },
            "hosts": {"gpu1.example.org": {"ansible_host": "gpu1.example.org", "ansible_port": 2222}},
        }
    }
    assert extravars == {
        "mlcube_ssh_hosts": "gpu1.example.org",
        "mlcube_ssh_local_root": "/home/u/cubes/mnist",
        "mlcube_ssh_local_workspace": "/home/u/cubes/mnist/workspace",
        "mlcube_ssh_workspace_in_cube": True,
            "mlcube_ssh_workspace_key": "",
        "mlcube_ssh_remote_name": remote_name("/home/u/cubes/mnist"),
        "mlcube_ssh_tasks": ["train"],
        "mlcube_ssh_task_args": ["epochs=3"],
        "mlcube_ssh_run_options": ["--gpus=all"],
        "mlcube_ssh_serial": 0,
        "mlcube_ssh_max_fail_percentage": 100,
        "mlcube_ssh_run_id": "",
        "mlcube_ssh_detach": False,
        "mlcube_ssh_gpus_needed": -1,
        "mlcube_ssh_queue": False,
        "mlcube_ssh_run_retries": 0,
    }
    # After the shlex split that Ansible's ssh plugin (and rsync, for synchronize) does, ssh gets the path in
    # double quotes: unquoted, OpenSSH reads `.../known hosts` as the two files `.../known` and `hosts`.
    inventory, _ = render(settings, job)
    assert f'UserKnownHostsFile="{known}"' in shlex.split(inventory["all"]["vars"]["ansible_ssh_args"])


def test_known_hosts_paths_reach_ssh_as_one_file(tmp_path) -> None:
    """`%` would be an ssh token; quotes, backslashes and other whitespace can't be carried: refused."""
    import pytest

    from mlcube_ssh_ansible.errors import SettingsError
    from mlcube_ssh_ansible.render import ssh_args

    known = tmp_path / "100% sure"
    known.write_text("x")
    settings = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"},
                               "known_hosts": str(known)})
    assert f'UserKnownHostsFile="{tmp_path}/100%% sure"' in ssh_args(settings)
    for name in ("it's", 'say "hi"', "back\\slash", "tab\there", "new\nline"):
        bad = tmp_path / name
        bad.write_text("x")
        with pytest.raises(SettingsError, match="known_hosts") as caught:
            parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"},
                            "known_hosts": str(bad)})
        assert "\n" not in str(caught.value)


def test_inventory_mode_only_fills_defaults(tmp_path) -> None:
    inventory_file = tmp_path / "hosts.yml"
    inventory_file.write_text("all: {}\n")
    settings = parse_settings({"inventory": str(inventory_file), "hosts": "gpu", "platform": "docker",
                               "interpreter": {"type": "system"}, "port": 2200,
                               "host_key_checking": "accept-new"})
    inventory, extravars = render(settings, Job(cube_root="/c", workspace="/elsewhere/ws", tasks=("a", "b")))
    assert "hosts" not in inventory["all"]
    assert inventory["all"]["vars"]["ansible_port"] == 2200
    assert "ansible_user" not in inventory["all"]["vars"]
    assert "StrictHostKeyChecking=accept-new" in inventory["all"]["vars"]["ansible_ssh_args"]
    assert extravars["mlcube_ssh_hosts"] == "gpu"
    assert extravars["mlcube_ssh_workspace_in_cube"] is False
    assert extravars["mlcube_ssh_workspace_key"] == remote_name("/elsewhere/ws")  # a remote workspace of its own
    assert extravars["mlcube_ssh_tasks"] == ["a", "b"]


def test_host_key_checking_off_is_explicit() -> None:
    settings = parse_settings({"host": "h", "platform": "docker", "host_key_checking": "off",
                               "interpreter": {"type": "system"}})
    inventory, _ = render(settings, Job(cube_root="/c", workspace="/c/workspace"))
    args = inventory["all"]["vars"]["ansible_ssh_args"]
    assert "StrictHostKeyChecking=no" in args and "UserKnownHostsFile=/dev/null" in args
    assert inventory["all"]["vars"]["mlcube_ssh_verify_host"] is False


def test_remote_name_is_shell_safe_and_distinct() -> None:
    hostile = remote_name("/tmp/a b;$(touch x)`id`'\"&")
    assert hostile.replace("-", "").replace("_", "").replace(".", "").isalnum()
    assert remote_name("/a/mnist") != remote_name("/b/mnist")
    assert remote_name("/a/mnist").startswith("mnist-")
    assert remote_name("/a/...") .startswith("cube-")


def test_task_arguments_that_a_remote_shell_would_interpret_are_refused() -> None:
    import pytest

    from mlcube_ssh_ansible.errors import SettingsError
    from mlcube_ssh_ansible.render import check_job

    ok = Job(cube_root="/c", workspace="/c/workspace", tasks=("train",), task_args=("data=in/x.csv",),
             run_options=("--gpus=all", "--memory=8g"))
    assert check_job(ok) is ok
    for bad in ("data=a b", "data=$(id)", "data=`id`", "data=x;rm", "data=a&b", "data='q'", 'data="q"'):
        with pytest.raises(SettingsError, match="task argument 'data'") as caught:
            check_job(Job(cube_root="/c", workspace="/c/ws", tasks=("t",), task_args=(bad,)))
        assert "\n" not in str(caught.value)
    with pytest.raises(SettingsError, match="task 'a;b'"):
        check_job(Job(cube_root="/c", workspace="/c/ws", tasks=("a;b",)))
    with pytest.raises(SettingsError, match="option '--gpus'"):
        check_job(Job(cube_root="/c", workspace="/c/ws", tasks=("t",), run_options=("--gpus=$(id)",)))
    with pytest.raises(SettingsError, match="task argument 'data'.*name=value"):
        check_job(Job(cube_root="/c", workspace="/c/ws", tasks=("t",), task_args=("data",)))
    # A run id names a folder under the host's runs/: never one above it (`status --run ..`, `cancel --run ../x`).
    assert check_job(Job(cube_root="/c", workspace="/c/ws", run_id="20261204-130102-1a2b3c")).run_id
    for bad in ("..", "../fetched", "a/b", ".hidden", "-x", "a b"):
        with pytest.raises(SettingsError, match="option 'run'") as caught:
            check_job(Job(cube_root="/c", workspace="/c/ws", run_id=bad))
        assert repr(bad) in str(caught.value)


def test_many_files_warn_before_upload(tmp_path) -> None:
    from mlcube_ssh_ansible.upload import MANY_FILES, too_many_files_warning

    (tmp_path / ".git").mkdir()
    for index in range(MANY_FILES):
        (tmp_path / ".git" / str(index)).touch()  # .git is never uploaded: not counted
    assert too_many_files_warning(str(tmp_path)) is None
    for index in range(MANY_FILES + 1):
        (tmp_path / str(index)).touch()
    warning = too_many_files_warning(str(tmp_path))
    assert warning is not None and ".mlcubeignore" in warning and "\n" not in warning


def test_control_path_changes_with_whom_we_trust(tmp_path) -> None:
    """A master opened under one known_hosts/key must not serve a command that trusts differently."""
    known = tmp_path / "known_hosts"
    known.write_text("x")

    def control_path(**extra: object) -> str:
        settings = parse_settings({"host": "h", "platform": "docker", "interpreter": {"type": "system"}, **extra})
        args = shlex.split(render(settings, Job(cube_root="/c", workspace="/c/workspace"))[0]["all"]["vars"]
                           ["ansible_ssh_args"])
        return next(arg for arg in args if arg.startswith("ControlPath="))

    assert control_path() == control_path()
    assert control_path() != control_path(known_hosts=str(known))
    assert control_path() != control_path(host_key_checking="accept-new")
    assert len(control_path(known_hosts=str(known))) < 60  # ssh's socket path limit is 108 bytes


def test_shared_inputs_are_the_tasks_inputs_that_no_task_outputs(tmp_path: Path) -> None:
    """A run in a workspace of its own gets the inputs MLCube would copy from the cube's workspace, linked."""
    from mlcube_ssh_ansible.workflow import shared_inputs

    (tmp_path / "mlcube.yaml").write_text(
        "tasks:\n"
        "  prep: {parameters: {inputs: {raw: {type: directory, default: raw/}}, outputs: {data: data}}}\n"
        "  train: {parameters: {inputs: {data: {type: directory, default: data}, conf: conf.yaml,\n"
        "                                 abs: /etc/x, up: ../x, env: '${X}/y'}}}\n")
    own = Job(str(tmp_path), str(tmp_path / "elsewhere"), tasks=("train",))
    assert shared_inputs(own) == ["conf.yaml"]  # data is prep's output; absolute, .. and ${} paths stay out
    assert shared_inputs(Job(str(tmp_path), str(tmp_path / "elsewhere"), tasks=("prep", "train"))) == \
        ["conf.yaml", "raw"]
    assert shared_inputs(Job(str(tmp_path), str(tmp_path / "workspace"), tasks=("train",))) == []
