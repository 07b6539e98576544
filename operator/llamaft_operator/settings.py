"""Operator settings, read once from the environment (the Helm chart sets them).

Every field says its unit, its default and why. `Settings.from_env()` reads `LLAMAFT_*` variables
(listed in `ENV`), so the same values can be given to a local `llamaft-operator` and to the chart.
A bad value fails at startup with the variable's name, never later in a reconcile.

Pure: no kopf, no Kubernetes client; the builders and the reconcile read these fields.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

from llamaft_operator.catalogue import DEFAULT_GPU_TYPE, GpuCatalogue


class SettingsError(ValueError):
    """An environment variable has a value the operator cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    """What the operator needs to know about its cluster. Defaults suit a typical GPU cluster."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch (`LLAMAFT_NAMESPACES`, comma-separated; glob patterns allowed).
    Default: none, meaning cluster-wide. Watching only some namespaces lets the chart grant
    namespaced RBAC instead of a ClusterRole."""

    trainer_image: str = "ghcr.io/llamaft/trainer:0.1.0"
    """Image of every step's container (`LLAMAFT_TRAINER_IMAGE`). Pin a digest in production so
    a retried pod runs the same code as the first attempt."""

    image_pull_policy: str = "IfNotPresent"
    """Pull policy of the trainer image (`LLAMAFT_IMAGE_PULL_POLICY`): `IfNotPresent` (default;
    trainer images are large), `Always` or `Never`."""

    image_pull_secrets: tuple[str, ...] = ()
    """Secrets for pulling the trainer image (`LLAMAFT_IMAGE_PULL_SECRETS`, comma-separated).
    Default: none."""

    gpu_catalogue: GpuCatalogue = field(default_factory=GpuCatalogue)
    """GPU types the cluster offers (`LLAMAFT_GPU_CATALOGUE`: a JSON list of GpuType, see
    catalogue.py). Default: the built-in catalogue (A10G, L4, A100, H100, H200, 8 per node)."""

    default_gpu_type: str = DEFAULT_GPU_TYPE
    """GPU type used when `spec.resources.gpuType` is unset (`LLAMAFT_DEFAULT_GPU_TYPE`).
    Default `H100-80GB`; must name a catalogue entry."""

    price_per_gpu_hour: float | None = None
    """USD per GPU-hour for cost estimates in `status.plan` (`LLAMAFT_PRICE_PER_GPU_HOUR`).
    Default: unset, when only catalogue entries with their own price get a cost."""

    storage_class: str | None = None
    """StorageClass of the PVCs the operator creates (`LLAMAFT_STORAGE_CLASS`). Default: unset,
    meaning the cluster's default class."""

    work_access_mode: str = "ReadWriteOnce"
    """Access mode of `<name>-work` for single-node runs (`LLAMAFT_WORK_ACCESS_MODE`).
    Multi-node plans always ask for `ReadWriteMany`: every rank writes its checkpoint shard."""

    model_cache_claim: str = "llamaft-model-cache"
    """Name of the PVC that caches base models, one per namespace, shared by its runs
    (`LLAMAFT_MODEL_CACHE_CLAIM`). Not owned by any run, so deleting a run keeps the cache."""

    model_cache_size: str = "500Gi"
    """Size of the model cache PVC when the operator creates it (`LLAMAFT_MODEL_CACHE_SIZE`).
    Default 500Gi: a 70B model in bf16 safetensors is ~140 GB, plus a few smaller ones."""

    model_cache_access_mode: str = "ReadWriteMany"
    """Access mode of the model cache PVC (`LLAMAFT_MODEL_CACHE_ACCESS_MODE`). Default
    `ReadWriteMany`: pods of several runs and nodes read it at once."""

    trainer_service_account: str = "llamaft-trainer"
    """ServiceAccount of the step pods (`LLAMAFT_TRAINER_SERVICE_ACCOUNT`). It may only patch
    `llamafinetunes/status` in its namespace, for progress."""

    manage_trainer_rbac: bool = True
    """Create the trainer ServiceAccount, Role and RoleBinding in each namespace that runs a
    fine-tune if they are missing (`LLAMAFT_MANAGE_TRAINER_RBAC`, `true`/`false`). Default true;
    set false when the chart or an admin creates them."""

    progress_interval_seconds: int = 30
    """How often the trainer patches `status.progress` (`LLAMAFT_PROGRESS_INTERVAL`, seconds).
    Default 30: live enough for `kubectl get lft -w`, cheap for the API server."""

    resync_seconds: float = 60.0
    """Reconcile every unfinished run at least this often (`LLAMAFT_RESYNC_SECONDS`), besides
    the watch events that trigger it. Default 60: it retries what is waiting on a missing Secret
    or PVC and repairs what was missed while the operator was down."""

    missing_retry_seconds: float = 15.0
    """Retry a run blocked on a missing Secret, PVC or ConfigMap after this many seconds
    (`LLAMAFT_MISSING_RETRY_SECONDS`). Default 15: a user who just created it waits little."""

    error_backoffs: tuple[float, ...] = (1, 2, 5, 10, 30, 60)
    """Delays in seconds between retries of a reconcile that raised (`LLAMAFT_ERROR_BACKOFFS`,
    comma-separated); the last repeats. Throttles the API calls of a run that keeps failing."""

    max_concurrent_reconciles: int = 8
    """Reconciles running at once (`LLAMAFT_MAX_CONCURRENT_RECONCILES`). Each holds one thread
    for its API calls; 8 keeps a 2-core operator pod responsive."""

    train_backoff_limit: int = 3
    """Failed pods a GPU step (pilot, train, eval) may have before its Job fails
    (`LLAMAFT_TRAIN_BACKOFF_LIMIT`). Each retry resumes from the last checkpoint. Exit codes 2 and
    3 fail at once; disruptions (preemption, lost node) are not counted."""

    cpu_backoff_limit: int = 2
    """Failed pods a CPU step (validate, fetch, publish) may have (`LLAMAFT_CPU_BACKOFF_LIMIT`)."""

    cpu_step_deadline_seconds: int = 6 * 3600
    """activeDeadlineSeconds of CPU steps (`LLAMAFT_CPU_STEP_DEADLINE`, seconds). Default 6h:
    a 140 GB download on a slow link still fits; a hung step does not hold the run forever."""

    cpu_step_cpu: str = "1"
    """CPU request and limit of CPU steps (`LLAMAFT_CPU_STEP_CPU`)."""

    cpu_step_memory: str = "4Gi"
    """Memory request and limit of CPU steps (`LLAMAFT_CPU_STEP_MEMORY`). Validation streams the
    data; 4Gi covers the tokenizer and a Parquet row group."""

    rendezvous_port: int = 29500
    """torchrun c10d rendezvous port on index 0 of a multi-node Job (`LLAMAFT_RENDEZVOUS_PORT`)."""

    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    """kopf's health endpoint (`LLAMAFT_LIVENESS_ENDPOINT`); answers 200 once the watches are up,
    so the chart uses it for both liveness and readiness probes. `off` disables it."""

    metrics_port: int = 9090
    """Port of the Prometheus `/metrics` endpoint (`LLAMAFT_METRICS_PORT`); 0 disables it."""

    peering_name: str | None = None
    """kopf peering object for HA (`LLAMAFT_PEERING`). Two replicas with the same name run one
    active, one paused (the one with the lower priority). Default: unset, standalone."""

    peering_priority: int = field(default_factory=lambda: random.randint(1, 1_000_000))
    """kopf peering priority (`LLAMAFT_PEERING_PRIORITY`). Default: random per process, so two
    replicas never tie (kopf runs both when priorities are equal)."""

    webhook_timeout_seconds: float = 10.0
    """Timeout of the completion webhook POST (`LLAMAFT_WEBHOOK_TIMEOUT`, seconds)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from `LLAMAFT_*` variables; unset ones keep their defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, (variable, parse) in _PARSERS.items():
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = parse(raw.strip())
            except (ValueError, TypeError) as err:
                raise SettingsError(f"{variable}={raw!r}: {err}") from None
        default_gpu = str(values.get("default_gpu_type", DEFAULT_GPU_TYPE))
        catalogue_json = env.get("LLAMAFT_GPU_CATALOGUE", "").strip()
        try:
            catalogue = (
                GpuCatalogue.from_json(catalogue_json, default_gpu)
                if catalogue_json
                else GpuCatalogue(default=default_gpu)
            )
            catalogue.get(default_gpu)
        except KeyError as err:
            raise SettingsError(f"LLAMAFT_DEFAULT_GPU_TYPE: {err.args[0]}") from None
        except ValueError as err:
            raise SettingsError(f"LLAMAFT_GPU_CATALOGUE: not a list of GPU types: {err}") from None
        values["gpu_catalogue"] = catalogue
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if self.image_pull_policy not in ("IfNotPresent", "Always", "Never"):
            raise SettingsError("LLAMAFT_IMAGE_PULL_POLICY must be IfNotPresent, Always or Never")
        modes = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")
        if self.work_access_mode not in modes:
            raise SettingsError(f"LLAMAFT_WORK_ACCESS_MODE must be one of {', '.join(modes)}")
        if self.model_cache_access_mode not in (*modes, "ReadOnlyMany"):
            raise SettingsError("LLAMAFT_MODEL_CACHE_ACCESS_MODE is not an access mode")
        if not self.error_backoffs:
            raise SettingsError("LLAMAFT_ERROR_BACKOFFS needs at least one delay")

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _floats(text: str) -> tuple[float, ...]:
    values = tuple(float(p) for p in _csv(text))
    if any(v < 0 for v in values):
        raise ValueError("delays must be >= 0")
    return values


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _quantity(text: str) -> str:
    if not text[0].isdigit():
        raise ValueError("expected a Kubernetes quantity such as 500Gi")
    return text


# Field name -> (environment variable, parser).
_PARSERS: dict[str, tuple[str, Callable[[str], object]]] = {
    "namespaces": ("LLAMAFT_NAMESPACES", _csv),
    "trainer_image": ("LLAMAFT_TRAINER_IMAGE", str),
    "image_pull_policy": ("LLAMAFT_IMAGE_PULL_POLICY", str),
    "image_pull_secrets": ("LLAMAFT_IMAGE_PULL_SECRETS", _csv),
    "default_gpu_type": ("LLAMAFT_DEFAULT_GPU_TYPE", str),
    "price_per_gpu_hour": ("LLAMAFT_PRICE_PER_GPU_HOUR", _positive_float),
    "storage_class": ("LLAMAFT_STORAGE_CLASS", str),
    "work_access_mode": ("LLAMAFT_WORK_ACCESS_MODE", str),
    "model_cache_claim": ("LLAMAFT_MODEL_CACHE_CLAIM", str),
    "model_cache_size": ("LLAMAFT_MODEL_CACHE_SIZE", _quantity),
    "model_cache_access_mode": ("LLAMAFT_MODEL_CACHE_ACCESS_MODE", str),
    "trainer_service_account": ("LLAMAFT_TRAINER_SERVICE_ACCOUNT", str),
    "manage_trainer_rbac": ("LLAMAFT_MANAGE_TRAINER_RBAC", _bool),
    "progress_interval_seconds": ("LLAMAFT_PROGRESS_INTERVAL", _positive_int),
    "resync_seconds": ("LLAMAFT_RESYNC_SECONDS", _positive_float),
    "missing_retry_seconds": ("LLAMAFT_MISSING_RETRY_SECONDS", _positive_float),
    "error_backoffs": ("LLAMAFT_ERROR_BACKOFFS", _floats),
    "max_concurrent_reconciles": ("LLAMAFT_MAX_CONCURRENT_RECONCILES", _positive_int),
    "train_backoff_limit": ("LLAMAFT_TRAIN_BACKOFF_LIMIT", _positive_int),
    "cpu_backoff_limit": ("LLAMAFT_CPU_BACKOFF_LIMIT", _positive_int),
    "cpu_step_deadline_seconds": ("LLAMAFT_CPU_STEP_DEADLINE", _positive_int),
    "cpu_step_cpu": ("LLAMAFT_CPU_STEP_CPU", _quantity),
    "cpu_step_memory": ("LLAMAFT_CPU_STEP_MEMORY", _quantity),
    "rendezvous_port": ("LLAMAFT_RENDEZVOUS_PORT", _positive_int),
    "liveness_endpoint": ("LLAMAFT_LIVENESS_ENDPOINT", str),
    "metrics_port": ("LLAMAFT_METRICS_PORT", _positive_int),
    "peering_name": ("LLAMAFT_PEERING", str),
    "peering_priority": ("LLAMAFT_PEERING_PRIORITY", int),
    "webhook_timeout_seconds": ("LLAMAFT_WEBHOOK_TIMEOUT", _positive_float),
}

# Every environment variable the operator reads, for docs and the Helm chart.
ENV: dict[str, str] = {
    "LLAMAFT_GPU_CATALOGUE": "gpu_catalogue",
    **{variable: name for name, (variable, _) in _PARSERS.items()},
}

assert set(_PARSERS) | {"gpu_catalogue"} == {f.name for f in fields(Settings)}
