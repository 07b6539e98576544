"""Metrics on known strings."""

from __future__ import annotations

import math

import pytest

from llamaft_trainer import metrics

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("Paris", "paris", 1.0),
        ("  The  answer\nis 42 ", "the answer is 42", 1.0),
        ("42.", "42", 0.0),  # punctuation counts for exact match
        ("", "", 1.0),
        ("yes", "no", 0.0),
    ],
)
def test_exact_match(prediction: str, reference: str, expected: float) -> None:
    assert metrics.exact_match(prediction, reference) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("the cat sat", "The cat sat!", 1.0),
        ("cat", "cat sat", 2 * (1.0 * 0.5) / 1.5),
        ("a dog", "the cat", 0.0),
        ("", "", 1.0),
        ("", "cat", 0.0),
        ("cat cat", "cat", 2 * (0.5 * 1.0) / 1.5),  # multiset overlap
    ],
)
def test_token_f1(prediction: str, reference: str, expected: float) -> None:
    assert metrics.token_f1(prediction, reference) == pytest.approx(expected)


def test_rouge_l_known_values() -> None:
    assert metrics.rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # LCS "the cat on the mat" = 5 of 6 tokens on both sides.
    assert metrics.rouge_l("the cat is on the mat", "the cat sat on the mat") == pytest.approx(
        5 / 6
    )
    assert metrics.rouge_l("completely different", "nothing alike here") == 0.0
    assert metrics.rouge_l("", "something") == 0.0


def test_win_rate_counts_ties_as_half() -> None:
    assert metrics.win_rate([1.0, 0.5, 0.2, 0.3], [0.5, 0.5, 0.9, 0.3]) == pytest.approx(
        (1 + 0.5 + 0 + 0.5) / 4
    )
    assert math.isnan(metrics.win_rate([], []))
    with pytest.raises(ValueError, match="paired"):
        metrics.win_rate([1.0], [])


def test_score_golden_reports_tuned_base_and_win_rate() -> None:
    refs = ["the capital is paris", "blue", "42"]
    tuned = ["The capital is Paris", "blue", "41"]
    base = ["I think it is Lyon", "red", "41"]
    out = metrics.score_golden(refs, tuned, base).metrics()
    assert out["golden.exactMatch"] == pytest.approx(2 / 3)
    assert out["golden.base.exactMatch"] == 0.0
    assert out["golden.rougeL"] > out["golden.base.rougeL"]
    assert out["golden.winRateVsBase"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert set(out) == {
        "golden.exactMatch",
        "golden.tokenF1",
        "golden.rougeL",
        "golden.winRateVsBase",
        "golden.base.exactMatch",
        "golden.base.tokenF1",
        "golden.base.rougeL",
    }


def test_score_golden_rejects_unpaired_lists() -> None:
    with pytest.raises(ValueError, match="paired"):
        metrics.score_golden(["a"], ["a", "b"], ["a"])
