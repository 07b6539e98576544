"""The run plan: everything the trainer needs, resolved by the planner from a LlamaFineTune.

The operator writes it as JSON into the `<name>-plan` ConfigMap; `llamaft run` writes it into the
local work directory. The trainer reads nothing else (plus the paths of its work volume), so a plan
file is a complete, reproducible description of a run.

Torch-free and kopf-free: imported by the planner (operator side) and the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from llamaft_operator.api import (
    DatasetSpec,
    EvaluationSpec,
    Method,
    PilotSpec,
    PublishSpec,
    Scheduler,
    TrackingSpec,
)

PLAN_KIND = "RunPlan"
PLAN_API_VERSION = "llamaft.io/v1alpha1"


class PlanModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Architecture(PlanModel):
    """Shape of a Llama-architecture decoder (known models; estimated for unknown ones)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


class ModelPlan(PlanModel):
    name: str
    revision: str = "main"
    parameters: int = Field(description="Total parameter count.")
    architecture: Architecture
    trust_remote_code: bool = False
    known: bool = Field(description="Shape came from the known-model table, not an estimate.")


class QuantizationPlan(PlanModel):
    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    # Under ZeRO-3 the packed 4-bit weights must be stored in the compute dtype so DeepSpeed can
    # shard them like any other bf16 tensor; uint8 storage is fine otherwise.
    storage_dtype: Literal["uint8", "bfloat16", "float16", "float32"] = "uint8"


class LoraPlan(PlanModel):
    r: int
    alpha: int
    dropout: float
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"])


class TrainingPlan(PlanModel):
    epochs: float
    max_steps: int | None = None
    learning_rate: float
    scheduler: Scheduler = "cosine"
    warmup_ratio: float = 0.03
    max_seq_length: int
    packing: bool = True
    per_device_batch_size: int
    gradient_accumulation_steps: int
    global_batch_size: int
    gradient_checkpointing: bool
    early_stopping_patience: int | None = None
    eval_steps: int = 100
    save_steps: int = 100
    keep_checkpoints: int = 2
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42


class ResourcesPlan(PlanModel):
    gpu_type: str
    gpu_memory_gib: float
    nodes: int
    gpus_per_node: int
    cpu_per_node: int
    memory_gib_per_node: int
    shm_gib: int

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


class DeepSpeedPlan(PlanModel):
    zero_stage: Literal[0, 2, 3] = Field(description="0 = no DeepSpeed (single GPU).")
    offload_optimizer: bool = False


class Estimate(PlanModel):
    """What the planner expects; see docs/sizing.md for the memory model and its sources."""

    peak_memory_gib_per_gpu: float = Field(alias="peakMemoryGiBPerGpu")
    memory_breakdown_gib: dict[str, float] = Field(alias="memoryBreakdownGiB")
    trainable_parameters: int
    tokens_per_second: float
    dataset_tokens: int | None = None
    steps_total: int | None = None
    gpu_hours: float | None = None
    duration_hours: float | None = None
    cost_usd: float | None = None
    notes: list[str] = Field(default_factory=list)


class RunPlan(PlanModel):
    """The resolved plan of one LlamaFineTune run (the trainer's only input)."""

    api_version: str = PLAN_API_VERSION
    kind: str = PLAN_KIND
    name: str
    namespace: str = "default"
    run_id: str = Field(description="Stable id of this run (uid + generation); tags Hub commits.")
    model: ModelPlan
    method: Method
    quantization: QuantizationPlan | None = None
    lora: LoraPlan | None = None
    training: TrainingPlan
    dataset: DatasetSpec
    resources: ResourcesPlan
    deepspeed: DeepSpeedPlan
    estimate: Estimate
    pilot: PilotSpec | None = None
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    publish: PublishSpec | None = None
    tracking: TrackingSpec | None = Field(
        default=None, description="W&B / MLflow for the train step (spec.tracking, as is)."
    )
    final: bool = Field(
        default=False, description="Sized from the measured dataset (after validate)."
    )

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunPlan:
        return cls.model_validate(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> RunPlan:
        return cls.from_json(Path(path).read_text())
