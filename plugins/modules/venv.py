#!/usr/bin/python
# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Bring the remote Python environment of MLCube into a known state, from whatever a failed attempt left."""

from __future__ import annotations

DOCUMENTATION = r"""
module: venv
short_description: Check, repair and create the virtualenv that runs MLCube, without root
description:
  - With O(interpreter_type=virtualenv), looks at O(venv_dir) and repairs what a failed or interrupted attempt
    left before it creates anything. A folder whose C(bin/python) is missing or no longer runs (a half-made
    virtualenv, or one whose base Python went away with an OS upgrade) is removed and created again. A
    folder that is not a virtualenv (no C(pyvenv.cfg)) is never removed.
  - Creates the virtualenv without pip, with the first of C(python -m venv --without-pip), C(python -m
    virtualenv --no-pip) and a built-in way (the C(pyvenv.cfg) layout that Python's own C(site) module
    reads) that works. So neither the C(venv) module nor C(ensurepip) (Debian's C(python3-venv)) is needed.
    The caller then installs pip from a wheel (RV(pip) is empty when it has to).
  - Returns which of O(requirements) are not satisfied in the environment, as the O(check_script) says.
  - Where the environment's Python has no whole C(distutils) (Debian's Python 3.9 without C(python3-distutils),
    Python 3.12 and later), writes a C(.pth) line that lets pip work without it, and adds C(setuptools)
    (whose C(distutils) mlcube 0.0.9 imports) to RV(missing).
  - With O(probe), changes nothing and returns in RV(plan) what a run without it would do, and in RV(problem)
    why it would fail (doctor uses it, so that doctor and configure give the same reason).
  - With O(interpreter_type=virtualenv), a check that finds everything in place (no requirement or dependency
    missing, pip there) is recorded in C(.mlcube-ssh-ansible-check.json) in O(venv_dir), with what its answer
    depends on - O(check_script), O(check_input), the C(PYTHON*) environment variables, and the inode, size,
    modification and change times of C(pyvenv.cfg), of C(bin/python) and what it links to, and of every folder
    on the environment's C(sys.path) (site-packages among them; pip adds or removes a C(.dist-info) folder there
    with every install, upgrade or removal). While none of these changed, the next call answers from the record
    without starting the environment's Python (RV(checked) says which). A check that started less than 2
    seconds after a change to one of these is not recorded (a file system's clock may be that coarse), nor is
    anything in probe or check mode. A change inside a package's folder that leaves site-packages as it was
    (editing a C(METADATA) by hand) goes unseen; remove the record after such a change.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  interpreter_type:
    description: Use O(python) as it is (V(system)), or a virtualenv in O(venv_dir) (V(virtualenv)).
    type: str
    choices: [system, virtualenv]
    required: true
  python:
    description: The base Python (the system type's, or the one that creates the virtualenv), a name or a path.
    type: path
    required: true
  venv_dir:
    description: The virtualenv folder (ignored for the system type).
    type: path
    required: true
  requirements:
    description: pip requirements, for RV(plan) and RV(missing).
    type: list
    elements: str
    default: []
  check_script:
    description:
      - Python code that the environment's Python runs with O(check_input) as its argument. It prints JSON
        with C(missing), C(dependencies) and C(pip) (the role C(mlcube.ssh.mlcube_ssh_python_env) passes
        its C(check_requirements.py)).
    type: str
    required: true
  check_input:
    description: The argument of O(check_script).
    type: str
    required: true
  min_python:
    description: The oldest base Python accepted.
    type: str
    default: '3.8'
  min_free_mb:
    description: Free space (MB) that a new virtualenv or an install needs.
    type: int
    default: 100
  probe:
    description: Change nothing; report the plan and the problem.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Works as O(probe), but fails when there is a problem.
"""

EXAMPLES = r"""
- name: Make sure the virtualenv is there and say what it lacks
  mlcube.ssh.venv:
    interpreter_type: virtualenv
    python: python3
    venv_dir: ~/.mlcube-ssh-ansible/venv
    requirements: [mlcube==0.0.9, mlcube-docker==0.0.9]
    check_script: "{{ lookup('ansible.builtin.file', 'check_requirements.py') }}"
    check_input: "{{ {'requirements': ['mlcube==0.0.9', 'mlcube-docker==0.0.9'], 'overrides': []} | to_json }}"
  register: environment
"""

