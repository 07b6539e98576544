"""What the train and evaluate steps call: the splits and the golden set of a run plan."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llamaft_operator.api import ColumnMapping, DatasetFormat
from llamaft_trainer.data.formats import Conversation, normalize_row, resolve_format
from llamaft_trainer.data.load import read_source
from llamaft_trainer.data.render import Rendered, generation_prompt, render_row
from llamaft_trainer.data.split import split_indices
from llamaft_trainer.data.types import Example, RowProblem, TokenizedSplits
from llamaft_trainer.data.validate import validate_rows
from llamaft_trainer.errors import BadInputError

if TYPE_CHECKING:
    from llamaft_trainer.config import RunPlan


def render_and_tokenize(
    rows: Sequence[tuple[int, dict[str, Any]]],
    tokenizer: Any,
    fmt: DatasetFormat,
    columns: ColumnMapping | None,
    max_seq_length: int,
) -> tuple[list[Example], list[RowProblem]]:
    """Every row as an Example (loss on responses, truncation policy applied), or its problem.

    Duplicates are not checked here; `validate_rows` does that.
    """
    concrete = resolve_format(fmt, rows, columns) if rows else fmt
    examples: list[Example] = []
    problems: list[RowProblem] = []
    for number, row in rows:
        conversation = normalize_row(number, row, concrete, columns)
        if isinstance(conversation, RowProblem):
            problems.append(conversation)
            continue
        rendered = render_row(tokenizer, conversation, max_seq_length, number)
        if isinstance(rendered, Rendered):
            examples.append(rendered.example)
        else:
            problems.append(rendered)
    return examples, problems


def build_splits(plan: RunPlan, tokenizer: Any) -> TokenizedSplits:
    """Load the train set, validate it (up to dataset.maxBadRowsFraction bad rows are skipped),
    and split it by training.seed and dataset.validationSplit; BadInputError if unusable."""
    spec = plan.dataset
    report = validate_rows(
        read_source(spec.source),
        fmt=spec.format,
        columns=spec.columns,
        tokenizer=tokenizer,
        max_seq_length=plan.training.max_seq_length,
        max_bad_rows_fraction=spec.max_bad_rows_fraction,
    )
    report.raise_if_unusable()
    keys = [kept.conversation.key() for kept in report.kept]
    train_idx, val_idx = split_indices(keys, spec.validation_split, plan.training.seed)
    examples = [kept.example for kept in report.kept]
    assert all(e is not None for e in examples), "validated with a tokenizer"
    stats = report.summary()
    stats.update(
        trainExamples=len(train_idx),
        validationExamples=len(val_idx),
        trainTokens=sum(len(examples[i] or ()) for i in train_idx),
    )
    return TokenizedSplits(
        train=[e for i in train_idx if (e := examples[i]) is not None],
        validation=[e for i in val_idx if (e := examples[i]) is not None],
        stats=stats,
    )


def load_golden(plan: RunPlan, tokenizer: Any = None) -> list[dict[str, str]]:
    """The golden set as [{"prompt", "reference", "raw_prompt"}]; [] when the plan has none.

    With `tokenizer`, "prompt" is rendered exactly as in training up to the generation prompt
    (chat template or `[INST]`); tokenize it with `add_special_tokens=False`. Without one it is
    the user text as written. Rows are prompt-response, instruction or messages (the last
    assistant message is the reference), detected from the columns; any bad row is an error.
    """
    if plan.dataset.golden_set is None:
        return []
    loaded = read_source(plan.dataset.golden_set)
    columns = plan.dataset.columns
    problems = list(loaded.problems)
    golden: list[dict[str, str]] = []
    fmt = resolve_format("auto", loaded.rows, columns) if loaded.rows else "prompt-response"
    if fmt == "text":
        raise BadInputError(
            f"golden set {loaded.origin} is in the text format: it needs prompts with reference "
            "answers (prompt/response, instruction or messages rows)"
        )
    for number, row in loaded.rows:
        conversation = normalize_row(number, row, fmt, columns, loaded.unit)
        if isinstance(conversation, RowProblem):
            problems.append(conversation)
            continue
        golden.append(_golden_item(conversation, tokenizer))
    if problems:
        raise BadInputError(
            f"golden set {loaded.origin}: {problems[0]} (and {len(problems) - 1} more bad rows)"
            if len(problems) > 1
            else f"golden set {loaded.origin}: {problems[0]}"
        )
    if not golden:
        raise BadInputError(f"golden set {loaded.origin} has no rows")
    return golden


def _golden_item(conversation: Conversation, tokenizer: Any) -> dict[str, str]:
    users = [content for role, content in conversation.messages if role == "user"]
    reference = conversation.messages[-1][1]
    if tokenizer is None:
        prompt = users[-1]
    else:
        prompt, reference = generation_prompt(tokenizer, conversation)
    return {"prompt": prompt, "reference": reference, "raw_prompt": users[-1]}
