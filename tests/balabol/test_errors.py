"""The error hierarchy and `require`, which names the install command of a missing stack."""

from __future__ import annotations

import json

import pytest

from balabol import errors
from balabol.errors import BalabolError, ConfigError, MissingDependencyError, require


def test_require_returns_the_module():
    assert require("json", extra="export") is json


def test_require_names_the_missing_module_and_the_install_command():
    with pytest.raises(MissingDependencyError) as e:
        require("balabol_no_such_module", extra="runtime")
    assert str(e.value) == (
        "balabol_no_such_module is not installed (No module named 'balabol_no_such_module'). "
        "Install the 'runtime' stack: pip install -e '.[runtime]' "
        "(or run `make runtime` / `make test`)."
    )
    assert isinstance(e.value.__cause__, ModuleNotFoundError)


@pytest.mark.parametrize(
    "name",
    [
        "ConfigError",
        "MissingDependencyError",
        "BaseModelError",
        "UnsupportedArchitectureError",
        "AdapterError",
        "ExportError",
        "ArtifactError",
        "DataError",
    ],
)
def test_every_error_is_a_balabol_error(name):
    # the CLI prints a BalabolError's message without a traceback; an error outside the
    # hierarchy would reach the user as one
    assert issubclass(getattr(errors, name), BalabolError)


def test_errors_are_caught_by_the_builtin_they_refine():
    assert issubclass(ConfigError, ValueError)  # a bad value is still a ValueError to callers
    assert issubclass(MissingDependencyError, ImportError)
    assert issubclass(errors.UnsupportedArchitectureError, errors.BaseModelError)
