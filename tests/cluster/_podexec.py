"""Container init of the pod runner (TEST-ONLY): set up one container's namespaces, then exec it.

The runner starts `ip netns exec <pod netns> unshare --uts -- python -I _podexec.py <spec.json>`:
`ip netns exec` enters the pod's network namespace in a new mount namespace (binding the pod's
hosts file over /etc/hosts), `unshare --uts` gives it its own hostname. Here we set the hostname,
bind-mount the volumes at their mountPaths (visible only to this container), enter workingDir and
exec the command with exactly the pod's environment. Standard library only: runs with `-I`.
"""

import json
import os
import socket
import subprocess
import sys


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    socket.sethostname(spec["hostname"])
    # Parents before children, so a mount at /data/x is not hidden by a later one at /data.
    for mount in sorted(spec["mounts"], key=lambda m: m["target"].count("/")):
        subprocess.run(["mount", "--bind", mount["source"], mount["target"]], check=True)
        if mount["readOnly"]:
            subprocess.run(["mount", "-o", "remount,bind,ro", mount["target"]], check=True)
    os.chdir(spec["workdir"])
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as e:
        # What a container runtime reports as StartError; 127 is the shell's "not found".
        print(f"podexec: cannot exec {argv[0]!r}: {e}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main()
