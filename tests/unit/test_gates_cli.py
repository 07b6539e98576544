"""`llamaft gates`: exit 2 with the metric, threshold and value; result JSON on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llamaft_trainer.cli import app
from tests.hub.workdirs import make_run_plan, make_workdir

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("minimum", "exit_code"), [(0.5, 0), (0.9, 2)])
def test_gates_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minimum: float, exit_code: int
) -> None:
    monkeypatch.setenv("LLAMAFT_TERMINATION_LOG", str(tmp_path / "term"))
    plan = tmp_path / "plan.json"
    plan.write_text(make_run_plan(gates=[{"metric": "golden.rougeL", "min": minimum}]).to_json())
    workdir = make_workdir(tmp_path / "w")
    result = CliRunner().invoke(app, ["gates", "--plan", str(plan), "--workdir", str(workdir)])
    # CliRunner bypasses `cli.main`, which maps LlamaftError to its exit code.
    error = result.exception
    assert (getattr(error, "exit_code", 1) if error else result.exit_code) == exit_code
    out = json.loads((tmp_path / "term").read_text())
    assert out["passed"] is (exit_code == 0)
    assert out["gates"][0] == {
        "metric": "golden.rougeL",
        "value": 0.75,
        "min": minimum,
        "passed": exit_code == 0,
    }
    if exit_code:
        assert f"golden.rougeL = 0.7500 (needs >= {minimum:g}): FAILED" in str(result.exception)
