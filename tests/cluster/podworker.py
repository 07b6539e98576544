"""One pod's life under the pod runner (TEST-ONLY): volumes, network, containers, status.

A PodWorker thread does what a kubelet does for one pod: waits for its Secrets/ConfigMaps/claims,
gives it a network namespace, runs init containers in order then the containers together,
restarts them per restartPolicy, and reports Pending -> Running -> Succeeded/Failed with
containerStatuses and the termination message. See podrunner.py for the big picture.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.cluster import podspec, volumes
from tests.cluster.podspec import MissingReferenceError, Obj

if TYPE_CHECKING:
    from tests.cluster.podrunner import PodRunner

log = logging.getLogger("podrunner")
SHIM = Path(__file__).with_name("_podexec.py")
VOLUME_WAIT_S = 120.0
TERMINATION_MESSAGE_MAX = 4096
FALLBACK_LOG_LINES = 80


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerRun:
    """The state of one container: its process while it runs, its terminated state after."""

    name: str
    image: str
    init: bool
    restart_count: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    oom: bool = False

    def status(self) -> Obj:
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.image,
            "imageID": f"podrunner://{self.image}",
            "containerID": f"podrunner://{self.name}-{self.restart_count}",
            "ready": running and not self.init,
            "started": running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


class PodWorker(threading.Thread):
    def __init__(self, runner: PodRunner, pod: Obj) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.runner, self.pod = runner, pod
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.node: str = pod["spec"]["nodeName"]
        self.dir = runner.state_dir / "pods" / f"{self.namespace}_{self.pod_name}_{self.uid[:8]}"
        spec = pod["spec"]
        self.hostname: str = spec.get("hostname") or self.pod_name
        self.subdomain: str | None = spec.get("subdomain")
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        self.inits = [
            ContainerRun(c["name"], c.get("image", ""), True)
            for c in spec.get("initContainers") or []
        ]
        self.mains = [
            ContainerRun(c["name"], c.get("image", ""), False) for c in spec["containers"]
        ]
        self.netns: str | None = None
        self.pod_ip: str | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._kill_deadline: float | None = None
        self._disruption: Obj | None = None
        self._final = False
        self._phase = "Pending"
        self._mount_targets: list[Path] = []
        self.done = threading.Event()
        self.deleting = False  # set by the runner once the pod object has a deletionTimestamp

    # ---- hooks called from the runner's threads ----------------------------------------------

    def request_stop(self, grace_seconds: float) -> None:
        """Pod deletion: SIGTERM now, SIGKILL when the grace period ends."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
            self._kill_deadline = time.monotonic() + grace_seconds
            for run in self._running():
                self._signal(run, signal.SIGTERM)

    def kill(self, container: str | None, *, oom: bool) -> None:
        with self._lock:
            for run in self._running():
                if container in (None, run.name):
                    run.oom = oom
                    self._signal(run, signal.SIGKILL, group=True)

    def disrupt(self, reason: str, message: str) -> None:
        """Node loss: the pod fails with a DisruptionTarget condition, as the taint manager sets."""
        with self._lock:
            self._disruption = {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": now(),
            }
            self._stop.set()
            self._kill_deadline = time.monotonic()
            for run in self._running():
                self._signal(run, signal.SIGKILL, group=True)

    # ---- the pod's life -----------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._live()
        except Exception as e:  # a harness bug must show up in the pod, not vanish in a thread
            log.exception("pod %s/%s: runner error", self.namespace, self.pod_name)
            self._finish(f"pod runner error: {e}")
        finally:
            self._cleanup()
            self.done.set()

    def _live(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        self._patch_status(
            {
                "phase": "Pending",
                "hostIP": self.runner.host_ip,
                "hostIPs": [{"ip": self.runner.host_ip}],
                "startTime": now(),
                "containerStatuses": [r.status() for r in self.mains],
            }
        )
        volume_paths = self._wait_for_volumes()
        if volume_paths is None:
            return
        self.netns, self.pod_ip = self.runner.network.add_namespace()
        self.pod["status"] = {
            **(self.pod.get("status") or {}),
            "podIP": self.pod_ip,
            "hostIP": self.runner.host_ip,
        }
        self.runner.pod_addressed(self)
        self._patch_status(
            {
                "podIP": self.pod_ip,
                "podIPs": [{"ip": self.pod_ip}],
                "conditions": [
                    self._cond("PodReadyToStartContainers", True),
                    self._cond("Initialized", not self.inits),
                ],
            }
        )
        specs = {
            c["name"]: c
            for c in (self.pod["spec"].get("initContainers") or []) + self.pod["spec"]["containers"]
        }
        for run in self.inits:
            while True:
                code = self._run_to_end(run, specs[run.name], volume_paths)
                if code == 0:
                    break
                if self._stop.is_set() or self.restart_policy == "Never":
                    self._finish()
                    return
                self._backoff(run)
        self._patch_status({"conditions": [self._cond("Initialized", True)]})
        threads = [
            threading.Thread(
                target=self._run_main, args=(r, specs[r.name], volume_paths), daemon=True
            )
            for r in self.mains
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            self._enforce_deadline()
            time.sleep(0.1)
        self._finish()

    def _wait_for_volumes(self) -> dict[str, Path] | None:
        builder = volumes.VolumeBuilder(
            self.pod,
            self.dir,
            self.runner.lookup_data,
            self.runner.claim_dir,
            self.runner.issue_token,
        )
        deadline = time.monotonic() + VOLUME_WAIT_S
        reported = ""
        while not self._stop.is_set():
            try:
                return builder.build()
            except MissingReferenceError as e:
                if str(e) != reported:
                    reported = str(e)
                    self.runner.event(self.pod, "Warning", "FailedMount", str(e))
                if time.monotonic() > deadline:
                    self._finish(f"volumes not ready after {VOLUME_WAIT_S:.0f} s: {e}")
                    return None
                time.sleep(0.5)
            except volumes.UnsupportedVolumeError as e:
                self.runner.event(self.pod, "Warning", "FailedMount", str(e))
                self._finish(str(e))
                return None
        self._finish()
        return None

    def _run_main(self, run: ContainerRun, spec: Obj, volume_paths: dict[str, Path]) -> None:
        while True:
            code = self._run_to_end(run, spec, volume_paths)
            again = self.restart_policy == "Always" or (
                self.restart_policy == "OnFailure" and code != 0
            )
            if not again or self._stop.is_set():
                return
            self._backoff(run)

    def _backoff(self, run: ContainerRun) -> None:
        run.last_state = run.state
        run.restart_count += 1
        delay = min(10.0, 0.5 * 2 ** (run.restart_count - 1))
        run.state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {delay:.1f}s"}}
        self._report()
        self._stop.wait(delay)

    def _run_to_end(self, run: ContainerRun, spec: Obj, volume_paths: dict[str, Path]) -> int:
        """Run one container attempt to its end, record its terminated state, return exit code."""
        term_file = self.dir / "termination" / f"{run.name}-{run.restart_count}"
        term_file.parent.mkdir(exist_ok=True)
        term_file.write_text("")
        log_path = self.dir / "logs" / f"{run.name}-{run.restart_count}.log"
        try:
            argv, env, workdir, mounts = self._prepare(spec, volume_paths, term_file)
        except MissingReferenceError as e:
            # Real kubelets report CreateContainerConfigError and retry; we fail the attempt.
            return self._terminated(run, 1, "CreateContainerConfigError", str(e), log_path)
        with self._lock:
            if self._stop.is_set():
                return self._terminated(run, 137, "Error", "pod stopping", log_path)
            run.oom = False
            run.started_at = now()
            run.proc = self._spawn(run, argv, env, workdir, mounts, log_path)
            run.state = {"running": {"startedAt": run.started_at}}
        self.runner.event(self.pod, "Normal", "Started", f"Started container {run.name}")
        self._report()
        returncode = run.proc.wait()
        code = 128 - returncode if returncode < 0 else returncode
        # A container's processes die with it (the runtime kills its cgroup).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.proc.pid, signal.SIGKILL)
        self._release(mounts)
        reason = "OOMKilled" if run.oom else ("Completed" if code == 0 else "Error")
        message = term_file.read_text(errors="replace")[:TERMINATION_MESSAGE_MAX]
        if (
            not message
            and code != 0
            and spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            lines = log_path.read_text(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
            message = "\n".join(lines)[-TERMINATION_MESSAGE_MAX:]
        return self._terminated(run, code, reason, message, log_path)

    def _terminated(
        self, run: ContainerRun, code: int, reason: str, message: str, log_path: Path
    ) -> int:
        with self._lock:
            state: Obj = {
                "exitCode": code,
                "reason": reason,
                "startedAt": run.started_at or now(),
                "finishedAt": now(),
                "containerID": f"podrunner://{run.name}-{run.restart_count}",
            }
            if message:
                state["message"] = message
            run.state = {"terminated": state}
            run.proc = None
        if not log_path.exists():
            log_path.write_text(message + "\n")
        self._report()
        return code

    def _prepare(
        self, spec: Obj, volume_paths: dict[str, Path], term_file: Path
    ) -> tuple[list[str], dict[str, str], str, list[volumes.Mount]]:
        base = self.runner.base_env(self)
        env = podspec.container_env(
            self.pod, spec, base, self.runner.lookup_data, self.runner.node_allocatable(self.node)
        )
        argv = podspec.container_argv(spec, env, self.runner.entrypoint(spec.get("image", "")))
        if not argv:
            raise MissingReferenceError(
                f"container {spec['name']}: no command and image has no entry point"
            )
        mounts = volumes.container_mounts(spec, volume_paths)
        mounts.append(
            volumes.Mount(
                str(term_file), spec.get("terminationMessagePath") or "/dev/termination-log"
            )
        )
        workdir = spec.get("workingDir") or str(self.dir / "workdir")
        Path(workdir).mkdir(parents=True, exist_ok=True)
        return argv, env, workdir, mounts

    def _spawn(
        self,
        run: ContainerRun,
        argv: list[str],
        env: dict[str, str],
        workdir: str,
        mounts: list[volumes.Mount],
        log_path: Path,
    ) -> subprocess.Popen[bytes]:
        for m in mounts:
            self.runner.mountpoints.acquire(Path(m.target), Path(m.source).is_dir())
        spec_file = self.dir / f"{run.name}-{run.restart_count}.json"
        spec_file.write_text(
            json.dumps(
                {
                    "hostname": self.hostname,
                    "argv": argv,
                    "env": env,
                    "workdir": workdir,
                    "mounts": [m.as_json() for m in mounts],
                }
            )
        )
        assert self.netns is not None
        cmd = [
            "ip",
            "netns",
            "exec",
            self.netns,
            "unshare",
            "--uts",
            "--",
            sys.executable,
            "-I",
            str(SHIM),
            str(spec_file),
        ]
        with log_path.open("ab") as out:
            return subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", "")},
            )

    def _release(self, mounts: list[volumes.Mount]) -> None:
        for m in mounts:
            self.runner.mountpoints.release(Path(m.target))

    # ---- status -------------------------------------------------------------------------------

    def _running(self) -> list[ContainerRun]:
        return [r for r in self.inits + self.mains if r.proc is not None and r.proc.poll() is None]

    @staticmethod
    def _signal(run: ContainerRun, sig: int, group: bool = False) -> None:
        assert run.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(run.proc.pid, sig)
            else:
                run.proc.send_signal(sig)

    def _enforce_deadline(self) -> None:
        with self._lock:
            if self._kill_deadline is not None and time.monotonic() >= self._kill_deadline:
                for run in self._running():
                    self._signal(run, signal.SIGKILL, group=True)

    def _cond(self, kind: str, ok: bool, reason: str | None = None) -> Obj:
        cond: Obj = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now()}
        if reason:
            cond["reason"] = reason
        return cond

    def _report(self) -> None:
        with self._lock:
            if self._final:
                return
            running = all("running" in r.state for r in self.mains)
            if self._phase == "Pending" and any("running" in r.state for r in self.mains):
                self._phase = "Running"
            body: Obj = {
                "phase": self._phase,
                "containerStatuses": [r.status() for r in self.mains],
                "conditions": [
                    self._cond("ContainersReady", running),
                    self._cond("Ready", running),
                ],
            }
            if self.inits:
                body["initContainerStatuses"] = [r.status() for r in self.inits]
        self._patch_status(body)

    def _finish(self, message: str | None = None) -> None:
        with self._lock:
            if self._final:
                return
            self._final = True
            exits = [r.state.get("terminated", {}).get("exitCode") for r in self.inits + self.mains]
            ok = message is None and self._disruption is None and all(c == 0 for c in exits)
            self._phase = "Succeeded" if ok else "Failed"
            for r in self.inits + self.mains:
                if "terminated" not in r.state:
                    r.state = {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "ContainerStatusUnknown",
                            "message": message or "pod stopped",
                            "startedAt": r.started_at or now(),
                            "finishedAt": now(),
                        }
                    }
            conditions = [
                self._cond("ContainersReady", False, "PodCompleted"),
                self._cond("Ready", False, "PodCompleted"),
                self._cond("PodReadyToStartContainers", False),
            ]
            if self._disruption is not None:
                conditions.append(self._disruption)
            body: Obj = {
                "phase": self._phase,
                "conditions": conditions,
                "containerStatuses": [r.status() for r in self.mains],
            }
            if self.inits:
                body["initContainerStatuses"] = [r.status() for r in self.inits]
            if message:
                body["message"] = message
            if self._disruption is not None:
                body["reason"] = "NodeLost"
        self._patch_status(body)

    def _patch_status(self, body: Obj) -> None:
        self.runner.patch_pod_status(self.namespace, self.pod_name, self.uid, body)

    def _cleanup(self) -> None:
        if self.netns is not None:
            # The pod keeps its IP (and hosts entries) until it is deleted, like a real pod.
            self.runner.network.remove_namespace(self.netns)
            self.netns = None

    @property
    def phase(self) -> str:
        return self._phase

    def log_files(self, container: str | None) -> list[Path]:
        name = container or self.mains[0].name
        files = sorted(
            (self.dir / "logs").glob(f"{name}-*.log"), key=lambda p: int(p.stem.rsplit("-", 1)[1])
        )
        return files

    def describe(self) -> dict[str, Any]:
        return {
            "pod": f"{self.namespace}/{self.pod_name}",
            "phase": self._phase,
            "ip": self.pod_ip,
            "containers": [r.status() for r in self.inits + self.mains],
        }
