"""The click commands: each parses its options, loads the configuration, calls the workflow and prints."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import click

from .. import __version__, workflow
from ..errors import Interrupted, SshAnsibleError
from ..render import Job
from ..report import Reporter
from ..settings import RUNNER_NAME, Settings
from .config import PROG, RUN_OPTIONS, CommandLineError, load, parse_params, parse_task_args, run_options, select_tasks

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
# --log-level info shows Ansible's own output; debug adds ssh's account of each connection (-vvv).
LOG_VERBOSITY = {"info": 1, "debug": 3}


class _Cli(click.Group):
    """Reports every SshAnsibleError once, as one line on stderr, and exits with its code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SshAnsibleError as error:
            click.echo(f"{PROG}: {' '.join(str(error).split())}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo(f"{PROG}: interrupted", err=True)
            ctx.exit(Interrupted.exit_code)


def _verbosity(log_level: str | None, verbose: int) -> int:
    """Ansible's verbosity from this command's and the group's --log-level / -v (the larger wins)."""
    root = click.get_current_context().find_root().params
    levels = [level for level in (log_level, root.get("log_level")) if level]
    counts = [verbose, int(root.get("verbose") or 0)] + [LOG_VERBOSITY.get(level, 0) for level in levels]
    verbosity = max(counts)
    name = max(levels, key=LOG_LEVELS.index) if levels else "warning"
    logging.basicConfig(level=name.upper(), format="%(levelname)s %(name)s: %(message)s")
    return verbosity


def _log_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option("-v", "--verbose", count=True,
                            help="More Ansible output: -v shows Ansible's output, -vvv ssh's too.")(function)
    return click.option("--log-level", "--log_level", type=click.Choice(LOG_LEVELS), default=None,
                        help="Logging level; info shows Ansible's output (-v), debug ssh's (-vvv).")(function)


def _cube_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--mlcube", metavar="PATH", default=None,
                     help="MLCube directory or its mlcube.yaml (default: the current directory)."),
        click.option("--platform", metavar="NAME", default=RUNNER_NAME, show_default=True,
                     help="Platform in the system settings ($MLCUBE_SYSTEM_SETTINGS or ~/mlcube.yaml)."),
        click.option("--workspace", metavar="PATH", default=None,
                     help="Workspace folder (default: the cube's workspace/)."),
        click.option("-P", "-p", "params", metavar="KEY=VALUE", multiple=True,
                     help="Override, e.g. -P runner.host=gpu2 or -Prunner.port=2222 (repeatable)."),
    ]):
        function = option(function)
    return function


def _run_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(RUN_OPTIONS):
        option = click.option(f"--{name}", default=None, help=f"`mlcube run --{name}`, passed to the host.")
        function = option(function)
    return function


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
@_log_options
def cli(log_level: str | None, verbose: int) -> None:
    """Run MLCube tasks on remote hosts over SSH, with Ansible doing the work."""


@cli.command()
@_cube_options
@click.option("--check", is_flag=True,
              help="Dry run: list per host the files that would be uploaded and the packages that would be "
                   "installed; change nothing.")
