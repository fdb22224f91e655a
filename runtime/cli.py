"""The runtime's commands: `balabol generate` (one shot) and `balabol chat` (a REPL).

Both print which artifact/format they use and tokens/s after each reply.
Example: `balabol chat --format gguf-q4_k_m --temperature 0.7`.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from balabol.settings import DEFAULT_ARTIFACT
from runtime.base import SHORT_REPLY_TOKENS, GenerationConfig

FORMAT_HELP = (
    "torch, onnx, onnx-int8, gguf-f16, gguf-q8_0, gguf-q4_k_m, gguf-q4_0, gguf (fastest passed "
    "gguf), auto (fastest passed), or remote (an OpenAI-compatible server at $BALABOL_REMOTE_URL)"
)

Artifact = Annotated[str, Parameter(help="artifact name under the artifacts directory")]
Format = Annotated[str, Parameter(help=FORMAT_HELP)]
System = Annotated[str | None, Parameter(help="system prompt")]
OutDir = Annotated[Path | None, Parameter(help="artifacts directory (default: ./artifacts)")]


@dataclass(frozen=True)
class Sampling(GenerationConfig):
    """GenerationConfig as flags (help: its field docstrings), less what only benchmarks set."""

    ignore_eos: Annotated[bool, Parameter(parse=False)] = False


@dataclass(frozen=True)
class OneShot(Sampling):
    max_new_tokens: int = SHORT_REPLY_TOKENS  # one reply printed and done: shorter than a chat's


def _footer(backend) -> str:
    s = backend.last_stats
    return (
        f"[{backend.artifact} / {backend.format}: {s.new_tokens} tokens, "
        f"{s.tokens_per_second:.1f} tokens/s, first token {s.ttft * 1000:.0f} ms]"
    )


def generate(
    prompt: Annotated[str, Parameter(help="the user message (or the text to continue with --raw)")],
    /,
    *,
    artifact: Artifact = DEFAULT_ARTIFACT,
    format: Format = "auto",
    config: Annotated[OneShot, Parameter(name="*")] = OneShot(),
    system: System = None,
    raw: Annotated[
        bool, Parameter(help="plain continuation, no chat template (base models)")
    ] = False,
    verify: Annotated[
        bool, Parameter(help="check the file's sha256 against the manifest first")
    ] = False,
    out_dir: OutDir = None,
) -> int:
    """Generate one reply, streamed to stdout."""
    from runtime.loader import load

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
    artifact: Artifact = DEFAULT_ARTIFACT,
    format: Format = "auto",
    config: Annotated[Sampling, Parameter(name="*")] = Sampling(),
    system: System = None,
    persona: Annotated[
        Path | None, Parameter(help="persona JSON: system prompt + example exchanges")
    ] = None,
    out_dir: OutDir = None,
) -> int:
    """Interactive chat with streaming replies. /reset, /system TEXT, /exit."""
    from runtime.loader import load
    from runtime.session import ChatSession, Persona

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
