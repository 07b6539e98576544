"""e2e fixtures: the operator as a real subprocess against the test control plane, datasets on
pod-runner volumes, and small helpers to read a LlamaFineTune's status.

The operator runs `python -m llamaft_operator --namespace <test ns> --standalone` with the admin
kubeconfig of the test's namespace and a GPU catalogue that matches the pod runner's fake nodes
(one "GPU" per node-slot, small CPU/memory requests so many pods fit).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.kube import Kube
from tests.cluster.podrunner import PodRunner

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "llamafinetune.yaml"
QUICKSTART = ROOT / "examples" / "data" / "quickstart"
API = "llamaft.io/v1alpha1"
KIND = "LlamaFineTune"
TEST_GPU = "test-gpu"
TEST_CATALOGUE: list[dict[str, Any]] = [
    {
        "name": TEST_GPU,
        "memoryGib": 80,
        "bf16Tflops": 312,
        "gpusPerNode": 1,
        "cpuPerNode": 2,
        "memoryGibPerNode": 4,
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
    }
]


def operator_env(kubeconfig: Path, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "LLAMAFT_GPU_CATALOGUE": json.dumps(TEST_CATALOGUE),
        "LLAMAFT_DEFAULT_GPU_TYPE": TEST_GPU,
        "LLAMAFT_TRAINER_IMAGE": "llamaft/trainer:test",
        "LLAMAFT_METRICS_PORT": "0",
        "LLAMAFT_LIVENESS_ENDPOINT": "off",
        "LLAMAFT_RESYNC_SECONDS": "10",
        "LLAMAFT_MISSING_RETRY_SECONDS": "2",
        "LLAMAFT_ERROR_BACKOFFS": "0.5,1,2",
        "LLAMAFT_CPU_STEP_CPU": "500m",
        "LLAMAFT_CPU_STEP_MEMORY": "1Gi",
        "LLAMAFT_PROGRESS_INTERVAL": "2",
        "LLAMAFT_MODEL_CACHE_SIZE": "1Gi",
    }
    env.update(overrides)
    return env


@dataclass
class Operator:
    """`llamaft-operator` as a subprocess; kill() is SIGKILL (no cleanup), stop() is SIGTERM."""

    namespace: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def start(self) -> Operator:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts} ---\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llamaft_operator",
                "--namespace",
                self.namespace,
                "--standalone",
            ],
            env={**self.env, **self.extra},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def crd(apply_crd: Callable[[Path | str], list[str]]) -> list[str]:
    return apply_crd(CRD)


@pytest.fixture
def operator(
    kube: Kube, crd: list[str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Operator]:
    op = Operator(kube.namespace, operator_env(kube.kubeconfig), tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()
    report = request.node.stash.get(_REPORT, None)
    if report is not None and report.failed:
        print(f"\n--- operator log ({op.log_path}) ---\n{op.logs()[-20000:]}")


_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_REPORT] = report
    return report


@pytest.fixture
def datasets(kube: Kube, podrunner: PodRunner, wait_for: Callable[..., Any]) -> Path:
    """PVC `datasets` with train.jsonl (48 rows), golden.jsonl (4 rows) and bad.jsonl."""
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "datasets", "namespace": kube.namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    directory: Path = wait_for(
        lambda: podrunner.claim_dir(kube.namespace, "datasets"), timeout=30, what="datasets bound"
    )
    train = (QUICKSTART / "train.jsonl").read_text().splitlines()[:48]
    golden = (QUICKSTART / "golden.jsonl").read_text().splitlines()[:4]
    (directory / "train.jsonl").write_text("\n".join(train) + "\n")
    (directory / "golden.jsonl").write_text("\n".join(golden) + "\n")
    bad = [*train[:5], '{"prompt": "no response here"}', *train[5:10]]
    (directory / "bad.jsonl").write_text("\n".join(bad) + "\n")
    return directory


def finetune(name: str, **spec: Any) -> dict[str, Any]:
    """A small LlamaFineTune: builtin tiny Llama, a few steps, quickstart data on `datasets`."""
    base: dict[str, Any] = {
        "model": {"name": "builtin:tiny-llama"},
        "dataset": {
            "source": {"pvc": {"claimName": "datasets", "path": "train.jsonl"}},
            "format": "prompt-response",
            "validationSplit": 0.1,
        },
        "method": "lora",
        "training": {"maxSteps": 4, "maxSeqLength": 128, "saveSteps": 2, "evalSteps": 2},
        "resources": {"gpuType": TEST_GPU},
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return {"apiVersion": API, "kind": KIND, "metadata": {"name": name}, "spec": base}


def get_ft(kube: Kube, name: str) -> dict[str, Any]:
    return kube.get(API, KIND, name)


def condition(kube: Kube, name: str, type_: str) -> dict[str, Any] | None:
    status = get_ft(kube, name).get("status") or {}
    for c in status.get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return None


def condition_is(kube: Kube, name: str, type_: str, status: str = "True") -> bool:
    found = condition(kube, name, type_)
    return found is not None and found["status"] == status


def jobs(kube: Kube, name: str) -> dict[str, dict[str, Any]]:
    return {
        j["metadata"]["name"]: j
        for j in kube.select("batch/v1", "Job", f"llamaft.io/finetune={name}")
    }


def pods(kube: Kube, name: str) -> list[dict[str, Any]]:
    return kube.select("v1", "Pod", f"llamaft.io/finetune={name}")


def trainer_supports(*commands: str) -> str | None:
    """None when `llamaft` has every command in the operator's contract, else what is missing."""
    missing = []
    for command in commands:
        args = command.split()
        result = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "llamaft"), *args, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        flags = [a for a in args if a.startswith("--")]
        if result.returncode != 0 or any(f not in result.stdout for f in flags):
            missing.append(command)
    return ", ".join(missing) if missing else None


def require_trainer(*commands: str) -> None:
    """Skip (naming what is missing) while the trainer CLI lacks a command the Jobs run."""
    missing = trainer_supports(*commands)
    if missing:
        pytest.skip(f"the trainer CLI does not implement yet: {missing}")


def wait_seconds(seconds: float) -> None:
    time.sleep(seconds)


class Forwarder:
    """Forwards a port on the pod network's gateway to a loopback server (the test Hub binds
    127.0.0.1, which pods in their own network namespaces cannot reach)."""

    def __init__(self, listen_host: str, target_port: int) -> None:
        import socket
        import threading

        self.target_port = target_port
        self.server = socket.create_server((listen_host, 0))
        self.host, self.port = listen_host, self.server.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(2)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self.server.close()


@pytest.fixture
def hub_endpoint(hub_server: Any, cluster: Any) -> Iterator[str]:
    """The test Hub's URL as pods see it (through the pod network's gateway)."""
    port = int(hub_server.url.rsplit(":", 1)[1])
    forwarder = Forwarder(cluster.network.gateway, port)
    yield forwarder.url
    forwarder.close()
