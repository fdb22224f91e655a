"""The parity gate: every exported file is checked against the torch model before it is
called done, and the numbers go into the manifest.

Three measurements on fixed inputs (all fed the *same* token ids, from the HF tokenizer):
- logits: max |Δ| over every position of fixed chat prompts plus torch's greedy answer;
- greedy agreement: with torch's 32 greedy tokens as context (teacher forcing), the share of
  positions where the candidate's argmax is the same token;
- perplexity on a fixed held-out text (balabol/texts/heldout_en.txt), as a ratio to torch.

Example: `balabol export` runs this for each format and prints the summary table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from balabol.errors import require
from balabol.prompt import encode_chat, encode_text

GREEDY_TOKENS = 32
MAX_TEXT_TOKENS = 512
PROMPTS = (
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a short poem about the sea."}],
    [
        {"role": "system", "content": "You are a friendly assistant who answers briefly."},
        {"role": "user", "content": "How do I boil an egg?"},
    ],
)


def threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def text(name: str) -> str:
    return resources.files("balabol.texts").joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Gate:
    """What a format must reach; None means "recorded, not gated"."""

    logits_atol: float | None = None
    min_greedy_agreement: float | None = None
    max_ppl_ratio: float | None = None


# Thresholds for real pretrained models (issue #2). f16 is held to q8_0's bar.
DEFAULT_GATES: dict[str, Gate] = {
    "onnx": Gate(logits_atol=1e-3, min_greedy_agreement=0.9, max_ppl_ratio=1.001),
    "onnx-int8": Gate(min_greedy_agreement=0.9, max_ppl_ratio=1.05),
    "gguf-f16": Gate(min_greedy_agreement=0.9, max_ppl_ratio=1.02),
    "gguf-q8_0": Gate(min_greedy_agreement=0.9, max_ppl_ratio=1.02),
    "gguf-q4_k_m": Gate(max_ppl_ratio=1.10),
}


class LM(Protocol):
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """(T, V) float32 logits for one sequence, no cache."""

    def greedy(self, ids: Sequence[int], n: int, eos: int | None = None) -> list[int]:
        """Up to n greedy tokens after ids, with the KV cache."""


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def nll(logits: np.ndarray, targets: Sequence[int], rows: int = 64) -> np.ndarray:
    """-log p(target) for each row of (T, V) logits, a few rows at a time: a float64 copy
    of all of them would be 1 GB for 512 tokens of Gemma's 262k vocabulary."""
    targets = np.asarray(targets)
    out = np.empty(len(targets))
    for s in range(0, len(targets), rows):
        x = logits[s : s + rows].astype(np.float64)  # (rows, V)
        m = x.max(-1)
        lse = m + np.log(np.exp(x - m[:, None]).sum(-1))
        out[s : s + rows] = lse - x[np.arange(len(x)), targets[s : s + rows]]
    return out


def perplexity(lm: LM, ids: Sequence[int]) -> float:
    # position t predicts ids[t+1]
    return float(np.exp(nll(lm.logits(ids)[:-1], ids[1:]).mean()))


class TorchLM:
    def __init__(self, hf_dir: Path):
        torch = require("torch", extra="export")
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads())
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()

    def logits(self, ids):
        with self.torch.inference_mode():
            out = self.model(self.torch.tensor([list(ids)]))
        return out.logits[0].float().numpy()

    def greedy(self, ids, n, eos=None):
        torch = self.torch
        out, past, x = [], None, torch.tensor([list(ids)])
        with torch.inference_mode():
            for _ in range(n):
                o = self.model(x, past_key_values=past, use_cache=True)
                past, tok = o.past_key_values, int(o.logits[0, -1].argmax())
                out.append(tok)
                if tok == eos:
                    break
                x = torch.tensor([[tok]])
        return out

    def close(self):
        del self.model


