"""The architecture table (balabol/architectures.py): every registered architecture has what
each stage reads from it, and a failed lookup names what is supported and what to do."""

from __future__ import annotations

import json
import re

import pytest

from balabol import architectures
from balabol.architectures import ARCHITECTURES, MODEL_TYPES, Architecture, lookup, named
from balabol.errors import BaseModelError, UnsupportedArchitectureError
from balabol.manifest import FORMATS
from runtime.loader import BACKENDS, open_file

ARCHS = list(ARCHITECTURES.values())
IDS = [a.name for a in ARCHS]


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_export_finds_it_by_every_model_type(arch: Architecture):
    assert arch.model_types and arch.examples
    for model_type in arch.model_types:
        config = {"architectures": ["SomethingForCausalLM"], "model_type": model_type}
        assert lookup(config) is arch
        assert MODEL_TYPES[model_type] is arch
    assert named(arch.name) is arch


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_training_gets_lora_targets_or_a_clear_no(arch: Architecture):
    config = {"model_type": arch.model_types[0]}
    if arch.adapters:
        assert lookup(config, to="fine-tune") is arch
        assert all(isinstance(t, str) and t for t in arch.lora_targets)
    else:
        with pytest.raises(UnsupportedArchitectureError, match="cannot fine-tune yet") as e:
            lookup(config, to="fine-tune", where="base m")
        assert f"{arch.name} (" not in str(e.value).split("Supported:")[1]  # not offered


@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_the_runtime_reads_every_format_it_has(arch: Architecture):
    formats = arch.formats or tuple(FORMATS)
    assert set(formats) <= FORMATS.keys()
    for fmt in formats:
        assert callable(BACKENDS[fmt].opener(arch.name))
    assert arch.formats is None or arch.no_format_reason  # the manifest records why not


@pytest.mark.parametrize("arch", [a for a in ARCHS if a.formats is not None], ids=str)
def test_a_format_it_lacks_is_a_clear_error(arch: Architecture, tmp_path):
    missing = next(f for f in FORMATS if f not in arch.formats)
    with pytest.raises(Exception, match=re.escape(arch.no_format_reason)) as e:
        open_file(tmp_path, missing, tokenizer=object(), context_length=8, architecture=arch.name)
    assert f"choose one of: {', '.join(arch.formats)}" in str(e.value)


def test_legacy_config_keys_are_filled_not_overwritten():
    gpt2 = ARCHITECTURES["gpt2"]
    assert gpt2.complete_config({"n_positions": 64}) == {"n_positions": 64, "n_ctx": 64}
    assert gpt2.complete_config({"n_positions": 64, "n_ctx": 32})["n_ctx"] == 32


def test_an_unknown_model_type_lists_the_supported_ones_and_how_to_add_one():
    with pytest.raises(UnsupportedArchitectureError) as e:
        lookup({"architectures": ["MambaForCausalLM"], "model_type": "mamba"}, where="base m")
    message = str(e.value)
    assert message.startswith("base m has architecture 'mamba', which Balabol cannot export yet.")
    for arch in ARCHS:
        assert f"{arch.name} ({arch.examples})" in message
    assert message.endswith(
        "Use a base of one of these, or to add one, register an Architecture in "
        "balabol/architectures.py."
    )


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(UnsupportedArchitectureError, match=r"known: llama, gpt2, gemma3, lstm"):
        named("mamba")


def test_a_model_that_is_not_a_text_generator_is_refused():
    with pytest.raises(BaseModelError, match="is a BertModel, not a causal language model"):
        lookup({"architectures": ["BertModel"], "model_type": "bert"})


def test_model_config_reads_a_directory(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert architectures.model_config(tmp_path) == {"model_type": "gpt2"}
