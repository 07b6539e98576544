"""The attention implementation the models module picks: flash-attention 2 only with CUDA and an
importable `flash_attn`, SDPA otherwise. No GPU is used here; the GPU path is the table's row
(cuda=True, flash_attn=True), not a run on a GPU."""

from __future__ import annotations

import sys
import types

import pytest

from llamaft_trainer import models
from tests.unit.trainer_helpers import tiny_plan

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("cuda", "flash_attn", "expected"),
    [
        (True, True, "flash_attention_2"),
        (True, False, "sdpa"),
        (False, True, "sdpa"),
        (False, False, "sdpa"),
    ],
)
def test_choice_table(cuda: bool, flash_attn: bool, expected: str) -> None:
    assert models.choose_attn_implementation(cuda=cuda, flash_attn=flash_attn) == expected


def test_flash_attn_that_fails_to_import_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # sys.modules[name] = None makes `import name` raise ImportError: the same as a flash_attn
    # wheel built for another torch, whose import fails.
    monkeypatch.setitem(sys.modules, "flash_attn", None)
    assert models.flash_attn_importable() is False
    assert models.attn_implementation("cuda:0") == "sdpa"


def test_cpu_never_uses_flash_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    # Even where a flash_attn module imports, a CPU model gets SDPA.
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    assert models.flash_attn_importable() is True
    assert models.attn_implementation("cpu") == "sdpa"


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_loaded_models_use_the_chosen_implementation(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        models.load_base_model(
            tiny_plan(method), device="cpu", for_training=True
        ).config._attn_implementation
        == "sdpa"
    )
    # The choice reaches the model: make it pick `eager` (a kernel that runs on CPU; the
    # transformers default would be sdpa) and load again.
    monkeypatch.setattr(models, "attn_implementation", lambda device: "eager")
    model = models.load_base_model(tiny_plan(method), device="cpu", for_training=True)
    assert model.config._attn_implementation == "eager"
