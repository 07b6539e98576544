"""Per-GPU memory and throughput model used by the planner. See docs/sizing.md for sources.

All byte counts are per GPU. The model is deliberately itemised so `llamaft plan` can show where
memory goes and a benchmark can compare each run's measured peak against the estimate.

Pure and torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamaft_operator.catalogue import (
    embedding_parameters,
    linear_parameters,
    lora_parameters,
    total_parameters,
)
from llamaft_trainer.config import Architecture

GIB = 1024**3

# bitsandbytes NF4 stores 2 weights per byte with one absmax per 64-weight block: fp32 (4 bytes)
# without double quantisation, or an 8-bit absmax plus one fp32 constant per 256 blocks with it
# (QLoRA paper, section 3: 0.5 -> 0.127 bits per parameter).
NF4_BYTES = 0.5
NF4_CONSTANTS_BYTES = 4 / 64
NF4_DOUBLE_QUANT_CONSTANTS_BYTES = 1 / 64 + 4 / (64 * 256)
INT8_BYTES = 1.0
INT8_CONSTANTS_BYTES = 4 / 4096  # one fp32 scale per row of a 4096-wide matrix, order of magnitude
BF16 = 2
FP32 = 4

# LoRA weights train in fp32 (PEFT upcasts adapters for stability under k-bit training), with fp32
# grads and two fp32 AdamW moments: 16 bytes per trainable parameter. Full fine-tunes in mixed
# precision keep bf16 weights + bf16 grads + fp32 master weights + two fp32 moments: 16 bytes too
# (ZeRO paper, section 3.1: "2 + 2 + 12").
LORA_STATE_BYTES = 16
FULL_STATE_BYTES = 16

# The logits of one token over the vocabulary are held in bf16, upcast to fp32 for the loss, and
# their fp32 gradient: ~12 bytes per vocabulary entry at peak with transformers' default loss.
LOGITS_BYTES_PER_VOCAB = 12

# Calibration: the activation terms below come from counting saved tensors per layer; measured
# peaks (Unsloth's published "Hugging Face + FA2" context lengths for Llama 3.1 8B and Llama 3.3
# 70B QLoRA, see docs/sizing.md) are ~20% above that count (allocator rounding, temporary buffers
# of the 4-bit matmul and of SDPA). We scale activations by this factor.
ACTIVATION_CALIBRATION = 1.2
# CUDA context (~0.5 GiB), cuBLAS/cuDNN workspaces, NCCL buffers and the caching allocator's
# reserve; 1.5 GiB puts the low-memory Unsloth data point (12 GB card, 932 tokens) within 11%.
FRAMEWORK_OVERHEAD_GIB = 1.5
# Fragmentation headroom on everything else.
FRAGMENTATION = 1.05


@dataclass(frozen=True)
class MemoryInputs:
    architecture: Architecture
    method: str  # qlora | lora | full
    quant_bits: int  # 4 or 8 (qlora only)
    double_quant: bool
    lora_r: int
    lora_targets: tuple[str, ...]
    tokens_per_micro_batch: int  # per GPU and forward pass: one packed row, <= maxSeqLength
    max_seq_length: int
    gradient_checkpointing: bool
    zero_stage: int  # 0, 2 or 3
    world_size: int


def activation_bytes_per_token(a: Architecture, *, checkpointing: bool, lora: bool) -> float:
    """Saved activations for one token, before calibration (bf16 tensors)."""
    # One decoder layer's saved tensors, in units of hidden/kv/intermediate widths: norm outputs,
    # q, k, v, attention output, o_proj input and residuals (~8 hidden + 2 kv); the SwiGLU MLP's
    # gate, up, act(gate) and product (4 intermediate) plus its norm; with LoRA, dropout copies of
    # the inputs of every adapted projection (~6 hidden + 1 intermediate). RMSNorm upcasts to fp32.
    widths = 8 * a.hidden + 2 * a.kv_dim + 4 * a.intermediate + a.hidden
    if lora:
        widths += 6 * a.hidden + a.intermediate
    layer = BF16 * widths + 2 * FP32 * a.hidden
    # With checkpointing only each layer's input is kept; one layer is recomputed at a time
    # during backward.
    kept = a.layers * BF16 * a.hidden + layer if checkpointing else a.layers * layer
    return kept + LOGITS_BYTES_PER_VOCAB * a.vocab


def memory_breakdown(m: MemoryInputs) -> dict[str, float]:
    """Itemised peak memory per GPU in GiB."""
    a = m.architecture
    n_linear = linear_parameters(a)
    n_embed = embedding_parameters(a)
    n_total = total_parameters(a)
    shard = m.world_size if m.zero_stage == 3 else 1
    items: dict[str, float] = {}

    if m.method == "qlora":
        per_param = NF4_BYTES if m.quant_bits == 4 else INT8_BYTES
        consts = (
            (NF4_DOUBLE_QUANT_CONSTANTS_BYTES if m.double_quant else NF4_CONSTANTS_BYTES)
            if m.quant_bits == 4
            else INT8_CONSTANTS_BYTES
        )
        items["frozenWeights"] = n_linear * per_param / shard
        items["quantizationConstants"] = n_linear * consts / shard
        items["embeddingsAndHead"] = (n_embed + (n_total - n_linear - n_embed)) * BF16 / shard
    elif m.method == "lora":
        items["frozenWeights"] = n_total * BF16 / shard
    trainable = (
        lora_parameters(a, m.lora_r, list(m.lora_targets)) if m.method != "full" else n_total
    )
    if m.method == "full":
        # Weights/grads/optimizer: ZeRO-3 shards all of it; ZeRO-2 keeps bf16 weights replicated.
        if m.zero_stage == 3:
            items["trainableWeights"] = trainable * BF16 / m.world_size
        else:
            items["trainableWeights"] = trainable * BF16
        states = FULL_STATE_BYTES - BF16
        items["gradientsAndOptimizer"] = (
            trainable * states / (m.world_size if m.zero_stage in (2, 3) else 1)
        )
    else:
        weights_shard = m.world_size if m.zero_stage == 3 else 1
        items["trainableWeights"] = trainable * FP32 / weights_shard
        states_shard = m.world_size if m.zero_stage in (2, 3) else 1
        items["gradientsAndOptimizer"] = trainable * (LORA_STATE_BYTES - FP32) / states_shard
    if m.zero_stage == 3 and m.world_size > 1:
        # Parameters of the layer being computed and the prefetched next one are gathered.
        layer_params = n_linear / a.layers
        dense = BF16 if m.method != "qlora" else NF4_BYTES
        items["zero3GatheredLayers"] = 2 * layer_params * dense
    per_token = activation_bytes_per_token(
        a, checkpointing=m.gradient_checkpointing, lora=m.method != "full"
    )
    items["activations"] = per_token * m.tokens_per_micro_batch * ACTIVATION_CALIBRATION
    gib = {k: v / GIB for k, v in items.items()}
    subtotal = sum(gib.values())
    gib["fragmentation"] = subtotal * (FRAGMENTATION - 1)
    gib["frameworkOverhead"] = FRAMEWORK_OVERHEAD_GIB
    return {k: round(v, 3) for k, v in gib.items()}


def peak_gib(breakdown: dict[str, float]) -> float:
    return round(sum(breakdown.values()), 2)


# --- throughput ---------------------------------------------------------------------------------

# Model FLOPs utilisation we expect on one GPU: bf16 LoRA and full fine-tunes reach ~40% with
# padding-free packing and SDPA/flash attention; the 4-bit dequantisation in QLoRA's matmuls costs
# roughly a third (QLoRA paper and bitsandbytes benchmarks).
MFU = {"full": 0.40, "lora": 0.40, "qlora": 0.27}
# Scaling efficiency per GPU added: data parallel within a node (NVLink) loses little; ZeRO-3's
# parameter all-gathers across nodes cost more.
INTRA_NODE_EFFICIENCY = 0.95
INTER_NODE_EFFICIENCY = 0.85


def flops_per_token(
    a: Architecture, method: str, trainable: int, seq: int, checkpointing: bool
) -> float:
    """Training FLOPs per token: 2N forward, 2N backward to activations, +2N weight grads for full
    fine-tunes (6N); LoRA adds 6 per adapter parameter; attention 6*L*d*T; recompute adds 2N."""
    n = total_parameters(a)
    dense = 6 * n if method == "full" else 4 * n + 6 * trainable
    attention = 6 * a.layers * a.hidden * seq
    recompute = 2 * n if checkpointing else 0
    return dense + attention + recompute


def cluster_tokens_per_second(per_gpu: float, gpus: int, nodes: int) -> float:
    eff = 1.0 if gpus == 1 else INTRA_NODE_EFFICIENCY
    if nodes > 1:
        eff *= INTER_NODE_EFFICIENCY
    return per_gpu * gpus * eff
