"""A small factory for LlamaFineTune objects in planner and builder tests (JobSet-style)."""

from __future__ import annotations

from typing import Any

from llamaft_operator.api import LlamaFineTune


def make_finetune(
    *,
    name: str = "ft",
    model: str = "meta-llama/Llama-3.1-8B-Instruct",
    method: str = "qlora",
    gpu_type: str | None = None,
    seq: int = 2048,
    approx_tokens: int | None = None,
    deadline: str | None = None,
    max_gpus: int = 64,
    max_nodes: int = 8,
    parameters: str | None = None,
    training: dict[str, Any] | None = None,
    extra_spec: dict[str, Any] | None = None,
) -> LlamaFineTune:
    dataset: dict[str, Any] = {"source": {"pvc": {"claimName": "datasets", "path": "train.jsonl"}}}
    if approx_tokens is not None:
        dataset["approxTokens"] = approx_tokens
    resources: dict[str, Any] = {"maxGpus": max_gpus, "maxNodes": max_nodes}
    if gpu_type:
        resources["gpuType"] = gpu_type
    if deadline:
        resources["deadline"] = deadline
    model_spec: dict[str, Any] = {"name": model}
    if parameters:
        model_spec["parameters"] = parameters
    spec: dict[str, Any] = {
        "model": model_spec,
        "dataset": dataset,
        "method": method,
        "training": {"maxSeqLength": seq, **(training or {})},
        "resources": resources,
        **(extra_spec or {}),
    }
    return LlamaFineTune.model_validate(
        {
            "apiVersion": "llamaft.io/v1alpha1",
            "kind": "LlamaFineTune",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": spec,
        }
    )
