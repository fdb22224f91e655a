"""`balabol eval`: the numbers match a sample-by-sample computation; bad input is a clear error."""

from __future__ import annotations

import json
import math

import pytest

from balabol.cli import main as cli
from balabol.errors import AdapterError, ArtifactError, ConfigError, DataError
from balabol.prompt import EOS_TOKEN, render_chat
from training import dataset, evaluate
from training.evaluate import EvalConfig

from .helpers import chat, write_data, write_jsonl

SAMPLES = [
    chat("hi", "hello there!"),
    [*chat("Привет", "Привет, как дела?"), *chat("2+2?", "4 🚀")],
    [{"role": "system", "content": "Be brief."}, *chat("bye", "see you")],
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def llama(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    base = tiny_model("llama")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    tokenizer, _ = dataset.chat_tokenizer(base)
    return base, model, tokenizer


def test_loss_and_bits_per_byte_match_one_sample_at_a_time(llama):
    import torch
    import torch.nn.functional as F

    _, model, tok = llama
    samples = [dataset.Sample(tuple(m), None, "test") for m in SAMPLES]
    got = evaluate.score(model, tok, samples, max_new_tokens=4, batch_size=2)

    nll, n, n_bytes = 0.0, 0, 0
    for messages in SAMPLES:
        text = render_chat(messages, add_generation_prompt=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        enc = dataset.encode(messages, tok)
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


def test_greedy_replies_do_not_depend_on_batching(llama):
    _, model, tok = llama
    prompts = [render_chat(m[:-1]) for m in SAMPLES]
    one = evaluate.generate(model, tok, prompts, max_new_tokens=6, batch_size=1)
    batched = evaluate.generate(model, tok, prompts, max_new_tokens=6, batch_size=3)
    assert one == batched


def test_cli_writes_json_and_prints_a_table(llama, tmp_path, capsys):
    base, _, _ = llama
    data = write_data(tmp_path / "toy", n_train=1, n_val=3)
    args = ["eval", "--data", str(data), "--base", str(base), "--max-new-tokens", "4"]
    assert cli(args) == 0
    out = capsys.readouterr().out
    result = json.loads((data / "eval" / f"base-{base.name}.json").read_text())
    assert result["model"] == f"base-{base.name}" and result["samples"] == 3
    assert set(result) >= {"perplexity", "bits_per_byte", "rouge_l", "bleu", "examples"}
    header = next(line for line in out.splitlines() if line.startswith("model"))
    assert header.split() == ["model", "samples", "ppl", "bits/byte", "ROUGE-L", "BLEU"]
    assert f"* base-{base.name}" in out


def test_limit_takes_the_first_samples(llama, tmp_path):
    base, _, _ = llama
    data = write_data(tmp_path / "toy", n_train=1, n_val=6)
    cfg = EvalConfig(data=data, base=str(base), limit=2, max_new_tokens=2, out=tmp_path / "r.json")
    assert evaluate.run(cfg, log=lambda _: None)["samples"] == 2


BAD_CONFIGS = {
    "no-data": ({"data": None}, "--data is required"),
    "other-format": (
        {"artifact": "x", "format": "onnx"},
        "--format onnx: balabol eval reads only the torch artifact",
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
