"""The data layer: load, validate, format, tokenize, mask, split and pack training data.

Modules: `load` (sources and file types), `formats` (row formats, column mapping, field checks),
`render` (templates, loss masking, truncation policy), `validate` (the report `llamaft
validate-data` prints), `split` (seeded validation split), `pack` (padding-free collator and
token-budget batches), `pipeline` (what the train and evaluate steps call).
Importing this package is cheap: torch, transformers and datasets load only when used.
"""

from __future__ import annotations

from llamaft_trainer.data.formats import Conversation, detect_format, normalize_row
from llamaft_trainer.data.load import load_rows, read_file, read_source, resolve_source
from llamaft_trainer.data.pack import PackingCollator, token_budget_batches
from llamaft_trainer.data.pipeline import build_splits, load_golden, render_and_tokenize
from llamaft_trainer.data.render import generation_prompt, render_row, render_text
from llamaft_trainer.data.split import split_indices
from llamaft_trainer.data.types import (
    IGNORE_INDEX,
    Example,
    LoadedRows,
    RowProblem,
    TokenizedSplits,
)
from llamaft_trainer.data.validate import ValidationReport, validate_rows

__all__ = [
    "IGNORE_INDEX",
    "Conversation",
    "Example",
    "LoadedRows",
    "PackingCollator",
    "RowProblem",
    "TokenizedSplits",
    "ValidationReport",
    "build_splits",
    "detect_format",
    "generation_prompt",
    "load_golden",
    "load_rows",
    "normalize_row",
    "read_file",
    "read_source",
    "render_and_tokenize",
    "render_row",
    "render_text",
    "resolve_source",
    "split_indices",
    "token_budget_batches",
    "validate_rows",
]
