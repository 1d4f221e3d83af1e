"""The package's shape: layers that import only downwards, no import circles,
torch only where it is needed, and one public API that agrees with itself."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import h5pool
from helpers.paths import SRC_DIR

PACKAGE = Path(SRC_DIR) / "h5pool"
#: Bottom to top; a module may import only from its own floor or below.
#: Top-level modules (errors, _typing, progress) are floor 0; __init__ and
#: __main__ are the package's face and may import anything.
FLOORS = {"pool": 1, "hdf5": 2, "index": 3, "read": 4, "dataset": 5, "loading": 6, "bench": 7}
FLOORS["cli"] = 8  # the command line runs the bench; the bench never imports the cli
FACES = {"h5pool", "h5pool.__main__"}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    return names


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Every h5pool module ``path`` imports, at any depth of its code (functions,
    ``TYPE_CHECKING`` blocks): an import hidden in a function is still an edge."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                found.add(node.module)
            found.update(
                f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known
            )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
    return found


def floor_of(module: str) -> int:
    parts = module.split(".")
    return FLOORS.get(parts[1], 0) if len(parts) > 1 else 0


GRAPH = {name: imports_of(path, module_names()) for name, path in module_names().items()}


def test_the_layers_are_in_place() -> None:
    for package in ("pool", "hdf5", "index", "read", "loading", "cli", "bench"):
        assert (PACKAGE / package / "__init__.py").is_file(), package
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == [
        "__init__.py",
        "__main__.py",
        "_typing.py",
        "dataset.py",
        "errors.py",
        "progress.py",
    ]


def test_every_import_goes_down_the_layers() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module not in FACES
        for target in targets
        if floor_of(target) > floor_of(module)
    ]
    assert upward == []


def test_there_is_no_import_circle() -> None:
    """Depth-first search over the import graph (submodule imports, not the
    package's own ``__init__`` re-exports, which always sit above their modules)."""
    state: dict[str, int] = {}
    circles: list[list[str]] = []
    for start in GRAPH:
        if start in state:
            continue
        stack = [(start, iter(sorted(GRAPH[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1 and child != node:
                circles.append([*path[path.index(child) :], child])
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(GRAPH[child]))))
    assert circles == []


def lines_of_code(path: Path) -> int:
    """Lines that are neither blank, nor comments, nor docstrings."""
    text = path.read_text()
    prose: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Expr) and isinstance(getattr(node.value, "value", None), str):
            prose.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return sum(
        1
        for number, line in enumerate(text.splitlines(), 1)
        if number not in prose and line.strip() and not line.strip().startswith("#")
    )


def test_every_module_stays_small() -> None:
    """One job per module: about 300 lines of code at most, docstrings not counted
    (they say why, and the public API's carry numpydoc sections)."""
    sizes = {name: lines_of_code(path) for name, path in module_names().items()}
    assert {name: n for name, n in sizes.items() if n > 320} == {}


def modules_after_importing(statement: str) -> list[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("package", ["pool", "hdf5", "index"])
def test_the_lower_layers_import_no_torch(package: str) -> None:
    loaded = modules_after_importing(f"import h5pool.{package}")
    assert "torch" not in loaded
    assert f"h5pool.{package}" in loaded


@pytest.mark.parametrize(
    "statement",
    [
        "from h5pool.cli.corpus_commands import run_index_command",
        "from h5pool.cli.info_command import run_info_command",
        "from h5pool.cli.main import build_parser; build_parser()",
        "from h5pool.bench import synthetic, registry",
    ],
)
def test_the_corpus_commands_import_no_torch(statement: str) -> None:
    assert "torch" not in modules_after_importing(statement)


@pytest.mark.parametrize("command", ["index", "info"])
def test_the_corpus_commands_run_without_torch(tmp_path: Path, command: str) -> None:
    """``h5pool index`` builds the index without the dataset, and ``h5pool info``
    describes the corpus: neither imports torch."""
    from helpers.corpus import make_corpus

    make_corpus(tmp_path / "corpus", files=3, rows=5, width=4)
    out = tmp_path / "index.npz"
    argv = [command, str(tmp_path / "corpus"), "--key", "data"]
    argv += ["--out", str(out)] if command == "index" else []
    code = (
        "import sys, json; from h5pool.cli.main import main; "
        f"code = main({argv!r}); "
        "print(json.dumps([code, 'torch' in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert json.loads(result.stdout.splitlines()[-1]) == [0, False]
    if command == "index":
        assert h5pool.CorpusIndex.load(out).counts.tolist() == [5, 5, 5]
    else:
        assert "samples along axis 0 of 'data': 15" in result.stdout


def test_the_public_names_agree() -> None:
    """``__all__``, the lazy import map and the ``TYPE_CHECKING`` block name the same
    things, ``__all__`` is sorted, and every name imports."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    checked: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                for alias in statement.names:
                    checked.add(alias.name)
                    assert h5pool._HOMES[alias.name] == statement.module
    assert h5pool.__all__ == sorted(h5pool.__all__)
    assert set(h5pool.__all__) == set(h5pool._HOMES) | {"__version__"}
    assert checked == set(h5pool._HOMES)
    for name in h5pool.__all__:
        assert getattr(h5pool, name) is not None


@pytest.mark.parametrize("package", ["pool", "hdf5", "index", "read", "loading", "cli", "bench"])
def test_each_subpackage_exports_a_sorted_all(package: str) -> None:
    module = __import__(f"h5pool.{package}", fromlist=["__all__"])
    assert module.__all__ == sorted(module.__all__, key=lambda n: (not n.isupper(), n))
    for name in module.__all__:
        assert getattr(module, name) is not None
