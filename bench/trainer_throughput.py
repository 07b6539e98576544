"""Trainer throughput and memory: the seed-000 and TRL baselines vs our trainer, in one run.

    .venv/bin/python -m bench.trainer_throughput --models smollm2 --rows 64
    .venv/bin/python -m bench.trainer_throughput --models small-llama,tiny-llama --rows 128
    .venv/bin/python -m bench.trainer_throughput --models smollm2 --rows 8 --profile /tmp/prof

One invocation trains every configuration on the same model, the same rows (bench/data.py) and
the same tokens: each baseline receives exactly the token ids our data pipeline produced for
those rows (chat template, truncation at maxSeqLength), so all see the same number of real
tokens. Each configuration runs in its own child process (its peak memory is its own), one after
the other, `--repeats` times interleaved; ratios use the medians of this one run.

- seed000: bench/baseline_seed000.py (HF Trainer, pad to 512, loss on everything, LoRA q/v r16).
- trl: bench/baseline_trl.py (TRL SFTTrainer QLoRA as in seed 003).
- ours: bench/ours.py (FineTuneRecipe with the planner's defaults for the same LlamaFineTune).
- ours+LEVER[+LEVER]: ours with a bench-only change to its loss (bench/ours.py `recipe_class`),
  to measure a recommendation before the recipe adopts it, e.g. `ours+keep`.

Reported per configuration: real (non-pad) tokens, positions computed, tokens/s over real tokens,
training wall time, peak memory (CPU: peak RSS sampled during training and the process's lifetime
max; GPU: torch.cuda.max_memory_allocated), first and final loss (each on what its recipe trains:
not comparable across recipes), and ours/baseline ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common

CONFIGS = ("seed000", "trl", "ours")


# --- child: one configuration -----------------------------------------------------------------


def _token_lists(plan: Any, tokenizer: Any) -> list[list[int]]:
    from llamaft_trainer import data

    return [list(e.input_ids) for e in data.build_splits(plan, tokenizer).train]


def child(kind: str, plan_path: Path, workdir: Path, profile: Path | None) -> dict[str, Any]:
    import torch

    from llamaft_trainer import models
    from llamaft_trainer.config import RunPlan

    plan = RunPlan.load(plan_path)
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    # The libraries every configuration uses are loaded before the memory baseline.
    import peft  # noqa: F401
    import transformers  # noqa: F401

    if kind == "trl":
        import trl  # noqa: F401
    before_model = common.rss_mib()
    if kind.startswith("ours"):
        from bench import ours

        loss_levers, plan_levers, unknown = ours.split_levers(kind)
        if unknown:
            raise SystemExit(f"unknown levers {unknown}")
        plan = ours.apply_plan_levers(plan, plan_levers)
        recipe = ours.recipe_class(loss_levers)(plan, workdir)
        recipe.setup()
        before_train = common.rss_mib()
        with common.PeakRss() as rss:
            result = ours.run_setup(recipe, profile=profile)
        recipe.cleanup()
    else:
        tokenizer = models.load_tokenizer(plan)
        tokens = _token_lists(plan, tokenizer)
        seq = plan.training.max_seq_length
        if kind == "seed000":
            from bench import baseline_seed000

            model = models.load_base_model(plan, device=device, for_training=True)
            before_train = common.rss_mib()
            with common.PeakRss() as rss:
                result = baseline_seed000.train(
                    model, tokens, tokenizer.pad_token_id, workdir, seq=seq
                )
        elif kind == "trl":
            from bench import baseline_trl

            model = baseline_trl.quantized_model(baseline_trl.model_source(plan), device)
            before_train = common.rss_mib()
            with common.PeakRss() as rss:
                result = baseline_trl.train(model, tokenizer, tokens, workdir, seq=seq)
        else:
            raise SystemExit(f"unknown configuration {kind}")
    result.update(
        rssBeforeModelMiB=round(before_model),
        rssBeforeTrainMiB=round(before_train),
        peakRssMiB=round(rss.peak_mib),
        maxRssMiB=round(common.max_rss_mib()),
        device=device,
    )
    peak = common.cuda_peak_mib()
    if peak is not None:
        result["cudaPeakMiB"] = round(peak)
    return result


# --- parent: every configuration, one run -------------------------------------------------------


def prepare(model: str, rows: int, seq: int, work: Path) -> tuple[Path, dict[str, Any]]:
    """Data file and plan for `model`; returns the plan path and the data's token statistics."""
    from bench import data, plans
    from llamaft_trainer import data as ft_data
    from llamaft_trainer import models

    probe = plans.plan_for(model, None, seq=seq)
    tokenizer = models.load_tokenizer(probe)
    data_file = work / f"{model}.jsonl"
    data.write_jsonl(
        data_file,
        data.rows(rows, tokens_per_word=data.tokens_per_word(tokenizer), max_response=seq // 2),
    )
    plan = plans.plan_for(model, data_file, seq=seq)
    examples = ft_data.build_splits(plan, tokenizer).train
    untruncated = plans.plan_for(model, data_file, seq=4096)
    full = ft_data.build_splits(untruncated, tokenizer).train
    stats = {
        "asTrained": data.describe([len(e.input_ids) for e in examples]),
        "beforeTruncation": data.describe([len(e.input_ids) for e in full]),
        "responseShare": round(
            sum(sum(1 for x in e.labels if x != -100) for e in examples)
            / max(1, sum(len(e.input_ids) for e in examples)),
            2,
        ),
    }
    return plans.write_plan(plan, work / f"{model}-plan.json"), stats


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by tokens/s, with the spread of all repeats."""
    for r in runs:
        r["tokensPerSecond"] = round(r["tokens"] / r["seconds"], 1)
    ordered = sorted(runs, key=lambda r: r["tokensPerSecond"])
    median = dict(ordered[len(ordered) // 2])
    median["tokensPerSecondAll"] = [r["tokensPerSecond"] for r in runs]
    median["tokensPerSecond"] = round(statistics.median(r["tokensPerSecond"] for r in runs), 1)
    return median


def memory_of(result: dict[str, Any]) -> float:
    return float(result.get("cudaPeakMiB") or result["peakRssMiB"])


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Every `ours*` configuration against each baseline, from this run's medians."""
    out: dict[str, dict[str, float]] = {}
    for name, mine in results.items():
        if not name.startswith("ours"):
            continue
        for base in ("seed000", "trl"):
            b = results.get(base)
            if b is None:
                continue
            out[f"{name}/{base}"] = {
                "tokensPerSecond": round(mine["tokensPerSecond"] / b["tokensPerSecond"], 2),
                "peakMemory": round(memory_of(mine) / memory_of(b), 2),
            }
    return out


def table(model: str, results: dict[str, dict[str, Any]]) -> str:
    header = ["configuration", "real tokens", "positions", "padding", "wall s", "real tok/s"]
    header += ["peak MiB", "first→final loss (on what)"]
    rows = []
    for kind, r in results.items():
        rows.append(
            [
                kind,
                f"{r['tokens']:,}",
                f"{r['positions']:,}",
                f"{100 * r['paddingFraction']:.0f}%",
                f"{r['seconds']:.1f}",
                f"{r['tokensPerSecond']:.1f} {r['tokensPerSecondAll']}",
                f"{memory_of(r):,.0f}",
                f"{r['firstLoss']:.2f}→{r['loss']:.2f} ({r['lossCovers']})",
            ]
        )
    return f"**{model}**\n\n" + common.markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="smollm2", help="comma-separated: smollm2,small-llama,tiny-llama"
    )
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="directory for pyinstrument profiles of ours")
    parser.add_argument("--json", type=Path, help="also write the full results here")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "PLAN", "WORKDIR"))
    parser.add_argument("--child-profile", type=Path)
    args = parser.parse_args()
    if args.child:
        kind, plan, workdir = args.child
        common.emit(child(kind, Path(plan), Path(workdir), args.child_profile))
        return
    report: dict[str, Any] = {
        "machine": common.machine(),
        "versions": common.versions(),
        "command": " ".join(
            [Path(sys.executable).name, "-m", "bench.trainer_throughput", *sys.argv[1:]]
        ),
        "models": {},
    }
    configs = args.configs.split(",")
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            plan, stats = prepare(model, args.rows, args.seq, work)
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in configs}
            for repeat in range(args.repeats):
                for kind in configs:
                    extra = []
                    if args.profile and kind.startswith("ours"):
                        args.profile.mkdir(parents=True, exist_ok=True)
                        extra = [
                            "--child-profile",
                            str(args.profile / f"{model}-ours-{repeat}.txt"),
                        ]
                    workdir = work / f"{kind}-{repeat}"
                    child_args = ["--child", kind, str(plan), str(workdir), *extra]
                    result = common.run_child("bench.trainer_throughput", child_args)
                    runs[kind].append(result)
                    print(
                        f"{model} {kind} #{repeat}: {json.dumps(result)}",
                        file=sys.stderr,
                        flush=True,
                    )
            results = {k: summarise(v) for k, v in runs.items()}
            report["models"][model] = {
                "data": stats,
                "results": results,
                "ratios": ratios(results),
            }
            print(table(model, results))
            print(json.dumps({"data": stats, "ratios": ratios(results)}, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
