"""The package's folders are layers: import-linter's contract in pyproject.toml holds, and no module imports
another that (directly or through others) imports it back."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tunevision"


def imports_of(path: Path) -> set[str]:
    """Every tunevision module a file imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tunevision"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tunevision"))
    return found


def module_graph() -> dict[str, set[str]]:
    names = {".".join(("tunevision", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in imports_of(p) if i in names and i != m} for m, p in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n == "tunevision" or m == "tunevision":
                continue  # the package's lazy __getattr__ names are not imports of the modules
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None
    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle_in_tunevision():
    cycle = find_cycle(module_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_underscore_name_is_imported_across_modules():
    leaks = [f"{p.relative_to(PACKAGE)}: {node.module}.{a.name}" for p in PACKAGE.rglob("*.py")
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tunevision")
             for a in node.names if a.name.startswith("_") and a.name != "__version__"]
    assert not leaks, leaks


def test_import_linter_layers_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    lint = lint if lint.exists() else Path(shutil.which("lint-imports") or "missing")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    done = subprocess.run([str(lint)], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
