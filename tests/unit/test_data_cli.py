"""`llamaft validate-data` as a user and the validate Job run it: the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_data_pipeline import make_plan
from tests.unit.tokenizers_for_tests import chat_tokenizer

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LLAMAFT = Path(sys.executable).parent / "llamaft"
QUICKSTART = ROOT / "examples/data/quickstart/train.jsonl"
BAD = ROOT / "tests/fixtures/data/bad_rows.jsonl"


def run(*args: str | Path, tmp_path: Path) -> tuple[int, str, str, Path]:
    """Run the command; returns (exit code, stdout, stderr, termination log path)."""
    log = tmp_path / "termination-log"
    env = {**os.environ, "LLAMAFT_TERMINATION_LOG": str(log), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(LLAMAFT), "validate-data", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr, log


def test_good_dataset_exits_0_with_a_json_report(tmp_path: Path) -> None:
    code, out, err, log = run(QUICKSTART, "--output", tmp_path / "report.json", tmp_path=tmp_path)
    assert code == 0, err
    report = json.loads(out)
    assert report["usable"] and report["format"] == "prompt-response"
    assert report["stats"]["rows"] == 480 and report["stats"]["tokensEstimated"]
    assert report["problems"] == []
    assert json.loads((tmp_path / "report.json").read_text()) == report
    summary = json.loads(log.read_text())
    assert summary["usable"] and summary["rows"] == 480 and len(log.read_bytes()) < 4096


def test_bad_dataset_exits_2_and_reports_every_bad_row(tmp_path: Path) -> None:
    code, out, err, log = run(BAD, tmp_path=tmp_path)
    assert code == 2
    report = json.loads(out)
    assert not report["usable"]
    assert [(p["line"], p["kind"]) for p in report["problems"]] == [
        (3, "missing-field"),
        (4, "empty-response"),
        (5, "not-json"),
        (6, "wrong-type"),
        (7, "duplicate"),
        (8, "not-object"),
        (9, "empty-field"),
        (10, "not-utf8"),
    ]
    assert "line 3" in err and "maxBadRowsFraction" in err
    assert json.loads(log.read_text())["usable"] is False


def test_allowed_fraction_of_bad_rows_passes(tmp_path: Path) -> None:
    lines = [*QUICKSTART.read_text().splitlines()[:40], "{broken"]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert run(path, tmp_path=tmp_path)[0] == 2
    code, out, _, _ = run(path, "--max-bad-rows-fraction", "0.05", tmp_path=tmp_path)
    assert code == 0 and json.loads(out)["stats"]["badRows"] == 1


def test_no_usable_rows_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    code, out, err, _ = run(path, tmp_path=tmp_path)
    assert code == 2 and "no usable rows" in err and json.loads(out)["stats"]["usableRows"] == 0


def test_tokenizer_measures_tokens_and_enforces_the_length(tmp_path: Path) -> None:
    chat_tokenizer().save_pretrained(tmp_path / "tok")
    code, out, err, _ = run(QUICKSTART, "--tokenizer", tmp_path / "tok", tmp_path=tmp_path)
    assert code == 0, err
    stats = json.loads(out)["stats"]
    assert not stats["tokensEstimated"] and stats["max"] <= 2048 and stats["trainedTokens"] > 0
    code, out, _, _ = run(
        QUICKSTART, "--tokenizer", tmp_path / "tok", "--max-seq-length", "32", tmp_path=tmp_path
    )
    kinds = {p["kind"] for p in json.loads(out)["problems"]}
    assert code == 2 and kinds == {"too-long"}


def test_wrong_format_and_unknown_format(tmp_path: Path) -> None:
    code, out, _, _ = run(QUICKSTART, "--format", "text", tmp_path=tmp_path)
    assert code == 2 and json.loads(out)["problems"][0]["kind"] == "missing-field"
    code, _, err, _ = run(QUICKSTART, "--format", "csv", tmp_path=tmp_path)
    assert code == 2 and "not one of" in err


def test_plan_supplies_source_and_limits(tmp_path: Path) -> None:
    plan = make_plan({"source": {"local": {"path": str(QUICKSTART)}}, "format": "prompt-response"})
    (tmp_path / "plan.json").write_text(plan.to_json())
    code, out, err, _ = run("--plan", tmp_path / "plan.json", tmp_path=tmp_path)
    assert code == 0, err
    assert json.loads(out)["stats"]["maxSeqLength"] == 128


def test_missing_file_exits_2(tmp_path: Path) -> None:
    code, _, err, _ = run(tmp_path / "nope.jsonl", tmp_path=tmp_path)
    assert code == 2 and "does not exist" in err


def test_validate_data_with_plan_writes_the_report_to_the_workdir(tmp_path: Path) -> None:
    """The validate Job's form: source and limits from the plan, report in reports/data.json."""
    from llamaft_operator.api import DataSource
    from llamaft_operator.planner import make_plan as plan_for
    from tests.unit.plan_helpers import make_finetune

    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n')
    ft = make_finetune(model="builtin:tiny-llama")
    source = DataSource.model_validate({"local": {"path": str(data)}})
    plan = plan_for(ft).model_copy(
        update={"dataset": ft.spec.dataset.model_copy(update={"source": source})}
    )
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.to_json())
    workdir = tmp_path / "work"
    result = subprocess.run(
        [LLAMAFT, "validate-data", "--plan", str(plan_file), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((workdir / "reports" / "data.json").read_text())
    assert report["stats"]["rows"] == 2 and len(report["sha256"]) == 64
