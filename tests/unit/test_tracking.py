"""Experiment tracking with the real clients: MLflow against a local sqlite tracking store (read
back with MlflowClient), W&B in offline mode (its run files read back with tests/unit/
wandb_offline.py). The tiny Llama trains for real through `llamaft train`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from llamaft_operator.api import DataSource, TrackingSpec
from llamaft_trainer import tracking
from llamaft_trainer.config import RunPlan
from llamaft_trainer.errors import BadInputError
from llamaft_trainer.progress import Progress
from llamaft_trainer.recipe import FineTuneRecipe
from tests.unit.test_recipe import run_train
from tests.unit.trainer_helpers import tiny_plan, write_plan
from tests.unit.wandb_offline import offline_runs, read_run

pytestmark = pytest.mark.unit

EXPERIMENT = "llamaft-tests"


def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def with_tracking(plan: RunPlan, spec: dict[str, Any]) -> RunPlan:
    return plan.model_copy(update={"tracking": TrackingSpec.model_validate(spec)})


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """W&B offline, its config and cache under tmp_path, no key from the developer's machine."""
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return env


def mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_train_logs_to_mlflow_and_wandb_and_a_resumed_run_continues_both(
    tmp_path: Path, offline_wandb: dict[str, str]
) -> None:
    uri = sqlite_uri(tmp_path)
    spec = {
        "wandb": {"project": "llamaft-tests", "tags": ["ci"]},
        "mlflow": {"trackingUri": uri, "experiment": EXPERIMENT},
    }
    work = tmp_path / "w"
    training = {"saveSteps": 4, "evalSteps": 2}
    first = with_tracking(tiny_plan("lora", training={**training, "maxSteps": 4}), spec)
    result = run_train(write_plan(first, tmp_path / "p4"), work)
    assert result.returncode == 0, result.stderr
    first_report = json.loads((work / "reports" / "train.json").read_text())
    # The same run, given more steps: it resumes from checkpoint step-4 (as a retried pod does).
    second = with_tracking(tiny_plan("lora", training={**training, "maxSteps": 8}), spec)
    result = run_train(write_plan(second, tmp_path / "p8"), work)
    assert result.returncode == 0, result.stderr
    report = json.loads((work / "reports" / "train.json").read_text())
    assert report["resumedFrom"] == 4 and report["step"] == 8
    history = first_report["history"] + report["history"]
    losses = [h["loss"] for h in history]

    # MLflow: one run, the plan's hyper-parameters once, the loss at every step, final metrics.
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == tracking.run_name(second) == f"ft-{second.run_id}"
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["training.learningRate"] == "0.003"
    assert params["method"] == "lora" and params["model.name"] == "builtin:tiny-llama"
    assert params["worldSize"] == "1" and params["runId"] == second.run_id
    assert "tracking.mlflow.trackingUri" not in params
    assert run.data.tags["llamaft.runId"] == second.run_id
    loss_history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in loss_history] == list(range(1, 9))
    assert [m.value for m in loss_history] == pytest.approx(losses, abs=1e-5)
    evals = client.get_metric_history(run.info.run_id, "eval/loss")
    assert [m.step for m in evals] == [2, 4, 6, 8]
    for name in ("train/learning_rate", "train/tokens_per_second", "train/epoch"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 8, name
    assert run.data.metrics["final/loss"] == pytest.approx(report["loss"])
    assert run.data.metrics["final/steps"] == 8

    # W&B: two offline run files (one per process), the same run id, the history split at the
    # resume, the config nested as the plan is.
    files = offline_runs(work / "tracking")
    assert len(files) == 2, files
    parts = [read_run(f) for f in files]
    assert parts[0].run_id == parts[1].run_id
    assert parts[0].name == tracking.run_name(second) and parts[0].project == "llamaft-tests"
    assert parts[0].config["training"]["learningRate"] == 0.003
    assert parts[0].config["method"] == "lora"
    steps = [h["_step"] for p in parts for h in p.history if "train/loss" in h]
    assert steps == list(range(1, 9))
    wandb_losses = [h["train/loss"] for p in parts for h in p.history if "train/loss" in h]
    assert wandb_losses == pytest.approx(losses, abs=1e-5)
    assert parts[1].summary["final/loss"] == pytest.approx(report["loss"])
    assert "WANDB_API_KEY" not in result.stdout + result.stderr


def test_a_configured_tracker_whose_client_is_missing_fails_before_any_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sys.modules[name] = None makes `import name` fail as if the package were not installed
    # (uninstalling it from the shared venv is not an option).
    monkeypatch.setitem(sys.modules, "wandb", None)
    plan = with_tracking(tiny_plan("lora"), {"wandb": {"project": "p"}})
    missing = plan.dataset.model_copy(
        update={"source": DataSource(local={"path": str(tmp_path / "nowhere.jsonl")})}
    )
    recipe = FineTuneRecipe(plan.model_copy(update={"dataset": missing}), tmp_path)
    with pytest.raises(BadInputError) as err:
        recipe.setup()
    message = str(err.value)
    assert "spec.tracking.wandb" in message and "pip install 'llamaft[tracking]'" in message
    # The pilot does not track, so it does not need the client.
    tracking.check_installed(None)
    pilot = FineTuneRecipe(plan.model_copy(update={"dataset": missing}), tmp_path, track=False)
    with pytest.raises(BadInputError, match="does not exist"):
        pilot.setup()


def test_a_run_resumes_its_tracker_run_only_from_a_checkpoint(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    plan = with_tracking(tiny_plan("lora"), {"mlflow": {"trackingUri": uri}})

    def run_id(trackers: tracking.Trackers) -> str:
        return str(trackers.runs[0].run_id)  # type: ignore[attr-defined]

    first = tracking.start(plan, tmp_path, resumed_from=0)
    ids = [run_id(first)]
    first.finish("preempted")
    ids.append(run_id(tracking.start(plan, tmp_path, resumed_from=3)))
    ids.append(run_id(tracking.start(plan, tmp_path / "other", resumed_from=0)))
    assert ids[0] == ids[1] != ids[2]
    client = mlflow_client(uri)
    assert client.get_run(ids[0]).info.status == "RUNNING"  # KILLED, then resumed
    assert client.get_experiment_by_name("ft") is not None  # default: the LlamaFineTune's name
    # No checkpoint to resume from: a new tracker run.
    assert run_id(tracking.start(plan, tmp_path, resumed_from=0)) not in ids


def test_only_rank_0_logs(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    plan = with_tracking(tiny_plan("lora"), {"mlflow": {"trackingUri": uri}})
    client = mlflow_client(uri)
    for rank in (1, 0):
        trackers = tracking.start(plan, tmp_path / str(rank), resumed_from=0)
        run_id = trackers.runs[0].run_id  # type: ignore[attr-defined]
        progress = Progress(tmp_path, name="train", total_steps=2, rank=rank, trackers=trackers)
        progress.log_step(1, 0.5, 2.0, 1e-4, 100)
        logged = client.get_metric_history(run_id, "train/loss")
        assert [m.value for m in logged] == ([2.0] if rank == 0 else [])


def test_a_tracker_that_fails_mid_run_is_switched_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = sqlite_uri(tmp_path)
    plan = with_tracking(tiny_plan("lora"), {"mlflow": {"trackingUri": uri}})
    trackers = tracking.start(plan, tmp_path, resumed_from=0)
    mlflow_client(uri).delete_run(trackers.runs[0].run_id)  # type: ignore[attr-defined]
    trackers.log({"train/loss": 1.0}, 1)  # the server refuses: reported, not raised
    assert trackers.runs == []
    assert "[tracking] mlflow failed to log" in capsys.readouterr().err
    trackers.log({"train/loss": 0.5}, 2)
    trackers.finish("finished")


def test_an_unreachable_tracking_server_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    plan = with_tracking(tiny_plan("lora"), {"mlflow": {"trackingUri": "http://127.0.0.1:9"}})
    with pytest.raises(tracking.TrackingError, match=r"spec\.tracking\.mlflow: cannot start"):
        tracking.start(plan, tmp_path, resumed_from=0)
    assert not (tmp_path / "tracking" / "mlflow.json").exists()


@pytest.mark.parametrize(
    ("values", "flat"),
    [
        ({"training": {"learningRate": 0.0002}}, {"training.learningRate": "0.0002"}),
        ({"lora": {"targetModules": ["all-linear"]}}, {"lora.targetModules": '["all-linear"]'}),
        ({"method": "qlora", "final": True}, {"method": "qlora", "final": "true"}),
        ({"notes": "x" * 900}, {"notes": "x" * tracking.MAX_PARAM_LENGTH}),
    ],
)
def test_flatten(values: dict[str, Any], flat: dict[str, str]) -> None:
    assert tracking.flatten(values) == flat


def test_run_names() -> None:
    plan = tiny_plan("lora")
    assert tracking.run_name(plan.model_copy(update={"run_id": "0f3c-uid"})) == "ft-0f3c-uid"
    assert tracking.run_name(plan.model_copy(update={"run_id": "local-ft"})) == "local-ft"


def test_no_tracking_spec_no_trackers(tmp_path: Path) -> None:
    assert tracking.start(tiny_plan("lora"), tmp_path, resumed_from=0).runs == []
    assert not os.path.exists(tmp_path / "tracking")
