"""The Argo CD health check (deploy/argocd/health-llamafinetune.lua), run by a real Lua 5.1.

Argo CD runs health checks in gopher-lua (Lua 5.1) with the object as the global `obj`; `lupa`
gives us the reference Lua 5.1 interpreter. The status objects are the operator's own: each comes
from driving `reconcile` through a run on the fake world of tests/unit/test_reconcile.py (the
statuses it writes to the API), plus the trainer's `progress` where a running step has one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_reconcile import DATASET, GOLDEN, HUB, STATS, World, body, secret

lupa = pytest.importorskip("lupa.lua51", reason="lupa is in the dev extra: pip install lupa")

pytestmark = pytest.mark.unit
SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "argocd" / "health-llamafinetune.lua"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the health script on `obj` as Argo CD does (JSON round trip: nulls dropped)."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    plain = json.loads(json.dumps(obj))
    lua.globals().obj = lua.table_from(plain, recursive=True)
    result = lua.execute(SCRIPT.read_text())
    out = {k: v for k, v in dict(result).items()}
    assert out["status"] in ARGO_STATUSES
    return out


# --- runs, driven through the real reconcile ------------------------------------------------------


def new_run() -> dict[str, Any]:
    return body()


def validating() -> dict[str, Any]:
    world = World(body())
    world.settle()
    return world.ft


def training_with_progress() -> dict[str, Any]:
    world = World(body())
    world.settle()
    world.succeed("validate", STATS)
    world.settle()
    assert world.phase == "Training"
    # What the trainer patches onto status.progress while it trains.
    world.ft["status"]["progress"] = {"step": 40, "totalSteps": 100, "percent": "40%", "eta": "12m"}
    return world.ft


def succeeded() -> dict[str, Any]:
    world = World(
        body(
            dataset={**DATASET, "goldenSet": GOLDEN},
            evaluation={"gates": [{"metric": "golden.rougeL", "min": 0.3}]},
            publish=HUB,
        ),
        secret("hf-write"),
    )
    world.settle()
    for step, result in [
        ("validate", STATS),
        ("train", {"steps": 10}),
        ("eval", {"metrics": {"golden": {"rougeL": 0.42}, "validation": {"loss": 1.1}}}),
        ("publish", {"repo": "acme/bot", "revision": "main", "commit": "abc123", "url": "u"}),
    ]:
        world.succeed(step, result)
        world.settle()
    assert world.phase == "Succeeded"
    return world.ft


def failed_on_bad_data() -> dict[str, Any]:
    world = World(body())
    world.settle()
    message = "error: row 6: missing field 'response' (train.jsonl)"
    world.fail("validate", "PodFailurePolicy", 2, message)
    world.settle()
    assert world.phase == "Failed"
    return world.ft


def waiting_for_dataset_pvc() -> dict[str, Any]:
    world = World(body())
    del world.objects[("PersistentVolumeClaim", "datasets")]
    world.settle()
    return world.ft


def waiting_for_publish_secret() -> dict[str, Any]:
    world = World(body(publish=HUB))
    world.settle()
    for step, result in [("validate", STATS), ("train", {"steps": 10}), ("eval", {"metrics": {}})]:
        world.succeed(step, result)
        world.settle()
    return world.ft


def suspended() -> dict[str, Any]:
    world = World(body())
    world.settle()
    world.succeed("validate", STATS)
    world.settle()
    world.ft["spec"]["suspend"] = True
    world.ft["metadata"]["generation"] = 2
    world.reconcile()
    assert world.phase == "Suspended"
    return world.ft


def dry_run() -> dict[str, Any]:
    world = World(body(dryRun=True))
    world.settle()
    assert world.phase == "Planned"
    return world.ft


def spec_change_not_yet_observed() -> dict[str, Any]:
    ft = copy.deepcopy(succeeded())
    ft["metadata"]["generation"] = 2
    return ft


def name_taken() -> dict[str, Any]:
    stranger = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ft-plan", "ownerReferences": [{"uid": "someone-else"}]},
        "data": {},
    }
    world = World(body(), stranger)
    world.settle()
    return world.ft


CASES: list[tuple[Callable[[], dict[str, Any]], str, str]] = [
    (new_run, "Progressing", "Waiting for the llamaft operator"),
    (validating, "Progressing", "Validating"),
    (training_with_progress, "Progressing", "Training 40%, ETA 12m"),
    (succeeded, "Healthy", "Succeeded: rougeL=0.42 (published abc123)"),
    (failed_on_bad_data, "Degraded", "row 6"),
    (waiting_for_dataset_pvc, "Progressing", "Waiting: "),
    (waiting_for_publish_secret, "Progressing", "hf-write"),
    (suspended, "Suspended", "spec.suspend"),
    (dry_run, "Healthy", "Planned (dry run)"),
    (spec_change_not_yet_observed, "Progressing", "generation 2"),
    (name_taken, "Degraded", "ft-plan"),
]


@pytest.mark.parametrize(("make", "status", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_health(make: Callable[[], dict[str, Any]], status: str, message: str) -> None:
    obj = make()
    result = health(obj)
    assert result["status"] == status, (result, obj.get("status"))
    assert message in result["message"], (result, obj.get("status"))


def test_every_phase_maps_to_an_argo_status() -> None:
    """Whatever phase the operator reports, the script answers (never a Lua error)."""
    from typing import get_args

    from llamaft_operator.api import Phase

    for phase in get_args(Phase):
        obj = validating()
        obj["status"]["phase"] = phase
        assert health(obj)["status"] in ARGO_STATUSES
