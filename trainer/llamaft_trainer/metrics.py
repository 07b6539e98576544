"""Golden-set scores: exact match, token F1, ROUGE-L and the tuned-vs-base win rate.

Pure functions on strings (no torch), so they are cheap to test and the scores in `eval.json` can be
recomputed from its samples.

Normalisation, per metric:
- **exact match** compares `normalize_whitespace_case` of both sides: lower-cased (`str.casefold`),
  leading/trailing whitespace stripped, inner runs of whitespace collapsed to one space.
  Punctuation counts: for a fixed output format (JSON, a code, a label) a missing bracket is wrong.
- **token F1** is SQuAD's: lower-cased, punctuation and the articles a/an/the removed, split on
  whitespace, F1 of the multiset overlap. Both empty -> 1.0, one empty -> 0.0.
- **ROUGE-L** is the F-measure of `rouge-score` (Google's reference implementation) with its
  tokenizer (lower-cased ASCII alphanumerics) and the Porter stemmer. Text without any ASCII
  letter or digit tokenizes to nothing and scores 0 -- use exact match or token F1 for such tasks.
- **win rate** compares tuned and base ROUGE-L per example: higher wins (1), equal ties (0.5).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_WHITESPACE = re.compile(r"\s+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)

# Names as they appear in eval.json and in gates (`golden.<name>`).
EXACT_MATCH = "exactMatch"
TOKEN_F1 = "tokenF1"
ROUGE_L = "rougeL"
WIN_RATE = "winRateVsBase"


def normalize_whitespace_case(text: str) -> str:
    """Case-folded, stripped, inner whitespace collapsed: what exact match compares."""
    return _WHITESPACE.sub(" ", text).strip().casefold()


def squad_tokens(text: str) -> list[str]:
    """SQuAD's answer normalisation, then whitespace tokens."""
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return text.split()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when both are equal after `normalize_whitespace_case`, else 0.0."""
    same = normalize_whitespace_case(prediction) == normalize_whitespace_case(reference)
    return 1.0 if same else 0.0


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between a prediction and a reference."""
    pred, ref = squad_tokens(prediction), squad_tokens(reference)
    if not pred or not ref:
        return 1.0 if pred == ref else 0.0
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence) from `rouge-score`."""
    score = _rouge_scorer().score(reference, prediction)["rougeL"]
    return float(score.fmeasure)


def win_rate(tuned: Sequence[float], base: Sequence[float]) -> float:
    """Share of examples where the tuned score beats the base score; ties count one half."""
    if len(tuned) != len(base):
        raise ValueError(
            f"win_rate needs paired scores, got {len(tuned)} tuned vs {len(base)} base"
        )
    if not tuned:
        return math.nan
    wins = sum(1.0 if t > b else 0.5 if t == b else 0.0 for t, b in zip(tuned, base, strict=True))
    return wins / len(tuned)


@dataclass(frozen=True)
class ExampleScores:
    """Scores of one generation against its reference."""

    exact_match: float
    token_f1: float
    rouge_l: float

    def to_dict(self) -> dict[str, float]:
        return {EXACT_MATCH: self.exact_match, TOKEN_F1: self.token_f1, ROUGE_L: self.rouge_l}


def score_example(prediction: str, reference: str) -> ExampleScores:
    return ExampleScores(
        exact_match=exact_match(prediction, reference),
        token_f1=token_f1(prediction, reference),
        rouge_l=rouge_l(prediction, reference),
    )


def mean_scores(scores: Sequence[ExampleScores]) -> dict[str, float]:
    """Corpus scores: the mean of each per-example score (NaN for no examples)."""

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else math.nan

    return {
        EXACT_MATCH: mean([s.exact_match for s in scores]),
        TOKEN_F1: mean([s.token_f1 for s in scores]),
        ROUGE_L: mean([s.rouge_l for s in scores]),
    }


@dataclass(frozen=True)
class GoldenScores:
    """Golden-set scores of the tuned and the base model, per example and overall."""

    tuned: list[ExampleScores]
    base: list[ExampleScores]

    def metrics(self) -> dict[str, float]:
        """`golden.*` for the tuned model (plus the win rate) and `golden.base.*` for the base."""
        out = {f"golden.{k}": v for k, v in mean_scores(self.tuned).items()}
        out[f"golden.{WIN_RATE}"] = win_rate(
            [s.rouge_l for s in self.tuned], [s.rouge_l for s in self.base]
        )
        out.update({f"golden.base.{k}": v for k, v in mean_scores(self.base).items()})
        return out


def score_golden(
    references: Sequence[str], tuned: Sequence[str], base: Sequence[str]
) -> GoldenScores:
    """Score tuned and base generations against the references (all three paired by index)."""
    if not len(references) == len(tuned) == len(base):
        raise ValueError(
            f"score_golden needs paired lists, got {len(references)} references, "
            f"{len(tuned)} tuned and {len(base)} base generations"
        )
    return GoldenScores(
        tuned=[score_example(p, r) for p, r in zip(tuned, references, strict=True)],
        base=[score_example(p, r) for p, r in zip(base, references, strict=True)],
    )
