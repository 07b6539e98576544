"""The planner: (model, method, sequence length, data size, GPU type, limits, deadline) -> RunPlan.

It chooses the fewest GPUs that fit the run in memory *and* finish it within the deadline:
candidates are 1, 2, 4, ... GPUs up to a node, then whole nodes; for each it picks the ZeRO stage
(none on one GPU, ZeRO-2 when the frozen weights fit replicated, ZeRO-3 otherwise and for full
fine-tunes) and the largest per-device batch up to the size default that fits, then gradient
accumulation to reach the size's global batch. When nothing within the limits works, PlanError
names the limit and the smallest setting that would.

Pure: no I/O, no clock, no Kubernetes; the same inputs always give the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from llamaft_operator import memory
from llamaft_operator.api import (
    LlamaFineTune,
    parse_duration_seconds,
    parse_parameter_count,
)
from llamaft_operator.catalogue import (
    GpuCatalogue,
    GpuType,
    estimate_architecture,
    lookup_model,
    lora_parameters,
    total_parameters,
)
from llamaft_trainer.config import (
    Architecture,
    DeepSpeedPlan,
    Estimate,
    LoraPlan,
    ModelPlan,
    QuantizationPlan,
    ResourcesPlan,
    RunPlan,
    TrainingPlan,
)

# The fraction of device memory a plan may fill; the rest absorbs spikes the model does not see.
USABLE_MEMORY_FRACTION = 0.92
# Padding-free packing fills sequences almost completely; a little is lost at epoch ends.
PACKING_EFFICIENCY = 0.95
LARGEST_SEARCH = 4096
MAX_EPOCHS = 100.0  # GPUs considered when explaining what an impossible request would need


class PlanError(ValueError):
    """The request cannot be planned; the message names the limit and what would work."""


@dataclass(frozen=True)
class SizeDefaults:
    """The per-size table from DESIGN.md (seed 001)."""

    lora_r: int
    lora_alpha: int
    lora_dropout: float
    per_device_batch: int
    accumulation: int


# LoRA dropout defaults to 0, not seed 001's 0.05: with p > 0 PEFT materialises a dropped-out copy
# of the input of every adapted layer (7 per block with all-linear targets). Measured in bench/
# (SmolLM2-135M, CPU, one run): 15% less training time and 13% less peak memory, same loss
# curve. Set spec.lora.dropout to regularise small datasets.
DEFAULT_LORA_DROPOUT = 0.0


def size_defaults(parameters: int) -> SizeDefaults:
    if parameters <= 10e9:
        return SizeDefaults(16, 32, DEFAULT_LORA_DROPOUT, 4, 4)
    if parameters <= 20e9:
        return SizeDefaults(32, 64, DEFAULT_LORA_DROPOUT, 2, 8)
    return SizeDefaults(64, 128, DEFAULT_LORA_DROPOUT, 1, 16)


@dataclass(frozen=True)
class Candidate:
    gpus: int
    nodes: int
    gpus_per_node: int
    zero_stage: int
    per_device_batch: int
    accumulation: int
    breakdown: dict[str, float]
    peak_gib: float
    tokens_per_second: float
    duration_hours: float | None


def gpu_counts(gpu: GpuType, limit: int) -> list[int]:
    """1, 2, 4, ... up to one node, then whole nodes."""
    counts = []
    n = 1
    while n < gpu.gpus_per_node and n <= limit:
        counts.append(n)
        n *= 2
    nodes = 1
    while nodes * gpu.gpus_per_node <= limit:
        counts.append(nodes * gpu.gpus_per_node)
        nodes += 1
    return counts


def resolve_model(ft: LlamaFineTune) -> ModelPlan:
    spec = ft.spec.model
    known = lookup_model(spec.name)
    if spec.parameters is not None:
        count = parse_parameter_count(spec.parameters)
        arch = known.architecture if known else estimate_architecture(count)
    elif known is not None:
        arch = known.architecture
        count = total_parameters(arch)
    else:
        raise PlanError(
            f"spec.model.name: the planner does not know {spec.name!r}; set spec.model.parameters "
            "(e.g. `8B`) so it can size the run"
        )
    return ModelPlan(
        name=spec.name,
        revision=spec.revision,
        parameters=count,
        architecture=arch,
        trust_remote_code=spec.trust_remote_code,
        known=known is not None,
    )


def _evaluate(
    *,
    arch: Architecture,
    method: str,
    quant_bits: int,
    double_quant: bool,
    lora: LoraPlan | None,
    seq: int,
    checkpointing: bool,
    gpu: GpuType,
    gpus: int,
    batch_cap: int,
    fixed_batch: int | None,
    global_batch: int,
    dataset_tokens: int | None,
    epochs: float,
    max_steps: int | None,
) -> Candidate | None:
    nodes = max(1, math.ceil(gpus / gpu.gpus_per_node))
    per_node = gpus if nodes == 1 else gpu.gpus_per_node
    usable = gpu.memory_gib * USABLE_MEMORY_FRACTION
    if gpus == 1:
        stages = [0]
    elif method == "full":
        stages = [3]
    else:
        stages = [2, 3]
    # Data parallelism keeps the global batch (the optimisation recipe) and splits it: a
    # per-device batch larger than its share would grow the step, and with maxSteps fixed more
    # GPUs would then train on more tokens instead of finishing sooner.
    share = max(1, global_batch // gpus)
    batches = (
        [fixed_batch]
        if fixed_batch
        else [b for b in (batch_cap, 4, 2, 1) if b <= min(batch_cap, share)]
    )
    for stage in stages:
        for batch in sorted(set(batches), reverse=True):
            inputs = memory.MemoryInputs(
                architecture=arch,
                method=method,
                quant_bits=quant_bits,
                double_quant=double_quant,
                lora_r=lora.r if lora else 0,
                lora_targets=tuple(lora.target_modules) if lora else (),
                # The recipe runs each of the per-device batch's packed rows (<= seq tokens) as
                # its own micro-batch (padding-free rows without varlen attention would pay
                # attention across the whole batch), so activations are those of one row.
                tokens_per_micro_batch=seq,
                max_seq_length=seq,
                gradient_checkpointing=checkpointing,
                zero_stage=stage,
                world_size=gpus,
            )
            breakdown = memory.memory_breakdown(inputs)
            peak = memory.peak_gib(breakdown)
            if peak > usable:
                continue
            accumulation = max(1, math.ceil(global_batch / (batch * gpus)))
            trainable = lora_parameters(arch, lora.r, lora.target_modules) if lora else 0
            flops = memory.flops_per_token(arch, method, trainable, seq, checkpointing)
            per_gpu = memory.MFU[method] * gpu.bf16_tflops * 1e12 / flops
            tps = memory.cluster_tokens_per_second(per_gpu, gpus, nodes)
            duration = None
            if dataset_tokens is not None:
                tokens = dataset_tokens * epochs
                if max_steps is not None:
                    step_tokens = batch * gpus * accumulation * seq * PACKING_EFFICIENCY
                    tokens = min(tokens, max_steps * step_tokens)
                duration = tokens / tps / 3600
            return Candidate(
                gpus=gpus,
                nodes=nodes,
                gpus_per_node=per_node,
                zero_stage=stage,
                per_device_batch=batch,
                accumulation=accumulation,
                breakdown=breakdown,
                peak_gib=peak,
                tokens_per_second=tps,
                duration_hours=duration,
            )
    return None


def _fmt_hours(hours: float) -> str:
    return f"{hours:.1f}h" if hours >= 1 else f"{hours * 60:.0f}m"


def make_plan(
    ft: LlamaFineTune,
    *,
    catalogue: GpuCatalogue | None = None,
    gpu_type: str | None = None,
    dataset_tokens: int | None = None,
    run_id: str = "local",
    final: bool = False,
) -> RunPlan:
    """Size the run described by `ft` (see the module docstring)."""
    spec = ft.spec
    catalogue = catalogue or GpuCatalogue()
    try:
        gpu = catalogue.get(gpu_type or spec.resources.gpu_type)
    except KeyError as err:
        raise PlanError(f"spec.resources.gpuType: {err.args[0]}") from None
    model = resolve_model(ft)
    arch = model.architecture
    defaults = size_defaults(model.parameters)
    t = spec.training

    lora: LoraPlan | None = None
    if spec.method != "full":
        given = spec.lora
        lora = LoraPlan(
            r=(given.r if given and given.r else defaults.lora_r),
            alpha=(given.alpha if given and given.alpha else defaults.lora_alpha),
            dropout=(
                given.dropout if given and given.dropout is not None else defaults.lora_dropout
            ),
            target_modules=(
                given.target_modules if given and given.target_modules else ["all-linear"]
            ),
        )
    q = spec.quantization
    quant_bits = q.bits if q else 4
    double_quant = q.double_quant if q else True
    # Gradient checkpointing is the default from 1B parameters up: it trades ~1/3 more compute for
    # activations that no longer grow with depth. Tiny models run faster without it.
    checkpointing = (
        t.gradient_checkpointing
        if t.gradient_checkpointing is not None
        else model.parameters >= 1e9
    )
    global_batch = defaults.per_device_batch * defaults.accumulation
    if t.per_device_batch_size and t.gradient_accumulation_steps:
        global_batch = t.per_device_batch_size * t.gradient_accumulation_steps
    tokens = dataset_tokens if dataset_tokens is not None else spec.dataset.approx_tokens
    # With only maxSteps set, steps govern: as many passes over the data as they need.
    epochs = t.epochs if t.epochs is not None else (MAX_EPOCHS if t.max_steps else 3.0)
    deadline_h = (
        parse_duration_seconds(spec.resources.deadline) / 3600 if spec.resources.deadline else None
    )

    def candidates(limit_gpus: int, limit_nodes: int) -> Iterator[Candidate]:
        """Every GPU count within the limits whose memory fits, fewest GPUs first."""
        for n in gpu_counts(gpu, limit_gpus):
            if math.ceil(n / gpu.gpus_per_node) > limit_nodes:
                break
            cand = _evaluate(
                arch=arch,
                method=spec.method,
                quant_bits=quant_bits,
                double_quant=double_quant,
                lora=lora,
                seq=t.max_seq_length,
                checkpointing=checkpointing,
                gpu=gpu,
                gpus=n,
                batch_cap=defaults.per_device_batch,
                fixed_batch=t.per_device_batch_size,
                global_batch=global_batch,
                dataset_tokens=tokens,
                epochs=epochs,
                max_steps=t.max_steps,
            )
            if cand is not None:
                yield cand

    def search(limit_gpus: int, limit_nodes: int, use_deadline: bool) -> Candidate | None:
        """The fewest GPUs that fit (and, with use_deadline, meet spec.resources.deadline)."""
        for cand in candidates(limit_gpus, limit_nodes):
            late = cand.duration_hours is not None and cand.duration_hours > (deadline_h or 1e30)
            if use_deadline and late:
                continue
            return cand
        return None

    def fastest(limit_gpus: int, limit_nodes: int) -> Candidate | None:
        return min(
            candidates(limit_gpus, limit_nodes),
            key=lambda c: c.duration_hours if c.duration_hours is not None else 0.0,
            default=None,
        )

    limits = (spec.resources.max_gpus, spec.resources.max_nodes)
    chosen = search(*limits, True)
    if chosen is None:
        raise PlanError(_explain(search, fastest, limits, gpu, spec.method, model, deadline_h))

    accumulation = (
        t.gradient_accumulation_steps if t.gradient_accumulation_steps else chosen.accumulation
    )
    per_step_sequences = chosen.per_device_batch * chosen.gpus * accumulation
    steps_total: int | None = None
    if tokens is not None:
        per_epoch = math.ceil(tokens / (per_step_sequences * t.max_seq_length * PACKING_EFFICIENCY))
        steps_total = max(1, math.ceil(per_epoch * epochs))
    if t.max_steps is not None:
        steps_total = min(steps_total, t.max_steps) if steps_total else t.max_steps
    gpu_hours = chosen.duration_hours * chosen.gpus if chosen.duration_hours is not None else None
    notes = []
    if not model.known:
        notes.append("model shape estimated from spec.model.parameters")
    if tokens is None:
        notes.append("dataset size unknown: duration is estimated after the validate step")
    trainable = (
        lora_parameters(arch, lora.r, lora.target_modules) if lora else total_parameters(arch)
    )
    cpu = min(gpu.cpu_per_node, 4 + 8 * chosen.gpus_per_node)
    mem = min(gpu.memory_gib_per_node, 32 + 64 * chosen.gpus_per_node)
    return RunPlan(
        name=ft.metadata.name,
        namespace=ft.metadata.namespace or "default",
        run_id=run_id,
        model=model,
        method=spec.method,
        quantization=(
            QuantizationPlan(
                bits=quant_bits,
                quant_type=q.quant_type if q else "nf4",
                double_quant=double_quant,
                storage_dtype="bfloat16" if chosen.zero_stage == 3 else "uint8",
            )
            if spec.method == "qlora"
            else None
        ),
        lora=lora,
        training=TrainingPlan(
            epochs=epochs,
            max_steps=t.max_steps,
            learning_rate=t.learning_rate or (2e-5 if spec.method == "full" else 2e-4),
            scheduler=t.scheduler,
            warmup_ratio=t.warmup_ratio,
            max_seq_length=t.max_seq_length,
            packing=t.packing,
            per_device_batch_size=chosen.per_device_batch,
            gradient_accumulation_steps=accumulation,
            global_batch_size=per_step_sequences,
            gradient_checkpointing=checkpointing,
            early_stopping_patience=t.early_stopping_patience,
            eval_steps=t.eval_steps,
            save_steps=t.save_steps,
            keep_checkpoints=t.keep_checkpoints,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            seed=t.seed,
        ),
        dataset=spec.dataset,
        resources=ResourcesPlan(
            gpu_type=gpu.name,
            gpu_memory_gib=gpu.memory_gib,
            nodes=chosen.nodes,
            gpus_per_node=chosen.gpus_per_node,
            cpu_per_node=cpu,
            memory_gib_per_node=mem,
            # NCCL and the data loader's workers share tensors through /dev/shm.
            shm_gib=min(mem // 2, 8 * chosen.gpus_per_node),
        ),
        deepspeed=DeepSpeedPlan(zero_stage=chosen.zero_stage),
        estimate=Estimate(
            peak_memory_gib_per_gpu=chosen.peak_gib,
            memory_breakdown_gib=chosen.breakdown,
            trainable_parameters=trainable,
            tokens_per_second=round(chosen.tokens_per_second, 1),
            dataset_tokens=tokens,
            steps_total=steps_total,
            gpu_hours=round(gpu_hours, 2) if gpu_hours is not None else None,
            duration_hours=(
                round(chosen.duration_hours, 3) if chosen.duration_hours is not None else None
            ),
            cost_usd=(
                round(gpu_hours * gpu.price_per_gpu_hour, 2)
                if gpu_hours is not None and gpu.price_per_gpu_hour is not None
                else None
            ),
            notes=notes,
        ),
        pilot=spec.pilot,
        evaluation=spec.evaluation,
        publish=spec.publish,
        tracking=spec.tracking,
        final=final,
    )


def _explain(
    search: Callable[[int, int, bool], Candidate | None],
    fastest: Callable[[int, int], Candidate | None],
    limits: tuple[int, int],
    gpu: GpuType,
    method: str,
    model: ModelPlan,
    deadline_h: float | None,
) -> str:
    max_gpus, max_nodes = limits
    what = f"{model.name} ({model.parameters / 1e9:.1f}B, {method}) on {gpu.name}"
    fits = search(LARGEST_SEARCH, LARGEST_SEARCH, False)
    if fits is None:
        return f"{what} does not fit in memory even on {LARGEST_SEARCH} GPUs; use method qlora"
    if fits.gpus > max_gpus or fits.nodes > max_nodes:
        return (
            f"{what} needs at least {fits.gpus} GPUs ({fits.nodes} node(s) of "
            f"{fits.gpus_per_node}) to fit in memory ({fits.peak_gib} GiB per GPU); "
            f"spec.resources.maxGpus is {max_gpus} and maxNodes is {max_nodes}: raise them to "
            f"at least {fits.gpus} and {fits.nodes}, pick a larger GPU type, or use method qlora"
        )
    fast = search(LARGEST_SEARCH, LARGEST_SEARCH, True)
    assert deadline_h is not None
    best_in_limits = fastest(max_gpus, max_nodes)
    took = (
        f"; with {best_in_limits.gpus} GPU(s) it takes ~{_fmt_hours(best_in_limits.duration_hours)}"
        if best_in_limits and best_in_limits.duration_hours
        else ""
    )
    if fast is None:
        return (
            f"{what} cannot finish within spec.resources.deadline ({_fmt_hours(deadline_h)}) on "
            f"any number of GPUs{took}; extend the deadline or reduce epochs/maxSteps"
        )
    return (
        f"{what} cannot finish within spec.resources.deadline ({_fmt_hours(deadline_h)}) with "
        f"maxGpus={max_gpus}, maxNodes={max_nodes}{took}; it needs {fast.gpus} GPU(s) "
        f"({fast.nodes} node(s)): raise maxGpus/maxNodes to that or extend the deadline"
    )
