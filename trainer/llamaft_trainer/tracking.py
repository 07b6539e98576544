"""Experiment tracking: W&B and MLflow runs of the train step, when `spec.tracking` asks for them.

TensorBoard and `reports/train.json` are always written (progress.py); these are in addition.

Lifecycle, driven by the recipe (only global rank 0 starts trackers; other ranks have none):
- `check_installed(spec)` first thing in setup, on every rank: a configured tracker whose client
  (`wandb`, `mlflow` from `mlflow-skinny`: the `tracking` extra, in the trainer image) does not
  import is bad input (exit 2) before any data or weights are loaded, not an error mid-run.
- `start(plan, workdir, resumed_from=...)` once the model is set up: one run per tracker, named
  `<LlamaFineTune name>-<run id>`, with the plan's hyper-parameters logged once (nested config in
  W&B, flattened `training.learningRate`-style params in MLflow). The tracker's own run id is kept
  in `<workdir>/tracking/<tracker>.json`, so a retried pod that resumes from a checkpoint continues
  the same tracker run; a run that starts from step 0 gets a new one.
- `log(metrics, step)` per optimizer step (train/loss, train/learning_rate, train/tokens_per_second,
  train/epoch, train/tokens, eval/loss when evaluated), `summary(metrics, step)` once at the end
  (final/*), `finish(status)`: finished, failed, or preempted (MLflow KILLED; resumed later).

A tracker that cannot start (server unreachable, key refused) fails the step with exit 1, so the
Job retries; one that fails later is reported on stderr and switched off: a lost metric never
stops training. Steps a resumed run repeats (those after its last checkpoint) are logged again:
MLflow keeps both values, W&B drops steps lower than the last one it has.

Credentials come from the environment, as each client reads them: `WANDB_API_KEY`, and
`MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME`/`PASSWORD`; in a cluster the operator sets
them from `spec.tracking.*Secret` in the train container only.

Why not `accelerate.tracking` (checked against accelerate 1.15): its trackers gate every call on
`PartialState()`. Without one, `WandBTracker.start` raises (its logger requires the state); created
after our `deepspeed.init_distributed`, `PartialState` reports `DistributedType.NO` and process
index 0 on every rank of a torchrun CPU/gloo run, so "main process only" would log from every rank.
`MLflowTracker` also takes its tracking URI only from the environment and uses MLflow's global
active run. Thin adapters over the clients, gated on our own rank, are simpler and correct.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from llamaft_operator.api import MlflowTracking, TrackingSpec, WandbTracking
from llamaft_trainer.config import RunPlan
from llamaft_trainer.errors import BadInputError, LlamaftError

Status = Literal["finished", "failed", "preempted"]
# tracker -> (module to import, package to install)
CLIENTS = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow-skinny")}
STATE_DIR = "tracking"
# MLflow stores params as strings of at most 6000 characters and takes 100 per batch call.
MAX_PARAM_LENGTH = 500
MLFLOW_BATCH = 100
MLFLOW_STATUS = {"finished": "FINISHED", "failed": "FAILED", "preempted": "KILLED"}


class TrackingError(LlamaftError):
    """A configured tracker could not start; the Job retries (exit 1)."""


def configured(spec: TrackingSpec | None) -> list[str]:
    if spec is None:
        return []
    return [name for name in CLIENTS if getattr(spec, name) is not None]


def check_installed(spec: TrackingSpec | None) -> None:
    """Every configured tracker's client imports, or bad input naming the field and the fix."""
    for name in configured(spec):
        module, package = CLIENTS[name]
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise BadInputError(
                f"spec.tracking.{name} is set but the `{package}` package does not import "
                f"({err}): install it with `pip install 'llamaft[tracking]'` (the trainer image "
                f"has it), or remove spec.tracking.{name}"
            ) from None


def run_name(plan: RunPlan) -> str:
    """`<name>-<run id>`; local runs' ids (`local-<name>`) already name the run."""
    return plan.run_id if plan.name in plan.run_id else f"{plan.name}-{plan.run_id}"


