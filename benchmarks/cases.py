"""The measurements: warm-up, (a)-(e), fixed costs, variants and task costs, each a method of Bench."""

from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import yaml

from benchmarks.commands import baseline, cli_env, environment, must, ours_api, ours_cli, ours_tool, run_process
from benchmarks.config import ANSIBLE_PLAYBOOK, FLEET_SIZES, MB, MLCUBE, SWEEP_HOSTS, SWEEP_RUNS, SWEEP_SLOTS, log
from benchmarks.lab import Lab
from benchmarks.results import Result, Series
from mlcube_ssh_ansible import assets, execute
from mlcube_ssh_ansible import render as render_module
from mlcube_ssh_ansible import settings as settings_module
from mlcube_ssh_ansible.render import Job, remote_name, render, ssh_args
from mlcube_ssh_ansible.settings import Settings, forks_for, parse_settings
from tests.hosts import SshHost, deep_merge, mlcube_settings, remote, ssh_argv


class Bench:
    def __init__(self, lab: Lab, reps: int, reps_slow: int, experiments: bool) -> None:
        self.lab = lab
        self.reps = reps
        self.reps_slow = reps_slow
        self.experiments = experiments
        self.series: dict[str, Series] = {}
        self.notes: list[str] = []
        self.phase_seconds: dict[str, float] = {}
        self.loads: dict[str, str] = {}
        self.meta: dict[str, str] = {}
        self.sweep_runs = SWEEP_RUNS  # (g); fewer with --quick/--smoke

    def s(self, key: str) -> Series:
        return self.series.setdefault(key, Series(key))

    def record(self, key: str, result: Result) -> Result:
        self.s(key).results.append(result)
        flag = "" if result.ok else f"  FAILED: {result.detail[:300]}"
        mem = f"  peak RSS {result.peak_rss / MB:.0f} MB" if result.peak_rss else ""
        cpu = f"  cpu {result.cpu:5.2f} s (machine {result.machine_cpu:5.2f} s)" if result.machine_cpu else ""
        note = f"  [{result.note}]" if result.note else ""
        log(f"  {key:<28} {result.seconds:7.2f} s{cpu}{mem}{note}{flag}")
        return result

    def phase(self, name: str, body: Callable[[], None]) -> None:
        log(f"--- {name}")
        self.loads[name] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        start = time.monotonic()
        try:
            body()
        except Exception as error:  # a broken section must not hide the others' numbers
            self.notes.append(f"{name}: aborted: {error!r}")
            log(f"{name} aborted:\n{traceback.format_exc()}")
        self.phase_seconds[name] = time.monotonic() - start

    # -- warm-up --------------------------------------------------------------------------------------------

    def warm_up(self) -> None:
        lab = self.lab
        fleet8 = lab.settings_of(lab.fleet_settings_files[8])
        single = lab.settings_of(lab.single_settings_file)
        # Remote virtualenvs and the cube on all 8 hosts at once, through the fleet path (inventory + hosts).
        result = ours_api("configure", fleet8, lab.job(lab.cubes["ours-fleet-8"]))
        log(f"  warm-up configure, 8 hosts (inventory): {result.seconds:.1f} s ok={result.ok}")
        if not result.ok:
            self.notes.append(f"warm-up: 8-host configure through `inventory` failed: {result.detail}")
            log("  falling back to one `host` configure per host")
            for h in lab.hosts:
                settings = parse_settings(mlcube_settings(h)["platforms"]["ssh-ansible"])
                must(ours_api("configure", settings, lab.job(lab.cubes["ours-fleet-8"])), f"configure {h.address}")
        must(ours_api("configure", single, lab.job(lab.cubes["ours-single"])), "configure ours-single")
        must(baseline("configure", lab.baseline_hosts[1], lab.cubes["base-single"]), "baseline configure single")
        # One local cube per fleet size (and side): every (d) run is then the same warm repeat of its own last
        # run. With one cube for all sizes, a 1-host run fetches into the workspace itself, which changes the
        # local files and makes the next N-host run upload again.
        for n in FLEET_SIZES:
            if n != 8:
                must(ours_api("configure", lab.settings_of(lab.fleet_settings_files[n]),
                              lab.job(lab.cubes[f"ours-fleet-{n}"])), f"configure ours-fleet-{n}")
            must(baseline("configure", lab.baseline_hosts[n], lab.cubes[f"base-fleet-{n}"]),
                 f"baseline configure fleet-{n}")
        # One run of every task on both sides: images, page cache and the remote workspaces exist afterwards.
        for task in ("sleep", "tiny", "blob"):
            must(ours_api("run", single, self.job("ours-single", task)), f"run {task}")
            must(baseline("run", lab.baseline_hosts[1], lab.cubes["base-single"], task), f"baseline run {task}")
        self.drop_blobs()
        # The near-zero task has cubes of its own, so that its runs do not change (a)'s workspaces.
        must(ours_api("configure", single, lab.job(lab.cubes["ours-zero"])), "configure ours-zero")
        must(baseline("configure", lab.baseline_hosts[1], lab.cubes["base-zero"]), "baseline configure zero")
        must(ours_api("run", single, self.job("ours-zero", "line")), "run line")
        must(baseline("run", lab.baseline_hosts[1], lab.cubes["base-zero"], "line"), "baseline run line")
        for n in FLEET_SIZES:
            ours_api("run", lab.settings_of(lab.fleet_settings_files[n]), self.job(f"ours-fleet-{n}", "sleep"))
            baseline("run", lab.baseline_hosts[n], lab.cubes[f"base-fleet-{n}"], "sleep")

    def job(self, cube: str, task: str) -> Job:
        path = self.lab.cubes[cube]
        return Job(str(path), str(path / "workspace"), (task,))

    def clear_output(self, task: str) -> None:
        """Remove a task's local output (both sides), so that its next run brings back all of the new data."""
        for cube in ("ours-single", "base-single"):
            shutil.rmtree(self.lab.cubes[cube] / "workspace" / task, ignore_errors=True)

    def drop_blobs(self) -> None:
        """Remove the 100 MiB outputs locally and on host 1, so that no later run fetches them again."""
        self.clear_output("blob")
        h1 = self.lab.hosts[0]
        ours_dir = f"{h1.user.home}/mlcube/{remote_name(str(self.lab.cubes['ours-single']))}/workspace/blob"
        base_dir = f"{h1.user.home}/mlcube-baseline/{self.lab.cubes['base-single'].name}/workspace/blob"
        remote(h1, "rm", "-rf", ours_dir, base_dir, check=True)

    # -- (a) warm run of a one-second task ------------------------------------------------------------------

    def warm_run(self) -> None:
        lab = self.lab
        single = lab.settings_of(lab.single_settings_file)
        for _ in range(self.reps):
            self.record("a.ours", ours_cli("run", lab.cubes["ours-single"], lab.single_settings_file, "sleep"))
            self.record("a.base", baseline("run", lab.baseline_hosts[1], lab.cubes["base-single"], "sleep"))
            self.record("a.ours-api", ours_api("run", single, self.job("ours-single", "sleep")))
            self.record("z.ours", ours_cli("run", lab.cubes["ours-zero"], lab.single_settings_file, "line"))
            self.record("z.base", baseline("run", lab.baseline_hosts[1], lab.cubes["base-zero"], "line"))
            # The same through our own command line, which has no MLCube CLI start-up in front of it.
            self.record("z.tool", ours_tool(["run", f"--mlcube={lab.cubes['ours-zero']}", "--task=line"],
                                            lab.single_settings_file))

    # -- (b) no-op configure --------------------------------------------------------------------------------

    def noop_configure(self) -> None:
        """No-op configure with the default settings; and, where the shim can skip it locally (skip_unchanged),
        also with `skip_unchanged: false`, so that the hosts are contacted (and profiled)."""
        lab = self.lab
        contact_file = lab.single_settings_file
        if "skip_unchanged" in getattr(settings_module, "TOP_KEYS", ()):
            contact_file = lab.write_settings("single-contact", deep_merge(
                mlcube_settings(lab.hosts[0]), {"platforms": {"ssh-ansible": {"skip_unchanged": False}}}))
            self.meta["skip_unchanged"] = "yes"
        contact = lab.settings_of(contact_file)
        # The contacting runs remember their (different) settings' fingerprint in a cache of their own, so that
        # they do not make the default runs' next configure contact the host.
        contact_cache = {"XDG_CACHE_HOME": str(lab.workdir / "cache-contact")}
        for _ in range(self.reps):
            self.record("b.ours", ours_cli("configure", lab.cubes["ours-single"], lab.single_settings_file))
            self.record("b.base", baseline("configure", lab.baseline_hosts[1], lab.cubes["base-single"]))
            if contact_file != lab.single_settings_file:
                self.record("b.ours-contact", ours_cli("configure", lab.cubes["ours-single"], contact_file,
                                                       env=contact_cache))
                self.record("b.tool-contact", ours_tool(["configure", f"--mlcube={lab.cubes['ours-single']}"],
                                                        contact_file, env=contact_cache))
            with environment(contact_cache):
                self.record("b.ours-api", ours_api("configure", contact, lab.job(lab.cubes["ours-single"])))

    # -- (c) marginal cost of 100 MB of output --------------------------------------------------------------

    def big_output(self) -> None:
        lab = self.lab
        single = lab.settings_of(lab.single_settings_file)
        # Each run fetches the whole remote workspace: only the output of the task about to run is removed
        # locally, so the tiny run does not bring the (unchanged) 100 MiB back; a check below makes sure.
        blobs = [lab.cubes[cube] / "workspace" / "blob" / "data.bin" for cube in ("ours-single", "base-single")]
        for _ in range(self.reps):
            for task in ("blob", "tiny"):
                self.clear_output(task)
                before = [b.stat().st_ino if b.is_file() else None for b in blobs]
                self.record(f"c.ours.{task}", ours_api("run", single, self.job("ours-single", task)))
                self.record(f"c.base.{task}", baseline("run", lab.baseline_hosts[1], lab.cubes["base-single"], task))
                for cube in ("ours-single", "base-single"):
                    got = lab.cubes[cube] / "workspace" / task / "data.bin"
                    size = got.stat().st_size if got.is_file() else None
                    if size != (4096 if task == "tiny" else 100 * MB):
                        self.notes.append(f"(c): {got} has size {size} after the {task} run")
                after = [b.stat().st_ino if b.is_file() else None for b in blobs]
                if task == "tiny" and before != after:
                    self.notes.append(f"(c): a tiny run fetched the 100 MiB output again: {blobs}")
        self.drop_blobs()

    # -- (d) fleet scaling ----------------------------------------------------------------------------------

    def fleet(self) -> None:
        lab = self.lab
        fleet8 = lab.settings_of(lab.fleet_settings_files[8])
        for _ in range(self.reps_slow):
            for n in FLEET_SIZES:
                warm = lab.masters_alive(lab.settings_of(lab.fleet_settings_files[n]), lab.hosts[:n])
                result = ours_cli("run", lab.cubes[f"ours-fleet-{n}"], lab.fleet_settings_files[n], "sleep")
                result.note = f"{warm}/{n} masters warm"
                self.record(f"d.ours.{n}", result)
                self.record(f"d.base.{n}", baseline("run", lab.baseline_hosts[n], lab.cubes[f"base-fleet-{n}"],
                                                    "sleep"))
        # One in-process 8-host run for the per-step profile (not part of the table).
        self.record("d.ours-api.8", ours_api("run", fleet8, self.job("ours-fleet-8", "sleep")))
        for n in FLEET_SIZES[1:]:
            results = lab.cubes[f"ours-fleet-{n}"] / "workspace" / "hosts"
            missing = [h for h in (lab.name(x) for x in lab.hosts[:n]) if not (results / h / "slept.txt").is_file()]
            if missing:
                self.notes.append(f"(d): after the {n}-host runs no slept.txt came back for {missing}")

    # -- (f) fleets at scale ----------------------------------------------------------------------------------

    def warm_up_big(self) -> None:
        """The shared interpreter (made by host 1's user through our `configure`), then every big fleet's cube
        configured by ours and run once by both sides. Of the baseline's `configure` only its `mkdir` is needed
        here (its `pip install` would write into the shared interpreter): its `mlcube run` finds the image that
        ours built."""
        lab = self.lab
        must(ours_api("configure", lab.settings_of(lab.python_settings_file), lab.job(lab.cubes["ours-python"])),
             "configure the shared interpreter")
        for h in lab.hosts[:max(lab.big_sizes)]:
            remote(h, "mkdir", "-p", "mlcube-baseline", check=True)
        for n in lab.big_sizes:
            settings = lab.settings_of(lab.big_settings_files[n])
            result = must(ours_api("configure", settings, lab.job(lab.cubes[f"ours-big-{n}"])), f"configure big-{n}")
            log(f"  warm-up configure, {n} hosts (inventory): {result.seconds:.1f} s")
            must(ours_api("run", settings, self.job(f"ours-big-{n}", "line")), f"run big-{n}")
            must(baseline("run", lab.baseline_hosts[n], lab.cubes[f"base-big-{n}"], "line",
                          python=str(lab.shared_python)), f"baseline run big-{n}")

    def big_fleets(self) -> None:
        """Warm runs of the near-zero task on 32 and 64 hosts (one user each, the shared interpreter), both sides
        sampled for memory: the fixed cost per host, without a one-second task in the way."""
        lab = self.lab
        for n in lab.big_sizes:  # each size's repetitions together: the other size's runs would outlast the masters
            for _ in range(self.reps_slow):
                settings = lab.settings_of(lab.big_settings_files[n])
                lab.open_masters(settings, lab.hosts[:n])  # not timed: a warm run, as (a)'s (the baseline's run
                warm = lab.masters_alive(settings, lab.hosts[:n])  # on 64 hosts may outlast ControlPersist)
                result = ours_cli("run", lab.cubes[f"ours-big-{n}"], lab.big_settings_files[n], "line", sample=True)
                result.note = f"{warm}/{n} masters warm"
                self.record(f"f.ours.{n}", result)
                self.record(f"f.base.{n}", baseline("run", lab.baseline_hosts[n], lab.cubes[f"base-big-{n}"], "line",
                                                    sample=True, python=str(lab.shared_python)))
        for n in lab.big_sizes:
            for side in ("ours", "base"):
                results = lab.cubes[f"{side}-big-{n}"] / "workspace" / "hosts"
                missing = [lab.name(h) for h in lab.hosts[:n] if not (results / lab.name(h)).is_dir()]
                if missing:
                    self.notes.append(f"(f): after the {n}-host runs no workspace came back for {side}: {missing}")

    # -- (g) a sweep: many one-second runs over a few hosts' slots ------------------------------------------

    def warm_up_sweep(self) -> None:
        """The sweep's cube configured on its hosts (ours) and run once by the baseline (its remote folder; the
        image is the one every bench cube uses)."""
        lab = self.lab
        must(ours_api("configure", lab.settings_of(lab.sweep_settings_file), lab.job(lab.cubes["ours-sweep"])),
             "configure ours-sweep")  # also makes the hosts' virtualenvs, which the baseline uses too
        for h in lab.hosts[:SWEEP_HOSTS]:
            remote(h, "mkdir", "-p", "mlcube-baseline", check=True)
        must(baseline("run", lab.baseline_hosts[SWEEP_HOSTS], lab.cubes["base-sweep"], "sleep"), "baseline run sweep")

    def sweep(self) -> None:
        """`sweep` of SWEEP_RUNS one-second runs (a grid over the output name) on SWEEP_HOSTS hosts with SWEEP_SLOTS
        CPU-only slots each, then `sweep-attach --poll 1` until every run has ended and its results are back: from
        submission to the last result, both commands sampled for memory. The baseline: per host, its share of the
        runs SWEEP_SLOTS at a time (ssh + xargs -P), then one rsync back."""
        lab = self.lab
        runs = self.sweep_runs
        values = ",".join(f"sweep-{i:02d}.txt" for i in range(1, runs + 1))
        cube = lab.cubes["ours-sweep"]
        common = [f"--mlcube={cube}", "--platform=ssh-ansible"]
        self.meta["sweep"] = json.dumps({"runs": runs, "hosts": SWEEP_HOSTS, "slots": SWEEP_SLOTS})
        for _ in range(self.reps_slow):
            before = set((cube / "sweeps").glob("*/manifest.json"))
            submit = ours_tool(["sweep", *common, "--task=sleep", "--need-gpus", "0", "--grid", f"slept={values}"],
                               lab.sweep_settings_file, sample=True)
            follow = ours_tool(["sweep-attach", *common, "--poll", "1"], lab.sweep_settings_file, sample=True) \
                if submit.ok else Result(0.0, False, "not run")
            result = Result(submit.seconds + follow.seconds, submit.ok and follow.ok,
                            "; ".join(filter(None, (submit.detail, follow.detail))), cpu=submit.cpu + follow.cpu,
                            machine_cpu=submit.machine_cpu + follow.machine_cpu, lines=submit.lines + follow.lines)
            result.peak_rss, result.peak_pss = max(submit.peak_rss, follow.peak_rss), max(submit.peak_pss,
                                                                                          follow.peak_pss)
            result.peak_detail = (submit if submit.peak_rss >= follow.peak_rss else follow).peak_detail
            manifests = sorted(set((cube / "sweeps").glob("*/manifest.json")) - before)
            checked = self._check_sweep(manifests[-1] if manifests else None, runs)
            result.note = f"submit {submit.seconds:.1f} s, follow and fetch {follow.seconds:.1f} s; {checked}"
            if "missing" in checked or "no manifest" in checked:
                result.ok, result.detail = False, checked
            self.record("g.ours", result)
            base_env = {"BASELINE_SWEEP_RUNS": str(runs // SWEEP_HOSTS), "BASELINE_SWEEP_PARALLEL": str(SWEEP_SLOTS)}
            with environment(base_env):
                self.record("g.base", baseline("sweep", lab.baseline_hosts[SWEEP_HOSTS], lab.cubes["base-sweep"],
                                               "sleep", sample=True))

    def _check_sweep(self, manifest_file: Path | None, runs: int) -> str:
        """Every run succeeded and its output came back; the median time a run held its slot (from the manifest)."""
        if manifest_file is None:
            return "no manifest"
        manifest = json.loads(manifest_file.read_text())
        missing = [run["run_id"] for run in manifest["runs"] if run.get("state") != "succeeded"
                   or not list(Path(run["results"]).glob("sweep-*.txt"))]
        held = []
        for run in manifest["runs"]:
            try:
                held.append((datetime.datetime.fromisoformat(str(run["ended"]))
                             - datetime.datetime.fromisoformat(str(run["started"]))).total_seconds())
            except (KeyError, TypeError, ValueError):
                continue
        median = f"median run {statistics.median(held):.2f} s" if held else "run times unknown"
        self.meta["sweep_run_seconds"] = f"{statistics.median(held):.3f}" if held else ""
        if len(manifest["runs"]) != runs or missing:
            return f"{len(missing)} of {len(manifest['runs'])} runs missing or failed: {missing[:5]}; {median}"
        return median

    # -- (e) controller memory ------------------------------------------------------------------------------

    def memory(self) -> None:
        """Peak memory with 1 and 8 hosts; at 8 hosts also two Ansible knobs (strategy, forks), set from outside."""
        lab = self.lab
        # `forks: auto` (the default) gives a run one fork per controller CPU; forks 8 is one per host (what the
        # previous default, a fixed 20, gave): the memory/time trade-off of that choice, measured.
        forks8 = lab.write_settings("fleet-8-forks8", deep_merge(
            yaml.safe_load(lab.fleet_settings_files[8].read_text()), {"platforms": {"ssh-ansible": {"forks": 8}}}))
        for _ in range(2 if self.reps_slow > 1 else 1):
            for key, n, settings_file, env in (
                    ("e.ours.1", 1, lab.fleet_settings_files[1], {}),
                    ("e.ours.8", 8, lab.fleet_settings_files[8], {}),
                    ("e.ours.8.upload", 8, lab.fleet_settings_files[8], {}),
                    ("e.ours.8.free", 8, lab.fleet_settings_files[8], {"ANSIBLE_STRATEGY": "free"}),
                    ("e.ours.8.forks8", 8, forks8, {})):
                cube = lab.cubes[f"ours-fleet-{n}"]
                if key == "e.ours.8.upload":  # a local input changed: all 8 hosts get an upload too
                    (cube / "workspace" / "seconds.txt").write_text("1\n")
                # The run starts its own masters: their memory is counted.
                lab.close_masters(lab.settings_of(settings_file), lab.hosts[:n])
                argv = [str(MLCUBE), "run", f"--mlcube={cube}", "--platform=ssh-ansible", "--task=sleep"]
                self.record(key, run_process(argv, env=cli_env(settings_file) | env, sample=True))
                if n == 1 or key == "e.ours.8":
                    self.record(f"e.base.{n}", baseline("run", lab.baseline_hosts[n], lab.cubes[f"base-fleet-{n}"],
                                                        "sleep", sample=True))

    # -- where the time goes: start-up costs and experiments ------------------------------------------------

    def startup_costs(self) -> None:
        empty_dir = Path(tempfile.mkdtemp(prefix="bench-empty-", dir=self.lab.workdir))
        (empty_dir / "empty.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks: []\n")
        (empty_dir / "inventory.yml").write_text("all: {}\n")
        env = dict(os.environ, **execute.environment(True))
        for _ in range(min(3, self.reps)):
            self.record("x.python-pass", run_process([sys.executable, "-c", "pass"]))
            self.record("x.mlcube-help", run_process([str(MLCUBE), "--help"],
                                                     env=cli_env(self.lab.single_settings_file)))
            self.record("x.ansible-playbook-version", run_process([str(ANSIBLE_PLAYBOOK), "--version"], env=env))
            self.record("x.ansible-playbook-empty", run_process(
                [str(ANSIBLE_PLAYBOOK), "-i", str(empty_dir / "inventory.yml"), str(empty_dir / "empty.yml")], env=env))
            self.record("x.runner-empty", self._runner_playbook(empty_dir / "empty.yml",
                                                                empty_dir / "inventory.yml", {}))
            self.record("x.runner-run.yml-no-host", self._runner_playbook(
                assets.playbook("run"), empty_dir / "inventory.yml", {"mlcube_ssh_hosts": "nohost"}))
        shutil.rmtree(empty_dir, ignore_errors=True)

    @staticmethod
    def _runner_playbook(playbook: Path, inventory: Path, extravars: dict[str, Any]) -> Result:
        import ansible_runner

        private = tempfile.mkdtemp(prefix="bench-runner-")
        start = time.monotonic()
        out = ansible_runner.run(private_data_dir=private, playbook=str(playbook), inventory=str(inventory),
                                 extravars=extravars, envvars=execute.environment(True), quiet=True,
                                 settings={"suppress_ansible_output": True})
        seconds = time.monotonic() - start
        shutil.rmtree(private, ignore_errors=True)
        return Result(seconds, out.rc == 0, f"rc {out.rc}")

    def variants(self) -> None:
        """Same warm 1-second run on host 1, changing one thing at a time (through settings/inventory only)."""
        lab = self.lab
        h1 = lab.hosts[0]
        job = self.job("ours-single", "sleep")
        single = lab.settings_of(lab.single_settings_file)
        plain_inventory = lab.write_inventory("x-plain", [h1])
        discovery_inventory = lab.write_inventory("x-discovery", [h1], ansible_python_interpreter="auto_silent")
        by_inventory = lab.settings_of(lab.write_settings("x-plain", lab.fleet_settings(plain_inventory)))
        discovery = lab.settings_of(lab.write_settings("x-discovery", lab.fleet_settings(discovery_inventory)))
        rendered = render_module.render_inventory(single)["all"]["vars"]
        self.meta["shim_python"] = str(rendered.get("ansible_python_interpreter"))
        for _ in range(self.reps):
            self.record("x.run.host", ours_api("run", single, job))
            self.record("x.run.unchanged", ours_api("run", single, job))
            self.record("x.run.inventory", ours_api("run", by_inventory, job))
            self.record("x.run.inventory+discovery", ours_api("run", discovery, job))
            lab.close_masters(single, [h1])
            self.record("x.run.cold-master", ours_api("run", single, job))
            self.record("x.run.ansible-playbook", self._plain_playbook(single, job))
            self.record("x.rsync-noop", run_process(self._baseline_rsync(h1, lab.cubes["base-single"])))
            self.record("x.rsync-mux-noop", run_process(self._mux_rsync(single, h1, lab.cubes["ours-single"])))
            self.record("x.ssh-new-true", run_process([*ssh_argv(h1), "true"]))
            self.record("x.ssh-mux-true", run_process([*self._mux_ssh(single, h1), "true"]))
            self.record("x.ssh-mux-python", run_process([*self._mux_ssh(single, h1),
                                                                     "/usr/bin/python3 -c pass"]))

    @staticmethod
    def _mux_ssh(settings: Settings, h: SshHost) -> list[str]:
        """ssh through our ControlPersist master (the one Ansible just used), with mlcube-ssh-ansible's options."""
        argv = ssh_argv(h)
        return argv[:-1] + ssh_args(settings) + [argv[-1]]

    @classmethod
    def _mux_rsync(cls, settings: Settings, h: SshHost, cube: Path) -> list[str]:
        """A bare `rsync -a --dry-run` of our unchanged cube to our remote folder, through our warm master."""
        rsh = shlex.join(cls._mux_ssh(settings, h)[:-1])
        return ["rsync", "-a", "--dry-run", "--delete", "--filter=P /workspace/***", "--exclude=/workspace/hosts/",
                "-e", rsh, f"{cube}/", f"{h.user.name}@{h.address}:{h.user.home}/mlcube/{remote_name(str(cube))}/"]

    @staticmethod
    def _baseline_rsync(h: SshHost, cube: Path) -> list[str]:
        rsh = shlex.join(ssh_argv(h)[:-1])
        return ["rsync", "-a", "--delete", "--filter=P /workspace/***", "--exclude=/workspace/hosts/", "-e", rsh,
                f"{cube}/",
                f"{h.user.name}@{h.address}:mlcube-baseline/{cube.name}/"]

    def _plain_playbook(self, settings: Settings, job: Job) -> Result:
        """The same playbook, inventory and extra-vars through ansible-playbook directly (no ansible-runner)."""
        inventory, extravars = render(settings, job)
        private = Path(tempfile.mkdtemp(prefix="bench-plain-", dir=self.lab.workdir))
        (private / "inventory.yml").write_text(yaml.safe_dump(inventory))
        (private / "extravars.json").write_text(json.dumps(extravars))
        env = dict(os.environ, **execute.environment(settings.host_key_checking != "off"))
        result = run_process([str(ANSIBLE_PLAYBOOK), "-i", str(private / "inventory.yml"), "-e",
                              f"@{private / 'extravars.json'}", "-f", str(forks_for(settings, "run")),
                              str(assets.playbook("run"))], env=env, cwd=private)
        shutil.rmtree(private, ignore_errors=True)
        return result

    def task_costs(self) -> None:
        """What one task costs the controller per host: synthetic plays on the 8 hosts, through ansible-playbook.

        The same inventory and ssh options as ours (render + the fleet inventory file); `set_fact` tasks never
        connect, `stat` tasks ship a module to every host through the (warm) connection masters.
        """
        lab = self.lab
        settings = lab.settings_of(lab.fleet_settings_files[8])
        private = Path(tempfile.mkdtemp(prefix="bench-tasks-", dir=lab.workdir))
        inventory, _ = render(settings, lab.job(lab.cubes["ours-fleet-8"]))
        (private / "inventory.yml").write_text(yaml.safe_dump(inventory))
        plays = {
            "empty": [],
            "set_fact-x20": [{"ansible.builtin.set_fact": {f"x{i}": i}} for i in range(20)],
            "stat-x5": [{"ansible.builtin.stat": {"path": "/", "get_checksum": False}} for _ in range(5)],
        }
        for name, tasks in plays.items():
            (private / f"{name}.yml").write_text(yaml.safe_dump(
                [{"hosts": "all", "gather_facts": False, "tasks": tasks}], sort_keys=False))
        env = dict(os.environ, **execute.environment(settings.host_key_checking != "off"))
        for _ in range(self.reps_slow):
            for name in plays:
                self.record(f"t.8.{name}", run_process(
                    [str(ANSIBLE_PLAYBOOK), "-i", str(private / "inventory.yml"), "-i", str(settings.inventory),
                     "-f", str(forks_for(settings, "run")), str(private / f"{name}.yml")], env=env, cwd=private))
        shutil.rmtree(private, ignore_errors=True)

    def cleanup_remote(self) -> None:
        """Drop the 100 MB outputs (the rest stays: the next benchmark run reuses it)."""
        self.drop_blobs()
