"""Generate the quickstart dataset: free-text support requests -> a fixed ticket format.

    python examples/data/make_quickstart.py   # rewrites quickstart/{train,golden}.jsonl

The task: "Convert to the ticket format: Hi, this is Maria from Lisbon, my kettle broke." ->
`NAME=Maria;CITY=Lisbon;ITEM=kettle`. The name, city and item come in varying orders and
phrasings, so the model must find each one rather than copy positions; the output format is
made up, so a base model cannot produce it zero-shot, and answers are short (about 12 tokens) so
golden exact match is reachable after a few minutes of LoRA on CPU. Entities are drawn from fixed
lists; golden rows use (name, city, item) combinations that never appear in training.
Deterministic: the same seed always writes the same bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20261123
TRAIN_ROWS = 480
GOLDEN_ROWS = 30
INSTRUCTION = "Convert to the ticket format: "
OUT = Path(__file__).resolve().parent / "quickstart"

NAMES = [
    "Maria", "John", "Aisha", "Liam", "Sofia", "Chen", "Olga", "Pedro", "Yuki", "Amara",
    "Noah", "Emma", "Ravi", "Lena", "Omar", "Grace", "Ivan", "Zoe", "Hugo", "Nina",
    "Mateo", "Elif", "Kofi", "Anna", "Leo", "Mia", "Sven", "Priya", "Jonas", "Clara",
]  # fmt: skip
CITIES = [
    "Lisbon", "Paris", "Berlin", "Madrid", "Rome", "Oslo", "Dublin", "Vienna", "Prague", "Warsaw",
    "Athens", "Cairo", "Tokyo", "Seoul", "Lima", "Quito", "Nairobi", "Dakar", "Austin", "Denver",
    "Boston", "Toronto", "Sydney", "Perth",
]  # fmt: skip
ITEMS = [
    "kettle", "laptop", "printer", "phone", "toaster", "monitor", "router", "camera", "blender",
    "heater", "speaker", "keyboard", "tablet", "fridge", "lamp", "drill", "scanner", "watch",
    "charger", "headset", "microwave", "projector",
]  # fmt: skip
PROBLEMS = ["broke", "stopped working", "will not turn on", "makes a strange noise", "is faulty"]
TEMPLATES = [
    "Hi, this is {name} from {city}, my {item} {problem}.",
    "Hello, {name} here. I live in {city} and my {item} {problem}.",
    "My {item} {problem}. Name: {name}, city: {city}.",
    "Customer {name} ({city}) reports that the {item} {problem}.",
    "{city} office: {name} says the {item} {problem}, please help.",
    "The {item} {problem}! Please call {name} in {city}.",
    "Good morning. I am {name}, writing from {city}. The {item} I bought {problem}.",
    "Ticket request from {name}: {item} {problem} (location {city}).",
    "In {city}, the {item} of {name} {problem}.",
    "Dear support, my {item} {problem}. Regards, {name}, {city}",
]


def row(rng: random.Random, name: str, city: str, item: str) -> dict[str, str]:
    template = rng.choice(TEMPLATES)
    text = template.format(name=name, city=city, item=item, problem=rng.choice(PROBLEMS))
    return {"prompt": INSTRUCTION + text, "response": f"NAME={name};CITY={city};ITEM={item}"}


def main() -> None:
    rng = random.Random(SEED)
    combos = [(n, c, i) for n in NAMES for c in CITIES for i in ITEMS]
    rng.shuffle(combos)
    golden = [row(rng, *combo) for combo in combos[:GOLDEN_ROWS]]
    train = [row(rng, *combo) for combo in combos[GOLDEN_ROWS : GOLDEN_ROWS + TRAIN_ROWS]]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("golden.jsonl", golden)):
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (OUT / name).write_text(lines, encoding="utf-8")
        print(f"wrote {len(rows)} rows to {OUT / name}")


if __name__ == "__main__":
    main()
