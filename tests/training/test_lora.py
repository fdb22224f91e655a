"""`balabol train` on tiny random models: loss goes down, the adapter is complete, exports and
evaluates like the merged artifact, resumes after an interruption, QLoRA runs on the CPU."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from balabol.architectures import ARCHITECTURES
from balabol.cli import main as cli
from balabol.errors import BaseModelError, ConfigError, DataError, UnsupportedArchitectureError
from balabol.manifest import Manifest
from balabol.prompt import CHAT_TEMPLATE, EOS_TOKEN
from runtime import evaluate
from training.harness import TrainResult, last_checkpoint_step
from training.lora import TrainConfig, run
from training.plan import plan_device

from .helpers import build_plain_gpt2, chat, write_data, write_jsonl

ADAPTER_FILES = {
    "README.md",  # peft's model card
    "adapter_config.json",
    "adapter_model.safetensors",
    "chat_template.jinja",
    "metrics.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_config.json",
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP threads
    # spinning against other processes make a step ~15x slower.
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def config(base, data, out, **kw) -> TrainConfig:
    fast = {"max_steps": 12, "lr": 1e-2, "batch_size": 8, "eval_every": 4, "device": "cpu"}
    return TrainConfig(base=str(base), data=data, out_dir=out, **{**fast, **kw})


def quiet(lines: list[str] | None = None):
    return (lines if lines is not None else []).append


@dataclasses.dataclass
class Trained:
    kind: str
    base: Path
    cfg: TrainConfig
    result: TrainResult
    lines: list[str]


KINDS = ("llama", "gpt2", "gemma3")  # tiny_model kinds = the architectures with LoRA targets


def test_every_architecture_is_trained_here():
    assert {a.name for a in ARCHITECTURES.values() if a.adapters} == set(KINDS)


@pytest.fixture(scope="module", params=KINDS)
def trained(request, tiny_model, tmp_path_factory):
    kind = request.param
    root = tmp_path_factory.mktemp(f"train-{kind}")
    base = tiny_model(kind)
    lines: list[str] = []
    cfg = config(base, write_data(root / "data" / "toy"), root / "adapters")
    result = run(cfg, log=lines.append, progress=False)
    return Trained(kind, base, cfg, result, lines)


def test_loss_goes_down_and_the_best_step_is_kept(trained):
    m = trained.result.metrics
    losses = [e["loss"] for e in m["train_loss"]]
    evals = [e["loss"] for e in m["eval"]]
    assert [e["step"] for e in m["eval"]] == [4, 8, 12]
    assert losses[-1] < losses[0] / 2
    assert evals[-1] < evals[0]
    assert m["best"] == min(m["eval"], key=lambda e: e["loss"])
    assert m["steps"] == 12 and m["resumed_from_step"] is None
    assert m["seconds_per_step"] > 0 and m["peak_memory_bytes"] > 0


def test_the_adapter_directory_is_complete(trained):
    kind, base, out = trained.kind, trained.base, trained.cfg.out
    assert trained.result.out == out
    names = {p.name for p in out.iterdir()}
    # a SentencePiece tokenizer (Gemma) also writes its model and the tokens added to it
    assert ADAPTER_FILES <= names <= ADAPTER_FILES | {"tokenizer.model", "added_tokens.json"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy"]  # no checkpoints, no tmp
    assert (out / "chat_template.jinja").read_text() == CHAT_TEMPLATE
    record = json.loads((out / "training_config.json").read_text())
    spec = ARCHITECTURES[kind]
    assert record["architecture"] == kind
    assert record["target_modules"] == list(spec.lora_targets)
    assert record["base"] == str(base) and record["assistant_only"] is True
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == sorted(spec.lora_targets)
    assert adapter["fan_in_fan_out"] is spec.fan_in_fan_out

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == CHAT_TEMPLATE and tok.eos_token == EOS_TOKEN


def test_an_estimate_is_printed_before_training(trained):
    lines = trained.lines
    (estimate,) = [s for s in lines if s.startswith("estimate:")]
    assert "12 steps" in estimate and "peak memory ~" in estimate and "measured" in estimate
    assert lines.index(estimate) < next(
        i for i, s in enumerate(lines) if "next: balabol export" in s
    )


def test_the_adapter_exports_and_evaluates_like_the_artifact(trained, tmp_path, capsys):
    base, cfg, art = trained.base, trained.cfg, tmp_path / "artifacts"
    args = ["--base", str(base), "--adapter", str(cfg.out), "--out-dir", str(art)]
    code = cli(["export", *args, "--formats", "onnx"])
    assert code == 0, capsys.readouterr()
    manifest = Manifest.load(art / "toy")
    assert manifest.adapter["path"] == str(cfg.out.resolve())
    assert manifest.artifact("onnx").status == "passed"

    common = {"data": cfg.data, "max_new_tokens": 8, "artifacts_dir": art}
    got = {
        "base": evaluate.run(evaluate.EvalConfig(base=str(base), **common), log=quiet()),
        "adapter": evaluate.run(evaluate.EvalConfig(adapter=cfg.out, **common), log=quiet()),
        "artifact": evaluate.run(evaluate.EvalConfig(artifact="toy", **common), log=quiet()),
    }
    # the merged, exported weights score what the adapter on its base scores
    for key in ("loss", "bits_per_byte"):
        assert got["artifact"][key] == pytest.approx(got["adapter"][key], rel=1e-4)
    assert got["artifact"]["bleu"] == got["adapter"]["bleu"]
    # and training helped on the held-out replies
    assert got["adapter"]["perplexity"] < got["base"]["perplexity"] / 10
    assert got["adapter"]["rouge_l"] > got["base"]["rouge_l"]
    assert sorted(p.name for p in (cfg.data / "eval").iterdir()) == [
        "adapter-toy.json",
        "artifact-toy-torch.json",
        f"base-{base.name}.json",
    ]


def test_an_existing_adapter_is_refused_and_untouched(trained):
    cfg = trained.cfg
    before = (cfg.out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a trained adapter; pass --force"):
        run(cfg, log=quiet(), progress=False)
    assert (cfg.out / "adapter_model.safetensors").read_bytes() == before


def test_resume_continues_from_the_checkpoint(tiny_model, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 4:
                raise KeyboardInterrupt  # as a Ctrl-C right after the checkpoint is written

    base, data = tiny_model("llama"), write_data(tmp_path / "toy")
    cfg = config(base, data, tmp_path / "adapters", max_steps=8, eval_every=2)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run(cfg, log=lines.append, callbacks=[Interrupt()], progress=False)
    assert last_checkpoint_step(cfg.work_dir) == 4
    assert not cfg.out.exists()
    assert any("interrupted at step 4; the last checkpoint is step 4" in s for s in lines)

    with pytest.raises(ConfigError, match=r"made with other options \(lora_r: 16 -> 4\)"):
        run(dataclasses.replace(cfg, lora_r=4), log=quiet(), progress=False)

    lines.clear()
    resumed = run(cfg, log=lines.append, progress=False).metrics
    assert f"resuming from step 4 ({cfg.work_dir / 'checkpoint-4'})" in lines
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == 8
    assert [e["step"] for e in resumed["eval"]] == [2, 4, 6, 8]
    assert not cfg.work_dir.exists()

    # the same run without the interruption ends with the same weights
    straight = run(dataclasses.replace(cfg, name="straight"), log=quiet(), progress=False)
    a = load_file(cfg.out / "adapter_model.safetensors")
    b = load_file(straight.out / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].allclose(b[k], atol=1e-5), k


def test_resume_without_a_checkpoint_is_an_error(tiny_model, tmp_path):
    cfg = config(tiny_model("llama"), write_data(tmp_path / "toy"), tmp_path / "a", resume=True)
    with pytest.raises(ConfigError, match="--resume: no checkpoint of 'toy'"):
        run(cfg, log=quiet())


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_qlora_trains_on_the_cpu_and_merges(kind, tiny_model, tmp_path):
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # a broken native library raises more than ImportError
        pytest.skip(f"bitsandbytes cannot load here ({e}); QLoRA needs `pip install -e '.[train]'`")
    import torch
    from transformers import AutoModelForCausalLM

    from export.merge import merge

    base = tiny_model(kind)
    data, out = write_data(tmp_path / "toy"), tmp_path / "adapters"
    cfg = config(base, data, out, qlora=True, max_steps=6, eval_every=4)
    lines: list[str] = []
    m = run(cfg, log=lines.append, progress=False).metrics
    assert [e["step"] for e in m["eval"]] == [4, 6]  # the last step is evaluated too
    assert "4-bit nf4" in next(s for s in lines if s.startswith("base "))
    assert m["train_loss"][-1]["loss"] < m["train_loss"][0]["loss"]
    assert json.loads((cfg.out / "training_config.json").read_text())["qlora"] is True
    # the adapter was trained on nf4 weights and merges into the fp32 base
    merge(base, cfg.out, tmp_path / "merged")
    ids = torch.tensor([[1, 5, 9, 42]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base)(ids).logits
    assert not torch.allclose(merged, plain, atol=1e-3)


def test_cli_trains_with_a_progress_bar(tiny_model, tmp_path, capsys):
    data = write_data(tmp_path / "toy", n_train=8, n_val=4)
    args = ["train", "--base", str(tiny_model("gpt2")), "--data", str(data), "--name", "cli"]
    args += ["--out-dir", str(tmp_path / "a"), "--max-steps", "2", "--batch-size", "4"]
    assert cli([*args, "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "estimate: 2 steps" in out and "step 2: val loss" in out
    assert "2/2 [" in err  # the progress bar, with its ETA, is on stderr
    assert (
        f"next: balabol export --base {tiny_model('gpt2')} --adapter {tmp_path / 'a' / 'cli'}"
        in out
    )
    assert (tmp_path / "a" / "cli" / "adapter_model.safetensors").is_file()


def test_a_base_without_chat_tokens_learns_them(tmp_path):
    from safetensors.torch import load_file

    from export.merge import merge

    base = build_plain_gpt2(tmp_path / "plain")
    data = write_data(tmp_path / "toy")
    cfg = config(base, data, tmp_path / "adapters")
    run(cfg, log=quiet(), progress=False)
    record = json.loads((cfg.out / "training_config.json").read_text())
    assert record["added_tokens"] == ["<|im_start|>", "<|im_end|>"]
    # only the two new embedding rows travel with the adapter, not the whole matrix
    weights = load_file(cfg.out / "adapter_model.safetensors")
    assert [tuple(v.shape) for k, v in weights.items() if "lora_" not in k] == [(2, 64)]
    # merged (as export does) it scores what the adapter on its base scores
    merge(base, cfg.out, tmp_path / "merged")
    common = {"data": data, "max_new_tokens": 4}
    a = evaluate.run(evaluate.EvalConfig(adapter=cfg.out, **common), log=quiet())
    m = evaluate.run(evaluate.EvalConfig(base=str(tmp_path / "merged"), **common), log=quiet())
    assert m["loss"] == pytest.approx(a["loss"], rel=1e-4)


def test_without_val_samples_the_last_step_is_kept(tiny_model, tmp_path):
    data = write_data(tmp_path / "toy", n_train=4, n_val=0)
    lines: list[str] = []
    cfg = config(tiny_model("gpt2"), data, tmp_path / "a", max_steps=2, batch_size=2)
    m = run(cfg, log=lines.append, progress=False).metrics
    assert f"WARNING: {data / 'val.jsonl'} has no samples" in "\n".join(lines)
    assert (m["eval"], m["best"], m["kept"], m["steps"]) == ([], None, "the last step", 2)


# --- plans and configs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "micro", "want"), [(16, None, (4, 4)), (6, None, (2, 3)), (16, 8, (8, 2))]
)
def test_the_cpu_keeps_the_effective_batch_with_accumulation(tmp_path, batch, micro, want):
    cfg = TrainConfig(data=tmp_path, batch_size=batch, micro_batch_size=micro, device="cpu")
    plan = plan_device(cfg)
    assert (plan.device, plan.precision) == ("cpu", "fp32")
    assert (plan.micro_batch, plan.accumulation) == want


@pytest.mark.parametrize(
    ("capability", "card", "precision"),
    [((7, 5), "Tesla T4", "fp16"), ((8, 0), "NVIDIA A100-SXM4-40GB", "bf16")],
)
def test_a_gpu_trains_in_half_precision_without_accumulation(
    tmp_path, monkeypatch, capability, card, precision
):
    """No GPU here: torch.cuda is made to report one, to check the plan (not a GPU run).
    A T4 gets fp16 (it has no fast bf16), Ampere and newer bf16; the whole batch fits."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: card)
    plan = plan_device(TrainConfig(data=tmp_path, batch_size=16))
    assert (plan.device, plan.precision, plan.micro_batch, plan.accumulation) == (
        "cuda",
        precision,
        16,
        1,
    )
    assert card in plan.describe() and precision in plan.describe()
    assert plan_device(TrainConfig(data=tmp_path, device="cpu")).device == "cpu"


