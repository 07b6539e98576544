"""The model cache under concurrent writers: the ranks of a multi-node run share one cache.

Found by the two-node e2e: rank 1 loaded the built-in checkpoint while rank 0 was still writing it
("Should have a `model_type` key in its config.json"). Copies are now built privately and
installed with one rename, marker included.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from llamaft_trainer.model_cache import (
    MODEL_CACHE_ENV,
    complete_marker,
    install,
    partial_dir,
)
from tests.unit.trainer_helpers import tiny_plan, write_plan


def _build_and_load(plan_path: str, cache: str, start: object) -> str:
    os.environ[MODEL_CACHE_ENV] = cache
    from transformers import AutoConfig

    from llamaft_trainer import models
    from llamaft_trainer.config import RunPlan

    plan = RunPlan.load(Path(plan_path))
    start.wait()  # type: ignore[attr-defined]
    path = models._tiny_checkpoint(plan)
    # What rank 1 did: read the copy the moment it is visible.
    return str(AutoConfig.from_pretrained(path).model_type)


@pytest.mark.unit
def test_concurrent_ranks_never_see_a_half_written_builtin_model(tmp_path: Path) -> None:
    plan_path = write_plan(tiny_plan(), tmp_path / "plan")
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Event()
        with ctx.Pool(4) as pool:
            results = [
                pool.apply_async(_build_and_load, (str(plan_path), str(cache), start))
                for _ in range(4)
            ]
            start.set()
            types = [r.get(timeout=240) for r in results]
    assert types == ["llama"] * 4
    copies = list(cache.iterdir())
    assert len(copies) == 1, copies  # no partial directories left behind
    assert complete_marker(copies[0]) == {"source": "random init"}


@pytest.mark.unit
def test_install_keeps_the_first_copy_and_replaces_an_unmarked_one(tmp_path: Path) -> None:
    target = tmp_path / "m@main"
    target.mkdir()
    (target / "config.json").write_text("{")  # a killed writer's leftover: no marker
    first = partial_dir(target)
    (first / "config.json").write_text(json.dumps({"n": 1}))
    install(first, target, {"writer": 1})
    assert json.loads((target / "config.json").read_text()) == {"n": 1}

    second = partial_dir(target)
    (second / "config.json").write_text(json.dumps({"n": 2}))
    install(second, target, {"writer": 2})
    # The copy readers may already hold is never replaced under them.
    assert json.loads((target / "config.json").read_text()) == {"n": 1}
    assert complete_marker(target) == {"writer": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m@main"]


def _rank_builds_its_own_copy(rank: int, plan_path: str, root: str) -> str:
    import torch.distributed as dist

    os.environ[MODEL_CACHE_ENV] = f"{root}/pod-{rank}"  # each pod has its own /tmp cache
    dist.init_process_group("gloo", init_method=f"file://{root}/rdzv", rank=rank, world_size=2)
    try:
        from transformers import AutoModelForCausalLM

        from llamaft_trainer import models
        from llamaft_trainer.config import RunPlan

        path = models._tiny_checkpoint(RunPlan.load(Path(plan_path)))
        model = AutoModelForCausalLM.from_pretrained(path)
        return f"{model.config.model_type}:{sum(p.numel() for p in model.parameters())}"
    finally:
        dist.destroy_process_group()


@pytest.mark.unit
def test_every_rank_of_a_multi_node_run_builds_a_loadable_copy(tmp_path: Path) -> None:
    # transformers' save_pretrained writes nothing on ranks > 0 once torch.distributed is up;
    # rank 1 of the two-node e2e then found a copy with only our marker in it.
    plan_path = write_plan(tiny_plan(), tmp_path / "plan")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = [
            pool.apply_async(_rank_builds_its_own_copy, (rank, str(plan_path), str(tmp_path)))
            for rank in (0, 1)
        ]
        loaded = [r.get(timeout=240) for r in results]
    assert loaded[0] == loaded[1] and loaded[0].startswith("llama:")
    assert int(loaded[0].split(":")[1]) > 0
