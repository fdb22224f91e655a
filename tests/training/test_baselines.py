"""`balabol train --arch gpt-scratch | lstm` on a tiny chat set: loss goes down, the model
directory is complete, it exports (ONNX, int8, GGUF for the GPT; stateful ONNX for the
LSTM), the runtime generates the same text from every format, eval scores it, and an
interrupted run resumes to the same weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from balabol import lstm
from balabol.cli import main as cli
from balabol.errors import ConfigError, ExportError
from balabol.manifest import Manifest
from balabol.prompt import CHAT_TEMPLATE, EOS_TOKEN
from runtime import GenerationConfig, evaluate, load, score
from tests.conftest import export_tiny
from training import dataset
from training.baselines import ARCHS, ScratchConfig, run
from training.harness import TrainResult, last_checkpoint_step

from .helpers import chat, write_data

# tiny shapes: every run takes a few seconds on one thread
SIZES = {"gpt-scratch": {"n_embd": 64, "n_head": 4}, "lstm": {"n_embd": 64}}
MODEL_FILES = {
    "chat_template.jinja",
    "config.json",
    "metrics.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_config.json",
}
# 12 steps teach a reply's end and its commonest token before its words: greedy text is
# blank, so sample (seeded, from the full distribution) a fixed length instead
FIXED = GenerationConfig(
    max_new_tokens=12,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    repetition_penalty=1.0,
    seed=3,
    ignore_eos=True,
)


def single_thread() -> None:
    # Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP threads
    # spinning against other processes make training ~30x slower. The export and runtime
    # backends set torch to every core, so each training (re)sets it.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    n = torch.get_num_threads()
    single_thread()
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def one_thread_per_test():
    single_thread()


def config(arch: str, data: Path, out: Path, **kw) -> ScratchConfig:
    fast = dict(vocab_size=300, n_layer=2, max_length=256, max_steps=12, lr=1e-2)
    fast |= dict(batch_size=8, eval_every=4, device="cpu")
    return ScratchConfig(arch=arch, data=data, out_dir=out, **{**fast, **SIZES[arch], **kw})


def quiet(lines: list[str] | None = None):
    return (lines if lines is not None else []).append


@dataclasses.dataclass
class Trained:
    arch: str
    cfg: ScratchConfig
    result: TrainResult
    lines: list[str]


@pytest.fixture(scope="module", params=sorted(ARCHS))
def trained(request, tmp_path_factory):
    single_thread()
    root = tmp_path_factory.mktemp(f"scratch-{request.param}")
    data = write_data(root / "data" / "toy")
    cfg = config(request.param, data, root / "models", name=request.param)
    lines: list[str] = []
    result = run(cfg, log=lines.append, progress=False)
    return Trained(request.param, cfg, result, lines)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"artifacts-{trained.arch}")
    return out, export_tiny(trained.cfg.out, out, trained.arch)


def test_loss_goes_down_and_the_best_step_is_kept(trained):
    m = trained.result.metrics
    losses = [e["loss"] for e in m["train_loss"]]
    assert [e["step"] for e in m["eval"]] == [4, 8, 12]
    assert losses[-1] < losses[0] / 1.5
    assert m["eval"][-1]["loss"] < m["eval"][0]["loss"]
    assert m["best"] == min(m["eval"], key=lambda e: e["loss"])
    assert m["steps"] == 12 and m["parameters"] > 0


def test_the_model_directory_is_complete(trained):
    from transformers import AutoTokenizer

    from export.gguf_convert import structural_pre_tokenizer

    out = trained.cfg.out
    names = {p.name for p in out.iterdir()}
    extra = {"generation_config.json"} if trained.arch == "gpt-scratch" else set()
    assert names == MODEL_FILES | extra
    assert sorted(p.name for p in out.parent.iterdir()) == [trained.arch]  # no work dir, no tmp
    record = json.loads((out / "training_config.json").read_text())
    assert record["arch"] == trained.arch
    assert record["architecture"] == {"gpt-scratch": "llama", "lstm": "lstm"}[trained.arch]
    assert record["tokenizer"] == {"type": "byte-level BPE", "pre_tokenizer": "smollm", "size": 300}
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == CHAT_TEMPLATE and tok.eos_token == EOS_TOKEN
    assert len(tok) == 300
    # llama.cpp's converter will recognize the tokenizer (GGUF export needs it)
    assert structural_pre_tokenizer(out) == "smollm"
    assert f"next: balabol export --base {out} --name {trained.arch}" in "\n".join(trained.lines)


def test_an_existing_model_is_refused(trained):
    before = (trained.cfg.out / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a trained model; pass --force"):
        run(trained.cfg, log=quiet(), progress=False)
    assert (trained.cfg.out / "model.safetensors").read_bytes() == before


EXPECTED_STATUS = {
    "gpt-scratch": {
        f: "passed"
        for f in (
            "torch",
            "onnx",
            "onnx-int8",
            "gguf-f16",
            "gguf-q8_0",
            "gguf-q4_k_m",
            "gguf-q4_0",
        )
    },
    "lstm": {
        "torch": "passed",
        "onnx": "passed",
        "onnx-int8": "passed",
        "gguf-f16": "skipped",
        "gguf-q8_0": "skipped",
        "gguf-q4_k_m": "skipped",
        "gguf-q4_0": "skipped",
    },
}


def test_it_exports_and_every_format_passes(trained, exported):
    root, manifest = exported
    assert manifest.architecture == {"gpt-scratch": "llama", "lstm": "lstm"}[trained.arch]
    assert {a.format: a.status for a in manifest.artifacts} == EXPECTED_STATUS[trained.arch]
    assert manifest.artifact("onnx").parity["max_abs_logit_diff"] < 1e-4
    assert manifest.context_length == 256
    assert Manifest.load(root / trained.arch) == manifest


def test_the_bot_offers_every_passed_format(trained, exported):
    from bot.models import scan

    root, _ = exported
    offered = [(c.artifact, c.format) for c in scan(root)]
    fastest_first = {
        "gpt-scratch": [
            "gguf-q4_0",
            "gguf-q4_k_m",
            "gguf-q8_0",
            "onnx-int8",
            "gguf-f16",
            "onnx",
            "torch",
        ],
        "lstm": ["onnx-int8", "onnx", "torch"],
    }[trained.arch]
    assert offered == [(trained.arch, f) for f in fastest_first]


def test_the_runtime_generates_the_same_text_from_every_format(trained, exported):
    root, manifest = exported
    messages = chat("hi", "")[:1]
    texts = {}
    for a in manifest.usable():
        backend = load(trained.arch, a.format, root=root)
        try:
            texts[a.format] = backend.generate(messages, FIXED)
            assert backend.last_stats.new_tokens == 12
            if trained.arch == "lstm":
                assert type(backend).__name__.startswith("Lstm")
        finally:
            backend.close()
    assert len(texts) == len(manifest.usable()) and texts["torch"].strip()
    # int8 and q4 may flip a near-tie on a 12-step model; fp32 formats must agree exactly
    assert texts["onnx"] == texts["torch"]
    # the sampling options reach every backend: another seed, another reply
    backend = load(trained.arch, "onnx", root=root)
    try:
        assert backend.generate(messages, dataclasses.replace(FIXED, seed=4)) != texts["onnx"]
    finally:
        backend.close()


def test_eval_scores_the_trained_model(trained):
    """The hook `balabol eval` needs: the model dir opens in the runtime's torch backend."""
    out = trained.cfg.out
    tokenizer, added = dataset.chat_tokenizer(out)
    assert added == []  # the chat tokens are its own
    samples = list(dataset.read_jsonl(trained.cfg.data / "val.jsonl"))
    model = evaluate.open_torch(evaluate.EvalConfig(data=trained.cfg.data, base=str(out)))
    try:
        got = score.score(
            model.backend, samples, context=model.context, max_new_tokens=6, batch_size=3
        )
    finally:
        model.backend.close()
    encoded, _ = dataset.load_split(trained.cfg.data / "val.jsonl", tokenizer)
    assert got["samples"] == 8
    assert got["target_tokens"] == sum(e.n_targets for e in encoded)
    assert got["perplexity"] < 300 / 5  # well below a uniform guess over the vocabulary
    assert len(got["examples"]) == 5


