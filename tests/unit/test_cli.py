"""The `mlcube-ssh-ansible` command line without hosts: argument parsing, the effective MLCube config,
Jobs, check-mode summaries, render's files and commands, doctor's verdicts. The workflow is a recorder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from mlcube_ssh_ansible import assets, cli, doctor, render, rsync_items, workflow
from mlcube_ssh_ansible.cli import render_files
from mlcube_ssh_ansible.errors import HostFailure
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.settings import forks_for, parse_settings
from tests.hosts import EXAMPLES_DIR

ONE_TASK_CUBE = """\
name: solo
docker: {image: solo:1}
tasks:
  only:
    parameters: {outputs: {out: {type: file, default: out.txt}}}
"""


@pytest.fixture
def cube(tmp_path: Path) -> Path:
    """The hello example's mlcube.yaml (tasks hello, fail, sleep) in a folder of its own."""
    folder = tmp_path / "cube"
    folder.mkdir()
    shutil.copy(EXAMPLES_DIR / "hello" / "mlcube.yaml", folder / "mlcube.yaml")
    return folder


@pytest.fixture
def platform_section(tmp_path: Path) -> dict[str, Any]:
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key")
    known = tmp_path / "known_hosts"
    known.write_text("")
    return {
        "runner": "ssh-ansible", "host": "127.0.0.2", "port": 2222, "platform": "docker",
        "known_hosts": str(known),
        "interpreter": {"type": "virtualenv", "requirements": "mlcube mlcube-docker"},
        "authentication": {"user": "alice", "identity_file": str(key)},
    }


@pytest.fixture
def system_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    platform_section: dict[str, Any]) -> Path:
    path = tmp_path / "mlcube-system-settings.yaml"
    path.write_text(yaml.safe_dump({
        "runners": {"ssh-ansible": {"pkg": "mlcube_ssh_ansible"}},
        "platforms": {"ssh-ansible": platform_section},
        "storage": {},
    }))
    monkeypatch.setenv("MLCUBE_SYSTEM_SETTINGS", str(path))
    return path


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, system_settings: Path) -> list[dict[str, Any]]:
    """Every workflow.configure/run call the CLI makes, instead of running Ansible."""
    recorded: list[dict[str, Any]] = []

    def recorder(command: str) -> Any:
        def call(settings: Any, job: Job, **kwargs: Any) -> None:
            recorded.append({"command": command, "settings": settings, "job": job, **kwargs})
        return call

    monkeypatch.setattr(workflow, "configure", recorder("configure"))
    monkeypatch.setattr(workflow, "run", recorder("run"))
    return recorded


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.cli, list(args), catch_exceptions=False)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlcube-ssh-ansible: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------ run / configure


def test_run_builds_one_job_with_tasks_arguments_options_and_overrides(
        cube: Path, calls: list[dict[str, Any]]) -> None:
    result = invoke("run", f"--mlcube={cube}", "--task=hello,fail", "name_file=other.txt", "--gpus=all",
                    "--memory", "4g", "-P", "runner.port=2200", "-Prunner.connect_timeout=7")
    assert result.exit_code == 0, result.output
    [call] = calls
    assert call["command"] == "run"
    assert call["job"] == Job(cube_root=str(cube), workspace=str(cube / "workspace"), tasks=("hello", "fail"),
                              task_args=("name_file=other.txt",), run_options=("--gpus=all", "--memory=4g"),
                              run_id=call["job"].run_id)
    assert call["job"].run_id  # a fresh one, printed by --detach
    assert call["settings"].port == 2200 and call["settings"].connect_timeout == 7
    assert call["verbosity"] == 0


def test_run_options_follow_the_plugins_order(cube: Path, calls: list[dict[str, Any]]) -> None:
    result = invoke("run", f"--mlcube={cube}", "--task=hello", "--cpu=0-3", "--network=host", "--security=x",
                    "--gpus=all", "--memory=1g")
    assert result.exit_code == 0, result.output
    assert calls[0]["job"].run_options == ("--network=host", "--security=x", "--gpus=all", "--memory=1g",
                                           "--cpu=0-3")


def test_configure_takes_workspace_and_overrides(cube: Path, tmp_path: Path,
                                                 calls: list[dict[str, Any]]) -> None:
    workspace = tmp_path / "elsewhere"
    result = invoke("configure", "--mlcube", str(cube / "mlcube.yaml"), "--workspace", str(workspace),
                    "-p", "runner.host=127.0.0.3", "-Prunner.interpreter.type=system")
    assert result.exit_code == 0, result.output
    [call] = calls
    assert call["command"] == "configure" and "check" not in call
    assert call["job"] == Job(cube_root=str(cube), workspace=str(workspace))
    assert call["settings"].host == "127.0.0.3"
    assert call["settings"].interpreter.type == "system"


