# Prints the installed version (or null) of each distribution named as an argument, as JSON.
# Runs with the environment's own Python, so it sees exactly what that environment has installed.
import json
import sys

try:
    from importlib import metadata
except ImportError:  # Python < 3.8
    import importlib_metadata as metadata  # type: ignore

found = {}  # type: dict[str, object]
for name in sys.argv[1:]:
    try:
        found[name] = metadata.version(name)
    except Exception:
        found[name] = None
print(json.dumps(found))
