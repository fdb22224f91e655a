"""Export of tiny random llama and gpt2 models: every format, parity, manifest, atomicity."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from balabol.cli import main as cli
from balabol.errors import (
    AdapterError,
    BaseModelError,
    ExportError,
    UnsupportedArchitectureError,
)
from balabol.manifest import FORMATS, Manifest, digest
from balabol.prompt import template_sha256
from export.pipeline import ExportConfig, run
from tests.conftest import TINY_GATES


@pytest.fixture(params=["llama", "gpt2"])
def exported(request):
    root, manifest = request.getfixturevalue(f"exported_{request.param}")
    return request.param, root / request.param, manifest


MIXED_TEXT = "Hello, world! Привет, мир! 12345 67.89 🚀🦙 def f(x):\n\treturn x**2\n\n   end."


def test_every_format_is_written_and_passes(exported):
    kind, root, manifest = exported
    assert [a.format for a in manifest.artifacts] == list(FORMATS)
    for a in manifest.artifacts:
        assert a.status == "passed", (a.format, a.parity)
        assert (root / a.path).exists()
        assert (a.bytes, a.sha256) == digest(root / a.path)
    assert manifest.architecture == kind
    assert sorted(p.name for p in (root / "gguf").iterdir()) == [
        "model-f16.gguf",
        "model-q4_0.gguf",
        "model-q4_k_m.gguf",
        "model-q8_0.gguf",
    ]


def test_each_gguf_records_the_types_its_tensors_got(exported):
    import gguf

    kind, root, manifest = exported
    for a in manifest.artifacts:
        if not a.format.startswith("gguf-"):
            continue
        tensors = gguf.GGUFReader(str(root / a.path)).tensors
        types = a.details["tensor_types"]
        assert sum(types.values()) == len(tensors), a.format
        assert types == dict(Counter(t.tensor_type.name.lower() for t in tensors)), a.format
        assert list(types.values()) == sorted(types.values(), reverse=True)  # most first
    got = {f: manifest.artifact(f).details["tensor_types"] for f in ("gguf-q4_0", "gguf-q4_k_m")}
    assert got == TENSOR_TYPES[kind]


# what llama.cpp writes for the tiny models: 64/128 columns take q4_0's 32-wide blocks, so
# every weight gets q4_0 but the output matrix (kept at q8_0 by design); q4_k_m's 256-wide
# blocks fit none of them, and they fall back to q5_0/q8_0 (the summary line says so).
TENSOR_TYPES = {
    "llama": {
        "gguf-q4_0": {"q4_0": 15, "f32": 5, "q8_0": 1},
        "gguf-q4_k_m": {"q5_0": 13, "f32": 5, "q8_0": 3},
    },
    "gpt2": {
        "gguf-q4_0": {"f32": 19, "q4_0": 8, "q8_0": 1},
        "gguf-q4_k_m": {"f32": 19, "q5_0": 5, "q8_0": 2, "q4_k": 1, "q6_k": 1},
    },
}


def test_every_passed_file_records_its_decode_speed(exported):
    _, _, manifest = exported
    for a in manifest.artifacts:
        assert a.decode_tokens_per_s is not None and a.decode_tokens_per_s > 0, a.format


def test_manifest_round_trips_and_records_parity(exported):
    _, root, manifest = exported
    loaded = Manifest.load(root)
    assert loaded == manifest
    raw = json.loads((root / "manifest.json").read_text())
    assert raw["chat_template_sha256"] == template_sha256()
    onnx = loaded.artifact("onnx")
    assert onnx.parity["max_abs_logit_diff"] <= 1e-4
    int8 = loaded.artifact("onnx-int8")
    assert set(int8.details) >= {"kept_fp32", "graphs", "calibration_ppl_int8"}
    assert all(c["MatMulNBits"] > 0 for c in int8.details["graphs"].values())
    assert not list(root.parent.glob(f".{root.name}.partial-*"))


def test_gguf_tokenizes_like_hf(exported):
    import llama_cpp
    from transformers import AutoTokenizer

    _, root, _ = exported
    tok = AutoTokenizer.from_pretrained(root / "hf")
    llm = llama_cpp.Llama(str(root / "gguf" / "model-f16.gguf"), vocab_only=True, verbose=False)
    assert (
        llm.tokenize(MIXED_TEXT.encode(), add_bos=False, special=False)
        == tok(MIXED_TEXT, add_special_tokens=False)["input_ids"]
    )


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_generate_from_each_format(exported, fmt, capsys):
    kind, root, _ = exported
    args = ["generate", "Hi", "--artifact", kind, "--format", fmt, "--out-dir", str(root.parent)]
    assert cli([*args, "--max-new-tokens", "5", "--temperature", "0"]) == 0
    assert f"[{kind} / {fmt}: " in capsys.readouterr().err


def test_existing_output_is_refused_and_untouched(exported):
    kind, root, _ = exported
    before = digest(root)
    cfg = ExportConfig(base=str(root / "hf"), name=kind, out_dir=root.parent)
    with pytest.raises(ExportError, match="already exists; pass --force"):
        run(cfg, log=lambda _: None)
    assert digest(root) == before


def test_interrupted_export_leaves_nothing(tiny_model, tmp_path, monkeypatch):
    import export.onnx

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(export.onnx, "export_onnx", boom)
    with pytest.raises(KeyboardInterrupt):
        run(ExportConfig(base=str(tiny_model("llama")), name="x", out_dir=tmp_path), log=print)
    assert list(tmp_path.iterdir()) == []


def test_unknown_pre_tokenizer_skips_gguf_with_a_warning(tiny_model, tmp_path):
    lines = []
    base = tiny_model("llama", tokenizer_kind="whitespace")
    m = run(
        ExportConfig(base=str(base), name="ws", out_dir=tmp_path, formats=("gguf-q8_0",)),
        log=lines.append,
    )
    assert [a.format for a in m.artifacts] == ["torch", "gguf-q8_0"]
    assert m.artifact("gguf-q8_0").status == "skipped"
    # the warning comes before the merge, i.e. before any heavy work
    warn = next(i for i, s in enumerate(lines) if "unknown to llama.cpp" in s)
    assert warn < next(i for i, s in enumerate(lines) if s.startswith("[hf]"))
    assert not (tmp_path / "ws" / "gguf").exists()


def test_adapter_is_merged(tiny_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = tiny_model("llama")
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    lora.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 42]])
    with torch.no_grad():
        want = lora(ids).logits
    m = run(
        ExportConfig(
            base=str(base),
            adapter=tmp_path / "adapter",
            out_dir=tmp_path / "a",
            formats=("onnx",),
            gates=TINY_GATES,
        ),
        log=lambda _: None,
    )
    assert m.name == "adapter" and m.adapter["path"].endswith("adapter")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "adapter" / "hf")
    with torch.no_grad():
        got = merged(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base)(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)
    assert m.artifact("onnx").status == "passed"


def test_adapter_for_another_base_is_a_clear_error(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    other = AutoModelForCausalLM.from_pretrained(tiny_model("gpt2"))
    get_peft_model(other, LoraConfig(r=4, target_modules=["c_attn"])).save_pretrained(
        tmp_path / "gpt2-adapter"
    )
    with pytest.raises(AdapterError, match="does not fit base"):
        run(
            ExportConfig(
                base=str(tiny_model("llama")),
                adapter=tmp_path / "gpt2-adapter",
                out_dir=tmp_path / "out",
            ),
            log=lambda _: None,
        )
    assert list((tmp_path / "out").iterdir()) == []


def _model_dir(d, config, *, weights=True, raw=None):
    d.mkdir()
    (d / "config.json").write_text(raw if raw is not None else json.dumps(config))
    if weights:
        (d / "model.safetensors").write_bytes(b"")
    return d


BAD_BASES = {
    "missing": (lambda d: d / "missing", BaseModelError, "neither an embedded base"),
    "no-weights": (lambda d: _model_dir(d / "m", {}, weights=False), BaseModelError, "no weights"),
    "corrupt-config": (
        lambda d: _model_dir(d / "c", {}, raw="{oops"),
        BaseModelError,
        "not valid JSON",
    ),
    "not-causal": (
        lambda d: _model_dir(d / "b", {"architectures": ["BertModel"], "model_type": "bert"}),
        BaseModelError,
        "not a causal language model",
    ),
    "unknown-arch": (
        lambda d: _model_dir(
            d / "u", {"architectures": ["MambaForCausalLM"], "model_type": "mamba"}
        ),
        UnsupportedArchitectureError,
        r"'mamba'.*Supported: llama .*gpt2",
    ),
}


@pytest.mark.parametrize(("setup", "error", "message"), BAD_BASES.values(), ids=BAD_BASES)
def test_bad_base_is_a_clear_error(tmp_path, setup, error, message):
    base = setup(tmp_path)
    out = tmp_path / "artifacts"
    with pytest.raises(error, match=message):
        run(ExportConfig(base=str(base), name="x", out_dir=out), log=lambda _: None)
    assert not (out / "x").exists()


def test_cli_prints_errors_without_traceback(tmp_path, capsys):
    assert cli(["export", "--base", str(tmp_path / "nope"), "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: base") and "Traceback" not in err


def test_int8_keeps_more_groups_in_fp32_until_the_parity_gate_accepts(exported_llama, tmp_path):
    from export import int8

    root, _ = exported_llama
    calib = list(range(3, 60))
    seen = []

    def gate(path):
        seen.append(path)
        return [] if len(seen) == 4 else ["greedy agreement 80% < 90%"]  # the fourth one passes

    rep = int8.export_int8(
        root / "llama" / "onnx",
        tmp_path / "int8",
        calib,
        target_ppl_ratio=100.0,  # met by any quantization: only the gate decides
        accept=gate,
        log=lambda _: None,
    )
    assert len(seen) == 4
    # all quantized in blocks of 128, of 32, then one group kept in fp32, then two: accepted
    assert len(rep.kept_fp32) == 2 and rep.block_size == int8.BLOCK_SIZES[-1]
    assert set(rep.kept_fp32) <= set(rep.groups)
    assert (tmp_path / "int8" / "model.onnx").is_file()


def test_int8_stops_asking_when_the_calibration_target_is_met_and_accepted(
    exported_llama, tmp_path
):
    from export import int8

    root, _ = exported_llama
    asked = []
    rep = int8.export_int8(
        root / "llama" / "onnx",
        tmp_path / "int8",
        list(range(3, 60)),
        target_ppl_ratio=100.0,  # any quantization meets it
        accept=lambda p: asked.append(p) or [],
        log=lambda _: None,
    )
    assert len(asked) == 1 and rep.kept_fp32 == [] and rep.groups == {}
    assert rep.block_size == int8.BLOCK_SIZES[0]


def test_llama_onnx_graphs_are_fused(exported_llama):
    """Attention and residual + RMSNorm fused (export/onnx.py), in fp32 and in int8 made from it."""
    import onnx

    root, manifest = exported_llama
    fused = manifest.artifact("onnx").details["fused_operators"]
    assert fused["GroupQueryAttention"] == fused["SkipSimplifiedLayerNormalization"] // 2 > 0
    for fmt in ("onnx", "onnx-int8"):
        graph = onnx.load(str(root / "llama" / fmt / "model.onnx"), load_external_data=False).graph
        ops = {n.op_type for n in graph.node}
        assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization"} <= ops, (fmt, ops)
        assert "Expand" not in ops and "Softmax" not in ops  # the old attention is gone
