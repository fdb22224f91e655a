"""The parity gate reads every file through the runtime backend that serves it (issue #14):
the reference through the torch backend, each candidate through the backend `load` picks
for that format, so what passed the gate is the code that answers users."""

from __future__ import annotations

import pytest

from export import parity
from runtime.loader import load
from tests.conftest import export_tiny


@pytest.fixture
def opened(monkeypatch):
    """(format, backend class) of every backend the gate opens, in order."""
    seen: list[tuple[str, type]] = []
    real = parity.open_file

    def spy(path, fmt, **kwargs):
        backend = real(path, fmt, **kwargs)
        seen.append((fmt, type(backend)))
        return backend

    monkeypatch.setattr(parity, "open_file", spy)
    return seen


@pytest.mark.parametrize(
    ("model", "formats"),
    [
        ("llama", ("onnx", "onnx-int8", "gguf-f16", "gguf-q8_0", "gguf-q4_k_m")),
        ("lstm", ("onnx", "onnx-int8")),
    ],
)
def test_the_gate_reads_each_file_with_the_backend_that_serves_it(
    tiny_model, tmp_path, opened, model, formats
):
    manifest = export_tiny(tiny_model(model), tmp_path, model, formats=formats)
    assert opened[0][0] == "torch"  # the reference comes first
    gated = dict(opened)  # the int8 search's candidates included: all of one class
    assert len({cls for fmt, cls in opened if fmt == "onnx-int8"}) == 1
    for a in manifest.artifacts:
        assert a.status == "passed", (a.format, a.parity)
        backend = load(model, a.format, root=tmp_path)
        try:
            assert gated[a.format] is type(backend), a.format
        finally:
            backend.close()
    assert set(gated) == {"torch", *formats}
