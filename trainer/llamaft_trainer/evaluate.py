"""`llamaft evaluate`: how good is the adapter, and is it better than its base model?

    llamaft evaluate --plan plan.json --workdir /work          # one GPU, or CPU when none

1. **Validation loss and perplexity** of the tuned model on the validation split (the same
   seeded split training held out): token-weighted mean cross-entropy over the response tokens,
   perplexity = exp(loss).
2. **Golden set, base vs tuned, one model load.** The base model is loaded once and wrapped with
   `PeftModel.from_pretrained(base, WORKDIR/adapter)`; the tuned generations run with the adapter,
   the base generations inside `model.disable_adapter()`. Batched greedy decoding with left
   padding (prompts sorted by length to cut padding), `evaluation.maxNewTokens` new tokens, on at
   most `evaluation.maxGoldenExamples` prompts. Scored with `metrics.py` (exact match, token F1,
   ROUGE-L, win rate).
3. **Reports**: `reports/eval.json` (metrics, gate results, ~`evaluation.samples` generations side
   by side with per-example scores) and `reports/eval.md` (a Markdown summary).
4. **Gates** are evaluated into the report; `llamaft evaluate` then fails with exit 2 when one is
   not met (the adapter stays on the volume, nothing is packaged or published).

Metric names: `golden.exactMatch`, `golden.tokenF1`, `golden.rougeL`, `golden.winRateVsBase`,
`golden.base.{exactMatch,tokenF1,rougeL}`, `validation.loss`, `validation.perplexity`. A metric
that cannot be computed (no golden set, empty validation split) is absent, not NaN.

**Placement.** Evaluation needs no ZeRO: it is inference with a frozen base. Whatever the training
plan (even multi-node), the eval step runs in one pod with the adapter on the base model. When the
base model's weights (4-bit for QLoRA, bf16 otherwise, +20% and 2 GiB for activations and the KV
cache) fit one GPU of the plan's type it runs on `cuda:0`; when they do not (e.g. a bf16 70B on an
80 GB GPU) the model is loaded with `device="auto"`, i.e. `device_map="auto"` sharded layer-wise
across the GPUs of the pod's node (the eval Job then asks for the node's `gpusPerNode`, see
`eval_gpus`). Without CUDA it runs on the CPU (tests, tiny models).

Full fine-tunes (`method: full`) have no adapter to toggle and are not evaluated here yet.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llamaft_trainer import metrics as m
from llamaft_trainer.config import RunPlan
from llamaft_trainer.errors import BadInputError, LlamaftError
from llamaft_trainer.gates import evaluate_gates

GIB = 1024**3
HEADROOM = 1.2  # activations, KV cache and allocator slack on top of the weights
HEADROOM_GIB = 2.0


@dataclass(frozen=True)
class Loaders:
    """Where evaluation gets its model, tokenizer and data; the defaults are the trainer's own
    (`models.load_tokenizer/load_model`, `data.load_golden/build_splits`). Tests swap them."""

    load_tokenizer: Callable[[RunPlan], Any]
    load_model: Callable[..., Any]  # (plan, *, for_training: bool, device: str) -> model
    load_golden: Callable[[RunPlan, Any], list[dict[str, str]]]
    validation_examples: Callable[[RunPlan, Any], Sequence[Any]]  # Examples (input_ids, labels)

    @classmethod
    def default(cls) -> Loaders:
        from llamaft_trainer import data

        try:
            from llamaft_trainer import models  # type: ignore[attr-defined,unused-ignore]
        except ImportError as err:  # pragma: no cover - only while models.py is being written
            raise LlamaftError(
                f"llamaft_trainer.models is not importable ({err}): the model loaders are missing"
            ) from err

        return cls(
            load_tokenizer=models.load_tokenizer,
            load_model=models.load_model,
            load_golden=data.load_golden,
            validation_examples=lambda plan, tok: data.build_splits(plan, tok).validation,
        )


# --- placement ------------------------------------------------------------------------------------


def base_weights_gib(plan: RunPlan) -> float:
    """Inference weights of the base model: 4-bit ~0.56 B/param, 8-bit ~1.06, bf16 2."""
    if plan.method == "qlora" and plan.quantization is not None:
        per_param = 0.56 if plan.quantization.bits == 4 else 1.06
    else:
        per_param = 2.0
    return plan.model.parameters * per_param / GIB


def fits_one_gpu(plan: RunPlan) -> bool:
    needed = base_weights_gib(plan) * HEADROOM + HEADROOM_GIB
    return needed <= plan.resources.gpu_memory_gib


def eval_gpus(plan: RunPlan) -> int:
    """GPUs the eval step needs: 1, or the node's GPUs when the base does not fit one."""
    return 1 if fits_one_gpu(plan) else plan.resources.gpus_per_node


