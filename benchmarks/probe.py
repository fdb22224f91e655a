"""One measurement in a fresh process, so memory and load time are not shared between runs.

    python benchmarks/probe.py --root artifacts --artifact NAME --format gguf-q4_k_m [--peer]

Prints one JSON object: load_s, ttft_64_s, ttft_256_s, decode_tps, rss_loaded_mb,
peak_rss_mb. Each `run` returns (tokens, seconds to the first token, seconds in all). `--peer` measures the library the backend wraps, used the usual way:
transformers `generate` (torch), optimum `ORTModelForCausalLM.generate` (onnx, onnx-int8),
llama-cpp-python `create_completion` (gguf-*), on the same files and the same token ids.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from importlib import resources
from pathlib import Path

from balabol.settings import cpu_threads

NEW_TOKENS = 128
REPEATS = 3


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def prompt_ids(tokenizer, n: int) -> list[int]:
    text = resources.files("balabol.texts").joinpath("heldout_en.txt").read_text()
    ids = tokenizer(text * 4, add_special_tokens=False)["input_ids"]
    return ids[:n]


class Ours:
    def __init__(self, root, artifact, fmt, threads):
        from runtime import load

        self.b = load(artifact, fmt, root=root, n_threads=threads)
        self.tokenizer = self.b.tokenizer

    def run(self, ids, n):
        from runtime.base import GenerationConfig

        cfg = GenerationConfig(
            max_new_tokens=n, temperature=0, repetition_penalty=1.0, ignore_eos=True
        )
        self.b.reset()
        for _ in self.b.stream_ids(ids, cfg):
            pass
        st = self.b.last_stats
        return st.new_tokens, st.ttft, st.seconds


class PeerTorch:
    def __init__(self, path, threads):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def run(self, ids, n):
        from transformers.generation.streamers import BaseStreamer

        times = []

        class Clock(BaseStreamer):
            def put(self, value):  # the first call carries the prompt, then one per token
                times.append(time.perf_counter())

            def end(self):
                pass

        t0 = time.perf_counter()
        with self.torch.inference_mode():
            out = self.model.generate(
                self.torch.tensor([ids]),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=self.tokenizer.eos_token_id,
                streamer=Clock(),
            )
        return out.shape[1] - len(ids), times[1] - t0, time.perf_counter() - t0


class PeerOptimum(PeerTorch):
    def __init__(self, path, threads):
        import onnxruntime as ort
        import torch
        from optimum.onnxruntime import ORTModelForCausalLM
        from transformers import AutoTokenizer

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = ORTModelForCausalLM.from_pretrained(
            path, session_options=so, provider="CPUExecutionProvider"
        )


class PeerLlamaCpp:
    def __init__(self, path, threads, tokenizer_dir):
        import llama_cpp

        from runtime.tokenizer import Tokenizer

        self.tokenizer = Tokenizer(tokenizer_dir)
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=2048,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=512,
            verbose=False,
        )

    def run(self, ids, n):
        # Streaming mode holds text back (stop strings, partial characters), so its chunks
        # are no clock; time a 1-token call and an n-token call back to back instead.
        def call(k):
            self.llm.reset()
            t = time.perf_counter()
            out = self.llm.create_completion(
                ids,
                max_tokens=k,
                temperature=0.0,
                top_k=1,
                repeat_penalty=1.0,
                # never stop early: llama.cpp ends on any end-of-generation token, not only eos
                logit_bias=dict.fromkeys(self.tokenizer.special_ids, -1e9),
            )
            return out["usage"]["completion_tokens"], time.perf_counter() - t

        _, first = call(1)
        if n == 1:
            return 1, first, first
        count, total = call(n)
        return count, first, total


def open_model(root: Path, artifact: str, fmt: str, peer: bool, threads: int):
    from balabol.manifest import Manifest

    if not peer:
        return Ours(root, artifact, fmt, threads)
    base = root / artifact
    entry = Manifest.load(base).artifact(fmt)
    if fmt == "torch":
        return PeerTorch(base / entry.path, threads)
    if fmt.startswith("onnx"):
        return PeerOptimum(base / entry.path, threads)
    return PeerLlamaCpp(base / entry.path, threads, base / "hf")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--format", required=True)
    ap.add_argument("--peer", action="store_true")
    ap.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    ap.add_argument("--repeats", type=int, default=REPEATS)
    a = ap.parse_args(argv)
    threads = cpu_threads()
    t = time.perf_counter()
    model = open_model(a.root, a.artifact, a.format, a.peer, threads)
    load_s = time.perf_counter() - t
    rss_loaded = rss_mb()
    from balabol.manifest import Manifest

    # tiny test models have a short context: prompts shrink to fit (the JSON says so)
    ctx = Manifest.load(a.root / a.artifact).context_length or 2048
    room = ctx - a.new_tokens - 1
    p64 = prompt_ids(model.tokenizer, min(64, room))
    p256 = prompt_ids(model.tokenizer, min(256, ctx - 2))
    model.run(p64, 2)  # warm-up: first-call allocations are not what a user waits for
    result = {"load_s": load_s, "rss_loaded_mb": rss_loaded, "prompt_tokens": [len(p64), len(p256)]}
    result["ttft_256_s"] = statistics.median(model.run(p256, 1)[1] for _ in range(a.repeats))
    # decode speed, the same way for every contender: (N - 1) tokens over the time from the
    # first token to the last, timed inside one streaming call
    runs = [model.run(p64, a.new_tokens) for _ in range(a.repeats)]
    result["ttft_64_s"] = statistics.median(r[1] for r in runs)
    result["new_tokens"] = min(r[0] for r in runs)
    result["decode_tps"] = statistics.median((r[0] - 1) / max(r[2] - r[1], 1e-9) for r in runs)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
