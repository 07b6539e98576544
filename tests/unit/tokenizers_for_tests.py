"""Small real tokenizers for data tests, built on the fly (no Hub, no download).

A byte-level BPE trained on a little English, wrapped in `PreTrainedTokenizerFast`, with Llama-2
style special tokens `<s>`, `</s>`, `<pad>` and ChatML markers. `chat_tokenizer()` adds a ChatML
chat template (like SmolLM2's); `plain_tokenizer()` has none, so the `[INST]` template is used.
"""

from __future__ import annotations

import functools
from typing import Any

CORPUS = [
    "Convert to the ticket format: Hi, this is Maria from Lisbon, my kettle broke.",
    "NAME=Maria;CITY=Lisbon;ITEM=kettle",
    "The quick brown fox jumps over the lazy dog. What is the capital of France? Paris.",
    "Summarize the following text in one sentence. Translate to French. Answer briefly.",
    "user assistant system instruction context response prompt text messages",
    "[INST] [/INST] <<SYS>> <</SYS>> 0123456789 ,.;:!?=-_()[]{}<>/'\"",
] * 20

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


@functools.cache
def _tokenizer_file() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return str(tok.to_str())


def _build(chat_template: str | None) -> Any:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=Tokenizer.from_str(_tokenizer_file()),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def plain_tokenizer() -> Any:
    """No chat template: rows render with the `[INST]` template."""
    return _build(None)


def chat_tokenizer() -> Any:
    """A ChatML chat template."""
    return _build(CHATML_TEMPLATE)