BAD_CONFIGS = {
    "no-data": ({"data": None}, "--data is required"),
    "micro-batch": (
        {"batch_size": 16, "micro_batch_size": 5},
        "--batch-size 16 must be a multiple of --micro-batch-size 5",
    ),
    "lr": ({"lr": 3.0}, "--lr 3.0: must be between 0 and 1"),
    "epochs": ({"epochs": 0}, "--epochs 0: must be > 0"),
    "rank": ({"lora_r": 0}, "--lora-r 0: must be a whole number >= 1"),
    "dropout": ({"lora_dropout": 1.0}, r"--lora-dropout 1.0: must be in \[0, 1\)"),
    "device": ({"device": "tpu"}, "--device 'tpu': one of auto, cpu, cuda"),
    "name": ({"name": "../x"}, "--name '../x': use a plain directory name"),
    "resume-force": ({"resume": True, "force": True}, "--resume and --force contradict"),
}


@pytest.mark.parametrize(("kwargs", "message"), BAD_CONFIGS.values(), ids=BAD_CONFIGS)
def test_bad_options_name_the_flag(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{"data": tmp_path, **kwargs})


# --- bad input: clear errors, nothing written ---------------------------------------------


def _model_dir(d, config):
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    (d / "model.safetensors").write_bytes(b"")
    return d


