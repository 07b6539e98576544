"""Formats, column mapping, auto detection, and every kind of bad row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamaft_operator.api import ColumnMapping
from llamaft_trainer.data import Conversation, detect_format, normalize_row, read_file
from llamaft_trainer.data.formats import FORMATS
from llamaft_trainer.data.validate import histogram, validate_rows
from llamaft_trainer.errors import BadInputError
from tests.unit.tokenizers_for_tests import chat_tokenizer

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
]
FORMAT_CASES: list[tuple[str, dict[str, Any], Conversation]] = [
    (
        "prompt-response",
        {"prompt": "Q", "response": "A"},
        Conversation(messages=(("user", "Q"), ("assistant", "A"))),
    ),
    (
        "prompt-response",
        {"prompt": "Q", "response": "A", "system": "S"},
        Conversation(messages=(("system", "S"), ("user", "Q"), ("assistant", "A"))),
    ),
    (
        "instruction",
        {"instruction": "Summarise", "context": "Long text", "response": "Short"},
        Conversation(messages=(("user", "Summarise\n\nLong text"), ("assistant", "Short"))),
    ),
    (
        "instruction",
        {"instruction": "Say hi", "context": "", "response": "hi"},
        Conversation(messages=(("user", "Say hi"), ("assistant", "hi"))),
    ),
    ("text", {"text": "Just text."}, Conversation(text="Just text.")),
    (
        "messages",
        {"messages": CHAT},
        Conversation(messages=(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))),
    ),
]


@pytest.mark.parametrize(("fmt", "row", "expected"), FORMAT_CASES)
def test_each_format_normalises(fmt: str, row: dict[str, Any], expected: Conversation) -> None:
    assert normalize_row(1, row, fmt) == expected
    assert detect_format([(1, row)]) == fmt


def test_column_mapping_renames() -> None:
    columns = ColumnMapping(prompt="question", response="answer")
    row = {"question": "Q", "answer": "A"}
    assert detect_format([(1, row)], columns) == "prompt-response"
    assert normalize_row(1, row, "prompt-response", columns) == FORMAT_CASES[0][2]
    chat = ColumnMapping(messages="conversation")
    assert detect_format([(1, {"conversation": CHAT})], chat) == "messages"


def test_detection_follows_most_of_the_first_rows() -> None:
    rows = [(i, {"prompt": "p", "response": "r"}) for i in range(3)] + [(9, {"text": "t"})]
    assert detect_format(rows) == "prompt-response"


def test_undetectable_format_says_what_to_set() -> None:
    with pytest.raises(
        BadInputError, match=r"cannot detect.*\['input', 'output'\].*dataset.format"
    ):
        detect_format([(1, {"input": "a", "output": "b"})])


BAD_ROWS: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("prompt-response", {"prompt": "Q"}, "missing-field", "response"),
    ("prompt-response", {"prompt": "Q", "response": None}, "missing-field", "response"),
    ("prompt-response", {"prompt": "Q", "response": " \n"}, "empty-response", "response"),
    ("prompt-response", {"prompt": "", "response": "A"}, "empty-field", "prompt"),
    ("prompt-response", {"prompt": ["Q"], "response": "A"}, "wrong-type", "prompt"),
    ("prompt-response", {"prompt": "Q", "response": 3}, "wrong-type", "response"),
    ("prompt-response", {"prompt": "Q", "response": "A", "system": 1}, "wrong-type", "system"),
    ("instruction", {"context": "c", "response": "A"}, "missing-field", "instruction"),
    ("instruction", {"instruction": "i", "context": 5, "response": "A"}, "wrong-type", "context"),
    ("instruction", {"instruction": "i", "response": ""}, "empty-response", "response"),
    ("text", {"text": ""}, "empty-field", "text"),
    ("text", {"body": "x"}, "missing-field", "text"),
    ("messages", {"messages": "hi"}, "wrong-type", "messages"),
    ("messages", {"messages": []}, "wrong-type", "messages"),
    ("messages", {"messages": ["hi"]}, "wrong-type", "messages[0]"),
    ("messages", {"messages": [{"role": "bot", "content": "x"}]}, "bad-messages", "messages[0]"),
    ("messages", {"messages": [CHAT[1], CHAT[0], CHAT[2]]}, "bad-messages", "messages[1]"),
    ("messages", {"messages": [CHAT[1], {"role": "assistant"}]}, "wrong-type", "messages[1]"),
    (
        "messages",
        {"messages": [CHAT[1], {"role": "assistant", "content": ""}]},
        "empty-response",
        "messages[1]",
    ),
    ("messages", {"messages": CHAT[:2]}, "bad-messages", "messages"),
    ("messages", {"messages": [CHAT[0], CHAT[2]]}, "bad-messages", "messages"),
]


@pytest.mark.parametrize(("fmt", "row", "kind", "field"), BAD_ROWS)
def test_each_bad_row_kind(fmt: str, row: dict[str, Any], kind: str, field: str | None) -> None:
    report = validate_rows([(7, row)], fmt=fmt)  # type: ignore[arg-type]
    assert [(p.line, p.kind, p.field) for p in report.problems] == [(7, kind, field)]
    assert not report.usable and report.verdict() == "no usable rows"


EXPECTED_JSONL = [
    (3, "missing-field"),
    (4, "empty-response"),
    (5, "not-json"),
    (6, "wrong-type"),
    (7, "duplicate"),
    (8, "not-object"),
    (9, "empty-field"),
    (10, "not-utf8"),
]


def test_fixture_jsonl_reports_every_bad_line() -> None:
    report = validate_rows(read_file(FIXTURES / "bad_rows.jsonl"))
    assert [(p.line, p.kind) for p in report.problems] == EXPECTED_JSONL
    assert [k.number for k in report.kept] == [1, 2, 12]
    assert report.rows == 11 and report.bad_rows == 8 and not report.usable
    duplicate = report.problems[4]
    assert "line 1" in duplicate.message


def test_fixture_csv_reports_lines_of_multiline_records() -> None:
    report = validate_rows(read_file(FIXTURES / "bad_rows.csv"))
    assert [(p.line, p.kind) for p in report.problems] == [
        (5, "not-utf8"),
        (6, "wrong-type"),
        (7, "empty-field"),
    ]
    assert [k.number for k in report.kept] == [2, 3]


def test_bad_rows_within_the_allowed_fraction_are_skipped() -> None:
    rows = [(i, {"prompt": f"q{i}", "response": "a"}) for i in range(1, 20)]
    rows.append((20, {"prompt": "q", "response": ""}))
    assert not validate_rows(rows).usable
    assert not validate_rows(rows, max_bad_rows_fraction=0.04).usable  # 1/20 = 0.05 > 0.04
    report = validate_rows(rows, max_bad_rows_fraction=0.05)
    assert report.usable and report.usable_rows == 19 and report.bad_rows == 1
    report.raise_if_unusable()


def test_unusable_report_raises_bad_input_naming_rows() -> None:
    report = validate_rows([(4, {"prompt": "q", "response": ""})])
    with pytest.raises(BadInputError, match="line 4, field 'response'"):
        report.raise_if_unusable()


def test_too_long_rows_are_bad_only_with_a_tokenizer() -> None:
    row = {"messages": [CHAT[1], CHAT[2], CHAT[1], {"role": "assistant", "content": "x " * 80}]}
    estimated = validate_rows([(1, row)], max_seq_length=32)
    assert estimated.usable and estimated.tokens_estimated
    assert estimated.stats()["overLengthEstimated"] == 1
    measured = validate_rows([(1, row)], tokenizer=chat_tokenizer(), max_seq_length=32)
    assert [p.kind for p in measured.problems] == ["too-long"]


def test_stats_and_histogram() -> None:
    tok = chat_tokenizer()
    rows = [(i, {"prompt": "word " * i, "response": "ok"}) for i in range(1, 41)]
    report = validate_rows(rows, tokenizer=tok, max_seq_length=64, tokenizer_name="test")
    stats = report.stats()
    assert stats["rows"] == 40 and stats["usableRows"] == 40 and not stats["tokensEstimated"]
    assert stats["tokens"] == sum(report.lengths)
    assert stats["p50"] <= stats["p95"] <= stats["max"] <= 64
    assert sum(b["count"] for b in stats["histogram"]) == 40
    assert [b["le"] for b in stats["histogram"]] == [16, 32, 64]
    summary = report.summary()
    assert "histogram" not in summary and summary["usable"] is True
    json.dumps(report.to_dict())  # serialisable


def test_histogram_counts_overflow() -> None:
    assert histogram([1, 16, 17, 100], 32) == [
        {"le": 16, "count": 2},
        {"le": 32, "count": 1},
        {"gt": 32, "count": 1},
    ]


def test_all_formats_are_listed() -> None:
    assert set(FORMATS) == {"prompt-response", "instruction", "text", "messages"}
