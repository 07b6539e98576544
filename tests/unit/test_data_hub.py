"""Hub datasets through our loader with the real `datasets` / `huggingface_hub` clients, served by
the test Hub (tests/hub/server.py): JSONL and Parquet repos at pinned revisions, and private or
gated ones that need the read token from `HF_TOKEN_PATH`.

Each load runs in a fresh interpreter: huggingface_hub reads `HF_ENDPOINT` once, at import.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.hub.fixtures import HUB_READ_TOKEN
from tests.hub.server import HubServer

pytestmark = pytest.mark.unit

FIRST = [{"prompt": f"Where is order {i}?", "response": f"Order {i} ships."} for i in range(3)]
SECOND = [{"prompt": f"Refund {i}?", "response": f"Refund {i} approved."} for i in range(5)]

LOADER = """
import json, sys
from llamaft_operator.api import DataSource
from llamaft_trainer.data.load import read_source
from llamaft_trainer.errors import BadInputError

out = []
for dataset, revision in json.loads(sys.argv[1]):
    try:
        loaded = read_source(DataSource(hub={"id": dataset, "revision": revision}))
        out.append({"rows": [row for _, row in loaded.rows], "origin": loaded.origin})
    except BadInputError as err:
        out.append({"error": str(err)})
print(json.dumps(out))
"""


def jsonl(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet(rows: list[dict[str, str]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def load(
    server: HubServer, tmp_path: Path, items: list[tuple[str, str]], token: str | None
) -> list[dict[str, Any]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf-home")}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    for key in ("HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        env.pop(key, None)
    if token is not None:
        (tmp_path / "token").write_text(token + "\n")
        env["HF_TOKEN_PATH"] = str(tmp_path / "token")
    result = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(items)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    answers: list[dict[str, Any]] = json.loads(result.stdout.splitlines()[-1])
    return answers


def test_public_datasets_load_at_their_pinned_revision(
    hub_server: HubServer, tmp_path: Path
) -> None:
    first = hub_server.create_dataset("acme/tickets", {"train.jsonl": jsonl(FIRST)})
    second = hub_server.commit_files("acme/tickets", {"train.jsonl": jsonl(SECOND)}, dataset=True)
    pinned = hub_server.create_dataset(
        "acme/tickets-parquet", {"data/train-00000-of-00001.parquet": parquet(FIRST)}
    )
    answers = load(
        hub_server,
        tmp_path,
        [
            ("acme/tickets", first),
            ("acme/tickets", second),
            ("acme/tickets", "main"),
            ("acme/tickets-parquet", pinned),
            ("acme/tickets", "no-such-branch"),
        ],
        token=None,
    )
    assert answers[0]["rows"] == FIRST
    assert answers[0]["origin"] == f"hub:acme/tickets@{first}[train]"
    assert answers[1]["rows"] == SECOND  # another revision, other rows
    assert answers[2]["rows"] == SECOND  # main is the newest commit
    assert answers[3]["rows"] == FIRST
    assert "spec.dataset" in answers[4]["error"]
    assert "no revision 'no-such-branch'" in answers[4]["error"]
    # The pinned commit is what the client asked the Hub for, not main.
    paths = [r[2] for r in hub_server.requests_to("dataset_info")]
    assert f"/api/datasets/acme/tickets/revision/{first}" in paths


@pytest.mark.parametrize("kind", ["private", "gated"])
def test_private_and_gated_datasets_need_the_read_token(
    kind: str, hub_server: HubServer, tmp_path: Path
) -> None:
    repo = f"acme/{kind}-tickets"
    hub_server.create_dataset(
        repo, {"train.jsonl": jsonl(FIRST)}, private=kind == "private", gated=kind == "gated"
    )
    (with_token,) = load(hub_server, tmp_path / "a", [(repo, "main")], HUB_READ_TOKEN)
    assert with_token["rows"] == FIRST
    (without,) = load(hub_server, tmp_path / "b", [(repo, "main")], None)
    message = without["error"]
    assert message.startswith("spec.dataset: cannot read hub:")
    assert "set spec.dataset.tokenSecret to a Secret holding a Hub read token" in message
    assert "no Hub token was given" in message
    (refused,) = load(hub_server, tmp_path / "c", [(repo, "main")], "hf_not_a_valid_token")
    assert "spec.dataset" in refused["error"] and "spec.dataset.tokenSecret" in refused["error"]
    assert "hf_not_a_valid_token" not in refused["error"]
