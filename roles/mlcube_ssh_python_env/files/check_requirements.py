# Prints which of the requirements given as arguments are not satisfied, and pip's version, as JSON.
# Runs with the environment's own Python, so it sees exactly what that environment has installed.
import json
import sys

try:
    from importlib import metadata
except ImportError:  # Python < 3.8
    import importlib_metadata as metadata  # type: ignore
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

missing = []
for spec in sys.argv[1:]:
    try:
        req = Requirement(spec)
        version = metadata.version(req.name)
    except Exception:  # unparsable (URL, path) or not installed: let pip decide
        missing.append(spec)
        continue
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        missing.append(spec)
try:
    pip_version = metadata.version("pip")
except Exception:
    pip_version = None
print(json.dumps({"missing": missing, "pip": pip_version}))
