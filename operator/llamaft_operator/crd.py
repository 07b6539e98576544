"""Generate the LlamaFineTune CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema 2020-12; a CRD needs a *structural* OpenAPI v3 schema: no `$ref`, no
`anyOf` with `null`, no `const`, no `title`, boolean `exclusiveMinimum`. `structural()` converts one
into the other and keeps descriptions, bounds, enums and our `x-kubernetes-validations`.
`crds/llamafinetune.yaml` is this module's output; a test fails when the committed file drifts.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import yaml

from llamaft_operator import api

_DROP = {"title", "default", "additionalProperties", "examples"}


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, list):
        return [_inline(s, defs) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _inline(merged, defs)
    return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}


def _merge_validations(a: dict[str, Any], b: dict[str, Any]) -> list[Any]:
    return list(a.get("x-kubernetes-validations", [])) + list(b.get("x-kubernetes-validations", []))


def structural(schema: Any) -> Any:
    """Convert an inlined pydantic JSON schema into a structural OpenAPI v3 schema."""
    if isinstance(schema, list):
        return [structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    s = dict(schema)
    for key in ("anyOf", "oneOf"):
        if key in s:
            options = [o for o in s.pop(key) if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"cannot express a union of {len(options)} types in a CRD: {s}")
            validations = _merge_validations(options[0], s)
            s = {**options[0], **{k: v for k, v in s.items() if k != "x-kubernetes-validations"}}
            if validations:
                s["x-kubernetes-validations"] = validations
    if "const" in s:
        s["enum"] = [s.pop("const")]
    if "exclusiveMinimum" in s and not isinstance(s["exclusiveMinimum"], bool):
        s["minimum"] = s["exclusiveMinimum"]
        s["exclusiveMinimum"] = True
    if "exclusiveMaximum" in s and not isinstance(s["exclusiveMaximum"], bool):
        s["maximum"] = s["exclusiveMaximum"]
        s["exclusiveMaximum"] = True
    additional = s.get("additionalProperties")
    out: dict[str, Any] = {}
    for k, v in s.items():
        if k in _DROP:
            continue
        if k == "properties":
            out[k] = {name: structural(p) for name, p in v.items()}
        elif k == "items":
            out[k] = structural(v)
        else:
            out[k] = v
    if isinstance(additional, dict):
        out["additionalProperties"] = structural(additional)
        out.setdefault("type", "object")
    if "enum" in out and "type" not in out:
        first = out["enum"][0]
        out["type"] = (
            "string"
            if isinstance(first, str)
            else "integer"
            if isinstance(first, int)
            else "number"
        )
    return out


def model_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return structural(_inline(raw, defs))  # type: ignore[no-any-return]


def _status_schema() -> dict[str, Any]:
    schema = model_schema(api.LlamaFineTuneStatus)
    # Conditions are merged by type (server-side apply and `kubectl wait` rely on it).
    schema["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    schema["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    return schema


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name", "priority": 0},
    {"name": "GPUs", "type": "integer", "jsonPath": ".status.plan.totalGpus"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.percent"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
    {"name": "Eval", "type": "string", "jsonPath": ".status.results.headline"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Commit", "type": "string", "jsonPath": ".status.publish.commit", "priority": 1},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Failed")].message',
        "priority": 1,
    },
]


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict."""
    spec_schema = model_schema(api.LlamaFineTuneSpec)
    spec_schema["description"] = (
        "Desired state of a fine-tune: the base model, the data, the method and where the "
        "adapter goes. Everything not set is sized by the planner."
    )
    root = {
        "type": "object",
        "description": (
            "LlamaFineTune fine-tunes a Llama model (QLoRA, LoRA or full) with DeepSpeed on "
            "Kubernetes Jobs, evaluates it on a golden set and publishes the adapter."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": _status_schema(),
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {api.MAX_NAME_LENGTH}",
                "message": (
                    f"metadata.name must be at most {api.MAX_NAME_LENGTH} characters: child "
                    "Jobs are named <name>-validate etc. and must fit a 63-character label"
                ),
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "llamaft", "app.kubernetes.io/part-of": "llamaft"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["all", "llamaft"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


HEADER = "# Generated by `llamaft crd` from operator/llamaft_operator/api.py. Do not edit.\n"


def render_crd_yaml() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