def test_lstm_padding_on_either_side_gives_the_unpadded_logits():
    import torch

    torch.manual_seed(0)
    model = lstm.build(lstm.LstmConfig(vocab_size=50, n_embd=16, n_layer=2)).eval()
    a, b = [5, 6, 7, 8], [9, 10]
    with torch.no_grad():
        want_a = model(torch.tensor([a])).logits[0]
        want_b = model(torch.tensor([b])).logits[0]
        left = model(
            torch.tensor([a, [0, 0, *b]]), attention_mask=torch.tensor([[1] * 4, [0, 0, 1, 1]])
        )
        right = model(
            torch.tensor([a, [*b, 0, 0]]), attention_mask=torch.tensor([[1] * 4, [1, 1, 0, 0]])
        )
    assert torch.allclose(left.logits[0], want_a, atol=1e-6)
    assert torch.allclose(left.logits[1, 2:], want_b, atol=1e-6)
    assert torch.allclose(right.logits[1, :2], want_b, atol=1e-6)
    # the state is the one after each row's last real token
    with torch.no_grad():
        h_b = model(torch.tensor([b])).state[0][:, 0]
    assert torch.allclose(left.state[0][:, 1], h_b, atol=1e-6)
    assert torch.allclose(right.state[0][:, 1], h_b, atol=1e-6)


