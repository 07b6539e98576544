"""`llamaft run` on this machine honours spec.tracking and shows a progress bar on a terminal
(run through a real pseudo-terminal; MLflow's sqlite store read back with the real client)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.test_progress import run_in_pty
from tests.unit.trainer_helpers import QUICKSTART

LLAMAFT = str(Path(sys.executable).parent / "llamaft")
pytestmark = pytest.mark.unit


def test_local_run_tracks_the_train_step_and_shows_a_bar(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    manifest = {
        "apiVersion": "llamaft.io/v1alpha1",
        "kind": "LlamaFineTune",
        "metadata": {"name": "tracked"},
        "spec": {
            "model": {"name": "builtin:tiny-llama"},
            "dataset": {
                "source": {"local": {"path": str(QUICKSTART / "train.jsonl")}},
                "format": "prompt-response",
                "validationSplit": 0,
            },
            "method": "lora",
            "training": {
                "maxSteps": 3,
                "maxSeqLength": 256,
                "perDeviceBatchSize": 2,
                "gradientAccumulationSteps": 1,
                "learningRate": 3e-3,
            },
            "tracking": {"mlflow": {"trackingUri": uri}},
        },
    }
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(manifest))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_"))}
    out = run_in_pty([LLAMAFT, "run", str(path), "--workdir", str(tmp_path / "w")], tmp_path, env)
    assert "train 3/3" in out and "100%" in out and "loss=" in out, out
    assert "[train] step=" not in out
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")  # default: the manifest's name
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "local-tracked" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert run.data.params["training.maxSteps"] == "3"
