# Prints, as JSON, the free space (MB, for this user) of the file system that holds remote_root (its nearest
# existing folder), and how much of the cube is already there (MB): the upload only needs the difference.
# Arguments: remote_root, the cube's remote folder.
import json
import os
import sys

MB = 1024 * 1024


def free_mb(path):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    stat = os.statvfs(path or "/")
    return stat.f_bavail * stat.f_frsize // MB


def size_mb(path):
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total // MB


root, cube = os.path.expanduser(sys.argv[1]), os.path.expanduser(sys.argv[2])
print(json.dumps({"free_mb": free_mb(root), "there_mb": size_mb(cube)}))