RETURN = r"""
env_python:
  description: The Python that runs MLCube.
  returned: always
  type: str
python_version:
  description: Version of the base Python.
  returned: when it runs
  type: str
tool:
  description: "What creates the virtualenv: V(existing), V(venv), V(virtualenv) or V(built-in)."
  returned: always
  type: str
repaired:
  description: What was wrong with an existing folder (empty when nothing was).
  returned: always
  type: str
pip:
  description: pip's version in the environment, empty when pip is missing or broken.
  returned: always
  type: str
missing:
  description: Requirements not satisfied.
  returned: always
  type: list
  elements: str
dependencies:
  description: Their dependencies not satisfied (the check script's list).
  returned: always
  type: list
  elements: str
plan:
  description: What configure does (or did) here, in words.
  returned: always
  type: str
problem:
  description: Why configure cannot set up the environment (empty when it can).
  returned: always
  type: str
checked:
  description: "How RV(missing), RV(dependencies) and RV(pip) were found: V(python) (the environment's Python ran
    O(check_script)), V(record) (the record of an earlier complete check, nothing it depends on changed since)
    or empty (no environment yet)."
  returned: always
  type: str
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

from ansible.module_utils.basic import AnsibleModule

# Run by the base Python: what it is and which tools it has. Must run on any Python 3 (and say its version).
PROBE = r"""
import json, sys
try:
    import importlib.util as u
    def has(name):
        try:
            return u.find_spec(name) is not None
        except Exception:
            return False
except ImportError:
    def has(name):
        return False
print(json.dumps({"version": ".".join(map(str, sys.version_info[:3])), "executable": sys.executable,
                  "venv": has("venv"), "ensurepip": has("ensurepip"), "virtualenv": has("virtualenv")}))
"""

# pip < 24.1 on Python < 3.10 finds its install locations through distutils unless this flag is set; Debian's
# Python 3.9 without python3-distutils has only a stub of distutils. A .pth line runs at every start.
PIP_SYSCONFIG_PTH = "mlcube_ssh_ansible_pip_sysconfig.pth"
PIP_SYSCONFIG_LINE = "import sysconfig; sysconfig._PIP_USE_SYSCONFIG = True\n"
# mlcube 0.0.9 imports distutils.dir_util: where the Python has no whole distutils, setuptools brings its own.
DISTUTILS_PROVIDER = "setuptools"

# The last check of a virtualenv that found everything in place, and what its answer depends on (DOCUMENTATION).
RECORD = ".mlcube-ssh-ansible-check.json"
RECORD_FORMAT = 1  # part of the record's key: a new layout of the record makes older ones not match
# A change this close before the check started may share its time stamp with one during the check (a file
# system's clock can be as coarse as 2 s): such a check is not recorded.
SETTLED_NS = 2 * 10 ** 9

VENV_ENTRIES = {"bin", "lib", "lib64", "include", "share", "pyvenv.cfg", "local", RECORD}


def _last_lines(text, count=3):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def _run(argv, timeout=600):
    """(rc, stdout, stderr); rc 127 with the reason when the program cannot be started."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, universal_newlines=True, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return 127, "", str(error)
    return proc.returncode, proc.stdout, proc.stderr


def _version(text):
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def _free_mb(path):
    """Free space for this user in the file system that holds `path` (or its nearest existing parent)."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        stat = os.statvfs(path or "/")
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize // (1024 * 1024)


def _looks_like_venv(path):
    """Safe to remove and create again: it has pyvenv.cfg, or holds nothing but what a virtualenv holds."""
    try:
        entries = set(os.listdir(path))
    except OSError:
        return False
    return "pyvenv.cfg" in entries or entries <= VENV_ENTRIES


def _check(env_python, check):
    """(state, detail): ('ok', {missing, dependencies, pip}) or ('broken', why) for the environment's Python.

    `check` is (script, input): the role's check_requirements.py and its argument."""
    if not os.path.exists(env_python):
        target = os.readlink(env_python) if os.path.islink(env_python) else ""
        return "broken", ("its python links to %s, which no longer exists" % target) if target else "it has no python"
    rc, out, err = _run([env_python, "-c", check[0], check[1]])
    if rc != 0:
        return "broken", "its python does not run: " + (_last_lines(err or out, 2) or "exit code %d" % rc)
    try:
        found = json.loads(out.strip().splitlines()[-1])
        return "ok", dict(missing=found.get("missing") or [], dependencies=found.get("dependencies") or [],
                          pip=found.get("pip") or "", distutils=found.get("distutils", True),
                          purelib=found.get("purelib") or "", path=found.get("path"), checked="python")
    except (ValueError, IndexError):
        return "broken", "its python printed no result: " + _last_lines(out + err, 2)


