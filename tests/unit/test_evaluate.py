"""`evaluate.run_evaluation` on a tiny random Llama with a PEFT adapter built in the test."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from llamaft_trainer.config import RunPlan
from llamaft_trainer.errors import GateFailedError
from tests.hub.workdirs import make_run_plan

pytestmark = pytest.mark.unit

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

GOLDEN = [
    {"prompt": "Convert to the ticket format: Hi, this is Maria", "reference": "NAME=Maria"},
    {"prompt": "What is the capital of France?", "reference": "Paris"},
    {"prompt": "Summarize the following text", "reference": "The quick brown fox"},
    {"prompt": "Translate to French", "reference": "Paris"},
    {"prompt": "Answer briefly", "reference": "yes"},
]


def tiny_tokenizer() -> Any:
    from tests.unit.tokenizers_for_tests import plain_tokenizer

    return plain_tokenizer()


def tiny_config(vocab: int) -> Any:
    return transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )


@pytest.fixture(scope="module")
def base_state() -> dict[str, Any]:
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny_config(len(tiny_tokenizer())))
    return {k: v.clone() for k, v in model.state_dict().items()}


def load_base(base_state: dict[str, Any]) -> Any:
    model = transformers.LlamaForCausalLM(tiny_config(len(tiny_tokenizer())))
    model.load_state_dict(base_state)
    return model.eval()


def write_adapter(workdir: Path, base_state: dict[str, Any]) -> None:
    torch.manual_seed(1)
    config = peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    tuned = peft.get_peft_model(load_base(base_state), config)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "lora_" in name:
                param.mul_(20)  # a strong adapter, so tuned and base generations differ
    tuned.save_pretrained(str(workdir / "adapter"))


def make_loaders(base_state: dict[str, Any], calls: list[str]) -> Any:
    from llamaft_trainer.data.types import IGNORE_INDEX, Example
    from llamaft_trainer.evaluate import Loaders

    def load_model(plan: RunPlan, *, for_training: bool, device: str) -> Any:
        calls.append(f"load_model(for_training={for_training}, device={device})")
        return load_base(base_state)

    def validation(plan: RunPlan, tokenizer: Any) -> list[Example]:
        out = []
        for g in GOLDEN:
            prompt = tokenizer(g["prompt"], add_special_tokens=False)["input_ids"]
            answer = tokenizer(" " + g["reference"], add_special_tokens=False)["input_ids"]
            out.append(Example(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer))
        return out

    return Loaders(
        load_tokenizer=lambda plan: tiny_tokenizer(),
        load_model=load_model,
        load_golden=lambda plan, tokenizer: [dict(g) for g in GOLDEN],
        validation_examples=validation,
    )


def plan_with(gates: list[dict[str, Any]] | None = None) -> RunPlan:
    return make_run_plan(
        extra_spec={"evaluation": {"gates": gates or [], "maxNewTokens": 6, "samples": 3}}
    )


def test_evaluate_reports_base_and_tuned_with_one_model_load(
    tmp_path: Path, base_state: dict[str, Any]
) -> None:
    from llamaft_trainer import metrics
    from llamaft_trainer.evaluate import generate, prepare_tokenizer, run_evaluation

    write_adapter(tmp_path, base_state)
    calls: list[str] = []
    plan = plan_with([{"metric": "golden.rougeL", "min": 0.0}])
    report = run_evaluation(plan, tmp_path, loaders=make_loaders(base_state, calls))

    assert calls == ["load_model(for_training=False, device=cpu)"]  # one load, base + adapter
    on_disk = json.loads((tmp_path / "reports" / "eval.json").read_text())
    assert on_disk == report
    keys = set(report["metrics"])
    assert {
        "golden.exactMatch",
        "golden.tokenF1",
        "golden.rougeL",
        "golden.winRateVsBase",
        "golden.base.exactMatch",
        "golden.base.tokenF1",
        "golden.base.rougeL",
        "validation.loss",
        "validation.perplexity",
    } == keys
    loss = report["metrics"]["validation.loss"]
    assert report["metrics"]["validation.perplexity"] == pytest.approx(math.exp(loss))
    assert report["golden"] == {"examples": 5, "maxNewTokens": 6}
    assert len(report["samples"]) == 3
    assert report["gates"] == [
        {
            "metric": "golden.rougeL",
            "value": report["metrics"]["golden.rougeL"],
            "min": 0.0,
            "passed": True,
        }
    ]

    # Base generations under disable_adapter() are exactly the plain base model's.
    tokenizer = prepare_tokenizer(tiny_tokenizer())
    prompts = [g["prompt"] for g in GOLDEN]
    plain = generate(
        load_base(base_state),
        tokenizer,
        prompts,
        batch_size=4,
        max_new_tokens=6,
        max_prompt_tokens=512,
    )
    assert [s["base"] for s in report["samples"]] == plain[:3]
    assert any(s["base"] != s["tuned"] for s in report["samples"])
    # Batched left-padded generation equals one-by-one generation.
    single = [
        generate(
            load_base(base_state),
            tokenizer,
            [p],
            batch_size=1,
            max_new_tokens=6,
            max_prompt_tokens=512,
        )[0]
        for p in prompts[:2]
    ]
    assert single == plain[:2]
    # Scores in the report are the metrics of the generations in it.
    for sample in report["samples"]:
        assert sample["scores"]["tuned"]["rougeL"] == metrics.rouge_l(
            sample["tuned"], sample["reference"]
        )
    markdown = (tmp_path / "reports" / "eval.md").read_text()
    assert "| ROUGE-L |" in markdown and "## Gates" in markdown


def test_failed_gate_keeps_adapter_and_report(tmp_path: Path, base_state: dict[str, Any]) -> None:
    from llamaft_trainer import gates
    from llamaft_trainer.evaluate import run_evaluation

    write_adapter(tmp_path, base_state)
    plan = plan_with([{"metric": "golden.exactMatch", "min": 1.01}])
    report = run_evaluation(plan, tmp_path, loaders=make_loaders(base_state, []))
    assert report["gates"][0]["passed"] is False
    with pytest.raises(GateFailedError, match=r"golden\.exactMatch = 0\.\d{4} \(needs >= 1\.01\)"):
        gates.check(plan.evaluation.gates, report["metrics"])
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert "FAILED" in (tmp_path / "reports" / "eval.md").read_text()


def test_eval_placement_one_gpu_or_the_node() -> None:
    from llamaft_trainer.evaluate import eval_gpus, fits_one_gpu

    assert fits_one_gpu(make_run_plan())  # 8B QLoRA on an H100
    big = make_run_plan(
        model="meta-llama/Llama-3.1-70B-Instruct",
        extra_spec={"method": "lora", "resources": {"gpuType": "H100-80GB"}},
    )
    assert not fits_one_gpu(big)  # bf16 70B needs ~140 GB
    assert eval_gpus(big) == big.resources.gpus_per_node
