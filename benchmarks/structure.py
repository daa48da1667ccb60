"""The shape of the source: the longest functions of ``src/genvae`` and its import circles.

    python benchmarks/structure.py [--src src/genvae] [--top 5]

A function's length counts the lines from its ``def`` to its last line; its code, the lines of
that span outside its docstring that are not blank. An import circle is a
cycle in the graph of genvae's modules that import each other, counting imports inside functions
and under ``TYPE_CHECKING`` (a type checker and a reader follow those too).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    """The lines of ``node`` outside its docstring that are not blank."""
    span = range(node.lineno - 1, node.end_lineno or node.lineno)
    doc = node.body[0] if node.body and isinstance(node.body[0], ast.Expr) else None
    skip = range(doc.lineno - 1, doc.end_lineno or doc.lineno) if doc and isinstance(doc.value, ast.Constant) else ()
    return sum(1 for i in span if i not in skip and lines[i].strip())


def functions(src: Path) -> list[tuple[int, int, str]]:
    """(lines, code lines, "module:qualname") of every function and method."""
    found = []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text()
        tree, lines = ast.parse(text), text.splitlines()
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        length = (child.end_lineno or child.lineno) - child.lineno + 1
                        found.append((length, code_lines(child, lines), f"{module_name(path, src)}:{name}"))
                    stack.append((child, f"{name}."))
    return sorted(found, reverse=True)


def imports(src: Path) -> dict[str, set[str]]:
    """Each genvae module -> the genvae modules it imports (anywhere in the file)."""
    modules = {module_name(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(node.level - 1, 0)):
                    base = base.rpartition(".")[0]
                stem = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
                targets = [stem, *(f"{stem}.{a.name}" for a in node.names)]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(f"{target}."):
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src" / "genvae")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    found = functions(args.src)
    print("longest functions (lines, of which code):")
    for lines, code, name in found[: args.top]:
        print(f"  {lines:4d} {code:4d}  {name}")
    print("longest by code lines:")
    for lines, code, name in sorted(found, key=lambda f: f[1], reverse=True)[: args.top]:
        print(f"  {lines:4d} {code:4d}  {name}")
    found = circles(imports(args.src))  # type: ignore[assignment]
    print(f"import circles: {len(found)}")
    for group in found:
        print("  " + " <-> ".join(group))


if __name__ == "__main__":
    main()
