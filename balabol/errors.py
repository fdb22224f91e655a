"""The error types a user can see. Each message says what is wrong, what exists, and the fix.

Example: `balabol export --base ./nope` -> BaseModelError naming the path and the fix.
"""


class BalabolError(Exception):
    """A problem the user can act on; the CLI prints its message without a traceback."""


class ConfigError(BalabolError, ValueError):
    """A bad option value (names the flag, the value and what is allowed)."""


class MissingDependencyError(BalabolError, ImportError):
    """An optional stack is not installed (names the pip/make command that installs it)."""


class BaseModelError(BalabolError):
    """A base model is missing, corrupt, or not a causal LM."""


class UnsupportedArchitectureError(BaseModelError):
    """The model's architecture has no export spec (lists the supported ones)."""


class AdapterError(BalabolError):
    """A LoRA adapter is missing, corrupt, or made for another base."""


class ExportError(BalabolError):
    """An export step failed or its output already exists."""


class ArtifactError(BalabolError):
    """An artifact is missing, of an unknown format, truncated or corrupt."""


class DataError(BalabolError):
    """Training data is malformed, of the wrong schema, or empty after cleaning."""


def require(module: str, *, extra: str):
    """Import an optional heavy module or raise MissingDependencyError naming the install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{module} is not installed ({e}). Install the '{extra}' stack: "
            f"pip install -e '.[{extra}]' (or run `make {extra}` / `make test`)."
        ) from e


class RemoteError(BalabolError):
    """An OpenAI-compatible server (`--format remote`) is unreachable or refused a request."""
