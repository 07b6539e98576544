"""Our trainer as the benchmarks run it: `FineTuneRecipe` on a planner-made plan, its defaults.

Nothing is tuned here: the plan comes from `make_plan` (see `bench/plans.py`) and the recipe
runs as `llamaft train` would run it. Throughput = real tokens the recipe counted / seconds from
the start of training to the last optimizer step (the final adapter save is not counted, as the
baselines save nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LEVERS = ("keep", "liger", "cce", "autocast")
# Levers that change the plan rather than the loss (what a user could set in the spec today).
PLAN_LEVERS = ("nodrop", "nockpt")


def split_levers(kind: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """`ours+keep+nodrop` -> (loss levers, plan levers, other parts)."""
    parts = tuple(kind.split("+")[1:])
    loss = tuple(p for p in parts if p in LEVERS)
    plan = tuple(p for p in parts if p in PLAN_LEVERS)
    return loss, plan, tuple(p for p in parts if p not in LEVERS + PLAN_LEVERS)


def apply_plan_levers(plan: Any, levers: tuple[str, ...]) -> Any:
    """nodrop: LoRA dropout 0 (spec.lora.dropout); nockpt: no activation checkpointing."""
    if "nodrop" in levers and plan.lora is not None:
        plan = plan.model_copy(update={"lora": plan.lora.model_copy(update={"dropout": 0.0})})
    if "nockpt" in levers:
        training = plan.training.model_copy(update={"gradient_checkpointing": False})
        plan = plan.model_copy(update={"training": training})
    return plan


def recipe_class(levers: tuple[str, ...] = ()) -> Any:
    """`FineTuneRecipe`, or a subclass whose loss applies the given levers (bench only).

    - keep: logits only where a label is trained (transformers' boolean `logits_to_keep`), so the
      lm_head matmul, the softmax and their backward skip prompt and template positions.
    - liger / cce: fused linear + cross-entropy (liger-kernel, cut-cross-entropy) on the kept
      positions: the [tokens x vocab] logits are never materialised (GPU kernels).
    - autocast: the forward under bf16 autocast (GPU), as HF Trainer does with `bf16=True`.
    """
    from llamaft_trainer.recipe import FineTuneRecipe

    if not levers:
        return FineTuneRecipe
    unknown = set(levers) - set(LEVERS)
    if unknown:
        raise ValueError(f"unknown levers {sorted(unknown)}; known: {LEVERS}")

    class LeverRecipe(FineTuneRecipe):
        def _loss_sum(self, model: Any, batch: dict[str, Any]) -> Any:
            import contextlib

            import torch

            ctx: Any = contextlib.nullcontext()
            if "autocast" in levers:
                ctx = torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16)
            with ctx:
                return self._lever_loss(model, batch)

        def _lever_loss(self, model: Any, batch: dict[str, Any]) -> Any:
            import torch
            import torch.nn.functional as functional

            if not ({"keep", "liger", "cce"} & set(levers)):
                return super()._loss_sum(model, batch)
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            labels = batch["labels"]
            # Position t predicts token t+1: keep t where label t+1 is trained.
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != -100
            targets = labels[:, 1:][keep[:, :-1]]
            if "keep" in levers and not ({"liger", "cce"} & set(levers)):
                logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
                return functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)).float(), targets, reduction="sum"
                )
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            hidden = base.model(**inputs, use_cache=False).last_hidden_state[keep]
            weight = base.lm_head.weight
            if "liger" in levers:
                from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

                loss_fn = LigerFusedLinearCrossEntropyLoss(reduction="sum")
                return loss_fn(weight.to(hidden.dtype), hidden, targets)
            from cut_cross_entropy import linear_cross_entropy

            dtype = torch.bfloat16 if hidden.is_cuda else hidden.dtype
            return linear_cross_entropy(
                hidden.to(dtype), weight.to(dtype), targets, reduction="sum"
            )

    return LeverRecipe


def train(
    plan: Any, workdir: Path, *, profile: Path | None = None, levers: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Set up and run the recipe; `profile` writes a pyinstrument text profile of `train()`."""
    recipe = recipe_class(levers)(plan, workdir)
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
