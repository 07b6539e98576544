"""`llamaft fetch` against the Hub test server with the real huggingface_hub client: safetensors
only, once per (model, revision), token from a file, clear errors for refused access."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi

from llamaft_operator.planner import make_plan
from tests.hub.fixtures import HUB_READ_TOKEN, HUB_WRITE_TOKEN
from tests.hub.server import HubServer
from tests.unit.plan_helpers import make_finetune

LLAMAFT = str(Path(sys.executable).parent / "llamaft")
pytestmark = pytest.mark.unit


def push(server: HubServer, repo: str, files: dict[str, bytes]) -> str:
    api = HfApi(endpoint=server.url, token=HUB_WRITE_TOKEN)
    api.create_repo(repo, private=True, exist_ok=True)
    info = api.create_commit(
        repo,
        operations=[CommitOperationAdd(p, io.BytesIO(c)) for p, c in files.items()],
        commit_message="upload",
    )
    return info.oid


def write_plan(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(make_plan(make_finetune(model=model, parameters="1M")).to_json())
    return path


def fetch(
    server: HubServer, plan: Path, cache: Path, token: str | None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    env["LLAMAFT_TERMINATION_LOG"] = str(cache.parent / "termination-log")
    if token is not None:
        token_file = cache.parent / "token"
        token_file.write_text(token)
        env["HF_TOKEN_PATH"] = str(token_file)
    return subprocess.run(
        [LLAMAFT, "fetch", "--plan", str(plan), "--model-cache", str(cache)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


MODEL_FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    "tokenizer.json": b"{}",
    "pytorch_model.bin": b"pickle!",
    "README.md": b"# model",
}


def test_fetch_downloads_safetensors_once(hub_server: HubServer, tmp_path: Path) -> None:
    commit = push(hub_server, "acme/tiny-llama", MODEL_FILES)
    plan = write_plan(tmp_path, "acme/tiny-llama")
    cache = tmp_path / "models"
    first = fetch(hub_server, plan, cache, HUB_READ_TOKEN)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["cached"] is False and result["commit"] == commit
    target = Path(result["path"])
    assert target.parent == cache
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]  # no pickles, no README
    assert (target / "model.safetensors").read_bytes() == MODEL_FILES["model.safetensors"]
    assert json.loads((tmp_path / "termination-log").read_text())["commit"] == commit
    downloads = len(hub_server.requests_to("resolve"))
    second = fetch(hub_server, plan, cache, HUB_READ_TOKEN)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["cached"] is True
    assert len(hub_server.requests_to("resolve")) == downloads, "a complete copy was fetched again"
    assert HUB_READ_TOKEN not in first.stdout + first.stderr + second.stdout + second.stderr


def test_partial_copy_is_replaced(hub_server: HubServer, tmp_path: Path) -> None:
    push(hub_server, "acme/tiny-llama", MODEL_FILES)
    plan = write_plan(tmp_path, "acme/tiny-llama")
    cache = tmp_path / "models"
    partial = cache / "acme--tiny-llama@main"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"truncated")
    result = fetch(hub_server, plan, cache, HUB_READ_TOKEN)
    assert result.returncode == 0, result.stderr
    assert (partial / "model.safetensors").read_bytes() == MODEL_FILES["model.safetensors"]


def test_pickle_only_repo_is_refused(hub_server: HubServer, tmp_path: Path) -> None:
    push(hub_server, "acme/old-model", {"config.json": b"{}", "pytorch_model.bin": b"x"})
    result = fetch(
        hub_server, write_plan(tmp_path, "acme/old-model"), tmp_path / "m", HUB_READ_TOKEN
    )
    assert result.returncode == 2
    assert "no safetensors" in result.stderr and "pytorch_model.bin" in result.stderr


def test_refused_token_is_bad_input(hub_server: HubServer, tmp_path: Path) -> None:
    push(hub_server, "acme/tiny-llama", MODEL_FILES)
    result = fetch(
        hub_server, write_plan(tmp_path, "acme/tiny-llama"), tmp_path / "m", "hf_wrong_token"
    )
    assert result.returncode == 2
    assert "spec.model" in result.stderr
    assert "hf_wrong_token" not in result.stderr


def test_builtin_models_need_no_fetch(hub_server: HubServer, tmp_path: Path) -> None:
    ft = make_finetune(model="builtin:tiny-llama")
    plan = tmp_path / "plan.json"
    plan.write_text(make_plan(ft).to_json())
    result = fetch(hub_server, plan, tmp_path / "m", None)
    assert result.returncode == 0, result.stderr
    assert "built-in" in json.loads(result.stdout)["skipped"]
