"""`balabol export` output: one line per step and a summary; `--verbose` shows the libraries'."""

from __future__ import annotations

import re

from balabol.quiet import verbosity
from export.pipeline import ExportConfig, run
from tests.conftest import TINY_GATES

FALLBACK = re.compile(
    r"^\[gguf-q4_k_m\] q4_k_m: \d+ of \d+ tensors fell back to [a-z0-9_/]+ "
    r"\(64, 128 columns are not a multiple of 256\)$"
)


def test_export_is_quiet_and_summarizes_the_fallbacks(tiny_model, tmp_path, capfd):
    lines: list[str] = []
    cfg = ExportConfig(base=str(tiny_model("llama")), name="q", out_dir=tmp_path, gates=TINY_GATES)
    run(cfg, log=lines.append)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")  # the libraries said nothing past balabol's log
    printed = "\n".join(lines).splitlines()
    assert len(printed) < 30, "\n".join(printed)
    assert len([line for line in printed if FALLBACK.match(line)]) == 1, "\n".join(printed)


def test_verbose_lets_the_libraries_through(tiny_model, tmp_path, capfd):
    lines: list[str] = []
    cfg = ExportConfig(
        base=str(tiny_model("llama")),
        name="v",
        out_dir=tmp_path,
        gates=TINY_GATES,
        formats=("gguf-q4_k_m",),
    )
    with verbosity(True):
        run(cfg, log=lines.append)
    out, err = capfd.readouterr()
    assert "falling back" in out + err  # llama.cpp's own per-tensor lines
    assert any(FALLBACK.match(line) for line in lines)