def eval_device(plan: RunPlan) -> str:
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return "cuda:0" if fits_one_gpu(plan) or torch.cuda.device_count() == 1 else "auto"


# --- validation -----------------------------------------------------------------------------------


def validation_loss(
    model: Any, examples: Sequence[Any], *, batch_size: int, pad_token_id: int
) -> tuple[float, int]:
    """Token-weighted mean loss over the trained (label != -100) tokens, and the token count."""
    import torch

    from llamaft_trainer.data.types import IGNORE_INDEX

    device = _input_device(model)
    total, tokens = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [examples[i] for i in order[start : start + batch_size]]
            width = max(len(e.input_ids) for e in batch)
            ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, example in enumerate(batch):
                n = len(example.input_ids)
                ids[row, :n] = torch.tensor(example.input_ids)
                labels[row, :n] = torch.tensor(example.labels)
                mask[row, :n] = 1
            # The model shifts labels by one: count the targets the loss actually averages.
            count = int((labels[:, 1:] != IGNORE_INDEX).sum())
            if count == 0:
                continue
            out = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
            )
            total += float(out.loss) * count
            tokens += count
    return (total / tokens if tokens else math.nan), tokens


# --- generation -----------------------------------------------------------------------------------


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    batch_size: int,
    max_new_tokens: int,
    max_prompt_tokens: int,
) -> list[str]:
    """Greedy continuations of `prompts` (already rendered with the chat template), in order."""
    import torch

    device = _input_device(model)
    encoded = [
        tokenizer(p, add_special_tokens=False)["input_ids"][-max_prompt_tokens:] for p in prompts
    ]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in index)
            ids = torch.full((len(index), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(index), width), dtype=torch.long)
            for row, i in enumerate(index):  # left padding: generation continues at the right
                n = len(encoded[i])
                ids[row, width - n :] = torch.tensor(encoded[i])
                mask[row, width - n :] = 1
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            for row, i in enumerate(index):
                new = out[row, width:]
                outputs[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
    return outputs


def _input_device(model: Any) -> Any:
    """Where inputs go: the embedding's device (also right for device_map="auto")."""
    return model.get_input_embeddings().weight.device


# --- the step -------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def prepare_tokenizer(tokenizer: Any) -> Any:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tuned(plan: RunPlan, workdir: Path, loaders: Loaders, device: str) -> Any:
    """Base model + adapter, one load. `model.disable_adapter()` gives the base back."""
    from peft import PeftModel

    adapter = workdir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise BadInputError(f"{adapter} holds no adapter: run `llamaft train` first")
    base = loaders.load_model(plan, for_training=False, device=device)
    model = PeftModel.from_pretrained(base, str(adapter), is_trainable=False)
    model.eval()
    return model


def run_evaluation(
    plan: RunPlan, workdir: Path, *, loaders: Loaders | None = None
) -> dict[str, Any]:
    """Evaluate, write `reports/eval.json` and `reports/eval.md`, and return the report.

    Gate results are in `report["gates"]`; this function does not raise on a failed gate (the
    command and `llamaft run` call `gates.check`). A gate on a metric that was not computed
    raises `GateMetricMissingError` after the report is written.
    """
    if plan.method == "full":
        raise BadInputError(
            "evaluate supports adapters (method lora or qlora); full fine-tunes are not "
            "evaluated by llamaft yet"
        )
    workdir = Path(workdir)
    loaders = loaders or Loaders.default()
    started, clock = _now(), time.monotonic()
    device = eval_device(plan)
    tokenizer = prepare_tokenizer(loaders.load_tokenizer(plan))
    model = load_tuned(plan, workdir, loaders, device)
    batch = plan.training.per_device_batch_size
    results: dict[str, float] = {}
    report: dict[str, Any] = {"step": "evaluate", "device": device}

    examples = loaders.validation_examples(plan, tokenizer)
    if examples:
        loss, tokens = validation_loss(
            model, examples, batch_size=batch, pad_token_id=tokenizer.pad_token_id
        )
        if not math.isnan(loss):
            results["validation.loss"] = loss
            results["validation.perplexity"] = math.exp(min(loss, 700.0))
        report["validation"] = {"examples": len(examples), "tokens": tokens}

    golden = loaders.load_golden(plan, tokenizer)[: plan.evaluation.max_golden_examples]
    if golden:
        prompts = [g["prompt"] for g in golden]
        references = [g["reference"] for g in golden]
        kwargs = {
            "batch_size": batch,
            "max_new_tokens": plan.evaluation.max_new_tokens,
            "max_prompt_tokens": max(1, plan.training.max_seq_length),
        }
        tuned = generate(model, tokenizer, prompts, **kwargs)
        with model.disable_adapter():
            base = generate(model, tokenizer, prompts, **kwargs)
        scores = m.score_golden(references, tuned, base)
        results.update({k: v for k, v in scores.metrics().items() if not math.isnan(v)})
        report["golden"] = {
            "examples": len(golden),
            "maxNewTokens": plan.evaluation.max_new_tokens,
        }
        report["samples"] = [
            {
                "prompt": g.get("raw_prompt", g["prompt"]),
                "reference": g["reference"],
                "tuned": tuned[i],
                "base": base[i],
                "scores": {
                    "tuned": scores.tuned[i].to_dict(),
                    "base": scores.base[i].to_dict(),
                },
            }
            for i, g in enumerate(golden[: plan.evaluation.samples])
        ]

    report["metrics"] = dict(sorted(results.items()))
    report["headline"] = headline(results)
    report.update(
        startTime=started, endTime=_now(), durationSeconds=round(time.monotonic() - clock, 1)
    )
    write_reports(workdir, report)
    report["gates"] = [r.to_dict() for r in evaluate_gates(plan.evaluation.gates, results)]
    write_reports(workdir, report)
    return report


def headline(results: dict[str, float]) -> str | None:
    """A short line for `kubectl get lft`: the tuned ROUGE-L vs the base's, else the loss."""
    if "golden.rougeL" in results:
        base = results.get("golden.base.rougeL")
        tail = f" (base {base:.2f})" if base is not None else ""
        return f"rougeL {results['golden.rougeL']:.2f}{tail}"
    if "validation.loss" in results:
        return f"val loss {results['validation.loss']:.3f}"
    return None


def write_reports(workdir: Path, report: dict[str, Any]) -> None:
    reports = workdir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    tmp = reports / "eval.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    tmp.replace(reports / "eval.json")
    (reports / "eval.md").write_text(render_markdown(report))


def render_markdown(report: dict[str, Any]) -> str:
    """The eval summary: base vs tuned table, validation, gates, a few samples."""
    metrics = report.get("metrics", {})

    def fmt(key: str) -> str:
        value = metrics.get(key)
        return f"{value:.4f}" if isinstance(value, float) else "n/a"

    lines = ["# Evaluation", ""]
    if "golden" in report:
        lines += [
            f"Golden set: {report['golden']['examples']} prompts, greedy decoding, "
            f"{report['golden']['maxNewTokens']} new tokens at most.",
            "",
            "| metric | base | tuned |",
            "|---|---|---|",
        ]
        for key, label in (
            (m.EXACT_MATCH, "exact match"),
            (m.TOKEN_F1, "token F1"),
            (m.ROUGE_L, "ROUGE-L"),
        ):
            lines.append(f"| {label} | {fmt(f'golden.base.{key}')} | {fmt(f'golden.{key}')} |")
        lines += ["", f"Win rate vs base: {fmt('golden.winRateVsBase')}", ""]
    if "validation.loss" in metrics:
        lines += [
            f"Validation: loss {fmt('validation.loss')}, perplexity "
            f"{fmt('validation.perplexity')} ({report['validation']['tokens']} tokens).",
            "",
        ]
    gates = report.get("gates") or []
    if gates:
        lines += ["## Gates", ""]
        for g in gates:
            bound = " and ".join(
                f"{op} {g[k]:g}" for k, op in (("min", ">="), ("max", "<=")) if k in g
            )
            verdict = "passed" if g["passed"] else "**FAILED**"
            lines.append(f"- `{g['metric']}` = {g['value']:.4f} (needs {bound}): {verdict}")
        lines.append("")
    samples = report.get("samples") or []
    if samples:
        lines += ["## Samples", ""]
        for i, s in enumerate(samples[:5], 1):
            lines += [f"### {i}", ""]
            for key in ("prompt", "reference", "base", "tuned"):
                text = str(s[key]).replace("\n", "\n> ")
                lines += [f"**{key}**", "", f"> {text}", ""]
    return "\n".join(lines)
