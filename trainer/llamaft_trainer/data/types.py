"""The data layer's value types: rows as read, problems found in them, tokenized examples.

Torch-free so that `llamaft validate-data` (a CPU pod) imports them cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

IGNORE_INDEX = -100  # label value that the loss skips (torch's CrossEntropyLoss default)

# What can be wrong with one row. Constants, so tests and the operator can match on them.
NOT_UTF8 = "not-utf8"
NOT_JSON = "not-json"
NOT_OBJECT = "not-object"
MISSING_FIELD = "missing-field"
WRONG_TYPE = "wrong-type"
EMPTY_FIELD = "empty-field"
EMPTY_RESPONSE = "empty-response"
BAD_MESSAGES = "bad-messages"
TOO_LONG = "too-long"
DUPLICATE = "duplicate"
TEMPLATE = "template"

Unit = Literal["line", "row"]


@dataclass(frozen=True)
class RowProblem:
    """One bad row: where it is, which field, what is wrong (a sentence that says what to do)."""

    line: int
    kind: str
    message: str
    field: str | None = None
    unit: Unit = "line"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __str__(self) -> str:
        where = f"{self.unit} {self.line}" + (f", field {self.field!r}" if self.field else "")
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class LoadedRows:
    """Rows read from a file (numbered by line or by row), plus rows that could not be read."""

    rows: list[tuple[int, dict[str, Any]]]
    problems: list[RowProblem]
    unit: Unit = "line"
    origin: str = ""

    @property
    def total(self) -> int:
        return len(self.rows) + len(self.problems)


@dataclass(frozen=True)
class Example:
    """One tokenized training example; `labels` is -100 on every token that is not trained on."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class TokenizedSplits:
    """What the train step consumes: the two splits and the dataset stats of the train file."""

    train: list[Example]
    validation: list[Example]
    stats: dict[str, Any] = field(default_factory=dict)
