"""How each side's command runs and is measured: the `mlcube` CLI, the Python API, and baseline.sh."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator, Sequence

from benchmarks.config import BASELINE, BASELINE_PYTHON, MLCUBE, REQUIREMENTS, TOOL
from benchmarks.profiling import Profile, ProfilingReporter
from benchmarks.results import Result
from benchmarks.sampler import CpuMeter, TreeSampler, reap_adopted
from mlcube_ssh_ansible import workflow
from mlcube_ssh_ansible.errors import SshAnsibleError
from mlcube_ssh_ansible.render import Job
from mlcube_ssh_ansible.settings import Settings


def run_process(argv: Sequence[str], env: dict[str, str] | None = None, sample: bool = False,
                timeout: float = 900, cwd: Path | None = None) -> Result:
    reap_adopted()
    meter = CpuMeter().__enter__()
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd)
    sampler = TreeSampler(proc.pid) if sample else None
    if sampler:
        sampler.start()
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    seconds = time.monotonic() - start
    if sampler:
        sampler.stop()
    meter.__exit__()  # before reaping adopted masters that exited: their CPU belongs to earlier commands
    reap_adopted()
    text = output.decode(errors="replace")
    result = Result(seconds, proc.returncode == 0,
                    "" if proc.returncode == 0 else f"exit {proc.returncode}: " + " | ".join(text.splitlines()[-6:]),
                    cpu=meter.children, machine_cpu=meter.machine, lines=len(text.splitlines()))
    if sampler:
        result.peak_rss, result.peak_pss, result.peak_detail = sampler.peak_rss, sampler.peak_pss, sampler.peak_detail
    return result


def cli_env(settings_file: Path) -> dict[str, str]:
    """The environment of a user running the installed `mlcube` from a venv that is not activated."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
    env["MLCUBE_SYSTEM_SETTINGS"] = str(settings_file)
    return env


def ours_cli(command: str, cube: Path, settings_file: Path, task: str | None = None, sample: bool = False,
             env: dict[str, str] | None = None) -> Result:
    argv = [str(MLCUBE), command, f"--mlcube={cube}", "--platform=ssh-ansible"]
    if task:
        argv.append(f"--task={task}")
    return run_process(argv, env=cli_env(settings_file) | (env or {}), sample=sample)


def ours_tool(args: Sequence[str], settings_file: Path, sample: bool = False,
              env: dict[str, str] | None = None) -> Result:
    """Our own CLI (`mlcube-ssh-ansible ARGS`), e.g. `sweep` and `sweep-attach`, with the same environment."""
    return run_process([str(TOOL), *args], env=cli_env(settings_file) | (env or {}), sample=sample)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables of this process for the block (for in-process runs)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ours_api(command: str, settings: Settings, job: Job) -> Result:
    call = workflow.run if command == "run" else workflow.configure
    reap_adopted()
    with CpuMeter() as meter:
        reporter = ProfilingReporter()
        try:
            call(settings, job, reporter=reporter)
            ok, detail = True, ""
        except SshAnsibleError as error:
            ok, detail = False, str(error)
        total = time.monotonic() - reporter.t0
    reap_adopted()
    return Result(total, ok, detail, profile=Profile.of(reporter, total), cpu=meter.own + meter.children,
                  machine_cpu=meter.machine)


def baseline(command: str, hosts_file: Path, cube: Path, task: str | None = None, sample: bool = False,
             python: str = BASELINE_PYTHON) -> Result:
    env = dict(os.environ, BASELINE_PYTHON=python, BASELINE_REQUIREMENTS=REQUIREMENTS)
    argv = ["bash", str(BASELINE), command, str(hosts_file), str(cube)] + ([task] if task else [])
    return run_process(argv, env=env, sample=sample)


def must(result: Result, what: str) -> Result:
    if not result.ok:
        raise RuntimeError(f"{what} failed: {result.detail}")
    return result
