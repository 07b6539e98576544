"""Pure helpers of the pod runner: a pod's env, argv and downward-API values, as a kubelet does.

Pods are plain dicts in the API's JSON form (camelCase), as `ApiClient.sanitize_for_serialization`
gives them. Lookups of Secrets and ConfigMaps are injected, so these functions stay testable.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

Obj = dict[str, Any]
# (kind, namespace, name) -> the object's data as text, or None when the object does not exist.
DataLookup = Callable[[str, str, str], dict[str, str] | None]

_SUFFIXES: dict[str, int | Decimal] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class MissingReferenceError(LookupError):
    """A Secret, ConfigMap or key a pod needs does not exist (yet): the kubelet would wait."""


def parse_quantity(text: str | int | float) -> Decimal:
    s = str(text)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if s.endswith(suffix):
            return Decimal(s[: -len(suffix)]) * _SUFFIXES[suffix]
    return Decimal(s)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` escapes, others stay."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR_REF.sub(repl, text)


def decode_data(obj: Obj) -> dict[str, str]:
    """A Secret's or ConfigMap's data as text (binaryData / Secret base64 decoded)."""
    out: dict[str, str] = {}
    is_secret = obj.get("kind") == "Secret" or "type" in obj
    for key, value in (obj.get("data") or {}).items():
        out[key] = base64.b64decode(value).decode(errors="replace") if is_secret else value
    for key, value in (obj.get("binaryData") or {}).items():
        out[key] = base64.b64decode(value).decode(errors="replace")
    for key, value in (obj.get("stringData") or {}).items():
        out[key] = value
    return out


def field_ref(pod: Obj, path: str) -> str:
    """Downward API `fieldRef.fieldPath` of a pod."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    if path not in simple:
        raise MissingReferenceError(f"unsupported fieldRef {path!r}")
    return str(simple[path] or "")


def resource_ref(
    pod: Obj, container_name: str, ref: Obj, node_allocatable: Mapping[str, str]
) -> str:
    """Downward API `resourceFieldRef`: the container's limit (node allocatable when unset)."""
    container = next(
        c for c in _all_containers(pod) if c["name"] == (ref.get("containerName") or container_name)
    )
    kind, _, resource = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(resource)
    if value is None:
        value = (resources.get("limits") or {}).get(resource) if kind == "requests" else None
    if value is None:
        value = node_allocatable.get(resource, "0")
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(parse_quantity(value) / divisor))


def _all_containers(pod: Obj) -> list[Obj]:
    spec = pod["spec"]
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def container_env(
    pod: Obj,
    container: Obj,
    base: Mapping[str, str],
    lookup: DataLookup,
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The environment of one container: `base`, then envFrom, then env (later wins)."""
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    for source in container.get("envFrom") or []:
        kind = "Secret" if "secretRef" in source else "ConfigMap"
        ref = source.get("secretRef") or source.get("configMapRef") or {}
        data = lookup(kind, namespace, ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise MissingReferenceError(f"{kind} {namespace}/{ref['name']} not found")
        prefix = source.get("prefix") or ""
        env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = expand(var.get("value") or "", env)
            continue
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = field_ref(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[name] = resource_ref(
                pod, container["name"], source["resourceFieldRef"], node_allocatable
            )
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
            ref = source.get("secretKeyRef") or source.get("configMapKeyRef") or {}
            data = lookup(kind, namespace, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise MissingReferenceError(
                    f"{kind} {namespace}/{ref['name']} key {ref['key']!r} not found"
                )
            env[name] = data[ref["key"]]
        else:
            env[name] = ""
    return env


def container_argv(container: Obj, env: Mapping[str, str], entrypoint: list[str]) -> list[str]:
    """command/args with `$(VAR)` expanded; the image's entry point stands in for no command."""
    command = [expand(a, env) for a in container.get("command") or []]
    args = [expand(a, env) for a in container.get("args") or []]
    return (command or list(entrypoint)) + args
