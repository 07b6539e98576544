"""Our trainer as the benchmarks run it: `FineTuneRecipe` on a planner-made plan, its defaults.

Nothing is tuned here: the plan comes from `make_plan` (see `bench/plans.py`) and the recipe
runs as `llamaft train` would run it. Throughput = real tokens the recipe counted / seconds from
the start of training to the last optimizer step (the final adapter save is not counted, as the
baselines save nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train(plan: Any, workdir: Path, *, profile: Path | None = None) -> dict[str, Any]:
    """Set up and run the recipe; `profile` writes a pyinstrument text profile of `train()`."""
    from llamaft_trainer.recipe import FineTuneRecipe

    recipe = FineTuneRecipe(plan, workdir)
    recipe.setup()
    result = run_setup(recipe, profile=profile)
    recipe.cleanup()
    return result


def run_setup(recipe: Any, *, profile: Path | None = None) -> dict[str, Any]:
    """Run `train()` on a recipe that is already set up and summarise its report."""
    profiler: Any = None
    if profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    report = recipe.train()
    if profiler is not None:
        profiler.stop()
        profile.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    history = report["history"]
    sequences = sum(len(ix) for _, group in recipe.schedule.steps for ix in group)
    return {
        "tokens": int(report["tokens"]),
        "positions": int(report["tokens"]),
        "paddingFraction": 0.0,
        "seconds": float(history[-1]["elapsedSeconds"]),
        "steps": int(report["step"]),
        "sequences": sequences,
        "loss": report["loss"],
        "firstLoss": report["firstLoss"],
        "lossCovers": "response tokens only",
    }
