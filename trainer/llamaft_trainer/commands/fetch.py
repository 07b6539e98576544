"""`llamaft fetch`: the base model at its pinned revision into the shared model cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def fetch_command(
    plan: Annotated[Path, typer.Option("--plan", help="Run plan JSON.")],
    model_cache: Annotated[
        Path | None,
        typer.Option(
            "--model-cache", help="Model cache root (default: $LLAMAFT_MODEL_CACHE or ~/.cache)."
        ),
    ] = None,
) -> None:
    """Download the base model (safetensors only) once into the model cache."""
    from llamaft_trainer.fetch import fetch_model
    from llamaft_trainer.model_cache import cache_root
    from llamaft_trainer.plan_file import load_plan
    from llamaft_trainer.termination import write_result

    result = fetch_model(load_plan(plan), model_cache or cache_root())
    write_result(result)
    typer.echo(json.dumps(result))


def register(app: typer.Typer) -> None:
    app.command("fetch")(fetch_command)
