"""Templates, loss masking token by token, the prefix fallback, and the truncation policy."""

from __future__ import annotations

from typing import Any

import pytest

from llamaft_trainer.data import (
    IGNORE_INDEX,
    Conversation,
    Example,
    generation_prompt,
    render_and_tokenize,
    render_row,
)
from llamaft_trainer.data.render import MIN_PROMPT_TOKENS, Rendered, render_inst
from tests.unit.tokenizers_for_tests import chat_tokenizer, plain_tokenizer

pytestmark = pytest.mark.unit

QA = Conversation(messages=(("user", "What is the capital of France?"), ("assistant", "Paris.")))


def encode(tok: Any, text: str) -> list[int]:
    return list(tok.encode(text, add_special_tokens=False))


def assert_masked(example: Example, prompt_ids: list[int], response_ids: list[int]) -> None:
    """Token by token: prompt positions -100, response positions equal to their token."""
    assert example.input_ids == prompt_ids + response_ids
    assert len(example.labels) == len(example.input_ids)
    for i, (token, label) in enumerate(zip(example.input_ids, example.labels, strict=True)):
        expected = IGNORE_INDEX if i < len(prompt_ids) else token
        assert label == expected, f"position {i}"


def trained_tokens(example: Example) -> list[int]:
    return [t for t, lab in zip(example.input_ids, example.labels, strict=True) if lab != -100]


def test_inst_template_text() -> None:
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
        {"role": "assistant", "content": "A2"},
    ]
    assert render_inst(messages, "<s>", "</s>", generation=False) == (
        "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1</s><s>[INST] U2 [/INST] A2</s>"
    )
    assert render_inst(messages[1:2], "<s>", "</s>", generation=True) == "<s>[INST] U1 [/INST]"


def test_inst_template_masks_the_prompt_token_by_token() -> None:
    tok = plain_tokenizer()
    rendered = render_row(tok, QA, max_seq_length=128)
    assert isinstance(rendered, Rendered)
    prompt = encode(tok, "<s>[INST] What is the capital of France? [/INST]")
    assert prompt[0] == tok.bos_token_id
    response = encode(tok, " Paris.</s>")
    assert response[-1] == tok.eos_token_id  # the model learns to stop
    assert_masked(rendered.example, prompt, response)