BAD_INPUTS = {
    "missing-data": (
        lambda t, b: (b, t / "nope"),
        DataError,
        r"nope does not exist; build one with `balabol data",
    ),
    "empty-train": (
        lambda t, b: (b, _with_train(t, [])),
        DataError,
        r"train.jsonl has nothing to train on: it is empty",
    ),
    "malformed-line": (
        lambda t, b: (b, _with_train(t, [{"messages": chat("a", "b")}, "{oops"])),
        DataError,
        r"train.jsonl:2: not valid JSON",
    ),
    "no-replies": (
        lambda t, b: (b, _with_train(t, [{"messages": [{"role": "user", "content": "hm"}]}])),
        DataError,
        r"none of its 1 samples has an assistant reply to learn \(pass --all-tokens",
    ),
    "unknown-base": (
        lambda t, b: (t / "no-such-model", write_data(t / "d")),
        BaseModelError,
        r"base '.*no-such-model' is neither an embedded base \(default, .*\) nor an existing directory",
    ),
    "unknown-architecture": (
        lambda t, b: (
            _model_dir(t / "m", {"architectures": ["MambaForCausalLM"], "model_type": "mamba"}),
            write_data(t / "d"),
        ),
        UnsupportedArchitectureError,
        r"'mamba', which Balabol cannot fine-tune yet. Supported: llama \(.*\), gpt2",
    ),
    "not-causal": (
        lambda t, b: (
            _model_dir(t / "m", {"architectures": ["BertModel"], "model_type": "bert"}),
            write_data(t / "d"),
        ),
        BaseModelError,
        "not a causal language model",
    ),
}


