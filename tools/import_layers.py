"""Print lokr_core's import layers and check them: no import runs back up a layer, no cycles.

Usage: ``python tools/import_layers.py [--json]`` from the repository root. Every module of
``lokr_core`` is parsed with ``ast`` (no import runs); every ``import`` / ``from ... import``
counts, also those inside functions (lazy imports), and the package root's ``_EXPORTS`` table
(name -> module, imported on first use) counts as imports of the root. A module's layer is its
top-level folder (``base``, ``tensor``, ...); the order is :data:`LAYERS`, the root ``lokr_core``
package (the public surface) sits above them all. Exit status 1 when an upward import or a cycle
is found.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

PACKAGE = "lokr_core"
LAYERS = ("base", "tensor", "tuner", "keymap", "formats", "ops", "commands")
"""Layer folders of lokr_core, lowest first; a module may import from its own layer and below."""
TOP = len(LAYERS)
"""The layer of the root package (``lokr_core/__init__.py``): the public surface over everything."""


def module_files(root: Path) -> dict[str, Path]:
    """{dotted module name: file} for every module of the package under ``root``."""
    pkg = root / PACKAGE
    out = {}
    for f in sorted(pkg.rglob("*.py")):
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def layer_of(module: str) -> int:
    """The layer index of a dotted module name (``lokr_core.ops.merge`` -> 5; the root -> TOP)."""
    parts = module.split(".")
    if len(parts) == 1:
        return TOP
    if parts[1] not in LAYERS:
        raise SystemExit(f"{module}: not in a layer folder; expected lokr_core/<{'|'.join(LAYERS)}>/...")
    return LAYERS.index(parts[1])


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules ``module`` imports (anywhere in the file, lazy imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(target: str) -> None:
        # ``from pkg import name``: name may be a module of pkg or an attribute of it
        while target and target not in modules:
            target = target.rsplit(".", 1)[0] if "." in target else ""
        if target and target != module:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                src = _resolve_relative(module, is_package, node.level, node.module)
            elif node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
                src = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{src}.{alias.name}"
                add(sub if sub in modules else src)
        elif (is_package and module == PACKAGE and isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)
              and isinstance(node.value, ast.Dict)):
            for value in node.value.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    add(f"{PACKAGE}.{value.value}")
    return found


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def analyse(root: Path) -> dict:
    """{"layers", "modules": {module: layer name}, "levels", "upward": [(from, to)], "cycles"}."""
    files = module_files(root)
    names = set(files)
    graph = {m: imports_of(m, f, names) for m, f in files.items()}
    upward = sorted((m, t) for m, ts in graph.items() for t in ts if layer_of(t) > layer_of(m))
    used = sorted({layer_of(m) for m in files})
    return {
        "layers": list(LAYERS) + [PACKAGE],
        "modules": {m: (LAYERS + (PACKAGE,))[layer_of(m)] for m in sorted(files)},
        "levels": len(used),
        "upward": [list(p) for p in upward],
        "cycles": find_cycles(graph),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="repository root")
    args = parser.parse_args(argv)
    result = analyse(Path(args.root))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for module, layer in result["modules"].items():
            print(f"{layer:<10} {module}")
        print(f"levels: {result['levels']} ({' < '.join(result['layers'])})")
        print("upward imports: " + (", ".join(f"{a} -> {b}" for a, b in result["upward"]) or "none"))
        print("cycles: " + ("; ".join(" <-> ".join(c) for c in result["cycles"]) or "none"))
    return 1 if result["upward"] or result["cycles"] else 0


if __name__ == "__main__":
    sys.exit(main())
