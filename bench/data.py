"""Synthetic instruction data with a realistic length distribution, for the benchmarks.

Throughput depends on how many tokens each row has, not on what they say, so the rows are random
words with lengths drawn like a public instruction-tuning set's:

- total length (prompt + response, in tokens of the model's tokenizer) is log-normal with
  median 170 and sigma 0.8, clipped to [20, 1500]: mean ~230 tokens, ~80% of rows between 50 and
  400, ~14% above 400 and ~1.5% above 1,000. That is the shape of Dolly-15k /
  OpenAssistant-style sets (a log-normal body of short to medium rows, a long tail of
  long-context rows such as summarisation or closed QA); Alpaca is shorter (mean ~100-150
  tokens), OASST answers longer. The parameters are set by hand to that shape, not fitted to a
  download (this machine reaches only PyPI).
- the response takes 30-80% of the row (uniform), at most `max_response` tokens (half the
  sequence length in the benchmarks, so every row fits after its prompt is shortened, as our
  data pipeline requires); the rest is the prompt. Long rows are thus long-context rows.

`describe` reports the token statistics a benchmark actually saw (after tokenisation), and the
benchmarks print them next to their results. `token_rows` draws token ids directly from the same
distribution for the GPU benchmark, which has no tokenizer for an 8B-shaped random model.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path
from typing import Any

MEDIAN_WORDS = 170
SIGMA = 0.8
MIN_WORDS, MAX_WORDS = 20, 1500

WORDS = """
the a of to and in is for on that with as are this be by it from or at an was which customer order
kettle printer Lisbon Warsaw broken please help ticket summary answer explain data model train
token response prompt instruction context question reason water river city number because
""".split()  # noqa: SIM905 - a readable word list


def sample_length(rng: random.Random) -> int:
    """One row's total length in words (~ tokens)."""
    return max(MIN_WORDS, min(MAX_WORDS, int(rng.lognormvariate(math.log(MEDIAN_WORDS), SIGMA))))


def _split(total: int, rng: random.Random, max_response: int) -> tuple[int, int]:
    response = min(max_response, max(5, int(total * rng.uniform(0.3, 0.8))))
    return max(5, total - response), response


def rows(
    n: int, seed: int = 0, tokens_per_word: float = 1.0, max_response: int = 256
) -> list[dict[str, str]]:
    """`n` prompt/response rows of random words; lengths are drawn in tokens and turned into
    words with the tokenizer's `tokens_per_word` (see `tokens_per_word`)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt_len, response_len = _split(sample_length(rng), rng, max_response)
        prompt_len = max(3, round(prompt_len / tokens_per_word))
        response_len = max(3, round(response_len / tokens_per_word))
        prompt = " ".join(rng.choice(WORDS) for _ in range(prompt_len))
        response = " ".join(rng.choice(WORDS) for _ in range(response_len))
        out.append({"prompt": prompt, "response": response})
    return out


def tokens_per_word(tokenizer: Any) -> float:
    """How many tokens `tokenizer` spends on one of our words, on average."""
    sample = rows(64, seed=12345)
    text = " ".join(r["prompt"] + " " + r["response"] for r in sample)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) / len(text.split())


def token_rows(
    n: int, vocab: int, seed: int = 0, max_response: int = 1024
) -> list[tuple[list[int], int]]:
    """`n` rows of random token ids: (input_ids, number of prompt tokens at the start)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt_len, response_len = _split(sample_length(rng), rng, max_response)
        ids = [rng.randrange(3, vocab) for _ in range(prompt_len + response_len)]
        out.append((ids, prompt_len))
    return out


def describe(lengths: list[int]) -> dict[str, float]:
    """Token statistics of a set of rows: mean, median, p90, max, share in 50-400 and above."""
    if not lengths:
        return {}
    ordered = sorted(lengths)
    n = len(ordered)
    return {
        "rows": n,
        "meanTokens": round(statistics.fmean(ordered), 1),
        "medianTokens": float(ordered[n // 2]),
        "p90Tokens": float(ordered[min(n - 1, int(0.9 * n))]),
        "maxTokens": float(ordered[-1]),
        "share50to400": round(sum(50 <= x <= 400 for x in ordered) / n, 2),
        "shareOver400": round(sum(x > 400 for x in ordered) / n, 2),
    }


def write_jsonl(path: Path, data: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in data))


if __name__ == "__main__":
    words = [sample_length(random.Random(i)) for i in range(20000)]
    print(json.dumps(describe(words), indent=2))
