"""`scripts/cluster up|down|env|status`: the test cluster for a developer's shell.

`up` starts a detached server process (`serve`) that runs the same Cluster the pytest fixtures
use, waits until it is ready, and prints `export KUBECONFIG=...`. `down` stops it; teardown removes
every process, network namespace and mount point. State: $LLAMAFT_CLUSTER_DIR or
~/.cache/llamaft-cluster (serve.log there has the server's output).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.cluster.podrunner import NodeSpec

STATE_DIR = Path(os.environ.get("LLAMAFT_CLUSTER_DIR", Path.home() / ".cache" / "llamaft-cluster"))
READY = "ready.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ready(state_dir: Path) -> dict[str, object] | None:
    path = state_dir / READY
    if not path.exists():
        return None
    info: dict[str, object] = json.loads(path.read_text())
    if not _alive(int(str(info["pid"]))):
        path.unlink()
        return None
    return info


def _nodes(count: int, gpus: int) -> list[NodeSpec]:
    return [NodeSpec(f"gpu-node-{i}", gpus=gpus) for i in range(count)]


def serve(args: argparse.Namespace) -> int:
    from tests.cluster.session import Cluster

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cluster = Cluster(args.state_dir / "cluster", nodes=_nodes(args.nodes, args.gpus))
    try:
        cluster.start()
        assert cluster.control_plane is not None
        info = {
            "pid": os.getpid(),
            "kubeconfig": str(cluster.kubeconfig),
            "server": cluster.control_plane.server,
            "startup_s": round(cluster.startup_s, 1),
        }
        (args.state_dir / READY).write_text(json.dumps(info))
        while not stop.wait(2):
            cluster.control_plane.check_alive()
    finally:
        (args.state_dir / READY).unlink(missing_ok=True)
        cluster.stop()
    return 0


def up(args: argparse.Namespace) -> int:
    args.state_dir.mkdir(parents=True, exist_ok=True)
    info = _ready(args.state_dir)
    if info is None:
        started = time.monotonic()
        log = (args.state_dir / "serve.log").open("wb")
        cmd = [
            sys.executable,
            "-m",
            "tests.cluster.cli",
            "--state-dir",
            str(args.state_dir),
            "serve",
            "--nodes",
            str(args.nodes),
            "--gpus",
            str(args.gpus),
        ]
        repo = Path(__file__).resolve().parents[2]
        proc = subprocess.Popen(
            cmd,
            cwd=repo,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(repo)},
        )
        while (info := _ready(args.state_dir)) is None:
            if proc.poll() is not None or time.monotonic() - started > args.timeout:
                tail = (args.state_dir / "serve.log").read_text(errors="replace")[-3000:]
                print(f"cluster failed to start:\n{tail}", file=sys.stderr)
                if proc.poll() is None:
                    proc.terminate()
                return 1
            time.sleep(0.2)
        print(f"# cluster up in {time.monotonic() - started:.1f} s", file=sys.stderr)
    print(f"export KUBECONFIG={info['kubeconfig']}")
    return 0


def down(args: argparse.Namespace) -> int:
    info = _ready(args.state_dir)
    if info is None:
        print("# no cluster running", file=sys.stderr)
        return 0
    pid = int(str(info["pid"]))
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    print(
        "# cluster stopped" if not _alive(pid) else f"# server {pid} still running", file=sys.stderr
    )
    return 0 if not _alive(pid) else 1


def env(args: argparse.Namespace) -> int:
    info = _ready(args.state_dir)
    if info is None:
        print("# no cluster running: scripts/cluster up", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={info['kubeconfig']}")
    return 0


def status(args: argparse.Namespace) -> int:
    info = _ready(args.state_dir)
    if info is None:
        print("not running")
        return 1
    print(f"running: pid {info['pid']}, server {info['server']}, up in {info['startup_s']} s")
    return subprocess.call(
        ["kubectl", "get", "nodes", "-o", "wide"],
        env={**os.environ, "KUBECONFIG": str(info["kubeconfig"])},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("up", up), ("serve", serve)):
        p = sub.add_parser(name, help="start the cluster" if name == "up" else argparse.SUPPRESS)
        p.add_argument("--nodes", type=int, default=2, help="GPU nodes to register (default 2)")
        p.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node (default 8)")
        p.add_argument("--timeout", type=float, default=120, help="seconds to wait for readiness")
        p.set_defaults(func=func)
    for name, func, text in (
        ("down", down, "stop the cluster"),
        ("env", env, "print export KUBECONFIG=..."),
        ("status", status, "show whether it runs, and its nodes"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=func)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
