"""ONNX int8 (onnxruntime dynamic quantization), keeping the most sensitive layers in fp32.

Quantizing every MatMul is fastest but can wreck a small model (SmolLM2-135M: perplexity
×1.73 with optimum's avx2 config). So each group of MatMuls (the same projection across
layers, e.g. `mlp.down_proj`) is measured: quantize all but that group and see how much
closer (KL divergence of the next-token distributions) it gets to fp32 on a calibration
text. Groups are then kept in fp32 in order of
recovery per weight (speed lost) until the model is within `target_ppl_ratio` of fp32
on the calibration text and passes the parity gate. The choice and
every measurement go into the manifest.

Example: `balabol export` writes artifacts/<name>/onnx-int8/model.onnx.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from balabol.errors import ExportError, require
from export.parity import OnnxLM, log_softmax, text

# Within this ratio of fp32 on the calibration text. The held-out gate is ×1.05, but the two
# texts disagree by a few percent on SmolLM2, so the search aims well inside it.
TARGET_PPL_RATIO = 1.02


def calibration_text() -> str:
    """Sensitivity is measured on a different text than the parity gate's held-out one."""
    return text("calibration_en.txt")


@dataclass
class Int8Report:
    fp32_ppl: float
    ppl: float
    kept_fp32: list[str]
    groups: dict[str, dict] = field(default_factory=dict)
    branches: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    kl: float = 0.0

    def as_dict(self) -> dict:
        return {
            "method": "onnxruntime dynamic, per-channel asymmetric QUInt8 weights, uint8 activations",
            "calibration_ppl_fp32": round(self.fp32_ppl, 4),
            "calibration_ppl_int8": round(self.ppl, 4),
            "calibration_kl_to_fp32": round(self.kl, 5),
            "kept_fp32": self.kept_fp32,
            "sensitivity": self.groups,
            "graphs": self.branches,
        }


def nll_ppl(log_probs: np.ndarray, ids: list[int]) -> float:
    """Perplexity of ids under (T, V) log-probabilities (position t predicts ids[t+1])."""
    return float(np.exp(-log_probs[np.arange(len(ids) - 1), np.asarray(ids[1:])].mean()))


def group_of(node_name: str) -> str:
    """'/model/layers.12/mlp/down_proj/MatMul' -> '/model/layers.N/mlp/down_proj/MatMul'."""
    return re.sub(r"\.\d+(?=/)", ".N", node_name)


def weight_matmuls(model) -> dict[str, int]:
    """MatMul nodes with a constant weight (the ones dynamic quantization touches) -> size."""
    from onnx import numpy_helper  # noqa: F401  (onnx is there when onnxruntime is)

    inits = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "MatMul":
            sizes = [inits[x] for x in node.input if x in inits]
            if sizes:
                out[node.name] = sizes[0]
    return out


def count_ops(graph, where: str = "main", acc: dict | None = None) -> dict[str, dict]:
    """Per (sub)graph: fp32 MatMuls and int8 MatMulIntegers; recurses into If branches."""
    acc = {} if acc is None else acc
    c = acc.setdefault(where, {"MatMul": 0, "MatMulInteger": 0})
    for node in graph.node:
        if node.op_type in c:
            c[node.op_type] += 1
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                count_ops(attr.g, f"{where}/{node.name}.{attr.name}", acc)
    return acc


def check_branches(path: Path) -> dict[str, dict]:
    """Every graph that had MatMuls must have int8 ones too (merged decoders: both branches)."""
    import onnx

    counts = count_ops(onnx.load(str(path), load_external_data=False).graph)
    missing = [g for g, c in counts.items() if c["MatMul"] and not c["MatMulInteger"]]
    if missing:
        raise ExportError(
            f"{path}: int8 quantization left these graph branches unquantized: {missing}"
        )
    return counts


def quantize(src: Path, dst: Path, exclude: list[str]) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime logs a "consider pre-processing" hint on the root logger at every call;
    # it is about static shape inference for CNNs, not these decoder graphs.
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))

    quantize_dynamic(
        src,
        dst,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        # u8 activations x s8 weights can overflow on CPUs without VNNI unless the weights
        # lose a bit (reduce_range). u8 x u8 uses a kernel without that overflow, so the
        # weights keep all 8 bits. Measured on SmolLM2-135M (held-out perplexity, keeping
        # down_proj fp32): s8 + reduce_range x1.097, u8 full range x1.052.
        reduce_range=False,
        weight_type=QuantType.QUInt8,
        nodes_to_exclude=exclude,
        extra_options={"MatMulConstBOnly": True},
    )


