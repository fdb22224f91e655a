"""The house plan's dependency rules (/ARCHITECTURE.md), checked on the import graph.

Every .py file of the project's packages is parsed (`ast`, nothing is imported), and every
import statement counts, the ones inside functions too: a lazy import is still a dependency,
it only runs later. Two checks:
- no import cycle between files (each cycle is listed);
- no import the plan forbids (runtime -> bot/api/training/export, training -> export/runtime,
  the core -> any stage, a stage -> bot/api, product code -> benchmarks/tests).
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("balabol", "training", "export", "runtime", "bot", "api", "benchmarks", "tests")
PRODUCT = ("balabol", "training", "export", "runtime", "bot", "api")
STAGES = ("training", "export", "runtime", "bot", "api")

# importer package -> packages it must not import, and why
FORBIDDEN: dict[str, dict[str, str]] = {
    "runtime": dict.fromkeys(("bot", "api", "training", "export"), "runtime imports only balabol"),
    "training": dict.fromkeys(("export", "runtime"), "training imports only balabol"),
    "balabol": dict.fromkeys(STAGES, "the core imports no stage"),
}
for _stage in STAGES:
    FORBIDDEN.setdefault(_stage, {}).update(
        {p: "no stage imports the bot or the api" for p in ("bot", "api") if p != _stage}
    )
for _pkg in PRODUCT:
    FORBIDDEN.setdefault(_pkg, {}).update(
        dict.fromkeys(("benchmarks", "tests"), "product code imports no benchmark or test")
    )


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files() -> dict[str, Path]:
    files = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")) if (ROOT / pkg).is_dir() else []:
            files[module_name(path)] = path
    return files


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules a file imports (anywhere in it), most specific name first:
    `from runtime import score` is runtime.score when that is a module, else runtime."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, up level-1 more
                pkg = name.split(".") if is_package else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, *([base] if base else [])])
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` of a non-module c: a.b
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    files = project_files()
    known = set(files)
    return {name: imports(path, name, known) for name, path in files.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as its sorted
    members; `_path_through` shows one cycle inside each, for the failure message."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth = import chain length: small
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def _path_through(g: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A shortest cycle start -> ... -> start inside one strongly connected component."""
    members, start = set(comp), comp[0]
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(g[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return comp  # unreachable for a strongly connected component


def forbidden(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(g.items()):
        rules = FORBIDDEN.get(src.split(".")[0], {})
        for dst in sorted(targets):
            why = rules.get(dst.split(".")[0])
            if why:
                bad.append(f"{src} imports {dst}: {why}")
    return bad


def test_the_walk_sees_imports_inside_functions_and_relative_ones(tmp_path):
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("def f():\n    from p.b import x\n    import p.c as c\n")
    known = {"p", "p.a", "p.b", "p.c"}
    assert imports(pkg / "__init__.py", "p", known) == {"p.a"}
    assert imports(pkg / "a.py", "p.a", known) == {"p.b", "p.c"}
    g = {"p.a": {"p.b"}, "p.b": {"p.c", "p.a"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert cycles(g) == [["p.a", "p.b", "p.c"]]
    assert _path_through(g, ["p.a", "p.b", "p.c"]) == ["p.a", "p.b", "p.a"]


def test_no_import_cycle_between_files():
    g = graph()
    found = [
        f"{' -> '.join(_path_through(g, comp))}  (all of: {', '.join(comp)})" for comp in cycles(g)
    ]
    assert not found, "import cycles:\n" + "\n".join(found)


@pytest.mark.parametrize("package", PRODUCT)
def test_no_forbidden_dependency(package):
    g = {k: v for k, v in graph().items() if k.split(".")[0] == package}
    bad = forbidden(g)
    assert not bad, "\n".join(bad)
