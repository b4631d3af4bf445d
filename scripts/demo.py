"""The mlcube-ssh-ansible demo: the real `mlcube` CLI runs the example cube over SSH and fetches the result.

Run it with `bash scripts/demo.sh` (which prepares the machine first), or, on a prepared machine, as root:

    .venv/bin/python scripts/demo.py [--keep]

What it does, with the same real parts as the integration tests (tests/hosts.py):

1. starts an OpenSSH server on 127.0.0.2 (its own config and host key in a temp dir) and a Linux user
   `mlcube-demo` that logs in with a fresh key and may use Docker: this is "the remote host";
2. copies examples/hello to a temp dir and writes an MLCube system settings file whose `ssh-ansible` platform
   points at that host (strict host key checking against a scanned known_hosts file);
3. runs, as a user would, `mlcube configure --platform=ssh-ansible` and `mlcube run --platform=ssh-ansible
   --task=hello`, streaming their output;
4. checks that the task's output file came back into the local workspace, and prints it.

The remote virtualenv (~mlcube-demo/.venvs/mlcube) and the Docker image are kept between runs, so the first
run is the slow one (it pip-installs MLCube remotely). The cube's remote copy and the temp dir are removed at
the end unless --keep is given. Exit status: 0 when the greeting came back, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402

from tests.hosts import Sshd, ensure_dockerd, example_cube, make_user, mlcube_settings, remote  # noqa: E402

ADDRESS = "127.0.0.2"
USER = "mlcube-demo"
PLATFORM = "ssh-ansible"


class DemoError(Exception):
    """A step of the demo failed; the message says which and what to look at."""


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def shown(path: Path | str) -> str:
    """A path as short as it can be: relative to the repository when inside it."""
    try:
        return str(Path(path).relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def run_step(title: str, argv: list[str], env: dict[str, str], timings: list[tuple[str, float]]) -> None:
    """Echo a command, run it with its output streaming to this terminal, time it; raise if it fails."""
    print(flush=True)
    say(title)
    print("$ " + shlex.join([shown(argv[0]), *argv[1:]]), flush=True)
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, check=False)
    seconds = time.monotonic() - started
    timings.append((shlex.join([Path(argv[0]).name, *argv[1:2]]), seconds))
    say(f"{title}: exit code {proc.returncode} after {seconds:.1f} s")
    if proc.returncode != 0:
        command = f"{Path(argv[0]).name} {argv[1]}"
        raise DemoError(f"`{command}` failed with exit code {proc.returncode} (output above)")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (cube, settings file) and the cube's copy on the remote host")
    options = parser.parse_args()

    if os.geteuid() != 0:
        say("FAILED: run as root (the demo starts an sshd and creates the user mlcube-demo)")
        return 1
    mlcube = Path(sys.executable).parent / "mlcube"
    if not mlcube.is_file():
        say(f"FAILED: {mlcube} is missing; run `bash scripts/setup-machine.sh` (or `bash scripts/demo.sh`)")
        return 1

    timings: list[tuple[str, float]] = []
    tmp = Path(tempfile.mkdtemp(prefix="mlcube-ssh-ansible-demo-"))
    sshd: Sshd | None = None
    host = None
    cube: Path | None = None
    ok = False
    try:
        ensure_dockerd()
        sshd = Sshd.start([ADDRESS], tmp / "sshd")
        host = sshd.host(ADDRESS, make_user(USER, tmp / "keys"))
        say(f"remote host: {USER}@{ADDRESS} port {sshd.port} (sshd log: {sshd.log_file})")

        cube = example_cube(tmp / "cubes")
        greeting = cube / "workspace" / "greeting.txt"
        greeting.unlink(missing_ok=True)  # whatever is there at the end came from the remote host
        expected = f"Hello, {(cube / 'workspace' / 'name.txt').read_text().strip()}!"
        say(f"cube: {cube}")

        settings_file = tmp / "mlcube-system-settings.yaml"
        settings_file.write_text(yaml.safe_dump(mlcube_settings(host), sort_keys=False))
        say(f"MLCube system settings ({settings_file}), platform `{PLATFORM}`:")
        platform = yaml.safe_load(settings_file.read_text())["platforms"][PLATFORM]
        print(yaml.safe_dump({"platforms": {PLATFORM: platform}}, sort_keys=False), end="", flush=True)

        env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
        env["MLCUBE_SYSTEM_SETTINGS"] = str(settings_file)
        env["PYTHONUNBUFFERED"] = "1"
        say(f"export MLCUBE_SYSTEM_SETTINGS={shlex.quote(str(settings_file))}")

        where = [f"--mlcube={cube}", f"--platform={PLATFORM}"]
        run_step("configure (remote Python env, upload, remote `mlcube configure`)",
                 [str(mlcube), "configure", *where], env, timings)
        run_step("run the task `hello` (upload changes, remote `mlcube run`, fetch the workspace)",
                 [str(mlcube), "run", *where, "--task=hello"], env, timings)

        print(flush=True)
        if not greeting.is_file():
            raise DemoError(f"`mlcube run` succeeded but {greeting} was not fetched")
        text = greeting.read_text()
        say(f"{shown(greeting)} (fetched from the remote workspace):")
        print(text, end="" if text.endswith("\n") else "\n", flush=True)
        if text.strip() != expected:
            raise DemoError(f"greeting.txt holds {text.strip()!r}, expected {expected!r}")
        ok = True
    except DemoError as error:
        say(f"FAILED: {error}")
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        say(f"FAILED while setting up the demo host: {error}")
    finally:
        if host is not None and cube is not None and not options.keep:
            from mlcube_ssh_ansible.render import remote_name

            name = remote_name(str(cube))
            root = f"{host.user.home}/mlcube"  # the remote_root that mlcube_settings() sets
            try:
                remote(host, "rm", "-rf", f"{root}/{name}", f"{root}/.mlcube-ssh-ansible/{name}", timeout=60)
            except subprocess.SubprocessError as error:
                say(f"could not remove the cube's remote copy {root}/{name}: {error}")
        if sshd is not None:
            sshd.stop()
        if options.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if timings:
        say("timings:")
        for command, seconds in timings:
            print(f"  {command:<20} {seconds:6.1f} s", flush=True)
    if ok:
        say(f"OK, fetched greeting.txt: {expected}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
