"""Render conversations to tokens with the loss on the response only, and truncate long rows.

Template: the tokenizer's chat template when it has one (`tokenizer.chat_template`), else the
Llama-2 `[INST]` template (as in seed 003), with the tokenizer's own BOS/EOS text:
    {bos}[INST] {prompt} [/INST] {response}{eos}
    {bos}[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{prompt} [/INST] {response}{eos}  (system)
and one `{bos}[INST] ... [/INST] ...{eos}` block per further turn. Generation prompts end at
`[/INST]`. Rendered text is tokenized with `add_special_tokens=False`: the template carries them.

Loss masking: labels are -100 except on assistant turns (and their end-of-turn tokens, so the model
learns to stop). The boundary of each assistant turn comes from rendering the conversation up to
it with `add_generation_prompt=True` and checking that this render is a prefix of the full render,
first as text and then as tokens. When a tokenizer merges across the boundary (the token prefix
check fails) the parts are tokenized separately and concatenated, which is exactly what the model
sees at generation time (prompt tokens, then its own tokens). A template that does not render a
conversation's earlier turns as a prefix of the whole trains on the last assistant turn only.

Truncation policy for rows longer than `max_seq_length` tokens:
- `text`: cut at the end (the beginning is kept); counted in the stats as truncated, not bad.
- one user turn (prompt-response, instruction, single-turn messages): the prompt text is shortened
  from the left (its oldest part goes first); the template, the system prompt and the response are
  always kept whole. If fewer than MIN_PROMPT_TOKENS of the prompt would remain, the row is
  dropped and reported as `too-long`.
- multi-turn messages: dropped and reported as `too-long` (cutting turns changes what they mean).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llamaft_trainer.data.formats import Conversation, Message
from llamaft_trainer.data.types import IGNORE_INDEX, TEMPLATE, TOO_LONG, Example, RowProblem, Unit

MIN_PROMPT_TOKENS = 8
TRUNCATION_ATTEMPTS = 4


@dataclass(frozen=True)
class Rendered:
    """A tokenized row and whether the truncation policy shortened it."""

    example: Example
    truncated: bool = False


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_inst(messages: Sequence[Message], bos: str, eos: str, generation: bool) -> str:
    """The documented `[INST]` template; `generation` has no effect (prompts end at `[/INST]`)."""
    del generation  # the template's generation prompt is the end of `[/INST]` itself
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    out: list[str] = []
    first = True
    for message in messages:
        if message["role"] == "user":
            content = message["content"]
            if first and system is not None:
                content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
            out.append(f"{bos}[INST] {content} [/INST]")
            first = False
        elif message["role"] == "assistant":
            out.append(f" {message['content']}{eos}")
    return "".join(out)


def render_text(tokenizer: Any, messages: Sequence[Message], generation: bool) -> str:
    """The conversation as the text the model sees; with `generation`, ready for its answer."""
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=generation
        )
        return str(text)
    bos = getattr(tokenizer, "bos_token", None) or ""
    eos = getattr(tokenizer, "eos_token", None) or ""
    return render_inst(messages, str(bos), str(eos), generation)


def generation_prompt(tokenizer: Any, conversation: Conversation) -> tuple[str, str]:
    """(prompt text to generate from, reference answer) for a conversation's last turn.

    Tokenize the prompt with `add_special_tokens=False`: the template already holds them.
    """
    messages = conversation.as_messages()
    return render_text(tokenizer, messages[:-1], generation=True), messages[-1]["content"]


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _spans(tokenizer: Any, messages: list[Message]) -> tuple[str, list[tuple[int, int]]] | None:
    """The full render and the character spans trained on; None if not prefix-safe."""
    full = render_text(tokenizer, messages, generation=False)
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    spans: list[tuple[int, int]] = []
    end = 0
    for i in assistants:
        prompt = render_text(tokenizer, messages[:i], generation=True)
        through = render_text(tokenizer, messages[: i + 1], generation=False)
        if not (prompt.startswith(full[:end]) and through.startswith(prompt)):
            break
        if not full.startswith(through):
            break
        spans.append((len(prompt), len(through)))
        end = len(through)
    else:
        return full, spans
    # Not prefix-safe turn by turn (e.g. a template that rewrites earlier turns): last turn only.
    prompt = render_text(tokenizer, messages[: assistants[-1]], generation=True)
    if not full.startswith(prompt):
        return None
    return full, [(len(prompt), len(full))]


def tokenize_conversation(tokenizer: Any, messages: list[Message]) -> Example | str:
    """Tokens and labels of a conversation, or why the template cannot be used for it."""
    rendered = _spans(tokenizer, messages)
    if rendered is None:
        return (
            "the chat template does not render the prompt as a prefix of the conversation, so the "
            "response cannot be located: use a tokenizer whose template does, or the text format"
        )
    full, spans = rendered
    cuts = sorted({0, len(full), *[p for span in spans for p in span]})
    ids = _encode(tokenizer, full)
    boundaries: list[int] = []
    for cut in cuts[1:-1]:
        prefix = _encode(tokenizer, full[:cut])
        if ids[: len(prefix)] != prefix:
            boundaries = []
            break
        boundaries.append(len(prefix))
    else:
        boundaries = [0, *boundaries, len(ids)]
    if not boundaries:
        # A merge across a boundary: tokenize each part alone (what generation sees).
        pieces = [_encode(tokenizer, full[a:b]) for a, b in itertools.pairwise(cuts)]
        ids = [t for piece in pieces for t in piece]
        boundaries = [0]
        for piece in pieces:
            boundaries.append(boundaries[-1] + len(piece))
    trained = {(a, b) for a, b in spans}
    labels: list[int] = []
    for (a, b), (ta, tb) in zip(
        itertools.pairwise(cuts),
        itertools.pairwise(boundaries),
        strict=True,
    ):
        on = any(sa <= a and b <= sb for sa, sb in trained)
        labels.extend(ids[ta:tb] if on else [IGNORE_INDEX] * (tb - ta))
    return Example(input_ids=ids, labels=labels)


def tokenize_text(tokenizer: Any, text: str, max_seq_length: int) -> Rendered:
    ids = list(tokenizer.encode(text, add_special_tokens=True))
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(int(eos))
    truncated = len(ids) > max_seq_length
    ids = ids[:max_seq_length]
    return Rendered(Example(input_ids=ids, labels=list(ids)), truncated)


def render_row(
    tokenizer: Any,
    conversation: Conversation,
    max_seq_length: int,
    number: int = 0,
    unit: Unit = "line",
) -> Rendered | RowProblem:
    """One normalised row as an Example under the truncation policy, or the problem with it."""
    if conversation.text is not None:
        return tokenize_text(tokenizer, conversation.text, max_seq_length)
    messages = conversation.as_messages()
    example = tokenize_conversation(tokenizer, messages)
    if isinstance(example, str):
        return RowProblem(number, TEMPLATE, example, unit=unit)
    if len(example) <= max_seq_length:
        return Rendered(example)
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    original = len(example)
    if len(users) == 1:
        shortened = _shorten_prompt(tokenizer, messages, users[0], example, max_seq_length)
        if shortened is not None:
            return Rendered(shortened, truncated=True)
        why = f"the response and template leave fewer than {MIN_PROMPT_TOKENS} prompt tokens"
    else:
        why = "multi-turn conversations are not truncated"
    response = sum(label != IGNORE_INDEX for label in example.labels)
    return RowProblem(
        number,
        TOO_LONG,
        f"{original} tokens > max_seq_length {max_seq_length} ({response} of them trained on): "
        f"{why}; shorten the row or raise training.maxSeqLength",
        unit=unit,
    )


def _shorten_prompt(
    tokenizer: Any, messages: list[Message], user: int, example: Example, max_seq_length: int
) -> Example | None:
    """Drop the left part of the user's text until the example fits; None if too little is left."""
    content_ids = _encode(tokenizer, messages[user]["content"])
    keep = len(content_ids)
    for _ in range(TRUNCATION_ATTEMPTS):
        # Re-tokenizing decoded text can shift a token or two, hence a few rounds.
        keep -= len(example) - max_seq_length
        if keep < MIN_PROMPT_TOKENS:
            return None
        shortened = list(messages)
        text = tokenizer.decode(content_ids[-keep:], skip_special_tokens=False)
        shortened[user] = {"role": "user", "content": str(text).lstrip()}
        result = tokenize_conversation(tokenizer, shortened)
        if isinstance(result, str):
            return None
        example = result
        if len(example) <= max_seq_length:
            return example
        keep -= 1
    return None
