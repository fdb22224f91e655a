"""The LSTM language model (issue #7): its config and its torch module, in one place.

Training (training/baselines/lstm.py) builds and trains it, export (export/lstm.py) traces
it to ONNX with explicit (h, c) state, evaluation and the runtime's torch backend load it.
It lives in the shared core because all of them need the same definition; torch is imported
only when a model is built, so `import balabol.lstm` stays light.

    embedding (V, H) -> n_layer x LSTM(H, H) -> linear head (H, V)

A model directory (`balabol train --arch lstm` writes models/NAME/) holds `config.json`
(model_type "balabol-lstm"), `model.safetensors` and the tokenizer files.

Example: `balabol train --arch lstm --data data/jokes --name jokes-lstm`
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from balabol.errors import ArtifactError, ConfigError

MODEL_TYPE = "balabol-lstm"
ARCHITECTURE = "LstmForCausalLM"  # ends like HF's causal LMs, so registries accept the config
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class LstmConfig:
    vocab_size: int
    n_embd: int = 512  # embedding width = hidden state width
    n_layer: int = 2
    dropout: float = 0.1  # between layers and before the head, in training only
    context_length: int = 512  # what it was trained on; the state itself has no limit
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        for flag, value in (
            ("--vocab-size", self.vocab_size),
            ("--n-embd", self.n_embd),
            ("--n-layer", self.n_layer),
            ("--max-length", self.context_length),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{flag} {value!r}: must be a whole number >= 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout {self.dropout}: must be in [0, 1)")

    # what evaluation reads from an HF config
    @property
    def max_position_embeddings(self) -> int:
        return self.context_length

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": MODEL_TYPE,
            "architectures": [ARCHITECTURE],
            **dataclasses.asdict(self),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LstmConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


def is_lstm_dir(path: Path) -> bool:
    cfg = Path(path) / CONFIG_FILE
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE
    except (json.JSONDecodeError, OSError):
        return False


def build(config: LstmConfig):
    """A freshly initialized model (torch's default init for the LSTM, N(0, 0.02) elsewhere)."""
    return _model_class()(config)


def save(model, directory: Path) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(
        json.dumps(model.config.to_dict(), indent=2) + "\n", encoding="utf-8"
    )
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, directory / WEIGHTS_FILE, metadata={"format": "pt"})


def load(directory: Path):
    """The model saved in a directory, in eval mode (fp32, CPU)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    try:
        config = LstmConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text("utf-8")))
        weights = load_file(directory / WEIGHTS_FILE)
    except (OSError, ValueError, TypeError) as e:
        raise ArtifactError(
            f"cannot load an LSTM from {directory} ({e}); train it with "
            "`balabol train --arch lstm` or re-export with --force"
        ) from e
    model = build(config)
    model.load_state_dict(weights)
    return model.eval()


class LMOutput(dict):
    """`out.loss`, `out.logits` and `out["loss"]` alike, as the HF Trainer and eval expect."""

    __getattr__ = dict.__getitem__


@lru_cache(maxsize=1)
def _model_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class LstmForCausalLM(nn.Module):
        def __init__(self, config: LstmConfig):
            super().__init__()
            self.config = config
            h = config.n_embd
            self.embed = nn.Embedding(config.vocab_size, h)
            self.drop = nn.Dropout(config.dropout)
            self.lstm = nn.LSTM(
                h,
                h,
                num_layers=config.n_layer,
                # between layers only: one layer has none (torch warns otherwise)
                dropout=config.dropout if config.n_layer > 1 else 0.0,
                batch_first=True,
            )
            self.head = nn.Linear(h, config.vocab_size)
            nn.init.normal_(self.embed.weight, std=0.02)
            nn.init.normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

        def zero_state(self, batch: int = 1):
            shape = (self.config.n_layer, batch, self.config.n_embd)
            dev = self.head.weight.device
            return torch.zeros(shape, device=dev), torch.zeros(shape, device=dev)

        def forward(self, input_ids, attention_mask=None, labels=None, state=None):
            """(B, T) ids -> (B, T, V) logits and the (h, c) state after the last real token.

            Padding may be on either side (eval pads prompts on the left): each row is
            shifted so its real tokens come first, packed so padding never enters the state,
            and shifted back."""
            x = self.drop(self.embed(input_ids))  # (B, T, H)
            if attention_mask is None or bool(attention_mask.all()):
                y, state = self.lstm(x, state)
            else:
                y, state = self._packed(x, attention_mask, state)
            logits = self.head(self.drop(y))  # (B, T, V)
            out = LMOutput(logits=logits, state=state)
            if labels is not None:
                # position t predicts token t+1, as HF causal LMs count it
                out["loss"] = F.cross_entropy(
                    logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
                )
            return out

        def _packed(self, x, mask, state):
            from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

            t = mask.shape[1]
            mask = mask.bool()
            lengths = mask.sum(1)
            first = mask.float().argmax(1)  # leading padding per row
            pos = torch.arange(t, device=x.device)[None]  # (1, T)
            to_front = ((pos + first[:, None]) % t)[..., None].expand(-1, -1, x.shape[-1])
            packed = pack_padded_sequence(
                x.gather(1, to_front), lengths.clamp(min=1).cpu(), True, enforce_sorted=False
            )
            y, state = self.lstm(packed, state)
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=t)
            back = ((pos - first[:, None]) % t)[..., None].expand(-1, -1, y.shape[-1])
            return y.gather(1, back), state

        @torch.no_grad()
        def generate(self, input_ids, attention_mask=None, generation_config=None, **kwargs):
            """Greedy decoding for `balabol eval` (the runtime samples from the ONNX graph):
            the prompt ids followed by up to max_new_tokens, padded after eos."""
            gen = generation_config
            if gen is not None and getattr(gen, "do_sample", False):
                raise ConfigError("the LSTM's generate() is greedy only; sample in the runtime")
            max_new = getattr(gen, "max_new_tokens", None) or kwargs.get("max_new_tokens", 32)
            eos = getattr(gen, "eos_token_id", None)
            pad = getattr(gen, "pad_token_id", None)
            pad = eos if pad is None else pad
            eos = {eos} if isinstance(eos, int) else set(eos or ())
            out = self(input_ids, attention_mask=attention_mask)
            logits, state = out.logits[:, -1], out.state  # prompts end at the last column
            done = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
            eos_ids = torch.tensor(sorted(eos), dtype=torch.long, device=input_ids.device)
            new = []
            for _ in range(max_new):
                tok = logits.argmax(-1)
                tok = torch.where(done, torch.full_like(tok, pad if pad is not None else 0), tok)
                new.append(tok)
                done |= torch.isin(tok, eos_ids)
                if bool(done.all()):
                    break
                out = self(tok[:, None], state=state)
                logits, state = out.logits[:, -1], out.state
            return torch.cat([input_ids, torch.stack(new, 1)], 1)

    return LstmForCausalLM
