"""The embedded SmolLM2-135M-Instruct (its shipped Q4_1 GGUF) serving several chats at once
(issue #15, slow): the same greedy replies alone, interleaved, after eviction, batched."""

from __future__ import annotations

import pytest

from balabol import bases
from runtime.base import GenerationConfig
from runtime.gguf_backend import GgufBackend
from runtime.kvcache import StateCache
from runtime.scheduler import Scheduler
from runtime.tokenizer import Tokenizer

from .test_multichat import in_turn, one_chat_at_a_time, round_robin, together

pytestmark = pytest.mark.slow

GREEDY = GenerationConfig.greedy(24)
TURNS = ["Hi! Who are you?", "What is the capital of France?", "And of Italy?"]
CHATS = {
    "a": "You are a helpful assistant.",
    "b": "You answer in one short sentence.",
    "c": "You are a pirate.",
    "d": "You love numbers.",
}


@pytest.fixture(scope="module")
def open_smollm2():
    hf = bases.resolve("default")
    gguf = bases.EMBEDDED["smollm2-135m-instruct"].gguf_path()

    def open_(parallel: int, budget: int = 256 << 20) -> GgufBackend:
        return GgufBackend.open(
            gguf,
            tokenizer=Tokenizer(hf),
            context_length=1024,
            fmt="gguf-q4_1",
            threads=2,
            parallel=parallel,
            cache=StateCache(budget),
        )

    return open_


def test_chats_answer_the_same_alone_interleaved_evicted_and_batched(open_smollm2):
    b = open_smollm2(1)
    try:
        alone = one_chat_at_a_time(b, CHATS, TURNS, GREEDY)
    finally:
        b.close()
    assert all(r.strip() for replies in alone.values() for r in replies)

    def reused(k, stats):
        assert k == 0 or stats.cached_tokens > 20

    b = open_smollm2(2)  # 4 chats, 2 slots: every turn restores a chat from host memory
    try:
        assert round_robin(in_turn(b, GREEDY, check=reused), CHATS, TURNS) == alone
    finally:
        b.close()

    b = open_smollm2(4)
    sched = Scheduler(b, parallel=4)
    try:
        assert round_robin(together(sched, GREEDY), CHATS, TURNS) == alone
    finally:
        sched.close()
        b.close()