def hyperparameters(plan: RunPlan, **extra: Any) -> dict[str, Any]:
    """The plan as a nested dict (what the run was), without the tracking settings themselves."""
    data = plan.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude={"api_version", "kind", "tracking"}
    )
    data.get("estimate", {}).pop("notes", None)
    return {**data, **extra}


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"training": {"learningRate": 2e-4}}` -> `{"training.learningRate": "0.0002"}`."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:MAX_PARAM_LENGTH]
    return out


def _state_file(workdir: Path, tracker: str) -> Path:
    return workdir / STATE_DIR / f"{tracker}.json"


def _saved_id(workdir: Path, tracker: str, resumed_from: int) -> str | None:
    """The tracker run id of the run this one resumes, if it resumes one."""
    path = _state_file(workdir, tracker)
    if resumed_from <= 0 or not path.is_file():
        return None
    value = json.loads(path.read_text()).get("id")
    return str(value) if value else None


def _save_id(workdir: Path, tracker: str, run_id: str) -> None:
    path = _state_file(workdir, tracker)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"id": run_id}))
    tmp.replace(path)


class Tracker(Protocol):
    name: str

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def summary(self, metrics: Mapping[str, float], step: int) -> None: ...

    def finish(self, status: Status) -> None: ...


class WandbRun:
    """A W&B run (`WANDB_MODE=offline` and `WANDB_API_KEY` are honoured as wandb reads them)."""

    name = "wandb"

    def __init__(
        self, spec: WandbTracking, plan: RunPlan, workdir: Path, *, resumed_from: int, **extra: Any
    ) -> None:
        import wandb

        run_id = _saved_id(workdir, self.name, resumed_from) or uuid.uuid4().hex[:16]
        directory = workdir / STATE_DIR
        directory.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(console="off", silent=True)
        if spec.base_url:
            settings.base_url = spec.base_url
        self.run = wandb.init(
            project=spec.project,
            entity=spec.entity,
            name=run_name(plan),
            id=run_id,
            resume="allow",
            dir=str(directory),
            group=plan.name,
            job_type="train",
            tags=list(spec.tags or []),
            config=hyperparameters(plan, **extra),
            settings=settings,
        )
        _save_id(workdir, self.name, run_id)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def summary(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.summary.update(dict(metrics))

    def finish(self, status: Status) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


class MlflowRun:
    """An MLflow run through `MlflowClient` (explicit URI and run id, no global active run)."""

    name = "mlflow"

    def __init__(
        self, spec: MlflowTracking, plan: RunPlan, workdir: Path, *, resumed_from: int, **extra: Any
    ) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=spec.tracking_uri)
        run_id = _saved_id(workdir, self.name, resumed_from)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
        else:
            experiment = self._experiment(spec.experiment or plan.name)
            tags = {
                "llamaft.name": plan.name,
                "llamaft.namespace": plan.namespace,
                "llamaft.runId": plan.run_id,
                "llamaft.model": plan.model.name,
                "llamaft.method": plan.method,
            }
            run_id = self.client.create_run(
                experiment, run_name=run_name(plan), tags=tags
            ).info.run_id
            params = [Param(k, v) for k, v in flatten(hyperparameters(plan, **extra)).items()]
            for i in range(0, len(params), MLFLOW_BATCH):
                self.client.log_batch(run_id, params=params[i : i + MLFLOW_BATCH])
        self.run_id = run_id
        _save_id(workdir, self.name, run_id)

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except Exception:  # created meanwhile by another run
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def summary(self, metrics: Mapping[str, float], step: int) -> None:
        self.log(metrics, step)

    def finish(self, status: Status) -> None:
        self.client.set_terminated(self.run_id, status=MLFLOW_STATUS[status])


class Trackers:
    """The started trackers as one: a tracker that fails after its start is switched off."""

    def __init__(self, runs: list[Tracker]) -> None:
        self.runs = runs

    def _each(self, what: str, call: Any) -> None:
        for run in list(self.runs):
            try:
                call(run)
            except Exception as err:
                self.runs.remove(run)
                print(
                    f"[tracking] {run.name} failed to {what} ({type(err).__name__}: {err}); "
                    "training goes on without it",
                    file=sys.stderr,
                    flush=True,
                )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._each("log", lambda run: run.log(metrics, step))

    def summary(self, metrics: Mapping[str, float], step: int) -> None:
        self._each("log the summary", lambda run: run.summary(metrics, step))

    def finish(self, status: Status) -> None:
        self._each("finish", lambda run: run.finish(status))
        self.runs = []


def _start_one(name: str, spec: TrackingSpec, plan: RunPlan, workdir: Path, **kw: Any) -> Tracker:
    if name == "wandb" and spec.wandb is not None:
        return WandbRun(spec.wandb, plan, workdir, **kw)
    if name == "mlflow" and spec.mlflow is not None:
        return MlflowRun(spec.mlflow, plan, workdir, **kw)
    raise AssertionError(f"unknown tracker {name}")


def start(plan: RunPlan, workdir: Path, *, resumed_from: int, **extra: Any) -> Trackers:
    """Start every tracker `plan.tracking` configures (call on global rank 0 only)."""
    runs: list[Tracker] = []
    spec = plan.tracking
    for name in configured(spec):
        assert spec is not None
        try:
            runs.append(_start_one(name, spec, plan, workdir, resumed_from=resumed_from, **extra))
        except Exception as err:
            Trackers(runs).finish("failed")
            raise TrackingError(
                f"spec.tracking.{name}: cannot start a run ({type(err).__name__}: {err}); check "
                "the server address and the credentials Secret"
            ) from err
    return Trackers(runs)
