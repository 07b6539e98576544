"""Planner accuracy: the memory estimate of each configuration a benchmark ran vs its peak.

    .venv/bin/python -m bench.trainer_throughput --models smollm2,small-llama --json /tmp/tt.json
    .venv/bin/python -m bench.gpu_8b --json /tmp/gpu.json                       # on a GPU
    .venv/bin/python -m bench.planner_accuracy /tmp/tt.json [/tmp/gpu.json]

For each configuration in the result files, the LlamaFineTune that describes it (model, method,
LoRA rank and targets, quantisation, maxSeqLength, perDeviceBatchSize, checkpointing) goes
through the real `make_plan`, and its `estimate.memoryBreakdownGiB` is set against the measured
peak. Target: within +-15%.

How each side is measured:
- GPU: `torch.cuda.max_memory_allocated()` during training against the estimate without its
  `frameworkOverhead` (CUDA context, workspaces, allocator reserve are not in allocated bytes),
  and `max_memory_reserved()` + the CUDA context against the whole estimate.
- CPU: the growth of the process's RSS from just before the model is loaded (torch, transformers
  and PEFT already imported) to the peak sampled during training. The planner sizes GPUs in bf16,
  while CPU training runs in fp32, so the comparison uses the planner's own terms with the bf16
  ones doubled (frozen weights, embeddings, per-layer activations; the logits term already
  counts fp32 bytes) and no CUDA overhead: "CPU-adjusted estimate". The planner's GPU figure is
  shown too. The CPU check is a proxy: RSS also holds freed memory glibc has not returned.
- Micro-batch: our recipe packs one row of maxSeqLength per forward and runs perDeviceBatchSize
  of them as successive micro-batches (recipe.plan_steps); the planner budgets that (it used to
  budget perDeviceBatchSize x maxSeqLength, 4x the activations: this table found it). The
  baselines run perDeviceBatchSize padded rows per forward, and are estimated that way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench import common, plans

TOLERANCE = 0.15


def spec_kwargs(config: str, seq: int, batch: int) -> dict[str, Any]:
    """The LlamaFineTune fields of a benchmark configuration (see bench/plans.py)."""
    if config == "seed000":
        return {"seq": seq, "batch": batch, "spec": plans.SEED000_SPEC}
    if config == "trl":
        return {
            "seq": seq,
            "batch": batch,
            "method": "qlora",
            "spec": plans.SEED003_SPEC,
            "training": plans.SEED003_TRAINING,
        }
    if config.startswith("ours"):
        return {"seq": seq, "batch": batch}
    raise ValueError(f"no LlamaFineTune for configuration {config}")


def breakdown(plan: Any, tokens_per_micro_batch: int | None = None) -> dict[str, float]:
    """The planner's memory breakdown for `plan` (recomputed with the plan's own architecture)."""
    from llamaft_operator import memory

    t = plan.training
    q = plan.quantization
    inputs = memory.MemoryInputs(
        architecture=plan.model.architecture,
        method=plan.method,
        quant_bits=q.bits if q else 4,
        double_quant=q.double_quant if q else True,
        lora_r=plan.lora.r if plan.lora else 0,
        lora_targets=tuple(plan.lora.target_modules) if plan.lora else (),
        tokens_per_micro_batch=tokens_per_micro_batch or t.max_seq_length,
        max_seq_length=t.max_seq_length,
        gradient_checkpointing=t.gradient_checkpointing,
        zero_stage=plan.deepspeed.zero_stage,
        world_size=plan.resources.total_gpus,
    )
    return memory.memory_breakdown(inputs)


def cpu_adjusted(plan: Any, items: dict[str, float], tokens: int) -> float:
    """The planner's terms in fp32 and without CUDA overhead, in GiB (see the module docstring)."""
    from llamaft_operator import memory

    a = plan.model.architecture
    per_token = memory.activation_bytes_per_token(
        a, checkpointing=plan.training.gradient_checkpointing, lora=plan.method != "full"
    )
    logits = memory.LOGITS_BYTES_PER_VOCAB * a.vocab
    activations = (2 * (per_token - logits) + logits) * tokens * memory.ACTIVATION_CALIBRATION
    weights = 2 * (items.get("frozenWeights", 0.0) + items.get("embeddingsAndHead", 0.0))
    weights += items.get("quantizationConstants", 0.0)
    rest = items.get("trainableWeights", 0.0) + items.get("gradientsAndOptimizer", 0.0)
    return (weights + rest + activations / memory.GIB) * memory.FRAGMENTATION


def error(estimate: float, measured: float) -> str:
    e = estimate / measured - 1
    mark = "ok" if abs(e) <= TOLERANCE else "off"
    return f"{100 * e:+.0f}% {mark}"


def rows_for(model: str, config: str, result: dict[str, Any], seq: int, batch: int) -> list[Any]:
    plan = plans.plan_for(model, None, **spec_kwargs(config, seq, batch))
    # The planner budgets what our recipe runs: one packed row of <= seq tokens per forward.
    # The baselines batch `batch` padded rows per forward: their estimate uses that instead.
    tokens = seq if config.startswith("ours") else batch * seq
    planned = breakdown(plan, tokens)
    total = sum(planned.values())
    gib = 1024.0
    if "cudaPeakMiB" in result:
        measured = result["cudaPeakMiB"] / gib
        without = total - planned["frameworkOverhead"]
        return [
            model,
            config,
            "GPU max_memory_allocated",
            f"{without:.2f}",
            f"{measured:.2f}",
            error(without, measured),
        ]
    measured = (result["peakRssMiB"] - result["rssBeforeModelMiB"]) / gib
    return [
        model,
        config,
        "CPU RSS growth (fp32-adjusted estimate)",
        f"{cpu_adjusted(plan, planned, tokens):.2f} (GPU plan {total:.2f})",
        f"{measured:.2f}",
        error(cpu_adjusted(plan, planned, tokens), measured),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="--json files of the benchmarks")
    args = parser.parse_args()
    rows = []
    for path in args.results:
        report = json.loads(path.read_text())
        seq = int(report.get("seq", 512))
        batch = int(report.get("batch", 4))
        for model, entry in report["models"].items():
            for config, result in entry["results"].items():
                rows.append(rows_for(model, config, result, seq, batch))
    header = ["model", "configuration", "measured as", "estimate GiB", "measured GiB", "error"]
    print(common.markdown_table(header, rows))


if __name__ == "__main__":
    main()
