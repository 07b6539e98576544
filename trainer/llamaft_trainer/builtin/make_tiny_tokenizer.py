"""Regenerate the built-in tiny model's tokenizer (committed under `tiny-llama/`).

    python trainer/llamaft_trainer/builtin/make_tiny_tokenizer.py

A 2,048-entry byte-level BPE (any text encodes; nothing is out of vocabulary) trained on the
quickstart data plus a little English, with a ChatML chat template like SmolLM2's. It exists so
`builtin:tiny-llama` runs with no download at all: tests and a first run on a laptop.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
VOCAB = 2048
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Summarize the following text in one sentence. Answer the question briefly.",
    "Please help me, my order arrived broken and I would like a replacement.",
    "Translate to French: good morning. Explain why the sky is blue.",
    "You are a helpful assistant. Instruction, context and response.",
]


def corpus() -> list[str]:
    lines = list(ENGLISH) * 10
    for name in ("train.jsonl", "golden.jsonl"):
        for line in (REPO / "examples" / "data" / "quickstart" / name).read_text().splitlines():
            row = json.loads(line)
            lines += [row["prompt"], row["response"]]
    return lines


def main() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    fast.save_pretrained(HERE / "tiny-llama")


if __name__ == "__main__":
    main()
