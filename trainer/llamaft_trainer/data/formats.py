"""Row formats: detect them, apply column renames, and check each row's fields and types.

Every format is normalised to a `Conversation`: either plain `text` (trained on entirely) or a list
of chat messages whose assistant turns are trained on.
- `prompt-response`: {prompt, response, system?} -> system?, user: prompt, assistant: response
- `instruction`: {instruction, context?, response, system?} -> user: instruction, a blank line and
  the context when there is one; assistant: response
- `text`: {text}
- `messages`: {messages: [{role: system|user|assistant, content}, ...]}; a system message may
  only come first, and the last message must be the assistant's (it is what is trained on).
`auto` picks the format whose required columns most of the first rows have (at least half; ties
go to the first of messages, instruction, prompt-response, text). `ColumnMapping` renames
a format's columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llamaft_operator.api import ColumnMapping, DatasetFormat
from llamaft_trainer.data.types import (
    BAD_MESSAGES,
    EMPTY_FIELD,
    EMPTY_RESPONSE,
    MISSING_FIELD,
    WRONG_TYPE,
    RowProblem,
    Unit,
)
from llamaft_trainer.errors import BadInputError

ConcreteFormat = str  # one of FORMATS
FORMATS: tuple[ConcreteFormat, ...] = ("messages", "instruction", "prompt-response", "text")
ROLES = ("system", "user", "assistant")
DETECT_ROWS = 50

Message = dict[str, str]


@dataclass(frozen=True)
class Conversation:
    """A normalised row: `text` for the text format, else `messages` ending with the assistant."""

    messages: tuple[tuple[str, str], ...] = ()
    text: str | None = None

    def as_messages(self) -> list[Message]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def key(self) -> str:
        """Content identity, for duplicate detection and the hash-based split."""
        if self.text is not None:
            return "text\x00" + self.text
        return "\x01".join(f"{role}\x00{content}" for role, content in self.messages)


@dataclass(frozen=True)
class Columns:
    prompt: str = "prompt"
    response: str = "response"
    instruction: str = "instruction"
    context: str = "context"
    text: str = "text"
    messages: str = "messages"
    system: str = "system"

    @classmethod
    def of(cls, mapping: ColumnMapping | None) -> Columns:
        if mapping is None:
            return cls()
        overrides = {k: v for k, v in mapping.model_dump().items() if v is not None}
        return cls(**overrides)

    def required(self, fmt: ConcreteFormat) -> tuple[str, ...]:
        return {
            "messages": (self.messages,),
            "instruction": (self.instruction, self.response),
            "prompt-response": (self.prompt, self.response),
            "text": (self.text,),
        }[fmt]


def detect_format(
    rows: Sequence[tuple[int, dict[str, Any]]], columns: ColumnMapping | None = None
) -> ConcreteFormat:
    """The format whose required columns most of the first rows have; BadInputError if none."""
    cols = Columns.of(columns)
    sample = [row for _, row in rows[:DETECT_ROWS]]
    if not sample:
        raise BadInputError("the dataset has no readable rows, so its format cannot be detected")
    counts = {f: sum(all(k in row for k in cols.required(f)) for row in sample) for f in FORMATS}
    best = max(FORMATS, key=lambda f: counts[f])  # ties go to the earlier (more specific) format
    if counts[best] * 2 >= len(sample):
        return best
    seen = sorted({k for row in sample for k in row})
    raise BadInputError(
        f"cannot detect the dataset format from the columns {seen}: expected one of "
        + "; ".join(f"{f} {list(cols.required(f))}" for f in FORMATS)
        + ". Set dataset.format and, if the names differ, dataset.columns"
    )


def resolve_format(
    fmt: DatasetFormat, rows: Sequence[tuple[int, dict[str, Any]]], columns: ColumnMapping | None
) -> ConcreteFormat:
    return detect_format(rows, columns) if fmt == "auto" else fmt


def normalize_row(
    number: int,
    row: dict[str, Any],
    fmt: ConcreteFormat,
    columns: ColumnMapping | None = None,
    unit: Unit = "line",
) -> Conversation | RowProblem:
    """The row as a Conversation, or the first problem found in it."""
    cols = Columns.of(columns)

    def problem(kind: str, field: str, message: str) -> RowProblem:
        return RowProblem(number, kind, message, field=field, unit=unit)

    def text_field(name: str, *, required: bool, kind_if_empty: str) -> str | RowProblem | None:
        value = row.get(name)
        if value is None:
            if not required:
                return None
            return problem(
                MISSING_FIELD,
                name,
                f"missing field {name!r} (format {fmt}); the row has {sorted(row)}",
            )
        if not isinstance(value, str):
            return problem(
                WRONG_TYPE, name, f"{name!r} must be a string, not {type(value).__name__}"
            )
        if not value.strip():
            if not required:
                return None
            return problem(kind_if_empty, name, f"{name!r} is empty")
        return value

    if fmt == "text":
        text = text_field(cols.text, required=True, kind_if_empty=EMPTY_FIELD)
        return text if isinstance(text, RowProblem) else Conversation(text=text)
    if fmt == "messages":
        return _normalize_messages(row.get(cols.messages), cols.messages, problem)

    system = text_field(cols.system, required=False, kind_if_empty=EMPTY_FIELD)
    if fmt == "prompt-response":
        user = text_field(cols.prompt, required=True, kind_if_empty=EMPTY_FIELD)
    elif fmt == "instruction":
        user = text_field(cols.instruction, required=True, kind_if_empty=EMPTY_FIELD)
        context = text_field(cols.context, required=False, kind_if_empty=EMPTY_FIELD)
        if isinstance(context, RowProblem):
            return context
        if isinstance(user, str) and context:
            user = f"{user}\n\n{context}"
    else:
        raise BadInputError(f"unknown dataset format {fmt!r}: use one of {', '.join(FORMATS)}")
    response = text_field(cols.response, required=True, kind_if_empty=EMPTY_RESPONSE)
    for value in (user, response, system):
        if isinstance(value, RowProblem):
            return value
    assert isinstance(user, str) and isinstance(response, str)
    turns = ((("system", system),) if isinstance(system, str) else ()) + (
        ("user", user),
        ("assistant", response),
    )
    return Conversation(messages=turns)


def _normalize_messages(
    value: Any, name: str, problem: Callable[[str, str, str], RowProblem]
) -> Conversation | RowProblem:
    if value is None:
        return problem(MISSING_FIELD, name, f"missing field {name!r} (format messages)")
    if not isinstance(value, list) or not value:
        what = "an empty list" if isinstance(value, list) else type(value).__name__
        return problem(
            WRONG_TYPE,
            name,
            f"{name!r} must be a non-empty list of {{role, content}} objects, not {what}",
        )
    turns: list[tuple[str, str]] = []
    for i, message in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(message, dict):
            return problem(WRONG_TYPE, where, f"must be an object, not {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return problem(BAD_MESSAGES, where, f"role {role!r} is not one of {', '.join(ROLES)}")
        if role == "system" and i != 0:
            return problem(BAD_MESSAGES, where, "a system message may only come first")
        if not isinstance(content, str):
            return problem(
                WRONG_TYPE, where, f"content must be a string, not {type(content).__name__}"
            )
        if not content.strip():
            kind = EMPTY_RESPONSE if role == "assistant" else EMPTY_FIELD
            return problem(kind, where, f"the {role} message is empty")
        turns.append((role, content))
    if turns[-1][0] != "assistant":
        return problem(
            BAD_MESSAGES, name, "the last message must be the assistant's (the response trained on)"
        )
    if not any(role == "user" for role, _ in turns):
        return problem(BAD_MESSAGES, name, "there is no user message")
    return Conversation(messages=tuple(turns))
