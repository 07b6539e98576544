"""The seeded validation split, and what the train/evaluate steps call: splits and golden set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamaft_trainer.config import RunPlan
from llamaft_trainer.data import IGNORE_INDEX, build_splits, load_golden, split_indices
from llamaft_trainer.errors import BadInputError
from tests.unit.tokenizers_for_tests import chat_tokenizer, plain_tokenizer

pytestmark = pytest.mark.unit

QUICKSTART = Path(__file__).resolve().parents[2] / "examples/data/quickstart"


def make_plan(dataset: dict[str, Any], **training: Any) -> RunPlan:
    """A minimal valid RunPlan around a dataset spec (camelCase, as the operator writes it)."""
    arch = {"layers": 2, "hidden": 64, "intermediate": 128, "heads": 4, "kvHeads": 2, "vocab": 400}
    return RunPlan.model_validate(
        {
            "name": "t",
            "runId": "t-1",
            "model": {
                "name": "builtin:tiny-llama",
                "parameters": 1,
                "architecture": arch,
                "known": True,
            },
            "method": "lora",
            "training": {
                "epochs": 1,
                "learningRate": 2e-4,
                "maxSeqLength": 128,
                "perDeviceBatchSize": 2,
                "gradientAccumulationSteps": 1,
                "globalBatchSize": 2,
                "gradientCheckpointing": False,
                **training,
            },
            "dataset": dataset,
            "resources": {
                "gpuType": "cpu",
                "gpuMemoryGib": 0,
                "nodes": 1,
                "gpusPerNode": 1,
                "cpuPerNode": 2,
                "memoryGibPerNode": 4,
                "shmGib": 1,
            },
            "deepspeed": {"zeroStage": 0},
            "estimate": {
                "peakMemoryGiBPerGpu": 1,
                "memoryBreakdownGiB": {},
                "trainableParameters": 1,
                "tokensPerSecond": 1,
            },
        }
    )


def local(path: Path) -> dict[str, Any]:
    return {"local": {"path": str(path)}}


# --- split --------------------------------------------------------------------------------------


def test_split_is_deterministic_by_seed_and_near_the_fraction() -> None:
    keys = [f"row {i}" for i in range(2000)]
    train, val = split_indices(keys, 0.1, seed=42)
    assert (train, val) == split_indices(keys, 0.1, seed=42)
    assert sorted(train + val) == list(range(2000)) and not set(train) & set(val)
    assert 150 < len(val) < 250
    assert val != split_indices(keys, 0.1, seed=43)[1]


def test_split_is_stable_when_rows_are_appended() -> None:
    keys = [f"row {i}" for i in range(500)]
    _, val = split_indices(keys, 0.2, seed=7)
    _, val_more = split_indices([*keys, *(f"new {i}" for i in range(300))], 0.2, seed=7)
    assert [i for i in val_more if i < 500] == val


def test_split_holds_out_at_least_one_row_and_keeps_one_for_training() -> None:
    assert split_indices(["a", "b", "c"], 0.01, seed=0)[1] != []
    assert split_indices(["a", "b"], 0.5, seed=0)[0] != []
    assert split_indices(["a", "b"], 0.0, seed=0) == ([0, 1], [])
    assert split_indices(["a"], 0.5, seed=0) == ([0], [])


# --- build_splits ---------------------------------------------------------------------------------


def test_build_splits_on_the_quickstart_dataset() -> None:
    plan = make_plan({"source": local(QUICKSTART / "train.jsonl"), "validationSplit": 0.1})
    splits = build_splits(plan, chat_tokenizer())
    assert len(splits.train) + len(splits.validation) == 480
    assert 25 < len(splits.validation) < 75
    assert splits.stats["trainExamples"] == len(splits.train) and splits.stats["badRows"] == 0
    for example in splits.train[:20]:
        assert len(example) <= 128 and example.labels[0] == IGNORE_INDEX
        assert any(label != IGNORE_INDEX for label in example.labels)
    again = build_splits(plan, chat_tokenizer())
    assert again.validation == splits.validation


def test_build_splits_skips_bad_rows_only_within_the_allowed_fraction(tmp_path: Path) -> None:
    lines = [json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) for i in range(40)]
    lines[5] = "{not json"
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInputError, match="line 6"):
        build_splits(make_plan({"source": local(path)}), plain_tokenizer())
    splits = build_splits(
        make_plan({"source": local(path), "maxBadRowsFraction": 0.05}), plain_tokenizer()
    )
    assert len(splits.train) + len(splits.validation) == 39


# --- golden ---------------------------------------------------------------------------------------


def test_load_golden_renders_prompts_like_training() -> None:
    plan = make_plan(
        {
            "source": local(QUICKSTART / "train.jsonl"),
            "goldenSet": local(QUICKSTART / "golden.jsonl"),
        }
    )
    tok = chat_tokenizer()
    golden = load_golden(plan, tok)
    assert len(golden) == 30
    first = json.loads((QUICKSTART / "golden.jsonl").read_text().splitlines()[0])
    assert golden[0]["reference"] == first["response"]
    assert golden[0]["raw_prompt"] == first["prompt"]
    assert golden[0]["prompt"] == (
        f"<|im_start|>user\n{first['prompt']}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert load_golden(plan)[0]["prompt"] == first["prompt"]  # without a tokenizer: raw text


def test_golden_set_is_disjoint_from_training() -> None:
    train = {json.loads(x)["prompt"] for x in (QUICKSTART / "train.jsonl").read_text().splitlines()}
    golden = [json.loads(x) for x in (QUICKSTART / "golden.jsonl").read_text().splitlines()]
    assert not train & {g["prompt"] for g in golden}
    assert all(len(plain_tokenizer().encode(g["response"])) <= 40 for g in golden)


def test_no_golden_set_is_empty_and_a_bad_one_is_bad_input(tmp_path: Path) -> None:
    assert load_golden(make_plan({"source": local(QUICKSTART / "train.jsonl")})) == []
    bad = tmp_path / "golden.jsonl"
    bad.write_text('{"prompt": "q", "response": "a"}\n{"prompt": "q2"}\n')
    plan = make_plan({"source": local(QUICKSTART / "train.jsonl"), "goldenSet": local(bad)})
    with pytest.raises(BadInputError, match=r"golden set .* line 2"):
        load_golden(plan)


def test_importing_the_data_layer_does_not_import_the_ml_stack() -> None:
    # `llamaft validate-data` runs in a small CPU pod: torch & co. load only when used.
    import subprocess
    import sys

    code = (
        "import sys, llamaft_trainer.data, llamaft_trainer.commands.data\n"
        "heavy = {'torch', 'transformers', 'datasets', 'pyarrow'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