@_log_options
def configure(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...], check: bool,
              log_level: str | None, verbose: int) -> None:
    """Create the remote Python, upload the cube, run the remote `mlcube configure`."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    if not check:
        workflow.configure(loaded.settings, loaded.job(), verbosity=verbosity)
        return
    from .check_mode import CheckReport  # imported by the command that uses it: every command pays for imports

    report = CheckReport()
    workflow.configure(loaded.settings, loaded.job(), reporter=report, check=True, verbosity=verbosity)
    for line in report.summary():
        click.echo(line)


@cli.command()
@_cube_options
@click.option("--task", default=None, metavar="NAMES",
              help="Task(s) to run, comma-separated (default: the cube's only task).")
@_run_options
@click.option("--detach", is_flag=True,
              help="Start the task(s) on every host and return at once, printing the run id; see status, "
                   "logs, attach and fetch.")
@click.option("--need-gpus", "need_gpus", type=int, default=None, metavar="N",
              help="Take N free GPUs on each host for the run (0: a CPU-only slot), held until it ends; the task gets "
                   "them as CUDA_VISIBLE_DEVICES. Without free ones the run does not start.")
@click.option("--queue", is_flag=True,
              help="With --need-gpus: when the slots are taken, queue the run on the host (it starts there when they "
                   "are free, first come first served, with no controller needed) instead of refusing it.")
# Not `--retries`: the `retries` setting retries unreachable hosts before the task starts; this one re-runs a
# task that failed, on the host.
@click.option("--retries-on-failure", "run_retries", type=int, default=0, metavar="K",
              help="Start a task that failed up to K more times on its host (the run's supervisor there does it, "
                   "no controller needed), never again on a GPU found faulty after the failure.")
@click.argument("task_args", nargs=-1, metavar="[NAME=VALUE]...")
@_log_options
def run(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...], task: str | None,
        detach: bool, need_gpus: int | None, queue: bool, run_retries: int, task_args: tuple[str, ...],
        log_level: str | None, verbose: int, **options: str | None) -> None:
    """Upload what changed, run the task(s) remotely, fetch the workspace back.

    The remote task runs detached from the SSH connection: if this command dies or loses its connection,
    the task carries on and `attach` completes the job. Only Ctrl-C cancels it.
    """
    verbosity = _verbosity(log_level, verbose)
    arguments = parse_task_args(task_args)
    loaded = load(mlcube, platform, workspace, arguments, parse_params(params))
    job = loaded.job(select_tasks(task, loaded.tasks), arguments, run_options(options))
    check_counts(need_gpus, run_retries)
    if queue and need_gpus is None:
        raise CommandLineError("--queue waits for slots: say how many the run needs with --need-gpus N "
                               "(0 for a CPU-only slot)")
    job = dataclasses.replace(job, detach=detach, run_id=workflow.new_run_id(),
                              gpus_needed=-1 if need_gpus is None else need_gpus, queue=queue,
                              run_retries=run_retries)
    workflow.run(loaded.settings, job, verbosity=verbosity)
    if detach:
        click.echo(f"started run {job.run_id}; follow it with `{PROG} attach --run {job.run_id}`")


# -------------------------------------------------------------------------------------------- sweeps


@cli.command(name="sweep")
@_cube_options
@click.option("--task", default=None, metavar="NAMES",
              help="Task(s) every run runs, comma-separated (default: the cube's only task).")
@_run_options
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2,...",
              help="A task parameter and its values; several --grid give every combination (repeatable). Not -p/-P: "
                   "those override settings.")
@click.option("--runs", "runs_file", default=None, metavar="FILE",
              help="A file listing runs: a YAML or JSON list of mappings (parameter -> value), or CSV with a header. "
                   "With --grid, every run of the file gets every combination.")
@click.option("--need-gpus", "need_gpus", type=int, default=0, show_default=True, metavar="N",
              help="GPUs each run takes (0: a CPU-only slot), as leases on its host, held until it ends; it gets them "
                   "as CUDA_VISIBLE_DEVICES.")
@click.option("--retries-on-failure", "run_retries", type=int, default=0, metavar="K",
              help="As for run: each run's supervisor starts a failed task again up to K times, on its host, never "
                   "on a GPU found faulty.")
@click.argument("task_args", nargs=-1, metavar="[NAME=VALUE]...")
@_log_options
def sweep_command(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
                  task: str | None, grid: tuple[str, ...], runs_file: str | None, need_gpus: int, run_retries: int,
                  task_args: tuple[str, ...], log_level: str | None, verbose: int, **options: str | None) -> None:
    """Start many runs of the cube at once, one per parameter set, and return: each is placed on a free slot of
    the fleet or queued on a host, where it starts by itself when its slots are free. NAME=VALUE arguments are
    given to every run. Results come back to <cube>/sweeps/<sweep id>/<NNN>/; see sweep-status."""
    verbosity = _verbosity(log_level, verbose)
    if workspace:
        raise CommandLineError("sweep: each run gets a workspace of its own (<cube>/sweeps/<sweep id>/<NNN>), with "
                               "the inputs of the cube's workspace/: drop --workspace")
    from .. import sweep_workflow, sweeps

    check_counts(need_gpus, run_retries)
    arguments = parse_task_args(task_args)
    parameters = sweeps.expand(arguments, sweeps.parse_grid(grid),
                               sweeps.read_runs(runs_file) if runs_file else None)
    loaded = load(mlcube, platform, None, arguments, parse_params(params))
    job = dataclasses.replace(loaded.job(select_tasks(task, loaded.tasks), arguments, run_options(options)),
                              run_retries=run_retries)
    manifest = sweep_workflow.sweep(loaded.settings, job, parameters, need_gpus=need_gpus, write=click.echo,
                                    verbosity=verbosity)
    for run in manifest["runs"]:
        click.echo(sweeps.describe(run))
    click.echo(f"sweep {manifest['sweep_id']}: {sweep_summary(manifest)}; manifest "
               f"{sweeps.manifest_path(job.cube_root, manifest['sweep_id'])}; see it with "
               f"`{PROG} sweep-status --sweep {manifest['sweep_id']}`")


def sweep_summary(manifest: Mapping[str, Any]) -> str:
    """`6 run(s) on 2 host(s): 4 running, 2 queued`."""
    counts: dict[str, int] = {}
    for run in manifest["runs"]:
        counts[str(run["state"])] = counts.get(str(run["state"]), 0) + 1
    hosts = {run["host"] for run in manifest["runs"]}
    states = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    return f"{len(manifest['runs'])} run(s) on {len(hosts)} host(s): {states}"


@cli.command(name="sweep-attach")
@_cube_options
@click.option("--sweep", "sweep_id", default=None, metavar="ID", help="The sweep (default: the cube's newest).")
@click.option("--replace-after", "replace_after", type=click.FloatRange(min=0), default=60.0, show_default=True,
              metavar="SECONDS",
              help="Re-place the runs still waiting on a host that has been unreachable this long onto the other "
                   "hosts (their copies there are cancelled when it answers again).")
@click.option("--poll", type=click.FloatRange(min=0), default=10.0, show_default=True, metavar="SECONDS",
              help="Seconds between two looks at the sweep's hosts.")
@_log_options
def sweep_attach_command(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
                         sweep_id: str | None, replace_after: float, poll: float, log_level: str | None,
                         verbose: int) -> None:
    """Follow the sweep to its end: a line per run whose state changes, each run's results fetched into its own
    folder as soon as it ends (exit code and output checksums in the manifest), and the waiting runs of a host
    that dropped re-placed on the others. Fails when some run did not succeed."""
    verbosity = _verbosity(log_level, verbose)
    from .. import sweep_attach

    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    manifest = sweep_attach.sweep_attach(loaded.settings, loaded.job(), sweep_id, replace_after=replace_after,
                                         poll=poll, write=click.echo, verbosity=verbosity)
    click.echo(f"sweep {manifest['sweep_id']}: {sweep_summary(manifest)}")
    unsuccessful = [run for run in manifest["runs"] if run.get("state") != "succeeded"]
    if unsuccessful:
        raise SshAnsibleError(f"sweep {manifest['sweep_id']}: {len(unsuccessful)} run(s) did not succeed: "
                                + ", ".join(f"{run['run_id']} {run.get('state')}" for run in unsuccessful))


@cli.command(name="sweep-status")
@_cube_options
@click.option("--sweep", "sweep_id", default=None, metavar="ID", help="The sweep (default: the cube's newest).")
@click.option("--fetch", is_flag=True,
              help="Also fetch each ended run's results into its folder; their checksums go into the manifest.")
@_log_options
def sweep_status(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
                 sweep_id: str | None, fetch: bool, log_level: str | None, verbose: int) -> None:
    """The sweep's queue as its hosts say: per run its host, state (queued, running, succeeded, failed, cancelled),
    devices and exit code. Updates the sweep's manifest."""
    verbosity = _verbosity(log_level, verbose)
    from .. import sweep_workflow, sweeps

    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    job = loaded.job()
    manifest = sweep_workflow.sweep_status(loaded.settings, job, sweep_id, write=click.echo, verbosity=verbosity)
    if fetch:
        sweep_workflow.sweep_fetch(loaded.settings, job, manifest, write=click.echo, verbosity=verbosity)
    for run in manifest["runs"]:
        click.echo(sweeps.describe(run))
    click.echo(f"sweep {manifest['sweep_id']}: {sweep_summary(manifest)}")