def test_resume_continues_from_the_checkpoint(tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 4:
                raise KeyboardInterrupt

    cfg = config("lstm", write_data(tmp_path / "toy"), tmp_path / "models", max_steps=8)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run(cfg, log=lines.append, callbacks=[Interrupt()], progress=False)
    assert last_checkpoint_step(cfg.work_dir) == 4 and not cfg.out.exists()
    assert (cfg.work_dir / "tokenizer" / "tokenizer.json").is_file()

    with pytest.raises(ConfigError, match=r"made with other options \(n_embd: 64 -> 32\)"):
        run(dataclasses.replace(cfg, n_embd=32), log=quiet(), progress=False)

    lines.clear()
    resumed = run(cfg, log=lines.append, progress=False).metrics
    assert f"resuming from step 4 ({cfg.work_dir / 'checkpoint-4'})" in lines
    assert resumed["resumed_from_step"] == 4 and [e["step"] for e in resumed["eval"]] == [4, 8]
    straight = run(dataclasses.replace(cfg, name="straight"), log=quiet(), progress=False)
    a = load_file(cfg.out / "model.safetensors")
    b = load_file(straight.out / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].allclose(b[k], atol=1e-5), k


def test_cli_trains_an_lstm_with_a_progress_bar(tmp_path, capsys):
    data = write_data(tmp_path / "toy", n_train=8, n_val=4)
    args = ["train", "--arch", "lstm", "--data", str(data), "--name", "cli"]
    args += ["--out-dir", str(tmp_path / "m"), "--max-steps", "2", "--batch-size", "4"]
    args += ["--vocab-size", "300", "--n-embd", "32", "--n-layer", "1", "--device", "cpu"]
    assert cli(args) == 0
    out, err = capsys.readouterr()
    assert "lstm: LSTM, 1 layers x 32 wide, vocabulary 300" in out
    assert "estimate: 2 steps" in out and "step 2: val loss" in out
    assert "2/2 [" in err
    assert f"next: balabol export --base {tmp_path / 'm' / 'cli'} --name cli" in out
    assert lstm.is_lstm_dir(tmp_path / "m" / "cli")


CLI_ERRORS = {
    "lora-flag-on-scratch": (
        ["--arch", "lstm", "--qlora", "--lora-r", "8"],
        "error: --qlora, --lora-r: LoRA options; --arch lstm trains a model from scratch",
    ),
    "base-on-scratch": (
        ["--arch", "gpt-scratch", "--base", "x"],
        "error: --base: LoRA options; --arch gpt-scratch trains a model from scratch",
    ),
    "scratch-flag-on-lora": (
        ["--n-layer", "4"],
        "error: --n-layer: options of scratch models; pass --arch gpt-scratch or --arch lstm",
    ),
    "heads-on-lstm": (
        ["--arch", "lstm", "--n-head", "4"],
        "error: --n-head does not apply to --arch lstm (it has no attention)",
    ),
    "width-and-heads": (
        ["--arch", "gpt-scratch", "--n-embd", "100", "--n-head", "3"],
        "error: --n-embd 100 must be a multiple of --n-head 3",
    ),
    "tiny-vocabulary": (
        ["--arch", "gpt-scratch", "--vocab-size", "100"],
        "error: --vocab-size 100: at least 300",
    ),
}


@pytest.mark.parametrize(("args", "message"), CLI_ERRORS.values(), ids=CLI_ERRORS)
def test_cli_errors_name_the_flag(tmp_path, capsys, args, message):
    out = tmp_path / "m"
    assert cli(["train", "--data", str(tmp_path), "--out-dir", str(out), *args]) == 1
    assert capsys.readouterr().err.startswith(message)
    assert not out.exists()


def test_an_lstm_takes_no_adapter(tmp_path):
    lstm.save(lstm.build(lstm.LstmConfig(vocab_size=50, n_embd=8, n_layer=1)), tmp_path / "m")
    out = tmp_path / "artifacts"
    with pytest.raises(ExportError, match=r"--adapter .*: an lstm model has no LoRA adapters"):
        export_tiny(tmp_path / "m", out, "x", adapter=tmp_path)
    assert not out.exists()


def test_balabol_eval_scores_the_model_directory_and_its_artifact(trained, exported, tmp_path):
    """`balabol eval --base models/NAME` and `--artifact NAME` give the same numbers, and
    both land in the data set's one comparison table."""
    from runtime.evaluate import EvalConfig
    from runtime.evaluate import run as run_eval

    root, _ = exported
    data = trained.cfg.data
    common = dict(data=data, limit=4, max_new_tokens=4, batch_size=2)
    lines: list[str] = []
    as_dir = run_eval(
        EvalConfig(base=str(trained.cfg.out), out=tmp_path / "dir.json", **common),
        log=lines.append,
    )
    as_onnx = run_eval(
        EvalConfig(
            artifact=trained.arch,
            format="onnx",
            artifacts_dir=root,
            out=tmp_path / "onnx.json",
            **common,
        ),
        log=lines.append,
    )
    assert as_dir["samples"] == as_onnx["samples"] == 4
    assert as_dir["target_bytes"] == as_onnx["target_bytes"] > 0
    assert as_onnx["perplexity"] == pytest.approx(as_dir["perplexity"], rel=1e-3)
    assert json.loads((tmp_path / "onnx.json").read_text())["source"]["format"] == "onnx"
