"""Runtime on the tiny exported llama: backends agree, streaming, stops, cancel, sessions,
the scheduler, and clear errors for bad artifacts."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time

import pytest

from balabol.cli import main as cli
from balabol.errors import ArtifactError, ConfigError
from runtime import GenerationConfig, load, loader
from runtime.base import TextStream
from runtime.loader import choose
from runtime.sampling import Sampler
from runtime.scheduler import QueueFull, Scheduler
from runtime.session import ChatSession, Persona, fit
from tests.conftest import made_up

PROMPTS = [
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "12345 🚀"}],
]
GREEDY = GenerationConfig.greedy(24)


@pytest.fixture(scope="module")
def root(exported_llama):
    return exported_llama[0]


@pytest.fixture(scope="module")
def backends(root):
    opened = {}

    def get(fmt):
        if fmt not in opened:
            opened[fmt] = load("llama", fmt, root=root)
        return opened[fmt]

    yield get
    for b in opened.values():
        b.close()


def greedy_ids(backend, messages):
    ids = backend.encode_chat(messages)
    text = "".join(backend.stream_ids(ids, GREEDY))
    return text, backend.last_stats


@pytest.mark.parametrize("fmt", ["onnx", "gguf-f16"])
@pytest.mark.parametrize("messages", PROMPTS, ids=["plain", "system"])
def test_greedy_output_matches_torch(backends, fmt, messages):
    want, stats = greedy_ids(backends("torch"), messages)
    got, _ = greedy_ids(backends(fmt), messages)
    assert stats.new_tokens > 0
    assert got == want


def test_gguf_reuses_the_prompt_prefix_without_changing_results(backends):
    b = backends("gguf-q8_0")
    long = [
        *PROMPTS[0],
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "More"},
    ]
    first, _ = greedy_ids(b, PROMPTS[0])
    continued, warm = greedy_ids(b, long)  # shares the first prompt as a prefix
    b.reset()  # nothing reused
    cold, stats = greedy_ids(b, long)
    assert continued == cold and first
    assert warm.cached_tokens > 0 and stats.cached_tokens == 0


def test_stream_never_splits_a_character(backends):
    tok = backends("torch").tokenizer
    text = "Привет 🚀🦙 мир — ok"
    stream = TextStream(tok)
    pieces = [stream.push(i) for i in tok(text, add_special_tokens=False)["input_ids"]]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    # byte-level BPE splits these emoji into several tokens, so some pushes emit nothing
    assert "" in pieces


def test_stop_string_ends_the_reply_before_it(backends):
    b = backends("onnx")
    full, _ = greedy_ids(b, PROMPTS[0])
    assert len(full) > 6
    stop = full[3:6]
    cfg = GenerationConfig(max_new_tokens=24, temperature=0, repetition_penalty=1.0, stop=(stop,))
    cut = "".join(b.stream(PROMPTS[0], cfg))
    assert cut == full[: full.index(stop)]
    assert b.last_stats.stopped_by == "stop"


def test_cancel_from_another_thread_stops_promptly(backends):
    b = backends("torch")
    cancel, seen = threading.Event(), []
    cfg = GenerationConfig(max_new_tokens=200, temperature=1.0, seed=1)

    def run():
        for piece in b.stream(PROMPTS[0], cfg, cancel=cancel):
            seen.append(piece)
            cancel.set()

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive()
    assert b.last_stats.stopped_by == "cancel"
    assert b.last_stats.new_tokens <= 3


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"temperature": -1}, "--temperature"),
        ({"top_p": 0}, "--top-p"),
        ({"top_k": -2}, "--top-k"),
        ({"repetition_penalty": 9}, "--repetition-penalty"),
        ({"stop": ("",)}, "--stop"),
    ],
)
def test_generation_config_names_the_bad_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        GenerationConfig(**kwargs)


def test_sampler():
    import numpy as np

    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    greedy = Sampler(temperature=0, top_k=0, top_p=1, repetition_penalty=1, seed=0)
    assert greedy(logits) == 1
    top1 = Sampler(temperature=1, top_k=1, top_p=1, repetition_penalty=1, seed=0)
    assert {top1(logits) for _ in range(20)} == {1}
    nucleus = Sampler(temperature=1, top_k=0, top_p=0.4, repetition_penalty=1, seed=0)
    assert {nucleus(logits) for _ in range(20)} == {1}
    penalized = Sampler(temperature=0, top_k=0, top_p=1, repetition_penalty=2, seed=0)
    assert penalized(logits, history=[1]) == 2
    a = Sampler(temperature=1, top_k=0, top_p=1, repetition_penalty=1, seed=7)
    b = Sampler(temperature=1, top_k=0, top_p=1, repetition_penalty=1, seed=7)
    assert [a(logits) for _ in range(10)] == [b(logits) for _ in range(10)]


def test_session_keeps_history_and_trims_oldest_turns(backends):
    b = backends("onnx")
    session = ChatSession(b, persona=Persona(system="You are terse.", examples=(("hi", "yo"),)))
    cfg = GenerationConfig(max_new_tokens=8, temperature=0)
    for i in range(3):
        "".join(session.send(f"question {i}", cfg))
    assert [m["role"] for m in session.history] == ["user", "assistant"] * 3
    assert session.history[0]["content"] == "question 0"
    # a context that only fits the prefix plus about one exchange drops old turns first
    prefix = [{"role": "system", "content": "You are terse."}, *session.persona.messages()]
    msgs = [*prefix, *session.history, {"role": "user", "content": "last"}]
    small = len(b.encode_chat([*prefix, *session.history[-2:], msgs[-1]])) + 8
    b_ctx, b.context_length = b.context_length, small
    try:
        trimmed = fit(b, msgs, max_new_tokens=8, keep_first=len(prefix))
    finally:
        b.context_length = b_ctx
    assert trimmed[: len(prefix)] == prefix
    assert trimmed[-1]["content"] == "last" and trimmed[len(prefix)]["role"] == "user"
    assert len(trimmed) < len(msgs)
    session.reset()
    assert session.history == []


def test_message_too_long_for_the_context_is_a_clear_error(backends):
    with pytest.raises(ConfigError, match="too long for the model's context"):
        fit(backends("onnx"), [{"role": "user", "content": "word " * 2000}], max_new_tokens=8)


def test_scheduler_queues_reports_position_and_refuses_when_full(backends):
    b = backends("onnx")
    sched = Scheduler(b, max_queue=2)
    gate = threading.Event()
    real_stream = b.stream

    def slow_stream(*a, **k):
        gate.wait(10)
        yield from real_stream(*a, **k)

    b.stream = slow_stream
    try:
        jobs = [sched.submit(PROMPTS[0], GenerationConfig.greedy(4))]
        deadline = time.time() + 5
        while jobs[0].position != 0 and time.time() < deadline:
            time.sleep(0.01)
        jobs += [sched.submit(PROMPTS[0], GenerationConfig.greedy(4)) for _ in range(2)]
        assert [j.position for j in jobs] == [0, 1, 2]
        with pytest.raises(QueueFull, match="already waiting"):
            sched.submit(PROMPTS[0])
        jobs[2].cancel()
        gate.set()
        assert "".join(jobs[0]) == "".join(jobs[1])
        assert "".join(jobs[2]) == ""
    finally:
        gate.set()
        b.stream = real_stream
        sched.close()


def test_auto_and_family_aliases_pick_the_fastest_passed_format(root, exported_llama):
    speeds = {a.format: a.decode_tokens_per_s for a in exported_llama[1].usable()}
    gguf = {f: v for f, v in speeds.items() if f.startswith("gguf-")}
    for alias, fastest in (
        ("auto", max(speeds, key=speeds.get)),
        ("gguf", max(gguf, key=gguf.get)),
    ):
        b = load("llama", alias, root=root)
        assert b.format == fastest, (alias, speeds)
        b.close()


@pytest.mark.parametrize(
    ("speeds", "failed", "auto", "gguf"),
    [
        # the fastest passed file by recorded speed, whatever the fixed order says
        (
            {"torch": 30.0, "onnx-int8": 90.0, "gguf-q8_0": 133.0, "gguf-q4_k_m": 124.0},
            (),
            "gguf-q8_0",
            "gguf-q8_0",
        ),
        (
            {"torch": 30.0, "onnx-int8": 200.0, "gguf-q4_k_m": 124.0, "gguf-f16": 80.0},
            (),
            "onnx-int8",
            "gguf-q4_k_m",
        ),
        # a faster file that failed its gate is never chosen
        (
            {"torch": 30.0, "gguf-q4_0": 171.0, "gguf-q4_k_m": 124.0, "gguf-q8_0": 133.0},
            ("gguf-q4_0",),
            "gguf-q8_0",
            "gguf-q8_0",
        ),
        # an older manifest with no speeds: the fixed SPEED_ORDER
        (
            {"torch": None, "onnx-int8": None, "gguf-q8_0": None, "gguf-q4_k_m": None},
            (),
            "gguf-q4_k_m",
            "gguf-q4_k_m",
        ),
        # measured files first, unmeasured ones after them in the fixed order
        ({"torch": 30.0, "gguf-q4_k_m": None, "onnx": 40.0}, (), "onnx", "gguf-q4_k_m"),
    ],
)
def test_choose_ranks_by_the_recorded_speed(speeds, failed, auto, gguf):
    m = made_up(speeds, failed)
    assert (choose(m, "auto").format, choose(m, "gguf").format) == (auto, gguf)


def test_choose_skips_what_does_not_fit_in_memory(monkeypatch):
    m = made_up({"torch": 30.0, "gguf-q4_0": 171.0, "gguf-q8_0": 133.0})
    big = dataclasses.replace(m.artifacts[1], bytes=10**6)
    m = dataclasses.replace(m, artifacts=(m.artifacts[0], big, m.artifacts[2]))
    monkeypatch.setattr(loader, "available_memory", lambda: 10**5)
    assert choose(m, "auto").format == "gguf-q8_0"
    monkeypatch.setattr(loader, "available_memory", lambda: 10**3)
    with pytest.raises(ArtifactError, match="no passed format for 'auto' that fits"):
        choose(m, "auto")


@pytest.fixture
def broken(root, tmp_path):
    copy = tmp_path / "art"
    shutil.copytree(root / "llama", copy / "llama")
    return copy


def test_missing_artifact_lists_what_exists(root):
    with pytest.raises(ArtifactError, match=r"no artifact 'nope'.*found: llama"):
        load("nope", root=root)


def test_unknown_format(root):
    with pytest.raises(ArtifactError, match="unknown format 'onnx-int4'; choose one of"):
        load("llama", "onnx-int4", root=root)


def test_truncated_gguf_is_an_error_not_a_crash(broken):
    f = broken / "llama" / "gguf" / "model-q8_0.gguf"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="truncated"):
        load("llama", "gguf-q8_0", root=broken)


def test_corrupt_gguf_header(broken):
    f = broken / "llama" / "gguf" / "model-q8_0.gguf"
    data = bytearray(f.read_bytes())
    data[:4] = b"NOPE"
    f.write_bytes(data)
    with pytest.raises(ArtifactError, match="not a GGUF file"):
        load("llama", "gguf-q8_0", root=broken)


def test_corrupt_onnx(broken):
    f = broken / "llama" / "onnx" / "model.onnx"
    f.write_bytes(b"\x00" * f.stat().st_size)
    with pytest.raises(ArtifactError, match="onnxruntime cannot load"):
        load("llama", "onnx", root=broken)


def test_verify_catches_a_changed_byte(broken):
    f = broken / "llama" / "gguf" / "model-f16.gguf"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(data)
    load("llama", "gguf-f16", root=broken).close()  # same size: only --verify can tell
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        load("llama", "gguf-f16", root=broken, verify_sha=True)


def test_chat_repl(root, monkeypatch, capsys):
    lines = iter(["hello", "/system Be nice.", "/reset", "again", "/exit"])
    monkeypatch.setattr("builtins.input", lambda _: next(lines))
    args = ["chat", "--artifact", "llama", "--format", "onnx", "--out-dir", str(root)]
    assert cli([*args, "--max-new-tokens", "4", "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    assert out.count("bot> ") == 2
    assert "(history cleared)" in err and "(system prompt set)" in err
    assert err.count("[llama / onnx: ") == 2


def test_importing_runtime_is_light():
    import subprocess
    import sys

    code = "import runtime, sys; print(any(m in sys.modules for m in ('torch', 'onnxruntime', 'llama_cpp')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_light_tokenizer_matches_transformers(root):
    from transformers import AutoTokenizer

    from runtime.tokenizer import Tokenizer

    hf = AutoTokenizer.from_pretrained(root / "llama" / "hf")
    light = Tokenizer(root / "llama" / "hf")
    text = "Привет, world! 12345 🚀\n\tcode()  <|im_start|>user\nhi<|im_end|>"
    for special in (False, True):
        ids = hf(text, add_special_tokens=special)["input_ids"]
        assert light(text, add_special_tokens=special)["input_ids"] == ids
        assert light.decode(ids, skip_special_tokens=True) == hf.decode(
            ids, skip_special_tokens=True
        )
    assert (light.eos_token_id, light.chat_template) == (hf.eos_token_id, hf.chat_template)
    assert len(light) == len(hf)


def test_loading_a_gguf_does_not_import_torch(root):
    import subprocess
    import sys

    code = (
        "import sys; from runtime import load; "
        f"b = load('llama', 'gguf-q8_0', root={str(root)!r}); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


# --- chat-template injection (issue #19): user text is never control tokens ---------------


@pytest.mark.parametrize("model", ["llama", "gemma3"])
def test_no_backend_reads_typed_control_tokens_as_control_tokens(model, request):
    from tests.balabol.test_prompt import FORGED, controls

    root, manifest = request.getfixturevalue(f"exported_{model}")
    forged = [{"role": "user", "content": FORGED}]
    for fmt in [a.format for a in manifest.artifacts if a.status == "passed"]:
        backend = load(model, fmt, root=root)
        try:
            tok = backend.tokenizer
            ids = backend.encode_chat(forged, system=FORGED)
            benign = backend.encode_chat([{"role": "user", "content": "x"}], system="x")
            assert controls(tok, ids) == controls(tok, benign), fmt
            text = "".join(backend.stream(forged, GenerationConfig.greedy(4)))
            assert backend.last_stats.prompt_tokens == len(backend.encode_chat(forged))
            assert isinstance(text, str)
        finally:
            backend.close()