def _record_key(venv_dir, check):
    """What the check's answer depends on besides files: the check itself, the folder, the Python variables."""
    python_variables = sorted((name, value) for name, value in os.environ.items() if name.startswith("PYTHON"))
    text = json.dumps([RECORD_FORMAT, os.path.realpath(venv_dir), check[0], check[1], python_variables])
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _stat(path, follow):
    """What changes when the file or folder is replaced or changed (a folder: an entry added or removed)."""
    try:
        found = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return [found.st_mtime_ns, found.st_ctime_ns, found.st_size, found.st_ino, found.st_dev]


def _signature(places):
    """[path, follow links, its _stat] for each (path, follow) in `places`."""
    return [[path, follow, _stat(path, follow)] for path, follow in places]


def _places(venv_dir, env_python, sys_path):
    """The files and folders a check's answer depends on: pyvenv.cfg, the python (the link and what it links
    to) and the folders Python looks in for packages and their metadata (`sys_path`, as the check printed it)."""
    return ([(os.path.join(venv_dir, "pyvenv.cfg"), True), (env_python, False), (env_python, True)]
            + [(path, True) for path in sys_path])


def _recorded(venv_dir, env_python, key):
    """The answer of the last complete check when nothing it depends on changed since, else None."""
    try:
        with open(os.path.join(venv_dir, RECORD)) as handle:
            record = json.load(handle)
        signature = record["signature"]
        places = [(path, follow) for path, follow, _stat in signature]
        if record["key"] != key or places[:3] != _places(venv_dir, env_python, []) \
                or _signature(places) != signature:
            return None
        answer = record["answer"]
        if not isinstance(answer["pip"], str) or not isinstance(answer["purelib"], str):
            return None
        return dict(missing=[], dependencies=[], pip=answer["pip"], distutils=bool(answer["distutils"]),
                    purelib=answer["purelib"], checked="record")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # any doubt: the check runs
        return None


def _keep_record(venv_dir, env_python, key, found, started_ns):
    """Record a check that found everything in place, when nothing it depends on changed around its start;
    otherwise remove any record (it no longer matches anyway)."""
    path = os.path.join(venv_dir, RECORD)
    sys_path = found.get("path")
    signature = None
    if isinstance(sys_path, list) and all(isinstance(entry, str) and os.path.isabs(entry) for entry in sys_path):
        signature = _signature(_places(venv_dir, env_python, sys_path))
    settled = signature is not None and all(
        stat is None or max(stat[0], stat[1]) <= started_ns - SETTLED_NS for _path, _follow, stat in signature)
    if not settled:
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    answer = {name: found[name] for name in ("pip", "distutils", "purelib")}
    temporary = "%s.%d.tmp" % (path, os.getpid())
    try:
        with open(temporary, "w") as handle:
            json.dump(dict(key=key, signature=signature, answer=answer), handle)
        os.replace(temporary, path)  # whole or not at all, for a reader at the same time
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def _create_builtin(venv_dir, probe):
    """The layout `python -m venv --without-pip` makes, written directly: Python's site module reads
    pyvenv.cfg next to bin/ by itself, so this needs nothing from the venv module or ensurepip."""
    executable = probe["executable"]
    major_minor = ".".join(probe["version"].split(".")[:2])
    os.makedirs(os.path.join(venv_dir, "bin"))
    os.makedirs(os.path.join(venv_dir, "lib", "python" + major_minor, "site-packages"))
    if sys.maxsize > 2 ** 32:
        os.symlink("lib", os.path.join(venv_dir, "lib64"))
    for name in ("python", "python3", "python" + major_minor):
        os.symlink(executable, os.path.join(venv_dir, "bin", name))
    with open(os.path.join(venv_dir, "pyvenv.cfg"), "w") as handle:
        handle.write("home = %s\ninclude-system-site-packages = false\nversion = %s\n"
                     % (os.path.dirname(executable), probe["version"]))


