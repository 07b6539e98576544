"""Run plans for the built-in tiny Llama on the bundled quickstart data (trainer tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamaft_operator.api import DataSource, PilotSpec
from llamaft_operator.planner import make_plan
from llamaft_trainer.config import DeepSpeedPlan, RunPlan
from tests.unit.plan_helpers import make_finetune

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "data" / "quickstart"


def tiny_plan(
    method: str = "lora",
    *,
    zero_stage: int = 0,
    training: dict[str, Any] | None = None,
    pilot: bool = False,
) -> RunPlan:
    settings = {
        "maxSteps": 8,
        "perDeviceBatchSize": 4,
        "gradientAccumulationSteps": 2,
        "learningRate": 3e-3,
        "saveSteps": 4,
        "evalSteps": 4,
        **(training or {}),
    }
    ft = make_finetune(model="builtin:tiny-llama", method=method, seq=256, training=settings)
    plan = make_plan(ft)
    source = DataSource.model_validate({"local": {"path": str(QUICKSTART / "train.jsonl")}})
    golden = DataSource.model_validate({"local": {"path": str(QUICKSTART / "golden.jsonl")}})
    dataset = plan.dataset.model_copy(
        update={"source": source, "golden_set": golden, "format": "prompt-response"}
    )
    quant = plan.quantization
    if quant is not None:
        quant = quant.model_copy(
            update={"storage_dtype": "float32" if zero_stage == 3 else "uint8"}
        )
    return plan.model_copy(
        update={
            "dataset": dataset,
            "deepspeed": DeepSpeedPlan(zero_stage=zero_stage),  # type: ignore[arg-type]
            "quantization": quant,
            "pilot": PilotSpec(enabled=True, max_steps=10) if pilot else None,
        }
    )


def write_plan(plan: RunPlan, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "plan.json"
    path.write_text(plan.to_json())
    return path
