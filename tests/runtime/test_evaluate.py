"""`balabol eval`: the numbers match a sample-by-sample computation; every model is scored by
a runtime backend; bad input is a clear error."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from balabol import labels
from balabol.cli import main as cli
from balabol.errors import AdapterError, ArtifactError, BaseModelError, ConfigError, DataError
from balabol.manifest import FORMATS
from balabol.prompt import BOS_TOKEN, EOS_TOKEN, render_chat
from balabol.samples import Sample
from runtime import evaluate, score
from runtime.evaluate import EvalConfig
from runtime.loader import load, open_file
from tests.conftest import export_tiny
from tests.training.helpers import PAIRS, build_plain_gpt2, chat, write_data, write_jsonl

SAMPLES = [
    chat("hi", "hello there!"),
    [*chat("Привет", "Привет, как дела?"), *chat("2+2?", "4 🚀")],
    [{"role": "system", "content": "Be brief."}, *chat("bye", "see you")],
]


@pytest.fixture(scope="module")
def llama(tiny_model):
    """(base dir, its torch backend, the chat tokenizer) for the tiny llama."""
    base = tiny_model("llama")
    tokenizer, _ = labels.chat_tokenizer(base)
    backend = open_file(base, "torch", tokenizer=tokenizer, context_length=256, n_threads=1)
    yield base, backend, tokenizer
    backend.close()


def test_loss_and_bits_per_byte_match_one_sample_at_a_time(llama):
    import torch
    import torch.nn.functional as F

    _, backend, tok = llama
    samples = [Sample(tuple(m), None, "test") for m in SAMPLES]
    got = score.score(backend, samples, context=256, max_new_tokens=4, batch_size=2)

    nll, n, n_bytes = 0.0, 0, 0
    for messages in SAMPLES:
        text = render_chat(messages, add_generation_prompt=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = backend.model(torch.tensor([ids])).logits[0]
        enc = labels.encode(messages, tok)
        targets = torch.tensor(enc.labels[1:])
        nll += F.cross_entropy(logits[:-1], targets, ignore_index=-100, reduction="sum").item()
        n += enc.n_targets
        replies = [m["content"] + EOS_TOKEN for m in messages if m["role"] == "assistant"]
        n_bytes += sum(len(r.encode()) for r in replies)
    assert (got["samples"], got["target_tokens"], got["target_bytes"]) == (3, n, n_bytes)
    assert got["loss"] == pytest.approx(nll / n, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-4)
    assert got["bits_per_byte"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-5)
    assert 0 <= got["rouge_l"] <= 1 and 0 <= got["bleu"] <= 1
    assert [e["user"] for e in got["examples"]] == ["hi", "2+2?", "bye"]
    assert [e["reference"] for e in got["examples"]] == ["hello there!", "4 🚀", "see you"]


def test_batched_greedy_replies_are_the_decode_loops(llama):
    """torch's left-padded batch (eval's fast path) gives the tokens the served decode loop
    gives one prompt at a time, and a batch of one the same as a batch of three."""
    _, backend, tok = llama
    rows = score.prompt_ids(tok, [m[:-1] for m in SAMPLES], context=256, max_new_tokens=6)
    one = [backend.greedy(ids, 6) for ids in rows]
    assert any(one)
    assert backend.greedy_batch(rows, 6) == one
    assert [backend.greedy_batch([ids], 6)[0] for ids in rows] == one


def test_logits_batch_gives_each_sequences_logits(llama):
    import numpy as np

    _, backend, tok = llama
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in ("hello there", "a b c d e f")]
    full = backend.logits_batch(rows)
    picked = backend.logits_batch(rows, [[0, 1], [3]])
    for ids, x, y, p in zip(rows, full, picked, [[0, 1], [3]], strict=True):
        np.testing.assert_allclose(x, backend.logits(ids), atol=1e-4)
        np.testing.assert_allclose(y, x[p], atol=1e-6)


def test_cli_writes_json_and_prints_a_table(llama, tmp_path, capsys):
    base, _, _ = llama
    data = write_data(tmp_path / "toy", n_train=1, n_val=3)
    args = ["eval", "--data", str(data), "--base", str(base), "--max-new-tokens", "4"]
    assert cli(args) == 0
    out = capsys.readouterr().out
    result = json.loads((data / "eval" / f"base-{base.name}.json").read_text())
    assert result["model"] == f"base-{base.name}" and result["samples"] == 3
    assert set(result) >= {"perplexity", "bits_per_byte", "rouge_l", "bleu", "examples"}
    assert result["reply_tokens"] > 0 and result["reply_tokens_per_second"] > 0
    header = next(line for line in out.splitlines() if line.startswith("model"))
    assert header.split() == [
        *("model", "samples", "ppl", "bits/byte", "ROUGE-L", "BLEU", "reply", "tok/s")
    ]
    assert f"* base-{base.name}" in out


def test_limit_takes_the_first_samples(llama, tmp_path):
    base, _, _ = llama
    data = write_data(tmp_path / "toy", n_train=1, n_val=6)
    cfg = EvalConfig(data=data, base=str(base), limit=2, max_new_tokens=2, out=tmp_path / "r.json")
    assert evaluate.run(cfg, log=lambda _: None)["samples"] == 2


BAD_CONFIGS = {
    "no-data": ({"data": None}, "--data is required"),
    "format-without-artifact": (
        {"base": "default", "format": "gguf-q8_0"},
        r"--format gguf-q8_0 is the format of an exported artifact; pass --artifact NAME too",
    ),
    "unknown-format": ({"artifact": "x", "format": "tflite"}, "--format 'tflite': known formats"),
    "artifact-and-base": (
        {"artifact": "x", "base": "default"},
        "--artifact is a complete model; pass it alone",
    ),
    "limit": ({"limit": -1}, "--limit -1: a number of samples, or 0 for all"),
    "tokens": ({"max_new_tokens": 0}, "--max-new-tokens 0: must be a whole number >= 1"),
}


@pytest.mark.parametrize(("kwargs", "message"), BAD_CONFIGS.values(), ids=BAD_CONFIGS)
def test_bad_options_name_the_flag(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        EvalConfig(**{"data": tmp_path, **kwargs})


def test_bad_input_is_a_clear_error(llama, tmp_path):
    base, _, _ = llama
    data = write_data(tmp_path / "toy", n_train=1, n_val=1)
    with pytest.raises(DataError, match="does not exist"):
        evaluate.run(EvalConfig(data=tmp_path / "nope", base=str(base)))
    with pytest.raises(ArtifactError, match=r"no artifact 'gone' in .* \(found: none\)"):
        evaluate.run(EvalConfig(data=data, artifact="gone", artifacts_dir=tmp_path / "a"))
    (tmp_path / "not-adapter").mkdir()
    with pytest.raises(AdapterError, match=r"has no adapter_config\.json"):
        evaluate.run(EvalConfig(data=data, adapter=tmp_path / "not-adapter"))
    (tmp_path / "not-adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterError, match=r"no training_config\.json\), so its base is unknown"):
        evaluate.run(EvalConfig(data=data, adapter=tmp_path / "not-adapter"))
    write_jsonl(data / "val.jsonl", [{"messages": [{"role": "user", "content": "?"}]}])
    with pytest.raises(DataError, match=r"val\.jsonl has no sample with an assistant reply"):
        evaluate.run(EvalConfig(data=data, base=str(base)))
    write_jsonl(data / "val.jsonl", [{"messages": chat("hi", "hello")}])
    (tmp_path / "not-a-model").mkdir()
    for f in base.iterdir():  # a config and a tokenizer, but the weights are cut short
        if f.name.startswith(("config", "tokenizer", "special_tokens", "chat_template")):
            shutil.copy2(f, tmp_path / "not-a-model" / f.name)
    weights = (base / "model.safetensors").read_bytes()
    (tmp_path / "not-a-model" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(BaseModelError, match=r"cannot load the model from .*not-a-model"):
        evaluate.run(EvalConfig(data=data, base=str(tmp_path / "not-a-model")))


# --- exported artifacts: every format of the manifest, next to torch ---------------------

EXPORTED = [f for f in FORMATS if f != "torch"]
# How far each format's perplexity may be from torch's on the tiny random llama: onnx is the
# same fp32 math; quantization moves the flat distributions of a random model more than a
# trained one's (the export bars for it are TINY_GATES in tests/conftest.py).
PPL_REL = {
    "onnx": 1e-3,
    "onnx-int8": 0.1,
    "gguf-f16": 0.01,
    "gguf-q8_0": 0.05,
    "gguf-q4_k_m": 0.5,
    "gguf-q4_0": 1.0,  # its tiny-model gate allows x2 (tests/conftest.py)
}


@pytest.fixture(scope="module")
def artifact_eval(exported_llama, tmp_path_factory):
    """(data dir, eval(format) -> (result, printed text)) for the tiny llama exported to every
    format, all on one data set (so the printed table lists them together); each format once."""
    root, manifest = exported_llama
    data = write_data(tmp_path_factory.mktemp("eval") / "toy", n_train=1, n_val=1)
    write_jsonl(
        data / "val.jsonl", [{"messages": m} for m in [*SAMPLES, *(chat(u, r) for u, r in PAIRS)]]
    )
    done: dict[str, tuple[dict, str]] = {}
    scored_by: dict[str, type] = {}  # format -> the class of the backend that scored it
    real = score.score

    def spy(backend, *args, **kwargs):
        scored_by[backend.format] = type(backend)
        return real(backend, *args, **kwargs)

    def run(fmt: str) -> tuple[dict, str]:
        if fmt not in done:
            lines: list[str] = []
            cfg = EvalConfig(
                data=data, artifact=manifest.name, format=fmt, artifacts_dir=root, max_new_tokens=8
            )
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(score, "score", spy)
                done[fmt] = evaluate.run(cfg, log=lines.append), "\n".join(lines)
        return done[fmt]

    run.scored_by = scored_by
    return data, run


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_eval_scores_with_the_backend_that_serves_the_format(exported_llama, artifact_eval, fmt):
    root, manifest = exported_llama
    _, run = artifact_eval
    run(fmt)
    served = load(manifest.name, fmt, root=root)
    try:
        assert run.scored_by[fmt] is type(served)
    finally:
        served.close()


@pytest.mark.parametrize("fmt", EXPORTED)
def test_every_exported_format_scores_like_torch(exported_llama, artifact_eval, fmt):
    root, _ = exported_llama
    data, run = artifact_eval
    ref, _ = run("torch")
    got, printed = run(fmt)

    counts = ("samples", "target_tokens", "target_bytes")
    assert [got[k] for k in counts] == [ref[k] for k in counts]
    assert got["samples"] == len(SAMPLES) + len(PAIRS) and got["target_tokens"] > 30
    assert got["perplexity"] == pytest.approx(ref["perplexity"], rel=PPL_REL[fmt])
    assert got["bits_per_byte"] == pytest.approx(ref["bits_per_byte"], rel=PPL_REL[fmt])
    assert got["loss"] == pytest.approx(math.log(got["perplexity"]), rel=1e-4)
    assert 0 <= got["rouge_l"] <= 1 and 0 <= got["bleu"] <= 1
    assert [e["reference"] for e in got["examples"]] == [e["reference"] for e in ref["examples"]]

    saved = json.loads((data / "eval" / f"artifact-llama-{fmt}.json").read_text())
    assert saved["source"] == {
        "artifact": "llama",
        "format": fmt,
        "path": str(root / "llama" / FORMATS[fmt][1]),
    }
    assert {k: saved[k] for k in ("model", "perplexity", "rouge_l", "bleu")} == {
        "model": f"artifact-llama-{fmt}",
        **{k: got[k] for k in ("perplexity", "rouge_l", "bleu")},
    }
    # the table compares the formats side by side
    rows = [line.split() for line in printed.splitlines()]
    assert ["*", f"artifact-llama-{fmt}", str(got["samples"])] in [r[:3] for r in rows]
    assert ["artifact-llama-torch", str(ref["samples"])] in [r[:2] for r in rows]


def test_onnx_greedy_replies_are_the_torch_replies(artifact_eval):
    _, run = artifact_eval
    ref, got = run("torch")[0], run("onnx")[0]
    assert any(e["reply"] for e in ref["examples"])
    assert got["examples"] == ref["examples"]
    assert (got["rouge_l"], got["bleu"]) == (ref["rouge_l"], ref["bleu"])


@pytest.fixture
def artifacts(exported_llama, tmp_path):
    """A copy of the exported tiny llama to break, and a way to rewrite its manifest."""
    root, manifest = exported_llama
    shutil.copytree(root / manifest.name, tmp_path / "a" / "llama")
    path = tmp_path / "a" / "llama" / "manifest.json"

    def edit(fmt: str, **changes):
        raw = json.loads(path.read_text())
        entries = raw["artifacts"]
        if changes.get("drop"):
            raw["artifacts"] = [a for a in entries if a["format"] != fmt]
        else:
            next(a for a in entries if a["format"] == fmt).update(changes)
        path.write_text(json.dumps(raw))

    return tmp_path / "a", edit


BROKEN = {
    "failed-gate": (
        ("onnx-int8", {"status": "failed", "parity": {"failed": ["greedy agreement 50% < 60%"]}}),
        r"onnx-int8 of artifact 'llama' failed its parity gate at export \(greedy agreement "
        r"50% < 60%\).*evaluate a passed format \(--format torch, onnx, gguf-f16, gguf-q8_0, "
        r"gguf-q4_k_m, gguf-q4_0\) or rebuild it with `balabol export --name llama --force`",
    ),
    "skipped": (
        ("gguf-q4_k_m", {"status": "skipped", "parity": {"skipped": "no llama.cpp pre-tokenizer"}}),
        r"gguf-q4_k_m was skipped at export: no llama\.cpp pre-tokenizer",
    ),
    "not-built": (
        ("gguf-q8_0", {"drop": True}),
        r"artifact 'llama' has no 'gguf-q8_0' file \(it has: torch, onnx, onnx-int8, gguf-f16, "
        r"gguf-q4_k_m, gguf-q4_0\); re-run `balabol export --name llama --force`",
    ),
}


@pytest.mark.parametrize(("change", "message"), BROKEN.values(), ids=BROKEN)
def test_a_format_that_is_not_usable_is_a_clear_error(artifacts, tmp_path, change, message):
    root, edit = artifacts
    edit(change[0], **change[1])
    data = write_data(tmp_path / "toy", n_train=1, n_val=1)
    with pytest.raises(ArtifactError, match=message):
        evaluate.run(EvalConfig(data=data, artifact="llama", format=change[0], artifacts_dir=root))


def test_a_missing_or_changed_file_is_a_clear_error(artifacts, tmp_path):
    root, _ = artifacts
    data = write_data(tmp_path / "toy", n_train=1, n_val=1)
    (root / "llama" / "gguf" / "model-f16.gguf").unlink()
    with pytest.raises(ArtifactError, match=r"model-f16\.gguf is missing; re-export with `balabol"):
        evaluate.run(EvalConfig(data=data, artifact="llama", format="gguf-f16", artifacts_dir=root))
    with open(root / "llama" / "onnx" / "model.onnx", "ab") as f:
        f.write(b"0")
    with pytest.raises(ArtifactError, match=r"onnx does not match the manifest \(bytes \d+ vs"):
        evaluate.run(EvalConfig(data=data, artifact="llama", format="onnx", artifacts_dir=root))


def test_an_artifact_without_the_chat_tokens_is_a_clear_error(tmp_path):
    # like a plain GPT-2: the torch path gives the chat tokens new rows, an exported file cannot
    base = build_plain_gpt2(tmp_path / "plain")
    export_tiny(base, tmp_path / "a", "plain", formats=("onnx",))
    data = write_data(tmp_path / "toy", n_train=1, n_val=1)
    with pytest.raises(
        ArtifactError,
        match=rf"artifact 'plain' has no chat tokens \({BOS_TOKEN}, {EOS_TOKEN}\).*--format torch",
    ):
        evaluate.run(
            EvalConfig(data=data, artifact="plain", format="onnx", artifacts_dir=tmp_path / "a")
        )


def test_importing_the_command_is_light():
    import subprocess
    import sys

    heavy = ("torch", "transformers", "onnxruntime", "llama_cpp")
    code = f"import sys, runtime.evaluate; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
