"""The fine-tuning recipe: one readable class, setup / train / save_checkpoint / cleanup.

    llamaft train --plan plan.json --workdir DIR                       # one process (CPU or GPU)
    torchrun --standalone --nproc_per_node=2 -m llamaft_trainer.cli train --plan P --workdir W

Why a custom loop instead of HF `Trainer`: we need padding-free token-budget batches, per-token
loss normalisation across accumulation steps, our own crash-safe checkpoints with a data
position, SIGTERM handling that saves within the grace period, and progress patched onto the CR;
the loop stays ~300 lines and every step is visible.

Feature flags (all from the plan) and their trade-offs:
- `training.packing` (default on): examples are concatenated with position ids restarting per
  example, so no compute is spent on padding and attention never crosses examples (only correct
  with `use_cache=False`, which the models module sets). Off: padded batches with a mask.
- `training.gradientCheckpointing`: ~1/3 more compute for activations that don't grow with depth.
- `deepspeed.zeroStage` 2/3 under torchrun: ZeRO shards optimizer states and gradients (2) and
  weights (3); on one process there is no DeepSpeed at all.
- `training.earlyStoppingPatience`: stop after N evaluations without a lower eval loss.
- `tracking` (W&B / MLflow, train step only, global rank 0): one tracker run per run, continued
  on resume; costs one client call per step (see tracking.py).

Loss: the sum of token losses of a micro-batch divided by the number of trained tokens in its
whole accumulation group, so an optimizer step weighs every response token equally however the
tokens fall into micro-batches. Under data parallel each rank normalises by its own tokens and
DeepSpeed averages the gradients (equal to the global per-token mean when ranks hold similar token
counts, which token-budget batches make nearly true).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from llamaft_trainer import checkpoint, tracking
from llamaft_trainer.config import RunPlan
from llamaft_trainer.distributed import DistEnv, deepspeed_config, dist_env
from llamaft_trainer.errors import EXIT_PREEMPTED, LlamaftError
from llamaft_trainer.progress import Progress

IGNORE = -100
MAX_REPEATS = 1000


class PreemptedError(LlamaftError):
    """SIGTERM arrived; a checkpoint was saved and the Job retries from it."""

    exit_code = EXIT_PREEMPTED


@dataclass
class StepPlan:
    """The optimizer steps of the run: for each, the epoch and its micro-batches (index lists)."""

    steps: list[tuple[int, list[list[int]]]] = field(default_factory=list)
    steps_per_epoch: list[int] = field(default_factory=list)


def plan_steps(lengths: list[int], plan: RunPlan, env: DistEnv, max_steps: int | None) -> StepPlan:
    """Deterministic micro-batches per optimizer step for this rank (same on every restart)."""
    from llamaft_trainer.data import Example, token_budget_batches

    t = plan.training
    # One packed row of at most max_seq_length tokens per forward pass: attention costs the
    # square of the row length (on CPU and without flash-attention's varlen kernels even across
    # packed examples), so `perDeviceBatchSize` rows are run as successive micro-batches.
    budget = t.max_seq_length
    examples = [Example(input_ids=[0] * n, labels=[0] * n) for n in lengths]
    accumulation = micro_batches_per_step(plan)
    out = StepPlan()
    limit = max_steps if max_steps is not None else t.max_steps
    # An explicit step budget (the pilot) repeats the data as often as it needs.
    epochs = MAX_REPEATS if max_steps is not None else max(1, math.ceil(t.epochs))
    for epoch in range(epochs):
        if limit is not None and len(out.steps) >= limit:
            break
        batches = token_budget_batches(examples, budget, t.seed, epoch)
        if env.world_size > 1:
            per_rank = len(batches) // env.world_size
            batches = batches[env.rank :: env.world_size][:per_rank]
        if max_steps is None and epoch + 1 > t.epochs:  # a fractional last epoch
            batches = batches[: max(1, int(len(batches) * (t.epochs - epoch)))]
        groups = [batches[i : i + accumulation] for i in range(0, len(batches), accumulation)]
        if env.world_size > 1:  # DeepSpeed needs exactly `accumulation` micro-batches a step
            groups = [g for g in groups if len(g) == accumulation]
        out.steps_per_epoch.append(len(groups))
        out.steps.extend((epoch, g) for g in groups)
    if limit is not None:
        out.steps = out.steps[:limit]
    return out


def micro_batches_per_step(plan: RunPlan) -> int:
    return plan.training.gradient_accumulation_steps * plan.training.per_device_batch_size


class FineTuneRecipe:
    """Train `plan` into `workdir`: checkpoints/, adapter/, reports/<name>.json, tensorboard/."""

    def __init__(
        self,
        plan: RunPlan,
        workdir: Path,
        *,
        name: str = "train",
        train_on_golden: bool = False,
        max_steps: int | None = None,
        track: bool = True,
    ) -> None:
        self.plan = plan
        # spec.tracking applies to the train step; the pilot is a check, not an experiment.
        self.tracking = plan.tracking if track else None
        self.workdir = workdir
        self.name = name
        self.train_on_golden = train_on_golden
        self.max_steps = max_steps
        self.env = dist_env()
        self._stop_requested = False
        self._engine: Any = None
        self._hf_ds_config: Any = None  # must outlive from_pretrained under ZeRO-3

    # --- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        import torch
        from transformers import get_scheduler

        from llamaft_trainer import data, models

        self.workdir.mkdir(parents=True, exist_ok=True)
        tracking.check_installed(self.tracking)  # before any data or weights are loaded
        cuda = torch.cuda.is_available()
        self.device = f"cuda:{self.env.local_rank}" if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(self.device)
        self.distributed = self.env.world_size > 1
        if self.distributed:
            import deepspeed

            deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
            self.ds_config = deepspeed_config(self.plan, self.env.world_size, bf16=cuda)
            if self.plan.deepspeed.zero_stage == 3:
                from transformers.integrations.deepspeed import HfDeepSpeedConfig

                self._hf_ds_config = HfDeepSpeedConfig(self.ds_config)  # type: ignore[no-untyped-call]
        self._seed_everything(self.plan.training.seed)
        self.tokenizer = models.load_tokenizer(self.plan)
        if self.train_on_golden:
            self.train_examples = self._golden_examples()
            self.validation: list[Any] = []
        else:
            splits = data.build_splits(self.plan, self.tokenizer)
            self.train_examples, self.validation = splits.train, splits.validation
        self.collator = data.PackingCollator(
            self.tokenizer.pad_token_id, packing=self.plan.training.packing
        )
        lengths = [len(e.input_ids) for e in self.train_examples]
        self.schedule = plan_steps(lengths, self.plan, self.env, self.max_steps)
        if not self.schedule.steps:
            raise LlamaftError("no training steps: the dataset is smaller than one micro-batch")
        self.model = models.load_model(self.plan, for_training=True, device=self.device)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        t = self.plan.training
        self.optimizer = torch.optim.AdamW(
            trainable, lr=t.learning_rate, weight_decay=t.weight_decay
        )
        total = len(self.schedule.steps)
        self.scheduler = get_scheduler(
            t.scheduler,
            self.optimizer,
            num_warmup_steps=int(total * t.warmup_ratio),
            num_training_steps=total,
        )
        if self.distributed:
            import deepspeed

            self._engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.model,
                optimizer=self.optimizer,
                lr_scheduler=self.scheduler,
                config=self.ds_config,
            )
        self.start_step = self._resume()
        trackers = None
        if self.tracking is not None and self.env.is_main:
            trackers = tracking.start(
                self.plan,
                self.workdir,
                resumed_from=self.start_step,
                worldSize=self.env.world_size,
                totalSteps=total,
            )
        self.progress = Progress(
            self.workdir,
            name=self.name,
            total_steps=total,
            rank=self.env.rank,
            start_step=self.start_step,
            trackers=trackers,
        )
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _golden_examples(self) -> list[Any]:
        from llamaft_trainer import data

        assert self.plan.dataset.golden_set is not None
        loaded = data.read_source(self.plan.dataset.golden_set)
        examples, _problems = data.render_and_tokenize(
            loaded.rows,
            self.tokenizer,
            self.plan.dataset.format,
            self.plan.dataset.columns,
            self.plan.training.max_seq_length,
        )
        return examples

    @staticmethod
    def _seed_everything(seed: int) -> None:
        import numpy as np
        import torch

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # Finish the current optimizer step, save, exit 75 (the Job retries and resumes).
        self._stop_requested = True

    # --- the loop -------------------------------------------------------------------------------

    def _batch(self, indices: list[int]) -> dict[str, Any]:
        batch = self.collator([self.train_examples[i] for i in indices])
        return {k: v.to(self.device) for k, v in batch.items()}

    @staticmethod
    def _real_tokens(batch: dict[str, Any]) -> int:
        mask = batch.get("attention_mask")
        return int(mask.sum().item()) if mask is not None else int(batch["input_ids"].numel())

    @staticmethod
    def _trained_tokens(batch: dict[str, Any]) -> int:
        return int((batch["labels"][:, 1:] != IGNORE).sum().item())

    def _loss_sum(self, model: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as functional

        inputs = {k: v for k, v in batch.items() if k != "labels"}
        targets = batch["labels"][:, 1:]  # position t predicts token t + 1
        if targets.size(0) == 1:
            # Logits only where the next token is trained: the lm_head matmul and the softmax
            # over the vocabulary skip prompt and template positions (measured in bench/: the
            # vocabulary projection is a large share of a small model's compute).
            keep = (targets[0] != IGNORE).nonzero().squeeze(-1)
            logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits[0]
            return functional.cross_entropy(logits.float(), targets[0, keep], reduction="sum")
        logits = model(**inputs, use_cache=False).logits[:, :-1, :]
        return functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            targets.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )

    def train(self) -> dict[str, Any]:
        import torch

        model = self._engine if self._engine is not None else self.model
        model.train()
        t = self.plan.training
        best_eval, patience_left = math.inf, t.early_stopping_patience
        last_loss = math.nan
        eval_loss: float | None = None
        stopped_early = False
        first_loss: float | None = None
        step = self.start_step
        for step_index in range(self.start_step, len(self.schedule.steps)):
            epoch, group = self.schedule.steps[step_index]
            batches = [self._batch(ix) for ix in group]
            group_tokens = max(1, sum(self._trained_tokens(b) for b in batches))
            # Throughput counts every real (non-pad) token the model processed.
            real_tokens = sum(self._real_tokens(b) for b in batches)
            loss_total = 0.0
            for batch in batches:
                loss = self._loss_sum(model, batch) / group_tokens
                loss_total += float(loss.item())
                if self._engine is not None:
                    # DeepSpeed divides by its gradient_accumulation_steps; undo that.
                    self._engine.backward(loss * len(group))
                    self._engine.step()
                else:
                    loss.backward()
            if self._engine is None:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], t.max_grad_norm
                )
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            step = step_index + 1
            last_loss = loss_total
            first_loss = loss_total if first_loss is None else first_loss
            eval_loss = None
            if self.validation and (step % t.eval_steps == 0 or step == len(self.schedule.steps)):
                eval_loss = self.evaluate_loss()
                model.train()
            lr = float(self.scheduler.get_last_lr()[0])
            epoch_progress = epoch + (
                step_index + 1 - sum(self.schedule.steps_per_epoch[:epoch])
            ) / max(1, self.schedule.steps_per_epoch[epoch])
            self.progress.log_step(step, epoch_progress, loss_total, lr, real_tokens, eval_loss)
            if eval_loss is not None and patience_left is not None:
                if eval_loss < best_eval:
                    best_eval, patience_left = eval_loss, t.early_stopping_patience
                else:
                    patience_left -= 1
                    if patience_left <= 0:
                        stopped_early = True
            if self._stop_requested:
                self.save_checkpoint(step)
                raise PreemptedError(
                    f"SIGTERM: saved checkpoint step-{step}; the retry resumes there"
                )
            if step % t.save_steps == 0 or stopped_early or step == len(self.schedule.steps):
                self.save_checkpoint(step)
            if stopped_early:
                break
        adapter = self.save_final()
        self._write_probe()
        return self.progress.write_report(
            {
                "step": step,
                "totalSteps": len(self.schedule.steps),
                "resumedFrom": self.start_step,
                "firstLoss": first_loss,
                "loss": last_loss,
                "evalLoss": eval_loss,
                "stoppedEarly": stopped_early,
                "adapterPath": str(adapter) if adapter else None,
                "method": self.plan.method,
                "worldSize": self.env.world_size,
            }
        )

    def _write_probe(self) -> None:
        """With LLAMAFT_PROBE_LOGITS=1, save the in-memory model's logits on fixed tokens, so tests
        can check that the saved adapter reproduces them (under ZeRO-3 every rank takes part)."""
        if os.environ.get("LLAMAFT_PROBE_LOGITS") != "1":
            return
        import torch

        model = self._engine if self._engine is not None else self.model
        model.eval()
        ids = torch.tensor([[5, 17, 42, 99, 7, 3, 11]], device=self.device)
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits.float().cpu()
        if self.env.is_main:
            (self.workdir / "reports").mkdir(parents=True, exist_ok=True)
            torch.save(logits, self.workdir / "reports" / "probe-logits.pt")
        model.train()

    def evaluate_loss(self) -> float:
        """Mean per-token loss on the validation split (every rank computes the same value)."""
        import torch

        from llamaft_trainer import data

        model = self._engine if self._engine is not None else self.model
        model.eval()
        t = self.plan.training
        total, tokens = 0.0, 0
        batches = data.token_budget_batches(self.validation, t.max_seq_length, t.seed, 0)
        with torch.no_grad():
            for ix in batches:
                batch = {
                    k: v.to(self.device)
                    for k, v in self.collator([self.validation[i] for i in ix]).items()
                }
                total += float(self._loss_sum(model, batch).item())
                tokens += self._trained_tokens(batch)
        return total / max(tokens, 1)

    # --- checkpoints ------------------------------------------------------------------------------

    def _barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def _trainable_state(self) -> dict[str, Any]:
        """Trainable weights, gathered from every rank under ZeRO-3 (else they'd save empty)."""
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if self.distributed and self.plan.deepspeed.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
                return {n: p.detach().cpu().clone() for n, p in params.items()}
        return {n: p.detach().cpu().clone() for n, p in params.items()}

    def _save_weights(self, directory: Path) -> None:
        state = self._trainable_state()
        if not self.env.is_main:
            return
        if self.plan.method == "full":
            self.model.save_pretrained(directory, safe_serialization=True)
        else:
            self.model.save_pretrained(directory, state_dict=state, safe_serialization=True)

    def save_checkpoint(self, step: int) -> None:
        import numpy as np
        import torch

        root = checkpoint.checkpoints_dir(self.workdir) / f".partial-step-{step}"
        if self.env.is_main:
            checkpoint.begin(self.workdir, step)
        self._barrier()
        self._save_weights(root / "adapter")
        if self._engine is not None:
            self._engine.save_checkpoint(str(root), tag="deepspeed")
        rng = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        torch.save(rng, root / f"rng-rank{self.env.rank}.pt")
        if self._engine is None:
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                },
                root / "optimizer.pt",
            )
        self._barrier()
        if self.env.is_main:
            checkpoint.commit(
                self.workdir,
                root,
                step,
                {
                    "name": self.name,
                    "worldSize": self.env.world_size,
                    "history": self.progress.history[-50:] if hasattr(self, "progress") else [],
                },
                keep=self.plan.training.keep_checkpoints,
            )
        self._barrier()

    def _resume(self) -> int:
        import torch

        latest = checkpoint.latest_complete(self.workdir)
        if latest is None:
            return 0
        state = checkpoint.read_state(latest)
        if state.get("worldSize", 1) != self.env.world_size:
            raise LlamaftError(
                f"checkpoint {latest.name} was written by {state.get('worldSize')} processes, "
                f"this run has {self.env.world_size}: delete checkpoints/ to start over"
            )
        self._load_trainable(latest / "adapter")
        if self._engine is not None:
            self._engine.load_checkpoint(str(latest), tag="deepspeed", load_module_strict=False)
        else:
            opt = torch.load(latest / "optimizer.pt", weights_only=False)
            self.optimizer.load_state_dict(opt["optimizer"])
            self.scheduler.load_state_dict(opt["scheduler"])
        rng_file = latest / f"rng-rank{self.env.rank}.pt"
        if rng_file.exists():
            import numpy as np

            rng = torch.load(rng_file, weights_only=False)
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
        step = int(state["step"])
        if self.env.is_main:
            print(f"[{self.name}] resuming from checkpoint {latest.name} (step {step})", flush=True)
        return step

    def _load_trainable(self, directory: Path) -> None:
        from safetensors.torch import load_file

        if self.plan.method == "full":
            weights = {}
            for f in sorted(directory.glob("*.safetensors")):
                weights.update(load_file(f))
            self.model.load_state_dict(weights, strict=False)
            return
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, load_file(directory / "adapter_model.safetensors"))

    def save_final(self) -> Path | None:
        """The adapter (or model) and tokenizer in `<workdir>/adapter`, replaced atomically."""
        target = self.workdir / ("adapter" if self.name == "train" else f"{self.name}-adapter")
        partial = self.workdir / f".{target.name}.partial"
        if self.env.is_main:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        self._barrier()
        self._save_weights(partial)
        if self.env.is_main:
            self.tokenizer.save_pretrained(partial)
            (partial / "llamaft_training.json").write_text(
                json.dumps({"runId": self.plan.run_id, "savedAt": time.time()})
            )
            old = self.workdir / f".{target.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                target.rename(old)
            partial.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        self._barrier()
        return target

    def cleanup(self, error: BaseException | None = None) -> None:
        """Close progress and tracker runs (failed or preempted when `error`), leave the group."""
        if hasattr(self, "progress"):
            status: tracking.Status = "finished"
            if error is not None:
                status = "preempted" if isinstance(error, PreemptedError) else "failed"
            self.progress.close(status)
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.environ.pop("LLAMAFT_RECIPE_ACTIVE", None)
