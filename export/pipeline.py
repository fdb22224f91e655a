"""`balabol export`: base (+ adapter) -> artifacts/<name>/{hf,onnx,onnx-int8,gguf}/ + manifest.

Steps: resolve the base, check the tokenizer can go to GGUF, merge the adapter into fp32
HF files, compute the torch reference, then build and check each format against it. All of
it happens in a temporary directory renamed into place only when complete.

Example: `balabol export --base default --name smollm2-135m-instruct`
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from balabol import architectures, bases
from balabol.architectures import model_config
from balabol.errors import BalabolError, ExportError
from balabol.files import replacing_dir
from balabol.manifest import FORMATS, Manifest
from balabol.prompt import encode_text
from export import gguf, int8, lstm, merge, onnx
from export.config import ExportConfig
from export.parity import Reference, decode_speed, judge, measure, open_backend
from export.steps import Step, manifest_of

GGUF_FORMATS = ("gguf-f16", "gguf-q8_0", "gguf-q4_k_m", "gguf-q4_0")
GGUF_QUANTIZED = GGUF_FORMATS[1:]  # quantized from the f16 file


def run(cfg: ExportConfig, log: Callable[[str], None] = print) -> Manifest:
    name = cfg.artifact_name
    out = Path(cfg.out_dir) / name
    if out.exists() and not cfg.force:
        raise ExportError(
            f"{out} already exists; pass --force to rebuild it (the old one is kept until the "
            "new one is complete) or --name to write another"
        )
    t_start = time.perf_counter()
    # 1. what are we exporting? (cheap checks first: nothing is written if they fail)
    base = bases.resolve(cfg.base)
    spec = architectures.lookup(model_config(base), where=f"base {cfg.base}")
    if cfg.adapter is not None and not spec.adapters:
        raise ExportError(
            f"--adapter {cfg.adapter}: an {spec.name} model has no LoRA adapters; export it "
            f"alone with `balabol export --base {cfg.base}`"
        )
    if cfg.adapter is not None:
        merge.check_adapter(Path(cfg.adapter))
    log(f"exporting {name}: base {cfg.base} ({spec.name}), adapter {cfg.adapter or 'none'}")

    with replacing_dir(out) as tmp:
        build = BUILDERS.get(spec.name, _build)
        manifest = build(cfg, name, base, spec, tmp, log)
        manifest.save(tmp)
    log(summary(manifest, time.perf_counter() - t_start, out))
    return manifest


def _build(cfg, name, base, spec, tmp: Path, log) -> Manifest:
    hf = tmp / "hf"
    wanted_gguf = [f for f in cfg.formats if f in GGUF_FORMATS]
    steps: dict[str, Step] = {}
    # 2. can the tokenizer go to llama.cpp? Find out before minutes of work.
    tokenizer = merge.load_tokenizer(base, Path(cfg.adapter) if cfg.adapter else None)
    tokenizer.save_pretrained(hf)
    gguf_skip = None
    if wanted_gguf:
        try:
            pre = gguf.check_tokenizer(hf)
            log(f"[tokenizer] llama.cpp pre-tokenizer: {pre}")
        except ExportError as e:
            gguf_skip = str(e)
            log(f"WARNING: {gguf_skip}")

    # 3. merged fp32 HF checkpoint = the reference every format is checked against
    t = time.perf_counter()
    log("[hf] merging and saving fp32 safetensors ...")
    merge.merge(base, Path(cfg.adapter) if cfg.adapter else None, hf)
    model_cfg = spec.complete_config(model_config(hf))
    (hf / "config.json").write_text(json.dumps(model_cfg, indent=2) + "\n")
    ctx = int(model_cfg.get("max_position_embeddings") or model_cfg.get("n_positions") or 2048)
    # the runtime's torch backend is the reference (its context only bounds greedy decoding)
    reference = open_backend(hf, "torch", hf=hf, context_length=max(ctx, 1024))
    ref = Reference.build(reference, tokenizer, max_text_tokens=min(512, ctx - 1))
    torch_speed = decode_speed(reference, ref)
    reference.close()
    steps["torch"] = Step(
        "torch", "passed", time.perf_counter() - t, {"ppl": round(ref.ppl, 4)}, speed=torch_speed
    )
    log(f"[hf] done: perplexity {ref.ppl:.2f} on the held-out text, {torch_speed} tokens/s")

    # the parity inputs must fit even when the model was trained on a shorter context
    # (a scratch model with --max-length 64): positions past it are computed, as torch does
    n_ctx = max(min(ctx, 1024), *(len(seq) for seq in ref.sequences), len(ref.text_ids))

    def candidate(path: Path, fmt: str):
        """The runtime backend that will serve this file: the one the gate checks."""
        return open_backend(path, fmt, hf=hf, context_length=n_ctx)

    def check(fmt: str, path: Path, t0: float, details: dict | None = None) -> None:
        lm = candidate(path, fmt)
        try:
            numbers = measure(lm, ref)
            why = judge(numbers, cfg.gates[fmt])
            # only a file `auto` may serve needs a speed; timed before the step's clock stops
            speed = None if why else decode_speed(lm, ref)
        finally:
            lm.close()
        if why:
            numbers["failed"] = why
        status = "failed" if why else "passed"
        steps[fmt] = Step(fmt, status, time.perf_counter() - t0, numbers, details or {}, speed)
        log(
            f"[{fmt}] {status}: "
            + ", ".join(f"{k}={v}" for k, v in numbers.items())
            + (f", {speed} tokens/s" if speed is not None else "")
        )

    def attempt(fmt: str, build: Callable[[float], None]) -> None:
        t0 = time.perf_counter()
        log(f"[{fmt}] building ...")
        try:
            build(t0)
        except BalabolError as e:
            steps[fmt] = Step(fmt, "failed", time.perf_counter() - t0, {"failed": [str(e)]})
            log(f"[{fmt}] FAILED: {e}")

    # 4. ONNX fp32, then int8 from it
    if "onnx" in cfg.formats or "onnx-int8" in cfg.formats:

        def build_onnx(t0):
            model, fused = onnx.export_onnx(hf, tmp / "onnx")
            check("onnx", model, t0, {"fused_operators": fused})

        attempt("onnx", build_onnx)
    if "onnx-int8" in cfg.formats and (tmp / "onnx" / "model.onnx").is_file():
        calib = encode_text(tokenizer, int8.calibration_text())
        calib = calib[: min(512, ctx - 1)]

        def build_int8(t0):
            def gate(path: Path) -> list[str]:
                lm = candidate(path, "onnx-int8")
                try:
                    return judge(measure(lm, ref), cfg.gates["onnx-int8"])
                finally:
                    lm.close()

            rep = int8.export_int8(tmp / "onnx", tmp / "onnx-int8", calib, accept=gate, log=log)
            check("onnx-int8", tmp / "onnx-int8" / "model.onnx", t0, rep.as_dict())

        attempt("onnx-int8", build_int8)
    if "onnx" not in cfg.formats:
        shutil.rmtree(tmp / "onnx", ignore_errors=True)
        steps.pop("onnx", None)

    # 5. GGUF f16, then quantized from it
    if wanted_gguf and gguf_skip:
        for fmt in wanted_gguf:
            steps[fmt] = Step(fmt, "skipped", 0.0, {"skipped": gguf_skip})
    elif wanted_gguf:
        f16 = tmp / FORMATS["gguf-f16"][1]

        def build_f16(t0):
            gguf.convert_f16(hf, f16)
            types, _ = gguf.tensor_types(f16)
            check("gguf-f16", f16, t0, {"tensor_types": types})

        attempt("gguf-f16", build_f16)
        for fmt in GGUF_QUANTIZED:
            if fmt not in cfg.formats or not f16.is_file():
                continue
            dst = tmp / FORMATS[fmt][1]

            def build_q(t0, fmt=fmt, dst=dst):
                types, fell_back = gguf.quantize(f16, dst, FORMATS[fmt][0])
                if fell_back:
                    log(f"[{fmt}] {fell_back}")
                check(fmt, dst, t0, {"tensor_types": types})

            attempt(fmt, build_q)
        if "gguf-f16" not in cfg.formats:
            f16.unlink(missing_ok=True)
            steps.pop("gguf-f16", None)

    # 6. the manifest: what was built, where, how big, and how well it matched
    return manifest_of(cfg, name, spec.name, steps, tmp, tokenizer, ctx)


# architectures whose export differs from "merge, then optimum ONNX and llama.cpp GGUF"
BUILDERS: dict[str, Callable] = {"lstm": lstm.build}


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def summary(manifest: Manifest, seconds: float, out: Path) -> str:
    rows = [("artifact", "size", "status", "parity", "tokens/s", "time")]
    for a in manifest.artifacts:
        p = a.parity
        if a.status == "skipped":
            parity = "skipped (see manifest)"
        elif "ppl_ratio" in p:
            parity = f"ppl ×{p['ppl_ratio']:.3f}, greedy {p['greedy_agreement']:.0%}"
            if a.format == "onnx":
                parity += f", Δlogits {p['max_abs_logit_diff']:.1e}"
        else:
            parity = f"ppl {p['ppl']:.2f}" if "ppl" in p else "; ".join(p.get("failed", []))[:60]
        speed = "-" if a.decode_tokens_per_s is None else f"{a.decode_tokens_per_s:.0f}"
        rows.append((a.format, _size(a.bytes), a.status, parity, speed, f"{a.seconds:.0f} s"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(["", f"{manifest.name} -> {out}  ({seconds:.0f} s)", *lines, ""])
