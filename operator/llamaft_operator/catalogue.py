"""GPU catalogue and known model shapes: the facts the planner sizes runs with.

The GPU catalogue is a cluster setting (the Helm chart can override it with `LLAMAFT_GPU_CATALOGUE`,
a JSON list of `GpuType`); the entries below are the defaults. Memory is what the CUDA driver
reports as usable (GiB), not the marketing figure; TFLOP/s are dense bf16 tensor-core peaks from the
vendors' datasheets (no sparsity).

Pure and torch-free.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

from llamaft_trainer.config import Architecture


class GpuType(BaseModel):
    """One GPU type a cluster offers."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    name: str = Field(description="Catalogue key, e.g. `H100-80GB`.")
    memory_gib: float = Field(gt=0, description="Usable device memory (GiB).")
    bf16_tflops: float = Field(gt=0, description="Dense bf16 peak (TFLOP/s).")
    gpus_per_node: int = Field(default=8, ge=1, le=64, description="GPUs in one node.")
    cpu_per_node: int = Field(default=96, ge=1, description="Allocatable CPUs per node.")
    memory_gib_per_node: int = Field(default=960, ge=1, description="Allocatable host memory.")
    price_per_gpu_hour: float | None = Field(default=None, ge=0, description="For cost estimates.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels that pick nodes with this GPU."
    )
    resource_name: str = Field(default="nvidia.com/gpu", description="Extended resource name.")


DEFAULT_CATALOGUE: tuple[GpuType, ...] = (
    GpuType(
        name="A10G-24GB",
        memory_gib=22.0,
        bf16_tflops=70.0,
        cpu_per_node=192,
        memory_gib_per_node=768,
    ),
    GpuType(
        name="L4-24GB",
        memory_gib=22.0,
        bf16_tflops=121.0,
        cpu_per_node=192,
        memory_gib_per_node=768,
    ),
    GpuType(name="A100-40GB", memory_gib=39.4, bf16_tflops=312.0),
    GpuType(name="A100-80GB", memory_gib=79.1, bf16_tflops=312.0, memory_gib_per_node=1900),
    GpuType(
        name="H100-80GB",
        memory_gib=79.1,
        bf16_tflops=989.0,
        cpu_per_node=192,
        memory_gib_per_node=1900,
    ),
    GpuType(
        name="H200-141GB",
        memory_gib=139.8,
        bf16_tflops=989.0,
        cpu_per_node=192,
        memory_gib_per_node=1900,
    ),
)
DEFAULT_GPU_TYPE = "H100-80GB"

_catalogue_adapter = TypeAdapter(list[GpuType])


class GpuCatalogue:
    """Lookup by name, case-insensitively."""

    def __init__(
        self,
        entries: tuple[GpuType, ...] | list[GpuType] = DEFAULT_CATALOGUE,
        default: str = DEFAULT_GPU_TYPE,
    ) -> None:
        self._by_key = {e.name.lower(): e for e in entries}
        self.default = default

    @classmethod
    def from_json(cls, text: str, default: str = DEFAULT_GPU_TYPE) -> GpuCatalogue:
        return cls(_catalogue_adapter.validate_python(json.loads(text)), default)

    def names(self) -> list[str]:
        return [e.name for e in self._by_key.values()]

    def get(self, name: str | None) -> GpuType:
        key = (name or self.default).lower()
        if key not in self._by_key:
            raise KeyError(
                f"unknown GPU type {name!r}; the catalogue has: {', '.join(self.names())}"
            )
        return self._by_key[key]


# --- known models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownModel:
    family: str
    architecture: Architecture


def _arch(
    layers: int,
    hidden: int,
    intermediate: int,
    heads: int,
    kv_heads: int,
    vocab: int,
    tied: bool = False,
) -> Architecture:
    return Architecture(
        layers=layers,
        hidden=hidden,
        intermediate=intermediate,
        heads=heads,
        kv_heads=kv_heads,
        vocab=vocab,
        tied_embeddings=tied,
    )


