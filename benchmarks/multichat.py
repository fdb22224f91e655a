"""Several chats talking at once, in a fresh process: time to first token per turn,
aggregate tokens/s and peak memory, for one contender.

    python benchmarks/multichat.py --root artifacts --artifact NAME --format gguf-q4_k_m \
        --contender ours --chats 4 [--turns 6 --new-tokens 48 --pattern roundrobin]
    python benchmarks/multichat.py ... --contender sweep --chats 1,2,4,8   # throughput only

Each chat has its own system prompt and questions, and each reply (48 tokens, greedy, eos
ignored) joins its chat's history. Two patterns:

- roundrobin (issue #15's scenario): the chats take turns, one request at a time: chat 1's
  turn k, chat 2's turn k, ..., then turn k+1. Each request waits for nobody, so its TTFT
  shows what the chats do to each other's KV state (a single cache re-reads every history);
- together: turn k of every chat is submitted at once (as a crowd would send them), the
  next round starts when every reply has ended: the prompts compete for the 2 cores.

Contenders:

- baseline: today's single stream: one slot, no KV state kept (`BALABOL_KV_CACHE_MB=0`),
  the chats' requests served one after another;
- ours: `parallel` = chats, each chat's key, the default cache budget (runtime/scheduler.py);
- llama-server: the same GGUF, `-np` = chats, `cache_prompt`, streamed `/completion` over
  HTTP on 127.0.0.1 (benchmarks/llama_server.py), each chat pinned to its slot;
- solo: one chat alone through ours (the reference for the last-turn TTFT target);
- sweep: N streams of one request each, aggregate decode tokens/s (sets AUTO_PARALLEL).

TTFT is from submitting a request to its first piece of text. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

SYSTEMS = (
    "You are a patient cooking teacher.",
    "You are a travel agent who loves trains.",
    "You are a friendly astronomy guide.",
    "You are a gardener who answers briefly.",
    "You are a history tutor for teenagers.",
    "You are a bicycle mechanic.",
    "You are a chess coach.",
    "You are a music teacher who plays the violin.",
)
QUESTIONS = (
    "Hello! Can you help me with something today?",
    "What should I start with as a complete beginner?",
    "Which mistakes do people make most often at first?",
    "How much time a week should I spend on it?",
    "Can you give me a small exercise for this weekend?",
    "Thanks! What should I read or watch next to learn more?",
    "One more question: how do I know I am making progress?",
    "Great, can you sum up your advice in three points?",
)


def conversation(chat: int, turn: int, replies: list[str]) -> list[dict]:
    """Chat `chat`'s messages before its reply number `turn` (0-based)."""
    msgs = [{"role": "system", "content": SYSTEMS[chat % len(SYSTEMS)]}]
    for k in range(turn + 1):
        q = QUESTIONS[k % len(QUESTIONS)]
        msgs.append({"role": "user", "content": f"{q} (chat {chat})" if k == 0 else q})
        if k < turn:
            msgs.append({"role": "assistant", "content": replies[k]})
    return msgs


def peak_rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation between two chats' numbers)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