@cli.command(name="sweep-cancel")
@_cube_options
@click.option("--sweep", "sweep_id", default=None, metavar="ID", help="The sweep (default: the cube's newest).")
@_log_options
def sweep_cancel(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
                 sweep_id: str | None, log_level: str | None, verbose: int) -> None:
    """Stop every run of the sweep that is going on or queued (and the containers each started), on the sweep's
    hosts; says per host and run what happened, then the sweep's states."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    from .. import sweep_workflow

    _, manifest = sweep_workflow.sweep_cancel(loaded.settings, loaded.job(), sweep_id, write=click.echo,
                                              verbosity=verbosity)
    click.echo(f"sweep {manifest['sweep_id']}: {sweep_summary(manifest)}")


def check_counts(need_gpus: int | None, run_retries: int) -> None:
    """`--need-gpus` and `--retries-on-failure` of run and sweep: counts, 0 or more (need-gpus may be unset)."""
    if need_gpus is not None and need_gpus < 0:
        raise CommandLineError(f"--need-gpus {need_gpus}: give a number of GPUs, 0 for a CPU-only slot")
    if run_retries < 0:
        raise CommandLineError(f"--retries-on-failure {run_retries}: give a number of retries, 0 or more")


# ---------------------------------------------------------------------------------------- long runs

_run_id_option = click.option("--run", "run_id", default=None, metavar="ID",
                              help="Run id (default: the latest run recorded next to the workspace).")


@cli.command()
@_cube_options
@_run_id_option
@_log_options
def status(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
           run_id: str | None, log_level: str | None, verbose: int) -> None:
    """Per host, every run of the cube, newest first (with --run: that run): its state (queued, running,
    succeeded, failed, cancelled), exit code and elapsed time."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    states = workflow.status(loaded.settings, loaded.job(), run_id=run_id, verbosity=verbosity)
    for host, state in sorted(states.items()):
        if run_id:
            click.echo(f"{host}: {describe_state(state)}")
            continue
        for run in state.get("runs") or []:
            where = f" in {run['workspace']}" if run.get("workspace") else ""
            click.echo(f"{host}: {run.get('run_id')} {describe_run(run)}{where}")
            if len(run.get("attempts") or []) > 1 or run.get("state") == "retrying":
                for attempt in run["attempts"]:
                    click.echo(f"{host}:   {describe_attempt(attempt)}")
        if not state.get("runs"):
            click.echo(f"{host}: no run of this cube on this host")


