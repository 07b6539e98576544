"""A whole test cluster: pod network, control plane and pod runner, started and stopped together.

Shared by the pytest fixtures (one per test session) and `scripts/cluster up` (one per developer).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.controlplane import ControlPlane, find_bin_dir
from tests.cluster.network import PodNetwork, check_available
from tests.cluster.podrunner import NodeSpec, PodRunner
from tests.cluster.rest import Rest

log = logging.getLogger("cluster")
DEFAULT_NODES = (NodeSpec("gpu-node-0"), NodeSpec("gpu-node-1"))


@dataclass
class Cluster:
    state_dir: Path
    nodes: Sequence[NodeSpec] = DEFAULT_NODES
    extra_env: dict[str, str] = field(default_factory=dict)
    bin_dir: Path | None = None
    network: PodNetwork | None = None
    control_plane: ControlPlane | None = None
    runner: PodRunner | None = None
    startup_s: float = 0.0

    def start(self) -> Cluster:
        started = time.monotonic()
        bin_dir = self.bin_dir or find_bin_dir()
        check_available()
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.state_dir.mkdir(parents=True)
        try:
            self.network = PodNetwork()
            self.network.create()
            self.control_plane = ControlPlane(
                bin_dir, self.state_dir / "controlplane", bind_address=self.network.gateway
            )
            self.control_plane.start()
            self.runner = PodRunner(
                self.admin(),
                self.state_dir / "podrunner",
                self.network,
                self.control_plane.apiserver_port,
                self.nodes,
                extra_env=self.extra_env,
            )
            self.runner.start()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        log.info("cluster up in %.1f s: KUBECONFIG=%s", self.startup_s, self.kubeconfig)
        return self

    @property
    def kubeconfig(self) -> Path:
        assert self.control_plane is not None
        return self.control_plane.kubeconfig

    def admin(self, namespace: str = "default") -> Rest:
        return Rest.from_kubeconfig(self.kubeconfig).with_namespace(namespace)

    def stop(self) -> None:
        # Each step runs even when an earlier one fails: a half-started cluster must not leak
        # processes, network namespaces or mount points.
        if self.runner is not None:
            with contextlib.suppress(Exception):
                self.runner.stop()
        if self.control_plane is not None:
            with contextlib.suppress(Exception):
                self.control_plane.stop()
        if self.network is not None:
            with contextlib.suppress(Exception):
                self.network.destroy()
        self.runner = None
        self.network = None

    def env(self) -> dict[str, str]:
        assert self.control_plane is not None
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
