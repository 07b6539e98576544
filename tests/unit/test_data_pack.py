"""Padding-free packing: no padding, positions restart, and attention never crosses examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from llamaft_trainer.data import (
    IGNORE_INDEX,
    Example,
    PackingCollator,
    render_and_tokenize,
    token_budget_batches,
)
from tests.unit.tokenizers_for_tests import chat_tokenizer, plain_tokenizer

pytestmark = pytest.mark.unit

QUICKSTART = Path(__file__).resolve().parents[2] / "examples/data/quickstart/train.jsonl"


def quickstart_examples(tok: Any, n: int) -> list[Example]:
    lines = QUICKSTART.read_text().splitlines()[:n]
    rows = [(i, json.loads(line)) for i, line in enumerate(lines, start=1)]
    examples, problems = render_and_tokenize(rows, tok, "prompt-response", None, 256)
    assert not problems
    return examples


def test_collator_concatenates_without_padding() -> None:
    tok = plain_tokenizer()
    examples = quickstart_examples(tok, 3)
    batch = PackingCollator(pad_token_id=tok.pad_token_id)(examples)
    total = sum(len(e) for e in examples)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "input_ids": (1, total),
        "labels": (1, total),
        "position_ids": (1, total),
    }
    assert tok.pad_token_id not in batch["input_ids"].tolist()[0]
    starts = [0, len(examples[0]), len(examples[0]) + len(examples[1])]
    positions = batch["position_ids"][0].tolist()
    assert [i for i, p in enumerate(positions) if p == 0] == starts
    labels = batch["labels"][0].tolist()
    assert all(labels[s] == IGNORE_INDEX for s in starts)
    assert labels == [lab for e in examples for lab in [IGNORE_INDEX, *e.labels[1:]]]


def test_collator_matches_transformers_flattening_collator() -> None:
    from transformers import DataCollatorWithFlattening

    examples = quickstart_examples(chat_tokenizer(), 4)
    ours = PackingCollator(pad_token_id=0)(examples)
    theirs = DataCollatorWithFlattening(return_tensors="pt")(  # type: ignore[no-untyped-call]
        [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    )
    for key in ("input_ids", "labels", "position_ids"):
        assert torch.equal(ours[key], theirs[key]), key


def test_unpacked_mode_pads_and_masks() -> None:
    examples = [Example([5, 6, 7], [-100, 6, 7]), Example([8], [-100])]
    batch = PackingCollator(pad_token_id=0, packing=False)(examples)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def tiny_llama(vocab_size: int, attn: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=vocab_size,
        max_position_embeddings=512,
        attn_implementation=attn,  # type: ignore[call-arg]
    )
    model = LlamaForCausalLM(config).eval()  # type: ignore[no-untyped-call]
    assert model.config._attn_implementation == attn
    return model


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_and_loss_match_unpacked(attn: str) -> None:
    tok = chat_tokenizer()
    examples = quickstart_examples(tok, 5)
    model = tiny_llama(len(tok), attn)
    batch = PackingCollator(pad_token_id=tok.pad_token_id)(examples)
    with torch.no_grad():
        # use_cache=False is required: with the cache on, packed examples attend to each other.
        packed = model(**batch, use_cache=False)
        offset = 0
        losses, counts = [], []
        for example in examples:
            ids = torch.tensor([example.input_ids])
            alone = model(input_ids=ids, labels=torch.tensor([example.labels]), use_cache=False)
            n = len(example)
            sliced = packed.logits[0, offset : offset + n]
            assert torch.allclose(sliced, alone.logits[0], atol=1e-5), (attn, offset)
            # The same example's loss computed from the packed logits.
            labels = torch.tensor(example.labels[1:])
            loss = torch.nn.functional.cross_entropy(sliced[:-1], labels, ignore_index=-100)
            assert torch.allclose(loss, alone.loss, atol=1e-5)
            losses.append(alone.loss * (labels != -100).sum())
            counts.append((labels != -100).sum())
            offset += n
    # And the packed batch's own loss is the token-weighted mean of the per-example losses.
    assert torch.allclose(packed.loss, sum(losses) / sum(counts), atol=1e-5)


def test_the_comparison_detects_cross_attention() -> None:
    # Negative control: the same packed row without restarting positions is one long causal
    # sequence, so the second example sees the first and its logits differ.
    tok = chat_tokenizer()
    first, second = quickstart_examples(tok, 2)
    model = tiny_llama(len(tok), "sdpa")
    batch = PackingCollator(pad_token_id=tok.pad_token_id)([first, second])
    with torch.no_grad():
        joined = model(input_ids=batch["input_ids"], use_cache=False).logits[0, len(first) :]
        alone = model(input_ids=torch.tensor([second.input_ids]), use_cache=False).logits[0]
    assert not torch.allclose(joined, alone, atol=1e-3)


def test_budget_batches_cover_every_example_once_within_the_budget() -> None:
    lengths = [7, 120, 33, 64, 64, 1, 90, 128, 17, 50] * 7
    examples = [Example([1] * n, [1] * n) for n in lengths]
    batches = token_budget_batches(examples, max_tokens=128, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(examples)))
    assert all(sum(lengths[i] for i in b) <= 128 for b in batches)
    # First-fit decreasing packs well: within one batch of the lower bound.
    assert len(batches) <= -(-sum(lengths) // 128) + 2


def test_budget_batches_are_deterministic_per_seed_and_epoch() -> None:
    examples = [Example([1] * n, [1] * n) for n in range(1, 60)]
    a = token_budget_batches(examples, 100, seed=3, epoch=0)
    assert a == token_budget_batches(examples, 100, seed=3, epoch=0)
    assert a != token_budget_batches(examples, 100, seed=3, epoch=1)
    assert a != token_budget_batches(examples, 100, seed=4, epoch=0)


def test_budget_smaller_than_an_example_is_an_error() -> None:
    with pytest.raises(ValueError, match="more than the micro-batch budget"):
        token_budget_batches([Example([1] * 10, [1] * 10)], 8, seed=0, epoch=0)