def _elapsed(started: Any, ended: Any) -> str:
    if not started:
        return ""
    begin = datetime.datetime.fromisoformat(str(started))
    end = datetime.datetime.fromisoformat(str(ended)) if ended else datetime.datetime.now(begin.tzinfo)
    return f"{(end - begin).total_seconds():.1f} s"


def describe_run(run: Mapping[str, Any]) -> str:
    """One run of the list: `running (12.3 s)`, `failed (exit code 3, 1.2 s)`, `cancelled (4.0 s)`, `queued`;
    a run that may be retried adds its attempts: `succeeded (exit code 0, 9.1 s, 2 attempts)`,
    `retrying (attempt 2 of 3 next, 4.0 s)`."""
    state, elapsed = str(run.get("state")), _elapsed(run.get("started"), run.get("ended") or run.get("cancelled"))
    done = len(run.get("attempts") or [])
    if state == "retrying":
        return f"retrying (attempt {done + 1} of {int(run.get('retries') or 0) + 1} next, {elapsed})"
    tries = f", {done} attempts" if done > 1 else ""
    if state in ("succeeded", "failed"):
        return f"{state} (exit code {run.get('rc')}, {elapsed}{tries})"
    return f"{state} ({elapsed}{tries})" if elapsed and state != "queued" else state


