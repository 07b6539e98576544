"""Trainer throughput and memory: the seed-000 recipe vs llamaft's trainer, same model, same data,
same run (each configuration in its own subprocess so peak RSS is its own).

    .venv/bin/python bench/trainer_throughput.py --model builtin:smollm2-135m-instruct --rows 48
    .venv/bin/python bench/trainer_throughput.py --model builtin:tiny-llama --rows 200

Baseline (seed 000 made runnable): HF `Trainer`, every example padded/truncated to 512 tokens,
labels = input ids (loss on all tokens, padding included), LoRA r16/alpha32 on q_proj,v_proj,
batch 4. Ours: `FineTuneRecipe` with its defaults (LoRA on all linear layers, padding-free
token-budget packing of 4 x 512 tokens, loss on responses). Both see the same rows truncated at
512 tokens, one epoch. Reported: real (non-pad) tokens/s, wall time of the training loop, peak
RSS, final loss, and ours/baseline ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SEQ = 512


def make_plan(model: str, data: Path, workdir: Path) -> Path:
    from llamaft_operator.api import DataSource
    from llamaft_operator.planner import make_plan as plan_for
    from llamaft_trainer.config import DeepSpeedPlan
    from tests.unit.plan_helpers import make_finetune

    ft = make_finetune(
        model=model,
        method="lora",
        seq=SEQ,
        training={
            "epochs": 1,
            "perDeviceBatchSize": 4,
            "gradientAccumulationSteps": 1,
            "saveSteps": 100000,
            "evalSteps": 100000,
        },
    )
    plan = plan_for(ft)
    source = DataSource.model_validate({"local": {"path": str(data)}})
    plan = plan.model_copy(
        update={
            "dataset": plan.dataset.model_copy(
                update={"source": source, "validation_split": 0.0, "format": "prompt-response"}
            ),
            "deepspeed": DeepSpeedPlan(zero_stage=0),
        }
    )
    path = workdir / "plan.json"
    path.write_text(plan.to_json())
    return path


def run_ours(plan_path: Path, workdir: Path) -> dict[str, Any]:
    from llamaft_trainer.config import RunPlan
    from llamaft_trainer.recipe import FineTuneRecipe

    recipe = FineTuneRecipe(RunPlan.load(plan_path), workdir)
    recipe.setup()
    report = recipe.train()
    recipe.cleanup()
    return {
        "tokens": report["tokens"],
        "seconds": report["durationSeconds"],
        "loss": report["loss"],
        "steps": report["step"],
    }


def run_baseline(plan_path: Path, workdir: Path) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from llamaft_trainer import data, models
    from llamaft_trainer.config import RunPlan

    plan = RunPlan.load(plan_path)
    tokenizer = models.load_tokenizer(plan)
    rows = [r for _, r in data.read_source(plan.dataset.source).rows]
    texts = [
        f"{tokenizer.bos_token or ''}{r['prompt']}{tokenizer.eos_token}{r['response']}"
        f"{tokenizer.eos_token}"
        for r in rows
    ]
    enc = tokenizer(texts, truncation=True, max_length=SEQ, padding="max_length")
    dataset = [
        {"input_ids": torch.tensor(i), "attention_mask": torch.tensor(m), "labels": torch.tensor(i)}
        for i, m in zip(enc["input_ids"], enc["attention_mask"], strict=True)
    ]
    model = models.load_base_model(plan, device="cpu", for_training=True)
    model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.1,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    args = TrainingArguments(
        output_dir=str(workdir / "hf"),
        per_device_train_batch_size=4,
        num_train_epochs=1,
        learning_rate=2e-4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    started = time.monotonic()
    result = trainer.train()
    seconds = time.monotonic() - started
    real = int(sum(int(m.sum()) for m in (d["attention_mask"] for d in dataset)))
    return {
        "tokens": real,
        "seconds": round(seconds, 1),
        "loss": result.training_loss,
        "steps": result.global_step,
        "paddingFraction": 1 - real / (len(dataset) * SEQ),
    }


def child(kind: str, plan: str, workdir: str) -> None:
    fn = run_ours if kind == "ours" else run_baseline
    out = fn(Path(plan), Path(workdir))
    out["peakRssMiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(out), flush=True)


def measure(kind: str, plan: Path, workdir: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(plan), str(workdir)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{kind} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["tokensPerSecond"] = round(result["tokens"] / result["seconds"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from bench.data import rows, write_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_file = work / "train.jsonl"
        write_jsonl(data_file, rows(args.rows))
        plan = make_plan(args.model, data_file, work)
        baseline = measure("baseline", plan, work / "baseline")
        ours = measure("ours", plan, work / "ours")
    ratio = {
        "tokensPerSecond": round(ours["tokensPerSecond"] / baseline["tokensPerSecond"], 2),
        "peakRss": round(ours["peakRssMiB"] / baseline["peakRssMiB"], 2),
        "wall": round(ours["seconds"] / baseline["seconds"], 2),
    }
    report = {
        "model": args.model,
        "rows": args.rows,
        "machine": platform.processor() or platform.machine(),
        "baseline": baseline,
        "ours": ours,
        "ratio": ratio,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
