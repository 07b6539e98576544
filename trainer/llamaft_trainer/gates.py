"""Publish gates: `spec.evaluation.gates` checked against the metrics of `reports/eval.json`.

A gate names a metric (`golden.rougeL`, `validation.perplexity`, ...) and a `min` and/or `max`.
`evaluate_gates` only reports; `check` raises `GateFailedError` (exit 2: the pipeline stops before
packaging and publishing, the adapter stays on the work volume) when any gate is not met.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from llamaft_operator.api import Gate
from llamaft_trainer.errors import BadInputError, GateFailedError


class GateMetricMissingError(BadInputError):
    """A gate names a metric evaluation did not compute (e.g. golden.* without a golden set)."""


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome (the shape of `status.results.gates[]`)."""

    metric: str
    value: float
    min: float | None
    max: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """`golden.rougeL = 0.2100 (needs >= 0.35): FAILED`."""
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        verdict = "passed" if self.passed else "FAILED"
        return f"{self.metric} = {self.value:.4f} (needs {' and '.join(bounds)}): {verdict}"


def evaluate_gates(gates: Sequence[Gate], metrics: Mapping[str, float]) -> list[GateResult]:
    """Each gate's result, in the order given. NaN never passes."""
    results = []
    for gate in gates:
        if gate.metric not in metrics:
            computed = ", ".join(sorted(metrics)) or "none"
            hint = (
                " (golden.* metrics need dataset.goldenSet)"
                if gate.metric.startswith("golden.")
                else ""
            )
            raise GateMetricMissingError(
                f"gate on {gate.metric!r} cannot be checked: evaluation did not compute it{hint}; "
                f"computed metrics: {computed}. Fix spec.evaluation.gates or the dataset."
            )
        value = float(metrics[gate.metric])
        passed = not math.isnan(value)
        if gate.min is not None:
            passed = passed and value >= gate.min
        if gate.max is not None:
            passed = passed and value <= gate.max
        results.append(GateResult(gate.metric, value, gate.min, gate.max, passed))
    return results


class GatesFailedError(GateFailedError):
    """At least one gate failed; `results` holds every gate's outcome."""

    def __init__(self, results: list[GateResult]) -> None:
        failed = [r for r in results if not r.passed]
        lines = "; ".join(r.describe() for r in failed)
        super().__init__(
            f"{len(failed)} of {len(results)} evaluation gate(s) failed: {lines}. "
            "Nothing was published; the adapter is kept on the work volume. Improve the run "
            "(data, epochs, learning rate) or relax spec.evaluation.gates."
        )
        self.results = results


def check(gates: Sequence[Gate], metrics: Mapping[str, float]) -> list[GateResult]:
    """Results of all gates; raises `GatesFailedError` (a `GateFailedError`) if any failed."""
    results = evaluate_gates(gates, metrics)
    if any(not r.passed for r in results):
        raise GatesFailedError(results)
    return results