def describe_attempt(attempt: Mapping[str, Any]) -> str:
    """`attempt 1: exit code 3 on gpu 0, device fault: gpu 0 uncorrected ECC errors rose from 0 to 2`."""
    devices = attempt.get("devices") or {}
    where = (f" on gpu {','.join(str(index) for index in devices['gpus'])}" if devices.get("gpus")
             else f" on cpu slot {devices['cpu']}" if devices.get("cpu") is not None else "")
    cause = f", device fault: {attempt.get('why')}" if attempt.get("cause") == "device" else ""
    return f"attempt {attempt.get('attempt')}: exit code {attempt.get('rc')}{where}{cause}"


def describe_state(state: Mapping[str, Any]) -> str:
    """`running (12.3 s)`, `succeeded (exit code 0, 4.1 s)` or `failed (exit code 3, 1.2 s)`."""
    started, ended = state.get("started"), state.get("ended")
    elapsed = ""
    if started:
        begin = datetime.datetime.fromisoformat(str(started))
        end = datetime.datetime.fromisoformat(str(ended)) if ended else datetime.datetime.now(begin.tzinfo)
        elapsed = f"{(end - begin).total_seconds():.1f} s"
    if state.get("running") or state.get("rc") is None:
        return f"running ({elapsed})" if state.get("running") else f"unknown ({state.get('msg') or 'no exit code'})"
    verdict = "succeeded" if state.get("rc") == 0 else "failed"
    return f"{verdict} (exit code {state.get('rc')}, {elapsed})"


@cli.command()
@_cube_options
@_log_options
def slots(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
          log_level: str | None, verbose: int) -> None:
    """Per host, the slots for runs: each GPU (free, leased by a run, or busy with a process we did not start)
    and the CPU-only slots."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    for host, found in sorted(workflow.slots(loaded.settings, loaded.job(), verbosity=verbosity).items()):
        for line in describe_slots(found):
            click.echo(f"{host}: {line}")


def describe_slots(found: Mapping[str, Any]) -> list[str]:
    """`gpu 0 free (512/16384 MiB)`, `gpu 1 busy (pids 4242)`, ..., `cpu slots: 3 free of 4`."""
    lines = []
    for gpu in found.get("gpus") or []:
        memory = (f" ({gpu['memory_used_mib']}/{gpu['memory_total_mib']} MiB)"
                  if gpu.get("memory_total_mib") is not None else "")
        pids = f", pids {' '.join(str(pid) for pid in gpu['processes'])}" if gpu.get("processes") else ""
        note = gpu.get("faulty") or {}
        fault = f", found faulty by run {note.get('run')} at {note.get('at')}: {note.get('why')}" if note else ""
        lines.append(f"gpu {gpu.get('index')} {gpu.get('state')}{memory}{pids}{fault}")
    if not found.get("gpus"):
        lines.append("no GPU" + (" (no nvidia-smi)" if found.get("source") == "none" else ""))
    cpus = found.get("cpus") or []
    lines.append(f"cpu slots: {sum(1 for cpu in cpus if cpu.get('state') == 'free')} free of {len(cpus)}")
    if found.get("waiting"):
        lines.append(f"{found['waiting']} queued run(s) wait in line (a new run waits behind them)")
    return lines


@cli.command()
@_cube_options
@click.option("--run", "run_id", default=None, metavar="ID", help="The run to stop.")
@click.option("--all", "all_runs", is_flag=True, help="Stop every run of the cube on the selected hosts.")
@_log_options
def cancel(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
           run_id: str | None, all_runs: bool, log_level: str | None, verbose: int) -> None:
    """Stop a run (--run ID), or every run of the cube (--all), on the selected hosts: the remote task and the
    containers it started. Says per host and run what happened."""
    if bool(run_id) == all_runs:
        raise CommandLineError("cancel: name one run with --run ID, or stop every run of the cube with --all")
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    workflow.cancel(loaded.settings, loaded.job(), run_id=run_id, verbosity=verbosity,
                    reporter=Reporter(write=click.echo, show_steps=False))


@cli.command()
@_cube_options
@_run_id_option
@click.option("--follow", "-f", is_flag=True, help="Stream the output until the run ends.")
@_log_options
def logs(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
         run_id: str | None, follow: bool, log_level: str | None, verbose: int) -> None:
    """The remote output of a run so far, per host; with --follow, until it ends."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    if follow:
        workflow.attach(loaded.settings, loaded.job(), run_id=run_id, fetch=False, verbosity=verbosity,
                        reporter=Reporter(show_steps=False))
    else:
        workflow.status(loaded.settings, loaded.job(), run_id=run_id, logs=True, verbosity=verbosity)