def test_mlcube_defaults_to_the_current_directory(cube: Path, calls: list[dict[str, Any]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(cube)
    assert invoke("run", "--task=sleep").exit_code == 0
    assert calls[0]["job"].cube_root == str(cube)


def test_the_only_task_is_the_default(tmp_path: Path, calls: list[dict[str, Any]]) -> None:
    (tmp_path / "solo").mkdir()
    (tmp_path / "solo" / "mlcube.yaml").write_text(ONE_TASK_CUBE)
    result = invoke("run", f"--mlcube={tmp_path / 'solo'}")
    assert result.exit_code == 0, result.output
    assert calls[0]["job"].tasks == ("only",)


def test_a_task_is_needed_when_the_cube_has_several(cube: Path, calls: list[dict[str, Any]]) -> None:
    assert_one_line_error(invoke("run", f"--mlcube={cube}"), 2, "--task", "hello, fail, sleep")
    assert calls == []


def test_unknown_tasks_are_named_with_the_cubes_tasks(cube: Path, calls: list[dict[str, Any]]) -> None:
    assert_one_line_error(invoke("run", f"--mlcube={cube}", "--task=hello,train"), 2,
                          "train", "hello, fail, sleep")
    assert calls == []


@pytest.mark.parametrize("args, fragment", [
    (("--task=hello", "oops"), "name=value"),
    (("--task=hello", "-P", "runner.port"), "key=value"),
    (("--task=hello", "-Prunner.port=abc"), "setting 'port'"),
    (("--task=hello", "-Prunner.colour=blue"), "setting 'colour'"),
    (("--task=hello", "--platform=nope"), "no platform 'nope'"),
    (("--task=hello,",), "empty task name"),
])
def test_command_line_and_settings_errors_are_one_line_exit_2(cube: Path, calls: list[dict[str, Any]],
                                                             args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(invoke("run", f"--mlcube={cube}", *args), 2, fragment)
    assert calls == []


def test_missing_cube_is_one_line(tmp_path: Path, calls: list[dict[str, Any]]) -> None:
    assert_one_line_error(invoke("configure", f"--mlcube={tmp_path / 'nowhere'}"), 2, "mlcube.yaml")


def test_a_platform_of_another_runner_is_refused(cube: Path, calls: list[dict[str, Any]],
                                                 system_settings: Path) -> None:
    content = yaml.safe_load(system_settings.read_text())
    content["runners"]["docker"] = {"pkg": "mlcube_docker"}
    content["platforms"]["docker"] = {"runner": "docker", "image": "x"}
    system_settings.write_text(yaml.safe_dump(content))
    result = invoke("configure", f"--mlcube={cube}", "--platform=docker")
    assert_one_line_error(result, 2, "uses runner 'docker'")


def test_a_registered_platform_loads_without_other_runners_or_unused_commands(cube: Path,
                                                                            system_settings: Path) -> None:
    """`run` imports neither the other installed runners (mlcube_docker brings setuptools: ~0.1 s of CPU), which
    only registering a new runner needs, nor the modules of commands it does not run (doctor, sweeps, render)."""
    import subprocess
    import sys

    script = ("import sys; from mlcube_ssh_ansible.cli import config; "
              f"loaded = config.load({str(cube)!r}, 'ssh-ansible'); "
              "print(loaded.settings.host, *sorted(name for name in sys.modules if name.split('.')[0] in "
              "('mlcube_docker', 'distutils', 'setuptools') or name in ('mlcube_ssh_ansible.doctor', "
              "'mlcube_ssh_ansible.sweep_workflow', 'mlcube_ssh_ansible.cli.render_files')))")
    ran = subprocess.run([sys.executable, "-c", "import mlcube_ssh_ansible.cli; " + script],
                         capture_output=True, text=True, check=False, env={**os.environ})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["127.0.0.2"]


def test_an_unregistered_runner_is_registered_as_mlcube_does(cube: Path, calls: list[dict[str, Any]],
                                                              system_settings: Path,
                                                              platform_section: dict[str, Any]) -> None:
    """A settings file without this runner gets it (and the runner's default platform) as `mlcube` would add it;
    the platform section already there is kept."""
    system_settings.write_text(yaml.safe_dump({"platforms": {"ssh-ansible": platform_section}}))
    result = invoke("run", f"--mlcube={cube}", "--task=hello")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(system_settings.read_text())["runners"]["ssh-ansible"] == {"pkg": "mlcube_ssh_ansible"}
    assert [call["settings"].host for call in calls] == ["127.0.0.2"]


def test_host_failures_keep_their_exit_code(cube: Path, system_settings: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: Any, **__: Any) -> None:
        raise HostFailure("run failed on 1 host(s): 127.0.0.2 at remote run: boom\nsecond line",
                          {"127.0.0.2": ("remote run", "boom")}, exit_code=3)

    monkeypatch.setattr(workflow, "run", fail)
    result = invoke("run", f"--mlcube={cube}", "--task=fail")
    assert_one_line_error(result, 3, "127.0.0.2 at remote run: boom")


@pytest.mark.parametrize("args, verbosity", [
    ((), 0), (("-v",), 1), (("-vvv",), 3), (("--log-level", "info"), 1), (("--log-level=debug",), 3),
])
def test_verbosity_from_log_level_and_v(cube: Path, calls: list[dict[str, Any]], args: tuple[str, ...],
                                        verbosity: int) -> None:
    assert invoke("run", f"--mlcube={cube}", "--task=hello", *args).exit_code == 0
    assert invoke(*args, "configure", f"--mlcube={cube}").exit_code == 0  # on the group too
    assert [call["verbosity"] for call in calls] == [verbosity, verbosity]


def test_settings_are_validated_by_mlcubes_own_config_path(cube: Path, calls: list[dict[str, Any]],
                                                           system_settings: Path) -> None:
    """MLCube merges the runner defaults into the platform section (e.g. remote_root), as for `mlcube run`."""
    assert invoke("configure", f"--mlcube={cube}").exit_code == 0
    assert calls[0]["settings"].remote_root == "~/mlcube"
    # ...and `mlcube` gets its one-line exit again afterwards: the CLI makes validate raise only while loading.
    from mlcube_ssh_ansible import runner
    assert runner.Config.exit_on_error is True
    broken = yaml.safe_load(system_settings.read_text())
    broken["platforms"]["ssh-ansible"]["port"] = "twenty-two"
    system_settings.write_text(yaml.safe_dump(broken))
    assert invoke("configure", f"--mlcube={cube}").exit_code == 2
    assert runner.Config.exit_on_error is True  # also after a settings error


# ---------------------------------------------------------------------------------------- configure --check


def ok_event(host: str, role: str, task: str, res: dict[str, Any]) -> dict[str, Any]:
    return {"event": "runner_on_ok", "event_data": {"host": host, "role": role, "task": task, "res": res}}


def test_check_lists_files_packages_and_configure(cube: Path, system_settings: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def configure(settings: Any, job: Job, *, reporter: Any = None, check: bool = False, **_: Any) -> None:
        seen["check"] = check
        for event in [
            ok_event("h1", "mlcube_ssh_python_env", "Note what is missing",
                     {"ansible_facts": {"_mlcube_ssh_python_env_missing": ["mlcube==0.0.9"]}}),
            # The cube's and an outside workspace's transfers, one task (mlcube.ssh.synchronize's `also`).
            ok_event("h1", "mlcube_ssh_upload", "Upload the cube and the workspace at once", {
                "changed": True,
                "stdout_lines": ["created directory /r/x", "cd+++++++++ ./", "<f+++++++++ mlcube.yaml",
                                 "<f..t...... workspace/name.txt", "*deleting   old.txt",
                                 ".d..t...... build/", "cL+++++++++ link -> target", "<f+++++++++ data.csv"],
                "invocation": {"module_args": {"dest": "u@h1:/r/x/"}},
                "transfers": [
                    {"changed": True,
                     "stdout_lines": ["created directory /r/x", "cd+++++++++ ./", "<f+++++++++ mlcube.yaml",
                                      "<f..t...... workspace/name.txt", "*deleting   old.txt",
                                      ".d..t...... build/", "cL+++++++++ link -> target"],
                     "invocation": {"module_args": {"dest": "u@h1:/r/x/"}}},
                    {"changed": True, "stdout_lines": ["<f+++++++++ data.csv"],
                     "invocation": {"module_args": {"dest": "u@h1:/r/x/workspace/"}}}]}),
            ok_event("h1", "mlcube_ssh_remote_configure", "Fingerprint", {"matched": True}),
            ok_event("h2", "mlcube_ssh_python_env", "Note what is missing",
                     {"ansible_facts": {"_mlcube_ssh_python_env_missing": []}}),
            # No local workspace: the cube's transfer only.
            ok_event("h2", "mlcube_ssh_upload", "Upload the cube and the workspace at once", {"stdout_lines": []}),
        ]:
            reporter(event)

    monkeypatch.setattr(workflow, "configure", configure)
    result = invoke("configure", f"--mlcube={cube}", "--check")
    assert result.exit_code == 0, result.output
    assert seen["check"] is True
    assert result.stdout.splitlines() == [
        "h1: would upload 4 file(s):",
        "  mlcube.yaml",
        "  workspace/name.txt",
        "  link",
        "  workspace/data.csv",
        "h1: would delete (not in the local cube) 1 file(s):",
        "  old.txt",
        "h1: would install 1 package(s): mlcube==0.0.9",
        "h1: would run `mlcube configure` (the cube or its settings changed)",
        "h2: no file to upload",
        "h2: no package to install",
        "configure --check: nothing was changed on any host",
    ]


def test_itemized_changes_keep_files_and_deletions_only() -> None:
    changes = rsync_items.parse(
        ["sending incremental file list", "cd+++++++++ sub/", "<f.st...... sub/a b.txt", ">f+++++++++ pulled",
         "*deleting   gone/", "*deleting   gone/x", "hf+++++++++ hard => a", "cL+++++++++ ln -> t", 3],
        prefix="p/")
    assert changes.sent == ["p/sub/a b.txt", "p/hard => a", "p/ln"]  # ">f" is a pull: never part of an upload
    assert changes.received == ["p/pulled"]
    assert changes.deleted == ["p/gone/", "p/gone/x"]
    assert changes.files_moved == ["p/sub/a b.txt", "p/pulled"]


# --------------------------------------------------------------------------------------------------- render


def test_render_writes_what_the_workflow_would_run(cube: Path, tmp_path: Path, system_settings: Path,
                                                   platform_section: dict[str, Any]) -> None:
    out = tmp_path / "rendered"
    result = invoke("render", f"--mlcube={cube}", "--task=hello", "name_file=n.txt", "--gpus=all",
                    f"--out={out}")
    assert result.exit_code == 0, result.output
    settings = parse_settings({**platform_section, "remote_root": "~/mlcube"})
    job = Job(str(cube), str(cube / "workspace"), ("hello",), ("name_file=n.txt",), ("--gpus=all",))
    inventory, extravars = render.render(settings, job)
    extravars["mlcube_ssh_exclude_from"] = ""  # the cube is not in a git work tree
    extravars["mlcube_ssh_shared_inputs"] = []  # the cube's own workspace: nothing to share
    extravars["mlcube_ssh_pip_wheel"] = str(assets.pip_wheel())  # configure.yml seeds new virtualenvs from it
    assert yaml.safe_load((out / "inventory.yml").read_text()) == inventory
    assert yaml.safe_load((out / "extravars.yml").read_text()) == extravars
    root = Path(assets.__file__).resolve().parent.parent
    playbook = str(Path(assets.__file__).resolve().parent.parent / ".venv" / "bin" / "ansible-playbook")
    assert f"cd {root} && " in result.stdout
    for name in ("configure", "run"):
        forks = forks_for(settings, name)
        assert (f"-i {out}/inventory.yml mlcube.ssh.{name} -e @{out}/extravars.yml --forks {forks}"
                in result.stdout), result.stdout
    assert playbook in result.stdout or "ansible-playbook -i" in result.stdout


def test_render_without_a_task_renders_configure_only(cube: Path, tmp_path: Path,
                                                      system_settings: Path) -> None:
    result = invoke("render", f"--mlcube={cube}", f"--out={tmp_path / 'r'}")
    assert result.exit_code == 0, result.output
    assert "mlcube.ssh.configure" in result.stdout and "mlcube.ssh.run" not in result.stdout
    assert "give --task" in result.stdout and "hello, fail, sleep" in result.stdout
    assert yaml.safe_load((tmp_path / "r" / "extravars.yml").read_text())["mlcube_ssh_tasks"] == []


def test_render_names_the_users_inventory_and_keeps_passwords_out(
        cube: Path, tmp_path: Path, system_settings: Path, platform_section: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = tmp_path / "hosts.yml"
    theirs.write_text("all: {hosts: {gpu1: {}}}\n")
    section = {**platform_section, "host": None, "inventory": str(theirs), "hosts": "all",
               "authentication": {**platform_section["authentication"], "password_env": "CLI_TEST_PW"}}
    system_settings.write_text(yaml.safe_dump({"runners": {"ssh-ansible": {"pkg": "mlcube_ssh_ansible"}},
                                               "platforms": {"ssh-ansible": section}, "storage": {}}))
    monkeypatch.setenv("CLI_TEST_PW", "s3cret-value")
    out = tmp_path / "r"
    result = invoke("render", f"--mlcube={cube}", "--task=hello", f"--out={out}")
    assert result.exit_code == 0, result.output
    assert f"-i {out}/inventory.yml -i {theirs} mlcube.ssh.run" in result.stdout
    assert "--ask-pass" in result.stdout
    for name in ("inventory.yml", "extravars.yml"):
        assert "s3cret" not in (out / name).read_text()


def test_without_secrets_drops_password_like_keys() -> None:
    dropped: list[str] = []
    inventory = {"all": {"vars": {"ansible_password": "x", "ansible_ssh_pass": "y", "ansible_user": "u",
                                  "nested": [{"token": "t", "k": 1}]}}}
    cleaned = render_files.without_secrets(inventory, dropped)
    assert cleaned == {"all": {"vars": {"ansible_user": "u", "nested": [{"k": 1}]}}}
    assert sorted(dropped) == ["ansible_password", "ansible_ssh_pass", "token"]


def test_console_script_is_declared() -> None:
    pyproject = (Path(assets.__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert 'mlcube-ssh-ansible = "mlcube_ssh_ansible.cli:main"' in pyproject
    assert callable(cli.main)


# --------------------------------------------------------------------------------------------------- doctor


def test_doctor_reports_a_settings_error_as_a_failed_check(cube: Path, system_settings: Path) -> None:
    result = invoke("doctor", f"--mlcube={cube}", "-Prunner.port=0")
    assert result.exit_code == 2, result.output
    assert any(line.startswith("FAIL settings: setting 'port'") for line in result.stdout.splitlines())
    assert result.stderr.strip().startswith("mlcube-ssh-ansible: doctor: 1 of ")
    assert "settings" in result.stderr


@pytest.fixture
def settings(platform_section: dict[str, Any]) -> Any:
    return parse_settings(platform_section)


@pytest.mark.parametrize("message, names, fragment", [
    ("Task failed: Failed to connect to the host via ssh: No ED25519 host key is known for [h]:2222 and you "
     "have requested strict checking.\r\nHost key verification failed.", ["reachable", "host key not known"],
     "ssh-keyscan -p 2222 10.0.0.1 >> "),
    ("Failed to connect to the host via ssh: @@@@\r\n@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\r\n"
     "Host key verification failed.", ["reachable", "host key"], "ssh-keygen -R"),
    ("Task failed: Failed to connect to the host via ssh: ssh: connect to host 10.0.0.1 port 2222: "
     "Connection refused", ["reachable"], "Connection refused"),
    ("Failed to connect to the host via ssh: ssh: connect to host 10.0.0.1 port 2222: Connection timed out",
     ["reachable"], "connect_timeout (10 s)"),
    ("Failed to connect to the host via ssh: alice@10.0.0.1: Permission denied (publickey).",
     ["reachable", "login"], "authorized_keys"),
])
def test_unreachable_hosts_say_why_and_what_to_do(settings: Any, message: str, names: list[str],
                                                  fragment: str) -> None:
    checks = doctor.unreachable_checks("h", message, ("10.0.0.1", "2222"), settings)
    assert [check.name for check in checks] == names
    assert [check.ok for check in checks] == [True] * (len(names) - 1) + [False]
    assert fragment in checks[-1].line()
    assert checks[-1].line().startswith("FAIL h: ")


def test_host_key_line_reads_as_a_command(settings: Any) -> None:
    [_, check] = doctor.unreachable_checks(
        "h", "Host key verification failed.", ("10.0.0.1", "2222"), settings)
    assert check.line().startswith(f"FAIL h: host key not known: ssh-keyscan -p 2222 10.0.0.1 >> "
                                   f"{settings.known_hosts}")


def test_doctor_makes_fresh_logins(settings: Any) -> None:
    inventory = doctor.fresh_connections(render.render_inventory(settings))
    args = inventory["all"]["vars"]["ansible_ssh_args"]
    assert "ControlPath=none" in args and "ControlMaster=no" in args and "ControlPersist" not in args
    assert "StrictHostKeyChecking=yes" in args and inventory["all"]["hosts"]


def test_verdict_names_every_failing_host_and_check() -> None:
    checks = [doctor.Check("rsync", True, "x"), doctor.Check("reachable", False, "refused", host="h1"),
              doctor.Check("remote platform", False, "denied", host="h2")]
    with pytest.raises(doctor.DoctorFailed) as failed:
        doctor.verdict(checks)
    assert str(failed.value) == "doctor: 2 of 3 checks failed: h1 reachable; h2 remote platform"
    assert failed.value.exit_code == 1
    assert doctor.verdict(checks[:1]) == "doctor: all 1 checks passed"


def test_controller_checks_pass_here() -> None:
    checks = doctor.controller_checks()
    assert [check.name for check in checks] == ["ansible-core", "ansible.posix", "rsync", "ssh"]
    assert all(check.ok for check in checks), [check.line() for check in checks]
    assert os.path.isabs(checks[2].detail.split()[0])


PROBE_PLAYBOOK = """\
- hosts: all
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "ROOT={{ mlcube_ssh_local_root }} ARGS={{ ansible_ssh_args }} KEY={{ ansible_ssh_private_key_file }}"
"""


def test_rendered_files_keep_template_syntax_as_data(tmp_path: Path, system_settings: Path,
                                                     platform_section: dict[str, Any]) -> None:
    """Real ansible-playbook on the rendered files: a folder named like a template never runs anything."""
    import subprocess

    from mlcube_ssh_ansible import assets

    hostile = "x{{ lookup('pipe','touch ran') }}"
    cube = tmp_path / hostile
    cube.mkdir()
    shutil.copy(EXAMPLES_DIR / "hello" / "mlcube.yaml", cube / "mlcube.yaml")
    secrets_dir = tmp_path / "k{{ lookup('pipe','touch ran') }}"
    secrets_dir.mkdir()
    (secrets_dir / "id").write_text("not a key")
    known_dir = tmp_path / "h{{ 7 * 7 }}"  # known_hosts refuses quotes: templating would show as 49
    known_dir.mkdir()
    (known_dir / "known_hosts").write_text("")
    section = {**platform_section, "known_hosts": str(known_dir / "known_hosts"),
               "authentication": {"user": "alice", "identity_file": str(secrets_dir / "id")}}
    system_settings.write_text(yaml.safe_dump({"runners": {"ssh-ansible": {"pkg": "mlcube_ssh_ansible"}},
                                               "platforms": {"ssh-ansible": section}, "storage": {}}))
    out = tmp_path / "out"
    result = invoke("render", f"--mlcube={cube}", "--task=hello", f"--out={out}")
    assert result.exit_code == 0, result.output
    probe = tmp_path / "probe.yml"  # the pipe lookup runs in the playbook's folder: `ran` would land here
    probe.write_text(PROBE_PLAYBOOK)
    ran = subprocess.run([str(Path(assets.ansible_bin_dir(), "ansible-playbook")), "-i", str(out / "inventory.yml"),
                          str(probe), "-e", f"@{out / 'extravars.yml'}"],
                         capture_output=True, text=True, env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert not (tmp_path / "ran").exists(), "a rendered value was templated: the pipe lookup ran"
    assert f"ROOT={cube}" in ran.stdout and f"KEY={secrets_dir / 'id'}" in ran.stdout, ran.stdout
    assert f"{known_dir}/known_hosts" in ran.stdout and "h49" not in ran.stdout, ran.stdout


def test_rendered_header_cannot_inject_yaml(tmp_path: Path, system_settings: Path) -> None:
    """The comment naming the cube stays one comment line, whatever the folder is called."""
    from ansible.parsing.yaml.loader import AnsibleLoader

    cube = tmp_path / "c\nmlcube_ssh_injected: 1\n#"
    cube.mkdir()
    shutil.copy(EXAMPLES_DIR / "hello" / "mlcube.yaml", cube / "mlcube.yaml")
    out = tmp_path / "out"
    result = invoke("render", f"--mlcube={cube}", "--task=hello", f"--out={out}")
    assert result.exit_code == 0, result.output
    extravars = AnsibleLoader((out / "extravars.yml").read_text()).get_single_data()
    inventory = AnsibleLoader((out / "inventory.yml").read_text()).get_single_data()
    assert "mlcube_ssh_injected" not in extravars and "mlcube_ssh_injected" not in inventory
    assert extravars["mlcube_ssh_local_root"] == str(cube)
