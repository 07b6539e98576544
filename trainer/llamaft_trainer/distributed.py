"""DeepSpeed configs from the plan, the torchrun environment, and launch command lines.

    # one GPU (plan.deepspeed.zeroStage 0): no launcher
    llamaft train --plan plan.json --workdir /workspace
    # one node, G GPUs (ZeRO-2 or ZeRO-3)
    torchrun --standalone --nproc_per_node=G -m llamaft_trainer.cli train --plan P --workdir W
    # N nodes (the operator's Indexed Job; rank from the completion index, rendezvous on pod 0)
    torchrun --nnodes=N --node_rank=$JOB_COMPLETION_INDEX --nproc_per_node=G \
        --rdzv_backend=c10d --rdzv_endpoint=<name>-train-0.<name>-train:29500 \
        -m llamaft_trainer.cli train --plan P --workdir W

On CPU (tests) the same code runs with the gloo backend; `accelerate launch --cpu
--num_processes 2` silently runs one process, so tests use torchrun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from llamaft_trainer.config import RunPlan


@dataclass(frozen=True)
class DistEnv:
    world_size: int
    rank: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    return DistEnv(
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def deepspeed_config(plan: RunPlan, world_size: int, *, bf16: bool) -> dict[str, Any]:
    """ZeRO-2 or ZeRO-3 for the plan; the optimizer is ours (torch AdamW), passed in."""
    t = plan.training
    micro_steps = t.gradient_accumulation_steps * t.per_device_batch_size
    stage = plan.deepspeed.zero_stage
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": 5e7,
    }
    if stage == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": 5e7,
                "stage3_param_persistence_threshold": 1e5,
                # The adapter is gathered explicitly when saved; never write 16-bit full copies.
                "stage3_gather_16bit_weights_on_model_save": False,
            }
        )
    if plan.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        # A micro-batch is one packed row of up to maxSeqLength tokens; a step is
        # perDeviceBatchSize x gradientAccumulationSteps of them.
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": micro_steps,
        "train_batch_size": micro_steps * world_size,
        "gradient_clipping": t.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        # Our AdamW is a torch optimizer, not DeepSpeed's fused one (no op compile on CPU).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }


# torchrun that keeps the trainer's exit codes (launch.py).
LAUNCHER = "llamaft-torchrun"


def torchrun_command(
    *,
    nodes: int,
    gpus_per_node: int,
    rendezvous: str | None,
    plan_path: str,
    workdir: str,
    step: str = "train",
    rendezvous_id: str | None = None,
    max_restarts: int = 3,
) -> list[str]:
    """The launch command of a GPU pod (pure; the operator builds the same line itself)."""
    tail = ["-m", "llamaft_trainer.cli", step, "--plan", plan_path, "--workdir", workdir]
    if nodes == 1:
        if gpus_per_node == 1:
            return ["llamaft", step, "--plan", plan_path, "--workdir", workdir]
        return [LAUNCHER, "--standalone", f"--nproc_per_node={gpus_per_node}", *tail]
    assert rendezvous, "multi-node runs need a rendezvous endpoint"
    return [
        LAUNCHER,
        f"--nnodes={nodes}",
        "--node_rank=$(JOB_COMPLETION_INDEX)",
        f"--nproc_per_node={gpus_per_node}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={rendezvous}",
        *([f"--rdzv_id={rendezvous_id}"] if rendezvous_id else []),
        f"--max_restarts={max_restarts}",
        *tail,
    ]
