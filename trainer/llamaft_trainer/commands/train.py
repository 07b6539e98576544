"""`llamaft train`, `llamaft pilot`, `llamaft run`: the GPU steps and the local pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

PlanOption = Annotated[Path, typer.Option("--plan", help="Run plan JSON.")]
WorkdirOption = Annotated[Path, typer.Option("--workdir", help="Work directory (the volume).")]

# The pilot must end at least this much below where it started (relative), over its last steps.
PILOT_MIN_IMPROVEMENT = 0.02


def run_training(plan_path: Path, workdir: Path, *, pilot: bool = False) -> dict[str, Any]:
    from llamaft_trainer.plan_file import load_plan
    from llamaft_trainer.recipe import FineTuneRecipe

    plan = load_plan(plan_path)
    if pilot:
        if plan.pilot is None or plan.dataset.golden_set is None:
            from llamaft_trainer.errors import BadInputError

            raise BadInputError("the pilot needs spec.pilot and spec.dataset.goldenSet")
        recipe = FineTuneRecipe(
            plan,
            workdir / "pilot",
            name="pilot",
            train_on_golden=True,
            max_steps=plan.pilot.max_steps,
            track=False,
        )
    else:
        recipe = FineTuneRecipe(plan, workdir)
    recipe.setup()
    try:
        report = recipe.train()
    except BaseException as err:
        recipe.cleanup(err)
        raise
    recipe.cleanup()
    if pilot:
        check_pilot(report)
    return report


def check_pilot(report: dict[str, Any]) -> None:
    """The pilot passes when the loss of its last steps is clearly below that of its first."""
    from llamaft_trainer.errors import BadInputError

    losses = [h["loss"] for h in report["history"]]
    k = max(1, len(losses) // 5)
    start, end = sum(losses[:k]) / k, sum(losses[-k:]) / k
    report["pilotStartLoss"], report["pilotEndLoss"] = start, end
    if not end < start * (1 - PILOT_MIN_IMPROVEMENT):
        raise BadInputError(
            f"pilot failed: loss went from {start:.4f} to {end:.4f} over {len(losses)} steps on "
            "the golden set (it must fall): check the data format, learning rate and template"
        )


def _result(report: dict[str, Any], step: str) -> dict[str, Any]:
    keys = (
        "step",
        "totalSteps",
        "resumedFrom",
        "firstLoss",
        "loss",
        "evalLoss",
        "tokens",
        "durationSeconds",
        "stoppedEarly",
        "adapterPath",
        "pilotStartLoss",
        "pilotEndLoss",
    )
    return {"step": step, **{k: report[k] for k in keys if k in report}}


def train_command(plan: PlanOption, workdir: WorkdirOption) -> None:
    """Train the adapter (resumes from the newest complete checkpoint in WORKDIR)."""
    from llamaft_trainer.distributed import dist_env
    from llamaft_trainer.termination import write_result

    result = _result(run_training(plan, workdir), "train")
    if dist_env().is_main:
        write_result(result)
        typer.echo(json.dumps(result))


def pilot_command(plan: PlanOption, workdir: WorkdirOption) -> None:
    """A short run on the golden set whose loss must fall before the full run starts."""
    from llamaft_trainer.termination import write_result

    result = _result(run_training(plan, workdir, pilot=True), "pilot")
    write_result(result)
    typer.echo(json.dumps(result))


def run_command(
    file: Annotated[Path, typer.Argument(help="LlamaFineTune manifest (YAML).")],
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Default: ./runs/<name>.")
    ] = None,
    gpu_type: Annotated[str | None, typer.Option("--gpu-type")] = None,
) -> None:
    """Run the whole pipeline locally: validate data, pilot, train, evaluate, package, publish."""
    from llamaft_trainer.local_run import run_local

    run_local(file, workdir=workdir, gpu_type=gpu_type)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("pilot")(pilot_command)
    app.command("run")(run_command)
