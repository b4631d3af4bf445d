# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""A host's slots for runs: its GPUs (found with nvidia-smi, or declared) and a number of CPU-only slots, each
with a lease file that a run holds (flock) for as long as it goes on.

Leases live in one folder shared by every user of the host (default /tmp/mlcube-ssh-leases, mode 1777), so two
controllers or two users never hand out the same GPU: a lease is a kernel lock on a file, taken atomically
(flock LOCK_EX|LOCK_NB) and released by the kernel when the run's supervisor ends, however it ends. Nothing
runs on the host to keep them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import subprocess

LEASES_DIR = "/tmp/mlcube-ssh-leases"
GPU_QUERY = ["--query-gpu=index,uuid,memory.used,memory.total", "--format=csv,noheader,nounits"]
APPS_QUERY = ["--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"]
# Asked before and after each attempt of a run that may be retried: a GPU's uncorrected ECC errors since the
# driver loaded ("[N/A]" on GPUs without ECC), and whether it still answers.
HEALTH_QUERY = ["--query-gpu=index,uuid,ecc.errors.uncorrected.volatile.total", "--format=csv,noheader,nounits"]
# What nvidia-smi shows in place of a value (or says) for a GPU that fell off the bus or needs a reset.
FAULT_TEXTS = ("gpu is lost", "requires reset", "unknown error", "fallen off the bus")
# A task's own output that names a device fault (CUDA's and the driver's wording). Which GPU is not said.
DEVICE_SIGNATURES = re.compile(
    r"uncorrectable ECC error|CUDA_ERROR_ECC_UNCORRECTABLE|cudaErrorECCUncorrectable|GPU is lost|"
    r"fallen off the bus|GPU requires reset|NVRM: Xid", re.IGNORECASE)


def find_nvidia_smi(name):
    """nvidia-smi on PATH, or in the folders a login shell adds (~/.local/bin, ~/bin); None when absent."""
    if "/" in name:
        path = os.path.expanduser(name)
        return path if os.access(path, os.X_OK) else None
    extra = [os.path.expanduser("~/.local/bin"), os.path.expanduser("~/bin")]
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", os.defpath)] + extra))


def _int(text):
    try:
        return int(float(text.strip()))
    except ValueError:
        return None


def discover_gpus(run_command, nvidia_smi):
    """(gpus, error): each GPU's index, uuid, memory in use and total (MiB) and the pids of its processes."""
    found = find_nvidia_smi(nvidia_smi)
    if found is None:
        return [], None
    rc, out, err = run_command([found] + GPU_QUERY)
    if rc != 0:
        return [], "%s failed (exit code %s): %s" % (found, rc, (err or out).strip().splitlines()[-1:] or "")
    gpus = []
    for line in out.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4 or _int(fields[0]) is None:
            continue
        gpus.append({"index": _int(fields[0]), "uuid": fields[1], "memory_used_mib": _int(fields[2]),
                     "memory_total_mib": _int(fields[3]), "processes": []})
    rc, out, err = run_command([found] + APPS_QUERY)
    if rc != 0:
        return gpus, "%s cannot list GPU processes (exit code %s): %s" % (found, rc, (err or out).strip())
    by_uuid = {gpu["uuid"]: gpu for gpu in gpus}
    for line in out.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) >= 2 and fields[0] in by_uuid and _int(fields[1]) is not None:
            by_uuid[fields[0]]["processes"].append(_int(fields[1]))
    return gpus, None


def gpus_of_host(run_command, nvidia_smi, declared):
    """(gpus, source, error): the declared GPUs (a list of indices) or those nvidia-smi reports."""
    if declared is not None:
        return [{"index": int(index), "uuid": "", "memory_used_mib": None, "memory_total_mib": None,
                 "processes": []} for index in declared], "declared", None
    gpus, error = discover_gpus(run_command, nvidia_smi)
    return gpus, "nvidia-smi" if find_nvidia_smi(nvidia_smi) else "none", error


def cpu_slots_of_host(limit):
    """The per-host limit of CPU-only runs; 0 means one per CPU of the host."""
    return limit if limit > 0 else (os.cpu_count() or 1)


def ensure_dir(path):
    """The shared leases folder: created 1777 (like /tmp) so that every user of the host can take leases."""
    try:
        os.makedirs(path)
        os.chmod(path, 0o1777)
    except FileExistsError:
        pass
    if not os.path.isdir(path):
        raise OSError(errno.ENOTDIR, "not a folder", path)


def lease_path(folder, kind, number):
    return os.path.join(folder, "%s-%d.lease" % (kind, number))


def held(path):
    """Whether some run holds the lease (without taking it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def take(path):
    """Take a lease atomically: an open file descriptor holding the lock, or None when another run holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o666)  # another user must be able to open it to take it later
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def waiters(folder):
    """The queued runs waiting for slots on this host, oldest first: the names of the waiting files whose
    waiting supervisor still holds them (a dead waiter's file is removed where we may)."""
    folder = os.path.join(folder, "waiting")
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    live = []
    for name in names:
        path = os.path.join(folder, name)
        if held(path):
            live.append(name)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
    return live


