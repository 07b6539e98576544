"""`llamaft evaluate`, `gates`, `package` and `publish`: the steps after training.

Each reads the run plan and the work directory, prints its result as JSON on stdout and writes it
as the container's termination message (compact, < 4 KiB).

    llamaft evaluate --plan plan.json --workdir /work   # reports/eval.json + eval.md, then gates
    llamaft gates    --plan plan.json --workdir /work   # re-check gates against reports/eval.json
    llamaft package  --plan plan.json --workdir /work   # package/ + package.tar.gz(.sha256)
    HF_TOKEN_PATH=/secrets/token llamaft publish --plan plan.json --workdir /work
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from llamaft_trainer.errors import BadInputError

PlanOption = Annotated[Path, typer.Option("--plan", help="Run plan JSON (the trainer's input).")]
WorkdirOption = Annotated[
    Path, typer.Option("--workdir", help="Work volume: adapter/, reports/, package/.")
]


def _load_plan(path: Path) -> Any:
    from pydantic import ValidationError

    from llamaft_trainer.plan_file import load_plan

    try:
        return load_plan(path)
    except (OSError, ValueError, ValidationError) as err:
        raise BadInputError(f"cannot read the run plan {path}: {err}") from None


def _emit(result: dict[str, Any]) -> None:
    from llamaft_trainer.termination import write_result

    write_result(result)
    typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The compact evaluate result: metrics and gates, no samples."""
    return {
        "step": "evaluate",
        "metrics": report.get("metrics", {}),
        "gates": report.get("gates", []),
        "passed": all(g.get("passed") for g in report.get("gates", [])),
        "headline": report.get("headline"),
    }


def evaluate_command(plan: PlanOption, workdir: WorkdirOption) -> None:
    """Score the adapter (validation loss, golden set base vs tuned) and check the gates."""
    from llamaft_trainer import gates
    from llamaft_trainer.evaluate import run_evaluation

    run_plan = _load_plan(plan)
    report = run_evaluation(run_plan, workdir)
    summary = _summary(report)
    if not summary["passed"]:
        _emit(summary)
    gates.check(run_plan.evaluation.gates, report["metrics"])  # raises GateFailedError: exit 2
    _emit(summary)


def gates_command(plan: PlanOption, workdir: WorkdirOption) -> None:
    """Check spec.evaluation.gates against reports/eval.json (exit 2 if any fails)."""
    from llamaft_trainer import gates

    run_plan = _load_plan(plan)
    path = workdir / "reports" / "eval.json"
    if not path.is_file():
        raise BadInputError(f"{path} does not exist: run `llamaft evaluate` first")
    metrics = json.loads(path.read_text()).get("metrics", {})
    results = gates.evaluate_gates(run_plan.evaluation.gates, metrics)
    result = {
        "step": "gates",
        "gates": [r.to_dict() for r in results],
        "passed": all(r.passed for r in results),
    }
    _emit(result)
    gates.check(run_plan.evaluation.gates, metrics)


def package_command(plan: PlanOption, workdir: WorkdirOption) -> None:
    """Build package/ (adapter, tokenizer, model card, metadata) and package.tar.gz."""
    from llamaft_trainer.package import build_package

    result = build_package(_load_plan(plan), workdir)
    _emit({"step": "package", **result.to_dict()})


def publish_command(
    plan: PlanOption,
    workdir: WorkdirOption,
    build: Annotated[
        bool,
        typer.Option(
            "--package/--no-package",
            help="Build package/ first (deterministic, so an unchanged run republishes nothing).",
        ),
    ] = True,
) -> None:
    """Package and publish to spec.publish (Hub: token from the file at $HF_TOKEN_PATH)."""
    from llamaft_trainer.package import build_package
    from llamaft_trainer.publish import publish

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_plan = _load_plan(plan)
    if build:
        build_package(run_plan, workdir)
    _emit(publish(run_plan, workdir))


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("evaluate")(evaluate_command)
    app.command("gates")(gates_command)
    app.command("package")(package_command)
    app.command("publish")(publish_command)
