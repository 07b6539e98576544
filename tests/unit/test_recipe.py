"""The training recipe on a tiny Llama with real torch/peft/bitsandbytes on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamaft_trainer import checkpoint
from llamaft_trainer.recipe import FineTuneRecipe
from tests.unit.trainer_helpers import tiny_plan, write_plan

LLAMAFT = str(Path(sys.executable).parent / "llamaft")
pytestmark = pytest.mark.unit


def run_train(plan_path: Path, workdir: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLAMAFT_TERMINATION_LOG": str(workdir.parent / "termination-log")}
    return subprocess.run(
        [LLAMAFT, "train", "--plan", str(plan_path), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        **kw,  # type: ignore[call-overload]
    )


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_each_method_trains_with_falling_loss(method: str, tmp_path: Path) -> None:
    plan = tiny_plan(method, training={"maxSteps": 10})
    recipe = FineTuneRecipe(plan, tmp_path)
    recipe.setup()
    try:
        if method == "qlora":
            import bitsandbytes as bnb

            layers = [m for m in recipe.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
            assert layers, "QLoRA must quantise the linear layers to 4-bit"
        if method != "full":
            trainable = sum(p.numel() for p in recipe.model.parameters() if p.requires_grad)
            total = sum(p.numel() for p in recipe.model.parameters())
            assert 0 < trainable < total / 2
        report = recipe.train()
    finally:
        recipe.cleanup()
    losses = [h["loss"] for h in report["history"]]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    adapter = tmp_path / "adapter"
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (adapter / weights).stat().st_size > 0
    assert (adapter / "tokenizer.json").is_file()
    train_report = json.loads((tmp_path / "reports" / "train.json").read_text())
    assert train_report["step"] == 10 and train_report["tokens"] > 0


def test_saved_adapter_reloads_with_the_same_logits(tmp_path: Path) -> None:
    import torch
    from peft import PeftModel

    from llamaft_trainer import models

    plan = tiny_plan("lora", training={"maxSteps": 4})
    recipe = FineTuneRecipe(plan, tmp_path)
    recipe.setup()
    try:
        recipe.train()
        recipe.model.eval()
        ids = torch.tensor([[5, 17, 42, 99, 7]])
        with torch.no_grad():
            expected = recipe.model(input_ids=ids).logits
    finally:
        recipe.cleanup()
    base = models.load_model(plan, for_training=False, device="cpu")
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        got = reloaded(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)


def test_checkpoints_are_complete_and_pruned(tmp_path: Path) -> None:
    plan = tiny_plan("lora", training={"maxSteps": 9, "saveSteps": 2, "keepCheckpoints": 2})
    result = run_train(write_plan(plan, tmp_path), tmp_path / "w")
    assert result.returncode == 0, result.stderr
    assert checkpoint.complete_steps(tmp_path / "w") == [8, 9]
    assert json.loads((tmp_path / "termination-log").read_text())["step"] == 9


def test_half_written_checkpoint_is_ignored(tmp_path: Path) -> None:
    work = tmp_path / "w"
    plan_path = write_plan(tiny_plan("lora", training={"maxSteps": 6, "saveSteps": 3}), tmp_path)
    assert run_train(plan_path, work).returncode == 0
    # A later checkpoint without its completion marker, as a kill during the write leaves it.
    fake = checkpoint.checkpoints_dir(work) / "step-100"
    fake.mkdir()
    (fake / checkpoint.STATE).write_text('{"step": 100}')
    assert checkpoint.latest_complete(work) == checkpoint.checkpoints_dir(work) / "step-6"


def losses(report_path: Path) -> list[float]:
    return [h["loss"] for h in json.loads(report_path.read_text())["history"]]


def test_kill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    training = {"maxSteps": 12, "saveSteps": 3}
    reference = tmp_path / "reference"
    plan_path = write_plan(tiny_plan("lora", training=training), tmp_path)
    assert run_train(plan_path, reference).returncode == 0
    expected = losses(reference / "reports" / "train.json")

    work = tmp_path / "killed"
    env = {**os.environ, "LLAMAFT_TERMINATION_LOG": str(tmp_path / "tl")}
    proc = subprocess.Popen(
        [LLAMAFT, "train", "--plan", str(plan_path), "--workdir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 300
    while not checkpoint.complete_steps(work) or checkpoint.complete_steps(work)[-1] < 6:
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    killed_at = checkpoint.complete_steps(work)[-1]
    assert killed_at < 12
    resumed = run_train(plan_path, work)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from checkpoint step-{killed_at}" in resumed.stdout
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["resumedFrom"] == killed_at and result["step"] == 12
    after = losses(work / "reports" / "train.json")
    assert len(after) == 12 - killed_at
    assert after == pytest.approx(expected[killed_at:], rel=1e-4)


def test_sigterm_saves_a_checkpoint_and_exits_75(tmp_path: Path) -> None:
    plan_path = write_plan(
        tiny_plan("lora", training={"maxSteps": 400, "saveSteps": 1000}), tmp_path
    )
    work = tmp_path / "w"
    proc = subprocess.Popen(
        [LLAMAFT, "train", "--plan", str(plan_path), "--workdir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("[train] step=2 "):
            break
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 75, output
    steps = checkpoint.complete_steps(work)
    assert len(steps) == 1 and 2 <= steps[0] < 400


def test_pilot_passes_when_loss_falls_and_fails_when_it_cannot(tmp_path: Path) -> None:
    good = write_plan(
        tiny_plan("lora", pilot=True, training={"learningRate": 3e-3}), tmp_path / "good"
    )
    ok = subprocess.run(
        [LLAMAFT, "pilot", "--plan", str(good), "--workdir", str(tmp_path / "g")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout.strip().splitlines()[-1])
    assert result["pilotEndLoss"] < result["pilotStartLoss"]
    bad = write_plan(
        tiny_plan("lora", pilot=True, training={"learningRate": 1e-9}), tmp_path / "bad"
    )
    fail = subprocess.run(
        [LLAMAFT, "pilot", "--plan", str(bad), "--workdir", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fail.returncode == 2
    assert "pilot failed" in fail.stderr


def test_logits_only_at_trained_positions_give_the_full_loss_and_gradients(
    tmp_path: Path,
) -> None:
    # The recipe computes the vocabulary projection only where the next token is trained; the
    # loss and every LoRA gradient must equal those of the full logits.
    import torch
    import torch.nn.functional as functional

    from llamaft_trainer.recipe import IGNORE

    plan = tiny_plan("lora", training={"maxSteps": 1})
    recipe = FineTuneRecipe(plan, tmp_path)
    recipe.setup()
    try:
        model = recipe.model
        model.eval()  # no dropout: both passes see the same network
        batch = recipe._batch(recipe.schedule.steps[0][1][0])
        assert batch["input_ids"].size(0) == 1
        trained = int((batch["labels"][:, 1:] != IGNORE).sum())
        assert 0 < trained < batch["labels"].size(1) - 1  # some positions are prompt

        def grads() -> dict[str, torch.Tensor]:
            out = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
            model.zero_grad(set_to_none=True)
            return out

        kept = recipe._loss_sum(model, batch)
        kept.backward()
        kept_grads = grads()
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, use_cache=False).logits[:, :-1, :]
        full = functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            batch["labels"][:, 1:].reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        full.backward()
        full_grads = grads()
    finally:
        recipe.cleanup()
    assert torch.allclose(kept, full, rtol=1e-5)
    assert kept_grads.keys() == full_grads.keys() and kept_grads
    for name, grad in kept_grads.items():
        assert torch.allclose(grad, full_grads[name], rtol=1e-4, atol=1e-6), name
