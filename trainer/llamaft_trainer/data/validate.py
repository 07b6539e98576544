"""Check every row before any GPU is used, and measure the dataset.

`validate_rows` normalises each row (formats.py), renders and tokenizes it under the truncation
policy (render.py) and drops exact duplicates (same content after column mapping; the first
occurrence is kept). Each bad row becomes a `RowProblem`; the data is unusable when there is no
usable row or when more than `max_bad_rows_fraction` of all rows are bad (0: any bad row fails).

Without a tokenizer the structure is still checked and tokens are estimated as
ceil(characters / 4) + 4 per message (about right for English with Llama-family tokenizers); the
length limit is then not enforced per row, only counted (`over_length_estimated`), since an
estimate must not drop a row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llamaft_operator.api import ColumnMapping, DatasetFormat
from llamaft_trainer.data.formats import Conversation, normalize_row, resolve_format
from llamaft_trainer.data.render import Rendered, render_row
from llamaft_trainer.data.types import DUPLICATE, IGNORE_INDEX, Example, LoadedRows, RowProblem
from llamaft_trainer.errors import BadInputError

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
PROBLEMS_IN_SUMMARY = 5


@dataclass(frozen=True)
class KeptRow:
    number: int
    conversation: Conversation
    example: Example | None  # None when validated without a tokenizer


@dataclass
class ValidationReport:
    """What validation found: bad rows, usable rows and their length statistics."""

    origin: str
    format: str
    rows: int
    problems: list[RowProblem]
    kept: list[KeptRow] = field(repr=False)
    lengths: list[int]
    trained_tokens: int
    truncated: int
    max_seq_length: int
    max_bad_rows_fraction: float
    tokenizer: str | None = None

    @property
    def bad_rows(self) -> int:
        return len(self.problems)

    @property
    def usable_rows(self) -> int:
        return len(self.kept)

    @property
    def tokens_estimated(self) -> bool:
        return self.tokenizer is None

    @property
    def usable(self) -> bool:
        return self.usable_rows > 0 and self.bad_rows <= self.max_bad_rows_fraction * self.rows

    def verdict(self) -> str:
        if self.usable_rows == 0:
            return "no usable rows"
        if not self.usable:
            return (
                f"{self.bad_rows} of {self.rows} rows are bad, more than the allowed "
                f"{self.max_bad_rows_fraction:g} (dataset.maxBadRowsFraction): fix them or raise "
                "the fraction (at most 0.05)"
            )
        return "ok"

    def stats(self) -> dict[str, Any]:
        lengths = sorted(self.lengths)
        stats: dict[str, Any] = {
            "rows": self.rows,
            "usableRows": self.usable_rows,
            "badRows": self.bad_rows,
            "tokens": sum(lengths),
            "trainedTokens": self.trained_tokens,
            "tokensEstimated": self.tokens_estimated,
            "truncatedRows": self.truncated,
            "maxSeqLength": self.max_seq_length,
        }
        if lengths:
            stats.update(
                mean=round(sum(lengths) / len(lengths), 1),
                p50=_percentile(lengths, 50),
                p95=_percentile(lengths, 95),
                max=lengths[-1],
                histogram=histogram(lengths, self.max_seq_length),
            )
        if self.tokens_estimated:
            stats["overLengthEstimated"] = sum(n > self.max_seq_length for n in lengths)
        return stats

    def to_dict(self) -> dict[str, Any]:
        """The full report (stdout of `llamaft validate-data`)."""
        return {
            "source": self.origin,
            "format": self.format,
            "tokenizer": self.tokenizer,
            "usable": self.usable,
            "verdict": self.verdict(),
            "maxBadRowsFraction": self.max_bad_rows_fraction,
            "stats": self.stats(),
            "problems": [p.to_dict() for p in self.problems],
        }

    def summary(self) -> dict[str, Any]:
        """The compact result for the termination message (< 4 KiB): stats, first problems."""
        stats = self.stats()
        stats.pop("histogram", None)
        return {
            "step": "validate",
            "usable": self.usable,
            "format": self.format,
            **stats,
            "problems": [str(p) for p in self.problems[:PROBLEMS_IN_SUMMARY]],
        }

    def raise_if_unusable(self) -> None:
        if self.usable:
            return
        first = "; ".join(str(p) for p in self.problems[:3])
        raise BadInputError(
            f"dataset {self.origin} is unusable: {self.verdict()}"
            + (f". First: {first}" if first else "")
        )


def _percentile(sorted_values: list[int], q: int) -> int:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def histogram(lengths: Sequence[int], max_seq_length: int) -> list[dict[str, int]]:
    """Counts per power-of-two length bucket up to max_seq_length (`le`: inclusive upper bound)."""
    bounds: list[int] = []
    bound = 16
    while bound < max_seq_length:
        bounds.append(bound)
        bound *= 2
    bounds.append(max_seq_length)
    counts = [0] * len(bounds)
    over = 0
    for n in lengths:
        for i, b in enumerate(bounds):
            if n <= b:
                counts[i] += 1
                break
        else:
            over += 1
    buckets = [{"le": b, "count": c} for b, c in zip(bounds, counts, strict=True)]
    if over:
        buckets.append({"gt": max_seq_length, "count": over})
    return buckets


def estimate_tokens(conversation: Conversation) -> tuple[int, int]:
    """(estimated tokens, estimated trained tokens) without a tokenizer; see module docstring."""
    if conversation.text is not None:
        n = math.ceil(len(conversation.text) / CHARS_PER_TOKEN) + 2
        return n, n
    total = trained = 0
    for role, content in conversation.messages:
        n = math.ceil(len(content) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE
        total += n
        trained += n if role == "assistant" else 0
    return total, trained


def validate_rows(
    rows: LoadedRows | Sequence[tuple[int, dict[str, Any]]],
    *,
    fmt: DatasetFormat = "auto",
    columns: ColumnMapping | None = None,
    tokenizer: Any = None,
    max_seq_length: int = 2048,
    max_bad_rows_fraction: float = 0.0,
    tokenizer_name: str | None = None,
) -> ValidationReport:
    """Check every row; `rows` may carry unreadable rows (LoadedRows.problems) already found."""
    loaded = rows if isinstance(rows, LoadedRows) else LoadedRows(list(rows), [])
    concrete = resolve_format(fmt, loaded.rows, columns) if loaded.rows else fmt
    problems = list(loaded.problems)
    kept: list[KeptRow] = []
    lengths: list[int] = []
    trained = truncated = 0
    seen: dict[str, int] = {}
    for number, row in loaded.rows:
        conversation = normalize_row(number, row, concrete, columns, loaded.unit)
        if isinstance(conversation, RowProblem):
            problems.append(conversation)
            continue
        key = conversation.key()
        if key in seen:
            problems.append(
                RowProblem(
                    number,
                    DUPLICATE,
                    f"same content as {loaded.unit} {seen[key]}: remove one of them",
                    unit=loaded.unit,
                )
            )
            continue
        seen[key] = number
        if tokenizer is None:
            n, t = estimate_tokens(conversation)
            kept.append(KeptRow(number, conversation, None))
        else:
            rendered = render_row(tokenizer, conversation, max_seq_length, number, loaded.unit)
            if not isinstance(rendered, Rendered):
                problems.append(rendered)
                continue
            example = rendered.example
            n, t = len(example), sum(x != IGNORE_INDEX for x in example.labels)
            truncated += rendered.truncated
            kept.append(KeptRow(number, conversation, example))
        lengths.append(n)
        trained += t
    problems.sort(key=lambda p: p.line)
    return ValidationReport(
        origin=loaded.origin,
        format=concrete,
        rows=loaded.total,
        problems=problems,
        kept=kept,
        lengths=lengths,
        trained_tokens=trained,
        truncated=truncated,
        max_seq_length=max_seq_length,
        max_bad_rows_fraction=max_bad_rows_fraction,
        tokenizer=tokenizer_name or (None if tokenizer is None else type(tokenizer).__name__),
    )