def _with_train(tmp, rows):
    data = write_data(tmp / "d")
    write_jsonl(data / "train.jsonl", rows)
    return data


@pytest.mark.parametrize(("setup", "error", "message"), BAD_INPUTS.values(), ids=BAD_INPUTS)
def test_bad_input_is_a_clear_error_and_writes_nothing(tiny_model, tmp_path, setup, error, message):
    base, data = setup(tmp_path, tiny_model("llama"))
    out = tmp_path / "adapters"
    with pytest.raises(error, match=message):
        run(config(base, data, out), log=quiet(), progress=False)
    assert not out.exists()


def test_importing_the_commands_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, training.train, runtime.evaluate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_prints_the_error_without_a_traceback(tmp_path, capsys):
    assert cli(["train", "--data", str(tmp_path / "nope"), "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: data directory") and "Traceback" not in err


@pytest.mark.parametrize("batching", ["packed", "grouped", "random"])
def test_batching_spends_little_or_no_compute_on_padding(tiny_model, tmp_path, batching):
    """`balabol train` packs each batch into one row (no padding at all); --batching grouped
    batches samples of similar length (little padding); random batches pad to their longest
    sample. benchmarks/test_training.py measures what each buys."""
    from transformers import AutoModelForCausalLM

    from training import dataset
    from training.plan import Plan, Schedule
    from training.trainer import make_trainer

    # the HF sampler sorts within "megabatches" of up to 50 batches, fewer on small sets
    lengths = [5, 120, 9, 100, 7, 110, 6, 130] * 50
    train_set = [dataset.Encoded([3] * n, [3] * n, n, False) for n in lengths]
    trainer = make_trainer(
        work_dir=tmp_path,
        lr=1e-3,
        seed=0,
        gradient_checkpointing=False,
        plan=Plan("cpu", "fp32", 4, 1),
        sched=Schedule(steps=100, epochs=1.0, eval_every=100, warmup=0),
        model=AutoModelForCausalLM.from_pretrained(tiny_model("llama")),
        tokenizer=dataset.chat_tokenizer(tiny_model("llama"))[0],
        train_set=train_set,
        val_set=[],
        progress=False,
        batching=batching,
    )
    padded = sum(b["input_ids"].numel() for b in trainer.get_train_dataloader())
    real = sum(lengths)
    # grouped: short with short, long with long; random: nearly every batch has a long one
    want = {
        "packed": padded == real,
        "grouped": padded < 1.15 * real,
        "random": padded > 1.5 * real,
    }
    assert want[batching], (padded, real)


def test_the_cli_chooses_the_batching(tmp_path, monkeypatch, capsys):
    import training.lora as lora

    seen = []
    monkeypatch.setattr(lora, "run", lambda cfg, **_: seen.append(cfg))
    assert cli(["train", "--data", str(tmp_path), "--batching", "random"]) == 0
    assert cli(["train", "--data", str(tmp_path)]) == 0
    assert [c.batching for c in seen] == ["random", "packed"]
    with pytest.raises(SystemExit):
        cli(["train", "--data", str(tmp_path), "--batching", "sorted"])
    assert "invalid choice: 'sorted'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--batching 'sorted': one of packed, grouped, random"):
        TrainConfig(data=tmp_path, batching="sorted")


# not gpt2: its own dropout (0.1) draws different masks for packed shapes; its packed logits
# are checked exactly in test_dataset.py
@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_packed_training_learns_like_padded_training(tiny_model, tmp_path, kind):
    """Packed batches are the random padded batches without the padding: same seed, same
    samples per step, nearly the same losses, and no compute spent on padding."""
    data = write_data(tmp_path / "toy")
    losses, padding = {}, {}
    for batching in ("random", "packed"):
        out = tmp_path / f"a-{batching}"
        # no LoRA dropout: its random masks follow the tensors' shapes, which packing changes
        cfg = config(tiny_model(kind), data, out, max_steps=6, batching=batching, lora_dropout=0.0)
        m = run(cfg, log=quiet(), progress=False).metrics
        losses[batching] = [e["loss"] for e in m["eval"]]
        padding[batching] = m["padding_fraction"]
    assert losses["packed"][-1] < losses["packed"][0]
    assert losses["packed"] == pytest.approx(losses["random"], rel=1e-3)
    assert padding["packed"] == 0 < padding["random"]