def _create(python, venv_dir, probe, check):
    """Try each way in turn; return (tool, '') or ('', why every way failed)."""
    tried = []
    ways = []
    if probe.get("venv"):
        ways.append(("venv", [python, "-m", "venv", "--without-pip", venv_dir]))
    else:
        tried.append("venv: not in this Python")
    if probe.get("virtualenv"):
        ways.append(("virtualenv", [python, "-m", "virtualenv", "--no-pip", "--no-setuptools", "--no-wheel",
                                    "--quiet", venv_dir]))
    else:
        tried.append("virtualenv: not installed")
    ways.append(("built-in", None))
    parent = os.path.dirname(venv_dir)
    os.makedirs(parent, exist_ok=True)
    for tool, argv in ways:
        if os.path.lexists(venv_dir):
            shutil.rmtree(venv_dir, ignore_errors=True)
        if argv is None:
            try:
                _create_builtin(venv_dir, probe)
            except OSError as error:
                tried.append("built-in: %s" % error)
                continue
        else:
            rc, out, err = _run(argv)
            if rc != 0:
                tried.append("%s: %s" % (tool, _last_lines(err or out, 2) or "exit code %d" % rc))
                continue
        state, _found = _check(os.path.join(venv_dir, "bin", "python"), check)
        if state == "ok":
            return tool, ""
        tried.append("%s: the new virtualenv's python does not run" % tool)
    shutil.rmtree(venv_dir, ignore_errors=True)
    return "", "; ".join(tried)


def _without_distutils(found, requirements):
    """In a virtualenv whose Python lacks distutils: let pip work without it (the .pth line) and have setuptools
    installed with the requirements (its distutils). Returns (changed, the extra requirement or None)."""
    if found.get("distutils", True) or not found.get("purelib"):
        return False, None
    changed = False
    pth = os.path.join(found["purelib"], PIP_SYSCONFIG_PTH)
    try:
        with open(pth) as handle:
            current = handle.read()
    except OSError:
        current = ""
    if current != PIP_SYSCONFIG_LINE:
        os.makedirs(found["purelib"], exist_ok=True)
        with open(pth, "w") as handle:
            handle.write(PIP_SYSCONFIG_LINE)
        changed = True
    named = any(spec.split("=")[0].split("<")[0].split(">")[0].strip().lower() == DISTUTILS_PROVIDER
                for spec in requirements)
    return changed, None if named else DISTUTILS_PROVIDER


