"""Run plans for the benchmarks, made by the real planner from a LlamaFineTune.

`plan_for` builds the same LlamaFineTune a user would write (model, method, maxSeqLength,
perDeviceBatchSize, epochs) and runs `make_plan` on it, so "ours" trains with exactly the defaults
the operator would hand the trainer, and `planner_accuracy.py` compares the estimate of that very
plan with the measured peak. The data source becomes a local file, one process, no validation
split (every row trains, as in the baselines).

Models: the built-ins (`builtin:tiny-llama`, `builtin:smollm2-135m-instruct`) and `small-llama`,
the tiny built-in's tokenizer with a bigger random Llama (12 layers x 512, ~40 M parameters) so
the CPU proxy has a model between the two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamaft_trainer.config import Architecture, RunPlan

# What the baselines train, as LlamaFineTune fields, so the planner can size them too.
SEED000_SPEC: dict[str, Any] = {
    "lora": {"r": 16, "alpha": 32, "dropout": 0.1, "targetModules": ["q_proj", "v_proj"]}
}
SEED003_SPEC: dict[str, Any] = {
    "lora": {"r": 64, "alpha": 16, "dropout": 0.1, "targetModules": ["q_proj", "v_proj"]},
    "quantization": {"bits": 4, "doubleQuant": False},
}
SEED003_TRAINING = {"gradientCheckpointing": True}

# A mid-sized random Llama on the tiny built-in's 2,048-token vocabulary.
SMALL_LLAMA = Architecture(
    layers=12, hidden=512, intermediate=1376, heads=8, kv_heads=4, vocab=2048
)
MODELS = {
    "tiny-llama": "builtin:tiny-llama",
    "small-llama": "builtin:tiny-llama",
    "smollm2": "builtin:smollm2-135m-instruct",
}


def finetune(
    model: str,
    *,
    method: str = "lora",
    seq: int = 512,
    batch: int = 4,
    accumulation: int = 1,
    epochs: float = 1,
    training: dict[str, Any] | None = None,
    parameters: str | None = None,
    spec: dict[str, Any] | None = None,
) -> Any:
    """The LlamaFineTune a user would apply for this benchmark configuration."""
    from llamaft_operator.api import LlamaFineTune

    model_spec: dict[str, Any] = {"name": MODELS.get(model, model)}
    if parameters:
        model_spec["parameters"] = parameters
    return LlamaFineTune.model_validate(
        {
            "apiVersion": "llamaft.io/v1alpha1",
            "kind": "LlamaFineTune",
            "metadata": {"name": "bench", "namespace": "bench"},
            "spec": {
                "model": model_spec,
                "method": method,
                "dataset": {"source": {"pvc": {"claimName": "bench", "path": "train.jsonl"}}},
                "training": {
                    "maxSeqLength": seq,
                    "epochs": epochs,
                    "perDeviceBatchSize": batch,
                    "gradientAccumulationSteps": accumulation,
                    "saveSteps": 100000,
                    "evalSteps": 100000,
                    **(training or {}),
                },
                "resources": {"maxGpus": 1, "maxNodes": 1},
                **(spec or {}),
            },
        }
    )


def plan_for(model: str, data_file: Path | None, **kwargs: Any) -> RunPlan:
    """The planner's plan for `finetune(model, **kwargs)`, reading `data_file` locally."""
    from llamaft_operator.api import DataSource
    from llamaft_operator.planner import make_plan
    from llamaft_trainer.config import DeepSpeedPlan

    plan = make_plan(finetune(model, **kwargs))
    update: dict[str, Any] = {"deepspeed": DeepSpeedPlan(zero_stage=0)}
    if data_file is not None:
        source = DataSource.model_validate({"local": {"path": str(data_file)}})
        update["dataset"] = plan.dataset.model_copy(
            update={"source": source, "validation_split": 0.0, "format": "prompt-response"}
        )
    if model == "small-llama":
        update["model"] = plan.model.model_copy(
            update={"architecture": SMALL_LLAMA, "parameters": small_llama_parameters()}
        )
    return plan.model_copy(update=update)


def small_llama_parameters() -> int:
    from llamaft_operator.catalogue import total_parameters

    return int(total_parameters(SMALL_LLAMA))


def write_plan(plan: RunPlan, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan.to_json())
    return path