# --- contenders: `ask(rounds of (chat, messages)) -> [(ttft_s, tokens, text)]` per request ---
class Ours:
    def __init__(self, root, artifact, fmt, *, parallel: int, threads: int):
        from runtime import load
        from runtime.scheduler import Scheduler

        self.backend = load(artifact, fmt, root=root, n_threads=threads, parallel=parallel)
        self.scheduler = Scheduler(self.backend, parallel=parallel, max_queue=64)
        self.tokenizer = self.backend.tokenizer

    def ask(self, requests, config):
        out: list = [None] * len(requests)
        t0 = time.perf_counter()
        jobs = [self.scheduler.submit(m, config, key=f"chat-{c}") for c, m in requests]

        def read(i, job):
            first, text = None, []
            for piece in job:
                if first is None and piece:
                    first = time.perf_counter() - t0
                text.append(piece)
            out[i] = (first, job.stats.new_tokens, "".join(text))

        threads = [threading.Thread(target=read, args=(i, j)) for i, j in enumerate(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def close(self):
        self.scheduler.close()
        self.backend.close()

    def rss(self):
        return peak_rss_mb()


class LlamaServer:
    def __init__(self, root, artifact, fmt, *, parallel: int, threads: int, exe: Path):
        from balabol.manifest import Manifest
        from benchmarks.llama_server import serve
        from runtime.loader import serving_context
        from runtime.tokenizer import Tokenizer

        base = root / artifact
        manifest = Manifest.load(base)
        self.tokenizer = Tokenizer(base / "hf")
        self._serve = serve(
            base / manifest.artifact(fmt).path,
            parallel=parallel,
            n_ctx_per_slot=serving_context(manifest),
            threads=threads,
            exe=exe,
        )
        self.url, self.pid = self._serve.__enter__()

    def _one(self, chat: int, ids: list[int], config, t0: float):
        body = {
            "prompt": ids,
            "n_predict": config.max_new_tokens,
            "temperature": 0.0,
            "top_k": 1,
            "repeat_penalty": 1.0,
            "ignore_eos": config.ignore_eos,
            "cache_prompt": True,
            "id_slot": chat,  # each chat its own slot, as ours keys a slot by chat
            "stream": True,
        }
        req = urllib.request.Request(
            self.url + "/completion",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        first, text, tokens = None, [], 0
        with urllib.request.urlopen(req, timeout=600) as r:
            for line in r:
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                if event.get("content"):
                    if first is None:
                        first = time.perf_counter() - t0
                    text.append(event["content"])
                if event.get("stop"):
                    tokens = event.get("tokens_predicted", 0)
        return first, tokens, "".join(text)

    def ask(self, requests, config):
        from balabol.prompt import encode_chat

        out: list = [None] * len(requests)
        prompts = [
            encode_chat(self.tokenizer, m, template=self.tokenizer.chat_template)
            for _, m in requests
        ]
        t0 = time.perf_counter()

        def run(i):
            out[i] = self._one(requests[i][0], prompts[i], config, t0)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def rss(self):
        return peak_rss_mb(self.pid)

    def close(self):
        self._serve.__exit__(None, None, None)


def talk(model, chats: int, turns: int, config, pattern: str = "together") -> dict:
    """Turn k of every chat, k = 0..turns-1, at once (together) or one chat after another
    (roundrobin); TTFT per turn, aggregate tokens/s."""
    replies: list[list[str]] = [[] for _ in range(chats)]
    # warm-up: first-call allocations are not what a user waits for
    model.ask([(0, [{"role": "user", "content": "Hi"}])], replace(config, max_new_tokens=2))
    ttft: list[list[float]] = []
    tokens, seconds = 0, 0.0
    for k in range(turns):
        requests = [(c, conversation(c, k, replies[c])) for c in range(chats)]
        t = time.perf_counter()
        if pattern == "together":
            out = model.ask(requests, config)
        else:
            out = [model.ask([r], config)[0] for r in requests]
        seconds += time.perf_counter() - t
        ttft.append([o[0] for o in out])
        for c, (_, n, text) in enumerate(out):
            replies[c].append(text)
            tokens += n
    return {
        "chats": chats,
        "pattern": pattern,
        "turns": turns,
        "new_tokens": tokens,
        "seconds": seconds,
        "aggregate_tps": tokens / seconds,
        "ttft_p50_ms": [1000 * statistics.median(t) for t in ttft],
        "ttft_p95_ms": [1000 * pct(t, 0.95) for t in ttft],
    }


def sweep(root, artifact, fmt, streams: list[int], new_tokens: int, threads: int) -> dict:
    """Aggregate decode tokens/s with N streams decoded together: N chats, one short
    question each, `new_tokens` each; (N x new_tokens) / wall time of the round."""
    from runtime.base import GenerationConfig

    out = {}
    config = GenerationConfig(
        max_new_tokens=new_tokens, temperature=0, repetition_penalty=1.0, ignore_eos=True
    )
    for n in streams:
        model = Ours(root, artifact, fmt, parallel=n, threads=threads)
        try:
            model.ask([(c, conversation(c, 0, [])) for c in range(n)], config)  # warm-up
            best = 0.0
            for _ in range(2):
                t = time.perf_counter()
                res = model.ask([(c + n, conversation(c, 0, [])) for c in range(n)], config)
                best = max(best, sum(r[1] for r in res) / (time.perf_counter() - t))
            out[str(n)] = best
        finally:
            model.close()
    return {"streams": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--format", default="gguf-q4_k_m")
    ap.add_argument(
        "--contender", choices=("baseline", "ours", "llama-server", "solo", "sweep"), required=True
    )
    ap.add_argument("--chats", default="4", help="number of chats (sweep: a list, 1,2,4,8)")
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--pattern", choices=("roundrobin", "together"), default="roundrobin")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--llama-server", type=Path, help="the llama-server executable")
    ap.add_argument("--threads", type=int, help="threads per model (default: every core)")
    a = ap.parse_args(argv)
    threads = a.threads or len(os.sched_getaffinity(0))
    if a.contender == "sweep":
        res = sweep(
            a.root,
            a.artifact,
            a.format,
            [int(x) for x in a.chats.split(",")],
            a.new_tokens,
            threads,
        )
        json.dump(res, sys.stdout)
        print()
        return 0
    from runtime.base import GenerationConfig

    chats = 1 if a.contender == "solo" else int(a.chats)
    if a.contender == "baseline":
        os.environ["BALABOL_KV_CACHE_MB"] = "0"  # nothing kept between requests
    config = GenerationConfig(
        max_new_tokens=a.new_tokens, temperature=0, repetition_penalty=1.0, ignore_eos=True
    )
    if a.contender == "llama-server":
        model = LlamaServer(
            a.root, a.artifact, a.format, parallel=chats, threads=threads, exe=a.llama_server
        )
    else:
        parallel = chats if a.contender == "ours" else 1
        model = Ours(a.root, a.artifact, a.format, parallel=parallel, threads=threads)
    try:
        res = talk(model, chats, a.turns, config, a.pattern)
        res["peak_rss_mb"] = model.rss()
    finally:
        model.close()
    json.dump(res, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1]))  # `benchmarks.` and the runtime
    sys.exit(main())
