"""The real `openai` client against `balabol serve` over the tiny llama export."""

from __future__ import annotations

import json
import urllib.request
from importlib.metadata import EntryPoint

import openai
import pytest

from api.cli import check_exposure
from runtime.base import GenerationConfig
from runtime.loader import SPEED_ORDER, load
from tests.api.conftest import KEY, Held

MESSAGES = [{"role": "user", "content": "hello there"}]
MAX = 24


def test_chat_plain_and_streamed_equal_the_backend(serve, client_for, exported_llama):
    client = client_for(serve())
    plain = client.chat.completions.create(
        model="llama/onnx", messages=MESSAGES, temperature=0, max_tokens=MAX
    )
    chunks = list(
        client.chat.completions.create(
            model="llama/onnx",
            messages=MESSAGES,
            temperature=0,
            max_tokens=MAX,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    backend = load("llama", "onnx", root=exported_llama[0])
    try:
        direct = backend.generate(MESSAGES, GenerationConfig(max_new_tokens=MAX, temperature=0))
        stats = backend.last_stats
    finally:
        backend.close()
    text = plain.choices[0].message.content
    assert text and text == streamed == direct
    assert plain.model == "llama/onnx"
    assert plain.usage.prompt_tokens == stats.prompt_tokens
    assert plain.usage.completion_tokens == stats.new_tokens
    finish = {"eos": "stop", "stop": "stop", "length": "length"}[stats.stopped_by]
    assert plain.choices[0].finish_reason == finish
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == finish
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == stats.new_tokens


def test_completions_continue_plain_text(serve, client_for, exported_llama):
    client = client_for(serve())
    got = client.completions.create(
        model="llama/onnx", prompt="once upon", temperature=0, max_tokens=MAX
    )
    backend = load("llama", "onnx", root=exported_llama[0])
    try:
        direct = "".join(
            backend.complete("once upon", GenerationConfig(max_new_tokens=MAX, temperature=0))
        )
    finally:
        backend.close()
    assert got.choices[0].text == direct


def test_models_lists_every_passed_format_and_the_artifact(serve, client_for, exported_llama):
    _, manifest = exported_llama
    ids = [m.id for m in client_for(serve()).models.list()]
    passed = sorted((a.format for a in manifest.usable()), key=SPEED_ORDER.index)
    assert ids == ["llama", *(f"llama/{f}" for f in passed)]


def test_wrong_key_is_401(serve, client_for):
    with pytest.raises(openai.AuthenticationError) as e:
        client_for(serve(), key="wrong").models.list()
    assert e.value.status_code == 401
    assert e.value.body["code"] == "invalid_api_key"


def test_bad_body_is_400_in_openai_shape(serve):
    server = serve()
    request = urllib.request.Request(
        server.url + "/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": "hi"}], "top_p": 7}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request)
    assert e.value.code == 400
    body = json.loads(e.value.read())
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == "top_p"
    assert body["error"]["type"] == "invalid_request_error"
    assert "top_p 7" in body["error"]["message"]


def test_too_many_messages_and_too_large_body(serve, client_for):
    from api.protocol import Limits

    client = client_for(serve(limits=Limits(max_body_bytes=4096, max_messages=2)))
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="llama/onnx", messages=MESSAGES * 3)
    assert e.value.body["param"] == "messages"
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(
            model="llama/onnx", messages=[{"role": "user", "content": "x" * 5000}]
        )
    assert e.value.status_code == 413
    assert "4096 bytes" in e.value.body["message"]


def test_unknown_model_is_404(serve, client_for):
    with pytest.raises(openai.NotFoundError) as e:
        client_for(serve()).chat.completions.create(model="nope/onnx", messages=MESSAGES)
    assert e.value.body["code"] == "model_not_found"


def _held_server(serve, **options):
    held: list[Held] = []

    def load_held(*a, **k):
        held.append(Held(load(*a, **k)))
        return held[-1]

    server = serve(load=load_held, **options)
    return server, held


def test_full_queue_is_429_with_retry_after(serve, client_for):
    server, held = _held_server(serve, queue_size=1)
    client = client_for(server)
    ask = dict(model="llama/onnx", messages=MESSAGES, max_tokens=4, stream=True)
    running = client.chat.completions.create(**ask)  # submitted: its headers came back
    (backend,) = held
    assert backend.entered.wait(60)  # the worker is busy with it
    waiting = client.chat.completions.create(**ask)  # the one place in the queue
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(**ask)
    assert e.value.response.headers["retry-after"] == "2"
    assert e.value.body["code"] == "queue_full"
    backend.gate.set()
    for stream in (running, waiting):
        assert list(stream)  # both finish
    assert backend.cancelled == [False, False]


def test_disconnect_mid_stream_cancels_and_frees_the_slot(serve, client_for):
    server, held = _held_server(serve, queue_size=1)
    client = client_for(server)
    stream = client.chat.completions.create(
        model="llama/onnx", messages=MESSAGES, max_tokens=MAX, stream=True, temperature=0
    )
    (backend,) = held
    backend.until_cancelled = True
    backend.gate.set()
    for chunk in stream:  # up to the first piece of text; the model then waits
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()  # the client goes away
    assert backend.ended.wait(60)
    assert backend.cancelled == [True]
    backend.until_cancelled = False
    again = client.chat.completions.create(model="llama/onnx", messages=MESSAGES, max_tokens=4)
    assert again.choices[0].finish_reason in ("stop", "length")


def test_health_needs_no_key(serve):
    with urllib.request.urlopen(serve().url.removesuffix("/v1") + "/health") as r:
        assert json.loads(r.read())["status"] == "ok"


def test_network_host_needs_a_key():
    check_exposure("127.0.0.1", None)
    check_exposure("::1", None)
    check_exposure("0.0.0.0", "k")
    with pytest.raises(Exception, match="BALABOL_API_KEY"):
        check_exposure("0.0.0.0", None)


def test_serve_command_refuses_the_network_without_a_key(monkeypatch, capsys):
    from balabol import cli

    commands = cli._commands
    ep = EntryPoint("serve", "api.cli:serve", cli.GROUP)
    monkeypatch.setattr(cli, "_commands", lambda: {**commands(), "serve": ep})
    monkeypatch.delenv("BALABOL_API_KEY", raising=False)
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 serves the network" in err and "BALABOL_API_KEY" in err
