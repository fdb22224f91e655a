"""Where Balabol keeps things: defaults, and every path moved by its environment variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from balabol import settings

VARIABLES = ["BALABOL_CACHE", "XDG_CACHE_HOME", "BALABOL_ARTIFACTS", "BALABOL_ADAPTERS"]
VARIABLES += ["BALABOL_DATA", "BALABOL_MODELS"]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_defaults(clean_env, tmp_path):
    assert settings.cache_dir() == tmp_path / "home" / ".cache" / "balabol"
    assert settings.artifacts_dir() == Path("artifacts")
    assert settings.adapters_dir() == Path("adapters")
    assert settings.data_dir() == Path("data")
    assert settings.models_dir() == Path("models")
    assert settings.DEFAULT_ARTIFACT == "smollm2-135m-instruct"


@pytest.mark.parametrize(
    ("variable", "where"),
    [
        ("BALABOL_ARTIFACTS", settings.artifacts_dir),
        ("BALABOL_ADAPTERS", settings.adapters_dir),
        ("BALABOL_DATA", settings.data_dir),
        ("BALABOL_MODELS", settings.models_dir),
        ("BALABOL_CACHE", settings.cache_dir),
    ],
)
def test_each_path_moves_with_its_variable(clean_env, variable, where):
    clean_env.setenv(variable, "/srv/balabol/x")
    assert where() == Path("/srv/balabol/x")


def test_cache_follows_xdg_unless_balabol_cache_is_set(clean_env):
    clean_env.setenv("XDG_CACHE_HOME", "/var/cache")
    assert settings.cache_dir() == Path("/var/cache/balabol")
    clean_env.setenv("BALABOL_CACHE", "/opt/c")
    assert settings.cache_dir() == Path("/opt/c")
