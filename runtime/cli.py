"""The runtime's commands: `balabol generate` (one shot) and `balabol chat` (a REPL).

Both print which artifact/format they use and tokens/s after each reply.
Example: `balabol chat --format gguf-q4_k_m --temperature 0.7`.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated

from balabol.settings import DEFAULT_ARTIFACT

FORMAT_HELP = "torch, onnx, onnx-int8, gguf-f16, gguf-q8_0, gguf-q4_k_m, gguf (best gguf) or auto"


def _config(max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop):
    from runtime.base import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
        stop=tuple(stop or ()),
    )


def _footer(backend) -> str:
    s = backend.last_stats
    return (
        f"[{backend.artifact} / {backend.format}: {s.new_tokens} tokens, "
        f"{s.tokens_per_second:.1f} tokens/s, first token {s.ttft * 1000:.0f} ms]"
    )


def generate(
    prompt: Annotated[str, "the user message (or the text to continue with --raw)"],
    *,
    artifact: Annotated[str, "artifact name under the artifacts directory"] = DEFAULT_ARTIFACT,
    format: Annotated[str, FORMAT_HELP] = "auto",
    max_new_tokens: Annotated[int, "reply length limit in tokens"] = 128,
    temperature: Annotated[float, "0 = greedy"] = 0.7,
    top_k: Annotated[int, "sample among the k likeliest tokens (0 = all)"] = 40,
    top_p: Annotated[float, "nucleus sampling mass"] = 0.95,
    repetition_penalty: Annotated[float, "1 = off"] = 1.1,
    seed: Annotated[int | None, "random seed for reproducible sampling"] = None,
    stop: Annotated[list[str] | None, "stop strings"] = None,
    system: Annotated[str | None, "system prompt"] = None,
    raw: Annotated[bool, "plain continuation, no chat template (base models)"] = False,
    verify: Annotated[bool, "check the file's sha256 against the manifest first"] = False,
    out_dir: Annotated[Path | None, "artifacts directory (default: ./artifacts)"] = None,
) -> int:
    """Generate one reply, streamed to stdout."""
    from runtime.loader import load

    config = _config(max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop)
    backend = load(artifact, format, root=out_dir, verify_sha=verify)
    try:
        if raw:
            pieces = backend.complete(prompt, config)
        else:
            msgs = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            pieces = backend.stream(msgs, config)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()
        print(_footer(backend), file=sys.stderr)
    finally:
        backend.close()
    return 0


def chat(
    *,
    artifact: Annotated[str, "artifact name under the artifacts directory"] = DEFAULT_ARTIFACT,
    format: Annotated[str, FORMAT_HELP] = "auto",
    max_new_tokens: Annotated[int, "reply length limit in tokens"] = 256,
    temperature: Annotated[float, "0 = greedy"] = 0.7,
    top_k: Annotated[int, "sample among the k likeliest tokens (0 = all)"] = 40,
    top_p: Annotated[float, "nucleus sampling mass"] = 0.95,
    repetition_penalty: Annotated[float, "1 = off"] = 1.1,
    seed: Annotated[int | None, "random seed"] = None,
    system: Annotated[str | None, "system prompt"] = None,
    persona: Annotated[Path | None, "persona JSON: system prompt + example exchanges"] = None,
    out_dir: Annotated[Path | None, "artifacts directory (default: ./artifacts)"] = None,
) -> int:
    """Interactive chat with streaming replies. /reset, /system TEXT, /exit."""
    from runtime.loader import load
    from runtime.session import ChatSession, Persona

    config = _config(max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, None)
    p = Persona.load(persona) if persona else Persona()
    if system:
        p = Persona(system=system, examples=p.examples)
    backend = load(artifact, format, root=out_dir)
    session = ChatSession(backend, persona=p)
    print(f"{backend.artifact} / {backend.format} — /reset, /system TEXT, /exit", file=sys.stderr)
    try:
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                break
            if not line:
                continue
            if line in ("/exit", "/quit"):
                break
            if line == "/reset":
                session.reset()
                print("(history cleared)", file=sys.stderr)
                continue
            if line.startswith("/system"):
                session.set_system(line[len("/system") :].strip() or None)
                print("(system prompt set)", file=sys.stderr)
                continue
            cancel = threading.Event()
            print("bot> ", end="", flush=True)
            try:
                for piece in session.send(line, config, cancel=cancel):
                    print(piece, end="", flush=True)
            except KeyboardInterrupt:
                cancel.set()
                print(" [stopped]", end="")
            print()
            if backend.last_stats:
                print(_footer(backend), file=sys.stderr)
    finally:
        backend.close()
    return 0
