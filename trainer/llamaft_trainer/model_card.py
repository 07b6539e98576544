"""The model card (README.md) of a packaged adapter, built and checked with `huggingface_hub`.

The YAML front matter is produced by `ModelCardData` (never hand-written YAML) and the whole card is
parsed back with `ModelCard` before it is written, so a card that the Hub's parser would reject
fails packaging, not publishing. Front matter: `base_model` (+ `base_model_revision`),
`library_name: peft`, `pipeline_tag: text-generation`, `tags`, `datasets` (Hub datasets only: other
sources are private to the cluster), `license` and the golden/validation metrics as `model-index`.

The body says how to load the adapter with PEFT, what it was trained on, with which
hyper-parameters and compute, how it scored against its base model, and shows sample generations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamaft_trainer.config import RunPlan
from llamaft_trainer.errors import BadInputError

# Built-in models (no download) and the Hub ids they correspond to, for `base_model`.
BUILTIN_HUB_IDS = {"builtin:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}

# Hub license identifiers of known base-model families; anything else is "other".
LICENSES: tuple[tuple[str, str], ...] = (
    (r"llama-?3\.3", "llama3.3"),
    (r"llama-?3\.2", "llama3.2"),
    (r"llama-?3\.1", "llama3.1"),
    (r"llama-?3", "llama3"),
    (r"llama-?2", "llama2"),
    (r"smollm", "apache-2.0"),
    (r"tinyllama", "apache-2.0"),
)

# eval.json metric -> (model-index metric type, human name)
CARD_METRICS: tuple[tuple[str, str, str], ...] = (
    ("golden.exactMatch", "exact_match", "Exact match (golden set)"),
    ("golden.tokenF1", "f1", "Token F1 (golden set)"),
    ("golden.rougeL", "rouge", "ROUGE-L F (golden set)"),
    ("golden.winRateVsBase", "win_rate", "Win rate vs base (golden set, ROUGE-L)"),
    ("validation.loss", "loss", "Validation loss"),
    ("validation.perplexity", "perplexity", "Validation perplexity"),
)
SAMPLES_IN_CARD = 5


class ModelCardError(BadInputError):
    """The model card could not be built or did not survive `huggingface_hub`'s parser."""


@dataclass(frozen=True)
class CardInputs:
    """What the card reports, read from the work volume's reports (all optional)."""

    metrics: Mapping[str, float] = field(default_factory=dict)
    samples: Sequence[Mapping[str, str]] = ()
    gates: Sequence[Mapping[str, Any]] = ()
    data_stats: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    golden_examples: int | None = None


def hub_base_model(plan: RunPlan) -> str | None:
    """The base model's Hub id, or None for a test model that is not on the Hub."""
    name = plan.model.name
    if name.startswith("builtin:"):
        return BUILTIN_HUB_IDS.get(name)
    return name


def license_for(plan: RunPlan) -> str:
    """The adapter inherits the base model's license (Hub identifier); "other" when unknown."""
    name = (hub_base_model(plan) or plan.model.name).lower()
    for pattern, license_id in LICENSES:
        if re.search(pattern, name):
            return license_id
    return "other"


def hub_datasets(plan: RunPlan) -> list[str]:
    """Dataset ids worth linking: only Hub datasets are public references."""
    out = []
    for source in (plan.dataset.source, plan.dataset.golden_set):
        if source is not None and source.hub is not None and source.hub.id not in out:
            out.append(source.hub.id)
    return out


def tags_for(plan: RunPlan) -> list[str]:
    tags = ["llamaft", "peft", "text-generation"]
    if plan.method in ("lora", "qlora"):
        tags.append("lora")
    if plan.method == "qlora":
        tags += [
            "qlora",
            "4-bit" if (plan.quantization and plan.quantization.bits == 4) else "8-bit",
        ]
    return tags


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def eval_results(plan: RunPlan, metrics: Mapping[str, float]) -> list[Any]:
    """The tuned model's metrics as `EvalResult`s (NaN/absent metrics are left out)."""
    from huggingface_hub import EvalResult

    golden = plan.dataset.golden_set
    golden_type = golden.hub.id if golden is not None and golden.hub is not None else "golden-set"
    train = plan.dataset.source
    train_type = train.hub.id if train.hub is not None else "validation-split"
    results = []
    for key, metric_type, name in CARD_METRICS:
        value = metrics.get(key)
        if not _finite(value):
            continue
        is_golden = key.startswith("golden.")
        results.append(
            EvalResult(
                task_type="text-generation",
                task_name="Text generation",
                dataset_type=golden_type if is_golden else train_type,
                dataset_name="Golden set" if is_golden else "Validation split",
                dataset_split="golden" if is_golden else "validation",
                metric_type=metric_type,
                metric_name=name,
                metric_value=round(float(value), 6),  # type: ignore[arg-type]
            )
        )
    return results


