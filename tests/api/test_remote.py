"""`--format remote` against `balabol serve`: the same greedy reply as the local backend."""

from __future__ import annotations

import socket
import threading

import pytest

from balabol.errors import ConfigError, RemoteError
from runtime.base import GenerationConfig
from runtime.loader import load
from runtime.remote_backend import RemoteBackend
from tests.api.conftest import KEY

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def local(exported_llama):
    backend = load("llama", "onnx", root=exported_llama[0])
    yield backend
    backend.close()


def test_remote_greedy_reply_equals_the_local_one(serve, local, monkeypatch):
    server = serve()
    monkeypatch.setenv("BALABOL_REMOTE_URL", server.url.removesuffix("/v1"))  # /v1 is added
    monkeypatch.setenv("BALABOL_REMOTE_KEY", KEY)
    monkeypatch.setenv("BALABOL_REMOTE_MODEL", "llama/onnx")
    remote = load("llama", "remote")
    config = GenerationConfig.greedy(24)
    want = local.generate(MESSAGES, config)
    assert want
    assert remote.generate(MESSAGES, config, key="chat-1") == want
    assert remote.last_stats.new_tokens == local.last_stats.new_tokens
    assert remote.last_stats.prompt_tokens == local.last_stats.prompt_tokens
    assert "".join(remote.complete("once upon", config)) == "".join(
        local.complete("once upon", config)
    )
    assert (remote.format, remote.artifact) == ("remote", "llama/onnx")


def test_remote_cancel_stops_the_reply(serve, local):
    remote = RemoteBackend(serve().url, api_key=KEY, model="llama/onnx")
    cancel = threading.Event()
    pieces = []
    for piece in remote.stream(MESSAGES, GenerationConfig.greedy(64), cancel=cancel):
        pieces.append(piece)
        cancel.set()
    assert len(pieces) == 1
    assert remote.last_stats.stopped_by == "cancel"


def test_remote_errors_name_the_url_and_the_fix(serve, monkeypatch):
    server = serve()
    with pytest.raises(RemoteError, match=r"answered 401: .*check BALABOL_REMOTE_KEY"):
        RemoteBackend(server.url, api_key="wrong").generate(MESSAGES)
    with pytest.raises(RemoteError, match=r"answered 404: .*BALABOL_REMOTE_MODEL"):
        RemoteBackend(server.url, api_key=KEY, model="nope").generate(MESSAGES)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(RemoteError, match=rf"cannot reach {url}/chat/completions .*running"):
        RemoteBackend(url).generate(MESSAGES)
    monkeypatch.delenv("BALABOL_REMOTE_URL", raising=False)
    with pytest.raises(ConfigError, match="needs BALABOL_REMOTE_URL"):
        load("llama", "remote")


def test_remote_cannot_score_logits():
    with pytest.raises(RemoteError, match="cannot score logits"):
        RemoteBackend("http://localhost:1/v1").logits([1, 2, 3])


def test_eval_scores_the_replies_of_a_remote_server(serve, exported_llama, tmp_path, monkeypatch):
    from runtime import evaluate
    from runtime.evaluate import EvalConfig
    from tests.training.helpers import PAIRS, chat, write_data, write_jsonl

    root, manifest = exported_llama
    data = write_data(tmp_path / "toy", n_train=1, n_val=1)
    write_jsonl(data / "val.jsonl", [{"messages": chat(u, r)} for u, r in PAIRS])
    monkeypatch.setenv("BALABOL_REMOTE_URL", serve().url)
    monkeypatch.setenv("BALABOL_REMOTE_KEY", KEY)
    lines: list[str] = []

    def run(**kw):
        cfg = EvalConfig(data=data, artifacts_dir=root, max_new_tokens=8, **kw)
        return evaluate.run(cfg, log=lines.append)

    local = run(artifact=manifest.name, format="onnx")
    remote = run(artifact="llama/onnx", format="remote")
    # the server's greedy replies are the local file's, so the reply numbers are too
    assert [e["reply"] for e in remote["examples"]] == [e["reply"] for e in local["examples"]]
    assert (remote["rouge_l"], remote["bleu"]) == (local["rouge_l"], local["bleu"])
    assert remote["reply_tokens"] == local["reply_tokens"]
    assert remote["perplexity"] is remote["bits_per_byte"] is remote["loss"] is None
    assert remote["source"] == {"url": serve_url(lines), "model": "llama/onnx"}
    # the table lists the remote run last, its log-loss columns blank
    last = lines[-1].splitlines()
    row = next(r.split() for r in last if "remote-llama-onnx" in r)
    assert row[:5] == ["*", "remote-llama-onnx", str(len(PAIRS)), "—", "—"]


def serve_url(lines: list[str]) -> str:
    return next(line.split("(")[1].split(")")[0] for line in lines if "remote-" in line)
