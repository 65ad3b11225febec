"""The package's layering, read from the imports of every module (no module is executed).

The data path goes one way: core <- data <- benchmarks / neighbours <- evaluation <- methods
<- results <- run. Producers (offline commands) never import the run, and the run never
imports a producer; the report reads results, never the code that made them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import clusterbench

PACKAGE = Path(clusterbench.__file__).parent
LOWER = {
    "core": set(),
    "data": {"core"},
    "benchmarks": {"core", "data"},
    "neighbours": {"core", "data"},
    "evaluation": {"core", "data"},
    "methods": {"core", "data", "neighbours", "evaluation"},
    "results": {"core"},
    "run": {"core", "data", "neighbours", "evaluation", "methods", "results"},
    "assign": {"core", "data", "evaluation", "methods", "refine"},
    "report": {"core", "evaluation", "results"},
    "producers": {"core", "data", "benchmarks", "neighbours", "evaluation", "methods", "results"},
    "perf": {
        "core",
        "data",
        "neighbours",
        "evaluation",
        "methods",
        "producers",
        "neighbours_distributed",
    },
    "neighbours_distributed": {"core", "data", "neighbours"},
    "refine": {"core", "data", "evaluation", "methods"},
    "explore": {"core", "data"},
    "naming": {"core", "data", "benchmarks", "producers"},
    "name": {"core"},
    "__main__": {"core"},
    "__init__": {"core"},
}


def imported_layers(file: Path) -> set[str]:
    """The top-level clusterbench entries (`core`, `run`, ...) a file imports."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "clusterbench" and len(parts) > 1:
                found.add(parts[1])
    return found


def layer_of(file: Path) -> str:
    rel = file.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_module_imports_only_its_own_layer_and_those_below():
    wrong = []
    for file in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(file)
        assert layer in LOWER, f"{file}: a top-level entry the layering does not know"
        extra = imported_layers(file) - LOWER[layer] - {layer}
        if extra:
            wrong.append(f"{file.relative_to(PACKAGE)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path):
    """The walk finds `from clusterbench.run import ...` inside a function, too."""
    file = tmp_path / "bad.py"
    file.write_text(
        "def f():\n    from clusterbench.run import run\n    import clusterbench.core.cli\n"
    )
    assert imported_layers(file) == {"run", "core"}


def test_the_root_reads_as_the_data_path():
    entries = {p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "__pycache__"))}
    assert entries == {
        "__init__.py", "__main__.py", "conf", "core", "data", "benchmarks", "neighbours.py",
        "methods", "evaluation", "results.py", "run.py", "assign.py", "report", "producers", "perf",
        "neighbours_distributed.py", "refine", "explore", "naming", "name.py",
    }  # fmt: skip
