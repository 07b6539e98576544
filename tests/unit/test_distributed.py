"""DeepSpeed ZeRO-2 and ZeRO-3 with two real processes (torchrun, gloo on CPU), the launch lines,
and the saved adapter: non-empty and reproducing the in-memory model's logits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamaft_trainer.distributed import deepspeed_config, torchrun_command
from tests.unit.trainer_helpers import tiny_plan, write_plan

BIN = Path(sys.executable).parent


def test_single_gpu_needs_no_launcher() -> None:
    assert torchrun_command(
        nodes=1, gpus_per_node=1, rendezvous=None, plan_path="p", workdir="w"
    ) == ["llamaft", "train", "--plan", "p", "--workdir", "w"]


def test_multi_node_rendezvous_on_pod_zero() -> None:
    cmd = torchrun_command(
        nodes=2,
        gpus_per_node=8,
        rendezvous="ft-train-0.ft-train:29500",
        plan_path="/etc/llamaft/plan.json",
        workdir="/workspace",
    )
    assert cmd[:2] == ["llamaft-torchrun", "--nnodes=2"]
    assert "--max_restarts=3" in cmd
    assert "--node_rank=$(JOB_COMPLETION_INDEX)" in cmd
    assert "--rdzv_endpoint=ft-train-0.ft-train:29500" in cmd
    assert cmd[-7:] == [
        "-m",
        "llamaft_trainer.cli",
        "train",
        "--plan",
        "/etc/llamaft/plan.json",
        "--workdir",
        "/workspace",
    ]


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_config_follows_the_plan(stage: int) -> None:
    plan = tiny_plan("lora", zero_stage=stage)
    config = deepspeed_config(plan, 4, bf16=False)
    assert config["zero_optimization"]["stage"] == stage
    micro = plan.training.gradient_accumulation_steps * plan.training.per_device_batch_size
    assert config["gradient_accumulation_steps"] == micro
    assert config["train_batch_size"] == micro * 4
    assert config["zero_allow_untested_optimizer"] is True


def run_torchrun(plan_path: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LLAMAFT_PROBE_LOGITS": "1",
        "OMP_NUM_THREADS": "1",
        "LLAMAFT_TERMINATION_LOG": str(workdir.parent / "tl"),
    }
    return subprocess.run(
        [
            str(BIN / "llamaft-torchrun"),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "llamaft_trainer.cli",
            "train",
            "--plan",
            str(plan_path),
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_two_processes_train_and_save_a_reloadable_adapter(stage: int, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from llamaft_trainer import models

    plan = tiny_plan("lora", zero_stage=stage, training={"maxSteps": 4, "saveSteps": 2})
    work = tmp_path / "w"
    result = run_torchrun(write_plan(plan, tmp_path), work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    adapter = load_file(work / "adapter" / "adapter_model.safetensors")
    assert adapter and all(t.numel() > 0 for t in adapter.values()), "empty adapter (ZeRO-3?)"
    assert any(float(t.abs().sum()) > 0 for k, t in adapter.items() if "lora_B" in k)
    assert (work / "checkpoints" / "step-4" / "COMPLETE").is_file()
    expected = torch.load(work / "reports" / "probe-logits.pt")
    base = models.load_model(plan, for_training=False, device="cpu")
    reloaded = PeftModel.from_pretrained(base, work / "adapter").eval()
    with torch.no_grad():
        got = reloaded(input_ids=torch.tensor([[5, 17, 42, 99, 7, 3, 11]])).logits
    assert torch.allclose(expected, got, atol=1e-4)


@pytest.mark.unit
def test_the_launcher_keeps_the_bad_input_exit_code(tmp_path: Path) -> None:
    # Plain torchrun exits 1 here, which the Job would retry; exit 2 fails it at once.
    from llamaft_operator.api import DataSource

    plan = tiny_plan("lora")
    missing = DataSource.model_validate({"local": {"path": str(tmp_path / "absent.jsonl")}})
    plan = plan.model_copy(update={"dataset": plan.dataset.model_copy(update={"source": missing})})
    result = run_torchrun(write_plan(plan, tmp_path), tmp_path / "w")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "absent.jsonl" in result.stderr
    assert "failed first (exit 2)" in result.stderr


@pytest.mark.unit
@pytest.mark.parametrize(("worker", "pod"), [(2, 2), (3, 3), (75, 75), (1, 1), (-9, 1), (137, 1)])
def test_exit_code_mapping(worker: int, pod: int) -> None:
    from llamaft_trainer.launch import exit_code

    assert exit_code(worker) == pod
