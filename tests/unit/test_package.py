"""`llamaft package`: contents, model card, metadata, determinism, refusals."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from llamaft_trainer.package import PackageError, build_package, content_hash, write_tarball
from tests.hub.workdirs import hub_publish, make_run_plan, make_workdir

pytestmark = pytest.mark.unit

EXPECTED_FILES = [
    "README.md",
    "adapter_config.json",
    "adapter_model.safetensors",
    "eval.json",
    "llamaft_metadata.json",
    "requirements.txt",
    "tokenizer.json",
    "tokenizer_config.json",
]


def test_package_contents_and_sha256(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path / "w")
    result = build_package(make_run_plan(publish=hub_publish()), workdir)
    assert result.path == workdir / "package"
    assert result.files == EXPECTED_FILES
    assert (result.path / "adapter_model.safetensors").read_bytes() == (
        workdir / "adapter" / "adapter_model.safetensors"
    ).read_bytes()
    digest = hashlib.sha256(result.tarball.read_bytes()).hexdigest()
    assert result.sha256 == digest
    assert (workdir / "package.tar.gz.sha256").read_text() == f"{digest}  package.tar.gz\n"
    with tarfile.open(result.tarball) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [f"support-bot/{f}" for f in EXPECTED_FILES]
    assert {m.mtime for m in members} == {0}


def test_model_card_front_matter_and_body(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path / "w")
    build_package(make_run_plan(publish=hub_publish()), workdir)
    card = ModelCard.load(workdir / "package" / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert data["base_model_revision"] == "main"
    assert data["library_name"] == "peft"
    assert data["pipeline_tag"] == "text-generation"
    assert data["license"] == "llama3.1"
    assert {"llamaft", "lora", "qlora"} <= set(data["tags"])
    assert "datasets" not in data  # a PVC file is not a public dataset
    [index] = data["model-index"]
    metrics = {m["type"]: m["value"] for r in index["results"] for m in r["metrics"]}
    assert metrics["rouge"] == 0.75 and metrics["perplexity"] == 3.49
    body = card.text
    assert 'PeftModel.from_pretrained(base, "acme/support-bot-lora")' in body
    assert "| ROUGE-L | 0.2500 | 0.7500 |" in body
    assert "Reset my password" in body
    assert "````text\nSure! Here is how ```you``` reset\n````" in body  # fence escapes backticks
    assert "GPUs:" in body and "learning rate" in body


def test_hub_dataset_is_listed_and_unknown_model_license_is_other(tmp_path: Path) -> None:
    plan = make_run_plan(
        model="acme/custom-llama-7b",
        extra_spec={
            "dataset": {"source": {"hub": {"id": "acme/tickets"}}},
            "model": {"name": "acme/custom-llama-7b", "parameters": "7B"},
        },
        golden=False,
    )
    build_package(plan, make_workdir(tmp_path / "w"))
    data = ModelCard.load(tmp_path / "w" / "package" / "README.md").data.to_dict()
    assert data["datasets"] == ["acme/tickets"]
    assert data["license"] == "other"


def test_metadata_records_plan_dataset_versions_and_hashes(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path / "w")
    plan = make_run_plan(publish=hub_publish())
    build_package(plan, workdir)
    meta = json.loads((workdir / "package" / "llamaft_metadata.json").read_text())
    assert meta["plan"]["runId"] == plan.run_id
    assert meta["dataset"]["sha256"] == "ab" * 32
    assert meta["dataset"]["stats"]["rows"] == 480
    assert "huggingface-hub" in meta["libraries"]
    assert meta["times"]["evalStartTime"] == "2025-01-01T00:00:00Z"
    sha = hashlib.sha256((workdir / "package" / "README.md").read_bytes()).hexdigest()
    assert meta["files"]["README.md"] == sha
    reqs = (workdir / "package" / "requirements.txt").read_text()
    assert "peft>=" in reqs and "bitsandbytes" in reqs


def test_package_is_deterministic(tmp_path: Path) -> None:
    plan = make_run_plan(publish=hub_publish())
    first = build_package(plan, make_workdir(tmp_path / "a"))
    second = build_package(plan, make_workdir(tmp_path / "b"))
    again = build_package(plan, tmp_path / "a")
    assert first.sha256 == second.sha256 == again.sha256
    assert first.content_hash == second.content_hash == content_hash(tmp_path / "a" / "package")
    changed = build_package(plan, make_workdir(tmp_path / "c", weights=[9.0, 9.0]))
    assert changed.content_hash != first.content_hash


def test_write_tarball_ignores_mtimes(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "x").write_text("x")
    one = write_tarball(folder, tmp_path / "1.tar.gz", root="r")
    (folder / "x").touch()
    import os

    os.utime(folder / "x", (1, 1))
    assert write_tarball(folder, tmp_path / "2.tar.gz", root="r") == one


@pytest.mark.parametrize("pickle_name", ["adapter_model.bin", "training_args.bin", "opt.pt"])
def test_refuses_pickles(tmp_path: Path, pickle_name: str) -> None:
    workdir = make_workdir(tmp_path / "w")
    (workdir / "adapter" / pickle_name).write_bytes(b"\x80\x04pickle")
    with pytest.raises(PackageError, match=r"pickle.*safe_serialization=True"):
        build_package(make_run_plan(), workdir)


def test_missing_adapter_and_bad_safetensors(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="llamaft train"):
        build_package(make_run_plan(), tmp_path)
    workdir = make_workdir(tmp_path / "w")
    (workdir / "adapter" / "adapter_model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(PackageError, match="not a safetensors file"):
        build_package(make_run_plan(), workdir)