def card_data(plan: RunPlan, inputs: CardInputs) -> Any:
    """The `ModelCardData` of the front matter."""
    from huggingface_hub import ModelCardData

    base = hub_base_model(plan)
    results = eval_results(plan, inputs.metrics)
    extra: dict[str, Any] = {}
    if base is not None:
        extra["base_model_revision"] = plan.model.revision
    try:
        return ModelCardData(
            base_model=base,
            library_name="peft",
            pipeline_tag="text-generation",
            license=license_for(plan),
            tags=tags_for(plan),
            datasets=hub_datasets(plan) or None,
            model_name=model_name(plan),
            eval_results=results or None,
            **extra,
        )
    except ValueError as err:
        raise ModelCardError(f"model card metadata is invalid: {err}") from err


def model_name(plan: RunPlan) -> str:
    if plan.publish is not None and plan.publish.hub is not None:
        return plan.publish.hub.repo.split("/", 1)[1]
    return plan.name


def build_model_card(plan: RunPlan, inputs: CardInputs) -> str:
    """README.md text; parsed back with `huggingface_hub.ModelCard` to make sure it is valid."""
    from huggingface_hub import ModelCard

    data = card_data(plan, inputs)
    text = f"---\n{data.to_yaml()}\n---\n\n{render_body(plan, inputs)}"
    try:
        parsed = ModelCard(text)
    except ValueError as err:
        raise ModelCardError(f"the generated model card does not parse: {err}") from err
    if parsed.data.to_dict() != data.to_dict():  # type: ignore[no-untyped-call]
        raise ModelCardError(
            "the generated model card's metadata changed when parsed back; this is a llamaft bug"
        )
    return text


# --- body ---------------------------------------------------------------------------------------


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _block(text: str) -> str:
    fence = _fence(text)
    return f"{fence}text\n{text}\n{fence}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return "n/a" if value is None else str(value)


def _source_text(plan: RunPlan) -> str:
    source = plan.dataset.source
    if source.hub is not None:
        return f"Hub dataset [`{source.hub.id}`](https://huggingface.co/datasets/{source.hub.id})"
    if source.pvc is not None:
        return f"a private file on the cluster (`{source.pvc.path}`)"
    if source.url is not None:
        return "a private file fetched over HTTP(S)"
    if source.config_map is not None:
        return "a private ConfigMap"
    return "a local file"


def render_body(plan: RunPlan, inputs: CardInputs) -> str:
    sections = [
        _intro(plan),
        _usage(plan),
        _data_section(plan, inputs),
        _hyper_parameters(plan),
        _compute(plan, inputs),
        _evaluation(inputs),
        _samples(inputs),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _intro(plan: RunPlan) -> str:
    base = hub_base_model(plan)
    base_link = f"[`{base}`](https://huggingface.co/{base})" if base else f"`{plan.model.name}`"
    kind = {"qlora": "QLoRA", "lora": "LoRA", "full": "fully fine-tuned"}[plan.method]
    return (
        f"# {model_name(plan)}\n\n"
        f"A {kind} adapter for {base_link} (revision `{plan.model.revision}`), trained by "
        "llamaft from the LlamaFineTune "
        f"`{plan.namespace}/{plan.name}` (run `{plan.run_id}`)."
    )


def _usage(plan: RunPlan) -> str:
    base = hub_base_model(plan) or "<base model>"
    repo = (
        plan.publish.hub.repo
        if plan.publish is not None and plan.publish.hub is not None
        else "path/to/this/folder"
    )
    quant = ""
    if plan.method == "qlora":
        quant = (
            "\n# Optional, as in training: 4-bit base (needs bitsandbytes and a CUDA GPU)\n"
            "# from transformers import BitsAndBytesConfig\n"
            '# quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")'
        )
    code = (
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"{quant}\n"
        "base = AutoModelForCausalLM.from_pretrained(\n"
        f'    "{base}", revision="{plan.model.revision}", dtype="auto", device_map="auto"\n'
        ")\n"
        f'model = PeftModel.from_pretrained(base, "{repo}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
        'messages = [{"role": "user", "content": "Hello"}]\n'
        "inputs = tokenizer.apply_chat_template(\n"
        '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True\n'
        ").to(model.device)\n"
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=128)[0]))"
    )
    return (
        "## How to use\n\n"
        "Load the base model at the same revision and apply this adapter with PEFT "
        "(`pip install -r requirements.txt`):\n\n"
        f"```python\n{code}\n```"
    )


def _data_section(plan: RunPlan, inputs: CardInputs) -> str:
    ds = plan.dataset
    lines = [
        "## Training data",
        "",
        f"- Source: {_source_text(plan)}, format `{ds.format}`",
        f"- Validation split: {ds.validation_split:g} of the rows (seeded, deterministic)",
    ]
    stats = inputs.data_stats
    for key, label in (
        ("rows", "Rows"),
        ("usableRows", "Usable rows"),
        ("tokens", "Tokens"),
        ("trainExamples", "Training examples"),
        ("validationExamples", "Validation examples"),
    ):
        if key in stats:
            lines.append(f"- {label}: {stats[key]}")
    if inputs.golden_examples is not None:
        lines.append(f"- Golden set: {inputs.golden_examples} prompts with reference answers")
    return "\n".join(lines)