# The options; the action plugin checks them on the controller too, for a lean call (plugin_utils/lean.py).
ARGUMENT_SPEC = dict(
    interpreter_type=dict(type="str", choices=["system", "virtualenv"], required=True),
    python=dict(type="path", required=True),
    venv_dir=dict(type="path", required=True),
    requirements=dict(type="list", elements="str", default=[]),
    check_script=dict(type="str", required=True),
    check_input=dict(type="str", required=True),
    min_python=dict(type="str", default="3.8"),
    min_free_mb=dict(type="int", default=100),
    probe=dict(type="bool", default=False),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    probe_only = params["probe"] or module.check_mode
    python = params["python"]
    requirements = params["requirements"]
    check = (params["check_script"], params["check_input"])
    result = dict(changed=False, tool="existing", repaired="", pip="", missing=list(requirements), dependencies=[],
                  plan="", problem="", checked="python")

    def finish(problem="", **values):
        result.update(values)
        result["problem"] = problem
        if problem and not params["probe"]:
            module.fail_json(msg=problem, **{k: v for k, v in result.items() if k != "problem"})
        module.exit_json(**result)

    if params["interpreter_type"] == "system":
        result["env_python"] = python
        state, found = _check(shutil.which(python) or python, check)
        if state != "ok":
            finish("%s cannot run MLCube: %s; install Python 3.8 or newer there or set interpreter.python"
                   % (python, found))
        plan = "uses %s as it is" % python
        if found["missing"]:
            plan += "; pip installs %s into it" % " ".join(found["missing"])
        finish(missing=found["missing"], dependencies=found["dependencies"], pip=found["pip"], plan=plan)

    venv_dir = params["venv_dir"]
    env_python = os.path.join(venv_dir, "bin", "python")
    result["env_python"] = env_python
    key = _record_key(venv_dir, check)
    started_ns = time.time_ns()
    if not os.path.lexists(venv_dir):
        state, found = "missing", ""
        result["checked"] = ""
    else:
        found = _recorded(venv_dir, env_python, key)
        state, found = ("ok", found) if found else _check(env_python, check)
    if state == "ok":
        result["checked"] = found["checked"]
        missing, dependencies = found["missing"], found["dependencies"]
        plan = "virtualenv %s" % venv_dir
        if not found["pip"]:
            plan += " has no working pip: configure installs pip from the wheel it uploads, then %s" % " ".join(
                requirements)
            missing, dependencies = list(requirements), []
        elif missing or dependencies:
            plan += ": configure installs %s" % " ".join(missing + dependencies)
        else:
            plan += " has everything (%s)" % ", ".join(requirements)
        changed, extra = (False, None) if probe_only else _without_distutils(found, requirements)
        if extra and extra not in missing:
            missing = missing + [extra]
        result["changed"] = changed
        if not probe_only and found["checked"] == "python":
            complete = found["pip"] and not (missing or dependencies or changed)
            _keep_record(venv_dir, env_python, key, found if complete else {}, started_ns)
        free = _free_mb(venv_dir)
        if (missing or dependencies) and free is not None and free < params["min_free_mb"]:
            finish("only %d MB free for %s; installing %s needs about %d MB: free some space there or set "
                   "interpreter.location elsewhere" % (free, venv_dir, " ".join(missing), params["min_free_mb"]),
                   plan=plan)
        finish(missing=missing, dependencies=dependencies, pip=found["pip"], plan=plan)

    # Missing or broken: work out how to create it, then (unless probing) repair and create.
    if state == "broken":
        if not _looks_like_venv(venv_dir):
            finish("%s exists but is not a virtualenv (no pyvenv.cfg) and %s: move it away or set "
                   "interpreter.location/interpreter.name to another folder" % (venv_dir, found))
        result["repaired"] = "%s was broken (%s)" % (venv_dir, found)
    rc, out, err = _run([python, "-c", PROBE], timeout=60)
    try:
        probe = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        finish("%s does not run: %s; install Python 3.8 or newer there or set interpreter.python to it"
               % (python, _last_lines(err or out, 2) or "exit code %d" % rc))
    result["python_version"] = probe["version"]
    if _version(probe["version"]) < _version(params["min_python"]):
        finish("%s is Python %s; MLCube and Ansible's modules need %s or newer: install one and set "
               "interpreter.python to it" % (python, probe["version"], params["min_python"]))
    free = _free_mb(venv_dir)
    if free is not None and free < params["min_free_mb"]:
        finish("only %d MB free for %s; a virtualenv with %s needs about %d MB: free some space there or set "
               "interpreter.location elsewhere" % (free, venv_dir, " ".join(requirements), params["min_free_mb"]))
    tool = "venv" if probe["venv"] else "virtualenv" if probe["virtualenv"] else "built-in"
    what = {"venv": "python -m venv --without-pip", "virtualenv": "virtualenv --no-pip",
            "built-in": "the built-in way (no venv module, no virtualenv)"}
    plan = "%s virtualenv %s with %s (Python %s), pip from the wheel the controller uploads, then %s" % (
        "repairs" if state == "broken" else "creates", venv_dir, what[tool], probe["version"], " ".join(requirements))
    if result["repaired"]:
        plan = result["repaired"] + ": configure " + plan
    else:
        plan = "configure " + plan
    if probe_only:
        finish(tool=tool, plan=plan, missing=list(requirements), changed=True)
    if state == "broken":
        shutil.rmtree(venv_dir)
    tool, why = _create(python, venv_dir, probe, check)
    if not tool:
        finish("cannot create a virtualenv with %s (Python %s): %s; install python3-venv (Debian, Ubuntu) or "
               "virtualenv, or use interpreter.type: system with a Python that has MLCube"
               % (python, probe["version"], why))
    state, found = _check(env_python, check)
    missing = list(requirements)
    if state == "ok":
        _changed, extra = _without_distutils(found, requirements)
        missing += [extra] if extra else []
    finish(tool=tool, plan=plan, changed=True, missing=missing, pip="")


if __name__ == "__main__":
    main()