def wait_in_line(folder, name):
    """Join the queue: a waiting file whose lock the waiting supervisor holds (a descriptor) until it starts."""
    ensure_dir(os.path.join(folder, "waiting"))
    fd = take(os.path.join(folder, "waiting", name))
    if fd is None:
        raise OSError(errno.EEXIST, "already waiting", name)
    return fd


def record_faulty(folder, index, uuid, why, run, when):
    """Note in the leases folder that a run found GPU `index` faulty (`slots` shows it; runs do not avoid it:
    what to do with the GPU is the operator's call). One file per user and run: in the sticky folder nobody
    may replace another user's file. Best effort: a note that cannot be written is no reason to fail the run."""
    try:
        faulty = os.path.join(folder, "faulty")
        ensure_dir(faulty)
        path = os.path.join(faulty, "gpu-%d-%d-%s.json" % (index, os.getuid(), run))
        with open(path + ".tmp", "w") as handle:
            json.dump({"gpu": index, "uuid": uuid, "why": why, "run": run, "uid": os.getuid(), "at": when}, handle)
        os.chmod(path + ".tmp", 0o644)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


def faulty_notes(folder):
    """GPU index -> the newest note of a run that found it faulty (record_faulty)."""
    notes = {}
    try:
        names = os.listdir(os.path.join(folder, "faulty"))
    except OSError:
        return notes
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, "faulty", name)) as handle:
                note = json.load(handle)
            index = int(note["gpu"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if index not in notes or str(note.get("at")) > str(notes[index].get("at")):
            notes[index] = note
    return notes


def describe(folder, gpus, cpu_slots):
    """Every slot with its state: a GPU is `leased` (a run of ours holds it), `busy` (a process we did not
    start uses it: skipped) or `free`, and `faulty` is the newest note of a run that found it faulty (or None);
    CPU-only slots are `leased` or `free`."""
    notes = faulty_notes(folder)
    for gpu in gpus:
        gpu["faulty"] = notes.get(gpu["index"])
        if held(lease_path(folder, "gpu", gpu["index"])):
            gpu["state"] = "leased"
        elif gpu["processes"]:
            gpu["state"] = "busy"
        else:
            gpu["state"] = "free"
    cpus = [{"index": number, "state": "leased" if held(lease_path(folder, "cpu", number)) else "free"}
            for number in range(cpu_slots)]
    return {"gpus": gpus, "cpus": cpus}


def run_quietly(argv, timeout=60):
    """(rc, out, err) of a short command; a command that cannot start or hangs (nvidia-smi does on a GPU that
    fell off the bus) is an error, never an exception."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return 1, "", str(error)
    return done.returncode, done.stdout, done.stderr


def gpu_health(run_command, nvidia_smi):
    """({index: {uuid, ecc, fault}}, error), or (None, None) without nvidia-smi. `ecc` is the count of uncorrected
    ECC errors (None where not reported), `fault` what nvidia-smi shows instead of a value for a GPU that fell off
    the bus or needs a reset. A GPU it cannot reach at all is missing from the answer (and `error` says why)."""
    found = find_nvidia_smi(nvidia_smi)
    if found is None:
        return None, None
    rc, out, err = run_command([found] + HEALTH_QUERY)
    health = {}
    for line in out.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 2 or _int(fields[0]) is None:
            continue
        fault = next((field for field in fields[1:] if any(text in field.lower() for text in FAULT_TEXTS)), None)
        health[_int(fields[0])] = {"uuid": fields[1], "ecc": _int(fields[2]) if len(fields) > 2 else None,
                                   "fault": fault}
    error = None
    if rc != 0:
        lines = (err or out).strip().splitlines()
        error = "nvidia-smi failed (exit code %s)%s" % (rc, ": " + lines[-1] if lines else "")
    return health, error


def faulty_gpus(before, after, error, held):
    """{index: why} for each GPU in `held` found faulty after an attempt, from the answers of gpu_health before
    and after it: gone from nvidia-smi (matched by uuid), shown as lost / needing a reset / unknown error, or its
    uncorrected ECC error count rose. Without nvidia-smi (`after` None) nothing can be told: {}."""
    if after is None:
        return {}
    before = before or {}
    faulty = {}
    for index in held:
        then = before.get(index)
        uuid = then["uuid"] if then and then["uuid"] and then["uuid"].lower().startswith("gpu-") else ""
        now = next((entry for entry in after.values() if entry["uuid"] == uuid), None) if uuid else after.get(index)
        if now is None:
            faulty[index] = "gone from nvidia-smi" + (" (%s)" % error if error else "")
        elif now["fault"]:
            faulty[index] = "nvidia-smi shows %s" % now["fault"]
        elif then and then["ecc"] is not None and now["ecc"] is not None and now["ecc"] > then["ecc"]:
            faulty[index] = "uncorrected ECC errors rose from %d to %d" % (then["ecc"], now["ecc"])
    return faulty


def device_signature(text):
    """The first words of `text` (a failed task's output) that name a device fault, or None."""
    found = DEVICE_SIGNATURES.search(text)
    return found.group(0) if found else None
