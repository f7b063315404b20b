"""The package's shape (design §2, CONTRIBUTING "Layers"), read from the source with ``ast``:

* imports point down only: no module imports from a layer above its own, not even under
  ``TYPE_CHECKING`` or inside a function; and there is no import cycle;
* only ``chimeway/store/`` runs SQL, each store module runs exactly the queries of its own
  ``sql/queries/<name>.sql`` file, and every such file has its store module;
* the progression rules (``engine/progression/decide.py``) use no other engine module.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import chimeway

PACKAGE = Path(chimeway.__file__).parent
QUERIES = PACKAGE / "sql" / "queries"

# Lowest first. A module may import from its own layer or any layer below; the first
# matching prefix decides. Keep in step with CONTRIBUTING.md.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "leaves",
        [
            "chimeway.types",
            "chimeway.errors",
            "chimeway.results",
            "chimeway.config",
            "chimeway.logs",
            "chimeway.redaction",
            "chimeway.storable",
            "chimeway.telemetry",
        ],
    ),
    (
        "pure",
        [
            "chimeway.inputs",
            "chimeway.dsl",
            "chimeway.content",
            "chimeway.notifiers",
            "chimeway.outcomes",
            "chimeway.profiles",
            "chimeway.adapters",
            "chimeway.feedback",
            "chimeway.policy",
        ],
    ),
    ("db", ["chimeway.db", "chimeway.embedded", "chimeway.sql"]),
    ("store", ["chimeway.store"]),
    (
        "engine",
        ["chimeway.engine", "chimeway.migrations", "chimeway.workflows", "chimeway.diagrams"],
    ),
    ("jobs", ["chimeway.jobs"]),
    # The HTTP app is built over the engine; the app layer offers it as ``cw.asgi()``.
    ("app", ["chimeway.app", "chimeway.http"]),
    (
        "top",
        [
            "chimeway.worker",
            "chimeway.waker",
            "chimeway.testing",
            "chimeway.cli",
            "chimeway.contrib",
            "chimeway",
        ],
    ),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "chimeway"):
            return index
    if module == "chimeway":
        return len(LAYERS) - 1
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and CONTRIBUTING.md")


def imports(module: str) -> Iterator[tuple[int, str]]:
    """(line, imported chimeway module) for every import in ``module``, wherever it is."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "chimeway":
                    yield node.lineno, _known(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            if base.split(".")[0] != "chimeway":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if candidate in MODULES else _known(base)


def _known(name: str) -> str:
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_imports_point_down_only() -> None:
    upward = [
        f"{module}:{line} imports {target} "
        f"({LAYERS[layer_of(module)][0]} -> {LAYERS[layer_of(target)][0]})"
        for module in MODULES
        for line, target in imports(module)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_there_is_no_import_cycle() -> None:
    graph = {m: {t for _, t in imports(m) if t != m} for m in MODULES}
    # Importing a package's submodule runs the package first: that edge is implied.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_the_progression_rules_use_no_other_engine_module() -> None:
    decide = "chimeway.engine.progression.decide"
    assert [t for _, t in imports(decide) if t.startswith("chimeway.engine")] == []


# -- SQL --------------------------------------------------------------------------------

SQL_CALLS = {"execute", "executemany", "copy", "stream", "query"}


def sql_calls(path: Path) -> Iterator[tuple[int, str]]:
    """Calls that run or fetch SQL: ``x.execute(...)``, ``db.query(...)`` and the like."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in SQL_CALLS:
                yield node.lineno, ast.unparse(func)


def test_only_the_store_runs_sql() -> None:
    outside = [
        f"{module}:{line} calls {call}"
        for module, path in MODULES.items()
        if not module.startswith("chimeway.store")
        for line, call in sql_calls(path)
    ]
    assert outside == []


def test_the_check_sees_a_query_outside_the_store(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f(conn):\n    return conn.execute(db.query('x'))\n")
    assert [call for _, call in sql_calls(sneaky)] == ["conn.execute", "db.query"]


_NAME = re.compile(r"^--\s*name:\s*([a-z][a-z0-9_]*)\s*$", re.MULTILINE)


def defined_queries(area: str) -> set[str]:
    return set(_NAME.findall((QUERIES / f"{area}.sql").read_text()))


def used_queries(path: Path) -> set[str]:
    return {
        node.args[0].value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", None) == "query"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


STORE = sorted(p for p in (PACKAGE / "store").glob("*.py") if p.name != "__init__.py")


def test_every_query_file_has_its_store_module() -> None:
    assert sorted(p.stem for p in QUERIES.glob("*.sql")) == [p.stem for p in STORE]


@pytest.mark.parametrize("path", STORE, ids=lambda p: p.stem)
def test_a_store_module_runs_exactly_the_queries_of_its_file(path: Path) -> None:
    assert used_queries(path) == defined_queries(path.stem)
