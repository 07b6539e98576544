"""The seed-000 recipe made runnable: the baseline we claim to beat.

    .venv/bin/python -m bench.baseline_seed000 --model smollm2 --rows 16

What seed 000 does, kept: HF `Trainer`; every example tokenized with `padding="max_length"`,
`truncation=True, max_length=512`; `labels` = the input ids, padding included (the seed passes
no collator that masks padding, so the loss covers pad tokens too); LoRA r16 / alpha 32 /
dropout 0.1 on q_proj and v_proj; per-device batch 4; learning rate 2e-5, weight decay 0.01.
What changed to make it run here: one epoch and no evaluation (we time training), gradient
accumulation 1 (the seed's 8 changes how often the optimizer steps, not the work per token),
`fp16=True` only on a GPU (bf16 where the GPU has it: fp16 autocast does not run on CPU), no
checkpoint saving, and the model comes from our loader so both recipes train the same weights.

`train` takes token lists so a benchmark can hand the baseline exactly the tokens our trainer
sees (same real-token count); `seed000_tokens` tokenizes rows the way the seed does
(`<s>{prompt}</s>{response}</s>`) for standalone runs.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

SEQ = 512
BATCH = 4


def seed000_tokens(rows: list[dict[str, str]], tokenizer: Any, seq: int = SEQ) -> list[list[int]]:
    """Rows tokenized as seed 000 does (before padding): `<s>{prompt}</s>{response}</s>`."""
    texts = [f"<s>{r['prompt']}</s>{r['response']}</s>" for r in rows]
    enc = tokenizer(texts, truncation=True, max_length=seq)
    return [list(ids) for ids in enc["input_ids"]]


def padded_dataset(
    token_lists: list[list[int]], pad_id: int, seq: int = SEQ
) -> list[dict[str, Any]]:
    """`padding="max_length"` and labels = input ids, padding included (the seed's bug kept)."""
    import torch

    out = []
    for ids in token_lists:
        ids = ids[:seq]
        padded = ids + [pad_id] * (seq - len(ids))
        mask = [1] * len(ids) + [0] * (seq - len(ids))
        out.append(
            {
                "input_ids": torch.tensor(padded),
                "attention_mask": torch.tensor(mask),
                "labels": torch.tensor(padded),
            }
        )
    return out


def add_lora(model: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=["q_proj", "v_proj"],
        lora_dropout=0.1,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


class StepTimes:
    """A TrainerCallback recording when training began and each optimizer step ended."""

    def __new__(cls) -> Any:
        from transformers import TrainerCallback

        class _Times(TrainerCallback):  # type: ignore[misc]
            def __init__(self) -> None:
                self.begin = 0.0
                self.ends: list[float] = []
                self.losses: list[float] = []

            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                self.begin = time.monotonic()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                self.ends.append(time.monotonic())

            def on_log(
                self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any
            ) -> None:
                if logs and "loss" in logs:
                    self.losses.append(float(logs["loss"]))

        return _Times()


def train(
    model: Any,
    token_lists: list[list[int]],
    pad_id: int,
    workdir: Path,
    *,
    seq: int = SEQ,
    batch: int = BATCH,
    max_steps: int | None = None,
    gradient_checkpointing: bool = False,
) -> dict[str, Any]:
    """Train `model` (LoRA added here) on the padded rows; throughput counts real tokens only."""
    import torch
    from transformers import Trainer, TrainingArguments

    cuda = torch.cuda.is_available()
    model = add_lora(model)
    dataset = padded_dataset(token_lists, pad_id, seq)
    bf16 = cuda and torch.cuda.is_bf16_supported()
    steps_per_epoch = math.ceil(len(dataset) / batch)
    args = TrainingArguments(
        output_dir=str(workdir / "seed000"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_train_epochs=1 if max_steps is None else math.ceil(max_steps / steps_per_epoch),
        max_steps=max_steps if max_steps is not None else -1,
        learning_rate=2e-5,
        weight_decay=0.01,
        fp16=cuda and not bf16,
        bf16=bf16,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        use_cpu=not cuda,
        dataloader_num_workers=0,
        gradient_checkpointing=gradient_checkpointing,
        disable_tqdm=True,
    )
    times = StepTimes()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[times])
    trainer.train()
    steps = len(times.ends)
    used = steps * batch
    rows = [dataset[i % len(dataset)] for i in range(used)]
    real = int(sum(int(r["attention_mask"].sum()) for r in rows))
    seconds = times.ends[-1] - times.begin
    return {
        "tokens": real,
        "positions": used * seq,
        "paddingFraction": round(1 - real / max(1, used * seq), 3),
        "seconds": round(seconds, 2),
        "steps": steps,
        "loss": times.losses[-1] if times.losses else math.nan,
        "firstLoss": times.losses[0] if times.losses else math.nan,
        "lossCovers": "all positions incl. padding",
    }


def main() -> None:
    from bench import data, plans
    from bench.common import PeakRss, emit
    from llamaft_trainer import models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", choices=sorted(plans.MODELS))
    parser.add_argument("--rows", type=int, default=16)
    args = parser.parse_args()
    plan = plans.plan_for(args.model, None)
    tokenizer = models.load_tokenizer(plan)
    tokens = seed000_tokens(data.rows(args.rows), tokenizer)
    model = models.load_base_model(plan, device="cpu", for_training=True)
    with tempfile.TemporaryDirectory() as tmp, PeakRss() as rss:
        result = train(model, tokens, tokenizer.pad_token_id, Path(tmp))
    result["peakRssMiB"] = round(rss.peak_mib)
    result["tokensPerSecond"] = round(result["tokens"] / result["seconds"], 1)
    emit(result)


if __name__ == "__main__":
    main()
