"""The package layout stays: imports point down the pipeline, no circles, no oversized module.

Stages, bottom to top (docs/internals.md draws them)::

    core (errors, atomic, yaml_files, tables, templates) -> kernels -> data -> losses | models -> pretrain
        -> evaluate | export -> report -> demo -> cli

A module may import its own package and any stage below its own; packages on one rung (``losses``
and ``models``; ``evaluate`` and ``export``) do not import each other. Imports under
``if TYPE_CHECKING:`` load nothing, so they may close a circle, but they follow the stage rule (a
type named from a higher stage is a dependency all the same). A module over
``MAX_LINES`` lines says why in its docstring (a line starting ``Why this size:``).
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medcl"
MAX_LINES = 400

#: stage of each top-level name under ``medcl`` (a package or a module), and its rung
STAGES: dict[str, float] = {
    "errors": 0, "atomic": 0.5, "yaml_files": 0.5, "tables": 0.5, "templates": 0.75,
    "kernels": 1,
    "data": 2,
    "losses": 3, "models": 3,
    "pretrain": 4,
    "evaluate": 5, "export": 5,
    "report": 6,
    "demo": 7,
    "cli": 8,
    "__main__": 9,
}


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _stage_key(module: str) -> str | None:
    """``medcl.pretrain.loop`` -> ``pretrain``; the package root ``medcl`` -> None (the facade)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def imports(path: Path, root: Path = PACKAGE, *, type_checking: bool = False) -> list[tuple[int, str]]:
    """(line, imported medcl module) for every import in ``path`` (relative ones resolved); those under
    ``if TYPE_CHECKING:`` only when ``type_checking``."""
    module = _module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = set() if type_checking else _type_checking_lines(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == root.name]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != root.name:
                continue
            for alias in node.names:  # ``from medcl.report import plots`` imports a module
                sub = f"{target}.{alias.name}"
                sub_path = root.parent / Path(*sub.split("."))
                found.append((node.lineno, sub if sub_path.with_suffix(".py").is_file()
                              or (sub_path / "__init__.py").is_file() else target))
    return found


def upward_imports(root: Path = PACKAGE) -> list[str]:
    """Every import that points up the pipeline or sideways across a rung, as ``file:line: message``."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        key = _stage_key(module)
        if key is None:
            continue  # the package root: the public facade, imports lazily on attribute access
        if key not in STAGES:
            problems.append(f"{path.relative_to(root.parent)}:1: {module} belongs to no stage (add it to STAGES)")
            continue
        for line, target in imports(path, root, type_checking=True):
            other = _stage_key(target)
            if other is None or other == key:
                continue
            if other not in STAGES:
                problems.append(f"{path.relative_to(root.parent)}:{line}: imports {target}, which belongs to no stage")
            elif STAGES[other] >= STAGES[key]:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {module} ({key}) imports {target} "
                                f"({other}), which is not below it")
    return problems


def import_cycles(root: Path = PACKAGE) -> list[str]:
    """Module-level import circles (including ones inside a package), one line per circle."""
    graph: dict[str, dict[str, int]] = {}
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        files[module] = path
        graph[module] = {}
        for line, target in imports(path, root):
            while target not in files and target.count(".") and not (
                    (root.parent / Path(*target.split("."))).with_suffix(".py").is_file()
                    or (root.parent / Path(*target.split(".")) / "__init__.py").is_file()):
                target = target.rsplit(".", 1)[0]
            if target != module:
                graph[module].setdefault(target, line)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                loop = [*stack[stack.index(nxt):], nxt]
                cycles.append(" -> ".join(f"{m} ({files[m].relative_to(root.parent)}:{graph[m][n]})"
                                          for m, n in itertools.pairwise(loop)) + f" -> {nxt}")
            elif nxt in graph and not state.get(nxt):
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in graph:
        # the package root only re-exports lazily; a package __init__ re-exporting its own modules is
        # not a circle unless a module imports back through it, which the walk below still finds
        if not state.get(node):
            visit(node, [])
    return cycles


def oversized_modules(root: Path = PACKAGE, max_lines: int = MAX_LINES) -> list[str]:
    """Modules over ``max_lines`` lines whose docstring does not say why."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        n = len(text.splitlines())
        if n <= max_lines:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.strip().startswith("Why this size:") for line in doc.splitlines()):
            problems.append(f"{path.relative_to(root.parent)}:1: {n} lines (> {max_lines}) and no "
                            "'Why this size:' line in its docstring")
    return problems


def test_imports_point_down_the_pipeline() -> None:
    problems = upward_imports()
    assert not problems, "imports against the pipeline (docs/internals.md):\n" + "\n".join(problems)


def test_no_import_circles() -> None:
    cycles = import_cycles()
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_no_oversized_module_without_a_reason() -> None:
    problems = oversized_modules()
    assert not problems, "\n".join(problems)


def test_checks_catch_a_planted_violation(tmp_path: Path) -> None:
    """The walkers find an upward import (also a type-only one), a circle and a long module in a made-up
    package."""
    pkg = tmp_path / "medcl"
    (pkg / "data").mkdir(parents=True)
    (pkg / "pretrain").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "pretrain" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text('"""A."""\nfrom medcl.pretrain import loop\nfrom .b import x\n')
    (pkg / "data" / "b.py").write_text('"""B."""\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n'
                                       "    from medcl.pretrain.loop import y\nfrom medcl.data.a import z\n")
    (pkg / "pretrain" / "loop.py").write_text('"""Loop."""\n' + "x = 1\n" * 5)
    assert upward_imports(pkg) == ["medcl/data/a.py:2: medcl.data.a (data) imports medcl.pretrain.loop "
                                   "(pretrain), which is not below it",
                                   "medcl/data/b.py:4: medcl.data.b (data) imports medcl.pretrain.loop "
                                   "(pretrain), which is not below it"]
    cycles = import_cycles(pkg)
    assert len(cycles) == 1 and "medcl.data.a (medcl/data/a.py:3) -> medcl.data.b" in cycles[0]
    assert oversized_modules(pkg, max_lines=5) == [
        "medcl/pretrain/loop.py:1: 6 lines (> 5) and no 'Why this size:' line in its docstring"]
