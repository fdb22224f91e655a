"""Which embedded base for which language and machine (issue #8): bits per byte on parallel
English and Russian texts, generation speed and memory, with llama.cpp on the GGUF each base
ships. Bits per byte, not perplexity: the bases have different tokenizers, so only the
cost of the same bytes compares.

    python benchmarks/compare_bases.py [--threads 2] [--base gemma3-270m ...] [--json]

Each base runs in a fresh process (clean memory numbers); the result is a Markdown table
(the one in README.md). Speed is the best of 3 runs of 128 greedy tokens, so other load on
a shared machine counts as little as possible.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

NEW_TOKENS = 128
REPEATS = 3
PROMPT = "Once upon a time"
TEXTS = {"en": "heldout_en.txt", "ru": "heldout_ru.txt"}  # the same three paragraphs


def bits_per_byte(llm, text: str) -> float:
    """Bits to encode the text's bytes, over the tokens the model predicts: with a BOS
    (Gemma) every token, without one (SmolLM2) all but the first, whose bytes are left out."""
    from runtime.score import nll

    ids = llm.tokenize(text.encode(), add_bos=True, special=False)  # BOS if the model wants it
    llm.reset()
    llm.eval(ids)
    nats = nll(llm.scores[: len(ids) - 1], ids[1:]).sum()
    n_bytes = sum(len(llm.detokenize([t])) for t in ids[1:])
    return float(nats / math.log(2) / n_bytes)


def decode_speed(llm) -> float:
    """Greedy tokens per second after a short prompt, best of REPEATS runs."""
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True)
    speeds = []
    for _ in range(REPEATS):
        n, first = 0, 0.0
        for _tok in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            n += 1
            if n == 1:
                first = time.perf_counter()
            if n == NEW_TOKENS:
                break
        speeds.append((n - 1) / (time.perf_counter() - first))
    return max(speeds)


def measure(name: str, threads: int) -> dict:
    import llama_cpp

    from balabol import bases
    from export.parity import text

    path = bases.EMBEDDED[name].gguf_path()
    bodies = {lang: text(fname) for lang, fname in TEXTS.items()}
    speeds: dict[int, float] = {}
    for n_threads in sorted({1, threads}):
        t0 = time.perf_counter()
        llm = llama_cpp.Llama(str(path), n_ctx=512, n_threads=n_threads, verbose=False)
        load_s = time.perf_counter() - t0
        speeds[n_threads] = decode_speed(llm)
        n_ids = {k: len(llm.tokenize(v.encode(), add_bos=True)) for k, v in bodies.items()}
        llm.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    result = {
        "base": name,
        "gguf": path.name,
        "gguf_mb": round(path.stat().st_size / 2**20),
        "load_s": round(load_s, 2),
        "decode_tok_s_1_thread": round(speeds[1], 1),
        f"decode_tok_s_{threads}_threads": round(speeds[threads], 1),
        "peak_rss_mb": round(peak_mb),
        "threads": threads,
    }
    for lang, body in bodies.items():
        scorer = llama_cpp.Llama(
            str(path), n_ctx=n_ids[lang] + 8, logits_all=True, n_threads=1, verbose=False
        )
        result[f"bpb_{lang}"] = round(bits_per_byte(scorer, body), 3)
        result[f"tokens_{lang}"] = n_ids[lang]
        scorer.close()
    return result


def table(rows: list[dict]) -> str:
    threads = rows[0]["threads"]
    lines = [
        "| base | bits/byte EN | bits/byte RU | tokens EN / RU | tok/s, 1 thread | "
        f"tok/s, {threads} threads | peak RAM | GGUF |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['base']}` | {r['bpb_en']:.2f} | {r['bpb_ru']:.2f} | "
            f"{r['tokens_en']} / {r['tokens_ru']} | {r['decode_tok_s_1_thread']:.0f} | "
            f"{r[f'decode_tok_s_{threads}_threads']:.0f} | {r['peak_rss_mb']} MB | {r['gguf_mb']} MB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from balabol import bases

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", nargs="*", default=list(bases.EMBEDDED), help="embedded bases")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # the child process: measure one base
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.threads)))
        return 0
    rows = []
    for name in args.base:
        cmd = [sys.executable, __file__, "--one", name, "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]) if args.json else f"measured {name}", file=sys.stderr)
    print("\n".join(json.dumps(r) for r in rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
