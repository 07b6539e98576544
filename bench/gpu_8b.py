"""8B-shaped QLoRA at seq 2048 on one GPU: the HF baselines vs our recipe and its levers.

    # on a machine with one CUDA GPU and `pip install -e '.[trainer,bench]'`:
    python -m bench.gpu_8b --json /tmp/gpu.json                          # all configurations
    python -m bench.gpu_8b --configs trl,ours,ours+keep --rows 128
    python -m bench.gpu_8b --shape tiny --rows 16                        # smoke run, CPU is fine

No downloads: the model is Llama-3.1-8B-shaped (32 layers, 4096 wide, 14336 MLP, 32/8 heads,
128,256 vocabulary) with random weights, built directly on the GPU and quantised to 4-bit NF4
with double quantisation by bitsandbytes, layer by layer (never a 16 GB bf16 copy); the data are
random token ids with bench/data.py's length distribution (responses <= 1,024 tokens). Every
configuration trains one epoch over the same rows (so the same real tokens) in its own process.

Configurations:
- seed000: HF Trainer + PEFT as in seed 000, every row padded to 2048, loss on everything, LoRA
  r16/alpha32 on q/v, batch 4, bf16 autocast (the seed's fp16 where the GPU lacks bf16).
- trl: TRL SFTTrainer as in seed 003 (bench/baseline_trl.py): r64/alpha16 on q/v, dynamic
  padding, gradient checkpointing, bf16, paged AdamW.
- ours: FineTuneRecipe with the planner's plan for Llama 3.1 8B QLoRA at 2048 on this GPU
  (LoRA r16 on all linear layers, padding-free packing, loss on responses, checkpointing).
- ours+LEVER[+LEVER...]: the levers to try, measured the same way (see bench/ours.py):
  keep (logits only at trained positions), liger / cce (fused linear cross-entropy: liger-kernel,
  cut-cross-entropy), autocast (bf16 autocast around the forward), castback (embeddings, norms
  and lm_head back to bf16 after PEFT's k-bit preparation upcast them to fp32), nodrop (LoRA
  dropout 0), nockpt (no activation checkpointing), compile (torch.compile of each decoder
  layer), fa2 (flash-attention 2 varlen kernels for packed rows: needs the flash-attn package).

Reported: real tokens/s, wall time, torch.cuda.max_memory_allocated (and reserved), final loss,
ratios against each baseline, and MFU = real tokens/s x F / peak, with
F = 4*N_frozen + 6*N_lora + 6*L*d*T per token (T = 2048, N_frozen = all base parameters), and the
peak bf16 dense TFLOP/s of the GPU from PEAK_TFLOPS (stated in the output). Targets (issue 9):
>= 2x the HF baseline's tokens/s, <= 0.6x its peak memory, MFU >= 40%.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common

SEQ = 2048
DEFAULT_CONFIGS = (
    "seed000,trl,ours,ours+autocast,ours+castback,ours+castback+keep,ours+castback+liger,"
    "ours+castback+keep+nodrop,ours+castback+keep+nockpt"
)
# Dense bf16 tensor-core peaks (vendor data sheets), first match on the device name wins.
PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)


def architecture(shape: str) -> Any:
    from llamaft_trainer.config import Architecture

    if shape == "llama-3.1-8b":
        return Architecture(
            layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8, vocab=128256
        )
    if shape == "tiny":
        return Architecture(layers=2, hidden=64, intermediate=176, heads=4, kv_heads=2, vocab=2048)
    raise SystemExit(f"unknown shape {shape}")


def model_name(shape: str) -> str:
    return "meta-llama/Llama-3.1-8B-Instruct" if shape == "llama-3.1-8b" else "builtin:tiny-llama"


def build_model(
    arch: Any, device: str, *, double_quant: bool = True, seed: int = 0, dtype: Any = None
) -> Any:
    """A random-weight Llama with every decoder linear layer in bitsandbytes 4-bit NF4.

    Like `from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True))`:
    decoder projections become `Linear4bit`, embeddings, norms and lm_head stay in the compute
    dtype. Built on the meta device and materialised one tensor at a time on `device`.
    """
    import bitsandbytes as bnb
    import torch
    from torch import nn
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    config = LlamaConfig(
        vocab_size=arch.vocab,
        hidden_size=arch.hidden,
        intermediate_size=arch.intermediate,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=arch.tied_embeddings,
        use_cache=False,
        dtype=dtype,
    )
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    for layer in model.model.layers:
        for name, module in list(layer.named_modules()):
            if not isinstance(module, nn.Linear):
                continue
            parent_name, _, attr = name.rpartition(".")
            parent = layer.get_submodule(parent_name)
            weight = torch.randn(module.out_features, module.in_features, device=device)
            weight = (weight * 0.02).to(dtype)
            quantized = bnb.nn.Linear4bit(
                module.in_features,
                module.out_features,
                bias=False,
                compute_dtype=dtype,
                compress_statistics=double_quant,
                quant_type="nf4",
                device="meta",
            )
            quantized.weight = bnb.nn.Params4bit(
                weight, requires_grad=False, compress_statistics=double_quant, quant_type="nf4"
            ).to(device)
            setattr(parent, attr, quantized)
            del weight
        layer.input_layernorm.weight = nn.Parameter(
            torch.ones(arch.hidden, device=device, dtype=dtype)
        )
        layer.post_attention_layernorm.weight = nn.Parameter(
            torch.ones(arch.hidden, device=device, dtype=dtype)
        )
    model.model.norm.weight = nn.Parameter(torch.ones(arch.hidden, device=device, dtype=dtype))
    embed = torch.randn(arch.vocab, arch.hidden, device=device, dtype=dtype) * 0.02
    model.model.embed_tokens.weight = nn.Parameter(embed)
    if arch.tied_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    else:
        head = torch.randn(arch.vocab, arch.hidden, device=device, dtype=dtype) * 0.02
        model.lm_head.weight = nn.Parameter(head)
    model.model.rotary_emb = LlamaRotaryEmbedding(config).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    # What PEFT and the Trainer look for on a bitsandbytes-quantised model.
    from transformers import BitsAndBytesConfig
    from transformers.quantizers.quantizer_bnb_4bit import Bnb4BitHfQuantizer

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=dtype,
    )
    model.config.quantization_config = quant
    model.hf_quantizer = Bnb4BitHfQuantizer(quant)
    model.is_loaded_in_4bit = True
    model.is_quantized = True
    model.quantization_method = "bitsandbytes"
    return model


def rows(n: int, vocab: int, seq: int) -> list[Any]:
    from bench import data
    from llamaft_trainer.data import Example

    out = []
    for ids, prompt in data.token_rows(n, vocab, seed=0, max_response=seq // 2):
        ids = ids[:seq]
        labels = [-100] * min(prompt, len(ids)) + ids[prompt:]
        out.append(Example(input_ids=ids, labels=labels))
    return out


class StubTokenizer:
    """What the recipe needs of a tokenizer when the data are already token ids."""

    pad_token_id = 0
    eos_token_id = 1
    pad_token = eos_token = "</s>"
    bos_token = "<s>"

    def save_pretrained(self, path: Any) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)


def peak_tflops(name: str) -> tuple[float | None, str]:
    for key, value in PEAK_TFLOPS:
        if key in name:
            return value, f"{key} dense bf16 {value:g} TFLOP/s"
    return None, f"unknown peak for {name!r}: MFU not computed"


def flops_per_token(arch: Any, n_frozen: int, n_lora: int, seq: int) -> float:
    return 4 * n_frozen + 6 * n_lora + 6 * arch.layers * arch.hidden * seq


# --- child: one configuration -------------------------------------------------------------------


def run_baseline(kind: str, model: Any, examples: list[Any], workdir: Path, seq: int) -> Any:
    tokens = [list(e.input_ids) for e in examples]
    if kind == "seed000":
        from bench import baseline_seed000

        return baseline_seed000.train(model, tokens, 0, workdir, seq=seq)
    from transformers import AutoTokenizer

    from bench import baseline_trl
    from llamaft_trainer.models import BUILTIN_DIR

    # TRL insists on a real tokenizer; the rows are token ids already, so any one will do.
    tokenizer = AutoTokenizer.from_pretrained(str(BUILTIN_DIR / "tiny-llama"))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return baseline_trl.train(model, tokenizer, tokens, workdir, seq=seq)


def run_ours(
    kind: str, args: argparse.Namespace, arch: Any, examples: list[Any], workdir: Path, device: str
) -> dict[str, Any]:
    from bench import ours, plans
    from llamaft_trainer import data as ft_data
    from llamaft_trainer import models

    parts = kind.split("+")[1:]
    levers = tuple(p for p in parts if p in ours.LEVERS)
    training: dict[str, Any] = {}
    if "nockpt" in parts:
        training["gradientCheckpointing"] = False
    plan = plans.plan_for(
        model_name(args.shape), None, method="qlora", seq=args.seq, training=training
    )
    if args.shape != "llama-3.1-8b":
        plan = plan.model_copy(
            update={"model": plan.model.model_copy(update={"architecture": arch})}
        )

    def load_base_model(plan: Any, *, device: str, for_training: bool) -> Any:
        model = build_model(arch, device)
        if "fa2" in parts:
            model.config._attn_implementation = "flash_attention_2"
        return model

    models.load_base_model = load_base_model  # type: ignore[assignment]
    models.load_tokenizer = lambda plan: StubTokenizer()  # type: ignore[assignment]
    ft_data.build_splits = lambda plan, tokenizer: ft_data.TokenizedSplits(  # type: ignore[assignment]
        train=examples, validation=[], stats={}
    )
    recipe = ours.recipe_class(levers)(plan, workdir)
    recipe.setup()
    if "castback" in parts:
        # Undo PEFT's prepare_model_for_kbit_training upcast of embeddings, norms and lm_head
        # to fp32, which otherwise keeps the whole residual stream (attention, lm_head) in fp32.
        import torch

        for param in recipe.model.parameters():
            if param.dtype == torch.float32 and not param.requires_grad:
                param.data = param.data.to(
                    torch.bfloat16 if device.startswith("cuda") else param.dtype
                )
    if "compile" in parts:
        import torch

        for layer in recipe.model.get_base_model().model.layers:
            layer.compile()
        torch._dynamo.config.cache_size_limit = 64
    reset_peak(device)
    result = ours.run_setup(recipe)
    result["plan"] = {
        "perDeviceBatchSize": plan.training.per_device_batch_size,
        "gradientAccumulationSteps": plan.training.gradient_accumulation_steps,
        "gradientCheckpointing": plan.training.gradient_checkpointing,
        "lora": plan.lora.model_dump() if plan.lora else None,
        "estimatePeakGiB": plan.estimate.peak_memory_gib_per_gpu,
    }
    result["trainable"] = sum(p.numel() for p in recipe.model.parameters() if p.requires_grad)
    recipe.cleanup()
    return result


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def child(kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import torch

    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    arch = architecture(args.shape)
    examples = rows(args.rows, arch.vocab, args.seq)
    result: dict[str, Any]
    try:
        if kind.startswith("ours"):
            result = run_ours(kind, args, arch, examples, workdir, device)
        else:
            model = build_model(arch, device)
            reset_peak(device)
            result = run_baseline(kind, model, examples, workdir, args.seq)
            result["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    except torch.cuda.OutOfMemoryError as err:
        return {"error": f"CUDA out of memory: {str(err)[:200]}", "device": device}
    except (ImportError, RuntimeError, ValueError) as err:
        return {"error": f"{type(err).__name__}: {str(err)[:300]}", "device": device}
    result["device"] = device
    if device.startswith("cuda"):
        result["cudaPeakMiB"] = round(torch.cuda.max_memory_allocated() / common.MIB)
        result["cudaReservedMiB"] = round(torch.cuda.max_memory_reserved() / common.MIB)
    else:
        result["peakRssMiB"] = round(common.max_rss_mib())
        result["rssBeforeModelMiB"] = 0
    return result


# --- parent ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--shape", default="llama-3.1-8b", choices=["llama-3.1-8b", "tiny"])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--seq", type=int, default=SEQ)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if args.child:
        common.emit(child(args.child, args, args.workdir))
        return
    from llamaft_operator.catalogue import total_parameters

    arch = architecture(args.shape)
    info = common.machine()
    peak, peak_note = peak_tflops(info.get("gpu", "cpu"))
    n_frozen = int(total_parameters(arch))
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.configs.split(","):
            child_args = ["--child", kind, "--shape", args.shape, "--rows", str(args.rows)]
            child_args += ["--seq", str(args.seq), "--workdir", str(Path(tmp) / kind)]
            try:
                result = common.run_child("bench.gpu_8b", child_args, timeout=1800)
            except RuntimeError as err:
                result = {"error": str(err)[-1500:]}
            if "tokens" in result:
                result["tokensPerSecond"] = round(result["tokens"] / result["seconds"], 1)
                flops = flops_per_token(arch, n_frozen, int(result["trainable"]), args.seq)
                result["flopsPerToken"] = flops
                if peak:
                    result["mfu"] = round(result["tokensPerSecond"] * flops / (peak * 1e12), 4)
            results[kind] = result
            print(f"{kind}: {json.dumps(result)}", file=sys.stderr, flush=True)
    ratios: dict[str, dict[str, float]] = {}
    for name, mine in results.items():
        for base in ("seed000", "trl"):
            b = results.get(base)
            if not name.startswith("ours") or not b or "tokens" not in b or "tokens" not in mine:
                continue
            mem = "cudaPeakMiB" if "cudaPeakMiB" in mine else "peakRssMiB"
            ratios[f"{name}/{base}"] = {
                "tokensPerSecond": round(mine["tokensPerSecond"] / b["tokensPerSecond"], 2),
                "peakMemory": round(mine[mem] / b[mem], 2),
            }
    header = ["configuration", "real tokens", "padding", "wall s", "real tok/s", "peak MiB"]
    header += ["MFU", "loss"]
    table = []
    for kind, r in results.items():
        if "tokens" not in r:
            table.append([kind, r.get("error", "failed")[:120], "", "", "", "", "", ""])
            continue
        mem = r.get("cudaPeakMiB", r.get("peakRssMiB"))
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
        table.append(
            [
                kind,
                f"{r['tokens']:,}",
                f"{100 * r['paddingFraction']:.0f}%",
                f"{r['seconds']:.1f}",
                f"{r['tokensPerSecond']:.1f}",
                f"{mem:,}",
                mfu,
                f"{r['loss']:.3f}",
            ]
        )
    print(common.markdown_table(header, table))
    print(f"MFU peak: {peak_note}; F/token uses T={args.seq}, N_frozen={n_frozen:,}")
    print(json.dumps(ratios, indent=2))
    if args.json:
        report = {
            "machine": info,
            "versions": common.versions(
                "torch",
                "transformers",
                "peft",
                "trl",
                "bitsandbytes",
                "liger_kernel",
                "cut-cross-entropy",
                "flash-attn",
            ),
            "command": " ".join(["python", "-m", "bench.gpu_8b", *sys.argv[1:]]),
            "shape": args.shape,
            "seq": args.seq,
            "batch": 4,
            "peak": peak_note,
            "models": {model_name(args.shape): {"results": results, "ratios": ratios}},
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
