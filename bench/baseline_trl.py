"""The second baseline: plain TRL `SFTTrainer` with QLoRA, as in seed 003.

    .venv/bin/pip install trl            # 1.16.0 here, works with transformers 5.23
    .venv/bin/python -m bench.baseline_trl --model smollm2 --rows 16

What seed 003 sets, kept: 4-bit NF4 base without double quantisation (`BitsAndBytesConfig
(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=False)`), LoRA r64 /
alpha 16 / dropout 0.1 with PEFT's default targets for Llama (q_proj, v_proj), `packing=False`,
a plain-text dataset (so the loss covers every token), `use_cache=False`. Everything seed 003 does
not set is TRL's own `SFTConfig` default: dynamic padding to the longest row of each batch (pad
positions masked out of the loss), gradient checkpointing on, bf16 on GPUs, learning rate 2e-5.
Changed to run here and to compare fairly: per-device batch 4 (as the seed-000 baseline; TRL's
default is 8), one epoch, no saving, compute dtype fp32 on CPU (fp16 matmuls do not run there; the
seed's float16 becomes bf16 on GPUs, matching TRL's bf16 default), AdamW from torch on CPU
(`paged_adamw_32bit` needs CUDA). The rows arrive already tokenized, which TRL accepts as is, so
both baselines and our trainer see the same tokens.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

BATCH = 4


def quantized_model(source: str, device: str) -> Any:
    """The base model in 4-bit NF4 as seed 003 loads it (compute dtype per device)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    cuda = device.startswith("cuda")
    compute = torch.bfloat16 if cuda else torch.float32
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_use_double_quant=False,
    )
    model = AutoModelForCausalLM.from_pretrained(
        source, quantization_config=quant, device_map={"": device}, dtype=compute
    )
    model.config.use_cache = False
    return model


def train(
    model: Any,
    tokenizer: Any,
    token_lists: list[list[int]],
    workdir: Path,
    *,
    seq: int = 512,
    batch: int = BATCH,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """SFTTrainer on pre-tokenized rows; throughput counts real (non-pad) tokens."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from bench.baseline_seed000 import StepTimes

    cuda = torch.cuda.is_available()
    dataset = Dataset.from_dict({"input_ids": [ids[:seq] for ids in token_lists]})
    steps_per_epoch = math.ceil(len(dataset) / batch)
    config = SFTConfig(
        output_dir=str(workdir / "trl"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_train_epochs=1 if max_steps is None else math.ceil(max_steps / steps_per_epoch),
        max_steps=max_steps if max_steps is not None else -1,
        max_length=seq,
        packing=False,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=False,
        use_cpu=not cuda,
        optim="paged_adamw_32bit" if cuda else "adamw_torch",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = LoraConfig(
        lora_alpha=16, lora_dropout=0.1, r=64, bias="none", task_type="CAUSAL_LM"
    )
    times = StepTimes()
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        peft_config=peft_config,
        processing_class=tokenizer,
        callbacks=[times],
    )
    positions = 0
    collate = trainer.data_collator

    def counting_collator(features: list[dict[str, Any]]) -> dict[str, Any]:
        nonlocal positions
        out = collate(features)
        positions += int(out["input_ids"].numel())
        return out  # type: ignore[no-any-return]

    trainer.data_collator = counting_collator
    started = time.monotonic()
    trainer.train()
    steps = len(times.ends)
    real = sum(len(dataset[i % len(dataset)]["input_ids"]) for i in range(steps * batch))
    return {
        "tokens": real,
        "positions": positions,
        "paddingFraction": round(1 - real / max(1, positions), 3),
        "seconds": round(times.ends[-1] - (times.begin or started), 2),
        "steps": steps,
        "loss": times.losses[-1] if times.losses else math.nan,
        "firstLoss": times.losses[0] if times.losses else math.nan,
        "lossCovers": "all real tokens",
        "gradientCheckpointing": bool(config.gradient_checkpointing),
    }


def model_source(plan: Any) -> str:
    """A directory with the plan's base weights (the tiny models are saved once)."""
    from llamaft_trainer import models

    if plan.model.name == models.TINY:
        return models._tiny_checkpoint(plan)
    return models.model_source(plan)


def main() -> None:
    from bench import data, plans
    from bench.baseline_seed000 import seed000_tokens
    from bench.common import PeakRss, emit
    from llamaft_trainer import models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", choices=sorted(plans.MODELS))
    parser.add_argument("--rows", type=int, default=16)
    args = parser.parse_args()
    plan = plans.plan_for(args.model, None)
    tokenizer = models.load_tokenizer(plan)
    tokens = seed000_tokens(data.rows(args.rows), tokenizer)
    model = quantized_model(model_source(plan), "cpu")
    with tempfile.TemporaryDirectory() as tmp, PeakRss() as rss:
        result = train(model, tokenizer, tokens, Path(tmp))
    result["peakRssMiB"] = round(rss.peak_mib)
    result["tokensPerSecond"] = round(result["tokens"] / result["seconds"], 1)
    emit(result)


if __name__ == "__main__":
    main()
