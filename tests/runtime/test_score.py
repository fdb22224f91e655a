"""Scoring through the runtime's backends (runtime/score.py): every format's `logits` agrees
with torch within the parity gate's bars, `greedy` is the served decode loop's reply, and
decoding after `logits` is what it was before."""

from __future__ import annotations

import numpy as np
import pytest

from balabol.manifest import FORMATS
from balabol.prompt import encode_text
from export.parity import Reference, judge, measure
from runtime import GenerationConfig, load
from runtime.score import log_softmax, nll, perplexity, reply_text
from tests.conftest import TINY_GATES

MESSAGES = [{"role": "user", "content": "Hello there, 12345 🚀"}]
GREEDY = GenerationConfig.greedy(24)


@pytest.fixture(scope="module")
def opened(exported_llama, exported_lstm):
    """open(model, fmt) -> the backend `load` gives, each opened once."""
    roots = {"llama": exported_llama[0], "lstm": exported_lstm[0]}
    cache = {}

    def get(model: str, fmt: str):
        if (model, fmt) not in cache:
            cache[model, fmt] = load(model, fmt, root=roots[model])
        return cache[model, fmt]

    yield get
    for b in cache.values():
        b.close()


@pytest.fixture(scope="module")
def references(opened):
    """The gate's torch reference for each tiny model, built by the torch backend."""
    made = {}

    def get(model: str) -> Reference:
        if model not in made:
            torch = opened(model, "torch")
            # the held-out text cut to the served context (llama.cpp's is that long)
            made[model] = Reference.build(
                torch, torch.tokenizer, max_text_tokens=torch.context_length - 1
            )
        return made[model]

    return get


CASES = [("llama", f) for f in FORMATS if f != "torch"] + [
    ("lstm", "onnx"),
    ("lstm", "onnx-int8"),
]


@pytest.mark.parametrize(("model", "fmt"), CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_logits_of_every_format_agree_with_torch_within_the_gate(opened, references, model, fmt):
    backend = opened(model, fmt)
    ids = encode_text(backend.tokenizer, "The sea was calm that morning.")
    got = backend.logits(ids)
    assert got.dtype == np.float32 and got.shape[0] == len(ids)
    assert got.shape[1] >= len(backend.tokenizer)  # GGUF may pad the vocabulary
    assert judge(measure(backend, references(model)), TINY_GATES[fmt]) == []


@pytest.mark.parametrize("model", ["llama", "lstm"])
def test_torch_logits_are_the_decode_loops_logits(opened, model):
    """logits() of a whole sequence = the prefill/step logits the bot samples from."""
    backend = opened(model, "torch")
    ids = backend.encode_chat(MESSAGES)
    full = backend.logits(ids)
    np.testing.assert_allclose(backend._prefill(ids[:-1]), full[-2], atol=1e-4)
    np.testing.assert_allclose(backend._step(ids[-1]), full[-1], atol=1e-4)


ALL = [("llama", f) for f in FORMATS] + [("lstm", f) for f in ("torch", "onnx", "onnx-int8")]


@pytest.mark.parametrize(("model", "fmt"), ALL, ids=[f"{m}-{f}" for m, f in ALL])
def test_decoding_after_logits_is_unchanged(opened, model, fmt):
    backend = opened(model, fmt)
    before = backend.generate(MESSAGES, GREEDY)
    prompt = backend.encode_chat(MESSAGES)
    # a scored sequence that shares the prompt's beginning, then one that shares nothing: the
    # llama.cpp prompt cache must reuse only what is really in its KV cache
    backend.logits([*prompt[:-2], *encode_text(backend.tokenizer, " something else")])
    assert backend.generate(MESSAGES, GREEDY) == before
    backend.logits(encode_text(backend.tokenizer, "Nothing in common."))
    assert backend.generate(MESSAGES, GREEDY) == before
    assert backend.last_stats.new_tokens > 0


@pytest.mark.parametrize(("model", "fmt"), ALL, ids=[f"{m}-{f}" for m, f in ALL])
def test_greedy_is_the_served_reply(opened, model, fmt):
    backend = opened(model, fmt)
    ids = backend.encode_chat(MESSAGES)
    text = "".join(backend.stream_ids(ids, GREEDY))
    tokens = backend.greedy(ids, GREEDY.max_new_tokens)
    assert len(tokens) == backend.last_stats.new_tokens
    assert reply_text(backend.tokenizer, tokens) == text.strip()
    # without the stop at the end of turn, exactly n tokens: what the gate's reference needs
    assert len(backend.greedy(ids, 40, stop_at_eos=False)) == 40


def test_gguf_logits_of_more_than_a_batch(opened):
    """Chunked by the context's batch size, the rows line up with one pass's rows."""
    backend = opened("llama", "gguf-f16")
    ids = encode_text(backend.tokenizer, "The sea was calm that morning. " * 12)[:200]
    whole = backend.logits(ids)
    n_batch = backend.engine.n_batch
    try:
        backend.engine.n_batch = 64  # 200 tokens in 4 batches
        chunked = backend.logits(ids)
    finally:
        backend.engine.n_batch = n_batch
    # llama.cpp's logits move a little with how a sequence is cut into batches (measured up to
    # 0.04 here); a position or chunk-boundary mistake would move them by whole units
    np.testing.assert_allclose(chunked, whole, atol=0.1)


def test_gguf_logits_longer_than_the_context_is_a_clear_error(opened):
    from balabol.errors import ConfigError

    backend = opened("llama", "gguf-q8_0")
    with pytest.raises(ConfigError, match=r"cannot score 300 tokens in a slot of 256"):
        backend.logits([1] * 300)


def test_nll_and_perplexity_by_hand():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]], dtype=np.float32))
    np.testing.assert_allclose(nll(logits, [0, 1], rows=1), [np.log(2), -np.log(0.8)], rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_softmax(logits)).sum(-1), 1.0, rtol=1e-12)

    class Fixed:  # position t predicts ids[t + 1]; the last row predicts nothing scored
        def logits(self, ids):
            return np.vstack([logits, logits[:1]])

    assert perplexity(Fixed(), [7, 0, 1]) == pytest.approx(np.exp((np.log(2) - np.log(0.8)) / 2))
