"""The committed CRD is what the API models generate, and it is a bounded, structural schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamaft_operator.crd import build_crd, render_crd_yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit


def test_committed_crd_matches_the_models() -> None:
    committed = (ROOT / "crds" / "llamafinetune.yaml").read_text()
    assert committed == render_crd_yaml(), (
        "crds/llamafinetune.yaml drifted from operator/llamaft_operator/api.py: "
        "run `llamaft crd -o crds/llamafinetune.yaml`"
    )


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def root_schema() -> dict[str, Any]:
    crd = build_crd()
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_schema_is_structural() -> None:
    for path, node in walk(root_schema()):
        assert "type" in node, f"{path} has no type"
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "const", "title", "$defs", "default"):
            assert forbidden not in node, f"{path} has {forbidden}"


def test_spec_is_bounded_and_described() -> None:
    spec = root_schema()["properties"]["spec"]
    for path, node in walk(spec, "spec"):
        kind = node["type"]
        if kind == "string" and "enum" not in node:
            assert "maxLength" in node, f"{path} string is unbounded"
        if kind == "array":
            assert "maxItems" in node, f"{path} list is unbounded"
        if kind == "object" and isinstance(node.get("additionalProperties"), dict):
            assert "maxProperties" in node, f"{path} map is unbounded"
        if kind in ("integer", "number") and "enum" not in node:
            assert "minimum" in node or "maximum" in node, f"{path} number is unbounded"


def test_every_spec_field_has_a_description_for_kubectl_explain() -> None:
    spec = root_schema()["properties"]["spec"]
    missing = [
        p
        for p, node in walk(spec, "spec")
        if not node.get("description") and not p.endswith("[]") and not p.endswith("{}")
    ]
    # Fields of embedded Kubernetes types (tolerations) are documented upstream.
    missing = [p for p in missing if ".tolerations[]." not in p]
    assert not missing, f"fields without a description: {missing}"


def test_immutable_fields_and_cross_field_rules() -> None:
    spec = root_schema()["properties"]["spec"]
    for field in ("model", "dataset", "method", "training"):
        rules = [r["rule"] for r in spec["properties"][field].get("x-kubernetes-validations", [])]
        assert "self == oldSelf" in rules, field
    messages = " ".join(r["message"] for r in spec["x-kubernetes-validations"])
    assert "tokenSecret" in messages and "lora" in messages


def test_names_columns_and_status() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "llamafinetunes.llamaft.io"
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["lft"] and names["kind"] == "LlamaFineTune"
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:7] == ["Phase", "Model", "GPUs", "Progress", "Loss", "Eval", "Age"]
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "conditions"
    ]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "observedGeneration" in conditions["items"]["properties"]


def test_patterns_are_valid_re2() -> None:
    """The API server compiles patterns with Go's RE2, which rejects repeat counts over 1000."""
    import re

    for path, node in walk(root_schema()):
        pattern = node.get("pattern")
        if pattern:
            counts = [int(n) for n in re.findall(r"\{(\d+)(?:,(\d*))?\}", pattern) for n in n if n]
            assert all(c <= 1000 for c in counts), f"{path}: {pattern}"
