"""Smoke runs of the CPU benchmarks in bench/ with tiny sizes: they run end to end and report.

The figures themselves come from the real runs in bench/RESULTS.md; here only the plumbing is
checked (same real tokens for every configuration, ratios present, planner rows, startup stages).
Each test starts child processes that import torch, so they are `slow` (seconds each, not minutes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import data

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float = 300) -> str:
    out = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


@pytest.mark.unit
def test_length_distribution_is_realistic() -> None:
    import random

    lengths = [data.sample_length(random.Random(i)) for i in range(5000)]
    stats = data.describe(lengths)
    assert 200 <= stats["meanTokens"] <= 260
    assert stats["share50to400"] >= 0.75
    assert stats["maxTokens"] <= 1500 and stats["shareOver400"] > 0.05
    rows = data.rows(50, max_response=64)
    assert all(len(r["response"].split()) <= 64 for r in rows)


@pytest.mark.slow
def test_trainer_throughput_smoke(tmp_path: Path) -> None:
    out = tmp_path / "tt.json"
    bench(
        "bench.trainer_throughput",
        "--models",
        "tiny-llama",
        "--rows",
        "8",
        "--seq",
        "128",
        "--configs",
        "seed000,trl,ours,ours+keep+nodrop",
        "--json",
        str(out),
    )
    report = json.loads(out.read_text())
    results = report["models"]["tiny-llama"]["results"]
    tokens = {k: r["tokens"] for k, r in results.items()}
    assert len(set(tokens.values())) == 1, tokens  # every configuration saw the same tokens
    assert results["seed000"]["paddingFraction"] > 0
    assert results["ours"]["paddingFraction"] == 0
    # The logits lever changes where logits are computed, not the loss.
    assert results["ours+keep+nodrop"]["firstLoss"] == pytest.approx(
        results["ours"]["firstLoss"], rel=1e-3
    )
    assert "ours/seed000" in report["models"]["tiny-llama"]["ratios"]
    table = bench("bench.planner_accuracy", str(out))
    assert table.count("tiny-llama") == 4


@pytest.mark.slow
def test_gpu_script_runs_on_cpu_with_the_tiny_shape(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    bench(
        "bench.gpu_8b",
        "--shape",
        "tiny",
        "--rows",
        "8",
        "--seq",
        "256",
        "--configs",
        "seed000,ours+castback+keep",
        "--json",
        str(out),
    )
    results = json.loads(out.read_text())["models"]["builtin:tiny-llama"]["results"]
    assert all("tokens" in r for r in results.values()), results


@pytest.mark.slow
def test_startup_reaches_the_first_step(tmp_path: Path) -> None:
    from bench import startup

    run = startup.run_to_first_step("tiny-llama", 8, tmp_path, max_words=100)
    assert run["firstStepSeconds"] is not None, run["timeline"]


@pytest.mark.slow
@pytest.mark.cluster
def test_operator_scale_dry_run_smoke(tmp_path: Path) -> None:
    """20 dry-run LlamaFineTunes on a fresh control plane: every one Planned, requests counted."""
    import os

    if os.environ.get("LLAMAFT_SKIP_CLUSTER") == "1":
        pytest.skip("LLAMAFT_SKIP_CLUSTER=1")
    out = tmp_path / "scale.json"
    bench(
        "bench.operator_scale",
        "--crs",
        "20",
        "--mode",
        "dryrun",
        "--nodes",
        "2",
        "--settle",
        "2",
        "--json",
        str(out),
        timeout=300,
    )
    report = json.loads(out.read_text())
    assert report["measured"] == 20 and report["phases"] == {"Planned": 20}, report
    assert report["operatorErrors"] == 0, report["operatorErrorSample"]
    assert report["jobs"] == 0 and not report["duplicateJobs"]
    # Audit-log counts by the operator's own ServiceAccount: a dry run reads and writes little.
    assert 0 < report["apiRequestsPerCr"] <= 8, report["apiRequestsByVerb"]
