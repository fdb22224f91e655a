"""The parity gate: every exported file is checked against the torch model before it is
called done, and the numbers go into the manifest.

Both sides are runtime backends (runtime/loader.py `open_file`): the reference is the torch
backend over the merged fp32 hf/ files, each candidate the backend the bot will serve that
file with, so the gate checks the code that answers users.

Three measurements on fixed inputs (all fed the *same* token ids, from the HF tokenizer):
- logits: max |Δ| over every position of fixed chat prompts plus torch's greedy answer;
- greedy agreement: with torch's 32 greedy tokens as context (teacher forcing), the share of
  positions where the candidate's argmax is the same token;
- perplexity on a fixed held-out text (balabol/texts/heldout_en.txt), as a ratio to torch.

A file that passes also gets its decode speed (`decode_speed`): the runtime's `--format auto`
picks the fastest passed file by it.

Example: `balabol export` runs this for each format and prints the summary table.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from balabol.prompt import encode_chat, encode_text
from runtime.loader import open_file
from runtime.score import perplexity

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
    "gguf-q4_0": Gate(max_ppl_ratio=1.10),
}
SPEED_TOKENS = 32  # greedy tokens timed after the first prompt of PROMPTS
SPEED_REPEATS = 2  # best of: a neighbour's burst of CPU costs one run, not the number


def open_backend(
    path: Path, fmt: str, *, hf: Path, context_length: int, architecture: str | None = None
):
    """The runtime backend for one file being exported (no manifest yet): the torch backend
    over hf/ for the reference, the backend that will serve the file for a candidate. Its
    tokenizer is hf/'s (the ids are the same for every format)."""
    return open_file(
        path, fmt, tokenizer=hf, context_length=context_length, architecture=architecture
    )


@dataclass
class Reference:
    """What torch says about the fixed inputs; computed once per export."""

    sequences: list[list[int]]  # prompt + torch's greedy answer
    prompt_lens: list[int]
    logits: list[np.ndarray]
    text_ids: list[int]
    ppl: float

    @classmethod
    def build(cls, reference, tokenizer, max_text_tokens: int = MAX_TEXT_TOKENS):
        """reference: the runtime's torch backend over the fp32 model (its context must hold
        a prompt and GREEDY_TOKENS more); tokenizer: the HF tokenizer, whose ids all share."""
        seqs, lens, logits = [], [], []
        for messages in PROMPTS:
            # the model's own template and leading tokens (Gemma's <bos>), as served
            ids = encode_chat(tokenizer, messages, template=tokenizer.chat_template)
            # the served decode loop's greedy tokens, an end of turn included: a fixed length
            seq = ids + reference.greedy(ids, GREEDY_TOKENS, stop_at_eos=False)
            seqs.append(seq)
            lens.append(len(ids))
            logits.append(reference.logits(seq))
        text_ids = encode_text(tokenizer, text("heldout_en.txt"))
        text_ids = text_ids[:max_text_tokens]
        return cls(seqs, lens, logits, text_ids, perplexity(reference, text_ids))


def measure(candidate, ref: Reference) -> dict[str, float]:
    """The gate's numbers for a candidate backend (anything with the runtime's `logits`)."""
    diffs, agree, total = [], 0, 0
    for seq, n, ref_logits in zip(ref.sequences, ref.prompt_lens, ref.logits, strict=True):
        got = candidate.logits(seq)
        v = min(got.shape[-1], ref_logits.shape[-1])  # GGUF may pad the vocabulary
        diffs.append(float(np.abs(got[:, :v] - ref_logits[:, :v]).max()))
        # position t-1 predicts token t; compare on the generated part only
        pred = got[n - 1 : len(seq) - 1, :v].argmax(-1)
        agree += int((pred == np.asarray(seq[n:])).sum())
        total += len(seq) - n
    ppl = perplexity(candidate, ref.text_ids)
    return {
        "max_abs_logit_diff": round(max(diffs), 6),
        "greedy_agreement": round(agree / max(total, 1), 4),
        "ppl": round(ppl, 4),
        "ppl_ratio": round(ppl / ref.ppl, 4),
        "ppl_fp32": round(ref.ppl, 4),
    }


def decode_speed(candidate, ref: Reference) -> float:
    """Greedy decode tokens/s of a backend, as served (the runtime's decode loop and thread
    count), after the first parity prompt: the best of SPEED_REPEATS runs of SPEED_TOKENS,
    prefill excluded (runtime/decoding.py `Stats.tokens_per_second`)."""
    prompt = ref.sequences[0][: ref.prompt_lens[0]]
    best = 0.0
    for _ in range(SPEED_REPEATS):
        candidate.greedy(prompt, SPEED_TOKENS, stop_at_eos=False)
        best = max(best, candidate.last_stats.tokens_per_second)
    return round(best, 1)


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
