"""`balabol <command>`: the command table. Each stage registers typed functions under the
`balabol.commands` entry-point group (see pyproject.toml); a function's signature is its CLI.

    def export(*, base: Annotated[str, "base model: default or a directory"] = "default"): ...

becomes `balabol export --base default`. Parameters before `*` are positional; `bool`
parameters are flags; `Literal[...]` gives choices; the docstring's first line is the help.

Example: `balabol export --base default --name smollm2-135m-instruct`
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from balabol import __version__
from balabol.errors import BalabolError

GROUP = "balabol.commands"


def _commands() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _unwrap(tp: Any) -> tuple[Any, str]:
    """(type, help) from `Annotated[T, "help"]`, with `T | None` reduced to T."""
    help_ = ""
    if get_origin(tp) is Annotated:
        tp, *meta = get_args(tp)
        help_ = next((m for m in meta if isinstance(m, str)), "")
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else str
    return tp, help_


def add_arguments(parser: argparse.ArgumentParser, fn: Callable) -> None:
    hints = typing.get_type_hints(fn, include_extras=True)
    for name, param in inspect.signature(fn).parameters.items():
        tp, help_ = _unwrap(hints.get(name, str))
        flag = "--" + name.replace("_", "-")
        default = None if param.default is inspect.Parameter.empty else param.default
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            nargs = None if param.default is inspect.Parameter.empty else "?"
            parser.add_argument(name, type=tp, nargs=nargs, default=default, help=help_)
        elif tp is bool:
            parser.add_argument(flag, action="store_true", default=bool(default), help=help_)
        elif get_origin(tp) is Literal:
            choices = get_args(tp)
            parser.add_argument(flag, choices=choices, default=default, dest=name, help=help_)
        elif get_origin(tp) in (list, tuple):
            (item,) = get_args(tp)[:1]
            parser.add_argument(flag, type=item, nargs="*", default=default, dest=name, help=help_)
        else:
            conv = Path if tp is Path else tp
            suffix = "" if default is None else f" (default: {default})"
            parser.add_argument(flag, type=conv, default=default, dest=name, help=help_ + suffix)


def build_parser(commands: dict[str, Any]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="balabol", description="Balabol: your own text and a small model, as an offline bot."
    )
    parser.add_argument("--version", action="version", version=f"balabol {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, ep in sorted(commands.items()):
        # Loading the entry point imports only the stage's light cli module.
        fn = ep.load()
        doc = inspect.getdoc(fn) or ""
        p = sub.add_parser(name, help=doc.split("\n")[0], description=doc)
        add_arguments(p, fn)
        p.set_defaults(_fn=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_commands())
    args = vars(parser.parse_args(argv))
    fn = args.pop("_fn", None)
    args.pop("command", None)
    if fn is None:
        parser.print_help()
        return 2
    try:
        result = fn(**args)
    except BalabolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
