# Writes the MLCube system settings file that the remote `mlcube` reads through MLCUBE_SYSTEM_SETTINGS, in
# MLCube's own format, with MLCube's own code: every installed runner with its default platform (so MLCube
# finds nothing to add and never rewrites the file), and the platform named by the second argument made of
# its runner's defaults with the given settings over them. Prints "changed" or "unchanged".
# Arguments: the file, the platform name, the settings as JSON. Runs with the environment's own Python.
import json
import os
import sys

from mlcube.platform import Platform
from omegaconf import OmegaConf

path, name, given = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
installed = Platform.get_installed_runners()
runner = given.get("runner") or name
if runner not in installed:
    sys.exit("platform_settings: MLCube runner %r is not installed in %s (installed: %s): add its package (e.g. "
             "mlcube-%s) to interpreter.requirements, or set platform_settings.runner"
             % (runner, sys.prefix, ", ".join(sorted(installed)) or "none", runner))
settings = OmegaConf.create({"runners": {}, "platforms": {}, "storage": {}})
for key in sorted(installed):
    settings.runners[key] = installed[key]["config"]
    settings.platforms[key] = installed[key]["runner_cls"].CONFIG.DEFAULT
platform = OmegaConf.merge(installed[runner]["runner_cls"].CONFIG.DEFAULT, OmegaConf.create(given))
platform.runner = runner
settings.platforms[name] = platform
text = OmegaConf.to_yaml(settings)
try:
    with open(path) as handle:
        same = handle.read() == text and os.stat(path).st_mode & 0o777 == 0o600
except OSError:
    same = False
if not same:
    temporary = "%s.%d.tmp" % (path, os.getpid())
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
print("unchanged" if same else "changed")
