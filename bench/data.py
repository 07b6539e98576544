"""Synthetic instruction data with a realistic length distribution, for the benchmarks.

Lengths (prompt + response, in words ~ tokens) follow a log-normal fitted by eye to public
instruction-tuning sets such as Alpaca and Dolly: most rows 50-400 tokens, a long tail to 1,500
(median ~150, mean ~200). The text is random words, which is all a throughput benchmark needs.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

WORDS = """
the a of to and in is for on that with as are this be by it from or at an was which customer order
kettle printer Lisbon Warsaw broken please help ticket summary answer explain data model train
token response prompt instruction context question reason
""".split()  # noqa: SIM905 - a readable word list


def sample_length(rng: random.Random) -> int:
    return max(20, min(1500, int(rng.lognormvariate(math.log(150), 0.75))))


def rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        total = sample_length(rng)
        response_len = max(5, min(150, int(total * rng.uniform(0.2, 0.6))))
        prompt = " ".join(rng.choice(WORDS) for _ in range(total - response_len))
        response = " ".join(rng.choice(WORDS) for _ in range(response_len))
        out.append({"prompt": prompt, "response": response})
    return out


def write_jsonl(path: Path, data: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
