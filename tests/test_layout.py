"""The package's layers: maths (core) imports only torch; imports point down the layers, never in a cycle."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "made_exp"
# Lower layers first: a module may import its own layer and the layers before it, never a later one.
LAYERS = ["errors", "core", "data", "runs", "lightning", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def made_exp_imports(path: Path) -> set[str]:
    """Every made_exp module that ``path`` imports, at module level or inside a function."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("made_exp"):
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.startswith("made_exp"))
    return imported


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1


GRAPH = {module_name(path): made_exp_imports(path) for path in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module):
    upward = [target for target in GRAPH[module] if layer(target) > layer(module)]
    assert not upward, f"{module} imports a later layer: {upward}"


def test_import_graph_has_no_cycle():
    visiting, done = set(), set()

    def visit(module: str, path: list[str]) -> None:
        if module in done:
            return
        assert module not in visiting, f"import cycle: {' -> '.join(path + [module])}"
        visiting.add(module)
        for target in GRAPH.get(module, ()):
            visit(target, path + [module])
        visiting.discard(module)
        done.add(module)

    for module in GRAPH:
        visit(module, [])


def test_cycle_check_catches_a_cycle():
    GRAPH["made_exp.core.made"].add("made_exp.core.sampling")
    try:
        with pytest.raises(AssertionError, match="import cycle"):
            test_import_graph_has_no_cycle()
    finally:
        GRAPH["made_exp.core.made"].discard("made_exp.core.sampling")


TORCH_ONLY = ("made_exp.core", "made_exp.data.files", "made_exp.data.batches")
MATHS_AND_FILES = sorted(module for module in GRAPH if module.startswith(TORCH_ONLY))


def test_maths_and_data_files_import_neither_lightning_nor_hydra():
    """All of them in one fresh interpreter: if any pulled in a framework, it would be in sys.modules."""
    code = (
        f"import sys, {', '.join(MATHS_AND_FILES)}; "
        "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'hydra', 'omegaconf') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"{MATHS_AND_FILES} pull in {result.stdout.strip()}"
