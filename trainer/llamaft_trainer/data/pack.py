"""Padding-free packing: several examples in one row, attention kept inside each example.

`PackingCollator` concatenates a micro-batch into a single row of shape [1, total_tokens] with
`position_ids` restarting at 0 for each example and label -100 on each example's first token (so
no example learns to predict the next one's start). No padding token is ever added. transformers
turns restarting position ids into a block-diagonal attention mask (eager, SDPA) or
flash-attention varlen lengths, so attention never crosses an example boundary — but only with
`use_cache=False` (docs FACTS.md: with the cache on, packed examples attend to each other).
`Trainer` disables the cache itself; a custom loop must pass `use_cache=False`.
This is what transformers' `DataCollatorWithFlattening` does (tests check both agree); ours avoids
importing transformers in the collator and works on our `Example`s.

`token_budget_batches` groups examples of similar length and fills each micro-batch up to a token
budget (per_device_batch_size x max_seq_length), so a micro-batch costs about the same whatever
the lengths.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from llamaft_trainer.data.types import IGNORE_INDEX, Example

if TYPE_CHECKING:
    import torch

# Examples are length-sorted within windows of this many (after a seeded shuffle): enough to find
# good fits, few enough that batches still mix the dataset.
GROUPING_WINDOW = 1024


class PackingCollator:
    """Examples -> {input_ids, labels, position_ids}, each of shape [1, total_tokens].

    With `packing=False` it pads to the longest example with `pad_token_id` instead and adds an
    `attention_mask` (for `training.packing: false`; padding positions get label -100).
    """

    def __init__(self, pad_token_id: int, packing: bool = True) -> None:
        self.pad_token_id = pad_token_id
        self.packing = packing

    def __call__(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        import torch

        if not examples:
            raise ValueError("cannot collate an empty micro-batch")
        if not self.packing:
            return self._padded(examples)
        input_ids: list[int] = []
        labels: list[int] = []
        position_ids: list[int] = []
        for example in examples:
            input_ids.extend(example.input_ids)
            labels.append(IGNORE_INDEX)
            labels.extend(example.labels[1:])
            position_ids.extend(range(len(example.input_ids)))
        return {
            "input_ids": torch.tensor([input_ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([position_ids], dtype=torch.long),
        }

    def _padded(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(e.input_ids) for e in examples)
        pad = [width - len(e.input_ids) for e in examples]
        return {
            "input_ids": torch.tensor(
                [e.input_ids + [self.pad_token_id] * p for e, p in zip(examples, pad, strict=True)]
            ),
            "labels": torch.tensor(
                [e.labels + [IGNORE_INDEX] * p for e, p in zip(examples, pad, strict=True)]
            ),
            "attention_mask": torch.tensor(
                [[1] * len(e.input_ids) + [0] * p for e, p in zip(examples, pad, strict=True)]
            ),
        }


def token_budget_batches(
    examples: Sequence[Example], max_tokens: int, seed: int, epoch: int
) -> list[list[int]]:
    """Indices of each micro-batch: every example once, each batch <= max_tokens tokens.

    Deterministic in (seed, epoch): shuffle, sort by length inside windows, first-fit-decreasing
    into batches, then shuffle the batches so long and short ones alternate over the epoch.
    """
    lengths = [len(e.input_ids) for e in examples]
    too_long = [i for i, n in enumerate(lengths) if n > max_tokens]
    if too_long:
        raise ValueError(
            f"example {too_long[0]} has {lengths[too_long[0]]} tokens, more than the micro-batch "
            f"budget {max_tokens}: truncate examples to max_seq_length first"
        )
    rng = random.Random(f"llamaft:{seed}:{epoch}")
    order = list(range(len(examples)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), GROUPING_WINDOW):
        window = sorted(order[start : start + GROUPING_WINDOW], key=lambda i: -lengths[i])
        bins: list[list[int]] = []
        room: list[int] = []
        for i in window:
            for b, free in enumerate(room):
                if lengths[i] <= free:
                    bins[b].append(i)
                    room[b] -= lengths[i]
                    break
            else:
                bins.append([i])
                room.append(max_tokens - lengths[i])
        batches.extend(bins)
    rng.shuffle(batches)
    return batches