def test_chat_template_masks_the_prompt_token_by_token() -> None:
    tok = chat_tokenizer()
    rendered = render_row(tok, QA, max_seq_length=128)
    assert isinstance(rendered, Rendered)
    prompt = encode(
        tok, "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert_masked(rendered.example, prompt, encode(tok, "Paris.<|im_end|>\n"))


@pytest.mark.parametrize("make", [plain_tokenizer, chat_tokenizer])
def test_multi_turn_trains_on_every_assistant_turn(make: Any) -> None:
    tok = make()
    conv = Conversation(
        messages=(
            ("system", "Be brief."),
            ("user", "Hi"),
            ("assistant", "Hello"),
            ("user", "Bye"),
            ("assistant", "Bye now"),
        )
    )
    rendered = render_row(tok, conv, max_seq_length=256)
    assert isinstance(rendered, Rendered)
    ex = rendered.example
    trained = [
        t if lab != IGNORE_INDEX else None for t, lab in zip(ex.input_ids, ex.labels, strict=True)
    ]
    spans: list[list[int]] = [[]]
    for t in trained:
        if t is None:
            if spans[-1]:
                spans.append([])
        else:
            spans[-1].append(t)
    texts = [tok.decode(s) for s in spans if s]
    end = "</s>" if tok.chat_template is None else "<|im_end|>\n"
    assert [t.strip() for t in texts] == [f"Hello{end}".strip(), f"Bye now{end}".strip()]


@pytest.mark.parametrize("make", [plain_tokenizer, chat_tokenizer])
def test_generation_prompt_is_the_training_prefix(make: Any) -> None:
    tok = make()
    prompt, reference = generation_prompt(tok, QA)
    assert reference == "Paris."
    rendered = render_row(tok, QA, max_seq_length=128)
    assert isinstance(rendered, Rendered)
    ids = encode(tok, prompt)
    assert rendered.example.input_ids[: len(ids)] == ids
    assert rendered.example.labels[len(ids) - 1] == IGNORE_INDEX
    assert rendered.example.labels[len(ids)] != IGNORE_INDEX


def test_merge_across_the_boundary_falls_back_to_separate_tokenization() -> None:
    # A template that glues the answer to the prompt: "Say t" + "he end" tokenizes as " the"
    # when whole, so the token prefix check fails and the parts are tokenized alone.
    tok = chat_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    conv = Conversation(messages=(("user", "Say t"), ("assistant", "he end")))
    whole = encode(tok, "Say the end")
    assert whole[: len(encode(tok, "Say t"))] != encode(tok, "Say t")  # the premise
    rendered = render_row(tok, conv, max_seq_length=64)
    assert isinstance(rendered, Rendered)
    assert_masked(rendered.example, encode(tok, "Say t"), encode(tok, "he end"))


def test_template_that_is_not_prefix_safe_is_reported() -> None:
    tok = chat_tokenizer()
    tok.chat_template = (
        "{% if add_generation_prompt %}GEN {% endif %}"
        "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    )
    examples, problems = render_and_tokenize(
        [(3, {"prompt": "Q", "response": "A"})], tok, "prompt-response", None, 64
    )
    assert not examples and [(p.line, p.kind) for p in problems] == [(3, "template")]


def test_text_format_trains_on_everything_and_is_cut_at_the_end() -> None:
    tok = plain_tokenizer()
    rendered = render_row(tok, Conversation(text="the quick brown fox"), max_seq_length=64)
    assert isinstance(rendered, Rendered) and not rendered.truncated
    ex = rendered.example
    assert ex.labels == ex.input_ids and ex.input_ids[-1] == tok.eos_token_id
    long = render_row(tok, Conversation(text="the quick brown fox " * 40), max_seq_length=16)
    assert isinstance(long, Rendered) and long.truncated and len(long.example) == 16
    assert long.example.input_ids == encode(tok, "the quick brown fox " * 40)[:16]


@pytest.mark.parametrize("make", [plain_tokenizer, chat_tokenizer])
def test_long_prompt_is_shortened_from_the_left_keeping_the_response(make: Any) -> None:
    tok = make()
    words = " ".join(f"w{i}" for i in range(200))
    conv = Conversation(
        messages=(("system", "Be brief."), ("user", words + " END"), ("assistant", "Paris."))
    )
    full = render_row(tok, conv, max_seq_length=4096)
    assert isinstance(full, Rendered) and len(full.example) > 64
    rendered = render_row(tok, conv, max_seq_length=64)
    assert isinstance(rendered, Rendered) and rendered.truncated
    ex = rendered.example
    assert len(ex) <= 64
    text = tok.decode(ex.input_ids)
    assert "Be brief." in text and "END" in text and "w0 " not in text  # left part dropped
    assert trained_tokens(ex) == trained_tokens(full.example)  # the response is untouched


def test_row_whose_response_does_not_fit_is_dropped_and_reported() -> None:
    tok = plain_tokenizer()
    conv = Conversation(messages=(("user", "Q"), ("assistant", "answer " * 60)))
    problem = render_row(tok, conv, max_seq_length=32, number=5)
    assert not isinstance(problem, Rendered)
    assert (problem.line, problem.kind) == (5, "too-long")
    assert "max_seq_length 32" in problem.message and str(MIN_PROMPT_TOKENS) in problem.message


def test_render_and_tokenize_reports_problems_by_line() -> None:
    rows = [
        (1, {"prompt": "Q", "response": "A"}),
        (2, {"prompt": "Q"}),
        (3, {"prompt": "Q2", "response": "A2"}),
    ]
    examples, problems = render_and_tokenize(rows, plain_tokenizer(), "auto", None, 64)
    assert len(examples) == 2 and [(p.line, p.kind) for p in problems] == [(2, "missing-field")]