def export_int8(
    fp32_dir: Path,
    out_dir: Path,
    calibration_ids: list[int],
    *,
    target_ppl_ratio: float = TARGET_PPL_RATIO,
    accept: Callable[[Path], list[str]] | None = None,
    log=print,
) -> Int8Report:
    """Quantize `fp32_dir`'s model into `out_dir`. `accept(path)` (the parity gate) returns
    why a candidate is not good enough; more groups stay fp32 until it returns nothing."""
    require("onnxruntime.quantization", extra="export")
    import onnx

    t0 = time.perf_counter()
    src = fp32_dir / "model.onnx"
    sizes = weight_matmuls(onnx.load(str(src), load_external_data=False))
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sizes:
        groups[group_of(name)].append(name)

    fp32 = OnnxLM(src)
    ref_lp = log_softmax(fp32.logits(calibration_ids))
    fp32.close()
    fp32_ppl = nll_ppl(ref_lp, calibration_ids)
    work = Path(tempfile.mkdtemp(prefix="int8-", dir=out_dir.parent))
    try:
        trials = 0

        def trial(kept: list[str]) -> tuple[Path, float, float]:
            """Quantize all but `kept`; (file, calibration perplexity, KL to fp32)."""
            nonlocal trials
            trials += 1
            dst = work / f"trial-{trials}.onnx"
            quantize(src, dst, [n for g in kept for n in groups[g]])
            lm = OnnxLM(dst)
            lp = log_softmax(lm.logits(calibration_ids))
            lm.close()
            kl = float((np.exp(ref_lp) * (ref_lp - lp)).sum(-1).mean())
            return dst, nll_ppl(lp, calibration_ids), kl

        best_path, best_ppl, best_kl = trial([])
        log(f"    int8 all MatMuls: ppl {best_ppl:.2f} vs fp32 {fp32_ppl:.2f}, KL {best_kl:.4f}")
        kept: list[str] = []
        report_groups: dict[str, dict] = {}

        def good_enough() -> bool:
            if best_ppl > fp32_ppl * target_ppl_ratio:
                return False
            # the calibration target can be met while the parity gate (greedy agreement on
            # other prompts) is not: ask it too, and keep more groups in fp32 if it says no
            why = accept(best_path) if accept else []
            if why:
                log(f"    parity gate: {'; '.join(why)}; keeping another group in fp32")
            return not why

        if not good_enough():
            # 1. sensitivity: how much closer to fp32 (KL) does keeping one group get us?
            for g in groups:
                _, p, kl = trial([g])
                report_groups[g] = {
                    "ppl_when_kept_fp32": round(p, 4),
                    "kl_when_kept_fp32": round(kl, 5),
                    "kl_recovered": round(best_kl - kl, 5),
                    "weights": sum(sizes[n] for n in groups[g]),
                }
                log(f"    keep {g} in fp32: ppl {p:.2f}, KL {kl:.4f}")
            # 2. keep groups by recovery per weight (speed lost) until good enough
            order = sorted(
                report_groups,
                key=lambda g: -report_groups[g]["kl_recovered"] / report_groups[g]["weights"],
            )
            for g in order:
                if report_groups[g]["kl_recovered"] <= 0:
                    break
                kept.append(g)
                best_path, best_ppl, best_kl = trial(kept)
                log(
                    f"    keeping {len(kept)} group(s) in fp32: ppl {best_ppl:.2f}, KL {best_kl:.4f}"
                )
                if good_enough():
                    break
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(best_path, out_dir / "model.onnx")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for f in fp32_dir.iterdir():
        if f.suffix != ".onnx" and f.is_file():
            shutil.copy2(f, out_dir / f.name)
    branches = check_branches(out_dir / "model.onnx")
    return Int8Report(
        fp32_ppl, best_ppl, kept, report_groups, branches, time.perf_counter() - t0, best_kl
    )