@cli.command()
@_cube_options
@_run_id_option
@_log_options
def attach(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
           run_id: str | None, log_level: str | None, verbose: int) -> None:
    """Follow a run to its end, then fetch exactly as an attached `run` would."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    workflow.attach(loaded.settings, loaded.job(), run_id=run_id, verbosity=verbosity)


@cli.command()
@_cube_options
@_run_id_option
@_log_options
def fetch(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
          run_id: str | None, log_level: str | None, verbose: int) -> None:
    """Fetch what a run has written so far, at any time (never deletes local files)."""
    verbosity = _verbosity(log_level, verbose)
    loaded = load(mlcube, platform, workspace, (), parse_params(params))
    workflow.attach(loaded.settings, loaded.job(), run_id=run_id, follow=False, verbosity=verbosity)


@cli.command(name="render")
@_cube_options
@click.option("--task", default=None, metavar="NAMES",
              help="Task(s) the run command runs (default: the cube's only task; none: configure only).")
@_run_options
@click.option("--out", required=True, metavar="DIR", type=click.Path(file_okay=False),
              help="Folder for inventory.yml and extravars.yml.")
@click.argument("task_args", nargs=-1, metavar="[NAME=VALUE]...")
@_log_options
def render_command(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
                   task: str | None, out: str, task_args: tuple[str, ...], log_level: str | None,
                   verbose: int, **options: str | None) -> None:
    """Write the inventory and extra-vars for plain ansible-playbook, and print the commands."""
    _verbosity(log_level, verbose)
    arguments = parse_task_args(task_args)
    loaded = load(mlcube, platform, workspace, arguments, parse_params(params))
    job = loaded.job(select_tasks(task, loaded.tasks, required=False), arguments, run_options(options))
    from .render_files import write_rendered

    write_rendered(loaded, job, Path(out))


@cli.command(name="doctor")
@_cube_options
@_log_options
def doctor_command(mlcube: str | None, platform: str, workspace: str | None, params: tuple[str, ...],
                   log_level: str | None, verbose: int) -> None:
    """Check the controller, the settings and every host; one line per check, non-zero exit on a failure."""
    verbosity = _verbosity(log_level, verbose)

    def load_settings() -> tuple[Settings, Job, str]:
        loaded = load(mlcube, platform, workspace, (), parse_params(params))
        return loaded.settings, loaded.job(), f"platform '{platform}' in {loaded.settings_file}"

    from .. import doctor

    doctor.doctor(load_settings, write=click.echo, verbosity=verbosity)


def main() -> None:
    """Console script entry point."""
    cli.main(prog_name=PROG)
