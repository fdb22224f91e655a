"""The torch backend: the merged fp32 `hf/` checkpoint with transformers, KV cache on.

It is also the reference the parity gate checks every other format against, and what
`balabol eval` scores a base (or base + LoRA adapter, merged on load) with; the batch methods
(`logits_batch`, `greedy_batch`) run several sequences in one padded forward pass for that.

Example: `balabol chat --format torch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from balabol.errors import AdapterError, ArtifactError, require
from runtime.base import DecoderBackend


@dataclass
class TorchBackend(DecoderBackend):
    model: object = None
    device: str = "cpu"
    _past: object = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        tokenizer,
        context_length: int,
        fmt: str,
        threads: int,
        adapter: Path | None = None,
        device: str = "cpu",
    ):
        """`adapter`: a LoRA adapter directory, merged into the weights on load (peft); the
        embeddings grow first when the tokenizer has tokens the base lacks (the chat tokens
        `balabol train` adds)."""
        torch = require("torch", extra="torch")
        from safetensors import SafetensorError  # a truncated or corrupt *.safetensors
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:
            raise ArtifactError(f"cannot load {path}: {e}; re-export with --force") from e
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        if adapter is not None:
            model = _merge_adapter(model, Path(adapter), path)
        return cls(
            tokenizer=tokenizer,
            context_length=context_length,
            format=fmt,
            eos_ids=frozenset({tokenizer.eos_token_id}),
            model=model.to(device).eval(),
            device=device,
        )

    def _tensor(self, rows):
        import torch

        return torch.tensor(rows, device=self.device)

    def _forward(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(self._tensor([ids]), past_key_values=self._past, use_cache=True)
        self._past = out.past_key_values
        return out.logits[0, -1].float().cpu().numpy()

    def _prefill(self, ids, key=None):
        self._past = None
        return self._forward(ids)

    def _step(self, token):
        return self._forward([token])

    def logits(self, ids):
        import torch

        with torch.inference_mode():
            out = self.model(self._tensor([list(ids)]), use_cache=False)
        return out.logits[0].float().cpu().numpy()

    def logits_batch(self, rows, positions=None):
        """One right-padded forward pass for all rows (the caller bounds the batch's size).
        With positions, only those rows leave the device."""
        import torch

        pad = _pad_id(self.tokenizer)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(list(r))
            mask[i, : len(r)] = 1
        with torch.inference_mode():
            logits = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False
            ).logits  # (B, T, V)
        out = []
        for i, r in enumerate(rows):
            keep = slice(0, len(r)) if positions is None else self._tensor(list(positions[i]))
            out.append(logits[i, keep].float().cpu().numpy())
        return out

    def greedy_batch(self, rows, max_new_tokens):
        """Greedy replies in one left-padded batch (transformers' generate), stopping at the
        end-of-turn token, which is not returned. Same tokens as `greedy`, row by row."""
        import torch
        from transformers import GenerationConfig as HFGenerationConfig

        pad = _pad_id(self.tokenizer)
        eos = sorted(self.eos_ids)
        gen = HFGenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad
        )
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every prompt ends where replies start
            ids[i, width - len(r) :] = torch.tensor(list(r))
            mask[i, width - len(r) :] = 1
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=gen,
            )
        replies = []
        for row in out[:, width:].tolist():
            cut = next((j for j, t in enumerate(row) if t in self.eos_ids), len(row))
            replies.append(row[:cut])
        return replies

    def close(self):
        self.model, self._past = None, None


def _pad_id(tokenizer) -> int:
    """Padding never reaches a real position (the mask hides it); any valid id will do."""
    pad = getattr(tokenizer, "pad_token_id", None)
    return pad if pad is not None else tokenizer.eos_token_id


def _merge_adapter(model, adapter: Path, base: Path):
    require("peft", extra="torch")
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as e:
        raise AdapterError(
            f"adapter {adapter} does not fit base {base}: "
            f"{str(e).splitlines()[0][:300]}. Pass the base it was trained on (--base)."
        ) from e
