"""`llamaft plan`, `llamaft validate` and `llamaft crd` through the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LLAMAFT = str(Path(sys.executable).parent / "llamaft")
EXAMPLES = ROOT / "crds" / "examples"
pytestmark = pytest.mark.unit


def llamaft(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LLAMAFT, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def plan_json(path: Path, *extra: str) -> dict[str, object]:
    result = llamaft("plan", str(path), "-o", "json", *extra)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize("gpu", ["H100-80GB", "L4-24GB"])
def test_plan_8b_qlora_is_one_gpu(gpu: str) -> None:
    plan = plan_json(EXAMPLES / "8b-qlora-single-gpu.yaml", "--gpu-type", gpu)
    assert plan["resources"] == {**plan["resources"], "nodes": 1, "gpusPerNode": 1, "gpuType": gpu}  # type: ignore[dict-item]
    assert plan["deepspeed"] == {"zeroStage": 0, "offloadOptimizer": False}


def test_plan_70b_full_is_multi_node_zero3() -> None:
    plan = plan_json(EXAMPLES / "70b-full.yaml")
    res: dict[str, int] = plan["resources"]  # type: ignore[assignment]
    assert res["nodes"] >= 2
    assert plan["deepspeed"]["zeroStage"] == 3  # type: ignore[index]


def test_plan_70b_qlora_on_a10g_is_several_gpus_zero3() -> None:
    plan = plan_json(
        EXAMPLES / "70b-qlora-multinode.yaml",
        "--gpu-type",
        "A10G-24GB",
        "--dataset-tokens",
        "1000000",
    )
    res: dict[str, int] = plan["resources"]  # type: ignore[assignment]
    assert res["nodes"] * res["gpusPerNode"] > 1
    assert plan["deepspeed"]["zeroStage"] == 3  # type: ignore[index]


def test_plan_70b_qlora_with_deadline_is_multi_node() -> None:
    plan = plan_json(EXAMPLES / "70b-qlora-multinode.yaml", "--dataset-tokens", "200000000")
    res: dict[str, int] = plan["resources"]  # type: ignore[assignment]
    assert res["gpuType"] == "H100-80GB"  # type: ignore[comparison-overlap]
    assert res["nodes"] >= 2
    est: dict[str, float] = plan["estimate"]  # type: ignore[assignment]
    assert est["durationHours"] <= 24 and est["gpuHours"] > 0


def test_plan_yaml_and_table_outputs() -> None:
    out = llamaft("plan", str(EXAMPLES / "pilot.yaml"), "-o", "yaml")
    assert out.returncode == 0 and yaml.safe_load(out.stdout)["kind"] == "RunPlan"
    table = llamaft("plan", str(EXAMPLES / "pilot.yaml"))
    assert table.returncode == 0 and "peak memory / GPU" in table.stdout


def test_plan_impossible_exits_2_with_an_actionable_message(tmp_path: Path) -> None:
    doc = yaml.safe_load((EXAMPLES / "70b-full.yaml").read_text())
    doc["spec"]["resources"].update({"maxGpus": 8, "maxNodes": 1})
    path = tmp_path / "too-big.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = llamaft("plan", str(path))
    assert result.returncode == 2
    assert "maxGpus is 8" in result.stderr and "raise them" in result.stderr


def test_validate_accepts_all_examples() -> None:
    result = llamaft("validate", *map(str, sorted(EXAMPLES.glob("*.yaml"))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("valid LlamaFineTune") == len(list(EXAMPLES.glob("*.yaml")))


def test_validate_rejects_with_field_paths() -> None:
    result = llamaft(
        "validate",
        str(ROOT / "tests" / "invalid" / "bad-method.yaml"),
        str(ROOT / "tests" / "invalid" / "unknown-field.yaml"),
    )
    assert result.returncode == 2
    assert "spec.method:" in result.stderr
    assert "spec.training.learnRate: unknown field" in result.stderr


def test_validate_missing_file() -> None:
    result = llamaft("validate", "does-not-exist.yaml")
    assert result.returncode == 2 and "file not found" in result.stderr


def test_crd_command_prints_the_committed_crd() -> None:
    result = llamaft("crd")
    assert result.returncode == 0
    assert result.stdout == (ROOT / "crds" / "llamafinetune.yaml").read_text()
