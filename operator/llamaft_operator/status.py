"""Status fields from plans and step results: plan summary, dataset stats, eval results, gates.

Pure: termination-message JSON and RunPlans in, api.py status models (as camelCase dicts) out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from llamaft_operator.api import GateResult, LlamaFineTuneSpec, PlanSummary, Results
from llamaft_operator.settings import Settings
from llamaft_trainer.config import RunPlan


@dataclass(frozen=True)
class DatasetStats:
    rows: int | None
    tokens: int
    bad_rows: int | None

    def describe(self) -> str:
        parts = []
        if self.rows is not None:
            parts.append(f"{self.rows} rows")
        parts.append(f"{self.tokens} tokens")
        if self.bad_rows:
            parts.append(f"{self.bad_rows} bad rows skipped")
        return ", ".join(parts)


def parse_stats(result: Mapping[str, Any] | None) -> DatasetStats | None:
    if not result or not isinstance(result.get("tokens"), int):
        return None
    rows = result.get("rows")
    bad = result.get("badRows")
    return DatasetStats(
        rows if isinstance(rows, int) else None,
        int(result["tokens"]),
        bad if isinstance(bad, int) else None,
    )


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        ):
            out[name] = float(value)
    return out


def parse_results(result: Mapping[str, Any], spec: LlamaFineTuneSpec) -> Results:
    """Metrics and gate results from the eval step's termination message.

    Gates the trainer reported are used as they are; any spec gate it did not report is checked
    here against the metrics, so `status.results.gates` always covers every gate of the spec.
    """
    metrics = dict(list(_flatten(result.get("metrics") or {}).items())[:64])
    reported: dict[str, GateResult] = {}
    for raw in result.get("gates") or []:
        if isinstance(raw, Mapping) and isinstance(raw.get("metric"), str):
            try:
                gate = GateResult.model_validate(
                    {k: raw.get(k) for k in ("metric", "value", "min", "max", "passed")}
                )
            except ValidationError:
                continue
            reported[gate.metric] = gate
    gates = []
    for gate_spec in spec.evaluation.gates:
        if gate_spec.metric in reported:
            gates.append(reported[gate_spec.metric])
            continue
        value = metrics.get(gate_spec.metric)
        passed = (
            value is not None
            and (gate_spec.min is None or value >= gate_spec.min)
            and (gate_spec.max is None or value <= gate_spec.max)
        )
        gates.append(
            GateResult(
                metric=gate_spec.metric,
                value=value,
                min=gate_spec.min,
                max=gate_spec.max,
                passed=passed,
            )
        )
    return Results(metrics=metrics or None, gates=gates or None, headline=headline(metrics, spec))


def headline(metrics: Mapping[str, float], spec: LlamaFineTuneSpec) -> str | None:
    """One metric for `kubectl get lft`: the first gate's, else ROUGE-L, else validation loss."""
    preferred = [g.metric for g in spec.evaluation.gates] + [
        "golden.rougeL",
        "validation.loss",
        "validation.perplexity",
    ]
    for name in preferred:
        if name in metrics:
            return f"{name.split('.', 1)[-1]}={metrics[name]:.3g}"[:64]
    return None


def describe_gates(gates: list[GateResult]) -> str:
    parts = []
    for g in gates:
        bound = " and ".join(
            b
            for b in (
                f">= {g.min}" if g.min is not None else "",
                f"<= {g.max}" if g.max is not None else "",
            )
            if b
        )
        value = "missing" if g.value is None else f"{g.value:.4g}"
        parts.append(f"{g.metric}={value} (needs {bound})")
    return "; ".join(parts)


def plan_summary(plan: RunPlan, settings: Settings) -> dict[str, Any]:
    r, e = plan.resources, plan.estimate
    cost = e.cost_usd
    if settings.price_per_gpu_hour is not None and e.gpu_hours is not None:
        cost = round(e.gpu_hours * settings.price_per_gpu_hour, 2)
    summary = PlanSummary(
        nodes=r.nodes,
        gpus_per_node=r.gpus_per_node,
        total_gpus=r.total_gpus,
        gpu_type=r.gpu_type,
        zero_stage=plan.deepspeed.zero_stage,
        per_device_batch_size=plan.training.per_device_batch_size,
        gradient_accumulation_steps=plan.training.gradient_accumulation_steps,
        peak_memory_gi_b_per_gpu=round(e.peak_memory_gib_per_gpu, 2),
        estimated_gpu_hours=e.gpu_hours,
        estimated_duration=_duration(e.duration_hours),
        estimated_cost_usd=cost,
        dataset_tokens=e.dataset_tokens,
        final=plan.final,
    )
    return summary.model_dump(by_alias=True, exclude_none=True)


def _duration(hours: float | None) -> str | None:
    if hours is None:
        return None
    minutes = max(1, round(hours * 60))
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def describe_plan(plan: RunPlan) -> str:
    r, e = plan.resources, plan.estimate
    text = (
        f"{'final' if plan.final else 'initial'} plan: {r.nodes} node(s) x {r.gpus_per_node} "
        f"{r.gpu_type}, ZeRO-{plan.deepspeed.zero_stage}, batch "
        f"{plan.training.per_device_batch_size}x{plan.training.gradient_accumulation_steps}, "
        f"~{e.peak_memory_gib_per_gpu:.1f} GiB/GPU"
    )
    if e.dataset_tokens is not None:
        text += f", {e.dataset_tokens} tokens"
    duration = _duration(e.duration_hours)
    if duration:
        text += f", ~{duration}"
    return text
