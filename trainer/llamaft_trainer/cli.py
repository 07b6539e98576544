"""`llamaft`: the user CLI and the trainer's entry point.

Each command group lives in its own module under `commands/` and registers itself here. Heavy
imports (torch, transformers) happen inside the commands that need them, so `llamaft plan`,
`llamaft validate` and `llamaft crd` start fast and work without the ML stack installed.
"""

from __future__ import annotations

import sys

import typer

from llamaft_trainer.commands import core, data, evaluate, fetch, train
from llamaft_trainer.errors import LlamaftError

app = typer.Typer(
    name="llamaft",
    help="Fine-tune Llama models from one LlamaFineTune manifest, locally or on Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (core, data, fetch, train, evaluate):
    module.register(app)


def main() -> None:
    try:
        app()
    except LlamaftError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
