# Prints, as JSON, which requirements are not satisfied in this Python environment, which dependencies of the
# installed ones are not (with the overrides applied), pip's version (null when pip is missing or broken), whether
# distutils is whole, where packages go (purelib), and where this Python looks for packages and their metadata
# (path: what the venv module's record of this check depends on, besides the files of the environment's python).
# Argument: one JSON object {"requirements": [...], "overrides": [...]}.
#
# Why overrides: a requirement can pin a dependency whose metadata current pip refuses to read (mlcube 0.0.9
# pins omegaconf==2.1.0, whose `PyYAML>=5.1.*` pip 24.1 and later reject), so pip can't resolve it at all.
# The role then installs the requirements with --no-deps and their dependencies from this list, where an
# override replaces every direct dependency of the same name (what uv calls an override).
# Runs with the environment's own Python, so it sees exactly what that environment has installed.
import json
import re
import sys

sys.path[:] = [entry for entry in sys.path if entry]  # not the folder this runs in (`python -c` adds it)

try:
    from importlib import metadata
except ImportError:  # Python < 3.8
    import importlib_metadata as metadata  # type: ignore
try:
    from packaging.requirements import Requirement
except ImportError:
    try:
        from pip._vendor.packaging.requirements import Requirement
    except ImportError:  # no pip yet (a virtualenv made without it): every requirement counts as missing
        Requirement = None


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(spec):
    if Requirement is None:
        return None
    try:
        return Requirement(spec)
    except Exception:  # a URL, a path, or metadata no parser accepts: let pip decide
        return None


def satisfied(req):
    try:
        version = metadata.version(req.name)
    except Exception:
        return False
    return not req.specifier or req.specifier.contains(version, prereleases=True)


def wanted(req, extras):
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in [""] + sorted(extras))


def main():
    given = json.loads(sys.argv[1])
    requirements = given.get("requirements") or []
    overrides = {}
    for spec in given.get("overrides") or []:
        req = parse(spec)
        if req is not None:
            overrides[canonical(req.name)] = spec
    missing, dependencies, listed = [], [], set()
    parsed = []
    for spec in requirements:
        req = parse(spec)
        if req is None or not satisfied(req):
            missing.append(spec)
        if req is not None:
            listed.add(canonical(req.name))
            parsed.append(req)
    seen = set()
    for req in parsed:
        try:
            declared = metadata.requires(req.name) or []
        except Exception:  # not installed yet: its dependencies are known after the install
            continue
        for text in declared:
            dep = parse(text)
            if dep is None or not wanted(dep, req.extras):
                continue
            name = canonical(dep.name)
            if name in listed or name in seen:
                continue
            seen.add(name)
            spec = overrides.get(name, str(dep).split(";", 1)[0].strip())
            if not satisfied(parse(spec) or dep):
                dependencies.append(spec)
    try:  # a pip whose files are half there (an interrupted install) counts as missing
        import importlib.util
        pip_version = metadata.version("pip") if importlib.util.find_spec("pip._internal.cli.main") else None
    except Exception:
        pip_version = None
    try:  # Debian's Python 3.9 without python3-distutils, and 3.12+, have no (whole) distutils
        import importlib.util
        distutils = bool(importlib.util.find_spec("distutils.cmd") and importlib.util.find_spec("distutils.dir_util"))
    except Exception:
        distutils = False
    import site
    import sysconfig
    path = list(sys.path)
    if getattr(site, "ENABLE_USER_SITE", False) and getattr(site, "USER_SITE", None):
        path.append(site.USER_SITE)  # looked in once it exists (a virtualenv with the system's packages)
    print(json.dumps({"missing": missing, "dependencies": dependencies, "pip": pip_version, "distutils": distutils,
                      "purelib": sysconfig.get_paths()["purelib"], "path": path}))


main()
