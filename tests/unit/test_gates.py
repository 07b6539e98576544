"""Gates: pass/fail messages and missing metrics."""

from __future__ import annotations

import math

import pytest

from llamaft_operator.api import Gate
from llamaft_trainer import gates
from llamaft_trainer.errors import EXIT_BAD_INPUT, BadInputError, GateFailedError

pytestmark = pytest.mark.unit

METRICS = {"golden.rougeL": 0.42, "golden.winRateVsBase": 0.4, "validation.perplexity": 7.5}


def gate(metric: str, min: float | None = None, max: float | None = None) -> Gate:
    return Gate(metric=metric, min=min, max=max)


@pytest.mark.parametrize(
    ("g", "passed"),
    [
        (gate("golden.rougeL", min=0.35), True),
        (gate("golden.rougeL", min=0.42), True),  # bounds are inclusive
        (gate("golden.rougeL", min=0.5), False),
        (gate("validation.perplexity", max=10), True),
        (gate("validation.perplexity", max=5), False),
        (gate("golden.rougeL", min=0.1, max=0.4), False),
    ],
)
def test_evaluate_gates(g: Gate, passed: bool) -> None:
    [result] = gates.evaluate_gates([g], METRICS)
    assert result.passed is passed
    assert result.value == METRICS[g.metric]


def test_check_passes_and_returns_results() -> None:
    results = gates.check([gate("golden.rougeL", min=0.35)], METRICS)
    assert [r.to_dict() for r in results] == [
        {"metric": "golden.rougeL", "value": 0.42, "min": 0.35, "passed": True}
    ]


def test_failed_gate_names_metric_threshold_and_value() -> None:
    with pytest.raises(GateFailedError) as info:
        gates.check(
            [gate("golden.rougeL", min=0.35), gate("golden.winRateVsBase", min=0.5)], METRICS
        )
    message = str(info.value)
    assert "golden.winRateVsBase = 0.4000 (needs >= 0.5): FAILED" in message
    assert "golden.rougeL" not in message  # only the failed gate is described
    assert "1 of 2" in message
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert isinstance(info.value, gates.GatesFailedError)
    assert [r.passed for r in info.value.results] == [True, False]


def test_nan_never_passes() -> None:
    [result] = gates.evaluate_gates(
        [gate("validation.loss", max=100)], {"validation.loss": math.nan}
    )
    assert not result.passed


def test_gate_on_missing_metric_is_a_clear_error() -> None:
    with pytest.raises(BadInputError, match=r"golden\.exactMatch.*goldenSet.*computed metrics"):
        gates.check([gate("golden.exactMatch", min=0.1)], {"validation.loss": 1.0})
