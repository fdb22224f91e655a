"""`balabol <command>`: the command table, on cyclopts. Each stage registers its commands under
the `balabol.commands` entry-point group (pyproject.toml); `balabol/` never imports a stage by
name. A command is a typed function, or a cyclopts `App` holding subcommands (`balabol data
telegram|dialogues|corpus`). Its signature is its CLI, and a frozen config dataclass is taken
whole, flattened into flags whose help is the docstring of each field:

    def generate(prompt: str, /, *, sampling: Annotated[Sampling, Parameter(name="*")]): ...

gives `balabol generate "Hi" --temperature 0 --max-new-tokens 64`; a `bool` field `x` gives
`--x/--no-x`, so a flag once spelled `--no-x` still parses, now as the negative of `x`.

Why cyclopts and not typer: typer (on click) takes no dataclass parameters, so every command
would re-list its config's fields as function parameters, help copied next to each; cyclopts
flattens the dataclass (`Parameter(name="*")`), reads the help from the field docstrings, and
validates by building the frozen config, whose own errors name the flag. Its booleans are
`--x/--no-x` without declaring both names, and its lazy commands ("module:attribute" paths)
keep torch, and even numpy, out of `balabol --help`. It also generates shell completion.

A command's config is a frozen dataclass of its stage, with no CLI in it; where the flags
need more than the fields say (a field kept off the command line, a help group, a flag spelled
otherwise than its field), the command flattens a subclass made with `flags` below.

Errors: a bad flag or value prints `error: ...` and exits 2 (SystemExit, as argparse did); a
`BalabolError`, raised by a command or by a config rejecting a value, prints `error: ...` and
returns 1. Neither shows a traceback.

Example: `balabol data telegram --input result.json --name me --persona Anna --no-links`
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import sys
import typing
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from cyclopts import App, Parameter
from cyclopts.exceptions import CoercionError, CycloptsError

from balabol import __version__
from balabol.errors import BalabolError

GROUP = "balabol.commands"
# cyclopts loads a lazy command from "module:attribute"; `balabol.cli:command_NAME` is served
# by this module's __getattr__, which loads entry point NAME.
_LAZY = "command_"


def _commands() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def __getattr__(attr: str) -> Any:  # PEP 562: called only for names this module lacks
    if attr.startswith(_LAZY):
        ep = _commands().get(attr[len(_LAZY) :])
        if ep is not None:
            return ep.load()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


# --- a config dataclass as flags ----------------------------------------------------------------


def flags(cls: type | None = None, /, **params: Parameter) -> Any:
    """Make a config dataclass's CLI subclass ready to be flattened (`Parameter(name="*")`);
    a class decorator, bare or with `Parameter`s for fields by name:

        @flags(out_dir=Parameter(show_default=False))
        @dataclass(frozen=True)
        class Export(ExportConfig): ...

    cyclopts reads the fields from the class's `__init__`, whose string annotations (`from
    __future__ import annotations`) Python evaluates in the module that made the subclass,
    where the base's names (`Path`, a `Literal` alias) may not exist: they are resolved here.
    A field named in params gets its `Parameter` (a help group, `show_default=False` where the
    help words the default better), so the subclass need not re-declare it."""
    if cls is None:
        return lambda c: flags(c, **params)
    names = [f.name for f in dataclasses.fields(cls)]
    assert set(params) <= set(names), f"{cls.__name__} has no field {set(params) - set(names)}"
    resolved = typing.get_type_hints(cls, include_extras=True)
    hints = {n: Annotated[resolved[n], params[n]] if n in params else resolved[n] for n in names}
    # cyclopts reads a dataclass's fields from the class (help) or from its __init__ (parsing)
    cls.__annotations__ = {**inspect.get_annotations(cls), **hints}
    cls.__init__.__annotations__ = hints
    return cls


# --- the table ---------------------------------------------------------------------------------


def _help(ep: EntryPoint) -> str | None:
    """A command's help, read from its module's source without importing it: a stage's
    package may import numpy on import, and `balabol --help` lists every command."""
    module, _, attr = ep.value.partition(":")
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: imports nothing
    if spec is None or not spec.submodule_search_locations or not rest:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *rest[:-1], rest[-1] + ".py")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == attr:
            return ast.get_docstring(node)
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == attr for t in node.targets
        ):  # data = App(name="data", help="...")
            for kw in getattr(node.value, "keywords", []):
                if kw.arg == "help" and isinstance(kw.value, ast.Constant):
                    return kw.value.value
    return None


def build_app() -> App:
    """The root app: every registered command, loaded only when it is run or asked for help."""
    app = App(
        name="balabol",
        help="Balabol: your own text and a small model, as an offline bot.",
        version=f"balabol {__version__}",
        # plain text: help strings are not markdown, and rendering it costs 0.1 s per --help
        help_format="plaintext",
        # as argparse's nargs="*": `--formats onnx gguf-q8_0`, `--chat A B`; and no
        # `--empty-formats` flags next to every list
        default_parameter=Parameter(consume_multiple=True, negative_iterable=()),
        suppress_keyboard_interrupt=False,
    )
    for name, ep in sorted(_commands().items()):
        app.command(f"{__name__}:{_LAZY}{name}", name=name, help=_help(ep))
    app.register_install_completion_command(
        help="Install shell completion for balabol (bash, zsh, fish; --shell to choose)."
    )

    @app.default
    def _no_command(
        *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
    ) -> int:
        if tokens:  # cyclopts would only say that the token was not used
            names = ", ".join(sorted(n for n in app if not n.startswith("-")))
            kind = "option" if tokens[0].startswith("-") else "command"
            raise CycloptsError(msg=f"unknown {kind} {tokens[0]!r}; the commands are: {names}")
        app.help_print([])
        return 2

    return app


# --- running -----------------------------------------------------------------------------------


def _explain(e: CycloptsError) -> str:
    """cyclopts's message; a bad choice is worded as argparse did (scripts may grep it)."""
    token = getattr(e, "token", None)
    if isinstance(e, CoercionError) and token is not None and get_origin(e.target_type) is Literal:
        flag = token.keyword or (e.argument.name if e.argument else "")
        choices = ", ".join(str(c) for c in get_args(e.target_type))
        return f"{flag}: invalid choice: {token.value!r} (choose from {choices})"
    return str(e).strip()


def main(argv: Sequence[str] | None = None) -> int:
    app = build_app()
    tokens = sys.argv[1:] if argv is None else list(argv)
    try:
        result = app(tokens, exit_on_error=False, print_error=False, result_action="return_value")
    except CycloptsError as e:
        cause = e.__cause__
        # a config rejected a value while cyclopts built it, and cyclopts wrapped the error
        # (it does for members of a union, `T | None`)
        if isinstance(cause, BalabolError):
            print(f"error: {cause}", file=sys.stderr)
            return 1
        print(f"error: {_explain(e)}", file=sys.stderr)
        chain, _, _ = app.parse_commands(tokens)
        print(f"see: {' '.join(('balabol', *chain, '--help'))}", file=sys.stderr)
        raise SystemExit(2) from None
    except BalabolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
