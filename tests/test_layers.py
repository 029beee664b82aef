"""The package's import layers (README "Layers"): every import, at module level or inside a function,
points down (or sideways within a layer), never up; and no two packages import each other."""

import ast
from pathlib import Path

import speechkeep

PKG = Path(speechkeep.__file__).parent

# Lowest first. A module belongs to the most specific entry that names it.
LAYERS = [
    ("base", ["speechkeep", "speechkeep.errors", "speechkeep.config", "speechkeep.io", "speechkeep.audio",
              "speechkeep.metrics", "speechkeep.distributed"]),
    ("models", ["speechkeep.models"]),
    ("data/strategies", ["speechkeep.data", "speechkeep.strategies", "speechkeep.importance.taylor",
                         "speechkeep.importance.summary", "speechkeep.importance.runs"]),
    ("train", ["speechkeep.train"]),
    ("evaluate/importance", ["speechkeep.evaluate", "speechkeep.importance"]),
    ("recipes", ["speechkeep.recipes", "speechkeep.align"]),
    ("cli", ["speechkeep.cli", "speechkeep.__main__", "speechkeep.data.cli", "speechkeep.importance.cli",
             "speechkeep.recipes.reproduce", "speechkeep.recipes.reproduce_report"]),  # reproduce runs the other commands
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            exact_root = p == "speechkeep" and module == "speechkeep"
            if (exact_root or (p != "speechkeep" and (module == p or module.startswith(p + ".")))) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None:  # a module at the package root not listed: base only if it is listed
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and the README")
    return best


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported speechkeep module, line) for every import in the file, outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for c in child.orelse:
                    visit(c)
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno) for a in child.names if a.name.startswith("speechkeep"))
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("speechkeep"):
                # `from speechkeep.x import y` may import the submodule speechkeep.x.y
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    target = sub if (PKG.parent / (sub.replace(".", "/") + ".py")).exists() or \
                        (PKG.parent / sub.replace(".", "/")).is_dir() else child.module
                    out.append((target, child.lineno))
            visit(child)

    visit(tree)
    return out


def edges():
    for path in sorted(PKG.rglob("*.py")):
        src = module_name(path)
        for dst, line in imports(path):
            yield src, dst, f"{path.relative_to(PKG.parent)}:{line}"


def test_every_import_points_down_the_layers():
    up = []
    for src, dst, where in edges():
        if layer_of(dst) > layer_of(src):
            up.append(f"{where}: {src} ({LAYERS[layer_of(src)][0]}) imports {dst} ({LAYERS[layer_of(dst)][0]})")
    assert not up, "imports up the layers:\n" + "\n".join(up)


def test_no_two_packages_import_each_other():
    def package(m: str) -> str:  # speechkeep.train.loop -> speechkeep.train; speechkeep.cli -> speechkeep.cli
        return ".".join(m.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for src, dst, _ in edges():
        a, b = package(src), package(dst)
        if a != b:
            graph.setdefault(a, set()).add(b)
    # a cycle anywhere in the package graph (depth-first search)
    state: dict[str, int] = {}

    def cycle_from(n, stack):
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack + [n, m]
            if not state.get(m):
                found = cycle_from(m, stack + [n])
                if found:
                    return found
        state[n] = 2
        return None

    for n in sorted(graph):
        if not state.get(n):
            found = cycle_from(n, [])
            assert not found, f"import cycle between packages: {' -> '.join(found)}"


def test_the_checker_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from speechkeep.train import loop\n"
                 "def g():\n    from speechkeep.evaluate.run import evaluate\n")
    assert imports(f) == [("speechkeep.evaluate.run", 5)]
    assert layer_of("speechkeep.importance.cli") > layer_of("speechkeep.importance.deactivate") > \
        layer_of("speechkeep.importance.taylor") > layer_of("speechkeep.models.speech_llm") > layer_of("speechkeep.config")


def test_only_the_cli_imports_a_recipe_module():
    """`align` used to import `recipes.demo` to find its data: data locations live in `speechkeep.data`, and a
    recipe module is imported by the CLI (or itself) only."""
    bad = [f"{where}: {src} imports {dst}" for src, dst, where in edges()
           if dst.startswith("speechkeep.recipes") and not src.startswith(("speechkeep.recipes", "speechkeep.cli"))]
    assert not bad, bad
