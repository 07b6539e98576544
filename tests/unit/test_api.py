"""The API models accept every example and reject each invalid manifest with its field path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llamaft_operator.api import parse_duration_seconds, parse_parameter_count
from llamaft_operator.manifest import ManifestError, load_manifest_file, load_yaml_documents

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "crds" / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "invalid").glob("*.yaml"))

pytestmark = pytest.mark.unit


def expectations(path: Path) -> tuple[str, str]:
    text = path.read_text()
    field = re.search(r"^# expect-path: (.+)$", text, re.M)
    message = re.search(r"^# expect: (.+)$", text, re.M)
    assert field and message, f"{path} needs `# expect-path:` and `# expect:` header lines"
    return field.group(1).strip(), message.group(1).strip()


def test_there_are_examples_for_each_size() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {
        "8b-qlora-single-gpu",
        "13b-lora",
        "70b-qlora-multinode",
        "70b-full",
        "pilot",
        "kueue",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_are_valid(path: Path) -> None:
    ft = load_manifest_file(path)
    assert ft.kind == "LlamaFineTune"
    assert ft.spec.model.trust_remote_code is False


def test_design_example_reads_learning_rate_as_a_number() -> None:
    ft = load_manifest_file(ROOT / "crds" / "examples" / "8b-qlora-single-gpu.yaml")
    assert ft.spec.training.learning_rate == pytest.approx(2e-4)
    assert ft.spec.dataset.source.pvc is not None
    assert ft.spec.dataset.source.pvc.claim_name == "datasets"
    assert [g.metric for g in ft.spec.evaluation.gates] == ["golden.rougeL", "golden.winRateVsBase"]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifests_are_rejected_with_their_field_path(path: Path) -> None:
    field, message = expectations(path)
    with pytest.raises(ManifestError) as info:
        load_manifest_file(path)
    problems = info.value.problems
    matching = [p for p in problems if p.split(":", 1)[0] == field]
    assert matching, f"no problem at {field!r} in {problems}"
    assert any(message.lower() in p.lower() for p in matching), problems


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    bad = tmp_path / "two-problems.yaml"
    bad.write_text(
        "apiVersion: llamaft.io/v1alpha1\nkind: LlamaFineTune\nmetadata: {name: x}\n"
        "spec:\n  model: {name: meta-llama/Llama-3.1-8B}\n"
        "  dataset: {source: {pvc: {claimName: d, path: a}}}\n"
        "  method: dpo\n  training: {maxSeqLength: 1}\n"
    )
    with pytest.raises(ManifestError) as info:
        load_manifest_file(bad)
    paths = {p.split(":", 1)[0] for p in info.value.problems}
    assert {"spec.method", "spec.training.maxSeqLength"} <= paths


def test_yaml_1_2_floats() -> None:
    (doc,) = load_yaml_documents("a: 2e-4\nb: 1.5\nc: '2e-4'\nd: 3\n")
    assert doc == {"a": 2e-4, "b": 1.5, "c": "2e-4", "d": 3}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8B", 8_000_000_000), ("135M", 135_000_000), ("1.5B", 1_500_000_000), ("70B", 70 * 10**9)],
)
def test_parameter_counts(text: str, expected: int) -> None:
    assert parse_parameter_count(text) == expected


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400), ("90m", 5400), ("1h30m", 5400), ("45s", 45)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["tomorrow", "1d", "", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_seconds(text)