# Shapes from each model's config.json on the Hub (num_hidden_layers, hidden_size,
# intermediate_size, num_attention_heads, num_key_value_heads, vocab_size, tie_word_embeddings).
LLAMA2_7B = _arch(32, 4096, 11008, 32, 32, 32000)
LLAMA2_13B = _arch(40, 5120, 13824, 40, 40, 32000)
LLAMA2_70B = _arch(80, 8192, 28672, 64, 8, 32000)
LLAMA3_8B = _arch(32, 4096, 14336, 32, 8, 128256)
LLAMA3_70B = _arch(80, 8192, 28672, 64, 8, 128256)
LLAMA32_1B = _arch(16, 2048, 8192, 32, 8, 128256, tied=True)
LLAMA32_3B = _arch(28, 3072, 8192, 24, 8, 128256, tied=True)
CODELLAMA_7B = _arch(32, 4096, 11008, 32, 32, 32016)
CODELLAMA_13B = _arch(40, 5120, 13824, 40, 40, 32016)
CODELLAMA_34B = _arch(48, 8192, 22016, 64, 8, 32000)
CODELLAMA_70B = _arch(80, 8192, 28672, 64, 8, 32016)
SMOLLM2_135M = _arch(30, 576, 1536, 9, 3, 49152, tied=True)
TINY_LLAMA = _arch(2, 64, 176, 4, 2, 2048, tied=False)

# Matched against the lowercased model name with the organisation stripped; first match wins.
_KNOWN: tuple[tuple[str, str, Architecture], ...] = (
    (r"^builtin:tiny-llama$", "tiny-llama", TINY_LLAMA),
    (r"smollm2-135m", "smollm2", SMOLLM2_135M),
    (r"codellama-7b", "codellama", CODELLAMA_7B),
    (r"codellama-13b", "codellama", CODELLAMA_13B),
    (r"codellama-34b", "codellama", CODELLAMA_34B),
    (r"codellama-70b", "codellama", CODELLAMA_70B),
    (r"llama-?2-7b", "llama2", LLAMA2_7B),
    (r"llama-?2-13b", "llama2", LLAMA2_13B),
    (r"llama-?2-70b", "llama2", LLAMA2_70B),
    (r"llama-?3\.2-1b", "llama3.2", LLAMA32_1B),
    (r"llama-?3\.2-3b", "llama3.2", LLAMA32_3B),
    (r"llama-?3(\.[0-3])?-(instruct-)?70b", "llama3", LLAMA3_70B),
    (r"llama-?3(\.[01])?-(instruct-)?8b", "llama3", LLAMA3_8B),
)


def lookup_model(name: str) -> KnownModel | None:
    """The known shape for a model name such as `meta-llama/Llama-3.1-8B-Instruct`."""
    key = name.lower()
    if not key.startswith("builtin:"):
        key = key.rsplit("/", 1)[-1].replace("meta-", "")
    for pattern, family, arch in _KNOWN:
        if re.search(pattern, key):
            return KnownModel(family, arch)
    return None


def linear_parameters(a: Architecture) -> int:
    """Parameters in the decoder layers' linear projections (what QLoRA quantises)."""
    attn = a.hidden * a.hidden * 2 + a.hidden * a.kv_dim * 2
    mlp = 3 * a.hidden * a.intermediate
    return a.layers * (attn + mlp)


def embedding_parameters(a: Architecture) -> int:
    """Input embeddings plus lm_head (one matrix when tied); kept in 16 bits by QLoRA."""
    return a.vocab * a.hidden * (1 if a.tied_embeddings else 2)


def total_parameters(a: Architecture) -> int:
    norms = a.layers * 2 * a.hidden + a.hidden
    return linear_parameters(a) + embedding_parameters(a) + norms


def lora_parameters(a: Architecture, r: int, target_modules: list[str]) -> int:
    """Trainable LoRA parameters: r * (in + out) per adapted projection per layer."""
    shapes = {
        "q_proj": (a.hidden, a.hidden),
        "k_proj": (a.hidden, a.kv_dim),
        "v_proj": (a.hidden, a.kv_dim),
        "o_proj": (a.hidden, a.hidden),
        "gate_proj": (a.hidden, a.intermediate),
        "up_proj": (a.hidden, a.intermediate),
        "down_proj": (a.intermediate, a.hidden),
    }
    chosen = (
        shapes
        if "all-linear" in target_modules
        else {k: v for k, v in shapes.items() if k in target_modules}
    )
    return a.layers * sum(r * (i + o) for i, o in chosen.values())


def estimate_architecture(parameters: int) -> Architecture:
    """A Llama-like shape for an unknown model: the nearest known shape, layers rescaled."""
    reference = min(
        (LLAMA32_1B, LLAMA32_3B, LLAMA3_8B, LLAMA2_13B, CODELLAMA_34B, LLAMA3_70B),
        key=lambda a: abs(total_parameters(a) - parameters),
    )
    per_layer = linear_parameters(reference) // reference.layers + 2 * reference.hidden
    layers = max(1, round((parameters - embedding_parameters(reference)) / per_layer))
    return reference.model_copy(update={"layers": layers})
