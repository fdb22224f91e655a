"""The tokenizer the runtime uses: `tokenizer.json` through the `tokenizers` library only.

Loading transformers would import torch (~250 MB resident) into a process that serves a
GGUF or ONNX model; this reads the same files the HF tokenizer wrote and gives the same ids.

Example: `Tokenizer(Path("artifacts/smollm2-135m-instruct/hf"))("Hello")["input_ids"]`.
"""

from __future__ import annotations

import json
from pathlib import Path

from balabol.errors import ArtifactError, require


def _content(token) -> str | None:
    return token.get("content") if isinstance(token, dict) else token


class Tokenizer:
    # transformers' name for "has tokenizer.json and gives character offsets", which
    # balabol.labels needs to find the assistant replies
    is_fast = True

    def __init__(self, directory: Path):
        require("tokenizers", extra="runtime")
        from tokenizers import Tokenizer as RustTokenizer

        directory = Path(directory)
        try:
            self._tok = RustTokenizer.from_file(str(directory / "tokenizer.json"))
            # a second copy that reads special-token text as plain text (user content, #19);
            # two objects, so no thread flips a shared flag under another
            self._plain = RustTokenizer.from_file(str(directory / "tokenizer.json"))
            self._plain.encode_special_tokens = True
            cfg = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ArtifactError(
                f"cannot read the tokenizer in {directory} ({e}); re-export with --force"
            ) from e
        template = directory / "chat_template.jinja"
        self.chat_template = cfg.get("chat_template") or (
            template.read_text(encoding="utf-8") if template.is_file() else None
        )
        self.eos_token = _content(cfg.get("eos_token"))
        self.bos_token = _content(cfg.get("bos_token"))
        self.eos_token_id = self._tok.token_to_id(self.eos_token) if self.eos_token else None
        self.bos_token_id = self._tok.token_to_id(self.bos_token) if self.bos_token else None

    @property
    def special_ids(self) -> list[int]:
        return [i for i, t in self._tok.get_added_tokens_decoder().items() if t.special]

    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry or added token, None if there is none."""
        return self._tok.token_to_id(token)

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def added_tokens_decoder(self) -> dict:
        """id -> AddedToken (with .content and .special), as transformers names it."""
        return self._tok.get_added_tokens_decoder()

    def __call__(
        self,
        text: str,
        add_special_tokens: bool = True,
        *,
        split_special_tokens: bool = False,
        return_offsets_mapping: bool = False,
    ) -> dict[str, list]:
        """transformers' names: split_special_tokens=True reads "<|im_end|>" as plain text."""
        tok = self._plain if split_special_tokens else self._tok
        enc = tok.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, list] = {"input_ids": enc.ids}
        if return_offsets_mapping:
            out["offset_mapping"] = enc.offsets
        return out

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
