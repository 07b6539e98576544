"""Factories for package/publish/evaluate tests: a run plan and a work directory holding a fake
adapter (a valid safetensors file written by hand, no torch) and reports."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from llamaft_operator.planner import make_plan
from llamaft_trainer.config import RunPlan
from tests.unit.plan_helpers import make_finetune

REPO = "acme/support-bot-lora"


def make_run_plan(
    *,
    publish: dict[str, Any] | None = None,
    gates: list[dict[str, Any]] | None = None,
    model: str = "meta-llama/Llama-3.1-8B-Instruct",
    run_id: str = "uid-1234-gen-1",
    golden: bool = True,
    extra_spec: dict[str, Any] | None = None,
) -> RunPlan:
    dataset: dict[str, Any] = {"source": {"pvc": {"claimName": "datasets", "path": "train.jsonl"}}}
    if golden:
        dataset["goldenSet"] = {"pvc": {"claimName": "datasets", "path": "golden.jsonl"}}
    spec: dict[str, Any] = {"dataset": dataset, "evaluation": {"gates": gates or [], "samples": 3}}
    if publish is not None:
        spec["publish"] = publish
    spec.update(extra_spec or {})
    ft = make_finetune(name="support-bot", model=model, extra_spec=spec)
    return make_plan(ft, run_id=run_id)


def hub_publish(repo: str = REPO, **fields: Any) -> dict[str, Any]:
    return {"hub": {"repo": repo, "tokenSecret": {"name": "hf-token"}, **fields}}


def safetensors_bytes(values: list[float]) -> bytes:
    data = struct.pack(f"<{len(values)}f", *values)
    header = {
        "base_model.model.layers.0.q_proj.lora_A.weight": {
            "dtype": "F32",
            "shape": [len(values)],
            "data_offsets": [0, len(data)],
        }
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def make_workdir(root: Path, *, weights: list[float] | None = None) -> Path:
    """`root` with adapter/ (config, safetensors, tokenizer files) and reports/."""
    adapter = root / "adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj"]})
    )
    (adapter / "adapter_model.safetensors").write_bytes(
        safetensors_bytes(weights or [0.5, -0.25, 1.0, 2.0])
    )
    (adapter / "tokenizer.json").write_text('{"version": "1.0"}')
    (adapter / "tokenizer_config.json").write_text('{"model_max_length": 2048}')
    (adapter / "README.md").write_text("PEFT's own card, replaced by ours\n")
    reports = root / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "eval.json").write_text(
        json.dumps(
            {
                "metrics": {
                    "golden.exactMatch": 0.6,
                    "golden.tokenF1": 0.8,
                    "golden.rougeL": 0.75,
                    "golden.winRateVsBase": 0.9,
                    "golden.base.exactMatch": 0.0,
                    "golden.base.tokenF1": 0.2,
                    "golden.base.rougeL": 0.25,
                    "validation.loss": 1.25,
                    "validation.perplexity": 3.49,
                },
                "samples": [
                    {
                        "prompt": "Reset my password",
                        "reference": "TICKET: account/password",
                        "base": "Sure! Here is how ```you``` reset",
                        "tuned": "TICKET: account/password",
                    }
                ],
                "gates": [{"metric": "golden.rougeL", "value": 0.75, "min": 0.35, "passed": True}],
                "golden": {"examples": 30},
                "startTime": "2025-01-01T00:00:00Z",
                "endTime": "2025-01-01T00:05:00Z",
            }
        )
    )
    (reports / "data.json").write_text(
        json.dumps({"sha256": "ab" * 32, "stats": {"rows": 480, "tokens": 51234}})
    )
    return root
