"""`llamaft validate-data`: check a dataset row by row before any GPU is used.

    llamaft validate-data train.jsonl --format prompt-response --max-seq-length 2048
    llamaft validate-data https://example.com/train.jsonl --tokenizer ./model-dir
    llamaft validate-data hub:owner/name@<revision> --output report.json
    llamaft validate-data --plan plan.json     # the validate Job: source, format, limits from it

Prints the full JSON report on stdout, writes the compact summary as the termination message, and
exits 2 (bad input: the Job fails fast, no retry) when the data is unusable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from llamaft_operator.api import DatasetFormat
    from llamaft_trainer.data.types import LoadedRows

FORMAT_HELP = "auto, prompt-response, instruction, text or messages."
TOKENIZER_HELP = (
    "Tokenizer to count tokens and apply the length limit with: a model directory, a .gguf file, "
    "a tokenizer.json file or a Hub model id. Without it tokens are estimated (characters / 4)."
)


def load_tokenizer(spec: str) -> Any:
    """A tokenizer from a directory, a .gguf file, a tokenizer.json file or a Hub id."""
    from llamaft_trainer.errors import BadInputError

    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        path = Path(spec)
        if path.is_file() and path.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        if path.is_file() and path.suffix == ".json":
            return PreTrainedTokenizerFast(tokenizer_file=str(path))  # type: ignore[no-untyped-call]
        return AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as err:
        raise BadInputError(
            f"cannot load the tokenizer {spec!r}: {err}. Give a model directory, a .gguf or "
            "tokenizer.json file, or a Hub id reachable from here"
        ) from err


def read_path(path: str) -> LoadedRows:
    """Rows of a local path, an http(s) URL or `hub:owner/name[@revision]`."""
    from llamaft_trainer.data.load import HUB_PREFIX, download, read_file, read_hub

    if path.startswith(("http://", "https://")):
        return read_file(download(path))
    if path.startswith(HUB_PREFIX):
        dataset_id, _, revision = path.removeprefix(HUB_PREFIX).partition("@")
        return read_hub(dataset_id, revision=revision or "main")
    return read_file(Path(path))


def rows_sha256(loaded: LoadedRows) -> str:
    """A content hash of the dataset's rows (stable across file formats and whitespace)."""
    import hashlib

    digest = hashlib.sha256()
    for _line, row in loaded.rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def validate_data(
    path: Annotated[
        str | None,
        typer.Argument(help="Dataset file, http(s) URL or hub:owner/name@revision."),
    ] = None,
    data_format: Annotated[str | None, typer.Option("--format", help=FORMAT_HELP)] = None,
    max_seq_length: Annotated[
        int | None,
        typer.Option("--max-seq-length", help="Tokens per example (default 2048 or the plan's)."),
    ] = None,
    tokenizer: Annotated[str | None, typer.Option(help=TOKENIZER_HELP)] = None,
    max_bad_rows_fraction: Annotated[
        float | None,
        typer.Option(help="Fraction of bad rows that may be skipped (default 0 or the plan's)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Also write the full JSON report to this file."),
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option(help="Run plan JSON: take source, format, columns and limits from it."),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Work directory: the full report goes to reports/data.json."),
    ] = None,
) -> None:
    """Check every row of a dataset and report bad rows and token statistics as JSON."""
    from llamaft_trainer.data.formats import FORMATS
    from llamaft_trainer.data.load import read_source
    from llamaft_trainer.data.validate import validate_rows
    from llamaft_trainer.errors import BadInputError
    from llamaft_trainer.plan_file import load_plan
    from llamaft_trainer.termination import write_result

    run_plan = load_plan(plan) if plan is not None else None
    if path is None and run_plan is None:
        raise BadInputError("give a dataset PATH or --plan FILE")
    if data_format is not None and data_format not in ("auto", *FORMATS):
        raise BadInputError(f"--format {data_format!r} is not one of: {FORMAT_HELP}")
    if path is not None:
        loaded = read_path(path)
    else:
        assert run_plan is not None
        loaded = read_source(run_plan.dataset.source)
    spec = run_plan.dataset if run_plan is not None else None
    fmt = cast("DatasetFormat", data_format or (spec.format if spec is not None else "auto"))
    fraction = max_bad_rows_fraction
    if fraction is None:
        fraction = spec.max_bad_rows_fraction if spec is not None else 0.0
    length = max_seq_length or (run_plan.training.max_seq_length if run_plan else 2048)
    report = validate_rows(
        loaded,
        fmt=fmt,
        columns=spec.columns if spec is not None else None,
        tokenizer=load_tokenizer(tokenizer) if tokenizer else None,
        max_seq_length=length,
        max_bad_rows_fraction=fraction,
        tokenizer_name=tokenizer,
    )
    full = json.dumps(report.to_dict(), indent=2, ensure_ascii=False)
    typer.echo(full)
    if output is not None:
        output.write_text(full + "\n")
    if workdir is not None:
        # The package step reads the dataset's stats and hash from here for the model card.
        reports = workdir / "reports"
        reports.mkdir(parents=True, exist_ok=True)
        record = {**report.to_dict(), "sha256": rows_sha256(loaded), "stats": report.stats()}
        (reports / "data.json").write_text(json.dumps(record, indent=2, ensure_ascii=False))
    write_result(report.summary())
    report.raise_if_unusable()


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("validate-data")(validate_data)
