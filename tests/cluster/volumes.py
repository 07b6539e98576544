"""Pod volumes as host directories, and the bind mounts that put them at their mountPaths.

Each container runs in its own mount namespace (`ip netns exec` makes one), where every
volumeMount becomes a bind mount of the volume's host directory at the real mountPath; processes
see the same paths as in a cluster, in argv, env and in config files alike. Host layout:

    emptyDir              <pod dir>/volumes/<volume>
    persistentVolumeClaim the bound PV's hostPath; the runner provisions one per claim:
                          <state>/pvc/<ns>/<claim>-<uid8>
    secret / configMap    <pod dir>/volumes/<volume>/<key> files (items/paths honoured)
    projected, downwardAPI files likewise; serviceAccountToken from the TokenRequest API
    hostPath              the path itself

Mount points missing on the host are created before the run and removed when no pod needs them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster.podspec import DataLookup, MissingReferenceError, Obj, field_ref

# (namespace, claim name) -> host directory of the bound PV, or None while unbound.
ClaimLookup = Callable[[str, str], Path | None]
# (namespace, service account, audience or None, expiration seconds, pod) -> token
TokenIssuer = Callable[[str, str, str | None, int, Obj], str]


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "readOnly": self.read_only}


class UnsupportedVolumeError(ValueError):
    """A volume type the pod runner does not emulate."""


def _write_files(directory: Path, files: dict[str, str], mode: int | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if mode is not None:
            path.chmod(mode)


def _select_items(data: dict[str, str], items: list[Obj] | None, what: str) -> dict[str, str]:
    if not items:
        return dict(data)
    out = {}
    for item in items:
        if item["key"] not in data:
            raise MissingReferenceError(f"{what} has no key {item['key']!r}")
        out[item["path"]] = data[item["key"]]
    return out


class VolumeBuilder:
    """Materializes the volumes of one pod under `pod_dir/volumes`."""

    def __init__(
        self, pod: Obj, pod_dir: Path, data: DataLookup, claims: ClaimLookup, tokens: TokenIssuer
    ) -> None:
        self.pod, self.pod_dir = pod, pod_dir
        self._data, self._claims, self._tokens = data, claims, tokens
        self.namespace: str = pod["metadata"]["namespace"]

    def build(self) -> dict[str, Path]:
        """Volume name -> host path. Raises MissingReferenceError while a source is missing."""
        return {v["name"]: self._build(v) for v in self.pod["spec"].get("volumes") or []}

    def _build(self, volume: Obj) -> Path:
        name: str = volume["name"]
        here: Path = self.pod_dir / "volumes" / name
        if "emptyDir" in volume:
            here.mkdir(parents=True, exist_ok=True)
            return here
        if "hostPath" in volume:
            host = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                host.mkdir(parents=True, exist_ok=True)
            return host
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            path = self._claims(self.namespace, claim)
            if path is None:
                raise MissingReferenceError(
                    f"PersistentVolumeClaim {self.namespace}/{claim} not bound"
                )
            return path
        if "secret" in volume or "configMap" in volume:
            kind = "Secret" if "secret" in volume else "ConfigMap"
            src = volume.get("secret") or volume.get("configMap") or {}
            ref = str(src.get("secretName") or src.get("name"))
            data = self._source_files(kind, ref, src.get("items"), bool(src.get("optional")))
            _write_files(here, data, src.get("defaultMode"))
            return here
        if "downwardAPI" in volume:
            _write_files(here, self._downward(volume["downwardAPI"].get("items") or []), None)
            return here
        if "projected" in volume:
            files: dict[str, str] = {}
            for source in volume["projected"].get("sources") or []:
                files.update(self._projected(source))
            _write_files(here, files, volume["projected"].get("defaultMode"))
            return here
        raise UnsupportedVolumeError(f"volume {name!r}: type not emulated by the pod runner")

    def _source_files(
        self, kind: str, name: str, items: list[Obj] | None, optional: bool
    ) -> dict[str, str]:
        data = self._data(kind, self.namespace, name)
        if data is None:
            if optional:
                return {}
            raise MissingReferenceError(f"{kind} {self.namespace}/{name} not found")
        return _select_items(data, items, f"{kind} {self.namespace}/{name}")

    def _downward(self, items: list[Obj]) -> dict[str, str]:
        out = {}
        for item in items:
            if "fieldRef" in item:
                out[item["path"]] = field_ref(self.pod, item["fieldRef"]["fieldPath"])
        return out

    def _projected(self, source: Obj) -> dict[str, str]:
        if "serviceAccountToken" in source:
            spec = source["serviceAccountToken"]
            sa = self.pod["spec"].get("serviceAccountName") or "default"
            token = self._tokens(
                self.namespace,
                sa,
                spec.get("audience"),
                int(spec.get("expirationSeconds") or 3600),
                self.pod,
            )
            return {spec["path"]: token}
        if "secret" in source or "configMap" in source:
            kind = "Secret" if "secret" in source else "ConfigMap"
            src = source.get("secret") or source.get("configMap") or {}
            return self._source_files(
                kind, src["name"], src.get("items"), bool(src.get("optional"))
            )
        if "downwardAPI" in source:
            return self._downward(source["downwardAPI"].get("items") or [])
        raise UnsupportedVolumeError(f"projected source {sorted(source)} not emulated")


def container_mounts(container: Obj, volumes: dict[str, Path]) -> list[Mount]:
    mounts = []
    for vm in container.get("volumeMounts") or []:
        source = volumes[vm["name"]]
        if vm.get("subPath"):
            source = source / vm["subPath"]
            if not source.exists():
                source.mkdir(parents=True)
        mounts.append(Mount(str(source), vm["mountPath"], bool(vm.get("readOnly"))))
    return mounts


class MountPoints:
    """Creates missing mount points on the host, refcounted, and removes them when unused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[Path, int] = {}

    def acquire(self, target: Path, is_dir: bool) -> list[Path]:
        with self._lock:
            created: list[Path] = []
            missing = [
                p for p in [target, *target.parents] if not p.exists() and not p.is_symlink()
            ]
            for path in reversed(missing):
                if path == target and not is_dir:
                    path.touch()
                else:
                    path.mkdir()
                created.append(path)
            # Count paths we (or another pod) created; pre-existing host paths are never removed.
            for path in [target, *target.parents]:
                if path in self._refs or path in created:
                    self._refs[path] = self._refs.get(path, 0) + 1
            return created

    def release(self, target: Path) -> None:
        with self._lock:
            for path in [target, *target.parents]:
                if path not in self._refs:
                    continue
                self._refs[path] -= 1
                if self._refs[path] == 0:
                    del self._refs[path]
                    with contextlib.suppress(OSError):
                        if path.is_dir() and not path.is_symlink():
                            path.rmdir()
                        elif path.stat().st_size == 0:
                            path.unlink()

    def release_all(self) -> None:
        with self._lock:
            paths = sorted(self._refs, key=lambda p: len(p.parts), reverse=True)
            self._refs.clear()
        for path in paths:
            with contextlib.suppress(OSError):
                if path.is_dir():
                    os.rmdir(path)
                elif path.stat().st_size == 0:
                    path.unlink()