def _hyper_parameters(plan: RunPlan) -> str:
    tr = plan.training
    rows: list[tuple[str, Any]] = [("method", plan.method)]
    if plan.lora is not None:
        rows += [
            (
                "LoRA r / alpha / dropout",
                f"{plan.lora.r} / {plan.lora.alpha} / {plan.lora.dropout}",
            ),
            ("LoRA target modules", ", ".join(plan.lora.target_modules)),
        ]
    if plan.quantization is not None:
        q = plan.quantization
        rows.append(
            (
                "quantization",
                f"{q.bits}-bit {q.quant_type}, double quant {q.double_quant}, "
                f"compute {q.compute_dtype}",
            )
        )
    rows += [
        (
            "epochs",
            tr.epochs if tr.max_steps is None else f"{tr.epochs} (max {tr.max_steps} steps)",
        ),
        ("learning rate", f"{tr.learning_rate:g} ({tr.scheduler}, warmup {tr.warmup_ratio:g})"),
        ("max sequence length", tr.max_seq_length),
        ("packing", tr.packing),
        (
            "batch per device x accumulation",
            f"{tr.per_device_batch_size} x {tr.gradient_accumulation_steps}",
        ),
        ("global batch", tr.global_batch_size),
        ("gradient checkpointing", tr.gradient_checkpointing),
        ("weight decay / max grad norm", f"{tr.weight_decay:g} / {tr.max_grad_norm:g}"),
        ("seed", tr.seed),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"## Training hyper-parameters\n\n| parameter | value |\n|---|---|\n{table}"


def _compute(plan: RunPlan, inputs: CardInputs) -> str:
    res, est = plan.resources, plan.estimate
    lines = [
        "## Compute",
        "",
        f"- GPUs: {res.total_gpus} x {res.gpu_type} ({res.nodes} node(s) x "
        f"{res.gpus_per_node}), DeepSpeed ZeRO stage {plan.deepspeed.zero_stage}",
        f"- Planned peak memory per GPU: {est.peak_memory_gib_per_gpu:.1f} GiB",
    ]
    if est.gpu_hours is not None:
        lines.append(f"- Planned GPU-hours: {est.gpu_hours:.2f}")
    for key, label in (
        ("durationHours", "Training wall time (hours)"),
        ("gpuHours", "GPU-hours used"),
        ("steps", "Optimizer steps"),
        ("trainLoss", "Final training loss"),
    ):
        if key in inputs.training:
            lines.append(f"- {label}: {_fmt(inputs.training[key])}")
    return "\n".join(lines)


def _evaluation(inputs: CardInputs) -> str:
    m = inputs.metrics
    if not m:
        return ""
    rows = []
    for name, label in (
        ("exactMatch", "Exact match"),
        ("tokenF1", "Token F1"),
        ("rougeL", "ROUGE-L"),
    ):
        if f"golden.{name}" in m:
            rows.append(
                f"| {label} | {_fmt(m.get(f'golden.base.{name}'))} | {_fmt(m[f'golden.{name}'])} |"
            )
    parts = ["## Evaluation"]
    if rows:
        parts.append(
            "Golden set, greedy decoding, base model vs this adapter:\n\n"
            "| metric | base | tuned |\n|---|---|---|\n" + "\n".join(rows)
        )
    extra = [
        f"- {label}: {_fmt(m[key])}"
        for key, label in (
            ("golden.winRateVsBase", "Win rate vs base (ROUGE-L per prompt, ties count 1/2)"),
            ("validation.loss", "Validation loss"),
            ("validation.perplexity", "Validation perplexity"),
        )
        if key in m
    ]
    if extra:
        parts.append("\n".join(extra))
    if inputs.gates:
        gate_lines = [
            f"- `{g['metric']}` = {_fmt(g.get('value'))}"
            + (f", min {g['min']:g}" if g.get("min") is not None else "")
            + (f", max {g['max']:g}" if g.get("max") is not None else "")
            + (": passed" if g.get("passed") else ": failed")
            for g in inputs.gates
        ]
        parts.append("Publish gates:\n\n" + "\n".join(gate_lines))
    return "\n\n".join(parts)


def _samples(inputs: CardInputs) -> str:
    samples = list(inputs.samples)[:SAMPLES_IN_CARD]
    if not samples:
        return ""
    parts = ["## Samples"]
    for i, s in enumerate(samples, 1):
        parts.append(
            f"### Sample {i}\n\nPrompt:\n\n{_block(s.get('prompt', ''))}\n\n"
            f"Reference:\n\n{_block(s.get('reference', ''))}\n\n"
            f"Base model:\n\n{_block(s.get('base', ''))}\n\n"
            f"This adapter:\n\n{_block(s.get('tuned', ''))}"
        )
    return "\n\n".join(parts)