class OnnxLM:
    """A plain onnxruntime loop over optimum's decoder-with-past graph (numpy in, numpy out)."""

    def __init__(self, model_path: Path):
        ort = require("onnxruntime", extra="runtime")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads()
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.sess.get_inputs()}
        self.past = [n for n in self.inputs if n.startswith("past_key_values.")]
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def _empty_past(self):
        feeds = {}
        for n in self.past:
            shape = self.inputs[n].shape  # [batch, kv_heads, past_len, head_dim]
            feeds[n] = np.zeros((1, shape[1], 0, shape[3]), dtype=np.float32)
        return feeds

    def _run(self, ids, past: dict, past_len: int):
        s = len(ids)
        feeds = {"input_ids": np.asarray([ids], dtype=np.int64), **past}
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = np.ones((1, past_len + s), dtype=np.int64)
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.arange(past_len, past_len + s, dtype=np.int64)[None]
        outs = dict(zip(self.outputs, self.sess.run(None, feeds), strict=True))
        present = {n: outs[n.replace("past_key_values.", "present.")] for n in self.past}
        return outs["logits"][0], present

    def logits(self, ids):
        return self._run(list(ids), self._empty_past(), 0)[0]

    def greedy(self, ids, n, eos=None):
        logits, past = self._run(list(ids), self._empty_past(), 0)
        out, pos = [], len(ids)
        for _ in range(n):
            tok = int(logits[-1].argmax())
            out.append(tok)
            if tok == eos or len(out) == n:
                break
            logits, past = self._run([tok], past, pos)
            pos += 1
        return out

    def close(self):
        del self.sess


class GgufLM:
    def __init__(self, path: Path, n_ctx: int = 1024):
        llama_cpp = require("llama_cpp", extra="runtime")
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            logits_all=True,
            n_threads=threads(),
            n_batch=512,
            verbose=False,
        )

    def logits(self, ids):
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def greedy(self, ids, n, eos=None):
        self.llm.reset()
        self.llm.eval(list(ids))
        out = []
        for _ in range(n):
            tok = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            out.append(tok)
            if tok == eos or len(out) == n:
                break
            self.llm.eval([tok])
        return out

    def close(self):
        self.llm.close()


@dataclass
class Reference:
    """What torch says about the fixed inputs; computed once per export."""

    sequences: list[list[int]]  # prompt + torch's greedy answer
    prompt_lens: list[int]
    logits: list[np.ndarray]
    text_ids: list[int]
    ppl: float

    @classmethod
    def build(cls, torch_lm: TorchLM, tokenizer, max_text_tokens: int = MAX_TEXT_TOKENS):
        seqs, lens, logits = [], [], []
        for messages in PROMPTS:
            # the model's own template and leading tokens (Gemma's <bos>), as served
            ids = encode_chat(tokenizer, messages, template=tokenizer.chat_template)
            seq = ids + torch_lm.greedy(ids, GREEDY_TOKENS)
            seqs.append(seq)
            lens.append(len(ids))
            logits.append(torch_lm.logits(seq))
        text_ids = encode_text(tokenizer, text("heldout_en.txt"))
        text_ids = text_ids[:max_text_tokens]
        return cls(seqs, lens, logits, text_ids, perplexity(torch_lm, text_ids))


def measure(lm: LM, ref: Reference) -> dict[str, float]:
    diffs, agree, total = [], 0, 0
    for seq, n, ref_logits in zip(ref.sequences, ref.prompt_lens, ref.logits, strict=True):
        got = lm.logits(seq)
        v = min(got.shape[-1], ref_logits.shape[-1])  # GGUF may pad the vocabulary
        diffs.append(float(np.abs(got[:, :v] - ref_logits[:, :v]).max()))
        # position t-1 predicts token t; compare on the generated part only
        pred = got[n - 1 : len(seq) - 1, :v].argmax(-1)
        agree += int((pred == np.asarray(seq[n:])).sum())
        total += len(seq) - n
    ppl = perplexity(lm, ref.text_ids)
    return {
        "max_abs_logit_diff": round(max(diffs), 6),
        "greedy_agreement": round(agree / max(total, 1), 4),
        "ppl": round(ppl, 4),
        "ppl_ratio": round(ppl / ref.ppl, 4),
        "ppl_fp32": round(ref.ppl, 4),
    }


def judge(numbers: dict[str, float], gate: Gate) -> list[str]:
    """The reasons a measurement fails its gate (empty when it passes)."""
    why = []
    if gate.logits_atol is not None and numbers["max_abs_logit_diff"] > gate.logits_atol:
        why.append(f"logits differ by {numbers['max_abs_logit_diff']:.2e} > {gate.logits_atol:g}")
    if (
        gate.min_greedy_agreement is not None
        and numbers["greedy_agreement"] < gate.min_greedy_agreement
    ):
        why.append(
            f"greedy agreement {numbers['greedy_agreement']:.0%} < {gate.min_greedy_agreement:.0%}"
        )
    if gate.max_ppl_ratio is not None and numbers["ppl_ratio"] > gate.max_ppl_ratio:
        why.append(f"perplexity ×{numbers['ppl_ratio']:.3f} > ×{gate.max_ppl_ratio:g}")
    return why
